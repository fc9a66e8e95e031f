#!/usr/bin/env python3
"""The timm architectures vitedge knows by name, with timm's own pretrained configs, from genuine timm.

Run through scripts/reference-venv.sh (a venv with torch, torchvision and timm from PyPI):

    scripts/reference-venv.sh timm quant/scripts/timm_pretrained_cfgs.py

Writes quant/src/timm_archs.json, which quant/src/arch.rs embeds: for every candidate name whose
graph is the one vitedge runs (timm's VisionTransformer with a class token, token pooling, no
register tokens, position embedding on every token, no layer scale, no q/k norm, qkv bias,
pre-norm blocks without norm_pre or fc_norm, exact GELU MLP, LayerNorm; DeiT's distillation token
allowed), the dimensions read from the model timm builds and the preprocessing fields of every
pretrained tag's config (default tag first). Names whose graph differs are listed under
"excluded" with the reason. Models are built on the meta device: nothing is downloaded or
initialized.
"""
import json, os, sys

import torch
import timm
from timm.models import get_pretrained_cfg
from timm.layers import Mlp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "quant", "src", "timm_archs.json")

# In preference order: when the tensors of a checkpoint fit several names (vit_tiny_patch16_224 and
# deit_tiny_patch16_224 have identical shapes), the first is assumed.
CANDIDATES = [
    "vit_tiny_patch16_224", "vit_tiny_patch16_384",
    "vit_small_patch16_224", "vit_small_patch16_384", "vit_small_patch32_224", "vit_small_patch32_384",
    "vit_small_patch8_224",
    "vit_base_patch16_224", "vit_base_patch16_384", "vit_base_patch32_224", "vit_base_patch32_384",
    "vit_base_patch8_224",
    "vit_large_patch16_224", "vit_large_patch16_384", "vit_large_patch32_224", "vit_large_patch32_384",
    "vit_large_patch14_224", "vit_huge_patch14_224",
    "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224", "deit_base_patch16_384",
    "deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224", "deit_base_distilled_patch16_224",
    "deit_base_distilled_patch16_384",
    "deit3_small_patch16_224", "deit3_small_patch16_384", "deit3_medium_patch16_224", "deit3_base_patch16_224",
    "deit3_base_patch16_384", "deit3_large_patch16_224", "deit3_large_patch16_384", "deit3_huge_patch14_224",
]

PREPROCESS_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes")


def graph_differences(m):
    """Why the model's forward pass is not vitedge's (empty list: it is)."""
    I = torch.nn.Identity
    why = []
    if type(m).__name__ not in ("VisionTransformer", "VisionTransformerDistilled"):
        why.append(f"model class {type(m).__name__}")
        return why
    if m.cls_token is None:
        why.append("no class token")
    if getattr(m, "num_reg_tokens", 0):
        why.append(f"{m.num_reg_tokens} register tokens")
    if getattr(m, "no_embed_class", False):
        why.append("position embedding not added to the class token (no_embed_class)")
    if m.global_pool != "token":
        why.append(f"global_pool={m.global_pool!r}")
    if getattr(m, "attn_pool", None) is not None:
        why.append("attention pooling")
    if not isinstance(m.norm_pre, I):
        why.append("norm_pre (pre-norm before the blocks)")
    if not isinstance(m.fc_norm, I):
        why.append("fc_norm")
    if getattr(m, "dynamic_img_size", False):
        why.append("dynamic image size")
    if not isinstance(getattr(m.patch_embed, "norm", I()), I):
        why.append("patch embedding norm")
    if m.patch_embed.proj.bias is None:
        why.append("patch embedding without bias")
    if not isinstance(m.head, torch.nn.Linear):
        why.append(f"head {type(m.head).__name__}")
    for i, b in enumerate(m.blocks):
        if type(b).__name__ != "Block":
            why.append(f"block class {type(b).__name__}")
            break
        if not (isinstance(b.ls1, I) and isinstance(b.ls2, I)):
            why.append("layer scale (init_values): vitedge's engine and blob format have no per-channel residual scale")
            break
        a = b.attn
        if a.qkv.bias is None:
            why.append("qkv without bias")
            break
        if not (isinstance(a.q_norm, I) and isinstance(a.k_norm, I)):
            why.append("q/k norm")
            break
        if not isinstance(getattr(a, "norm", I()), I):
            why.append("attention output norm")
            break
        if not isinstance(b.mlp, Mlp) or not isinstance(b.mlp.act, torch.nn.GELU) or b.mlp.act.approximate != "none":
            why.append(f"MLP {type(b.mlp).__name__} / {getattr(b.mlp, 'act', None)} (exact GELU MLP expected)")
            break
        if not isinstance(getattr(b.mlp, "norm", I()), I):
            why.append("MLP norm")
            break
        for n in (b.norm1, b.norm2):
            if not isinstance(n, torch.nn.LayerNorm):
                why.append(f"norm {type(n).__name__}")
                break
    return why


def preprocess_fields(cfg):
    d = cfg.to_dict()
    out = {k: d.get(k) for k in PREPROCESS_KEYS}
    out["input_size"] = list(out["input_size"])
    out["mean"], out["std"] = list(out["mean"]), list(out["std"])
    out["crop_mode"] = out["crop_mode"] or "center"
    return out


def main():
    archs, excluded = [], {}
    for name in CANDIDATES:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, num_classes=10)  # any head: fine-tunes replace it
        why = graph_differences(m)
        if why:
            excluded[name] = "; ".join(why)
            continue
        b = m.blocks[0]
        default = get_pretrained_cfg(name)
        tags = [default.tag] + sorted(t.split(".", 1)[1] for t in timm.list_pretrained(name + ".*") if t.split(".", 1)[1] != default.tag)
        pretrained = {t: preprocess_fields(get_pretrained_cfg(f"{name}.{t}")) for t in tags}
        ps = m.patch_embed.patch_size
        img = m.patch_embed.img_size
        assert ps[0] == ps[1] and img[0] == img[1], name
        archs.append({
            "name": name,
            "embed_dim": m.embed_dim,
            "depth": len(m.blocks),
            "num_heads": b.attn.num_heads,
            "patch_size": ps[0],
            "img_size": img[0],
            "mlp_hidden": b.mlp.fc1.out_features,
            "distilled": hasattr(m, "dist_token") and m.dist_token is not None,
            "layer_norm_eps": m.norm.eps,
            "default_tag": default.tag,
            "pretrained": pretrained,
        })
    table = {
        "producer": "quant/scripts/timm_pretrained_cfgs.py",
        "timm": timm.__version__,
        "torch": torch.__version__.split("+")[0],
        "archs": archs,
        "excluded": excluded,
    }
    with open(OUT, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"{len(archs)} architectures, {sum(len(a['pretrained']) for a in archs)} pretrained configs -> {OUT}")
    for n, why in excluded.items():
        print(f"  excluded {n}: {why}")


if __name__ == "__main__":
    sys.exit(main())
