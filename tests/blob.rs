//! Blob validation: every kind of damage gives a specific error at open (or at --verify), never a
//! panic; version-1 blobs still read.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vitedge::blob::{Blob, BlobError, FORMAT_VERSION, PRELUDE_LEN};
use vitedge::model::synthetic::{random_blob, tiny_config};
use vitedge::model::{Model, ModelError};

fn valid_bytes() -> Vec<u8> {
    random_blob(&tiny_config(10), 3).to_bytes()
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
    assert_eq!(b.header().version, FORMAT_VERSION);
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
fn tensor_checksum_failure_is_found_by_verify() {
    let mut bytes = valid_bytes();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40; // inside the last tensor
    let b = open_bytes(&bytes).expect("open does not read the payload");
    let err = b.verify().err().unwrap();
    assert!(matches!(&err, BlobError::Checksum { what, .. } if what.contains("head.bias")), "{err}");
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
    assert!(matches!(err, ModelError::Config(_)) && err.to_string().contains("num_heads"), "{err}");

    let bytes = with_header(&valid_bytes(), |j| j["labels"] = serde_json::json!(["a", "b"]));
    let err = Model::open(write(dir.path(), "m4.vitb", &bytes)).err().unwrap();
    assert!(err.to_string().contains("2 labels for 10 classes"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Arbitrary damage never panics: the blob either opens (and verifies or reports a checksum
    /// error) or is refused with an error.
    #[test]
    fn damaged_blobs_never_panic(cut in 0usize..4000, flips in prop::collection::vec((0usize..4000, any::<u8>()), 0..8)) {
        let mut bytes = valid_bytes();
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
        let keep = bytes.len() - cut.min(bytes.len());
        bytes.truncate(keep);
        if let Ok(b) = open_bytes(&bytes) {
            let _ = b.verify();
        }
    }
}
