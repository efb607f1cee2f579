#!/usr/bin/env python3
"""deploy-guard `serve` against the original Python guard, the fair way.

    python3 scripts/compare_seed.py [--mix bench|in-progress] [--runs 3]
        [--binary target/release/deploy-guard] [--shared ../shared]

For the mix, `deploy-guard bench --export-workload` writes a database and its
requests; ../shared/bench/seed_loop.py runs the original guard over them in-process,
warm (one untimed pass, then the best of 3 passes, its log line to a real handler);
`deploy-guard serve` runs over the same requests as a whole process (start-up, the
cache load and the decision lines to a discarded stderr all counted), best of --runs.
Both sides get the same settings (the workload's workload.env). The verdicts of the
two sides must agree line for line, or this exits 1.
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
ap.add_argument("--mix", default="bench", choices=["bench", "in-progress"])
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
    original = subprocess.run([sys.executable, seed_loop, work], env=env, check=True,
                              capture_output=True, text=True).stdout
    loop = float(re.search(r"loop, best of 3:\s+([\d.]+) us", original).group(1))
    call = re.search(r"one call:\s+median ([\d.]+) us, p99 ([\d.]+) us", original)
    with open(os.path.join(work, "seed-verdicts.txt")) as fh:
        seed_verdicts = fh.read().split()
    with open(os.path.join(work, "requests.jsonl"), "rb") as fh:
        requests = fh.read()
    count = requests.count(b"\n")

    env.update({
        "DEPLOY_GUARD_DB": os.path.join(work, "orchestrator.db"),
        "DEPLOY_GUARD_POLICY": os.path.join(work, "deploy-status-guard.wasm"),
        "DEPLOY_GUARD_CACHE": os.path.join(work, "cache"),
        "RUST_LOG": "info",  # the decision line at its normal level, as the original's
    })
    best = None
    answers = b""
    for _ in range(max(1, args.runs) + 1):  # the first run fills the compile cache
        started = time.perf_counter()
        done = subprocess.run([args.binary, "serve"], input=requests, env=env, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        elapsed = time.perf_counter() - started
        answers = done.stdout
        best = elapsed if best is None or elapsed < best else best
    ours = re.findall(rb'"verdict":"([A-Z_]+)"', answers)
    ours = [v.decode() for v in ours]

print("workload: mix %s, %d requests (%s)" % (args.mix, count, " ".join(
    "%s=%s" % (k, env[k]) for k in ["DEPLOY_STATUS_GUARD_REPOS"] if k in env)))
print("original, in-process warm loop, best of 3:   %6.2f us per decision" % loop)
print("original, one call at a time:                 median %.2f us, p99 %.2f us"
      % (float(call.group(1)), float(call.group(2))))
print("deploy-guard serve, whole process, best of %d: %6.2f us per decision"
      % (args.runs, best / count * 1e6))
print("ratio original / serve:                       %6.2f x  (target >= 2)" % (loop / (best / count * 1e6)))
if ours != seed_verdicts:
    diffs = sum(1 for a, b in zip(ours, seed_verdicts) if a != b) + abs(len(ours) - len(seed_verdicts))
    print("verdicts differ from the original's in %d of %d requests" % (diffs, count))
    sys.exit(1)
print("verdicts: all %d the same as the original's" % count)
