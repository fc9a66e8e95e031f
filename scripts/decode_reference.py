#!/usr/bin/env python3
"""Pillow's decoded pixels, as SHA-256 per image, for tests/preprocess.rs (decoding bit-exact with Pillow).

Run through scripts/reference-venv.sh (a venv with genuine Pillow from PyPI):

    scripts/reference-venv.sh pillow scripts/decode_reference.py

1. Writes small synthetic images into tests/fixtures/decode/ with Pillow's own encoders: JPEGs the
   way cameras and tools write them (4:2:0, 4:2:2, 4:4:4, 4:1:1 subsampling, progressive, restart
   intervals, optimized Huffman tables, odd and tiny sizes, grayscale, CMYK, an EXIF orientation tag)
   and PNGs in every colour type (8/16-bit, gray, gray+alpha, palette, RGBA). The content is a
   deterministic pattern: smooth gradients, fine colour texture and sharp edges, so that chroma
   upsampling and the IDCT both matter.
2. Decodes those files and every image of ../shared/imagenet-sample the way timm's dataset does —
   `Image.open(path).convert("RGB")` (no EXIF transpose) — and records width, height and the SHA-256
   of the RGB bytes in tests/fixtures/decode/pillow_rgb_sha256.json (images are not committed; only the
   synthetic ones, which are tiny).
"""
import hashlib, io, json, os, sys

import numpy as np
import PIL
from PIL import Image, features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "decode")
SAMPLE = os.path.join(ROOT, "..", "shared", "imagenet-sample")


def pattern(w, h, seed=0):
    """Camera-like deterministic RGB content: gradients, a colour texture, edges and some noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / (7.0 + seed)) * np.cos(y / 11.0) + 20 * (x / max(w, 1))
    g = 128 + 90 * np.cos((x + 2 * y) / (13.0 + seed)) - 30 * (y / max(h, 1))
    b = 100 + 120 * ((x // 9 + y // 7) % 2) * (x / max(w, 1))  # sharp coloured edges
    rng = np.random.default_rng(1234 + seed)
    noise = rng.normal(0, 6, (h, w, 3))
    img = np.stack([r, g, b], axis=-1) + noise
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def jpeg_cases():
    # (name, size, save options, mode)
    yield "q85_420_333x251", (333, 251), dict(quality=85, subsampling="4:2:0"), "RGB"
    yield "q90_422_161x97", (161, 97), dict(quality=90, subsampling="4:2:2"), "RGB"
    yield "q95_444_64x48", (64, 48), dict(quality=95, subsampling="4:4:4"), "RGB"
    yield "q75_411_97x61", (97, 61), dict(quality=75, subsampling="4:1:1"), "RGB"
    yield "q80_420_progressive_257x193", (257, 193), dict(quality=80, subsampling="4:2:0", progressive=True), "RGB"
    yield "q80_444_progressive_optimized_131x67", (131, 67), dict(quality=80, subsampling="4:4:4", progressive=True, optimize=True), "RGB"
    yield "q85_420_restart_rows_211x149", (211, 149), dict(quality=85, subsampling="4:2:0", restart_marker_rows=1), "RGB"
    yield "q85_422_restart_blocks_123x77", (123, 77), dict(quality=85, subsampling="4:2:2", restart_marker_blocks=5), "RGB"
    yield "q85_420_optimized_480x320", (480, 320), dict(quality=85, subsampling="4:2:0", optimize=True), "RGB"
    yield "q100_420_33x17", (33, 17), dict(quality=100, subsampling="4:2:0"), "RGB"
    yield "q50_420_1x1", (1, 1), dict(quality=50, subsampling="4:2:0"), "RGB"
    yield "q70_420_7x3", (7, 3), dict(quality=70, subsampling="4:2:0"), "RGB"
    yield "q70_422_17x1", (17, 1), dict(quality=70, subsampling="4:2:2"), "RGB"
    yield "q70_420_1x23", (1, 23), dict(quality=70, subsampling="4:2:0"), "RGB"
    yield "q88_gray_99x77", (99, 77), dict(quality=88), "L"
    yield "q88_gray_progressive_45x31", (45, 31), dict(quality=88, progressive=True), "L"
    yield "q90_cmyk_70x50", (70, 50), dict(quality=90), "CMYK"
    yield "q85_420_exif_orientation6_90x60", (90, 60), dict(quality=85, subsampling="4:2:0"), "RGB"


def png_cases():
    yield "rgb8_29x17", (29, 17), "RGB", {}
    yield "rgba8_23x19", (23, 19), "RGBA", {}
    yield "gray8_31x13", (31, 13), "L", {}
    yield "gray_alpha_15x11", (15, 11), "LA", {}
    yield "palette_27x14", (27, 14), "P", {}
    yield "gray1bit_21x9", (21, 9), "1", {}
    yield "rgb16_13x7", (13, 7), "RGB16", {}
    yield "gray16_12x5", (12, 5), "I;16", {}


def write_synthetic():
    os.makedirs(OUT, exist_ok=True)
    names = []
    for i, (name, (w, h), opts, mode) in enumerate(jpeg_cases()):
        img = pattern(w, h, seed=i % 5)
        if mode != "RGB":
            img = img.convert(mode)
        if "exif" in name:
            exif = Image.Exif()
            exif[0x0112] = 6  # Orientation: rotate 90 CW to display; timm ignores it
            opts = dict(opts, exif=exif.tobytes())
        path = os.path.join(OUT, name + ".jpg")
        img.save(path, "JPEG", **opts)
        names.append(path)
    for i, (name, (w, h), mode, opts) in enumerate(png_cases()):
        img = pattern(w, h, seed=i % 5)
        path = os.path.join(OUT, name + ".png")
        if mode == "RGB16":
            # 16-bit RGB PNG written directly (Pillow has no 16-bit RGB mode to save from).
            arr = np.asarray(img).astype(np.uint16) * 257 + np.arange(w * h * 3, dtype=np.uint16).reshape(h, w, 3) % 251
            write_png16_rgb(path, arr)
        elif mode == "I;16":
            arr = (np.asarray(img.convert("L")).astype(np.uint16) * 3).astype(np.uint16)  # values up to 765
            Image.fromarray(arr).save(path, "PNG")  # uint16 array: mode I;16
        elif mode == "P":
            img.convert("P", palette=Image.Palette.ADAPTIVE, colors=37).save(path, "PNG")
        else:
            img.convert(mode).save(path, "PNG", **opts)
        names.append(path)
    return names


def write_png16_rgb(path, arr):
    import struct, zlib
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def decoded(path):
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        info = {"format": im.format, "mode": im.mode}
        if im.format == "JPEG":
            from PIL import JpegImagePlugin
            info["subsampling"] = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0", 3: "4:1:1"}.get(JpegImagePlugin.get_sampling(im), "other")
            info["progressive"] = bool(im.info.get("progressive") or im.info.get("progression"))
    data = rgb.tobytes()
    assert len(data) == rgb.width * rgb.height * 3
    return dict(info, width=rgb.width, height=rgb.height, sha256=hashlib.sha256(data).hexdigest())


def main():
    synthetic = write_synthetic()
    images = {}
    for p in synthetic:
        images["synthetic/" + os.path.basename(p)] = decoded(p)
    if os.path.isdir(SAMPLE):
        for f in sorted(os.listdir(SAMPLE)):
            images["imagenet-sample/" + f] = decoded(os.path.join(SAMPLE, f))
    else:
        sys.exit(f"{SAMPLE} is missing: the manifest must cover the shared sample images")
    manifest = {
        "producer": "scripts/decode_reference.py",
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version_feature("libjpeg_turbo"),
        "decode": 'PIL.Image.open(path).convert("RGB"), SHA-256 of the interleaved RGB bytes',
        "images": images,
    }
    with open(os.path.join(OUT, "pillow_rgb_sha256.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    kinds = {}
    for v in images.values():
        k = (v["format"], v["mode"], v.get("subsampling", ""), v.get("progressive", False))
        kinds[k] = kinds.get(k, 0) + 1
    print(f"{len(images)} images; Pillow {PIL.__version__}, libjpeg-turbo {manifest['libjpeg_turbo']}")
    for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d} {k}")


if __name__ == "__main__":
    main()
