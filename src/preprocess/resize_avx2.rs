//! AVX2 versions of the two resampling passes of [`super::resize`], bit-identical with the portable
//! bodies (the same i32 wrapping arithmetic; integer sums do not depend on their order).

use std::arch::x86_64::*;

use super::resize::{pixel_taps, Coeffs, HALF, PRECISION_BITS};

/// The vertical pass: the portable body, compiled with AVX2 (it vectorizes to `vpmulld` over
/// 8 × i32 lanes by itself).
#[target_feature(enable = "avx2")]
pub(super) fn resample_rows(c: &Coeffs, src: &[u8], y0: usize, row_len: usize, dst: &mut [u8]) {
    super::resize::resample_rows_body(c, src, y0, row_len, dst)
}

/// The horizontal pass over a packed-RGB row: two taps per instruction, each tap's R, G, B in one
/// 128-bit half (`[R0 G0 B0 0 | R1 G1 B1 0]` × `[w0 ×4 | w1 ×4]`), the halves summed at the end.
/// Pixels whose 8-byte loads would pass the end of `src` take the portable per-pixel sum.
#[target_feature(enable = "avx2")]
pub(super) fn resample_rgb_row(c: &Coeffs, src: &[u8], x0: usize, dst: &mut [u8]) {
    // Bytes 0..6 of a load → lanes 0, 1, 2 and 4, 5, 6 (the others zero) before widening.
    let spread = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    for ((xx, &(xmin, n)), d) in c.bounds.iter().enumerate().zip(dst.chunks_exact_mut(3)) {
        let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
        let base = (xmin - x0) * 3;
        // The last load starts at byte 3·(2⌈n/2⌉ − 2) of the window and reads 8 bytes.
        let end = base + 3 * n.next_multiple_of(2) + 2;
        let acc = if end <= src.len() {
            let mut acc = _mm256_setzero_si256();
            for (t, pair) in k.chunks(2).enumerate() {
                let (w0, w1) = (pair[0], pair.get(1).copied().unwrap_or(0));
                // SAFETY: the 8 bytes at `base + 6t` lie within `src`: `6t + 8 <= 3·2⌈n/2⌉ + 2`
                // for every pair index t < ⌈n/2⌉, and `end <= src.len()` was checked.
                let bytes = unsafe { _mm_loadl_epi64(src.as_ptr().add(base + 6 * t) as *const __m128i) };
                let px = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(bytes, spread));
                let w = _mm256_set_m128i(_mm_set1_epi32(w1), _mm_set1_epi32(w0));
                acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, w));
            }
            let sum = _mm_add_epi32(_mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc)), _mm_set1_epi32(HALF));
            // clip8: shift, then saturate to 0..=255 (i32 → i16 → u8).
            let shifted = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(sum);
            let packed = _mm_packus_epi16(_mm_packs_epi32(shifted, shifted), _mm_setzero_si128());
            let rgb = (_mm_cvtsi128_si32(packed) as u32).to_le_bytes();
            [rgb[0], rgb[1], rgb[2]]
        } else {
            pixel_taps(&src[base..base + 3 * n], k)
        };
        d.copy_from_slice(&acc);
    }
}
