#!/usr/bin/env python3
"""Builds LiteRT (.tflite) models of the same ViT-Tiny checkpoint for the XNNPACK peer, with
TensorFlow's own converter (tensorflow-cpu from PyPI, run in the host venv .venv-tflite/):

* the model is written as a tf.function from the safetensors tensors (numpy), mirroring
  scripts/ort/vit_onnx.py op for op: NCHW input [1, 3, 224, 224] (the same input.npy as the other
  engines), patchify as reshape + transpose + matmul, cls token, position embedding, pre-LN blocks
  (LayerNorm eps 1e-6 as mean / variance / rsqrt), softmax(QK^T/sqrt(d))V per head, exact erf GELU,
  final LayerNorm on the cls row, linear head; tokens are kept as a 2-D [197, 192] matrix so that
  every linear layer converts to FULLY_CONNECTED (XNNPACK's GEMM operator);
* `f32`: plain conversion (`vit_tiny_f32.tflite`);
* `int8`: dynamic-range quantization (`Optimize.DEFAULT` without a representative dataset:
  per-channel int8 weights of the FULLY_CONNECTED layers, activations quantized at run time per
  row, as ORT's quantize_dynamic and vitedge's per-token int8 do), which LiteRT's XNNPACK delegate
  runs with its dynamically quantized (qd8-f32-qc8w) GEMMs; `vit_tiny_int8.tflite`.
  Static int8 was tried and dropped: TensorFlow's post-training quantization with int8
  activations calibrated on 32 sample images (min/max per tensor), for every op
  (TFLITE_BUILTINS_INT8) or only for the FULLY_CONNECTED layers (QuantizationDebugger with every
  other op denylisted), gives a wrong top-1 on the check image (tench → "library" / "saltshaker").

It also checks the f32 graph against scripts/ort/vit_onnx.py's numpy reference of the same model on
the input (max |Δlogit| printed).

Usage: .venv-tflite/bin/python scripts/arm-model/peers/make_tflite.py --checkpoint CK --input input.npy --out DIR
"""
import argparse
import sys
from pathlib import Path

import numpy as np

SCRIPTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(SCRIPTS))


def build_tf_vit(w, heads, eps=1e-6, image_size=224):
    """A tf.function computing the logits [1, classes] of pixels [1, 3, H, W] with the checkpoint's tensors as constants."""
    import tensorflow as tf

    c = {k: tf.constant(v.astype(np.float32)) for k, v in w.items()}
    pe = w["patch_embed.proj.weight"]
    dim, chans, patch, _ = pe.shape
    grid = image_size // patch
    tokens = grid * grid + 1
    head_dim = dim // heads
    depth = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
    pe_t = tf.constant(pe.reshape(dim, -1).T.astype(np.float32))
    lin_t = {k: tf.constant(v.T.astype(np.float32)) for k, v in w.items() if k.endswith(".weight") and v.ndim == 2}

    def linear(x, name):
        return tf.matmul(x, lin_t[f"{name}.weight"]) + c[f"{name}.bias"]

    def layer_norm(x, name):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        d = x - mean
        var = tf.reduce_mean(d * d, axis=-1, keepdims=True)
        return d * tf.math.rsqrt(var + eps) * c[f"{name}.weight"] + c[f"{name}.bias"]

    @tf.function(input_signature=[tf.TensorSpec([1, chans, image_size, image_size], tf.float32, name="pixels")])
    def vit(pixels):
        x = tf.reshape(pixels, [chans, grid, patch, grid, patch])
        x = tf.transpose(x, [1, 3, 0, 2, 4])
        x = tf.reshape(x, [grid * grid, chans * patch * patch])
        x = tf.matmul(x, pe_t) + c["patch_embed.proj.bias"]
        x = tf.concat([tf.reshape(c["cls_token"], [1, dim]), x], axis=0) + tf.reshape(c["pos_embed"], [tokens, dim])
        for i in range(depth):
            p = f"blocks.{i}"
            h = layer_norm(x, f"{p}.norm1")
            qkv = tf.reshape(linear(h, f"{p}.attn.qkv"), [tokens, 3, heads, head_dim])
            qkv = tf.transpose(qkv, [1, 2, 0, 3])  # [3, heads, tokens, head_dim]
            q, k, v = qkv[0], qkv[1], qkv[2]
            s = tf.matmul(q, k, transpose_b=True) * (head_dim ** -0.5)
            o = tf.matmul(tf.nn.softmax(s, axis=-1), v)  # [heads, tokens, head_dim]
            o = tf.reshape(tf.transpose(o, [1, 0, 2]), [tokens, dim])
            x = x + linear(o, f"{p}.attn.proj")
            h = layer_norm(x, f"{p}.norm2")
            h = tf.nn.gelu(linear(h, f"{p}.mlp.fc1"), approximate=False)
            x = x + linear(h, f"{p}.mlp.fc2")
        cls = layer_norm(x[0:1], "norm")
        return tf.identity(linear(cls, "head"), name="logits")

    return vit


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--input", required=True, type=Path, help="input.npy (float32 [1, 3, 224, 224]) for the check")
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()

    import tensorflow as tf
    from safetensors.numpy import load_file

    from ort.vit_onnx import numpy_reference

    w = load_file(str(a.checkpoint))
    heads = w["patch_embed.proj.weight"].shape[0] // 64
    vit = build_tf_vit(w, heads)
    x = np.load(a.input)
    got = vit(tf.constant(x)).numpy()[0]
    ref = numpy_reference(w, x[0])
    print(f"tf graph vs numpy reference: max |Δlogit| {np.abs(got - ref).max():.2e}, top-1 {got.argmax()} / {ref.argmax()}", file=sys.stderr)
    if got.argmax() != ref.argmax() or np.abs(got - ref).max() > 1e-2:
        sys.exit("error: the TensorFlow graph does not reproduce the reference model")

    a.out.mkdir(parents=True, exist_ok=True)
    concrete = vit.get_concrete_function()

    def convert(path, configure):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], vit)
        configure(conv)
        path.write_bytes(conv.convert())
        print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)

    convert(a.out / "vit_tiny_f32.tflite", lambda conv: None)

    def dynamic_range(conv):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

    convert(a.out / "vit_tiny_int8.tflite", dynamic_range)


if __name__ == "__main__":
    main()
