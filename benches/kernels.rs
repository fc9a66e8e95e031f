//! Criterion benchmarks of the compute kernels on ViT-Tiny's shapes, for every kernel set this CPU
//! supports (`Kernels::all_available`: scalar plus the SIMD sets), single-threaded.
//!
//! - `gemm_f32`, `gemm_f16`, `gemm_u8i8`: `m × n × k` GEMMs with bias (the shapes of one ViT-Tiny
//!   block, m = 197 tokens: qkv 576×192, attention projection 192×192, fc1 768×192, fc2 192×768; and
//!   the patch embedding, m = 196 patches, 192×768). Throughput is counted in FLOPs (2·m·n·k), so
//!   criterion's "elem/s" reads as FLOP/s.
//! - `layer_norm` (197 rows of 192), `softmax` (3 heads × 197 rows of 197, scale 1/8), `gelu`
//!   (197 × 768 values), `quantize_u8` (197 rows of 192 and of 768): one block's worth of each;
//!   throughput in values.
//!
//! Run: `cargo bench --bench kernels` (about 3 minutes on 2 cores with the default short settings
//! below), a subset with a filter (`cargo bench --bench kernels -- gemm_u8i8/avx512`), longer runs
//! with criterion's flags (`-- --measurement-time 5 --sample-size 50`). The whole model is timed by
//! `vitedge bench` instead.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use half::f16;
use vitedge::blob::round_up;
use vitedge::kernels::{pack, Epilogue, GemmArgs, GemmU8I8Args, Kernels};
use vitedge::model::synthetic::Rng;

/// ViT-Tiny tokens (196 patches + the class token).
const TOKENS: usize = 197;
/// ViT-Tiny width.
const DIM: usize = 192;
/// ViT-Tiny MLP hidden width.
const HIDDEN: usize = 768;
/// ViT-Tiny heads.
const HEADS: usize = 3;

/// One GEMM shape: a name, `m`, `n` (output columns) and `k` (reduction).
struct Shape {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
}

const SHAPES: [Shape; 5] = [
    Shape { name: "qkv", m: TOKENS, n: 3 * DIM, k: DIM },
    Shape { name: "proj", m: TOKENS, n: DIM, k: DIM },
    Shape { name: "fc1", m: TOKENS, n: HIDDEN, k: DIM },
    Shape { name: "fc2", m: TOKENS, n: DIM, k: HIDDEN },
    Shape { name: "patch_embed", m: TOKENS - 1, n: DIM, k: 3 * 16 * 16 },
];

impl Shape {
    fn id(&self, set: &str) -> BenchmarkId {
        BenchmarkId::new(set, format!("{}_{}x{}x{}", self.name, self.m, self.n, self.k))
    }

    fn flops(&self) -> Throughput {
        Throughput::Elements(2 * (self.m * self.n * self.k) as u64)
    }
}

/// Random f32 operands of one shape with the weights packed in `Panel16`.
struct FloatOperands {
    a: Vec<f32>,
    w: Vec<f32>,
    w16: Vec<f16>,
    bias: Vec<f32>,
    out: Vec<f32>,
}

impl FloatOperands {
    fn new(s: &Shape, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let a = rng.normals(s.m * s.k, 1.0);
        let rows = rng.normals(s.n * s.k, 1.0 / (s.k as f32).sqrt());
        let mut w = vec![0f32; round_up(s.n, 16) * s.k];
        pack::panel16_from_rows(&rows, s.n, s.k, s.k, &mut w);
        let w16 = w.iter().map(|&v| f16::from_f32(v)).collect();
        FloatOperands { a, w, w16, bias: rng.normals(s.n, 0.5), out: vec![0f32; s.m * s.n] }
    }
}

fn gemm_float(c: &mut Criterion) {
    let sets = Kernels::all_available();
    let mut g32 = c.benchmark_group("gemm_f32");
    for s in &SHAPES {
        let mut ops = FloatOperands::new(s, 1);
        g32.throughput(s.flops());
        for (set, k) in &sets {
            g32.bench_function(s.id(set), |b| {
                b.iter(|| {
                    let args = GemmArgs { m: s.m, n: s.n, k: s.k, a: black_box(&ops.a), lda: s.k, w: &ops.w, bias: Some(&ops.bias), epilogue: Epilogue::Store };
                    k.gemm_f32.gemm(&args, &mut ops.out, s.n);
                    black_box(&mut ops.out);
                })
            });
        }
    }
    g32.finish();
    let mut g16 = c.benchmark_group("gemm_f16");
    for s in &SHAPES {
        let mut ops = FloatOperands::new(s, 2);
        g16.throughput(s.flops());
        for (set, k) in &sets {
            g16.bench_function(s.id(set), |b| {
                b.iter(|| {
                    let args = GemmArgs { m: s.m, n: s.n, k: s.k, a: black_box(&ops.a), lda: s.k, w: &ops.w16, bias: Some(&ops.bias), epilogue: Epilogue::Store };
                    k.gemm_f16.gemm(&args, &mut ops.out, s.n);
                    black_box(&mut ops.out);
                })
            });
        }
    }
    g16.finish();
}

fn gemm_u8i8(c: &mut Criterion) {
    let sets = Kernels::all_available();
    let mut g = c.benchmark_group("gemm_u8i8");
    for s in &SHAPES {
        let mut rng = Rng::new(3);
        let lda = round_up(s.k, 4);
        let a: Vec<u8> = (0..s.m * lda).map(|_| (rng.next_u64() & 255) as u8).collect();
        let rows: Vec<i8> = (0..s.n * s.k).map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8).collect();
        let w = pack::panel16x4_from_rows(&rows, s.n, s.k);
        let w_sum = pack::panel16x4_row_sums(&w, s.n, s.k);
        let a_scale: Vec<f32> = (0..s.m).map(|_| 0.001 + 0.05 * rng.uniform()).collect();
        let a_zero: Vec<i32> = (0..s.m).map(|_| (rng.next_u64() % 256) as i32).collect();
        let w_scale: Vec<f32> = (0..s.n).map(|_| 0.001 + 0.02 * rng.uniform()).collect();
        let bias = rng.normals(s.n, 0.5);
        let mut out = vec![0f32; s.m * s.n];
        g.throughput(s.flops());
        for (set, k) in &sets {
            g.bench_function(s.id(set), |b| {
                b.iter(|| {
                    let args = GemmU8I8Args {
                        m: s.m, n: s.n, k: s.k, a: black_box(&a), lda, a_scale: &a_scale, a_zero: &a_zero,
                        w: &w, w_scale: &w_scale, w_sum: &w_sum, bias: Some(&bias), epilogue: Epilogue::Store,
                    };
                    k.gemm_u8i8.gemm(&args, &mut out, s.n);
                    black_box(&mut out);
                })
            });
        }
    }
    g.finish();
}

fn vector_ops(c: &mut Criterion) {
    let sets = Kernels::all_available();
    let mut rng = Rng::new(4);
    let tokens = rng.normals(TOKENS * DIM, 3.0);
    let (gamma, beta) = (rng.normals(DIM, 1.0), rng.normals(DIM, 0.2));
    let scores = rng.normals(HEADS * TOKENS * TOKENS, 8.0);
    let hidden = rng.normals(TOKENS * HIDDEN, 2.0);

    let mut g = c.benchmark_group("layer_norm");
    g.throughput(Throughput::Elements(tokens.len() as u64));
    let mut out = vec![0f32; tokens.len()];
    for (set, k) in &sets {
        g.bench_function(BenchmarkId::new(*set, format!("{TOKENS}x{DIM}")), |b| {
            b.iter(|| {
                for (x, o) in black_box(&tokens).chunks_exact(DIM).zip(out.chunks_exact_mut(DIM)) {
                    k.vector.layer_norm(x, &gamma, &beta, 1e-6, o);
                }
                black_box(&mut out);
            })
        });
    }
    g.finish();

    // softmax and GELU work in place: each iteration starts from a fresh copy (not timed).
    let mut g = c.benchmark_group("softmax");
    g.throughput(Throughput::Elements(scores.len() as u64));
    for (set, k) in &sets {
        g.bench_function(BenchmarkId::new(*set, format!("{HEADS}x{TOKENS}x{TOKENS}")), |b| {
            b.iter_batched_ref(
                || scores.clone(),
                |x| x.chunks_exact_mut(TOKENS).for_each(|row| k.vector.softmax(row, 0.125)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("gelu");
    g.throughput(Throughput::Elements(hidden.len() as u64));
    for (set, k) in &sets {
        g.bench_function(BenchmarkId::new(*set, format!("{TOKENS}x{HIDDEN}")), |b| {
            b.iter_batched_ref(|| hidden.clone(), |x| k.vector.gelu(x), BatchSize::LargeInput)
        });
    }
    g.finish();

    let mut g = c.benchmark_group("quantize_u8");
    for (width, src) in [(DIM, &tokens), (HIDDEN, &hidden)] {
        g.throughput(Throughput::Elements(src.len() as u64));
        let mut q = vec![0u8; src.len()];
        for (set, k) in &sets {
            g.bench_function(BenchmarkId::new(*set, format!("{TOKENS}x{width}")), |b| {
                b.iter(|| {
                    let mut zero_sum = 0i32;
                    for (x, o) in black_box(src).chunks_exact(width).zip(q.chunks_exact_mut(width)) {
                        zero_sum += k.vector.quantize_u8(x, o).1;
                    }
                    black_box((&mut q, zero_sum));
                })
            });
        }
    }
    g.finish();
}

/// Short defaults so the whole suite (≈ 100 benchmarks incl. the slow scalar ones) takes minutes;
/// criterion's command-line flags override them.
fn short() -> Criterion {
    Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(1000))
}

criterion_group! {
    name = kernels;
    config = short();
    targets = gemm_float, gemm_u8i8, vector_ops
}
criterion_main!(kernels);
