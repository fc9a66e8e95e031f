"""Raw NV12 camera frames made from sample images, for the Python suite and .ci/bindings.sh.

    python frames.py OUT.nv12 WIDTH HEIGHT IMAGE...   # one frame per image, concatenated
"""

import sys

import numpy as np
from PIL import Image


def rgb_to_nv12(rgb: np.ndarray) -> np.ndarray:
    """An NV12 frame, shape (h * 3 // 2, w) (BT.601 limited range, 2×2-averaged chroma), of an
    even-sized (h, w, 3) uint8 RGB image."""
    f = rgb.astype(np.float64)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    h, w = y.shape

    def sub(c):
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))

    uv = np.stack([sub(u), sub(v)], axis=-1).reshape(h // 2, w)
    return np.clip(np.rint(np.concatenate([y, uv])), 0, 255).astype(np.uint8)


def nv12_frames(paths, width: int, height: int):
    """One NV12 frame per image, resized to width × height."""
    return [rgb_to_nv12(np.asarray(Image.open(p).convert("RGB").resize((width, height)))) for p in paths]


if __name__ == "__main__":
    out, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(out, "wb") as f:
        for frame in nv12_frames(sys.argv[4:], w, h):
            f.write(frame.tobytes())
