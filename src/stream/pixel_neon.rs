//! NEON conversion of 4:2:0 rows (NV12, I420) and packed 4:2:2 rows (YUYV, UYVY) to packed RGB8,
//! 16 pixels at a time, bit-identical with [`ColorSpec::to_rgb`]: the same fixed-point formula in
//! i32 lanes, the same shift and clamp.

use std::arch::aarch64::*;

use super::pixel::{Chroma, ColorSpec, COLOR_BITS};

/// Converts pixels `x..` of a row, 16 at a time, while whole blocks fit before `x1`, writing RGB8
/// at `dst[3·(x − x0)..]`; returns the first pixel not converted (the caller does the rest). `x`
/// must be even (blocks start on a chroma sample). `luma` is the row's Y, `chroma` its chroma row.
#[target_feature(enable = "neon")]
pub(super) fn yuv420_row(luma: &[u8], chroma: &Chroma, color: &ColorSpec, x0: usize, mut x: usize, x1: usize, dst: &mut [u8]) -> usize {
    debug_assert!(x % 2 == 0 && x >= x0);
    while x + 16 <= x1 && x + 16 <= luma.len() {
        // SAFETY (the loads): the guards check that the block's bytes lie within the slices (luma
        // x..x + 16; NV12 chroma x..x + 16, x even; I420 planes x/2..x/2 + 8).
        let (u, v) = match chroma {
            Chroma::Interleaved(c) if x + 16 <= c.len() => {
                let uv = unsafe { vld2_u8(c.as_ptr().add(x)) };
                (uv.0, uv.1)
            }
            Chroma::Planar(u, v) if x / 2 + 8 <= u.len() && x / 2 + 8 <= v.len() => unsafe { (vld1_u8(u.as_ptr().add(x / 2)), vld1_u8(v.as_ptr().add(x / 2))) },
            _ => break,
        };
        let yv = unsafe { vld1q_u8(luma.as_ptr().add(x)) };
        // Each chroma sample covers two pixels.
        let (uz, vz) = (vzip_u8(u, u), vzip_u8(v, v));
        let rgb = rgb16(color, yv, vcombine_u8(uz.0, uz.1), vcombine_u8(vz.0, vz.1));
        let at = 3 * (x - x0);
        let out = &mut dst[at..at + 48];
        // SAFETY: `out` is 48 writable bytes, what one interleaved store of 3 × 16 writes.
        unsafe { vst3q_u8(out.as_mut_ptr(), rgb) };
        x += 16;
    }
    x
}

/// R, G, B of 16 pixels from their Y, U and V bytes: `to_rgb`'s fixed-point formula in i32 lanes,
/// the same shift and clamp.
#[inline]
#[target_feature(enable = "neon")]
fn rgb16(color: &ColorSpec, yv: uint8x16_t, u16: uint8x16_t, v16: uint8x16_t) -> uint8x16x3_t {
    let [y_offset, y_scale, r_v, g_u, g_v, b_u] = color.coefficients();
    let (off, half, c128) = (vdupq_n_s32(y_offset), vdupq_n_s32(1 << (COLOR_BITS - 1)), vdupq_n_s32(128));
    // 16 bytes → four i32x4 (pixels 0–3, 4–7, 8–11, 12–15).
    let widen = |b: uint8x16_t| -> [int32x4_t; 4] {
        let (lo, hi) = (vmovl_u8(vget_low_u8(b)), vmovl_u8(vget_high_u8(b)));
        [vget_low_u16(lo), vget_high_u16(lo), vget_low_u16(hi), vget_high_u16(hi)].map(|h| vreinterpretq_s32_u32(vmovl_u16(h)))
    };
    let (ys, us, vs) = (widen(yv), widen(u16), widen(v16));
    let mut planes = [[vdupq_n_s32(0); 4]; 3];
    for q in 0..4 {
        let c = vaddq_s32(vmulq_n_s32(vsubq_s32(ys[q], off), y_scale), half);
        let (d, e) = (vsubq_s32(us[q], c128), vsubq_s32(vs[q], c128));
        planes[0][q] = vshrq_n_s32::<{ COLOR_BITS as i32 }>(vmlaq_n_s32(c, e, r_v));
        planes[1][q] = vshrq_n_s32::<{ COLOR_BITS as i32 }>(vmlsq_n_s32(vmlsq_n_s32(c, d, g_u), e, g_v));
        planes[2][q] = vshrq_n_s32::<{ COLOR_BITS as i32 }>(vmlaq_n_s32(c, d, b_u));
    }
    // i32 → u16 (saturating: negative → 0) → u8 (saturating: > 255 → 255), as `to_rgb`'s clamp.
    let narrow = |p: [int32x4_t; 4]| {
        let lo = vqmovn_u16(vcombine_u16(vqmovun_s32(p[0]), vqmovun_s32(p[1])));
        let hi = vqmovn_u16(vcombine_u16(vqmovun_s32(p[2]), vqmovun_s32(p[3])));
        vcombine_u8(lo, hi)
    };
    uint8x16x3_t(narrow(planes[0]), narrow(planes[1]), narrow(planes[2]))
}

/// Converts pixels `x..` (`x` even) of a packed 4:2:2 row (`row`: two pixels per four bytes, YUYV
/// when `uyvy` is false, else UYVY), 32 and then 16 at a time while whole blocks fit before `x1`,
/// writing RGB8 at `dst[3·(x − x0)..]`; returns the first pixel not converted (the caller does the
/// rest).
#[target_feature(enable = "neon")]
pub(super) fn yuv422_row(row: &[u8], uyvy: bool, color: &ColorSpec, x0: usize, mut x: usize, x1: usize, dst: &mut [u8]) -> usize {
    debug_assert!(x % 2 == 0 && x >= x0);
    while x + 32 <= x1 && 2 * x + 64 <= row.len() {
        // SAFETY: the 64 bytes 2x..2x + 64 lie within `row` (checked by the loop condition).
        let q = unsafe { vld4q_u8(row.as_ptr().add(2 * x)) };
        // Lane i of the four planes: pair i's bytes (Y0 U Y1 V, or U Y0 V Y1).
        let (y0, u, y1, v) = if uyvy { (q.1, q.0, q.3, q.2) } else { (q.0, q.1, q.2, q.3) };
        let (y, uz, vz) = (vzipq_u8(y0, y1), vzipq_u8(u, u), vzipq_u8(v, v));
        for (half, (yv, (uv, vv))) in [(y.0, (uz.0, vz.0)), (y.1, (uz.1, vz.1))].into_iter().enumerate() {
            let rgb = rgb16(color, yv, uv, vv);
            let at = 3 * (x + 16 * half - x0);
            let out = &mut dst[at..at + 48];
            // SAFETY: `out` is 48 writable bytes, what one interleaved store of 3 × 16 writes.
            unsafe { vst3q_u8(out.as_mut_ptr(), rgb) };
        }
        x += 32;
    }
    // Then 16 pixels (8 pairs) at a time.
    while x + 16 <= x1 && 2 * x + 32 <= row.len() {
        // SAFETY: the 32 bytes 2x..2x + 32 lie within `row` (checked by the loop condition).
        let q = unsafe { vld4_u8(row.as_ptr().add(2 * x)) };
        let (y0, u, y1, v) = if uyvy { (q.1, q.0, q.3, q.2) } else { (q.0, q.1, q.2, q.3) };
        let (y, uz, vz) = (vzip_u8(y0, y1), vzip_u8(u, u), vzip_u8(v, v));
        let rgb = rgb16(color, vcombine_u8(y.0, y.1), vcombine_u8(uz.0, uz.1), vcombine_u8(vz.0, vz.1));
        let at = 3 * (x - x0);
        let out = &mut dst[at..at + 48];
        // SAFETY: `out` is 48 writable bytes, what one interleaved store of 3 × 16 writes.
        unsafe { vst3q_u8(out.as_mut_ptr(), rgb) };
        x += 16;
    }
    x
}
