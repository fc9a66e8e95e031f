//! Checkpoint readers: torch zip + restricted unpickler, safetensors dtypes, bad files.

mod common;

use std::io::Write;
use std::path::Path;

use common::fixture;
use proptest::prelude::*;
use vitedge_quant::checkpoint::pickle::{self, Object};
use vitedge_quant::checkpoint::{load_from_bytes, load_state_dict, CheckpointError, LoadOptions, PickleError};

#[test]
fn lightning_checkpoint_matches_its_safetensors_twin() {
    let ckpt = load_state_dict(&fixture("lightning_tiny.ckpt")).unwrap();
    let st = load_state_dict(&fixture("lightning_tiny.safetensors")).unwrap();
    assert_eq!(st.len(), 20);
    // Every network tensor is under `model.`; the integer buffer is skipped, optimizer state ignored.
    assert_eq!(ckpt.len(), st.len());
    for (k, v) in &st {
        let c = &ckpt[&format!("model.{k}")];
        assert_eq!(c.shape, v.shape, "{k}");
        assert!(c.data.iter().zip(&v.data).all(|(a, b)| a.to_bits() == b.to_bits()), "{k} differs");
    }
    // The transposed view was gathered, not read in storage order.
    assert_eq!(ckpt["model.head.weight"].shape, vec![10, 16]);
}

#[test]
fn a_pickle_that_is_an_os_system_call_is_named_not_run() {
    // data.pkl = os.system("echo pwned >&2"): the top level is the (never made) call's result.
    let err = load_state_dict(&fixture("forbidden_global.pth")).unwrap_err();
    assert!(matches!(err, CheckpointError::Format { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("an object built by the Python global `os.system`") && msg.contains("never imports"), "{msg}");
}

#[test]
fn truncated_pickle_is_an_error() {
    let err = load_state_dict(&fixture("truncated.pth")).unwrap_err();
    assert!(matches!(err, CheckpointError::Pickle { source: PickleError::Malformed { .. }, .. }), "{err}");
}

#[test]
fn random_bytes_and_zip_without_pickle_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, [7u8; 100]).unwrap();
    assert!(matches!(load_state_dict(&junk).unwrap_err(), CheckpointError::Format { .. }));

    let empty_zip = dir.path().join("empty.pth");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&empty_zip).unwrap());
    z.start_file("archive/version", zip::write::SimpleFileOptions::default()).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
    let err = load_state_dict(&empty_zip).unwrap_err();
    assert!(err.to_string().contains("no data.pkl"), "{err}");

    let missing = load_state_dict(Path::new("/nonexistent/x.safetensors")).unwrap_err();
    assert!(matches!(missing, CheckpointError::Io { .. }));
}

#[test]
fn safetensors_half_and_bfloat_convert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.safetensors");
    let h: Vec<u8> = [1.5f32, -2.0, 0.25].iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
    let b: Vec<u8> = [3.0f32, -0.5].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    let i: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    use safetensors::tensor::TensorView;
    let views = vec![
        ("h".to_string(), TensorView::new(safetensors::Dtype::F16, vec![3], &h).unwrap()),
        ("b".to_string(), TensorView::new(safetensors::Dtype::BF16, vec![2, 1], &b).unwrap()),
        ("i".to_string(), TensorView::new(safetensors::Dtype::I64, vec![2], &i).unwrap()),
    ];
    safetensors::serialize_to_file(views, &None, &path).unwrap();
    let sd = load_state_dict(&path).unwrap();
    assert_eq!(sd["h"].data, vec![1.5, -2.0, 0.25]);
    assert_eq!(sd["b"].data, vec![3.0, -0.5]);
    assert_eq!(sd["b"].shape, vec![2, 1]);
    assert!(!sd.contains_key("i"), "integer tensors are skipped");
}

#[test]
fn unknown_globals_become_named_placeholders_in_both_forms() {
    // GLOBAL opcode, called through REDUCE
    let p = pickle::load(b"\x80\x02cbuiltins\neval\n(X\x03\x00\x00\x001+1tR.").unwrap();
    assert!(matches!(p.object(p.root), Some(Object::Opaque(n)) if n == "builtins.eval"), "{p:?}");
    assert_eq!(p.placeholders.iter().collect::<Vec<_>>(), ["builtins.eval"]);
    // STACK_GLOBAL opcode (protocol 4), instantiated through NEWOBJ, then BUILD
    let p = pickle::load(b"\x80\x04\x8c\x08argparse\x8c\tNamespace\x93)\x81}\x8c\x02lr\x8c\x010sb.").unwrap();
    assert!(matches!(p.object(p.root), Some(Object::Opaque(n)) if n == "argparse.Namespace"), "{p:?}");
    // The torch globals are understood, not placeholders.
    let p = pickle::load(b"\x80\x02ccollections\nOrderedDict\n)R.").unwrap();
    assert!(p.dict(p.root).is_some() && p.placeholders.is_empty());
}

#[test]
fn malformed_pickles_are_errors_not_panics() {
    for (bytes, needle) in [
        (&b"\x80\x02K\x01K\x02R."[..], "not a tuple"),
        (b"\x80\x02K\x01)R.", "not callable"),
        (b"\x80\x02h\x05.", "memo 5 is undefined"),
        (b"\x80\x02K\x01a.", "stack underflow"),
        (b"\x80\x02u.", "no mark"),
        (b"\x80\x09.", "protocol 9"),
        (b"\x80\x02\xff.", "opcode 0xff"),
        (b"\x80\x02X\xff\xff\xff\xff", "stream ends"),
    ] {
        let e = pickle::load(bytes).unwrap_err();
        assert!(matches!(e, PickleError::Malformed { .. }) && e.to_string().contains(needle), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    /// Arbitrary bytes never panic the unpickler.
    #[test]
    fn unpickler_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = pickle::load(&bytes);
    }

    /// Damaged torch zips and safetensors files never panic the readers.
    #[test]
    fn damaged_checkpoint_files_never_panic(flips in prop::collection::vec((0usize..1_000_000, any::<u8>()), 1..6), cut in 0usize..1_000_000) {
        for name in ["lightning_tiny.ckpt", "lightning_tiny.safetensors"] {
            let mut bytes = std::fs::read(fixture(name)).unwrap();
            for &(at, x) in &flips {
                let n = bytes.len();
                bytes[at % n] ^= x;
            }
            let _ = load_from_bytes(name, &bytes, &LoadOptions::default());
            bytes.truncate(cut % bytes.len());
            let _ = load_from_bytes(name, &bytes, &LoadOptions::default());
        }
    }

    /// Damaged real pickles never panic either.
    #[test]
    fn damaged_checkpoint_pickles_never_panic(flips in prop::collection::vec((0usize..100_000, any::<u8>()), 1..6)) {
        let mut z = zip::ZipArchive::new(std::fs::File::open(fixture("lightning_tiny.ckpt")).unwrap()).unwrap();
        let mut pkl = Vec::new();
        std::io::Read::read_to_end(&mut z.by_name("archive/data.pkl").unwrap(), &mut pkl).unwrap();
        for (at, x) in flips {
            let n = pkl.len();
            pkl[at % n] ^= x;
        }
        let _ = pickle::load(&pkl);
    }
}
