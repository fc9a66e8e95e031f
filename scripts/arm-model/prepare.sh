#!/usr/bin/env bash
# Builds the binaries and blobs the cost model runs (each step skipped when up to date):
#   host:    target/release/vitedge (for x86 validation and `inspect`), target/release/vitedge-quant
#   aarch64: target/aarch64-debian/aarch64-unknown-linux-gnu/release/vitedge — unstripped release
#            build (profile.release has debug = 1), no tract, with Debian's rustc as .ci/aarch64.sh
#   blobs:   target/arm-model/blobs/vit_tiny_{f32,f16,int8}.vitb from ../shared/weights (int8
#            calibrated on 32 images of ../shared/imagenet-sample)
# Usage: prepare.sh [aarch64]
set -euo pipefail
cd "$(dirname "$0")/../.."
log() { echo "prepare: $*" >&2; }
cargo build --release -q -p vitedge -p vitedge-quant
if [ "${1:-}" = aarch64 ]; then
  log "aarch64 vitedge (Debian rustc)"
  RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64-debian CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release -q --target aarch64-unknown-linux-gnu -p vitedge --no-default-features
fi
ck=../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors
[ -f "$ck" ] || { echo "prepare: $ck is missing (the real ViT-Tiny checkpoint beside the repo)" >&2; exit 1; }
out=target/arm-model/blobs
mkdir -p "$out"
# vit_tiny: the real checkpoint; vit_d1: its first block only (validate-x86.sh --model-set vit_d1).
d1=target/arm-model/vit_d1.safetensors
[ -f "$d1" ] && [ "$d1" -nt "$ck" ] || python3 scripts/arm-model/truncate_checkpoint.py "$ck" "$d1" --depth 1
for set in vit_tiny vit_d1; do
  src=$ck
  [ $set = vit_d1 ] && src=$d1
  for p in f32 f16 int8; do
    b=$out/${set}_$p.vitb
    if [ ! -f "$b" ] || [ "$b" -ot target/release/vitedge-quant ]; then
      log "converting $b"
      extra=()
      [ $p = int8 ] && extra=(--calibrate ../shared/imagenet-sample --calib-count 32)
      ./target/release/vitedge-quant convert "$src" -o "$b" --labels ../shared/imagenet_classes.txt --precision $p "${extra[@]}" >/dev/null 2>&1
    fi
  done
done
