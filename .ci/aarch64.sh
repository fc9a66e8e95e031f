#!/usr/bin/env bash
# Builds vitedge's tests for aarch64-unknown-linux-gnu with Debian's rustc and runs them under
# qemu-aarch64 on three CPUs: cortex-a72 (plain NEON, Raspberry Pi 4), cortex-a76 (dotprod + fp16,
# Raspberry Pi 5) and max (everything qemu emulates, incl. i8mm). The device build has no tract.
# Real-data accuracy suites skip themselves under emulation (VITEDGE_SLOW_UNDER_EMULATION=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=target/aarch64-debian
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export VITEDGE_SLOW_UNDER_EMULATION=1
target=aarch64-unknown-linux-gnu
args=(--target "$target" -p vitedge --no-default-features)
start=$(date +%s)
cargo test "${args[@]}" --no-run
echo "aarch64 build: $(( $(date +%s) - start )) s"
status=0
for cpu in cortex-a72 cortex-a76 max; do
  t0=$(date +%s)
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu"
  if cargo test "${args[@]}" -- ${VITEDGE_QEMU_TEST_FILTER:-} 2>&1 | tee "/tmp/vitedge-aarch64-$cpu.log" | grep -E "^test result|FAILED|panicked"; then
    if grep -q "FAILED\|panicked" "/tmp/vitedge-aarch64-$cpu.log"; then status=1; fi
  else
    status=1
  fi
  if [ "${PIPESTATUS[0]:-0}" != 0 ]; then status=1; fi
  echo "aarch64 -cpu $cpu: $(( $(date +%s) - t0 )) s, $(grep -c '\.\.\. ok$' "/tmp/vitedge-aarch64-$cpu.log") tests ok"
done
exit $status
