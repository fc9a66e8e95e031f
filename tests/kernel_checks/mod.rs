//! Kernel-vs-scalar checks shared by the libtest suite (`tests/kernels.rs`) and the single-threaded
//! runner (`tests/kernels_main.rs`, which also runs under qemu where threads are unavailable).
#![allow(dead_code)]

use half::{bf16, f16};
use vitedge::blob::round_up;
use vitedge::kernels::{pack, Epilogue, GemmArgs, GemmBf16, GemmBf16Args, GemmU8I8Args, Kernels};
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

/// The u8 × i8 GEMM of kernel sets `a_set` and `b_set` bit for bit, on random operands or (with
/// `extreme`) sums near the largest the operands allow: activations within 3 of 255 or of 0, zero
/// points 255 or 0, weights within 4 of −128 (|sum| up to 255 · 128 · k, not round numbers). The
/// AMX kernel subtracts the zero point in f32 for k ≤ 514 and in i32 above; both must give the
/// AVX-512 kernel's bits. `Ok(false)` when this CPU lacks one of the sets.
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8i8_same_bits(a_set: &str, b_set: &str, m: usize, n: usize, k: usize, ep: u8, extreme: bool, seed: u64) -> Result<bool, String> {
    let (Ok(ka), Ok(kb)) = (Kernels::by_name(a_set), Kernels::by_name(b_set)) else {
        return Ok(false);
    };
    let mut rng = Rng::new(seed);
    let kp = round_up(k, 4);
    let mut byte = |near: u8| if extreme { near.abs_diff((rng.next_u64() & 3) as u8) } else { (rng.next_u64() & 255) as u8 };
    let a: Vec<u8> = (0..m * kp).map(|i| byte(if (i / kp) % 2 == 0 { 255 } else { 0 })).collect();
    let w: Vec<i8> = (0..n * k).map(|_| if extreme { -128 + (rng.next_u64() % 5) as i8 } else { ((rng.next_u64() % 255) as i32 - 127) as i8 }).collect();
    let w_sum: Vec<i32> = w.chunks_exact(k).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
    let wp = pack::panel16x4_from_rows(&w, n, k);
    let a_scale: Vec<f32> = (0..m).map(|_| 0.001 + rng.uniform() * 0.05).collect();
    let a_zero: Vec<i32> = (0..m).map(|r| if extreme { [0, 255, 255, 0][r % 4] } else { (rng.next_u64() % 256) as i32 }).collect();
    let w_scale: Vec<f32> = (0..n).map(|_| 0.001 + rng.uniform() * 0.02).collect();
    let bias = rng.normals(n, 0.5);
    let out0 = rng.normals(m * n, 1.0);
    let args = GemmU8I8Args { m, n, k, a: &a, lda: kp, a_scale: &a_scale, a_zero: &a_zero, w: &wp, w_scale: &w_scale, w_sum: &w_sum, bias: Some(&bias), epilogue: epilogue(ep) };
    let (mut got_a, mut got_b) = (out0.clone(), out0);
    ka.gemm_u8i8.gemm(&args, &mut got_a, n);
    kb.gemm_u8i8.gemm(&args, &mut got_b, n);
    match got_a.iter().zip(&got_b).position(|(x, y)| x.to_bits() != y.to_bits()) {
        Some(i) => Err(format!("{a_set} vs {b_set} u8i8 {m}×{n}×{k} {:?}: element {i}: {} vs {}", epilogue(ep), got_a[i], got_b[i])),
        None => Ok(true),
    }
}

/// [`VectorOps::layer_norm_rows`](vitedge::kernels::VectorOps::layer_norm_rows),
/// `quantize_u8_rows` and (sets with bf16 dot products) `GemmBf16::softmax_rows_to_bf16` of every
/// kernel set against the same set's one-row kernels, and `GemmBf16::layer_norm_to_bf16` against
/// `layer_norm_rows` + `convert_rows`, bit for bit: `rows` rows of `k` values
/// `k + pad` apart (quantized rows `round_up(k, 4) + pad` apart, padded with the zero point;
/// probability rows `round_up(k, 32)` apart, zero-padded), with an all-zero row, a constant row
/// and an infinity when `special`.
pub fn row_ops(rows: usize, k: usize, pad: usize, seed: u64, special: bool) -> Check {
    let mut rng = Rng::new(seed);
    let (stride, qlda) = (k + pad, round_up(k, 4) + pad);
    let mut x = rng.normals(rows * stride, 4.0);
    if special {
        x[..k].fill(0.0);
        if rows > 1 {
            x[stride..stride + k].fill(2.5);
        }
        if rows > 2 {
            x[2 * stride + k / 2] = f32::INFINITY;
        }
    }
    let gamma = rng.normals(k, 1.0);
    let beta = rng.normals(k, 1.0);
    for (name, kern) in Kernels::all_available() {
        let v = kern.vector;
        let out0 = rng.normals(rows * stride, 1.0);
        let (mut got, mut want) = (out0.clone(), out0);
        v.layer_norm_rows(&x, rows, k, stride, &gamma, &beta, 1e-6, &mut got);
        for r in 0..rows {
            v.layer_norm(&x[r * stride..r * stride + k], &gamma, &beta, 1e-6, &mut want[r * stride..r * stride + k]);
        }
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(format!("{name} layer_norm_rows element {i}: {} vs {}", got[i], want[i]));
        }
        let (mut q, mut scale, mut zero) = (vec![7u8; rows * qlda], vec![0f32; rows], vec![0i32; rows]);
        v.quantize_u8_rows(&x, rows, k, stride, &mut q, qlda, &mut scale, &mut zero);
        for r in 0..rows {
            let mut row = vec![9u8; k];
            let (s, z) = v.quantize_u8(&x[r * stride..r * stride + k], &mut row);
            if (scale[r].to_bits(), zero[r]) != (s.to_bits(), z) {
                return Err(format!("{name} quantize_u8_rows row {r}: parameters ({}, {}) vs ({s}, {z})", scale[r], zero[r]));
            }
            if q[r * qlda..r * qlda + k] != row[..] {
                return Err(format!("{name} quantize_u8_rows row {r}: bytes differ from quantize_u8"));
            }
            if q[r * qlda + k..(r + 1) * qlda].iter().any(|&b| b as i32 != z) {
                return Err(format!("{name} quantize_u8_rows row {r}: padding is not the zero point {z}"));
            }
        }
        if let Some(g) = kern.gemm_bf16 {
            // Scores are finite (an infinite score has no softmax): the special row's infinity
            // becomes 1.
            let scores: Vec<f32> = x.iter().map(|&v| if v.is_finite() { v } else { 1.0 }).collect();
            let ps = round_up(k, 32);
            let (mut p, mut sums) = (vec![bf16::NAN; rows * ps], vec![f32::NAN; rows]);
            g.softmax_rows_to_bf16(&scores, rows, k, stride, 0.125, &mut p, ps, &mut sums);
            for r in 0..rows {
                let mut want = vec![bf16::NAN; ps];
                let sum = g.softmax_to_bf16(&scores[r * stride..r * stride + k], 0.125, &mut want);
                if sum.to_bits() != sums[r].to_bits() || p[r * ps..(r + 1) * ps].iter().zip(&want).any(|(a, b)| a.to_bits() != b.to_bits()) {
                    return Err(format!("{name} softmax_rows_to_bf16 row {r} differs from softmax_to_bf16 (sum {} vs {sum})", sums[r]));
                }
            }
            // LayerNorm rounded to bf16 rows (zero-padded to an even stride plus `pad`) equals the
            // set's own layer_norm_rows then convert_rows. (Here the want side is the trait's
            // default, spelled out.)
            let bs = round_up(k, 2) + pad;
            let mut h = vec![f32::NAN; rows * stride];
            let (mut fused, mut want) = (vec![bf16::NAN; rows * bs], vec![bf16::NAN; rows * bs]);
            g.layer_norm_to_bf16(v, &x, rows, k, stride, (&gamma, &beta, 1e-6), &mut h, &mut fused, bs);
            v.layer_norm_rows(&x, rows, k, stride, &gamma, &beta, 1e-6, &mut h);
            g.convert_rows(&h, rows, k, stride, &mut want, bs);
            if let Some(i) = fused.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits()) {
                return Err(format!("{name} layer_norm_to_bf16 element {i}: {} vs layer_norm_rows + convert_rows {}", fused[i], want[i]));
            }
        }
    }
    Ok(())
}

/// bf16 GEMM of every kernel set that has one vs the scalar reference (padding values of `a` are
/// arbitrary finite numbers; they meet zero weights). Returns how many sets were compared.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(m: usize, n: usize, k: usize, pad_a: usize, pad_c: usize, seed: u64) -> Result<usize, String> {
    let mut rng = Rng::new(seed);
    let kp = round_up(k, 2);
    let (lda, ldc) = (kp + pad_a, n + pad_c);
    let a: Vec<bf16> = rng.normals(m * lda, 1.0).into_iter().map(bf16::from_f32).collect();
    let w = rng.normals(n * k, 1.0 / (k as f32).sqrt());
    // The same matrix stored transposed, for the column packers.
    let wt: Vec<f32> = (0..k).flat_map(|kk| (0..n).map(|j| w[j * k + kk]).collect::<Vec<_>>()).collect();
    let mut wp = vec![bf16::ZERO; round_up(n, 16) * kp];
    if seed.is_multiple_of(2) {
        pack::panel16x2_from_rows(&w, n, k, k, &mut wp);
    } else {
        pack::panel16x2_from_cols(&wt, n, k, n, &mut wp);
    }
    let out0 = rng.normals(m * ldc, 1.0);
    // Linear layers of bf16 blobs use a bias and every epilogue; attention a plain store.
    let bias = rng.normals(n, 1.0);
    let epilogue = [Epilogue::Store, Epilogue::Accumulate, Epilogue::Gelu][(seed / 2 % 3) as usize];
    let bias = (seed % 4 < 2).then_some(&bias[..]);
    let args = GemmBf16Args { m, n, k, a: &a, lda, w: &wp, bias, epilogue };
    let mut want = out0.clone();
    vitedge::kernels::scalar::Scalar.gemm(&args, &mut want, ldc);
    // The reference itself against the f64 dot products of the bf16-rounded operands.
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|kk| a[i * lda + kk].to_f64() * bf16::from_f32(w[j * k + kk]).to_f64()).sum::<f64>() + bias.map_or(0.0, |b| b[j] as f64);
            let expect = match epilogue {
                Epilogue::Store => dot,
                Epilogue::Accumulate => out0[i * ldc + j] as f64 + dot,
                Epilogue::Gelu => vitedge::kernels::gelu_exact(dot as f32) as f64,
            };
            if (want[i * ldc + j] as f64 - expect).abs() > 1e-5 * (1.0 + expect.abs()) * (k as f64).sqrt() {
                return Err(format!("scalar bf16 {epilogue:?} ({i}, {j}): {} vs {expect}", want[i * ldc + j]));
            }
        }
    }
    // Padding columns of `out` stay untouched.
    if (0..m).any(|i| (n..ldc).any(|j| want[i * ldc + j].to_bits() != out0[i * ldc + j].to_bits())) {
        return Err("scalar bf16 wrote past column n".into());
    }
    // Operands the kernels convert and pack themselves must be bit-identical to `pack`'s.
    let bits = |v: &[bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let af: Vec<f32> = rng.normals(m * lda, 3.0);
    let mut a_want = vec![bf16::NAN; m * (kp + pad_c)];
    pack::rows_to_bf16(&af, m, k, lda, &mut a_want, kp + pad_c);
    let mut compared = 0;
    for (name, kern) in Kernels::all_available() {
        let Some(g) = kern.gemm_bf16 else { continue };
        let mut packed = vec![bf16::NAN; wp.len()];
        g.pack_rows(&w, n, k, k, &mut packed);
        if bits(&packed) != bits(&wp) {
            return Err(format!("{name} pack_rows differs from pack::panel16x2_from_rows"));
        }
        let mut packed = vec![bf16::NAN; wp.len()];
        g.pack_cols(&wt, n, k, n, &mut packed);
        if bits(&packed) != bits(&wp) {
            return Err(format!("{name} pack_cols differs from pack::panel16x2_from_cols"));
        }
        let mut conv = vec![bf16::NAN; a_want.len()];
        g.convert_rows(&af, m, k, lda, &mut conv, kp + pad_c);
        if bits(&conv) != bits(&a_want) {
            return Err(format!("{name} convert_rows differs from pack::rows_to_bf16"));
        }
        // Unnormalized softmax of a score row of length k (scores up to ±30 after scaling).
        let scores = rng.normals(k, 10.0);
        let scale = 0.125 + (seed % 8) as f32 * 0.1;
        let (mut p_got, mut p_want) = (vec![bf16::NAN; kp + pad_c], vec![bf16::NAN; kp + pad_c]);
        let sum_got = g.softmax_to_bf16(&scores, scale, &mut p_got);
        let sum_want = vitedge::kernels::scalar::Scalar.softmax_to_bf16(&scores, scale, &mut p_want);
        if (sum_got - sum_want).abs() > 1e-5 * sum_want {
            return Err(format!("{name} softmax_to_bf16 sum {sum_got} vs {sum_want}"));
        }
        for (i, (x, y)) in p_got.iter().zip(&p_want).enumerate() {
            // exp differs in its last f32 bits, which can move the bf16 rounding by one unit (2^-8).
            if (x.to_f32() - y.to_f32()).abs() > y.to_f32() * 2f32.powi(-7) || (i >= k && x.to_bits() != 0) {
                return Err(format!("{name} softmax_to_bf16 element {i}: {x} vs {y}"));
            }
        }
        let mut got = out0.clone();
        g.gemm(&args, &mut got, ldc);
        close(&got, &want, 2e-6 * (k as f32).sqrt(), &format!("{name} bf16 {epilogue:?} bias {} ({})", bias.is_some(), g.name()))?;
        compared += 1;
    }
    Ok(compared)
}

/// `GemmBf16::gemm_to_bf16` of every kernel set that takes these shapes against its own `gemm`
/// followed by `convert_rows`, bit for bit, with `Store` (`gelu` false) or `Gelu`, with a bias; the
/// columns from `n` to `ldc` stay untouched. Returns how many sets ran it.
pub fn gemm_to_bf16(m: usize, n: usize, k: usize, pad_a: usize, pad_c: usize, gelu: bool, seed: u64) -> Result<usize, String> {
    let mut rng = Rng::new(seed);
    let kp = round_up(k, 2);
    let (lda, ldc) = (kp + pad_a, n + pad_c);
    let a: Vec<bf16> = rng.normals(m * lda, 1.0).into_iter().map(bf16::from_f32).collect();
    let w = rng.normals(n * k, 1.0 / (k as f32).sqrt());
    let mut wp = vec![bf16::ZERO; round_up(n, 16) * kp];
    pack::panel16x2_from_rows(&w, n, k, k, &mut wp);
    let bias = rng.normals(n, 1.0);
    let epilogue = if gelu { Epilogue::Gelu } else { Epilogue::Store };
    let args = GemmBf16Args { m, n, k, a: &a, lda, w: &wp, bias: Some(&bias), epilogue };
    let mut ran = 0;
    for (name, kern) in Kernels::all_available() {
        let Some(g) = kern.gemm_bf16 else { continue };
        let mut got = vec![bf16::NAN; m * ldc];
        if !g.gemm_to_bf16(&args, &mut got, ldc) {
            if got.iter().any(|v| !v.is_nan()) {
                return Err(format!("{name} gemm_to_bf16 declined but wrote"));
            }
            continue;
        }
        let mut f = vec![0f32; m * ldc];
        g.gemm(&args, &mut f, ldc);
        let mut want = vec![bf16::NAN; m * ldc];
        for i in 0..m {
            g.convert_rows(&f[i * ldc..], 1, n, ldc, &mut want[i * ldc..i * ldc + n], n);
        }
        if let Some(i) = (0..m * ldc).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            return Err(format!("{name} gemm_to_bf16 {epilogue:?} ({}, {}): {} vs gemm + convert_rows {}", i / ldc, i % ldc, got[i], want[i]));
        }
        ran += 1;
    }
    Ok(ran)
}

/// LayerNorm, softmax, GELU, u8 quantization and the int8-attention softmax of every kernel set
/// vs scalar.
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
        let (sum_a, sum_b) = (v.softmax_exp(&mut a, scale), s.softmax_exp(&mut b, scale));
        // exp amplifies the rounding of its argument x·scale − max (one FMA rounding in SIMD, two in
        // the reference) by |argument|: the tolerance follows that condition number.
        let arg_max = x.iter().fold(0f32, |m, v| m.max((v * scale).abs())) * 2.0;
        let tol = 2e-6 + 1.2e-7 * arg_max;
        close(&a, &b, tol, &format!("{name} softmax_exp"))?;
        // The largest value is exp(0) = 1 (up to the rounding of its argument), and the returned sum
        // is the sum of the row.
        let top = a.iter().fold(0f32, |m, &v| m.max(v));
        if !((top - 1.0).abs() <= 1e-6 * (1.0 + arg_max)) {
            return Err(format!("{name} softmax_exp: largest value {top}, not 1"));
        }
        let row_sum = a.iter().map(|&v| v as f64).sum::<f64>() as f32;
        // Every value is within `tol` relative of the reference's (an argument's rounding error is
        // exp's relative error), so the sums are too.
        if !((sum_a - row_sum).abs() <= 1e-5 * row_sum && (sum_a - sum_b).abs() <= (tol + 1e-6) * sum_b) {
            return Err(format!("{name} softmax_exp sum {sum_a}: row sums to {row_sum}, the reference's to {sum_b}"));
        }
        let mut a = x.clone();
        v.softmax(&mut a, scale);
        if (a.iter().sum::<f32>() - 1.0).abs() >= 1e-4 {
            return Err(format!("{name} softmax does not sum to 1"));
        }
        // int8 attention probabilities: value scales ≥ 0 as weights (some zero).
        let weight: Vec<f32> = gamma.iter().enumerate().map(|(i, g)| if i % 7 == 3 { 0.0 } else { g.abs() * 0.01 }).collect();
        let (mut xa, mut xb) = (x.clone(), x.clone());
        let (mut qa, mut qb) = (vec![7u8; len], vec![7u8; len]);
        let sa = v.softmax_quantize_u8(&mut xa, scale, &weight, &mut qa);
        let sb = s.softmax_quantize_u8(&mut xb, scale, &weight, &mut qb);
        // The scale holds 1 / Σ exp: summed in another order with another exp polynomial (rel. 1e-4).
        if !((sa - sb).abs() <= 1e-4 * sb.abs()) {
            return Err(format!("{name} softmax_quantize_u8 scale {sa} vs {sb}"));
        }
        if let Some(i) = (0..len).find(|&i| qa[i].abs_diff(qb[i]) > 1) {
            return Err(format!("{name} softmax_quantize_u8 element {i}: {} vs {}", qa[i], qb[i]));
        }
        // Against the definition: softmax(x·scale)[i] · weight[i] ≈ scale · q[i] within half a step
        // (plus the reference's own f32 rounding).
        let mut p = x.clone();
        s.softmax(&mut p, scale);
        if let Some(i) = (0..len).find(|&i| (p[i] * weight[i] - sa * qa[i] as f32).abs() > 0.51 * sa + 1e-6 * p[i] * weight[i]) {
            return Err(format!("{name} softmax_quantize_u8 element {i}: {} · {} vs {}", sa, qa[i], p[i] * weight[i]));
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

/// int8 attention's key and value packing (quantize per token + `Panel16x4`) of every kernel set
/// vs scalar, bit for bit: `n` tokens (keys) or columns (values) and `k` values per token, rows
/// `pad` apart beyond their length, with a zero row, a NaN and an infinity when `special`.
pub fn attention_packing(n: usize, k: usize, pad: usize, seed: u64, special: bool) -> Check {
    let mut rng = Rng::new(seed);
    let s = Kernels::scalar().vector;
    // keys: n rows of k values; values: k rows (tokens) of n values.
    for (what, rows, cols) in [("keys", n, k), ("values", k, n)] {
        let stride = cols + pad;
        let mut src = rng.normals(rows * stride, 2.0);
        if special && rows > 2 {
            src[..cols].fill(0.0);
            src[stride] = f32::NAN;
            src[2 * stride + cols - 1] = f32::INFINITY;
        }
        let (kp, np) = (round_up(k, 4), round_up(n, 16));
        let run = |v: &dyn vitedge::kernels::VectorOps| {
            let (mut dst, mut scale, mut sum) = (vec![7i8; np * kp], vec![-1f32; np.max(k)], vec![-9i32; np]);
            if what == "keys" {
                v.quantize_pack_keys(&src, n, k, stride, &mut dst, &mut scale, &mut sum);
            } else {
                v.quantize_pack_values(&src, n, k, stride, &mut dst, &mut scale, &mut sum);
            }
            (dst, scale, sum)
        };
        let want = run(s);
        for (name, kern) in Kernels::all_available() {
            let got = run(kern.vector);
            if got.0 != want.0 {
                let i = (0..got.0.len()).find(|&i| got.0[i] != want.0[i]).unwrap();
                return Err(format!("{name} {what} packing {n}x{k}: byte {i}: {} vs {}", got.0[i], want.0[i]));
            }
            if got.1.iter().zip(&want.1).any(|(a, b)| a.to_bits() != b.to_bits()) || got.2 != want.2 {
                return Err(format!("{name} {what} packing {n}x{k}: scales or sums differ"));
            }
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

/// The whole native forward pass with every kernel set vs scalar, for the given thread counts: f32
/// and f16 models (same arithmetic up to rounding: 1e-3) and an int8 model, where a last-bit difference
/// can move an activation by one quantization level and sets with bf16 attention round its
/// operands (measured on the random ViT-Tiny: 0.04 avx2, 0.07 amx-bf16, logits spanning ±3.3; the
/// bound is 3 % of the largest logit). int8 models run each set with its own default attention
/// precision (bf16, int8 or f32: checked against what the set declares) against the scalar reference
/// at the same precision (bf16 has no scalar engine path: against scalar f32), and every set once
/// more with int8 attention forced.
pub fn whole_model(full_size: bool, threads: &[usize]) -> Check {
    use vitedge::engine::{self, AttentionPrecision, Backend, EngineOptions};
    use vitedge::model::synthetic::{random_blob_in, tiny_config, vit_tiny_config};
    use vitedge::model::Model;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cfg = if full_size { vit_tiny_config(1000) } else { tiny_config(10) };
    let input = Rng::new(3).normals(cfg.input_len(), 1.0);
    for precision in ["f32", "f16", "bf16", "int8"] {
        let path = dir.path().join(format!("{precision}.vitb"));
        random_blob_in(&cfg, 11, precision).write(&path).map_err(|e| e.to_string())?;
        let model = Model::open(&path).map_err(|e| e.to_string())?;
        let run = |kernels: &str, threads: usize, attention: AttentionPrecision| -> Result<(Vec<f32>, String), String> {
            let opts = EngineOptions { kernels: kernels.into(), threads, attention };
            let mut e = engine::create(&model, Backend::Native, &opts).map_err(|e| e.to_string())?;
            let mut l = vec![0f32; cfg.num_classes];
            e.infer(&input, &mut l).map_err(|e| e.to_string())?;
            Ok((l, e.describe()))
        };
        let (want_f32, _) = run("scalar", 1, AttentionPrecision::Auto)?;
        let (want_int8, _) = run("scalar", 1, AttentionPrecision::Int8)?;
        let spread = want_f32.iter().fold(0f32, |m, v| m.max(v.abs()));
        // bf16 blobs: sets with bf16 dot products round every GEMM input to bf16 (the scalar
        // reference widens the weights and keeps f32 inputs).
        let bound = match precision {
            "int8" => 3e-2 * spread,
            "bf16" => 1e-2 * spread,
            _ => 1e-3,
        };
        for (name, kern) in Kernels::all_available() {
            let expected = match (precision, kern.gemm_bf16.is_some(), kern.int8_attention) {
                ("int8" | "bf16", true, _) => "bf16",
                ("int8", false, true) => "int8",
                _ => "f32",
            };
            let mut modes = vec![(AttentionPrecision::Auto, expected)];
            if precision == "int8" && expected != "int8" {
                modes.push((AttentionPrecision::Int8, "int8"));
            }
            // A set without bf16 dot products runs a bf16 blob on its f32 GEMM (weights widened at
            // load), already checked with every thread count by the f32 blob: one count is enough
            // (this keeps the emulated aarch64 run short).
            let counts = if precision == "bf16" && kern.gemm_bf16.is_none() { &threads[..1] } else { threads };
            for &t in counts {
                for &(attention, mode) in &modes {
                    let (got, describe) = run(name, t, attention)?;
                    if !describe.ends_with(&format!("attention {mode}")) {
                        return Err(format!("{name} {precision} ({attention:?} attention): engine reports `{describe}`, expected attention {mode}"));
                    }
                    let want = if mode == "int8" { &want_int8 } else { &want_f32 };
                    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    if worst > bound {
                        return Err(format!("{name} {precision} ({mode} attention) with {t} threads: max-abs {worst} (bound {bound})"));
                    }
                    if std::env::var_os("VITEDGE_PRINT_DIFFS").is_some() {
                        println!("{name} {precision} ({mode} attention) {t} threads: max-abs {worst}, logit spread {spread}");
                    }
                }
            }
        }
        if precision == "int8" {
            // int8 attention changes the result, but only by about the int8 error itself.
            let worst = want_int8.iter().zip(&want_f32).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            if worst > 0.1 * spread || worst == 0.0 {
                return Err(format!("scalar int8 vs f32 attention: max-abs {worst} (logit spread {spread})"));
            }
        }
    }
    Ok(())
}
