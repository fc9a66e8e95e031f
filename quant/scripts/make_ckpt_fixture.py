#!/usr/bin/env python3
"""Writes the checkpoint fixtures of quant/tests without needing torch.

torch.save's zip format is emulated byte for byte: `archive/data.pkl` (pickle protocol 2 with
persistent ids for storages and the globals torch uses), `archive/data/<key>` raw little-endian
storages, `archive/version`, `archive/byteorder`. Stub classes stand in for torch's so that pickle
emits the same GLOBAL opcodes (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...).

Outputs (in the folder given, default quant/tests/fixtures):
- lightning_tiny.ckpt: a Lightning checkpoint of a tiny timm ViT (patch 16, image 32, width 16,
  depth 1, 2 heads, 10 classes) under `state_dict` with a `model.` prefix, plus Lightning metadata.
  `pos_embed` is stored as a HalfStorage; `head.weight` is a transposed (non-contiguous) view.
- lightning_tiny.safetensors: the same weights (after the f16 rounding), timm names, float32.
- forbidden_global.pth: a data.pkl that calls os.system through REDUCE (never run by anyone).
- truncated.pth: a valid zip whose data.pkl is cut in half.
"""
import collections, io, json, os, pickle, struct, sys, types, zipfile
import numpy as np

# --- stand-ins for torch's globals -----------------------------------------------------------
torch = types.ModuleType("torch"); torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch; sys.modules["torch._utils"] = torch_utils

def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")
_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

class FloatStorage: pass
class HalfStorage: pass
class LongStorage: pass
for c in (FloatStorage, HalfStorage, LongStorage):
    c.__module__ = "torch"; setattr(torch, c.__name__, c)

class Storage:
    def __init__(self, kind, key, array):
        self.kind, self.key, self.array = kind, key, array

class Tensor:
    """Pickles like torch.Tensor: _rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
    def __reduce_ex__(self, proto):
        return (_rebuild_tensor_v2, (self.storage, self.offset, tuple(self.size), tuple(self.stride), False, collections.OrderedDict()))

class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.array.size)
        return None

def contiguous_strides(shape):
    s, acc = [], 1
    for d in reversed(shape):
        s.append(acc); acc *= d
    return list(reversed(s))

def torch_save(obj, storages, path):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.array.tobytes())
        z.writestr("archive/version", "3\n")

# --- the tiny ViT ------------------------------------------------------------------------------
D, CLASSES = 16, 10
rng = np.random.default_rng(0)
def shapes():
    yield "cls_token", [1, 1, D]
    yield "pos_embed", [1, 5, D]
    yield "patch_embed.proj.weight", [D, 3, 16, 16]
    yield "patch_embed.proj.bias", [D]
    for n, s in [("norm1.weight", [D]), ("norm1.bias", [D]), ("attn.qkv.weight", [3 * D, D]), ("attn.qkv.bias", [3 * D]),
                 ("attn.proj.weight", [D, D]), ("attn.proj.bias", [D]), ("norm2.weight", [D]), ("norm2.bias", [D]),
                 ("mlp.fc1.weight", [4 * D, D]), ("mlp.fc1.bias", [4 * D]), ("mlp.fc2.weight", [D, 4 * D]), ("mlp.fc2.bias", [D])]:
        yield f"blocks.0.{n}", s
    yield "norm.weight", [D]
    yield "norm.bias", [D]
    yield "head.weight", [CLASSES, D]
    yield "head.bias", [CLASSES]

def main(out):
    weights, storages, state = {}, [], collections.OrderedDict()
    for i, (name, shape) in enumerate(shapes()):
        w = rng.normal(0, 0.02, shape).astype(np.float32)
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            w = (1 + w).astype(np.float32)
        key = str(i)
        if name == "pos_embed":  # stored in half precision
            h = w.astype(np.float16)
            st = Storage(HalfStorage, key, h.reshape(-1))
            w = h.astype(np.float32)
            t = Tensor(st, 0, shape, contiguous_strides(shape))
        elif name == "head.weight":  # a transposed view: storage holds W^T contiguously
            st = Storage(FloatStorage, key, np.ascontiguousarray(w.T).reshape(-1))
            t = Tensor(st, 0, shape, [1, CLASSES])
        else:
            st = Storage(FloatStorage, key, w.reshape(-1))
            t = Tensor(st, 0, shape, contiguous_strides(shape))
        storages.append(st)
        weights[name] = w
        state["model." + name] = t
    # an integer buffer like a loss module would have (skipped by the reader)
    steps = Storage(LongStorage, "steps", np.array([7], dtype=np.int64)); storages.append(steps)
    state["criterion.num_batches"] = Tensor(steps, 0, [], [])
    opt_state = Storage(FloatStorage, "opt0", rng.normal(size=8).astype(np.float32)); storages.append(opt_state)
    ckpt = {
        "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "optimizer_states": [{"state": {0: {"step": 1200, "exp_avg": Tensor(opt_state, 0, [8], [1])}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999)}]}],
        "lr_schedulers": [], "callbacks": {},
        "hyper_parameters": {"model_name": "vit_tiny_patch16_224", "num_classes": 10, "lr": 1e-3, "pretrained": True},
    }
    torch_save(ckpt, storages, os.path.join(out, "lightning_tiny.ckpt"))

    # the same weights as safetensors (float32, timm names)
    header, blobs, off = {}, [], 0
    for name, w in weights.items():
        b = np.ascontiguousarray(w, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(w.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(out, "lightning_tiny.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h); f.write(b"".join(blobs))

    # a pickle that would run a shell command if it were executed (it never is)
    evil = b"\x80\x02cos\nsystem\nq\x00X\x0e\x00\x00\x00echo pwned >&2q\x01\x85q\x02Rq\x03."
    with zipfile.ZipFile(os.path.join(out, "forbidden_global.pth"), "w") as z:
        z.writestr("archive/data.pkl", evil); z.writestr("archive/version", "3\n")

    # a real checkpoint whose pickle is cut in half
    with zipfile.ZipFile(os.path.join(out, "lightning_tiny.ckpt")) as z:
        pkl = z.read("archive/data.pkl")
    with zipfile.ZipFile(os.path.join(out, "truncated.pth"), "w") as z:
        z.writestr("archive/data.pkl", pkl[: len(pkl) // 2]); z.writestr("archive/version", "3\n")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
