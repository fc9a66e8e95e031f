#!/usr/bin/env bash
# Installs what the aarch64 cross build and qemu test run need, from Debian's packages (rustup cannot
# fetch other targets on these machines): Debian's rustc with the aarch64 standard library, the
# aarch64 GCC linker and C library, and qemu-user. Idempotent; quiet unless something fails.
set -euo pipefail
need=()
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need+=(rustc-web libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -eq 0 ]; then
  echo "aarch64 toolchain already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO dpkg --add-architecture arm64
for attempt in 1 2; do
  if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/tmp/vitedge-apt.log 2>&1; then
    echo "installed: ${need[*]}"
    exit 0
  fi
  echo "apt attempt $attempt failed; see /tmp/vitedge-apt.log" >&2
  sleep 5
done
cat /tmp/vitedge-apt.log >&2
exit 1
