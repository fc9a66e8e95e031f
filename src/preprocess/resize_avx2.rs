//! AVX2 versions of the two resampling passes of [`super::resize`], bit-identical with the portable
//! bodies (the same i32 wrapping arithmetic; integer sums do not depend on their order).

use std::arch::x86_64::*;

use super::resize::{pixel_taps, Coeffs, HALF, PRECISION_BITS};

/// The vertical pass: the portable body, compiled with AVX2 (it vectorizes to `vpmulld` over
/// 8 × i32 lanes by itself).
#[target_feature(enable = "avx2")]
pub(super) fn resample_rows(c: &Coeffs, src: &[u8], y0: usize, row_len: usize, dst: &mut [u8], outs: std::ops::Range<usize>) {
    super::resize::resample_rows_body(c, src, y0, row_len, dst, outs)
}

/// The horizontal pass over a packed-RGB row: two taps per instruction. Eight bytes from tap `2t`
/// on (`R G B R G B` of taps `2t`, `2t + 1` and two bytes of the next) widen to 8 × i32 and multiply
/// by [`Coeffs::pair_lanes`] (`[w ×3, w' ×3, 0, 0]`), so lanes 0–2 and 3–5 accumulate the two taps'
/// R, G, B; they are added at the end. Pixels whose 8-byte loads would pass the end of `src` take
/// the portable per-pixel sum.
#[target_feature(enable = "avx2")]
pub(super) fn resample_rgb_row(c: &Coeffs, src: &[u8], x0: usize, dst: &mut [u8]) {
    let pairs = c.ksize.div_ceil(2);
    // Lanes 3, 4, 5 moved onto 0, 1, 2 (the rest do not matter).
    let upper = _mm256_setr_epi32(3, 4, 5, 7, 7, 7, 7, 7);
    for ((xx, &(xmin, n)), d) in c.bounds.iter().enumerate().zip(dst.chunks_exact_mut(3)) {
        let base = (xmin - x0) * 3;
        // The last load starts at byte 3·(2⌈n/2⌉ − 2) of the window and reads 8 bytes.
        let end = base + 3 * n.next_multiple_of(2) + 2;
        let rgb = if end <= src.len() {
            let lanes = &c.pair_lanes[xx * pairs * 8..(xx * pairs + n.div_ceil(2)) * 8];
            let mut acc = _mm256_setzero_si256();
            for (t, w) in lanes.chunks_exact(8).enumerate() {
                // SAFETY: the 8 bytes at `base + 6t` lie within `src`: `6t + 8 <= 3·2⌈n/2⌉ + 2`
                // for every pair index t < ⌈n/2⌉, and `end <= src.len()` was checked; `w` holds
                // exactly eight i32 (`chunks_exact`).
                let (bytes, w) = unsafe { (_mm_loadl_epi64(src.as_ptr().add(base + 6 * t) as *const __m128i), _mm256_loadu_si256(w.as_ptr() as *const __m256i)) };
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(bytes), w));
            }
            let both = _mm256_add_epi32(acc, _mm256_permutevar8x32_epi32(acc, upper));
            let sum = _mm_add_epi32(_mm256_castsi256_si128(both), _mm_set1_epi32(HALF));
            // clip8: shift, then saturate to 0..=255 (i32 → i16 → u8).
            let shifted = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(sum);
            let packed = _mm_packus_epi16(_mm_packs_epi32(shifted, shifted), _mm_setzero_si128());
            let rgb = (_mm_cvtsi128_si32(packed) as u32).to_le_bytes();
            [rgb[0], rgb[1], rgb[2]]
        } else {
            let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
            pixel_taps(&src[base..base + 3 * n], k)
        };
        d.copy_from_slice(&rgb);
    }
}
