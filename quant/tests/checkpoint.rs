//! Checkpoint readers: torch zip + restricted unpickler, safetensors dtypes, bad files.

use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vitedge_quant::checkpoint::{load_state_dict, pickle, CheckpointError, PickleError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

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
fn forbidden_global_is_refused_by_name() {
    let err = load_state_dict(&fixture("forbidden_global.pth")).unwrap_err();
    match &err {
        CheckpointError::Pickle { source: PickleError::ForbiddenGlobal { module, name }, .. } => {
            assert_eq!((module.as_str(), name.as_str()), ("os", "system"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("os.system") && err.to_string().contains("safetensors"), "{err}");
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
fn pickle_globals_outside_the_allowlist_are_refused_in_both_forms() {
    // GLOBAL opcode
    let err = pickle::load(b"\x80\x02cbuiltins\neval\n)R.").unwrap_err();
    assert!(matches!(err, PickleError::ForbiddenGlobal { ref name, .. } if name == "eval"), "{err}");
    // STACK_GLOBAL opcode (protocol 4)
    let err = pickle::load(b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93).").unwrap_err();
    assert!(matches!(err, PickleError::ForbiddenGlobal { ref name, .. } if name == "exec"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    /// Arbitrary bytes never panic the unpickler.
    #[test]
    fn unpickler_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = pickle::load(&bytes);
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
