//! Every kernel set this CPU supports, against the scalar reference, on random shapes with ragged
//! edges (columns not multiples of 16, reductions not multiples of 4), strides and all epilogues.

use half::f16;
use proptest::prelude::*;
use vitedge::blob::round_up;
use vitedge::kernels::{pack, Epilogue, GemmArgs, GemmU8I8Args, Kernels};
use vitedge::model::synthetic::Rng;

fn epilogue(i: u8) -> Epilogue {
    [Epilogue::Store, Epilogue::Accumulate, Epilogue::Gelu][i as usize % 3]
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) -> Result<(), TestCaseError> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs();
        prop_assert!(err <= tol * (1.0 + y.abs()), "{what}: element {i}: {x} vs {y} (tol {tol})");
    }
    Ok(())
}

struct Case {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ldc: usize,
    a: Vec<f32>,
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    out0: Vec<f32>,
}

fn case(m: usize, n: usize, k: usize, pad_a: usize, pad_c: usize, with_bias: bool, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let (lda, ldc) = (k + pad_a, n + pad_c);
    Case {
        m,
        n,
        k,
        lda,
        ldc,
        a: rng.normals(m * lda, 1.0),
        w: rng.normals(n * k, 1.0 / (k as f32).sqrt()),
        bias: with_bias.then(|| rng.normals(n, 0.5)),
        out0: rng.normals(m * ldc, 1.0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn gemm_f32_and_f16_match_scalar(m in 1usize..40, n in 1usize..70, k in 1usize..300, pad_a in 0usize..5, pad_c in 0usize..5,
                                      with_bias: bool, ep in 0u8..3, seed: u64) {
        let c = case(m, n, k, pad_a, pad_c, with_bias, seed);
        let mut wp = vec![0f32; round_up(n, 16) * k];
        pack::panel16_from_rows(&c.w, n, k, k, &mut wp);
        let wh: Vec<f16> = wp.iter().map(|&v| f16::from_f32(v)).collect();
        let args = GemmArgs { m, n, k, a: &c.a, lda: c.lda, w: &wp, bias: c.bias.as_deref(), epilogue: epilogue(ep) };
        let args16 = GemmArgs { m, n, k, a: &c.a, lda: c.lda, w: &wh, bias: c.bias.as_deref(), epilogue: epilogue(ep) };
        let reference = Kernels::scalar();
        let mut want = c.out0.clone();
        reference.gemm_f32.gemm(&args, &mut want, c.ldc);
        let mut want16 = c.out0.clone();
        reference.gemm_f16.gemm(&args16, &mut want16, c.ldc);
        let tol = 2e-6 * (k as f32).sqrt();
        for (name, kern) in Kernels::all_available() {
            let mut got = c.out0.clone();
            kern.gemm_f32.gemm(&args, &mut got, c.ldc);
            close(&got, &want, tol, &format!("{name} f32"))?;
            let mut got = c.out0.clone();
            kern.gemm_f16.gemm(&args16, &mut got, c.ldc);
            close(&got, &want16, tol, &format!("{name} f16"))?;
        }
    }

    #[test]
    fn gemm_u8i8_matches_scalar(m in 1usize..40, n in 1usize..70, k in 1usize..300, pad_a in 0usize..9, pad_c in 0usize..5,
                                with_bias: bool, ep in 0u8..3, seed: u64) {
        let mut rng = Rng::new(seed);
        let kp = round_up(k, 4);
        let lda = kp + pad_a;
        let ldc = n + pad_c;
        let a: Vec<u8> = (0..m * lda).map(|_| (rng.next_u64() & 255) as u8).collect();
        let w: Vec<i8> = (0..n * k).map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8).collect();
        let w_sum: Vec<i32> = w.chunks_exact(k).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
        let wp = pack::panel16x4_from_rows(&w, n, k);
        let a_scale: Vec<f32> = (0..m).map(|_| 0.001 + rng.uniform() * 0.05).collect();
        let a_zero: Vec<i32> = (0..m).map(|_| (rng.next_u64() % 256) as i32).collect();
        let w_scale: Vec<f32> = (0..n).map(|_| 0.001 + rng.uniform() * 0.02).collect();
        let bias = with_bias.then(|| rng.normals(n, 0.5));
        let out0 = rng.normals(m * ldc, 1.0);
        let args = GemmU8I8Args { m, n, k, a: &a, lda, a_scale: &a_scale, a_zero: &a_zero, w: &wp, w_scale: &w_scale, w_sum: &w_sum, bias: bias.as_deref(), epilogue: epilogue(ep) };
        // Padding bytes of `a` beyond k hold arbitrary values: kernels must ignore them.
        let mut want = out0.clone();
        Kernels::scalar().gemm_u8i8.gemm(&args, &mut want, ldc);
        for (name, kern) in Kernels::all_available() {
            let mut got = out0.clone();
            kern.gemm_u8i8.gemm(&args, &mut got, ldc);
            close(&got, &want, 1e-5, &format!("{name} u8i8"))?;
        }
    }

    #[test]
    fn vector_ops_match_scalar(len in 1usize..900, scale in 0.01f32..3.0, seed: u64, big: bool) {
        let mut rng = Rng::new(seed);
        let mag = if big { 60.0 } else { 3.0 };
        let x = rng.normals(len, mag);
        let gamma = rng.normals(len, 1.0);
        let beta = rng.normals(len, 1.0);
        let s = Kernels::scalar().vector;
        for (name, kern) in Kernels::all_available() {
            let v = kern.vector;
            let (mut a, mut b) = (vec![0f32; len], vec![0f32; len]);
            v.layer_norm(&x, &gamma, &beta, 1e-6, &mut a);
            s.layer_norm(&x, &gamma, &beta, 1e-6, &mut b);
            close(&a, &b, 1e-5, &format!("{name} layer_norm"))?;
            let (mut a, mut b) = (x.clone(), x.clone());
            v.softmax(&mut a, scale);
            s.softmax(&mut b, scale);
            close(&a, &b, 2e-6, &format!("{name} softmax"))?;
            prop_assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            let (mut a, mut b) = (x.clone(), x.clone());
            v.gelu(&mut a);
            s.gelu(&mut b);
            close(&a, &b, 1e-6, &format!("{name} gelu"))?;
            let (mut qa, mut qb) = (vec![0u8; len], vec![0u8; len]);
            let pa = v.quantize_u8(&x, &mut qa);
            let pb = s.quantize_u8(&x, &mut qb);
            prop_assert_eq!(pa, pb);
            prop_assert!(qa.iter().zip(&qb).all(|(p, q)| p.abs_diff(*q) <= 1), "{} quantize_u8 differs by more than one level", name);
        }
    }
}

#[test]
fn gelu_is_exact_over_its_range_and_extremes() {
    let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.005).chain([-1e4, -40.0, 40.0, 1e4, 0.0, -0.0]).collect();
    for (name, kern) in Kernels::all_available() {
        let mut y = xs.clone();
        kern.vector.gelu(&mut y);
        for (x, g) in xs.iter().zip(&y) {
            let want = vitedge::kernels::gelu_exact(*x);
            assert!((g - want).abs() <= 2e-6 * (1.0 + want.abs()), "{name}: gelu({x}) = {g}, want {want}");
        }
    }
}

#[test]
fn every_kernel_set_runs_the_whole_model_like_scalar() {
    use vitedge::engine::{self, Backend, EngineOptions};
    use vitedge::model::synthetic::{random_blob, tiny_config, vit_tiny_config};
    use vitedge::model::Model;
    let dir = tempfile::tempdir().unwrap();
    // The full ViT-Tiny shape is slow under emulation; the tiny shape still covers every code path.
    let cfg = if std::env::var("VITEDGE_SLOW_UNDER_EMULATION").is_ok_and(|v| v == "1") { tiny_config(10) } else { vit_tiny_config(1000) };
    let path = dir.path().join("m.vitb");
    random_blob(&cfg, 11).write(&path).unwrap();
    let model = Model::open(&path).unwrap();
    let input = Rng::new(3).normals(cfg.input_len(), 1.0);
    let run = |kernels: &str, threads: usize| {
        let mut e = engine::create(&model, Backend::Native, &EngineOptions { kernels: kernels.into(), threads }).unwrap();
        let mut l = vec![0f32; cfg.num_classes];
        e.infer(&input, &mut l).unwrap();
        l
    };
    let want = run("scalar", 1);
    for (name, _) in Kernels::all_available() {
        for threads in [1, 2] {
            let got = run(name, threads);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-3, "{name} with {threads} threads: max-abs {worst}");
        }
    }
}
