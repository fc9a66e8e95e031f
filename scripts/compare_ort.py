#!/usr/bin/env python3
"""Times vitedge against ONNX Runtime on ViT-Tiny in one run and prints the ratios.

What it does:
1. Creates (or reuses) a venv (default `.venv-bench/`), installs onnxruntime, onnx, numpy,
   safetensors and pillow into it from PyPI, and re-runs itself inside it.
2. Builds vitedge (`cargo build --release -p vitedge -p vitedge-quant`) unless `--skip-build` or
   `--vitedge PATH`, and converts the f32 / f16 / bf16 / int8 blobs with vitedge-quant if they are missing
   (int8 calibrates on the sample images with `--calib-count 32`).
3. Exports the same checkpoint to ONNX (opset 17, built with onnx.helper + numpy, no torch; see
   scripts/ort/vit_onnx.py) and makes ORT's int8 model with `quantize_dynamic` (S8 weights).
4. Checks that the ONNX graph is the same model: ORT fp32 vs `vitedge classify --json` (f32 blob) on
   a few sample images (decoded once by Pillow and saved as PNG, so both engines see the same pixels;
   JPEG decoders differ slightly), same preprocessing (timm's transform in numpy + Pillow, parameters
   from the blob header): top-1 and the top-5 classes must agree and the top-5 probabilities differ by
   < 1e-3; prints the largest probability and log-probability differences. Also, for information,
   each engine's int8 against its own f32.
5. Times both, interleaved in rounds (each round runs every configuration's vitedge bench and ORT
   session one after the other, alternating which goes first), on the same preprocessed image:
   vitedge `bench --json` per round, ORT `session.run` in this process (intra_op threads = n,
   sequential execution, ORT_ENABLE_ALL). Warm-up 3 runs each per round; 0.2 s pause between
   steps so neither engine's spinning worker threads overlap the next measurement.
6. Prints a markdown table (or `--json`) with medians / p90s over all timed runs, ratios and the
   targets of the speed issue (pass/fail), open → first result and peak RSS, CPU model, ORT version.

With `--openvino` it also installs openvino and nncf and times OpenVINO (CPU plugin,
`PERFORMANCE_HINT=LATENCY`, `INFERENCE_NUM_THREADS` = threads) in the same rounds on the same ONNX
graph: f32 (`INFERENCE_PRECISION_HINT=f32`), bf16 (`INFERENCE_PRECISION_HINT=bf16`, only where the
CPU plugin lists BF16) and int8 (`nncf.quantize(model_type=TRANSFORMER)` on 64 real sample images,
the plugin's default precision hint, f32 under an `ONEDNN_MAX_CPU_ISA` without bf16). It checks OpenVINO f32 against ORT fp32 on the check images,
reports each model's top-1 agreement with ORT fp32 there, and prints the primitive types its
execution graph ran for FullyConnected / MatMul (what oneDNN really chose). `ONEDNN_MAX_CPU_ISA`
in the environment limits it as usual (e.g. `AVX2` or `AVX2_VNNI`, to compare with
`--kernels avx2` / `avxvnni`).

Usage: python3 scripts/compare_ort.py [--iters 50] [--threads 1,2] [--skip-build | --vitedge PATH] [--openvino] [--json]
Progress goes to stderr; the table (or JSON) to stdout. Exit status 0 whatever the targets say
(`--strict` makes a missed target exit 3); 1 on errors, 2 on bad options, 4 when the ONNX model does
not reproduce vitedge f32.
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["onnxruntime", "onnx", "numpy", "safetensors", "pillow"]
OPENVINO_PACKAGES = ["openvino", "nncf"]
PRECISIONS = ["int8", "f32", "f16", "bf16"]
# Targets of the speed issues (vs ORT: issue 6; vs OpenVINO: issue 14, stated for Sapphire Rapids).
INT8_VS_OV_INT8 = 0.6
INT8_VS_OV_BF16 = 0.8
BF16_VS_OV_BF16 = 0.8
F32_VS_OV_F32 = 0.8
INT8_VS_ORT = 0.6
F32_VS_ORT = 1.0
F16_VS_F32 = 1.1
FIRST_RESULT_MS = 10.0
RSS_SLACK_MIB = 8.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=50, help="timed runs per configuration and engine, in total over the rounds (default 50)")
    p.add_argument("--rounds", type=int, default=5, help="interleaving rounds the iterations are split into (default 5)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="subset of int8,f32,f16,bf16 (default all; bf16 is timed against OpenVINO bf16 with --openvino)")
    p.add_argument("--skip-build", action="store_true", help="do not run cargo build; use the existing release binaries")
    p.add_argument("--vitedge", type=Path, help="vitedge binary to time (implies --skip-build; vitedge-quant is looked up beside it)")
    p.add_argument("--quant", type=Path, help="vitedge-quant binary (default: beside vitedge)")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="folder with weights/, imagenet-sample/, imagenet_classes.txt (default ../shared)")
    p.add_argument("--models", type=Path, default=REPO / "models", help="where the .vitb blobs are (created if missing; default models/)")
    p.add_argument("--kernels", default="auto", help="vitedge --kernels (default auto)")
    p.add_argument("--check-images", type=int, default=5, help="sample images for the ONNX-vs-vitedge check (default 5)")
    p.add_argument("--ort-per-channel", action="store_true", help="quantize ORT weights per output channel (default: per tensor, quantize_dynamic's default)")
    p.add_argument("--venv", type=Path, default=REPO / ".venv-bench", help="venv for onnxruntime & co. (default .venv-bench/)")
    p.add_argument("--openvino", action="store_true", help="also time OpenVINO f32, bf16 (where the CPU has it) and nncf int8 (installs openvino and nncf)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the markdown table")
    p.add_argument("--strict", action="store_true", help="exit with status 3 when a target is missed")
    a = p.parse_args(argv)
    try:
        a.threads = [int(t) for t in a.threads.split(",") if t.strip()]
    except ValueError:
        p.error(f"--threads: expected comma-separated integers, got {a.threads!r}")
    if not a.threads or min(a.threads) < 1:
        p.error("--threads: need at least one thread count ≥ 1")
    a.precisions = [x.strip() for x in a.precisions.split(",") if x.strip()]
    if not a.precisions or any(x not in PRECISIONS for x in a.precisions):
        p.error(f"--precisions: choose from {','.join(PRECISIONS)}")
    if a.iters < 1 or a.rounds < 1 or a.check_images < 1:
        p.error("--iters, --rounds and --check-images must be ≥ 1")
    if "f16" in a.precisions and "f32" not in a.precisions:
        a.precisions.append("f32")  # the f16 target is relative to vitedge f32
    a.rounds = min(a.rounds, a.iters)
    if a.vitedge:
        a.skip_build = True
    return a


# ---------------------------------------------------------------------------------------------
# venv bootstrap (stdlib only)


def in_venv(venv):
    try:
        return Path(sys.prefix).resolve() == venv.resolve()
    except OSError:
        return False


def ensure_venv_and_reexec(args):
    """Creates the venv and installs the packages if needed, then re-runs this script inside it."""
    venv = args.venv
    py = venv / "bin" / "python"
    if not py.exists():
        log(f"creating venv {venv}")
        r = subprocess.run([sys.executable, "-m", "venv", str(venv)])
        if r.returncode != 0 or not py.exists():
            sys.exit(f"error: could not create a venv at {venv} (is python3-venv installed?)")
    packages = PACKAGES + (OPENVINO_PACKAGES if args.openvino else [])
    probe = subprocess.run([str(py), "-c", "import onnxruntime, onnx, numpy, safetensors, PIL" + (", openvino, nncf" if args.openvino else "")], capture_output=True)
    if probe.returncode != 0:
        log(f"installing {' '.join(packages)} into {venv}")
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages])
        if r.returncode != 0:
            sys.exit("error: pip install failed (PyPI unreachable?)")
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# vitedge side


def run(cmd, **kw):
    """Runs a command, raising with its stderr on failure; returns stdout."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr.strip()}")
    return r.stdout


def binaries(args):
    if args.vitedge:
        vitedge = args.vitedge
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        if not target.is_absolute():
            target = REPO / target
        vitedge = target / "release" / "vitedge"
        if not args.skip_build:
            log("cargo build --release -p vitedge -p vitedge-quant")
            r = subprocess.run(["cargo", "build", "--release", "-p", "vitedge", "-p", "vitedge-quant"], cwd=REPO)
            if r.returncode != 0:
                raise RuntimeError("cargo build failed")
    quant = args.quant or vitedge.parent / "vitedge-quant"
    if not vitedge.exists():
        raise RuntimeError(f"{vitedge} does not exist (build it, or pass --vitedge)")
    return vitedge.resolve(), quant.resolve()


def checkpoint(args):
    ck = args.shared / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    if not ck.exists():
        raise RuntimeError(f"checkpoint {ck} not found (pass --shared DIR)")
    return ck


def sample_images(args, count):
    folder = args.shared / "imagenet-sample"
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not files:
        raise RuntimeError(f"no images in {folder}")
    step = max(1, len(files) // count)
    return files[::step][:count]


def ensure_blobs(args, quant, ck):
    """Converts the blobs that do not exist yet; returns {precision: path}."""
    blobs = {}
    labels = args.shared / "imagenet_classes.txt"
    for prec in sorted(set(args.precisions) | {"f32"}):
        path = args.models / f"vit_tiny_{prec}.vitb"
        blobs[prec] = path
        if path.exists():
            continue
        if not quant.exists():
            raise RuntimeError(f"{path} is missing and {quant} does not exist to make it")
        cmd = [quant, "convert", ck, "-o", path, "--precision", prec]
        if labels.exists():
            cmd += ["--labels", labels]
        if prec == "int8":
            cmd += ["--calibrate", args.shared / "imagenet-sample", "--calib-count", "32"]
        log(f"converting: {' '.join(map(str, cmd))}")
        run(cmd)
    return blobs


def vitedge_preprocess_config(vitedge, blob):
    header = json.loads(run([vitedge, "inspect", "--json", blob]))
    return header["preprocess"]


def vitedge_probs(vitedge, blob, images, kernels):
    """{image path: probabilities of all classes} from `vitedge classify --json --top 100000`."""
    out = run([vitedge, "classify", "--json", "--top", "100000", "--threads", "1", "--kernels", kernels, "--model", blob, *images])
    result = {}
    for line in out.splitlines():
        j = json.loads(line)
        result[j["image"]] = {t["index"]: t["score"] for t in j["top"]}
    return result


def vitedge_bench(vitedge, blob, threads, iters, image, kernels):
    """`vitedge bench --json`; without `image` it runs on its synthetic input (no decoder in memory)."""
    cmd = [vitedge, "bench", "--json", "--model", blob, "--threads", threads, "--iters", iters, "--kernels", kernels]
    j = json.loads(run(cmd + (["--image", image] if image else [])))
    if "times_ms" not in j:
        raise RuntimeError(f"{vitedge} bench --json has no times_ms: rebuild vitedge from this checkout")
    return j


# ---------------------------------------------------------------------------------------------
# ONNX Runtime side (imports from the venv)


def export_onnx(ck, out_dir, per_channel):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from safetensors.numpy import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ort.vit_onnx import build_vit

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "vit_tiny_fp32.onnx"
    int8 = out_dir / ("vit_tiny_int8_per_channel.onnx" if per_channel else "vit_tiny_int8.onnx")
    onnx.save(build_vit(load_file(str(ck))), str(fp32))
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's "consider pre-processing" warning
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=per_channel)
    return {"f32": fp32, "int8": int8}


def ort_session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def softmax(x):
    import numpy as np

    e = np.exp(x - x.max())
    return e / e.sum()


def check_same_model(args, vitedge, blobs, onnx_paths, images, scratch):
    """ORT fp32 vs vitedge f32 on the same pixels (the sample JPEGs decoded once by Pillow, saved as PNG)
    and the same preprocessing; for information also each engine's int8 against its own f32.
    Returns (report, {png path: preprocessed input})."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ort.preprocess import preprocess

    cfg = vitedge_preprocess_config(vitedge, blobs["f32"])
    pre = dict(size=cfg["input_size"], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"])
    # JPEG decoders may differ by a level here and there (Pillow's libjpeg vs vitedge's): give both
    # engines the same pixels by decoding once with Pillow and saving lossless PNGs.
    from PIL import Image

    png_dir = scratch / "check-images"
    png_dir.mkdir(parents=True, exist_ok=True)
    pngs = []
    for p in images:
        png = png_dir / (p.stem + ".png")
        with Image.open(p) as im:
            im.convert("RGB").save(png)
        pngs.append(png)
    inputs = {str(p): preprocess(p, **pre) for p in pngs}
    report = {"images": [p.name for p in images], "preprocess": cfg}
    probs = {}  # (engine, precision) -> {image: probabilities}
    for prec in [p for p in ("f32", "int8") if p in blobs and p in onnx_paths]:
        sess = ort_session(onnx_paths[prec], 1)
        probs[("ort", prec)] = {img: softmax(sess.run(["logits"], {"pixels": x})[0][0].astype(np.float64)) for img, x in inputs.items()}
        theirs = vitedge_probs(vitedge, blobs[prec], list(inputs), args.kernels)
        classes = len(next(iter(probs[("ort", prec)].values())))
        probs[("vitedge", prec)] = {img: np.array([theirs[img].get(i, 0.0) for i in range(classes)]) for img in inputs}

    def compare(a, b):
        """How close two engines' probabilities are over the check images."""
        top1 = top5 = 0
        max_dp_top5 = max_dlogp = 0.0
        for img in inputs:
            pa, pb = probs[a][img], probs[b][img]
            t5a, t5b = np.argsort(-pa)[:5], np.argsort(-pb)[:5]
            top1 += int(t5a[0] == t5b[0])
            top5 += int(set(t5a) == set(t5b))
            max_dp_top5 = max(max_dp_top5, float(np.abs(pa[t5a] - pb[t5a]).max()))
            # log-softmax differences = logit differences up to one shared constant per image
            max_dlogp = max(max_dlogp, float(np.abs(np.log(np.maximum(pa, 1e-30)) - np.log(np.maximum(pb, 1e-30))).max()))
        row = {"top1_equal": top1, "top5_set_equal": top5, "n": len(inputs), "max_abs_dprob_top5": max_dp_top5, "max_abs_dlogsoftmax": max_dlogp}
        report[f"{a[0]}_{a[1]}_vs_{b[0]}_{b[1]}"] = row
        log(f"check {a[0]} {a[1]} vs {b[0]} {b[1]}: top-1 equal {top1}/{len(inputs)}, top-5 set equal {top5}/{len(inputs)}, "
            f"max |Δp| (top-5) {max_dp_top5:.2e}, max |Δ log-softmax| {max_dlogp:.2e}")
        return row

    same = compare(("vitedge", "f32"), ("ort", "f32"))
    ok = same["top1_equal"] == same["top5_set_equal"] == len(inputs) and same["max_abs_dprob_top5"] < 1e-3
    if ("ort", "int8") in probs:  # for information: each engine's int8 against its own f32
        compare(("ort", "int8"), ("ort", "f32"))
        compare(("vitedge", "int8"), ("vitedge", "f32"))
    report["ok"] = ok
    return report, inputs


# ---------------------------------------------------------------------------------------------
# OpenVINO side (--openvino; imports from the venv)


def openvino_models(onnx_f32, calib_inputs):
    """The ONNX f32 graph read by OpenVINO, and its int8 version made by nncf (TRANSFORMER preset)
    from `calib_inputs` (preprocessed real images). Returns (core, {"f32": model, "int8": model})."""
    import nncf
    import openvino as ov

    core = ov.Core()
    f32 = core.read_model(str(onnx_f32))
    log(f"nncf.quantize on {len(calib_inputs)} images (model_type=TRANSFORMER)")
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # nncf's progress bars: stdout is the report's
        int8 = nncf.quantize(f32, nncf.Dataset(calib_inputs), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calib_inputs))
    return core, {"f32": f32, "int8": int8}


def openvino_variants(core):
    """{variant: (model key, precision hint or None for the plugin's default)}; bf16 only where the
    CPU plugin lists it."""
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    # The plugin lists BF16 from the CPU, not from ONEDNN_MAX_CPU_ISA: below an ISA with bf16 dot
    # products (e.g. AVX2, AVX2_VNNI) bf16 graphs fail to compile, so int8 then runs with f32.
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    bf16 = "BF16" in caps and (not isa or "BF16" in isa or "AMX" in isa or isa == "ALL")
    v = {"ov_int8": ("int8", None if bf16 else "f32"), "ov_f32": ("f32", "f32")}
    if bf16:
        v["ov_bf16"] = ("f32", "bf16")
    return v


def openvino_compile(core, model, threads, hint):
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if hint:
        cfg["INFERENCE_PRECISION_HINT"] = hint
    compiled = core.compile_model(model, "CPU", cfg)
    return compiled, compiled.create_infer_request()


def openvino_primitives(compiled):
    """How many FullyConnected / MatMul nodes of the execution graph ran each primitive type."""
    from collections import Counter

    seen = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        keys = list(info.keys())
        layer = info["layerType"].astype(str) if "layerType" in keys else op.get_type_name()
        if layer in ("FullyConnected", "MatMul", "Convolution"):
            prim = info["primitiveType"].astype(str) if "primitiveType" in keys else "?"
            seen[f"{layer}: {prim}"] += 1
    return dict(seen)


def openvino_logits(request, x):
    import numpy as np

    return np.asarray(request.infer({0: x})[0]).reshape(-1)


def ort_startup(path, threads, image_npy):
    """Session creation + first run (ms) and peak RSS of a fresh Python process running ORT."""
    code = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
def hwm():
    try:
        return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1])
    except (OSError, StopIteration):
        return None
x = np.load(sys.argv[3])
base = hwm()
t = time.perf_counter()
so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[2]); so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(sys.argv[1], so, providers=['CPUExecutionProvider'])
s.run(['logits'], {'pixels': x})
ms = (time.perf_counter() - t) * 1e3
for _ in range(10):
    s.run(['logits'], {'pixels': x})
print(json.dumps({'first_result_ms': ms, 'peak_rss_kib': hwm(), 'baseline_rss_kib': base}))
"""
    return json.loads(run([sys.executable, "-c", code, path, threads, image_npy]))


# ---------------------------------------------------------------------------------------------
# timing and report


def pct(values, q):
    """Same rule as `vitedge bench`: the sorted sample at round((n - 1) q)."""
    s = sorted(values)
    return s[min(len(s) - 1, round((len(s) - 1) * q))]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") or line.startswith("Model"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_rev():
    try:
        rev = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).strip()
        dirty = run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"]).strip()
        return rev + ("+dirty" if dirty else "")
    except (RuntimeError, OSError):
        return "unknown"


def measure(args, vitedge, blobs, onnx_paths, image, x, ov=None):
    """Interleaved timing. `ov`: {(precision, threads): {variant: infer request}} (OpenVINO).
    Returns {(precision, threads): {...}}."""
    ov = ov or {}
    per_round = [args.iters // args.rounds + (1 if r < args.iters % args.rounds else 0) for r in range(args.rounds)]
    configs = [(p, t) for p in args.precisions for t in args.threads]
    sessions = {}
    for p, t in configs:
        if p in onnx_paths:
            sessions[(p, t)] = ort_session(onnx_paths[p], t)
    res = {c: {"vitedge": [], "ort": [], "first_result_ms": [], "peak_rss_kib": [], "rss_anon_kib": [], "rss_file_kib": [], "blob_bytes": None, "kernels": None,
               **{variant: [] for variant in ov.get(c, {})}}
           for c in configs}

    def time_ort(c, n):
        s = sessions[c]
        for _ in range(3):
            s.run(["logits"], {"pixels": x})
        for _ in range(n):
            t0 = time.perf_counter()
            s.run(["logits"], {"pixels": x})
            res[c]["ort"].append((time.perf_counter() - t0) * 1e3)

    def openvino_step(variant):
        def time_ov(c, n):
            req = ov[c][variant]
            for _ in range(3):
                req.infer({0: x})
            for _ in range(n):
                t0 = time.perf_counter()
                req.infer({0: x})
                res[c][variant].append((time.perf_counter() - t0) * 1e3)
        return time_ov

    def time_vitedge(c, n):
        j = vitedge_bench(vitedge, blobs[c[0]], c[1], n, image, args.kernels)
        res[c]["vitedge"] += j["times_ms"]
        res[c]["kernels"] = j["kernels"]

    def startup_vitedge(c):
        # Separate short run on the synthetic input: open → first result and peak RSS without an
        # image decoder's buffers (the targets exclude decoding).
        j = vitedge_bench(vitedge, blobs[c[0]], c[1], 1, None, args.kernels)
        r = res[c]
        r["first_result_ms"].append(j["first_result_ms"])
        if j.get("peak_rss_kib") is not None:
            r["peak_rss_kib"].append(j["peak_rss_kib"])
            r["rss_anon_kib"].append(j.get("rss_anon_kib"))
            r["rss_file_kib"].append(j.get("rss_file_kib"))
        r["blob_bytes"] = j["blob_bytes"]

    for r, n in enumerate(per_round):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for c in order:
            steps = [time_vitedge, time_ort] if c in sessions else [time_vitedge]
            steps += [openvino_step(variant) for variant in sorted(ov.get(c, {}))]
            if r % 2:
                steps.reverse()
            for step in steps:
                # Let the previous step's threads go idle first: ORT's pool spins after each run
                # (and vitedge's for 0.3 ms), which would steal a core from the next measurement.
                time.sleep(0.2)
                step(c, n)
            time.sleep(0.2)
            startup_vitedge(c)
        log(f"round {r + 1}/{len(per_round)} done")
    return res


def summarize(args, res, startup_ort, env, check):
    rows, mem_rows, failed = [], [], []
    vit_med = {c: statistics.median(v["vitedge"]) for c, v in res.items()}
    for (p, t), v in res.items():
        vm, vp = vit_med[(p, t)], pct(v["vitedge"], 0.9)
        om = op = None
        if v["ort"]:
            om, op = statistics.median(v["ort"]), pct(v["ort"], 0.9)
        if p == "int8":
            ratio, target, vs = vm / om, INT8_VS_ORT, "ORT int8"
        elif p == "f32":
            ratio, target, vs = vm / om, F32_VS_ORT, "ORT fp32"
        elif p == "bf16":
            # No ORT bf16 on CPU: its target is against OpenVINO bf16 (the OpenVINO table).
            ratio, target, vs = None, BF16_VS_OV_BF16, "OpenVINO bf16 (below)"
        else:
            base = vit_med.get(("f32", t))
            ratio, target, vs = (vm / base if base else None), F16_VS_F32, "vitedge f32"
        ok = None if ratio is None else ratio <= target
        rows.append({"precision": p, "threads": t, "kernels": v["kernels"], "vitedge_median_ms": vm, "vitedge_p90_ms": vp,
                     "ort_median_ms": om, "ort_p90_ms": op, "ratio": ratio, "versus": vs, "target": target, "pass": ok,
                     "vitedge_runs": len(v["vitedge"]), "ort_runs": len(v["ort"]),
                     **{f"{variant}_median_ms": statistics.median(v[variant]) for variant in ("ov_int8", "ov_f32", "ov_bf16") if v.get(variant)},
                     **{f"{variant}_p90_ms": pct(v[variant], 0.9) for variant in ("ov_int8", "ov_f32", "ov_bf16") if v.get(variant)}})
        first = statistics.median(v["first_result_ms"])
        rss_kib = max(v["peak_rss_kib"]) if v["peak_rss_kib"] else None
        at_peak = v["peak_rss_kib"].index(rss_kib) if rss_kib is not None else None
        blob_mib = v["blob_bytes"] / 2**20
        rss_ok = None if rss_kib is None else rss_kib / 1024 <= blob_mib + RSS_SLACK_MIB
        mem_rows.append({"precision": p, "threads": t, "first_result_ms_median": first, "first_result_ms_min": min(v["first_result_ms"]),
                         "first_result_ms_max": max(v["first_result_ms"]), "first_result_pass": first <= FIRST_RESULT_MS,
                         "blob_bytes": v["blob_bytes"], "peak_rss_kib": rss_kib, "rss_budget_mib": blob_mib + RSS_SLACK_MIB, "rss_pass": rss_ok,
                         "rss_anon_kib": None if at_peak is None else v["rss_anon_kib"][at_peak],
                         "rss_file_kib": None if at_peak is None else v["rss_file_kib"][at_peak],
                         "ort_first_result_ms": startup_ort.get((p, t), {}).get("first_result_ms"),
                         "ort_peak_rss_kib": startup_ort.get((p, t), {}).get("peak_rss_kib"),
                         "ort_baseline_rss_kib": startup_ort.get((p, t), {}).get("baseline_rss_kib")})
    for r in rows:
        if r["pass"] is False:
            failed.append(f"{r['precision']} {r['threads']}t latency")
    for m in mem_rows:
        if not m["first_result_pass"]:
            failed.append(f"{m['precision']} {m['threads']}t open→first result")
        if m["rss_pass"] is False:
            failed.append(f"{m['precision']} {m['threads']}t peak RSS")
    per_round = [args.iters // args.rounds + (1 if r < args.iters % args.rounds else 0) for r in range(args.rounds)]
    ov_rows = openvino_rows(res, vit_med, per_round)
    return {"env": env, "check": check, "latency": rows, "startup_memory": mem_rows, "openvino": ov_rows, "missed_targets": failed}


def round_ratio(a, b, per_round):
    """Median over rounds of (median of a's times in round r) / (median of b's in round r): both
    lists hold per_round[r] times per round, in round order. The two sides of a round run within
    about a second of each other, so a VM's speed phases (which last seconds) move both alike;
    medians over the whole run can land in different phases for each engine."""
    ratios, at = [], 0
    for n in per_round:
        if n and len(a) >= at + n and len(b) >= at + n:
            ratios.append(statistics.median(a[at:at + n]) / statistics.median(b[at:at + n]))
        at += n
    return statistics.median(ratios) if ratios else None


def openvino_rows(res, vit_med, per_round):
    """vitedge against OpenVINO, with issue 14's targets (its machine class: Sapphire Rapids): the
    ratio of the whole run's medians and the median of the per-round ratios, which decides."""
    med = {(variant, t): statistics.median(v[variant]) for (p, t), v in res.items() for variant in ("ov_int8", "ov_f32", "ov_bf16") if v.get(variant)}
    rows = []
    for (p, t), vm in sorted(vit_med.items()):
        pairs = {"int8": [("ov_int8", INT8_VS_OV_INT8), ("ov_bf16", INT8_VS_OV_BF16)], "f32": [("ov_f32", F32_VS_OV_F32)],
                 "bf16": [("ov_bf16", BF16_VS_OV_BF16)]}.get(p, [])
        for variant, target in pairs:
            om = med.get((variant, t))
            if om is None:
                continue
            # OpenVINO's times are kept with the configuration that ran them (its bf16 with vitedge's).
            ov_times = next(v[variant] for (_, t2), v in res.items() if t2 == t and v.get(variant))
            rr = round_ratio(res[(p, t)]["vitedge"], ov_times, per_round)
            rows.append({"vitedge": p, "threads": t, "vitedge_median_ms": vm, "versus": variant, "openvino_median_ms": om, "ratio": vm / om,
                         "round_ratio": rr, "target": target, "pass": rr is not None and rr <= target})
    return rows


def fmt(v, d=2):
    return "—" if v is None else f"{v:.{d}f}"


def verdict(ok):
    return "—" if ok is None else ("pass" if ok else "FAIL")


def markdown(s):
    e = s["env"]
    out = [f"CPU: {e['cpu']} ({e['cores']} cores, {e['arch']}); ONNX Runtime {e['ort_version']} (CPUExecutionProvider, ORT_ENABLE_ALL, "
           f"sequential, int8 = quantize_dynamic S8 weights {e['ort_int8_granularity']}); vitedge {e['vitedge_rev']}; "
           f"{e['iters']} timed runs per engine and configuration in {e['rounds']} interleaved rounds; input: {e['image']}; "
           f"1-minute load average before / after: {' / '.join(fmt(v) for v in e['loadavg_1min_before_after'])}.", ""]
    c = s["check"].get("vitedge_f32_vs_ort_f32")
    if c:
        out += [f"Same model: ORT fp32 vs vitedge f32 on {c['n']} images: top-1 equal {c['top1_equal']}/{c['n']}, top-5 equal "
                f"{c['top5_set_equal']}/{c['n']}, max |Δ prob| (top-5) {c['max_abs_dprob_top5']:.1e}, max |Δ log-softmax| (≈ logit difference) "
                f"{c['max_abs_dlogsoftmax']:.1e}.", ""]
    out += ["| precision | threads | vitedge median ms | vitedge p90 ms | ORT median ms | ORT p90 ms | ratio | target | result |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in s["latency"]:
        out.append(f"| {r['precision']} | {r['threads']} | {fmt(r['vitedge_median_ms'])} | {fmt(r['vitedge_p90_ms'])} | {fmt(r['ort_median_ms'])} | "
                   f"{fmt(r['ort_p90_ms'])} | {fmt(r['ratio'], 3)} | ≤ {r['target']}× {r['versus']} | {verdict(r['pass'])} |")
    out += ["", "| precision | threads | open → first result ms (median, min–max) | ≤ 10 ms | blob MiB | peak RSS MiB (anon + file at exit) | ≤ blob + 8 MiB | "
            "ORT session + first run ms | ORT process peak RSS MiB |",
            "|---|---:|---:|---|---:|---:|---|---:|---:|"]
    mib = lambda kib, d=2: None if kib is None else fmt(kib / 1024, d)  # noqa: E731
    for m in s["startup_memory"]:
        split = f" ({mib(m['rss_anon_kib'])} + {mib(m['rss_file_kib'])})" if m["rss_anon_kib"] is not None and m["rss_file_kib"] is not None else ""
        out.append(f"| {m['precision']} | {m['threads']} | {fmt(m['first_result_ms_median'])} ({fmt(m['first_result_ms_min'])}–{fmt(m['first_result_ms_max'])}) | "
                   f"{verdict(m['first_result_pass'])} | {fmt(m['blob_bytes'] / 2**20)} | {mib(m['peak_rss_kib']) or '—'}{split} | {verdict(m['rss_pass'])} | "
                   f"{fmt(m['ort_first_result_ms'])} | {mib(m['ort_peak_rss_kib'], 1) or '—'} |")
    kernels = sorted({r["kernels"] for r in s["latency"] if r["kernels"]})
    out += ["", f"vitedge kernels: {'; '.join(kernels)}.",
            "Ratios: int8 and f32 are vitedge ÷ ORT at the same precision and threads; f16 is vitedge f16 ÷ vitedge f32; bf16 is compared with OpenVINO bf16 only. "
            "Open → first result: blob open + engine construction + first forward pass, from a separate `vitedge bench --iters 1` "
            "per round on its synthetic input (no image decode); median over rounds. Peak RSS: VmHWM of that process (max over rounds); "
            "file-backed pages include the blob and the binary's touched code. ORT: a fresh Python process per row, "
            "session creation + first run, and that process's VmHWM (Python and numpy included). No ORT fp16 row: f16 is compared with vitedge f32."]
    if s.get("openvino"):
        ov_env = s["check"].get("openvino", {})
        out += ["", f"OpenVINO {e.get('openvino_version')} (CPU plugin, PERFORMANCE_HINT=LATENCY, INFERENCE_NUM_THREADS = threads; int8 = nncf "
                f"{e.get('nncf_version')} TRANSFORMER preset on {ov_env.get('calibration_images')} sample images, default precision hint "
                f"{ov_env.get('int8_default_hint')}; ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}). Issue 14's targets are stated for Sapphire Rapids:", "",
                "| vitedge | threads | vitedge median ms | versus | OpenVINO median ms | ratio of medians | median of per-round ratios | target | result |",
                "|---|---:|---:|---|---:|---:|---:|---|---|"]
        names = {"ov_int8": "OpenVINO int8", "ov_f32": "OpenVINO f32", "ov_bf16": "OpenVINO bf16"}
        for r in s["openvino"]:
            out.append(f"| {r['vitedge']} | {r['threads']} | {fmt(r['vitedge_median_ms'])} | {names[r['versus']]} | {fmt(r['openvino_median_ms'])} | "
                       f"{fmt(r['ratio'], 3)} | {fmt(r['round_ratio'], 3)} | ≤ {r['target']}× | {verdict(r['pass'])} |")
        out.append("Result: the median of the per-round ratios (each round times both engines within about a second; the VM's speed "
                   "phases last seconds, so the whole run's medians can land in different phases for each engine).")
        bf = [(r["threads"], r.get("ov_bf16_median_ms")) for r in s["latency"] if r.get("ov_bf16_median_ms")]
        if bf:
            out.append("OpenVINO bf16 median ms: " + ", ".join(f"{t} thread{'s' if t > 1 else ''} {fmt(m)}" for t, m in bf) + ".")
        for key, label in (("f32_vs_ort_f32", "OpenVINO f32 vs ORT fp32"), ("int8_vs_ort_f32", "OpenVINO int8 vs ORT fp32"), ("bf16_vs_ort_f32", "OpenVINO bf16 vs ORT fp32")):
            c = ov_env.get(key)
            if c:
                out.append(f"{label} on {c['n']} images: top-1 equal {c['top1_equal']}/{c['n']}, top-5 equal {c['top5_set_equal']}/{c['n']}, "
                           f"max |Δ log-softmax| {c['max_abs_dlogsoftmax']:.1e}.")
        for variant, prims in ov_env.get("primitives", {}).items():
            out.append(f"{names[variant]} execution graph: " + ", ".join(f"{k} ×{n}" for k, n in sorted(prims.items())) + ".")
    if s["missed_targets"]:
        out.append(f"Missed targets: {', '.join(s['missed_targets'])}.")
    return "\n".join(out)


def cfg_of(vitedge, blobs):
    return vitedge_preprocess_config(vitedge, blobs["f32"])


def openvino_versions():
    import nncf
    import openvino as ov

    return {"openvino_version": ov.__version__, "nncf_version": nncf.__version__}


def openvino_setup(args, onnx_f32, inputs, check, cfg):
    """Builds OpenVINO's f32 and int8 models, compiles every variant for every thread count, checks
    them against ORT fp32 on the check images (results into `check["openvino"]`) and returns
    {(precision, threads): {variant: infer request}}."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ort.preprocess import preprocess

    pre = dict(size=cfg["input_size"], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"])
    calib = [preprocess(p, **pre) for p in sample_images(args, 64)]
    core, models = openvino_models(onnx_f32, calib)
    variants = openvino_variants(core)
    info = {"calibration_images": len(calib), "primitives": {}}
    sess = ort_session(onnx_f32, 1)
    ref = {img: softmax(sess.run(["logits"], {"pixels": x})[0][0].astype(np.float64)) for img, x in inputs.items()}
    reqs = {}
    for t in args.threads:
        for variant, (key, hint) in variants.items():
            compiled, req = openvino_compile(core, models[key], t, hint)
            # Each OpenVINO variant is timed in the rounds of the vitedge precision it is compared with.
            precision = "int8" if key == "int8" else ("bf16" if variant == "ov_bf16" and "bf16" in args.precisions else "f32")
            reqs.setdefault((precision, t), {})[variant] = req
            if t == args.threads[0]:
                info["primitives"][variant] = openvino_primitives(compiled)
                if variant == "ov_int8":
                    hint_type = compiled.get_property("INFERENCE_PRECISION_HINT")
                    info["int8_default_hint"] = hint_type.get_type_name() if hasattr(hint_type, "get_type_name") else str(hint_type)
                top1 = top5 = 0
                dl = 0.0
                for img, x in inputs.items():
                    p = softmax(openvino_logits(req, x).astype(np.float64))
                    a, b = np.argsort(-p)[:5], np.argsort(-ref[img])[:5]
                    top1 += int(a[0] == b[0])
                    top5 += int(set(a) == set(b))
                    dl = max(dl, float(np.abs(np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(ref[img], 1e-30))).max()))
                row = {"n": len(inputs), "top1_equal": top1, "top5_set_equal": top5, "max_abs_dlogsoftmax": dl}
                info[f"{variant[3:]}_vs_ort_f32"] = row
                log(f"check OpenVINO {variant[3:]} vs ORT fp32: top-1 equal {top1}/{len(inputs)}, top-5 equal {top5}/{len(inputs)}, max |Δ log-softmax| {dl:.2e}")
    check["openvino"] = info
    same = info["f32_vs_ort_f32"]
    if same["top1_equal"] != same["n"] or same["max_abs_dlogsoftmax"] > 1e-2:
        raise RuntimeError("OpenVINO f32 does not reproduce ORT fp32 on the check images; timings would compare different models")
    return reqs


def main_in_venv(args):
    import numpy as np
    import onnxruntime as ort

    log(f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent}")
    vitedge, quant = binaries(args)
    ck = checkpoint(args)
    blobs = ensure_blobs(args, quant, ck)
    scratch = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    scratch = (scratch if scratch.is_absolute() else REPO / scratch) / "ort-compare"
    log(f"exporting ONNX models to {scratch}")
    want_ort = {"f32"} | ({"int8"} if "int8" in args.precisions else set())
    onnx_paths = {k: v for k, v in export_onnx(ck, scratch, args.ort_per_channel).items() if k in want_ort}
    images = sample_images(args, args.check_images)
    check, inputs = check_same_model(args, vitedge, blobs, onnx_paths, images, scratch)
    if not check["ok"]:
        log("error: the ONNX model does not reproduce vitedge's f32 results; timings would compare different models")
        print(json.dumps({"check": check}, indent=1))
        return 4
    # f16 has no ORT counterpart: time ORT only for int8 and f32.
    ort_paths = {p: onnx_paths[p] for p in ("int8", "f32") if p in onnx_paths and p in args.precisions}
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    image = Path(next(iter(inputs)))  # the first check image, as PNG: identical pixels for both engines
    x = inputs[str(image)]
    ov = {}
    if args.openvino:
        ov = openvino_setup(args, onnx_paths["f32"], inputs, check, cfg_of(vitedge, blobs))
    res = measure(args, vitedge, blobs, ort_paths, image, x, {c: reqs for c, reqs in ov.items() if c[0] in args.precisions})
    npy = scratch / "input.npy"
    np.save(npy, x)
    startup_ort = {}
    for (p, t) in res:
        if p in ort_paths:
            startup_ort[(p, t)] = ort_startup(ort_paths[p], t, npy)
    env = {"cpu": cpu_model(), "cores": os.cpu_count(), "arch": platform.machine(), "ort_version": ort.__version__,
           "ort_int8_granularity": "per channel" if args.ort_per_channel else "per tensor", "vitedge_rev": git_rev(),
           **(openvino_versions() if args.openvino else {}),
           "vitedge": str(vitedge), "iters": args.iters, "rounds": args.rounds, "image": image.name,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "loadavg_1min_before_after": [load_before[0] if load_before else None, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]}
    s = summarize(args, res, startup_ort, env, check)
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        print(markdown(s))
    return 3 if args.strict and s["missed_targets"] else 0


def main():
    args = parse_args(sys.argv[1:])
    if not in_venv(args.venv):
        ensure_venv_and_reexec(args)  # does not return
    try:
        return main_in_venv(args)
    except RuntimeError as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
