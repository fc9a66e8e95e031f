"""Builds an ONNX graph of timm's ViT (patch embedding, cls token, position embedding, pre-LN blocks,
final norm, linear head on the cls token) straight from a timm `.safetensors` checkpoint, with
`onnx.helper` and numpy only (no torch).

The graph mirrors timm's `VisionTransformer.forward` for `global_pool='token'`, `class_token=True`,
no register tokens, no layer scale, qkv with bias, LayerNorm eps 1e-6 and the exact (erf) GELU:

    x = patchify(img) @ Wpe^T + bpe                 # Conv 16x16/16 written as reshape + MatMul
    x = concat(cls, x) + pos_embed
    for each block:
        x = x + proj(attention(LN1(x)))              # softmax(Q K^T / sqrt(head_dim)) V per head
        x = x + fc2(gelu(fc1(LN2(x))))
    logits = head(LN(x)[:, 0])                       # LN is per token, so it is applied to the cls row only

The patch embedding is a MatMul rather than a Conv so that `quantize_dynamic` turns it into an int8
MatMul (like vitedge, which quantizes the patch embedding too) instead of a slow ConvInteger.
Uses opset 17 (LayerNormalization) so ONNX Runtime's optimizer sees the standard patterns
(LayerNorm, Erf-GELU → Gelu/BiasGelu, MatMul + Add).
"""
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    """Collects nodes and initializers, naming intermediate values uniquely."""

    def __init__(self):
        self.nodes = []
        self.inits = []
        self.count = 0

    def const(self, name, array):
        # (np.ascontiguousarray would turn 0-d scalars into shape [1])
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def op(self, op_type, inputs, prefix, **attrs):
        self.count += 1
        out = f"{prefix}/{op_type}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x, weight, bias, prefix):
        """`x @ weight^T + bias` with `weight` in PyTorch's (out, in) layout."""
        w = self.const(f"{prefix}.weight_t", weight.T.astype(np.float32))
        y = self.op("MatMul", [x, w], prefix)
        b = self.const(f"{prefix}.bias", bias.astype(np.float32))
        return self.op("Add", [y, b], prefix)

    def layer_norm(self, x, gamma, beta, prefix, eps):
        g = self.const(f"{prefix}.weight", gamma.astype(np.float32))
        b = self.const(f"{prefix}.bias", beta.astype(np.float32))
        return self.op("LayerNormalization", [x, g, b], prefix, axis=-1, epsilon=eps)


def _depth(weights):
    blocks = {int(m.group(1)) for k in weights for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    if not blocks or blocks != set(range(max(blocks) + 1)):
        raise ValueError("checkpoint has no contiguous `blocks.N.` tensors: not a timm ViT")
    return max(blocks) + 1


def build_vit(weights, num_heads=None, eps=1e-6, image_size=224):
    """Returns an `onnx.ModelProto` for a timm ViT given its tensors (`name -> np.ndarray`).

    Input `pixels`: float32 `[1, 3, image_size, image_size]` (already normalized); output `logits`:
    float32 `[1, num_classes]`. `num_heads` defaults to timm's `embed_dim // 64`.
    """
    need = ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "norm.weight", "norm.bias", "head.weight", "head.bias"]
    missing = [k for k in need if k not in weights]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}: not a timm ViT with a class token and a head")
    pe_w = weights["patch_embed.proj.weight"]
    dim, chans, patch, patch2 = pe_w.shape
    if patch != patch2 or image_size % patch:
        raise ValueError(f"unsupported patch embedding {pe_w.shape} for image size {image_size}")
    grid = image_size // patch
    tokens = grid * grid + 1
    if weights["pos_embed"].shape != (1, tokens, dim):
        raise ValueError(f"pos_embed {weights['pos_embed'].shape} does not match {tokens} tokens of width {dim}")
    heads = num_heads or dim // 64
    head_dim = dim // heads
    depth = _depth(weights)
    num_classes = weights["head.weight"].shape[0]

    b = _Builder()
    shape = lambda name, dims: b.const(name, np.array(dims, dtype=np.int64))  # noqa: E731

    # Patch embedding: [1,C,H,W] -> [1,C,g,p,g,p] -> [1,g,g,C,p,p] -> [1,g*g,C*p*p] @ W^T.
    x = b.op("Reshape", ["pixels", shape("patchify.shape6", [1, chans, grid, patch, grid, patch])], "patch_embed")
    x = b.op("Transpose", [x], "patch_embed", perm=[0, 2, 4, 1, 3, 5])
    x = b.op("Reshape", [x, shape("patchify.shape3", [1, grid * grid, chans * patch * patch])], "patch_embed")
    x = b.linear(x, pe_w.reshape(dim, chans * patch * patch), weights["patch_embed.proj.bias"], "patch_embed.proj")
    x = b.op("Concat", [b.const("cls_token", weights["cls_token"].astype(np.float32)), x], "embed", axis=1)
    x = b.op("Add", [x, b.const("pos_embed", weights["pos_embed"].astype(np.float32))], "embed")

    qkv_shape = shape("attn.qkv_shape", [1, tokens, 3, heads, head_dim])
    merge_shape = shape("attn.merge_shape", [1, tokens, dim])
    scale = b.const("attn.scale", np.array(head_dim ** -0.5, dtype=np.float32))
    idx = [b.const(f"attn.index{i}", np.array(i, dtype=np.int64)) for i in range(3)]
    inv_sqrt2 = b.const("gelu.inv_sqrt2", np.array(2 ** -0.5, dtype=np.float32))
    one = b.const("gelu.one", np.array(1.0, dtype=np.float32))
    half = b.const("gelu.half", np.array(0.5, dtype=np.float32))

    for i in range(depth):
        p = f"blocks.{i}"
        w = lambda name: weights[f"{p}.{name}"]  # noqa: E731
        h = b.layer_norm(x, w("norm1.weight"), w("norm1.bias"), f"{p}.norm1", eps)
        qkv = b.linear(h, w("attn.qkv.weight"), w("attn.qkv.bias"), f"{p}.attn.qkv")
        qkv = b.op("Reshape", [qkv, qkv_shape], f"{p}.attn")
        qkv = b.op("Transpose", [qkv], f"{p}.attn", perm=[2, 0, 3, 1, 4])  # [3, 1, heads, tokens, head_dim]
        q, k, v = (b.op("Gather", [qkv, idx[j]], f"{p}.attn", axis=0) for j in range(3))
        kt = b.op("Transpose", [k], f"{p}.attn", perm=[0, 1, 3, 2])
        s = b.op("MatMul", [q, kt], f"{p}.attn")
        s = b.op("Mul", [s, scale], f"{p}.attn")
        s = b.op("Softmax", [s], f"{p}.attn", axis=-1)
        o = b.op("MatMul", [s, v], f"{p}.attn")
        o = b.op("Transpose", [o], f"{p}.attn", perm=[0, 2, 1, 3])
        o = b.op("Reshape", [o, merge_shape], f"{p}.attn")
        o = b.linear(o, w("attn.proj.weight"), w("attn.proj.bias"), f"{p}.attn.proj")
        x = b.op("Add", [x, o], f"{p}.residual1")

        h = b.layer_norm(x, w("norm2.weight"), w("norm2.bias"), f"{p}.norm2", eps)
        h = b.linear(h, w("mlp.fc1.weight"), w("mlp.fc1.bias"), f"{p}.mlp.fc1")
        # exact GELU: 0.5 * h * (1 + erf(h / sqrt(2)))
        e = b.op("Erf", [b.op("Mul", [h, inv_sqrt2], f"{p}.gelu")], f"{p}.gelu")
        e = b.op("Add", [e, one], f"{p}.gelu")
        h = b.op("Mul", [b.op("Mul", [h, e], f"{p}.gelu"), half], f"{p}.gelu")
        h = b.linear(h, w("mlp.fc2.weight"), w("mlp.fc2.bias"), f"{p}.mlp.fc2")
        x = b.op("Add", [x, h], f"{p}.residual2")

    cls = b.op("Gather", [x, b.const("head.cls_index", np.array(0, dtype=np.int64))], "pool", axis=1)  # [1, dim]
    cls = b.layer_norm(cls, weights["norm.weight"], weights["norm.bias"], "norm", eps)
    logits = b.linear(cls, weights["head.weight"], weights["head.bias"], "head")
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))

    graph = helper.make_graph(
        b.nodes,
        "vit",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, chans, image_size, image_size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, num_classes])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vitedge-compare-ort")
    model.ir_version = 8  # readable by every ONNX Runtime that supports opset 17
    onnx.checker.check_model(model)
    return model


def numpy_reference(weights, pixels, num_heads=None, eps=1e-6):
    """Plain numpy forward pass of the same model (float64), to check the ONNX graph itself."""
    from math import erf, sqrt

    f = {k: v.astype(np.float64) for k, v in weights.items()}
    pe_w = f["patch_embed.proj.weight"]
    dim, chans, patch, _ = pe_w.shape
    size = pixels.shape[-1]
    grid = size // patch
    heads = num_heads or dim // 64
    hd = dim // heads
    x = pixels.astype(np.float64).reshape(chans, grid, patch, grid, patch).transpose(1, 3, 0, 2, 4).reshape(grid * grid, -1)
    x = x @ pe_w.reshape(dim, -1).T + f["patch_embed.proj.bias"]
    x = np.concatenate([f["cls_token"][0], x]) + f["pos_embed"][0]

    def ln(v, g, bb):
        mu = v.mean(-1, keepdims=True)
        var = ((v - mu) ** 2).mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + eps) * g + bb

    gelu = np.vectorize(lambda t: 0.5 * t * (1 + erf(t / sqrt(2))))
    for i in range(_depth(weights)):
        p = f"blocks.{i}."
        h = ln(x, f[p + "norm1.weight"], f[p + "norm1.bias"])
        qkv = (h @ f[p + "attn.qkv.weight"].T + f[p + "attn.qkv.bias"]).reshape(-1, 3, heads, hd).transpose(1, 2, 0, 3)
        q, k, v = qkv
        s = q @ k.transpose(0, 2, 1) * hd ** -0.5
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(-1, dim)
        x = x + o @ f[p + "attn.proj.weight"].T + f[p + "attn.proj.bias"]
        h = ln(x, f[p + "norm2.weight"], f[p + "norm2.bias"])
        h = gelu(h @ f[p + "mlp.fc1.weight"].T + f[p + "mlp.fc1.bias"])
        x = x + h @ f[p + "mlp.fc2.weight"].T + f[p + "mlp.fc2.bias"]
    cls = ln(x[0], f["norm.weight"], f["norm.bias"])
    return cls @ f["head.weight"].T + f["head.bias"]
