//! Plain NEON (Armv8.0-A: Cortex-A72 / A53 / A57) kernels, and the helpers the dotprod and i8mm
//! sets share (epilogues, vector `exp` / `erf`).
//!
//! - f32 GEMM: `MR` = 5 rows × one 16-column `Panel16` row (four `float32x4_t`) per step, 20
//!   accumulators in registers; activations loaded four k at a time as vectors and used by `fmla`
//!   by element (5 rows, not 6: 6 rows' accumulators, activations and weights need 34 registers).
//! - f16-weight GEMM: the same tile; each panel's weights widened with `fcvtl`/`fcvtl2` (plain
//!   Armv8.0) once into an f32 stack buffer and reused by all row blocks (k ≤ 1024; longer panels
//!   are widened per k step and reused by the `MR` rows). This is also what the dotprod / i8mm sets
//!   use on CPUs with FEAT_FP16: products or sums in f16 (`fmla .8h`) lose ~3 decimal digits over k = 768, and `fmlal`
//!   (FEAT_FHM) would need the f32 activations rounded to f16; both miss the f32-accumulation
//!   tolerance the property tests demand (see `aarch64/mod.rs`).
//! - u8 × i8 GEMM: activations flipped to i8 (`a ^ 0x80` = a − 128, folded into the zero-point
//!   correction), `smull`/`smull2` into exact i16 products, `sadalp` pairwise into i32.
//! - Vector ops: LayerNorm in f32 (two passes, the first shifted by a value of the row), softmax
//!   with a vectorized `exp`, erf GELU with a rational approximation, u8 quantization
//!   bit-identical to the reference (`fcvtas` rounds half away from zero like `f32::round`).

use std::arch::aarch64::*;
use std::arch::asm;

use half::f16;

use crate::blob::round_up;
use crate::kernels::{pack, u8_params, Epilogue, PROB_ZERO, GemmArgs, GemmF16, GemmF32, GemmU8I8, GemmU8I8Args, VectorOps};

/// NEON kernel set. Construct only through [`Neon::detect`].
pub struct Neon(());

/// Rows per f32 / f16 micro-kernel step (5 rows × 4 accumulator vectors + 5 activation vectors + 4
/// weight vectors = 29 of the 32 registers).
const MR: usize = 5;
/// Rows per int8 micro-kernel step (2 rows × 8 pairwise accumulators).
const MR_I8: usize = 2;

impl Neon {
    /// The kernel set if this CPU has NEON (every AArch64 CPU with an FPU).
    pub fn detect() -> Option<&'static Neon> {
        static K: Neon = Neon(());
        std::arch::is_aarch64_feature_detected!("neon").then_some(&K)
    }
}

/// Sixteen f32 values: one panel row of results, weights or per-column parameters.
pub(super) type F32x16 = [float32x4_t; 4];
/// Sixteen i32 values.
pub(super) type I32x16 = [int32x4_t; 4];

/// Loads the first `width` (≤ 16) values at `p`; the other lanes are zero.
///
/// # Safety
/// `p` must be valid for reading `width` values.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn load_f32x16(p: *const f32, width: usize) -> F32x16 {
    let mut tmp = [0f32; 16];
    let src = if width >= 16 {
        p
    } else {
        // SAFETY: the caller guarantees `width` readable values; tmp holds 16.
        unsafe { std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), width) };
        tmp.as_ptr()
    };
    // SAFETY: `src` points to 16 readable floats (the caller's or tmp).
    unsafe { [vld1q_f32(src), vld1q_f32(src.add(4)), vld1q_f32(src.add(8)), vld1q_f32(src.add(12))] }
}

/// Loads the first `width` (≤ 16) values at `p`; the other lanes are zero.
///
/// # Safety
/// `p` must be valid for reading `width` values.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn load_i32x16(p: *const i32, width: usize) -> I32x16 {
    let mut tmp = [0i32; 16];
    let src = if width >= 16 {
        p
    } else {
        // SAFETY: the caller guarantees `width` readable values; tmp holds 16.
        unsafe { std::ptr::copy_nonoverlapping(p, tmp.as_mut_ptr(), width) };
        tmp.as_ptr()
    };
    // SAFETY: `src` points to 16 readable i32 (the caller's or tmp).
    unsafe { [vld1q_s32(src), vld1q_s32(src.add(4)), vld1q_s32(src.add(8)), vld1q_s32(src.add(12))] }
}

/// Runs `$body` once for each row `$r` = 0, 1, … below `$rows` (a const generic, at most 5) with
/// `$r` a constant: a loop over a tile's rows (or a closure per row) keeps its accumulators in
/// memory, constant indices keep them in registers.
macro_rules! each_tile_row {
    ($rows:expr, $r:ident => $body:block) => {
        each_tile_row!(@ $rows, $r, $body, 0 1 2 3 4)
    };
    (@ $rows:expr, $r:ident, $body:block, $($n:literal)*) => {
        $(if $rows > $n {
            #[allow(non_upper_case_globals)]
            const $r: usize = $n;
            $body
        })*
    };
}

/// Vectorized `erf` (rational approximation on [-4, 4], as in XLA/Eigen; |error| < 3e-7), snapped
/// to ±1 beyond |x| = 3.9 (where erf is ±1 to within 4e-8) so GELU of very negative x is exactly 0.
/// The argument is not clamped: lanes with |x| ≥ 3.9 (whose polynomial may overflow to ∞ or NaN)
/// take the snapped value, NaN stays NaN.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn erf4(x: float32x4_t) -> float32x4_t {
    let x2 = vmulq_f32(x, x);
    let mut p = vdupq_n_f32(-2.726_142_3e-10);
    for c in [2.770_681_4e-08f32, -2.101_024e-06, -5.692_506_4e-05, -7.349_906_3e-04, -2.954_600e-03, -1.609_603_3e-02] {
        p = vfmaq_f32(vdupq_n_f32(c), p, x2);
    }
    p = vmulq_f32(p, x);
    let mut q = vdupq_n_f32(-1.456_607_2e-05);
    for c in [-2.133_740_5e-04f32, -1.682_827e-03, -7.373_329e-03, -1.426_474e-02] {
        q = vfmaq_f32(vdupq_n_f32(c), q, x2);
    }
    // p / q without `fdiv` (a long-latency, poorly pipelined instruction on the A72 / A76): the
    // reciprocal estimate refined by two Newton steps (`frecps`: 2 − q·r) is within 2 ulp of 1/q.
    let r = vrecpeq_f32(q);
    let r = vmulq_f32(r, vrecpsq_f32(q, r));
    let r = vmulq_f32(r, vrecpsq_f32(q, r));
    let e = vmulq_f32(p, r);
    let tail = vcageq_f32(x, vdupq_n_f32(3.9));
    // ±1 with the sign of x: the sign bit from x, the rest from 1.0.
    let one = vbslq_f32(vdupq_n_u32(0x8000_0000), x, vdupq_n_f32(1.0));
    vbslq_f32(tail, one, e)
}

/// Exact-erf GELU of four values.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn gelu4(x: float32x4_t) -> float32x4_t {
    let e = erf4(vmulq_n_f32(x, std::f32::consts::FRAC_1_SQRT_2));
    // x/2 · (1 + erf) as x/2 + x/2 · erf: one fused step (exactly 0 where erf = −1).
    let h = vmulq_n_f32(x, 0.5);
    vfmaq_f32(h, h, e)
}

/// Vectorized `exp` of softmax arguments (`x·scale − max`, so `x ≤ 0`; valid for `x ≤ 88`), 13
/// vector operations per four values (relative error ≤ 2e-7 on `[-20, 0]`, ≤ 4e-7 down to −87,
/// against f64 `exp` in an f32 emulation of these steps):
/// `x = n·ln2 + t` with `n = round(x·log2 e)` and `|t| ≤ ln2/2`, `exp x = 2ⁿ·(1 + t·p(t))` with
/// `p` of degree 4 (a minimax fit of `(eᵗ − 1)/t` for relative error, ≤ 1e-7). `n` comes from
/// one fused multiply-add onto 1.5·2²³ + 127, whose low mantissa bits then hold `n + 127`: shifted
/// into the exponent field they are `2ⁿ` without a float → int conversion. Below −87.34 (`2ⁿ`
/// would leave the normal range) the result is 0; NaN stays NaN.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn exp4(x: float32x4_t) -> float32x4_t {
    const ROUND: f32 = 12_583_039.0; // 1.5·2²³ + 127
    let nb = vfmaq_f32(vdupq_n_f32(ROUND), x, vdupq_n_f32(std::f32::consts::LOG2_E));
    let two_n = vreinterpretq_f32_s32(vshlq_n_s32::<23>(vreinterpretq_s32_f32(nb)));
    let n = vsubq_f32(nb, vdupq_n_f32(ROUND));
    // One reduction step: x − n·ln2 is one fused rounding; ln2's own rounding (1.9e-9) costs
    // |n|·1.9e-9 relative, ≤ 2.4e-7 at the bottom of the range.
    let t = vfmsq_f32(x, n, vdupq_n_f32(std::f32::consts::LN_2));
    let mut p = vfmaq_f32(vdupq_n_f32(4.189_793_4e-2), vdupq_n_f32(8.290_309_5e-3), t);
    for c in [1.666_763_6e-1f32, 4.999_915e-1, 9.999_997e-1] {
        p = vfmaq_f32(vdupq_n_f32(c), p, t);
    }
    let e = vfmaq_f32(two_n, vmulq_f32(t, two_n), p);
    vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(e), vcltq_f32(x, vdupq_n_f32(-87.336_54))))
}

/// Applies the epilogue to 16 results (bias already added) and stores the first `width` at `dst`.
///
/// # Safety
/// `dst` must be valid for reading and writing `width` (≤ 16) floats.
#[inline(always)]
pub(super) unsafe fn finish16(r: F32x16, dst: *mut f32, width: usize, epilogue: Epilogue) {
    if width >= 16 {
        // SAFETY: the caller guarantees 16 valid floats at dst.
        return unsafe { apply16(r, dst, epilogue) };
    }
    // A partial panel goes through a stack copy (only this path zeroes one: a full panel's
    // epilogue, once per row and panel, stays in registers).
    let mut tmp = [0f32; 16];
    // SAFETY: the caller guarantees `width` valid floats at dst; tmp holds 16.
    unsafe {
        if epilogue == Epilogue::Accumulate {
            std::ptr::copy_nonoverlapping(dst, tmp.as_mut_ptr(), width);
        }
        apply16(r, tmp.as_mut_ptr(), epilogue);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, width);
    }
}

/// `epilogue` on 16 results, written to the 16 floats at `p` (always inlined: as a call, the
/// caller's other rows' accumulators are spilled around it).
///
/// # Safety
/// `p` must be valid for reading and writing 16 floats; NEON must be available.
#[inline(always)]
unsafe fn apply16(r: F32x16, p: *mut f32, epilogue: Epilogue) {
    for (q, &v) in r.iter().enumerate() {
        // SAFETY: the caller guarantees 16 valid floats at p.
        unsafe {
            let v = match epilogue {
                Epilogue::Store => v,
                Epilogue::Accumulate => vaddq_f32(vld1q_f32(p.add(q * 4)), v),
                Epilogue::Gelu => gelu4(v),
            };
            vst1q_f32(p.add(q * 4), v);
        }
    }
}

/// The int8 epilogue for one row of 16 columns: `a_scale · w_scale[j] · (acc[j] + fold · w_sum[j])
/// + bias[j]`, then `epilogue`; `fold` is `−a_zero` for plain u8 sums or `128 − a_zero` when the
/// activations were flipped to `a − 128`.
///
/// The zero-point correction is done in f32 by one fused multiply-add on the converted sums:
/// `acc + fold · w_sum` is then rounded once, like the reference's integer sum converted to f32,
/// so the result equals the scalar kernel's bit for bit whenever `|acc|` and `|w_sum|` are below
/// 2^24 (every `k ≤ 1032`: |acc| ≤ 128 · 127 · k); the rest is evaluated in the reference's order.
/// (The integer `mla` it replaces and `scvtf` both take two uops of the A76's one integer-multiply
/// pipe: 16 cycles of V0 per row, against 8 now.)
///
/// # Safety
/// `dst` must be valid for reading and writing `width` (≤ 16) floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn finish_u8i8(
    acc: I32x16,
    fold: i32,
    a_scale: f32,
    w_scale: &F32x16,
    w_sum: &F32x16,
    bias: &F32x16,
    dst: *mut f32,
    width: usize,
    epilogue: Epilogue,
) {
    let fold = vdupq_n_f32(fold as f32);
    let r: F32x16 = std::array::from_fn(|q| {
        let corrected = vfmaq_f32(vcvtq_f32_s32(acc[q]), w_sum[q], fold);
        let s = vmulq_n_f32(w_scale[q], a_scale);
        vaddq_f32(vmulq_f32(s, corrected), bias[q])
    });
    // SAFETY: forwarded from the caller.
    unsafe { finish16(r, dst, width, epilogue) }
}

/// Weight element types of the `Panel16` float GEMMs.
pub(super) trait PanelWeight: Copy {
    /// Loads one panel row (16 weights) as f32.
    ///
    /// # Safety
    /// `p` must be valid for reading 16 elements; NEON must be available.
    unsafe fn load16(p: *const Self) -> F32x16;
}

impl PanelWeight for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> F32x16 {
        // SAFETY: the caller guarantees 16 readable floats at p.
        unsafe { [vld1q_f32(p), vld1q_f32(p.add(4)), vld1q_f32(p.add(8)), vld1q_f32(p.add(12))] }
    }
}

/// `fcvtl`: the low four f16 (as raw bits) of `h` to f32 (plain Armv8.0 NEON; written as `asm!`
/// because the f16 vector types are not stable in every supported Rust).
#[inline(always)]
fn cvt_low_f16(h: uint16x8_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: fcvtl is base Armv8.0-A AdvSIMD; pure register-to-register conversion.
    unsafe { asm!("fcvtl {o:v}.4s, {i:v}.4h", o = lateout(vreg) out, i = in(vreg) h, options(pure, nomem, nostack, preserves_flags)) };
    out
}

/// `fcvtl2`: the high four f16 of `h` to f32.
#[inline(always)]
fn cvt_high_f16(h: uint16x8_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: as in `cvt_low_f16`.
    unsafe { asm!("fcvtl2 {o:v}.4s, {i:v}.8h", o = lateout(vreg) out, i = in(vreg) h, options(pure, nomem, nostack, preserves_flags)) };
    out
}

impl PanelWeight for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> F32x16 {
        let p = p as *const u16;
        // SAFETY: the caller guarantees 16 readable f16 (32 bytes) at p; f16 is a transparent u16.
        let (lo, hi) = unsafe { (vld1q_u16(p), vld1q_u16(p.add(8))) };
        [cvt_low_f16(lo), cvt_high_f16(lo), cvt_low_f16(hi), cvt_high_f16(hi)]
    }
}

/// Adds k step `L` of four (`av[r]` holds rows' activations kk .. kk + 4) times the panel's weight
/// row at `w`: `fmla` by element, so no activation is broadcast through a vector pipe (`ld1r` costs
/// one there on the A76, which made the old 6-row step vector-pipe bound at 29 uops per 24 FMAs).
///
/// # Safety
/// `w` must be valid for reading one panel row (16 weights).
#[inline(always)]
unsafe fn step_f32<W: PanelWeight, const L: i32, const R: usize>(acc: &mut [F32x16; R], w: *const W, av: &[float32x4_t; R]) {
    // SAFETY: the caller guarantees one readable panel row at w.
    let wv = unsafe { W::load16(w) };
    for (acc_r, &a) in acc.iter_mut().zip(av) {
        for q in 0..4 {
            acc_r[q] = vfmaq_laneq_f32::<L>(acc_r[q], wv[q], a);
        }
    }
}

/// `R` rows of `a` (row stride `lda`) times one `k × 16` panel: four k at a time with the
/// activations loaded as vectors (see [`step_f32`]), the last `k % 4` one at a time.
///
/// # Safety
/// `a` must be valid for `R` rows of `k` floats, `panel` for `16 k` weights.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile_f32<W: PanelWeight, const R: usize>(a: *const f32, lda: usize, panel: *const W, k: usize) -> [F32x16; R] {
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    let mut kk = 0;
    while kk + 4 <= k {
        // SAFETY: kk + 4 ≤ k: four values of each of the R rows and four panel rows (caller's
        // guarantee).
        unsafe {
            let av: [float32x4_t; R] = std::array::from_fn(|r| vld1q_f32(a.add(r * lda + kk)));
            let w = panel.add(kk * 16);
            step_f32::<W, 0, R>(&mut acc, w, &av);
            step_f32::<W, 1, R>(&mut acc, w.add(16), &av);
            step_f32::<W, 2, R>(&mut acc, w.add(32), &av);
            step_f32::<W, 3, R>(&mut acc, w.add(48), &av);
        }
        kk += 4;
    }
    while kk < k {
        // SAFETY: kk < k: inside the panel and inside each of the R rows (caller's guarantee).
        unsafe {
            let wv = W::load16(panel.add(kk * 16));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = *a.add(r * lda + kk);
                for q in 0..4 {
                    acc_r[q] = vfmaq_n_f32(acc_r[q], wv[q], av);
                }
            }
        }
        kk += 1;
    }
    acc
}

#[target_feature(enable = "neon")]
fn gemm_panel<W: PanelWeight>(args: &GemmArgs<'_, W>, out: &mut [f32], ldc: usize) {
    args.check(out, ldc);
    for p in 0..args.n.div_ceil(16) {
        // SAFETY: the panel offset is inside `w` (checked length); the panel holds 16 k weights.
        unsafe { panel_rows(args, args.w.as_ptr().add(p * 16 * args.k), p, out, ldc) };
    }
}

/// f16 panels of up to this many k rows are widened to f32 once per panel (into a 64 KiB stack
/// buffer) and then run through the f32 tile, instead of widening every weight once per row block:
/// the `fcvtl` per k step kept the f16 tile latency-bound (llvm-mca `neoverse-n1`: 61 cycles per 80
/// `fmla`, against 40 for the f32 tile). Longer panels take the per-row-block widening.
const WIDEN_MAX_K: usize = 1024;

/// The f16-weight GEMM: [`WIDEN_MAX_K`] above, the same f32 values in the same FMA order as
/// [`gemm_panel`] over f16.
#[target_feature(enable = "neon")]
fn gemm_f16(args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
    if args.k > WIDEN_MAX_K {
        return gemm_panel(args, out, ldc);
    }
    args.check(out, ldc);
    let mut buf = [0f32; WIDEN_MAX_K * 16];
    for p in 0..args.n.div_ceil(16) {
        // SAFETY: the panel offset is inside `w` (checked length).
        let panel = unsafe { args.w.as_ptr().add(p * 16 * args.k) };
        for (kk, row) in buf.chunks_exact_mut(16).take(args.k).enumerate() {
            // SAFETY: kk < k: one panel row of 16 f16; `row` holds 16 floats.
            unsafe {
                let v = f16::load16(panel.add(kk * 16));
                for (q, &vq) in v.iter().enumerate() {
                    vst1q_f32(row.as_mut_ptr().add(4 * q), vq);
                }
            }
        }
        // SAFETY: `buf` holds the panel's k × 16 weights as f32.
        unsafe { panel_rows(args, buf.as_ptr(), p, out, ldc) };
    }
}

/// All `m` rows of `args` times panel `p`, whose weights (of type `P`, which may differ from the
/// argument's stored type when the panel was widened) are at `panel`.
///
/// # Safety
/// `args` and `out` must have passed [`GemmArgs::check`] with `ldc`; `panel` must be valid for
/// `16 · args.k` weights.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn panel_rows<W, P: PanelWeight>(args: &GemmArgs<'_, W>, panel: *const P, p: usize, out: &mut [f32], ldc: usize) {
    let GemmArgs { m, n, k, a, lda, bias, epilogue, .. } = *args;
    let width = (n - p * 16).min(16);
    // SAFETY: bias holds ≥ n values (checked), so `width` values from p*16.
    let bias_v = bias.map_or([vdupq_n_f32(0.0); 4], |b| unsafe { load_f32x16(b.as_ptr().add(p * 16), width) });
    // Each row block is one tile finished straight from its registers (one function per row
    // count, so no accumulator array is zeroed on and copied through the stack).
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(MR);
        // SAFETY: rows i .. i + rows < m exist in `a` and `out` (checked lengths), the panel holds
        // 16 k weights; columns p*16 .. p*16 + width ≤ n ≤ ldc.
        unsafe {
            let (a_i, out_i) = (a.as_ptr().add(i * lda), out.as_mut_ptr().add(i * ldc + p * 16));
            match rows {
                5 => float_rows::<P, 5>(a_i, lda, panel, k, &bias_v, out_i, ldc, width, epilogue),
                4 => float_rows::<P, 4>(a_i, lda, panel, k, &bias_v, out_i, ldc, width, epilogue),
                3 => float_rows::<P, 3>(a_i, lda, panel, k, &bias_v, out_i, ldc, width, epilogue),
                2 => float_rows::<P, 2>(a_i, lda, panel, k, &bias_v, out_i, ldc, width, epilogue),
                _ => float_rows::<P, 1>(a_i, lda, panel, k, &bias_v, out_i, ldc, width, epilogue),
            }
        }
        i += rows;
    }
}

/// `R` rows of `a` times one panel, bias added and `epilogue` applied, into `R` rows of `out`
/// (stride `ldc`, `width` columns).
///
/// # Safety
/// `a` must be valid for `R` rows of `k` floats, `panel` for `16 k` weights, `out` for `R` rows of
/// `width` floats; NEON must be available (always inlined, so the f32 and the widened-f16 GEMM
/// each get their own copy).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn float_rows<P: PanelWeight, const R: usize>(
    a: *const f32,
    lda: usize,
    panel: *const P,
    k: usize,
    bias: &F32x16,
    out: *mut f32,
    ldc: usize,
    width: usize,
    epilogue: Epilogue,
) {
    const { assert!(R <= MR, "float tiles have at most MR rows") };
    // SAFETY: forwarded from the caller.
    let acc = unsafe { tile_f32::<P, R>(a, lda, panel, k) };
    each_tile_row!(R, r => {
        let v: F32x16 = std::array::from_fn(|q| vaddq_f32(acc[r][q], bias[q]));
        // SAFETY: row r < R of `out` holds `width` floats (caller).
        unsafe { finish16(v, out.add(r * ldc), width, epilogue) };
    });
}

impl GemmF32 for Neon {
    fn name(&self) -> &'static str {
        "neon"
    }
    fn gemm(&self, args: &GemmArgs<'_, f32>, out: &mut [f32], ldc: usize) {
        // SAFETY: a `Neon` value exists only when `detect` found NEON.
        unsafe { gemm_panel(args, out, ldc) }
    }
}

impl GemmF16 for Neon {
    fn name(&self) -> &'static str {
        "neon-fcvtl"
    }
    fn gemm(&self, args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize) {
        // SAFETY: a `Neon` value exists only when `detect` found NEON.
        unsafe { gemm_f16(args, out, ldc) }
    }
}

/// Per-column data of one panel for the int8 epilogue.
pub(super) struct PanelParams {
    /// Columns of this panel that exist (≤ 16).
    pub width: usize,
    /// Weight scales.
    pub w_scale: F32x16,
    /// Weight sums, as f32 (exact below 2^24).
    pub w_sum: F32x16,
    /// Bias (zero without one).
    pub bias: F32x16,
}

impl PanelParams {
    /// Loads panel `p`'s parameters (lengths checked by [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check)).
    #[inline]
    #[target_feature(enable = "neon")]
    pub(super) fn load(args: &GemmU8I8Args<'_>, p: usize) -> PanelParams {
        let width = (args.n - p * 16).min(16);
        // SAFETY: w_scale, w_sum and bias hold ≥ n values (GemmU8I8Args::check), so `width` from p*16.
        unsafe {
            PanelParams {
                width,
                w_scale: load_f32x16(args.w_scale.as_ptr().add(p * 16), width),
                w_sum: load_i32x16(args.w_sum.as_ptr().add(p * 16), width).map(|v| vcvtq_f32_s32(v)),
                bias: args.bias.map_or([vdupq_n_f32(0.0); 4], |b| load_f32x16(b.as_ptr().add(p * 16), width)),
            }
        }
    }

    /// Finishes row `row` of this panel (`p`) into `out`.
    ///
    /// # Safety
    /// `row < m` and `out` must have passed [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check) with `ldc`.
    #[inline(always)]
    pub(super) unsafe fn finish(&self, args: &GemmU8I8Args<'_>, acc: I32x16, flipped: bool, row: usize, p: usize, out: &mut [f32], ldc: usize) {
        let zero = args.a_zero[row];
        let fold = if flipped { 128i32.wrapping_sub(zero) } else { zero.wrapping_neg() };
        // SAFETY: row < m, columns p*16 .. p*16 + width ≤ n ≤ ldc: inside `out` (checked).
        unsafe {
            finish_u8i8(acc, fold, args.a_scale[row], &self.w_scale, &self.w_sum, &self.bias, out.as_mut_ptr().add(row * ldc + p * 16), self.width, args.epilogue)
        }
    }

    /// Finishes rows `row0 .. row0 + R` of this panel from one tile's accumulators. Called with
    /// the tile's result directly (one call per row count), so the accumulators stay in registers.
    ///
    /// # Safety
    /// `row0 + R ≤ m` and `out` must have passed [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check) with `ldc`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) unsafe fn finish_rows<const R: usize>(&self, args: &GemmU8I8Args<'_>, acc: &[I32x16; R], flipped: bool, row0: usize, p: usize, out: &mut [f32], ldc: usize) {
        const { assert!(R <= 4, "int8 tiles have at most 4 rows") };
        each_tile_row!(R, r => {
            // SAFETY: row0 + r < m for r < R (caller).
            unsafe { self.finish(args, acc[r], flipped, row0 + r, p, out, ldc) };
        });
    }
}

/// `v`, hidden from the optimizer. The int8 tile's activation vector is one 32-bit value splatted:
/// knowing its halves equal, LLVM rewrites `smull2 w, a` as `ext` of `w` + `smull` (8 more vector
/// instructions and register copies per step: 23 instead of 18 cycles per 128 MACs on the A72 model).
#[inline(always)]
fn opaque(v: int8x16_t) -> int8x16_t {
    let mut v = v;
    // SAFETY: an empty instruction template: the register is passed through unchanged, no memory,
    // stack or flags are touched.
    unsafe { asm!("/* {v:v} */", v = inout(vreg) v, options(pure, nomem, nostack, preserves_flags)) };
    v
}

/// `R` rows of u8 activations (flipped to i8) times one `Panel16x4` panel of `groups` 4-k groups,
/// with `smull`/`smull2` (exact i16 products: |(a − 128)·w| ≤ 2^14) and `sadalp` into i32.
///
/// # Safety
/// `a` must be valid for `R` rows of `4 · groups` bytes (stride `lda`), `panel` for `64 · groups`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile_u8i8<const R: usize>(a: *const u8, lda: usize, panel: *const i8, groups: usize) -> [I32x16; R] {
    let mut acc = [[vdupq_n_s32(0); 8]; R];
    let flip = vdupq_n_u32(0x8080_8080);
    for g in 0..groups {
        // SAFETY: group g < groups lies inside the panel; 4 bytes at 4g inside each row.
        unsafe {
            let wg = [vld1q_s8(panel.add(g * 64)), vld1q_s8(panel.add(g * 64 + 16)), vld1q_s8(panel.add(g * 64 + 32)), vld1q_s8(panel.add(g * 64 + 48))];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let a4 = std::ptr::read_unaligned(a.add(r * lda + g * 4) as *const u32);
                let av = opaque(vreinterpretq_s8_u32(veorq_u32(vdupq_n_u32(a4), flip)));
                let av_lo = vget_low_s8(av);
                for q in 0..4 {
                    acc_r[2 * q] = vpadalq_s16(acc_r[2 * q], vmull_s8(vget_low_s8(wg[q]), av_lo));
                    acc_r[2 * q + 1] = vpadalq_s16(acc_r[2 * q + 1], vmull_high_s8(wg[q], av));
                }
            }
        }
    }
    // Lanes of acc[2q]: [c(k0+k1), c(k2+k3), c+1(k0+k1), c+1(k2+k3)] for c = 4q; acc[2q+1] the same
    // for columns 4q+2, 4q+3. One more pairwise add gives columns 4q..4q+3.
    std::array::from_fn(|r| std::array::from_fn(|q| vpaddq_s32(acc[r][2 * q], acc[r][2 * q + 1])))
}

#[target_feature(enable = "neon")]
fn gemm_u8i8(args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
    let kp = args.check(out, ldc);
    let (m, lda) = (args.m, args.lda);
    for p in 0..args.n.div_ceil(16) {
        let params = PanelParams::load(args, p);
        // SAFETY: the panel offset is inside `w` (checked length).
        let panel = unsafe { args.w.as_ptr().add(p * 16 * kp) };
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR_I8);
            // SAFETY: rows i .. i + rows < m hold kp ≥ 4·groups bytes each and are inside `out`
            // (checked); each arm is exactly `rows` rows.
            unsafe {
                let a_i = args.a.as_ptr().add(i * lda);
                match rows {
                    2 => params.finish_rows(args, &tile_u8i8::<2>(a_i, lda, panel, kp / 4), true, i, p, out, ldc),
                    _ => params.finish_rows(args, &tile_u8i8::<1>(a_i, lda, panel, kp / 4), true, i, p, out, ldc),
                }
            }
            i += rows;
        }
    }
}

impl GemmU8I8 for Neon {
    fn name(&self) -> &'static str {
        "neon"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: a `Neon` value exists only when `detect` found NEON.
        unsafe { gemm_u8i8(args, out, ldc) }
    }
}

/// LayerNorm in f32 (the reference sums in f64; the results agree to ~1e-6 relative): the mean of
/// `x − x[0]` (shifted by a value of the row, so the sums stay small when the mean is far from
/// 0), the variance of `x − mean`, then `(x − mean)·inv·γ + β`. The sums run over eight values per
/// step into two accumulators (one would wait on its own latency).
#[target_feature(enable = "neon")]
fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let len = x.len();
    assert!(gamma.len() >= len && beta.len() >= len && out.len() >= len, "layer_norm operands are too short");
    let Some(&shift) = x.first() else { return };
    let body = len / 8 * 8;
    let shift_v = vdupq_n_f32(shift);
    let (mut s0, mut s1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for i in (0..body).step_by(8) {
        // SAFETY: i + 8 ≤ body ≤ len.
        let (v, w) = unsafe { (vld1q_f32(x.as_ptr().add(i)), vld1q_f32(x.as_ptr().add(i + 4))) };
        (s0, s1) = (vaddq_f32(s0, vsubq_f32(v, shift_v)), vaddq_f32(s1, vsubq_f32(w, shift_v)));
    }
    let shifted = x[body..].iter().fold(vaddvq_f32(vaddq_f32(s0, s1)), |acc, &v| acc + (v - shift));
    let mean = shift + shifted / len as f32;
    let mean_v = vdupq_n_f32(mean);
    let (mut q0, mut q1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    for i in (0..body).step_by(8) {
        // SAFETY: i + 8 ≤ body ≤ len.
        let (v, w) = unsafe { (vld1q_f32(x.as_ptr().add(i)), vld1q_f32(x.as_ptr().add(i + 4))) };
        let (d, e) = (vsubq_f32(v, mean_v), vsubq_f32(w, mean_v));
        (q0, q1) = (vfmaq_f32(q0, d, d), vfmaq_f32(q1, e, e));
    }
    let squares = x[body..].iter().fold(vaddvq_f32(vaddq_f32(q0, q1)), |acc, &v| acc + (v - mean) * (v - mean));
    let inv = (1.0 / (squares as f64 / len as f64 + eps as f64).sqrt()) as f32;
    let body = len / 4 * 4;
    for i in (0..body).step_by(4) {
        // SAFETY: i + 4 ≤ body ≤ len ≤ the lengths of gamma, beta and out (asserted).
        unsafe {
            let n = vmulq_n_f32(vsubq_f32(vld1q_f32(x.as_ptr().add(i)), mean_v), inv);
            vst1q_f32(out.as_mut_ptr().add(i), vfmaq_f32(vld1q_f32(beta.as_ptr().add(i)), n, vld1q_f32(gamma.as_ptr().add(i))));
        }
    }
    for i in body..len {
        out[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
    }
}

/// `max(x · scale)` over a row (the first pass of both softmax kernels).
#[target_feature(enable = "neon")]
fn scaled_max(x: &[f32], scale: f32) -> f32 {
    let len = x.len();
    let (mut max_v, mut max_w) = (vdupq_n_f32(f32::NEG_INFINITY), vdupq_n_f32(f32::NEG_INFINITY));
    let mut i = 0;
    // Two accumulators over eight values per step (one would wait on its own latency).
    while i + 8 <= len {
        // SAFETY: i + 8 ≤ len.
        let (v, w) = unsafe { (vld1q_f32(x.as_ptr().add(i)), vld1q_f32(x.as_ptr().add(i + 4))) };
        (max_v, max_w) = (vmaxq_f32(max_v, vmulq_n_f32(v, scale)), vmaxq_f32(max_w, vmulq_n_f32(w, scale)));
        i += 8;
    }
    if i + 4 <= len {
        // SAFETY: i + 4 ≤ len.
        max_v = vmaxq_f32(max_v, vmulq_n_f32(unsafe { vld1q_f32(x.as_ptr().add(i)) }, scale));
        i += 4;
    }
    x[i..].iter().fold(vmaxvq_f32(vmaxq_f32(max_v, max_w)), |m, &v| m.max(v * scale))
}

/// [`VectorOps::softmax_exp`]: a max pass, then `exp` and the sum in one pass.
#[target_feature(enable = "neon")]
fn softmax_exp(x: &mut [f32], scale: f32) -> f32 {
    let len = x.len();
    let body = len / 4 * 4;
    let max = scaled_max(x, scale);
    let neg_max = vdupq_n_f32(-max);
    let (mut sum_v, mut sum_w) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let mut i = 0;
    // Eight values per step, two sums: two independent `exp` chains per iteration (llvm-mca
    // `neoverse-n1`: 15.7 cycles per 4 values with one, against a resource bound of 12.5).
    while i + 8 <= body {
        // SAFETY: i + 8 ≤ body ≤ len.
        unsafe {
            let e = exp4(vfmaq_n_f32(neg_max, vld1q_f32(x.as_ptr().add(i)), scale));
            let f = exp4(vfmaq_n_f32(neg_max, vld1q_f32(x.as_ptr().add(i + 4)), scale));
            (sum_v, sum_w) = (vaddq_f32(sum_v, e), vaddq_f32(sum_w, f));
            vst1q_f32(x.as_mut_ptr().add(i), e);
            vst1q_f32(x.as_mut_ptr().add(i + 4), f);
        }
        i += 8;
    }
    if i < body {
        // SAFETY: i + 4 = body ≤ len.
        unsafe {
            let e = exp4(vfmaq_n_f32(neg_max, vld1q_f32(x.as_ptr().add(i)), scale));
            sum_v = vaddq_f32(sum_v, e);
            vst1q_f32(x.as_mut_ptr().add(i), e);
        }
    }
    let mut sum = vaddvq_f32(vaddq_f32(sum_v, sum_w));
    if body < len {
        let mut tmp = [0f32; 4];
        tmp[..len - body].copy_from_slice(&x[body..]);
        // SAFETY: tmp holds 4 floats.
        unsafe {
            let e = exp4(vfmaq_n_f32(neg_max, vld1q_f32(tmp.as_ptr()), scale));
            vst1q_f32(tmp.as_mut_ptr(), e);
        }
        for (v, &e) in x[body..].iter_mut().zip(&tmp) {
            *v = e;
            sum += e;
        }
    }
    sum
}

#[target_feature(enable = "neon")]
fn gelu(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        // SAFETY: the chunk holds exactly 4 floats.
        unsafe { vst1q_f32(c.as_mut_ptr(), gelu4(vld1q_f32(c.as_ptr()))) };
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut tmp = [0f32; 4];
        tmp[..rest.len()].copy_from_slice(rest);
        // SAFETY: tmp holds 4 floats.
        unsafe { vst1q_f32(tmp.as_mut_ptr(), gelu4(vld1q_f32(tmp.as_ptr()))) };
        let n = rest.len();
        rest.copy_from_slice(&tmp[..n]);
    }
}

/// Per-row asymmetric u8 quantization, bit-identical to the reference: same min/max (`fminnm` /
/// `fmaxnm` ignore NaN like `f32::min`), same parameters ([`u8_params`]), and `fcvtas` rounds half
/// away from zero like `f32::round`.
#[target_feature(enable = "neon")]
fn quantize_u8(x: &[f32], out: &mut [u8]) -> (f32, i32) {
    let len = x.len();
    assert!(out.len() >= len, "output is too short");
    let body = len / 16 * 16;
    // Two min / max pairs over eight values per step: one pair would wait on its own latency.
    let zero = vdupq_n_f32(0.0);
    let (mut lo, mut hi, mut lo2, mut hi2) = (zero, zero, zero, zero);
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 ≤ len.
        let (v, w) = unsafe { (vld1q_f32(x.as_ptr().add(i)), vld1q_f32(x.as_ptr().add(i + 4))) };
        (lo, hi) = (vminnmq_f32(lo, v), vmaxnmq_f32(hi, v));
        (lo2, hi2) = (vminnmq_f32(lo2, w), vmaxnmq_f32(hi2, w));
        i += 8;
    }
    if i + 4 <= len {
        // SAFETY: i + 4 ≤ len.
        let v = unsafe { vld1q_f32(x.as_ptr().add(i)) };
        (lo, hi) = (vminnmq_f32(lo, v), vmaxnmq_f32(hi, v));
        i += 4;
    }
    let (lo, hi) = (vminnmq_f32(lo, lo2), vmaxnmq_f32(hi, hi2));
    let (lo, hi) = x[i..].iter().fold((vminnmvq_f32(lo), vmaxnmvq_f32(hi)), |(l, h), &v| (l.min(v), h.max(v)));
    let Some((scale, zero)) = u8_params(lo, hi) else {
        out[..len].fill(0);
        return (1.0, 0);
    };
    let inv = 1.0 / scale;
    let zero_v = vdupq_n_s32(zero);
    for i in (0..body).step_by(16) {
        // SAFETY: i + 16 ≤ body ≤ len ≤ out.len() (asserted).
        unsafe {
            // The clamp to 0 ..= 255 is the two saturating narrowings below (`sqxtun`: < 0 → 0,
            // `uqxtn`: > 255 → 255).
            let q: [int32x4_t; 4] = std::array::from_fn(|j| vqaddq_s32(vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(x.as_ptr().add(i + 4 * j)), inv)), zero_v));
            let h0 = vcombine_u16(vqmovun_s32(q[0]), vqmovun_s32(q[1]));
            let h1 = vcombine_u16(vqmovun_s32(q[2]), vqmovun_s32(q[3]));
            vst1q_u8(out.as_mut_ptr().add(i), vcombine_u8(vqmovn_u16(h0), vqmovn_u16(h1)));
        }
    }
    for (o, &v) in out[body..len].iter_mut().zip(&x[body..]) {
        *o = ((v * inv).round() as i32 + zero).clamp(0, 255) as u8;
    }
    (scale, zero)
}

/// `max |x|` (NaN ignored, like the scalar fold with `f32::max`).
#[target_feature(enable = "neon")]
fn abs_max(x: &[f32]) -> f32 {
    let body = x.len() / 4 * 4;
    let mut m = vdupq_n_f32(0.0);
    for i in (0..body).step_by(4) {
        // SAFETY: i + 4 ≤ body ≤ x.len().
        m = vmaxnmq_f32(m, vabsq_f32(unsafe { vld1q_f32(x.as_ptr().add(i)) }));
    }
    x[body..].iter().fold(vmaxnmvq_f32(m), |a, &v| a.max(v.abs()))
}

/// 16 values at `p` as [`pack::quantize_i8`] computes them: `round(v · inv)` half away from zero
/// (`fcvtas`, saturating), clamped to ±127.
///
/// # Safety
/// `p` must be valid for reading 16 `f32`.
#[target_feature(enable = "neon")]
unsafe fn quantize16_i8(p: *const f32, inv: f32) -> int8x16_t {
    let (hi, lo) = (vdupq_n_s32(127), vdupq_n_s32(-127));
    // SAFETY: the caller guarantees 16 readable values.
    let q: [int32x4_t; 4] = std::array::from_fn(|i| unsafe { vmaxq_s32(vminq_s32(vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(p.add(4 * i)), inv)), hi), lo) });
    vcombine_s8(vmovn_s16(vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]))), vmovn_s16(vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]))))
}

/// [`VectorOps::quantize_pack_keys`]: per token, 16 values at a time quantized in registers and
/// stored as the four 4-byte groups they form in `Panel16x4` (bit-identical with the reference).
#[target_feature(enable = "neon")]
fn quantize_pack_keys(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
    let (kp, np) = (round_up(k, 4), round_up(n, 16));
    let dst = &mut dst[..np * kp];
    dst.fill(0);
    scale[n..np].fill(1.0);
    sum[n..np].fill(0);
    let body = k / 16 * 16;
    for j in 0..n {
        let row = &src[j * row_stride..j * row_stride + k];
        let (s, inv) = pack::i8_params(abs_max(row));
        let base = (j / 16) * 16 * kp + (j % 16) * 4;
        let mut total = 0i32;
        for kk in (0..body).step_by(16) {
            // SAFETY: kk + 16 ≤ body ≤ row.len(); the groups go to base + (kk/4 + g)·64 + 0..4 with
            // kk/4 + g < kp/4 and j%16 < 16, inside the np·kp bytes of dst.
            unsafe {
                let q = vreinterpretq_u32_s8(quantize16_i8(row.as_ptr().add(kk), inv));
                total += vaddlvq_s8(vreinterpretq_s8_u32(q)) as i32;
                let p = dst.as_mut_ptr().add(base + (kk / 4) * 64);
                std::ptr::write_unaligned(p as *mut u32, vgetq_lane_u32::<0>(q));
                std::ptr::write_unaligned(p.add(64) as *mut u32, vgetq_lane_u32::<1>(q));
                std::ptr::write_unaligned(p.add(128) as *mut u32, vgetq_lane_u32::<2>(q));
                std::ptr::write_unaligned(p.add(192) as *mut u32, vgetq_lane_u32::<3>(q));
            }
        }
        for (kk, &v) in row.iter().enumerate().skip(body) {
            let q = pack::quantize_i8(v, inv);
            dst[base + (kk / 4) * 64 + kk % 4] = q;
            total += q as i32;
        }
        scale[j] = s;
        sum[j] = total;
    }
}

/// [`VectorOps::quantize_pack_values`]: four tokens at a time; for every 16 columns their four
/// quantized rows are interleaved by one `st4` into the 64 bytes `Panel16x4` holds for them, and
/// the column sums are widened and added (bit-identical with the reference).
#[target_feature(enable = "neon")]
fn quantize_pack_values(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], row_scale: &mut [f32], sum: &mut [i32]) {
    let (kp, np) = (round_up(k, 4), round_up(n, 16));
    let dst = &mut dst[..np * kp];
    dst.fill(0);
    sum[..np].fill(0);
    let (n16, k4) = (n / 16 * 16, k / 4 * 4);
    let put = |dst: &mut [i8], sum: &mut [i32], j: usize, kk: usize, q: i8| {
        dst[(j / 16) * 16 * kp + (kk / 4) * 64 + (j % 16) * 4 + kk % 4] = q;
        sum[j] += q as i32;
    };
    for kk in (0..k).step_by(4) {
        let rows = if kk < k4 { 4 } else { k - kk };
        let mut inv = [0f32; 4];
        for t in 0..rows {
            let (s, i) = pack::i8_params(abs_max(&src[(kk + t) * row_stride..(kk + t) * row_stride + n]));
            row_scale[kk + t] = s;
            inv[t] = i;
        }
        let simd_cols = if rows == 4 { n16 } else { 0 };
        for jb in (0..simd_cols).step_by(16) {
            // SAFETY: rows kk..kk+4 < k hold n ≥ jb + 16 readable values at (kk+t)·row_stride + jb
            // (the slices above were in bounds); the 64 bytes at (jb/16)·16·kp + (kk/4)·64 lie in
            // dst's np·kp; sum has np ≥ jb + 16 entries.
            unsafe {
                let q: [int8x16_t; 4] = std::array::from_fn(|t| quantize16_i8(src.as_ptr().add((kk + t) * row_stride + jb), inv[t]));
                vst4q_s8(dst.as_mut_ptr().add((jb / 16) * 16 * kp + (kk / 4) * 64), int8x16x4_t(q[0], q[1], q[2], q[3]));
                let lo = vaddq_s16(vaddl_s8(vget_low_s8(q[0]), vget_low_s8(q[1])), vaddl_s8(vget_low_s8(q[2]), vget_low_s8(q[3])));
                let hi = vaddq_s16(vaddl_s8(vget_high_s8(q[0]), vget_high_s8(q[1])), vaddl_s8(vget_high_s8(q[2]), vget_high_s8(q[3])));
                let sp = sum.as_mut_ptr().add(jb);
                vst1q_s32(sp, vaddw_s16(vld1q_s32(sp), vget_low_s16(lo)));
                vst1q_s32(sp.add(4), vaddw_s16(vld1q_s32(sp.add(4)), vget_high_s16(lo)));
                vst1q_s32(sp.add(8), vaddw_s16(vld1q_s32(sp.add(8)), vget_low_s16(hi)));
                vst1q_s32(sp.add(12), vaddw_s16(vld1q_s32(sp.add(12)), vget_high_s16(hi)));
            }
        }
        for t in 0..rows {
            let row = &src[(kk + t) * row_stride..(kk + t) * row_stride + n];
            for (j, &v) in row.iter().enumerate().skip(simd_cols) {
                put(dst, sum, j, kk + t, pack::quantize_i8(v, inv[t]));
            }
        }
    }
}

/// `e = exp(x·scale + neg_max)` and `p = e·weight` of the four values at `xp` and `wp`.
///
/// # Safety
/// `xp` and `wp` must be valid for reading four floats each.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn exp_weight4(xp: *const f32, wp: *const f32, neg_max: float32x4_t, scale: f32) -> (float32x4_t, float32x4_t) {
    // SAFETY: the caller guarantees four readable floats at both pointers.
    let (x, w) = unsafe { (vld1q_f32(xp), vld1q_f32(wp)) };
    let e = exp4(vfmaq_n_f32(neg_max, x, scale));
    (e, vmulq_f32(e, w))
}

/// [`VectorOps::softmax_quantize_u8`] in three passes: max of `x·scale`; `e = exp(x·scale − max)`,
/// its sum, `p = e·weight` (stored in `x`) and the max of `p`; `q = round(p · 255 / max p)`. The
/// normalization by the sum goes into the returned scale instead of a pass over the row.
#[target_feature(enable = "neon")]
fn softmax_quantize_u8(x: &mut [f32], scale: f32, weight: &[f32], out: &mut [u8]) -> f32 {
    let len = x.len();
    assert!(weight.len() >= len && out.len() >= len, "softmax_quantize_u8 operands are too short");
    let max = scaled_max(x, scale);
    let neg_max = vdupq_n_f32(-max);
    // Eight values per step with two accumulator pairs: the two exp polynomials of a step are
    // independent, and the loop has no per-step tail test or stack copies.
    let zero = vdupq_n_f32(0.0);
    let (mut sum_v, mut sum_w, mut pmax_v, mut pmax_w) = (zero, zero, zero, zero);
    let (xm, wp) = (x.as_mut_ptr(), weight.as_ptr());
    let mut i = 0;
    while i + 8 <= len {
        // SAFETY: i + 8 ≤ len ≤ weight.len() (asserted).
        unsafe {
            let (e0, p0) = exp_weight4(xm.add(i), wp.add(i), neg_max, scale);
            let (e1, p1) = exp_weight4(xm.add(i + 4), wp.add(i + 4), neg_max, scale);
            (sum_v, sum_w) = (vaddq_f32(sum_v, e0), vaddq_f32(sum_w, e1));
            (pmax_v, pmax_w) = (vmaxq_f32(pmax_v, p0), vmaxq_f32(pmax_w, p1));
            vst1q_f32(xm.add(i), p0);
            vst1q_f32(xm.add(i + 4), p1);
        }
        i += 8;
    }
    if i + 4 <= len {
        // SAFETY: i + 4 ≤ len ≤ weight.len().
        unsafe {
            let (e, p) = exp_weight4(xm.add(i), wp.add(i), neg_max, scale);
            sum_v = vaddq_f32(sum_v, e);
            pmax_v = vmaxq_f32(pmax_v, p);
            vst1q_f32(xm.add(i), p);
        }
        i += 4;
    }
    if i < len {
        // The last 1–3 values, zero-padded: a padded lane has weight 0 (so p = 0) and its e is
        // dropped before the sum.
        let n = len - i;
        let (mut xt, mut wt, mut et, mut pt) = ([0f32; 4], [0f32; 4], [0f32; 4], [0f32; 4]);
        xt[..n].copy_from_slice(&x[i..]);
        wt[..n].copy_from_slice(&weight[i..len]);
        // SAFETY: xt, wt, et and pt hold four floats each.
        let (e, p) = unsafe { exp_weight4(xt.as_ptr(), wt.as_ptr(), neg_max, scale) };
        // SAFETY: as above.
        unsafe { (vst1q_f32(et.as_mut_ptr(), e), vst1q_f32(pt.as_mut_ptr(), p)) };
        et[n..].fill(0.0);
        // SAFETY: as above.
        sum_v = vaddq_f32(sum_v, unsafe { vld1q_f32(et.as_ptr()) });
        pmax_v = vmaxq_f32(pmax_v, p);
        x[i..].copy_from_slice(&pt[..n]);
    }
    let (sum_v, pmax_v) = (vaddq_f32(sum_v, sum_w), vmaxq_f32(pmax_v, pmax_w));
    let (sum, pmax) = (vaddvq_f32(sum_v), vmaxvq_f32(pmax_v));
    // As the default: a largest probability × weight below PROB_ZERO counts as all zero.
    if !(pmax / sum >= PROB_ZERO) || !pmax.is_finite() {
        out[..len].fill(0);
        return 1.0;
    }
    let inv = 255.0 / pmax;
    let max_q = vdupq_n_u32(255);
    let mut i = 0;
    while i + 16 <= len {
        // SAFETY: i + 16 ≤ len ≤ out.len().
        unsafe {
            let q: [uint32x4_t; 4] = std::array::from_fn(|j| vminq_u32(vcvtaq_u32_f32(vmulq_n_f32(vld1q_f32(x.as_ptr().add(i + 4 * j)), inv)), max_q));
            let h0 = vcombine_u16(vmovn_u32(q[0]), vmovn_u32(q[1]));
            let h1 = vcombine_u16(vmovn_u32(q[2]), vmovn_u32(q[3]));
            vst1q_u8(out.as_mut_ptr().add(i), vcombine_u8(vmovn_u16(h0), vmovn_u16(h1)));
        }
        i += 16;
    }
    for (o, &p) in out[i..len].iter_mut().zip(&x[i..]) {
        *o = (p * inv).round().clamp(0.0, 255.0) as u8;
    }
    pmax / (255.0 * sum)
}

impl VectorOps for Neon {
    fn name(&self) -> &'static str {
        "neon"
    }
    fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        // SAFETY: a `Neon` value exists only when `detect` found NEON.
        unsafe { layer_norm(x, gamma, beta, eps, out) }
    }
    fn softmax_exp(&self, x: &mut [f32], scale: f32) -> f32 {
        // SAFETY: as above.
        unsafe { softmax_exp(x, scale) }
    }
    fn gelu(&self, x: &mut [f32]) {
        // SAFETY: as above.
        unsafe { gelu(x) }
    }
    fn quantize_u8(&self, x: &[f32], out: &mut [u8]) -> (f32, i32) {
        // SAFETY: as above.
        unsafe { quantize_u8(x, out) }
    }
    fn softmax_quantize_u8(&self, x: &mut [f32], scale: f32, weight: &[f32], out: &mut [u8]) -> f32 {
        // SAFETY: as above.
        unsafe { softmax_quantize_u8(x, scale, weight, out) }
    }
    fn quantize_pack_keys(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
        // SAFETY: as above.
        unsafe { quantize_pack_keys(src, n, k, row_stride, dst, scale, sum) }
    }
    fn quantize_pack_values(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], row_scale: &mut [f32], sum: &mut [i32]) {
        // SAFETY: as above.
        unsafe { quantize_pack_values(src, n, k, row_stride, dst, row_scale, sum) }
    }
}
