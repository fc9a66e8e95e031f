#!/usr/bin/env python3
"""Open → first result with and without the verify-before-use checksums (run on an idle machine).

Runs `vitedge bench --json --iters 1` on each blob, interleaving: with verification (the
default), with `--no-verify`, and optionally an older binary (`--baseline`, e.g. a build from
before verification existed), 0.2 s apart, for --rounds rounds. Prints median, min and max of
`load_ms` (open + engine) and `first_result_ms` (open → first result, no image decode) per
variant. Standard library only.

  python3 scripts/open-first-result.py --blob models/vit_tiny_int8.vitb --blob models/vit_tiny_f32.vitb \
      [--threads 1] [--rounds 20] [--vitedge target/release/vitedge] [--baseline /path/to/old/vitedge]
"""

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blob", action="append", required=True)
    ap.add_argument("--vitedge", default=str(ROOT / "target/release/vitedge"))
    ap.add_argument("--baseline", help="another vitedge binary to time the same way (without --no-verify)")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    variants = [("verify", [args.vitedge]), ("--no-verify", [args.vitedge, "--no-verify"])]
    if args.baseline:
        variants.append(("baseline", [args.baseline]))
    results = {(b, v): {"load_ms": [], "first_result_ms": []} for b in args.blob for v, _ in variants}
    for _ in range(args.rounds):
        for blob in args.blob:
            for name, cmd in variants:
                binary, extra = cmd[0], cmd[1:]
                time.sleep(0.2)
                out = subprocess.run([binary, "bench", "--json", "--iters", "1", "--threads", args.threads, "--model", blob, *extra],
                                     capture_output=True, text=True, check=True)
                j = json.loads(out.stdout)
                for key in ("load_ms", "first_result_ms"):
                    results[(blob, name)][key].append(j[key])
    print(f"{'blob':<34} {'variant':<12} {'load ms median (min–max)':>26} {'first result ms median (min–max)':>34}")
    for (blob, name), r in results.items():
        cells = [f"{statistics.median(r[k]):.2f} ({min(r[k]):.2f}–{max(r[k]):.2f})" for k in ("load_ms", "first_result_ms")]
        print(f"{Path(blob).name:<34} {name:<12} {cells[0]:>26} {cells[1]:>34}")


if __name__ == "__main__":
    main()
