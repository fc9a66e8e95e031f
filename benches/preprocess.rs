//! Criterion benchmarks of preprocessing, the work `stream`, `classify_frame` and `classify` do
//! before the forward pass, single-threaded unless named, on the default ViT-Tiny configuration (bicubic resize
//! of the short side to 248, center crop 224, normalize):
//!
//! - `frame/<format>/<W>x<H>`: a raw camera frame through `FramePreprocessor::run` (colour
//!   conversion of the pixels the crop reads, resize, crop, normalize into the CHW f32 input);
//! - `rgb/<W>x<H>`: an RGB8 image through `Preprocessor::run` (what `classify` does after decoding);
//! - `frame_2_threads/nv12/<W>x<H>`: the same frame with its row blocks on a 2-thread engine pool
//!   (`FramePreprocessor::run_on`, as `stream` and `classify_frame` run it with `--threads 2`).
//!
//! Run: `cargo bench --bench preprocess` (under a minute), a subset with a filter
//! (`cargo bench --bench preprocess -- frame/nv12`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vitedge::model::synthetic::Rng;
use vitedge::preprocess::{PreprocessConfig, Preprocessor};
use vitedge::stream::{frame_size, ColorSpec, FramePreprocessor, PixelFormat};

/// Smooth content with noise, like a camera frame rather than white noise.
fn camera_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| ((i % 251) as u8).wrapping_add((rng.next_u64() >> 59) as u8)).collect()
}

fn frames(c: &mut Criterion) {
    let cfg = PreprocessConfig::augreg(224);
    let mut g = c.benchmark_group("frame");
    for (format, w, h) in [(PixelFormat::Nv12, 640, 480), (PixelFormat::Nv12, 1280, 720), (PixelFormat::Yuyv, 640, 480), (PixelFormat::Rgb24, 640, 480)] {
        let frame = camera_bytes(frame_size(format, w, h), 7);
        let mut pre = FramePreprocessor::new(&cfg, format, w, h, ColorSpec::default()).expect("frame geometry");
        let mut out = vec![0f32; 3 * 224 * 224];
        g.bench_function(BenchmarkId::new(format!("{format:?}").to_lowercase(), format!("{w}x{h}")), |b| {
            b.iter(|| pre.run(black_box(&frame), &mut out).expect("preprocess"))
        });
    }
    g.finish();
    let pool = vitedge::engine::pool::Pool::new(2);
    let mut g = c.benchmark_group("frame_2_threads");
    for (w, h) in [(640, 480), (1280, 720)] {
        let frame = camera_bytes(frame_size(PixelFormat::Nv12, w, h), 7);
        let mut pre = FramePreprocessor::new(&cfg, PixelFormat::Nv12, w, h, ColorSpec::default()).expect("frame geometry");
        let mut out = vec![0f32; 3 * 224 * 224];
        g.bench_function(BenchmarkId::new("nv12", format!("{w}x{h}")), |b| b.iter(|| pre.run_on(black_box(&frame), &mut out, &pool).expect("preprocess")));
    }
    g.finish();
    let mut g = c.benchmark_group("rgb");
    for (w, h) in [(500, 375), (1280, 720)] {
        let rgb = camera_bytes(w * h * 3, 9);
        let mut pre = Preprocessor::new(cfg.clone());
        let mut out = vec![0f32; 3 * 224 * 224];
        g.bench_function(BenchmarkId::from_parameter(format!("{w}x{h}")), |b| b.iter(|| pre.run(black_box(&rgb), w, h, &mut out).expect("preprocess")));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = frames
}
criterion_main!(benches);
