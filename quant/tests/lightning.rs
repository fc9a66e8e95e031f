//! Checkpoints written by the genuine tools (torch 2.15, timm 1.0.31, pytorch-lightning 2.6; see
//! quant/tests/fixtures/lightning/manifest.json and quant/scripts/make_lightning_fixtures.sh):
//! each converts, the native engine reproduces PyTorch's logits on the exact input tensors PyTorch
//! was fed (so only the weights are under test), the right weights are taken (raw, SWA, EMA) and
//! recorded in the blob, and Python objects in `hyper_parameters` change nothing.

mod common;

use std::path::PathBuf;

use vitedge::engine::{self, Backend, EngineOptions};
use vitedge::model::Model;
use vitedge_quant::checkpoint::{self, LoadOptions, WeightsChoice, WeightsKind};
use vitedge_quant::convert::{float_blob, prepare_file, write_blob, ConvertOptions, Precision};

fn fixture(name: &str) -> PathBuf {
    common::fixture(&format!("lightning/{name}"))
}

struct Expected {
    json: serde_json::Value,
}

impl Expected {
    fn load() -> Expected {
        Expected { json: serde_json::from_str(&std::fs::read_to_string(fixture("expected_logits.json")).unwrap()).unwrap() }
    }
    fn inputs(&self) -> Vec<Vec<f32>> {
        self.json["images"].as_array().unwrap().iter().map(|i| vitedge::npy::read_input(&fixture(i["input"].as_str().unwrap()), 3, 224).unwrap()).collect()
    }
    fn logits(&self, ckpt: &str, kind: &str) -> Vec<Vec<f32>> {
        let v = &self.json["checkpoints"][ckpt][kind];
        v.as_array()
            .unwrap_or_else(|| panic!("no {kind} logits for {ckpt}"))
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
            .collect()
    }
}

fn max_abs(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// Converts `ckpt` with `weights` to an f32 blob and returns the blob's `source.weights` and the
/// native engine's logits on `inputs`.
fn convert_and_run(ckpt: &str, weights: WeightsChoice, inputs: &[Vec<f32>]) -> (String, Vec<Vec<f32>>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ConvertOptions { heads: Some(2), weights, ..Default::default() };
    let prepared = prepare_file(&fixture(ckpt), &opts).unwrap();
    let path = dir.path().join("m.vitb");
    write_blob(&float_blob(&prepared, Precision::F32), &path).unwrap();
    let model = Model::open(&path).unwrap();
    let taken = model.header().source["weights"].as_str().unwrap().to_string();
    let mut e = engine::create(&model, Backend::Native, &EngineOptions { threads: 1, ..Default::default() }).unwrap();
    let logits = inputs
        .iter()
        .map(|x| {
            let mut l = vec![0.0; model.config().num_classes];
            e.infer(x, &mut l).unwrap();
            l
        })
        .collect();
    (taken, logits)
}

#[test]
fn every_fixture_reproduces_pytorch_logits_with_the_weights_asked_for() {
    let exp = Expected::load();
    let inputs = exp.inputs();
    assert_eq!(inputs.len(), 4);
    for (ckpt, expected_from, choice, kind) in [
        ("lightning_raw.ckpt", "lightning_raw.ckpt", WeightsChoice::Auto, "raw"),
        ("lightning_raw_no_hparams.ckpt", "lightning_raw.ckpt", WeightsChoice::Auto, "raw"),
        ("lightning_swa.ckpt", "lightning_swa.ckpt", WeightsChoice::Auto, "swa"),
        ("lightning_swa.ckpt", "lightning_swa.ckpt", WeightsChoice::Raw, "raw"),
        ("lightning_swa.ckpt", "lightning_swa.ckpt", WeightsChoice::Swa, "swa"),
        ("lightning_ema.ckpt", "lightning_ema.ckpt", WeightsChoice::Auto, "ema"),
        ("lightning_ema.ckpt", "lightning_ema.ckpt", WeightsChoice::Raw, "raw"),
        ("timm_train.pth.tar", "timm_train.pth.tar", WeightsChoice::Auto, "ema"),
        ("timm_train.pth.tar", "timm_train.pth.tar", WeightsChoice::Raw, "raw"),
    ] {
        let (taken, got) = convert_and_run(ckpt, choice, &inputs);
        assert_eq!(taken, kind, "{ckpt} {choice:?}");
        let want = exp.logits(expected_from, kind);
        let d = max_abs(&got, &want);
        eprintln!("{ckpt} --weights {choice:?}: {kind} weights, max |logit - PyTorch| = {d:.2e}");
        assert!(d <= 1e-4, "{ckpt} {choice:?}: logits differ from PyTorch's by {d}");
        // The averaged and raw weights are far apart, so taking the wrong ones would fail above.
        if kind != "raw" {
            assert!(max_abs(&want, &exp.logits(expected_from, "raw")) > 1e-2);
        }
    }
}

#[test]
fn averaged_weights_are_found_named_and_recorded() {
    let load = |f: &str, w| checkpoint::load(&fixture(f), &LoadOptions { weights: w, ..Default::default() });
    let swa = load("lightning_swa.ckpt", WeightsChoice::Auto).unwrap();
    assert_eq!(swa.weights.kind, WeightsKind::Swa);
    assert_eq!(swa.weights.location, "callbacks/StochasticWeightAveraging/average_model_state");
    assert_eq!(swa.offered.iter().map(|o| o.kind).collect::<Vec<_>>(), [WeightsKind::Raw, WeightsKind::Swa]);
    let ema = load("lightning_ema.ckpt", WeightsChoice::Auto).unwrap();
    assert_eq!(ema.weights.location, "state_dict (keys model_ema.*)");
    assert!(ema.state_dict.keys().all(|k| k.starts_with("model_ema.module.")), "only the EMA copy");
    let raw = load("lightning_ema.ckpt", WeightsChoice::Raw).unwrap();
    assert!(raw.state_dict.keys().all(|k| k.starts_with("model.")), "no EMA key in the raw weights");
    let timm = load("timm_train.pth.tar", WeightsChoice::Auto).unwrap();
    assert_eq!(timm.weights.location, "state_dict_ema");
    assert_eq!(timm.placeholders, ["argparse.Namespace"]);
    // Asking for weights a checkpoint does not have names what it has.
    let err = load("lightning_raw.ckpt", WeightsChoice::Ema).unwrap_err().to_string();
    assert!(err.contains("--weights ema: the checkpoint has no such weights; it holds raw (state_dict)"), "{err}");
    // The blob records which weights it holds.
    let dir = tempfile::tempdir().unwrap();
    let p = prepare_file(&fixture("lightning_swa.ckpt"), &ConvertOptions { heads: Some(2), ..Default::default() }).unwrap();
    let path = dir.path().join("swa.vitb");
    write_blob(&float_blob(&p, Precision::F32), &path).unwrap();
    let h = Model::open(&path).unwrap().header().source.clone();
    assert_eq!(h["weights"], "swa");
    assert_eq!(h["weights_from"], "callbacks/StochasticWeightAveraging/average_model_state");
}

#[test]
fn hyper_parameter_objects_change_nothing_in_the_blob() {
    let with = checkpoint::load(&fixture("lightning_raw.ckpt"), &LoadOptions::default()).unwrap();
    let without = checkpoint::load(&fixture("lightning_raw_no_hparams.ckpt"), &LoadOptions::default()).unwrap();
    // save_hyperparameters() stored a Compose (with its transforms and an InterpolationMode), a
    // Namespace, a partial of cross_entropy and torch.float32: all placeholders, never imported.
    for name in [
        "torchvision.transforms.transforms.Compose",
        "torchvision.transforms.transforms.Resize",
        "torchvision.transforms.functional.InterpolationMode",
        "argparse.Namespace",
        "functools.partial",
        "torch.nn.functional.cross_entropy",
        "torch.float32",
    ] {
        assert!(with.placeholders.iter().any(|p| p == name), "{name} not in {:?}", with.placeholders);
    }
    assert!(without.placeholders.is_empty(), "{:?}", without.placeholders);
    let blob = |f: &str| {
        let p = prepare_file(&fixture(f), &ConvertOptions { heads: Some(2), ..Default::default() }).unwrap();
        common::tensor_payloads(&float_blob(&p, Precision::F32))
    };
    let (a, b) = (blob("lightning_raw.ckpt"), blob("lightning_raw_no_hparams.ckpt"));
    assert_eq!(a.len(), 2 * 12 + 8);
    assert!(a == b, "tensor names, shapes, CRCs or payloads differ");
}
