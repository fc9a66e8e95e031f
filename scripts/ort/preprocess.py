"""timm's eval transform in numpy + Pillow: resize the shorter side to floor(size / crop_pct) with
Pillow's filter, center crop `size`, scale to [0, 1], normalize with mean/std, CHW layout.

Same arithmetic as torchvision's Resize(int) + CenterCrop + ToTensor + Normalize on a PIL image
(see scripts/preprocess_reference.py, which the Rust preprocessing is checked against)."""
import math

import numpy as np
from PIL import Image

_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def preprocess(path, size=224, crop_pct=0.9, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """Returns a float32 array `[1, 3, size, size]` for the image file at `path`."""
    interpolation = interpolation.lower()
    if interpolation not in _FILTERS:
        raise ValueError(f"unsupported interpolation {interpolation!r}; expected one of {sorted(_FILTERS)}")
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = math.floor(size / crop_pct)
        nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
        im = im.resize((nw, nh), _FILTERS[interpolation])
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        rgb = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    x = (rgb - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
