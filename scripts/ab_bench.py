#!/usr/bin/env python3
"""Before / after timing of vitedge builds in one run: alternates `vitedge bench --json` of two or
more binaries (order reversed every other round, so a drifting machine hits both alike) and prints
each binary's median and the median of its per-round ratios to the first binary.

    python3 scripts/ab_bench.py --rounds 10 --threads 1 --model models/vit_tiny_int8.vitb \\
        /tmp/vitedge-before target/release/vitedge [-- extra vitedge bench options]

Keep copies of the binaries outside target/ (cargo overwrites target/release/vitedge). On a VM
whose speed changes within seconds, the per-round ratio is the figure to quote, not the medians.
"""
import argparse
import json
import statistics
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+", help="vitedge binaries; the first is the baseline")
    ap.add_argument("--model", required=True, help="blob to time")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", default="60", help="vitedge bench --iters per run")
    # Everything after `--` goes to `vitedge bench` as is (argparse would take it as binaries).
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    times = {b: [] for b in args.binaries}
    for r in range(args.rounds):
        for b in args.binaries if r % 2 == 0 else args.binaries[::-1]:
            cmd = [b, "bench", "--model", args.model, "--threads", args.threads, "--iters", args.iters, "--json", *extra]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            times[b].append(json.loads(out)["median_ms"])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    base = times[args.binaries[0]]
    for b in args.binaries:
        ratios = [x / y for x, y in zip(times[b], base)]
        print(f"{b}: median {statistics.median(times[b]):.3f} ms, per-round ratio to the first: median {statistics.median(ratios):.3f} "
              f"({' '.join(f'{x:.3f}' for x in ratios)})")


if __name__ == "__main__":
    main()
