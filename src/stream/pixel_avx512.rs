//! AVX-512 (F, BW, VL, VBMI) conversion of 4:2:0 rows (NV12, I420) and packed 4:2:2 rows (YUYV,
//! UYVY) to packed RGB8, 32 pixels at a time in 16-bit lanes, bit-identical with
//! [`ColorSpec::to_rgb`].
//!
//! `to_rgb` sums i32 products of 16-bit fixed-point coefficients and shifts by 16. Here each
//! product `x·k` is kept exactly as two 16-bit halves: `k = kh·2^16 + kl` with `kl` in
//! −2^15..2^15, so `x·k = (x·kh + mulhi(x, kl))·2^16 + mullo(x, kl)`, the low half unsigned. Sums
//! add the low halves with their carries into the high halves, and the high half of the final sum
//! is the shifted value `to_rgb` clamps: twice the pixels of 32-bit lanes per instruction, and
//! 16-bit multiplies are single µops where `vpmulld` is two.

use std::arch::x86_64::*;

use super::pixel::{Chroma, ColorSpec, COLOR_BITS};
use crate::preprocess::low_bits;

/// Whether this CPU has what [`yuv420_row`] uses.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
}

/// A 32-bit value per 16-bit lane pair: `high·2^16 + low`, `low` unsigned.
#[derive(Clone, Copy)]
struct Wide {
    high: __m512i,
    low: __m512i,
}

/// One coefficient split for [`product`]: `k = high·2^16 + low`, `low` in −2^15..2^15.
#[derive(Clone, Copy)]
struct Split {
    high: __m512i,
    low: __m512i,
}

#[target_feature(enable = "avx512f,avx512bw")]
fn split(k: i32) -> Split {
    const { assert!(COLOR_BITS == 16, "the 16-bit halves are the fixed point's integer and fraction") };
    let low = (k as i16) as i32;
    Split { high: _mm512_set1_epi16(((k - low) >> 16) as i16), low: _mm512_set1_epi16(low as i16) }
}

/// `x·k` for 32 signed 16-bit `x` (|x·k.high| < 2^15).
#[target_feature(enable = "avx512f,avx512bw")]
fn product(x: __m512i, k: Split) -> Wide {
    Wide { high: _mm512_add_epi16(_mm512_mullo_epi16(x, k.high), _mm512_mulhi_epi16(x, k.low)), low: _mm512_mullo_epi16(x, k.low) }
}

/// `a + b`, the low halves' carry added to the high halves.
#[target_feature(enable = "avx512f,avx512bw")]
fn add(a: Wide, b: Wide) -> Wide {
    let low = _mm512_add_epi16(a.low, b.low);
    let carry = _mm512_cmplt_epu16_mask(low, a.low);
    let high = _mm512_add_epi16(a.high, b.high);
    Wide { high: _mm512_mask_add_epi16(high, carry, high, _mm512_set1_epi16(1)), low }
}

/// The output interleave: byte `j` of 96 output bytes takes pixel `j / 3` of plane `j % 3`, read
/// by `vpermt2b` from the two `vpackuswb` results of [`Converter::store`]: R and G in one register
/// (per 128-bit lane `L`: R of pixels 8L..8L + 8, then G of the same pixels), B in the other (its
/// bytes 8L..8L + 8 of lane `L` at offset 64).
const fn interleave_index(first: usize) -> [u8; 64] {
    let mut idx = [0u8; 64];
    let mut j = 0;
    while j < 64 {
        let out = first + j;
        let (p, plane) = (out / 3, out % 3);
        idx[j] = (16 * (p / 8) + p % 8 + [0, 8, 64][plane]) as u8;
        j += 1;
    }
    idx
}
const INTERLEAVE_LOW: [u8; 64] = interleave_index(0);
const INTERLEAVE_HIGH: [u8; 64] = interleave_index(64);

/// The colour conversion's constants in 16-bit lanes, and the output interleave.
struct Converter {
    ys: Split,
    rv: Split,
    gu: Split,
    gv: Split,
    bu: Split,
    /// `2^15 − y_offset·y_scale`: the luma offset and the rounding of `to_rgb` as one constant.
    base: Wide,
    c128: __m512i,
    interleave: [__m512i; 2],
}

/// The chroma terms of 32 pixels: what `to_rgb` adds to the luma term for R, G and B.
#[derive(Clone, Copy)]
struct ChromaTerms([Wide; 3]);

impl Converter {
    #[target_feature(enable = "avx512f,avx512bw")]
    fn new(color: &ColorSpec) -> Converter {
        let [y_offset, y_scale, r_v, g_u, g_v, b_u] = color.coefficients();
        // y_offset ≤ 16 and y_scale < 2^17, so |base| < 2^21.
        let base = (1i32 << (COLOR_BITS - 1)) - y_offset * y_scale;
        Converter {
            ys: split(y_scale),
            rv: split(r_v),
            gu: split(-g_u),
            gv: split(-g_v),
            bu: split(b_u),
            base: Wide { high: _mm512_set1_epi16((base >> 16) as i16), low: _mm512_set1_epi16(base as i16) },
            c128: _mm512_set1_epi16(128),
            // SAFETY: 64-byte arrays, the size of one load.
            interleave: [INTERLEAVE_LOW, INTERLEAVE_HIGH].map(|i| unsafe { _mm512_loadu_si512(i.as_ptr() as *const __m512i) }),
        }
    }

    /// The chroma terms of 32 pixels whose U, V are the 16-bit lanes of `u`, `v`.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn chroma(&self, u: __m512i, v: __m512i) -> ChromaTerms {
        let (d, e) = (_mm512_sub_epi16(u, self.c128), _mm512_sub_epi16(v, self.c128));
        ChromaTerms([product(e, self.rv), add(product(d, self.gu), product(e, self.gv)), product(d, self.bu)])
    }

    /// Converts `n` (1..=32) pixels whose Y are the 16-bit lanes of `y` and whose chroma terms are
    /// `terms`, and writes their `3n` RGB8 bytes at `out`: `to_rgb`'s i32 sums, added in another
    /// order.
    ///
    /// # Safety
    /// `out` must be valid for writing `3n` bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn store(&self, y: __m512i, terms: ChromaTerms, n: usize, out: *mut u8) {
        let c = add(product(y, self.ys), self.base);
        // The high halves are the shifted values; the signed → unsigned saturating packs clamp them
        // to 0..=255.
        let [r, g, b] = terms.0.map(|t| add(c, t).high);
        let (rg, bb) = (_mm512_packus_epi16(r, g), _mm512_packus_epi16(b, b));
        let bytes = 3 * n;
        // SAFETY: the masks select the first 3n bytes from `out` (the caller's guarantee).
        unsafe {
            _mm512_mask_storeu_epi8(out as *mut i8, low_bits(bytes), _mm512_permutex2var_epi8(rg, self.interleave[0], bb));
            if bytes > 64 {
                _mm512_mask_storeu_epi8(out.wrapping_add(64) as *mut i8, low_bits(bytes - 64), _mm512_permutex2var_epi8(rg, self.interleave[1], bb));
            }
        }
    }
}

/// Converts pixels `x..x1` of a row (`x` even), 32 at a time and the rest in one masked block,
/// writing RGB8 at `dst[3·(x − x0)..]`; returns the first pixel not converted (`x1`, or earlier
/// where a block's loads would pass the end of `luma` or `chroma`; the caller does the rest).
/// `luma` is the row's Y, `chroma` its chroma row. The contract of
/// [`super::pixel_avx2::yuv420_row`]. (The frame path takes rows in pairs: [`yuv420_rows`].)
#[cfg(test)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2")]
pub(super) fn yuv420_row(luma: &[u8], chroma: &Chroma, color: &ColorSpec, x0: usize, x: usize, x1: usize, dst: &mut [u8]) -> usize {
    yuv420_rows(&[luma], chroma, color, x0, x, x1, dst)
}

/// [`yuv420_row`] for one or two luma rows (`lumas`) that share one chroma row: each block's
/// chroma terms are computed once for both. Row `r`'s RGB8 goes to
/// `dst[r·3·(x1 − x0) + 3·(x − x0)..]`; the returned pixel is where every row stopped.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2")]
pub(super) fn yuv420_rows(lumas: &[&[u8]], chroma: &Chroma, color: &ColorSpec, x0: usize, mut x: usize, x1: usize, dst: &mut [u8]) -> usize {
    debug_assert!(x.is_multiple_of(2) && x >= x0);
    let stride = 3 * (x1 - x0);
    assert!(matches!(lumas.len(), 1 | 2) && dst.len() >= lumas.len() * stride, "yuv420_rows: one or two rows, and room for them");
    let conv = Converter::new(color);
    // Chroma sample i of 16 (interleaved U V or planar) to pixels 2i and 2i + 1.
    let [even, odd, dup] = {
        let (mut e, mut o, mut d) = ([0i16; 32], [0i16; 32], [0i16; 32]);
        for p in 0..32 {
            (e[p], o[p], d[p]) = ((p & !1) as i16, (p | 1) as i16, (p / 2) as i16);
        }
        // SAFETY: 64-byte arrays, the size of one load.
        [e, o, d].map(|v| unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) })
    };
    let luma_len = lumas.iter().map(|l| l.len()).min().unwrap_or(0);
    while x < x1 {
        let n = (x1 - x).min(32);
        if x + n > luma_len {
            break;
        }
        // Chroma bytes of pixels x..x + n: n rounded up to even (NV12 pairs), or half of it per
        // plane (I420).
        let (u, v) = match chroma {
            Chroma::Interleaved(c) if x + n.next_multiple_of(2) <= c.len() => {
                let m = low_bits(n.next_multiple_of(2)) as u32;
                // SAFETY: the mask selects bytes x..x + ⌈n⌉₂ of `c` (checked just above).
                let uv = _mm512_cvtepu8_epi16(unsafe { _mm256_maskz_loadu_epi8(m, c.as_ptr().add(x) as *const i8) });
                (_mm512_permutexvar_epi16(even, uv), _mm512_permutexvar_epi16(odd, uv))
            }
            Chroma::Planar(u, v) if x / 2 + n.div_ceil(2) <= u.len() && x / 2 + n.div_ceil(2) <= v.len() => {
                let m = low_bits(n.div_ceil(2)) as u16;
                // SAFETY: the mask selects bytes x/2..x/2 + ⌈n/2⌉ of each plane (checked above).
                let (a, b) = unsafe { (_mm_maskz_loadu_epi8(m, u.as_ptr().add(x / 2) as *const i8), _mm_maskz_loadu_epi8(m, v.as_ptr().add(x / 2) as *const i8)) };
                (_mm512_permutexvar_epi16(dup, _mm512_cvtepu8_epi16(_mm256_castsi128_si256(a))), _mm512_permutexvar_epi16(dup, _mm512_cvtepu8_epi16(_mm256_castsi128_si256(b))))
            }
            _ => break,
        };
        let terms = conv.chroma(u, v);
        for (r, luma) in lumas.iter().enumerate() {
            // SAFETY: the mask selects bytes x..x + n of `luma` (x + n <= luma_len, checked
            // above); `dst` holds 3(x1 − x0) bytes per row (asserted above) and x + n <= x1.
            unsafe {
                let y = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(low_bits(n) as u32, luma.as_ptr().add(x) as *const i8));
                conv.store(y, terms, n, dst.as_mut_ptr().add(r * stride + 3 * (x - x0)));
            }
        }
        x += n;
    }
    x
}

/// Converts pixels `x..x1` (`x` even) of a packed 4:2:2 row (`row`: two pixels per four bytes,
/// Y of the even pixel at byte `order[0]`, U at `order[1]`, V at `order[2]`, Y of the odd one two
/// bytes after the even's: YUYV `[0, 1, 3]`, UYVY `[1, 0, 2]`), 32 at a time and the rest in one
/// masked block, writing RGB8 at `dst[3·(x − x0)..]`; returns `x1`, or the first pixel not
/// converted where a block's load would pass the end of `row`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2")]
pub(super) fn yuv422_row(row: &[u8], order: [usize; 3], color: &ColorSpec, x0: usize, mut x: usize, x1: usize, dst: &mut [u8]) -> usize {
    debug_assert!(x.is_multiple_of(2) && x >= x0);
    assert!(dst.len() >= 3 * (x1 - x0) && order.iter().all(|&o| o < 4), "yuv422_row: output too short or bad byte order");
    let conv = Converter::new(color);
    // Byte p of each index: where pixel p's Y, U or V sits in the block's 64 bytes.
    let [yi, ui, vi] = {
        let mut idx = [[0u8; 64]; 3];
        for (c, idx) in idx.iter_mut().enumerate() {
            for (p, i) in idx[..32].iter_mut().enumerate() {
                // Y: byte 2p (+ its offset); U, V: the pair's byte 4·⌊p/2⌋ (+ theirs).
                *i = (if c == 0 { 2 * p } else { 4 * (p / 2) } + order[c]) as u8;
            }
        }
        // SAFETY: 64-byte arrays, the size of one load.
        idx.map(|v| unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) })
    };
    while x < x1 {
        let n = (x1 - x).min(32);
        let (at, bytes) = (2 * x, 2 * n.next_multiple_of(2));
        if at + bytes > row.len() {
            break;
        }
        let m = low_bits(bytes);
        // SAFETY: the mask selects bytes 2x..2x + 2⌈n⌉₂ of `row` (checked just above).
        let block = unsafe { _mm512_maskz_loadu_epi8(m, row.as_ptr().add(at) as *const i8) };
        let [y, u, v] = [yi, ui, vi].map(|i| _mm512_cvtepu8_epi16(_mm512_castsi512_si256(_mm512_permutexvar_epi8(i, block))));
        // SAFETY: `dst` holds 3(x1 − x0) bytes (asserted above) and x + n <= x1.
        unsafe { conv.store(y, conv.chroma(u, v), n, dst.as_mut_ptr().add(3 * (x - x0))) };
        x += n;
    }
    x
}
