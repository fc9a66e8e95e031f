#!/usr/bin/env bash
# int8 accuracy on aarch64 under qemu: the quantization suite's bounds, checked with the attention and
# kernels each emulated board CPU really runs (neon on cortex-a72, dotprod on cortex-a76, i8mm on max).
#   scripts/arm-accuracy.sh [IMAGES] [CPU...]     default: 100 held-out images, cortex-a72 cortex-a76
# Builds the aarch64 binary with Debian's rustc (as .ci/aarch64.sh), converts the real ViT-Tiny to
# f32 and int8 (32 calibration images, like tests/quantization.rs) on the host, then runs
# `vitedge eval --exclude-calibration --limit IMAGES` of the int8 blob against the f32 blob inside
# qemu-aarch64 and checks: top-1 agreement >= 0.975, top-1 within 0.5 pp of f32, logit cosine mean
# >= 0.9992 and min >= 0.996. Takes ~10 min per CPU for 100 images on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-100}
shift || true
cpus=("$@")
[ ${#cpus[@]} -gt 0 ] || cpus=(cortex-a72 cortex-a76)
bash .ci/install-aarch64.sh
target=aarch64-unknown-linux-gnu
RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64-debian CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  cargo build --release --target "$target" -p vitedge --no-default-features -q
arm=target/aarch64-debian/$target/release/vitedge
cargo build --release -p vitedge-quant -q
work=target/arm-accuracy
mkdir -p "$work"
ck=../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors
[ -f "$work/f32.vitb" ] || ./target/release/vitedge-quant convert "$ck" -o "$work/f32.vitb" --labels ../shared/imagenet_classes.txt 2>/dev/null
[ -f "$work/int8.vitb" ] || ./target/release/vitedge-quant convert "$ck" -o "$work/int8.vitb" --labels ../shared/imagenet_classes.txt \
  --precision int8 --calibrate ../shared/imagenet-sample --calib-count 32 >/dev/null 2>&1
status=0
for cpu in "${cpus[@]}"; do
  t0=$(date +%s)
  qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib -cpu "$cpu" "$arm" info | grep -E "auto choice" | sed "s/^/[$cpu] /"
  qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib -cpu "$cpu" "$arm" \
    eval --model "$work/int8.vitb" --reference "$work/f32.vitb" --images ../shared/imagenet-sample \
    --exclude-calibration --limit "$images" --threads 2 --json > "$work/eval-$cpu.json"
  if python3 - "$work/eval-$cpu.json" "$cpu" "$(( $(date +%s) - t0 ))" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r["agreement"] >= 0.975 and r["top1"] >= r["reference_top1"] - 0.005 and r["cosine_mean"] >= 0.9992 and r["cosine_min"] >= 0.996
print(f"[{sys.argv[2]}] {r['images']} held-out images: top-1 {100*r['top1']:.2f} % (f32 {100*r['reference_top1']:.2f} %), "
      f"agreement {100*r['agreement']:.2f} %, cosine mean {r['cosine_mean']:.6f} min {r['cosine_min']:.6f} "
      f"({sys.argv[3]} s): {'within' if ok else 'OUTSIDE'} the quantization suite's bounds")
sys.exit(0 if ok else 1)
PY
  then :; else status=1; fi
done
exit $status
