#!/usr/bin/env bash
# Runs a reference script with the genuine Python libraries whose behaviour vitedge reproduces, in a
# git-ignored venv (.venv-ref/) installed from PyPI on first use. Not part of the default test run.
#
#   scripts/reference-venv.sh pillow scripts/decode_reference.py              # Pillow + numpy
#   scripts/reference-venv.sh timm quant/scripts/timm_pretrained_cfgs.py      # + torch, torchvision, timm
#   scripts/reference-venv.sh timm quant/scripts/torchvision_reprs.py
#
# Versions are pinned so that the committed outputs can be regenerated identically. PyPI's torch
# wheel pulls CUDA libraries (~3 GB) even though only the CPU is used here.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0"; exit 1; }
kind=$1; shift
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$root/.venv-ref}"
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
pip() { "$venv/bin/pip" install --quiet "$@"; }
case "$kind" in
  pillow) "$venv/bin/python" -c "import PIL, numpy" 2>/dev/null || pip pillow==13.0.0 numpy ;;
  timm)
    "$venv/bin/python" -c "import PIL, numpy" 2>/dev/null || pip pillow==13.0.0 numpy
    "$venv/bin/python" -c "import torch, torchvision, timm" 2>/dev/null || pip torch==2.15.0 torchvision==0.29.2 timm==1.0.31 ;;
  *) echo "unknown kind '$kind' (pillow or timm)" >&2; exit 1 ;;
esac
cd "$root"
exec "$venv/bin/python" "$@"
