#!/usr/bin/env python3
"""Compares two JSON-lines outputs of frame classification (`vitedge stream`, examples/vitedge_stream.c):
same frames, same top-k indices and labels in the same order, and scores equal as float32 (or
within TOLERANCE). Usage: compare_stream.py REFERENCE CANDIDATE [TOLERANCE]
(exit status 1 and a message on a mismatch)."""
import json
import struct
import sys

f32 = lambda x: struct.unpack("f", struct.pack("f", x))[0]
a = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
b = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
tol = float(sys.argv[3]) if len(sys.argv) > 3 else None
if not (len(a) == len(b) > 0):
    sys.exit(f"different number of frames: {len(a)} vs {len(b)}")
for x, y in zip(a, b):
    if x["frame"] != y["frame"]:
        sys.exit(f"frame {x['frame']} vs {y['frame']}")
    if tol is None and [(t["index"], t["label"]) for t in x["top"]] != [(t["index"], t["label"]) for t in y["top"]]:
        sys.exit(f"frame {x['frame']}: top {x['top']} vs {y['top']}")
    if x["top"][0]["index"] != y["top"][0]["index"]:
        sys.exit(f"frame {x['frame']}: top-1 {x['top'][0]} vs {y['top'][0]}")
    for p, q in zip(x["top"], y["top"]):
        same = f32(p["score"]) == f32(q["score"]) if tol is None else abs(p["score"] - q["score"]) < tol
        if not same:
            sys.exit(f"frame {x['frame']}: {p} vs {q}")
print(f"{len(a)} frames: same results")
