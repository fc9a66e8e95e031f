//! Portable scalar reference kernels. Straightforward loops in f32 (f64 for reductions where it
//! keeps the reference honest); every SIMD kernel is property-tested against these.

use half::f16;

use super::{gelu_exact, u8_params, Epilogue, GemmArgs, GemmBf16, GemmBf16Args, GemmF16, GemmF32, GemmU8I8, GemmU8I8Args, VectorOps};
use crate::blob::round_up;

/// The scalar reference implementation of every kernel trait.
pub struct Scalar;

#[inline]
fn finish(out: &mut f32, r: f32, epilogue: Epilogue) {
    match epilogue {
        Epilogue::Store => *out = r,
        Epilogue::Accumulate => *out += r,
        Epilogue::Gelu => *out = gelu_exact(r),
    }
}

fn gemm_panel16<W: Copy>(args: &GemmArgs<'_, W>, out: &mut [f32], ldc: usize, to_f32: impl Fn(W) -> f32) {
    let GemmArgs { m, n, k, a, lda, w, bias, epilogue } = *args;
    for i in 0..m {
        let a_row = &a[i * lda..i * lda + k];
        for p in 0..n.div_ceil(16) {
            let panel = &w[p * 16 * k..(p + 1) * 16 * k];
            let mut acc = [0f32; 16];
            for (kk, &av) in a_row.iter().enumerate() {
                let wr = &panel[kk * 16..kk * 16 + 16];
                for jj in 0..16 {
                    acc[jj] += av * to_f32(wr[jj]);
                }
            }
            for jj in 0..16.min(n - p * 16) {
                let j = p * 16 + jj;
                let r = acc[jj] + bias.map_or(0.0, |b| b[j]);
                finish(&mut out[i * ldc + j], r, epilogue);
            }
        }
    }
}

impl GemmF32 for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn gemm(&self, args: &GemmArgs<'_, f32>, out: &mut [f32], ldc: usize) {
        gemm_panel16(args, out, ldc, |w| w);
    }
}

impl GemmF16 for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn gemm(&self, args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
        gemm_panel16(args, out, ldc, f16::to_f32);
    }
}

impl GemmU8I8 for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        let GemmU8I8Args { m, n, k, a, lda, a_scale, a_zero, w, w_scale, w_sum, bias, epilogue } = *args;
        let kp = round_up(k, 4);
        for i in 0..m {
            let a_row = &a[i * lda..i * lda + kp];
            for p in 0..n.div_ceil(16) {
                let panel = &w[p * kp * 16..(p + 1) * kp * 16];
                let mut acc = [0i32; 16];
                for (g, group) in panel.chunks_exact(64).enumerate() {
                    // Only the first k activation bytes count; padded weights are zero, but the
                    // padded activation bytes are masked here too so the reference is exact.
                    let av: [i32; 4] = std::array::from_fn(|r| if g * 4 + r < k { a_row[g * 4 + r] as i32 } else { 0 });
                    for (jj, wv) in group.chunks_exact(4).enumerate() {
                        acc[jj] += av[0] * wv[0] as i32 + av[1] * wv[1] as i32 + av[2] * wv[2] as i32 + av[3] * wv[3] as i32;
                    }
                }
                for jj in 0..16.min(n - p * 16) {
                    let j = p * 16 + jj;
                    let r = a_scale[i] * w_scale[j] * (acc[jj] - a_zero[i] * w_sum[j]) as f32 + bias.map_or(0.0, |b| b[j]);
                    finish(&mut out[i * ldc + j], r, epilogue);
                }
            }
        }
    }
}

impl GemmBf16 for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn gemm(&self, args: &GemmBf16Args<'_>, out: &mut [f32], ldc: usize) {
        let kp = args.check(out, ldc);
        let GemmBf16Args { m, n, k, a, lda, w, bias, epilogue } = *args;
        for i in 0..m {
            let a_row = &a[i * lda..i * lda + k];
            for p in 0..n.div_ceil(16) {
                let panel = &w[p * 16 * kp..(p + 1) * 16 * kp];
                let mut acc = [0f32; 16];
                // Products of two bf16 values are exact in f32; only the first k values count.
                for (kk, &av) in a_row.iter().enumerate() {
                    let av = av.to_f32();
                    let pair_row = &panel[(kk / 2) * 32..(kk / 2) * 32 + 32];
                    for jj in 0..16 {
                        acc[jj] += av * pair_row[jj * 2 + kk % 2].to_f32();
                    }
                }
                for jj in 0..16.min(n - p * 16) {
                    let j = p * 16 + jj;
                    finish(&mut out[i * ldc + j], acc[jj] + bias.map_or(0.0, |b| b[j]), epilogue);
                }
            }
        }
    }
}

impl VectorOps for Scalar {
    fn name(&self) -> &'static str {
        "scalar"
    }

    fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
            *o = ((v as f64 - mean) * inv) as f32 * g + b;
        }
    }

    fn softmax_exp(&self, x: &mut [f32], scale: f32) -> f32 {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
        let mut sum = 0f64;
        for v in x.iter_mut() {
            *v = (*v * scale - max).exp();
            sum += *v as f64;
        }
        sum as f32
    }

    fn gelu(&self, x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_exact(*v));
    }

    fn quantize_u8(&self, x: &[f32], out: &mut [u8]) -> (f32, i32) {
        let (lo, hi) = x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let Some((scale, zero)) = u8_params(lo, hi) else {
            out[..x.len()].fill(0);
            return (1.0, 0);
        };
        let inv = 1.0 / scale;
        for (o, &v) in out.iter_mut().zip(x) {
            *o = ((v * inv).round() as i32 + zero).clamp(0, 255) as u8;
        }
        (scale, zero)
    }
}
