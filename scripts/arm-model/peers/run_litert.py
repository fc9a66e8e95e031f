#!/usr/bin/env python3
"""LiteRT (ai-edge-litert's TFLite interpreter, XNNPACK delegate applied by default) as a peer of
vitedge for the aarch64 cost model: one interpreter on a .tflite model made by make_tflite.py,
`num_threads` = --threads, `--iters K` invocations on one preprocessed input (.npy, float32
[1, 3, H, W]), then one JSON line with the top-5 of the last run:
  {"engine": "litert", "version": ..., "model": ..., "iters": K, "threads": T, "top": [{"index": i, "score": p}, ...]}

Needs only numpy and ai-edge-litert, so it runs in the arm64 Python of make-sysroot.sh under
qemu-aarch64 as well as on the host.
"""
import sys

from runner_common import load_input, parse_args, print_result


def main():
    a = parse_args(__doc__, ".tflite model (float32 input [1, 3, H, W], float32 logits)")
    from importlib.metadata import version

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    x = load_input(a.input)
    interp = Interpreter(model_path=str(a.model), num_threads=a.threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if tuple(inp["shape"]) != x.shape or inp["dtype"] != np.float32:
        sys.exit(f"error: the model wants {inp['dtype'].__name__} {tuple(inp['shape'])}, {a.input} holds {x.dtype} {x.shape}")
    for _ in range(a.iters):
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        logits = interp.get_tensor(out["index"])[0]
    print_result("litert", version("ai-edge-litert"), a, logits)


if __name__ == "__main__":
    main()
