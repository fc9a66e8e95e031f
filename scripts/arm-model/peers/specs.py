#!/usr/bin/env python3
"""Prepares the peers of vitedge for the aarch64 cost model and writes one engine spec per engine ×
precision (JSON files the cost model's driver runs under qemu-aarch64 with N and 3N inferences).

What it does (each step cached under target/arm-model/, skipped when its output exists):
1. a host venv (.venv-peers/: onnxruntime, onnx, numpy, safetensors, pillow, pinned) and re-runs
   itself inside it;
2. the arm64 Python sysroot (make-sysroot.sh: Debian's python3.11:arm64 + aarch64 onnxruntime and
   numpy wheels), its .pyc files compiled once, and the guest shim (guest-shim.c: /proc/cpuinfo for the emulated CPU);
3. vitedge for x86-64 (`cargo build --release --workspace`) and for aarch64 (Debian's rustc, as
   .ci/aarch64.sh, release profile with symbols), and the f32 / f16 / int8 blobs of the checkpoint;
4. the ONNX models: scripts/compare_ort.py's export_onnx (the f32 graph of scripts/ort/vit_onnx.py and
   ORT's quantize_dynamic int8 model, S8 weights, per tensor);
5. the input: one sample image decoded once by Pillow (saved as PNG so every engine sees the same
   pixels), preprocessed with the blob's preprocessing (scripts/ort/preprocess.py) into input.npy;
6. tract-runner (tract-onnx 0.23) for x86-64 and aarch64;
7. the LiteRT models (make_tflite.py, TensorFlow's converter in .venv-tflite/: f32, and int8 with
   dynamic-range int8 linear layers) for LiteRT's XNNPACK delegate;
8. the spec files, and each engine's x86-64 result on the input (reference.json).
With --check it then runs every spec under `qemu-aarch64 -cpu CPU` for each --cpus, with K=1 and K=3,
and compares the top-5 with the same engine on x86-64 (and every f32 engine with vitedge f32).

Spec format (what the driver consumes; it substitutes {iters} and adds -cpu / -plugin):
  {"engine": "ort", "precision": "int8", "argv": [guest program and arguments],
   "qemu_args": [what goes between qemu-aarch64 and the guest program], "env": {}}

Usage: python3 scripts/arm-model/peers/specs.py [--out DIR] [--check] [--cpus cortex-a76,cortex-a72]
Progress goes to stderr; the spec paths (and with --check a table) to stdout.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).resolve().parent
REPO = PEERS.parents[2]
WORK = REPO / "target" / "arm-model"
PEERS_WORK = WORK / "peers"
SYSROOT = WORK / "sysroot"
SHIM = WORK / "guest-shim.so"
ORT_VERSION = "1.32.0"  # same as make-sysroot.sh's aarch64 wheel
LITERT_VERSION = "2.3.0"  # same as make-sysroot.sh's aarch64 wheel
HOST_PACKAGES = [f"onnxruntime=={ORT_VERSION}", f"ai-edge-litert=={LITERT_VERSION}", "onnx==1.23.2", "numpy==2.4.6", "safetensors==0.8.0", "pillow==13.0.0"]
# TensorFlow's converter for the LiteRT models (make_tflite.py), in its own venv: it is 1.6 GB.
TFLITE_PACKAGES = ["tensorflow-cpu==2.21.0", "onnx==1.23.2", "numpy==2.4.6", "safetensors==0.8.0", "pillow==13.0.0"]
TFLITE_VENV = REPO / ".venv-tflite"
TARGET = "aarch64-unknown-linux-gnu"
AARCH64_TARGET_DIR = REPO / "target" / "aarch64-debian"  # the one .ci/aarch64.sh uses
TRACT_TARGET_DIR = WORK / "tract-runner"
IMAGE = "n01440764_tench.JPEG"
# Score tolerances for "same result as x86-64": f32 kernels differ in summation order only; int8
# engines re-quantize activations, where a last-bit f32 difference can flip a rounding step
# (.ci/aarch64.sh uses the same two bounds for vitedge).
TOLERANCE = {"f32": 2e-3, "f16": 2e-3, "int8": 3e-2}
ENGINES = ("vitedge", "ort", "tract", "litert")

sys.path.insert(0, str(REPO / "scripts"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=WORK / "specs", help="folder for the spec files (default target/arm-model/specs)")
    p.add_argument("--check", action="store_true", help="run every spec under qemu-aarch64 (K=1 and K=3) and compare with x86-64")
    p.add_argument("--cpus", default="cortex-a76,cortex-a72", help="qemu -cpu models for --check (default cortex-a76,cortex-a72)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)} (default all)")
    p.add_argument("--skip-build", action="store_true", help="use the existing vitedge / tract-runner binaries")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="folder with weights/, imagenet-sample/ (default ../shared)")
    p.add_argument("--venv", type=Path, default=REPO / ".venv-peers", help="host venv (default .venv-peers/)")
    a = p.parse_args(argv)
    a.cpus = [c for c in a.cpus.split(",") if c]
    a.engines = [e for e in a.engines.split(",") if e]
    bad = set(a.engines) - set(ENGINES)
    if bad:
        p.error(f"--engines: unknown {sorted(bad)}")
    a.out = a.out.resolve()
    return a


def sh(cmd, env=None, cwd=REPO, capture=False):
    """Runs a command (progress to stderr); raises RuntimeError on failure; returns stdout if capture."""
    cmd = [str(c) for c in cmd]
    log("$ " + " ".join(cmd))
    full_env = None if env is None else {**os.environ, **env}
    r = subprocess.run(cmd, env=full_env, cwd=cwd, stdout=subprocess.PIPE if capture else sys.stderr, stderr=subprocess.PIPE if capture else None, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{(r.stderr or '').strip()[-3000:]}")
    return r.stdout


# ---------------------------------------------------------------------------------------------
# host venv (stdlib only up to here)


def ensure_venv_and_reexec(args):
    py = args.venv / "bin" / "python"
    if not py.exists():
        log(f"creating venv {args.venv}")
        subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
    stamp = args.venv / ".peers-packages"
    if not stamp.exists() or stamp.read_text() != "\n".join(HOST_PACKAGES):
        log(f"installing {' '.join(HOST_PACKAGES)} into {args.venv}")
        r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *HOST_PACKAGES])
        if r.returncode != 0:
            sys.exit("error: pip install failed (PyPI unreachable?)")
        stamp.write_text("\n".join(HOST_PACKAGES))
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# guest side: sysroot, shim, how qemu runs a guest


def ensure_sysroot():
    sh(["bash", PEERS / "make-sysroot.sh", SYSROOT])
    # Compile the guest's .py files once (host CPython 3.11 writes the same bytecode format) and run
    # the guest with -B: otherwise the first run of a spec would compile and write them and the
    # next would not, and the N / 3N difference would not cancel the start-up.
    stamp = SYSROOT / ".compiled"
    want = (SYSROOT / ".debs").read_text() + (SYSROOT / "opt/peers/site-packages/.wheels").read_text()
    if stamp.exists() and stamp.read_text() == want:
        return
    log("compiling the sysroot's Python files")
    for d in (SYSROOT / "usr/lib/python3.11", SYSROOT / "opt/peers/site-packages"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(d)], stdout=subprocess.DEVNULL)
    stamp.write_text(want)


def ensure_shim():
    src = PEERS / "guest-shim.c"
    if not SHIM.exists() or SHIM.stat().st_mtime < src.stat().st_mtime:
        sh(["aarch64-linux-gnu-gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", SHIM, src, "-ldl"])


def guest_qemu_args():
    """qemu-aarch64 options for every guest: the arm64 sysroot (dynamic loader, glibc, Python), the
    /proc/cpuinfo shim, and a Python that writes no bytecode and hashes deterministically."""
    return ["-L", str(SYSROOT), "-E", f"LD_PRELOAD={SHIM}", "-E", f"PYTHONHOME={SYSROOT}/usr",
            "-E", f"PYTHONPATH={SYSROOT}/opt/peers/site-packages", "-E", "PYTHONDONTWRITEBYTECODE=1", "-E", "PYTHONHASHSEED=0"]


def guest_python():
    return str(SYSROOT / "usr/bin/python3.11")


# ---------------------------------------------------------------------------------------------
# builds


def host_binaries(args):
    if not args.skip_build:
        sh(["cargo", "build", "--release", "--workspace"], env={"CARGO_TARGET_DIR": str(REPO / "target")})
    vitedge, quant = REPO / "target/release/vitedge", REPO / "target/release/vitedge-quant"
    for b in (vitedge, quant):
        if not b.exists():
            raise RuntimeError(f"{b} does not exist (run without --skip-build)")
    return vitedge, quant


def aarch64_vitedge(args):
    """vitedge for aarch64 as .ci/aarch64.sh builds it (Debian's rustc, no tract), release profile (symbols kept)."""
    if not args.skip_build:
        env = {"RUSTC": "/usr/bin/rustc", "CARGO_TARGET_DIR": str(AARCH64_TARGET_DIR),
               "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER": "aarch64-linux-gnu-gcc"}
        sh(["cargo", "build", "--release", "--target", TARGET, "-p", "vitedge", "--no-default-features"], env=env)
    b = AARCH64_TARGET_DIR / TARGET / "release" / "vitedge"
    if not b.exists():
        raise RuntimeError(f"{b} does not exist (run without --skip-build)")
    return b


def tract_runners(args):
    """tract-runner for x86-64 (host toolchain) and aarch64 (Debian's rustc), release with symbols."""
    manifest = PEERS / "tract-runner" / "Cargo.toml"
    base = ["cargo", "build", "--release", "--locked", "--manifest-path", manifest]
    if not args.skip_build:
        sh(base, env={"CARGO_TARGET_DIR": str(TRACT_TARGET_DIR)})
        sh(base + ["--target", TARGET], env={"CARGO_TARGET_DIR": str(TRACT_TARGET_DIR), "RUSTC": "/usr/bin/rustc",
                                             "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER": "aarch64-linux-gnu-gcc"})
    x86, arm = TRACT_TARGET_DIR / "release/tract-runner", TRACT_TARGET_DIR / TARGET / "release/tract-runner"
    for b in (x86, arm):
        if not b.exists():
            raise RuntimeError(f"{b} does not exist (run without --skip-build)")
    return x86, arm


# ---------------------------------------------------------------------------------------------
# models and input


def checkpoint(args):
    ck = args.shared / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    if not ck.exists():
        raise RuntimeError(f"checkpoint {ck} not found (pass --shared DIR)")
    return ck


def ensure_blobs(args, quant, ck):
    """vitedge blobs f32 / f16 / int8 (int8 calibrated as scripts/compare_ort.py does)."""
    models = PEERS_WORK / "models"
    models.mkdir(parents=True, exist_ok=True)
    blobs = {}
    for prec in ("f32", "f16", "int8"):
        path = models / f"vit_tiny_{prec}.vitb"
        blobs[prec] = path
        if path.exists():
            continue
        cmd = [quant, "convert", ck, "-o", path, "--precision", prec, "--labels", args.shared / "imagenet_classes.txt"]
        if prec == "int8":
            cmd += ["--calibrate", args.shared / "imagenet-sample", "--calib-count", "32"]
        sh(cmd)
    return blobs


def ensure_onnx(ck):
    """f32 ONNX graph and ORT's dynamic int8 model, made by scripts/compare_ort.py's export_onnx."""
    from compare_ort import export_onnx

    models = PEERS_WORK / "models"
    paths = {"f32": models / "vit_tiny_fp32.onnx", "int8": models / "vit_tiny_int8.onnx"}
    if not all(p.exists() for p in paths.values()):
        log(f"exporting ONNX models to {models}")
        made = export_onnx(ck, models, per_channel=False)
        assert {k: Path(v) for k, v in made.items()} == paths, made
    return paths


def ensure_tflite(ck, npy):
    """LiteRT models (f32; int8: dynamic-range linear layers) made by make_tflite.py with TensorFlow's
    converter in .venv-tflite/."""
    models = PEERS_WORK / "models"
    paths = {"f32": models / "vit_tiny_f32.tflite", "int8": models / "vit_tiny_int8.tflite"}
    if all(p.exists() for p in paths.values()):
        return paths
    py = TFLITE_VENV / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", TFLITE_VENV])
    stamp = TFLITE_VENV / ".peers-packages"
    if not stamp.exists() or stamp.read_text() != "\n".join(TFLITE_PACKAGES):
        sh([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *TFLITE_PACKAGES])
        stamp.write_text("\n".join(TFLITE_PACKAGES))
    sh([py, PEERS / "make_tflite.py", "--checkpoint", ck, "--input", npy, "--out", models], env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    return paths


def ensure_input(args, vitedge, blob_f32):
    """The sample image as PNG (decoded once by Pillow) and its preprocessed tensor input.npy."""
    import numpy as np
    from PIL import Image

    from compare_ort import vitedge_preprocess_config
    from ort.preprocess import preprocess

    png, npy = PEERS_WORK / (Path(IMAGE).stem + ".png"), PEERS_WORK / "input.npy"
    if not png.exists():
        with Image.open(args.shared / "imagenet-sample" / IMAGE) as im:
            im.convert("RGB").save(png)
    if not npy.exists():
        cfg = vitedge_preprocess_config(vitedge, blob_f32)
        x = preprocess(png, size=cfg["input_size"], crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"])
        np.save(npy, x)
    return png, npy


# ---------------------------------------------------------------------------------------------
# specs and references


def make_specs(blobs, onnx_paths, tflite_paths, npy, png, arm_vitedge, arm_tract, engines):
    """{(engine, precision): spec}."""
    specs = {}
    qa = guest_qemu_args()
    if "vitedge" in engines:
        for prec, blob in blobs.items():
            specs[("vitedge", prec)] = {"engine": "vitedge", "precision": prec,
                                        "argv": [str(arm_vitedge), "bench", "--iters", "{iters}", "--threads", "1", "--model", str(blob), "--image", str(png)],
                                        "qemu_args": qa, "env": {}}
    if "ort" in engines:
        for prec, model in onnx_paths.items():
            specs[("ort", prec)] = {"engine": "ort", "precision": prec,
                                    "argv": [guest_python(), "-B", str(PEERS / "run_ort.py"), "--model", str(model), "--input", str(npy), "--threads", "1", "--iters", "{iters}"],
                                    "qemu_args": qa, "env": {}}
    if "tract" in engines:
        for prec, model in onnx_paths.items():
            specs[("tract", prec)] = {"engine": "tract", "precision": prec,
                                      "argv": [str(arm_tract), "--model", str(model), "--input", str(npy), "--iters", "{iters}"],
                                      "qemu_args": qa, "env": {}}
    if "litert" in engines:
        for prec, model in tflite_paths.items():
            specs[("litert", prec)] = {"engine": "litert", "precision": prec,
                                       "argv": [guest_python(), "-B", str(PEERS / "run_litert.py"), "--model", str(model), "--input", str(npy), "--threads", "1", "--iters", "{iters}"],
                                       "qemu_args": qa, "env": {}}
    return specs


def top5_line(stdout):
    """The last JSON line of a runner's output, as {index: score} of its top classes."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            j = json.loads(line)
            return {t["index"]: t["score"] for t in j["top"]}
    raise RuntimeError(f"no JSON result line in:\n{stdout[-2000:]}")


def x86_references(blobs, onnx_paths, tflite_paths, npy, png, vitedge, x86_tract, engines):
    """Each engine × precision on x86-64, same input: {(engine, precision): {index: score}}."""
    ref = {}
    for prec, blob in blobs.items():  # always: the f32 engines are compared with vitedge f32
        out = sh([vitedge, "classify", "--json", "--top", "5", "--threads", "1", "--model", blob, png], capture=True)
        ref[("vitedge", prec)] = top5_line(out)
    if "ort" in engines:
        for prec, model in onnx_paths.items():
            ref[("ort", prec)] = top5_line(sh([sys.executable, PEERS / "run_ort.py", "--model", model, "--input", npy, "--iters", "1"], capture=True))
    if "litert" in engines:
        for prec, model in tflite_paths.items():
            ref[("litert", prec)] = top5_line(sh([sys.executable, PEERS / "run_litert.py", "--model", model, "--input", npy, "--iters", "1"], capture=True))
    if "tract" in engines:
        for prec, model in onnx_paths.items():
            try:
                ref[("tract", prec)] = top5_line(sh([x86_tract, "--model", model, "--input", npy, "--iters", "1"], capture=True))
            except RuntimeError as e:
                log(f"tract {prec} on x86-64 failed: {e}")
    return ref


def compare(a, b):
    """(top-1 equal, top-5 set equal, max |Δscore| over a's top-5 classes present in both)."""
    ta, tb = sorted(a, key=a.get, reverse=True), sorted(b, key=b.get, reverse=True)
    d = max((abs(a[i] - b[i]) for i in a if i in b), default=float("inf"))
    return ta[0] == tb[0], set(ta) == set(tb), d


def same_result(prec, top1, top5, dscore):
    """The pass rule against x86-64: same top-1 and scores within TOLERANCE; f32 also the same top-5
    set. int8 engines may swap near-tied low-ranked classes: x86-64 ORT's AVX2 U8S8 kernel sums
    u8×s8 pairs with vpmaddubsw, which saturates at int16, where aarch64's udot is exact."""
    return top1 and dscore <= TOLERANCE[prec] and (top5 or prec.startswith("int8"))


def run_spec(spec, cpu, iters, timeout=3600):
    argv = [a.replace("{iters}", str(iters)) for a in spec["argv"]]
    cmd = ["qemu-aarch64", "-cpu", cpu, *spec["qemu_args"], *argv]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **spec["env"]})
    return r.returncode, r.stdout, r.stderr


def check(specs, ref, vitedge_arm_classify, cpus):
    """Every spec under qemu for each CPU with K=1 and K=3; returns (rows, all ok)."""
    rows, ok = [], True
    for cpu in cpus:
        for (engine, prec), spec in specs.items():
            for k in (1, 3):
                log(f"[{cpu}] {engine} {prec} K={k}")
                rc, out, err = run_spec(spec, cpu, k)
                row = {"cpu": cpu, "engine": engine, "precision": prec, "iters": k, "rc": rc}
                if rc != 0:
                    row["error"] = err.strip()[-500:]
                    ok = False
                elif engine == "vitedge":
                    row["result"] = "bench ran"  # bench prints timings; the classification is checked below
                else:
                    got = top5_line(out)
                    if (engine, prec) in ref:
                        t1, t5, d = compare(ref[(engine, prec)], got)
                        row.update(top1_equal_x86=t1, top5_equal_x86=t5, max_dscore_x86=d)
                        ok &= same_result(prec, t1, t5, d)
                    if prec == "f32":
                        t1, t5, d = compare(ref[("vitedge", "f32")], got)
                        row.update(top1_equal_vitedge_f32=t1, top5_equal_vitedge_f32=t5, max_dscore_vitedge_f32=d)
                        ok &= t1 and t5
                rows.append(row)
        # vitedge's classification of the same PNG under this CPU (its bench spec prints no classes).
        for prec, cmd in vitedge_arm_classify.items():
            rc, out, err = run_spec({"argv": cmd, "qemu_args": guest_qemu_args(), "env": {}}, cpu, 1)
            row = {"cpu": cpu, "engine": "vitedge classify", "precision": prec, "iters": 1, "rc": rc}
            if rc == 0:
                t1, t5, d = compare(ref[("vitedge", prec)], top5_line(out))
                row.update(top1_equal_x86=t1, top5_equal_x86=t5, max_dscore_x86=d)
                ok &= same_result(prec, t1, t5, d)
            else:
                row["error"] = err.strip()[-500:]
                ok = False
            rows.append(row)
    return rows, ok


def main_in_venv(args):
    ck = checkpoint(args)
    ensure_sysroot()
    ensure_shim()
    vitedge, quant = host_binaries(args)
    arm_vitedge = aarch64_vitedge(args) if "vitedge" in args.engines else None
    blobs = ensure_blobs(args, quant, ck)
    onnx_paths = ensure_onnx(ck)
    png, npy = ensure_input(args, vitedge, blobs["f32"])
    tflite_paths = {}
    if "litert" in args.engines:
        tflite_paths = ensure_tflite(ck, npy)
    x86_tract = arm_tract = None
    if "tract" in args.engines:
        x86_tract, arm_tract = tract_runners(args)
    specs = make_specs(blobs, onnx_paths, tflite_paths, npy, png, arm_vitedge, arm_tract, args.engines)
    ref = x86_references(blobs, onnx_paths, tflite_paths, npy, png, vitedge, x86_tract, args.engines)
    (PEERS_WORK / "reference.json").write_text(json.dumps({f"{e} {p}": v for (e, p), v in ref.items()}, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    for (engine, prec), spec in specs.items():
        path = args.out / f"{engine}-{prec}.json"
        path.write_text(json.dumps(spec, indent=1) + "\n")
        print(path)
    if not args.check:
        return 0
    classify = {p: [str(arm_vitedge), "classify", "--json", "--top", "5", "--threads", "1", "--model", str(b), str(png)]
                for p, b in blobs.items()} if arm_vitedge else {}
    rows, ok = check(specs, ref, classify, args.cpus)
    (PEERS_WORK / "check.json").write_text(json.dumps(rows, indent=1))
    print("| cpu | engine | precision | K | rc | top-1 = x86 | top-5 = x86 | max Δscore vs x86 | top-1/top-5 = vitedge f32 | max Δscore vs vitedge f32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    f = lambda r, k: "" if k not in r else (f"{r[k]:.2e}" if isinstance(r[k], float) else str(r[k]))  # noqa: E731
    for r in rows:
        v = f"{f(r, 'top1_equal_vitedge_f32')}/{f(r, 'top5_equal_vitedge_f32')}" if "top1_equal_vitedge_f32" in r else ""
        print(f"| {r['cpu']} | {r['engine']} | {r['precision']} | {r['iters']} | {r['rc']} | {f(r, 'top1_equal_x86')} | {f(r, 'top5_equal_x86')} "
              f"| {f(r, 'max_dscore_x86')} | {v} | {f(r, 'max_dscore_vitedge_f32')} |" + (f" error: {r['error'][-200:]}" if "error" in r else ""))
    print("all checks passed" if ok else "CHECK FAILED")
    return 0 if ok else 1


def main():
    from compare_ort import in_venv

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
