#!/usr/bin/env python3
"""Compares two `vitedge classify --json` outputs: same images, same top-1, top-5 scores within 2e-3
(or TOLERANCE). Usage: compare_top5.py REFERENCE.json CANDIDATE.json [TOLERANCE]
(exit status 1 and a message on mismatch)."""
import json
import sys

a = [json.loads(line) for line in open(sys.argv[1])]
b = [json.loads(line) for line in open(sys.argv[2])]
tol = float(sys.argv[3]) if len(sys.argv) > 3 else 2e-3
if not (len(a) == len(b) > 0):
    sys.exit(f"different number of results: {len(a)} vs {len(b)}")
for x, y in zip(a, b):
    if x["top"][0]["index"] != y["top"][0]["index"]:
        sys.exit(f"{x['image']}: top-1 {x['top'][0]} vs {y['top'][0]}")
    for p, q in zip(x["top"], y["top"]):
        if abs(p["score"] - q["score"]) >= tol:
            sys.exit(f"{x['image']}: {p} vs {q}")
