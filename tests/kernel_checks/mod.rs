//! Kernel-vs-scalar checks shared by the libtest suite (`tests/kernels.rs`) and the single-threaded
//! runner (`tests/kernels_main.rs`, which also runs under qemu where threads are unavailable).
#![allow(dead_code)]

use half::f16;
use vitedge::blob::round_up;
use vitedge::kernels::{pack, Epilogue, GemmArgs, GemmU8I8Args, Kernels};
use vitedge::model::synthetic::Rng;

/// A failed comparison.
pub type Check = Result<(), String>;

fn epilogue(i: u8) -> Epilogue {
    [Epilogue::Store, Epilogue::Accumulate, Epilogue::Gelu][i as usize % 3]
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) -> Check {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs();
        if !(err <= tol * (1.0 + y.abs())) {
            return Err(format!("{what}: element {i}: {x} vs {y} (tol {tol})"));
        }
    }
    Ok(())
}

/// f32 and f16-weight GEMM of every kernel set vs scalar.
#[allow(clippy::too_many_arguments)]
pub fn gemm_float(m: usize, n: usize, k: usize, pad_a: usize, pad_c: usize, with_bias: bool, ep: u8, seed: u64) -> Check {
    let mut rng = Rng::new(seed);
    let (lda, ldc) = (k + pad_a, n + pad_c);
    let a = rng.normals(m * lda, 1.0);
    let w = rng.normals(n * k, 1.0 / (k as f32).sqrt());
    let bias = with_bias.then(|| rng.normals(n, 0.5));
    let out0 = rng.normals(m * ldc, 1.0);
    let mut wp = vec![0f32; round_up(n, 16) * k];
    pack::panel16_from_rows(&w, n, k, k, &mut wp);
    let wh: Vec<f16> = wp.iter().map(|&v| f16::from_f32(v)).collect();
    let args = GemmArgs { m, n, k, a: &a, lda, w: &wp, bias: bias.as_deref(), epilogue: epilogue(ep) };
    let args16 = GemmArgs { m, n, k, a: &a, lda, w: &wh, bias: bias.as_deref(), epilogue: epilogue(ep) };
    let reference = Kernels::scalar();
    let mut want = out0.clone();
    reference.gemm_f32.gemm(&args, &mut want, ldc);
    let mut want16 = out0.clone();
    reference.gemm_f16.gemm(&args16, &mut want16, ldc);
    let tol = 2e-6 * (k as f32).sqrt();
    for (name, kern) in Kernels::all_available() {
        let mut got = out0.clone();
        kern.gemm_f32.gemm(&args, &mut got, ldc);
        close(&got, &want, tol, &format!("{name} f32"))?;
        let mut got = out0.clone();
        kern.gemm_f16.gemm(&args16, &mut got, ldc);
        close(&got, &want16, tol, &format!("{name} f16"))?;
    }
    Ok(())
}

/// u8 × i8 GEMM of every kernel set vs scalar (padding bytes of `a` hold arbitrary values).
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8i8(m: usize, n: usize, k: usize, pad_a: usize, pad_c: usize, with_bias: bool, ep: u8, seed: u64) -> Check {
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
    let mut want = out0.clone();
    Kernels::scalar().gemm_u8i8.gemm(&args, &mut want, ldc);
    for (name, kern) in Kernels::all_available() {
        let mut got = out0.clone();
        kern.gemm_u8i8.gemm(&args, &mut got, ldc);
        close(&got, &want, 1e-5, &format!("{name} u8i8"))?;
    }
    Ok(())
}

/// LayerNorm, softmax, GELU and u8 quantization of every kernel set vs scalar.
pub fn vector_ops(len: usize, scale: f32, seed: u64, big: bool) -> Check {
    let mut rng = Rng::new(seed);
    let x = rng.normals(len, if big { 60.0 } else { 3.0 });
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
        // exp amplifies the rounding of its argument x·scale − max (one FMA rounding in SIMD, two in
        // the reference) by |argument|: the tolerance follows that condition number.
        let arg_max = x.iter().fold(0f32, |m, v| m.max((v * scale).abs())) * 2.0;
        close(&a, &b, 2e-6 + 1.2e-7 * arg_max, &format!("{name} softmax"))?;
        if (a.iter().sum::<f32>() - 1.0).abs() >= 1e-4 {
            return Err(format!("{name} softmax does not sum to 1"));
        }
        let (mut a, mut b) = (x.clone(), x.clone());
        v.gelu(&mut a);
        s.gelu(&mut b);
        close(&a, &b, 1e-6, &format!("{name} gelu"))?;
        let (mut qa, mut qb) = (vec![0u8; len], vec![0u8; len]);
        if v.quantize_u8(&x, &mut qa) != s.quantize_u8(&x, &mut qb) {
            return Err(format!("{name} quantize_u8 parameters differ"));
        }
        if !qa.iter().zip(&qb).all(|(p, q)| p.abs_diff(*q) <= 1) {
            return Err(format!("{name} quantize_u8 differs by more than one level"));
        }
    }
    Ok(())
}

/// GELU over [-10, 10] and extremes against the exact (libm erf) formula.
pub fn gelu_range() -> Check {
    let xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.005).chain([-1e4, -40.0, 40.0, 1e4, 0.0, -0.0]).collect();
    for (name, kern) in Kernels::all_available() {
        let mut y = xs.clone();
        kern.vector.gelu(&mut y);
        for (x, g) in xs.iter().zip(&y) {
            let want = vitedge::kernels::gelu_exact(*x);
            if (g - want).abs() > 2e-6 * (1.0 + want.abs()) {
                return Err(format!("{name}: gelu({x}) = {g}, want {want}"));
            }
        }
    }
    Ok(())
}

/// The whole native forward pass with every kernel set vs scalar, for the given thread counts.
pub fn whole_model(full_size: bool, threads: &[usize]) -> Check {
    use vitedge::engine::{self, Backend, EngineOptions};
    use vitedge::model::synthetic::{random_blob, tiny_config, vit_tiny_config};
    use vitedge::model::Model;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = if full_size { vit_tiny_config(1000) } else { tiny_config(10) };
    let path = dir.path().join("m.vitb");
    random_blob(&cfg, 11).write(&path).map_err(|e| e.to_string())?;
    let model = Model::open(&path).map_err(|e| e.to_string())?;
    let input = Rng::new(3).normals(cfg.input_len(), 1.0);
    let run = |kernels: &str, threads: usize| -> Result<Vec<f32>, String> {
        let mut e = engine::create(&model, Backend::Native, &EngineOptions { kernels: kernels.into(), threads }).map_err(|e| e.to_string())?;
        let mut l = vec![0f32; cfg.num_classes];
        e.infer(&input, &mut l).map_err(|e| e.to_string())?;
        Ok(l)
    };
    let want = run("scalar", 1)?;
    for (name, _) in Kernels::all_available() {
        for &t in threads {
            let got = run(name, t)?;
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            if worst > 1e-3 {
                return Err(format!("{name} with {t} threads: max-abs {worst}"));
            }
        }
    }
    Ok(())
}
