#!/usr/bin/env bash
# Builds an arm64 Python sysroot for running the peers (ONNX Runtime, XNNPACK runtimes) under
# qemu-user: Debian bookworm's python3.11:arm64 and the shared libraries it and the wheels need
# (`apt-get download` + `dpkg -x`, nothing is installed on the host), plus aarch64 wheels from PyPI
# installed with the host's pip into <sysroot>/opt/peers/site-packages.
#
#   scripts/arm-model/peers/make-sysroot.sh [SYSROOT]     (default target/arm-model/sysroot)
#
# Idempotent: a stamp file per step records what was unpacked / installed; re-running with the same
# package lists does nothing. Downloaded .debs are deleted after extraction; wheels are cached in
# target/arm-model/wheels/.
# Run the guest Python with (specs.py adds the /proc/cpuinfo shim; see scripts/arm-model/peers/README.md):
#   qemu-aarch64 -L SYSROOT -E PYTHONHOME=SYSROOT/usr -E PYTHONPATH=SYSROOT/opt/peers/site-packages \
#     SYSROOT/usr/bin/python3.11 ...
set -euo pipefail
cd "$(dirname "$0")/../../.."
repo=$(pwd)
sysroot=$(realpath -m "${1:-target/arm-model/sysroot}")
cache="$repo/target/arm-model"
site="$sysroot/opt/peers/site-packages"
# Versions of the aarch64 wheels (the host venv of specs.py pins the same onnxruntime).
ORT_VERSION=${ORT_VERSION:-1.32.0}
NUMPY_VERSION=${NUMPY_VERSION:-2.4.6}
LITERT_VERSION=${LITERT_VERSION:-2.3.0}
wheels=("onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION" "ai-edge-litert==$LITERT_VERSION")

# Debian arm64 packages: python3.11 and its libraries (apt-cache depends --recurse of python3.11,
# arm64 only, minus dpkg/tar/install-info), libstdc++ / libgcc for the C++ wheels.
debs=(libc6 libgcc-s1 gcc-12-base libstdc++6
  python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libexpat1 zlib1g libssl3 libbz2-1.0 libcrypt1 libdb5.3 libffi8 liblzma5 libzstd1 libmd0
  libncursesw6 libtinfo6 libreadline8 libsqlite3-0 libuuid1 libnsl2 libtirpc3
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2
  libselinux1 libpcre2-8-0 libacl1)

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "adding the arm64 architecture to dpkg"
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi
if ! apt-cache show python3.11:arm64 >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi

mkdir -p "$sysroot" "$cache"
# --- Debian packages ----------------------------------------------------------------------------
# One apt-cache call for all (it is slow): "pkg:arm64=candidate" lines, in the order of $debs.
want=$(apt-cache policy "${debs[@]/%/:arm64}" | awk '/^[^ ].*:$/ {p = substr($0, 1, length($0) - 1)} /^  Candidate:/ {print p "=" $2}')
if [ "$(cat "$sysroot/.debs" 2>/dev/null)" != "$want" ]; then
  if grep -q '=(none)$' <<<"$want"; then
    echo "error: no arm64 candidate for: $(grep '=(none)$' <<<"$want" | tr '\n' ' ') (apt-get update? arm64 sources?)" >&2
    exit 1
  fi
  dl=$(mktemp -d "$cache/debs.XXXXXX")
  trap 'rm -rf "$dl"' EXIT
  echo "downloading ${#debs[@]} arm64 .debs"
  (cd "$dl" && apt-get download -qq $want)
  rm -rf "$sysroot"/{lib,lib64,usr,etc,bin,sbin,var}  # a fresh tree (opt/ keeps the wheels)
  for f in "$dl"/*.deb; do dpkg -x "$f" "$sysroot"; done
  # Merge /lib into /usr/lib as on a usrmerged system: the guest's loader searches
  # /lib/aarch64-linux-gnu before /usr/lib/aarch64-linux-gnu, and qemu -L falls back to the host's
  # file when the sysroot has none at a path, so a sysroot library that lives only under /usr/lib
  # (libstdc++, libffi, ...) would be shadowed by the host's own arm64 copy under /lib.
  cp -a "$sysroot/lib/." "$sysroot/usr/lib/"
  rm -rf "$sysroot/lib"
  ln -s usr/lib "$sysroot/lib"
  rm -rf "$dl"
  trap - EXIT
  # Absolute symlinks would point into the host's root (which may hold a different arm64 glibc):
  # make them relative to the sysroot.
  find "$sysroot" -type l -lname '/*' | while read -r l; do
    t=$(readlink "$l")
    ln -sfn "$(realpath -m --relative-to="$(dirname "$l")" "$sysroot$t")" "$l"
  done
  # An empty loader cache: the guest's ld.so would otherwise read the host's /etc/ld.so.cache, which
  # lists the host's own arm64 multiarch libraries (e.g. libstdc++6:arm64, pulled in by Debian's
  # aarch64 Rust std). With an unusable cache it searches its default directories, which qemu -L
  # maps into the sysroot.
  : > "$sysroot/etc/ld.so.cache"
  printf '%s\n' "$want" > "$sysroot/.debs"
  echo "unpacked into $sysroot"
fi

# --- aarch64 wheels -------------------------------------------------------------------------------
wantw=$(printf '%s\n' "${wheels[@]}")
if [ "$(cat "$site/.wheels" 2>/dev/null)" != "$wantw" ]; then
  mkdir -p "$cache/wheels"
  rm -rf "$site"
  echo "installing aarch64 wheels into $site: ${wheels[*]}"
  plat=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64
        --platform manylinux_2_17_aarch64 --python-version 3.11 --implementation cp --abi cp311 --only-binary=:all:)
  python3 -m pip download --quiet --disable-pip-version-check "${plat[@]}" -d "$cache/wheels" "${wheels[@]}"
  python3 -m pip install --quiet --disable-pip-version-check --no-compile --no-index --find-links "$cache/wheels" \
    --target "$site" "${plat[@]}" "${wheels[@]}"
  printf '%s\n' "$wantw" > "$site/.wheels"
fi
py="$sysroot/usr/bin/python3.11"
[ -x "$py" ] || { echo "error: $py missing after unpacking" >&2; exit 1; }
echo "sysroot ready: $sysroot"
