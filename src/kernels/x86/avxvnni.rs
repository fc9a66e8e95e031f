//! AVX-VNNI int8 GEMM (VEX-encoded `vpdpbusd` on ymm: Intel Alder Lake / Sapphire Rapids and later,
//! AMD Zen 5). The set registered as `avxvnni` is the [`Avx2`](super::avx2::Avx2) set with this u8 × i8
//! GEMM: one 64-byte `Panel16x4` group is two ymm registers of 8 columns × 4 k-bytes, exactly the
//! operand layout of `vpdpbusd`, which multiplies u8 × i8 and adds each column's 4 products into its
//! i32 lane without intermediate saturation.

use std::arch::x86_64::*;

use super::avx2::{finish_i32, ColumnData};
use crate::blob::round_up;
use crate::kernels::{GemmU8I8, GemmU8I8Args};

/// AVX-VNNI u8 × i8 GEMM. Construct only through [`AvxVnni::detect`].
pub struct AvxVnni(());

/// Rows per micro-kernel step (6 rows × 2 ymm = 12 accumulators).
const MR: usize = 6;

impl AvxVnni {
    /// The kernel if this CPU has AVX-VNNI (and the AVX2/FMA the shared epilogue uses).
    pub fn detect() -> Option<&'static AvxVnni> {
        let ok = is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        static K: AvxVnni = AvxVnni(());
        ok.then_some(&K)
    }
}

/// One k group of [`tile`]: the 4 activation bytes at `at` of each row (broadcast) times the
/// group's 64 weight bytes at `w` (two ymm of 8 columns × 4 k-bytes), added into `acc`.
///
/// # Safety
/// `w..w + 64` and each row's `at..at + 4` must be readable; AVX-VNNI and AVX2 available.
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn group<const R: usize>(acc: &mut [[__m256i; 2]; R], rows: &[*const u8; R], w: *const u8, at: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        let w0 = _mm256_loadu_si256(w as *const __m256i);
        let w1 = _mm256_loadu_si256(w.add(32) as *const __m256i);
        for (row, acc_r) in rows.iter().zip(acc.iter_mut()) {
            let av = _mm256_set1_epi32(std::ptr::read_unaligned(row.add(at) as *const i32));
            acc_r[0] = _mm256_dpbusd_avx_epi32(acc_r[0], av, w0);
            acc_r[1] = _mm256_dpbusd_avx_epi32(acc_r[1], av, w1);
        }
    }
}

/// `R` rows × one 16-column panel.
///
/// # Safety
/// `args` must have passed [`GemmU8I8Args::check`](crate::kernels::GemmU8I8Args::check), rows `i..i+R` must be below `m` and `p` a panel
/// index below `ceil(n/16)`; AVX-VNNI, AVX2 and FMA must be available.
#[inline]
#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn tile<const R: usize>(args: &GemmU8I8Args<'_>, out: *mut f32, ldc: usize, i: usize, p: usize, col: &ColumnData) {
    let kp = round_up(args.k, 4);
    let width = (args.n - p * 16).min(16);
    let panel = args.w[p * 16 * kp..].as_ptr();
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let rows: [*const u8; R] = std::array::from_fn(|r| args.a[(i + r) * args.lda..].as_ptr());
    // SAFETY: group g covers bytes 64g..64g+64 of the panel (kp·16 bytes, checked) and activation
    // bytes 4g..4g+4 < kp ≤ lda of rows below m (checked). Activation bytes past k meet zero weights.
    unsafe {
        // Four groups per step: the rows' address arithmetic and the loop's own µops (which
        // compete with `vpdpbusd` for its two ports) are paid once per four groups.
        let groups = kp / 4;
        let mut g = 0;
        while g + 4 <= groups {
            for u in 0..4 {
                group(&mut acc, &rows, panel.add((g + u) * 64) as *const u8, 4 * (g + u));
            }
            g += 4;
        }
        while g < groups {
            group(&mut acc, &rows, panel.add(g * 64) as *const u8, 4 * g);
            g += 1;
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let row = i + r;
            finish_i32(acc_r[0], acc_r[1], args.a_scale[row], args.a_zero[row], col, out.add(row * ldc + p * 16), width, args.epilogue);
        }
    }
}

#[target_feature(enable = "avx2,fma,avxvnni")]
fn gemm_u8i8(args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
    args.check(out, ldc);
    let (m, n) = (args.m, args.n);
    let op = out.as_mut_ptr();
    for p in 0..n.div_ceil(16) {
        // SAFETY: arguments checked, p < ceil(n/16).
        let col = unsafe { ColumnData::load(args, p, (n - p * 16).min(16)) };
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(MR);
            // SAFETY: arguments checked, rows i..i+rows < m, p < ceil(n/16).
            unsafe {
                match rows {
                    6 => tile::<6>(args, op, ldc, i, p, &col),
                    5 => tile::<5>(args, op, ldc, i, p, &col),
                    4 => tile::<4>(args, op, ldc, i, p, &col),
                    3 => tile::<3>(args, op, ldc, i, p, &col),
                    2 => tile::<2>(args, op, ldc, i, p, &col),
                    _ => tile::<1>(args, op, ldc, i, p, &col),
                }
            }
            i += rows;
        }
    }
}

impl GemmU8I8 for AvxVnni {
    fn name(&self) -> &'static str {
        "avxvnni"
    }
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize) {
        // SAFETY: an `AvxVnni` value exists only when `detect` found AVX-VNNI, AVX2 and FMA.
        unsafe { gemm_u8i8(args, out, ldc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8i8_is_exact_at_the_extremes() {
        let Some(k) = AvxVnni::detect() else { return eprintln!("skipped: this CPU lacks AVX-VNNI") };
        super::super::avx2::tests::check_u8i8_extremes(k);
    }
}
