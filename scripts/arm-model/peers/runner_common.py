"""What the Python peer runners (run_ort.py, run_litert.py) share: their command line and their
result line. Standard library only at import time (it runs in the arm64 Python under qemu too)."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/, for compare_ort.softmax


def parse_args(doc, model_help):
    """--model, --input, --iters, --threads, --top; checks the values and that the files exist."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--model", required=True, type=Path, help=model_help)
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
    return a


def load_input(path):
    """The float32 [1, 3, H, W] array of an .npy file; exits with a message otherwise."""
    import numpy as np

    x = np.load(path)
    if x.dtype != np.float32 or x.ndim != 4:
        sys.exit(f"error: {path} holds {x.dtype} {x.shape}; expected float32 [1, 3, H, W]")
    return x


def print_result(engine, version, args, logits):
    """One JSON line with the softmax top-`args.top` of `logits`."""
    import numpy as np

    from compare_ort import softmax

    prob = softmax(np.asarray(logits, dtype=np.float64))
    top = [{"index": int(i), "score": round(float(prob[i]), 7)} for i in np.argsort(-prob)[: args.top]]
    print(json.dumps({"engine": engine, "version": version, "model": str(args.model), "iters": args.iters, "threads": args.threads, "top": top}))
