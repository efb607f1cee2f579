"""Shared fixtures of the Python tests: real SQLite files in the orchestrator's schema,
real policy files written by the real binaries, and the original guard module.

The binaries (built by `cargo test --release --workspace`, which scripts/test runs
first): target/release/deploy-guard ($DEPLOY_GUARD_BIN) and
target/release/export-hostile. A missing one FAILS the tests that need it, with a
message saying so.

The original guard module is not part of the repository: it is looked for in
../shared/bench/orch beside the clone. Where it is absent, the tests that need it
are skipped, saying what is missing and where it was looked for; with CI=true in the
environment they FAIL instead, so that CI never skips them silently.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent  # clients/python
REPO_ROOT = PACKAGE_ROOT.parent.parent
RELEASE = REPO_ROOT / "target" / "release"
BINARY = Path(os.environ.get("DEPLOY_GUARD_BIN") or (RELEASE / "deploy-guard"))
EXPORT_HOSTILE = RELEASE / "export-hostile"
VECTORS = REPO_ROOT / "policies" / "deploy-status-guard.vectors.json"
LOGGER = "orchestrator.deploy_status_guard"
FIELDS = {
    "work_item", "caller", "target", "db_stage", "window_active",
    "verdict", "rule", "policy", "policy_digest", "error",
}

ALLOW, CONVERGE_DONE, SUPPRESS = "ALLOW", "CONVERGE_DONE", "SUPPRESS"
AWAITING, DEPLOYING, MONITORING = "awaiting", "deploying", "monitoring"

# (work_item_id, repo, stage) in insertion order; the newest rowid per work item counts.
TASKS = [
    ("ORCH-LIVE", "orchestrator", "deploy"),
    ("ORCH-FAILED", "orchestrator", "failed"),
    ("ORCH-CANCEL", "orchestrator", "cancelled"),
    ("ORCH-DONE", "orchestrator", "done"),
    ("ORCH-WIN", "orchestrator", "done"),
    ("ORCH-CLOSED", "orchestrator", "done"),
    ("ORCH-PAD", " orchestrator ", " done\n"),
    ("TRAIL-1", "enduro-trails", "done"),
    ("ORCH-REOPEN", "orchestrator", "done"),
    ("ORCH-REOPEN", "orchestrator", "deploy"),
    ("ORCH-LATE-CANCEL", "orchestrator", "deploy"),
    ("ORCH-LATE-CANCEL", "orchestrator", "cancelled"),
    ("B-LOOP", "orchestrator", "done"),
]
SENTINELS = [
    ("orchestrator", "ORCH-WIN", "ARMED"),
    ("orchestrator", "ORCH-CLOSED", "ARMED"),
    ("orchestrator", "ORCH-CLOSED", "DONE"),
]

# (work_item, target, expected verdict, expected rule) with the default scope and the reference policy (1.2.0).
EXPECTED = [
    ("NO-SUCH-ITEM", AWAITING, ALLOW, "task-not-found"),
    ("", DEPLOYING, ALLOW, "task-not-found"),
    ("TRAIL-1", AWAITING, ALLOW, "out-of-scope"),
    ("ORCH-LIVE", DEPLOYING, ALLOW, "non-terminal"),
    ("ORCH-FAILED", AWAITING, ALLOW, "non-terminal"),
    ("ORCH-REOPEN", AWAITING, ALLOW, "non-terminal"),
    ("ORCH-CANCEL", MONITORING, SUPPRESS, "cancelled"),
    ("ORCH-LATE-CANCEL", DEPLOYING, SUPPRESS, "cancelled"),
    ("ORCH-WIN", MONITORING, ALLOW, "monitoring-window-active"),
    ("ORCH-WIN", AWAITING, CONVERGE_DONE, "converge-done"),
    ("ORCH-WIN", DEPLOYING, CONVERGE_DONE, "converge-done"),
    ("ORCH-CLOSED", MONITORING, CONVERGE_DONE, "converge-done"),
    ("ORCH-DONE", MONITORING, CONVERGE_DONE, "converge-done"),
    ("ORCH-DONE", AWAITING, CONVERGE_DONE, "converge-done"),
    ("ORCH-PAD", AWAITING, CONVERGE_DONE, "converge-done"),
]


def make_db(path: Path, sentinels: bool = True) -> None:
    conn = sqlite3.connect(str(path))
    try:
        conn.execute(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY, work_item_id TEXT, repo TEXT, "
            "stage TEXT, title TEXT)"
        )
        conn.executemany("INSERT INTO tasks (work_item_id, repo, stage, title) VALUES (?, ?, ?, 't')", TASKS)
        if sentinels:
            conn.execute("CREATE TABLE post_deploy_sentinels (repo TEXT, work_item_id TEXT, sentinel TEXT)")
            conn.executemany("INSERT INTO post_deploy_sentinels VALUES (?, ?, ?)", SENTINELS)
        conn.commit()
    finally:
        conn.close()


def require(path: Path, how: str) -> None:
    if not (path.is_file() and os.access(str(path), os.X_OK)):
        raise AssertionError("%s not found or not executable: %s (from %s)" % (path, how, REPO_ROOT))


def export_policies(out: Path) -> tuple:
    """Writes the reference (1.2.0), the next (1.1.0) and the live-loop policies."""
    require(BINARY, "build it with `cargo build --release -p deploy-guard`, or set DEPLOY_GUARD_BIN")
    require(EXPORT_HOSTILE, "build it with `cargo build --release -p deploy-guard-e2e`")
    for argv in ([str(BINARY), "export-policies", "--out", str(out)], [str(EXPORT_HOSTILE), str(out)]):
        run = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if run.returncode != 0:
            raise AssertionError("%s failed: %s" % (argv, run.stderr.decode(errors="replace")))
    paths = (out / "deploy-status-guard.wasm", out / "deploy-status-guard-next.wasm", out / "live-loop.wasm")
    for p in paths:
        if not p.is_file():
            raise AssertionError("not written: %s" % p)
    return paths


def guard_env(**overrides: str) -> dict:
    """os.environ without any inherited deploy-guard settings, plus overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DEPLOY_GUARD_") and not k.startswith("DEPLOY_STATUS_GUARD_")}
    env.update(overrides)
    return env


def replace_file(source: Path, target: Path) -> None:
    """Atomically put a copy of `source` at `target` (rename over it)."""
    staging = target.with_name("." + target.name + ".incoming")
    shutil.copyfile(str(source), str(staging))
    os.replace(str(staging), str(target))


def wait_for(predicate, within: float = 10.0, every: float = 0.02):
    """Polls `predicate` until it returns something true; returns it (or the last value)."""
    end = time.monotonic() + within
    value = predicate()
    while not value and time.monotonic() < end:
        time.sleep(every)
        value = predicate()
    return value


# The directory holding the original module's package `orch/` (with the orchestrator's
# stand-ins): ../shared/bench beside the clone, wherever the clone is.
ORCH_BENCH = REPO_ROOT.parent / "shared" / "bench"


def find_orch(bench: Path = ORCH_BENCH) -> Path:
    """The directory of the original module's package (`orch/`), for PYTHONPATH.

    Absent: unittest.SkipTest naming what is missing and where it was looked for; with
    CI=true in the environment an AssertionError instead (CI never skips silently).
    """
    module = bench / "orch" / "deploy_status_guard.py"
    if module.is_file():
        return bench
    why = "the original guard module is absent: no %s (looked for ../shared/bench/orch beside the clone %s)" % (
        module, REPO_ROOT)
    if os.environ.get("CI") == "true":
        raise AssertionError(why + "; CI=true, so this fails instead of being skipped")
    raise unittest.SkipTest(why)


class Workspace:
    """A temporary directory with a database and a policy directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dg-py-"))
        self.db = self.root / "orchestrator.db"
        make_db(self.db)
        self.exported = self.root / "exported"
        self.v1, self.next, self.loop = export_policies(self.exported)
        self.policies = self.root / "policies"
        self.policies.mkdir()
        self.active = self.policies / "deploy-status-guard.wasm"
        shutil.copyfile(str(self.v1), str(self.active))
        if VECTORS.is_file():  # the gate checks vectors beside the policy
            shutil.copyfile(str(VECTORS), str(self.policies / VECTORS.name))

    def cleanup(self) -> None:
        shutil.rmtree(str(self.root), ignore_errors=True)


if str(PACKAGE_ROOT) in sys.path:
    # Tests run against the installed wheel, never the source tree's package (which
    # has no compiled extension).
    sys.path.remove(str(PACKAGE_ROOT))
