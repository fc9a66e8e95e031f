//! The `vitedge` binary as a user runs it: JSON keys scripts depend on, errors that say what to do.

mod common;

use std::process::Command;

use common::*;
use vitedge::model::synthetic::{random_blob, tiny_config};

fn vitedge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vitedge"))
}

fn tiny_model() -> std::path::PathBuf {
    static P: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("tiny.vitb");
        random_blob(&tiny_config(10), 5).write(&p).unwrap();
        p
    })
    .clone()
}

fn tiny_png() -> std::path::PathBuf {
    static P: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("img.png");
        let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128]));
        img.save(&p).unwrap();
        p
    })
    .clone()
}

#[test]
fn classify_json_has_the_documented_keys() {
    let out = vitedge().args(["classify", "--json", "--top", "3", "--model"]).arg(tiny_model()).arg(tiny_png()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(v["image"].as_str().unwrap().ends_with("img.png"));
    assert!(v["ms"].as_f64().unwrap() >= 0.0);
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    for t in top {
        assert!(t["index"].as_u64().unwrap() < 10);
        assert!(t["label"].is_string());
        let s = t["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s));
    }
    assert!(top[0]["score"].as_f64() >= top[1]["score"].as_f64());
}

#[test]
fn bench_json_has_the_documented_keys() {
    let out = vitedge().args(["bench", "--json", "--iters", "5", "--threads", "1", "--model"]).arg(tiny_model()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["median_ms", "p90_ms", "load_ms"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert_eq!(v["threads"], 1);
    assert_eq!(v["backend"], "native");
    assert_eq!(v["precision"], "f32");
    let blob = std::fs::metadata(tiny_model()).unwrap().len();
    assert_eq!(v["blob_bytes"].as_u64(), Some(blob));
    assert_eq!(v["times_ms"].as_array().map(Vec::len), Some(5));
    if cfg!(target_os = "linux") {
        // The whole blob is mapped with populate, so the peak resident set holds at least the blob.
        let peak = v["peak_rss_kib"].as_u64().expect("peak_rss_kib on Linux");
        assert!(peak * 1024 >= blob, "peak RSS {peak} KiB < blob {blob} bytes");
    }
}

#[test]
fn inspect_verify_passes_on_a_good_blob_and_fails_on_a_damaged_one() {
    let out = vitedge().args(["inspect", "--verify"]).arg(tiny_model()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("blocks.0.attn.qkv.weight") && text.contains("Panel16"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("all checksums match"));

    let mut bytes = std::fs::read(tiny_model()).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let bad = scratch().join("damaged.vitb");
    std::fs::write(&bad, bytes).unwrap();
    let out = vitedge().args(["inspect", "--verify"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}

#[test]
fn errors_are_clear_and_not_panics() {
    let out = vitedge().args(["classify", "--model", "/nonexistent/model.vitb", "x.jpg"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read blob") && !err.contains("panicked"), "{err}");

    let junk = scratch().join("junk.jpg");
    std::fs::write(&junk, b"not an image").unwrap();
    let out = vitedge().args(["classify", "--model"]).arg(tiny_model()).arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot decode image") && !err.contains("panicked"), "{err}");

    let out = vitedge().args(["classify", "--kernels", "quantum", "--model"]).arg(tiny_model()).arg(tiny_png()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("available:"));
}

#[test]
fn eval_json_has_the_documented_keys() {
    if skip_without_real_data("eval_json_has_the_documented_keys") {
        return;
    }
    let model = real_blob(vitedge_quant::convert::Precision::F32);
    let out = vitedge()
        .args(["eval", "--json", "--limit", "20", "--model"])
        .arg(&model)
        .arg("--reference")
        .arg(&model)
        .arg("--images")
        .arg(shared().unwrap().join("imagenet-sample"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 20);
    for key in ["top1", "top5", "agreement", "cosine_mean", "cosine_min"] {
        let x = v[key].as_f64().unwrap_or_else(|| panic!("{key} missing"));
        assert!((0.0..=1.0 + 1e-9).contains(&x), "{key} = {x}");
    }
    assert_eq!(v["agreement"], 1.0, "a model agrees with itself");
}

#[test]
fn damaged_weights_are_refused_by_every_command_unless_told_otherwise() {
    let mut bytes = std::fs::read(tiny_model()).unwrap();
    let b = vitedge::blob::Blob::open(tiny_model()).unwrap();
    let p = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let t = b.header().tensors.iter().find(|t| t.name == "blocks.1.mlp.fc1.weight").unwrap();
    bytes[p + t.offset as usize + 100] ^= 0x04;
    let bad = scratch().join("damaged_fc1.vitb");
    std::fs::write(&bad, bytes).unwrap();
    let png = tiny_png();
    let runs: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["classify".into(), "--model".into(), bad.clone().into(), png.clone().into()],
        vec!["bench".into(), "--iters".into(), "1".into(), "--model".into(), bad.clone().into()],
        vec!["eval".into(), "--model".into(), bad.clone().into(), "--images".into(), png.parent().unwrap().into()],
    ];
    for args in runs {
        let out = vitedge().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing printed before the refusal");
        assert!(err.contains("checksum mismatch in tensor `blocks.1.mlp.fc1.weight`") && err.contains("re-copy it, or re-convert"), "{args:?}: {err}");
    }
    // The opt-out, for files verified by other means.
    let out = vitedge().args(["classify", "--no-verify", "--model"]).arg(&bad).arg(&png).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // inspect still shows the header of a damaged blob; --verify names the tensor.
    let out = vitedge().args(["inspect", "--verify"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("blocks.1.mlp.fc1.weight"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tensor `blocks.1.mlp.fc1.weight`"));
}

#[test]
fn a_damage_sweep_sample_is_refused_with_the_part_named() {
    // scripts/damage-sweep.py (standard-library Python) on the tiny model: 20 cases through
    // classify and stream. The full sweep over the real blobs is the script alone.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/damage-sweep.py");
    let out = match Command::new("python3").arg(&script).args(["--sample", "20", "--jobs", "2", "--vitedge", env!("CARGO_BIN_EXE_vitedge"), "--blob"]).arg(tiny_model()).output() {
        Ok(out) => out,
        Err(e) => return eprintln!("a_damage_sweep_sample_is_refused_with_the_part_named: skipped, no python3 ({e})"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("all refused with the part named"), "{text}");
    for part in ["truncation", "header", "payload"] {
        assert!(text.lines().any(|l| l.split_whitespace().nth(1) == Some(part)), "{part} cases ran: {text}");
    }
}
