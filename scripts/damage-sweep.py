#!/usr/bin/env python3
"""Damage sweep: every kind of blob damage must be refused by `vitedge classify` and `vitedge stream`.

For each blob: every truncation of the first 64 KiB and ~200 lengths spread over the file, 2,000
random single-bit flips over the header (prelude, JSON header, padding) and 2,000 over the payload.
Each damaged file goes through `classify` (one image) and `stream` (one raw frame file). A case
passes when the command exits with status 1, prints no result, and its error names the damaged
part ("truncated"; prelude/header/magic/version; "tensor `name`" or the padding). Anything else is a
miss: accepted (a result printed or exit 0), a crash (signal, panic, exit 101), an unnamed error
or a hang. Prints a summary table and exits non-zero on any miss.

Standard library only. Slow (about 280,000 process runs for the two real blobs): not part of the
test suite; `tests/cli.rs` runs a 20-case sample on a tiny blob.

  python3 scripts/damage-sweep.py                       # real f32 + int8 ViT-Tiny, converted from ../shared
  python3 scripts/damage-sweep.py --blob M.vitb [--blob …] [--sample N] [--jobs J] [--seed S]
"""

import argparse
import concurrent.futures as cf
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CHECKPOINT = SHARED / "weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
FRAME_W, FRAME_H = 64, 48

PART = {
    "truncation": re.compile(r"truncated"),
    "header": re.compile(r"prelude|header|magic|version"),
    "payload": re.compile(r"tensor `[^`]+`|padding (before the first tensor|after tensor)"),
}


def png(width, height):
    """A small RGB gradient as a PNG file (zlib + CRC from the standard library)."""
    raw = b"".join(b"\x00" + b"".join(bytes(((x * 4) % 256, (y * 5) % 256, (x + y) % 256)) for x in range(width))
                   for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def build(args):
    """Release binaries, and the real blobs unless --blob was given."""
    if args.vitedge is None:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "vitedge", "-p", "vitedge-quant"], cwd=ROOT, check=True)
        args.vitedge = str(ROOT / "target/release/vitedge")
    if args.blob:
        return [Path(b) for b in args.blob]
    out = ROOT / "target/damage-sweep"
    out.mkdir(parents=True, exist_ok=True)
    quant = ROOT / "target/release/vitedge-quant"
    if not CHECKPOINT.is_file():
        sys.exit(f"{CHECKPOINT} is missing: pass --blob FILE")
    blobs = []
    for precision in ["f32", "int8"]:
        path = out / f"vit_tiny_{precision}.vitb"
        if not path.is_file():
            cmd = [str(quant), "convert", str(CHECKPOINT), "-o", str(path), "--labels", str(SHARED / "imagenet_classes.txt"),
                   "--precision", precision]
            if precision == "int8":
                cmd += ["--calibrate", str(SHARED / "imagenet-sample"), "--calib-count", "32"]
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        blobs.append(path)
    return blobs


def cases_for(size, payload_offset, rng, sample):
    """(category, kind, value) with kind 'cut' (a length) or 'flip' (a bit index)."""
    cuts = set(range(0, min(65536, size)))
    cuts |= {size * k // 201 for k in range(1, 201)}
    cuts.discard(size)
    truncations = [("truncation", "cut", n) for n in sorted(cuts, reverse=True)]
    header = [("header", "flip", rng.randrange(payload_offset * 8)) for _ in range(2000)]
    payload = [("payload", "flip", payload_offset * 8 + rng.randrange((size - payload_offset) * 8)) for _ in range(2000)]
    if sample:
        # The same share of each kind of damage.
        per = max(1, sample // 3)
        truncations = sorted(rng.sample(truncations, min(per, len(truncations))), key=lambda c: -c[2])
        header, payload = header[:per], payload[: max(1, sample - 2 * per)]
    return truncations + header + payload


def outcome(proc, category):
    """'named', 'unnamed', 'accepted' or 'crashed' for one finished run."""
    err = proc.stderr
    if proc.returncode < 0 or proc.returncode == 101 or "panicked" in err:
        return "crashed"
    if proc.returncode == 0 or proc.stdout.strip():
        return "accepted"
    if proc.returncode != 1 or "error:" not in err:
        return "unnamed"
    return "named" if PART[category].search(err) else "unnamed"


class Sweep:
    def __init__(self, args, blob, image, frame):
        self.args, self.blob, self.image, self.frame = args, blob, image, frame
        self.data = blob.read_bytes()
        self.lock = threading.Lock()
        self.counts = {}
        self.misses = []

    def commands(self, path):
        v = self.args.vitedge
        yield "classify", [v, "classify", "--threads", "1", "--model", str(path), str(self.image)]
        yield "stream", [v, "stream", "--threads", "1", "--model", str(path), "--input", str(self.frame),
                         "--pixel-format", "rgb24", "--size", f"{FRAME_W}x{FRAME_H}"]

    def run_case(self, path, category, what):
        for name, cmd in self.commands(path):
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, RUST_LOG="error"))
                result = outcome(proc, category)
                last = (proc.stderr.strip().splitlines() or [""])[-1]
                detail = f"exit {proc.returncode}: {last[:160]}"
            except subprocess.TimeoutExpired:
                result, detail = "hung", None
            with self.lock:
                key = (category, name)
                row = self.counts.setdefault(key, {"cases": 0, "named": 0, "unnamed": 0, "accepted": 0, "crashed": 0, "hung": 0})
                row["cases"] += 1
                row[result] += 1
                if result != "named" and len(self.misses) < 20:
                    self.misses.append((category, name, what, result, detail))

    def worker(self, cases, workdir):
        """Runs `cases` on private copies: flips in place (and back), truncations shortest last."""
        flip_path = workdir / "flip.vitb"
        cut_path = workdir / "cut.vitb"
        flip_path.write_bytes(self.data)
        cuts = [c for c in cases if c[1] == "cut"]
        if cuts:
            cut_path.write_bytes(self.data[: max(c[2] for c in cuts)])
        for category, kind, value in cases:
            if kind == "cut":
                os.truncate(cut_path, value)
                self.run_case(cut_path, category, f"cut to {value} bytes")
            else:
                byte, bit = divmod(value, 8)
                with open(flip_path, "r+b") as f:
                    f.seek(byte)
                    orig = f.read(1)[0]
                    f.seek(byte)
                    f.write(bytes([orig ^ (1 << bit)]))
                self.run_case(flip_path, category, f"bit {bit} of byte {byte}")
                with open(flip_path, "r+b") as f:
                    f.seek(byte)
                    f.write(bytes([orig]))

    def run(self, cases, tmp):
        jobs = max(1, self.args.jobs)
        chunks = [cases[i::jobs] for i in range(jobs)]
        with cf.ThreadPoolExecutor(jobs) as pool:
            futures = []
            for i, chunk in enumerate(chunks):
                d = tmp / f"{self.blob.stem}-{i}"
                d.mkdir()
                futures.append(pool.submit(self.worker, chunk, d))
            for fut in futures:
                fut.result()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vitedge", help="vitedge binary (default: build target/release/vitedge)")
    ap.add_argument("--blob", action="append", help="blob to damage (repeatable; default: the real f32 and int8 ViT-Tiny)")
    ap.add_argument("--sample", type=int, default=0, help="only N random cases per blob (0: all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    blobs = build(args)
    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="vitedge-damage-", dir=shm if shm.is_dir() else None))
    try:
        image = tmp / "image.png"
        image.write_bytes(png(FRAME_W, FRAME_H))
        frame = tmp / "frame.rgb"
        frame.write_bytes(bytes((i * 7) % 256 for i in range(FRAME_W * FRAME_H * 3)))
        print(f"{'blob':<22} {'damage':<11} {'command':<9} {'cases':>7} {'refused, part named':>20} {'unnamed':>8} {'accepted':>9} {'crashed':>8} {'hung':>5}")
        missed = 0
        for blob in blobs:
            for name, cmd in Sweep(args, blob, image, frame).commands(blob):
                ok = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RUST_LOG="error"))
                if ok.returncode != 0 or not ok.stdout.strip():
                    sys.exit(f"the undamaged {blob} fails under {name}: {ok.stderr.strip()}")
            data = blob.read_bytes()
            payload_offset = struct.unpack_from("<Q", data, 24)[0]
            rng = random.Random(f"{args.seed}-{blob.name}")
            sweep = Sweep(args, blob, image, frame)
            sweep.run(cases_for(len(data), payload_offset, rng, args.sample), tmp)
            for (category, command), row in sorted(sweep.counts.items()):
                print(f"{blob.name:<22} {category:<11} {command:<9} {row['cases']:>7} {row['named']:>20} {row['unnamed']:>8} "
                      f"{row['accepted']:>9} {row['crashed']:>8} {row['hung']:>5}", flush=True)
                missed += row["cases"] - row["named"]
            for category, command, what, result, detail in sweep.misses:
                print(f"  miss: {blob.name} {category} {command}, {what}: {result} ({detail})")
        print(f"{'all refused with the part named' if missed == 0 else f'{missed} MISSES'}")
        return 1 if missed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
