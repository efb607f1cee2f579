"""Per-call latency of the three ways the orchestrator can ask the guard, in one run,
on the same database and the same requests:

* the original module (``deploy_status_guard.decide``, in-process, with the
  orchestrator stand-ins of ``../shared/bench/orch``: one shared sqlite3 connection);
* :class:`deploy_guard.Guard` (in-process, this package);
* :class:`deploy_guard.sidecar.Client` (a ``deploy-guard serve`` child).

Both in-process paths write their decision line through the same real handler (to
/dev/null), as the original did in the orchestrator. Each of ours alternates with the
original request by request (in a run of its own: a sidecar call wakes another
process), so that both sides of a ratio see the same moments of a machine whose speed
drifts. Then the resident memory that
``import deploy_guard`` plus one ``Guard`` add to a fresh interpreter.

    python -m deploy_guard.bench [--orch DIR] [--binary PATH] [--rounds N] [--split]
                                 [--mix bench|in-progress|distinct]

``--mix``: the workload's requests (``deploy-guard bench --mix``); with ``distinct``,
no request repeats in the run (each round, and the untimed warm-up, asks with callers
of its own), so remembered answers cannot help.

``--orch``: the directory holding the stand-ins' package ``orch/`` (default: the
first ``shared/bench`` found beside the working directory or one of its parents).
``--binary``: ``deploy-guard`` (default ``$DEPLOY_GUARD_BIN``, else
``target/release/deploy-guard`` under the working directory, else on ``PATH``): it
writes the workload (``bench --export-workload``) and the policy, and is the sidecar.

A benchmark, not a test: figures vary with the machine's load; compare the ratios.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

Request = Tuple[str, str, Optional[str]]


def find_orch(given: Optional[str]) -> Path:
    if given:
        path = Path(given)
        if (path / "orch").is_dir():
            return path
        if path.name == "orch" and path.is_dir():
            return path.parent
        raise SystemExit("bench: no orch/ package in %s" % given)
    here = Path.cwd().resolve()
    for base in [here] + list(here.parents):
        candidate = base / "shared" / "bench"
        if (candidate / "orch" / "deploy_status_guard.py").is_file():
            return candidate
        candidate = base.parent / "shared" / "bench"
        if (candidate / "orch" / "deploy_status_guard.py").is_file():
            return candidate
    raise SystemExit("bench: cannot find shared/bench/orch beside %s: pass --orch DIR" % here)


def find_binary(given: Optional[str]) -> str:
    for candidate in (given, os.environ.get("DEPLOY_GUARD_BIN"), str(Path.cwd() / "target" / "release" / "deploy-guard")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("deploy-guard")
    if found:
        return found
    raise SystemExit("bench: no deploy-guard binary: pass --binary PATH")


Decide = Callable[[str, str, Optional[str]], str]


def rounds_of(requests: Sequence[Request], rounds: int, mix: str, tag: str) -> List[List[Request]]:
    """The requests of each round: the same ones every round, or, in the distinct mix,
    with callers of the round's own (`<caller>-<tag><round>`), so that none repeats."""
    if mix != "distinct":
        return [list(requests)] * rounds
    return [[(w, t, "%s-%s%d" % (c, tag, r)) for w, t, c in requests] for r in range(rounds)]


def per_call(paths: Sequence[Tuple[str, Decide]], warm: Sequence[Request],
             rounds: Sequence[Sequence[Request]]) -> dict:
    """Nanoseconds of every call of every path, after one untimed pass over `warm`; the
    paths take turns request by request."""
    for w, t, c in warm:
        for _, decide in paths:
            decide(w, t, c)
    clock = time.perf_counter_ns
    times: dict = {name: [] for name, _ in paths}
    for requests in rounds:
        for w, t, c in requests:
            for name, decide in paths:
                t0 = clock()
                decide(w, t, c)
                times[name].append(clock() - t0)
    return times


def summary(times: List[int]) -> Tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) / 1e3, ordered[int(len(ordered) * 0.99)] / 1e3


def resident_added(db: Path, policy: Path) -> float:
    """MiB that `import deploy_guard` plus one Guard and one decision add (VmRSS)."""
    script = (
        "import sys\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1])\n"
        "before = rss()\n"
        "import deploy_guard\n"
        "g = deploy_guard.Guard(sys.argv[1], sys.argv[2], watch=True)\n"
        "g.decide('ORCH-1', 'awaiting')\n"
        "print((rss() - before) / 1024)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(db), str(policy)], stdout=subprocess.PIPE, check=True)
    return float(run.stdout)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy_guard.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orch", help="the directory holding the original's stand-ins (orch/)")
    parser.add_argument("--binary", help="the deploy-guard binary")
    parser.add_argument("--rounds", type=int, default=2, help="timed passes over the requests (default 2)")
    parser.add_argument("--requests", type=int, default=15000, help="requests per pass (default 15000)")
    parser.add_argument("--mix", default="bench", choices=["bench", "in-progress", "distinct"],
                        help="the workload's requests (default bench)")
    parser.add_argument("--split", action="store_true",
                        help="also time each path with its logger off: what deciding costs, and by "
                             "difference what the decision line costs")
    args = parser.parse_args(argv)

    orch_root = find_orch(args.orch)
    binary = find_binary(args.binary)
    work = Path(tempfile.mkdtemp(prefix="deploy-guard-bench-"))
    try:
        subprocess.run([binary, "bench", "--export-workload", str(work), "--mix", args.mix], check=True,
                       stdout=subprocess.DEVNULL)
        # The scope of the mix, for all three sides.
        scope = {}
        with open(work / "workload.env") as fh:
            for line in fh:
                name, _, value = line.strip().partition("=")
                if name:
                    scope[name] = value
        subprocess.run([binary, "export-policies", "--out", str(work / "policies")], check=True,
                       stdout=subprocess.DEVNULL)
        db = work / "orchestrator.db"
        policy = work / "policies" / "deploy-status-guard.wasm"
        requests: List[Request] = []
        with open(work / "requests.jsonl") as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    requests.append((r["work_item"], r["target"], r.get("caller")))
        requests = requests[: args.requests]

        # The same settings for all three (the original's stand-ins read them at import).
        for name in list(os.environ):
            if name.startswith(("DEPLOY_GUARD_", "DEPLOY_STATUS_GUARD_")):
                del os.environ[name]
        os.environ["DEPLOY_GUARD_DB"] = str(db)
        os.environ["DEPLOY_GUARD_POLICY"] = str(policy)
        os.environ.update(scope)

        sys.path.insert(0, str(orch_root))
        from orch import db as orch_db  # type: ignore[import-not-found]
        from orch import deploy_status_guard as original  # type: ignore[import-not-found]

        import deploy_guard
        from deploy_guard.sidecar import Client

        orch_db.use(str(db))
        log = logging.getLogger("orchestrator.deploy_status_guard")
        log.handlers.clear()
        log.propagate = False
        sink = open(os.devnull, "w")
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

        guard = deploy_guard.Guard(db, policy, watch=True)
        client = Client(binary=binary, env=dict(os.environ), stderr=subprocess.DEVNULL, timeout=10)
        try:
            # The verdicts compared once, asked by callers no timed round uses.
            checked = rounds_of(requests, 1, args.mix, "check")[0]
            theirs = [original.decide(w, t, c) for w, t, c in checked]
            ours = [guard.decide(w, t, c) for w, t, c in checked]
            sidecar = [client.decide(w, t, c) for w, t, c in checked]
            # The original alternates with each of ours in a run of its own: a sidecar
            # call wakes another process, which would disturb the in-process calls
            # around it. The in-process ratio is against the original of its own run.
            in_process = (("original", original.decide), ("in-process", guard.decide))
            sidecar_run = (("original", original.decide), ("sidecar", client.decide))

            def timed(paths, tag):
                times = per_call(paths, rounds_of(requests, 1, args.mix, tag + "-warm")[0],
                                 rounds_of(requests, args.rounds, args.mix, tag))
                return {name: summary(t) for name, t in times.items()}

            results = timed(in_process, "round")
            results["sidecar"] = timed(sidecar_run, "sidecar")["sidecar"]
            unlogged = {}
            if args.split:
                log.setLevel(logging.CRITICAL)
                unlogged = timed(in_process, "split")
                unlogged["sidecar"] = timed(sidecar_run, "split-sidecar")["sidecar"]
                log.setLevel(logging.INFO)
        finally:
            client.close()
            guard.close()
        memory = resident_added(db, policy)
    finally:
        shutil.rmtree(str(work), ignore_errors=True)

    n = len(requests)
    print("deploy-guard bench (Python): mix %s, %d requests x %d rounds, one call at a time, alternating "
          "with the original, each with its log line" % (args.mix, n, args.rounds))
    for name, label in (("original", "original deploy_status_guard.decide"),
                        ("in-process", "deploy_guard.Guard.decide (in-process)"),
                        ("sidecar", "deploy_guard.sidecar.Client.decide")):
        median, p99 = results[name]
        print("%-42s median %7.2f us   p99 %8.2f us" % (label, median, p99))
    base = results["original"][0]
    print("ratio in-process / original, median:     %.2f x  (target <= 0.67, stretch 0.5)" % (
        results["in-process"][0] / base))
    print("in-process p99:                          %.2f us  (target <= 50)" % results["in-process"][1])
    print("sidecar median:                          %.2f us  (target <= 30)" % results["sidecar"][0])
    print("resident memory of import + one Guard:   %.1f MiB  (target <= 20)" % memory)
    if unlogged:
        print("with the logger off (deciding alone; the difference is the decision line):")
        for name in ("original", "in-process", "sidecar"):
            print("  %-12s median %7.2f us   decision line %6.2f us" % (
                name, unlogged[name][0], results[name][0] - unlogged[name][0]))
    differ = sum(1 for a, b in zip(theirs, ours) if a != b)
    differ_sidecar = sum(1 for a, b in zip(theirs, sidecar) if a != b)
    print("verdicts differing from the original:    %d in-process, %d sidecar (of %d)" % (differ, differ_sidecar, n))
    return 0 if differ == 0 and differ_sidecar == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
