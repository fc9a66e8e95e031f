//! Plain NEON (Armv8.0-A, e.g. Cortex-A72 / A53 / A57) f32 GEMM over the `Panel16` layout: one
//! 16-column panel row is four `float32x4_t`, `MR` rows of `a` are broadcast per step. The f16,
//! int8 and element-wise kernels of this set are still the scalar reference (dotprod / i8mm / fp16
//! kernels are future work).

use std::arch::aarch64::*;

use half::f16;

use crate::kernels::scalar::Scalar;
use crate::kernels::{gelu_exact, Epilogue, GemmArgs, GemmF16, GemmF32, GemmU8I8, GemmU8I8Args, VectorOps};

/// NEON kernel set. Construct only through [`Neon::detect`].
pub struct Neon(());

/// Rows per micro-kernel step (4 rows × 4 vectors = 16 accumulators of the 32 registers).
const MR: usize = 4;

impl Neon {
    /// The kernel set if this CPU has NEON (every AArch64 CPU with an FPU).
    pub fn detect() -> Option<&'static Neon> {
        static K: Neon = Neon(());
        std::arch::is_aarch64_feature_detected!("neon").then_some(&K)
    }
}

#[target_feature(enable = "neon")]
fn gemm_f32(args: &GemmArgs<'_, f32>, out: &mut [f32], ldc: usize) {
    let GemmArgs { m, n, k, a, lda, w, bias, epilogue } = *args;
    assert!(m == 0 || (lda >= k && a.len() >= (m - 1) * lda + k), "a is too short");
    assert!(w.len() >= n.div_ceil(16) * 16 * k, "packed weights are too short");
    assert!(m == 0 || (ldc >= n && out.len() >= (m - 1) * ldc + n), "out is too short");
    assert!(bias.is_none_or(|b| b.len() >= n), "bias is too short");
    for p in 0..n.div_ceil(16) {
        let width = (n - p * 16).min(16);
        let panel = &w[p * 16 * k..(p + 1) * 16 * k];
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            let mut acc = [[vdupq_n_f32(0.0); 4]; MR];
            for kk in 0..k {
                let wp = panel[kk * 16..kk * 16 + 16].as_ptr();
                // SAFETY: the slice above holds 16 floats at wp.
                let wv = unsafe { [vld1q_f32(wp), vld1q_f32(wp.add(4)), vld1q_f32(wp.add(8)), vld1q_f32(wp.add(12))] };
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    let av = a[(i + r) * lda + kk];
                    for q in 0..4 {
                        acc_r[q] = vfmaq_n_f32(acc_r[q], wv[q], av);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let mut tmp = [0f32; 16];
                for q in 0..4 {
                    // SAFETY: tmp holds 16 floats; q*4+3 < 16.
                    unsafe { vst1q_f32(tmp.as_mut_ptr().add(q * 4), acc_r[q]) };
                }
                let row = &mut out[(i + r) * ldc + p * 16..(i + r) * ldc + p * 16 + width];
                for (jj, o) in row.iter_mut().enumerate() {
                    let v = tmp[jj] + bias.map_or(0.0, |b| b[p * 16 + jj]);
                    match epilogue {
                        Epilogue::Store => *o = v,
                        Epilogue::Accumulate => *o += v,
                        Epilogue::Gelu => *o = gelu_exact(v),
                    }
                }
            }
            i += rows;
        }
    }
}

impl GemmF32 for Neon {
    fn name(&self) -> &'static str {
        "neon"
    }
    fn gemm(&self, args: &GemmArgs<'_, f32>, out: &mut [f32], ldc: usize) {
        // SAFETY: a `Neon` value exists only when `detect` found NEON.
        unsafe { gemm_f32(args, out, ldc) }
    }
}

impl GemmF16 for Neon {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn gemm(&self, args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
        GemmF16::gemm(&Scalar, args, out, ldc)
    }
}

impl GemmU8I8 for Neon {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        GemmU8I8::gemm(&Scalar, args, out, ldc)
    }
}

impl VectorOps for Neon {
    fn name(&self) -> &'static str {
        "scalar"
    }
    fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        Scalar.layer_norm(x, gamma, beta, eps, out)
    }
    fn softmax(&self, x: &mut [f32], scale: f32) {
        Scalar.softmax(x, scale)
    }
    fn gelu(&self, x: &mut [f32]) {
        Scalar.gelu(x)
    }
    fn quantize_u8(&self, x: &[f32], out: &mut [u8]) -> (f32, i32) {
        Scalar.quantize_u8(x, out)
    }
}
