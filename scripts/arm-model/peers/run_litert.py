#!/usr/bin/env python3
"""LiteRT (ai-edge-litert's TFLite interpreter, XNNPACK delegate applied by default) as a peer of
vitedge for the aarch64 cost model: one interpreter on a .tflite model made by make_tflite.py,
`num_threads` = --threads, `--iters K` invocations on one preprocessed input (.npy, float32
[1, 3, H, W]), then one JSON line with the top-5 of the last run:
  {"engine": "litert", "version": ..., "model": ..., "iters": K, "threads": T, "top": [{"index": i, "score": p}, ...]}

Needs only numpy and ai-edge-litert, so it runs in the arm64 Python of make-sysroot.sh under
qemu-aarch64 as well as on the host.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/, for compare_ort.softmax


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help=".tflite model (float32 input [1, 3, H, W], float32 logits)")
    p.add_argument("--input", required=True, type=Path, help="preprocessed input, float32 .npy [1, 3, H, W]")
    p.add_argument("--iters", type=int, default=1, help="inferences to run (default 1)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    a = p.parse_args()
    if a.iters < 1 or a.threads < 1 or a.top < 1:
        p.error("--iters, --threads and --top must be ≥ 1")
    for f in (a.model, a.input):
        if not f.is_file():
            p.error(f"{f} does not exist (run scripts/arm-model/peers/specs.py to make it)")

    from importlib.metadata import version

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from compare_ort import softmax

    x = np.load(a.input)
    interp = Interpreter(model_path=str(a.model), num_threads=a.threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if tuple(inp["shape"]) != x.shape or inp["dtype"] != np.float32:
        sys.exit(f"error: the model wants {inp['dtype'].__name__} {tuple(inp['shape'])}, {a.input} holds {x.dtype} {x.shape}")
    for _ in range(a.iters):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        logits = interp.get_tensor(out["index"])[0]
    prob = softmax(logits.astype(np.float64))
    top = [{"index": int(i), "score": round(float(prob[i]), 7)} for i in np.argsort(-prob)[: a.top]]
    print(json.dumps({"engine": "litert", "version": version("ai-edge-litert"), "model": str(a.model), "iters": a.iters, "threads": a.threads, "top": top}))


if __name__ == "__main__":
    main()
