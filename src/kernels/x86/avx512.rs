//! AVX-512 kernels (F, BW, VL, DQ + VNNI + F16C): one 16-column weight panel row is one zmm
//! register, so the `Panel16` and `Panel16x4` blob layouts feed `vfmadd` and `vpdpbusd` directly.
//!
//! Micro-kernel: `MR` rows of `a` × one 16-column panel, accumulators in registers, the activation
//! value (or 4 activation bytes) broadcast per step; ragged column tails use masked loads and stores.

use std::arch::x86_64::*;

use half::f16;

use crate::blob::round_up;
use crate::kernels::{scalar::Scalar, u8_params, Epilogue, GemmArgs, GemmF16, GemmF32, GemmU8I8, GemmU8I8Args, VectorOps};

/// AVX-512 kernel set. Construct only through [`Avx512::detect`].
pub struct Avx512(());

/// Rows per micro-kernel step.
const MR: usize = 8;

/// Mask of the first `width` (1..=16) lanes.
#[inline(always)]
fn tail_mask(width: usize) -> __mmask16 {
    if width >= 16 {
        0xffff
    } else {
        (1u16 << width) - 1
    }
}

impl Avx512 {
    /// The kernel set if this CPU has every feature it uses.
    pub fn detect() -> Option<&'static Avx512> {
        let ok = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("fma");
        static K: Avx512 = Avx512(());
        ok.then_some(&K)
    }
}

/// Vectorized `erf` (rational approximation on [-4, 4], as in XLA/Eigen; |error| < 2e-7).
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn erf16(a: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
    let x2 = _mm512_mul_ps(x, x);
    let mut p = _mm512_set1_ps(-2.726_142_3e-10);
    for c in [2.770_681_4e-08f32, -2.101_024e-06, -5.692_506_4e-05, -7.349_906_3e-04, -2.954_600e-03, -1.609_603_3e-02] {
        p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(c));
    }
    p = _mm512_mul_ps(p, x);
    let mut q = _mm512_set1_ps(-1.456_607_2e-05);
    for c in [-2.133_740_5e-04f32, -1.682_827e-03, -7.373_329e-03, -1.426_474e-02] {
        q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(c));
    }
    let e = _mm512_div_ps(p, q);
    // Beyond |x| = 3.9 erf is ±1 to within 4e-8: snap, so gelu(x) is exactly 0 for very negative x.
    let tail = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(a), _mm512_set1_ps(3.9));
    let one = _mm512_or_ps(_mm512_set1_ps(1.0), _mm512_and_ps(a, _mm512_set1_ps(-0.0)));
    _mm512_mask_blend_ps(tail, e, one)
}

#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn gelu16(x: __m512) -> __m512 {
    let e = erf16(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2)));
    _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5)), _mm512_add_ps(e, _mm512_set1_ps(1.0)))
}

/// Applies the epilogue to 16 results and stores the `mask`ed lanes at `dst`.
///
/// # Safety
/// `dst` must be valid for the lanes set in `mask`; AVX-512F must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn finish16(r: __m512, dst: *mut f32, mask: __mmask16, epilogue: Epilogue) {
    // SAFETY: the caller guarantees `dst` is valid for the masked lanes; masked loads/stores touch
    // no other memory.
    unsafe {
        let v = match epilogue {
            Epilogue::Store => r,
            Epilogue::Accumulate => _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), r),
            Epilogue::Gelu => gelu16(r),
        };
        _mm512_mask_storeu_ps(dst, mask, v);
    }
}

trait PanelWeight: Copy {
    /// Loads 16 weights as f32.
    ///
    /// # Safety
    /// `p` must be valid for 16 elements.
    unsafe fn load16(p: *const Self) -> __m512;
}

impl PanelWeight for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f32 at p.
        unsafe { _mm512_loadu_ps(p) }
    }
}

impl PanelWeight for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f16 (32 bytes) at p.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

fn check_gemm<W>(args: &GemmArgs<'_, W>, out: &[f32], ldc: usize) {
    let GemmArgs { m, n, k, a, lda, w, bias, .. } = *args;
    assert!(m == 0 || (lda >= k && a.len() >= (m - 1) * lda + k), "a is too short");
    assert!(w.len() >= n.div_ceil(16) * 16 * k, "packed weights are too short");
    assert!(m == 0 || (ldc >= n && out.len() >= (m - 1) * ldc + n), "out is too short");
    assert!(bias.is_none_or(|b| b.len() >= n), "bias is too short");
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")]
fn gemm_panel<W: PanelWeight>(args: &GemmArgs<'_, W>, out: &mut [f32], ldc: usize) {
    check_gemm(args, out, ldc);
    let GemmArgs { m, n, k, a, lda, w, bias, epilogue } = *args;
    for p in 0..n.div_ceil(16) {
        let mask = tail_mask(n - p * 16);
        // SAFETY: bias has ≥ n values (checked), the masked load reads only lanes below n.
        let bias_v = match bias {
            Some(b) => unsafe { _mm512_maskz_loadu_ps(mask, b.as_ptr().add(p * 16)) },
            None => _mm512_setzero_ps(),
        };
        let panel = w[p * 16 * k..].as_ptr();
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            let mut acc = [_mm512_setzero_ps(); MR];
            for kk in 0..k {
                // SAFETY: the panel holds k rows of 16 weights (checked length).
                let wv = unsafe { W::load16(panel.add(kk * 16)) };
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    // SAFETY: row i + r < m and kk < k, inside `a` (checked length).
                    let av = unsafe { *a.get_unchecked((i + r) * lda + kk) };
                    *acc_r = _mm512_fmadd_ps(_mm512_set1_ps(av), wv, *acc_r);
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                // SAFETY: row i + r < m, the masked columns below n ≤ ldc, inside `out`.
                unsafe {
                    finish16(_mm512_add_ps(*acc_r, bias_v), out.as_mut_ptr().add((i + r) * ldc + p * 16), mask, epilogue);
                }
            }
            i += rows;
        }
    }
}

impl GemmF32 for Avx512 {
    fn name(&self) -> &'static str {
        "avx512"
    }
    fn gemm(&self, args: &GemmArgs<'_, f32>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Avx512` value exists only when `detect` found every feature enabled here.
        unsafe { gemm_panel(args, out, ldc) }
    }
}

impl GemmF16 for Avx512 {
    fn name(&self) -> &'static str {
        "avx512"
    }
    fn gemm(&self, args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Avx512` value exists only when `detect` found every feature enabled here.
        unsafe { gemm_panel(args, out, ldc) }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
fn gemm_u8i8(args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
    let GemmU8I8Args { m, n, k, a, lda, a_scale, a_zero, w, w_scale, w_sum, bias, epilogue } = *args;
    let kp = round_up(k, 4);
    assert!(m == 0 || (lda >= kp && a.len() >= (m - 1) * lda + kp), "a is too short");
    assert!(a_scale.len() >= m && a_zero.len() >= m, "activation parameters are too short");
    assert!(w.len() >= n.div_ceil(16) * 16 * kp, "packed weights are too short");
    assert!(w_scale.len() >= n && w_sum.len() >= n && bias.is_none_or(|b| b.len() >= n), "per-column data too short");
    assert!(m == 0 || (ldc >= n && out.len() >= (m - 1) * ldc + n), "out is too short");
    for p in 0..n.div_ceil(16) {
        let mask = tail_mask(n - p * 16);
        // SAFETY: masked loads read only lanes below n - p*16 (lengths checked above).
        let (scale_v, sum_v, bias_v) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, w_scale.as_ptr().add(p * 16)),
                _mm512_maskz_loadu_epi32(mask, w_sum.as_ptr().add(p * 16)),
                match bias {
                    Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(p * 16)),
                    None => _mm512_setzero_ps(),
                },
            )
        };
        let panel = w[p * 16 * kp..].as_ptr();
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            let mut acc = [_mm512_setzero_si512(); MR];
            for g in 0..kp / 4 {
                // SAFETY: group g of the panel is 64 bytes inside the checked weight length.
                let wv = unsafe { _mm512_loadu_si512(panel.add(g * 64) as *const __m512i) };
                for (r, acc_r) in acc.iter_mut().enumerate().take(rows) {
                    // SAFETY: 4 bytes at row i + r, offset 4g < kp ≤ lda: inside `a`.
                    let a4 = unsafe { std::ptr::read_unaligned(a.as_ptr().add((i + r) * lda + g * 4) as *const i32) };
                    *acc_r = _mm512_dpbusd_epi32(*acc_r, _mm512_set1_epi32(a4), wv);
                }
            }
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let row = i + r;
                let corrected = _mm512_sub_epi32(*acc_r, _mm512_mullo_epi32(_mm512_set1_epi32(a_zero[row]), sum_v));
                let s = _mm512_mul_ps(_mm512_set1_ps(a_scale[row]), scale_v);
                let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corrected), s, bias_v);
                // SAFETY: row < m, the masked columns below n ≤ ldc, inside `out`.
                unsafe { finish16(v, out.as_mut_ptr().add(row * ldc + p * 16), mask, epilogue) };
            }
            i += rows;
        }
    }
}

impl GemmU8I8 for Avx512 {
    fn name(&self) -> &'static str {
        "avx512vnni"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Avx512` value exists only when `detect` found every feature enabled here.
        unsafe { gemm_u8i8(args, out, ldc) }
    }
}

/// Vectorized `exp` (Cephes-style range reduction and degree-6 polynomial; relative error ~2e-7).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.37)), _mm512_set1_ps(-87.33));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3f32, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    _mm512_scalef_ps(p, n)
}

#[target_feature(enable = "avx512f")]
fn softmax(x: &mut [f32], scale: f32) {
    let n = x.len();
    let sv = _mm512_set1_ps(scale);
    let mut maxv = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < n {
        let mask = tail_mask(n - i);
        // SAFETY: masked lanes lie inside x.
        let v = unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), mask, x.as_ptr().add(i)) };
        maxv = _mm512_max_ps(maxv, _mm512_mask_mul_ps(v, mask, v, sv));
        i += 16;
    }
    let maxs = _mm512_set1_ps(_mm512_reduce_max_ps(maxv));
    let mut sumv = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let mask = tail_mask(n - i);
        // SAFETY: masked lanes lie inside x.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
            let e = exp16(_mm512_fmsub_ps(v, sv, maxs));
            let e = _mm512_maskz_mov_ps(mask, e);
            sumv = _mm512_add_ps(sumv, e);
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), mask, e);
        }
        i += 16;
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sumv));
    let mut i = 0;
    while i < n {
        let mask = tail_mask(n - i);
        // SAFETY: masked lanes lie inside x.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), mask, _mm512_mul_ps(v, inv));
        }
        i += 16;
    }
}

#[target_feature(enable = "avx512f,avx512dq")]
fn gelu(x: &mut [f32]) {
    for chunk in x.chunks_mut(16) {
        let mask = tail_mask(chunk.len());
        // SAFETY: masked lanes lie inside the chunk.
        unsafe {
            let v = _mm512_maskz_loadu_ps(mask, chunk.as_ptr());
            _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, gelu16(v));
        }
    }
}

/// Per-row asymmetric u8 quantization with the scalar reference's parameters (same min/max, scale and
/// zero point); values round half away from zero like the reference, up to the last bit of `x/scale`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
fn quantize_u8(x: &[f32], out: &mut [u8]) -> (f32, i32) {
    assert!(out.len() >= x.len(), "output is too short");
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for chunk in x.chunks(16) {
        // SAFETY: masked lanes lie inside the chunk; the others read as 0, which the range includes.
        let v = unsafe { _mm512_maskz_loadu_ps(tail_mask(chunk.len()), chunk.as_ptr()) };
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    let Some((scale, zero)) = u8_params(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi)) else {
        out[..x.len()].fill(0);
        return (1.0, 0);
    };
    let inv = _mm512_set1_ps(1.0 / scale);
    let (zv, half, sign) = (_mm512_set1_epi32(zero), _mm512_set1_ps(0.5), _mm512_set1_ps(-0.0));
    let (min_v, max_v) = (_mm512_setzero_si512(), _mm512_set1_epi32(255));
    for (i, chunk) in x.chunks(16).enumerate() {
        let mask = tail_mask(chunk.len());
        // SAFETY: masked lanes lie inside the chunk and inside `out` (asserted length).
        unsafe {
            let q = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, chunk.as_ptr()), inv);
            let q = _mm512_add_ps(q, _mm512_or_ps(half, _mm512_and_ps(q, sign)));
            let qi = _mm512_add_epi32(_mm512_cvttps_epi32(q), zv);
            let qi = _mm512_min_epi32(_mm512_max_epi32(qi, min_v), max_v);
            _mm_mask_storeu_epi8(out.as_mut_ptr().add(i * 16) as *mut i8, mask, _mm512_cvtepi32_epi8(qi));
        }
    }
    (scale, zero)
}

impl VectorOps for Avx512 {
    fn name(&self) -> &'static str {
        "avx512"
    }
    fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        Scalar.layer_norm(x, gamma, beta, eps, out)
    }
    fn softmax(&self, x: &mut [f32], scale: f32) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F.
        unsafe { softmax(x, scale) }
    }
    fn gelu(&self, x: &mut [f32]) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F and DQ.
        unsafe { gelu(x) }
    }
    fn quantize_u8(&self, x: &[f32], out: &mut [u8]) -> (f32, i32) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F/BW/VL/DQ.
        unsafe { quantize_u8(x, out) }
    }
}
