//! Image files to RGB8 as timm sees them (`PIL.Image.open(f).convert("RGB")`), within decode limits.
//!
//! JPEG goes through libjpeg-turbo's decoder (the copy in `mozjpeg-sys`, built from source with the
//! C compiler only) with Pillow's settings — islow IDCT and fancy upsampling, libjpeg's defaults —
//! and Pillow's colour rules (grayscale replicated, CMYK inverted and converted with Pillow's
//! formula), through the small C shim `jpeg.c` that turns libjpeg's `longjmp` errors into return
//! codes. PNG goes through the `image` crate. EXIF orientation is not applied (timm does not).
//!
//! Before any pixel buffer exists, the size the header declares is checked against
//! [`DecodeLimits::max_pixels`], so a small file claiming a huge image is refused without a large
//! allocation; libjpeg's own working memory (the coefficient buffers of progressive files) is capped
//! in proportion.

use std::ffi::{c_char, c_int, c_uint, c_ulong};
use std::io::Cursor;
use std::path::Path;

use image::ImageDecoder;

use super::PreprocessError;

// The libjpeg-turbo (mozjpeg) static library the shim links against.
use mozjpeg_sys as _;

/// Default largest image accepted, in pixels: 40 MP covers every Raspberry Pi camera module
/// (12 MP; 64 MP third-party sensors need the flag), webcams and most DSLR and phone photos (24–36 MP),
/// and bounds the decoded RGB buffer to 120 MB.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Limits applied while decoding an image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest `width × height` the file's header may declare.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_pixels: DEFAULT_MAX_PIXELS }
    }
}

impl DecodeLimits {
    /// Bytes of decoder working memory allowed besides the RGB output: 6 bytes per allowed pixel
    /// (a progressive 4:4:4 JPEG keeps 3 × 2-byte coefficients per pixel), plus 16 MiB.
    fn working_memory(&self) -> u64 {
        self.max_pixels.saturating_mul(6).saturating_add(16 << 20)
    }

    /// Checks a declared size; the error names the file, the size and the flag that raises the limit.
    /// Sides beyond what the preprocessing accepts (32768) are refused here too, before decoding.
    pub fn check(&self, path: &str, width: u64, height: u64) -> Result<(), PreprocessError> {
        let pixels = width.saturating_mul(height);
        if width == 0 || height == 0 {
            return Err(PreprocessError::Decode { path: path.into(), reason: format!("the header declares an empty {width}x{height} image") });
        }
        let max_side = super::resize::MAX_SIDE as u64;
        if width > max_side || height > max_side {
            return Err(PreprocessError::Decode {
                path: path.into(),
                reason: format!("the header declares {width}x{height} pixels; vitedge reads images of at most {max_side} pixels per side (resize the image first)"),
            });
        }
        if pixels > self.max_pixels {
            return Err(PreprocessError::TooLarge { path: path.into(), width, height, max_pixels: self.max_pixels });
        }
        Ok(())
    }
}

/// Length of the message buffers of `jpeg.c` (libjpeg's `JMSG_LENGTH_MAX`).
const MSG_LEN: usize = 200;

extern "C" {
    fn vitedge_jpeg_header(data: *const u8, len: c_ulong, width: *mut c_uint, height: *mut c_uint, components: *mut c_int, message: *mut c_char) -> c_int;
    fn vitedge_jpeg_decode_rgb8(data: *const u8, len: c_ulong, max_memory: c_ulong, out: *mut u8, out_len: usize, message: *mut c_char, warning: *mut c_char) -> c_int;
}

fn message(buf: &[u8; MSG_LEN]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(MSG_LEN);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether `bytes` start like a JPEG file (SOI marker followed by another marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF
}

/// Whether `bytes` start with the PNG signature.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// The `(width, height)` a JPEG's header declares, without decoding it.
pub fn jpeg_dimensions(bytes: &[u8], path: &str) -> Result<(usize, usize), PreprocessError> {
    let (mut w, mut h, mut c) = (0 as c_uint, 0 as c_uint, 0 as c_int);
    let mut msg = [0u8; MSG_LEN];
    let len = c_ulong::try_from(bytes.len()).map_err(|_| PreprocessError::Decode { path: path.into(), reason: "file too large".into() })?;
    // SAFETY: `bytes` is valid for `len` bytes and only read; the out-pointers point at live locals;
    // `msg` has the MSG_LEN bytes the shim writes at most (snprintf / format_message bound them).
    let rc = unsafe { vitedge_jpeg_header(bytes.as_ptr(), len, &mut w, &mut h, &mut c, msg.as_mut_ptr().cast()) };
    if rc != 0 {
        return Err(PreprocessError::Decode { path: path.into(), reason: message(&msg) });
    }
    Ok((w as usize, h as usize))
}

/// Decodes a JPEG to RGB8 exactly as Pillow (libjpeg-turbo) + `convert("RGB")` does.
pub fn decode_jpeg(bytes: &[u8], path: &str, limits: &DecodeLimits) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
    let (w, h) = jpeg_dimensions(bytes, path)?;
    limits.check(path, w as u64, h as u64)?;
    let mut rgb = vec![0u8; w * h * 3];
    let mut msg = [0u8; MSG_LEN];
    let mut warning = [0u8; MSG_LEN];
    let max_memory = c_ulong::try_from(limits.working_memory()).unwrap_or(c_ulong::MAX);
    // SAFETY: `bytes` is only read, for its length; `rgb` is a live buffer of exactly `rgb.len()`
    // bytes, which the shim checks against the header's size before writing rows into it; the
    // message buffers have the MSG_LEN bytes the shim writes at most. libjpeg's longjmp never
    // leaves the C function (setjmp is in the same C frame).
    let rc = unsafe {
        vitedge_jpeg_decode_rgb8(bytes.as_ptr(), bytes.len() as c_ulong, max_memory, rgb.as_mut_ptr(), rgb.len(), msg.as_mut_ptr().cast(), warning.as_mut_ptr().cast())
    };
    if rc != 0 {
        let mut reason = message(&msg);
        if reason.contains("Backing store") || reason.contains("Insufficient memory") {
            reason = format!(
                "decoding needs more than {} MiB of working memory ({reason}); a larger --max-pixels raises the limit",
                limits.working_memory() >> 20
            );
        } else if reason.contains("Premature end") {
            reason = format!("{reason}: the file is truncated");
        }
        return Err(PreprocessError::Decode { path: path.into(), reason });
    }
    let warning = message(&warning);
    if !warning.is_empty() {
        log::warn!("{path}: {warning} (decoded anyway, as Pillow does)");
    }
    Ok((rgb, w, h))
}

/// Refuses a PNG whose palette (`PLTE` chunk) is not a whole number of 3-byte entries.
///
/// The `png` crate (0.18.1, the newest) accepts such a chunk when it is 4..=768 bytes long and then
/// panics building its palette table (`transform/palette.rs`: a slice past the last whole entry).
/// The walk only reads chunk headers; a damaged chunk list is left to the decoder to report.
fn check_png_palette(bytes: &[u8]) -> Result<(), String> {
    let mut at = 8;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if &header[4..8] == b"PLTE" && !len.is_multiple_of(3) {
            return Err(format!(
                "the PNG palette (PLTE chunk) is {len} bytes, not a whole number of 3-byte RGB entries: the file is damaged; re-encode it (e.g. with Pillow or ImageMagick)"
            ));
        }
        if &header[4..8] == b"IEND" {
            break;
        }
        // length, type, data, CRC
        at = match at.checked_add(12).and_then(|a| a.checked_add(len)) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(())
}

/// PNG to RGB8 with Pillow's `convert("RGB")` rules: alpha dropped, gray replicated, 16-bit
/// samples reduced to their high byte.
fn decode_png(bytes: &[u8], path: &str, limits: &DecodeLimits) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
    check_png_palette(bytes).map_err(|reason| PreprocessError::Decode { path: path.into(), reason })?;
    let err = |e: image::ImageError| PreprocessError::Decode { path: path.into(), reason: e.to_string() };
    let mut image_limits = image::Limits::default();
    // The largest buffer the decoder may hold: 16-bit RGBA at the pixel limit.
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(16 << 20));
    let decoder = image::codecs::png::PngDecoder::with_limits(Cursor::new(bytes), image_limits).map_err(err)?;
    let (w, h) = decoder.dimensions();
    limits.check(path, w as u64, h as u64)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(err)?;
    let (w, h) = (w as usize, h as usize);
    use image::DynamicImage as D;
    let rgb = match img {
        D::ImageRgb8(i) => i.into_raw(),
        D::ImageRgba8(i) => i.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        D::ImageLuma8(i) => i.into_raw().into_iter().flat_map(|v| [v; 3]).collect(),
        D::ImageLumaA8(i) => i.into_raw().chunks_exact(2).flat_map(|p| [p[0]; 3]).collect(),
        D::ImageRgb16(i) => i.into_raw().into_iter().map(|v| (v >> 8) as u8).collect(),
        D::ImageRgba16(i) => i.into_raw().chunks_exact(4).flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]).collect(),
        // Pillow opens 16-bit gray as mode I;16 and clamps to 0..255 when converting to RGB.
        D::ImageLuma16(i) => i.into_raw().into_iter().flat_map(|v| [v.min(255) as u8; 3]).collect(),
        D::ImageLumaA16(i) => i.into_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect(),
        other => other.to_rgb8().into_raw(),
    };
    Ok((rgb, w, h))
}

/// Decodes JPEG or PNG bytes (recognized by their signature) to RGB8 `(pixels, width, height)`.
pub fn decode_rgb8(bytes: &[u8], path: &str, limits: &DecodeLimits) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
    if is_jpeg(bytes) {
        decode_jpeg(bytes, path, limits)
    } else if is_png(bytes) {
        decode_png(bytes, path, limits)
    } else {
        Err(PreprocessError::Decode { path: path.into(), reason: "not a JPEG or PNG file (vitedge reads those two formats)".into() })
    }
}

/// Reads and decodes a JPEG or PNG file to RGB8.
pub fn load_rgb8_with(path: &Path, limits: &DecodeLimits) -> Result<(Vec<u8>, usize, usize), PreprocessError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PreprocessError::Decode { path: shown.clone(), reason: e.to_string() })?;
    decode_rgb8(&bytes, &shown, limits)
}
