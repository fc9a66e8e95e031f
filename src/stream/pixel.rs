//! Raw camera pixel formats and the fused frame → tensor preprocessing.
//!
//! Frame layouts follow ffmpeg's `rawvideo` with no padding, so `ffmpeg … -f rawvideo -pix_fmt F -`
//! pipes straight in. Odd sizes are allowed: chroma is rounded up like ffmpeg does (4:2:2 rows hold
//! `ceil(w/2)` macropixels; 4:2:0 chroma planes are `ceil(w/2) × ceil(h/2)`). Chroma is sampled by
//! replication (the chroma sample covering a pixel is used as is, no interpolation).
//!
//! [`FramePreprocessor`] turns one frame into the network input in one pass over the source: the
//! colour conversion runs row by row inside the horizontal pass of the same separable Pillow filter
//! [`crate::preprocess::Preprocessor`] uses (same coefficient tables, computed once per frame size),
//! converting only the source rows and columns the center crop reads into a one-row scratch. There is
//! never a full-frame RGB image (except the source rows of the crop when Pillow's order puts the
//! vertical pass first: frames more than twice as tall as wide). For `rgb24` the row is copied as it is, so the tensor is bit-identical to
//! `classify` on the same pixels; for the other formats it is bit-identical to "convert the frame with
//! [`ColorSpec::to_rgb`], then preprocess" ([`frame_to_rgb8`] is that reference).

use crate::preprocess::{Normalizer, Output, Plan, PreprocessConfig, Scratch, Serial, Workers};

use super::StreamError;

/// Largest accepted frame side.
pub const MAX_FRAME_SIDE: usize = 16384;

/// Pixel layout of a raw frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PixelFormat {
    /// Packed 8-bit R, G, B.
    Rgb24,
    /// Packed 8-bit B, G, R.
    Bgr24,
    /// Packed 4:2:2, bytes Y0 U Y1 V (V4L2 `YUYV`, ffmpeg `yuyv422`).
    Yuyv,
    /// Packed 4:2:2, bytes U Y0 V Y1 (V4L2 `UYVY`, ffmpeg `uyvy422`).
    Uyvy,
    /// Planar 4:2:0: Y plane, then interleaved U V plane (V4L2 `NV12`, ffmpeg `nv12`).
    Nv12,
    /// Planar 4:2:0: Y, U, V planes (V4L2 `YU12`, ffmpeg `yuv420p`).
    I420,
}

impl PixelFormat {
    /// Every format, in the order `--pixel-format` lists them.
    pub const ALL: [PixelFormat; 6] =
        [PixelFormat::Rgb24, PixelFormat::Bgr24, PixelFormat::Yuyv, PixelFormat::Uyvy, PixelFormat::Nv12, PixelFormat::I420];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Uyvy => "uyvy",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::I420 => "i420",
        }
    }

    /// Whether the format carries YCbCr (and so depends on [`ColorSpec`]).
    pub fn is_yuv(self) -> bool {
        !matches!(self, PixelFormat::Rgb24 | PixelFormat::Bgr24)
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes of one `width × height` frame in `format` (ffmpeg rawvideo layout, chroma rounded up).
pub fn frame_size(format: PixelFormat, width: usize, height: usize) -> usize {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => width * height * 3,
        PixelFormat::Yuyv | PixelFormat::Uyvy => cw * 4 * height,
        PixelFormat::Nv12 | PixelFormat::I420 => width * height + 2 * cw * ch,
    }
}

/// Bytes of one tightly packed row of the first plane (what V4L2 calls `bytesperline`).
pub fn row_bytes(format: PixelFormat, width: usize) -> usize {
    match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => width * 3,
        PixelFormat::Yuyv | PixelFormat::Uyvy => width.div_ceil(2) * 4,
        PixelFormat::Nv12 | PixelFormat::I420 => width,
    }
}

/// YCbCr → RGB matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorMatrix {
    /// ITU-R BT.601 (SD video, most webcams and JPEG).
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD video).
    Bt709,
}

/// Quantization range of Y, Cb, Cr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorRange {
    /// "TV" range: Y in 16..235, Cb/Cr in 16..240.
    #[default]
    Limited,
    /// "PC"/JPEG range: 0..255.
    Full,
}

/// Fractional bits of the fixed-point colour conversion.
pub(super) const COLOR_BITS: u32 = 16;

/// A colour conversion: matrix plus range, as fixed-point coefficients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorSpec {
    /// The matrix.
    pub matrix: ColorMatrix,
    /// The range.
    pub range: ColorRange,
    y_offset: i32,
    y_scale: i32,
    r_v: i32,
    g_u: i32,
    g_v: i32,
    b_u: i32,
}

impl Default for ColorSpec {
    fn default() -> Self {
        ColorSpec::new(ColorMatrix::Bt601, ColorRange::Limited)
    }
}

impl ColorSpec {
    /// Fixed-point coefficients for `matrix` and `range`.
    pub fn new(matrix: ColorMatrix, range: ColorRange) -> Self {
        let [y_offset, ys, r_v, g_u, g_v, b_u] = Self::float_coefficients(matrix, range);
        let fx = |v: f64| (v * (1u32 << COLOR_BITS) as f64).round() as i32;
        ColorSpec { matrix, range, y_offset: y_offset as i32, y_scale: fx(ys), r_v: fx(r_v), g_u: fx(g_u), g_v: fx(g_v), b_u: fx(b_u) }
    }

    /// `[y_offset, y_scale, r_v, g_u, g_v, b_u]`: `R = ys·(Y−off) + r_v·(V−128)`,
    /// `G = ys·(Y−off) − g_u·(U−128) − g_v·(V−128)`, `B = ys·(Y−off) + b_u·(U−128)`.
    pub fn float_coefficients(matrix: ColorMatrix, range: ColorRange) -> [f64; 6] {
        let (kr, kb) = match matrix {
            ColorMatrix::Bt601 => (0.299, 0.114),
            ColorMatrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (y_offset, ys, cs) = match range {
            ColorRange::Limited => (16.0, 255.0 / 219.0, 255.0 / 224.0),
            ColorRange::Full => (0.0, 1.0, 1.0),
        };
        [y_offset, ys, cs * 2.0 * (1.0 - kr), cs * 2.0 * kb * (1.0 - kb) / kg, cs * 2.0 * kr * (1.0 - kr) / kg, cs * 2.0 * (1.0 - kb)]
    }

    /// The fixed-point coefficients `[y_offset, y_scale, r_v, g_u, g_v, b_u]` (`COLOR_BITS`
    /// fractional bits) for the SIMD row converters.
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(dead_code))]
    pub(super) fn coefficients(&self) -> [i32; 6] {
        [self.y_offset, self.y_scale, self.r_v, self.g_u, self.g_v, self.b_u]
    }

    /// One pixel, YCbCr → RGB8 (rounded, clamped).
    #[inline(always)]
    pub fn to_rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let c = (y as i32 - self.y_offset) * self.y_scale + (1 << (COLOR_BITS - 1));
        let (d, e) = (u as i32 - 128, v as i32 - 128);
        let clamp = |x: i32| (x >> COLOR_BITS).clamp(0, 255) as u8;
        [clamp(c + self.r_v * e), clamp(c - self.g_u * d - self.g_v * e), clamp(c + self.b_u * d)]
    }
}

/// The chroma of one 4:2:0 row, for the SIMD row converters.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(super) enum Chroma<'a> {
    /// NV12: `U0 V0 U1 V1 …` (one pair per two pixels).
    Interleaved(&'a [u8]),
    /// I420: `U0 U1 …` and `V0 V1 …`.
    Planar(&'a [u8], &'a [u8]),
}

/// Checks a frame geometry and returns its byte size.
pub fn check_geometry(format: PixelFormat, width: usize, height: usize) -> Result<usize, StreamError> {
    if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
        return Err(StreamError::Usage(format!("frame size {width}x{height} is out of range (1..={MAX_FRAME_SIDE} per side)")));
    }
    Ok(frame_size(format, width, height))
}

/// Converts columns `x0..x1` of row `y` of a frame to interleaved RGB8 in `dst` (`3·(x1−x0)` bytes).
/// The frame must hold [`frame_size`] bytes.
#[inline]
#[allow(clippy::too_many_arguments)]
fn convert_row(frame: &[u8], format: PixelFormat, width: usize, height: usize, color: &ColorSpec, y: usize, x0: usize, x1: usize, dst: &mut [u8]) {
    let cw = width.div_ceil(2);
    let px = dst[..(x1 - x0) * 3].chunks_exact_mut(3);
    match format {
        PixelFormat::Rgb24 => dst[..(x1 - x0) * 3].copy_from_slice(&frame[(y * width + x0) * 3..(y * width + x1) * 3]),
        PixelFormat::Bgr24 => {
            let src = &frame[(y * width + x0) * 3..(y * width + x1) * 3];
            for (d, s) in px.zip(src.chunks_exact(3)) {
                d.copy_from_slice(&[s[2], s[1], s[0]]);
            }
        }
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            let row = &frame[y * cw * 4..(y + 1) * cw * 4];
            let (yo, uo, vo) = if format == PixelFormat::Yuyv { (0, 1, 3) } else { (1, 0, 2) };
            let pixel = |x: usize, d: &mut [u8]| {
                let m = &row[(x / 2) * 4..(x / 2) * 4 + 4];
                d.copy_from_slice(&color.to_rgb(m[yo + (x & 1) * 2], m[uo], m[vo]));
            };
            let (mut x, mut px) = (x0, px);
            // An odd first pixel alone, so that the SIMD blocks start on a pair.
            if x % 2 == 1 && x < x1 {
                pixel(x, px.next().expect("one pixel per column"));
                x += 1;
            }
            #[cfg(target_arch = "x86_64")]
            if super::pixel_avx512::available() {
                // SAFETY: the CPU has AVX-512 F, BW, VL and VBMI (checked just above); the
                // function checks its loads' bounds. Exercised by
                // `tests::yuv422_rows_equal_to_rgb_per_pixel`.
                x = unsafe { super::pixel_avx512::yuv422_row(row, [yo, uo, vo], color, x0, x, x1, dst) };
                px = dst[(x - x0) * 3..(x1 - x0) * 3].chunks_exact_mut(3);
            }
            #[cfg(target_arch = "aarch64")]
            {
                // SAFETY: NEON is part of every aarch64 CPU (a base feature of the target); the
                // function checks its loads' bounds. Exercised by the same test.
                x = unsafe { super::pixel_neon::yuv422_row(row, format == PixelFormat::Uyvy, color, x0, x, x1, dst) };
                px = dst[(x - x0) * 3..(x1 - x0) * 3].chunks_exact_mut(3);
            }
            for (x, d) in (x..x1).zip(px) {
                pixel(x, d);
            }
        }
        PixelFormat::Nv12 | PixelFormat::I420 => convert_420_rows(frame, format, width, height, color, y, 1, x0, x1, dst),
    }
}

/// Converts columns `x0..x1` of the `n` rows `y..y + n` of a frame into `dst`, one row of
/// `3·(x1−x0)` bytes after the other: [`convert_row`] on each row, except that the two luma rows
/// of each 4:2:0 chroma row are converted together.
#[inline]
#[allow(clippy::too_many_arguments)]
fn convert_rows(frame: &[u8], format: PixelFormat, width: usize, height: usize, color: &ColorSpec, y: usize, n: usize, x0: usize, x1: usize, dst: &mut [u8]) {
    let stride = 3 * (x1 - x0);
    let mut r = 0;
    while r < n {
        let row = y + r;
        let pair = matches!(format, PixelFormat::Nv12 | PixelFormat::I420) && row.is_multiple_of(2) && r + 1 < n;
        let rows = if pair { 2 } else { 1 };
        let dst = &mut dst[r * stride..(r + rows) * stride];
        if pair {
            convert_420_rows(frame, format, width, height, color, row, 2, x0, x1, dst);
        } else {
            convert_row(frame, format, width, height, color, row, x0, x1, dst);
        }
        r += rows;
    }
}

/// The 4:2:0 case of [`convert_rows`]: `rows` (1, or 2 from an even `y`) luma rows of one chroma
/// row.
#[inline]
#[allow(clippy::too_many_arguments)]
fn convert_420_rows(frame: &[u8], format: PixelFormat, width: usize, height: usize, color: &ColorSpec, y: usize, rows: usize, x0: usize, x1: usize, dst: &mut [u8]) {
    debug_assert!(rows == 1 || (rows == 2 && y.is_multiple_of(2)));
    let (cw, stride) = (width.div_ceil(2), 3 * (x1 - x0));
    let lumas = [y, (y + 1).min(height - 1)].map(|y| &frame[y * width..(y + 1) * width]);
    let lumas = &lumas[..rows];
    let chroma = &frame[width * height..];
    let (ch, cy) = (height.div_ceil(2), y / 2);
    let (uv, u, v) = if format == PixelFormat::Nv12 {
        (&chroma[cy * cw * 2..(cy + 1) * cw * 2], &[][..], &[][..])
    } else {
        (&[][..], &chroma[cy * cw..(cy + 1) * cw], &chroma[cw * ch + cy * cw..cw * ch + (cy + 1) * cw])
    };
    // Pixel x of luma row r, alone.
    let pixel = |r: usize, x: usize, dst: &mut [u8]| {
        let (u, v) = if format == PixelFormat::Nv12 { (uv[(x / 2) * 2], uv[(x / 2) * 2 + 1]) } else { (u[x / 2], v[x / 2]) };
        dst[r * stride + (x - x0) * 3..][..3].copy_from_slice(&color.to_rgb(lumas[r][x], u, v));
    };
    let mut x = x0;
    // An odd first pixel alone, so that the SIMD blocks start on a pair.
    if x % 2 == 1 && x < x1 {
        for r in 0..rows {
            pixel(r, x, dst);
        }
        x += 1;
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let c = if format == PixelFormat::Nv12 { Chroma::Interleaved(uv) } else { Chroma::Planar(u, v) };
        #[cfg(target_arch = "x86_64")]
        if super::pixel_avx512::available() {
            // SAFETY: the CPU has AVX-512 F, BW, VL and VBMI (checked just above); the function
            // checks its loads' bounds. Exercised by `tests::yuv420_rows_equal_to_rgb_per_pixel`
            // and `tests::runs_of_rows_equal_single_rows`.
            x = unsafe { super::pixel_avx512::yuv420_rows(lumas, &c, color, x0, x, x1, dst) };
        } else if std::arch::is_x86_feature_detected!("avx2") {
            let start = x;
            for (r, luma) in lumas.iter().enumerate() {
                // SAFETY: the CPU has AVX2 (checked just above); the function checks its loads'
                // bounds. Exercised by `tests::yuv420_rows_equal_to_rgb_per_pixel`.
                x = unsafe { super::pixel_avx2::yuv420_row(luma, &c, color, x0, start, x1, &mut dst[r * stride..(r + 1) * stride]) };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            let start = x;
            for (r, luma) in lumas.iter().enumerate() {
                // SAFETY: NEON is part of every aarch64 CPU (a base feature of the target); the
                // function checks its loads' bounds. Exercised by the same test.
                x = unsafe { super::pixel_neon::yuv420_row(luma, &c, color, x0, start, x1, &mut dst[r * stride..(r + 1) * stride]) };
            }
        }
    }
    for x in x..x1 {
        for r in 0..rows {
            pixel(r, x, dst);
        }
    }
}

/// Reference conversion of a whole frame to interleaved RGB8 (allocates; for tests and tools).
pub fn frame_to_rgb8(frame: &[u8], format: PixelFormat, width: usize, height: usize, color: &ColorSpec) -> Result<Vec<u8>, StreamError> {
    let expected = check_geometry(format, width, height)?;
    if frame.len() != expected {
        return Err(StreamError::FrameSize { expected, found: frame.len(), format, width, height });
    }
    let mut rgb = vec![0u8; width * height * 3];
    for (y, row) in rgb.chunks_exact_mut(width * 3).enumerate() {
        convert_row(frame, format, width, height, color, y, 0, width, row);
    }
    Ok(rgb)
}

/// Fused raw frame → network input for one frame geometry: colour conversion, Pillow-exact resize,
/// center crop and normalization in one pass. All tables and scratch are allocated in
/// [`FramePreprocessor::new`]; [`FramePreprocessor::run`] allocates nothing.
pub struct FramePreprocessor {
    cfg: PreprocessConfig,
    /// The normalization's tables (and arithmetic), made once.
    normalizer: Normalizer,
    format: PixelFormat,
    width: usize,
    height: usize,
    color: ColorSpec,
    /// Resize/crop taps and the source span the crop reads, shared with `classify`'s preprocessor.
    plan: Plan,
    scratch: Scratch,
    /// The RGB8 crop, for [`Self::resize_crop`] only (made on its first call).
    crop: Vec<u8>,
}

impl FramePreprocessor {
    /// Precomputes the filter taps for `width × height` frames in `format`.
    pub fn new(cfg: &PreprocessConfig, format: PixelFormat, width: usize, height: usize, color: ColorSpec) -> Result<Self, StreamError> {
        check_geometry(format, width, height)?;
        let plan = Plan::new(cfg, width, height).map_err(|e| StreamError::Usage(format!("frame size {width}x{height}: {e}")))?;
        Ok(FramePreprocessor { cfg: cfg.clone(), normalizer: Normalizer::new(cfg), format, width, height, color, scratch: plan.scratch(), crop: Vec::new(), plan })
    }

    /// Bytes one frame must have.
    pub fn frame_len(&self) -> usize {
        frame_size(self.format, self.width, self.height)
    }

    /// The resized and cropped `input_size²` RGB8 image of a frame (interleaved), made on
    /// `workers`: what [`run`](Self::run) normalizes (and does not keep).
    pub fn resize_crop(&mut self, frame: &[u8], workers: &dyn Workers) -> Result<&[u8], StreamError> {
        self.check_frame(frame)?;
        self.crop.resize(self.cfg.input_size.pow(2) * 3, 0);
        self.run_plan(frame, workers, None);
        Ok(&self.crop)
    }

    /// Preprocesses one frame into `out` (`3 × input_size²`, CHW, normalized).
    pub fn run(&mut self, frame: &[u8], out: &mut [f32]) -> Result<(), StreamError> {
        self.run_on(frame, out, &Serial)
    }

    /// [`Self::run`] with its row blocks on `workers` (e.g. [`crate::engine::Engine::workers`]);
    /// the same values.
    pub fn run_on(&mut self, frame: &[u8], out: &mut [f32], workers: &dyn Workers) -> Result<(), StreamError> {
        let s = self.cfg.input_size;
        self.check_frame(frame)?;
        if out.len() != 3 * s * s {
            return Err(StreamError::Usage(format!("input buffer has {} values, expected {}", out.len(), 3 * s * s)));
        }
        self.run_plan(frame, workers, Some(out));
        Ok(())
    }

    fn check_frame(&self, frame: &[u8]) -> Result<(), StreamError> {
        if frame.len() != self.frame_len() {
            return Err(StreamError::FrameSize { expected: self.frame_len(), found: frame.len(), format: self.format, width: self.width, height: self.height });
        }
        Ok(())
    }

    /// The plan on a frame of the right length: normalized into `out`, or else into the crop.
    fn run_plan(&mut self, frame: &[u8], workers: &dyn Workers, out: Option<&mut [f32]>) {
        let cols = self.plan.source_columns();
        let (format, width, height, color) = (self.format, self.width, self.height, &self.color);
        let output = match out {
            Some(out) => Output::Normalized(&self.normalizer, out),
            None => Output::Crop(&mut self.crop),
        };
        // Only the source pixels the crop reads are converted to RGB8, a row (or a 4:2:0 pair of
        // rows) at a time; each few crop rows are normalized as they are made.
        self.plan.run(&mut self.scratch, workers, |y, n, dst| convert_rows(frame, format, width, height, color, y, n, cols.start, cols.end, dst), output);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{Interpolation, Preprocessor};

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::model::synthetic::Rng::new(seed);
        (0..n).map(|_| (rng.next_u64() >> 56) as u8).collect()
    }

    /// One random row-conversion case: a `w × h` noise frame in one of `formats`, a row `y`, the
    /// columns `x0..x1`, and what `convert_row` made of them.
    struct RowCase {
        w: usize,
        h: usize,
        format: PixelFormat,
        color: ColorSpec,
        frame: Vec<u8>,
        y: usize,
        x0: usize,
        x1: usize,
        got: Vec<u8>,
    }

    impl RowCase {
        fn new(rng: &mut crate::model::synthetic::Rng, case: usize, formats: [PixelFormat; 2]) -> RowCase {
            let specs = [ColorMatrix::Bt601, ColorMatrix::Bt709].map(|m| [ColorRange::Limited, ColorRange::Full].map(|r| ColorSpec::new(m, r)));
            let (w, h) = (1 + (rng.next_u64() % 130) as usize, 1 + (rng.next_u64() % 9) as usize);
            // Every format × matrix × range over each 8 cases.
            let (format, color) = (formats[case % 2], specs[case / 2 % 2][case / 4 % 2]);
            let frame = noise(frame_size(format, w, h), case as u64);
            let y = (rng.next_u64() % h as u64) as usize;
            let x0 = (rng.next_u64() % w as u64) as usize;
            let x1 = x0 + 1 + (rng.next_u64() % (w - x0) as u64) as usize;
            let mut got = vec![0u8; (x1 - x0) * 3];
            convert_row(&frame, format, w, h, &color, y, x0, x1, &mut got);
            RowCase { w, h, format, color, frame, y, x0, x1, got }
        }
    }

    #[test]
    fn yuv420_rows_equal_to_rgb_per_pixel() {
        // The row converter (SIMD blocks where the CPU has them, the scalar pixel loop around
        // them) against `to_rgb` per pixel, on random sizes, rows and column windows.
        let mut rng = crate::model::synthetic::Rng::new(5);
        for case in 0..400 {
            let RowCase { w, h, format, color, frame, y, x0, x1, got } = RowCase::new(&mut rng, case, [PixelFormat::Nv12, PixelFormat::I420]);
            let color = &color;
            let cw = w.div_ceil(2);
            let chroma = &frame[w * h..];
            for x in x0..x1 {
                let (u, v) = match format {
                    PixelFormat::Nv12 => (chroma[(y / 2) * cw * 2 + (x / 2) * 2], chroma[(y / 2) * cw * 2 + (x / 2) * 2 + 1]),
                    _ => (chroma[(y / 2) * cw + x / 2], chroma[cw * h.div_ceil(2) + (y / 2) * cw + x / 2]),
                };
                let want = color.to_rgb(frame[y * w + x], u, v);
                assert_eq!(&got[(x - x0) * 3..(x - x0) * 3 + 3], &want, "case {case}: {format:?} {w}x{h}, row {y}, columns {x0}..{x1}, pixel {x}");
            }
            // Each x86-64 block converter the CPU can run, not only the one dispatched: the pixels
            // it converts (from the first even column on) equal the whole row's conversion.
            #[cfg(target_arch = "x86_64")]
            {
                let luma = &frame[y * w..(y + 1) * w];
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                let c = match format {
                    PixelFormat::Nv12 => Chroma::Interleaved(&chroma[(y / 2) * cw * 2..(y / 2 + 1) * cw * 2]),
                    _ => Chroma::Planar(&chroma[(y / 2) * cw..(y / 2 + 1) * cw], &chroma[cw * ch + (y / 2) * cw..cw * ch + (y / 2 + 1) * cw]),
                };
                let start = x0.next_multiple_of(2).min(x1);
                type Converter = unsafe fn(&[u8], &Chroma, &ColorSpec, usize, usize, usize, &mut [u8]) -> usize;
                let converters: [(&str, bool, Converter); 2] = [
                    ("AVX2", std::arch::is_x86_feature_detected!("avx2"), super::super::pixel_avx2::yuv420_row),
                    ("AVX-512", super::super::pixel_avx512::available(), super::super::pixel_avx512::yuv420_row),
                ];
                for (name, present, convert) in converters {
                    if present {
                        let mut part = vec![0u8; (x1 - x0) * 3];
                        // SAFETY: the CPU has the converter's instruction set (checked just above).
                        let end = unsafe { convert(luma, &c, color, x0, start, x1, &mut part) };
                        assert!(end >= start && end <= x1 && (x1 - end < 16 || end + 16 > luma.len()), "{name}: stopped at {end} of {start}..{x1}, case {case}");
                        assert_eq!(part[(start - x0) * 3..(end - x0) * 3], got[(start - x0) * 3..(end - x0) * 3], "{name}, case {case}: {format:?} {w}x{h}, row {y}, columns {start}..{end}");
                    }
                }
            }
        }
    }

    #[test]
    fn runs_of_rows_equal_single_rows() {
        // `convert_rows` (which converts the two luma rows of a 4:2:0 chroma row together) against
        // `convert_row` on each row, for every format, on random sizes (odd ones included), runs
        // starting on even and odd rows, and column windows.
        let mut rng = crate::model::synthetic::Rng::new(11);
        let formats = [PixelFormat::Nv12, PixelFormat::I420, PixelFormat::Yuyv, PixelFormat::Rgb24];
        for case in 0..300 {
            let format = formats[case % formats.len()];
            let color = ColorSpec::new(if case % 2 == 0 { ColorMatrix::Bt601 } else { ColorMatrix::Bt709 }, ColorRange::Limited);
            let (w, h) = (1 + (rng.next_u64() % 140) as usize, 1 + (rng.next_u64() % 9) as usize);
            let frame = noise(frame_size(format, w, h), case as u64);
            let y = (rng.next_u64() % h as u64) as usize;
            let n = 1 + (rng.next_u64() % (h - y) as u64) as usize;
            let x0 = (rng.next_u64() % w as u64) as usize;
            let x1 = x0 + 1 + (rng.next_u64() % (w - x0) as u64) as usize;
            let stride = 3 * (x1 - x0);
            let mut got = vec![0u8; n * stride];
            convert_rows(&frame, format, w, h, &color, y, n, x0, x1, &mut got);
            for r in 0..n {
                let mut want = vec![0u8; stride];
                convert_row(&frame, format, w, h, &color, y + r, x0, x1, &mut want);
                assert_eq!(got[r * stride..(r + 1) * stride], want, "case {case}: {format:?} {w}x{h}, rows {y}..{}, row {}, columns {x0}..{x1}", y + n, y + r);
            }
        }
    }

    #[test]
    fn yuv422_rows_equal_to_rgb_per_pixel() {
        // The row converter (AVX-512 or NEON blocks of 32 where the CPU has them, the scalar pixel
        // loop around them) against `to_rgb` per pixel, on random sizes, rows and column windows.
        let mut rng = crate::model::synthetic::Rng::new(7);
        for case in 0..400 {
            let RowCase { w, h, format, color, frame, y, x0, x1, got } = RowCase::new(&mut rng, case, [PixelFormat::Yuyv, PixelFormat::Uyvy]);
            let row = &frame[y * w.div_ceil(2) * 4..];
            let (yo, uo, vo) = if format == PixelFormat::Yuyv { (0, 1, 3) } else { (1, 0, 2) };
            for x in x0..x1 {
                let m = &row[(x / 2) * 4..(x / 2) * 4 + 4];
                let want = color.to_rgb(m[yo + (x & 1) * 2], m[uo], m[vo]);
                assert_eq!(&got[(x - x0) * 3..(x - x0) * 3 + 3], &want, "case {case}: {format:?} {w}x{h}, row {y}, columns {x0}..{x1}, pixel {x}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        eprintln!("AVX-512 VBMI {}", if super::super::pixel_avx512::available() { "present: the AVX-512 converter was checked" } else { "absent: only the scalar converter was checked" });
    }

    /// The AVX-512 converter's 16-bit split products, on every (Y, U, V) of every colour spec.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_converter_is_exact_on_every_yuv_triple() {
        if !super::super::pixel_avx512::available() {
            eprintln!("AVX-512 VBMI absent: not checked");
            return;
        }
        // One row per V: pixel pair j has U = j / 128 and Y = 2·(j % 128), 2·(j % 128) + 1.
        let width = 2 * 128 * 256;
        let luma: Vec<u8> = (0..width).map(|x| (x % 256) as u8).collect();
        let mut rgb = vec![0u8; 3 * width];
        for matrix in [ColorMatrix::Bt601, ColorMatrix::Bt709] {
            for range in [ColorRange::Limited, ColorRange::Full] {
                let color = ColorSpec::new(matrix, range);
                for v in 0..=255u8 {
                    let uv: Vec<u8> = (0..width / 2).flat_map(|j| [(j / 128) as u8, v]).collect();
                    // SAFETY: the CPU has AVX-512 F, BW, VL and VBMI (checked above).
                    let end = unsafe { super::super::pixel_avx512::yuv420_row(&luma, &Chroma::Interleaved(&uv), &color, 0, 0, width, &mut rgb) };
                    assert_eq!(end, width);
                    for (x, px) in rgb.chunks_exact(3).enumerate() {
                        let u = (x / 256) as u8;
                        assert_eq!(px, color.to_rgb(luma[x], u, v), "{matrix:?} {range:?}: Y {} U {u} V {v}", luma[x]);
                    }
                }
            }
        }
    }

    #[test]
    fn frame_sizes_follow_ffmpeg_rawvideo() {
        // ffmpeg -s 5x3: yuv420p 15 + 2·(3·2) = 27, nv12 the same, yuyv422 3·4·3 = 36, rgb24 45.
        assert_eq!(frame_size(PixelFormat::I420, 5, 3), 27);
        assert_eq!(frame_size(PixelFormat::Nv12, 5, 3), 27);
        assert_eq!(frame_size(PixelFormat::Yuyv, 5, 3), 36);
        assert_eq!(frame_size(PixelFormat::Uyvy, 640, 480), 614_400);
        assert_eq!(frame_size(PixelFormat::Rgb24, 5, 3), 45);
        assert_eq!(frame_size(PixelFormat::Nv12, 640, 480), 460_800);
    }

    #[test]
    fn fixed_point_conversion_is_within_one_level_of_the_float_formula() {
        for matrix in [ColorMatrix::Bt601, ColorMatrix::Bt709] {
            for range in [ColorRange::Limited, ColorRange::Full] {
                let spec = ColorSpec::new(matrix, range);
                let [off, ys, rv, gu, gv, bu] = ColorSpec::float_coefficients(matrix, range);
                let mut worst = 0f64;
                for y in 0..=255u8 {
                    for u in 0..=255u8 {
                        for v in (0..=255u8).step_by(3) {
                            let (c, d, e) = ((y as f64 - off) * ys, u as f64 - 128.0, v as f64 - 128.0);
                            let want = [c + rv * e, c - gu * d - gv * e, c + bu * d].map(|x| x.round().clamp(0.0, 255.0));
                            let got = spec.to_rgb(y, u, v);
                            for ch in 0..3 {
                                worst = worst.max((got[ch] as f64 - want[ch]).abs());
                            }
                        }
                    }
                }
                assert!(worst <= 1.0, "{matrix:?}/{range:?}: {worst} levels off");
            }
        }
        // Anchors: limited-range black and white; full-range grey passes through.
        let s = ColorSpec::default();
        assert_eq!(s.to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(s.to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(ColorSpec::new(ColorMatrix::Bt709, ColorRange::Full).to_rgb(77, 128, 128), [77, 77, 77]);
    }

    #[test]
    fn rgb24_is_bit_identical_to_the_image_preprocessor() {
        for (w, h) in [(320, 240), (97, 61), (224, 224), (250, 250), (500, 333), (61, 200)] {
            for interp in [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest] {
                let cfg = PreprocessConfig { interpolation: interp, ..PreprocessConfig::augreg(32) };
                let rgb = noise(w * h * 3, (w * h) as u64);
                let mut want = vec![0f32; 3 * 32 * 32];
                Preprocessor::new(cfg.clone()).run(&rgb, w, h, &mut want).unwrap();
                let mut got = vec![0f32; 3 * 32 * 32];
                FramePreprocessor::new(&cfg, PixelFormat::Rgb24, w, h, ColorSpec::default()).unwrap().run(&rgb, &mut got).unwrap();
                assert_eq!(got, want, "{w}x{h} {interp:?}");
            }
        }
    }

    #[test]
    fn row_blocks_on_a_pool_give_the_serial_values() {
        // Horizontal pass first (640x480), vertical first (300x1200: the height shrinks by more than
        // twice the width), padding (crop_pct > 1), no resize along one axis, nearest, and frames
        // too small for more than one block, on pools of 2, 3 and 5 threads.
        let cases = [(640, 480, 0.875f32, Interpolation::Bicubic), (300, 1200, 0.9, Interpolation::Bicubic), (500, 333, 1.3, Interpolation::Bilinear), (224, 300, 1.0, Interpolation::Bicubic), (97, 61, 0.9, Interpolation::Nearest), (33, 35, 0.9, Interpolation::Bicubic)];
        let pools = [2, 3, 5].map(crate::engine::pool::Pool::new);
        for &(w, h, crop_pct, interpolation) in &cases {
            let cfg = PreprocessConfig { crop_pct, interpolation, ..PreprocessConfig::augreg(if w < 64 { 32 } else { 224 }) };
            let s = cfg.input_size;
            for format in [PixelFormat::Nv12, PixelFormat::Rgb24, PixelFormat::Yuyv] {
                let frame = noise(frame_size(format, w, h), w as u64 * 3 + h as u64);
                let mut serial = FramePreprocessor::new(&cfg, format, w, h, ColorSpec::default()).unwrap();
                let mut want = vec![0f32; 3 * s * s];
                serial.run(&frame, &mut want).unwrap();
                // The normalization (fused with the vertical pass, padding rows included) is
                // torchvision's formula on the crop.
                let serial_crop = serial.resize_crop(&frame, &Serial).unwrap().to_vec();
                for (i, px) in serial_crop.chunks_exact(3).enumerate() {
                    for c in 0..3 {
                        let v = (px[c] as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
                        assert_eq!(want[c * s * s + i].to_bits(), v.to_bits(), "{format} {w}x{h}: pixel {i}, channel {c}");
                    }
                }
                let rgb = frame_to_rgb8(&frame, format, w, h, &ColorSpec::default()).unwrap();
                let mut image = Preprocessor::new(cfg.clone());
                for pool in &pools {
                    let mut parallel = FramePreprocessor::new(&cfg, format, w, h, ColorSpec::default()).unwrap();
                    let mut got = vec![f32::NAN; 3 * s * s];
                    for _ in 0..2 {
                        parallel.run_on(&frame, &mut got, pool).unwrap();
                        assert_eq!(parallel.resize_crop(&frame, pool).unwrap(), &serial_crop[..], "{format} {w}x{h}, {} threads", pool.threads());
                        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{format} {w}x{h}, {} threads", pool.threads());
                    }
                    let mut from_image = vec![f32::NAN; 3 * s * s];
                    image.run_on(&rgb, w, h, &mut from_image, pool).unwrap();
                    assert!(from_image.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "image {w}x{h}, {} threads", pool.threads());
                }
            }
        }
    }

    #[test]
    fn fused_yuv_matches_convert_then_preprocess() {
        // No resize along one axis (224 wide at crop 1.0) and odd sizes exercise every branch.
        let cases = [(320, 240, 0.9f32), (97, 61, 0.9), (224, 300, 1.0), (640, 480, 0.875), (33, 35, 0.9), (70, 230, 0.9)];
        for &(w, h, crop_pct) in &cases {
            let cfg = PreprocessConfig { crop_pct, ..PreprocessConfig::augreg(if w < 64 { 32 } else { 224 }) };
            let s = cfg.input_size;
            for format in PixelFormat::ALL {
                for color in [ColorSpec::default(), ColorSpec::new(ColorMatrix::Bt709, ColorRange::Full)] {
                    let frame = noise(frame_size(format, w, h), w as u64 * 7 + h as u64);
                    let rgb = frame_to_rgb8(&frame, format, w, h, &color).unwrap();
                    let mut reference = Preprocessor::new(cfg.clone());
                    let want = reference.resize_crop(&rgb, w, h).unwrap().to_vec();
                    let mut fused = FramePreprocessor::new(&cfg, format, w, h, color).unwrap();
                    let mut out = vec![0f32; 3 * s * s];
                    fused.run(&frame, &mut out).unwrap();
                    let crop = fused.resize_crop(&frame, &Serial).unwrap();
                    let worst = crop.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
                    assert!(worst <= 1, "{format} {w}x{h}: {worst} levels off");
                    assert_eq!(crop, &want[..], "{format} {w}x{h}: the fused path should be exact");
                }
            }
        }
    }

    #[test]
    fn bgr24_swaps_channels() {
        let rgb = noise(40 * 30 * 3, 5);
        let bgr: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        assert_eq!(frame_to_rgb8(&bgr, PixelFormat::Bgr24, 40, 30, &ColorSpec::default()).unwrap(), rgb);
    }

    #[test]
    fn bad_geometry_and_frame_lengths_are_errors() {
        let cfg = PreprocessConfig::augreg(224);
        assert!(FramePreprocessor::new(&cfg, PixelFormat::Nv12, 0, 10, ColorSpec::default()).is_err());
        assert!(FramePreprocessor::new(&cfg, PixelFormat::Nv12, 100_000, 10, ColorSpec::default()).is_err());
        let mut p = FramePreprocessor::new(&cfg, PixelFormat::Nv12, 64, 48, ColorSpec::default()).unwrap();
        let mut out = vec![0f32; 3 * 224 * 224];
        let err = p.run(&[0u8; 100], &mut out).unwrap_err();
        assert!(err.to_string().contains("4608"), "{err}");
    }
}
