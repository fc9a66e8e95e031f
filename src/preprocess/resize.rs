//! Pillow's `Image.resize` resampling (the separable, antialiased, 8-bit fixed-point convolution of
//! Pillow's `Resample.c`), torchvision's `Resize(int)` size rule and `CenterCrop` offsets, so that
//! the network sees the same uint8 pixels timm's evaluation transform produces.

use std::ops::Range;

use super::parallel::{first_row, task_count, Parts, Serial, Workers};
use super::{Interpolation, PreprocessConfig, PreprocessError, Resize, Scaling};

/// Fixed-point precision of Pillow's 8-bit resampling coefficients.
pub(super) const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Largest accepted image side (source and resized).
pub(crate) const MAX_SIDE: usize = 1 << 15;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn hamming(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        1.0
    } else if x >= 1.0 {
        0.0
    } else {
        let x = x * std::f64::consts::PI;
        // Pillow writes the window as `0.54f + 0.46f * cos(x)`: float constants, double arithmetic.
        x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Per-output-pixel source window and fixed-point weights along one axis.
#[derive(Default)]
pub(crate) struct Coeffs {
    pub(crate) ksize: usize,
    /// `(first source index, tap count)` per output pixel.
    pub(crate) bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output pixel, scaled by `2^PRECISION_BITS`.
    pub(crate) weights: Vec<i32>,
    /// The same weights laid out for an 8 × i32 multiply of two RGB taps at once (the x86-64
    /// horizontal pass): per output pixel, `ksize.div_ceil(2)` groups of eight lanes
    /// `[w(2t) ×3, w(2t+1) ×3, 0, 0]`, matching the bytes `R G B R G B · ·` of taps `2t, 2t+1`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) pair_lanes: Vec<i32>,
    /// Whether the AVX-512 VNNI vertical pass can take these taps
    /// ([`super::resize_avx512::vnni_takes`]).
    #[cfg(target_arch = "x86_64")]
    pub(crate) vnni_vertical: bool,
}

impl Coeffs {
    /// Pillow's 8-bit vertical pass for the output rows `outs` (indices into `bounds`): `src` holds
    /// rows of `row_len` bytes starting at source row `y0`; writes one row of `row_len` bytes per
    /// output row of `outs` into `dst`.
    pub(crate) fn resample_rows(&self, src: &[u8], y0: usize, row_len: usize, dst: &mut [u8], outs: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        if self.vnni_vertical && super::resize_avx512::vnni_available() {
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked just above); the function is
            // safe Rust compiled with them, and takes these taps (`vnni_vertical`). Exercised by
            // `tests::compiled_passes_equal_the_reference`.
            return unsafe { super::resize_avx512::resample_rows_vnni(self, src, y0, row_len, dst, outs) };
        }
        #[cfg(target_arch = "x86_64")]
        if super::resize_avx512::available() {
            // SAFETY: the CPU has AVX-512 F and BW (checked just above); the function is safe Rust
            // compiled with them. Exercised by `tests::compiled_passes_equal_the_reference`.
            return unsafe { super::resize_avx512::resample_rows(self, src, y0, row_len, dst, outs) };
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above); the function is safe Rust compiled
            // with AVX2 enabled. Exercised by `tests::compiled_passes_equal_the_reference`.
            return unsafe { super::resize_avx2::resample_rows(self, src, y0, row_len, dst, outs) };
        }
        resample_rows_body(self, src, y0, row_len, dst, outs)
    }

    /// Pillow's 8-bit horizontal pass over one packed-RGB row: `src` holds the source row from
    /// column `x0` on (enough columns for every tap); writes one RGB8 pixel per output column to `dst`.
    pub(crate) fn resample_rgb_row(&self, src: &[u8], x0: usize, dst: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as in `resample_rows`.
            return unsafe { super::resize_avx2::resample_rgb_row(self, src, x0, dst) };
        }
        // SAFETY: NEON is part of every aarch64 CPU (a base feature of the target); the function is
        // safe Rust compiled with it. Exercised by `tests::compiled_passes_equal_the_reference`.
        #[cfg(target_arch = "aarch64")]
        return unsafe { super::resize_neon::resample_rgb_row(self, src, x0, dst) };
        #[cfg(not(target_arch = "aarch64"))]
        resample_rgb_row_body(self, src, x0, dst)
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size → out_size`, keeping only
    /// output pixels `first..first + count`.
    pub(crate) fn compute(&mut self, in_size: usize, out_size: usize, first: usize, count: usize, interp: Interpolation) {
        let (filter, support): (fn(f64) -> f64, f64) = match interp {
            Interpolation::Bicubic => (bicubic, 2.0),
            Interpolation::Bilinear => (triangle, 1.0),
            Interpolation::Box => (box_filter, 0.5),
            Interpolation::Hamming => (hamming, 1.0),
            Interpolation::Lanczos => (lanczos, 3.0),
            Interpolation::Nearest => return self.compute_nearest(in_size, out_size, first, count),
        };
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        self.ksize = ksize;
        self.bounds.clear();
        self.weights.clear();
        self.weights.resize(count * ksize, 0);
        let mut k = vec![0f64; ksize];
        for (i, xx) in (first..first + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C cast truncates toward 0
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = filter((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (x, kx) in k.iter().enumerate().take(n) {
                let v = if ww != 0.0 { kx / ww } else { *kx };
                let scaled = v * (1u64 << PRECISION_BITS) as f64;
                self.weights[i * ksize + x] = if v < 0.0 { (scaled - 0.5) as i32 } else { (scaled + 0.5) as i32 };
            }
            self.bounds.push((xmin, n));
        }
        self.fill_pair_lanes();
    }

    /// Builds [`Coeffs::pair_lanes`] from `weights` (zeros past each pixel's tap count), and
    /// where the x86-64 passes need it, [`Coeffs::vnni_vertical`].
    fn fill_pair_lanes(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            self.vnni_vertical = super::resize_avx512::vnni_takes(self);
        }
        let pairs = self.ksize.div_ceil(2);
        self.pair_lanes.clear();
        self.pair_lanes.resize(self.bounds.len() * pairs * 8, 0);
        for (xx, &(_, n)) in self.bounds.iter().enumerate() {
            let k = &self.weights[xx * self.ksize..xx * self.ksize + n];
            for (t, &w) in k.iter().enumerate() {
                let at = (xx * pairs + t / 2) * 8 + (t % 2) * 3;
                self.pair_lanes[at..at + 3].fill(w);
            }
        }
    }
}

impl Coeffs {
    /// Pillow's `NEAREST` resize (an affine scaling, not a convolution): output pixel `x` reads
    /// source `int(x0)` with `x0 = scale/2 + x·scale` accumulated in f64 as `ImagingScaleAffine`
    /// does. Stored as single taps of weight 1.0 so that the convolution passes copy exactly.
    fn compute_nearest(&mut self, in_size: usize, out_size: usize, first: usize, count: usize) {
        let scale = in_size as f64 / out_size as f64;
        self.ksize = 1;
        self.bounds.clear();
        self.weights.clear();
        let mut pos = scale * 0.5;
        for x in 0..first + count {
            if x >= first {
                let src = (pos as usize).min(in_size - 1);
                self.bounds.push((src, 1));
                self.weights.push(1 << PRECISION_BITS);
            }
            pos += scale;
        }
        self.fill_pair_lanes();
    }
}

/// Pillow's `clip8`: the accumulator's 8-bit value, saturated (`>= 1 << 30` → 255, `<= 0` → 0),
/// written as one shift and clamp so that it vectorizes.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The accumulator's starting value: one half, for rounding.
pub(super) const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Output bytes the vertical pass accumulates at once (a few registers of i32 lanes).
const BLOCK: usize = 64;

/// [`Coeffs::resample_rows`] body: per output row, blocks of [`BLOCK`] bytes accumulate tap after
/// tap in i32 lanes, in Pillow's i32 arithmetic (wrapping where C's `int` would overflow).
#[inline(always)]
pub(super) fn resample_rows_body(c: &Coeffs, src: &[u8], y0: usize, row_len: usize, dst: &mut [u8], outs: Range<usize>) {
    for (i, (yy, &(ymin, n))) in c.bounds.iter().enumerate().skip(outs.start).take(outs.len()).enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + n];
        let rows = &src[(ymin - y0) * row_len..(ymin - y0 + n) * row_len];
        let out = &mut dst[i * row_len..(i + 1) * row_len];
        for (b, out) in out.chunks_mut(BLOCK).enumerate() {
            let mut acc = [HALF; BLOCK];
            let acc = &mut acc[..out.len()];
            for (row, &w) in rows.chunks_exact(row_len).zip(k) {
                for (a, &p) in acc.iter_mut().zip(&row[b * BLOCK..b * BLOCK + out.len()]) {
                    *a = a.wrapping_add((p as i32).wrapping_mul(w));
                }
            }
            for (o, &a) in out.iter_mut().zip(acc.iter()) {
                *o = clip8(a);
            }
        }
    }
}

/// [`Coeffs::resample_rgb_row`] body: one output pixel after the other.
#[inline(always)]
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
fn resample_rgb_row_body(c: &Coeffs, src: &[u8], x0: usize, dst: &mut [u8]) {
    for ((xx, &(xmin, n)), d) in c.bounds.iter().enumerate().zip(dst.chunks_exact_mut(3)) {
        let base = (xmin - x0) * 3;
        d.copy_from_slice(&pixel_taps(&src[base..base + n * 3], &c.weights[xx * c.ksize..xx * c.ksize + n]));
    }
}

/// One output pixel of the horizontal pass: the taps' RGB pixels `px` (3 bytes each) weighted by
/// `k`, in Pillow's i32 arithmetic, clipped to RGB8.
#[inline(always)]
pub(super) fn pixel_taps(px: &[u8], k: &[i32]) -> [u8; 3] {
    let mut acc = [HALF; 3];
    for (p, &w) in px.chunks_exact(3).zip(k) {
        for (a, &v) in acc.iter_mut().zip(p) {
            *a = a.wrapping_add((v as i32).wrapping_mul(w));
        }
    }
    acc.map(clip8)
}

/// torchvision `Resize(size)` with an int: the shorter side becomes `size`, the longer
/// `int(size · long / short)`. Returns `(width, height)`.
pub fn resized_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    if width <= height {
        (size, (size as f64 * height as f64 / width as f64) as usize)
    } else {
        ((size as f64 * width as f64 / height as f64) as usize, size)
    }
}

/// Output `(width, height)` of a resize step for a `width × height` image: torchvision's
/// `_compute_resized_output_size` (Python's float arithmetic and `int()` truncation), or timm's
/// `ResizeKeepRatio` (`round()` half to even).
pub fn resize_output(resize: &Resize, width: usize, height: usize) -> (usize, usize) {
    let (w, h) = (width as f64, height as f64);
    match *resize {
        Resize::ShorterSide { size, max_size } => {
            let (short, long) = if width <= height { (width, height) } else { (height, width) };
            let (mut new_short, mut new_long) = (size, (size as f64 * long as f64 / short as f64) as usize);
            if let Some(m) = max_size {
                if new_long > m {
                    (new_short, new_long) = ((m as f64 * new_short as f64 / new_long as f64) as usize, m);
                }
            }
            if width <= height {
                (new_short, new_long)
            } else {
                (new_long, new_short)
            }
        }
        Resize::LongerSide { size } => {
            let (short, long) = if width <= height { (width, height) } else { (height, width) };
            let new_short = (size as f64 * short as f64 / long as f64) as usize;
            if width <= height {
                (new_short, size)
            } else {
                (size, new_short)
            }
        }
        Resize::Exact { height: th, width: tw } => (tw, th),
        Resize::KeepRatio { height: th, width: tw, longest } => {
            let (rh, rw) = (h / th as f64, w / tw as f64);
            let ratio = rh.max(rw) * longest + rh.min(rw) * (1.0 - longest);
            ((w * 1.0 / ratio).round_ties_even() as usize, (h * 1.0 / ratio).round_ties_even() as usize)
        }
    }
}

/// torchvision `CenterCrop` offsets `(left, top)`: `int(round((side − crop) / 2))` with Python's
/// round-half-to-even.
pub fn center_crop_offsets(width: usize, height: usize, crop: usize) -> (usize, usize) {
    let off = |side: usize| ((side - crop) as f64 / 2.0).round_ties_even() as usize;
    (off(width), off(height))
}

/// Offset of a centred window of `crop` pixels on a side of `side` pixels, as torchvision's
/// `center_crop` places it: negative when the crop is larger (the image is padded by
/// `(crop − side) // 2` before), else `round((side − crop) / 2)`.
fn crop_offset(side: usize, crop: usize) -> isize {
    if crop > side {
        -(((crop - side) / 2) as isize)
    } else {
        ((side - crop) as f64 / 2.0).round_ties_even() as isize
    }
}

/// One axis of a [`Plan`].
#[derive(Default)]
pub(crate) struct Axis {
    /// Whether this axis is resampled (the resized size differs from the source's).
    pub(crate) resample: bool,
    /// Filter taps of the output pixels `out0..out1` (when resampling).
    pub(crate) coeffs: Coeffs,
    /// Output pixels taken from the image; the others are padding.
    pub(crate) out0: usize,
    pub(crate) out1: usize,
    /// Source pixels those output pixels read.
    pub(crate) src0: usize,
    pub(crate) src1: usize,
}

impl Axis {
    /// `side` source pixels, resized to `resized`, then a centred window of `out` pixels.
    fn new(side: usize, resized: usize, out: usize, interp: Interpolation) -> Axis {
        let offset = crop_offset(resized, out);
        // Output pixels inside the resized image: o with 0 <= o + offset < resized.
        let out0 = (-offset).max(0) as usize;
        let out1 = (resized as isize - offset).clamp(0, out as isize) as usize;
        let mut a = Axis { resample: resized != side, out0, out1, ..Axis::default() };
        if out1 <= out0 {
            (a.out0, a.out1) = (0, 0);
            return a;
        }
        if a.resample {
            a.coeffs.compute(side, resized, (out0 as isize + offset) as usize, out1 - out0, interp);
            a.src0 = a.coeffs.bounds.iter().map(|&(s, _)| s).min().unwrap_or(0);
            a.src1 = a.coeffs.bounds.iter().map(|&(s, n)| s + n).max().unwrap_or(a.src0);
        } else {
            a.src0 = (out0 as isize + offset) as usize;
            a.src1 = (out1 as isize + offset) as usize;
        }
        a
    }
}

/// Everything the resize and crop steps need for one source size, computed once: per axis the
/// filter taps of the kept output pixels, the source span they read and where padding goes.
/// Shared by [`Preprocessor`] and the fused camera-frame path (`crate::stream`).
pub(crate) struct Plan {
    /// Output side (the network input).
    pub(crate) size: usize,
    pub(crate) horizontal: Axis,
    pub(crate) vertical: Axis,
    /// RGB of padding pixels.
    pub(crate) fill: [u8; 3],
    /// Pillow ≥ 13 runs the vertical pass first when the height shrinks by more than twice as many
    /// pixels as the width (`ImagingResampleInner`); the 8-bit rounding between the passes makes
    /// the order visible.
    vertical_first: bool,
    /// The horizontal taps rearranged for the AVX-512 VBMI + VNNI pass, where the CPU has it and
    /// the taps fit its windows (then rows go through it one at a time, not in batches).
    #[cfg(target_arch = "x86_64")]
    gather: Option<super::resize_avx512::GatherTable>,
}

/// Source rows [`Plan::run`] asks for at once where rows go through the horizontal pass one by one:
/// two, the luma rows of one 4:2:0 chroma row.
pub(crate) const SOURCE_RUN: usize = 2;

/// Rows a block's window of horizontally resampled rows holds beyond the most taps a crop row has
/// (see [`Plan::run`]): each fill then adds at least a 16-row batch.
const WINDOW_SLACK: usize = 32;

/// Source rows one block's buffer of the horizontal-first pass holds: the largest batch of
/// `batches` ([`Plan::horizontal_batch`]), and at least a run of [`SOURCE_RUN`].
fn buffer_rows(batches: &[usize]) -> usize {
    batches.first().copied().unwrap_or(1).max(SOURCE_RUN)
}

/// Crop rows the horizontal-first order of [`Plan::run`] makes at once per block for a normalized
/// output (in scratch, normalized right away).
const NORMALIZED_ROWS: usize = 8;

/// What [`Plan::run`] makes.
pub(crate) enum Output<'a> {
    /// The `size²` RGB8 crop, interleaved, padding included.
    Crop(&'a mut [u8]),
    /// That crop normalized into a `3 × size²` CHW buffer (the crop itself is not kept).
    Normalized(&'a Normalizer, &'a mut [f32]),
}

/// Reusable buffers of [`Plan::run`].
#[derive(Default)]
pub(crate) struct Scratch {
    src: Vec<u8>,
    temp: Vec<u8>,
    /// The batched horizontal pass's transposed rows, per block.
    batch: Vec<u8>,
    /// A few crop rows per block, normalized as soon as they are made (and one row of the fill
    /// colour for the padding).
    rows: Vec<u8>,
    /// The whole crop, for a normalized output in the orders that make it first.
    crop: Vec<u8>,
}

/// Row counts the horizontal pass can take at once, largest first: 16 where the CPU has AVX-512
/// ([`super::resize_avx512::resample_rgb_rows16`]), 8 where it has AVX2
/// ([`super::resize_avx2::resample_rgb_rows8`]); empty where rows go one at a time.
fn batch_rows() -> &'static [usize] {
    #[cfg(target_arch = "x86_64")]
    {
        if super::resize_avx512::available() {
            return &[super::resize_avx512::BATCH, super::resize_avx2::BATCH];
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return &[super::resize_avx2::BATCH];
        }
    }
    &[]
}

/// Scratch bytes of the batched horizontal passes over rows of `span` source bytes and `out` output
/// pixels (0 where there is no batched pass).
fn batch_scratch_len(span: usize, out: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    return super::resize_avx2::rows8_scratch_len(span, out).max(super::resize_avx512::rows16_scratch_len(span, out));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (span, out);
        0
    }
}

impl Plan {
    /// The plan of `cfg`'s steps for a `width × height` source.
    pub(crate) fn new(cfg: &PreprocessConfig, width: usize, height: usize) -> Result<Plan, PreprocessError> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(PreprocessError::BadImage(format!("{width}x{height} is not a usable image size (1..={MAX_SIDE} per side)")));
        }
        let steps = cfg.steps();
        let (rw, rh) = match &steps.resize {
            Some(r) => resize_output(r, width, height),
            None => (width, height),
        };
        if rw == 0 || rh == 0 || rw > MAX_SIDE || rh > MAX_SIDE {
            return Err(PreprocessError::BadImage(format!(
                "{width}x{height} resizes to {rw}x{rh} under {}, which is not a usable size",
                cfg.describe()
            )));
        }
        let s = cfg.input_size;
        let (ch, cw, fill) = match &steps.center_crop {
            Some(c) => (c.height, c.width, c.fill),
            None => (rh, rw, [0; 3]),
        };
        if (ch, cw) != (s, s) {
            return Err(PreprocessError::BadImage(format!("{width}x{height} becomes {cw}x{ch}, but the network takes {s}x{s}")));
        }
        let (horizontal, vertical) = (Axis::new(width, rw, s, cfg.interpolation), Axis::new(height, rh, s, cfg.interpolation));
        let vertical_first = horizontal.resample && vertical.resample && cfg.interpolation != Interpolation::Nearest && {
            let (dw, dh) = (width as i64 - rw as i64, height as i64 - rh as i64);
            dh > 0 && dh > 2 * dw
        };
        #[cfg(target_arch = "x86_64")]
        let gather = (horizontal.resample && horizontal.out1 > horizontal.out0 && super::resize_avx512::gather_available())
            .then(|| super::resize_avx512::GatherTable::new(&horizontal.coeffs))
            .flatten();
        Ok(Plan {
            size: s,
            horizontal,
            vertical,
            fill,
            vertical_first,
            #[cfg(target_arch = "x86_64")]
            gather,
        })
    }

    /// Buffers sized for [`Self::run`], so that running allocates nothing.
    pub(crate) fn scratch(&self) -> Scratch {
        let (rows, span, s) = (self.source_rows().len(), self.source_columns().len(), self.size);
        if self.vertical_first {
            Scratch { src: vec![0; rows * span * 3], temp: vec![0; (self.vertical.out1 - self.vertical.out0) * span * 3], crop: vec![0; s * s * 3], ..Scratch::default() }
        } else {
            // One block's buffers; `run` grows them for more blocks, once.
            let (batches, batch_scratch) = self.horizontal_batch();
            Scratch {
                src: vec![0; buffer_rows(batches) * span * 3],
                temp: vec![0; self.window_rows() * s * 3],
                batch: vec![0; batch_scratch],
                rows: vec![0; NORMALIZED_ROWS * s * 3],
                crop: Vec::new(),
            }
        }
    }

    /// Row counts the horizontal-first pass takes at once (largest first) and the scratch bytes one
    /// such batch needs: the batched passes where the CPU has them and the axis resamples some kept
    /// pixels, else `([], 0)` (one row at a time).
    fn horizontal_batch(&self) -> (&'static [usize], usize) {
        let h = &self.horizontal;
        #[cfg(target_arch = "x86_64")]
        if self.gather.is_some() {
            return (&[], 0);
        }
        match if h.resample && h.out1 > h.out0 { batch_rows() } else { &[] } {
            [] => (&[], 0),
            rows => (rows, batch_scratch_len(self.source_columns().len() * 3, h.out1 - h.out0)),
        }
    }

    /// Resizes and crops into `output`. `source_rows(y, n, dst)` writes the RGB8 pixels of the
    /// `n ≥ 1` source rows `y..y + n`, columns [`Self::source_columns`], into `dst` (`n` rows of
    /// `3 · source_columns().len()` bytes, one after the other). Each block of crop rows (running
    /// on `workers`) asks for the source rows it reads in increasing order; a row read by two
    /// blocks is asked for by both. Runs hold whole aligned groups of [`SOURCE_RUN`] rows wherever
    /// they can, so a 4:2:0 converter can share each chroma row between its two luma rows.
    pub(crate) fn run(&self, scratch: &mut Scratch, workers: &dyn Workers, source_rows: impl Fn(usize, usize, &mut [u8]) + Sync, output: Output<'_>) {
        let v = &self.vertical;
        if !self.vertical_first && v.out1 > v.out0 {
            self.run_window(scratch, workers, &source_rows, output);
            return;
        }
        // The whole crop first (where it is not the output, in the scratch), then its normalization.
        let (crop, normalize) = match output {
            Output::Crop(crop) => (crop, None),
            Output::Normalized(normalizer, out) => {
                scratch.crop.resize(self.size * self.size * 3, 0);
                (&mut scratch.crop[..], Some((normalizer, out)))
            }
        };
        if v.out1 > v.out0 {
            self.run_vertical_first(&mut scratch.src, &mut scratch.temp, workers, &source_rows, crop);
        }
        self.pad_rows(crop);
        if let Some((normalizer, out)) = normalize {
            normalizer.run(crop, self.size, out, workers);
        }
    }

    /// The vertical-first order of [`Self::run`] (kept rows only): the vertical pass over the
    /// source columns the horizontal pass reads, then the horizontal pass.
    fn run_vertical_first(&self, src: &mut Vec<u8>, temp: &mut Vec<u8>, workers: &dyn Workers, source_rows: &(impl Fn(usize, usize, &mut [u8]) + Sync), crop: &mut [u8]) {
        let (row, span, rows) = (self.size * 3, self.source_columns().len() * 3, self.source_rows());
        let v = &self.vertical;
        let kept = v.out1 - v.out0;
        src.resize(rows.len() * span, 0);
        temp.resize(kept * span, 0);
        let tasks = task_count(workers, rows.len());
        {
            let src = Parts::rows(src, span, tasks, rows.len());
            workers.run_tasks(tasks, &|t| {
                let mut src = src.get(t);
                let (first, n) = (first_row(t, tasks, rows.len()), src.len() / span.max(1));
                if n > 0 {
                    source_rows(rows.start + first, n, &mut src);
                }
            });
        }
        let tasks = task_count(workers, kept);
        let (temp, out) = (Parts::rows(temp, span, tasks, kept), Parts::rows(&mut crop[v.out0 * row..v.out1 * row], row, tasks, kept));
        let src = &src[..];
        workers.run_tasks(tasks, &|t| {
            let (mut temp, mut out) = (temp.get(t), out.get(t));
            let outs = first_row(t, tasks, kept)..first_row(t + 1, tasks, kept);
            v.coeffs.resample_rows(src, v.src0, span, &mut temp, outs.clone());
            for i in 0..outs.len() {
                self.row(&temp[i * span..(i + 1) * span], &mut out[i * row..(i + 1) * row]);
            }
        });
    }

    /// The horizontal-first order of [`Self::run`] (some rows kept): each block of kept crop rows
    /// keeps a window of horizontally resampled source rows (a few more than one crop row's
    /// taps), fills it as its crop rows move down the source, and runs the vertical pass on every
    /// crop row whose taps the window holds, into the crop or, for a normalized output, into a
    /// few rows of scratch that are normalized at once. Neither the intermediate rows nor the
    /// crop of a normalized output leave the cache.
    fn run_window(&self, scratch: &mut Scratch, workers: &dyn Workers, source_rows: &(impl Fn(usize, usize, &mut [u8]) + Sync), output: Output<'_>) {
        let (s, row, span) = (self.size, self.size * 3, self.source_columns().len() * 3);
        let v = &self.vertical;
        let kept = v.out1 - v.out0;
        let (batches, batch_scratch) = self.horizontal_batch();
        let (batch, window) = (buffer_rows(batches), self.window_rows());
        let tasks = task_count(workers, kept);
        scratch.src.resize(tasks * batch * span, 0);
        scratch.batch.resize(tasks * batch_scratch, 0);
        scratch.temp.resize(tasks * window * row, 0);
        // Where the vertical pass writes: the crop's kept rows, or per block a few rows of scratch
        // and the kept rows of the three planes.
        let (mut crop, mut normalized) = match output {
            Output::Crop(crop) => (Some(crop), None),
            Output::Normalized(normalizer, out) => {
                scratch.rows.resize(tasks * NORMALIZED_ROWS * row, 0);
                (None, Some((normalizer, planes(out, s))))
            }
        };
        {
            let (src, temp, batch_parts) = (Parts::equal(&mut scratch.src, batch * span, tasks), Parts::equal(&mut scratch.temp, window * row, tasks), Parts::equal(&mut scratch.batch, batch_scratch, tasks));
            let crop_rows = crop.as_mut().map(|c| Parts::rows(&mut c[v.out0 * row..v.out1 * row], row, tasks, kept));
            let scratch_rows = Parts::equal(&mut scratch.rows, if crop_rows.is_some() { 0 } else { NORMALIZED_ROWS * row }, tasks);
            let kept_planes = normalized.as_mut().map(|(n, p)| (*n, p.each_mut().map(|p| Parts::rows(&mut p[v.out0 * s..v.out1 * s], s, tasks, kept))));
            workers.run_tasks(tasks, &|t| {
                let (mut src, mut win, mut bs, mut rows) = (src.get(t), temp.get(t), batch_parts.get(t), scratch_rows.get(t));
                let mut crop = crop_rows.as_ref().map(|c| c.get(t));
                let mut planes = kept_planes.as_ref().map(|(n, p)| (n, p.each_ref().map(|p| p.get(t))));
                let outs = first_row(t, tasks, kept)..first_row(t + 1, tasks, kept);
                // The last source row this block reads, plus one.
                let last = outs.clone().map(|i| self.vertical_taps(i)).map(|(y, n)| y + n).max().unwrap_or(0);
                // The window holds source rows lo..hi, row y at win[(y − lo)·row..].
                let (mut lo, mut hi) = (0, 0);
                let mut i = outs.start;
                while i < outs.end {
                    let (y, n) = self.vertical_taps(i);
                    if y + n > hi {
                        if y >= hi || y + n > lo + window {
                            // Slide: the rows from y on that the window holds (if any) move to its
                            // top. (Crop rows read rows from further down as they go: y >= lo.)
                            let from = y.clamp(lo, hi);
                            win.copy_within((from - lo) * row..(hi - lo) * row, 0);
                            (lo, hi) = (y, hi.max(y));
                        }
                        // Fill to the window's end (on an even row where that still takes in
                        // y + n, so that the next fill starts a 4:2:0 pair) or the block's last row.
                        let end = match last.min(lo + window) {
                            e if e < last => (e - e % SOURCE_RUN).max(y + n),
                            e => e,
                        };
                        self.horizontal_rows(source_rows, hi..end, &mut src, &mut win[(hi - lo) * row..(end - lo) * row], &mut bs, batches);
                        hi = end;
                    }
                    // The crop rows from i on whose taps the window holds (at most
                    // NORMALIZED_ROWS at once into scratch).
                    let limit = if crop.is_some() { outs.end } else { outs.end.min(i + NORMALIZED_ROWS) };
                    let j = (i + 1..limit)
                        .find(|&j| {
                            let (y, n) = self.vertical_taps(j);
                            y + n > hi
                        })
                        .unwrap_or(limit);
                    let (a, b) = (i - outs.start, j - outs.start);
                    let made = match crop.as_mut() {
                        Some(crop) => &mut crop[a * row..b * row],
                        None => &mut rows[..(b - a) * row],
                    };
                    if v.resample {
                        v.coeffs.resample_rows(&win, lo, row, made, i..j);
                    } else {
                        for (k, r) in (i..j).zip(made.chunks_exact_mut(row)) {
                            let y = self.vertical_taps(k).0 - lo;
                            r.copy_from_slice(&win[y * row..(y + 1) * row]);
                        }
                    }
                    if let Some((normalizer, [pr, pg, pb])) = planes.as_mut() {
                        normalizer.rows(made, [&mut pr[a * s..b * s], &mut pg[a * s..b * s], &mut pb[a * s..b * s]]);
                    }
                    i = j;
                }
            });
        }
        if let Some(crop) = crop {
            self.pad_rows(crop);
        }
        if let (Some((normalizer, [r, g, b])), true) = (normalized, self.pads()) {
            // The padding rows above and below the kept ones: one row of the fill colour normalized
            // once, then copied.
            let fill = &mut scratch.rows[..row];
            fill_pixels(fill, self.fill);
            let mut pads = (0..v.out0).chain(v.out1..s);
            if let Some(first) = pads.next() {
                let at = first * s..(first + 1) * s;
                normalizer.rows(fill, [&mut r[at.clone()], &mut g[at.clone()], &mut b[at.clone()]]);
                for y in pads {
                    for p in [&mut *r, &mut *g, &mut *b] {
                        p.copy_within(at.clone(), y * s);
                    }
                }
            }
        }
    }

    /// Source rows kept crop row `out0 + i` reads: `(first, count)`.
    fn vertical_taps(&self, i: usize) -> (usize, usize) {
        let v = &self.vertical;
        if v.resample {
            v.coeffs.bounds[i]
        } else {
            (v.src0 + i, 1)
        }
    }

    /// Rows of one block's window in the horizontal-first order: the most taps a crop row has,
    /// plus room for one more batch or pair ([`WINDOW_SLACK`]).
    fn window_rows(&self) -> usize {
        let v = &self.vertical;
        v.coeffs.bounds.iter().map(|&(_, n)| n).max().unwrap_or(1).max(1) + WINDOW_SLACK
    }

    /// The horizontal pass of the source rows `rows` into `dst` (one output row of `size` pixels
    /// each): [`Self::rows_batch`] on the largest of `batches` that fits, else a 4:2:0 pair
    /// ([`SOURCE_RUN`], from an even row) or one row through [`Self::row`]. `src` holds a batch of
    /// source rows; `batch_scratch` is [`Self::rows_batch`]'s.
    fn horizontal_rows(&self, source_rows: &(impl Fn(usize, usize, &mut [u8]) + Sync), rows: Range<usize>, src: &mut [u8], dst: &mut [u8], batch_scratch: &mut [u8], batches: &[usize]) {
        let (row, span) = (self.size * 3, self.source_columns().len() * 3);
        let mut y = rows.start;
        while y < rows.end {
            let at = (y - rows.start) * row;
            if let Some(&batch) = batches.iter().find(|&&b| y + b <= rows.end) {
                source_rows(y, batch, &mut src[..batch * span]);
                self.rows_batch(&src[..batch * span], span, &mut dst[at..at + batch * row], batch_scratch);
                y += batch;
            } else {
                let run = if y.is_multiple_of(SOURCE_RUN) { SOURCE_RUN.min(rows.end - y) } else { 1 };
                source_rows(y, run, &mut src[..run * span]);
                for r in 0..run {
                    self.row(&src[r * span..(r + 1) * span], &mut dst[at + r * row..at + (r + 1) * row]);
                }
                y += run;
            }
        }
    }

    /// Whether some output pixels are padding.
    fn pads(&self) -> bool {
        self.horizontal.out0 > 0 || self.horizontal.out1 < self.size || self.vertical.out0 > 0 || self.vertical.out1 < self.size
    }

    /// Horizontal pass of one source row: `src` holds the row's RGB8 pixels from column
    /// `horizontal.src0` to `horizontal.src1`; writes `size` RGB8 pixels (padding included) to `dst`.
    fn row(&self, src: &[u8], dst: &mut [u8]) {
        let h = &self.horizontal;
        let (a, b) = (h.out0 * 3, h.out1 * 3);
        if h.out1 > h.out0 {
            #[cfg(target_arch = "x86_64")]
            if let Some(table) = &self.gather {
                // SAFETY: the table exists only where the CPU has AVX-512 F, BW, VBMI and VNNI
                // (`gather_available`, checked in `Plan::new`); the function is safe Rust compiled
                // with them. Exercised by `tests::compiled_passes_equal_the_reference` and
                // `stream::pixel::tests::row_blocks_on_a_pool_give_the_serial_values`.
                unsafe { super::resize_avx512::resample_rgb_row_gather(&h.coeffs, table, src, h.src0, &mut dst[a..b]) };
                self.pad_row(dst);
                return;
            }
            if h.resample {
                h.coeffs.resample_rgb_row(src, h.src0, &mut dst[a..b]);
            } else {
                dst[a..b].copy_from_slice(&src[..b - a]);
            }
        }
        self.pad_row(dst);
    }

    /// The padding pixels of one output row of the horizontal pass.
    fn pad_row(&self, dst: &mut [u8]) {
        if self.pads() {
            let (a, b) = (self.horizontal.out0 * 3, self.horizontal.out1 * 3);
            let (head, tail) = dst[..self.size * 3].split_at_mut(b);
            fill_pixels(&mut head[..a], self.fill);
            fill_pixels(tail, self.fill);
        }
    }

    /// Horizontal pass of one of [`batch_rows`]'s counts of source rows at once (`src`: rows of
    /// `span` bytes; `dst`: as many output rows of `size` pixels) through the batched pass, the
    /// same bytes as [`Self::row`] on each row. Only called when the axis resamples and keeps some
    /// pixels.
    fn rows_batch(&self, src: &[u8], span: usize, dst: &mut [u8], scratch: &mut [u8]) {
        let row = self.size * 3;
        #[cfg(target_arch = "x86_64")]
        {
            let h = &self.horizontal;
            let dst_rows = &mut dst[h.out0 * 3..];
            if src.len() == super::resize_avx512::BATCH * span {
                // SAFETY: `batch_rows()` offers 16 rows only when the CPU has AVX-512 F and BW; the
                // function is safe Rust compiled with them. Exercised by
                // `tests::compiled_passes_equal_the_reference` and
                // `stream::pixel::tests::row_blocks_on_a_pool_give_the_serial_values`.
                unsafe { super::resize_avx512::resample_rgb_rows16(&h.coeffs, src, span, h.src0, dst_rows, row, scratch) };
            } else {
                // SAFETY: `batch_rows()` offers 8 rows only when the CPU has AVX2; the function is
                // safe Rust compiled with AVX2 enabled. Exercised by the same tests.
                unsafe { super::resize_avx2::resample_rgb_rows8(&h.coeffs, src, span, h.src0, dst_rows, row, scratch) };
            }
            for r in dst.chunks_exact_mut(row) {
                self.pad_row(r);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = scratch;
            for (s, d) in src.chunks_exact(span).zip(dst.chunks_exact_mut(row)) {
                self.row(s, d);
            }
        }
    }

    /// Fills the crop's padding rows (above and below the resampled ones) with the fill colour.
    fn pad_rows(&self, crop: &mut [u8]) {
        if self.pads() {
            let (v, row) = (&self.vertical, self.size * 3);
            let (head, tail) = crop[..self.size * row].split_at_mut(v.out1 * row);
            fill_pixels(&mut head[..v.out0 * row], self.fill);
            fill_pixels(tail, self.fill);
        }
    }

    /// Source rows the vertical pass reads (`src0..src1`; empty when the crop is all padding).
    pub(crate) fn source_rows(&self) -> std::ops::Range<usize> {
        self.vertical.src0..self.vertical.src1
    }

    /// Source columns the horizontal pass reads.
    pub(crate) fn source_columns(&self) -> std::ops::Range<usize> {
        self.horizontal.src0..self.horizontal.src1
    }
}

fn fill_pixels(dst: &mut [u8], fill: [u8; 3]) {
    for px in dst.chunks_exact_mut(3) {
        px.copy_from_slice(&fill);
    }
}

/// Reusable preprocessing state: the plan (coefficient tables) and the intermediate image are
/// kept between calls, so classifying frames of one size allocates nothing after the first.
pub struct Preprocessor {
    cfg: PreprocessConfig,
    /// The normalization's tables (and arithmetic), made once.
    normalizer: Normalizer,
    plan: Option<(usize, usize, Plan)>,
    scratch: Scratch,
    crop: Vec<u8>,
}

impl Preprocessor {
    /// A preprocessor for one model's configuration.
    pub fn new(cfg: PreprocessConfig) -> Self {
        Preprocessor { normalizer: Normalizer::new(&cfg), cfg, plan: None, scratch: Scratch::default(), crop: Vec::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &PreprocessConfig {
        &self.cfg
    }

    /// Resizes and crops an RGB8 image to the `input_size²` uint8 RGB crop (interleaved), exactly as
    /// Pillow + torchvision do; returns the crop.
    pub fn resize_crop(&mut self, rgb: &[u8], width: usize, height: usize) -> Result<&[u8], PreprocessError> {
        self.resize_crop_on(rgb, width, height, &Serial)
    }

    /// [`Self::resize_crop`] with its row blocks on `workers` (the same bytes).
    pub fn resize_crop_on(&mut self, rgb: &[u8], width: usize, height: usize, workers: &dyn Workers) -> Result<&[u8], PreprocessError> {
        self.resize_crop_into(rgb, width, height, workers, None)?;
        Ok(&self.crop)
    }

    /// [`Self::resize_crop_on`], and with `out` the normalization into it.
    fn resize_crop_into(&mut self, rgb: &[u8], width: usize, height: usize, workers: &dyn Workers, out: Option<&mut [f32]>) -> Result<(), PreprocessError> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(PreprocessError::BadImage(format!("{width}x{height} is not a usable image size (1..={MAX_SIDE} per side)")));
        }
        if rgb.len() != width * height * 3 {
            return Err(PreprocessError::BadImage(format!(
                "{} bytes for a {width}x{height} RGB image, expected {}",
                rgb.len(),
                width * height * 3
            )));
        }
        if !matches!(&self.plan, Some((w, h, _)) if (*w, *h) == (width, height)) {
            let plan = Plan::new(&self.cfg, width, height)?;
            self.scratch = plan.scratch();
            self.plan = Some((width, height, plan));
        }
        let plan = &self.plan.as_ref().expect("set above").2;
        let cols = plan.source_columns();
        self.crop.resize(plan.size * plan.size * 3, 0);
        let span = cols.len() * 3;
        let output = match out {
            Some(out) => Output::Normalized(&self.normalizer, out),
            None => Output::Crop(&mut self.crop),
        };
        plan.run(
            &mut self.scratch,
            workers,
            |y, n, dst| {
                for (r, d) in dst.chunks_exact_mut(span).take(n).enumerate() {
                    d.copy_from_slice(&rgb[((y + r) * width + cols.start) * 3..((y + r) * width + cols.end) * 3]);
                }
            },
            output,
        );
        Ok(())
    }

    /// Full preprocessing of an RGB8 image into `out` (`3 × input_size²`, CHW, normalized).
    pub fn run(&mut self, rgb: &[u8], width: usize, height: usize, out: &mut [f32]) -> Result<(), PreprocessError> {
        self.run_on(rgb, width, height, out, &Serial)
    }

    /// [`Self::run`] with its row blocks on `workers` (e.g. [`crate::engine::Engine::workers`]);
    /// the same values.
    pub fn run_on(&mut self, rgb: &[u8], width: usize, height: usize, out: &mut [f32], workers: &dyn Workers) -> Result<(), PreprocessError> {
        let s = self.cfg.input_size;
        if out.len() != 3 * s * s {
            return Err(PreprocessError::OutputLen { expected: 3 * s * s, found: out.len() });
        }
        self.resize_crop_into(rgb, width, height, workers, Some(out))
    }
}

/// The R, G and B planes of a `3 × size²` CHW buffer.
fn planes(out: &mut [f32], size: usize) -> [&mut [f32]; 3] {
    let n = size * size;
    let (r, rest) = out[..3 * n].split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    [r, g, b]
}

/// torchvision's `ToTensor` (or v2 `ToDtype(scale=True)`) + `Normalize` of one configuration:
/// `(v / 255 − mean) / std` in f32 per channel, as the table of its 256 values, and as arithmetic
/// where that gives every one of them.
pub(crate) struct Normalizer {
    tables: [[f32; 256]; 3],
    /// Set when [`NormalizeArithmetic::value`] equals every table entry (checked in [`Self::new`]).
    arithmetic: Option<NormalizeArithmetic>,
}

/// The table entries of [`Normalizer`] computed without a division: each `a / d` as
/// `q = a · (1/d)`, then `q + (a − q·d) · (1/d)` with fused multiply-adds (the remainder is exact,
/// and the correction rounds `q` to the correctly rounded quotient in all but rare cases, which
/// [`Normalizer::new`] rules out by checking all 768 entries).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormalizeArithmetic {
    /// `Scaling::Divide` (divide by 255) or `Scaling::Reciprocal` (multiply by `f32(1/255)`).
    pub(crate) divide: bool,
    /// `f32(1/255)`: the reciprocal of the division, or the factor of `Reciprocal`.
    pub(crate) unit: f32,
    pub(crate) mean: [f32; 3],
    pub(crate) std: [f32; 3],
    /// `f32(1/std)`.
    pub(crate) std_recip: [f32; 3],
}

impl NormalizeArithmetic {
    /// `a / d` from `r = f32(1/d)`, as the vector code computes it.
    #[inline(always)]
    fn quotient(a: f32, d: f32, r: f32) -> f32 {
        let q = a * r;
        (-q).mul_add(d, a).mul_add(r, q)
    }

    /// Channel `c`'s value for byte `v`, with the vector code's operations in scalar form.
    pub(crate) fn value(&self, c: usize, v: u8) -> f32 {
        let x = v as f32;
        let unit = if self.divide { Self::quotient(x, 255.0, self.unit) } else { x * self.unit };
        Self::quotient(unit - self.mean[c], self.std[c], self.std_recip[c])
    }
}

impl Normalizer {
    /// The tables of `cfg` (computed as torchvision does), and the arithmetic if it reproduces them.
    pub(crate) fn new(cfg: &PreprocessConfig) -> Normalizer {
        let (mean, std) = (cfg.mean, cfg.std);
        let unit: [f32; 256] = match cfg.scaling {
            Scaling::Divide => std::array::from_fn(|v| v as f32 / 255.0),
            Scaling::Reciprocal => std::array::from_fn(|v| v as f32 * (1.0f64 / 255.0) as f32),
        };
        let tables: [[f32; 256]; 3] = std::array::from_fn(|c| std::array::from_fn(|v| (unit[v] - mean[c]) / std[c]));
        let arithmetic = NormalizeArithmetic {
            divide: cfg.scaling == Scaling::Divide,
            unit: (1.0f64 / 255.0) as f32,
            mean,
            std,
            std_recip: std.map(|s| 1.0 / s),
        };
        let exact = (0..3).all(|c| (0..=255u8).all(|v| arithmetic.value(c, v).to_bits() == tables[c][v as usize].to_bits()));
        Normalizer { tables, arithmetic: exact.then_some(arithmetic) }
    }

    /// Whether the vector passes compute the values instead of looking them up.
    #[cfg(test)]
    pub(crate) fn computes(&self) -> bool {
        self.arithmetic.is_some()
    }

    /// Normalizes an interleaved RGB8 crop (`size²` pixels) into `out` (`3 × size²`, CHW). Blocks
    /// of rows run on `workers`.
    pub(crate) fn run(&self, crop: &[u8], size: usize, out: &mut [f32], workers: &dyn Workers) {
        let s = size;
        let tasks = task_count(workers, s);
        let planes = planes(out, s).map(|p| Parts::rows(p, s, tasks, s));
        workers.run_tasks(tasks, &|t| {
            let px = &crop[first_row(t, tasks, s) * s * 3..first_row(t + 1, tasks, s) * s * 3];
            let [mut r, mut g, mut b] = [0, 1, 2].map(|c| planes[c].get(t));
            self.rows(px, [&mut r, &mut g, &mut b]);
        });
    }

    /// Normalizes the interleaved RGB8 pixels `px` into `planes` (R, G, B: one value per pixel
    /// each).
    pub(crate) fn rows(&self, px: &[u8], planes: [&mut [f32]; 3]) {
        #[cfg(target_arch = "x86_64")]
        if super::resize_avx512::normalize_available() {
            // SAFETY: the CPU has AVX-512 F, BW and VBMI (checked just above); the function is
            // safe Rust compiled with them. Exercised by `tests::normalize_passes_equal_the_table`.
            unsafe { super::resize_avx512::normalize_rows(px, &self.tables, self.arithmetic.as_ref(), planes) };
            return;
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(arithmetic) = &self.arithmetic {
            // SAFETY: NEON is part of every aarch64 CPU (a base feature of the target); the
            // function is safe Rust compiled with it. Exercised by
            // `tests::normalize_passes_equal_the_table`.
            unsafe { super::resize_neon::normalize_rows(px, arithmetic, planes) };
            return;
        }
        for (c, (plane, table)) in planes.into_iter().zip(&self.tables).enumerate() {
            for (o, px) in plane.iter_mut().zip(px.chunks_exact(3)) {
                *o = table[px[c] as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::Rng;

    /// Pillow's passes as written in `Resample.c` (one accumulator per output byte, i64 so that no
    /// order of summation can matter): what every compiled version must equal.
    fn reference_rows(c: &Coeffs, src: &[u8], y0: usize, row_len: usize) -> Vec<u8> {
        let mut out = vec![0; c.bounds.len() * row_len];
        for (yy, &(ymin, n)) in c.bounds.iter().enumerate() {
            for i in 0..row_len {
                let acc: i64 = (0..n).map(|t| src[(ymin - y0 + t) * row_len + i] as i64 * c.weights[yy * c.ksize + t] as i64).sum();
                out[yy * row_len + i] = ((acc + HALF as i64) >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
        out
    }

    fn reference_rgb_row(c: &Coeffs, src: &[u8], x0: usize) -> Vec<u8> {
        let mut out = vec![0; c.bounds.len() * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            for ch in 0..3 {
                let acc: i64 = (0..n).map(|t| src[(xmin - x0 + t) * 3 + ch] as i64 * c.weights[xx * c.ksize + t] as i64).sum();
                out[xx * 3 + ch] = ((acc + HALF as i64) >> PRECISION_BITS).clamp(0, 255) as u8;
            }
        }
        out
    }

    /// The crop of `plan` for an interleaved RGB8 `w × h` image by the two whole passes of
    /// [`reference_rgb_row`] and [`reference_rows`], in the plan's order.
    fn reference_crop(plan: &Plan, rgb: &[u8], w: usize) -> Vec<u8> {
        let (s, h, v) = (plan.size, &plan.horizontal, &plan.vertical);
        let (cols, rows) = (plan.source_columns(), plan.source_rows());
        let horizontal = |src: &[u8]| {
            let mut out: Vec<u8> = plan.fill.repeat(s);
            let kept = if h.resample { reference_rgb_row(&h.coeffs, src, h.src0) } else { src[..(h.out1 - h.out0) * 3].to_vec() };
            out[h.out0 * 3..h.out1 * 3].copy_from_slice(&kept);
            out
        };
        let vertical = |src: &[u8], row_len: usize| if v.resample { reference_rows(&v.coeffs, src, v.src0, row_len) } else { src[..(v.out1 - v.out0) * row_len].to_vec() };
        let source: Vec<u8> = rows.clone().flat_map(|y| rgb[(y * w + cols.start) * 3..(y * w + cols.end) * 3].to_vec()).collect();
        let kept: Vec<u8> = if plan.vertical_first {
            let span = cols.len() * 3;
            vertical(&source, span).chunks_exact(span).flat_map(horizontal).collect()
        } else {
            vertical(&source.chunks_exact(cols.len() * 3).flat_map(horizontal).collect::<Vec<u8>>(), s * 3)
        };
        let mut crop: Vec<u8> = plan.fill.repeat(s * s);
        crop[v.out0 * s * 3..v.out1 * s * 3].copy_from_slice(&kept);
        crop
    }

    #[test]
    fn plan_runs_equal_the_two_whole_passes() {
        // Random sizes, crops and filters (large shrinks: crop rows with many taps, so each block's
        // window slides often; upscales; padding; axes left as they are), serially and on a pool
        // of 3 threads, against the two passes over the whole image.
        let mut rng = Rng::new(29);
        let interps = [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Lanczos, Interpolation::Box, Interpolation::Hamming, Interpolation::Nearest];
        let pool = crate::engine::pool::Pool::new(3);
        let mut orders = [0usize; 2];
        for case in 0..80 {
            let (w, h) = (1 + (rng.next_u64() % 1200) as usize, 1 + (rng.next_u64() % 1200) as usize);
            let size = 1 + (rng.next_u64() % 64) as usize;
            let crop_pct = [1.0, 0.875, 0.5 + (rng.next_u64() % 110) as f32 / 100.0][case % 3];
            let cfg = PreprocessConfig { crop_pct, interpolation: interps[case % interps.len()], ..PreprocessConfig::augreg(size) };
            let Ok(plan) = Plan::new(&cfg, w, h) else { continue };
            let normalizer = Normalizer::new(&cfg);
            orders[plan.vertical_first as usize] += 1;
            let rgb: Vec<u8> = (0..w * h * 3).map(|_| (rng.next_u64() >> 56) as u8).collect();
            let want = reference_crop(&plan, &rgb, w);
            let cols = plan.source_columns();
            let source_rows = |y: usize, n: usize, dst: &mut [u8]| {
                for (r, d) in dst.chunks_exact_mut(cols.len() * 3).take(n).enumerate() {
                    d.copy_from_slice(&rgb[((y + r) * w + cols.start) * 3..((y + r) * w + cols.end) * 3]);
                }
            };
            let workers: [&dyn Workers; 2] = [&Serial, &pool];
            for workers in workers {
                let mut crop = vec![0xa5; size * size * 3];
                plan.run(&mut plan.scratch(), workers, source_rows, Output::Crop(&mut crop));
                assert!(crop == want, "case {case}: {w}x{h} -> {size} at crop {crop_pct} {:?}, {} threads", cfg.interpolation, workers.threads());
                // Normalized (the crop made a few rows at a time, padding from the fill colour):
                // the table's value of each byte of the crop.
                let mut out = vec![f32::NAN; 3 * size * size];
                plan.run(&mut plan.scratch(), workers, source_rows, Output::Normalized(&normalizer, &mut out));
                let planes = (0..3).flat_map(|c| want.chunks_exact(3).map(move |px| (c, px[c])));
                assert!(out.iter().zip(planes).all(|(v, (c, byte))| v.to_bits() == normalizer.tables[c][byte as usize].to_bits()), "normalized, case {case}, {} threads", workers.threads());
            }
        }
        assert!(orders.iter().all(|&n| n > 0), "both orders of the passes should be exercised: {orders:?}");
    }

    #[test]
    fn normalization_arithmetic_equals_the_tables() {
        // The division-free arithmetic is used only where it gives every table entry; it does for
        // the configurations models ship with, under both scalings (otherwise the vector passes
        // would never compute, and the check below would be vacuous).
        let mut rng = Rng::new(17);
        let mut configs = vec![PreprocessConfig::augreg(224), PreprocessConfig::imagenet(224)];
        for c in configs.clone() {
            configs.push(PreprocessConfig { scaling: Scaling::Reciprocal, ..c });
        }
        for cfg in &configs {
            assert!(Normalizer::new(cfg).computes(), "mean {:?} std {:?} {:?}: the arithmetic misses a table entry", cfg.mean, cfg.std, cfg.scaling);
        }
        // Random means and deviations: whenever the arithmetic is taken, it is the table.
        let mut computed = 0;
        for case in 0..200 {
            let f = |rng: &mut Rng| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            let cfg = PreprocessConfig {
                mean: std::array::from_fn(|_| f(&mut rng)),
                std: std::array::from_fn(|_| 0.01 + f(&mut rng)),
                scaling: if case % 2 == 0 { Scaling::Divide } else { Scaling::Reciprocal },
                ..PreprocessConfig::imagenet(224)
            };
            let n = Normalizer::new(&cfg);
            if let Some(a) = &n.arithmetic {
                computed += 1;
                for c in 0..3 {
                    for v in 0..=255u8 {
                        assert_eq!(a.value(c, v).to_bits(), n.tables[c][v as usize].to_bits(), "case {case}, channel {c}, byte {v}");
                    }
                }
            }
        }
        eprintln!("random configurations computed without tables: {computed} of 200");
    }

    #[test]
    fn normalize_passes_equal_the_table() {
        // The AVX-512 lookups and arithmetic against the scalar lookups, on pixel counts around
        // the 16-pixel blocks.
        #[cfg(target_arch = "x86_64")]
        if super::super::resize_avx512::normalize_available() {
            let mut rng = Rng::new(13);
            let random: [[f32; 256]; 3] = std::array::from_fn(|_| std::array::from_fn(|_| f32::from_bits(rng.next_u64() as u32 >> 2)));
            let normalizers = [PreprocessConfig::augreg(224), PreprocessConfig { scaling: Scaling::Reciprocal, ..PreprocessConfig::imagenet(224) }].map(|c| Normalizer::new(&c));
            let cases = [(&random, None), (&normalizers[0].tables, normalizers[0].arithmetic.as_ref()), (&normalizers[1].tables, normalizers[1].arithmetic.as_ref())];
            for (tables, arithmetic) in cases {
                for n in (0..70).chain([223, 224, 225, 224 * 7]) {
                    // Every byte value in the longer runs.
                    let px: Vec<u8> = (0..3 * n).map(|i| if n > 200 { (i / 3 % 256) as u8 ^ (i % 3) as u8 } else { (rng.next_u64() >> 56) as u8 }).collect();
                    let mut planes = [vec![-1f32; n + 3], vec![-1f32; n + 3], vec![-1f32; n + 3]];
                    let [r, g, b] = &mut planes;
                    // SAFETY: the CPU has AVX-512 F, BW and VBMI (checked above).
                    unsafe { super::super::resize_avx512::normalize_rows(&px, tables, arithmetic, [&mut r[..], &mut g[..], &mut b[..]]) };
                    for (c, plane) in planes.iter().enumerate() {
                        let want: Vec<u32> = (0..n).map(|i| tables[c][px[3 * i + c] as usize].to_bits()).collect();
                        assert_eq!(plane[..n].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{n} pixels, channel {c}, arithmetic {}", arithmetic.is_some());
                        assert!(plane[n..].iter().all(|&v| v == -1.0), "{n} pixels: wrote past the pixels");
                    }
                }
            }
            eprintln!("AVX-512 VBMI present: the vector lookups and arithmetic were checked");
            return;
        }
        #[cfg(target_arch = "aarch64")]
        {
            let mut rng = Rng::new(13);
            for cfg in [PreprocessConfig::augreg(224), PreprocessConfig { scaling: Scaling::Reciprocal, ..PreprocessConfig::imagenet(224) }] {
                let normalizer = Normalizer::new(&cfg);
                let arithmetic = normalizer.arithmetic.as_ref().expect("the shipped configurations compute (normalization_arithmetic_equals_the_tables)");
                for n in (0..70).chain([223, 224, 225, 224 * 7]) {
                    let px: Vec<u8> = (0..3 * n).map(|i| if n > 200 { (i / 3 % 256) as u8 ^ (i % 3) as u8 } else { (rng.next_u64() >> 56) as u8 }).collect();
                    let mut planes = [vec![-1f32; n + 3], vec![-1f32; n + 3], vec![-1f32; n + 3]];
                    let [r, g, b] = &mut planes;
                    // SAFETY: NEON is part of every aarch64 CPU.
                    unsafe { super::super::resize_neon::normalize_rows(&px, arithmetic, [&mut r[..], &mut g[..], &mut b[..]]) };
                    for (c, plane) in planes.iter().enumerate() {
                        let want: Vec<u32> = (0..n).map(|i| normalizer.tables[c][px[3 * i + c] as usize].to_bits()).collect();
                        assert_eq!(plane[..n].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{n} pixels, channel {c}");
                        assert!(plane[n..].iter().all(|&v| v == -1.0), "{n} pixels: wrote past the pixels");
                    }
                }
            }
            eprintln!("NEON: the vector arithmetic was checked");
            return;
        }
        #[allow(unreachable_code)]
        {
            eprintln!("AVX-512 VBMI absent: only the scalar lookups run");
        }
    }

    #[test]
    fn compiled_passes_equal_the_reference() {
        let mut rng = Rng::new(11);
        let interps = [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Lanczos, Interpolation::Box, Interpolation::Hamming, Interpolation::Nearest];
        #[cfg(target_arch = "x86_64")]
        let (mut gathered, mut vnni_vertical) = (0, 0);
        for case in 0..300 {
            let in_size = 1 + (rng.next_u64() % 700) as usize;
            let out_size = 1 + (rng.next_u64() % 300) as usize;
            let first = (rng.next_u64() % out_size as u64) as usize;
            let count = 1 + (rng.next_u64() % (out_size - first) as u64) as usize;
            let interp = interps[case % interps.len()];
            let mut c = Coeffs::default();
            c.compute(in_size, out_size, first, count, interp);
            let x0 = c.bounds.iter().map(|b| b.0).min().unwrap();
            let x1 = c.bounds.iter().map(|b| b.0 + b.1).max().unwrap();
            // Extremes (0 and 255) often, so that clipping is exercised in both directions.
            let byte = |rng: &mut Rng| match rng.next_u64() % 4 {
                0 => 0,
                1 => 255,
                _ => (rng.next_u64() >> 56) as u8,
            };
            let row: Vec<u8> = (0..(x1 - x0) * 3).map(|_| byte(&mut rng)).collect();
            let want = reference_rgb_row(&c, &row, x0);
            let mut got = vec![0; want.len()];
            c.resample_rgb_row(&row, x0, &mut got);
            assert_eq!(got, want, "horizontal, case {case}: {in_size} -> {out_size} ({first}+{count}) {interp:?}");
            got.fill(0);
            resample_rgb_row_body(&c, &row, x0, &mut got);
            assert_eq!(got, want, "horizontal portable body, case {case}");
            // The batched passes (8 rows with AVX2, 16 with AVX-512), into rows with some bytes
            // between them (which they must leave alone).
            #[cfg(target_arch = "x86_64")]
            {
                use super::super::{resize_avx2, resize_avx512};
                type Batched = unsafe fn(&Coeffs, &[u8], usize, usize, &mut [u8], usize, &mut [u8]);
                let passes: [(bool, usize, Batched, usize); 2] = [
                    (std::arch::is_x86_feature_detected!("avx2"), resize_avx2::BATCH, resize_avx2::resample_rgb_rows8, resize_avx2::rows8_scratch_len(row.len(), c.bounds.len())),
                    (resize_avx512::available(), resize_avx512::BATCH, resize_avx512::resample_rgb_rows16, resize_avx512::rows16_scratch_len(row.len(), c.bounds.len())),
                ];
                for (present, batch, pass, scratch_len) in passes {
                    if !present {
                        continue;
                    }
                    let span = row.len();
                    let rows: Vec<u8> = (0..batch * span).map(|_| byte(&mut rng)).collect();
                    let out = c.bounds.len() * 3;
                    let stride = out + (rng.next_u64() % 9) as usize;
                    let mut dst = vec![0xa5u8; batch * stride];
                    let mut scratch = vec![0u8; scratch_len];
                    // SAFETY: the CPU has the pass's instruction set (checked just above).
                    unsafe { pass(&c, &rows, span, x0, &mut dst, stride, &mut scratch) };
                    for r in 0..batch {
                        let want = reference_rgb_row(&c, &rows[r * span..(r + 1) * span], x0);
                        assert_eq!(dst[r * stride..r * stride + out], want[..], "{batch}-row horizontal, row {r}, case {case}: {in_size} -> {out_size} ({first}+{count}) {interp:?}");
                        assert!(dst[r * stride + out..(r + 1) * stride].iter().all(|&v| v == 0xa5), "{batch}-row horizontal wrote between rows, case {case}");
                    }
                }
            }
            // The AVX-512 VBMI + VNNI pass, where its table can be made.
            #[cfg(target_arch = "x86_64")]
            if super::super::resize_avx512::gather_available() {
                use super::super::resize_avx512::{resample_rgb_row_gather, GatherTable};
                if let Some(table) = GatherTable::new(&c) {
                    gathered += 1;
                    got.fill(0);
                    // SAFETY: the CPU has AVX-512 F, BW, VBMI and VNNI (checked above).
                    unsafe { resample_rgb_row_gather(&c, &table, &row, x0, &mut got) };
                    assert_eq!(got, want, "gathered horizontal, case {case}: {in_size} -> {out_size} ({first}+{count}) {interp:?}");
                }
            }

            let row_len = 1 + (rng.next_u64() % 200) as usize;
            let src: Vec<u8> = (0..(x1 - x0) * row_len).map(|_| byte(&mut rng)).collect();
            let want = reference_rows(&c, &src, x0, row_len);
            let mut got = vec![0; want.len()];
            let all = 0..c.bounds.len();
            c.resample_rows(&src, x0, row_len, &mut got, all.clone());
            assert_eq!(got, want, "vertical, case {case}: {in_size} -> {out_size}, rows of {row_len}");
            got.fill(0);
            resample_rows_body(&c, &src, x0, row_len, &mut got, all.clone());
            assert_eq!(got, want, "vertical portable body, case {case}");
            // Each compiled vertical pass the CPU can run, not only the one dispatched.
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    got.fill(0);
                    // SAFETY: the CPU has AVX2 (checked just above).
                    unsafe { super::super::resize_avx2::resample_rows(&c, &src, x0, row_len, &mut got, all.clone()) };
                    assert_eq!(got, want, "vertical AVX2, case {case}");
                }
                if super::super::resize_avx512::available() {
                    got.fill(0);
                    // SAFETY: the CPU has AVX-512 F and BW (checked just above).
                    unsafe { super::super::resize_avx512::resample_rows(&c, &src, x0, row_len, &mut got, all.clone()) };
                    assert_eq!(got, want, "vertical AVX-512, case {case}");
                }
                if c.vnni_vertical && super::super::resize_avx512::vnni_available() {
                    vnni_vertical += 1;
                    got.fill(0);
                    // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked just above) and the
                    // pass takes these taps.
                    unsafe { super::super::resize_avx512::resample_rows_vnni(&c, &src, x0, row_len, &mut got, all) };
                    assert_eq!(got, want, "vertical AVX-512 VNNI, case {case}: {in_size} -> {out_size}, rows of {row_len} {interp:?}");
                }
            }
            // A block of output rows alone (as one task of a parallel run writes it).
            let a = (rng.next_u64() % c.bounds.len() as u64) as usize;
            let b = a + (rng.next_u64() % (c.bounds.len() - a + 1) as u64) as usize;
            let mut part = vec![0; (b - a) * row_len];
            c.resample_rows(&src, x0, row_len, &mut part, a..b);
            assert_eq!(part, want[a * row_len..b * row_len], "vertical rows {a}..{b}, case {case}");
        }
        #[cfg(target_arch = "x86_64")]
        eprintln!(
            "AVX2 {}; AVX-512 {}",
            if std::arch::is_x86_feature_detected!("avx2") { "present: the AVX2 passes were checked" } else { "absent" },
            if super::super::resize_avx512::available() { "present: the AVX-512 passes were checked" } else { "absent" }
        );
        #[cfg(target_arch = "x86_64")]
        if super::super::resize_avx512::gather_available() {
            eprintln!("AVX-512 VBMI + VNNI present: the gathered pass was checked on {gathered} of 300 cases");
            assert!(gathered >= 100, "the gathered pass could take only {gathered} of 300 cases");
        }
        #[cfg(target_arch = "x86_64")]
        if super::super::resize_avx512::vnni_available() {
            eprintln!("AVX-512 VNNI present: the VNNI vertical pass was checked on {vnni_vertical} of 300 cases");
            assert!(vnni_vertical >= 100, "the VNNI vertical pass could take only {vnni_vertical} of 300 cases");
        }
        #[cfg(target_arch = "aarch64")]
        eprintln!("the NEON horizontal pass was checked");
    }
}
