#!/usr/bin/env python3
"""deploy-guard `serve` against the original Python guard, the fair way.

    python3 scripts/compare_seed.py [--mix bench|in-progress|distinct] [--runs 3]
        [--binary target/release/deploy-guard] [--shared ../shared]

For the mix, `deploy-guard bench --export-workload` writes a database and its
requests; ../shared/bench/seed_loop.py runs the original guard over them in-process,
warm (one untimed pass, then the best of 3 passes, its log line to a real handler);
`deploy-guard serve` runs over the same requests as a whole process (start-up, the
cache load and the decision lines to a discarded stderr all counted). The two take
turns --runs times; the ratio is the median of the pairs' ratios.
Both sides get the same settings (the workload's workload.env). The verdicts of the
two sides must agree line for line, or this exits 1. With --mix distinct no request
repeats (each has a caller of its own): remembered answers cannot help `serve`.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--mix", default="bench", choices=["bench", "in-progress", "distinct"])
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--binary", default=os.path.join(root, "target", "release", "deploy-guard"))
ap.add_argument("--shared", default=os.path.join(os.path.dirname(root), "shared"))
args = ap.parse_args()

seed_loop = os.path.join(args.shared, "bench", "seed_loop.py")
if not os.path.isfile(seed_loop):
    sys.exit("compare_seed: %s not found (--shared DIR)" % seed_loop)

with tempfile.TemporaryDirectory() as work:
    subprocess.run([args.binary, "bench", "--export-workload", work, "--mix", args.mix],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([args.binary, "export-policies", "--out", work], check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ)
    with open(os.path.join(work, "workload.env")) as fh:
        for line in fh:
            name, _, value = line.strip().partition("=")
            if name:
                env[name] = value
    serve_env = dict(env)
    serve_env.update({
        "DEPLOY_GUARD_DB": os.path.join(work, "orchestrator.db"),
        "DEPLOY_GUARD_POLICY": os.path.join(work, "deploy-status-guard.wasm"),
        "DEPLOY_GUARD_CACHE": os.path.join(work, "cache"),
        "RUST_LOG": "info",  # the decision line at its normal level, as the original's
    })
    with open(os.path.join(work, "requests.jsonl"), "rb") as fh:
        requests = fh.read()
    count = requests.count(b"\n")

    def serve():
        started = time.perf_counter()
        done = subprocess.run([args.binary, "serve"], input=requests, env=serve_env, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started, done.stdout

    def original():
        out = subprocess.run([sys.executable, seed_loop, work], env=env, check=True,
                             capture_output=True, text=True).stdout
        loop = float(re.search(r"loop, best of 3:\s+([\d.]+) us", out).group(1))
        call = re.search(r"one call:\s+median ([\d.]+) us, p99 ([\d.]+) us", out)
        return loop, (float(call.group(1)), float(call.group(2)))

    serve()  # fills the compile cache
    # The two sides take turns, run by run: each pair saw the same moment of the
    # machine, and the ratio is taken pair by pair (blocks run one after the other drift).
    pairs = []
    for _ in range(max(1, args.runs)):
        loop, call = original()
        elapsed, answers = serve()
        pairs.append((loop, elapsed / count * 1e6, call))
    with open(os.path.join(work, "seed-verdicts.txt")) as fh:
        seed_verdicts = fh.read().split()
    ours = re.findall(rb'"verdict":"([A-Z_]+)"', answers)
    ours = [v.decode() for v in ours]

ratios = sorted(loop / per for loop, per, _ in pairs)
middle = sorted(pairs, key=lambda p: p[0] / p[1])[len(pairs) // 2]
print("workload: mix %s, %d requests (%s)" % (args.mix, count, " ".join(
    "%s=%s" % (k, env[k]) for k in ["DEPLOY_STATUS_GUARD_REPOS"] if k in env)))
for loop, per, (median, p99) in pairs:
    print("pair: original loop %6.2f us (one call: median %.2f, p99 %.2f), serve %6.2f us per decision: %.2f x"
          % (loop, median, p99, per, loop / per))
print("original, in-process warm loop (median pair): %6.2f us per decision" % middle[0])
print("deploy-guard serve, whole process (same pair): %6.2f us per decision" % middle[1])
print("ratio original / serve, median of %d pairs:    %6.2f x  (target >= 2.5; distinct >= 2)"
      % (len(pairs), ratios[len(ratios) // 2]))
if ours != seed_verdicts:
    diffs = sum(1 for a, b in zip(ours, seed_verdicts) if a != b) + abs(len(ours) - len(seed_verdicts))
    print("verdicts differ from the original's in %d of %d requests" % (diffs, count))
    sys.exit(1)
print("verdicts: all %d the same as the original's" % count)
