#!/usr/bin/env bash
# Builds qemu-aarch64 and qemu-x86_64 (linux-user) with TCG plugin support from Debian's qemu 7.2
# source package, and our counting plugin (plugin/tbcount.c) against that source's qemu-plugin.h.
# Cached under target/arm-model/qemu/: every step is skipped when its output is already there.
# Output: target/arm-model/qemu/build/qemu-{aarch64,x86_64}, target/arm-model/qemu/libtbcount.so
# (and the stock contrib plugins libinsn.so / libcache.so for cross-checks).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD/target/arm-model/qemu
mkdir -p "$root"
log() { echo "build-qemu: $*" >&2; }

# 1. Build dependencies (Debian packages).
need=()
for p in ninja-build meson libglib2.0-dev pkg-config python3-venv flex bison dpkg-dev gcc make xz-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. The source: deb-src for bookworm main in a sources file of our own, then the source package.
src_list=/etc/apt/sources.list.d/vitedge-src.sources
if [ ! -f "$src_list" ]; then
  log "adding $src_list (deb-src bookworm main)"
  cat > "$src_list" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi
if ! ls "$root"/qemu_7.2*.orig.tar.* >/dev/null 2>&1; then
  log "downloading the qemu source package"
  (cd "$root" && apt-get source --download-only qemu >/dev/null)
fi
srcdir=$root/src
if [ ! -f "$srcdir/configure" ]; then
  log "unpacking"
  rm -rf "$srcdir" "$root/src.tmp"
  mkdir -p "$root/src.tmp"
  tar -xf "$(ls "$root"/qemu_7.2*.orig.tar.* | head -1)" -C "$root/src.tmp"
  mv "$root/src.tmp"/* "$srcdir"
  rmdir "$root/src.tmp"
fi

# 3. Configure and build linux-user emulators with plugins.
bld=$srcdir/build
if [ ! -f "$bld/build.ninja" ]; then
  log "configuring"
  (cd "$srcdir" && ./configure --target-list=aarch64-linux-user,x86_64-linux-user --enable-plugins \
     --disable-system --disable-tools --disable-docs --disable-install-blobs >"$root/configure.log" 2>&1) \
    || { tail -30 "$root/configure.log"; exit 1; }
fi
if [ ! -x "$bld/qemu-aarch64" ] || [ ! -x "$bld/qemu-x86_64" ]; then
  log "building (a few minutes)"
  t0=$(date +%s)
  ninja -C "$bld" qemu-aarch64 qemu-x86_64 >"$root/ninja.log" 2>&1 || { tail -30 "$root/ninja.log"; exit 1; }
  log "built in $(( $(date +%s) - t0 )) s"
fi
ln -sf "$bld/qemu-aarch64" "$root/qemu-aarch64"
ln -sf "$bld/qemu-x86_64" "$root/qemu-x86_64"

# 4. Plugins: ours, and two stock ones for cross-checks.
glib=$(pkg-config --cflags glib-2.0)
plug() { # out src
  if [ ! -f "$1" ] || [ "$2" -nt "$1" ]; then
    log "compiling $(basename "$1")"
    # shellcheck disable=SC2086
    # (to a new file, then renamed: qemu processes still running keep the old one)
    gcc -O2 -g -shared -fPIC -Wall -I"$srcdir/include/qemu" $glib -o "$1.new" "$2" $(pkg-config --libs glib-2.0)
    mv -f "$1.new" "$1"
  fi
}
plug "$root/libtbcount.so" scripts/arm-model/plugin/tbcount.c
plug "$root/libinsn.so" "$srcdir/tests/plugin/insn.c"
plug "$root/libcache.so" "$srcdir/contrib/plugins/cache.c"
log "ready: $root/qemu-aarch64, $root/qemu-x86_64, $root/libtbcount.so"
