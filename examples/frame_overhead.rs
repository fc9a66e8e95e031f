//! What a raw camera frame costs on top of the forward pass, measured call by call: alternates
//! `Session::logits` (the forward pass on a ready tensor) and `Session::classify_frame` (the same
//! pass after the frame's colour conversion, resize, crop and normalization) on one model, and
//! prints the median of `classify_frame` ÷ the mean of the `logits` calls on either side of it,
//! and the median difference. A pair spans two forward passes, so a VM that changes speed every
//! fraction of a second moves both sides alike. The Rust twin of `scripts/bench_python.py --pairs`
//! (issue 15: `classify_frame` within 5 % of `vitedge bench`), without Python in the way.
//!
//!     cargo run --release --example frame_overhead -- models/vit_tiny_int8.vitb [threads] [pairs] [WIDTHxHEIGHT]

use std::time::Instant;

use vitedge::engine::{Backend, EngineOptions};
use vitedge::session::{FrameLayout, Session};
use vitedge::stream::PixelFormat;

/// A smooth NV12 frame (a gradient plus noise, like a camera frame rather than white noise).
fn nv12_frame(w: usize, h: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut noise = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut f = Vec::with_capacity(w * h * 3 / 2);
    for y in 0..h {
        for x in 0..w {
            f.push(((x + y) * 255 / (w + h) + noise(32) as usize).clamp(16, 235) as u8);
        }
    }
    for _ in 0..h.div_ceil(2) * w.div_ceil(2) * 2 {
        f.push(100 + noise(56) as u8);
    }
    f
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: frame_overhead MODEL [THREADS=1] [PAIRS=1000] [WIDTHxHEIGHT=640x480]";
    let model = args.first().ok_or(usage)?;
    let threads = args.get(1).map_or(Ok(1), |v| v.parse())?;
    let pairs: usize = args.get(2).map_or(Ok(1000), |v| v.parse())?;
    let (w, h) = match args.get(3).map(|s| s.split_once('x')) {
        None => (640, 480),
        Some(Some((w, h))) => (w.parse()?, h.parse()?),
        Some(None) => return Err(usage.into()),
    };
    if pairs < 2 {
        return Err("PAIRS must be at least 2".into());
    }
    let mut session = Session::open(model, Backend::Native, &EngineOptions { threads, ..Default::default() })?;
    let frames: Vec<Vec<u8>> = (0..8).map(|s| nv12_frame(w, h, s)).collect();
    let s = session.model().preprocess().input_size;
    let tensor = vec![0.1f32; 3 * s * s];
    let layout = FrameLayout::packed(PixelFormat::Nv12, w, h);
    for i in 0..20 {
        session.logits(&tensor)?;
        session.classify_frame(&frames[i % frames.len()], &layout, 5)?;
    }
    let (mut ratios, mut diffs) = (Vec::new(), Vec::new());
    let (mut before, mut frame_time) = (None, 0.0);
    for i in 0..pairs {
        let t = Instant::now();
        session.logits(&tensor)?;
        let after = t.elapsed().as_secs_f64();
        if let Some(b) = before {
            let mean = (b + after) / 2.0;
            ratios.push(frame_time / mean);
            diffs.push(frame_time - mean);
        }
        let t = Instant::now();
        session.classify_frame(&frames[i % frames.len()], &layout, 5)?;
        frame_time = t.elapsed().as_secs_f64();
        before = Some(after);
    }
    println!(
        "{model}: {threads} thread(s), {w}x{h} NV12, {pairs} pairs: classify_frame / logits median {:.4}, difference median {:.1} us",
        median(ratios),
        median(diffs) * 1e6
    );
    Ok(())
}
