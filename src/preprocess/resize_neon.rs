//! NEON versions of the horizontal resampling pass of [`super::resize`] and of the normalization's
//! arithmetic (NEON is part of every aarch64 CPU; the vertical pass vectorizes by itself). The
//! pass is bit-identical with the portable body (the same i32 wrapping arithmetic, whose sums do
//! not depend on their order), the normalization with its tables.

use std::arch::aarch64::*;

use super::resize::{pixel_taps, Coeffs, NormalizeArithmetic, HALF, PRECISION_BITS};

/// Source pixels [`resample_rgb_row`] widens at once.
const CHUNK: usize = 256;

/// Widens source pixels `lo..hi` of a packed-RGB row (`hi − lo <= CHUNK`) to one `[R, G, B, 0]`
/// i32 vector each, into `wide[..hi − lo]`: five pixels per 16-byte load, one table lookup each
/// (indices past the load give zero bytes); the last pixels one by one.
#[target_feature(enable = "neon")]
fn widen(src: &[u8], lo: usize, hi: usize, wide: &mut [int32x4_t; CHUNK]) {
    let picks: [uint8x16_t; 5] = std::array::from_fn(|j| {
        // Lane c (R, G, B) of pixel j takes byte 3j + c into its low byte; the rest are zero.
        let idx: [u8; 16] = std::array::from_fn(|b| if b % 4 == 0 && b < 12 { (3 * j + b / 4) as u8 } else { 0xff });
        // SAFETY: a 16-byte array, the size of one load.
        unsafe { vld1q_u8(idx.as_ptr()) }
    });
    let mut p = lo;
    while p + 5 <= hi && 3 * p + 16 <= src.len() {
        // SAFETY: bytes 3p..3p + 16 lie within `src` (checked just above).
        let bytes = unsafe { vld1q_u8(src.as_ptr().add(3 * p)) };
        for (j, pick) in picks.iter().enumerate() {
            wide[p - lo + j] = vreinterpretq_s32_u8(vqtbl1q_u8(bytes, *pick));
        }
        p += 5;
    }
    for p in p..hi {
        let px = [src[3 * p] as i32, src[3 * p + 1] as i32, src[3 * p + 2] as i32, 0];
        // SAFETY: a 4-value array, the size of one load.
        wide[p - lo] = unsafe { vld1q_s32(px.as_ptr()) };
    }
}

/// The horizontal pass over a packed-RGB row: the source pixels are widened once each to an i32
/// vector `[R, G, B, 0]` (in chunks of [`CHUNK`]), then each output pixel's taps are one
/// multiply-accumulate per tap on those vectors (four weights per load, taken by lane), into two
/// accumulators (even and odd taps, so that the chains overlap; four measured slower under the
/// cost model). Pixels with more taps than a chunk holds take the portable per-pixel sum.
#[target_feature(enable = "neon")]
pub(super) fn resample_rgb_row(c: &Coeffs, src: &[u8], x0: usize, dst: &mut [u8]) {
    let zero = vdupq_n_s32(0);
    let mut wide = [zero; CHUNK];
    let pixels = src.len() / 3;
    // The widened source pixels: lo..hi (counted from x0).
    let (mut lo, mut hi) = (0, 0);
    for ((xx, &(xmin, n)), d) in c.bounds.iter().enumerate().zip(dst.chunks_exact_mut(3)) {
        let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
        let first = xmin - x0;
        if n > CHUNK || first + n > pixels {
            d.copy_from_slice(&pixel_taps(&src[first * 3..(first + n) * 3], k));
            continue;
        }
        if first < lo || first + n > hi {
            (lo, hi) = (first, (first + CHUNK).min(pixels));
            widen(src, lo, hi, &mut wide);
        }
        let taps = &wide[first - lo..first - lo + n];
        let (mut even, mut odd) = (vdupq_n_s32(HALF), zero);
        // Four weights per load, each used by lane (no move of a weight into a vector per tap).
        for (quad, w) in taps.chunks_exact(4).zip(k.chunks_exact(4)) {
            // SAFETY: `w` holds four weights, the size of one load.
            let w = unsafe { vld1q_s32(w.as_ptr()) };
            even = vmlaq_laneq_s32::<0>(even, quad[0], w);
            odd = vmlaq_laneq_s32::<1>(odd, quad[1], w);
            even = vmlaq_laneq_s32::<2>(even, quad[2], w);
            odd = vmlaq_laneq_s32::<3>(odd, quad[3], w);
        }
        for t in n / 4 * 4..n {
            if t % 2 == 0 {
                even = vmlaq_n_s32(even, taps[t], k[t]);
            } else {
                odd = vmlaq_n_s32(odd, taps[t], k[t]);
            }
        }
        // The i32 sums wrap like Pillow's, whatever their order. clip8: shift, then saturate to
        // 0..=255 (i32 → u16 → u8).
        let shifted = vshrq_n_s32::<{ PRECISION_BITS as i32 }>(vaddq_s32(even, odd));
        let packed = vqmovn_u16(vcombine_u16(vqmovun_s32(shifted), vdup_n_u16(0)));
        let rgb = vget_lane_u32::<0>(vreinterpret_u32_u8(packed)).to_le_bytes();
        d.copy_from_slice(&rgb[..3]);
    }
}

/// The normalization of [`super::resize::Normalizer`] by `arithmetic` (whose values the caller has
/// checked to equal the tables) for the interleaved RGB8 pixels `px` into the planes `r`, `g`, `b`
/// (one value per pixel each): 16 pixels a step, split into channels by `vld3q_u8`, widened to
/// f32, then [`NormalizeArithmetic::value`]'s fused multiply-adds; the last pixels alone.
#[target_feature(enable = "neon")]
pub(super) fn normalize_rows(px: &[u8], arithmetic: &NormalizeArithmetic, planes: [&mut [f32]; 3]) {
    let n = px.len() / 3;
    assert!(planes.iter().all(|p| p.len() >= n), "normalize_rows: planes too short");
    let a = arithmetic;
    // `a / d` as NormalizeArithmetic::quotient computes it, from r = f32(1/d): q = a·r, then
    // q + (a − q·d)·r, each step one rounding.
    let quotient = |x: float32x4_t, d: float32x4_t, r: float32x4_t| {
        let q = vmulq_f32(x, r);
        vfmaq_f32(q, vfmsq_f32(x, q, d), r)
    };
    let (c255, unit) = (vdupq_n_f32(255.0), vdupq_n_f32(a.unit));
    let [mean, std, std_recip] = [a.mean, a.std, a.std_recip].map(|v| v.map(|x| vdupq_n_f32(x)));
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: pixels i..i + 16 are 48 bytes within `px` (i + 16 <= n).
        let channels = unsafe { vld3q_u8(px.as_ptr().add(3 * i)) };
        for (c, bytes) in [channels.0, channels.1, channels.2].into_iter().enumerate() {
            let halves = [vmovl_u8(vget_low_u8(bytes)), vmovl_u8(vget_high_u8(bytes))];
            for (h, half) in halves.into_iter().enumerate() {
                for (q, words) in [vget_low_u16(half), vget_high_u16(half)].into_iter().enumerate() {
                    let x = vcvtq_f32_u32(vmovl_u16(words));
                    let scaled = if a.divide { quotient(x, c255, unit) } else { vmulq_f32(x, unit) };
                    let v = quotient(vsubq_f32(scaled, mean[c]), std[c], std_recip[c]);
                    // SAFETY: values i + 8h + 4q .. + 4 lie below n <= the plane's length (asserted).
                    unsafe { vst1q_f32(planes[c].as_mut_ptr().add(i + 8 * h + 4 * q), v) };
                }
            }
        }
        i += 16;
    }
    for (j, p) in px.chunks_exact(3).enumerate().skip(i) {
        for c in 0..3 {
            planes[c][j] = a.value(c, p[c]);
        }
    }
}
