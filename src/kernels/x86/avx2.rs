//! AVX2 kernels (x86-64-v3: AVX2 + FMA + F16C; Intel Haswell and later, AMD Zen 1–3).
//!
//! A 16-column weight panel row is two ymm registers, so the `Panel16` layout feeds the FMA
//! micro-kernel directly: [`MR`] rows × 16 columns = 12 ymm accumulators, one broadcast activation
//! per row and step. Row tails use smaller register tiles (const generics); column tails compute the
//! whole (zero-padded) panel and store with `vmaskmovps`.
//!
//! The u8 × i8 GEMM avoids `vpmaddubsw`, whose i16 pair sums saturate for full-range operands
//! (255·127·2 > 32767). Instead it widens both operands to i16 (`vpmovzxbw` for the broadcast
//! activations, `vpmovsxbw` for the weights) and multiplies with `vpmaddwd`, whose pair sums
//! (|·| ≤ 2·255·128) are exact in i32; see [`gemm_u8i8`].

use std::arch::x86_64::*;

use half::f16;

use crate::blob::round_up;
use crate::kernels::{pack, u8_params, Epilogue, GemmArgs, GemmF16, GemmF32, GemmU8I8, GemmU8I8Args, VectorOps};

/// AVX2 kernel set. Construct only through [`Avx2::detect`].
pub struct Avx2(());

/// Rows per f32/f16 micro-kernel step (6 rows × 2 ymm = 12 accumulators of the 16 ymm registers).
const MR: usize = 6;

/// Rows per u8 × i8 micro-kernel step (3 rows × 4 ymm of pair sums = 12 accumulators).
const MR_I8: usize = 3;

impl Avx2 {
    /// The kernel set if this CPU has every feature it uses (AVX2, FMA, F16C).
    pub fn detect() -> Option<&'static Avx2> {
        let ok = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
        static K: Avx2 = Avx2(());
        ok.then_some(&K)
    }
}

/// Lane mask (all ones in lanes `< width`) for `vmaskmovps`, `width` in 0..=8.
#[inline]
#[target_feature(enable = "avx2")]
fn mask8(width: usize) -> __m256i {
    _mm256_cmpgt_epi32(_mm256_set1_epi32(width as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}

/// Coefficients of [`gelu8`]: `h(t) = t·(1 − Φ(t))` on `t ∈ [0, 6]` in 8 equal intervals, one
/// degree-6 polynomial in the interval's local coordinate `u ∈ [0, 1)` each (row `p` holds the
/// `u^p` coefficients of the 8 intervals: one ymm register, one `vpermps` table). Made by
/// `python3 scripts/fit_gelu.py 8 6`, which also bounds the error as this kernel evaluates it:
/// |h error| < 6.8e-8, |gelu error| < 6.1e-8 · (1 + |gelu|).
#[allow(clippy::excessive_precision, clippy::approx_constant)]
static GELU8_TABLE: [[f32; 8]; 7] = [
    // u^0
    [4.17253787077243e-08, 0.1699705272912979, 0.1002107784152031, 0.027505068108439445, 0.004049697425216436, 0.0003315644571557641, 1.5289349903468974e-05, 3.992440440470091e-07],
    // u^1
    [0.3749959170818329, 0.0005795765900984406, -0.09559951722621918, -0.044392671436071396, -0.008959546685218811, -0.0009253263706341386, -5.137922926223837e-05, -1.5669362483095028e-06],
    // u^2
    [-0.2243405133485794, -0.12172994762659073, 0.009068519808351994, 0.027343878522515297, 0.008730255998671055, 0.001195640186779201, 8.17557011032477e-05, 2.941804950751248e-06],
    // u^3
    [-0.0003778485697694123, 0.054464325308799744, 0.024136127904057503, -0.005366808734834194, -0.004705362021923065, -0.0009321987745352089, -8.042420813580975e-05, -3.4261315704497974e-06],
    // u^4
    [0.022069070488214493, 0.0019107551779597998, -0.012087509967386723, -0.002351079834625125, 0.001378526329062879, 0.00047137844376266, 5.214177508605644e-05, 2.6002401227742666e-06],
    // u^5
    [-0.0013755738036707044, -0.006148933432996273, 0.0016462297644466162, 0.0016178927617147565, -0.0001474693708587438, -0.0001483804953750223, -2.092256363539491e-05, -1.1890109590240172e-06],
    // u^6
    [-0.0010006286902353168, 0.0011644962942227721, 0.00013045720697846264, -0.00030659124604426324, -1.4538547475240193e-05, 2.2612504835706204e-05, 3.938572262995876e-06, 2.4672050358276465e-07],
];

/// Exact (erf) GELU of 8 values: `max(x, 0) − h(|x|)` with `h(t) = t·(1 − Φ(t))` from
/// [`GELU8_TABLE`] (for x < 0, `x·Φ(x) = −|x|·(1 − Φ(|x|))`), each lane's coefficients picked by
/// `vpermps` — the AVX-512 set's formulation with 8 intervals of degree 6, so a table row fits one
/// register. Past |x| = 6, `h` is below 6e-9, so gelu(x) is x for large x and within 6e-9 of 0
/// for very negative x; NaN stays NaN. (It replaced a rational erf with a division: 11 % of an
/// avxvnni int8 pass went to GELU.)
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu8(x: __m256) -> __m256 {
    let t = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
    // The interval index and the local coordinate (exact); the top interval also takes everything
    // past 6 (and NaN, which `min` replaces by its second operand).
    let m = _mm256_min_ps(_mm256_mul_ps(t, _mm256_set1_ps(8.0 / 6.0)), _mm256_set1_ps(8.0 - 1.0 / 262_144.0));
    let idx = _mm256_cvttps_epi32(m);
    let u = _mm256_sub_ps(m, _mm256_cvtepi32_ps(idx));
    // SAFETY: each row of the table is 8 f32: one full load.
    let coef = |p: usize| _mm256_permutevar8x32_ps(unsafe { _mm256_loadu_ps(GELU8_TABLE[p].as_ptr()) }, idx);
    let mut h = coef(6);
    for p in (0..6).rev() {
        h = _mm256_fmadd_ps(h, u, coef(p));
    }
    // `max` returns its second operand when either is NaN, so a NaN x stays NaN.
    _mm256_sub_ps(_mm256_max_ps(_mm256_setzero_ps(), x), h)
}

/// Applies the epilogue to 8 results and stores the first `width` (0..=8) lanes at `dst`.
///
/// # Safety
/// `dst` must be valid for `width` values; AVX2 and FMA must be available.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn finish8(r: __m256, dst: *mut f32, width: usize, epilogue: Epilogue) {
    // SAFETY: the caller guarantees `dst` is valid for `width` lanes; the full-width path touches
    // exactly 8, the masked path only the lanes below `width`.
    unsafe {
        if width >= 8 {
            let v = match epilogue {
                Epilogue::Store => r,
                Epilogue::Accumulate => _mm256_add_ps(_mm256_loadu_ps(dst), r),
                Epilogue::Gelu => gelu8(r),
            };
            _mm256_storeu_ps(dst, v);
        } else if width > 0 {
            let mask = mask8(width);
            let v = match epilogue {
                Epilogue::Store => r,
                Epilogue::Accumulate => _mm256_add_ps(_mm256_maskload_ps(dst, mask), r),
                Epilogue::Gelu => gelu8(r),
            };
            _mm256_maskstore_ps(dst, mask, v);
        }
    }
}

/// Applies the epilogue to 16 results (`lo` = columns 0..8, `hi` = 8..16) and stores the first
/// `width` (1..=16) at `dst`.
///
/// # Safety
/// `dst` must be valid for `width` values; AVX2 and FMA must be available.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn finish16(lo: __m256, hi: __m256, dst: *mut f32, width: usize, epilogue: Epilogue) {
    // SAFETY: the caller guarantees `width` valid values at `dst`; the second half is only
    // addressed when it has lanes inside that range.
    unsafe {
        finish8(lo, dst, width.min(8), epilogue);
        if width > 8 {
            finish8(hi, dst.add(8), width - 8, epilogue);
        }
    }
}

/// A weight element type of the `Panel16` layout.
trait PanelWeight: Copy {
    /// Loads 8 weights as f32.
    ///
    /// # Safety
    /// `p` must be valid for 8 elements; the CPU must support AVX2 (and F16C for f16).
    unsafe fn load8(p: *const Self) -> __m256;
}

impl PanelWeight for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 at p.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl PanelWeight for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at p and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
}

/// `R` rows × one 16-column panel: accumulates over `k`, adds `bias`, applies the epilogue.
///
/// # Safety
/// `a` must be valid for `R` rows of `k` values `lda` apart, `panel` for `k × 16` weights, `out` for
/// `R` rows (`ldc` apart) of `width` values; AVX2, FMA and F16C must be available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32<W: PanelWeight, const R: usize>(
    a: *const f32,
    lda: usize,
    panel: *const W,
    k: usize,
    bias: (__m256, __m256),
    out: *mut f32,
    ldc: usize,
    width: usize,
    epilogue: Epilogue,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: every pointer stays inside the ranges the caller guarantees (kk < k, r < R).
    unsafe {
        for kk in 0..k {
            let w0 = W::load8(panel.add(kk * 16));
            let w1 = W::load8(panel.add(kk * 16 + 8));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r * lda + kk));
                acc_r[0] = _mm256_fmadd_ps(av, w0, acc_r[0]);
                acc_r[1] = _mm256_fmadd_ps(av, w1, acc_r[1]);
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let (lo, hi) = (_mm256_add_ps(acc_r[0], bias.0), _mm256_add_ps(acc_r[1], bias.1));
            finish16(lo, hi, out.add(r * ldc), width, epilogue);
        }
    }
}

/// Loads `width` (1..=16) per-column f32 values at `p` into two registers, zero beyond `width`.
///
/// # Safety
/// `p` must be valid for `width` values; AVX2 must be available.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn load16_ps(p: *const f32, width: usize) -> (__m256, __m256) {
    // SAFETY: masked loads touch only lanes below `width`; the second half is addressed only when
    // it has such lanes.
    unsafe {
        let lo = _mm256_maskload_ps(p, mask8(width.min(8)));
        let hi = if width > 8 { _mm256_maskload_ps(p.add(8), mask8(width - 8)) } else { _mm256_setzero_ps() };
        (lo, hi)
    }
}

/// Float GEMM over `Panel16` weights of element type `W`.
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_panel<W: PanelWeight>(args: &GemmArgs<'_, W>, out: &mut [f32], ldc: usize) {
    args.check(out, ldc);
    let GemmArgs { m, n, k, a, lda, w, bias, epilogue } = *args;
    for p in 0..n.div_ceil(16) {
        let width = (n - p * 16).min(16);
        let bias_v = match bias {
            // SAFETY: bias holds ≥ n values (checked), so `width` values from p·16.
            Some(b) => unsafe { load16_ps(b.as_ptr().add(p * 16), width) },
            None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
        };
        let panel = w[p * 16 * k..].as_ptr();
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            // SAFETY: rows i..i+rows < m of `a` (k values each) and `out` (columns p·16..p·16+width
            // ≤ n ≤ ldc) lie inside the checked slices; the panel holds k × 16 weights.
            unsafe {
                let (ap, op) = (a.as_ptr().add(i * lda), out.as_mut_ptr().add(i * ldc + p * 16));
                match rows {
                    6 => tile_f32::<W, 6>(ap, lda, panel, k, bias_v, op, ldc, width, epilogue),
                    5 => tile_f32::<W, 5>(ap, lda, panel, k, bias_v, op, ldc, width, epilogue),
                    4 => tile_f32::<W, 4>(ap, lda, panel, k, bias_v, op, ldc, width, epilogue),
                    3 => tile_f32::<W, 3>(ap, lda, panel, k, bias_v, op, ldc, width, epilogue),
                    2 => tile_f32::<W, 2>(ap, lda, panel, k, bias_v, op, ldc, width, epilogue),
                    _ => tile_f32::<W, 1>(ap, lda, panel, k, bias_v, op, ldc, width, epilogue),
                }
            }
            i += rows;
        }
    }
}

impl GemmF32 for Avx2 {
    fn name(&self) -> &'static str {
        "avx2"
    }
    fn gemm(&self, args: &GemmArgs<'_, f32>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2, FMA and F16C.
        unsafe { gemm_panel(args, out, ldc) }
    }
}

impl GemmF16 for Avx2 {
    fn name(&self) -> &'static str {
        "avx2"
    }
    fn gemm(&self, args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2, FMA and F16C.
        unsafe { gemm_panel(args, out, ldc) }
    }
}

/// Per-panel column data of an int8 GEMM: weight scale, weight sum and bias of 16 columns (zero
/// beyond the panel's width).
#[derive(Clone, Copy)]
pub(super) struct ColumnData {
    scale: (__m256, __m256),
    sum: (__m256i, __m256i),
    bias: (__m256, __m256),
}

impl ColumnData {
    /// Loads the column data of panel `p` (`width` = its valid columns).
    ///
    /// # Safety
    /// `args` must have passed [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check) and `p` be a panel index below `ceil(n/16)`;
    /// AVX2 must be available.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn load(args: &GemmU8I8Args<'_>, p: usize, width: usize) -> ColumnData {
        // SAFETY: w_scale, w_sum and bias hold ≥ n values (checked), so `width` from p·16.
        unsafe {
            let scale = load16_ps(args.w_scale.as_ptr().add(p * 16), width);
            let sum = load16_ps(args.w_sum.as_ptr().add(p * 16) as *const f32, width);
            let bias = match args.bias {
                Some(b) => load16_ps(b.as_ptr().add(p * 16), width),
                None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
            };
            ColumnData { scale, sum: (_mm256_castps_si256(sum.0), _mm256_castps_si256(sum.1)), bias }
        }
    }
}

/// Turns the exact integer dot products of one row and 16 columns (`lo` = columns 0..8, `hi` =
/// 8..16) into `a_scale · w_scale · (dot − a_zero · w_sum) + bias`, applies the epilogue and stores
/// `width` values at `dst`.
///
/// # Safety
/// `dst` must be valid for `width` (1..=16) values; AVX2 and FMA must be available.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn finish_i32(
    lo: __m256i,
    hi: __m256i,
    a_scale: f32,
    a_zero: i32,
    col: &ColumnData,
    dst: *mut f32,
    width: usize,
    epilogue: Epilogue,
) {
    let z = _mm256_set1_epi32(a_zero);
    let s = _mm256_set1_ps(a_scale);
    let lo = _mm256_sub_epi32(lo, _mm256_mullo_epi32(z, col.sum.0));
    let hi = _mm256_sub_epi32(hi, _mm256_mullo_epi32(z, col.sum.1));
    let lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(s, col.scale.0), col.bias.0);
    let hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(s, col.scale.1), col.bias.1);
    // SAFETY: forwarded from the caller.
    unsafe { finish16(lo, hi, dst, width, epilogue) }
}

/// `R` rows × one 16-column `Panel16x4` panel of the u8 × i8 GEMM (see [`gemm_u8i8`]).
///
/// # Safety
/// `args` must have passed [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check), rows `i..i+R` must be below `m` and `p` a panel
/// index below `ceil(n/16)`; AVX2 and FMA must be available.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_u8i8<const R: usize>(args: &GemmU8I8Args<'_>, out: *mut f32, ldc: usize, i: usize, p: usize, col: &ColumnData) {
    let kp = round_up(args.k, 4);
    let width = (args.n - p * 16).min(16);
    let panel = args.w[p * 16 * kp..].as_ptr();
    // acc[r][q]: pair sums of columns 4q..4q+4, lanes (column 4q + l/2, k-pair l % 2).
    let mut acc = [[_mm256_setzero_si256(); 4]; R];
    // SAFETY: group g covers bytes 64g..64g+64 of the panel (kp·16 bytes, checked) and activation
    // bytes 4g..4g+4 < kp ≤ lda of rows below m (checked). Activation bytes past k meet zero weights.
    unsafe {
        for g in 0..kp / 4 {
            let mut av = [_mm256_setzero_si256(); R];
            for (r, av_r) in av.iter_mut().enumerate() {
                let a4 = std::ptr::read_unaligned(args.a.as_ptr().add((i + r) * args.lda + g * 4) as *const i32);
                // [a0 a1 a2 a3] as i16, repeated 4 times
                *av_r = _mm256_cvtepu8_epi16(_mm_set1_epi32(a4));
            }
            for q in 0..4 {
                // 4 columns × 4 k-bytes, sign-extended to 16 i16
                let wq = _mm256_cvtepi8_epi16(_mm_loadu_si128(panel.add(g * 64 + q * 16) as *const __m128i));
                for (acc_r, av_r) in acc.iter_mut().zip(&av) {
                    acc_r[q] = _mm256_add_epi32(acc_r[q], _mm256_madd_epi16(*av_r, wq));
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            // hadd gives columns [0 1 4 5 | 2 3 6 7]; the permute restores 0..8.
            let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(acc_r[0], acc_r[1]));
            let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(acc_r[2], acc_r[3]));
            let row = i + r;
            let dst = out.add(row * ldc + p * 16);
            finish_i32(lo, hi, args.a_scale[row], args.a_zero[row], col, dst, width, args.epilogue);
        }
    }
}

/// u8 × i8 GEMM, exact in i32. `vpmaddubsw` would multiply u8 × i8 directly but saturates its i16
/// pair sums for full-range values (255·127·2 > 32767), so instead each group of 4 activation bytes
/// is zero-extended to i16 and broadcast, each 16-byte quarter of the 64-byte weight group (4 columns
/// × 4 k) is sign-extended to i16, and `vpmaddwd` forms exact i32 pair sums (|·| ≤ 65280). Each row
/// keeps 4 accumulators of pair sums (2 per column) that one `vphaddd` per 8 columns folds at the end;
/// i32 overflow would need k > 65000.
#[target_feature(enable = "avx2,fma")]
fn gemm_u8i8(args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
    args.check(out, ldc);
    let (m, n) = (args.m, args.n);
    let op = out.as_mut_ptr();
    for p in 0..n.div_ceil(16) {
        // SAFETY: arguments checked, p < ceil(n/16).
        let col = unsafe { ColumnData::load(args, p, (n - p * 16).min(16)) };
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR_I8);
            // SAFETY: arguments checked, rows i..i+rows < m, p < ceil(n/16).
            unsafe {
                match rows {
                    3 => tile_u8i8::<3>(args, op, ldc, i, p, &col),
                    2 => tile_u8i8::<2>(args, op, ldc, i, p, &col),
                    _ => tile_u8i8::<1>(args, op, ldc, i, p, &col),
                }
            }
            i += rows;
        }
    }
}

impl GemmU8I8 for Avx2 {
    fn name(&self) -> &'static str {
        "avx2"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { gemm_u8i8(args, out, ldc) }
    }
}

/// Vectorized `exp` (Cephes-style range reduction and degree-6 polynomial, relative error ~2e-7),
/// with `2^n` built in the exponent field (AVX2 has no `vscalefps`).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.37)), _mm256_set1_ps(-87.33));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3f32, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    // n ∈ [-126, 127] after the clamp: a normal exponent field.
    let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127))));
    _mm256_mul_ps(p, pow2n)
}

/// `exp` of 8 values `x ≤ 0` (softmax arguments, their row's maximum subtracted): the AVX-512
/// set's `exp16_nonpositive` in 8 lanes (one-step range reduction, the degree-5 polynomial of
/// `scripts/fit_exp.py`, relative error ≤ 4.5e-7 over [−87, 0]); arguments below −87.3 give 0.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8_nonpositive(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.33));
    // n = round(x·log2 e) by the magic-number trick: adding 1.5·2^23 + 127 rounds to an integer
    // (the sum's unit in the last place is 1), so the sum's low mantissa bits hold n + 127, the
    // exponent field of 2^n once shifted into place (n ∈ [−126, 0] after the clamp), and the sum
    // less the constant is n as a float. (`vroundps` + `vcvtps2dq` were three µops.)
    let magic = _mm256_set1_ps(12_583_039.0);
    let kn = _mm256_fmadd_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E), magic);
    let n = _mm256_sub_ps(kn, magic);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(std::f32::consts::LN_2), x);
    let c = super::avx512::EXP_COEFFS;
    let mut p = _mm256_set1_ps(c[5]);
    for c in c[..5].iter().rev() {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
    }
    _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(kn))))
}

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Horizontal max of 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hmax8(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
}

/// Horizontal sum of 4 f64 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum4d(v: __m256d) -> f64 {
    let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
    _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
}

/// The two f64 halves of 8 f32 values.
#[inline]
#[target_feature(enable = "avx2")]
fn widen_pd(v: __m256) -> (__m256d, __m256d) {
    (_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)))
}

/// LayerNorm with the mean summed in f64 like the scalar reference, split into an f32 and the f32
/// of its remainder, then the centred values `(x − mean_hi) − mean_lo` in f32 (the first
/// subtraction is exact near the mean, so a row with a large mean relative to its spread keeps its
/// low bits): the variance from their squares (f32 per lane, f64 across lanes) and the output
/// `centred · inv · gamma + beta`. Each pass runs on several accumulators, so consecutive vectors
/// do not wait on each other's add latency.
#[target_feature(enable = "avx2,fma")]
fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let len = x.len();
    let split = len - len % 8;
    let (x8, x_tail) = x.split_at(split);
    // (Accumulators are indexed by constants, in whole groups of vectors, so that they stay in
    // registers; an index like `i % 2` kept them on the stack.)
    let mut sum = [_mm256_setzero_pd(); 4];
    let x16 = split - split % 16;
    for c in x8[..x16].chunks_exact(16) {
        for j in 0..2 {
            // SAFETY: the chunk holds 16 values.
            let (lo, hi) = widen_pd(unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * j)) });
            sum[2 * j] = _mm256_add_pd(sum[2 * j], lo);
            sum[2 * j + 1] = _mm256_add_pd(sum[2 * j + 1], hi);
        }
    }
    for c in x8[x16..].chunks_exact(8) {
        // SAFETY: the chunk holds 8 values.
        let (lo, hi) = widen_pd(unsafe { _mm256_loadu_ps(c.as_ptr()) });
        sum[0] = _mm256_add_pd(sum[0], lo);
        sum[1] = _mm256_add_pd(sum[1], hi);
    }
    let total = _mm256_add_pd(_mm256_add_pd(sum[0], sum[1]), _mm256_add_pd(sum[2], sum[3]));
    let mean64 = (hsum4d(total) + x_tail.iter().map(|&v| v as f64).sum::<f64>()) / len as f64;
    let (mean, mean_lo) = (mean64 as f32, (mean64 - mean64 as f32 as f64) as f32);
    let (mean_v, lo_v) = (_mm256_set1_ps(mean), _mm256_set1_ps(mean_lo));
    let mut sq = [_mm256_setzero_ps(); 4];
    let x32 = split - split % 32;
    for c in x8[..x32].chunks_exact(32) {
        for (j, sq) in sq.iter_mut().enumerate() {
            // SAFETY: the chunk holds 32 values.
            let d = _mm256_sub_ps(_mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * j)) }, mean_v), lo_v);
            *sq = _mm256_fmadd_ps(d, d, *sq);
        }
    }
    for c in x8[x32..].chunks_exact(8) {
        // SAFETY: the chunk holds 8 values.
        let d = _mm256_sub_ps(_mm256_sub_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, mean_v), lo_v);
        sq[0] = _mm256_fmadd_ps(d, d, sq[0]);
    }
    let lanes = _mm256_add_ps(_mm256_add_ps(sq[0], sq[1]), _mm256_add_ps(sq[2], sq[3]));
    let (lo, hi) = widen_pd(lanes);
    let var = (hsum4d(_mm256_add_pd(lo, hi)) + x_tail.iter().map(|&v| ((v - mean - mean_lo) as f64).powi(2)).sum::<f64>()) / len as f64;
    let inv = (1.0 / (var + eps as f64).sqrt()) as f32;
    let inv_v = _mm256_set1_ps(inv);
    let chunks = x8.chunks_exact(8).zip(gamma.chunks_exact(8)).zip(beta.chunks_exact(8)).zip(out.chunks_exact_mut(8));
    let mut done = 0;
    for (((c, g), b), o) in chunks {
        // SAFETY: every chunk holds 8 values.
        unsafe {
            let y = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mean_v), lo_v), inv_v);
            _mm256_storeu_ps(o.as_mut_ptr(), _mm256_fmadd_ps(y, _mm256_loadu_ps(g.as_ptr()), _mm256_loadu_ps(b.as_ptr())));
        }
        done += 8;
    }
    let rest = out.iter_mut().zip(x).zip(gamma).zip(beta).skip(done);
    for (((o, &v), &g), &b) in rest {
        *o = (v - mean - mean_lo) * inv * g + b;
    }
}

/// The largest `x[i]·scale` over `x` (the first pass of both softmaxes): whole pairs of vectors on
/// two accumulators (indexed by constants, so that they stay in registers), then one vector, then
/// the tail masked.
#[target_feature(enable = "avx2,fma")]
fn scaled_max(x: &[f32], sv: __m256) -> f32 {
    let n = x.len();
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let (body, body16) = (n - n % 8, n - n % 16);
    let mut maxv = [neg_inf; 2];
    let xp = x.as_ptr();
    let mut i = 0;
    while i < body16 {
        for (j, m) in maxv.iter_mut().enumerate() {
            // SAFETY: values i..i + 16 lie inside x.
            *m = _mm256_max_ps(*m, _mm256_mul_ps(unsafe { _mm256_loadu_ps(xp.add(i + 8 * j)) }, sv));
        }
        i += 16;
    }
    if body16 < body {
        // SAFETY: values body16..body16 + 8 lie inside x.
        maxv[0] = _mm256_max_ps(maxv[0], _mm256_mul_ps(unsafe { _mm256_loadu_ps(xp.add(body16)) }, sv));
    }
    if body < n {
        let mask = mask8(n - body);
        // SAFETY: masked lanes lie inside x.
        let v = unsafe { _mm256_maskload_ps(xp.add(body), mask) };
        maxv[0] = _mm256_max_ps(maxv[0], _mm256_blendv_ps(neg_inf, _mm256_mul_ps(v, sv), _mm256_castsi256_ps(mask)));
    }
    hmax8(_mm256_max_ps(maxv[0], maxv[1]))
}

/// [`VectorOps::softmax_exp`]; the tail uses masked loads and stores.
#[target_feature(enable = "avx2,fma")]
fn softmax_exp(x: &mut [f32], scale: f32) -> f32 {
    let n = x.len();
    let sv = _mm256_set1_ps(scale);
    let maxs = _mm256_set1_ps(scaled_max(x, sv));
    let mut sumv = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        let mask = mask8(n - i);
        // SAFETY: masked lanes lie inside x.
        unsafe {
            let v = _mm256_maskload_ps(x.as_ptr().add(i), mask);
            let e = _mm256_and_ps(exp8(_mm256_fmsub_ps(v, sv, maxs)), _mm256_castsi256_ps(mask));
            sumv = _mm256_add_ps(sumv, e);
            _mm256_maskstore_ps(x.as_mut_ptr().add(i), mask, e);
        }
        i += 8;
    }
    hsum8(sumv)
}

/// `e = exp(x·scale − max)` and `p = e·weight` of the 8 values at `x` and `w`; `p` replaces them
/// in `x`.
///
/// # Safety
/// `x` must be valid for reading and writing 8 floats, `w` for reading 8.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_weight8(x: *mut f32, w: *const f32, scale: __m256, max: __m256) -> (__m256, __m256) {
    // SAFETY: the caller's contract.
    unsafe {
        let e = exp8_nonpositive(_mm256_fmsub_ps(_mm256_loadu_ps(x), scale, max));
        let p = _mm256_mul_ps(e, _mm256_loadu_ps(w));
        _mm256_storeu_ps(x, p);
        (e, p)
    }
}

/// [`VectorOps::softmax_quantize_u8`] in three passes (as the NEON set's): the max of `x·scale`;
/// `e = exp(x·scale − max)`, its sum, `p = e·weight` (stored in `x`) and the max of `p`; then
/// `q = round(p · 255 / max p)`. The normalization by the sum goes into the returned scale instead
/// of a pass over the row.
#[target_feature(enable = "avx2,fma")]
pub(super) fn softmax_quantize_u8(x: &mut [f32], scale: f32, weight: &[f32], out: &mut [u8]) -> f32 {
    let n = x.len();
    assert!(weight.len() >= n && out.len() >= n, "softmax_quantize_u8 operands are too short");
    let sv = _mm256_set1_ps(scale);
    let maxs = _mm256_set1_ps(scaled_max(x, sv));
    // Whole pairs of vectors on two accumulators (indexed by constants, so that they stay in
    // registers), then one vector, then the tail masked.
    let (body, body16) = (n - n % 8, n - n % 16);
    let xp = x.as_mut_ptr();
    let zero = _mm256_setzero_ps();
    let (mut sumv, mut pmaxv) = ([zero; 2], [zero; 2]);
    let wp = weight.as_ptr();
    // e = exp(x·scale − max), its sum; p = e·weight (stored in x) and its max.
    let mut i = 0;
    while i < body16 {
        for j in 0..2 {
            // SAFETY: values i + 8j..i + 8j + 8 lie inside x and weight (weight.len() >= n).
            let (e, p) = unsafe { exp_weight8(xp.add(i + 8 * j), wp.add(i + 8 * j), sv, maxs) };
            sumv[j] = _mm256_add_ps(sumv[j], e);
            pmaxv[j] = _mm256_max_ps(pmaxv[j], p);
        }
        i += 16;
    }
    if body16 < body {
        // SAFETY: values body16..body16 + 8 lie inside x and weight.
        let (e, p) = unsafe { exp_weight8(xp.add(body16), wp.add(body16), sv, maxs) };
        sumv[0] = _mm256_add_ps(sumv[0], e);
        pmaxv[0] = _mm256_max_ps(pmaxv[0], p);
    }
    if body < n {
        let mask = mask8(n - body);
        // SAFETY: masked lanes lie inside x and weight (weight.len() >= n, asserted).
        unsafe {
            let (v, w) = (_mm256_maskload_ps(xp.add(body), mask), _mm256_maskload_ps(wp.add(body), mask));
            let e = _mm256_and_ps(exp8_nonpositive(_mm256_fmsub_ps(v, sv, maxs)), _mm256_castsi256_ps(mask));
            let p = _mm256_mul_ps(e, w);
            sumv[0] = _mm256_add_ps(sumv[0], e);
            pmaxv[0] = _mm256_max_ps(pmaxv[0], p);
            _mm256_maskstore_ps(xp.add(body), mask, p);
        }
    }
    let (sumv, pmaxv) = (_mm256_add_ps(sumv[0], sumv[1]), _mm256_max_ps(pmaxv[0], pmaxv[1]));
    let (sum, pmax) = (hsum8(sumv), hmax8(pmaxv));
    // As the default: a largest probability × weight below PROB_ZERO counts as all zero.
    if !(pmax / sum).partial_cmp(&crate::kernels::PROB_ZERO).is_some_and(std::cmp::Ordering::is_ge) || !pmax.is_finite() {
        out[..n].fill(0);
        return 1.0;
    }
    let inv_s = 255.0 / pmax;
    let inv = _mm256_set1_ps(inv_s);
    let split32 = n - n % 32;
    for (c, o) in x[..split32].chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        // SAFETY: the input chunk holds 32 values and the output chunk 32 bytes.
        unsafe {
            let p = c.as_ptr();
            let q: [__m256i; 4] = std::array::from_fn(|j| _mm256_cvttps_epi32(half_away8(_mm256_mul_ps(_mm256_loadu_ps(p.add(8 * j)), inv))));
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, bytes_u8x32(q));
        }
    }
    for (o, &p) in out[split32..n].iter_mut().zip(&x[split32..]) {
        *o = (p * inv_s).round().clamp(0.0, 255.0) as u8;
    }
    pmax / (255.0 * sum)
}

/// In-place exact (erf) GELU.
#[target_feature(enable = "avx2,fma")]
fn gelu(x: &mut [f32]) {
    for chunk in x.chunks_mut(8) {
        let mask = mask8(chunk.len());
        // SAFETY: masked lanes lie inside the chunk.
        unsafe {
            let v = _mm256_maskload_ps(chunk.as_ptr(), mask);
            _mm256_maskstore_ps(chunk.as_mut_ptr(), mask, gelu8(v));
        }
    }
}

/// `q` plus ±(the largest f32 below ½), with `q`'s sign: truncating the sum (`vcvttps2dq`, or
/// `vroundps` toward zero) gives `round(q)` with ties away from zero, like `f32::round`, for every
/// finite `q` (`scripts/check_half_away.c` checks all 2³² bit patterns against C's `roundf`); NaN
/// and ±∞ stay as they are. Three operations instead of the seven of computing the dropped
/// fraction.
#[inline]
#[target_feature(enable = "avx2")]
fn half_away8(q: __m256) -> __m256 {
    let sign = _mm256_and_ps(q, _mm256_set1_ps(-0.0));
    _mm256_add_ps(q, _mm256_or_ps(sign, _mm256_set1_ps(0.499_999_97)))
}

/// 32 levels (four vectors of 8 i32, in order) as 32 bytes, clamped to 0..=255 by the saturating
/// packs (which interleave 128-bit lanes; the permute undoes it).
#[inline]
#[target_feature(enable = "avx2")]
fn bytes_u8x32(q: [__m256i; 4]) -> __m256i {
    let bytes = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Quantization levels `round(v · inv) + zero` of 8 values (before clamping).
#[inline]
#[target_feature(enable = "avx2")]
fn level8(v: __m256, inv: __m256, zero: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_cvttps_epi32(half_away8(_mm256_mul_ps(v, inv))), zero)
}

/// Per-row asymmetric u8 quantization with the scalar reference's parameters (same min/max, scale
/// and zero point) and the same rounding (half away from zero), so the levels match it exactly.
#[target_feature(enable = "avx2,fma")]
fn quantize_u8(x: &[f32], out: &mut [u8]) -> (f32, i32) {
    assert!(out.len() >= x.len(), "output is too short");
    // One row of the rows kernel (as the AVX-512 set does): the same range pass and levels.
    let (mut scale, mut zero) = ([0.0], [0]);
    quantize_u8_rows(x, 1, x.len(), x.len(), &mut out[..x.len()], x.len(), &mut scale, &mut zero);
    (scale[0], zero[0])
}

/// The levels of [`quantize_u8`] for the parameters `scale`, `zero`: 32 values per step through
/// [`level8`] and saturating packs, the rest one by one.
#[target_feature(enable = "avx2,fma")]
fn u8_levels(x: &[f32], scale: f32, zero: i32, out: &mut [u8]) {
    let inv_s = 1.0 / scale;
    let inv = _mm256_set1_ps(inv_s);
    let zv = _mm256_set1_epi32(zero);
    let split32 = x.len() - x.len() % 32;
    for (c, o) in x[..split32].chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        // SAFETY: the input chunk holds 32 values and the output chunk 32 bytes.
        unsafe {
            let p = c.as_ptr();
            let q: [__m256i; 4] = std::array::from_fn(|j| level8(_mm256_loadu_ps(p.add(8 * j)), inv, zv));
            _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, bytes_u8x32(q));
        }
    }
    for (o, &v) in out[split32..].iter_mut().zip(&x[split32..]) {
        *o = ((v * inv_s).round() as i32 + zero).clamp(0, 255) as u8;
    }
}

/// Rows [`quantize_u8_rows`] takes at once.
const QUANTIZE_ROWS: usize = 4;

/// [`VectorOps::quantize_u8_rows`]: the range passes of [`QUANTIZE_ROWS`] rows interleaved (on
/// short rows, such as the 64 values of an attention query, each row's pass is mostly its
/// reductions' latency), then each row's parameters and levels as [`quantize_u8`]: the same bits.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn quantize_u8_rows(a: &[f32], rows: usize, k: usize, lda: usize, out: &mut [u8], qlda: usize, scale: &mut [f32], zero: &mut [i32]) {
    if rows == 0 {
        return;
    }
    crate::kernels::check_quantize_u8_rows(a, rows, k, lda, out, qlda, scale, zero);
    let split = k - k % 8;
    let mut r0 = 0;
    while r0 < rows {
        let n = (rows - r0).min(QUANTIZE_ROWS);
        // One accumulator pair per row (the rows are the independent chains). The accumulator is
        // the second operand: `vminps`/`vmaxps` return it when `v` is NaN, which ignores NaN like
        // `f32::min`/`max` in the reference.
        let (mut lo, mut hi) = ([_mm256_setzero_ps(); QUANTIZE_ROWS], [_mm256_setzero_ps(); QUANTIZE_ROWS]);
        for i in (0..split).step_by(8) {
            for r in 0..QUANTIZE_ROWS {
                if r < n {
                    // SAFETY: values i..i + 8 of row r0 + r lie inside `a` (asserted above).
                    let v = unsafe { _mm256_loadu_ps(a.as_ptr().add((r0 + r) * lda + i)) };
                    lo[r] = _mm256_min_ps(v, lo[r]);
                    hi[r] = _mm256_max_ps(v, hi[r]);
                }
            }
        }
        for r in 0..n {
            let row = &a[(r0 + r) * lda..(r0 + r) * lda + k];
            let (l, h) = row[split..].iter().fold((hmin8(lo[r]), hmax8(hi[r])), |(l, h), &v| (l.min(v), h.max(v)));
            let o = &mut out[(r0 + r) * qlda..(r0 + r + 1) * qlda];
            let (sc, z) = match u8_params(l, h) {
                Some((sc, z)) => {
                    u8_levels(row, sc, z, &mut o[..k]);
                    (sc, z)
                }
                None => {
                    o[..k].fill(0);
                    (1.0, 0)
                }
            };
            o[k..].fill(z as u8);
            (scale[r0 + r], zero[r0 + r]) = (sc, z);
        }
        r0 += n;
    }
}

/// [`pack::quantize_i8`] of 8 values as i32 lanes: `round(v · inv)` (half away from zero), NaN
/// → 0, clamped to `−127..=127`.
#[inline]
#[target_feature(enable = "avx2")]
fn level_i8x8(v: __m256, inv: __m256) -> __m256i {
    let r = half_away8(_mm256_mul_ps(v, inv));
    // NaN → 0 first (`vmaxps` would turn it into the bound), then the clamp (which commutes with
    // the truncation: the bounds are integers).
    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
    _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0)), _mm256_set1_ps(127.0)))
}

/// Largest |v| of a row, ignoring NaN like the reference's `f32::max` fold (the accumulator is
/// `vmaxps`'s second operand, which it returns when `v` is NaN).
#[target_feature(enable = "avx2")]
fn abs_max(row: &[f32]) -> f32 {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    // Whole pairs of vectors on two accumulators (indexed by constants, so that they stay in
    // registers), then one vector.
    let mut acc = [_mm256_setzero_ps(); 2];
    let (split, split16) = (row.len() - row.len() % 8, row.len() - row.len() % 16);
    for c in row[..split16].chunks_exact(16) {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: the chunk holds 16 values.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr().add(8 * j)) };
            *acc = _mm256_max_ps(_mm256_and_ps(v, abs), *acc);
        }
    }
    for c in row[split16..split].chunks_exact(8) {
        // SAFETY: the chunk holds 8 values.
        acc[0] = _mm256_max_ps(_mm256_and_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, abs), acc[0]);
    }
    row[split..].iter().fold(hmax8(_mm256_max_ps(acc[0], acc[1])), |m, &v| m.max(v.abs()))
}

/// Horizontal sum of 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum8_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
}

/// [`VectorOps::quantize_pack_keys`]: [`pack::panel16x4_quantize_rows`] with the row maxima and
/// the levels 8 at a time; each 8 levels are two 4-byte groups of the panel. Bit-identical.
#[target_feature(enable = "avx2,fma")]
pub(super) fn quantize_pack_keys(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
    let (kp, np) = (round_up(k, 4), round_up(n, 16));
    assert!(dst.len() >= np * kp && scale.len() >= np && sum.len() >= np, "quantize_pack_keys: outputs too short");
    assert!(n == 0 || src.len() >= (n - 1) * row_stride + k, "quantize_pack_keys: source too short");
    let dst = &mut dst[..np * kp];
    dst.fill(0);
    scale[n..np].fill(1.0);
    sum[n..np].fill(0);
    let k8 = k - k % 8;
    for j in 0..n {
        let row = &src[j * row_stride..j * row_stride + k];
        let (s, inv_s) = pack::i8_params(abs_max(row));
        let inv = _mm256_set1_ps(inv_s);
        let base = (j / 16) * 16 * kp + (j % 16) * 4;
        let mut total = _mm256_setzero_si256();
        for kk in (0..k8).step_by(8) {
            // SAFETY: values kk..kk + 8 lie in the row (kk + 8 <= k).
            let q = level_i8x8(unsafe { _mm256_loadu_ps(row.as_ptr().add(kk)) }, inv);
            total = _mm256_add_epi32(total, q);
            // Levels 0–3 in the low lane's first 4 bytes, 4–7 in the high lane's.
            let b = _mm256_packs_epi16(_mm256_packs_epi32(q, q), _mm256_setzero_si256());
            let (lo, hi) = (_mm256_extract_epi32::<0>(b), _mm256_extract_epi32::<4>(b));
            let at = base + (kk / 4) * 64;
            dst[at..at + 4].copy_from_slice(&lo.to_le_bytes().map(|v| v as i8));
            dst[at + 64..at + 68].copy_from_slice(&hi.to_le_bytes().map(|v| v as i8));
        }
        let mut total = hsum8_epi32(total);
        for (kk, &v) in row.iter().enumerate().skip(k8) {
            let q = pack::quantize_i8(v, inv_s);
            dst[base + (kk / 4) * 64 + kk % 4] = q;
            total += q as i32;
        }
        scale[j] = s;
        sum[j] = total;
    }
}

/// [`VectorOps::quantize_pack_values`]: [`pack::panel16x4_quantize_cols_by_row`] four source rows
/// (tokens) at a time: their levels, 8 columns at once, are interleaved into the panel's 4-byte
/// groups by one byte shuffle and stored as 32 contiguous bytes. Bit-identical.
#[target_feature(enable = "avx2,fma")]
pub(super) fn quantize_pack_values(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], row_scale: &mut [f32], sum: &mut [i32]) {
    let (kp, np) = (round_up(k, 4), round_up(n, 16));
    assert!(dst.len() >= np * kp && row_scale.len() >= k && sum.len() >= np, "quantize_pack_values: outputs too short");
    assert!(k == 0 || src.len() >= (k - 1) * row_stride + n, "quantize_pack_values: source too short");
    let dst = &mut dst[..np * kp];
    dst.fill(0);
    sum[..np].fill(0);
    let n8 = n - n % 8;
    // Per 128-bit lane, the 4 × 4 byte transpose: byte 4c + r ← byte 4r + c (level of row r, column c).
    let transpose = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for kk0 in (0..k).step_by(4) {
        let rows = (k - kk0).min(4);
        let mut inv_s = [0f32; 4];
        for r in 0..rows {
            let row = &src[(kk0 + r) * row_stride..(kk0 + r) * row_stride + n];
            let (s, inv) = pack::i8_params(abs_max(row));
            (row_scale[kk0 + r], inv_s[r]) = (s, inv);
        }
        for j in (0..n8).step_by(8) {
            // Levels of rows kk0..kk0 + 4 (zero for rows past k), columns j..j + 8.
            let q: [__m256i; 4] = std::array::from_fn(|r| {
                if r < rows {
                    // SAFETY: columns j..j + 8 of row kk0 + r lie in the source (j + 8 <= n).
                    level_i8x8(unsafe { _mm256_loadu_ps(src.as_ptr().add((kk0 + r) * row_stride + j)) }, _mm256_set1_ps(inv_s[r]))
                } else {
                    _mm256_setzero_si256()
                }
            });
            // SAFETY: sum holds np >= j + 8 values.
            unsafe {
                let acc = sum.as_mut_ptr().add(j) as *mut __m256i;
                let total = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                _mm256_storeu_si256(acc, _mm256_add_epi32(_mm256_loadu_si256(acc), total));
            }
            // Per lane: rows 0–3 × columns 4L..4L + 4, row-major, then transposed to column-major:
            // column c's 4-byte group holds rows 0–3.
            let b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            let groups = _mm256_shuffle_epi8(b, transpose);
            let at = (j / 16) * 16 * kp + (kk0 / 4) * 64 + (j % 16) * 4;
            // SAFETY: 32 bytes from `at`: the 4-byte groups of columns j..j + 8 (j % 16 is 0 or 8,
            // so they stay within the panel's 64-byte row of step kk0 / 4), inside dst.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(at) as *mut __m256i, groups) };
        }
        for r in 0..rows {
            let row = &src[(kk0 + r) * row_stride..(kk0 + r) * row_stride + n];
            for (j, &v) in row.iter().enumerate().skip(n8) {
                let q = pack::quantize_i8(v, inv_s[r]);
                dst[(j / 16) * 16 * kp + (kk0 / 4) * 64 + (j % 16) * 4 + r] = q;
                sum[j] += q as i32;
            }
        }
    }
}

/// Horizontal min of 8 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hmin8(v: __m256) -> f32 {
    let s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_min_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_min_ss(s, _mm_movehdup_ps(s)))
}

impl VectorOps for Avx2 {
    fn name(&self) -> &'static str {
        "avx2"
    }
    fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { layer_norm(x, gamma, beta, eps, out) }
    }
    fn softmax_exp(&self, x: &mut [f32], scale: f32) -> f32 {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { softmax_exp(x, scale) }
    }
    fn gelu(&self, x: &mut [f32]) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { gelu(x) }
    }
    fn quantize_u8(&self, x: &[f32], out: &mut [u8]) -> (f32, i32) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { quantize_u8(x, out) }
    }
    fn softmax_quantize_u8(&self, x: &mut [f32], scale: f32, weight: &[f32], out: &mut [u8]) -> f32 {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { softmax_quantize_u8(x, scale, weight, out) }
    }
    fn quantize_u8_rows(&self, a: &[f32], rows: usize, k: usize, lda: usize, out: &mut [u8], qlda: usize, scale: &mut [f32], zero: &mut [i32]) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { quantize_u8_rows(a, rows, k, lda, out, qlda, scale, zero) }
    }
    fn quantize_pack_keys(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { quantize_pack_keys(src, n, k, row_stride, dst, scale, sum) }
    }
    fn quantize_pack_values(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], row_scale: &mut [f32], sum: &mut [i32]) {
        // SAFETY: an `Avx2` value exists only when `detect` found AVX2 and FMA.
        unsafe { quantize_pack_values(src, n, k, row_stride, dst, row_scale, sum) }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kernels::{pack, scalar::Scalar};
    use crate::model::synthetic::Rng;

    /// Runs `kernel` and the scalar reference on an int8 GEMM whose operands sit at the extremes
    /// (`a` = 255 everywhere, weights ±127 and −128): every `vpmaddubsw`-style pair sum would
    /// saturate, so only an exact scheme matches. With unit scales and no zero point the result is
    /// the raw i32 sum, compared bit for bit.
    pub(in crate::kernels::x86) fn check_u8i8_extremes(kernel: &dyn GemmU8I8) {
        for (m, n, k) in [(7, 33, 1000), (1, 16, 4), (13, 5, 259)] {
            let kp = round_up(k, 4);
            let a = vec![255u8; m * kp];
            let w: Vec<i8> = (0..n * k).map(|i| [-128i8, -127, 127][(i / 7) % 3]).collect();
            let w_sum: Vec<i32> = w.chunks_exact(k).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
            let wp = pack::panel16x4_from_rows(&w, n, k);
            let (a_scale, a_zero, w_scale) = (vec![1.0f32; m], vec![0i32; m], vec![1.0f32; n]);
            let args = GemmU8I8Args {
                m,
                n,
                k,
                a: &a,
                lda: kp,
                a_scale: &a_scale,
                a_zero: &a_zero,
                w: &wp,
                w_scale: &w_scale,
                w_sum: &w_sum,
                bias: None,
                epilogue: Epilogue::Store,
            };
            let (mut got, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
            kernel.gemm(&args, &mut got, n);
            GemmU8I8::gemm(&Scalar, &args, &mut want, n);
            assert_eq!(got, want, "{} m={m} n={n} k={k}", kernel.name());
        }
    }

    /// `half_away8` then truncation is `f32::round` on ties, their neighbours, large and negative
    /// values, signed zeros, and (through `level_i8x8`) NaN and infinities; the u8 and i8
    /// quantizers built on it give the scalar reference's bytes.
    #[test]
    fn half_away_rounding_is_f32_round() {
        if Avx2::detect().is_none() {
            return eprintln!("skipped: this CPU lacks AVX2, FMA or F16C");
        }
        let mut xs = vec![0.0f32, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.499_999_97, -0.499_999_97, 8_388_607.5, -8_388_607.5, 8_388_608.0, 1e9, -1e9, 126.5, -126.5, 127.49, -127.51];
        for i in 0..2000 {
            let t = (i as f32 - 1000.0) * 0.5;
            xs.extend([t, f32::from_bits(t.to_bits() + 1), f32::from_bits(t.to_bits().saturating_sub(1))]);
        }
        xs.truncate(xs.len() / 8 * 8);
        for c in xs.chunks_exact(8) {
            // SAFETY: AVX2 is present (checked above); 8 values per chunk.
            let got: [i32; 8] = unsafe { std::mem::transmute(_mm256_cvttps_epi32(half_away8(_mm256_loadu_ps(c.as_ptr())))) };
            for (x, g) in c.iter().zip(got) {
                if x.abs() < 2e9 {
                    assert_eq!(g, x.round() as i32, "{x}");
                }
            }
            // SAFETY: as above.
            let levels: [i32; 8] = unsafe { std::mem::transmute(level_i8x8(_mm256_loadu_ps(c.as_ptr()), _mm256_set1_ps(1.0))) };
            for (x, l) in c.iter().zip(levels) {
                assert_eq!(l, pack::quantize_i8(*x, 1.0) as i32, "{x}");
            }
        }
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5, -0.5, 127.5, -127.5, 300.0];
        // SAFETY: as above.
        let levels: [i32; 8] = unsafe { std::mem::transmute(level_i8x8(_mm256_loadu_ps(specials.as_ptr()), _mm256_set1_ps(1.0))) };
        for (x, l) in specials.iter().zip(levels) {
            assert_eq!(l, pack::quantize_i8(*x, 1.0) as i32, "{x}");
        }
        // Rows whose scaled values land on ties: the u8 quantizer's bytes are the reference's.
        let mut rng = Rng::new(5);
        for len in [1, 7, 8, 31, 32, 33, 197, 768] {
            let x: Vec<f32> = (0..len).map(|i| if i % 3 == 0 { (i % 50) as f32 * 0.5 - 12.5 } else { rng.normal() * 5.0 }).collect();
            let (mut got, mut want) = (vec![0u8; len], vec![0u8; len]);
            // SAFETY: AVX2 and FMA are present (checked above).
            let g = unsafe { quantize_u8(&x, &mut got) };
            let w = VectorOps::quantize_u8(&Scalar, &x, &mut want);
            assert_eq!((g.0.to_bits(), g.1), (w.0.to_bits(), w.1), "len {len}");
            assert_eq!(got, want, "len {len}");
        }
    }

    #[test]
    fn u8i8_is_exact_where_maddubs_would_saturate() {
        let Some(k) = Avx2::detect() else { return eprintln!("skipped: this CPU lacks AVX2, FMA or F16C") };
        check_u8i8_extremes(k);
    }

    /// The AVX2 and AVX-512 LayerNorms (f64 mean, centred passes in f32) on rows whose mean is up to
    /// 1e5 times their spread, one row and four interleaved rows, against the f64 reference.
    #[test]
    fn layer_norm_is_accurate_for_rows_with_a_large_mean() {
        let mut sets: Vec<&dyn VectorOps> = Vec::new();
        sets.extend(Avx2::detect().map(|k| k as &dyn VectorOps));
        sets.extend(super::super::avx512::Avx512::detect().map(|k| k as &dyn VectorOps));
        if sets.is_empty() {
            return eprintln!("skipped: this CPU lacks AVX2 and AVX-512");
        }
        let mut rng = Rng::new(5);
        for k in sets {
            for len in [1, 7, 8, 9, 17, 192, 383, 768] {
                for offset in [1e3f32, -3e4, 1e5] {
                    let x: Vec<f32> = rng.normals(4 * len, 1.0).iter().map(|v| v + offset).collect();
                    let (gamma, beta) = (rng.normals(len, 1.0), rng.normals(len, 1.0));
                    let (mut got, mut rows, mut want) = (vec![0f32; 4 * len], vec![0f32; 4 * len], vec![0f32; 4 * len]);
                    k.layer_norm_rows(&x, 4, len, len, &gamma, &beta, 1e-6, &mut rows);
                    for r in 0..4 {
                        let span = r * len..(r + 1) * len;
                        k.layer_norm(&x[span.clone()], &gamma, &beta, 1e-6, &mut got[span.clone()]);
                        Scalar.layer_norm(&x[span.clone()], &gamma, &beta, 1e-6, &mut want[span]);
                    }
                    for ((g, w), r) in got.iter().zip(&want).zip(&rows) {
                        assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{} len {len} offset {offset}: {g} vs {w}", k.name());
                        assert!((r - w).abs() <= 1e-6 * (1.0 + w.abs()), "{} rows, len {len} offset {offset}: {r} vs {w}", k.name());
                    }
                }
            }
        }
    }

    #[test]
    fn quantize_u8_matches_the_reference_levels_exactly() {
        let Some(k) = Avx2::detect() else { return eprintln!("skipped: this CPU lacks AVX2, FMA or F16C") };
        let mut rng = Rng::new(9);
        for len in [1, 31, 32, 33, 192, 767, 768] {
            for std in [0.1f32, 3.0, 100.0] {
                let mut x = rng.normals(len, std);
                // values exactly on a rounding tie of the first row's scale
                if len > 4 {
                    let (lo, hi) = x.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                    let s = (hi - lo) / 255.0;
                    x[1] = 2.5 * s;
                    x[2] = -0.5 * s;
                }
                let (mut got, mut want) = (vec![0u8; len], vec![0u8; len]);
                assert_eq!(k.quantize_u8(&x, &mut got), Scalar.quantize_u8(&x, &mut want));
                assert_eq!(got, want, "len {len} std {std}");
            }
        }
        let mut q = [7u8; 3];
        assert_eq!(k.quantize_u8(&[0.0; 3], &mut q), (1.0, 0), "an all-zero row has no range");
        assert_eq!(q, [0; 3]);
    }
}
