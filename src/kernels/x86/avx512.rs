//! AVX-512 kernels (F, BW, VL, DQ + VNNI + F16C): one 16-column weight panel row is one zmm
//! register, so the `Panel16` and `Panel16x4` blob layouts feed `vfmadd` and `vpdpbusd` directly.
//!
//! Micro-kernels: a tile of up to `MR` = 6 rows of `a` × up to `NP` = 4 adjacent 16-column panels
//! (24 zmm accumulators), so each weight vector loaded is used 6 times and each broadcast activation
//! value (or 4 activation bytes) 4 times. Tiles are const-generic in their row and panel counts, so
//! the ragged edges run the same fully unrolled code; ragged column tails use masked stores.

use std::arch::x86_64::*;

use half::f16;

use crate::blob::round_up;
use crate::kernels::{u8_params, Aligned, Epilogue, GemmArgs, GemmF16, GemmF32, GemmU8I8, GemmU8I8Args, VectorOps};

/// AVX-512 kernel set. Construct only through [`Avx512::detect`].
pub struct Avx512(());

/// Rows per micro-kernel tile.
const MR: usize = 6;
/// 16-column panels per micro-kernel tile.
const NP: usize = 4;

/// Mask of the first `width` lanes (all 16 when `width` ≥ 16, none when 0).
#[inline(always)]
pub(crate) fn tail_mask(width: usize) -> __mmask16 {
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
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("avx2");
        static K: Avx512 = Avx512(());
        ok.then_some(&K)
    }
}

/// Coefficients of [`gelu16`]: `h(t) = t·(1 − Φ(t))` on `t ∈ [0, 6]` in 32 equal intervals, one
/// degree-4 polynomial in the interval's local coordinate `u ∈ [0, 1)` each (row `p` holds the
/// `u^p` coefficients of the 32 intervals: two zmm registers). Made by `scripts/fit_gelu.py`, which
/// also bounds the error as this kernel evaluates it: |h error| < 2.8e-8, |gelu error| < 4.8e-8 ·
/// (1 + |gelu|).
#[allow(clippy::excessive_precision, clippy::approx_constant)]
static GELU_TABLE: [[f32; 32]; 5] = [
    // u^0
    [-2.0967771963142923e-09, 0.07980642467737198, 0.1326863318681717, 0.1613743156194687, 0.16997049748897552, 0.16336002945899963, 0.14658132195472717, 0.12426191568374634, 0.10021080076694489, 0.07720924913883209, 0.05699318274855614, 0.04038391634821892, 0.027505066245794296, 0.01802435703575611, 0.011372677981853485, 0.006912847515195608, 0.004049694165587425, 0.002287165727466345, 0.0012456394033506513, 0.000654323841445148, 0.0003315645444672555, 0.00016209670866373926, 7.646391895832494e-05, 3.4805871109711006e-05, 1.5289484508684836e-05, 6.481914169853553e-06, 2.652193870744668e-06, 1.047410137289262e-06, 3.992576012024074e-07, 1.4690191108002182e-07, 5.217357923470445e-08, 1.7886785386167503e-08],
    // u^1
    [0.09375010430812836, 0.06602583080530167, 0.04019759222865105, 0.01787274144589901, 0.00014565986930392683, -0.012516411952674389, -0.020262323319911957, -0.023738007992506027, -0.023900581523776054, -0.021815838292241096, -0.018483562394976616, -0.014718902297317982, -0.011098220013082027, -0.00796111486852169, -0.005450396798551083, -0.003569437889382243, -0.0022398019209504128, -0.0013483429793268442, -0.0007794552366249263, -0.0004330237861722708, -0.00023132703790906817, -0.00011889124289155006, -5.8811085182242095e-05, -2.8009275411022827e-05, -1.2847012840211391e-05, -5.676303771906532e-06, -2.416478082523099e-06, -9.91361389424128e-07, -3.9199548496071657e-07, -1.4941339543383947e-07, -5.490474208613705e-08, -1.9453077371167637e-08],
    // u^2
    [-0.014026111923158169, -0.013541306369006634, -0.012157690711319447, -0.010083179920911789, -0.007613182067871094, -0.005068924743682146, -0.0027365966234356165, -0.00082209991523996, 0.0005700202309526503, 0.0014327934477478266, 0.0018342322437092662, 0.0018855491653084755, 0.0017097899690270424, 0.0014177614357322454, 0.001094259088858962, 0.0007941011572256684, 0.000545270973816514, 0.0003557672316674143, 0.00022122295922599733, 0.00013138730719219893, 7.465397357009351e-05, 4.063364758621901e-05, 2.120772478519939e-05, 1.062269711837871e-05, 5.109768153488403e-06, 2.3617669739905978e-06, 1.0494159141671844e-06, 4.4844344415650994e-07, 1.8436011828271148e-07, 7.293824211274114e-08, 2.777703045353519e-08, 1.0184924903455794e-08],
    // u^3
    [2.015109430431039e-06, 0.0003273101756349206, 0.0006019588909111917, 0.0007872420246712863, 0.0008638725848868489, 0.0008344805683009326, 0.0007203897694125772, 0.0005542602157220244, 0.0003712268953677267, 0.00020118843531236053, 6.40465077594854e-05, -3.1560059142066166e-05, -8.662093023303896e-05, -0.00010847052180906758, -0.00010719005513237789, -9.268436406273395e-05, -7.289679342648014e-05, -5.3151034080656245e-05, -3.631759318523109e-05, -2.3414215320372023e-05, -1.4308410754892975e-05, -8.315089871757664e-06, -4.606295533449156e-06, -2.436935119476402e-06, -1.2330159506745986e-06, -5.973465135866718e-07, -2.7734785135180573e-07, -1.2350986366982397e-07, -5.27885894996416e-08, -2.1666078708904024e-08, -8.543353580137136e-09, -3.237891732510434e-09],
    // u^4
    [8.043101115617901e-05, 6.80798984831199e-05, 4.615507350536063e-05, 1.9400949895498343e-05, -6.803213182138279e-06, -2.784098614938557e-05, -4.0881324821384624e-05, -4.526316115516238e-05, -4.222977804602124e-05, -3.4215572668472305e-05, -2.3990653062355705e-05, -1.3943062185717281e-05, -5.663455340254586e-06, 1.4256229974307644e-07, 3.4959830372827128e-06, 4.867593816015869e-06, 4.899926807411248e-06, 4.201237516099354e-06, 3.2350367291655857e-06, 2.2920032733964035e-06, 1.514084715381614e-06, 9.402055525242758e-07, 5.518009515981248e-07, 3.072420327043801e-07, 1.6275348002636747e-07, 8.219650027285752e-08, 3.9643321514404306e-08, 1.8283367708704645e-08, 8.071990187374922e-09, 3.414534877066444e-09, 1.3849514868269353e-09, 5.38971867136695e-10],
];

/// Exact (erf) GELU of 16 values: `max(x, 0) − h(|x|)` with `h(t) = t·(1 − Φ(t))` from
/// [`GELU_TABLE`] (for x < 0, `x·Φ(x) = −|x|·(1 − Φ(|x|))`); each lane picks its interval's
/// coefficients with a two-register permute (`vpermt2ps`). Past |x| = 6, `h` is below 6e-9, so
/// gelu(x) is x for large x and within 6e-9 of 0 for very negative x; NaN stays NaN.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) fn gelu16(x: __m512) -> __m512 {
    let t = _mm512_abs_ps(x);
    // The interval index and the local coordinate (the fraction, exact); the top interval also
    // takes everything past 6 (and NaN, which `min` replaces by its second operand).
    let m = _mm512_min_ps(_mm512_mul_ps(t, _mm512_set1_ps(32.0 / 6.0)), _mm512_set1_ps(32.0 - 1.0 / 262_144.0));
    let idx = _mm512_cvttps_epi32(m);
    let u = _mm512_reduce_ps::<{ _MM_FROUND_TO_ZERO }>(m);
    // SAFETY: each row of the table is 32 f32: two full 16-lane loads.
    let coef = |p: usize| unsafe { _mm512_permutex2var_ps(_mm512_loadu_ps(GELU_TABLE[p].as_ptr()), idx, _mm512_loadu_ps(GELU_TABLE[p].as_ptr().add(16))) };
    let mut h = coef(4);
    for p in (0..4).rev() {
        h = _mm512_fmadd_ps(h, u, coef(p));
    }
    // `max` returns its second operand when either is NaN, so a NaN x stays NaN.
    _mm512_sub_ps(_mm512_max_ps(_mm512_setzero_ps(), x), h)
}

/// Applies the epilogue to 16 results and stores the `mask`ed lanes at `dst`.
///
/// # Safety
/// `dst` must be valid for the lanes set in `mask`; AVX-512F must be available.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) unsafe fn finish16(r: __m512, dst: *mut f32, mask: __mmask16, epilogue: Epilogue) {
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

/// One `R × P` tile of a float GEMM over `k` values: rows `a[r·lda ..]`, panels
/// `w[p·panel_stride ..]` (16 weights per k), results to `out[r·ldc + p·16 ..]` (masked by
/// `masks[p]`), with `bias[p]` added; when `init`, the sums start from the values in `out`.
///
/// # Safety
/// `a` must be valid for `R` rows of `k` values `lda` apart, `w` for `P` panels of `16·k` weights
/// `panel_stride` apart, `out` for the masked lanes of `R` rows `ldc` apart; the CPU must have the
/// features enabled here.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_float<W: PanelWeight, const R: usize, const P: usize>(
    a: *const f32,
    lda: usize,
    w: *const W,
    panel_stride: usize,
    k: usize,
    out: *mut f32,
    ldc: usize,
    bias: &[__m512; NP],
    masks: &[__mmask16; NP],
    init: bool,
    epilogue: Epilogue,
) {
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    // SAFETY (whole body): every pointer offset stays inside the ranges the caller guarantees.
    unsafe {
        if init {
            for (r, acc_r) in acc.iter_mut().enumerate() {
                for (p, acc_rp) in acc_r.iter_mut().enumerate() {
                    *acc_rp = _mm512_maskz_loadu_ps(masks[p], out.add(r * ldc + p * 16));
                }
            }
        }
        for kk in 0..k {
            let wv: [__m512; P] = std::array::from_fn(|p| W::load16(w.add(p * panel_stride + kk * 16)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                for (acc_rp, wp) in acc_r.iter_mut().zip(&wv) {
                    *acc_rp = _mm512_fmadd_ps(av, *wp, *acc_rp);
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

/// Runs `$tile::<R, P>($args)` for run-time `rows` ∈ 1..=MR and `panels` ∈ 1..=NP.
macro_rules! dispatch_tile {
    ($tile:ident, $($w:ty)?; $rows:expr, $panels:expr; $($arg:expr),*) => {
        match ($rows, $panels) {
            (6, 4) => $tile::<$($w,)? 6, 4>($($arg),*),
            (6, 3) => $tile::<$($w,)? 6, 3>($($arg),*),
            (6, 2) => $tile::<$($w,)? 6, 2>($($arg),*),
            (6, 1) => $tile::<$($w,)? 6, 1>($($arg),*),
            (5, 4) => $tile::<$($w,)? 5, 4>($($arg),*),
            (5, 3) => $tile::<$($w,)? 5, 3>($($arg),*),
            (5, 2) => $tile::<$($w,)? 5, 2>($($arg),*),
            (5, 1) => $tile::<$($w,)? 5, 1>($($arg),*),
            (4, 4) => $tile::<$($w,)? 4, 4>($($arg),*),
            (4, 3) => $tile::<$($w,)? 4, 3>($($arg),*),
            (4, 2) => $tile::<$($w,)? 4, 2>($($arg),*),
            (4, 1) => $tile::<$($w,)? 4, 1>($($arg),*),
            (3, 4) => $tile::<$($w,)? 3, 4>($($arg),*),
            (3, 3) => $tile::<$($w,)? 3, 3>($($arg),*),
            (3, 2) => $tile::<$($w,)? 3, 2>($($arg),*),
            (3, 1) => $tile::<$($w,)? 3, 1>($($arg),*),
            (2, 4) => $tile::<$($w,)? 2, 4>($($arg),*),
            (2, 3) => $tile::<$($w,)? 2, 3>($($arg),*),
            (2, 2) => $tile::<$($w,)? 2, 2>($($arg),*),
            (2, 1) => $tile::<$($w,)? 2, 1>($($arg),*),
            (1, 4) => $tile::<$($w,)? 1, 4>($($arg),*),
            (1, 3) => $tile::<$($w,)? 1, 3>($($arg),*),
            (1, 2) => $tile::<$($w,)? 1, 2>($($arg),*),
            (1, 1) => $tile::<$($w,)? 1, 1>($($arg),*),
            _ => unreachable!("tile shapes are 1..=MR rows × 1..=NP panels"),
        }
    };
}
pub(crate) use dispatch_tile;

/// Per-panel column masks and bias vectors of the panels `p0 .. p0 + panels`.
#[inline]
#[target_feature(enable = "avx512f")]
fn panel_masks_and_bias(n: usize, p0: usize, panels: usize, bias: Option<&[f32]>) -> ([__mmask16; NP], [__m512; NP]) {
    let mut masks = [0 as __mmask16; NP];
    let mut bv = [_mm512_setzero_ps(); NP];
    for p in 0..panels {
        let col = (p0 + p) * 16;
        masks[p] = tail_mask(n - col);
        if let Some(b) = bias {
            // SAFETY: bias has ≥ n values (checked by the callers); the masked load reads lanes below n.
            bv[p] = unsafe { _mm512_maskz_loadu_ps(masks[p], b.as_ptr().add(col)) };
        }
    }
    (masks, bv)
}

/// Prefetches (into L2) part `part` of `parts` of the `bytes` bytes at `base`: the row-tile loop of
/// one panel block spreads the next block's weights over its tiles, so they arrive from L3 / DRAM
/// while the current block computes instead of stalling its first row tile.
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch_part(base: *const u8, bytes: usize, part: usize, parts: usize) {
    let lines = bytes.div_ceil(64);
    let per = lines.div_ceil(parts.max(1));
    let (first, last) = ((part * per).min(lines), ((part + 1) * per).min(lines));
    for line in first..last {
        // A prefetch never faults, and `wrapping_add` keeps the address computation defined.
        _mm_prefetch::<_MM_HINT_T1>(base.wrapping_add(line * 64) as *const i8);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")]
fn gemm_panel<W: PanelWeight>(args: &GemmArgs<'_, W>, out: &mut [f32], ldc: usize) {
    args.check(out, ldc);
    let GemmArgs { m, n, k, a, lda, w, bias, epilogue } = *args;
    let total = n.div_ceil(16);
    let mut p0 = 0;
    while p0 < total {
        let panels = (total - p0).min(NP);
        let (masks, bv) = panel_masks_and_bias(n, p0, panels, bias);
        let next = (total - p0 - panels).min(NP) * 16 * k * std::mem::size_of::<W>();
        let next_base = w[(p0 + panels) * 16 * k..].as_ptr() as *const u8;
        let tiles = m.div_ceil(MR);
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            prefetch_part(next_base, next, i / MR, tiles);
            // SAFETY: rows i..i+rows < m of `a` and `out`, panels p0..p0+panels < ceil(n/16) of `w`
            // (lengths checked by `GemmArgs::check`); stores are masked to columns below n ≤ ldc.
            unsafe {
                let (ap, wp, op) = (a.as_ptr().add(i * lda), w.as_ptr().add(p0 * 16 * k), out.as_mut_ptr().add(i * ldc + p0 * 16));
                dispatch_tile!(tile_float, W; rows, panels; ap, lda, wp, 16 * k, k, op, ldc, &bv, &masks, false, epilogue);
            }
            i += rows;
        }
        p0 += panels;
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

/// Reduction values per block of [`gemm_f16_blocked`]: 4 panels × 128 k × 16 columns of f32 is
/// 32 KiB, which stays in L1 while every row tile runs over it.
const KC: usize = 128;

thread_local! {
    /// Per thread: one `NP × KC` block of f16 weights widened to f32 (allocated on first use).
    static WIDE: std::cell::RefCell<Aligned<f32>> = const { std::cell::RefCell::new(Aligned::empty()) };
}

/// f16-weight GEMM blocked over k: each block of up to `NP` panels × `KC` reduction values is
/// widened to f32 once into an L1-sized buffer and every row tile runs the f32 tile on it (in the
/// tile loop, `vcvtph2ps` would compete with the FMAs for the same ports for every row tile). Sums
/// carry over blocks through `out`; the epilogue runs on the last block. A single row tile converts
/// inside the tile instead.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")]
fn gemm_f16_blocked(args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
    args.check(out, ldc);
    let GemmArgs { m, n, k, a, lda, w, bias, epilogue } = *args;
    if m <= MR {
        gemm_panel(args, out, ldc);
        return;
    }
    // The buffer leaves the thread-local for the loop (a closure would not inherit this function's
    // target features, and the intrinsics in it would not inline).
    // 64-byte aligned: a heap block is only 16-byte aligned, and every zmm weight load of a
    // misaligned block would split two cache lines (measured: the worker thread's tiles ran ~18 %
    // slower than the caller's on equal rows).
    let mut wide = WIDE.take();
    if wide.len() < NP * 16 * KC {
        wide = Aligned::zeroed(NP * 16 * KC);
    }
    let total = n.div_ceil(16);
    let tiles = m.div_ceil(MR);
    let mut p0 = 0;
    while p0 < total {
        let panels = (total - p0).min(NP);
        let (masks, bv) = panel_masks_and_bias(n, p0, panels, bias);
        let no_bias = [_mm512_setzero_ps(); NP];
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(KC);
            for p in 0..panels {
                let src = &w[(p0 + p) * 16 * k + k0 * 16..(p0 + p) * 16 * k + (k0 + kc) * 16];
                for (d, s) in wide[p * 16 * kc..(p + 1) * 16 * kc].chunks_exact_mut(16).zip(src.chunks_exact(16)) {
                    // SAFETY: both chunks hold exactly 16 values.
                    unsafe { _mm512_storeu_ps(d.as_mut_ptr(), <f16 as PanelWeight>::load16(s.as_ptr())) };
                }
            }
            // The next block's f16 weights are fetched into L2 while this one computes.
            let (next_p0, next_k0) = if k0 + kc < k { (p0, k0 + kc) } else { (p0 + panels, 0) };
            let next_panels = total.saturating_sub(next_p0).min(NP);
            let next_bytes = (k - next_k0).min(KC) * 16 * 2;
            let first = k0 == 0;
            let last = k0 + kc == k;
            // Sums start from `out` after the first block (or on it, for a residual add); the bias
            // joins on the first block and the epilogue (GELU) on the last.
            let init = !first || epilogue == Epilogue::Accumulate;
            let ep = if last && epilogue == Epilogue::Gelu { Epilogue::Gelu } else { Epilogue::Store };
            let bias_v = if first { &bv } else { &no_bias };
            let mut i = 0;
            while i < m {
                let rows = (m - i).min(MR);
                for p in 0..next_panels {
                    let base = w[(next_p0 + p) * 16 * k + next_k0 * 16..].as_ptr() as *const u8;
                    prefetch_part(base, next_bytes, i / MR, tiles);
                }
                // SAFETY: rows i..i+rows < m of `a` (values k0..k0+kc < k) and `out` (checked by
                // `GemmArgs::check`); the widened block holds `panels` panels of 16·kc values;
                // stores are masked below n.
                unsafe {
                    let (ap, wp, op) = (a.as_ptr().add(i * lda + k0), wide.as_ptr(), out.as_mut_ptr().add(i * ldc + p0 * 16));
                    dispatch_tile!(tile_float, f32; rows, panels; ap, lda, wp, 16 * kc, kc, op, ldc, bias_v, &masks, init, ep);
                }
                i += rows;
            }
            k0 += kc;
        }
        p0 += panels;
    }
    WIDE.set(wide);
}

impl GemmF16 for Avx512 {
    fn name(&self) -> &'static str {
        "avx512"
    }
    fn gemm(&self, args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `Avx512` value exists only when `detect` found every feature enabled here.
        unsafe { gemm_f16_blocked(args, out, ldc) }
    }
}

/// Per-panel dequantization data of panels `p0 .. p0 + panels`: column masks, weight scales,
/// weight sums and bias.
pub(crate) struct PanelQuant {
    pub(crate) masks: [__mmask16; NP],
    pub(crate) scale: [__m512; NP],
    pub(crate) sum: [__m512i; NP],
    pub(crate) bias: [__m512; NP],
}

impl PanelQuant {
    /// Loads the data of `panels` panels from `p0` (lengths checked by [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check)).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn load(args: &GemmU8I8Args<'_>, p0: usize, panels: usize) -> PanelQuant {
        let mut q = PanelQuant { masks: [0; NP], scale: [_mm512_setzero_ps(); NP], sum: [_mm512_setzero_si512(); NP], bias: [_mm512_setzero_ps(); NP] };
        for p in 0..panels {
            let col = (p0 + p) * 16;
            let mask = tail_mask(args.n - col);
            q.masks[p] = mask;
            // SAFETY: masked loads read only lanes below n (per-column data has ≥ n values).
            unsafe {
                q.scale[p] = _mm512_maskz_loadu_ps(mask, args.w_scale.as_ptr().add(col));
                q.sum[p] = _mm512_maskz_loadu_epi32(mask, args.w_sum.as_ptr().add(col));
                if let Some(b) = args.bias {
                    q.bias[p] = _mm512_maskz_loadu_ps(mask, b.as_ptr().add(col));
                }
            }
        }
        q
    }
}

/// Dequantizes one row's 16 i32 sums of panel `p` and stores them through the epilogue.
///
/// # Safety
/// `dst` must be valid for the lanes of `q.masks[p]`.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) unsafe fn finish_u8i8(acc: __m512i, a_scale: f32, a_zero: i32, q: &PanelQuant, p: usize, dst: *mut f32, epilogue: Epilogue) {
    let corrected = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(a_zero), q.sum[p]));
    let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(corrected), _mm512_mul_ps(_mm512_set1_ps(a_scale), q.scale[p]), q.bias[p]);
    // SAFETY: guaranteed by the caller.
    unsafe { finish16(v, dst, q.masks[p], epilogue) }
}

/// One `R × P` tile of the u8 × i8 GEMM over `groups` 4-byte groups.
///
/// # Safety
/// `a` valid for `R` rows of `4·groups` bytes `lda` apart, `w` for `P` panels of `64·groups` bytes,
/// `out` for the masked lanes of `R` rows `ldc` apart; `a_scale`/`a_zero` hold ≥ `R` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_u8i8<const R: usize, const P: usize>(
    a: *const u8,
    lda: usize,
    w: *const i8,
    groups: usize,
    out: *mut f32,
    ldc: usize,
    a_scale: *const f32,
    a_zero: *const i32,
    q: &PanelQuant,
    epilogue: Epilogue,
) {
    let mut acc = [[_mm512_setzero_si512(); P]; R];
    // SAFETY (whole body): every pointer offset stays inside the ranges the caller guarantees.
    unsafe {
        for g in 0..groups {
            let wv: [__m512i; P] = std::array::from_fn(|p| _mm512_loadu_si512(w.add(p * 64 * groups + g * 64) as *const __m512i));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let a4 = _mm512_set1_epi32(std::ptr::read_unaligned(a.add(r * lda + g * 4) as *const i32));
                for (acc_rp, wp) in acc_r.iter_mut().zip(&wv) {
                    *acc_rp = _mm512_dpbusd_epi32(*acc_rp, a4, *wp);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            for (p, acc_rp) in acc_r.iter().enumerate() {
                finish_u8i8(*acc_rp, *a_scale.add(r), *a_zero.add(r), q, p, out.add(r * ldc + p * 16), epilogue);
            }
        }
    }
}

/// u8 × i8 GEMM with AVX-512 VNNI over rows `rows` of `args` (all of them for the plain kernel; the
/// AMX kernel hands its ragged rows here).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
pub(crate) fn gemm_u8i8_rows(args: &GemmU8I8Args<'_>, rows: std::ops::Range<usize>, out: &mut [f32], ldc: usize) {
    let GemmU8I8Args { n, k, a, lda, a_scale, a_zero, w, epilogue, .. } = *args;
    let groups = round_up(k, 4) / 4;
    let total = n.div_ceil(16);
    let mut p0 = 0;
    while p0 < total {
        let panels = (total - p0).min(NP);
        let q = PanelQuant::load(args, p0, panels);
        let mut i = rows.start;
        while i < rows.end {
            let r = (rows.end - i).min(MR);
            // SAFETY: rows i..i+r < m of `a`, `out` and the activation parameters, panels
            // p0..p0+panels of `w` (lengths checked by `GemmU8I8Args::check`); stores are masked below n.
            unsafe {
                let (ap, wp, op) = (a.as_ptr().add(i * lda), w.as_ptr().add(p0 * 64 * groups), out.as_mut_ptr().add(i * ldc + p0 * 16));
                let (sp, zp) = (a_scale.as_ptr().add(i), a_zero.as_ptr().add(i));
                dispatch_tile!(tile_u8i8, ; r, panels; ap, lda, wp, groups, op, ldc, sp, zp, &q, epilogue);
            }
            i += r;
        }
        p0 += panels;
    }
}

impl GemmU8I8 for Avx512 {
    fn name(&self) -> &'static str {
        "avx512vnni"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        args.check(out, ldc);
        // SAFETY: an `Avx512` value exists only when `detect` found every feature enabled here.
        unsafe { gemm_u8i8_rows(args, 0..args.m, out, ldc) }
    }
}

/// Per-column sums of a `Panel16x4` int8 matrix with one `vpdpbusd` (× 1) per 64-byte group.
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(crate) unsafe fn panel16x4_sums(src: &[i8], kp: usize, sums: &mut [i32]) {
    let ones = _mm512_set1_epi8(1);
    for (panel, out) in src.chunks_exact(16 * kp).zip(sums.chunks_exact_mut(16)) {
        let mut acc = _mm512_setzero_si512();
        for group in panel.chunks_exact(64) {
            // SAFETY: the chunk holds exactly 64 bytes.
            acc = _mm512_dpbusd_epi32(acc, ones, unsafe { _mm512_loadu_si512(group.as_ptr() as *const __m512i) });
        }
        // SAFETY: `out` holds 16 i32.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, acc) };
    }
}

/// Vectorized `exp` (Cephes-style range reduction and degree-6 polynomial; relative error ~2e-7).
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp16(x: __m512) -> __m512 {
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

/// Coefficients of [`exp16_nonpositive`]'s polynomial (and the AVX2 set's 8-lane twin), from
/// `scripts/fit_exp.py 5`.
pub(super) const EXP_COEFFS: [f32; 6] = [1.000_000_1, 1.0, 0.499_988_7, 0.166_665_05, 0.041_917_507, 0.008_369_149];

/// `exp` of 16 values `x ≤ 0` (softmax arguments, their row's maximum subtracted) for outputs that
/// are rounded to bf16: one-step range reduction (`ln 2` as one f32) and a degree-5 polynomial,
/// relative error ≤ 4.5e-7 over [−87, 0] (`scripts/fit_exp.py`, which emulates this evaluation),
/// against [`exp16`]'s 2e-7 with three more operations. Values below −88 give 0 (or a subnormal);
/// positive arguments are not clamped.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn exp16_nonpositive(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(std::f32::consts::LN_2), x);
    let mut p = _mm512_set1_ps(EXP_COEFFS[5]);
    for c in EXP_COEFFS[..5].iter().rev() {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
    }
    _mm512_scalef_ps(p, n)
}

/// [`VectorOps::softmax_exp`]: a max pass and an exp / sum pass; the tail is masked.
#[target_feature(enable = "avx512f")]
fn softmax_exp(x: &mut [f32], scale: f32) -> f32 {
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
    _mm512_reduce_add_ps(sumv)
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

/// Rows the multi-row kernels ([`layer_norm_rows`], [`quantize_u8_rows`]) interleave: each row's
/// work is a chain of dependent reductions and scalar steps, so four chains side by side keep the
/// vector units busy where one row alone waits on its own latencies.
const ROWS: usize = 4;

/// 16 values to u8: `clamp(round_half_away(v · inv) + zero, 0, 255)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
fn quant16(v: __m512, inv: __m512, zv: __m512i) -> __m128i {
    let q = _mm512_mul_ps(v, inv);
    let q = _mm512_add_ps(q, _mm512_or_ps(_mm512_set1_ps(0.5), _mm512_and_ps(q, _mm512_set1_ps(-0.0))));
    let qi = _mm512_add_epi32(_mm512_cvttps_epi32(q), zv);
    _mm512_cvtepi32_epi8(_mm512_min_epi32(_mm512_max_epi32(qi, _mm512_setzero_si512()), _mm512_set1_epi32(255)))
}

/// [`quant16`] of the 64 values at `p` into 64 bytes at `out`, clamped by the saturating packs
/// (i32 → i16 → u8 saturation is the clamp to 0..=255) instead of a min, a max and a `vpmovdb` per
/// 16 values: the same bytes.
///
/// # Safety
/// `p` must be readable for 64 values and `out` writable for 64 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn quant64(p: *const f32, inv: __m512, zv: __m512i, out: *mut u8) {
    let q: [__m512i; 4] = std::array::from_fn(|j| {
        // SAFETY: values 16j..16j + 16 of the 64 the caller guarantees.
        let q = _mm512_mul_ps(unsafe { _mm512_loadu_ps(p.add(16 * j)) }, inv);
        let q = _mm512_add_ps(q, _mm512_or_ps(_mm512_set1_ps(0.5), _mm512_and_ps(q, _mm512_set1_ps(-0.0))));
        _mm512_add_epi32(_mm512_cvttps_epi32(q), zv)
    });
    // Per 128-bit lane L the packs leave dword j = values 4L..4L + 4 of vector j; dword 4j + L of
    // the output takes it.
    let bytes = _mm512_packus_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
    let order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    // SAFETY: 64 bytes at `out` (the caller's guarantee).
    unsafe { _mm512_storeu_si512(out as *mut __m512i, _mm512_permutexvar_epi32(order, bytes)) };
}

/// Per-row asymmetric u8 quantization of `R` rows (`lda` apart) into rows of `out` (`qlda` apart,
/// padded from `k` with the zero point), with the rows' passes interleaved. Each row gets the scalar
/// reference's parameters (same min/max, scale and zero point); values round half away from zero
/// like the reference, up to the last bit of `x/scale`. A row without a range (all zero, or not
/// finite) is all zero bytes with `(scale, zero) = (1, 0)`.
///
/// # Safety
/// `a` must be valid for `R` rows of `k` values `lda` apart, `out` for `R` rows of `qlda ≥ k`
/// bytes, `scale` and `zero` for `R` values.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn quantize_interleaved<const R: usize>(a: *const f32, lda: usize, k: usize, out: *mut u8, qlda: usize, scale: *mut f32, zero: *mut i32) {
    // SAFETY (whole body): loads stay below k in every row, stores below qlda (the caller's contract).
    unsafe {
        let full = k / 16 * 16;
        let (mut lo, mut hi) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
        let (mut lo2, mut hi2) = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
        let mut i = 0;
        while i + 32 <= full {
            for r in 0..R {
                let p = a.add(r * lda + i);
                let (v, v2) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                lo[r] = _mm512_min_ps(lo[r], v);
                hi[r] = _mm512_max_ps(hi[r], v);
                lo2[r] = _mm512_min_ps(lo2[r], v2);
                hi2[r] = _mm512_max_ps(hi2[r], v2);
            }
            i += 32;
        }
        while i < k {
            // The masked-off lanes read as 0, which the range includes anyway.
            let mask = tail_mask(k - i);
            for r in 0..R {
                let v = _mm512_maskz_loadu_ps(mask, a.add(r * lda + i));
                lo[r] = _mm512_min_ps(lo[r], v);
                hi[r] = _mm512_max_ps(hi[r], v);
            }
            i += 16;
        }
        let params: [Option<(f32, i32)>; R] =
            std::array::from_fn(|r| u8_params(_mm512_reduce_min_ps(_mm512_min_ps(lo[r], lo2[r])), _mm512_reduce_max_ps(_mm512_max_ps(hi[r], hi2[r]))));
        // Without a range: inv = 0 and zero 0 make every byte 0 (0 · NaN or ∞ is NaN, which
        // converts to i32::MIN and clamps to 0).
        let inv: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(params[r].map_or(0.0, |(s, _)| 1.0 / s)));
        let zv: [__m512i; R] = std::array::from_fn(|r| _mm512_set1_epi32(params[r].map_or(0, |(_, z)| z)));
        let mut i = 0;
        while i + 64 <= full {
            for r in 0..R {
                quant64(a.add(r * lda + i), inv[r], zv[r], out.add(r * qlda + i));
            }
            i += 64;
        }
        while i < full {
            for r in 0..R {
                let q = quant16(_mm512_loadu_ps(a.add(r * lda + i)), inv[r], zv[r]);
                _mm_storeu_si128(out.add(r * qlda + i) as *mut __m128i, q);
            }
            i += 16;
        }
        if i < k {
            let mask = tail_mask(k - i);
            for r in 0..R {
                let q = quant16(_mm512_maskz_loadu_ps(mask, a.add(r * lda + i)), inv[r], zv[r]);
                _mm_mask_storeu_epi8(out.add(r * qlda + i) as *mut i8, mask, q);
            }
        }
        for (r, p) in params.iter().enumerate() {
            let (s, z) = p.unwrap_or((1.0, 0));
            std::ptr::write_bytes(out.add(r * qlda + k), z as u8, qlda - k);
            *scale.add(r) = s;
            *zero.add(r) = z;
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
fn quantize_u8(x: &[f32], out: &mut [u8]) -> (f32, i32) {
    assert!(out.len() >= x.len(), "output is too short");
    let (mut scale, mut zero) = (0.0, 0);
    // SAFETY: one row of x.len() values and as many bytes (asserted), no padding.
    unsafe { quantize_interleaved::<1>(x.as_ptr(), x.len(), x.len(), out.as_mut_ptr(), x.len(), &mut scale, &mut zero) };
    (scale, zero)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
#[allow(clippy::too_many_arguments)]
fn quantize_u8_rows(a: &[f32], rows: usize, k: usize, lda: usize, out: &mut [u8], qlda: usize, scale: &mut [f32], zero: &mut [i32]) {
    if rows == 0 {
        return;
    }
    crate::kernels::check_quantize_u8_rows(a, rows, k, lda, out, qlda, scale, zero);
    let (ap, op, sp, zp) = (a.as_ptr(), out.as_mut_ptr(), scale.as_mut_ptr(), zero.as_mut_ptr());
    let mut r = 0;
    // SAFETY: rows r..r + ROWS (or the single row) and their parameters lie inside the buffers
    // (asserted above).
    unsafe {
        while r + ROWS <= rows {
            quantize_interleaved::<ROWS>(ap.add(r * lda), lda, k, op.add(r * qlda), qlda, sp.add(r), zp.add(r));
            r += ROWS;
        }
        while r < rows {
            quantize_interleaved::<1>(ap.add(r * lda), lda, k, op.add(r * qlda), qlda, sp.add(r), zp.add(r));
            r += 1;
        }
    }
}

/// The 16 masked lanes of `p` as two f64 vectors (masked-off lanes are 0).
///
/// # Safety
/// The masked lanes of `p` must be readable.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn load_pd(p: *const f32, mask: __mmask16) -> (__m512d, __m512d) {
    // SAFETY: the caller guarantees the masked lanes are readable.
    let v = unsafe { _mm512_maskz_loadu_ps(mask, p) };
    (_mm512_cvtps_pd(_mm512_castps512_ps256(v)), _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))))
}

/// The statistics of LayerNorm for `R` rows (`stride` apart in `x`) with the rows' passes
/// interleaved: the mean summed in f64 (as the reference) and split into an f32 and the f32 of
/// its remainder, and `1/sqrt(var + eps)` from the centred values `(x − mean_hi) − mean_lo` in f32
/// (the first subtraction is exact near the mean, so a row whose mean is large against its spread
/// keeps its low bits), their squares summed in f32 per lane and the lanes in f64. The output pass
/// is then `centred · inv · gamma + beta` in f32 ([`ln_row16`]). Against the reference (all of it
/// in f64 up to the output rounding) that is a few ulps of each output, for ~12 instead of ~25
/// operations per 16 values. (An all-f32 version, the mean summed in f32 too, moved int8 results
/// measurably.) Returns `([mean_hi, mean_lo], inv)` per row, broadcast.
///
/// # Safety
/// `x` must be valid for `R` rows of `n` values `stride` apart.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
pub(crate) unsafe fn layer_norm_stats<const R: usize>(x: *const f32, stride: usize, n: usize, eps: f32) -> ([[__m512; 2]; R], [__m512; R]) {
    // SAFETY (whole body): masked lanes stay below n in every row (the caller's contract).
    unsafe {
        let (mut s0, mut s1) = ([_mm512_setzero_pd(); R], [_mm512_setzero_pd(); R]);
        let mut i = 0;
        while i < n {
            let mask = tail_mask(n - i);
            for r in 0..R {
                let (a, b) = load_pd(x.add(r * stride + i), mask);
                s0[r] = _mm512_add_pd(s0[r], a);
                s1[r] = _mm512_add_pd(s1[r], b);
            }
            i += 16;
        }
        let mv: [[__m512; 2]; R] = std::array::from_fn(|r| {
            let mean = _mm512_reduce_add_pd(_mm512_add_pd(s0[r], s1[r])) / n as f64;
            let hi = mean as f32;
            [_mm512_set1_ps(hi), _mm512_set1_ps((mean - hi as f64) as f32)]
        });
        let mut q = [_mm512_setzero_ps(); R];
        let mut i = 0;
        while i < n {
            let mask = tail_mask(n - i);
            for r in 0..R {
                // The masked-off lanes are zeroed after centring.
                let d = _mm512_maskz_sub_ps(mask, _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x.add(r * stride + i)), mv[r][0]), mv[r][1]);
                q[r] = _mm512_fmadd_ps(d, d, q[r]);
            }
            i += 16;
        }
        let inv: [__m512; R] = std::array::from_fn(|r| {
            let lanes = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(q[r])), _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(q[r])))));
            let var = _mm512_reduce_add_pd(lanes) / n as f64;
            _mm512_set1_ps((1.0 / (var + eps as f64).sqrt()) as f32)
        });
        (mv, inv)
    }
}

/// LayerNorm outputs of 16 values of one row (`mask`ed, `g` and `b` the matching gamma and beta;
/// `mean` as [`layer_norm_stats`] splits it): `((x − mean_hi) − mean_lo) · inv · gamma + beta`, the
/// two products and the sum rounded separately (as the reference's f32 steps).
///
/// # Safety
/// The masked lanes of `x` must be readable.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn ln_row16(x: *const f32, mask: __mmask16, mean: [__m512; 2], inv: __m512, g: __m512, b: __m512) -> __m512 {
    // SAFETY: the caller's contract.
    let d = _mm512_sub_ps(_mm512_sub_ps(unsafe { _mm512_maskz_loadu_ps(mask, x) }, mean[0]), mean[1]);
    let y = _mm512_mul_ps(d, inv);
    _mm512_add_ps(_mm512_mul_ps(y, g), b)
}

/// LayerNorm of `R` rows (`stride` apart in `x` and `out`): [`layer_norm_stats`], then the f32
/// outputs.
///
/// # Safety
/// `x` and `out` must be valid for `R` rows of `n` values `stride` apart; `gamma` and `beta` hold
/// ≥ `n` values.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn layer_norm_interleaved<const R: usize>(x: *const f32, out: *mut f32, stride: usize, n: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    // SAFETY (whole body): masked lanes stay below n in every row (the caller's contract).
    unsafe {
        let (mv, inv) = layer_norm_stats::<R>(x, stride, n, eps);
        let mut i = 0;
        while i < n {
            let mask = tail_mask(n - i);
            let (g, b) = (_mm512_maskz_loadu_ps(mask, gamma.as_ptr().add(i)), _mm512_maskz_loadu_ps(mask, beta.as_ptr().add(i)));
            for r in 0..R {
                let v = ln_row16(x.add(r * stride + i), mask, mv[r], inv[r], g, b);
                _mm512_mask_storeu_ps(out.add(r * stride + i), mask, v);
            }
            i += 16;
        }
    }
}

#[target_feature(enable = "avx512f,avx512dq")]
fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    assert!(gamma.len() >= n && beta.len() >= n && out.len() >= n, "layer_norm operands are too short");
    // SAFETY: one row of n values in x and out (asserted).
    unsafe { layer_norm_interleaved::<1>(x.as_ptr(), out.as_mut_ptr(), n, n, gamma, beta, eps) }
}

#[target_feature(enable = "avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
fn layer_norm_rows(x: &[f32], rows: usize, d: usize, stride: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    if rows == 0 || d == 0 {
        return;
    }
    let span = (rows - 1) * stride + d;
    assert!(stride >= d && x.len() >= span && out.len() >= span && gamma.len() >= d && beta.len() >= d, "layer_norm_rows operands are too short");
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    // SAFETY: rows r..r + ROWS (or the single row) lie inside x and out (asserted span).
    unsafe {
        while r + ROWS <= rows {
            layer_norm_interleaved::<ROWS>(xp.add(r * stride), op.add(r * stride), stride, d, gamma, beta, eps);
            r += ROWS;
        }
        while r < rows {
            layer_norm_interleaved::<1>(xp.add(r * stride), op.add(r * stride), stride, d, gamma, beta, eps);
            r += 1;
        }
    }
}

impl VectorOps for Avx512 {
    fn name(&self) -> &'static str {
        "avx512"
    }
    fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F and DQ.
        unsafe { layer_norm(x, gamma, beta, eps, out) }
    }
    fn softmax_exp(&self, x: &mut [f32], scale: f32) -> f32 {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F.
        unsafe { softmax_exp(x, scale) }
    }
    fn gelu(&self, x: &mut [f32]) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F and DQ.
        unsafe { gelu(x) }
    }
    fn quantize_u8(&self, x: &[f32], out: &mut [u8]) -> (f32, i32) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F/BW/VL/DQ.
        unsafe { quantize_u8(x, out) }
    }
    fn layer_norm_rows(&self, x: &[f32], rows: usize, d: usize, stride: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F and DQ.
        unsafe { layer_norm_rows(x, rows, d, stride, gamma, beta, eps, out) }
    }
    fn quantize_u8_rows(&self, a: &[f32], rows: usize, k: usize, lda: usize, out: &mut [u8], qlda: usize, scale: &mut [f32], zero: &mut [i32]) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX-512F/BW/VL/DQ.
        unsafe { quantize_u8_rows(a, rows, k, lda, out, qlda, scale, zero) }
    }
    fn softmax_quantize_u8(&self, x: &mut [f32], scale: f32, weight: &[f32], out: &mut [u8]) -> f32 {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX2 and FMA (besides AVX-512).
        unsafe { super::avx2::softmax_quantize_u8(x, scale, weight, out) }
    }
    fn quantize_pack_keys(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX2 and FMA (besides AVX-512).
        unsafe { super::avx2::quantize_pack_keys(src, n, k, row_stride, dst, scale, sum) }
    }
    fn quantize_pack_values(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], row_scale: &mut [f32], sum: &mut [i32]) {
        // SAFETY: an `Avx512` value exists only when `detect` found AVX2 and FMA (besides AVX-512).
        unsafe { super::avx2::quantize_pack_values(src, n, k, row_stride, dst, row_scale, sum) }
    }
}
