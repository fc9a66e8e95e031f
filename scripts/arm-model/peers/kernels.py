#!/usr/bin/env python3
"""Which kernels a peer runs under an emulated CPU: runs an engine spec once under qemu-aarch64
with `-d in_asm` and lists the code qemu translated, i.e. every instruction executed at least once
(default, `--mode coverage`), or with `-d in_asm,exec,nochain` (every executed translation block
logged; very slow and gigabytes of log per inference: `--mode counts`), and prints

* the instruction mix (share of the translated, or with counts of the executed, instructions:
  int8 dot products `sdot`/`udot`, int8 matrix multiplies `smmla`/`ummla`/`usmmla`, bf16,
  f32 `fmla`, widening integer multiplies, SVE, scalar);
* per function (symbol from the object's symbol table when it has one, else the 4 KiB page of a
  stripped object) its share and its SIMD instructions — enough to tell e.g. MLAS's `udot` U8X8
  kernel from its NEON `umull`/`uadalp` one, or tract's `sdot` 8x8 kernel from its `smlal` one.
  Coverage mode ranks functions by the SIMD instructions they contain (kernels first).

Instructions are decoded by llvm-mc (Debian llvm-19; qemu 7.2's disassembler prints `.byte` for
dot-product and newer encodings). Block addresses are mapped to shared objects with the guest's
/proc/self/maps, dumped at exit by guest-shim.so (GUEST_SHIM_MAPS). Counts only: nothing is timed.

Usage: python3 scripts/arm-model/peers/kernels.py --spec target/arm-model/specs/ort-int8.json --cpu cortex-a76
       [--iters 1] [--mode coverage|counts] [--json]
"""
import argparse
import bisect
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

LLVM = Path("/usr/lib/llvm-19/bin")
MATTR = "+v8.6a,+dotprod,+i8mm,+bf16,+fullfp16,+fp16fml,+lse,+rcpc,+rdm,+sve,+sve2,+sme,+crypto,+aes,+sha2,+sha3,+sm4,+crc,+mte,+rand,+ssbs,+sb,+predres,+specrestrict"
TRACE = re.compile(r"^Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/")
INSN = re.compile(r"^0x([0-9a-f]+):\s+([0-9a-f]{8})\b")

CLASSES = [  # (label, predicate on (mnemonic, operands))
    ("int8 dot product (sdot/udot/usdot/sudot)", lambda m, o: m in ("sdot", "udot", "usdot", "sudot")),
    ("int8 matrix multiply (smmla/ummla/usmmla)", lambda m, o: m in ("smmla", "ummla", "usmmla")),
    ("bf16 (bfmmla/bfdot/bfmlal)", lambda m, o: m.startswith("bf")),
    ("f32 vector fma (fmla/fmls .4s)", lambda m, o: m in ("fmla", "fmls") and ".4s" in o),
    ("f16 vector fma (fmla/fmls .8h)", lambda m, o: m in ("fmla", "fmls") and ".8h" in o),
    ("int widening multiply (smull/umull/smlal/umlal/sadalp/uadalp)", lambda m, o: re.fullmatch(r"[su](mull2?|mlal2?|adalp|addlp)", m) is not None),
    ("other vector float (fadd/fmul/fmax/... on v regs)", lambda m, o: m.startswith("f") and re.search(r"\bv\d+\.", o) is not None),
    ("other vector integer/permute (v regs)", lambda m, o: re.search(r"\bv\d+\.", o) is not None or m in ("ld1", "st1", "ld1r", "ld2", "ld4", "st2", "st4")),
    ("SVE (z / p regs)", lambda m, o: re.search(r"\b[zp]\d+\b", o) is not None),
    ("scalar float (s/d/h regs)", lambda m, o: m.startswith("f")),
]


def classify(mnemonic, operands):
    for label, pred in CLASSES:
        if pred(mnemonic, operands):
            return label
    return "scalar integer / control / memory"


def decode(words):
    """{word: (mnemonic, operands)} via llvm-mc; undecodable words become ('?', '')."""
    words = sorted(words)
    text = "\n".join(" ".join(f"0x{(w >> (8 * i)) & 0xff:02x}" for i in range(4)) for w in words)
    r = subprocess.run([str(LLVM / "llvm-mc"), "--disassemble", "-triple=aarch64", f"-mattr={MATTR}"], input=text, capture_output=True, text=True)
    out = [l.strip() for l in r.stdout.splitlines() if l.strip() and not l.strip().startswith(".text")]
    # llvm-mc prints one line per decoded word and a warning (on stderr) for undecodable ones:
    # decode one by one when counts disagree.
    if len(out) != len(words):
        res = {}
        for w, line in zip(words, text.splitlines()):
            rr = subprocess.run([str(LLVM / "llvm-mc"), "--disassemble", "-triple=aarch64", f"-mattr={MATTR}"], input=line, capture_output=True, text=True)
            o = [l.strip() for l in rr.stdout.splitlines() if l.strip() and not l.strip().startswith(".text")]
            res[w] = split_insn(o[0]) if o else ("?", "")
        return res
    return {w: split_insn(l) for w, l in zip(words, out)}


def split_insn(line):
    parts = line.split(None, 1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def read_log(fifo, blocks, counts):
    """Parses qemu's log stream: in_asm blocks (pc -> [(addr, word)]) and exec traces (pc -> count)."""
    cur = None
    with open(fifo, errors="replace") as f:
        for line in f:
            if line.startswith("Trace "):
                m = TRACE.match(line)
                if m:
                    counts[int(m.group(1), 16)] += 1
                continue
            if line.startswith("IN:"):
                cur = []
                continue
            if cur is not None:
                m = INSN.match(line)
                if m:
                    cur.append((int(m.group(1), 16), int(m.group(2), 16)))
                    if len(cur) == 1:
                        blocks[cur[0][0]] = cur
                else:
                    cur = None


def parse_maps(path, sysroot):
    """[(start, end, file, file_offset)] of file-backed executable mappings."""
    maps = []
    for line in Path(path).read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        f = parts[5].strip()
        if not f.startswith("/"):
            continue
        if not Path(f).exists() and sysroot and (Path(sysroot) / f.lstrip("/")).exists():
            f = str(Path(sysroot) / f.lstrip("/"))
        maps.append((lo, hi, f, int(parts[2], 16)))
    return maps


def load_bias(maps_all, f):
    """Address of the object's file offset 0 (start of its first mapping minus that mapping's offset)."""
    return min(lo - off for lo, hi, ff, off in maps_all if ff == f)


def symbols(f):
    """Sorted [(vaddr, size, name)] of function symbols (.symtab, else .dynsym), demangled."""
    out = []
    for extra in ([], ["-D"]):
        r = subprocess.run([str(LLVM / "llvm-nm"), "--defined-only", "-n", "-S", "-C", *extra, f], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            p = line.split(None, 3)
            if len(p) == 4 and p[2] in "tTwW":
                out.append((int(p[0], 16), int(p[1], 16), p[3]))
        if out:
            break
    return sorted(out)


def all_maps(path, sysroot):
    res = []
    for line in Path(path).read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            f = parts[5].strip()
            if not Path(f).exists() and sysroot and (Path(sysroot) / f.lstrip("/")).exists():
                f = str(Path(sysroot) / f.lstrip("/"))
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            res.append((lo, hi, f, int(parts[2], 16)))
    return res


def analyse(spec, cpu, iters, top, mode="coverage", keep=None):
    sysroot = next((spec["qemu_args"][i + 1] for i, a in enumerate(spec["qemu_args"]) if a == "-L"), None)
    with tempfile.TemporaryDirectory(dir=keep) as tmp:
        fifo, maps_file = os.path.join(tmp, "log"), os.path.join(tmp, "maps")
        os.mkfifo(fifo)
        blocks, counts = {}, collections.Counter()
        reader = threading.Thread(target=read_log, args=(fifo, blocks, counts))
        reader.start()
        argv = [a.replace("{iters}", str(iters)) for a in spec["argv"]]
        flags = "in_asm,exec,nochain" if mode == "counts" else "in_asm"
        cmd = ["qemu-aarch64", "-cpu", cpu, "-d", flags, "-D", fifo, *spec["qemu_args"], "-E", f"GUEST_SHIM_MAPS={maps_file}", *argv]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **spec.get("env", {})})
        reader.join()
        if r.returncode != 0:
            raise RuntimeError(f"guest failed ({r.returncode}): {r.stderr[-2000:]}")
        if not os.path.exists(maps_file):
            raise RuntimeError("no memory map dumped: is guest-shim.so in LD_PRELOAD (qemu_args)?")
        maps_exec, maps_any = parse_maps(maps_file, sysroot), all_maps(maps_file, sysroot)
    if mode == "coverage":  # every translated block once
        counts = collections.Counter({pc: 1 for pc in blocks})
    words = {w for pc in counts if pc in blocks for _, w in blocks[pc]}
    dec = decode(words)
    starts = [m[0] for m in maps_exec]

    def obj_of(pc):
        i = bisect.bisect_right(starts, pc) - 1
        return maps_exec[i] if i >= 0 and pc < maps_exec[i][1] else None

    total = 0
    by_class, by_obj = collections.Counter(), collections.Counter()
    per_pc = {}
    for pc, n in counts.items():
        b = blocks.get(pc)
        if not b:
            continue
        total += n * len(b)
        per_pc[pc] = n * len(b)
        m = obj_of(pc)
        by_obj[m[2] if m else "?"] += n * len(b)
        for _, w in b:
            by_class[classify(*dec[w])] += n
    # functions: symbol when the object has symbols, else clusters of hot blocks
    syms_cache, funcs, fsimd = {}, collections.Counter(), collections.defaultdict(collections.Counter)
    for pc, weight in per_pc.items():
        m = obj_of(pc)
        if not m:
            key = "?"
        else:
            f = m[2]
            if f not in syms_cache:
                syms_cache[f] = (symbols(f), load_bias(maps_any, f))
            syms, bias = syms_cache[f]
            va = pc - bias
            i = bisect.bisect_right([s[0] for s in syms], va) - 1 if syms else -1
            if i >= 0 and (syms[i][1] == 0 or va < syms[i][0] + syms[i][1]):
                key = f"{Path(f).name}: {syms[i][2][:110]}"
            else:
                key = f"{Path(f).name} +0x{va & ~0xfff:x}"  # 4 KiB page of a stripped object
        funcs[key] += weight
        for _, w in blocks[pc]:
            mn, ops = dec[w]
            if classify(mn, ops) != "scalar integer / control / memory":
                form = mn + ("(elem)" if "[" in ops and re.search(r"\bv\d+\.", ops) else "") + (" " + re.search(r"\.(\d+[bhsd])", ops).group(1) if re.search(r"\.(\d+[bhsd])", ops) else "")
                fsimd[key][form] += counts[pc]
    if mode == "coverage":  # rank by SIMD content: the kernels, not the interpreter
        funcs = collections.Counter({k: sum(fsimd[k].values()) for k in funcs if fsimd[k]})
    return {
        "cpu": cpu, "iters": iters, "mode": mode, "instructions": total,
        "classes": {k: v for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
        "objects": {k: v for k, v in by_obj.most_common(8)},
        "functions": [{"function": k, "share": v / total, "simd": dict(fsimd[k].most_common(6))} for k, v in funcs.most_common(top)],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, type=Path, help="engine spec JSON written by specs.py")
    p.add_argument("--cpu", default="cortex-a76", help="qemu -cpu model (default cortex-a76)")
    p.add_argument("--iters", type=int, default=1, help="inferences (default 1)")
    p.add_argument("--top", type=int, default=12, help="hottest functions to list (default 12)")
    p.add_argument("--mode", choices=("coverage", "counts"), default="coverage", help="coverage: translated code (default); counts: executed blocks (slow)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    a = p.parse_args()
    spec = json.loads(a.spec.read_text())
    try:
        res = analyse(spec, a.cpu, a.iters, a.top, a.mode)
    except RuntimeError as e:
        sys.exit(f"error: {e}")
    res["spec"] = f"{spec['engine']} {spec['precision']}"
    if a.json:
        print(json.dumps(res, indent=1))
        return
    t = res["instructions"]
    what = "executed" if a.mode == "counts" else "translated (executed at least once)"
    print(f"{res['spec']} under -cpu {a.cpu}, {a.iters} inference(s) + start-up: {t:,} guest instructions {what}")
    print("instruction mix:")
    for k, v in res["classes"].items():
        print(f"  {v / t:6.1%}  {k}")
    print("objects:")
    for k, v in res["objects"].items():
        print(f"  {v / t:6.1%}  {k}")
    print("kernels (functions by SIMD instructions; counts in brackets):" if a.mode == "coverage" else "hottest functions:")
    for f in res["functions"]:
        simd = ", ".join(f"{k} {v}" for k, v in f["simd"].items())
        share = f"{int(f['share'] * t):7d}" if a.mode == "coverage" else f"{f['share']:6.1%}"
        print(f"  {share}  {f['function']}" + (f"   [{simd}]" if simd else ""))


if __name__ == "__main__":
    main()
