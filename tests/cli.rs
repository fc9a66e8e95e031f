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

/// quant/tests/fixtures/lightning: a width-32 depth-2 `vit_tiny_patch16_224` fine-tuned by
/// pytorch-lightning, with PyTorch's logits (quant/scripts/make_lightning_fixtures.sh).
fn lightning_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("quant/tests/fixtures/lightning").join(name)
}

/// Converts a Lightning fixture checkpoint as `vitedge-quant convert CKPT --transform-file
/// eval_transform.txt --heads 2` (`by_config` false) or `--config config.json` (true) does.
fn convert_lightning(ckpt: &str, by_config: bool, labels: Option<vitedge_quant::convert::Labels>, out: &std::path::Path) {
    use vitedge_quant::convert::{self, ConvertOptions, Precision};
    let mut opts = ConvertOptions { labels, ..Default::default() };
    if by_config {
        opts.timm_config = Some(vitedge_quant::timm_config::read(&lightning_fixture("config.json")).unwrap());
    } else {
        let repr = std::fs::read_to_string(lightning_fixture("eval_transform.txt")).unwrap();
        opts.preprocess = Some(vitedge_quant::transform::parse_repr(&repr).unwrap().config);
        opts.heads = Some(2);
    }
    let prepared = convert::prepare_file(&lightning_fixture(ckpt), &opts).unwrap();
    convert::write_blob(&convert::float_blob(&prepared, Precision::F32), out).unwrap();
}

/// `vitedge classify --logits` output: the logits of every input, in order.
fn classify_logits(model: &std::path::Path, extra: &[std::ffi::OsString]) -> Vec<Vec<f64>> {
    let out = vitedge().args(["classify", "--logits", "--threads", "1", "--model"]).arg(model).args(extra).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        })
        .collect()
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f64::max)
}

#[test]
fn a_lightning_fine_tune_gives_pytorch_s_logits_from_the_jpegs_and_from_its_npy_inputs() {
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lightning_fixture("expected_logits.json")).unwrap()).unwrap();
    let images = expected["images"].as_array().unwrap();
    assert_eq!(images.len(), 4);
    let tensors: Vec<std::ffi::OsString> =
        images.iter().flat_map(|i| ["--tensor".into(), lightning_fixture(i["input"].as_str().unwrap()).into_os_string()]).collect();
    let jpegs: Option<Vec<std::ffi::OsString>> =
        shared().map(|s| images.iter().map(|i| s.join("imagenet-sample").join(i["file"].as_str().unwrap()).into_os_string()).collect());
    let dir = tempfile::tempdir().unwrap();
    for (ckpt, kind) in [("lightning_raw.ckpt", "raw"), ("lightning_swa.ckpt", "swa")] {
        let want: Vec<Vec<f64>> = expected["checkpoints"][ckpt][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect();
        // The fixture's config.json names vit_tiny_patch16_224 with model_args shrinking it
        // (embed_dim 32, depth 2, num_heads 2), as timm's save_config_for_hf writes it.
        for by_config in [false, true] {
            let blob = dir.path().join(format!("{ckpt}.{by_config}.vitb"));
            convert_lightning(ckpt, by_config, None, &blob);
            let how = if by_config { "--config config.json" } else { "--transform-file eval_transform.txt" };
            let from_tensors = classify_logits(&blob, &tensors);
            let d = max_abs_diff(&from_tensors, &want);
            eprintln!("{ckpt} ({kind} weights, {how}): classify --tensor input_*.npy: max |logit - PyTorch| = {d:.2e}");
            assert!(d <= 1e-4, "{ckpt} {how}: --tensor logits differ from PyTorch's by {d}");
            let Some(jpegs) = &jpegs else {
                eprintln!("JPEG half skipped: ../shared/imagenet-sample is missing");
                continue;
            };
            let from_jpegs = classify_logits(&blob, jpegs);
            let d = max_abs_diff(&from_jpegs, &want);
            eprintln!("{ckpt} ({kind} weights, {how}): classify on the JPEGs: max |logit - PyTorch| = {d:.2e}");
            assert!(d <= 1e-4, "{ckpt} {how}: JPEG logits differ from PyTorch's by {d}");
            // Decoding and preprocessing are exact, so the engine saw the very tensors PyTorch saw.
            assert_eq!(from_jpegs, from_tensors, "{ckpt} {how}: JPEG path and .npy path differ");
        }
    }
}

/// `vitedge eval --json --per-class` on `images`, with the stderr line saying how classes matched.
fn eval_json(model: &std::path::Path, images: &std::path::Path) -> (serde_json::Value, String) {
    let out = vitedge().args(["eval", "--json", "--per-class", "--threads", "1", "--model"]).arg(model).arg("--images").arg(images).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {err}", images.display());
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// Links (or copies) `from` to `to`, creating `to`'s folder.
fn link(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(from, to).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(from, to).unwrap();
}

#[test]
fn eval_on_an_image_folder_tree_gives_the_flat_folder_s_results() {
    let Some(s) = shared() else {
        return eprintln!("eval_on_an_image_folder_tree_gives_the_flat_folder_s_results: skipped, ../shared is missing");
    };
    // The fixture's 10 classes (the first 10 synsets of imagenet-sample), labelled as
    // ../shared/imagenet_classes.txt names them, as `--labels` gives them.
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(lightning_fixture("expected_logits.json")).unwrap()).unwrap();
    let classes: Vec<String> = expected["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    let all = std::fs::read_to_string(s.join("imagenet_classes.txt")).unwrap();
    let lines: Vec<&str> = classes.iter().map(|c| all.lines().find(|l| l.starts_with(c.as_str())).unwrap()).collect();
    let labels = vitedge_quant::convert::Labels::parse(&lines.join("\n"));
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("m.vitb");
    convert_lightning("lightning_raw.ckpt", false, Some(labels.clone()), &blob);

    let files: Vec<std::path::PathBuf> = sample_images().into_iter().filter(|p| classes.iter().any(|c| p.file_name().unwrap().to_str().unwrap().starts_with(c.as_str()))).collect();
    assert_eq!(files.len(), 10);
    // The same images as a flat folder, and as ImageFolder trees named by synset id, by label name,
    // and by a training-order prefix matching no label (torchvision's sorted class indices).
    type FolderName = fn(usize, &str, &str) -> String;
    let layouts: [(&str, FolderName, &str); 4] = [
        ("flat", |_, _, _| String::new(), ""),
        ("by_id", |_, id, _| id.to_string(), "matched to the model's labels by label ids"),
        ("by_name", |_, _, name| name.replace('_', " "), "matched to the model's labels by label names"),
        ("by_order", |i, _, _| format!("class{i:02}"), "matched to the model's labels by sorted folder order"),
    ];
    let mut results = Vec::new();
    for (layout, folder, said) in layouts {
        let root = dir.path().join(layout);
        for f in &files {
            let name = f.file_name().unwrap().to_str().unwrap();
            let i = classes.iter().position(|c| name.starts_with(c.as_str())).unwrap();
            link(f, &root.join(folder(i, &labels.ids[i], &labels.names[i])).join(name));
        }
        let (v, err) = eval_json(&blob, &root);
        assert!(err.contains(said), "{layout}: {err}");
        assert_eq!((v["images"].as_u64(), v["labelled"].as_u64()), (Some(10), Some(10)), "{layout}: {v}");
        eprintln!("{layout}: top-1 {} top-5 {}", v["top1"], v["top5"]);
        results.push((layout, v));
    }
    let (_, flat) = &results[0];
    let per_class = flat["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10, "{flat}");
    assert_eq!(per_class[0]["label"], labels.names[0]);
    for (layout, v) in &results[1..] {
        for key in ["top1", "top5", "per_class"] {
            assert_eq!(v[key], flat[key], "{layout}: {key}");
        }
    }
    // int8 calibration reads the same tree and records the images by their CLASS/IMAGE names, which
    // `eval --exclude-calibration` then leaves out.
    let prepared = vitedge_quant::convert::prepare_file(&lightning_fixture("lightning_raw.ckpt"), &vitedge_quant::convert::ConvertOptions {
        heads: Some(2),
        labels: Some(labels.clone()),
        preprocess: Some(vitedge_quant::transform::parse_repr(&std::fs::read_to_string(lightning_fixture("eval_transform.txt")).unwrap()).unwrap().config),
        ..Default::default()
    })
    .unwrap();
    let (writer, _) = vitedge_quant::convert::build_blob(&prepared, vitedge_quant::convert::Precision::Int8, Some(&dir.path().join("by_id")), 4).unwrap();
    let int8 = dir.path().join("int8.vitb");
    vitedge_quant::convert::write_blob(&writer, &int8).unwrap();
    let calib = vitedge::model::Model::open(&int8).unwrap().header().quantization.as_ref().unwrap().calibration_images.clone();
    assert_eq!(calib.len(), 4);
    assert!(calib.iter().all(|c| classes.iter().any(|id| c.starts_with(&format!("{id}/")))), "{calib:?}");
    let out = vitedge().args(["eval", "--json", "--exclude-calibration", "--model"]).arg(&int8).arg("--images").arg(dir.path().join("by_id")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 6, "{v}");
    // Folders that match no label and are not one per class are refused with what to do.
    let odd = dir.path().join("odd");
    link(&files[0], &odd.join("cat").join("a.JPEG"));
    link(&files[1], &odd.join("dog").join("b.JPEG"));
    let out = vitedge().args(["eval", "--model"]).arg(&blob).arg("--images").arg(&odd).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot match the 2 class folders to the model's 10 classes") && err.contains("--labels"), "{err}");
}
