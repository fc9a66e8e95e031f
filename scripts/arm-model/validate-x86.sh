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
# (b) measurements
: > "$out/measured.jsonl"
for k in ${kernels//,/ }; do
  for p in ${precisions//,/ }; do
    ./target/release/vitedge bench --model "target/arm-model/blobs/${model_set}_$p.vitb" --kernels "$k" --threads 1 \
      --iters "$bench_iters" --json | python3 -c "import json,sys; d=json.load(sys.stdin); d['kernels_set']='$k'; d['precision_arg']='$p'; print(json.dumps(d))" >> "$out/measured.jsonl"
  done
done
python3 - "$out/estimate.json" "$out/measured.jsonl" <<'PY'
import json, sys
est = json.load(open(sys.argv[1]))
meas = {(d["kernels_set"], d["precision_arg"]): d for d in map(json.loads, open(sys.argv[2]))}
c = est["clock"]
print(f"effective clock {est['clock_ghz']:.3f} GHz (dependent-add chain: {c.get('chain_ghz')}, perf: {c.get('perf_ghz')})")
print(f"{'kernels':<8} {'precision':<9} {'estimated ms':>12} {'measured ms':>12} {'error %':>8}   (measured = median of `vitedge bench --threads 1`)")
for r in est["rows"]:
    m = meas.get((r["kernels"], r["precision"]))
    if not m:
        continue
    err = 100 * (r["ms_est"] - m["median_ms"]) / m["median_ms"]
    print(f"{r['kernels']:<8} {r['precision']:<9} {r['ms_est']:12.2f} {m['median_ms']:12.2f} {err:+8.1f}")
PY
