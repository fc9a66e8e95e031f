//! FEAT_I8MM (Armv8.6-A, e.g. Neoverse V1/N2, Cortex-A710+, `qemu -cpu max`) u8 × i8 GEMM with
//! `usmmla`, which multiplies unsigned by signed bytes directly (no zero-point flip).
//!
//! `usmmla acc.4s, a.16b, b.16b` treats `a` as a 2 × 8 u8 matrix (two activation rows, 8 k each)
//! and `b` as two columns of 8 signed k, and adds the 2 × 2 product `[r0·c0, r0·c1, r1·c0, r1·c1]`.
//! Two consecutive `Panel16x4` groups (k0..3 and k4..7) zipped by 32-bit lanes give exactly that
//! operand: `zip1(g0[q], g1[q])` = [col 4q k0..7, col 4q+1 k0..7], `zip2` the next two columns. An odd
//! last group pairs with zeros. A missing second row of a pair repeats the first (result dropped).
//! `usmmla` is written as `asm!` because its intrinsic is not stable in the supported Rust versions.

use std::arch::aarch64::*;
use std::arch::asm;

use super::neon::{I32x16, PanelParams};
use crate::kernels::{GemmU8I8, GemmU8I8Args};

/// i8mm int8 GEMM. Construct only through [`I8mm::detect`].
pub struct I8mm(());

/// Row pairs per micro-kernel step (2 pairs × 8 accumulators + 8 weight operands).
const PAIRS: usize = 2;
// `gemm_u8i8` finishes 1–4 rows per block (one match arm each).
const _: () = assert!(PAIRS == 2);

impl I8mm {
    /// The kernel if this CPU has NEON and FEAT_I8MM.
    pub fn detect() -> Option<&'static I8mm> {
        static K: I8mm = I8mm(());
        (std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("i8mm")).then_some(&K)
    }
}

/// `acc += a (2 × 8 u8) · bᵀ (2 × 8 i8)`.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn usmmla(acc: int32x4_t, a: uint8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: this function only runs where i8mm is enabled (its target feature, reached only after
    // `I8mm::detect`); pure register arithmetic.
    unsafe {
        asm!("usmmla {acc:v}.4s, {a:v}.16b, {b:v}.16b", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
             options(pure, nomem, nostack, preserves_flags))
    };
    acc
}

/// The 8 activation bytes of `row` at byte `off`, or only 4 (then zero-extended) when `half`.
///
/// # Safety
/// `row + off` must be valid for 8 bytes, or 4 when `half`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_a8(row: *const u8, off: usize, half: bool) -> uint8x8_t {
    // SAFETY: the caller guarantees 8 (or 4) readable bytes.
    unsafe {
        if half {
            vcreate_u8(std::ptr::read_unaligned(row.add(off) as *const u32) as u64)
        } else {
            vld1_u8(row.add(off))
        }
    }
}

/// `2 · P` rows (`rows[..2P]`, each a row pointer) times one panel of `groups` groups; returns the
/// accumulators `[pair][2q + t]` = `[r0·c, r0·c+1, r1·c, r1·c+1]` for `c = 4q + 2t`.
///
/// # Safety
/// Each used row must be valid for `4 · groups` bytes, `panel` for `64 · groups`.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn tile<const P: usize>(rows: &[*const u8; 2 * PAIRS], panel: *const i8, groups: usize) -> [[int32x4_t; 8]; P] {
    let mut acc = [[vdupq_n_s32(0); 8]; P];
    let zero = vdupq_n_s8(0);
    for h in 0..groups.div_ceil(2) {
        let half = 2 * h + 1 == groups;
        // SAFETY: group 2h (and 2h + 1 unless `half`) < groups lie inside the panel; bytes 8h ..
        // 8h + 8 (or + 4) ≤ 4·groups of each row.
        unsafe {
            let g0 = panel.add(2 * h * 64);
            let b: [int8x16_t; 8] = std::array::from_fn(|t| {
                let q = t / 2;
                let w0 = vreinterpretq_s32_s8(vld1q_s8(g0.add(q * 16)));
                let w1 = vreinterpretq_s32_s8(if half { zero } else { vld1q_s8(g0.add(64 + q * 16)) });
                vreinterpretq_s8_s32(if t % 2 == 0 { vzip1q_s32(w0, w1) } else { vzip2q_s32(w0, w1) })
            });
            for (pair, acc_p) in acc.iter_mut().enumerate() {
                let av = vcombine_u8(load_a8(rows[2 * pair], 8 * h, half), load_a8(rows[2 * pair + 1], 8 * h, half));
                for t in 0..8 {
                    acc_p[t] = usmmla(acc_p[t], av, b[t]);
                }
            }
        }
    }
    acc
}

/// Splits a pair's accumulators into its two rows of 16 columns.
#[inline]
#[target_feature(enable = "neon")]
fn unzip_rows(acc: &[int32x4_t; 8]) -> [I32x16; 2] {
    let half = |t: usize, second: bool| {
        let (x, y) = (vreinterpretq_s64_s32(acc[2 * t]), vreinterpretq_s64_s32(acc[2 * t + 1]));
        vreinterpretq_s32_s64(if second { vzip2q_s64(x, y) } else { vzip1q_s64(x, y) })
    };
    [std::array::from_fn(|q| half(q, false)), std::array::from_fn(|q| half(q, true))]
}

#[target_feature(enable = "neon,i8mm")]
fn gemm_u8i8(args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
    let kp = args.check(out, ldc);
    let (m, lda, groups) = (args.m, args.lda, kp / 4);
    let base = args.a.as_ptr();
    for p in 0..args.n.div_ceil(16) {
        let params = PanelParams::load(args, p);
        // SAFETY: the panel offset is inside `w` (checked length).
        let panel = unsafe { args.w.as_ptr().add(p * 16 * kp) };
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(2 * PAIRS);
            // SAFETY: rows i .. i + rows < m hold kp bytes each (checked); missing rows of the last
            // pair repeat row i + rows − 1.
            let ptrs: [*const u8; 2 * PAIRS] = std::array::from_fn(|r| unsafe { base.add((i + r.min(rows - 1)) * lda) });
            // SAFETY: every pointer in `ptrs` is a valid row (above); the panel holds 64·groups
            // bytes; rows i .. i + rows < m are inside `out` (checked); each arm finishes exactly
            // `rows` rows.
            unsafe {
                match rows {
                    4 => {
                        let acc = tile::<2>(&ptrs, panel, groups);
                        let [r0, r1] = unzip_rows(&acc[0]);
                        let [r2, r3] = unzip_rows(&acc[1]);
                        params.finish_rows(args, &[r0, r1, r2, r3], false, i, p, out, ldc);
                    }
                    3 => {
                        let acc = tile::<2>(&ptrs, panel, groups);
                        let [r0, r1] = unzip_rows(&acc[0]);
                        params.finish_rows(args, &[r0, r1, unzip_rows(&acc[1])[0]], false, i, p, out, ldc);
                    }
                    2 => params.finish_rows(args, &unzip_rows(&tile::<1>(&ptrs, panel, groups)[0]), false, i, p, out, ldc),
                    _ => params.finish_rows(args, &[unzip_rows(&tile::<1>(&ptrs, panel, groups)[0])[0]], false, i, p, out, ldc),
                }
            }
            i += rows;
        }
    }
}

impl GemmU8I8 for I8mm {
    fn name(&self) -> &'static str {
        "i8mm"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `I8mm` value exists only when `detect` found NEON and i8mm.
        unsafe { gemm_u8i8(args, out, ldc) }
    }
}
