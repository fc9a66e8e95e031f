#!/usr/bin/env bash
# Generates the Lightning / timm checkpoint fixtures of quant/tests/fixtures/lightning/ with the genuine
# libraries: creates the git-ignored venv .venv-fixtures/ (CPU torch, timm, pytorch-lightning,
# torchvision from PyPI), then runs make_lightning_fixtures.py. Not part of the default test run.
#
#   quant/scripts/make_lightning_fixtures.sh            # venv + fixtures
#   VENV=/path/to/venv quant/scripts/make_lightning_fixtures.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${VENV:-$root/.venv-fixtures}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
fi
if ! "$venv/bin/python" -c "import torch, torchvision, timm, pytorch_lightning" 2>/dev/null; then
    # The CPU-only wheel index is much smaller; use it when it is reachable, else PyPI's torch.
    if curl -fsS --max-time 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
        "$venv/bin/pip" install torch torchvision --index-url https://download.pytorch.org/whl/cpu
    else
        "$venv/bin/pip" install torch torchvision
    fi
    "$venv/bin/pip" install timm pytorch-lightning numpy pillow
fi
exec "$venv/bin/python" "$root/quant/scripts/make_lightning_fixtures.py" \
    --images "$root/../shared/imagenet-sample" --out "$root/quant/tests/fixtures/lightning" "$@"
