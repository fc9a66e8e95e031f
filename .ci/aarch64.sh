#!/usr/bin/env bash
# aarch64 checks under qemu-user, with Debian's rustc (rustup cannot fetch other targets here):
# 1. builds every vitedge test binary and the device binary for aarch64-unknown-linux-gnu
#    (no tract: device builds leave it out);
# 2. runs the kernel checks (tests/kernels_main.rs: every kernel set vs the scalar reference, and the
#    whole forward pass) under qemu-aarch64 for each CPU below;
# 3. runs the device binary end to end under qemu-aarch64 for -cpu cortex-a72 (Raspberry Pi 4,
#    plain NEON), cortex-a76 (Raspberry Pi 5, dotprod + fp16) and max (i8mm too): `vitedge info`,
#    `inspect --verify`, and `classify --json` of real images with the real ViT-Tiny (f32 and int8)
#    and a tiny model converted from the Lightning fixture, compared with the x86-64 results.
#
# Known limitation on these sandboxes: any aarch64 program that creates a thread (C or Rust) hangs
# under qemu-user here (qemu 7.2 and 10.0 alike; the guest's rseq syscall is unsupported), so the
# libtest test binaries, which run every test on a spawned thread, are built but not run; the kernel
# checks have a thread-free runner instead, and the binary runs with --threads 1 (the pool then
# spawns nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=target/aarch64-debian
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
target=aarch64-unknown-linux-gnu
start=$(date +%s)
cargo test --target "$target" -p vitedge --no-default-features --no-run 2>&1 | grep -E "^error|Executable" || true
cargo build --release --target "$target" -p vitedge --no-default-features
echo "aarch64 build: $(( $(date +%s) - start )) s"
arm=target/aarch64-debian/$target/release/vitedge

# Kernel checks (every kernel set the emulated CPU offers vs the scalar reference, and the whole
# forward pass) on the main thread, per CPU.
status=0
for cpu in cortex-a72 cortex-a76 max; do
  t0=$(date +%s)
  if CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu" \
     timeout 1200 cargo test --target "$target" -p vitedge --no-default-features --test kernels_main 2>&1 | tee "/tmp/vitedge-kernels-$cpu.log" | grep -E "kernel sets|passed, "; then
    grep -q "^[0-9]* passed, 0 failed" "/tmp/vitedge-kernels-$cpu.log" || { echo "FAILED: kernel checks on $cpu"; status=1; }
  else
    echo "FAILED: kernel checks on $cpu"; status=1
  fi
  echo "aarch64 -cpu $cpu kernel checks: $(( $(date +%s) - t0 )) s"
done

# Reference results on the host (x86-64), same models and images.
unset RUSTC CARGO_TARGET_DIR
cargo build --release --workspace -q
work=target/aarch64-smoke
mkdir -p "$work"
./target/release/vitedge-quant convert quant/tests/fixtures/lightning_tiny.ckpt --heads 2 -o "$work/tiny.vitb" 2>/dev/null
models=("$work/tiny.vitb")
images=()
if [ -f ../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors ]; then
  ck=../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors
  ./target/release/vitedge-quant convert "$ck" -o "$work/vit_f32.vitb" --labels ../shared/imagenet_classes.txt 2>/dev/null
  ./target/release/vitedge-quant convert "$ck" -o "$work/vit_int8.vitb" --labels ../shared/imagenet_classes.txt \
    --precision int8 --calibrate ../shared/imagenet-sample --calib-count 8 >/dev/null 2>&1
  models+=("$work/vit_f32.vitb" "$work/vit_int8.vitb")
  images=(../shared/imagenet-sample/n01440764_tench.JPEG ../shared/imagenet-sample/n01530575_brambling.JPEG)
else
  python3 - "$work/img.png" <<'PY'
import struct, sys, zlib
w, h = 48, 40
rows = b"".join(b"\x00" + b"".join(bytes((x * 5 % 256, y * 6 % 256, (x + y) * 3 % 256)) for x in range(w)) for y in range(h))
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
  images=("$work/img.png")
fi
for m in "${models[@]}"; do
  # Same (scalar) kernels as the aarch64 build runs today, so results are comparable to the last bits.
  ./target/release/vitedge classify --json --top 5 --threads 1 --kernels scalar --model "$m" "${images[@]}" > "$m.x86.json"
done

for cpu in cortex-a72 cortex-a76 max; do
  t0=$(date +%s)
  run() { timeout 900 qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$cpu" "$arm" "$@"; }
  run info | sed "s/^/  [$cpu] /"
  for m in "${models[@]}"; do
    run inspect --verify "$m" > /dev/null 2> "$m.$cpu.verify" || { echo "FAILED: inspect --verify $m on $cpu"; status=1; }
    if run classify --json --top 5 --threads 1 --kernels scalar --model "$m" "${images[@]}" > "$m.$cpu.json"; then
      if python3 .ci/compare_top5.py "$m.x86.json" "$m.$cpu.json"
      then echo "  [$cpu] $(basename "$m") (scalar kernels): same top-5 as x86-64 on ${#images[@]} image(s)"
      else echo "FAILED: $m on $cpu differs from x86-64"; status=1; fi
    else
      echo "FAILED: classify $m on $cpu"; status=1
    fi
  done
  # The f32 models once more with the CPU's own kernels (NEON f32 GEMM), against the same reference.
  for m in "${models[@]}"; do
    case "$m" in *int8*) continue ;; esac
    if run classify --json --top 5 --threads 1 --kernels auto --model "$m" "${images[@]}" > "$m.$cpu.auto.json" &&
       python3 .ci/compare_top5.py "$m.x86.json" "$m.$cpu.auto.json"
    then echo "  [$cpu] $(basename "$m") (auto kernels): same top-5 as x86-64 on ${#images[@]} image(s)"
    else echo "FAILED: $m with auto kernels on $cpu"; status=1; fi
  done
  echo "aarch64 -cpu $cpu: $(( $(date +%s) - t0 )) s"
done
[ $status = 0 ] && echo "aarch64: all checks passed" || echo "aarch64: FAILED"
exit $status
