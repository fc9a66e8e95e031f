//! The core path end to end: checkpoint → blob → native and tract engines, on real images.

mod common;

use common::*;
use vitedge::classify::{argmax, cosine};
use vitedge::engine::{self, Backend, EngineOptions};
#[cfg(feature = "tract")]
use vitedge::model::synthetic::vit_tiny_config;
use vitedge::model::Model;
use vitedge::preprocess::preprocess_file;
use vitedge_quant::convert::Precision;

fn logits_for(model: &Model, backend: Backend, images: &[std::path::PathBuf]) -> Vec<Vec<f32>> {
    let mut e = engine::create(model, backend, &EngineOptions::default()).unwrap();
    let mut input = vec![0f32; model.config().input_len()];
    images
        .iter()
        .map(|p| {
            preprocess_file(p, model.preprocess(), &mut input).unwrap();
            let mut l = vec![0f32; model.config().num_classes];
            e.infer(&input, &mut l).unwrap();
            l
        })
        .collect()
}

#[test]
#[cfg(feature = "tract")]
fn random_checkpoint_native_equals_tract_on_real_images() {
    if skip_slow() || shared().is_none() {
        eprintln!("skipped: needs ../shared/imagenet-sample and native speed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("random_vit.safetensors");
    write_random_safetensors(&vit_tiny_config(1000), 1234, &ckpt);
    let blob = convert_file(&ckpt, &dir.path().join("random.vitb"), Precision::F32, false);
    let model = Model::open(&blob).unwrap();
    let images: Vec<_> = sample_images().into_iter().step_by(50).collect();
    let native = logits_for(&model, Backend::Native, &images);
    let tract = logits_for(&model, Backend::Tract, &images);
    let mut worst = 0f32;
    for (a, b) in native.iter().zip(&tract) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("native vs tract on {} real images: max-abs logit difference {worst:e}", images.len());
    assert!(worst <= 1e-4, "max-abs {worst}");
    // Guard against a vacuous pass: the logits must actually vary across images.
    assert!(native[0].iter().zip(&native[1]).any(|(a, b)| (a - b).abs() > 1e-2));
}

#[test]
fn f16_blob_matches_f32_blob() {
    if skip_without_real_data("f16_blob_matches_f32_blob") {
        return;
    }
    let f32m = Model::open(real_blob(Precision::F32)).unwrap();
    let f16m = Model::open(real_blob(Precision::F16)).unwrap();
    assert_eq!(f16m.header().precision, "f16");
    assert!(f16m.blob().file_len() < f32m.blob().file_len() * 6 / 10);
    let images: Vec<_> = sample_images().into_iter().step_by(5).take(100).collect();
    assert_eq!(images.len(), 100);
    let a = logits_for(&f32m, Backend::Native, &images);
    let b = logits_for(&f16m, Backend::Native, &images);
    let cos: Vec<f64> = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect();
    let agree = a.iter().zip(&b).filter(|(x, y)| argmax(x) == argmax(y)).count();
    let min = cos.iter().copied().fold(1.0, f64::min);
    eprintln!("f16 vs f32 on 100 images: min cosine {min:.7}, top-1 agreement {agree}/100");
    assert!(min >= 0.9999, "min cosine {min}");
    assert!(agree >= 99, "agreement {agree}/100");
}

#[test]
fn blob_is_mapped_not_copied() {
    if skip_without_real_data("blob_is_mapped_not_copied") {
        return;
    }
    let model = Model::open(real_blob(Precision::F32)).unwrap();
    let w = model.weights().unwrap();
    let base = model.blob().tensor("pos_embed").unwrap().bytes.as_ptr();
    // The weight views point into the same mapping as the raw tensor bytes.
    assert_eq!(w.pos_embed.as_ptr() as *const u8, base);
    assert_eq!(base as usize % 64, 0, "tensors are 64-byte aligned in memory");
}
