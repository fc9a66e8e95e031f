#!/usr/bin/env python3
"""Genuine torchvision / timm eval transforms on PIL images: their repr() and their output pixels.

Run through scripts/reference-venv.sh (a venv with torch, torchvision, timm and Pillow from PyPI):

    scripts/reference-venv.sh timm quant/scripts/transform_reference.py

Writes quant/tests/fixtures/transforms/: cases.json (per case: the transform's repr() exactly as
Python prints it, the input image size, the output size) and <name>.out.raw, the uint8 RGB pixels
the transform's geometric steps produce (the transform without its ToTensor/Normalize tail, on a
PIL image) as interleaved bytes, plus <name>.tensor.f32 for the cases marked "tensor": the full
transform's output tensor (CHW float32, little-endian). The input image is the deterministic pattern
of `pattern()` below (the Rust test computes the same). quant/tests/transform.rs parses each repr
with vitedge-quant and checks vitedge's preprocessing gives these bytes exactly.
"""
import json, os

import numpy as np
import torch
import timm
import torchvision
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T
from torchvision.transforms import v2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "quant", "tests", "fixtures", "transforms")
IM = T.InterpolationMode
HALF = (0.5, 0.5, 0.5)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def pattern(w, h):
    """Same formula as scripts/preprocess_reference.py and the Rust tests."""
    y, x, c = np.meshgrid(np.arange(h, dtype=np.uint64), np.arange(w, dtype=np.uint64), np.arange(3, dtype=np.uint64), indexing="ij")
    v = (x * 7919 + y * 104729 + c * 31337) * 2654435761
    return ((v >> np.uint64(13)) & np.uint64(255)).astype(np.uint8)


def cases():
    # name, transform, input (w, h), whether to store the final tensor too
    yield "seed_resize_only_square", T.Compose([T.Resize(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (32, 32), True
    yield "resize_crop_bicubic", T.Compose([T.Resize(36, interpolation=IM.BICUBIC), T.CenterCrop(32), T.ToTensor(), T.Normalize(*IMAGENET)]), (61, 45), True
    yield "resize_crop_bilinear_portrait", T.Compose([T.Resize(27), T.CenterCrop(24), T.ToTensor(), T.Normalize(HALF, HALF)]), (40, 77), False
    yield "squash_exact", T.Compose([T.Resize((32, 32), interpolation=IM.BICUBIC), T.ToTensor(), T.Normalize(HALF, HALF)]), (97, 41), True
    yield "squash_exact_then_crop", T.Compose([T.Resize((36, 36), interpolation=IM.BILINEAR, antialias=False), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (50, 70), False
    yield "max_size", T.Compose([T.Resize(40, interpolation=IM.BICUBIC, max_size=48), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (120, 40), False
    yield "crop_larger_than_image", T.Compose([T.Resize(20), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (33, 21), False
    yield "crop_only_no_resize", T.Compose([T.CenterCrop(16), T.ToTensor(), T.Normalize(HALF, HALF)]), (23, 18), False
    yield "nearest", T.Compose([T.Resize(36, interpolation=IM.NEAREST), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (101, 77), False
    yield "nearest_exact_upscale", T.Compose([T.Resize(40, interpolation=IM.NEAREST_EXACT), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (13, 17), False
    yield "box", T.Compose([T.Resize(36, interpolation=IM.BOX), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (150, 90), False
    yield "hamming", T.Compose([T.Resize(36, interpolation=IM.HAMMING), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (150, 90), False
    yield "lanczos", T.Compose([T.Resize(36, interpolation=IM.LANCZOS), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (150, 90), False
    yield "lanczos_upscale", T.Compose([T.Resize(40, interpolation=IM.LANCZOS), T.CenterCrop(32), T.ToTensor(), T.Normalize(HALF, HALF)]), (21, 25), False
    yield "list_size_and_tensor_stats", T.Compose([T.Resize([36], interpolation=IM.BICUBIC), T.CenterCrop((32, 32)), T.ToTensor(),
                                                   T.Normalize(torch.tensor(IMAGENET[0]), torch.tensor(IMAGENET[1]))]), (64, 48), True
    yield "v2_pil_pipeline", v2.Compose([v2.Resize(36, interpolation=IM.BICUBIC), v2.CenterCrop(32), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                         v2.Normalize(list(HALF), list(HALF))]), (70, 52), True
    yield "v2_longer_side", v2.Compose([v2.Resize(size=None, max_size=32, interpolation=IM.BICUBIC), v2.CenterCrop(32), v2.ToImage(),
                                        v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(HALF), list(HALF))]), (80, 50), False
    yield "pil_to_tensor_convert_dtype", T.Compose([T.Resize(36), T.CenterCrop(32), T.PILToTensor(), T.ConvertImageDtype(torch.float32),
                                                    T.Normalize(HALF, HALF)]), (45, 45), True
    # Pillow >= 13 runs the vertical pass first here (height shrinks by more than twice the width).
    yield "tall_vertical_pass_first", T.Compose([T.Resize(16, interpolation=IM.BICUBIC), T.CenterCrop(16), T.ToTensor(), T.Normalize(HALF, HALF)]), (40, 130), True
    yield "timm_center", create_transform(input_size=32, crop_pct=0.9, interpolation="bicubic", mean=HALF, std=HALF), (75, 40), True
    yield "timm_squash", create_transform(input_size=32, crop_pct=0.875, crop_mode="squash", interpolation="bicubic"), (75, 40), False
    yield "timm_border", create_transform(input_size=32, crop_pct=0.95, crop_mode="border", interpolation="bicubic"), (75, 40), True
    yield "timm_border_tall", create_transform(input_size=32, crop_pct=1.0, crop_mode="border", interpolation="bilinear"), (30, 71), False


GEOMETRIC = (T.Resize, T.CenterCrop, v2.Resize, v2.CenterCrop, timm.data.ResizeKeepRatio, timm.data.transforms.CenterCropOrPad)


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = []
    for name, tf, (w, h), keep_tensor in cases():
        img = Image.fromarray(pattern(w, h))
        geometric = [t for t in tf.transforms if isinstance(t, GEOMETRIC)]
        out = img
        for t in geometric:
            out = t(out)
        arr = np.asarray(out.convert("RGB"))
        arr.tofile(os.path.join(OUT, name + ".out.raw"))
        entry = {"name": name, "repr": repr(tf), "width": w, "height": h, "out_width": arr.shape[1], "out_height": arr.shape[0]}
        if keep_tensor:
            x = tf(img)
            x = x.as_subclass(torch.Tensor) if hasattr(x, "as_subclass") else x
            assert x.dtype == torch.float32 and x.shape == (3, arr.shape[0], arr.shape[1]), (name, x.shape)
            x.contiguous().numpy().astype("<f4").tofile(os.path.join(OUT, name + ".tensor.f32"))
            entry["tensor"] = True
        meta.append(entry)
    info = {"producer": "quant/scripts/transform_reference.py", "torch": torch.__version__.split("+")[0],
            "torchvision": torchvision.__version__.split("+")[0], "timm": timm.__version__,
            "pillow": Image.__version__, "cases": meta}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
    print(f"{len(meta)} cases -> {OUT}")


if __name__ == "__main__":
    main()
