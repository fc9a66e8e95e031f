#!/usr/bin/env bash
# Builds the device binary for one board profile in targets/.
#   scripts/build-board.sh rpi5            # with cross (Docker/Podman), the default for users
#   scripts/build-board.sh rpi5 --local    # aarch64 with Debian's rustc + aarch64 gcc (.ci/install-aarch64.sh)
#   scripts/build-board.sh x86-64-v4       # x86 targets build with the host toolchain
set -euo pipefail
usage() { sed -n '2,5p' "$0"; echo "boards: $(ls "$(dirname "$0")/../targets" | sed -n 's/\.toml$//p' | tr '\n' ' ')"; exit "${1:-0}"; }
[ $# -ge 1 ] || usage 1
case "$1" in -h|--help) usage 0 ;; esac
board=$1; mode=${2:-auto}
root=$(cd "$(dirname "$0")/.." && pwd)
profile_file="$root/targets/$board.toml"
[ -f "$profile_file" ] || { echo "unknown board '$board'" >&2; usage 1; }
get() { sed -n "s/^$1 *= *\"\([^\"]*\)\".*/\1/p" "$profile_file"; }
target=$(get target); rustflags=$(get rustflags); profile=$(get profile)
cd "$root"
args=(build --profile "$profile" --no-default-features -p vitedge --target "$target")
host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$target" = "$host" ]; then
  RUSTFLAGS="$rustflags" cargo "${args[@]}"
  out="target/$target/$profile/vitedge"
elif [ "$mode" = "--local" ] || { [ "$mode" = auto ] && ! command -v cross >/dev/null; }; then
  [ "$target" = aarch64-unknown-linux-gnu ] || { echo "--local builds only aarch64-unknown-linux-gnu; install cross for $target" >&2; exit 1; }
  export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64-debian CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  RUSTFLAGS="$rustflags" cargo "${args[@]}"
  out="target/aarch64-debian/$target/$profile/vitedge"
else
  RUSTFLAGS="$rustflags" cross "${args[@]}"
  out="target/$target/$profile/vitedge"
fi
size=$(stat -c %s "$out")
echo "$board: $out ($size bytes, $(awk "BEGIN{printf \"%.2f\", $size/1048576}") MiB)"
