//! Image preprocessing identical to timm's evaluation transform: resize the shorter side with the
//! model's interpolation to `input_size / crop_pct`, center-crop `input_size`, scale to 0..1,
//! normalize with mean and std, CHW layout.

mod resize;

use serde::{Deserialize, Serialize};

pub use resize::{center_crop_offsets, resized_size, Preprocessor};
/// Pillow's coefficient tables, shared with the fused camera-frame path (`crate::stream`).
pub(crate) use resize::Coeffs;

/// Resampling filter used by the resize step (PIL semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// PIL `BICUBIC` (a = -0.5, antialiased when downscaling).
    Bicubic,
    /// PIL `BILINEAR` (triangle filter, antialiased when downscaling).
    Bilinear,
    /// PIL `NEAREST`.
    Nearest,
}

/// Preprocessing parameters a model was trained with; stored in the blob header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Side of the square network input.
    pub input_size: usize,
    /// Fraction of the resized image kept by the center crop (timm `crop_pct`).
    pub crop_pct: f32,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// Per-channel mean (RGB, on the 0..1 scale).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB, on the 0..1 scale).
    pub std: [f32; 3],
}

impl PreprocessConfig {
    /// timm's ImageNet defaults for augreg ViTs: bicubic, crop_pct 0.9, mean = std = 0.5.
    pub fn augreg(input_size: usize) -> Self {
        PreprocessConfig {
            input_size,
            crop_pct: 0.9,
            interpolation: Interpolation::Bicubic,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// timm's DeiT defaults: bicubic, crop_pct 0.875, ImageNet mean/std.
    pub fn deit(input_size: usize) -> Self {
        PreprocessConfig {
            input_size,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Side the shorter image edge is resized to before cropping: `floor(input_size / crop_pct)`.
    /// (`crop_pct` is stored as f32; a tiny epsilon keeps e.g. 32 / (32/36) at 36 as in Python.)
    pub fn resize_size(&self) -> usize {
        (self.input_size as f64 / self.crop_pct as f64 + 1e-4).floor() as usize
    }

    /// Checks the parameters are usable.
    pub fn validate(&self) -> Result<(), String> {
        if self.input_size == 0 || self.input_size > 4096 {
            return Err(format!("input_size {} is out of range", self.input_size));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!("crop_pct {} must be in (0, 1]", self.crop_pct));
        }
        if self.std.iter().any(|s| !(*s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("mean {:?} / std {:?} are not usable", self.mean, self.std));
        }
        Ok(())
    }
}

/// Errors of image loading and preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The image file could not be read or decoded.
    #[error("cannot decode image {path}: {reason}")]
    Decode { path: String, reason: String },
    /// Pixel buffer and dimensions disagree, or the image is empty.
    #[error("bad image: {0}")]
    BadImage(String),
    /// The output buffer has the wrong length.
    #[error("output buffer has {found} values, expected {expected}")]
    OutputLen { expected: usize, found: usize },
}

/// Preprocesses an interleaved RGB8 image (`width × height × 3` bytes) into `out`
/// (`3 × input_size × input_size`, CHW, normalized). Allocates scratch; see [`Preprocessor`] to reuse it.
pub fn preprocess_rgb8(rgb: &[u8], width: usize, height: usize, cfg: &PreprocessConfig, out: &mut [f32]) -> Result<(), PreprocessError> {
    Preprocessor::new(cfg.clone()).run(rgb, width, height, out)
}

/// Decodes a JPEG or PNG file to RGB8 (`(pixels, width, height)`).
pub fn load_rgb8(path: &std::path::Path) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| PreprocessError::Decode { path: path.display().to_string(), reason: e.to_string() })?
        .decode()
        .map_err(|e| PreprocessError::Decode { path: path.display().to_string(), reason: e.to_string() })?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Ok((rgb.into_raw(), w as usize, h as usize))
}

/// Decodes and preprocesses an image file into `out`.
pub fn preprocess_file(path: &std::path::Path, cfg: &PreprocessConfig, out: &mut [f32]) -> Result<(), PreprocessError> {
    let (rgb, w, h) = load_rgb8(path)?;
    preprocess_rgb8(&rgb, w, h, cfg, out)
}
