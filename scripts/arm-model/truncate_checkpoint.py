#!/usr/bin/env python3
"""Writes a copy of a timm ViT .safetensors checkpoint with only its first D transformer blocks
(standard library only). The result has ViT-Tiny's layer shapes at 1/12 of the work per block kept,
for quick cost-model runs (e.g. the scalar-versus-SIMD sanity check):

  truncate_checkpoint.py IN.safetensors OUT.safetensors --depth 1
"""
import argparse
import json
import re
import struct

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("input")
ap.add_argument("output")
ap.add_argument("--depth", type=int, default=1)
a = ap.parse_args()
with open(a.input, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    data = f.read()
meta = header.pop("__metadata__", None)
keep = {}
for name, t in header.items():
    m = re.match(r"blocks\.(\d+)\.", name)
    if m and int(m.group(1)) >= a.depth:
        continue
    keep[name] = t
out, blobs, off = {}, [], 0
for name, t in sorted(keep.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    s, e = t["data_offsets"]
    out[name] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + e - s]}
    blobs.append(data[s:e])
    off += e - s
if meta:
    out["__metadata__"] = meta
h = json.dumps(out, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(a.output, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
print(f"wrote {a.output}: {len(out) - (1 if meta else 0)} tensors, depth {a.depth}")
