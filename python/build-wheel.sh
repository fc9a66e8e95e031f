#!/usr/bin/env bash
# Builds the `vitedge` wheel: the extension module (abi3, CPython >= 3.9) plus the `vitedge` and
# `vitedge-quant` CLI binaries as wheel scripts, so that `pip install` installs the commands too
# (one copy of the CLI code: the same binaries `cargo build` makes, without tract like the device
# builds, stripped).
#   python/build-wheel.sh [--target aarch64-unknown-linux-gnu] [more maturin build options]
# Needs maturin on PATH (pip install maturin); aarch64 uses Debian's cross toolchain like
# .ci/aarch64.sh (.ci/install-aarch64.sh installs it). Wheels go to target/wheels/.
set -euo pipefail
cd "$(dirname "$0")/.."
target=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cargo_args=(--release --no-default-features -p vitedge --bin vitedge -p vitedge-quant --bin vitedge-quant)
bin_dir=target/release
strip=strip
if [ -n "$target" ]; then
  case "$target" in
    aarch64-unknown-linux-gnu) ;;
    *) echo "build-wheel.sh: only aarch64-unknown-linux-gnu is set up for cross builds" >&2; exit 2 ;;
  esac
  export RUSTC=/usr/bin/rustc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_DIR=target/aarch64-debian
  cargo_args+=(--target "$target")
  bin_dir=$CARGO_TARGET_DIR/$target/release
  strip=aarch64-linux-gnu-strip
  args+=(--target "$target")
fi
cargo build "${cargo_args[@]}"
scripts=python/vitedge.data/scripts
rm -rf python/vitedge.data
mkdir -p "$scripts"
for b in vitedge vitedge-quant; do
  "$strip" -o "$scripts/$b" "$bin_dir/$b"
done
maturin build --release -m python/Cargo.toml -o target/wheels "${args[@]}"
