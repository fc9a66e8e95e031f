#!/usr/bin/env python3
"""Writes the Pillow reference crops used by tests/preprocess.rs.

Each case's input is a deterministic RGB pattern (the same formula as `pattern()` in the test);
the output is what timm's eval transform (torchvision Resize(int) + CenterCrop on a PIL image)
produces before ToTensor, as raw interleaved uint8. Needs Pillow and numpy.
"""
import json, math, os, sys
import numpy as np
from PIL import Image

CASES = [
    ("tiny_7x5", 7, 5, 4, 0.9, "bicubic"),
    ("single_pixel", 1, 1, 8, 0.875, "bicubic"),
    ("tall_3x400", 3, 400, 16, 0.9, "bicubic"),
    ("wide_1000x3", 1000, 3, 8, 1.0, "bicubic"),
    ("landscape_61x45", 61, 45, 32, 0.9, "bicubic"),
    ("portrait_40x77_bilinear", 40, 77, 24, 0.875, "bilinear"),
    ("upscale_20x30", 20, 30, 48, 0.9, "bicubic"),
    ("no_resize_needed", 36, 50, 32, 32 / 36, "bicubic"),
]

def pattern(w, h):
    y, x, c = np.meshgrid(np.arange(h, dtype=np.uint64), np.arange(w, dtype=np.uint64), np.arange(3, dtype=np.uint64), indexing="ij")
    v = (x * 7919 + y * 104729 + c * 31337) * 2654435761
    return ((v >> np.uint64(13)) & np.uint64(255)).astype(np.uint8)

def reference(arr, size, crop_pct, interp):
    im = Image.fromarray(arr)
    w, h = im.size
    s = math.floor(size / crop_pct)
    if w <= h:
        nw, nh = s, int(s * h / w)
    else:
        nw, nh = int(s * w / h), s
    im = im.resize((nw, nh), {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[interp])
    left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
    return np.asarray(im.crop((left, top, left + size, top + size)))

def main(out_dir):
    meta = []
    for name, w, h, size, crop, interp in CASES:
        ref = reference(pattern(w, h), size, crop, interp)
        ref.tofile(os.path.join(out_dir, name + ".out.raw"))
        meta.append({"name": name, "width": w, "height": h, "size": size, "crop_pct": crop, "interpolation": interp})
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/preprocess")
