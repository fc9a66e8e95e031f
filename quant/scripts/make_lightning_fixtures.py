#!/usr/bin/env python3
"""Checkpoint fixtures written by the genuine tools (torch, timm, pytorch-lightning, torchvision).

Run through make_lightning_fixtures.sh, which creates the venv. A small timm ViT
(`timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, embed_dim=32, depth=2,
num_heads=2)`: patch 16, 224 input) is fine-tuned a few SGD steps by a LightningModule as users write
it (`self.model = timm.create_model(...)`, `save_hyperparameters()` with a torchvision `Compose`, an
`argparse.Namespace`, a `functools.partial` and a `torch.dtype` among the arguments) on one image of
each of the first 10 classes of ../shared/imagenet-sample (read from there, never copied), with
`ModelCheckpoint`:

- lightning_raw.ckpt               plain run
- lightning_raw_no_hparams.ckpt    the same checkpoint re-saved by torch.save without `hyper_parameters`
- lightning_swa.ckpt               with `StochasticWeightAveraging` (average in the callback state)
- lightning_ema.ckpt               with a timm `ModelEmaV3` kept as `self.model_ema`
- timm_train.pth.tar               timm's `CheckpointSaver` (what timm's train.py writes: `state_dict`,
                                   `state_dict_ema`, `args` as an `argparse.Namespace`, ...)

and beside them:
- expected_logits.json  PyTorch's logits (`model.eval()`; the raw and the averaged weights of each
                        checkpoint, loaded back from the file) on a few shared images
- input_<synset>.npy    the exact f32 [1, 3, 224, 224] tensors those logits were computed from
                        (PIL-decoded, timm's eval transform)
- eval_transform.txt    the eval transform's repr()
- config.json           timm's config for the model (`save_config_for_hf`, as `save_for_hf` writes it)
- manifest.json         library versions, model and training settings, file sizes and sha256
"""
import argparse
import copy
import functools
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
import pytorch_lightning as pl
import timm
import torch
import torchvision
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint, StochasticWeightAveraging
from timm.data import create_transform, resolve_data_config
from timm.models._hub import save_config_for_hf
from timm.utils import CheckpointSaver, ModelEmaV3
from torchvision import transforms as T

MODEL_NAME = "vit_tiny_patch16_224"
MODEL_ARGS = {"embed_dim": 32, "depth": 2, "num_heads": 2}
NUM_CLASSES = 10
EVAL_IMAGES = 4  # logits and .npy inputs for this many images


class Images(torch.utils.data.Dataset):
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB")), i


class LitViT(pl.LightningModule):
    """The seed's LightningModule: a timm model as `self.model`, hyperparameters saved as given."""

    def __init__(self, model_name, num_classes, lr, train_transform, args, loss_fn, dtype, model_args, ema_decay=None):
        super().__init__()
        self.save_hyperparameters()
        self.model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_args)
        self.model_ema = ModelEmaV3(self.model, decay=ema_decay) if ema_decay else None

    def forward(self, x):
        return self.model(x.to(self.hparams.dtype))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.hparams.loss_fn(self(x), y)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=self.global_step)

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=self.hparams.lr)


def train_transform():
    return T.Compose([T.Resize((224, 224), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def make_module(ema_decay=None):
    run_args = argparse.Namespace(model=MODEL_NAME, epochs=4, lr=0.05, batch_size=5, seed=0, smoothing=0.1)
    return LitViT(
        MODEL_NAME, NUM_CLASSES, 0.05, train_transform(), run_args,
        functools.partial(torch.nn.functional.cross_entropy, label_smoothing=0.1), torch.float32, MODEL_ARGS, ema_decay,
    )


def fit(module, files, work, extra_callbacks=(), epochs=3):
    pl.seed_everything(0, workers=True)
    ckpt_cb = ModelCheckpoint(dirpath=work, filename="last")
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, deterministic=True, callbacks=[ckpt_cb, *extra_callbacks],
    )
    loader = torch.utils.data.DataLoader(Images(files, train_transform()), batch_size=5, shuffle=True, num_workers=0)
    trainer.fit(module, loader)
    return Path(ckpt_cb.best_model_path)


def strip(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def logits_of(state, inputs):
    model = timm.create_model(MODEL_NAME, pretrained=False, num_classes=NUM_CLASSES, **MODEL_ARGS)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return [model(x).reshape(-1).tolist() for x in inputs]


def max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="folder of ImageNet sample JPEGs named SYNSET_name.JPEG")
    ap.add_argument("--out", required=True, help="output folder (quant/tests/fixtures/lightning)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(a.images).glob("*.JPEG"))[:NUM_CLASSES]
    assert len(files) == NUM_CLASSES, f"need {NUM_CLASSES} images in {a.images}"
    classes = [f.name.split("_")[0] for f in files]

    # The eval transform and config.json timm gives this model (pretrained config of vit_tiny_patch16_224).
    probe = timm.create_model(MODEL_NAME, pretrained=False, num_classes=NUM_CLASSES, **MODEL_ARGS)
    eval_tf = create_transform(**resolve_data_config({}, model=probe), is_training=False)
    (out / "eval_transform.txt").write_text(repr(eval_tf) + "\n")
    save_config_for_hf(probe, out / "config.json", model_args=MODEL_ARGS)

    eval_files = files[::NUM_CLASSES // EVAL_IMAGES][:EVAL_IMAGES]
    inputs = []
    for f in eval_files:
        with Image.open(f) as im:
            x = eval_tf(im.convert("RGB")).unsqueeze(0).contiguous()
        assert x.dtype == torch.float32 and tuple(x.shape) == (1, 3, 224, 224)
        np.save(out / f"input_{f.name.split('_')[0]}.npy", x.numpy())
        inputs.append(x)

    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # plain fine-tune
        module = make_module()
        path = fit(module, files, tmp / "raw")
        shutil.copy(path, out / "lightning_raw.ckpt")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        expected["lightning_raw.ckpt"] = {"raw": logits_of(strip(ckpt["state_dict"], "model."), inputs)}
        del ckpt["hyper_parameters"]
        torch.save(ckpt, out / "lightning_raw_no_hparams.ckpt")

        # with StochasticWeightAveraging: averages at the start of epochs 2..4 (1-based); at the end of
        # training Lightning copies the average into the module, after ModelCheckpoint wrote the raw weights.
        module = make_module()
        path = fit(module, files, tmp / "swa", [StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2, annealing_epochs=1)], epochs=4)
        shutil.copy(path, out / "lightning_swa.ckpt")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        swa_state = ckpt["callbacks"]["StochasticWeightAveraging"]
        raw = logits_of(strip(ckpt["state_dict"], "model."), inputs)
        swa = logits_of(strip(swa_state["average_model_state"], "model."), inputs)
        fitted = logits_of(strip(module.state_dict(), "model."), inputs)
        assert max_diff(swa, fitted) < 1e-6, "the callback's average is what Lightning put into the module"
        expected["lightning_swa.ckpt"] = {"raw": raw, "swa": swa, "n_averaged": swa_state["n_averaged"]}

        # with a timm ModelEmaV3 as self.model_ema
        module = make_module(ema_decay=0.8)
        path = fit(module, files, tmp / "ema")
        shutil.copy(path, out / "lightning_ema.ckpt")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        expected["lightning_ema.ckpt"] = {
            "raw": logits_of(strip(ckpt["state_dict"], "model."), inputs),
            "ema": logits_of(strip(ckpt["state_dict"], "model_ema.module."), inputs),
        }

        # timm's own training checkpoint (train.py's CheckpointSaver) from the EMA run's weights
        saver = CheckpointSaver(module.model, module.optimizers().optimizer, args=module.hparams.args,
                                model_ema=module.model_ema, checkpoint_dir=str(tmp / "timm"), max_history=1)
        os.makedirs(tmp / "timm")
        saver.save_checkpoint(epoch=2, metric=0.5)
        best = tmp / "timm" / "last.pth.tar"
        shutil.copy(best, out / "timm_train.pth.tar")
        ckpt = torch.load(best, map_location="cpu", weights_only=False)
        expected["timm_train.pth.tar"] = {
            "raw": logits_of(ckpt["state_dict"], inputs),
            "ema": logits_of(ckpt["state_dict_ema"], inputs),
        }

    for name, e in expected.items():
        for kind in ("swa", "ema"):
            if kind in e:
                d = max_diff(e["raw"], e[kind])
                print(f"{name}: raw vs {kind} logits differ by up to {d:.4g}")
                assert d > 1e-2, f"{name}: the {kind} weights are too close to the raw ones to tell them apart"

    (out / "expected_logits.json").write_text(json.dumps({
        "classes": classes,
        "images": [{"file": f.name, "input": f"input_{f.name.split('_')[0]}.npy"} for f in eval_files],
        "checkpoints": expected,
    }, indent=1) + "\n")
    manifest = {
        "generator": "quant/scripts/make_lightning_fixtures.sh",
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "pytorch_lightning": pl.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
        },
        "model": {"create_model": MODEL_NAME, "pretrained": False, "num_classes": NUM_CLASSES, **MODEL_ARGS},
        "training": "SGD lr 0.05, batch 5, 3 epochs (SWA run: 4 epochs, swa_epoch_start=2, swa_lrs=0.05; "
                    "EMA run: ModelEmaV3 decay 0.8), cross-entropy with label smoothing 0.1, seed 0, "
                    "one image of each of the first 10 classes of imagenet-sample, train transform "
                    + repr(train_transform()).replace("\n", " "),
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in sorted(out.iterdir()) if p.name != "manifest.json"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for p in sorted(out.iterdir()):
        print(f"{p.stat().st_size:>9}  {p.name}")


if __name__ == "__main__":
    sys.exit(main())
