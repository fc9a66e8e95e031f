#!/usr/bin/env python3
"""Writes the seed corpora of the checkpoint fuzz targets (fuzz/corpus/{unpickle,torch_zip,safetensors}/).

Needs only the Python standard library: pickles are written by Python's own pickle module in every
protocol (0, 2, 4, 5), torch.save's zip layout is emulated as in make_ckpt_fixture.py, and the
genuine torch/Lightning/timm pickles come from the committed fixtures. Seeds stay small (libFuzzer
mutates better from short inputs).
"""
import argparse, collections, io, json, os, pickle, struct, sys, zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FIXTURES = ROOT / "quant" / "tests" / "fixtures"


def stand_ins():
    """torch's globals as stub modules, so pickle emits torch.save's GLOBAL opcodes."""
    import types
    torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
    sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils
    def _rebuild_tensor_v2(*a):
        raise RuntimeError("never called")
    _rebuild_tensor_v2.__module__ = "torch._utils"; _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    classes = {}
    for n in ("FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage"):
        c = type(n, (), {}); c.__module__ = "torch"; setattr(torch, n, c); classes[n] = c
    return _rebuild_tensor_v2, classes


REBUILD, STORAGE = stand_ins()


class Storage:
    def __init__(self, cls, key, data, fmt):
        self.cls, self.key, self.data, self.fmt = cls, key, data, fmt


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.a = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce_ex__(self, proto):
        return (REBUILD, self.a)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGE[obj.cls], obj.key, "cpu", len(obj.data))
        return None


def torch_zip(obj, storages, deflate=False, protocol=2):
    buf = io.BytesIO()
    Pickler(buf, protocol=protocol).dump(obj)
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", struct.pack(f"<{len(s.data)}{s.fmt}", *s.data))
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def safetensors(tensors, metadata=None):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "fuzz" / "corpus"))
    out = Path(ap.parse_args().out)
    seeds = collections.defaultdict(dict)

    # unpickle: Python's own pickles of checkpoint-like values in every protocol, and the genuine ones.
    w = Storage("FloatStorage", "0", [0.5, -1.0, 2.0, 0.25, 1.5, -0.75], "f")
    h = Storage("HalfStorage", "1", [0x3c00, 0xc000], "H")
    sd = collections.OrderedDict([("w", Tensor(w, 0, [2, 3], [3, 1])), ("t", Tensor(w, 1, [2, 2], [1, 3])), ("h", Tensor(h, 0, [2], [1]))])
    cyclic = [1, 2]; cyclic.append(cyclic)
    ckpt = {"state_dict": sd, "epoch": 3, "hyper_parameters": {"lr": 1e-3, "big": 2 ** 70, "name": "vit", "b": b"\x00\xff", "s": {1, 2}, "n": None, "t": (True, False)},
            "callbacks": {"StochasticWeightAveraging": {"n_averaged": 2, "average_model_state": sd}}, "cyclic": cyclic}
    for proto in (0, 2, 4, 5):
        buf = io.BytesIO(); Pickler(buf, protocol=proto).dump(ckpt)
        seeds["unpickle"][f"ckpt_proto{proto}.pkl"] = buf.getvalue()
    for name in ("lightning/lightning_raw.ckpt", "lightning/timm_train.pth.tar"):
        with zipfile.ZipFile(FIXTURES / name) as z:
            seeds["unpickle"][Path(name).name.split(".")[0] + ".pkl"] = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))

    # torch_zip: small checkpoints, stored and deflated, Lightning / timm / plain layouts.
    seeds["torch_zip"]["plain.pt"] = torch_zip(sd, [w, h])
    seeds["torch_zip"]["lightning.ckpt"] = torch_zip(ckpt, [w, h], protocol=2)
    seeds["torch_zip"]["deflated_proto4.ckpt"] = torch_zip({"state_dict": sd, "state_dict_ema": sd}, [w, h], deflate=True, protocol=4)
    ema = collections.OrderedDict(list(sd.items()) + [("model_ema.module.patch_embed.proj.weight", sd["w"])])
    seeds["torch_zip"]["ema_keys.ckpt"] = torch_zip({"state_dict": ema}, [w, h])
    seeds["torch_zip"]["truncated.pth"] = (FIXTURES / "truncated.pth").read_bytes()

    # safetensors
    f32 = struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)
    seeds["safetensors"]["small.safetensors"] = safetensors(
        {"a": ("F32", [2, 2], f32), "b": ("F16", [2], struct.pack("<2H", 0x3c00, 0x4000)), "c": ("BF16", [1], b"\x80\x3f"),
         "d": ("F64", [1], struct.pack("<d", 0.5)), "i": ("I64", [1], struct.pack("<q", 7)), "e": ("F32", [0, 3], b"")},
        {"format": "pt"})
    seeds["safetensors"]["ema.safetensors"] = safetensors({"patch_embed.proj.weight": ("F32", [4], f32), "model_ema.patch_embed.proj.weight": ("F32", [4], f32)})

    for target, files in seeds.items():
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
            print(f"{len(data):>7}  {d / name}")


if __name__ == "__main__":
    main()
