#!/usr/bin/env bash
# The ARM cost model in one command: builds what is missing (qemu with plugins + our counting plugin,
# the unstripped aarch64 vitedge, the host vitedge + vitedge-quant, the ViT-Tiny blobs), then prints
# board x precision x engine -> estimated ms and vitedge's per-kernel breakdown, and writes
# target/arm-model/results-<label>.json.
#
#   scripts/arm-model/estimate.sh [--boards pi4,pi5,orin,nano] [--precisions f32,f16,int8]
#                                 [--engines vitedge,vitedge-scalar,<peer>] [--peer-spec FILE]...
#                                 [--label NAME] [--iters N] [--no-threads4]
# Peer specs default to scripts/arm-model/peers/*.json when --engines names an engine they define.
# Not part of the default test run: counting takes minutes per configuration under emulation.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/arm-model/build-qemu.sh
bash scripts/arm-model/prepare.sh aarch64
args=("$@")
if ! printf '%s\n' "$@" | grep -q -- '--peer-spec'; then
  for s in scripts/arm-model/peers/*.json; do [ -f "$s" ] && args+=(--peer-spec "$s"); done
fi
exec python3 scripts/arm-model/model.py estimate "${args[@]}"
