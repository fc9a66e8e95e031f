//! Image preprocessing identical to torchvision/timm evaluation transforms on PIL images: decode
//! like Pillow, resize (torchvision's `Resize` size rules, Pillow's filters), center-crop (padding
//! where the crop is larger), scale to 0..1, normalize with mean and std, CHW layout.

mod decode;
mod parallel;
mod resize;
#[cfg(target_arch = "x86_64")]
mod resize_avx2;
#[cfg(target_arch = "x86_64")]
mod resize_avx512;
#[cfg(target_arch = "aarch64")]
mod resize_neon;

#[cfg(target_arch = "x86_64")]
pub(crate) use resize_avx512::low_bits;
use serde::{Deserialize, Serialize};

pub use decode::{decode_rgb8, is_jpeg, is_png, jpeg_dimensions, load_rgb8_with, DecodeLimits, DEFAULT_MAX_PIXELS};
pub use resize::{center_crop_offsets, resize_output, resized_size, Preprocessor};
pub use parallel::{Serial, Workers};
pub(crate) use resize::{Normalizer, Output, Plan, Scratch};

/// Resampling filter of the resize step: Pillow's filters, as torchvision's `InterpolationMode`
/// selects them for PIL images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// PIL `BICUBIC` (a = -0.5, antialiased when downscaling).
    Bicubic,
    /// PIL `BILINEAR` (triangle filter, antialiased when downscaling).
    Bilinear,
    /// PIL `NEAREST` (also torchvision's `NEAREST_EXACT` on PIL images): the source pixel under
    /// each output pixel's centre, no filtering.
    Nearest,
    /// PIL `BOX` (each output pixel averages the source pixels it covers).
    Box,
    /// PIL `HAMMING`.
    Hamming,
    /// PIL `LANCZOS` (3 lobes).
    Lanczos,
}

impl Interpolation {
    /// Every filter.
    pub const ALL: [Interpolation; 6] =
        [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest, Interpolation::Box, Interpolation::Hamming, Interpolation::Lanczos];

    /// torchvision's name (`InterpolationMode.X.value`, also timm's `interpolation` string).
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bicubic => "bicubic",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Nearest => "nearest",
            Interpolation::Box => "box",
            Interpolation::Hamming => "hamming",
            Interpolation::Lanczos => "lanczos",
        }
    }

    /// Parses torchvision / timm / PIL names (`bicubic`, `InterpolationMode.BICUBIC`, `nearest-exact`,
    /// `Resampling.BICUBIC`, `3`), case-insensitively.
    pub fn parse(s: &str) -> Option<Interpolation> {
        let s = s.trim().trim_matches(|c| c == '\'' || c == '"');
        let s = s.rsplit('.').next().unwrap_or(s).to_ascii_lowercase().replace('_', "-");
        Some(match s.as_str() {
            "bicubic" | "3" => Interpolation::Bicubic,
            "bilinear" | "linear" | "2" => Interpolation::Bilinear,
            "nearest" | "nearest-exact" | "0" => Interpolation::Nearest,
            "box" | "4" => Interpolation::Box,
            "hamming" | "5" => Interpolation::Hamming,
            "lanczos" | "antialias" | "1" => Interpolation::Lanczos,
            _ => return None,
        })
    }
}

/// The resize step, as torchvision's `Resize` (and timm's `ResizeKeepRatio`) compute the output size
/// on a PIL image; the pixels are Pillow's `Image.resize` with [`PreprocessConfig::interpolation`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Resize {
    /// `Resize(size)` with an int: the shorter side becomes `size`, the longer
    /// `int(size · long / short)`; with `max_size`, a longer side above it becomes `max_size` and the
    /// shorter `int(max_size · short / long)`.
    ShorterSide {
        /// Target of the shorter side.
        size: usize,
        /// torchvision's `max_size`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_size: Option<usize>,
    },
    /// `Resize(size=None, max_size=N)` (torchvision v2): the longer side becomes `size`, the shorter
    /// `int(size · short / long)`.
    LongerSide {
        /// Target of the longer side.
        size: usize,
    },
    /// `Resize((height, width))`: exactly this size, aspect ratio not kept ("squash").
    Exact {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
    /// timm's `ResizeKeepRatio((height, width), longest)` (crop_mode `border` uses `longest = 1`):
    /// ratio `r = max(h/H, w/W)·longest + min(h/H, w/W)·(1 − longest)`, output `(round(h / r), round(w / r))`.
    KeepRatio {
        /// Target height.
        height: usize,
        /// Target width.
        width: usize,
        /// Weight of the larger ratio (1: fit inside, 0: cover).
        longest: f64,
    },
}

/// torchvision's `CenterCrop((height, width))`: a centred window; where it extends past the image
/// (an image smaller than the crop) the outside is `fill` (torchvision pads with 0, timm's
/// `CenterCropOrPad` with the mean colour).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenterCrop {
    /// Crop height.
    pub height: usize,
    /// Crop width.
    pub width: usize,
    /// RGB value of pixels outside the image.
    #[serde(default)]
    pub fill: [u8; 3],
}

/// The geometric steps of an evaluation transform: an optional resize, then an optional center crop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    /// Resize step (`None`: the image keeps its size).
    #[serde(default)]
    pub resize: Option<Resize>,
    /// Center crop (`None`: the resized image is the network input as it is).
    #[serde(default)]
    pub center_crop: Option<CenterCrop>,
}

/// How uint8 pixels become floats on 0..1 before `Normalize` (the two torchvision spellings round
/// differently in the last bit for about half of the 256 values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// `ToTensor()` / `ConvertImageDtype(torch.float32)`: `v / 255` in f32.
    #[default]
    Divide,
    /// torchvision v2 `ToDtype(torch.float32, scale=True)`: `v · f32(1/255)`.
    Reciprocal,
}

impl Scaling {
    fn is_default(&self) -> bool {
        *self == Scaling::Divide
    }
}

/// Preprocessing parameters a model was trained with; stored in the blob header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Side of the square network input.
    pub input_size: usize,
    /// Fraction of the resized image kept by the center crop (timm `crop_pct`). Defines the resize
    /// when `transform` is absent; informative otherwise.
    pub crop_pct: f32,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// Per-channel mean (RGB, on the 0..1 scale).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB, on the 0..1 scale).
    pub std: [f32; 3],
    /// The resize and crop steps as the user stated them (torchvision transform, timm config).
    /// Absent in blobs written before it existed: then timm's default, the shorter side resized to
    /// `floor(input_size / crop_pct)` and a center crop of `input_size` (see [`Self::steps`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,
    /// uint8 → 0..1 conversion (absent: `ToTensor`'s division).
    #[serde(default, skip_serializing_if = "Scaling::is_default")]
    pub scaling: Scaling,
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
            transform: None,
            scaling: Scaling::Divide,
        }
    }

    /// timm's generic ImageNet defaults (`resolve_data_config` without a pretrained config): bicubic,
    /// crop_pct 0.875, ImageNet mean/std.
    pub fn imagenet(input_size: usize) -> Self {
        PreprocessConfig {
            input_size,
            crop_pct: 0.875,
            interpolation: Interpolation::Bicubic,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            transform: None,
            scaling: Scaling::Divide,
        }
    }

    /// Side the shorter image edge is resized to in timm's center mode: `floor(input_size / crop_pct)`.
    /// (`crop_pct` is stored as f32; a tiny epsilon keeps e.g. 32 / (32/36) at 36 as in Python.)
    pub fn resize_size(&self) -> usize {
        (self.input_size as f64 / self.crop_pct as f64 + 1e-4).floor() as usize
    }

    /// The resize and crop steps in effect: [`Self::transform`], or timm's center mode from `crop_pct`.
    pub fn steps(&self) -> Transform {
        self.transform.clone().unwrap_or_else(|| Transform {
            resize: Some(Resize::ShorterSide { size: self.resize_size(), max_size: None }),
            center_crop: Some(CenterCrop { height: self.input_size, width: self.input_size, fill: [0; 3] }),
        })
    }

    /// The transform in torchvision's words, e.g. `Resize(size=248, interpolation=bicubic),
    /// CenterCrop(size=(224, 224)), ToTensor(), Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))`.
    pub fn describe(&self) -> String {
        let steps = self.steps();
        let mut parts = Vec::new();
        let interp = self.interpolation.name();
        match &steps.resize {
            Some(Resize::ShorterSide { size, max_size: None }) => parts.push(format!("Resize(size={size}, interpolation={interp})")),
            Some(Resize::ShorterSide { size, max_size: Some(m) }) => {
                parts.push(format!("Resize(size={size}, interpolation={interp}, max_size={m})"))
            }
            Some(Resize::LongerSide { size }) => parts.push(format!("Resize(size=None, interpolation={interp}, max_size={size})")),
            Some(Resize::Exact { height, width }) => parts.push(format!("Resize(size=({height}, {width}), interpolation={interp})")),
            Some(Resize::KeepRatio { height, width, longest }) => {
                parts.push(format!("ResizeKeepRatio(size=({height}, {width}), interpolation={interp}, longest={longest})"))
            }
            None => {}
        }
        if let Some(c) = &steps.center_crop {
            if c.fill == [0; 3] {
                parts.push(format!("CenterCrop(size=({}, {}))", c.height, c.width));
            } else {
                parts.push(format!("CenterCropOrPad(size=({}, {}), fill={:?})", c.height, c.width, c.fill));
            }
        }
        let triple = |v: &[f32; 3]| format!("({}, {}, {})", v[0], v[1], v[2]);
        match self.scaling {
            Scaling::Divide => parts.push("ToTensor()".into()),
            Scaling::Reciprocal => parts.push("ToImage(), ToDtype(torch.float32, scale=True)".into()),
        }
        parts.push(format!("Normalize(mean={}, std={})", triple(&self.mean), triple(&self.std)));
        parts.join(", ")
    }

    /// Checks the parameters are usable and that every image becomes an `input_size²` input.
    pub fn validate(&self) -> Result<(), String> {
        if self.input_size == 0 || self.input_size > 4096 {
            return Err(format!("input_size {} is out of range", self.input_size));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!("crop_pct {} must be in (0, 1]", self.crop_pct));
        }
        if self.std.iter().any(|s| !(*s > 0.0 && s.is_finite())) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("mean {:?} / std {:?} are not usable", self.mean, self.std));
        }
        let s = self.input_size;
        let side_ok = |v: usize| (1..=resize::MAX_SIDE).contains(&v);
        let steps = self.steps();
        match &steps.resize {
            Some(Resize::ShorterSide { size, max_size }) => {
                if !side_ok(*size) || max_size.is_some_and(|m| m <= *size || !side_ok(m)) {
                    return Err(format!("Resize size {size} / max_size {max_size:?} out of range (max_size must exceed size)"));
                }
            }
            Some(Resize::LongerSide { size }) if !side_ok(*size) => return Err(format!("Resize max_size {size} out of range")),
            Some(Resize::Exact { height, width }) if !side_ok(*height) || !side_ok(*width) => {
                return Err(format!("Resize size ({height}, {width}) out of range"))
            }
            Some(Resize::KeepRatio { height, width, longest }) => {
                if !side_ok(*height) || !side_ok(*width) || !(0.0..=1.0).contains(longest) {
                    return Err(format!("ResizeKeepRatio size ({height}, {width}) / longest {longest} out of range"));
                }
            }
            _ => {}
        }
        match (&steps.center_crop, &steps.resize) {
            (Some(c), _) if (c.height, c.width) == (s, s) => Ok(()),
            (Some(c), _) => Err(format!("the transform crops {}x{} but the network takes {s}x{s}", c.height, c.width)),
            (None, Some(Resize::Exact { height, width })) if (*height, *width) == (s, s) => Ok(()),
            (None, Some(Resize::Exact { height, width })) => Err(format!("the transform resizes to {height}x{width} but the network takes {s}x{s}")),
            (None, _) => Err(format!(
                "without a CenterCrop({s}) the transform gives image-dependent sizes; the network takes exactly {s}x{s}: add CenterCrop({s}) or Resize(({s}, {s}))"
            )),
        }
    }
}

/// Errors of image loading and preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The image file could not be read or decoded.
    #[error("cannot decode image {path}: {reason}")]
    Decode { path: String, reason: String },
    /// The file's header declares more pixels than the decode limit allows.
    #[error("{path}: the header declares {width}x{height} pixels ({:.1} MP), more than the limit of {max_pixels} ({:.1} MP); if the image is genuine, raise the limit with --max-pixels", (*width as f64) * (*height as f64) / 1e6, *max_pixels as f64 / 1e6)]
    TooLarge { path: String, width: u64, height: u64, max_pixels: u64 },
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

/// Decodes a JPEG or PNG file to RGB8 (`(pixels, width, height)`) like Pillow's
/// `Image.open(path).convert("RGB")`, with the default [`DecodeLimits`].
pub fn load_rgb8(path: &std::path::Path) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
    load_rgb8_with(path, &DecodeLimits::default())
}

/// Decodes and preprocesses an image file into `out`.
pub fn preprocess_file(path: &std::path::Path, cfg: &PreprocessConfig, out: &mut [f32]) -> Result<(), PreprocessError> {
    let (rgb, w, h) = load_rgb8(path)?;
    preprocess_rgb8(&rgb, w, h, cfg, out)
}
