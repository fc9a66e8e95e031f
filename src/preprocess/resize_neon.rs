//! NEON version of the horizontal resampling pass of [`super::resize`] (NEON is part of every
//! aarch64 CPU; the vertical pass vectorizes by itself). Bit-identical with the portable body: the
//! same i32 wrapping arithmetic, whose sums do not depend on their order.

use std::arch::aarch64::*;

use super::resize::{pixel_taps, Coeffs, HALF, PRECISION_BITS};

/// The horizontal pass over a packed-RGB row: per tap, one multiply-accumulate of four i32 lanes
/// (the tap's R, G, B and the next pixel's R, whose lane is dropped). Pixels whose 4-byte loads
/// would pass the end of `src` take the portable per-pixel sum.
#[target_feature(enable = "neon")]
pub(super) fn resample_rgb_row(c: &Coeffs, src: &[u8], x0: usize, dst: &mut [u8]) {
    for ((xx, &(xmin, n)), d) in c.bounds.iter().enumerate().zip(dst.chunks_exact_mut(3)) {
        let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
        let base = (xmin - x0) * 3;
        let Some(win) = src.get(base..base + 3 * n + 1) else {
            d.copy_from_slice(&pixel_taps(&src[base..base + 3 * n], k));
            continue;
        };
        let mut acc = vdupq_n_s32(HALF);
        for (t, &w) in k.iter().enumerate() {
            let bytes = u32::from_le_bytes(win[3 * t..3 * t + 4].try_into().expect("four bytes"));
            let px = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(vcreate_u8(bytes as u64)))));
            acc = vmlaq_n_s32(acc, px, w);
        }
        // clip8: shift, then saturate to 0..=255 (i32 → u16 → u8).
        let shifted = vshrq_n_s32::<{ PRECISION_BITS as i32 }>(acc);
        let packed = vqmovn_u16(vcombine_u16(vqmovun_s32(shifted), vdup_n_u16(0)));
        let rgb = vget_lane_u32::<0>(vreinterpret_u32_u8(packed)).to_le_bytes();
        d.copy_from_slice(&rgb[..3]);
    }
}
