"""Tests of the sidecar transport, deploy_guard.sidecar.Client (and its shim
deploy_guard_client), against the real deploy-guard binary.

The binary is $DEPLOY_GUARD_BIN, else target/release/deploy-guard under the
repository root. If it does not exist the tests that need it FAIL (they are not
skipped): build it with `cargo build --release -p deploy-guard`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

from fixtures import BINARY, EXPECTED, FIELDS, LOGGER, REPO_ROOT, VECTORS, guard_env, make_db

import deploy_guard.sidecar as dgc  # noqa: E402
from deploy_guard.sidecar import (  # noqa: E402
    ALLOW,
    AWAITING,
    CONVERGE_DONE,
    DEPLOYING,
    MONITORING,
    SUPPRESS,
    Client,
)


def require_binary() -> None:
    if not (BINARY.is_file() and os.access(str(BINARY), os.X_OK)):
        raise AssertionError(
            "deploy-guard binary not found or not executable at %s: build it with "
            "`cargo build --release -p deploy-guard` from %s, or set DEPLOY_GUARD_BIN" % (BINARY, REPO_ROOT)
        )


# How long a test waits for an event it expects (an answer, a log record, a process
# gone, a pid changed) before it fails. Generous on purpose: it is reached only when the
# event never happens, so a loaded machine slows a test down but never fails it.
CEILING = 60.0


def answer_within(call, *args):
    """``call(*args)`` on a thread of its own: its answer, or a failure of the test when
    it has not answered within the ceiling (a hang fails, it never blocks the run: the
    thread is a daemon)."""
    ceiling = CEILING
    outcome = {}

    def run() -> None:
        try:
            outcome["answer"] = call(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome["raised"] = e

    thread = threading.Thread(target=run, name="answer-within", daemon=True)
    thread.start()
    thread.join(ceiling)
    if thread.is_alive():
        raise AssertionError("no answer within %.0f s from %s%r" % (ceiling, getattr(call, "__name__", call), args))
    if "raised" in outcome:
        raise outcome["raised"]
    return outcome["answer"]


def wait_dead(pid: int) -> bool:
    end = time.monotonic() + CEILING
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie still answers kill(0): reap-check via /proc
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except (OSError, IndexError):
            return True
        time.sleep(0.02)
    return False


class RealBinaryCase(unittest.TestCase):
    """Shared fixtures: exported policies, a database, a policy directory per test."""

    @classmethod
    def setUpClass(cls) -> None:
        require_binary()
        cls.tmp = tempfile.mkdtemp(prefix="dg-client-")
        cls.exported = Path(cls.tmp) / "exported"
        run = subprocess.run(
            [str(BINARY), "export-policies", "--out", str(cls.exported)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
        )
        if run.returncode != 0:
            raise AssertionError("deploy-guard export-policies failed: %s" % run.stderr.decode(errors="replace"))
        cls.policy_v1 = cls.exported / "deploy-status-guard.wasm"
        cls.policy_next = cls.exported / "deploy-status-guard-next.wasm"
        for p in (cls.policy_v1, cls.policy_next):
            if not p.is_file():
                raise AssertionError("export-policies did not write %s" % p)
        cls.db = Path(cls.tmp) / "orchestrator.db"
        make_db(cls.db)

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="case-", dir=self.tmp))
        self.policies = self.dir / "policies"
        self.policies.mkdir()
        self.active = self.policies / "deploy-status-guard.wasm"
        shutil.copyfile(str(self.policy_v1), str(self.active))
        if VECTORS.is_file():  # the host's gate checks vectors beside the policy
            shutil.copyfile(str(VECTORS), str(self.policies / VECTORS.name))
        self.clients = []

    def tearDown(self) -> None:
        for c in self.clients:
            c.close()

    def client(self, timeout: float = 5.0, **env: str) -> Client:
        base = {"DEPLOY_GUARD_DB": str(self.db), "DEPLOY_GUARD_POLICY": str(self.active)}
        base.update(env)
        c = Client(timeout=timeout, binary=str(BINARY), env=guard_env(**base), stderr=subprocess.DEVNULL)
        self.clients.append(c)
        return c

    def assertDecision(self, d: dict, verdict: str, rule: str) -> None:
        self.assertEqual((d["verdict"], d["rule"]), (verdict, rule), d)


class TestRules(RealBinaryCase):
    def test_constants_match_the_seed(self) -> None:
        self.assertEqual((dgc.ALLOW, dgc.CONVERGE_DONE, dgc.SUPPRESS), ("ALLOW", "CONVERGE_DONE", "SUPPRESS"))
        self.assertEqual((dgc.AWAITING, dgc.DEPLOYING, dgc.MONITORING), ("awaiting", "deploying", "monitoring"))

    def test_every_policy_rule(self) -> None:
        c = self.client()
        for work_item, target, verdict, rule in EXPECTED:
            with self.subTest(work_item=work_item, target=target):
                d = c.decide_full(work_item, target, "tick")
                self.assertEqual(set(d.as_dict()), FIELDS)
                self.assertDecision(d, verdict, rule)
                self.assertEqual(c.decide(work_item, target, "tick"), verdict)
                self.assertEqual((d["work_item"], d["target"], d["caller"]), (work_item, target, "tick"))
                self.assertEqual(d["policy"], "deploy-status-guard@1.2.0")
                self.assertTrue(d["policy_digest"].startswith("sha256:"), d)
                self.assertIsNone(d["error"])

    def test_decision_object_fields(self) -> None:
        c = self.client()
        d = c.decide_full("ORCH-WIN", MONITORING)
        self.assertEqual(d["db_stage"], "done")
        self.assertIs(d["window_active"], True)
        self.assertIsNone(d["caller"])
        d = c.decide_full("ORCH-PAD", AWAITING)
        self.assertEqual(d["db_stage"], "done")  # trimmed
        self.assertIs(c.decide_full("ORCH-CLOSED", MONITORING)["window_active"], False)
        self.assertIsNone(c.decide_full("NO-SUCH-ITEM", AWAITING)["db_stage"])

    def test_explicit_scope(self) -> None:
        c = self.client(DEPLOY_STATUS_GUARD_REPOS="enduro-trails, bad token!")
        self.assertDecision(c.decide_full("TRAIL-1", AWAITING), CONVERGE_DONE, "converge-done")
        self.assertDecision(c.decide_full("ORCH-DONE", AWAITING), ALLOW, "out-of-scope")

    def test_self_hosting_repos(self) -> None:
        c = self.client(DEPLOY_GUARD_SELF_HOSTING_REPOS="enduro-trails")
        self.assertDecision(c.decide_full("TRAIL-1", AWAITING), CONVERGE_DONE, "converge-done")
        self.assertDecision(c.decide_full("ORCH-DONE", AWAITING), ALLOW, "out-of-scope")

    def test_window_unknown(self) -> None:
        db = self.dir / "no-sentinels.db"
        make_db(db, sentinels=False)
        c = self.client(DEPLOY_GUARD_DB=str(db))
        d = c.decide_full("ORCH-WIN", MONITORING)
        self.assertDecision(d, ALLOW, "window-unknown")
        self.assertIsNone(d["window_active"])
        self.assertIn("post_deploy_sentinels", d["error"])
        self.assertDecision(c.decide_full("ORCH-WIN", AWAITING), CONVERGE_DONE, "converge-done")

    def test_kill_switch(self) -> None:
        c = self.client(DEPLOY_STATUS_GUARD_ENABLED="false")
        for work_item, target, _, _ in EXPECTED:
            d = c.decide_full(work_item, target)
            self.assertDecision(d, ALLOW, "kill-switch")
            self.assertIsNone(d["policy"])
            self.assertIsNone(d["db_stage"])

    def test_fail_safe_missing_database(self) -> None:
        c = self.client(DEPLOY_GUARD_DB=str(self.dir / "missing.db"))
        d = c.decide_full("ORCH-CANCEL", AWAITING)
        self.assertDecision(d, ALLOW, "fail-safe")
        self.assertTrue(d["error"], d)
        self.assertFalse((self.dir / "missing.db").exists(), "the host must not create the database")

    def test_fail_safe_missing_policy(self) -> None:
        c = self.client(DEPLOY_GUARD_POLICY=str(self.dir / "missing.wasm"))
        d = c.decide_full("ORCH-CANCEL", AWAITING)
        self.assertDecision(d, ALLOW, "fail-safe")
        self.assertIn("missing.wasm", d["error"])

    def test_fail_safe_locked_database(self) -> None:
        db = self.dir / "locked.db"
        make_db(db)
        holder = sqlite3.connect(str(db), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            c = self.client(DEPLOY_GUARD_DB=str(db), DEPLOY_GUARD_BUSY_TIMEOUT_MS="50")
            d = c.decide_full("ORCH-CANCEL", AWAITING)
            self.assertDecision(d, ALLOW, "fail-safe")
            self.assertIn("locked", d["error"])
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        self.assertDecision(c.decide_full("ORCH-CANCEL", AWAITING), SUPPRESS, "cancelled")

    def test_unknown_target_is_allow_without_asking(self) -> None:
        c = self.client()
        with self.assertLogs(LOGGER, level="WARNING") as logs:
            for target in ("Monitoring", "done", "", None, 3, " awaiting"):
                d = c.decide_full("ORCH-DONE", target)
                self.assertDecision(d, ALLOW, "fail-safe")
                self.assertIn("unknown target", d["error"])
                self.assertEqual(c.decide("ORCH-DONE", target), ALLOW)
        self.assertIsNone(c.pid, "an unknown target must not start the child")
        self.assertTrue(any("unknown target" in line for line in logs.output))

    def test_odd_inputs_never_raise(self) -> None:
        c = self.client()
        self.assertDecision(c.decide_full(None, AWAITING), ALLOW, "fail-safe")
        d = c.decide_full(12345, AWAITING, reason=object())
        self.assertDecision(d, ALLOW, "task-not-found")
        self.assertEqual(d["work_item"], "12345")
        self.assertIsInstance(d["caller"], str)
        pid = c.pid
        big = c.decide_full("X" * 70000, AWAITING)
        self.assertDecision(big, ALLOW, "fail-safe")
        self.assertIn("line limit", big["error"])
        # a lone surrogate is refused by the host: ALLOW, and the child stays in step
        self.assertDecision(c.decide_full("bad\ud800", AWAITING), ALLOW, "fail-safe")
        self.assertEqual(c.pid, pid, "a refused request must not cost the child")
        for weird in ("ORCH-\u00e9\u4e2d", "a\nb", "quote\"back\\slash", "nul\x00"):
            self.assertDecision(c.decide_full(weird, DEPLOYING, weird), ALLOW, "task-not-found")
        self.assertEqual(c.pid, pid)
        self.assertDecision(c.decide_full("ORCH-CANCEL", AWAITING), SUPPRESS, "cancelled")

    def test_log_line_per_verdict(self) -> None:
        c = self.client()
        with self.assertLogs(LOGGER, level="INFO") as logs:
            call_line = sys._getframe().f_lineno + 1
            c.decide("ORCH-DONE", AWAITING, "deploy-approve")
            c.decide("ORCH-LIVE", AWAITING, "deploy-approve")
        lines = [(r.levelno, r.getMessage()) for r in logs.records if "verdict=" in r.getMessage()]
        # Located at the call site, not in the client.
        self.assertEqual(
            [(r.pathname, r.lineno, r.funcName) for r in logs.records if "verdict=" in r.getMessage()],
            [(__file__, call_line, "test_log_line_per_verdict"),
             (__file__, call_line + 1, "test_log_line_per_verdict")])
        self.assertEqual(len(lines), 2, logs.output)
        self.assertEqual(lines[0][0], logging.WARNING)
        self.assertIn(
            "work_item=ORCH-DONE caller=deploy-approve target=awaiting db_stage=done "
            "window_active=False verdict=CONVERGE_DONE", lines[0][1])
        self.assertEqual(lines[1][0], logging.INFO)
        self.assertIn("verdict=ALLOW rule=non-terminal", lines[1][1])

    def test_module_level_functions_use_environment(self) -> None:
        env = guard_env(
            DEPLOY_GUARD_BIN=str(BINARY),
            DEPLOY_GUARD_DB=str(self.db),
            DEPLOY_GUARD_POLICY=str(self.active),
            DEPLOY_GUARD_CLIENT_TIMEOUT="3",
            RUST_LOG="off",
        )
        dgc.close_default_client()
        try:
            with mock.patch.dict(os.environ, env, clear=True):
                self.assertEqual(dgc.decide("ORCH-CANCEL", AWAITING, "tick"), SUPPRESS)
                self.assertEqual(dgc.decide("ORCH-DONE", MONITORING), CONVERGE_DONE)
                self.assertEqual(dgc.decide("ORCH-WIN", MONITORING), ALLOW)
                self.assertDecision(dgc.decide_full("ORCH-LIVE", DEPLOYING), ALLOW, "non-terminal")
                self.assertEqual(dgc.get_default_client().timeout, 3.0)
                self.assertIs(dgc.get_default_client(), dgc.get_default_client())
        finally:
            dgc.close_default_client()

    def test_context_manager_stops_child(self) -> None:
        with Client(binary=str(BINARY), env=guard_env(DEPLOY_GUARD_DB=str(self.db),
                                                      DEPLOY_GUARD_POLICY=str(self.active)),
                    stderr=subprocess.DEVNULL) as c:
            self.assertEqual(c.decide("ORCH-CANCEL", AWAITING), SUPPRESS)
            pid = c.pid
            self.assertIsNotNone(pid)
        self.assertTrue(wait_dead(pid), "child still running after close()")
        d = c.decide_full("ORCH-CANCEL", AWAITING)  # closed: ALLOW, no new child
        self.assertDecision(d, ALLOW, "fail-safe")
        self.assertIsNone(c.pid)

    def test_stderr_drained_into_logging(self) -> None:
        c = Client(binary=str(BINARY), env=guard_env(DEPLOY_GUARD_DB=str(self.db),
                                                     DEPLOY_GUARD_POLICY=str(self.active)),
                   stderr="log")
        self.clients.append(c)
        with self.assertLogs(LOGGER + ".child", level="DEBUG") as logs:
            # ~400 bytes of log per decision: 200 of them overflow a 64 KiB pipe
            # that nobody drains, so this also proves the child never blocks.
            for _ in range(200):
                self.assertEqual(c.decide("ORCH-CANCEL", AWAITING), SUPPRESS)
            c.close()
            end = time.monotonic() + 3
            while time.monotonic() < end and not any("end of input" in r for r in logs.output):
                time.sleep(0.05)
        self.assertTrue(any("policy" in line for line in logs.output), logs.output[:3])
        self.assertFalse(any("\x1b[" in line for line in logs.output), "ANSI codes not stripped")


class TestSupervision(RealBinaryCase):
    def test_child_killed_mid_run(self) -> None:
        c = self.client(timeout=3.0)
        self.assertEqual(c.decide("ORCH-CANCEL", AWAITING), SUPPRESS)
        old = c.pid
        self.assertIsNotNone(old)
        os.kill(old, signal.SIGKILL)
        # Whether the client meets the dead child at the write (broken pipe) or at the
        # read (end of file), the request is retried once on a fresh child: the very
        # next call is answered by the host, not failed safe.
        d = c.decide_full("ORCH-CANCEL", AWAITING)
        self.assertDecision(d, SUPPRESS, "cancelled")
        self.assertNotEqual(c.pid, old)
        self.assertTrue(wait_dead(old))

    def test_child_killed_repeatedly(self) -> None:
        c = self.client(timeout=3.0)
        pids = set()
        for _ in range(5):
            self.assertEqual(c.decide("ORCH-DONE", AWAITING), CONVERGE_DONE)
            pid = c.pid
            pids.add(pid)
            os.kill(pid, signal.SIGKILL)
            self.assertTrue(wait_dead(pid), "the killed child is still alive")  # the next call: a fresh child
        self.assertEqual(c.decide("ORCH-DONE", AWAITING), CONVERGE_DONE)
        self.assertEqual(len(pids), 5)

    def test_threads(self) -> None:
        c = self.client(timeout=10.0)
        errors = []
        counts = []

        def worker(n: int) -> None:
            ok = 0
            try:
                for i in range(50):
                    work_item, target, verdict, rule = EXPECTED[(n * 7 + i) % len(EXPECTED)]
                    d = c.decide_full(work_item, target, "thread-%d-%d" % (n, i))
                    if (d["verdict"], d["rule"], d["work_item"], d["caller"]) != (
                            verdict, rule, work_item, "thread-%d-%d" % (n, i)):
                        errors.append((n, i, d))
                    else:
                        ok += 1
            except Exception as e:  # noqa: BLE001
                errors.append((n, "raised", repr(e)))
            counts.append(ok)

        threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(8)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "threads hung")
        self.assertEqual(errors, [])
        self.assertEqual(sum(counts), 400)
        self.assertLess(time.monotonic() - t0, 60)

    def test_hot_swap_seen_through_client(self) -> None:
        c = self.client(timeout=3.0)
        d = c.decide_full("ORCH-FAILED", AWAITING)
        self.assertDecision(d, ALLOW, "non-terminal")
        self.assertEqual(d["policy"], "deploy-status-guard@1.2.0")
        pid = c.pid
        staging = self.policies / ".incoming.wasm"
        shutil.copyfile(str(self.policy_next), str(staging))
        os.replace(str(staging), str(self.active))  # atomic rename over the active path
        end = time.monotonic() + CEILING
        while True:
            d = c.decide_full("ORCH-FAILED", AWAITING)
            if d["verdict"] == SUPPRESS or time.monotonic() > end:
                break
            time.sleep(0.05)
        self.assertDecision(d, SUPPRESS, "failed")
        self.assertEqual(d["policy"], "deploy-status-guard@1.1.0")
        self.assertEqual(c.pid, pid, "the swap must not need a restart")
        # the rest of the table is unchanged by 1.1.0
        self.assertDecision(c.decide_full("ORCH-CANCEL", AWAITING), SUPPRESS, "cancelled")
        self.assertDecision(c.decide_full("ORCH-WIN", MONITORING), ALLOW, "monitoring-window-active")
        self.assertDecision(c.decide_full("TRAIL-1", AWAITING), ALLOW, "out-of-scope")


FAKE = textwrap.dedent('''\
    #!{python}
    import json, os, sys, time
    mode = {mode!r}
    if mode == "exit":
        sys.exit(3)
    if mode == "slow-start":
        time.sleep(float(os.environ.get("FAKE_DELAY", "5")))
    n = 0
    for line in sys.stdin:
        n += 1
        if mode == "hang":
            continue
        req = json.loads(line)
        if mode == "garbage":
            out = "this is not json <%d>" % n
        elif mode == "error":
            out = json.dumps({{"error": "something broke"}})
        elif mode == "bad-verdict":
            out = json.dumps(dict(req, verdict="MAYBE", rule="x"))
        elif mode == "array":
            out = json.dumps([req])
        elif mode == "wrong-item":
            out = json.dumps(dict(req, work_item="someone-else", verdict="SUPPRESS", rule="fake"))
        elif mode == "chatty":
            sys.stdout.write(json.dumps(dict(req, verdict="SUPPRESS", rule="fake")) + "\\nextra line\\n")
            sys.stdout.flush()
            continue
        elif mode == "one-shot":
            print(json.dumps(dict(req, verdict="SUPPRESS", rule="fake-%d" % os.getpid())), flush=True)
            sys.exit(0)
        else:
            out = json.dumps(dict(req, verdict="SUPPRESS", rule="fake"))
        print(out, flush=True)
''')


class TestFakeChildren(unittest.TestCase):
    """Misbehaving children, played by small Python scripts (no real binary needed)."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dg-fake-")
        self.clients = []

    def tearDown(self) -> None:
        for c in self.clients:
            c.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def fake(self, mode: str, timeout: float = 1.0, env=None) -> Client:
        path = os.path.join(self.dir, "fake-%s" % mode)
        with open(path, "w") as f:
            f.write(FAKE.format(python=sys.executable, mode=mode))
        os.chmod(path, 0o755)
        c = Client(timeout=timeout, env=guard_env(DEPLOY_GUARD_BIN=path, **(env or {})))
        self.clients.append(c)
        return c

    def assertFailSafe(self, d: dict, *fragments: str) -> None:
        self.assertEqual((d["verdict"], d["rule"]), (ALLOW, "fail-safe"), d)
        for fragment in fragments:
            self.assertIn(fragment, d["error"])

    def test_fake_sanity(self) -> None:
        c = self.fake("ok")
        self.assertEqual(c.decide("A", AWAITING), SUPPRESS)
        self.assertEqual(c.decide_full("A", AWAITING, "r")["rule"], "fake")

    def test_hung_child(self) -> None:
        # The child never answers: the only way a call can end is the client's own
        # deadline, and the answer says so ("did not answer within 1s: killed"), the
        # hung child is killed, and the next call meets a fresh one (another pid).
        c = self.fake("hang", timeout=1.0)
        warm_up = answer_within(c.decide_full, "warm-up", AWAITING)  # starts (and kills) a child
        self.assertFailSafe(warm_up, "did not answer within 1s")
        pids = [int(warm_up["error"].split("pid ")[1].split(")")[0])]
        for _ in range(2):
            c._next_spawn = 0.0  # no back-off: every call meets a fresh hung child
            t0 = time.monotonic()
            with self.assertLogs(LOGGER, level="WARNING") as logs:
                d = answer_within(c.decide_full, "A", MONITORING)
            elapsed = time.monotonic() - t0
            self.assertFailSafe(d, "did not answer within 1s: killed")
            # Not before its deadline (taken inside the call, after t0): a lower bound,
            # which no load can break.
            self.assertGreaterEqual(elapsed, 0.9)
            self.assertTrue(any("did not answer" in line for line in logs.output))
            pid_line = d["error"]
            pid = int(pid_line.split("pid ")[1].split(")")[0])
            self.assertNotIn(pid, pids, "the call did not meet a fresh child")
            pids.append(pid)
            self.assertTrue(wait_dead(pid), "the hung child was not killed")

    def test_hung_child_many_threads(self) -> None:
        # Six callers queue on one hung child. Each call ends on its own budget: the
        # one holding the child at its deadline ("did not answer"), the others at theirs
        # waiting for their turn ("no turn"), or at once while restarts back off; none
        # waits out the others' budgets in turn and then asks the child itself.
        c = self.fake("hang", timeout=0.5)
        results = []

        def call() -> None:
            results.append(c.decide_full("A", DEPLOYING))

        threads = [threading.Thread(target=call, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(CEILING)
        self.assertFalse(any(t.is_alive() for t in threads), "a call never answered")
        self.assertEqual([d["verdict"] for d in results], [ALLOW] * 6)
        causes = ("did not answer within 0.5s", "no turn within 0.5s", "restart backs off")
        for d in results:
            self.assertFailSafe(d)
            self.assertTrue(any(cause in d["error"] for cause in causes), d["error"])
        self.assertTrue(any("did not answer within 0.5s" in d["error"] for d in results), results)

    def test_waiting_for_a_turn_counts_against_the_timeout(self) -> None:
        # While another call holds the child (its lock held here, for as long as it
        # takes), each caller answers on its own budget: a fail-safe "no turn", not a
        # wait for the holder. Then the client serves the next call.
        c = self.fake("ok", timeout=0.5)
        self.assertEqual(answer_within(c.decide, "A", AWAITING), SUPPRESS)
        pid = c.pid
        self.assertTrue(c._lock.acquire(timeout=CEILING))
        try:
            results = []
            threads = [threading.Thread(target=lambda: results.append(c.decide_full("A", AWAITING)), daemon=True)
                       for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(CEILING)
            self.assertFalse(any(t.is_alive() for t in threads), "a caller waited for its turn past its timeout")
        finally:
            c._lock.release()
        self.assertEqual(len(results), 6)
        for d in results:
            self.assertFailSafe(d, "no turn within 0.5s")
        self.assertEqual(answer_within(c.decide, "A", AWAITING), SUPPRESS)
        self.assertEqual(c.pid, pid, "waiting callers must not cost the child")

    def test_slow_start_counts_against_timeout(self) -> None:
        # The fake reads nothing for longer than the ceiling: its answer could only come
        # to a client that waited past its own 0.5 s, and this one answers first, by
        # its deadline.
        c = self.fake("slow-start", timeout=0.5, env={"FAKE_DELAY": str(2 * CEILING)})
        d = answer_within(c.decide_full, "A", AWAITING)
        self.assertFailSafe(d, "did not answer within 0.5s: killed")
        pid = int(d["error"].split("pid ")[1].split(")")[0])
        self.assertTrue(wait_dead(pid), "the slow child was not killed")

    def test_garbage_answers(self) -> None:
        c = self.fake("garbage")
        d = c.decide_full("A", AWAITING)
        self.assertFailSafe(d, "not JSON")
        d2 = c.decide_full("A", AWAITING)  # a fresh child again (after no back-off)
        self.assertFailSafe(d2, "not JSON", "<1>")  # "<1>": its first line, so it was restarted

    def test_error_object_keeps_child(self) -> None:
        c = self.fake("error")
        self.assertFailSafe(c.decide_full("A", AWAITING), "refused", "something broke")
        pid = c.pid
        self.assertIsNotNone(pid)
        self.assertFailSafe(c.decide_full("A", AWAITING), "refused")
        self.assertEqual(c.pid, pid)

    def test_unknown_verdict(self) -> None:
        c = self.fake("bad-verdict")
        self.assertFailSafe(c.decide_full("A", AWAITING), "unknown verdict", "MAYBE")
        self.assertEqual(c.decide("A", AWAITING), ALLOW)

    def test_non_object_answer(self) -> None:
        self.assertFailSafe(self.fake("array").decide_full("A", AWAITING), "not an object")

    def test_out_of_step_answer(self) -> None:
        self.assertFailSafe(self.fake("wrong-item").decide_full("A", AWAITING), "another request")

    def test_unsolicited_lines_do_not_shift_answers(self) -> None:
        # The fake writes its answer and an extra line in one write: the extra line is
        # read with the answer and discarded (with a warning) before the next request,
        # so every answer is the right one and the child is kept.
        c = self.fake("chatty")
        with self.assertLogs(LOGGER, level="WARNING") as logs:
            for i in range(5):
                d = c.decide_full("item-%d" % i, AWAITING)
                self.assertEqual((d["verdict"], d["rule"], d["work_item"]), (SUPPRESS, "fake", "item-%d" % i))
        pid = c.pid
        self.assertEqual(c.decide("item-5", AWAITING), SUPPRESS)
        self.assertEqual(c.pid, pid)
        discarded = [line for line in logs.output if "discarding unsolicited" in line]
        self.assertEqual(len(discarded), 4, logs.output)

    def test_child_exiting_after_each_answer(self) -> None:
        # Each child answers once (its pid in the rule) and exits: every call is
        # answered by a fresh child, retried on one when it met the exiting one.
        c = self.fake("one-shot")
        rules = [c.decide_full("A", AWAITING)["rule"] for _ in range(4)]
        self.assertTrue(all(r.startswith("fake-") for r in rules), rules)
        self.assertEqual(len(set(rules)), 4, rules)

    def test_child_exiting_at_start(self) -> None:
        # Each call ends on the child's exit, or at once while the restarts back off:
        # never by its deadline (a budget as long as the ceiling, so that waiting it out
        # would show as "did not answer").
        c = self.fake("exit", timeout=CEILING)
        errors = [answer_within(c.decide_full, "A", AWAITING)["error"] for _ in range(5)]
        self.assertFalse(any("did not answer" in e for e in errors), errors)
        causes = ("exited", "cannot write to deploy-guard", "restart backs off")
        self.assertTrue(all(any(cause in e for cause in causes) for e in errors), errors)
        self.assertTrue(any("restart backs off" in e for e in errors), errors)
        self.assertIn("exit status 3", answer_within(c.decide_full, "A", AWAITING)["error"] + str(c._last_error))

    def test_missing_binary(self) -> None:
        c = Client(timeout=1.0, env=guard_env(DEPLOY_GUARD_BIN=os.path.join(self.dir, "no-such-binary")))
        self.clients.append(c)
        with self.assertLogs(LOGGER, level="WARNING"):
            d = c.decide_full("A", AWAITING)
        self.assertFailSafe(d, "no-such-binary")
        self.assertEqual(c.decide("A", MONITORING), ALLOW)

    def test_no_warning_line_can_be_forged(self) -> None:
        # A client-side failure logs a warning with the caller's values besides the
        # decision line: both escaped, so a work item cannot start a forged line.
        forged = "WI-1\n2026-01-01 00:00:00 INFO orchestrator.deploy_status_guard: forged verdict=ALLOW"
        c = Client(timeout=1.0, env=guard_env(DEPLOY_GUARD_BIN=os.path.join(self.dir, "no-such-binary")))
        self.clients.append(c)
        with self.assertLogs(LOGGER, level="INFO") as logs:
            self.assertFailSafe(c.decide_full(forged, "no-such-target\r"), "unknown target")
            self.assertFailSafe(c.decide_full(forged, AWAITING), "no-such-binary")
        messages = [r.getMessage() for r in logs.records]
        self.assertEqual(len(messages), 4, messages)  # a warning and a decision line each
        for message in messages:
            self.assertFalse(any(ch in message for ch in "\n\r"), repr(message))
        self.assertIn("decide error for WI-1\\u{a}2026-01-01 00:00:00 INFO ", messages[0])
        self.assertIn("(target=no-such-target\\u{d})", messages[0])

    def test_binary_not_on_path(self) -> None:
        env = guard_env(PATH=self.dir)  # nothing called deploy-guard there
        env.pop("DEPLOY_GUARD_BIN", None)
        c = Client(timeout=1.0, env=env)
        self.clients.append(c)
        self.assertFailSafe(c.decide_full("A", AWAITING), "not found")

    def test_binary_found_on_path(self) -> None:
        path = os.path.join(self.dir, "deploy-guard")
        with open(path, "w") as f:
            f.write(FAKE.format(python=sys.executable, mode="ok"))
        os.chmod(path, 0o755)
        env = guard_env(PATH=self.dir + os.pathsep + os.environ.get("PATH", ""))
        c = Client(timeout=2.0, env=env)
        self.clients.append(c)
        self.assertEqual(c.decide_full("A", AWAITING)["rule"], "fake")

    def test_module_level_never_raises_without_binary(self) -> None:
        dgc.close_default_client()
        try:
            with mock.patch.dict(os.environ, guard_env(PATH=self.dir), clear=True):
                self.assertEqual(dgc.decide("A", AWAITING), ALLOW)
                self.assertEqual(dgc.decide_full("A", AWAITING)["rule"], "fail-safe")
        finally:
            dgc.close_default_client()

    def test_invalid_timeout_rejected_at_construction(self) -> None:
        with self.assertRaises(ValueError):
            Client(timeout=0)


if __name__ == "__main__":
    unittest.main()
