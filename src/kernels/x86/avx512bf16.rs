//! AVX512-BF16 GEMM (`vdpbf16ps`: Intel Cooper Lake / Sapphire Rapids, AMD Zen 4 and later): the
//! linear layers of bf16 blobs and the attention GEMM of int8 and bf16 models. One `Panel16x2` pair
//! row (16 columns × 2 k values of bf16) is one zmm register, exactly the operand `vdpbf16ps`
//! multiplies with a broadcast pair of activations, adding both products of each column into its
//! f32 lane.
//!
//! Micro-kernels are the `MR` × `NP` tiles of the AVX-512 set (6 rows × 4 panels). The AMX set hands
//! this file the k tail that does not fill a 32-value tile, and its ragged rows when they are too
//! long for its padded tile (k > 2048).

use std::arch::x86_64::*;
use std::ops::Range;

use half::bf16;

use super::avx512::{dispatch_tile, exp16_nonpositive, finish16, layer_norm_stats, ln_row16, tail_mask, Avx512};
use crate::blob::round_up;
use crate::kernels::{Epilogue, GemmBf16, GemmBf16Args, VectorOps};

/// AVX512-BF16 GEMM. Construct only through [`Avx512Bf16::detect`].
pub struct Avx512Bf16(());

/// Rows per micro-kernel tile.
const MR: usize = 6;
/// 16-column panels per micro-kernel tile.
const NP: usize = 4;

impl Avx512Bf16 {
    /// The kernel if this CPU has AVX512-BF16 and the AVX-512 set.
    pub fn detect() -> Option<&'static Avx512Bf16> {
        static K: Avx512Bf16 = Avx512Bf16(());
        (Avx512::detect().is_some() && is_x86_feature_detected!("avx512bf16")).then_some(&K)
    }
}

/// One `R × P` tile over pair rows `pairs` of the panels: each sum plus the panel's `bias` lanes
/// goes through `epilogue` into `out` (masked per panel).
///
/// # Safety
/// `a` valid for `R` rows `lda` apart holding the values of pairs `pairs`, `w` for `P` panels of
/// `panel_len` values, `out` for the masked lanes of `R` rows `ldc` apart.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const P: usize>(
    a: *const bf16,
    lda: usize,
    w: *const bf16,
    panel_len: usize,
    pairs: Range<usize>,
    out: *mut f32,
    ldc: usize,
    masks: &[__mmask16; NP],
    bias: &[__m512; NP],
    epilogue: Epilogue,
) {
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    // SAFETY (whole body): every pointer offset stays inside the ranges the caller guarantees;
    // `__m512i` and `__m512bh` are both 64-byte vectors, so the transmutes only relabel lanes.
    unsafe {
        for g in pairs {
            let wv: [__m512bh; P] = std::array::from_fn(|p| std::mem::transmute(_mm512_loadu_si512(w.add(p * panel_len + g * 32) as *const __m512i)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let pair = std::ptr::read_unaligned(a.add(r * lda + g * 2) as *const i32);
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                for (acc_rp, wp) in acc_r.iter_mut().zip(&wv) {
                    *acc_rp = _mm512_dpbf16_ps(*acc_rp, av, *wp);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (p, acc_rp) in acc_r.iter().enumerate() {
                finish16(_mm512_add_ps(*acc_rp, bias[p]), out.add(r * ldc + p * 16), masks[p], epilogue);
            }
        }
    }
}

/// bf16 GEMM over rows `rows` and pair rows `pairs` (of `round_up(k, 2) / 2`) of `args`, finishing
/// with the bias and epilogue of `args`, or, when `partial`, only adding the sums to `out` (the k
/// tail the AMX kernel leaves). The plain kernel runs all rows and pairs; the AMX kernel hands its
/// ragged rows and its k tail here.
///
/// # Safety
/// `args.check(out, ldc)` must have passed, `rows` must lie below `m` and `pairs` below
/// `round_up(k, 2) / 2`; the CPU must have AVX512-BF16 and AVX-512 BW and DQ.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512bf16")]
pub(crate) unsafe fn gemm_bf16_rows(args: &GemmBf16Args<'_>, rows: Range<usize>, pairs: Range<usize>, out: &mut [f32], ldc: usize, partial: bool) {
    let GemmBf16Args { n, k, a, lda, w, .. } = *args;
    let (bias, epilogue) = if partial { (None, Epilogue::Accumulate) } else { (args.bias, args.epilogue) };
    let panel_len = 16 * crate::blob::round_up(k, 2);
    let total = n.div_ceil(16);
    let mut p0 = 0;
    while p0 < total {
        let panels = (total - p0).min(NP);
        let masks: [__mmask16; NP] = std::array::from_fn(|p| tail_mask(n.saturating_sub((p0 + p) * 16)));
        // SAFETY: the bias has ≥ n values (`check`); masked loads read lanes below n only.
        let bv: [__m512; NP] = std::array::from_fn(|p| bias.map_or(_mm512_setzero_ps(), |b| unsafe { _mm512_maskz_loadu_ps(masks[p], b.as_ptr().add((p0 + p).min(total - 1) * 16)) }));
        let mut i = rows.start;
        while i < rows.end {
            let r = (rows.end - i).min(MR);
            // SAFETY: rows i..i+r < m of `a` and `out`, panels p0..p0+panels of `w`, pairs below
            // round_up(k, 2)/2 (the caller's contract and `GemmBf16Args::check`); stores are masked
            // below n.
            unsafe {
                let (ap, wp, op) = (a.as_ptr().add(i * lda), w.as_ptr().add(p0 * panel_len), out.as_mut_ptr().add(i * ldc + p0 * 16));
                dispatch_tile!(tile, ; r, panels; ap, lda, wp, panel_len, pairs.clone(), op, ldc, &masks, &bv, epilogue);
            }
            i += r;
        }
        p0 += panels;
    }
}

/// 32 f32 values (`width` ≤ 32 of them valid from `src`) as 32 bf16 in order (zeros past `width`).
///
/// # Safety
/// `src` valid for `width` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn load32_bf16(src: *const f32, width: usize) -> __m512i {
    // SAFETY: masked loads touch only the valid lanes.
    unsafe {
        let lo = _mm512_maskz_loadu_ps(tail_mask(width), src);
        let hi = _mm512_maskz_loadu_ps(tail_mask(width.saturating_sub(16)), src.add(16.min(width)));
        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
    }
}

/// SIMD [`pack::rows_to_bf16`](crate::kernels::pack::rows_to_bf16) (`vcvtne2ps2bf16` rounds to
/// nearest even like the reference).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) fn convert_rows(src: &[f32], rows: usize, k: usize, src_stride: usize, dst: &mut [bf16], dst_stride: usize) {
    assert!(rows == 0 || (dst_stride >= k && src.len() >= (rows - 1) * src_stride + k && dst.len() >= rows * dst_stride));
    for i in 0..rows {
        let mut kk = 0;
        while kk < dst_stride {
            let width = k.saturating_sub(kk).min(32);
            let lanes = (dst_stride - kk).min(32);
            // SAFETY: reads values kk..kk+width < k of row i, writes lanes kk..kk+lanes ≤ dst_stride.
            unsafe {
                let v = load32_bf16(src.as_ptr().add(i * src_stride + kk), width);
                _mm512_mask_storeu_epi16(dst.as_mut_ptr().add(i * dst_stride + kk) as *mut i16, ((1u64 << lanes) - 1) as __mmask32, v);
            }
            kk += 32;
        }
    }
}

/// LayerNorm of `R` rows (`stride` apart in `x`) rounded to bf16 rows of `out` (`out_stride`
/// apart, zero from `n` to `out_stride`): the f32 values of `Avx512`'s `layer_norm_rows`
/// ([`layer_norm_stats`], [`ln_row16`]), 32 at a time through one `vcvtne2ps2bf16` (nearest even,
/// as `convert_rows`).
///
/// # Safety
/// `x` must be valid for `R` rows of `n` values `stride` apart, `out` for `R` rows of `out_stride ≥
/// n` values; `gamma` and `beta` hold ≥ `n` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn layer_norm_bf16_interleaved<const R: usize>(x: *const f32, stride: usize, n: usize, gamma: &[f32], beta: &[f32], eps: f32, out: *mut bf16, out_stride: usize) {
    // SAFETY (whole body): loads are masked below n, stores below out_stride (the caller's
    // contract); `__m512bh` and `__m512i` have the same size.
    unsafe {
        let (mv, inv) = layer_norm_stats::<R>(x, stride, n, eps);
        let mut i = 0;
        while i < out_stride {
            let (m0, m1) = (tail_mask(n.saturating_sub(i)), tail_mask(n.saturating_sub(i + 16)));
            let (g0, b0) = (_mm512_maskz_loadu_ps(m0, gamma.as_ptr().add(i)), _mm512_maskz_loadu_ps(m0, beta.as_ptr().add(i)));
            let (g1, b1) = (_mm512_maskz_loadu_ps(m1, gamma.as_ptr().add(i + 16)), _mm512_maskz_loadu_ps(m1, beta.as_ptr().add(i + 16)));
            let store = ((1u64 << (out_stride - i).min(32)) - 1) as __mmask32;
            for r in 0..R {
                // Lanes past n are zeroed (whatever the statistics are), as `convert_rows` pads.
                let v0 = _mm512_maskz_mov_ps(m0, ln_row16(x.add(r * stride + i), m0, mv[r], inv[r], g0, b0));
                let v1 = _mm512_maskz_mov_ps(m1, ln_row16(x.add(r * stride + i + 16), m1, mv[r], inv[r], g1, b1));
                let h = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(v1, v0));
                _mm512_mask_storeu_epi16(out.add(r * out_stride + i) as *mut i16, store, h);
            }
            i += 32;
        }
    }
}

/// [`GemmBf16::layer_norm_to_bf16`] for sets whose vector kernels are `Avx512`'s: four rows at a
/// time, then one.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_rows_bf16(x: &[f32], rows: usize, d: usize, stride: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [bf16], out_stride: usize) {
    if rows == 0 || d == 0 {
        return;
    }
    assert!(
        stride >= d && out_stride >= d && x.len() >= (rows - 1) * stride + d && out.len() >= rows * out_stride && gamma.len() >= d && beta.len() >= d,
        "layer_norm_rows_bf16 operands are too short"
    );
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    // SAFETY: rows r..r + 4 (or the single row) lie inside x and out (asserted above).
    unsafe {
        while r + 4 <= rows {
            layer_norm_bf16_interleaved::<4>(xp.add(r * stride), stride, d, gamma, beta, eps, op.add(r * out_stride), out_stride);
            r += 4;
        }
        while r < rows {
            layer_norm_bf16_interleaved::<1>(xp.add(r * stride), stride, d, gamma, beta, eps, op.add(r * out_stride), out_stride);
            r += 1;
        }
    }
}

/// The 16 × 16 transpose of 32-bit lanes: lane `j` of output `c` is lane `c` of input `j` (two
/// rounds of in-lane unpacks, two of 128-bit lane shuffles: 64 shuffles in all).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16x16_epi32(r: [__m512i; 16]) -> [__m512i; 16] {
    // Per 128-bit lane L, after the unpacks v[g][e] holds lanes 4L + e of rows 4g..4g + 4.
    let mut v = [[_mm512_setzero_si512(); 4]; 4];
    for (g, v) in v.iter_mut().enumerate() {
        let [a, b, c, d] = [r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]];
        let (ab_lo, ab_hi, cd_lo, cd_hi) = (_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b), _mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
        *v = [_mm512_unpacklo_epi64(ab_lo, cd_lo), _mm512_unpackhi_epi64(ab_lo, cd_lo), _mm512_unpacklo_epi64(ab_hi, cd_hi), _mm512_unpackhi_epi64(ab_hi, cd_hi)];
    }
    let mut out = [_mm512_setzero_si512(); 16];
    for e in 0..4 {
        // Output 4L + e gathers 128-bit lane L of v[0..4][e].
        let (a, b) = (_mm512_shuffle_i32x4::<0x44>(v[0][e], v[1][e]), _mm512_shuffle_i32x4::<0xEE>(v[0][e], v[1][e]));
        let (c, d) = (_mm512_shuffle_i32x4::<0x44>(v[2][e], v[3][e]), _mm512_shuffle_i32x4::<0xEE>(v[2][e], v[3][e]));
        out[e] = _mm512_shuffle_i32x4::<0x88>(a, c);
        out[4 + e] = _mm512_shuffle_i32x4::<0xDD>(a, c);
        out[8 + e] = _mm512_shuffle_i32x4::<0x88>(b, d);
        out[12 + e] = _mm512_shuffle_i32x4::<0xDD>(b, d);
    }
    out
}

/// SIMD [`pack::panel16x2_from_rows`](crate::kernels::pack::panel16x2_from_rows): per panel of 16
/// source rows (zero rows past `n`) and 16 pairs, the rows' pairs are converted (one 32-bit lane
/// per pair) and transposed, so that each of the 16 pair rows is one store. Every byte of the
/// panels is written (pairs past `k` convert from masked-off zeros).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) fn pack_rows(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
    let kp = round_up(k, 2);
    let dst = &mut dst[..round_up(n, 16) * kp];
    assert!(n == 0 || src.len() >= (n - 1) * row_stride + k);
    for (p, panel) in dst.chunks_exact_mut(16 * kp).enumerate() {
        let rows = (n - 16 * p).min(16);
        let mut g = 0;
        while 2 * g < kp {
            let width = (k - 2 * g).min(32);
            // SAFETY: reads values 2g..2g + width ≤ k of rows 16p..16p + rows < n.
            let lanes: [__m512i; 16] = std::array::from_fn(|j| if j < rows { unsafe { load32_bf16(src.as_ptr().add((16 * p + j) * row_stride + 2 * g), width) } } else { _mm512_setzero_si512() });
            let pairs = transpose16x16_epi32(lanes);
            for (q, pair_row) in pairs.iter().enumerate().take(width.div_ceil(2)) {
                // SAFETY: pair row g + q < kp/2 of this panel: 32 bf16 at 32·(g + q) < 16·kp.
                unsafe { _mm512_storeu_si512(panel.as_mut_ptr().add(32 * (g + q)) as *mut __m512i, *pair_row) };
            }
            g += 16;
        }
    }
}

/// SIMD [`pack::panel16x2_from_cols`](crate::kernels::pack::panel16x2_from_cols): two source rows
/// (k and k + 1) of 16 columns become one pair row by converting both and interleaving.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) fn pack_cols(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
    let kp = round_up(k, 2);
    let dst = &mut dst[..round_up(n, 16) * kp];
    assert!(n == 0 || src.len() >= (k - 1) * row_stride + n);
    // Lane 2i takes bf16 i (row k), lane 2i + 1 takes bf16 16 + i (row k + 1).
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
    );
    for (p, panel) in dst.chunks_exact_mut(16 * kp).enumerate() {
        let j0 = p * 16;
        let mask = tail_mask(n - j0);
        for (g, pair_row) in panel.chunks_exact_mut(32).enumerate() {
            // SAFETY: masked loads read columns j0.. below n of rows 2g (< k) and 2g + 1 (only when
            // < k); the store writes this 32-value pair row.
            unsafe {
                let r0 = _mm512_maskz_loadu_ps(mask, src.as_ptr().add(2 * g * row_stride + j0));
                let r1 = if 2 * g + 1 < k { _mm512_maskz_loadu_ps(mask, src.as_ptr().add((2 * g + 1) * row_stride + j0)) } else { _mm512_setzero_ps() };
                let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(r1, r0));
                _mm512_storeu_si512(pair_row.as_mut_ptr() as *mut __m512i, _mm512_permutexvar_epi16(interleave, both));
            }
        }
    }
}

/// Score rows [`softmax_rows_to_bf16`] interleaves: a row's max and sum reductions are latency
/// chains that the other rows' work fills.
const SOFTMAX_ROWS: usize = 4;

/// SIMD [`GemmBf16::softmax_to_bf16`] of `R` rows of `n` scores (`x_stride` apart) into rows of
/// `out` (`out_stride ≥ n` apart, zero from `n` on), their passes interleaved: a max pass and an
/// exp / sum / convert pass, two accumulators each so consecutive vectors do not wait on each
/// other. Row `r`'s sum goes to `sums[r]`. Each row's arithmetic is the same whatever `R`.
///
/// # Safety
/// `x` must be valid for `R` rows of `n` values `x_stride` apart, `out` for `R` rows of
/// `out_stride` values, `sums` for `R` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::needless_range_loop)] // `r` indexes the rows' pointers and several accumulator arrays
unsafe fn softmax_interleaved<const R: usize>(x: *const f32, n: usize, x_stride: usize, scale: f32, out: *mut bf16, out_stride: usize, sums: *mut f32) {
    let sv = _mm512_set1_ps(scale);
    let neg = _mm512_set1_ps(f32::NEG_INFINITY);
    // SAFETY (whole body): full vectors read and write lanes below n in every row; tails are
    // masked; `__m512bh`/`__m256bh` and `__m512i`/`__m256i` have the same size, the transmutes
    // relabel lanes.
    unsafe {
        let (mut m0, mut m1) = ([neg; R], [neg; R]);
        let mut i = 0;
        while i + 32 <= n {
            for r in 0..R {
                let p = x.add(r * x_stride + i);
                m0[r] = _mm512_max_ps(m0[r], _mm512_mul_ps(_mm512_loadu_ps(p), sv));
                m1[r] = _mm512_max_ps(m1[r], _mm512_mul_ps(_mm512_loadu_ps(p.add(16)), sv));
            }
            i += 32;
        }
        while i < n {
            let mask = tail_mask(n - i);
            for r in 0..R {
                m0[r] = _mm512_mask_max_ps(m0[r], mask, m0[r], _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x.add(r * x_stride + i)), sv));
            }
            i += 16;
        }
        let maxs: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(m0[r], m1[r]))));
        let (mut s0, mut s1) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
        let mut i = 0;
        while i + 32 <= n {
            for r in 0..R {
                let p = x.add(r * x_stride + i);
                let e0 = exp16_nonpositive(_mm512_fmsub_ps(_mm512_loadu_ps(p), sv, maxs[r]));
                let e1 = exp16_nonpositive(_mm512_fmsub_ps(_mm512_loadu_ps(p.add(16)), sv, maxs[r]));
                s0[r] = _mm512_add_ps(s0[r], e0);
                s1[r] = _mm512_add_ps(s1[r], e1);
                _mm512_storeu_si512(out.add(r * out_stride + i) as *mut __m512i, std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(e1, e0)));
            }
            i += 32;
        }
        while i < n {
            let mask = tail_mask(n - i);
            for r in 0..R {
                let e = _mm512_maskz_mov_ps(mask, exp16_nonpositive(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(mask, x.add(r * x_stride + i)), sv, maxs[r])));
                s0[r] = _mm512_add_ps(s0[r], e);
                _mm256_mask_storeu_epi16(out.add(r * out_stride + i) as *mut i16, mask, std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(e)));
            }
            i += 16;
        }
        for r in 0..R {
            // The padding from n on, zeroed by masked vector stores (a `write_bytes` here was a
            // libc `memset` call per row, 0.7 % of an int8 pass).
            let mut j = n;
            while j < out_stride {
                let count = (out_stride - j).min(32);
                let mask = if count == 32 { u32::MAX } else { (1u32 << count) - 1 };
                _mm512_mask_storeu_epi16(out.add(r * out_stride + j) as *mut i16, mask, _mm512_setzero_si512());
                j += count;
            }
            *sums.add(r) = _mm512_reduce_add_ps(_mm512_add_ps(s0[r], s1[r]));
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) fn softmax_to_bf16(x: &[f32], scale: f32, out: &mut [bf16]) -> f32 {
    assert!(out.len() >= x.len(), "output is too short");
    let mut sum = 0.0;
    // SAFETY: one row of x.len() scores and out.len() ≥ x.len() outputs (asserted).
    unsafe { softmax_interleaved::<1>(x.as_ptr(), x.len(), 0, scale, out.as_mut_ptr(), out.len(), &mut sum) };
    sum
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn softmax_rows_to_bf16(x: &[f32], rows: usize, n: usize, x_stride: usize, scale: f32, out: &mut [bf16], out_stride: usize, sums: &mut [f32]) {
    if rows == 0 {
        return;
    }
    assert!(
        x_stride >= n && out_stride >= n && x.len() >= (rows - 1) * x_stride + n && out.len() >= rows * out_stride && sums.len() >= rows,
        "softmax_rows_to_bf16 operands are too short"
    );
    let (xp, op, sp) = (x.as_ptr(), out.as_mut_ptr(), sums.as_mut_ptr());
    let mut r = 0;
    // SAFETY: rows r..r + SOFTMAX_ROWS (or the single row) and their sums lie inside the buffers
    // (asserted above).
    unsafe {
        while r + SOFTMAX_ROWS <= rows {
            softmax_interleaved::<SOFTMAX_ROWS>(xp.add(r * x_stride), n, x_stride, scale, op.add(r * out_stride), out_stride, sp.add(r));
            r += SOFTMAX_ROWS;
        }
        while r < rows {
            softmax_interleaved::<1>(xp.add(r * x_stride), n, x_stride, scale, op.add(r * out_stride), out_stride, sp.add(r));
            r += 1;
        }
    }
}

impl GemmBf16 for Avx512Bf16 {
    fn name(&self) -> &'static str {
        "avx512bf16"
    }
    fn gemm(&self, args: &GemmBf16Args<'_>, out: &mut [f32], ldc: usize) {
        let kp = args.check(out, ldc);
        // SAFETY: checked above; an `Avx512Bf16` exists only when `detect` found the features.
        unsafe { gemm_bf16_rows(args, 0..args.m, 0..kp / 2, out, ldc, false) }
    }
    fn convert_rows(&self, src: &[f32], rows: usize, k: usize, src_stride: usize, dst: &mut [bf16], dst_stride: usize) {
        // SAFETY: `detect` found AVX512-BF16 and BW.
        unsafe { convert_rows(src, rows, k, src_stride, dst, dst_stride) }
    }
    fn pack_rows(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
        // SAFETY: as above.
        unsafe { pack_rows(src, n, k, row_stride, dst) }
    }
    fn layer_norm_to_bf16(&self, _vector: &dyn VectorOps, x: &[f32], rows: usize, d: usize, stride: usize, norm: (&[f32], &[f32], f32), _h: &mut [f32], out: &mut [bf16], out_stride: usize) {
        // SAFETY: as above.
        unsafe { layer_norm_rows_bf16(x, rows, d, stride, norm.0, norm.1, norm.2, out, out_stride) }
    }
    fn pack_cols(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
        // SAFETY: as above.
        unsafe { pack_cols(src, n, k, row_stride, dst) }
    }
    fn softmax_to_bf16(&self, x: &[f32], scale: f32, out: &mut [bf16]) -> f32 {
        // SAFETY: `detect` found AVX512-BF16 and the AVX-512 set (F, BW, VL among them).
        unsafe { softmax_to_bf16(x, scale, out) }
    }
    fn softmax_rows_to_bf16(&self, x: &[f32], rows: usize, n: usize, x_stride: usize, scale: f32, out: &mut [bf16], out_stride: usize, sums: &mut [f32]) {
        // SAFETY: as above.
        unsafe { softmax_rows_to_bf16(x, rows, n, x_stride, scale, out, out_stride, sums) }
    }
}
