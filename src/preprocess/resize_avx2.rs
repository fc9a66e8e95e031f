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

/// Rows the batched horizontal pass takes at once.
pub(super) const BATCH: usize = 8;

/// Bytes of scratch [`resample_rgb_rows8`] needs for rows of `span` source bytes and `out`
/// output pixels: the transposed source, the transposed output and 8 bytes of slack for its
/// 32-byte stores.
pub(super) fn rows8_scratch_len(span: usize, out: usize) -> usize {
    BATCH * span + BATCH * out * 3 + 8
}

/// Transposes the 8 × 8 bytes at `src` (row `r` at `src + r·stride`) and returns the columns in
/// pairs: vector `i` holds column `2i` (8 bytes, one per row) then column `2i + 1`.
///
/// # Safety
/// The 8 bytes from each `src + r·stride`, `r < 8`, must be readable; the CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn transpose8x8(src: *const u8, stride: usize) -> [__m128i; 4] {
    // SAFETY: the caller guarantees that the eight 8-byte rows are readable.
    let row = |r: usize| unsafe { _mm_loadl_epi64(src.add(r * stride) as *const __m128i) };
    let (a, b) = (_mm_unpacklo_epi8(row(0), row(1)), _mm_unpacklo_epi8(row(2), row(3)));
    let (c, d) = (_mm_unpacklo_epi8(row(4), row(5)), _mm_unpacklo_epi8(row(6), row(7)));
    let (e, f) = (_mm_unpacklo_epi16(a, b), _mm_unpackhi_epi16(a, b));
    let (g, h) = (_mm_unpacklo_epi16(c, d), _mm_unpackhi_epi16(c, d));
    [_mm_unpacklo_epi32(e, g), _mm_unpackhi_epi32(e, g), _mm_unpacklo_epi32(f, h), _mm_unpackhi_epi32(f, h)]
}

/// The horizontal pass over 8 packed-RGB rows at once, vectorized across the rows: the rows are
/// transposed so that one 8-byte load holds the same byte column of all 8 rows, each tap is one
/// multiply of 8 × i32 lanes by the tap's weight (shared by the 8 rows and the 3 channels), and
/// the 8 output rows are transposed back. Row `r` of the source starts at `src[r · src_stride]`
/// (the bytes from column `x0` on, `src_stride` of them); row `r` of the output goes to
/// `dst[r · dst_stride..][..3 · bounds.len()]`. `scratch` holds at least
/// [`rows8_scratch_len`]`(src_stride, bounds.len())` bytes. Bit-identical with
/// [`resample_rgb_row`] on each row (the same i32 sums).
#[target_feature(enable = "avx2")]
pub(super) fn resample_rgb_rows8(c: &Coeffs, src: &[u8], src_stride: usize, x0: usize, dst: &mut [u8], dst_stride: usize, scratch: &mut [u8]) {
    let (span, out) = (src_stride, c.bounds.len() * 3);
    assert!(src.len() >= (BATCH - 1) * span + span && dst.len() >= (BATCH - 1) * dst_stride + out && dst_stride >= out, "resample_rgb_rows8: buffers too short");
    assert!(scratch.len() >= rows8_scratch_len(span, c.bounds.len()), "resample_rgb_rows8: scratch too short");
    assert!(c.bounds.iter().all(|&(xmin, n)| xmin >= x0 && (xmin - x0 + n) * 3 <= span), "resample_rgb_rows8: taps outside the rows");
    let (t, o) = scratch.split_at_mut(BATCH * span);
    // Source → t: byte column j of row r at t[8j + r].
    let blocks = span / 8;
    for blk in 0..blocks {
        // SAFETY: rows 0..8 hold `span` bytes each at stride `span` (asserted above) and
        // 8·blk + 8 <= span; the 64 bytes stored from t[64·blk] lie within t (8·span bytes).
        unsafe {
            let cols = transpose8x8(src.as_ptr().add(8 * blk), span);
            for (i, v) in cols.iter().enumerate() {
                _mm_storeu_si128(t.as_mut_ptr().add(64 * blk + 16 * i) as *mut __m128i, *v);
            }
        }
    }
    for j in 8 * blocks..span {
        for r in 0..BATCH {
            t[8 * j + r] = src[r * span + j];
        }
    }
    // Taps → o: output byte column j (pixel j / 3, channel j % 3) of row r at o[8j + r].
    // Dword order after the packs: lane 0 holds R0-3 G0-3 B0-3 B0-3, lane 1 the same for rows 4-7.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let half = _mm256_set1_epi32(HALF);
    for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
        let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
        let base = (xmin - x0) * 3 * 8;
        let (mut r, mut g, mut b) = (half, half, half);
        for (tap, &w) in k.iter().enumerate() {
            let w = _mm256_set1_epi32(w);
            // SAFETY: tap `tap` of pixel `xx` reads source pixel xmin + tap, whose three byte
            // columns (xmin − x0 + tap)·3 + 0..3 < span (asserted above) sit at t[8j..8j + 8].
            let (pr, pg, pb) = unsafe {
                let p = t.as_ptr().add(base + 24 * tap);
                (_mm_loadl_epi64(p as *const __m128i), _mm_loadl_epi64(p.add(8) as *const __m128i), _mm_loadl_epi64(p.add(16) as *const __m128i))
            };
            r = _mm256_add_epi32(r, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(pr), w));
            g = _mm256_add_epi32(g, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(pg), w));
            b = _mm256_add_epi32(b, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(pb), w));
        }
        // clip8: shift, then saturate to 0..=255 (i32 → i16 → u8).
        let (r, g, b) = (_mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(r), _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(g), _mm256_srai_epi32::<{ PRECISION_BITS as i32 }>(b));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(_mm256_packs_epi32(r, g), _mm256_packs_epi32(b, b)), order);
        // SAFETY: o holds 8·out + 8 bytes (asserted above) and 24·xx + 32 <= 8·out + 8.
        unsafe { _mm256_storeu_si256(o.as_mut_ptr().add(24 * xx) as *mut __m256i, bytes) };
    }
    // o → the 8 output rows.
    let blocks = out / 8;
    for blk in 0..blocks {
        // SAFETY: o[64·blk..64·blk + 64] is within its 8·out bytes; row r's 8 bytes at
        // dst[r·dst_stride + 8·blk..][..8] lie within dst (8·blk + 8 <= out, asserted above).
        unsafe {
            let rows = transpose8x8(o.as_ptr().add(64 * blk), 8);
            for (i, v) in rows.iter().enumerate() {
                let d = dst.as_mut_ptr().add(2 * i * dst_stride + 8 * blk);
                _mm_storel_epi64(d as *mut __m128i, *v);
                _mm_storel_epi64(d.add(dst_stride) as *mut __m128i, _mm_unpackhi_epi64(*v, *v));
            }
        }
    }
    for j in 8 * blocks..out {
        for r in 0..BATCH {
            dst[r * dst_stride + j] = o[8 * j + r];
        }
    }
}
