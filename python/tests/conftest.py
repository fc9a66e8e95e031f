"""Fixtures of the vitedge Python suite: the installed package and commands, ../shared data, and
blobs converted once per session with vitedge.convert (as the README converts them with the CLI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vitedge

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("VITEDGE_SHARED", REPO.parent / "shared"))
CHECKPOINT = SHARED / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
LABELS = SHARED / "imagenet_classes.txt"
IMAGES = SHARED / "imagenet-sample"
BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """A command installed by the wheel next to this interpreter."""
    path = BIN / name
    assert path.is_file(), f"{path} is missing: the wheel should install the {name} command"
    return str(path)


def run_json_lines(args, stdin=None):
    """Runs a vitedge command and parses its JSON lines."""
    out = subprocess.run(args, check=True, capture_output=True, stdin=stdin).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def shared():
    if not CHECKPOINT.is_file() or not IMAGES.is_dir():
        pytest.skip(f"real data missing: {CHECKPOINT} / {IMAGES}")
    return SHARED


@pytest.fixture(scope="session")
def images(shared):
    """Eight sample images, evenly spaced by name."""
    files = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    step = max(1, len(files) // 8)
    return files[::step][:8]


@pytest.fixture(scope="session")
def blobs(shared, tmp_path_factory):
    """The real ViT-Tiny converted with vitedge.convert: f32, and int8 calibrated on 8 images."""
    d = tmp_path_factory.mktemp("blobs")
    f32 = d / "vit_tiny_f32.vitb"
    int8 = d / "vit_tiny_int8.vitb"
    summary = vitedge.convert(CHECKPOINT, f32, labels=LABELS)
    assert summary["precision"] == "f32" and summary["report"] is None
    summary = vitedge.convert(CHECKPOINT, int8, precision="int8", calibrate=IMAGES, calib_count=8, labels=LABELS)
    assert summary["precision"] == "int8" and len(summary["report"]["layers"]) == 50
    return {"f32": f32, "int8": int8}


@pytest.fixture(scope="session")
def models(blobs):
    return {p: vitedge.Model(path, threads=2) for p, path in blobs.items()}
