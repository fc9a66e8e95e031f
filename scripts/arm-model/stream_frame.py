#!/usr/bin/env python3
"""Per-frame cost of `vitedge stream` on raw frames under the ARM cost model, split by function, for
one or more aarch64 builds (e.g. before / after a preprocessing change): the same counting (runs of
N and 3N frames, difference / 2N) and pricing (llvm-mca per board core) as `model.py estimate`,
with `stream` instead of `bench`, so the frame's colour conversion and resize show up beside the
inference. Prints the preprocessing functions' estimated ms per frame and the frame's total.

    python3 scripts/arm-model/stream_frame.py --bin /tmp/vitedge-before --bin target/aarch64-debian/aarch64-unknown-linux-gnu/release/vitedge \\
        --format yuyv --size 640x480 --boards pi5,pi4

Needs what `model.py estimate` needs (prepare.sh: the plugin qemu, llvm-mca, the blobs).
"""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402

PREPROCESSING = ("pixel", "preprocess", "resize", "convert_row", "normalize")
BYTES_PER_PIXEL = {"yuyv": 2, "uyvy": 2, "nv12": 1.5, "i420": 1.5, "rgb24": 3, "bgr24": 3}


def frames_file(fmt, w, h, n):
    """n copies of one noise frame, cached under target/arm-model/frames."""
    d = os.path.join(M.WORK, "frames")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{fmt}-{w}x{h}-{n}.raw")
    if not os.path.exists(path):
        r = random.Random(1)
        one = bytes(r.getrandbits(8) for _ in range(int(w * h * BYTES_PER_PIXEL[fmt])))
        with open(path, "wb") as f:
            for _ in range(n):
                f.write(one)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", action="append", required=True, help="aarch64 vitedge binary (repeat to compare)")
    ap.add_argument("--format", default="yuyv", choices=sorted(BYTES_PER_PIXEL))
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--boards", default="pi5,pi4")
    ap.add_argument("--frames", type=int, default=2, help="N of the N / 3N counting runs")
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    boards = M.load_boards()
    pricer = M.Pricer()
    for binary in a.bin:
        binary = os.path.abspath(binary)
        for name in a.boards.split(","):
            b = boards[name]

            def argv(n, binary=binary):
                return [binary, "stream", "--model", M.blob_path(a.precision), "--input", frames_file(a.format, w, h, n),
                        "--pixel-format", a.format, "--size", a.size, "--threads", "1", "--drop", "never"]

            pi = M.counts_per_inference("aarch64", M.count_cpu(b["qemu_cpu"]), argv, a.frames, M.arm_qemu_args(), None, f"stream-{name}-")
            an = M.analyze(pi, "aarch64", [b["mca_cpu"]], binary, pricer)
            sm = M.summarize(an, b["mca_cpu"], b["clock_ghz"])
            pre = [t for t in sm["top_functions"] if any(k in t["function"] for k in PREPROCESSING)]
            print(f"{binary} on {b['name']}: {sm['ms_compute']:.2f} ms per {a.size} {a.format} frame ({a.precision}, 1 thread)")
            for t in pre:
                print(f"  {t['ms']:7.3f} ms  {t['function']}")
            print(f"  {sum(t['ms'] for t in pre):7.3f} ms  preprocessing functions in all")
    pricer.save()


if __name__ == "__main__":
    main()
