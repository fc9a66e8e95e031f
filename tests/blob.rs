//! Blob validation: every kind of damage gives a specific error at open, never a panic: the
//! prelude, the header's syntax and meaning, every tensor's checksum and the zero padding are all
//! checked before a model is used; version-1 blobs still read; writes are atomic.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vitedge::blob::{Blob, BlobError, Verify, FORMAT_VERSION, PRELUDE_LEN, VERSION_WITHOUT_BF16};
use vitedge::model::synthetic::{random_blob, random_blob_in, tiny_config};
use vitedge::model::{Model, ModelError, VitConfig};

fn valid_bytes() -> Vec<u8> {
    random_blob(&tiny_config(10), 3).to_bytes()
}

fn int8_bytes() -> Vec<u8> {
    random_blob_in(&tiny_config(10), 3, "int8").to_bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open_bytes(bytes: &[u8]) -> Result<Blob, BlobError> {
    let dir = tempfile::tempdir().unwrap();
    Blob::open(write(dir.path(), "b.vitb", bytes))
}

/// Re-serializes a blob after editing its JSON header (recomputing lengths, offsets and the CRC).
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let h = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let p = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let mut json: serde_json::Value = serde_json::from_slice(&bytes[PRELUDE_LEN..PRELUDE_LEN + h]).unwrap();
    edit(&mut json);
    let header = serde_json::to_vec(&json).unwrap();
    let new_p = (PRELUDE_LEN + header.len()).div_ceil(64) * 64;
    let mut out = bytes[..PRELUDE_LEN].to_vec();
    let version = json["version"].as_u64().unwrap() as u32;
    out[8..12].copy_from_slice(&version.to_le_bytes());
    out[16..24].copy_from_slice(&(header.len() as u64).to_le_bytes());
    out[24..32].copy_from_slice(&(new_p as u64).to_le_bytes());
    out[40..44].copy_from_slice(&crc32fast::hash(&header).to_le_bytes());
    out.extend_from_slice(&header);
    out.resize(new_p, 0);
    out.extend_from_slice(&bytes[p..]);
    out
}

#[test]
fn valid_blob_opens_and_verifies() {
    let b = open_bytes(&valid_bytes()).expect("valid blob opens");
    assert!(b.verify().unwrap() > 0);
    assert_eq!(b.header().version, VERSION_WITHOUT_BF16, "blobs without bf16 tensors stay readable by version-2 readers");
}

#[test]
fn bf16_blobs_are_version_3_and_their_tensors_must_match() {
    let bytes = random_blob_in(&tiny_config(10), 3, "bf16").to_bytes();
    let b = open_bytes(&bytes).expect("the bf16 blob is valid");
    assert_eq!(b.header().version, FORMAT_VERSION);
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), FORMAT_VERSION, "prelude version");
    b.verify().unwrap();
    let cases: Vec<Case> = vec![
        ("bf16 in a version-2 blob", "precision", Box::new(|j| j["version"] = 2.into())),
        ("bf16 blob marked f16", "precision", Box::new(|j| j["precision"] = "f16".into())),
    ];
    for (case, want, edit) in cases {
        let err = open_bytes(&with_header(&bytes, edit)).err().unwrap_or_else(|| panic!("`{case}` was accepted"));
        assert!(matches!(&err, BlobError::BadField { field, .. } if field == want), "{case}: {err}");
    }
    // A bf16 matrix claimed to be in the f32 layout (same length for an even k): the precision
    // check names it.
    let err = open_bytes(&with_header(&bytes, |j| {
        let t = j["tensors"].as_array_mut().unwrap().iter_mut().find(|t| t["name"] == "head.weight").unwrap();
        t["layout"] = "panel16".into();
    }))
    .err()
    .unwrap();
    assert!(matches!(&err, BlobError::BadField { field, .. } if field == "precision") && err.to_string().contains("head.weight"), "{err}");
}

#[test]
fn empty_and_truncated_files_are_reported_as_truncated() {
    let bytes = valid_bytes();
    for len in [0, 10, PRELUDE_LEN - 1, PRELUDE_LEN + 5, bytes.len() / 2, bytes.len() - 1] {
        let err = open_bytes(&bytes[..len]).err().unwrap_or_else(|| panic!("{len} bytes opened"));
        assert!(matches!(err, BlobError::Truncated(_)), "len {len}: {err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn wrong_magic_is_not_a_blob() {
    let mut bytes = valid_bytes();
    bytes[0] = b'X';
    let err = open_bytes(&bytes).err().unwrap();
    assert!(matches!(err, BlobError::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("vitedge-quant convert"), "says what to do: {err}");
    // A safetensors file is a typical mistake.
    let err = open_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":{}}                                                                ").err().unwrap();
    assert!(matches!(err, BlobError::BadMagic { .. }), "{err}");
}

#[test]
fn unsupported_versions_are_refused_with_advice() {
    let mut bytes = valid_bytes();
    for (v, word) in [(FORMAT_VERSION + 1, "upgrade"), (0, "re-convert")] {
        bytes[8..12].copy_from_slice(&v.to_le_bytes());
        let err = open_bytes(&bytes).err().unwrap();
        assert!(matches!(err, BlobError::UnsupportedVersion { found, .. } if found == v), "{err}");
        assert!(err.to_string().contains(word), "{err}");
    }
}

#[test]
fn version_1_blobs_still_read() {
    let v1 = with_header(&valid_bytes(), |j| j["version"] = 1.into());
    let dir = tempfile::tempdir().unwrap();
    let m = Model::open(write(dir.path(), "v1.vitb", &v1)).expect("v1 blob opens");
    assert_eq!(m.header().version, 1);
    m.blob().verify().unwrap();
}

#[test]
fn header_checksum_catches_a_flipped_header_byte() {
    let mut bytes = valid_bytes();
    bytes[PRELUDE_LEN + 20] ^= 0x01;
    let err = open_bytes(&bytes).err().unwrap();
    assert!(matches!(err, BlobError::Checksum { .. }), "{err}");
}

#[test]
fn a_damaged_tensor_is_refused_at_open_by_name() {
    let mut bytes = valid_bytes();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40; // inside the last tensor
    let err = open_bytes(&bytes).err().expect("opening verifies every tensor");
    assert!(matches!(&err, BlobError::Checksum { what, .. } if what.contains("head.bias")), "{err}");
    let text = err.to_string();
    assert!(text.contains("tensor `head.bias`") && text.contains("re-copy") && text.contains("re-convert"), "{text}");
    // The same through Model::open, and in memory.
    let dir = tempfile::tempdir().unwrap();
    let err = Model::open(write(dir.path(), "m.vitb", &bytes)).err().unwrap();
    assert!(err.to_string().contains("tensor `head.bias`"), "{err}");
    assert!(Blob::from_bytes("mem", &bytes, Verify::Checksums).is_err());
    // Opting out skips the checksums; verify() still finds the damage on request.
    let b = Blob::from_bytes("mem", &bytes, Verify::SkipChecksums).expect("structure is fine");
    let err = b.verify().err().unwrap();
    assert!(matches!(&err, BlobError::Checksum { what, .. } if what.contains("head.bias")), "{err}");
    assert!(Model::open_with(write(dir.path(), "m2.vitb", &bytes), Verify::SkipChecksums).is_ok());
}

#[test]
fn prelude_flags_and_reserved_bytes_must_be_zero() {
    let good = valid_bytes();
    for byte in (12..16).chain(44..PRELUDE_LEN) {
        for bit in 0..8 {
            let mut bytes = good.clone();
            bytes[byte] ^= 1 << bit;
            let err = open_bytes(&bytes).err().unwrap_or_else(|| panic!("bit {bit} of byte {byte} accepted"));
            assert!(matches!(err, BlobError::BadPrelude(_)), "byte {byte}: {err}");
            let text = err.to_string();
            assert!(text.contains(if byte < 16 { "flags" } else { "reserved byte" }) && text.contains("re-copy"), "{text}");
        }
    }
}

#[test]
fn padding_after_the_header_and_between_tensors_must_be_zero() {
    let good = int8_bytes();
    let h = u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
    let p = u64::from_le_bytes(good[24..32].try_into().unwrap()) as usize;
    assert!(PRELUDE_LEN + h < p, "the tiny blob has header padding");
    let mut bytes = good.clone();
    bytes[p - 1] = 7;
    let err = open_bytes(&bytes).err().unwrap();
    assert!(matches!(&err, BlobError::Padding { place, offset, value: 7, .. } if place == "after the header" && *offset == p as u64 - 1), "{err}");
    // `head.weight_scale` holds 10 f32 (40 bytes): 24 bytes of padding follow it.
    let b = open_bytes(&good).unwrap();
    let scale = b.header().tensors.iter().find(|t| t.name == "head.weight_scale").unwrap();
    let gap = p + (scale.offset + scale.length) as usize;
    let mut bytes = good.clone();
    bytes[gap + 5] ^= 0x10;
    let err = open_bytes(&bytes).err().unwrap();
    assert!(matches!(&err, BlobError::Padding { place, .. } if place == "after tensor `head.weight_scale`"), "{err}");
    assert!(err.to_string().contains("re-copy"), "{err}");
}

#[test]
fn out_of_bounds_misaligned_and_absurd_tensors_are_rejected() {
    let bytes = valid_bytes();
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>)> = vec![
        ("outside", Box::new(|j| j["tensors"][3]["offset"] = (1u64 << 40).into())),
        ("aligned", Box::new(|j| j["tensors"][3]["offset"] = 65.into())),
        ("absurdly large", Box::new(|j| j["tensors"][3]["shape"] = serde_json::json!([1u64 << 20, 1u64 << 20]))),
        ("no elements", Box::new(|j| j["tensors"][3]["shape"] = serde_json::json!([0, 4]))),
        ("length", Box::new(|j| j["tensors"][3]["length"] = 4.into())),
        ("twice", Box::new(|j| {
            let t = j["tensors"][2].clone();
            j["tensors"][3] = t;
        })),
        ("layout", Box::new(|j| j["tensors"][2]["layout"] = "panel16".into())),
        ("overlap", Box::new(|j| {
            let o = j["tensors"][4]["offset"].clone();
            j["tensors"][5]["offset"] = o;
        })),
    ];
    for (word, edit) in cases {
        let damaged = with_header(&bytes, edit);
        let err = open_bytes(&damaged).err().unwrap_or_else(|| panic!("`{word}` case opened"));
        assert!(matches!(err, BlobError::BadTensor { .. }), "{word}: {err}");
        assert!(err.to_string().contains(word), "{word}: {err}");
    }
}

#[test]
fn bad_header_json_and_format_name_are_rejected() {
    let bytes = with_header(&valid_bytes(), |j| j["format"] = "something-else".into());
    assert!(matches!(open_bytes(&bytes).err().unwrap(), BlobError::BadHeader(_)));
    let bytes = with_header(&valid_bytes(), |j| {
        j.as_object_mut().unwrap().remove("config");
    });
    let err = open_bytes(&bytes).err().unwrap();
    assert!(matches!(err, BlobError::BadHeader(_)) && err.to_string().contains("config"), "{err}");
}

#[test]
fn trailing_garbage_is_rejected() {
    let mut bytes = valid_bytes();
    bytes.extend_from_slice(&[0; 10]);
    assert!(matches!(open_bytes(&bytes).err().unwrap(), BlobError::BadHeader(_)));
}

#[test]
fn model_open_names_missing_and_misshaped_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = with_header(&valid_bytes(), |j| {
        let t = j["tensors"].as_array_mut().unwrap();
        t.retain(|e| e["name"] != "blocks.1.mlp.fc2.bias");
    });
    let err = Model::open(write(dir.path(), "m.vitb", &bytes)).err().unwrap();
    assert!(matches!(err, ModelError::Blob(BlobError::Missing(ref n)) if n == "blocks.1.mlp.fc2.bias"), "{err}");

    let bytes = with_header(&valid_bytes(), |j| j["config"]["mlp_hidden"] = 64.into());
    let err = Model::open(write(dir.path(), "m2.vitb", &bytes)).err().unwrap();
    assert!(err.to_string().contains("blocks.0.mlp.fc1.weight"), "{err}");

    let bytes = with_header(&valid_bytes(), |j| j["config"]["num_heads"] = 5.into());
    let err = Model::open(write(dir.path(), "m3.vitb", &bytes)).err().unwrap();
    assert!(matches!(err, ModelError::Blob(BlobError::BadField { ref field, .. }) if field == "config.num_heads"), "{err}");

    let bytes = with_header(&valid_bytes(), |j| j["labels"] = serde_json::json!(["a", "b"]));
    let err = Model::open(write(dir.path(), "m4.vitb", &bytes)).err().unwrap();
    assert!(err.to_string().contains("2 labels for 10 classes"), "{err}");
}

/// A header edit (CRC recomputed) and the field its refusal must name.
type Case = (&'static str, &'static str, Box<dyn Fn(&mut serde_json::Value)>);

fn semantic_cases() -> Vec<Case> {
    use serde_json::json;
    vec![
        ("unknown precision", "precision", Box::new(|j| j["precision"] = "int4".into())),
        ("f32 blob marked int8", "precision", Box::new(|j| j["precision"] = "int8".into())),
        ("f32 blob marked f16", "precision", Box::new(|j| j["precision"] = "f16".into())),
        ("huge mean", "preprocess.mean[0]", Box::new(|j| j["preprocess"]["mean"] = json!([1e38, 0.5, 0.5]))),
        ("mean beyond f32", "preprocess.mean[1]", Box::new(|j| j["preprocess"]["mean"] = json!([0.5, 1e39, 0.5]))),
        ("zero std", "preprocess.std[2]", Box::new(|j| j["preprocess"]["std"] = json!([0.5, 0.5, 0.0]))),
        ("negative std", "preprocess.std[0]", Box::new(|j| j["preprocess"]["std"] = json!([-0.5, 0.5, 0.5]))),
        ("tiny crop_pct", "preprocess.crop_pct", Box::new(|j| j["preprocess"]["crop_pct"] = json!(1e-30))),
        ("crop_pct above 1", "preprocess.crop_pct", Box::new(|j| j["preprocess"]["crop_pct"] = json!(1.5))),
        ("input size", "preprocess.input_size", Box::new(|j| j["preprocess"]["input_size"] = json!(64))),
        ("depth below the stored blocks", "config.depth", Box::new(|j| j["config"]["depth"] = json!(1))),
        ("embed_dim", "config", Box::new(|j| j["config"]["embed_dim"] = json!(64))),
        ("num_classes", "config", Box::new(|j| j["config"]["num_classes"] = json!(11))),
        ("layer_norm_eps", "config.layer_norm_eps", Box::new(|j| j["config"]["layer_norm_eps"] = json!(0.0))),
        ("heads", "config.num_heads", Box::new(|j| j["config"]["num_heads"] = json!(3))),
        ("image size", "config.patch_size", Box::new(|j| {
            j["config"]["image_size"] = json!(40);
            j["preprocess"]["input_size"] = json!(40);
        })),
        ("labels", "labels", Box::new(|j| j["labels"] = json!(["a", "b"]))),
        ("label ids", "label_ids", Box::new(|j| {
            j["labels"] = json!(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
            j["label_ids"] = json!(["n1"]);
        })),
        ("quantization on an f32 blob", "quantization", Box::new(|j| j["quantization"] = json!({"layers": []}))),
    ]
}

#[test]
fn headers_that_parse_but_make_no_sense_are_refused_naming_the_field() {
    let bytes = valid_bytes();
    for (case, want, edit) in semantic_cases() {
        let damaged = with_header(&bytes, edit);
        let err = open_bytes(&damaged).err().unwrap_or_else(|| panic!("`{case}` was accepted"));
        match &err {
            BlobError::BadField { field, .. } => assert_eq!(field, want, "{case}: {err}"),
            other => panic!("{case}: expected a refusal of `{want}`, got: {other}"),
        }
        let text = err.to_string();
        assert!(text.contains(&format!("`{want}`")) && text.contains("re-convert"), "{case}: {text}");
    }
}

#[test]
fn int8_headers_must_match_their_tensors() {
    use serde_json::json;
    let bytes = int8_bytes();
    open_bytes(&bytes).expect("the int8 blob is valid");
    let layers = |w: &str| json!({"layers": [{"name": "blocks.0.attn.qkv", "weights": w, "activations": "dynamic_per_token_u8"}]});
    let cases: Vec<Case> = vec![
        ("int8 blob marked f32", "precision", Box::new(|j| j["precision"] = "f32".into())),
        ("int8 in a version-1 blob", "precision", Box::new(|j| j["version"] = 1.into())),
        ("layer says f16 but is int8", "quantization.layers[0].weights", Box::new(move |j| j["quantization"] = layers("f16"))),
        ("unknown layer precision", "quantization.layers[0].weights", Box::new(move |j| j["quantization"] = layers("int4"))),
        ("layer that does not exist", "quantization.layers[0].name", Box::new(|j| {
            j["quantization"] = json!({"layers": [{"name": "blocks.9.attn.qkv", "weights": "int8", "activations": "x"}]})
        })),
    ];
    for (case, want, edit) in cases {
        let err = open_bytes(&with_header(&bytes, edit)).err().unwrap_or_else(|| panic!("`{case}` was accepted"));
        assert!(matches!(&err, BlobError::BadField { field, .. } if field == want), "{case}: {err}");
    }
    // An int8 matrix without its scales, and a tensor no ViT has.
    let err = open_bytes(&with_header(&bytes, |j| j["tensors"].as_array_mut().unwrap().retain(|t| t["name"] != "head.weight_scale"))).err().unwrap();
    assert!(matches!(&err, BlobError::Missing(n) if n == "head.weight_scale"), "{err}");
    let err = open_bytes(&with_header(&bytes, |j| j["tensors"][0]["name"] = "extra.weight".into())).err().unwrap();
    assert!(matches!(&err, BlobError::Missing(n) if n == "patch_embed.proj.weight"), "{err}");
}

#[test]
fn distilled_flags_that_disagree_with_the_tensors_are_refused() {
    let cfg = VitConfig { distilled: true, ..tiny_config(10) };
    let bytes = random_blob(&cfg, 1).to_bytes();
    open_bytes(&bytes).expect("distilled blob is valid");
    let err = open_bytes(&with_header(&bytes, |j| j["config"]["distilled"] = false.into())).err().unwrap();
    assert!(matches!(err, BlobError::BadField { .. }), "{err}");
    // And a plain blob marked distilled lacks the distillation token.
    let err = open_bytes(&with_header(&valid_bytes(), |j| j["config"]["distilled"] = true.into())).err().unwrap();
    assert!(matches!(&err, BlobError::Missing(n) if n == "dist_token"), "{err}");
}

#[test]
fn the_writer_refuses_to_write_a_blob_readers_would_refuse_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.vitb");
    let mut w = random_blob(&tiny_config(10), 1);
    w.header_mut().preprocess.crop_pct = 0.01;
    let err = w.write(&path).unwrap_err();
    assert!(err.to_string().contains("preprocess.crop_pct"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file, no temporary file");
}

#[test]
fn writes_replace_the_old_blob_atomically_and_clean_up_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.vitb");
    random_blob(&tiny_config(10), 1).write(&path).unwrap();
    let first = std::fs::read(&path).unwrap();
    // An open (mapped) blob keeps its bytes when a new one is renamed over its path.
    let old = Model::open(&path).unwrap();
    random_blob(&tiny_config(10), 2).write(&path).unwrap();
    assert_ne!(std::fs::read(&path).unwrap(), first);
    old.blob().verify().expect("the old map still holds the old file");
    Model::open(&path).expect("the new file is complete");
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["model.vitb"], "no temporary file left");
    // A rename that fails (the destination is a non-empty folder) leaves no temporary file.
    let taken = dir.path().join("taken.vitb");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("x"), b"x").unwrap();
    assert!(random_blob(&tiny_config(10), 3).write(&taken).is_err());
    let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["model.vitb", "taken.vitb"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any damage is refused (every byte of a blob is covered by a check), never with a panic.
    #[test]
    fn damaged_blobs_are_always_refused(cut in 0usize..4000, flips in prop::collection::vec((0usize..200_000, 1u8..), 0..8)) {
        let good = valid_bytes();
        let mut bytes = good.clone();
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
        let keep = bytes.len() - cut.min(bytes.len());
        bytes.truncate(keep);
        let result = Blob::from_bytes("mem", &bytes, Verify::Checksums);
        prop_assert_eq!(result.is_ok(), bytes == good, "{:?}", result.err().map(|e| e.to_string()));
    }
}
