//! Accuracy-vs-float regression suite: int8, f16 and bf16 blobs of the real ViT-Tiny against the f32 blob,
//! on the sample images the int8 calibration did not see, on the native and the tract engines.
//! Thresholds are the measured values (see README) less a small margin, so a regression fails.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::*;
use vitedge::engine::{AttentionPrecision, Backend, EngineOptions};
use vitedge::eval::{evaluate, EvalResult};
use vitedge::model::Model;
use vitedge_quant::convert::{self, ConvertOptions, Labels, Precision};

/// Calibration images used by the suite (evenly spaced over the 500).
const CALIB_COUNT: usize = 32;

fn int8_blob() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let shared = shared().unwrap();
        let labels = Labels::read(&shared.join("imagenet_classes.txt")).unwrap();
        let opts = ConvertOptions { labels: Some(labels), ..Default::default() };
        let prepared = convert::prepare_file(&real_checkpoint().unwrap(), &opts).unwrap();
        let q = vitedge_quant::int8::quantize(&prepared, &shared.join("imagenet-sample"), CALIB_COUNT).unwrap();
        eprintln!("{}", q.report.table());
        let out = scratch().join("vit_tiny_int8.vitb");
        convert::write_blob(&q.writer, &out).unwrap();
        out
    })
    .clone()
}

/// Sample images minus the calibration images recorded in the int8 blob.
fn held_out(int8: &Model) -> Vec<PathBuf> {
    let calib = &int8.header().quantization.as_ref().unwrap().calibration_images;
    assert_eq!(calib.len(), CALIB_COUNT);
    sample_images()
        .into_iter()
        .filter(|p| !calib.iter().any(|c| p.file_name().unwrap().to_str() == Some(c.as_str())))
        .collect()
}

fn report(what: &str, r: &EvalResult) {
    eprintln!(
        "{what}: {} images, top-1 {:.2}% (f32 {:.2}%), top-5 {:.2}%, agreement {:.2}%, cosine mean {:.6} min {:.6}",
        r.images,
        100.0 * r.top1,
        100.0 * r.reference_top1.unwrap(),
        100.0 * r.top5,
        100.0 * r.agreement.unwrap(),
        r.cosine_mean.unwrap(),
        r.cosine_min.unwrap()
    );
}

#[test]
fn int8_blob_records_its_choices_and_is_small() {
    if skip_without_real_data("int8_blob_records_its_choices_and_is_small") {
        return;
    }
    let m = Model::open(int8_blob()).unwrap();
    m.blob().verify().unwrap();
    let q = m.header().quantization.as_ref().unwrap();
    assert_eq!(m.header().precision, "int8");
    assert_eq!(q.layers.len(), 2 + 4 * 12, "patch embedding, 48 block layers, head");
    assert!(q.layers.iter().all(|l| l.sqnr_db > 20.0), "every layer's measured SQNR is recorded");
    let f32_len = std::fs::metadata(real_blob(Precision::F32)).unwrap().len() as usize;
    assert!(m.blob().file_len() < f32_len * 3 / 10, "int8 blob {} vs f32 {f32_len}", m.blob().file_len());
}

/// int8 against f32 on the held-out images with `backend` and `opts`; `min_agreement` is the
/// measured agreement less a small margin (the target is 0.97).
fn check_int8(backend: Backend, opts: &EngineOptions, min_agreement: f64) {
    let int8 = Model::open(int8_blob()).unwrap();
    let f32m = Model::open(real_blob(Precision::F32)).unwrap();
    let images = held_out(&int8);
    assert_eq!(images.len(), 500 - CALIB_COUNT);
    let r = evaluate(&int8, Some(&f32m), &images, backend, opts, false).unwrap();
    report(&format!("int8 vs f32 ({backend:?}, {:?} attention)", opts.attention), &r);
    assert!(r.agreement.unwrap() >= min_agreement, "agreement {:?}", r.agreement);
    assert!(r.top1 >= r.reference_top1.unwrap() - 0.005, "top-1 {} vs f32 {:?}", r.top1, r.reference_top1);
    // The logit cosine is the stable measure (identical to 5 digits across kernel sets and attention
    // precisions), so its bounds are tight: mean measured 0.99943, min 0.99743–0.99812.
    assert!(r.cosine_mean.unwrap() >= 0.9992, "cosine mean {:?} (measured 0.99943)", r.cosine_mean);
    assert!(r.cosine_min.unwrap() >= 0.996, "cosine min {:?} (measured 0.99743–0.99812)", r.cosine_min);
}

#[test]
fn int8_tracks_f32_on_held_out_images_native() {
    if skip_without_real_data("int8_tracks_f32_on_held_out_images_native") {
        return;
    }
    // Measured 0.9786 (amx: bf16 attention on AMX tiles), 0.9850 (avx512: bf16 attention with
    // vdpbf16ps), 0.9808 (avx2: f32 attention), 0.9872 before bf16 attention: the same 4–7 near-tie
    // images flip with the summation order alone (top-1 82.26 % and cosine mean 0.99943 are identical
    // across all of them), so the bound sits below that spread, above the 0.97.
    check_int8(Backend::Native, &EngineOptions::default(), 0.975);
}

#[test]
fn int8_with_int8_attention_tracks_f32_on_held_out_images_native() {
    if skip_without_real_data("int8_with_int8_attention_tracks_f32_on_held_out_images_native") {
        return;
    }
    // The attention every aarch64 kernel set runs for int8 models (and any x86 set with
    // `--attention int8`). Its integer sums are exact, so this x86 run stands for the aarch64 one up
    // to the last bits of the f32 element-wise kernels (checked under qemu by scripts/arm-accuracy.sh).
    // Measured with avx2 kernels: agreement 0.9786, top-1 82.26 % (f32 82.05 %), cosine mean
    // 0.999338, min 0.997483.
    let opts = EngineOptions { attention: AttentionPrecision::Int8, ..Default::default() };
    check_int8(Backend::Native, &opts, 0.975);
}

#[test]
#[cfg(feature = "tract")]
fn int8_tracks_f32_on_held_out_images_tract() {
    if skip_without_real_data("int8_tracks_f32_on_held_out_images_tract") {
        return;
    }
    check_int8(Backend::Tract, &EngineOptions::default(), 0.975); // measured 0.9808
}

/// The `precision` blob against the f32 blob on all sample images (native engine, default
/// kernels), reported.
fn float_vs_f32(precision: Precision) -> EvalResult {
    let m = Model::open(real_blob(precision)).unwrap();
    assert_eq!(m.header().precision, precision.as_str());
    let f32m = Model::open(real_blob(Precision::F32)).unwrap();
    let r = evaluate(&m, Some(&f32m), &sample_images(), Backend::Native, &EngineOptions::default(), false).unwrap();
    report(&format!("{} vs f32 (native)", precision.as_str()), &r);
    r
}

#[test]
fn f16_tracks_f32_on_all_sample_images() {
    if skip_without_real_data("f16_tracks_f32_on_all_sample_images") {
        return;
    }
    let r = float_vs_f32(Precision::F16);
    assert!(r.agreement.unwrap() >= 0.998, "agreement {:?}", r.agreement);
    assert!(r.cosine_min.unwrap() >= 0.9999, "cosine min {:?}", r.cosine_min);
}

#[test]
fn bf16_tracks_f32_on_all_sample_images() {
    if skip_without_real_data("bf16_tracks_f32_on_all_sample_images") {
        return;
    }
    let bf16_len = std::fs::metadata(real_blob(Precision::Bf16)).unwrap().len() as usize;
    let f32_len = std::fs::metadata(real_blob(Precision::F32)).unwrap().len() as usize;
    assert!(bf16_len < f32_len * 6 / 10, "bf16 blob {bf16_len} vs f32 {f32_len}");
    let r = float_vs_f32(Precision::Bf16);
    // The bound: top-1 agreement with f32 ≥ 99 % on the 500 sample images.
    assert!(r.agreement.unwrap() >= 0.99, "agreement {:?}", r.agreement);
    assert!(r.top1 >= r.reference_top1.unwrap() - 0.005, "top-1 {} vs f32 {:?}", r.top1, r.reference_top1);
    // Measured with amx kernels: cosine mean 0.999975, min 0.999881–0.999898 (agreement 99.6–100 %).
    assert!(r.cosine_mean.unwrap() >= 0.99995, "cosine mean {:?} (measured 0.999975)", r.cosine_mean);
    assert!(r.cosine_min.unwrap() >= 0.9995, "cosine min {:?} (measured 0.999881–0.999898)", r.cosine_min);
}
