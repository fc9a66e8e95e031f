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
from runner_common import load_input, parse_args, print_result


def main():
    a = parse_args(__doc__, "ONNX model (input `pixels`, output `logits`)")
    import onnxruntime as ort
    from compare_ort import ort_session

    x = load_input(a.input)
    sess = ort_session(a.model, a.threads)
    for _ in range(a.iters):
        logits = sess.run(["logits"], {"pixels": x})[0][0]
    print_result("ort", ort.__version__, a, logits)


if __name__ == "__main__":
    main()
