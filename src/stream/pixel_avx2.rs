//! AVX2 conversion of 4:2:0 rows (NV12, I420) to packed RGB8, 16 pixels at a time, bit-identical
//! with [`ColorSpec::to_rgb`]: the same fixed-point formula in i32 lanes, the same shift and clamp.

use std::arch::x86_64::*;

use super::pixel::{Chroma, ColorSpec, COLOR_BITS};

/// `pshufb` masks that spread 16 R, G and B bytes into 48 bytes of packed RGB: mask `[k][c]` puts
/// plane `c`'s bytes into output bytes `16k..16k + 16` (other positions zero).
const fn interleave_masks() -> [[[i8; 16]; 3]; 3] {
    let mut m = [[[-128i8; 16]; 3]; 3];
    let mut g = 0;
    while g < 48 {
        m[g / 16][g % 3][g % 16] = (g / 3) as i8;
        g += 1;
    }
    m
}
const INTERLEAVE: [[[i8; 16]; 3]; 3] = interleave_masks();

/// Converts pixels `x..` of a row, 16 at a time, while whole blocks fit before `x1`, writing RGB8
/// at `dst[3·(x − x0)..]`; returns the first pixel not converted (the caller does the rest). `x`
/// must be even (blocks start on a chroma sample). `luma` is the row's Y, `chroma` its chroma row.
#[target_feature(enable = "avx2")]
pub(super) fn yuv420_row(luma: &[u8], chroma: &Chroma, color: &ColorSpec, x0: usize, mut x: usize, x1: usize, dst: &mut [u8]) -> usize {
    debug_assert!(x % 2 == 0 && x >= x0);
    let [y_offset, y_scale, r_v, g_u, g_v, b_u] = color.coefficients();
    let (off, ys, half) = (_mm256_set1_epi32(y_offset), _mm256_set1_epi32(y_scale), _mm256_set1_epi32(1 << (COLOR_BITS - 1)));
    let (rv, gu, gv, bu, c128) = (_mm256_set1_epi32(r_v), _mm256_set1_epi32(g_u), _mm256_set1_epi32(g_v), _mm256_set1_epi32(b_u), _mm256_set1_epi32(128));
    let dup_even = _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
    let dup_odd = _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15);
    let dup_low = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    // SAFETY (every load below): the match guards check that the block's bytes lie within the
    // slices (luma x..x + 16; NV12 chroma x..x + 16, x even; I420 planes x/2..x/2 + 8); the masks
    // are 16-byte arrays.
    let masks = INTERLEAVE.map(|k| k.map(|m| unsafe { _mm_loadu_si128(m.as_ptr() as *const __m128i) }));
    while x + 16 <= x1 {
        let (yv, uv) = match chroma {
            Chroma::Interleaved(c) if x + 16 <= c.len() && x + 16 <= luma.len() => {
                let c = unsafe { _mm_loadu_si128(c.as_ptr().add(x) as *const __m128i) };
                (unsafe { _mm_loadu_si128(luma.as_ptr().add(x) as *const __m128i) }, (_mm_shuffle_epi8(c, dup_even), _mm_shuffle_epi8(c, dup_odd)))
            }
            Chroma::Planar(u, v) if x / 2 + 8 <= u.len() && x / 2 + 8 <= v.len() && x + 16 <= luma.len() => {
                let (a, b) = unsafe { (_mm_loadl_epi64(u.as_ptr().add(x / 2) as *const __m128i), _mm_loadl_epi64(v.as_ptr().add(x / 2) as *const __m128i)) };
                (unsafe { _mm_loadu_si128(luma.as_ptr().add(x) as *const __m128i) }, (_mm_shuffle_epi8(a, dup_low), _mm_shuffle_epi8(b, dup_low)))
            }
            _ => break,
        };
        // Two halves of 8 pixels in i32 lanes: R, G, B before the shift, as `to_rgb`.
        let channels = |y8: __m128i, u8: __m128i, v8: __m128i| {
            let c = _mm256_add_epi32(_mm256_mullo_epi32(_mm256_sub_epi32(_mm256_cvtepu8_epi32(y8), off), ys), half);
            let d = _mm256_sub_epi32(_mm256_cvtepu8_epi32(u8), c128);
            let e = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v8), c128);
            let r = _mm256_add_epi32(c, _mm256_mullo_epi32(rv, e));
            let g = _mm256_sub_epi32(_mm256_sub_epi32(c, _mm256_mullo_epi32(gu, d)), _mm256_mullo_epi32(gv, e));
            let b = _mm256_add_epi32(c, _mm256_mullo_epi32(bu, d));
            [_mm256_srai_epi32::<{ COLOR_BITS as i32 }>(r), _mm256_srai_epi32::<{ COLOR_BITS as i32 }>(g), _mm256_srai_epi32::<{ COLOR_BITS as i32 }>(b)]
        };
        let lo = channels(yv, uv.0, uv.1);
        let hi = channels(_mm_srli_si128::<8>(yv), _mm_srli_si128::<8>(uv.0), _mm_srli_si128::<8>(uv.1));
        // i32 → i16 (saturating; the values are within ±1024) → u8 (saturating = clamp 0..=255).
        let planes: [__m128i; 3] = std::array::from_fn(|ch| {
            let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(lo[ch], hi[ch]));
            _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w))
        });
        let at = 3 * (x - x0);
        let out = &mut dst[at..at + 48];
        for (k, chunk) in out.chunks_exact_mut(16).enumerate() {
            let bytes = _mm_or_si128(
                _mm_or_si128(_mm_shuffle_epi8(planes[0], masks[k][0]), _mm_shuffle_epi8(planes[1], masks[k][1])),
                _mm_shuffle_epi8(planes[2], masks[k][2]),
            );
            // SAFETY: `chunk` is 16 writable bytes.
            unsafe { _mm_storeu_si128(chunk.as_mut_ptr() as *mut __m128i, bytes) };
        }
        x += 16;
    }
    x
}
