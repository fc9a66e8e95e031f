//! Image decoding (`image_decode`): the bytes of a file through vitedge's decoder as `classify`
//! uses it (`decode_rgb8`: JPEG through libjpeg-turbo via the `jpeg.c` shim, PNG through the
//! `image` crate, the pixel limit checked on the header before any pixel buffer), then the
//! timm preprocessing of the decoded pixels.

use vitedge::preprocess::{decode_rgb8, preprocess_rgb8, DecodeLimits, PreprocessConfig, PreprocessError};

/// Pixel limit while fuzzing: 1 MP keeps one execution short; a header above it must be refused
/// with [`PreprocessError::TooLarge`] before decoding, exactly as `classify` refuses one above its
/// (larger) default.
pub const FUZZ_MAX_PIXELS: u64 = 1 << 20;

/// Network input side for the preprocessing step (small: the decoder is what is fuzzed).
const INPUT_SIZE: usize = 16;

/// The decoder on arbitrary bytes. Oracles: no panic or abort (libjpeg's fatal errors come back
/// as errors, never a `longjmp` across Rust or an `exit`); a decoded image has `width × height × 3`
/// bytes within the pixel limit; it preprocesses into finite values.
pub fn image_decode(data: &[u8]) {
    let limits = DecodeLimits { max_pixels: FUZZ_MAX_PIXELS };
    let (rgb, width, height) = match decode_rgb8(data, "fuzz input", &limits) {
        Ok(decoded) => decoded,
        Err(PreprocessError::TooLarge { width, height, max_pixels, .. }) => {
            assert!(width.saturating_mul(height) > max_pixels, "{width}x{height} refused as too large");
            return;
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(width > 0 && height > 0, "an empty {width}x{height} image decoded");
    assert!((width as u64) * (height as u64) <= FUZZ_MAX_PIXELS, "{width}x{height} is over the pixel limit");
    assert_eq!(rgb.len(), width * height * 3, "{width}x{height} decoded to {} bytes", rgb.len());
    let mut out = vec![0f32; 3 * INPUT_SIZE * INPUT_SIZE];
    match preprocess_rgb8(&rgb, width, height, &PreprocessConfig::augreg(INPUT_SIZE), &mut out) {
        Ok(()) => assert!(out.iter().all(|v| v.is_finite()), "non-finite preprocessed values"),
        // An extreme aspect ratio whose resized side passes the size limit (8465x1 → 143905x17) is
        // refused with a clear error, as `classify` refuses it; nothing else may fail.
        Err(PreprocessError::BadImage(msg)) if msg.contains("not a usable size") => {}
        Err(e) => panic!("a decoded {width}x{height} image fails to preprocess: {e}"),
    }
}
