//! Preprocessing matches timm's evaluation transform (Pillow resize + torchvision crop) exactly.

mod common;

use vitedge::preprocess::{center_crop_offsets, preprocess_rgb8, resized_size, Interpolation, PreprocessConfig, PreprocessError, Preprocessor};

/// The deterministic RGB pattern `scripts/preprocess_reference.py` uses.
fn pattern(w: usize, h: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(w * h * 3);
    for y in 0..h as u64 {
        for x in 0..w as u64 {
            for c in 0..3u64 {
                let z = (x * 7919 + y * 104729 + c * 31337).wrapping_mul(2654435761);
                v.push(((z >> 13) & 255) as u8);
            }
        }
    }
    v
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

#[test]
fn matches_pillow_bit_for_bit_on_odd_shapes() {
    let cases: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 8);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let (w, h, s) = (c["width"].as_u64().unwrap() as usize, c["height"].as_u64().unwrap() as usize, c["size"].as_u64().unwrap() as usize);
        let mut cfg = PreprocessConfig::augreg(s);
        cfg.crop_pct = c["crop_pct"].as_f64().unwrap() as f32;
        cfg.interpolation = if c["interpolation"] == "bilinear" { Interpolation::Bilinear } else { Interpolation::Bicubic };
        let expected = std::fs::read(fixtures().join(format!("{name}.out.raw"))).unwrap();
        let mut p = Preprocessor::new(cfg);
        let got = p.resize_crop(&pattern(w, h), w, h).unwrap();
        assert_eq!(got.len(), expected.len(), "{name}");
        let diff = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} bytes differ from Pillow");
    }
}

#[test]
fn constant_image_normalizes_exactly() {
    let cfg = PreprocessConfig::imagenet(16);
    let (w, h) = (37, 23);
    let rgb: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 100, 0]).collect();
    let mut out = vec![0f32; 3 * 16 * 16];
    preprocess_rgb8(&rgb, w, h, &cfg, &mut out).unwrap();
    for (c, v) in [200.0f32, 100.0, 0.0].iter().enumerate() {
        let want = (v / 255.0 - cfg.mean[c]) / cfg.std[c];
        assert!(out[c * 256..(c + 1) * 256].iter().all(|x| (x - want).abs() < 1e-6), "channel {c}");
    }
}

#[test]
fn layout_is_chw_with_known_pixels() {
    // A 2x2 checker at 2x2 input with crop_pct 1 and size 2: no resize, no crop; CHW order.
    let mut cfg = PreprocessConfig::augreg(2);
    cfg.crop_pct = 1.0;
    let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
    let mut out = vec![0f32; 12];
    preprocess_rgb8(&rgb, 2, 2, &cfg, &mut out).unwrap();
    #[rustfmt::skip]
    let want = [1.0, -1.0, -1.0, 1.0,   -1.0, 1.0, -1.0, 1.0,   -1.0, -1.0, 1.0, 1.0];
    assert_eq!(out, want);
}

#[test]
fn size_and_crop_rules_follow_torchvision() {
    assert_eq!(PreprocessConfig::augreg(224).resize_size(), 248);
    assert_eq!(PreprocessConfig::imagenet(224).resize_size(), 256);
    assert_eq!(resized_size(500, 375, 248), (330, 248));
    assert_eq!(resized_size(375, 500, 248), (248, 330));
    assert_eq!(resized_size(333, 500, 248), (248, 372)); // int() truncates 372.37
    // Python's round(12.5) == 12 (half to even), round(13.5) == 14.
    assert_eq!(center_crop_offsets(249, 249, 224), (12, 12));
    assert_eq!(center_crop_offsets(251, 251, 224), (14, 14));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let cfg = PreprocessConfig::augreg(8);
    let mut out = vec![0f32; 3 * 64];
    assert!(matches!(preprocess_rgb8(&[0; 11], 2, 2, &cfg, &mut out), Err(PreprocessError::BadImage(_))));
    assert!(matches!(preprocess_rgb8(&[], 0, 5, &cfg, &mut out), Err(PreprocessError::BadImage(_))));
    assert!(matches!(preprocess_rgb8(&[], 1 << 20, 1, &cfg, &mut out), Err(PreprocessError::BadImage(_))));
    let mut short = vec![0f32; 10];
    assert!(matches!(preprocess_rgb8(&[0; 12], 2, 2, &cfg, &mut short), Err(PreprocessError::OutputLen { .. })));
    let err = vitedge::preprocess::load_rgb8(std::path::Path::new("/nonexistent.jpg")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent.jpg"));
}

/// The palette PNG fixture with `extra` bytes appended to its `PLTE` chunk (length and CRC fixed).
fn png_with_longer_palette(extra: &[u8]) -> Vec<u8> {
    let png = std::fs::read(decode_fixtures().join("palette_27x14.png")).unwrap();
    let mut out = png[..8].to_vec();
    let mut at = 8;
    while at < png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let mut data = png[at + 8..at + 8 + len].to_vec();
        if kind == b"PLTE" {
            data.extend_from_slice(extra);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(&data);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(&data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
        at += 12 + len;
    }
    out
}

/// A palette that ends in a partial RGB entry made the `png` crate panic (found by the fuzz smoke
/// run); it is a decode error that names the chunk. A palette grown by a whole entry still decodes.
#[test]
fn a_png_palette_with_a_partial_entry_is_a_clear_error() {
    let limits = vitedge::preprocess::DecodeLimits::default();
    for extra in [&[7u8][..], &[7, 8]] {
        let err = vitedge::preprocess::decode_rgb8(&png_with_longer_palette(extra), "p.png", &limits).unwrap_err();
        assert!(matches!(err, PreprocessError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("PLTE chunk) is 11"), "{err}");
    }
    let (plain, ..) = vitedge::preprocess::decode_rgb8(&png_with_longer_palette(&[]), "p.png", &limits).unwrap();
    let (grown, ..) = vitedge::preprocess::decode_rgb8(&png_with_longer_palette(&[7, 8, 9]), "p.png", &limits).unwrap();
    assert_eq!(plain, grown);
}

#[test]
fn reusing_a_preprocessor_across_sizes_gives_fresh_results() {
    let cfg = PreprocessConfig::augreg(16);
    let mut p = Preprocessor::new(cfg.clone());
    let mut a = vec![0f32; 768];
    let mut b = vec![0f32; 768];
    for (w, h) in [(40, 30), (17, 90), (40, 30)] {
        p.run(&pattern(w, h), w, h, &mut a).unwrap();
        preprocess_rgb8(&pattern(w, h), w, h, &cfg, &mut b).unwrap();
        assert_eq!(a, b, "{w}x{h}");
    }
}

#[test]
fn decodes_real_jpegs_to_rgb() {
    let Some(shared) = common::shared() else {
        eprintln!("skipped: ../shared missing");
        return;
    };
    let img = shared.join("imagenet-sample/n01440764_tench.JPEG");
    let (rgb, w, h) = vitedge::preprocess::load_rgb8(&img).unwrap();
    assert_eq!(rgb.len(), w * h * 3);
    assert!(w > 100 && h > 100);
}

fn decode_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode")
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes every image of the Pillow manifest (`scripts/decode_reference.py`: the 500 shared sample
/// JPEGs and synthetic JPEGs/PNGs Pillow wrote) and compares the RGB bytes' SHA-256 with Pillow's
/// `Image.open(f).convert("RGB")`. Under emulation every 10th image.
#[test]
fn decoding_is_bit_identical_with_pillow() {
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(decode_fixtures().join("pillow_rgb_sha256.json")).unwrap()).unwrap();
    let images = manifest["images"].as_object().unwrap();
    let shared = common::shared();
    let step = if common::skip_slow() { 10 } else { 1 };
    let (mut checked, mut sample, mut mismatches) = (0, 0, Vec::new());
    for (i, (key, want)) in images.iter().enumerate() {
        let path = match key.split_once('/') {
            Some(("synthetic", f)) => decode_fixtures().join(f),
            Some(("imagenet-sample", f)) => match &shared {
                Some(s) => {
                    sample += 1;
                    s.join("imagenet-sample").join(f)
                }
                None => continue,
            },
            _ => panic!("unexpected manifest key {key}"),
        };
        if i % step != 0 {
            continue;
        }
        let (rgb, w, h) = vitedge::preprocess::load_rgb8(&path).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!((w as u64, h as u64), (want["width"].as_u64().unwrap(), want["height"].as_u64().unwrap()), "{key}");
        if sha256_hex(&rgb) != want["sha256"].as_str().unwrap() {
            mismatches.push(format!("{key} ({} {} {})", want["mode"], want["subsampling"], want["progressive"]));
        }
        checked += 1;
    }
    if let Some(s) = &shared {
        // The manifest covers the whole shared sample, not a subset.
        assert_eq!(sample, vitedge::eval::list_images(&s.join("imagenet-sample")).unwrap().len());
    }
    eprintln!("{checked} images decoded, {} bit-identical with Pillow {}", checked - mismatches.len(), manifest["pillow"]);
    assert!(mismatches.is_empty(), "{} of {checked} differ from Pillow: {mismatches:?}", mismatches.len());
}
