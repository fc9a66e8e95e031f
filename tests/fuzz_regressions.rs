//! The fuzz harnesses (`fuzz/src/`, run by cargo-fuzz: `scripts/fuzz.sh`) on stable, in the
//! normal suite: every committed crash input (`tests/fixtures/fuzz/<target>/`) must now pass, and
//! the seed corpora (`fuzz/corpus/<target>/`) must still be meaningful (the blob seeds open, the
//! image seeds decode).
//! `VITEDGE_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions` rewrites the generated seeds.

#[path = "../fuzz/src/blob.rs"]
mod blob;
#[path = "../fuzz/src/frames.rs"]
mod frames;
#[path = "../fuzz/src/images.rs"]
mod images;

use std::path::{Path, PathBuf};

use vitedge::blob::{Blob, Verify};
use vitedge::model::synthetic::{random_blob_in, tiny_config};
use vitedge::model::VitConfig;
use vitedge::stream::PixelFormat;

/// Every harness of this suite, by fuzz target name.
const TARGETS: [(&str, fn(&[u8])); 4] = [
    ("blob_open", blob::blob_open),
    ("blob_forward", blob::blob_forward),
    ("frame_convert", frames::frame_convert),
    ("image_decode", images::image_decode),
];

/// The `image_decode` seeds: Pillow-written files of `tests/fixtures/decode/` (made by
/// scripts/decode_reference.py), the smallest of each kind: baseline 4:2:0 (1×1, 7×3, 33×17),
/// 4:2:2, progressive grayscale, progressive optimized 4:4:4, CMYK, and PNG in 8- and 16-bit RGB,
/// 16-bit gray, gray + alpha, palette and 1-bit.
const IMAGE_SEEDS: [&str; 13] = [
    "q50_420_1x1.jpg",
    "q70_420_7x3.jpg",
    "q100_420_33x17.jpg",
    "q70_422_17x1.jpg",
    "q88_gray_progressive_45x31.jpg",
    "q80_444_progressive_optimized_131x67.jpg",
    "q90_cmyk_70x50.jpg",
    "rgb8_29x17.png",
    "rgb16_13x7.png",
    "gray16_12x5.png",
    "gray_alpha_15x11.png",
    "palette_27x14.png",
    "gray1bit_21x9.png",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn committed_crash_inputs_no_longer_crash() {
    let mut n = 0;
    for (target, harness) in TARGETS {
        for file in files(&root().join("tests/fixtures/fuzz").join(target)) {
            let data = std::fs::read(&file).unwrap();
            let r = std::panic::catch_unwind(|| harness(&data));
            assert!(r.is_ok(), "{target}: {} crashes again", file.display());
            n += 1;
        }
    }
    println!("{n} crash inputs replayed");
}

/// The smallest network the seeds use: 8 wide, 1 block, 2×2 patches of 4 pixels.
fn seed_config() -> VitConfig {
    VitConfig { embed_dim: 8, num_heads: 2, depth: 1, mlp_hidden: 16, num_classes: 3, patch_size: 4, image_size: 8, ..tiny_config(3) }
}

/// Generated seeds: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut v = Vec::new();
    for (i, precision) in ["f32", "f16", "int8"].into_iter().enumerate() {
        let blob = random_blob_in(&seed_config(), 1, precision).to_bytes();
        // Mode 2 (checksums fixed up after mutation) for each precision, mode 0 (raw) once.
        for mode in if precision == "f32" { &[0u8, 2][..] } else { &[2u8][..] } {
            v.push(("blob_open", format!("tiny_{precision}_mode{mode}"), [&[*mode][..], &blob].concat()));
        }
        v.push(("blob_forward", format!("{precision}_zero_xor"), vec![0, 1, 0, 0, 9, 2, i as u8, 0]));
        v.push(("blob_forward", format!("{precision}_distilled_noise"), [&[1u8, 2, 1, 3, 4, 0x13, i as u8, 1][..], &[0x80, 0x01, 0xff, 0x7f, 0x00, 0x3c]].concat()));
    }
    for (i, format) in PixelFormat::ALL.into_iter().enumerate() {
        let (w, h) = (17 + i, 9 + 2 * i);
        let frame: Vec<u8> = (0..vitedge::stream::frame_size(format, w, h)).map(|j| (j * 29 % 256) as u8).collect();
        v.push(("frame_convert", format!("{format}_{w}x{h}"), [&[i as u8, w as u8 - 1, h as u8 - 1, (i as u8) << 2 | 1, 230, i as u8][..], &frame].concat()));
    }
    for name in IMAGE_SEEDS {
        let bytes = std::fs::read(root().join("tests/fixtures/decode").join(name)).unwrap();
        v.push(("image_decode", name.to_string(), bytes));
    }
    v
}

#[test]
fn seed_corpora_are_current() {
    let write = std::env::var("VITEDGE_WRITE_FUZZ_SEEDS").is_ok_and(|v| v == "1");
    for (target, name, bytes) in seeds() {
        let path = root().join("fuzz/corpus").join(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; regenerate with VITEDGE_WRITE_FUZZ_SEEDS=1", path.display()));
        assert!(committed == bytes, "{} is stale; regenerate with VITEDGE_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_regressions", path.display());
        // Each seed runs through its harness, and the blob seeds are valid blobs.
        let (_, harness) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
        harness(&bytes);
        if target == "blob_open" {
            Blob::from_bytes(&name, &bytes[1..], Verify::Checksums).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if target == "image_decode" {
            let limits = vitedge::preprocess::DecodeLimits { max_pixels: images::FUZZ_MAX_PIXELS };
            vitedge::preprocess::decode_rgb8(&bytes, &name, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// libjpeg's fatal errors (it reports them by `longjmp`) and the PNG decoder's come back as errors,
/// never an abort: every truncation and 64 single-byte changes of each image seed, through the
/// `image_decode` harness (which also checks what decodes).
#[test]
fn damaged_image_seeds_are_errors_not_aborts() {
    let mut refused = 0;
    let mut cases = 0;
    let limits = vitedge::preprocess::DecodeLimits { max_pixels: images::FUZZ_MAX_PIXELS };
    for name in IMAGE_SEEDS {
        let bytes = std::fs::read(root().join("fuzz/corpus/image_decode").join(name)).unwrap();
        let mut damaged: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        for k in 0..64usize {
            let mut b = bytes.clone();
            let at = (k * 7919 + 13) % b.len();
            b[at] ^= [0xff, 0x01, 0x80, 0x10][k % 4];
            damaged.push(b);
        }
        for b in &damaged {
            images::image_decode(b);
            refused += vitedge::preprocess::decode_rgb8(b, name, &limits).is_err() as usize;
            cases += 1;
        }
    }
    // Every proper prefix of a file lacks image data, so most of the cases must be refused.
    assert!(refused * 2 > cases, "only {refused} of {cases} damaged images refused");
    println!("{cases} damaged images, {refused} refused, none aborted");
}

/// A tiny JPEG whose frame header claims 32768×5400 pixels is refused from its header, before any
/// pixel buffer exists, with the default limits `classify` uses.
#[test]
fn a_lying_jpeg_header_is_refused_before_decoding() {
    let mut bytes = std::fs::read(root().join("fuzz/corpus/image_decode/q50_420_1x1.jpg")).unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xff, 0xc0]).expect("a baseline SOF0 marker");
    // SOF0: marker, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&5400u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&32768u16.to_be_bytes());
    match vitedge::preprocess::decode_rgb8(&bytes, "lying.jpg", &vitedge::preprocess::DecodeLimits::default()) {
        Err(vitedge::preprocess::PreprocessError::TooLarge { width: 32768, height: 5400, .. }) => {}
        other => panic!("expected TooLarge for 32768x5400, got {:?}", other.map(|(_, w, h)| (w, h))),
    }
}
