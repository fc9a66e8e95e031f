#!/usr/bin/env python3
"""Instruction-level cost model of an inference on boards we cannot reach.

Counts what the guest executes under QEMU (our TCG plugin plugin/tbcount.c), prices each hot
translation block with llvm-mca for the board's core, adds a memory term for what cannot stay in
the board's caches, attributes blocks to functions and kernels. Per inference: runs of N and 3N
inferences, difference / 2N. See README.md beside this file for the method and its limits.

Subcommands:
  estimate   boards x precisions x engines -> ms table + per-kernel breakdown, JSON results
  x86        the same pipeline for this machine (qemu-x86_64, llvm-mca znver3), for validate-x86.sh
  clock      this machine's effective clock (GHz)
Python 3 standard library only.
"""
import argparse
import collections
import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORK = os.path.join(ROOT, "target", "arm-model")
QEMU_DIR = os.path.join(WORK, "qemu")
LLVM = "/usr/lib/llvm-19/bin"
AARCH64_MATTR = "+neon,+dotprod,+fullfp16,+fp16fml,+i8mm,+bf16,+crc,+lse,+rcpc,+rdm,+aes,+sha2,+sha3,+sm4,+sve,+sve2"
SYSROOT = "/usr/aarch64-linux-gnu"
ARM_BIN = os.path.join(ROOT, "target", "aarch64-debian", "aarch64-unknown-linux-gnu", "release", "vitedge")
HOST_BIN = os.path.join(ROOT, "target", "release", "vitedge")
MCA_ITER = 100
# Blocks are priced with llvm-mca until they cover this fraction of the executed instructions;
# the rest get the instruction-weighted mean cycles per instruction of the priced ones.
COVERAGE = 0.999
PRECISIONS = ("f32", "f16", "int8")
# Bump when the llvm-mca input or its reading changes (the cache is keyed by it).
MCA_FORMAT = "mca-2"

CATEGORIES = ["int8 GEMM", "f32 GEMM", "f16 GEMM", "attention", "LayerNorm", "softmax", "GELU",
              "quantize", "packing", "other", "pool/sync"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_boards():
    with open(os.path.join(HERE, "boards.json")) as f:
        b = json.load(f)
    b.pop("_doc", None)
    return b


# ---------------------------------------------------------------------------------------------
# Counting runs


def plugin_path():
    return os.path.join(QEMU_DIR, "libtbcount.so")


def qemu_path(arch):
    return os.path.join(QEMU_DIR, "qemu-aarch64" if arch == "aarch64" else "qemu-x86_64")


# Bump when the plugin's counts change meaning (cached counting runs are keyed by it).
PLUGIN_FORMAT = "tbcount-3"
PLAN = None  # when a list: count_run only records what it would run (see run_planned)


def run_planned(jobs):
    """Runs the recorded counting runs, `jobs` at a time (each is one single-threaded qemu process
    per guest thread)."""
    import concurrent.futures
    global PLAN
    todo, PLAN = PLAN, None
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for f in [ex.submit(count_run, *t) for t in todo]:
            f.result()


def count_run(arch, cpu, argv, qemu_args=(), env=None, tag=""):
    """Runs argv under the plugin qemu; returns the parsed counts file (cached by command)."""
    prog = argv[0]
    stamp = ""
    if os.path.exists(prog):
        st = os.stat(prog)
        stamp = f"{st.st_size}:{int(st.st_mtime)}"
    key = json.dumps([arch, cpu, list(argv), list(qemu_args), env or {}, stamp, PLUGIN_FORMAT])
    h = hashlib.sha256(key.encode()).hexdigest()[:20]
    os.makedirs(os.path.join(WORK, "counts"), exist_ok=True)
    out = os.path.join(WORK, "counts", f"{tag}{h}.tsv")
    if PLAN is not None:
        if not os.path.exists(out):
            PLAN.append((arch, cpu, list(argv), list(qemu_args), env, tag))
        return None
    if not os.path.exists(out):
        cmd = [qemu_path(arch), "-cpu", cpu, *qemu_args]
        for k, v in (env or {}).items():
            cmd += ["-E", f"{k}={v}"]
        cmd += ["-plugin", f"{plugin_path()},out={out}.tmp", *argv]
        log(f"  counting: {' '.join(shlex.quote(c) for c in cmd[3:] if not c.startswith(plugin_path()))}")
        t0 = time.time()
        with open(out + ".stdout", "w") as so, open(out + ".stderr", "w") as se:
            p = subprocess.Popen(cmd, stdout=so, stderr=se)
            _, status, ru = os.wait4(p.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0:
            with open(out + ".stderr") as f:
                raise SystemExit(f"guest command failed ({rc}): {' '.join(cmd)}\n{f.read()[-2000:]}")
        os.replace(out + ".tmp", out)
        # Counting speed: guest instructions per CPU second of the qemu process (all its threads).
        insns = sum(len(rec_insns.split(",")) * sum(c.values()) for (_, rec_insns), c in
                    ((k, v["counts"]) for k, v in parse_counts(out)["blocks"].items()))
        cpu = ru.ru_utime + ru.ru_stime
        with open(out + ".meta", "w") as f:
            json.dump({"cmd": cmd, "wall_s": time.time() - t0, "cpu_s": cpu, "guest_insns": insns}, f)
        log(f"    {time.time() - t0:.0f} s wall, {cpu:.0f} s CPU, {insns / 1e9:.2f} G guest instructions ({insns / max(cpu, 1e-9) / 1e6:.0f} M/s per CPU second)")
    return parse_counts(out)


def parse_counts(path):
    """-> dict(target, vcpus, maps=[(start,end,off,path)], ctx={idx: (entry, sym, calls)}, blocks={key: rec})"""
    res = {"maps": [], "ctx": {0: (0, "-", [])}, "blocks": {}}
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if p[0] == "tbcount":
                res["target"], res["vcpus"] = p[2], int(p[3])
            elif p[0] == "map":
                res["maps"].append((int(p[1], 16), int(p[2], 16), int(p[3], 16), p[4]))
            elif p[0] == "ctx":
                res["ctx"][int(p[1])] = (int(p[2], 16), p[3], [int(x) for x in p[4].split(",")])
            elif p[0] == "tb":
                vaddr, insns = int(p[1], 16), p[3]
                counts = {}
                for v, per in enumerate(p[6].split(";")):
                    for c, n in enumerate(per.split(",")):
                        if n != "0":
                            counts[(v, c)] = int(n)
                res["blocks"][(vaddr, insns)] = {"sym0": p[4], "sym1": p[5], "counts": counts}
    return res


def per_inference(run_n, run_3n, n):
    """Per-inference block counts: (3N run - N run) / 2N, keyed by (vcpu, task entry address)."""
    def by_entry(run):
        ent = {c: e for c, (e, _, _) in run["ctx"].items()}
        out = {}
        for key, rec in run["blocks"].items():
            d = collections.Counter()
            for (v, c), k in rec["counts"].items():
                d[(v, ent.get(c, -1))] += k
            out[key] = (rec, d)
        return out
    a, b = by_entry(run_n), by_entry(run_3n)
    blocks = {}
    for key in set(a) | set(b):
        rec = (b.get(key) or a.get(key))[0]
        ca = a[key][1] if key in a else collections.Counter()
        cb = b[key][1] if key in b else collections.Counter()
        d = {k: (cb.get(k, 0) - ca.get(k, 0)) / (2 * n) for k in set(ca) | set(cb)}
        d = {k: v for k, v in d.items() if v != 0}
        if d:
            blocks[key] = {"vaddr": key[0], "insns": key[1].split(","), "sym0": rec["sym0"], "sym1": rec["sym1"], "counts": d}
    ctx_syms = {e: s for (e, s, _) in list(run_3n["ctx"].values()) + list(run_n["ctx"].values())}
    calls = collections.defaultdict(float)
    for run, sign in ((run_3n, 1), (run_n, -1)):
        for c, (e, _, cl) in run["ctx"].items():
            for v, k in enumerate(cl):
                calls[(v, e)] += sign * k / (2 * n)
    return {"blocks": blocks, "ctx_syms": ctx_syms, "task_calls": dict(calls), "maps": run_3n["maps"],
            "target": run_3n["target"], "vcpus": max(run_n["vcpus"], run_3n["vcpus"])}


# ---------------------------------------------------------------------------------------------
# Pricing with llvm-mca


def _adjust(base, amount):
    if re.match(r"^(x\d+|xzr)$", amount):
        return f"add\t{base}, {base}, {amount}"
    v = amount.lstrip("#")
    neg = v.startswith("-")
    return f"{'sub' if neg else 'add'}\t{base}, {base}, #{v.lstrip('-')}"


def split_store_writeback(s):
    """A store with base writeback (`str q0, [x9], #16`, `stp ..., [x9, #32]!`, `st1 {..}, [x9], x10`)
    as a plain store plus an add of the base. llvm-mca treats the store as one unit whose base
    update waits for the stored data, which chains every iteration of a loop that stores what it
    computes (a 4-wide exp loop came out 4.7x slower than its resources allow); the cores update the
    base in a separate uop that does not wait for the data."""
    m = re.match(r"^(st[a-z0-9]*)\s+(.*), \[(x\d+|sp)\], (#-?\w+|x\d+)$", s)
    if m:
        return [f"{m.group(1)}\t{m.group(2)}, [{m.group(3)}]", _adjust(m.group(3), m.group(4))]
    m = re.match(r"^(st[a-z0-9]*)\s+(.*), \[(x\d+|sp), (#-?\w+)\]!$", s)
    if m:
        return [_adjust(m.group(3), m.group(4)), f"{m.group(1)}\t{m.group(2)}, [{m.group(3)}]"]
    return [s]


class Pricer:
    """Cycles per execution of a block, by llvm-mca, cached on disk by (mcpu, block bytes)."""

    def __init__(self):
        self.path = os.path.join(WORK, "mca-cache.json")
        try:
            with open(self.path) as f:
                self.cache = json.load(f)
        except (OSError, ValueError):
            self.cache = {}
        self.dirty = False

    @staticmethod
    def key(mcpu, insns):
        return f"{MCA_FORMAT}:{mcpu}:{''.join(insns)}"

    def save(self):
        if self.dirty:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.cache, f)
            os.replace(tmp, self.path)
            self.dirty = False

    @staticmethod
    def disassemble(arch, blocks):
        """[insn hex lists] -> [asm line lists] (one llvm-mc call; marker instructions between blocks)."""
        if arch == "aarch64":
            marker_hex, marker_asm = "bf2a03d5", "hint #85"
            cmd = [f"{LLVM}/llvm-mc", "--disassemble", "-triple=aarch64", f"-mattr={AARCH64_MATTR}"]
        else:
            marker_hex, marker_asm = "660f1f843f34120000", "nopw 4660(%rdi,%rdi)"
            cmd = [f"{LLVM}/llvm-mc", "--disassemble", "-triple=x86_64"]
        lines = []
        for insns in blocks:
            for h in insns + [marker_hex]:
                lines.append(" ".join("0x" + h[i:i + 2] for i in range(0, len(h), 2)))
        r = subprocess.run(cmd, input="\n".join(lines) + "\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, cur = [], []
        for ln in r.stdout.splitlines():
            s = ln.strip()
            if not s or s.startswith(".text"):
                continue
            if re.sub(r"\s+", " ", s) == marker_asm:
                out.append(cur)
                cur = []
            else:
                cur.append(s)
        if len(out) == len(blocks):
            return out
        # An instruction llvm-mc cannot decode makes it resynchronize byte by byte, which can swallow
        # a marker: split the batch until the offending block is alone, and take what decodes of it.
        if len(blocks) == 1:
            r = subprocess.run(cmd, input="\n".join(" ".join("0x" + h[i:i + 2] for i in range(0, len(h), 2)) for h in blocks[0]) + "\n",
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            got = [ln.strip() for ln in r.stdout.splitlines() if ln.strip() and not ln.strip().startswith(".text")]
            log(f"    llvm-mc: a block decodes to {len(got)} of its {len(blocks[0])} instructions: {' '.join(blocks[0])[:200]}")
            return [got]
        half = len(blocks) // 2
        return Pricer.disassemble(arch, blocks[:half]) + Pricer.disassemble(arch, blocks[half:])

    @staticmethod
    def mca_input(arch, asm):
        """Makes a block's disassembly something llvm-mca models as a loop body: calls become plain
        jumps (llvm-mca gives a call a 100-cycle latency; the callee is priced as its own blocks)."""
        fixed = []
        for s in asm:
            if arch == "aarch64":
                s = re.sub(r"^bl\s", "b\t", s)
                s = re.sub(r"^blr\s", "br\t", s)
                fixed += split_store_writeback(s)
            else:
                s = re.sub(r"^call[qw]?\s", "jmp\t", s)
                fixed.append(s)
        return fixed

    def price(self, arch, mcpu, blocks):
        """blocks: {key: insn hex list} -> {key: cycles per execution}."""
        todo = [(k, insns) for k, insns in blocks.items() if self.key(mcpu, insns) not in self.cache]
        for i in range(0, len(todo), 400):
            chunk = todo[i:i + 400]
            asm = self.disassemble(arch, [insns for _, insns in chunk])
            src = []
            for j, a in enumerate(asm):
                src.append(f"# LLVM-MCA-BEGIN b{j}")
                src += ["\t" + s for s in self.mca_input(arch, a)] or ["\tnop"]
                src.append("# LLVM-MCA-END")
            triple = "aarch64" if arch == "aarch64" else "x86_64"
            cmd = [f"{LLVM}/llvm-mca", f"-mtriple={triple}", f"-mcpu={mcpu}", f"-iterations={MCA_ITER}",
                   "-skip-unsupported-instructions=any", "-all-views=false", "-summary-view"]
            if arch == "aarch64":
                cmd.append(f"-mattr={AARCH64_MATTR}")
            r = subprocess.run(cmd, input="\n".join(src) + "\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            got = {}
            region = None
            for ln in r.stdout.splitlines():
                m = re.match(r"\[\d+\] Code Region - b(\d+)", ln)
                if m:
                    region = int(m.group(1))
                m = re.match(r"Total Cycles:\s+(\d+)", ln)
                if m and region is not None:
                    got[region] = int(m.group(1)) / MCA_ITER
            if len(chunk) == 1 and not got:
                m = re.search(r"Total Cycles:\s+(\d+)", r.stdout)
                if m:
                    got[0] = int(m.group(1)) / MCA_ITER
            for j, (k, insns) in enumerate(chunk):
                if j not in got:
                    # A block llvm-mca could not take at all: one cycle per instruction, flagged.
                    log(f"    llvm-mca: no result for a {len(insns)}-instruction block ({mcpu}); 1 cycle/insn assumed")
                    got[j] = float(len(insns))
                self.cache[self.key(mcpu, insns)] = got[j]
                self.dirty = True
        self.save()
        return {k: self.cache[self.key(mcpu, insns)] for k, insns in blocks.items()}


# ---------------------------------------------------------------------------------------------
# Symbols and kernel categories

_LEGACY = [("$LT$", "<"), ("$GT$", ">"), ("$RF$", "&"), ("$BP$", "*"), ("$C$", ","), ("$SP$", "@"),
           ("$u20$", " "), ("$u27$", "'"), ("$u5b$", "["), ("$u5d$", "]"), ("$u7b$", "{"), ("$u7d$", "}"),
           ("$u7e$", "~"), ("$u3b$", ";"), ("$u2b$", "+"), ("$u22$", '"'), ("..", "::")]


def clean_name(name):
    """Demangled Rust name without the legacy-mangling escapes and the trailing hash."""
    for a, b in _LEGACY:
        name = name.replace(a, b)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    name = re.sub(r"\[[0-9a-f]{5,}\]", "", name)  # v0 crate disambiguators
    return name.replace("::_<", "::<").replace("::_{", "::{")


def demangle(names):
    names = list(names)
    if not names:
        return {}
    r = subprocess.run([f"{LLVM}/llvm-cxxfilt"], input="\n".join(names) + "\n", stdout=subprocess.PIPE, text=True)
    out = r.stdout.splitlines()
    return {n: clean_name(d) for n, d in zip(names, out)}


class Symbols:
    """Maps guest addresses of one binary to (inlined) function frames via llvm-symbolizer, and
    addresses in shared libraries to their nearest dynamic symbol."""

    def __init__(self, binary, blocks, maps):
        self.binary = binary
        self.bias = None
        self.frames = {}
        self.maps = maps
        self.libsyms = {}
        self.range = None
        if binary and os.path.exists(binary):
            nm = subprocess.run([f"{LLVM}/llvm-nm", "--defined-only", "--no-demangle", binary], stdout=subprocess.PIPE, text=True).stdout
            addr = {}
            for ln in nm.splitlines():
                p = ln.split()
                if len(p) == 3 and p[1] in "tTwW":
                    addr[p[2]] = int(p[0], 16)
            # Function-entry blocks start at bias + symbol address: the most common difference.
            diffs = collections.Counter(b["vaddr"] - addr[b["sym0"]] for b in blocks if b["sym0"] in addr)
            if diffs:
                self.bias = diffs.most_common(1)[0][0]
            # The binary's own address range (blocks elsewhere are in shared libraries).
            real = os.path.realpath(binary)
            own = [(s, e) for s, e, _, p in maps if os.path.realpath(p) == real]
            if own:
                self.range = (min(s for s, _ in own), max(e for _, e in own))
            elif self.bias is not None and addr:
                self.range = (self.bias, self.bias + max(addr.values()) + 4096)

    def owns(self, vaddr):
        return self.range is not None and self.range[0] <= vaddr < self.range[1]

    def symbolize(self, vaddrs):
        if self.bias is None:
            return
        todo = sorted(set(v for v in vaddrs if v not in self.frames and self.owns(v)))
        if not todo:
            return
        r = subprocess.run([f"{LLVM}/llvm-symbolizer", f"--obj={self.binary}", "--inlining", "--output-style=JSON", "--functions=linkage"],
                           input="\n".join(hex(v - self.bias) for v in todo) + "\n", stdout=subprocess.PIPE, text=True)
        raw = []
        for v, ln in zip(todo, r.stdout.splitlines()):
            try:
                j = json.loads(ln)
            except ValueError:
                j = {}
            fr = [(s.get("FunctionName", ""), s.get("FileName", "")) for s in j.get("Symbol", []) if s.get("FunctionName")]
            raw.append((v, fr))
        names = demangle({f for _, fr in raw for f, _ in fr})
        for v, fr in raw:
            # (clean name, file, raw name: keeps generic instances of one function apart)
            self.frames[v] = [(names.get(f, f), file, f) for f, file in fr]

    def lib_symbol(self, vaddr):
        """(library basename, nearest dynamic symbol) for an address outside the main binary."""
        for start, end, off, path in self.maps:
            if start <= vaddr < end:
                if path not in self.libsyms:
                    out = subprocess.run([f"{LLVM}/llvm-nm", "-D", "--defined-only", "--no-demangle", path], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True).stdout
                    syms = sorted((int(p[0], 16), p[2]) for p in (ln.split() for ln in out.splitlines()) if len(p) == 3 and p[1] in "tTiWw")
                    self.libsyms[path] = syms
                # File offset = ELF address for the shared objects we meet (p_vaddr == p_offset).
                a = vaddr - start + off
                best = None
                for sa, sn in self.libsyms[path]:
                    if sa <= a:
                        best = sn
                    else:
                        break
                return os.path.basename(path), best or "?"
        return None, None


RULES = [
    ("pool/sync", r"engine::pool|std::sync::|std::thread::|std::sys::.*(futex|thread|time|sync|locks)|std::time::|spin_loop|parking|Condvar|Mutex"),
    ("GELU", r"gelu|\berf"),
    ("softmax", r"softmax|\bexp\d*\b|::exp\d|expf"),
    ("LayerNorm", r"layer_norm"),
    ("quantize", r"quantize_u8|u8_params"),
    ("packing", r"kernels::pack::|panel16(x\d)?_from|convert_rows|pack_rows|pack_cols|rows_to_bf16"),
    ("int8 GEMM", r"gemm_u8i8|tile_u8i8|dotprod::tile|i8mm::tile|GemmU8I8|usmmla|sdot_lane|unzip_rows|dot_u8i8|finish_u8i8|PanelParams"),
    ("bf16 GEMM", r"GemmBf16|gemm_bf16|bf16::.*tile|amx"),
    ("float GEMM", r"gemm_panel|panel_rows|float_rows|tile_f32|GemmF32|GemmF16|gemm_f32|gemm_f16|scalar::.*gemm"),
]
F16_EVIDENCE = r"\bf16\b|half::|cvt_(low|high)_f16|F16|f16c|_mm256_cvtph_ps|vcvt"
LIBC_RULES = [("pool/sync", r"pthread|futex|clock_gettime|sched_yield|nanosleep|syscall|__lll|gettime"),
              ("softmax", r"^exp"), ("GELU", r"^erf"), ("other", r".")]


def categorize(blocks, syms, ctx_names):
    """Adds 'cat' and 'func' to every block (see RULES; attention GEMMs are put under 'attention')."""
    syms.symbolize(b["vaddr"] for b in blocks.values())
    # Evidence per function instance (outermost frame) that it is an f16-weight GEMM.
    f16_funcs = set()
    for b in blocks.values():
        fr = syms.frames.get(b["vaddr"], [])
        # (The outermost frame names the trait when the GEMM is a trait method: `<… as GemmF16>::gemm`.)
        if fr and re.search(RULES[-1][1], fr[-1][0]) and (re.search(r"GemmF16", fr[-1][0]) or any(re.search(F16_EVIDENCE, f) for f, *_ in fr[:-1])):
            f16_funcs.add(fr[-1][2])
    for b in blocks.values():
        fr = syms.frames.get(b["vaddr"], [])
        cat, func = None, None
        inst = None
        if fr:
            func, inst = fr[-1][0], fr[-1][2]
            for f, *_ in fr:  # innermost first
                for c, rx in RULES:
                    if re.search(rx, f):
                        cat = c
                        break
                if cat:
                    break
            cat = cat or "other"
        elif b["sym0"] != "-" and syms.owns(b["vaddr"]):
            func = demangle([b["sym0"]]).get(b["sym0"], b["sym0"])
            cat = next((c for c, rx in RULES if re.search(rx, func)), "other")
        else:
            lib, s = syms.lib_symbol(b["vaddr"])
            func = f"{lib}:{s}" if lib else f"?{b['vaddr']:#x}"
            cat = next(c for c, rx in LIBC_RULES if re.search(rx, s or ""))
        if cat == "float GEMM":
            cat = "f16 GEMM" if inst in f16_funcs else "f32 GEMM"
        b["cat"], b["func"] = cat, func
    # Context (which pool task the block ran in): GEMMs of attention tasks are attention.
    for b in blocks.values():
        b["attn_ctx"] = {k for k in b["counts"] if re.search(r"attention", ctx_names.get(k[1], ""))}


def block_cat(b, key):
    if b["cat"] in ("f32 GEMM", "f16 GEMM", "bf16 GEMM") and key in b["attn_ctx"]:
        return "attention"
    if b["cat"] == "bf16 GEMM":
        return "attention"
    return b["cat"]


# ---------------------------------------------------------------------------------------------
# Memory term


def layer_shapes(blob):
    """Linear layers of a blob: [(name, m, k, n, weight bytes)] from `vitedge inspect --json`."""
    r = subprocess.run([HOST_BIN, "inspect", "--json", blob], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"vitedge inspect failed on {blob}: {r.stderr}")
    h = json.loads(r.stdout)
    c = h["config"]
    grid = c["image_size"] // c["patch_size"]
    prefix = 1 + (1 if c.get("distilled") else 0)
    t = grid * grid + prefix
    tensors = {x["name"]: x for x in h["tensors"]}
    layers = []
    for name, x in tensors.items():
        if not name.endswith(".weight") or len(x["shape"]) < 2:
            continue
        base = name[:-len(".weight")]
        n, k = x["shape"][0], 1
        for s in x["shape"][1:]:
            k *= s
        m = grid * grid if "patch_embed" in base else (1 if base.startswith("head") else t)
        wbytes = sum(tensors[nm]["length"] for nm in tensors if nm.startswith(base + "."))
        layers.append((base, m, k, n, wbytes))
    return layers, t, c


def memory_term(layers, board, linear_cycles, threads=1):
    """Per linear layer: DRAM bytes = its weights (never cached across frames: every blob is larger
    than the boards' last-level cache) + its input and output activations when the layer's working
    set (weights + input + output) exceeds the last-level cache. Combined with compute per layer as
    max(compute, bytes / bandwidth): weight panels are read sequentially and the hardware
    prefetcher overlaps them with the arithmetic. Returns (exposed ms, DRAM bytes)."""
    llc = (board["l3_kib"] or board["l2_kib"]) * 1024
    bw = (board["dram_gbs_1core"] if threads == 1 else board["dram_gbs_all"]) * 1e9
    macs = sum(m * k * n for _, m, k, n, _ in layers) or 1
    clock = board["clock_ghz"] * 1e9
    # A blob whose weights fit in the last-level cache (only on the x86 host: 32 MiB L3) keeps them
    # there from one frame to the next.
    weights_stream = sum(wb for *_, wb in layers) > llc
    exposed, total = 0.0, 0
    for _, m, k, n, wb in layers:
        act = 4 * m * (k + n)
        dram = (wb if weights_stream else 0) + (act if wb + act > llc else 0)
        total += dram
        comp_s = linear_cycles * (m * k * n / macs) / clock
        exposed += max(0.0, dram / bw - comp_s)
    return exposed * 1e3, total


# ---------------------------------------------------------------------------------------------
# One engine's estimate


def analyze(pi, arch, mcpus, binary, pricer):
    """Per-inference block list with categories and cycles per mcpu."""
    blocks = pi["blocks"]
    syms = Symbols(binary, list(blocks.values()), pi["maps"])
    ctx_names = {}
    for e, s in pi["ctx_syms"].items():
        ctx_names[e] = demangle([s]).get(s, s) if s != "-" else "-"
    categorize(blocks, syms, ctx_names)
    # Price the hottest blocks that cover COVERAGE of the instructions.
    dyn = sorted(blocks.items(), key=lambda kv: -abs(sum(kv[1]["counts"].values())) * len(kv[1]["insns"]))
    total_insn = sum(abs(sum(b["counts"].values())) * len(b["insns"]) for _, b in dyn) or 1
    acc, hot = 0.0, {}
    for k, b in dyn:
        hot[k] = b["insns"]
        acc += abs(sum(b["counts"].values())) * len(b["insns"])
        if acc >= COVERAGE * total_insn:
            break
    cyc = {}
    for mcpu in mcpus:
        priced = pricer.price(arch, mcpu, hot)
        pc = sum(abs(sum(blocks[k]["counts"].values())) * priced[k] for k in hot)
        pi_ = sum(abs(sum(blocks[k]["counts"].values())) * len(blocks[k]["insns"]) for k in hot) or 1
        cpi = pc / pi_
        cyc[mcpu] = {k: priced.get(k, cpi * len(b["insns"])) for k, b in blocks.items()}
    return {"blocks": blocks, "cycles": cyc, "ctx_names": ctx_names, "bias": syms.bias,
            "coverage": acc / total_insn, "hot_blocks": len(hot), "insns": total_insn}


def summarize(an, mcpu, clock_ghz):
    """Totals per category (cycles, instructions) and function; threads: serial and parallel work."""
    blocks, cyc = an["blocks"], an["cycles"][mcpu]
    cat_c, cat_i = collections.Counter(), collections.Counter()
    func_c = collections.Counter()
    per = collections.Counter()  # (vcpu, ctx entry) -> work cycles (pool/sync excluded)
    spin = collections.Counter()
    for key, b in blocks.items():
        for k, n in b["counts"].items():
            c = block_cat(b, k)
            cat_c[c] += n * cyc[key]
            cat_i[c] += n * len(b["insns"])
            if c == "pool/sync":
                spin[k[0]] += n * cyc[key]
                continue
            func_c[(c, b["func"])] += n * cyc[key]
            per[k] += n * cyc[key]
    work = sum(v for c, v in cat_c.items() if c != "pool/sync")
    ms = work / (clock_ghz * 1e6)
    serial = sum(v for (vc, e), v in per.items() if vc == 0 and e == 0)
    ctxs = sorted({e for (_, e) in per if e != 0})
    par_max = sum(max(v for (vc, e), v in per.items() if e == ctx) for ctx in ctxs)
    par_sum = sum(v for (vc, e), v in per.items() if e != 0)
    return {
        "ms_compute": ms, "cycles": work, "instructions": sum(v for c, v in cat_i.items() if c != "pool/sync"),
        "categories": {c: {"ms": cat_c[c] / (clock_ghz * 1e6), "instructions": cat_i[c]} for c in CATEGORIES if c in cat_c or c in cat_i},
        "top_functions": [{"category": c, "function": f, "ms": v / (clock_ghz * 1e6)} for (c, f), v in func_c.most_common(25)],
        "serial_cycles": serial, "parallel_cycles": par_sum, "parallel_max_cycles": par_max,
        "spin_cycles_per_vcpu": {str(v): s for v, s in sorted(spin.items())},
        "per_vcpu_ctx_cycles": {f"{v}:{hex(e)}": c for (v, e), c in sorted(per.items())},
    }


# ---------------------------------------------------------------------------------------------
# Jobs


# qemu 7.2's cortex-a57 and cortex-a72 have the same ID registers apart from MIDR (both Armv8.0 +
# CRC, no dotprod / fp16), so programs take the same paths on both: one counting run serves both.
SAME_COUNTS = {"cortex-a57": "cortex-a72"}


def count_cpu(cpu):
    return SAME_COUNTS.get(cpu, cpu)


def vitedge_argv(binary, blob, iters, threads, kernels):
    return [binary, "bench", "--model", blob, "--iters", str(iters), "--threads", str(threads), "--kernels", kernels]


def counts_per_inference(arch, cpu, make_argv, n, qemu_args, env, tag):
    a = count_run(arch, cpu, make_argv(n), qemu_args, env, tag)
    b = count_run(arch, cpu, make_argv(3 * n), qemu_args, env, tag)
    if a is None or b is None:
        return None
    return per_inference(a, b, n)


def with_counting(fn, args):
    """Runs fn(args) once in planning mode to collect the counting runs it needs, runs them
    args.jobs at a time, then runs fn(args) for real."""
    global PLAN
    PLAN = []
    fn(args, planning=True)
    if PLAN:
        log(f"{len(PLAN)} counting runs to do, {args.jobs} at a time")
        run_planned(args.jobs)
    PLAN = None
    fn(args)


def arm_qemu_args():
    return ["-L", SYSROOT, "-E", f"LD_LIBRARY_PATH={SYSROOT}/lib"]


def blobs_dir():
    return os.path.join(WORK, "blobs")


MODEL_SET = "vit_tiny"


def blob_path(prec):
    """target/arm-model/blobs/<model set>_<precision>.vitb (prepare.sh makes the vit_tiny set)."""
    return os.path.join(blobs_dir(), f"{MODEL_SET}_{prec}.vitb")


def estimate(args, planning=False):
    boards = load_boards()
    sel = [b for b in args.boards.split(",") if b]
    for b in sel:
        if b not in boards:
            raise SystemExit(f"unknown board {b}; known: {', '.join(k for k in boards if not k.startswith('host'))}")
    precs = [p for p in args.precisions.split(",") if p]
    engines = [e for e in args.engines.split(",") if e]
    peers = []
    for spec in args.peer_spec or []:
        with open(spec) as f:
            s = json.load(f)
        for s1 in s if isinstance(s, list) else [s]:
            peers.append(s1)
    pricer = Pricer()
    results = {"label": args.label, "date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "arm_bin": ARM_BIN, "iters_n": args.iters,
               "model_set": MODEL_SET, "boards": {b: boards[b] for b in sel}, "rows": [], "breakdown": {}, "threads4": {}}
    for prec in precs:
        unknown = [e for e in engines if e not in ("vitedge", "vitedge-scalar") and not any(p["engine"] == e for p in peers)]
        if unknown:
            raise SystemExit(f"no engine spec for {', '.join(unknown)}: give --peer-spec FILE (JSON: engine, precision, argv, qemu_args, env)")
        for eng in engines:
            cpus = collections.OrderedDict()
            for b in sel:
                cpus.setdefault(count_cpu(boards[b]["qemu_cpu"]), []).append(b)
            for cpu, bs in cpus.items():
                mcpus = sorted({boards[b]["mca_cpu"] for b in bs})
                log(f"{eng} {prec} on -cpu {cpu} ({', '.join(bs)})")
                if eng in ("vitedge", "vitedge-scalar"):
                    kern = "scalar" if eng == "vitedge-scalar" else "auto"
                    mk = lambda it, th=1: vitedge_argv(ARM_BIN, blob_path(prec), it, th, kern)
                    pi = counts_per_inference("aarch64", cpu, mk, args.iters, arm_qemu_args(), None, f"{eng}-{prec}-{cpu}-")
                    pi4 = None
                    if eng == "vitedge" and args.threads4:
                        pi4 = counts_per_inference("aarch64", cpu, lambda it: mk(it, 4), args.iters, arm_qemu_args(), None, f"{eng}-{prec}-{cpu}-t4-")
                    if planning:
                        continue
                    an = analyze(pi, "aarch64", mcpus, ARM_BIN, pricer)
                    an4 = analyze(pi4, "aarch64", mcpus, ARM_BIN, pricer) if pi4 else None
                    layers = layer_shapes(blob_path(prec))[0]
                else:
                    spec = next((p for p in peers if p["engine"] == eng and p["precision"] == prec), None)
                    if spec is None:
                        continue
                    mk = lambda it, s=spec: [a.replace("{iters}", str(it)) for a in s["argv"]]
                    pi = counts_per_inference("aarch64", cpu, mk, args.iters, spec.get("qemu_args", arm_qemu_args()), spec.get("env"), f"{eng}-{prec}-{cpu}-")
                    if planning:
                        continue
                    an, an4 = analyze(pi, "aarch64", mcpus, None, pricer), None
                    layers = layer_shapes(blob_path(prec))[0] if os.path.exists(blob_path(prec)) else []
                for b in bs:
                    bd = boards[b]
                    s = summarize(an, bd["mca_cpu"], bd["clock_ghz"])
                    lin = sum(s["categories"].get(c, {}).get("ms", 0) for c in ("int8 GEMM", "f32 GEMM", "f16 GEMM", "quantize")) if eng.startswith("vitedge") else s["ms_compute"]
                    lin_cycles = lin * bd["clock_ghz"] * 1e6
                    mem_ms, dram = memory_term(layers, bd, lin_cycles) if layers else (0.0, 0)
                    row = {"board": b, "precision": prec, "engine": eng, "ms_1t": s["ms_compute"] + mem_ms, "ms_compute": s["ms_compute"],
                           "ms_memory_exposed": mem_ms, "dram_mb": dram / 1e6, "instructions_m": s["instructions"] / 1e6,
                           "coverage": an["coverage"], "hot_blocks": an["hot_blocks"]}
                    if an4 is not None:
                        s4 = summarize(an4, bd["mca_cpu"], bd["clock_ghz"])
                        work4 = s4["serial_cycles"] + s4["parallel_cycles"]
                        t4 = (s4["serial_cycles"] + s4["parallel_max_cycles"]) / (bd["clock_ghz"] * 1e6)
                        f = s4["parallel_cycles"] / work4 if work4 else 0.0
                        lin4 = lin_cycles * (t4 / s["ms_compute"]) if s["ms_compute"] else 0
                        mem4, _ = memory_term(layers, bd, lin4, threads=4)
                        t4_bal = (s4["serial_cycles"] + s4["parallel_cycles"] / 4) / (bd["clock_ghz"] * 1e6)
                        row.update({"ms_4t": t4 + mem4, "ms_4t_balanced": t4_bal + mem4, "parallel_fraction": f, "ms_4t_amdahl": (s["ms_compute"] * ((1 - f) + f / 4)) + mem4,
                                    "work_4t_vs_1t": work4 / s["cycles"] if s["cycles"] else None})
                        results["threads4"][f"{b}/{prec}"] = {k: s4[k] for k in ("serial_cycles", "parallel_cycles", "parallel_max_cycles", "spin_cycles_per_vcpu", "per_vcpu_ctx_cycles")}
                        results["threads4"][f"{b}/{prec}"]["task_calls"] = {f"{v}:{hex(e)}:{an4['ctx_names'].get(e, '?')}": c for (v, e), c in sorted(pi4["task_calls"].items()) if c}
                    results["rows"].append(row)
                    if eng.startswith("vitedge"):
                        results["breakdown"][f"{b}/{prec}/{eng}"] = {"categories": s["categories"], "top_functions": s["top_functions"]}
    if planning:
        return
    os.makedirs(WORK, exist_ok=True)
    out = os.path.join(WORK, f"results-{args.label}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print_table(results)
    log(f"results: {out}")


def print_table(res):
    rows = res["rows"]
    print(f"# {res.get('model_set', 'vit_tiny')}: estimated ms per inference ({res['label']}, {res['date']}, commit {res['commit']}; 1 thread unless noted)")
    print(f"{'board':<6} {'precision':<9} {'engine':<15} {'ms 1T':>8} {'compute':>8} {'memory':>7} {'Minsn':>8} {'ms 4T':>8} {'4T bal.':>8} {'par.frac':>8}")
    for r in rows:
        t4 = f"{r['ms_4t']:8.1f} {r['ms_4t_balanced']:8.1f}" if "ms_4t" in r else f"{'':>8} {'':>8}"
        pf = f"{r['parallel_fraction']:8.3f}" if "parallel_fraction" in r else f"{'':>8}"
        print(f"{r['board']:<6} {r['precision']:<9} {r['engine']:<15} {r['ms_1t']:8.1f} {r['ms_compute']:8.1f} {r['ms_memory_exposed']:7.2f} {r['instructions_m']:8.0f} {t4} {pf}")
    print("(ms 4T: serial + per task kind the busiest thread's work, as tasks fell under qemu; 4T bal.: serial +"
          " parallel work / 4; memory: DRAM time not hidden behind compute; Minsn: executed instructions, millions)")
    for key, bd in res["breakdown"].items():
        print(f"\n## {key}: per kernel, 1 thread (ms; pool/sync is excluded from the total)")
        tot = sum(v["ms"] for c, v in bd["categories"].items() if c != "pool/sync") or 1
        for c, v in bd["categories"].items():
            print(f"  {c:<12} {v['ms']:8.2f} ms {100 * v['ms'] / tot:5.1f} %  {v['instructions'] / 1e6:8.1f} M insn")


def print_diff(paths):
    """Before / after of two results files: per board × precision × engine the 1-thread total, and
    for vitedge the per-kernel breakdown (ms), side by side."""
    before, after = (json.load(open(p)) for p in paths)
    print(f"# before: {before['label']} (commit {before['commit']}), after: {after['label']} (commit {after['commit']}); ms, 1 thread")
    rows_b = {(r["board"], r["precision"], r["engine"]): r for r in before["rows"]}
    for r in after["rows"]:
        key = (r["board"], r["precision"], r["engine"])
        if key in rows_b:
            b = rows_b[key]["ms_1t"]
            print(f"{'/'.join(key):<28} {b:8.1f} -> {r['ms_1t']:8.1f}  ({100 * (r['ms_1t'] / b - 1):+.1f} %)")
    for key, bd in after["breakdown"].items():
        if key not in before["breakdown"]:
            continue
        cb, ca = before["breakdown"][key]["categories"], bd["categories"]
        print(f"\n## {key}: per kernel (ms)")
        for c in CATEGORIES:
            if c in cb or c in ca:
                x, y = cb.get(c, {}).get("ms", 0.0), ca.get(c, {}).get("ms", 0.0)
                print(f"  {c:<12} {x:8.2f} -> {y:8.2f}  ({y - x:+.2f})")


def git_commit():
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE, text=True)
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"], stdout=subprocess.PIPE, text=True).stdout.strip()
    return r.stdout.strip() + ("+dirty" if dirty else "")


# ---------------------------------------------------------------------------------------------
# x86 validation and the host clock


def host_clock_ghz():
    """This machine's effective clock: perf stat cycles / task-clock over a dependent add chain
    when perf can count cycles, else the chain's own timing (1 cycle per dependent add) in thread CPU
    time, so time slices lost to other processes do not count."""
    src = r"""
#include <stdio.h>
#include <stdint.h>
#include <time.h>
int main(void){ struct timespec a,b; uint64_t x=1, n=400000000ULL;
 clock_gettime(CLOCK_THREAD_CPUTIME_ID,&a);
 for(uint64_t i=0;i<n;i++){ __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x)); }
 clock_gettime(CLOCK_THREAD_CPUTIME_ID,&b);
 double s=(b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)*1e-9; printf("%f\n", 4.0*n/s/1e9); return (int)(x&0);}
"""
    d = tempfile.mkdtemp()
    c, exe = os.path.join(d, "chain.c"), os.path.join(d, "chain")
    with open(c, "w") as f:
        f.write(src)
    subprocess.run(["gcc", "-O2", "-o", exe, c], check=True)
    chain = []
    for _ in range(5):
        chain.append(float(subprocess.run([exe], stdout=subprocess.PIPE, text=True).stdout))
    perf = None
    r = subprocess.run(["perf", "stat", "-x,", "-e", "cycles,task-clock", exe], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    vals = {}
    for ln in r.stderr.splitlines():
        p = ln.split(",")
        if len(p) > 2 and p[0].replace(".", "").isdigit():
            vals[p[2]] = float(p[0])
    if "cycles" in vals and vals.get("task-clock"):
        perf = vals["cycles"] / (vals["task-clock"] * 1e6)
    return {"chain_ghz": max(chain), "chain_all": chain, "perf_ghz": perf}


def x86(args, planning=False):
    boards = load_boards()
    host = dict(boards["host-zen3"])
    if planning:
        for kern in args.kernels.split(","):
            for prec in args.precisions.split(","):
                counts_per_inference("x86_64", "max", lambda it: vitedge_argv(HOST_BIN, blob_path(prec), it, 1, kern), args.iters, [], None, f"x86-{kern}-{prec}-")
        return
    if args.clock_ghz:
        host["clock_ghz"] = args.clock_ghz
        clock = {"given": args.clock_ghz}
    else:
        clock = host_clock_ghz()
        host["clock_ghz"] = clock["perf_ghz"] or clock["chain_ghz"]
    pricer = Pricer()
    out = {"clock": clock, "clock_ghz": host["clock_ghz"], "rows": []}
    for kern in args.kernels.split(","):
        for prec in args.precisions.split(","):
            mk = lambda it: vitedge_argv(HOST_BIN, blob_path(prec), it, 1, kern)
            log(f"x86 {kern} {prec}")
            pi = counts_per_inference("x86_64", "max", mk, args.iters, [], None, f"x86-{kern}-{prec}-")
            an = analyze(pi, "x86_64", [host["mca_cpu"]], HOST_BIN, pricer)
            s = summarize(an, host["mca_cpu"], host["clock_ghz"])
            layers = layer_shapes(blob_path(prec))[0]
            lin = sum(s["categories"].get(c, {}).get("ms", 0) for c in ("int8 GEMM", "f32 GEMM", "f16 GEMM", "quantize"))
            mem, dram = memory_term(layers, host, lin * host["clock_ghz"] * 1e6)
            out["rows"].append({"kernels": kern, "precision": prec, "ms_est": s["ms_compute"] + mem, "ms_compute": s["ms_compute"],
                                "ms_memory_exposed": mem, "instructions_m": s["instructions"] / 1e6, "coverage": an["coverage"],
                                "categories": s["categories"], "top_functions": s["top_functions"][:10]})
    print(json.dumps(out, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("estimate", help="boards x precisions x engines table")
    e.add_argument("--boards", default="pi4,pi5,orin,nano")
    e.add_argument("--precisions", default="f32,f16,int8")
    e.add_argument("--engines", default="vitedge", help="vitedge, vitedge-scalar and/or peer engine names from --peer-spec files")
    e.add_argument("--peer-spec", action="append", help="JSON engine spec file (repeatable)")
    e.add_argument("--label", default="current")
    e.add_argument("--iters", type=int, default=1, help="N: runs of N and 3N timed inferences are counted")
    e.add_argument("--no-threads4", dest="threads4", action="store_false", help="skip the 4-thread runs")
    e.add_argument("--jobs", type=int, default=2, help="counting runs at a time")
    e.add_argument("--model-set", default="vit_tiny", help="blobs target/arm-model/blobs/<SET>_<precision>.vitb")
    e.add_argument("--arm-bin", help="the unstripped aarch64 vitedge to count (default: prepare.sh's build), e.g. a copy of an older build for a before / after")
    x = sub.add_parser("x86", help="estimate for this machine (validation)")
    x.add_argument("--kernels", default="avx2,scalar")
    x.add_argument("--precisions", default="f32,f16,int8")
    x.add_argument("--iters", type=int, default=1)
    x.add_argument("--clock-ghz", type=float)
    x.add_argument("--jobs", type=int, default=2, help="counting runs at a time")
    x.add_argument("--model-set", default="vit_tiny", help="blobs target/arm-model/blobs/<SET>_<precision>.vitb")
    sub.add_parser("clock", help="this machine's effective clock")
    d = sub.add_parser("diff", help="before / after of two results-*.json files (totals and per-kernel breakdown)")
    d.add_argument("before")
    d.add_argument("after")
    a = ap.parse_args()
    global MODEL_SET, ARM_BIN
    MODEL_SET = getattr(a, "model_set", MODEL_SET)
    ARM_BIN = getattr(a, "arm_bin", None) or ARM_BIN
    if a.cmd == "estimate":
        with_counting(estimate, a)
    elif a.cmd == "x86":
        with_counting(x86, a)
    elif a.cmd == "diff":
        print_diff([a.before, a.after])
    else:
        print(json.dumps(host_clock_ghz()))


if __name__ == "__main__":
    main()
