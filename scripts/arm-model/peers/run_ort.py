#!/usr/bin/env python3
"""ONNX Runtime as a peer of vitedge for the aarch64 cost model: one CPU session on an ONNX model
(the f32 graph of scripts/ort/vit_onnx.py or ORT's quantize_dynamic int8 model), session options of
scripts/compare_ort.py (intra-op threads = --threads, one inter-op thread, sequential execution,
ORT_ENABLE_ALL), `--iters K` runs on one preprocessed input (.npy, float32 [1, 3, H, W]), then one
JSON line with the top-5 of the last run:
  {"engine": "ort", "version": ..., "model": ..., "iters": K, "threads": T, "top": [{"index": i, "score": p}, ...]}

Needs only numpy and onnxruntime, so it runs in the arm64 Python of make-sysroot.sh under
qemu-aarch64 as well as on the host:
  python3 run_ort.py --model vit_tiny_int8.onnx --input input.npy --iters 3
"""
import argparse
import json
import sys
from pathlib import Path

# scripts/ (for compare_ort's session options and softmax; it imports only the standard library at top level)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help="ONNX model (input `pixels`, output `logits`)")
    p.add_argument("--input", required=True, type=Path, help="preprocessed input, float32 .npy [1, 3, H, W]")
    p.add_argument("--iters", type=int, default=1, help="inferences to run (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    a = p.parse_args()
    if a.iters < 1 or a.threads < 1 or a.top < 1:
        p.error("--iters, --threads and --top must be ≥ 1")
    for f in (a.model, a.input):
        if not f.is_file():
            p.error(f"{f} does not exist (run scripts/arm-model/peers/specs.py to make it)")

    import numpy as np
    import onnxruntime as ort
    from compare_ort import ort_session, softmax

    x = np.load(a.input)
    if x.dtype != np.float32 or x.ndim != 4:
        sys.exit(f"error: {a.input} holds {x.dtype} {x.shape}; expected float32 [1, 3, H, W]")
    sess = ort_session(a.model, a.threads)
    for _ in range(a.iters):
        logits = sess.run(["logits"], {"pixels": x})[0][0]
    prob = softmax(logits.astype(np.float64))
    top = [{"index": int(i), "score": round(float(prob[i]), 7)} for i in np.argsort(-prob)[: a.top]]
    print(json.dumps({"engine": "ort", "version": ort.__version__, "model": str(a.model), "iters": a.iters, "threads": a.threads, "top": top}))


if __name__ == "__main__":
    main()
