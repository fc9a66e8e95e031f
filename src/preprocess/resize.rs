//! Pillow's `Image.resize` resampling (the separable, antialiased, 8-bit fixed-point convolution of
//! Pillow's `Resample.c`), torchvision's `Resize(int)` size rule and `CenterCrop` offsets, so that
//! the network sees the same uint8 pixels timm's evaluation transform produces.

use super::{Interpolation, PreprocessConfig, PreprocessError};

/// Fixed-point precision of Pillow's 8-bit resampling coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Largest accepted image side.
const MAX_SIDE: usize = 1 << 15;

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

fn nearest_box(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
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
}

impl Coeffs {
    /// Pillow's 8-bit vertical pass: `src` holds rows of `row_len` bytes starting at source row `y0`;
    /// writes one output row of `row_len` bytes per output row into `dst`.
    pub(crate) fn resample_rows(&self, src: &[u8], y0: usize, row_len: usize, dst: &mut [u8]) {
        for (yy, &(ymin, n)) in self.bounds.iter().enumerate() {
            let k = &self.weights[yy * self.ksize..yy * self.ksize + n];
            for (i, d) in dst[yy * row_len..(yy + 1) * row_len].iter_mut().enumerate() {
                let mut acc = 1i64 << (PRECISION_BITS - 1);
                for (y, &w) in k.iter().enumerate() {
                    acc += src[(ymin - y0 + y) * row_len + i] as i64 * w as i64;
                }
                *d = clip8(acc);
            }
        }
    }

    /// Pillow's 8-bit horizontal pass over one packed-RGB row: `src` holds the source row from
    /// column `x0` on (enough columns for every tap); writes one RGB8 pixel per output column to `dst`.
    pub(crate) fn resample_rgb_row(&self, src: &[u8], x0: usize, dst: &mut [u8]) {
        for (xx, &(xmin, n)) in self.bounds.iter().enumerate() {
            let k = &self.weights[xx * self.ksize..xx * self.ksize + n];
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            let base = (xmin - x0) * 3;
            for (x, &w) in k.iter().enumerate() {
                let p = &src[base + x * 3..base + x * 3 + 3];
                acc[0] += p[0] as i64 * w as i64;
                acc[1] += p[1] as i64 * w as i64;
                acc[2] += p[2] as i64 * w as i64;
            }
            dst[xx * 3] = clip8(acc[0]);
            dst[xx * 3 + 1] = clip8(acc[1]);
            dst[xx * 3 + 2] = clip8(acc[2]);
        }
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size → out_size`, keeping only
    /// output pixels `first..first + count`.
    pub(crate) fn compute(&mut self, in_size: usize, out_size: usize, first: usize, count: usize, interp: Interpolation) {
        let (filter, support): (fn(f64) -> f64, f64) = match interp {
            Interpolation::Bicubic => (bicubic, 2.0),
            Interpolation::Bilinear => (triangle, 1.0),
            Interpolation::Nearest => (nearest_box, 0.5),
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
    }
}

#[inline]
fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if v < 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
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

/// torchvision `CenterCrop` offsets `(left, top)`: `int(round((side − crop) / 2))` with Python's
/// round-half-to-even.
pub fn center_crop_offsets(width: usize, height: usize, crop: usize) -> (usize, usize) {
    let off = |side: usize| ((side - crop) as f64 / 2.0).round_ties_even() as usize;
    (off(width), off(height))
}

/// Reusable preprocessing state: coefficient tables and the intermediate image are kept between
/// calls, so classifying frames of one size allocates nothing after the first.
pub struct Preprocessor {
    cfg: PreprocessConfig,
    horizontal: Coeffs,
    vertical: Coeffs,
    key: Option<(usize, usize)>,
    temp: Vec<u8>,
    crop: Vec<u8>,
}

impl Preprocessor {
    /// A preprocessor for one model's configuration.
    pub fn new(cfg: PreprocessConfig) -> Self {
        Preprocessor { cfg, horizontal: Coeffs::default(), vertical: Coeffs::default(), key: None, temp: Vec::new(), crop: Vec::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &PreprocessConfig {
        &self.cfg
    }

    /// Resizes and crops an RGB8 image to the `input_size²` uint8 RGB crop (interleaved), exactly as
    /// Pillow + torchvision do; returns the crop.
    pub fn resize_crop(&mut self, rgb: &[u8], width: usize, height: usize) -> Result<&[u8], PreprocessError> {
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
        let s = self.cfg.input_size;
        let (rw, rh) = resized_size(width, height, self.cfg.resize_size());
        let (left, top) = center_crop_offsets(rw, rh, s);
        let need_h = rw != width;
        let need_v = rh != height;
        if self.key != Some((width, height)) {
            self.horizontal.compute(width, rw, left, s, self.cfg.interpolation);
            self.vertical.compute(height, rh, top, s, self.cfg.interpolation);
            self.key = Some((width, height));
        }
        self.crop.resize(s * s * 3, 0);
        // Rows of the source the kept output rows read (the vertical pass's window).
        let (y0, y1) = if need_v {
            let first = self.vertical.bounds[0].0;
            let last = self.vertical.bounds.iter().map(|&(a, n)| a + n).max().unwrap_or(first);
            (first, last)
        } else {
            (top, top + s)
        };
        // Horizontal pass into temp (rows y0..y1, s columns), uint8 as in Pillow.
        let rows = y1 - y0;
        self.temp.resize(rows * s * 3, 0);
        if need_h {
            let c = &self.horizontal;
            for y in 0..rows {
                let src = &rgb[(y0 + y) * width * 3..(y0 + y + 1) * width * 3];
                c.resample_rgb_row(src, 0, &mut self.temp[y * s * 3..(y + 1) * s * 3]);
            }
        } else {
            for y in 0..rows {
                let src = &rgb[(y0 + y) * width * 3 + left * 3..(y0 + y) * width * 3 + (left + s) * 3];
                self.temp[y * s * 3..(y + 1) * s * 3].copy_from_slice(src);
            }
        }
        // Vertical pass into the crop.
        if need_v {
            self.vertical.resample_rows(&self.temp, y0, s * 3, &mut self.crop);
        } else {
            self.crop.copy_from_slice(&self.temp[..s * s * 3]);
        }
        Ok(&self.crop)
    }

    /// Full preprocessing of an RGB8 image into `out` (`3 × input_size²`, CHW, normalized).
    pub fn run(&mut self, rgb: &[u8], width: usize, height: usize, out: &mut [f32]) -> Result<(), PreprocessError> {
        let s = self.cfg.input_size;
        if out.len() != 3 * s * s {
            return Err(PreprocessError::OutputLen { expected: 3 * s * s, found: out.len() });
        }
        let (mean, std) = (self.cfg.mean, self.cfg.std);
        self.resize_crop(rgb, width, height)?;
        for c in 0..3 {
            let plane = &mut out[c * s * s..(c + 1) * s * s];
            for (o, px) in plane.iter_mut().zip(self.crop.chunks_exact(3)) {
                *o = (px[c] as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        Ok(())
    }
}
