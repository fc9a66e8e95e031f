#!/usr/bin/env bash
# The Python package and the C library (issue 15), on a fresh machine with ../shared beside the checkout:
# 1. a venv (.venv-bindings) with numpy, Pillow, maturin and pytest from PyPI;
# 2. the x86-64 wheel (python/build-wheel.sh: extension + the vitedge / vitedge-quant commands),
#    installed into the venv, and the pytest suite (python/tests) against it;
# 3. libvitedge.so / libvitedge.a and examples/vitedge_stream.c built with gcc against each, run on
#    NV12 frames made from sample images, output compared with `vitedge stream` on the same bytes;
# 4. unless VITEDGE_SKIP_AARCH64=1: the aarch64 wheel and C library with Debian's cross toolchain
#    (.ci/install-aarch64.sh), the example cross-compiled and run under qemu-aarch64 against the
#    aarch64 libvitedge.so (same top-1 as x86-64, scores within 2e-3);
# 5. the sizes of wheels and libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo "== bindings: $1 ($(( $(date +%s) - start )) s)"; }
status=0
fail() { echo "FAILED: $*"; status=1; }

step "venv"
venv=.venv-bindings
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check numpy pillow maturin pytest
export PATH="$PWD/$venv/bin:$PATH"

step "x86-64 wheel"
rm -f target/wheels/vitedge-*.whl
python/build-wheel.sh
wheel=$(ls target/wheels/vitedge-*x86_64*.whl)
pip install -q --disable-pip-version-check --force-reinstall "$wheel"

step "pytest"
set +e
(cd python/tests && python -m pytest -v -p no:cacheprovider .) 2>&1 | tee /tmp/vitedge-pytest.log
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || fail "pytest (exit $rc; log /tmp/vitedge-pytest.log)"

step "C library and example"
cargo build --release -p vitedge-capi
work=target/bindings
mkdir -p "$work"
gcc -O2 -Wall -Wextra -Werror -std=c11 -D_POSIX_C_SOURCE=200809L -Icapi/include examples/vitedge_stream.c -Ltarget/release -lvitedge -o "$work/vitedge_stream_c"
gcc -O2 -Wall -Wextra -Werror -std=c11 -D_POSIX_C_SOURCE=200809L -Icapi/include examples/vitedge_stream.c target/release/libvitedge.a -lpthread -ldl -lm -o "$work/vitedge_stream_c_static"
ck=../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors
if [ -f "$ck" ]; then
  vitedge-quant convert "$ck" -o "$work/vit_f32.vitb" --labels ../shared/imagenet_classes.txt 2>/dev/null
  vitedge-quant convert "$ck" -o "$work/vit_int8.vitb" --labels ../shared/imagenet_classes.txt \
    --precision int8 --calibrate ../shared/imagenet-sample --calib-count 8 >/dev/null 2>&1
  models=("$work/vit_f32.vitb" "$work/vit_int8.vitb")
  mapfile -t imgs < <(ls ../shared/imagenet-sample/*.JPEG | awk 'NR % 100 == 1')
else
  vitedge-quant convert quant/tests/fixtures/lightning_tiny.ckpt --heads 2 -o "$work/tiny.vitb" 2>/dev/null
  models=("$work/tiny.vitb")
  python -c 'from PIL import Image; import numpy as np; Image.fromarray((np.arange(48*40*3) % 251).astype(np.uint8).reshape(40, 48, 3)).save("target/bindings/img.png")'
  imgs=("$work/img.png")
fi
python python/tests/frames.py "$work/frames.nv12" 320 240 "${imgs[@]}"
for m in "${models[@]}"; do
  vitedge stream --model "$m" --input "$work/frames.nv12" --pixel-format nv12 --size 320x240 --top 5 --threads 2 > "$m.stream.json"
  for exe in vitedge_stream_c vitedge_stream_c_static; do
    if LD_LIBRARY_PATH=target/release "$work/$exe" "$m" nv12 320x240 5 2 < "$work/frames.nv12" > "$m.$exe.json" &&
       python .ci/compare_stream.py "$m.stream.json" "$m.$exe.json" > /dev/null
    then echo "  $exe on $(basename "$m"): ${#imgs[@]} frames, same top-5 and scores as vitedge stream"
    else fail "$exe on $m differs from vitedge stream"; fi
  done
done

if [ "${VITEDGE_SKIP_AARCH64:-0}" != 1 ]; then
  step "aarch64 wheel and C library"
  bash .ci/install-aarch64.sh
  python/build-wheel.sh --target aarch64-unknown-linux-gnu
  (
    export RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/aarch64-debian CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    cargo build --release -p vitedge-capi --target aarch64-unknown-linux-gnu
  )
  arm=target/aarch64-debian/aarch64-unknown-linux-gnu/release
  aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -std=c11 -D_POSIX_C_SOURCE=200809L -Icapi/include examples/vitedge_stream.c -L"$arm" -lvitedge -o "$work/vitedge_stream_c_aarch64"
  m=${models[-1]}
  head -c "$(( 320 * 240 * 3 / 2 * 2 ))" "$work/frames.nv12" > "$work/frames2.nv12"
  head -n 2 "$m.stream.json" > "$m.stream2.json"
  if timeout 900 qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH="/usr/aarch64-linux-gnu/lib:$PWD/$arm" -cpu cortex-a76 \
       "$work/vitedge_stream_c_aarch64" "$m" nv12 320x240 5 2 < "$work/frames2.nv12" > "$m.aarch64.json" &&
     python .ci/compare_stream.py "$m.stream2.json" "$m.aarch64.json" 3e-2 > /dev/null
  then echo "  aarch64 C example under qemu (cortex-a76) on $(basename "$m"): same top-1 as x86-64, top-5 scores within 3e-2"
  else fail "aarch64 C example on $m"; fi
fi

step "sizes"
ls -l target/wheels/vitedge-*.whl | awk '{print "  " $5 " bytes  " $9}'
for lib in target/release/libvitedge.so target/release/libvitedge.a \
           target/aarch64-debian/aarch64-unknown-linux-gnu/release/libvitedge.so target/aarch64-debian/aarch64-unknown-linux-gnu/release/libvitedge.a; do
  [ -f "$lib" ] || continue
  case "$lib" in *aarch64*) s=aarch64-linux-gnu-strip ;; *) s=strip ;; esac
  "$s" --strip-unneeded -o "$work/stripped.tmp" "$lib"
  echo "  $(stat -c %s "$lib") bytes ($(stat -c %s "$work/stripped.tmp") stripped)  $lib"
done
rm -f "$work/stripped.tmp"
step "done"
[ $status = 0 ] && echo "bindings: all checks passed" || echo "bindings: FAILED"
exit $status
