//! Accuracy of the real pretrained ViT-Tiny on the 500 sample images, on both engines.

mod common;

use common::*;
use vitedge::engine::{Backend, EngineOptions};
use vitedge::eval::evaluate;
use vitedge::model::Model;
use vitedge_quant::convert::Precision;

fn check_f32(backend: Backend) {
    let model = Model::open(real_blob(Precision::F32)).unwrap();
    let images = sample_images();
    assert_eq!(images.len(), 500);
    let r = evaluate(&model, None, &images, backend, &EngineOptions::default(), false).unwrap();
    eprintln!("{backend:?} f32: top-1 {:.2}%, top-5 {:.2}% on {} images ({:.1} ms/image)", 100.0 * r.top1, 100.0 * r.top5, r.images, r.ms_mean);
    assert_eq!(r.images, 500);
    assert!(r.top1 >= 0.78, "top-1 {}", r.top1);
}

#[test]
fn f32_top1_on_sample_native() {
    if skip_without_real_data("f32_top1_on_sample_native") {
        return;
    }
    check_f32(Backend::Native);
}

#[test]
#[cfg(feature = "tract")]
fn f32_top1_on_sample_tract() {
    if skip_without_real_data("f32_top1_on_sample_tract") {
        return;
    }
    check_f32(Backend::Tract);
}
