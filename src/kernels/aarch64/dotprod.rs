//! FEAT_DotProd (Armv8.2-A+: Cortex-A76 / Raspberry Pi 5, Cortex-A78AE / Jetson Orin) u8 × i8 GEMM
//! with `sdot` by element.
//!
//! A `Panel16x4` group (4 k-bytes × 16 columns, 64 bytes) is exactly four `int8x16_t`, each holding
//! 4 columns × 4 k: `sdot acc.4s, w.16b, a.4b[l]` adds four 4-element dot products, one per column,
//! against the activation bytes of group `l` of a 16-byte activation vector. `sdot` is signed ×
//! signed, so the u8 activations are flipped to i8 (`a ^ 0x80` = a − 128) and the +128 is folded
//! into the zero-point correction: Σ(a − 128)·w = Σa·w − 128·w_sum. The f32, f16 and element-wise
//! kernels of this set are the plain NEON ones. `sdot` is written as `asm!` because its intrinsic
//! (`vdotq_laneq_s32`) is not stable in the supported Rust versions.

use std::arch::aarch64::*;
use std::arch::asm;

use super::neon::{I32x16, PanelParams};
use crate::kernels::{GemmU8I8, GemmU8I8Args};

/// dotprod int8 GEMM. Construct only through [`Dotprod::detect`].
pub struct Dotprod(());

/// Rows per micro-kernel step (4 rows × 4 accumulators + 4 activation vectors + 4 weights).
const MR: usize = 4;

impl Dotprod {
    /// The kernel if this CPU has NEON and FEAT_DotProd.
    pub fn detect() -> Option<&'static Dotprod> {
        static K: Dotprod = Dotprod(());
        (std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("dotprod")).then_some(&K)
    }
}

/// `acc += w · a.4b[L]`: for each 32-bit lane c, the dot product of the 4 signed bytes of `w` in
/// lane c with the 4 signed bytes of lane `L` of `a`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot_lane<const L: i32>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: this function only runs where dotprod is enabled (its target feature, reached only
    // after `Dotprod::detect`); pure register arithmetic. The indexed operand must be in v0–v15
    // (`vreg_low16`).
    unsafe {
        asm!("sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{l}]", acc = inout(vreg) acc, w = in(vreg) w, a = in(vreg_low16) a, l = const L,
             options(pure, nomem, nostack, preserves_flags))
    };
    acc
}

/// Adds group `L` of the activation vectors (`av[r]`, 4 groups each) times the 64-byte weight
/// group at `wg`.
///
/// # Safety
/// `wg` must be valid for reading 64 bytes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn step<const L: i32, const R: usize>(acc: &mut [I32x16; R], wg: *const i8, av: &[int8x16_t; R]) {
    // SAFETY: the caller guarantees 64 readable bytes at wg.
    let w = unsafe { [vld1q_s8(wg), vld1q_s8(wg.add(16)), vld1q_s8(wg.add(32)), vld1q_s8(wg.add(48))] };
    for (acc_r, &a) in acc.iter_mut().zip(av) {
        for q in 0..4 {
            acc_r[q] = sdot_lane::<L>(acc_r[q], w[q], a);
        }
    }
}

/// `R` rows of u8 activations (flipped to i8) times one `Panel16x4` panel of `groups` groups.
///
/// # Safety
/// `a` must be valid for `R` rows of `4 · groups` bytes (stride `lda`), `panel` for `64 · groups`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const R: usize>(a: *const u8, lda: usize, panel: *const i8, groups: usize) -> [I32x16; R] {
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    let flip = vdupq_n_u8(0x80);
    let mut g = 0;
    while g + 4 <= groups {
        // SAFETY: bytes 4g .. 4g + 16 ≤ 4·groups of each row, weight groups g .. g + 4 < groups.
        unsafe {
            let av: [int8x16_t; R] = std::array::from_fn(|r| vreinterpretq_s8_u8(veorq_u8(vld1q_u8(a.add(r * lda + g * 4)), flip)));
            let wg = panel.add(g * 64);
            step::<0, R>(&mut acc, wg, &av);
            step::<1, R>(&mut acc, wg.add(64), &av);
            step::<2, R>(&mut acc, wg.add(128), &av);
            step::<3, R>(&mut acc, wg.add(192), &av);
        }
        g += 4;
    }
    let rest = groups - g;
    if rest > 0 {
        // The last 1–3 groups: copy their bytes (the row may end right after them); lanes past
        // `rest` are never used.
        let av: [int8x16_t; R] = std::array::from_fn(|r| {
            let mut tmp = [0u8; 16];
            // SAFETY: bytes 4g .. 4g + 4·rest = 4·groups of row r are readable (caller).
            unsafe { std::ptr::copy_nonoverlapping(a.add(r * lda + g * 4), tmp.as_mut_ptr(), rest * 4) };
            // SAFETY: tmp holds 16 bytes.
            vreinterpretq_s8_u8(veorq_u8(unsafe { vld1q_u8(tmp.as_ptr()) }, flip))
        });
        // SAFETY: weight groups g .. g + rest < groups lie inside the panel.
        unsafe {
            let wg = panel.add(g * 64);
            step::<0, R>(&mut acc, wg, &av);
            if rest > 1 {
                step::<1, R>(&mut acc, wg.add(64), &av);
            }
            if rest > 2 {
                step::<2, R>(&mut acc, wg.add(128), &av);
            }
        }
    }
    acc
}

#[target_feature(enable = "neon,dotprod")]
fn gemm_u8i8(args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
    let kp = args.check(out, ldc);
    let (m, lda, groups) = (args.m, args.lda, kp / 4);
    for p in 0..args.n.div_ceil(16) {
        let params = PanelParams::load(args, p);
        // SAFETY: the panel offset is inside `w` (checked length).
        let panel = unsafe { args.w.as_ptr().add(p * 16 * kp) };
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            // SAFETY: rows i .. i + rows < m hold kp bytes each and are inside `out` (checked);
            // each arm is exactly `rows` rows. One tile call per arm, finished from its registers
            // (an accumulator array shared by the arms went through the stack: zeroed, stored and
            // reloaded for every tile).
            unsafe {
                let a_i = args.a.as_ptr().add(i * lda);
                match rows {
                    4 => params.finish_rows(args, &tile::<4>(a_i, lda, panel, groups), true, i, p, out, ldc),
                    3 => params.finish_rows(args, &tile::<3>(a_i, lda, panel, groups), true, i, p, out, ldc),
                    2 => params.finish_rows(args, &tile::<2>(a_i, lda, panel, groups), true, i, p, out, ldc),
                    _ => params.finish_rows(args, &tile::<1>(a_i, lda, panel, groups), true, i, p, out, ldc),
                }
            }
            i += rows;
        }
    }
}

impl GemmU8I8 for Dotprod {
    fn name(&self) -> &'static str {
        "dotprod"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: a `Dotprod` value exists only when `detect` found NEON and dotprod.
        unsafe { gemm_u8i8(args, out, ldc) }
    }
}
