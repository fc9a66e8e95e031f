#!/usr/bin/env bash
# x86 validation of the cost model: the same pipeline (qemu-x86_64 + our plugin, llvm-mca -mcpu=znver3,
# this machine's effective clock) estimates `vitedge bench` on this machine, which is then measured.
# Prints estimated vs measured ms and the error per kernel set and precision.
#
#   scripts/arm-model/validate-x86.sh [--kernels avx2,scalar] [--precisions f32,f16,int8] [--bench-iters 30]
#                                     [--model-set vit_tiny|vit_d1]   (vit_d1: a depth-1 ViT-Tiny, ~10x cheaper)
#
# Timings are only meaningful on an idle machine (the measured side and the clock calibration).
# avx512 cannot be validated on a CPU without AVX-512 (and qemu 7.2's TCG has no AVX-512 either).
set -euo pipefail
cd "$(dirname "$0")/../.."
kernels=avx2,scalar precisions=f32,f16,int8 bench_iters=30 model_set=vit_tiny
while [ $# -gt 0 ]; do
  case "$1" in
    --kernels) kernels=$2; shift 2 ;;
    --precisions) precisions=$2; shift 2 ;;
    --bench-iters) bench_iters=$2; shift 2 ;;
    --model-set) model_set=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bash scripts/arm-model/build-qemu.sh
bash scripts/arm-model/prepare.sh
out=target/arm-model/validate-x86
mkdir -p "$out"
# (a) estimates (counting runs are cached; the clock is measured now, before the benchmarks)
python3 scripts/arm-model/model.py x86 --kernels "$kernels" --precisions "$precisions" --model-set "$model_set" > "$out/estimate.json"
# (b) measurements: bench's median wall time, and CPU time per inference (user + system time of
# `bench --iters 10` and `--iters 10+bench_iters*3`, difference / (bench_iters*3)), which time slices
# lost to other processes do not inflate (cache sharing with them still can).
: > "$out/measured.jsonl"
for k in ${kernels//,/ }; do
  for p in ${precisions//,/ }; do
    python3 - "target/arm-model/blobs/${model_set}_$p.vitb" "$k" "$p" "$bench_iters" >> "$out/measured.jsonl" <<'PY'
import json, os, subprocess, sys
blob, k, p, iters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def bench(n):
    proc = subprocess.Popen(["./target/release/vitedge", "bench", "--model", blob, "--kernels", k, "--threads", "1",
                             "--iters", str(n), "--json"], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"vitedge bench failed for {blob} {k}")
    return json.loads(out), ru.ru_utime + ru.ru_stime
d, _ = bench(iters)
_, c0 = bench(10)
_, c1 = bench(10 + 3 * iters)
d.update({"kernels_set": k, "precision_arg": p, "cpu_ms_per_inference": 1e3 * (c1 - c0) / (3 * iters)})
print(json.dumps(d))
PY
  done
done
python3 - "$out/estimate.json" "$out/measured.jsonl" <<'PY'
import json, sys
est = json.load(open(sys.argv[1]))
meas = {(d["kernels_set"], d["precision_arg"]): d for d in map(json.loads, open(sys.argv[2]))}
c = est["clock"]
print(f"effective clock {est['clock_ghz']:.3f} GHz (dependent-add chain: {c.get('chain_ghz')}, perf: {c.get('perf_ghz')})")
print(f"{'kernels':<8} {'precision':<9} {'estimated ms':>12} {'median ms':>10} {'error %':>8} {'CPU ms':>8} {'error %':>8}")
for r in est["rows"]:
    m = meas.get((r["kernels"], r["precision"]))
    if not m:
        continue
    err = 100 * (r["ms_est"] - m["median_ms"]) / m["median_ms"]
    cpu = m["cpu_ms_per_inference"]
    err_cpu = 100 * (r["ms_est"] - cpu) / cpu
    print(f"{r['kernels']:<8} {r['precision']:<9} {r['ms_est']:12.2f} {m['median_ms']:10.2f} {err:+8.1f} {cpu:8.2f} {err_cpu:+8.1f}")
print("(median: `vitedge bench --threads 1` wall time, the figure to quote on an idle machine; CPU ms: process CPU"
      " time per inference, less sensitive to a busy machine)")
PY
