//! AVX-512 versions of the two resampling passes of [`super::resize`] and of the normalization's
//! table lookups, bit-identical with the portable bodies and the AVX2 passes (Pillow's i32
//! wrapping arithmetic; integer sums do not depend on their order): the portable vertical body
//! and 16 transposed rows at once (F, BW); with VNNI, u8 × i8 dot products on the weights' signed
//! 8-bit digits for the vertical pass, and with VBMI too, for the horizontal pass on bytes gathered in
//! place; with VBMI, the lookups as gathers.

use std::arch::x86_64::*;

use super::resize::{Coeffs, NormalizeArithmetic, HALF, PRECISION_BITS};
use super::resize_avx2::transpose8x8;

/// The lowest `min(n, 64)` bits set: the mask of a masked load or store of the first `n` bytes
/// (or elements) of a register.
pub(crate) fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// Σ `digits[d]` · 2^(8d) (see [`DIGIT_BITS`]): the i32 sum the three digit sums stand for, in
/// Pillow's wrapping arithmetic.
#[target_feature(enable = "avx512f")]
fn combine_digits(digits: [__m512i; DIGITS]) -> __m512i {
    let high = _mm512_add_epi32(_mm512_slli_epi32::<{ DIGIT_BITS }>(digits[2]), digits[1]);
    _mm512_add_epi32(_mm512_slli_epi32::<{ DIGIT_BITS }>(high), digits[0])
}

/// Whether this CPU has what the passes below use (AVX-512 F and BW; both imply AVX2).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
}

/// The vertical pass: the portable body, compiled with AVX-512 (it vectorizes to `vpmulld` over
/// 16 × i32 lanes by itself).
#[target_feature(enable = "avx512f,avx512bw,avx2")]
pub(super) fn resample_rows(c: &Coeffs, src: &[u8], y0: usize, row_len: usize, dst: &mut [u8], outs: std::ops::Range<usize>) {
    super::resize::resample_rows_body(c, src, y0, row_len, dst, outs)
}

/// Rows the batched horizontal pass below takes at once.
pub(super) const BATCH: usize = 16;

/// Bytes of scratch [`resample_rgb_rows16`] needs for rows of `span` source bytes and `out` output
/// pixels: the transposed source and the transposed output.
pub(super) fn rows16_scratch_len(span: usize, out: usize) -> usize {
    BATCH * span + BATCH * out * 3
}

/// The horizontal pass over 16 packed-RGB rows at once, vectorized across the rows: the layout of
/// [`super::resize_avx2::resample_rgb_rows8`] with 16 rows, so that one 16-byte load holds the same
/// byte column of all 16 rows and each tap of each channel is one multiply of 16 × i32 lanes by
/// the tap's weight. Row `r` of the source starts at `src[r · src_stride]` (the bytes from column
/// `x0` on, `src_stride` of them); row `r` of the output goes to
/// `dst[r · dst_stride..][..3 · bounds.len()]`. `scratch` holds at least
/// [`rows16_scratch_len`]`(src_stride, bounds.len())` bytes. Bit-identical with
/// [`super::resize_avx2::resample_rgb_row`] on each row (the same i32 sums).
#[target_feature(enable = "avx512f,avx512bw,avx2")]
pub(super) fn resample_rgb_rows16(c: &Coeffs, src: &[u8], src_stride: usize, x0: usize, dst: &mut [u8], dst_stride: usize, scratch: &mut [u8]) {
    let (span, out) = (src_stride, c.bounds.len() * 3);
    assert!(src.len() >= BATCH * span && dst.len() >= (BATCH - 1) * dst_stride + out && dst_stride >= out, "resample_rgb_rows16: buffers too short");
    assert!(scratch.len() >= rows16_scratch_len(span, c.bounds.len()), "resample_rgb_rows16: scratch too short");
    assert!(c.bounds.iter().all(|&(xmin, n)| xmin >= x0 && (xmin - x0 + n) * 3 <= span), "resample_rgb_rows16: taps outside the rows");
    let (t, o) = scratch.split_at_mut(BATCH * span);
    // Source → t: byte column j of row r at t[16j + r]. Each 8 × 8 block of rows 0–7 and the one
    // of rows 8–15 below it give two 16-byte columns per unpack.
    let blocks = span / 8;
    for blk in 0..blocks {
        // SAFETY: rows 0..16 hold `span` bytes each at stride `span` (asserted above) and
        // 8·blk + 8 <= span; the 128 bytes stored from t[128·blk] lie within t (16·span bytes).
        unsafe {
            let top = transpose8x8(src.as_ptr().add(8 * blk), span);
            let bottom = transpose8x8(src.as_ptr().add(8 * span + 8 * blk), span);
            for i in 0..4 {
                let at = t.as_mut_ptr().add(128 * blk + 32 * i);
                _mm_storeu_si128(at as *mut __m128i, _mm_unpacklo_epi64(top[i], bottom[i]));
                _mm_storeu_si128(at.add(16) as *mut __m128i, _mm_unpackhi_epi64(top[i], bottom[i]));
            }
        }
    }
    for j in 8 * blocks..span {
        for r in 0..BATCH {
            t[BATCH * j + r] = src[r * span + j];
        }
    }
    // Taps → o: output byte column j (pixel j / 3, channel j % 3) of row r at o[16j + r].
    let (half, zero) = (_mm512_set1_epi32(HALF), _mm512_setzero_si512());
    for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
        let k = &c.weights[xx * c.ksize..xx * c.ksize + n];
        let base = (xmin - x0) * 3 * BATCH;
        let mut acc = [half; 3];
        for (tap, &w) in k.iter().enumerate() {
            let w = _mm512_set1_epi32(w);
            for (ch, a) in acc.iter_mut().enumerate() {
                // SAFETY: tap `tap` of pixel `xx` reads source pixel xmin + tap, whose byte column
                // (xmin − x0 + tap)·3 + ch < span (asserted above) sits at t[16j..16j + 16].
                let bytes = unsafe { _mm_loadu_si128(t.as_ptr().add(base + 48 * tap + 16 * ch) as *const __m128i) };
                *a = _mm512_add_epi32(*a, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(bytes), w));
            }
        }
        for (ch, a) in acc.iter().enumerate() {
            // clip8: shift, then clamp to 0..=255 (negative → 0, then unsigned saturation).
            let bytes = _mm512_cvtusepi32_epi8(_mm512_max_epi32(_mm512_srai_epi32::<{ PRECISION_BITS }>(*a), zero));
            // SAFETY: o holds 16·out bytes and 16·(3·xx + ch) + 16 <= 16·out.
            unsafe { _mm_storeu_si128(o.as_mut_ptr().add(BATCH * (3 * xx + ch)) as *mut __m128i, bytes) };
        }
    }
    // o → the 16 output rows, by 8 × 8 blocks (rows 0–7, then 8–15).
    let blocks = out / 8;
    for blk in 0..blocks {
        for h in 0..2 {
            // SAFETY: o[128·blk + 8h..][..8 + 7·16] is within its 16·out bytes (8·blk + 8 <=
            // out); row 8h + r's 8 bytes at dst[(8h + r)·dst_stride + 8·blk..][..8] lie within dst
            // (asserted above).
            unsafe {
                let rows = transpose8x8(o.as_ptr().add(128 * blk + 8 * h), BATCH);
                for (i, v) in rows.iter().enumerate() {
                    let d = dst.as_mut_ptr().add((8 * h + 2 * i) * dst_stride + 8 * blk);
                    _mm_storel_epi64(d as *mut __m128i, *v);
                    _mm_storel_epi64(d.add(dst_stride) as *mut __m128i, _mm_unpackhi_epi64(*v, *v));
                }
            }
        }
    }
    for j in 8 * blocks..out {
        for r in 0..BATCH {
            dst[r * dst_stride + j] = o[BATCH * j + r];
        }
    }
}

/// Whether this CPU has what [`resample_rgb_row_gather`] uses: byte permutes across two registers
/// (AVX-512 VBMI) and u8 × i8 dot products (AVX-512 VNNI), on top of [`available`].
pub(super) fn gather_available() -> bool {
    available() && std::arch::is_x86_feature_detected!("avx512vbmi") && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Output pixels one block of [`resample_rgb_row_gather`] computes (one i32 lane each).
const LANES: usize = 16;
/// Source bytes one block reads: two registers, the table of one `vpermi2b`.
const WINDOW: usize = 128;
/// Bits per weight digit: each i32 weight is three balanced digits `d0 + d1·2^8 + d2·2^16`, each
/// in −128..=127, so that every digit is a valid i8 for `vpdpbusd` (whose u8 × i8 products are
/// exact and whose sums of four are i32, without saturation). Pillow's weights are below 2^23 in
/// magnitude (a filter value of at most about 1, times 2^22), which three digits hold.
const DIGIT_BITS: u32 = 8;
/// Digits per weight (see [`DIGIT_BITS`]).
const DIGITS: usize = 3;

/// One block of output pixels of [`GatherTable`].
#[derive(Clone, Copy, Debug)]
struct Block {
    /// First output pixel (index into [`Coeffs::bounds`]) and how many (1..=16).
    first: usize,
    count: usize,
    /// Source pixel the block's window starts at (its first pixel's `xmin`).
    xmin: usize,
    /// Groups of four taps (the most any pixel of the block has, rounded up).
    groups: usize,
    /// Offset of the block's first group in [`GatherTable::groups`].
    at: usize,
}

/// [`Coeffs`] rearranged for [`resample_rgb_row_gather`]: per block of up to 16 output pixels whose
/// taps lie within 128 source bytes, per group of four taps, the `vpermi2b` indices that put tap
/// `4g + k` of pixel `i`'s channel `c` into byte `k` of lane `i`, and the weights' three digits in
/// the same places (zero for taps a pixel does not have).
#[derive(Clone, Debug, Default)]
pub(crate) struct GatherTable {
    blocks: Vec<Block>,
    /// Output pixels the blocks cover (`Coeffs::bounds.len()` of the taps it was made from).
    pixels: usize,
    /// The source pixels the taps read: `first..end`.
    first: usize,
    end: usize,
    /// Per group: three index vectors (R, G, B) then three digit vectors, 64 bytes each.
    groups: Vec<[u8; 64]>,
}

/// Vectors per group in [`GatherTable::groups`].
const PER_GROUP: usize = 3 + DIGITS;

impl GatherTable {
    /// The table for `c`, or `None` where a pixel's taps do not fit one window or a weight does
    /// not fit three digits (the batched passes run instead).
    pub(super) fn new(c: &Coeffs) -> Option<GatherTable> {
        let window_px = WINDOW / 3;
        let mut table = GatherTable::default();
        let mut first = 0;
        while first < c.bounds.len() {
            let xmin = c.bounds[first].0;
            // The longest run of pixels from `first` whose taps all lie in the window.
            let mut count = 0;
            while count < LANES && first + count < c.bounds.len() {
                let (x, n) = c.bounds[first + count];
                if x < xmin || x + n - xmin > window_px {
                    break;
                }
                count += 1;
            }
            if count == 0 {
                return None;
            }
            let groups = c.bounds[first..first + count].iter().map(|&(_, n)| n).max().unwrap_or(0).div_ceil(4).max(1);
            let at = table.groups.len();
            table.groups.resize(at + groups * PER_GROUP, [0; 64]);
            for (i, &(x, n)) in c.bounds[first..first + count].iter().enumerate() {
                for t in 0..n {
                    let d = digits(c.weights[(first + i) * c.ksize + t])?;
                    let (g, byte) = (t / 4, 4 * i + t % 4);
                    let vectors = &mut table.groups[at + g * PER_GROUP..at + (g + 1) * PER_GROUP];
                    for (ch, index) in vectors[..3].iter_mut().enumerate() {
                        index[byte] = (3 * (x + t - xmin) + ch) as u8;
                    }
                    for (digits, digit) in vectors[3..].iter_mut().zip(d) {
                        digits[byte] = digit as u8;
                    }
                }
            }
            table.blocks.push(Block { first, count, xmin, groups, at });
            first += count;
        }
        table.pixels = c.bounds.len();
        table.first = c.bounds.iter().map(|&(x, _)| x).min().unwrap_or(0);
        table.end = c.bounds.iter().map(|&(x, n)| x + n).max().unwrap_or(0);
        Some(table)
    }
}

/// The horizontal pass over one packed-RGB row without moving the row: per block of up to 16
/// output pixels, the block's 128 source bytes sit in two registers, one `vpermi2b` per channel and
/// group of four taps puts each pixel's four tap bytes into its i32 lane, and three `vpdpbusd`
/// multiply them by the three signed 8-bit digits of the taps' weights (so that u8 × i8 products are
/// exact). The digit sums, shifted into place, are Pillow's i32 sum (wrapping, like it), so the
/// bytes equal [`super::resize_avx2::resample_rgb_row`]'s. `src` holds the row from source column
/// `x0` on; writes one RGB8 pixel per output pixel of `c` to `dst`.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,avx2")]
pub(super) fn resample_rgb_row_gather(c: &Coeffs, table: &GatherTable, src: &[u8], x0: usize, dst: &mut [u8]) {
    assert!(table.pixels == c.bounds.len() && dst.len() >= 3 * table.pixels, "resample_rgb_row_gather: table of other taps, or output too short");
    // The table's span of source pixels, computed from `c` when it was made, stands for every tap.
    assert!(table.first >= x0 && (table.end - x0) * 3 <= src.len(), "resample_rgb_row_gather: taps outside the row");
    let (half, zero) = (_mm512_set1_epi32(HALF), _mm512_setzero_si512());
    // Output byte j of a block takes pixel p = j / 3 of channel j % 3 from the packed sums: per
    // 128-bit lane L, R of pixels 4L..4L + 4, then G, then B (twice).
    let interleave: [u8; 64] = std::array::from_fn(|j| if j < 48 { (16 * (j / 3 / 4) + 4 * (j % 3) + j / 3 % 4) as u8 } else { 0 });
    // SAFETY: a 64-byte array, the size of one load.
    let interleave = unsafe { _mm512_loadu_si512(interleave.as_ptr() as *const __m512i) };
    // SAFETY: every vector of the table is 64 bytes, the size of one load.
    let load = |v: &[u8; 64]| unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) };
    for b in &table.blocks {
        // The window: up to 128 bytes from the block's first tap, zeros past the row's end.
        let start = 3 * (b.xmin - x0);
        let left = src.len() - start;
        // SAFETY: a masked load reads only the bytes its mask selects, here those below
        // src.len(); masked-off bytes neither fault nor are read.
        let (lo, hi) = unsafe {
            let p = src.as_ptr().add(start) as *const i8;
            (_mm512_maskz_loadu_epi8(low_bits(left), p), _mm512_maskz_loadu_epi8(low_bits(left.saturating_sub(64)), p.wrapping_add(64)))
        };
        // Per channel, the three digit sums; the lowest starts at HALF (Pillow's rounding).
        let mut acc = [[half, zero, zero]; 3];
        for g in 0..b.groups {
            let vectors = &table.groups[b.at + g * PER_GROUP..b.at + (g + 1) * PER_GROUP];
            let digits: [__m512i; DIGITS] = std::array::from_fn(|d| load(&vectors[3 + d]));
            for (ch, acc) in acc.iter_mut().enumerate() {
                let bytes = _mm512_permutex2var_epi8(lo, load(&vectors[ch]), hi);
                for (a, d) in acc.iter_mut().zip(digits) {
                    *a = _mm512_dpbusd_epi32(*a, bytes, d);
                }
            }
        }
        // Σ digit sums · 2^(7d) (+ HALF, in the lowest): Pillow's sum, in the same wrapping i32
        // arithmetic; then clip8: shift, then clamp to 0..=255 by the two saturating packs.
        let [r, g, b3] = acc.map(|a| _mm512_srai_epi32::<{ PRECISION_BITS }>(combine_digits(a)));
        let planes = _mm512_packus_epi16(_mm512_packs_epi32(r, g), _mm512_packs_epi32(b3, b3));
        let bytes = 3 * b.count;
        // SAFETY: the mask selects bytes 3·first..3·(first + count) of `dst`, which holds 3 bytes
        // per output pixel (asserted above).
        unsafe { _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(3 * b.first) as *mut i8, low_bits(bytes), _mm512_permutexvar_epi8(interleave, planes)) };
    }
}

/// Whether this CPU has what [`resample_rows_vnni`] uses: u8 × i8 dot products (AVX-512 VNNI) on
/// top of [`available`].
pub(super) fn vnni_available() -> bool {
    available() && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// The three balanced digits of a weight (see [`DIGIT_BITS`]), lowest first, or `None` if it does
/// not fit them (|w| beyond about 2^23).
fn digits(w: i32) -> Option<[i8; DIGITS]> {
    // Each digit is the low byte read as signed; what is left is a multiple of 256 (in i64, so
    // that no weight overflows on the way).
    let w = w as i64;
    let d0 = w as i8;
    let rest = (w - d0 as i64) >> DIGIT_BITS;
    let d1 = rest as i8;
    let d2 = i8::try_from((rest - d1 as i64) >> DIGIT_BITS).ok()?;
    Some([d0, d1, d2])
}

/// Most taps per output row [`resample_rows_vnni`] takes (a multiple of 4).
const MAX_VERTICAL_TAPS: usize = 64;

/// Whether [`resample_rows_vnni`] can take `c`: every weight fits three digits and no output row
/// has more than [`MAX_VERTICAL_TAPS`] taps.
pub(super) fn vnni_takes(c: &Coeffs) -> bool {
    c.bounds.iter().enumerate().all(|(i, &(_, n))| n <= MAX_VERTICAL_TAPS && c.weights[i * c.ksize..i * c.ksize + n].iter().all(|&w| digits(w).is_some()))
}

/// The vertical pass with u8 × i8 dot products: per output row, per group of four taps, the four
/// source rows' bytes are interleaved so that each i32 lane holds one column of all four, and three
/// `vpdpbusd` multiply them by the three signed 8-bit digits of the taps' weights (u8 × i8 products
/// are exact); the digit sums, shifted into place, are Pillow's i32 sum (wrapping, like it). The
/// contract and the bytes of [`resample_rows`]; `c` must be one it takes
/// ([`vnni_takes`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
pub(super) fn resample_rows_vnni(c: &Coeffs, src: &[u8], y0: usize, row_len: usize, dst: &mut [u8], outs: std::ops::Range<usize>) {
    let (half, zero) = (_mm512_set1_epi32(HALF), _mm512_setzero_si512());
    for (i, yy) in outs.enumerate() {
        let (ymin, n) = c.bounds[yy];
        assert!(ymin >= y0 && (ymin - y0 + n) * row_len <= src.len() && (i + 1) * row_len <= dst.len(), "resample_rows_vnni: rows outside the buffers");
        assert!(n <= MAX_VERTICAL_TAPS, "resample_rows_vnni: more than {MAX_VERTICAL_TAPS} taps");
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        // Per group of four taps: the digits of the four weights as one i32 per digit (byte t =
        // tap 4g + t; zero past `n`), and the offset of each tap's row in `src` (the last row
        // again past `n`).
        let groups = n.div_ceil(4);
        let mut words = [[0i32; DIGITS]; MAX_VERTICAL_TAPS / 4];
        let mut offsets = [0usize; MAX_VERTICAL_TAPS];
        for t in 0..4 * groups {
            let d = digits(if t < n { k[t] } else { 0 }).expect("weights checked by vnni_takes");
            for (word, digit) in words[t / 4].iter_mut().zip(d) {
                *word |= ((digit as u8) as i32) << (8 * (t % 4));
            }
            offsets[t] = (ymin - y0 + t.min(n - 1)) * row_len;
        }
        let mut x = 0;
        while x < row_len {
            let m = low_bits(row_len - x);
            // Per group of columns, the three digit sums; the lowest starts at HALF (Pillow's
            // rounding).
            let mut acc = [[half, zero, zero]; 4];
            for (g, digit_words) in words[..groups].iter().enumerate() {
                let mut rows = [zero; 4];
                for (t, row) in rows.iter_mut().enumerate() {
                    // SAFETY: the mask selects the bytes x..min(x + 64, row_len) of a source row
                    // that lies within `src` (asserted above); masked-off bytes are not read.
                    *row = unsafe { _mm512_maskz_loadu_epi8(m, src.as_ptr().add(offsets[4 * g + t] + x) as *const i8) };
                }
                // Per 128-bit lane: i32 lane j of q[0..4] holds column 4·q + j of the four rows.
                let (a, b) = (_mm512_unpacklo_epi8(rows[0], rows[1]), _mm512_unpackhi_epi8(rows[0], rows[1]));
                let (cc, d) = (_mm512_unpacklo_epi8(rows[2], rows[3]), _mm512_unpackhi_epi8(rows[2], rows[3]));
                let q = [_mm512_unpacklo_epi16(a, cc), _mm512_unpackhi_epi16(a, cc), _mm512_unpacklo_epi16(b, d), _mm512_unpackhi_epi16(b, d)];
                let w = digit_words.map(|d| _mm512_set1_epi32(d));
                for (acc, q) in acc.iter_mut().zip(q) {
                    for (a, w) in acc.iter_mut().zip(w) {
                        *a = _mm512_dpbusd_epi32(*a, q, w);
                    }
                }
            }
            // The sums, then the shift; the saturating packs undo the interleave's column order
            // and clamp to 0..=255 (clip8).
            let shifted = acc.map(|a| _mm512_srai_epi32::<{ PRECISION_BITS }>(combine_digits(a)));
            let bytes = _mm512_packus_epi16(_mm512_packs_epi32(shifted[0], shifted[1]), _mm512_packs_epi32(shifted[2], shifted[3]));
            // SAFETY: the mask selects the bytes x..min(x + 64, row_len) of output row i, within
            // `dst` (asserted above).
            unsafe { _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(i * row_len + x) as *mut i8, m, bytes) };
            x += 64;
        }
    }
}

/// Whether this CPU has what [`normalize_rows`] uses (AVX-512 F, BW, VBMI).
pub(super) fn normalize_available() -> bool {
    available() && std::arch::is_x86_feature_detected!("avx512vbmi")
}

/// The normalization of [`super::resize::Normalizer`] for the interleaved RGB8 pixels `px` into
/// the planes `r`, `g`, `b` (one value per pixel each): per 16 pixels, one `vpermb` per channel
/// picks its 16 bytes; then `arithmetic`'s fused multiply-adds compute their values where it is
/// given (the caller has checked that they equal the table), else one gather reads their 16 table
/// entries.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(super) fn normalize_rows(px: &[u8], tables: &[[f32; 256]; 3], arithmetic: Option<&NormalizeArithmetic>, mut planes: [&mut [f32]; 3]) {
    let n = px.len() / 3;
    assert!(planes.iter().all(|p| p.len() >= n), "normalize_rows: planes too short");
    // Byte i of index c: where pixel i's channel c sits in the block's 48 bytes.
    let picks: [__m512i; 3] = std::array::from_fn(|c| {
        let idx: [u8; 64] = std::array::from_fn(|i| if i < 16 { (3 * i + c) as u8 } else { 0 });
        // SAFETY: a 64-byte array, the size of one load.
        unsafe { _mm512_loadu_si512(idx.as_ptr() as *const __m512i) }
    });
    // `a / d` as NormalizeArithmetic::quotient computes it, from r = f32(1/d).
    let quotient = |a: __m512, d: __m512, r: __m512| {
        let q = _mm512_mul_ps(a, r);
        _mm512_fmadd_ps(_mm512_fnmadd_ps(q, d, a), r, q)
    };
    let (c255, unit) = (_mm512_set1_ps(255.0), _mm512_set1_ps(arithmetic.map_or(0.0, |a| a.unit)));
    let per_channel = |f: fn(&NormalizeArithmetic) -> [f32; 3]| arithmetic.map_or([_mm512_setzero_ps(); 3], |a| f(a).map(|v| _mm512_set1_ps(v)));
    let (mean, std, std_recip) = (per_channel(|a| a.mean), per_channel(|a| a.std), per_channel(|a| a.std_recip));
    let mut i = 0;
    while i < n {
        let count = (n - i).min(16);
        let bytes = 3 * count;
        // SAFETY: the mask selects bytes 3i..3i + 3·count of `px` (count <= n − i).
        let block = unsafe { _mm512_maskz_loadu_epi8(low_bits(bytes), px.as_ptr().add(3 * i) as *const i8) };
        for (c, plane) in planes.iter_mut().enumerate() {
            let index = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(_mm512_permutexvar_epi8(picks[c], block)));
            let values = match arithmetic {
                Some(a) => {
                    let x = _mm512_cvtepi32_ps(index);
                    let scaled = if a.divide { quotient(x, c255, unit) } else { _mm512_mul_ps(x, unit) };
                    quotient(_mm512_sub_ps(scaled, mean[c]), std[c], std_recip[c])
                }
                // SAFETY: every index is a byte (0..=255), within the 256-entry table.
                None => unsafe { _mm512_i32gather_ps::<4>(index, tables[c].as_ptr()) },
            };
            // SAFETY: the store mask selects values i..i + count of the plane (asserted above: n
            // values at least).
            unsafe { _mm512_mask_storeu_ps(plane.as_mut_ptr().add(i), low_bits(count) as u16, values) };
        }
        i += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_rebuild_every_weight_they_accept() {
        // Pillow's weights: at most about 2^22 in magnitude (a filter value of 1 when upscaling).
        let edges = [0, 1, -1, 127, 128, -128, -129, 255, 256, 1 << 22, -(1 << 22), (1 << 22) + 12345, 8_355_711, -8_421_504];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let random = (0..100_000).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 16_744_320) as i32 - (1 << 23) // −2^23..=8_355_711
        });
        for w in edges.into_iter().chain(random) {
            let d = digits(w).unwrap_or_else(|| panic!("{w} should fit three digits"));
            assert_eq!(d[0] as i32 + ((d[1] as i32) << DIGIT_BITS) + ((d[2] as i32) << (2 * DIGIT_BITS)), w, "digits of {w}: {d:?}");
        }
        for w in [8_355_712, -8_421_505, i32::MAX, i32::MIN] {
            assert_eq!(digits(w), None, "{w} does not fit three digits");
        }
    }
}
