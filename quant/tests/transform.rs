//! Preprocessing stated in the user's words (torchvision reprs, timm configs) and assumed from timm's
//! pretrained configs: parsed from genuine library output, and reproduced exactly by vitedge.

use std::collections::BTreeMap;
use std::path::Path;

use vitedge::preprocess::{PreprocessConfig, Preprocessor, Resize};
use vitedge_quant::arch::{self, known_archs, recognize, Recognized};
use vitedge_quant::checkpoint::{FloatTensor, StateDict};
use vitedge_quant::convert::{arch_from_file_name, settle_preprocess, ConvertOptions};
use vitedge_quant::transform::parse_repr;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transforms")
}

/// The deterministic RGB pattern of `quant/scripts/transform_reference.py`.
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

/// Every repr genuine torchvision 0.29 / timm 1.0.31 printed (v1, v2, timm's create_transform in
/// center, squash and border modes, every PIL filter, max_size, padding crops) parses, and vitedge's
/// preprocessing of the pattern gives torchvision's pixels bit for bit — and its float tensor bit
/// for bit where the script kept it.
#[test]
fn torchvision_reprs_parse_and_reproduce_torchvision_exactly() {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut tensors = 0;
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let repr = c["repr"].as_str().unwrap();
        let stated = parse_repr(repr).unwrap_or_else(|e| panic!("{name}: {e}\n{repr}"));
        let (w, h) = (c["width"].as_u64().unwrap() as usize, c["height"].as_u64().unwrap() as usize);
        let cfg = stated.config;
        assert_eq!((cfg.input_size as u64, cfg.input_size as u64), (c["out_width"].as_u64().unwrap(), c["out_height"].as_u64().unwrap()), "{name}");
        let want = std::fs::read(fixtures().join(format!("{name}.out.raw"))).unwrap();
        let mut p = Preprocessor::new(cfg.clone());
        let got = p.resize_crop(&pattern(w, h), w, h).unwrap_or_else(|e| panic!("{name}: {e}"));
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} of {} bytes differ from torchvision ({})", want.len(), cfg.describe());
        if c["tensor"].as_bool() == Some(true) {
            let bytes = std::fs::read(fixtures().join(format!("{name}.tensor.f32"))).unwrap();
            let want: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let mut out = vec![0f32; want.len()];
            p.run(&pattern(w, h), w, h, &mut out).unwrap();
            let bad = out.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(bad, 0, "{name}: {bad} tensor values differ from torchvision's");
            tensors += 1;
        }
    }
    assert!(tensors >= 8);
}

#[test]
fn the_printed_transform_is_read_back_from_describe() {
    // `inspect` prints the stored transform in torchvision's words; reading those words gives the same.
    for c in serde_json::from_slice::<serde_json::Value>(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap()["cases"].as_array().unwrap() {
        let cfg = parse_repr(c["repr"].as_str().unwrap()).unwrap().config;
        let again = parse_repr(&cfg.describe()).unwrap_or_else(|e| panic!("{}: {e}", cfg.describe())).config;
        assert_eq!(again.steps(), cfg.steps(), "{}", cfg.describe());
        assert_eq!((again.mean, again.std, again.interpolation), (cfg.mean, cfg.std, cfg.interpolation));
    }
}

/// A state dict with the tensor shapes of `a` (and a `classes`-way head); values are not needed
/// for recognition.
fn shapes_of(a: &arch::KnownArch, classes: usize) -> StateDict {
    let d = a.embed_dim;
    let t = |shape: Vec<usize>| FloatTensor { shape, data: Vec::new() };
    let mut sd = BTreeMap::new();
    let grid = a.img_size / a.patch_size;
    sd.insert("patch_embed.proj.weight".to_string(), t(vec![d, 3, a.patch_size, a.patch_size]));
    sd.insert("cls_token".to_string(), t(vec![1, 1, d]));
    if a.distilled {
        sd.insert("dist_token".to_string(), t(vec![1, 1, d]));
    }
    sd.insert("pos_embed".to_string(), t(vec![1, grid * grid + 1 + a.distilled as usize, d]));
    for i in 0..a.depth {
        sd.insert(format!("blocks.{i}.norm1.weight"), t(vec![d]));
        sd.insert(format!("blocks.{i}.mlp.fc1.weight"), t(vec![a.mlp_hidden, d]));
    }
    sd.insert("head.weight".to_string(), t(vec![classes, d]));
    sd
}

/// Every known name's stored preprocessing equals timm's own pretrained config (every tag the
/// table has; the table is genuine timm output, read here independently as plain JSON).
#[test]
fn every_known_name_gets_timms_pretrained_preprocessing() {
    let raw: serde_json::Value = serde_json::from_str(include_str!("../src/timm_archs.json")).unwrap();
    assert_eq!(raw["timm"], "1.0.31");
    let archs = raw["archs"].as_array().unwrap();
    assert_eq!(archs.len(), known_archs().len());
    let mut checked = 0;
    for ra in archs {
        let name = ra["name"].as_str().unwrap();
        let a = arch::known(name).unwrap().0;
        for (tag, cfg) in ra["pretrained"].as_object().unwrap() {
            let full = format!("{name}.{tag}");
            let (config, how) = recognize(&shapes_of(a, 10), Some(&full)).unwrap();
            assert_eq!((config.arch.as_str(), &how), (name, &Recognized::Named));
            let (p, source) = settle_preprocess(&config, Some(&full), &ConvertOptions::default()).unwrap();
            assert!(source.contains(&full), "{source}");
            let size = cfg["input_size"][2].as_u64().unwrap() as usize;
            let crop_pct = cfg["crop_pct"].as_f64().unwrap();
            let scale = (size as f64 / crop_pct).floor() as usize;
            assert_eq!(p.input_size, size, "{full}");
            assert_eq!(p.interpolation.name(), cfg["interpolation"].as_str().unwrap(), "{full}");
            let f = |k: &str| -> [f32; 3] { std::array::from_fn(|i| cfg[k][i].as_f64().unwrap() as f32) };
            assert_eq!((p.mean, p.std), (f("mean"), f("std")), "{full}");
            let want = match cfg["crop_mode"].as_str().unwrap() {
                "center" => Resize::ShorterSide { size: scale, max_size: None },
                "squash" => Resize::Exact { height: scale, width: scale },
                m => panic!("{full}: crop_mode {m} not expected in the table"),
            };
            assert_eq!(p.steps().resize, Some(want), "{full}");
            let crop = p.steps().center_crop.unwrap();
            assert_eq!((crop.height, crop.width, crop.fill), (size, size, [0; 3]), "{full}");
            checked += 1;
        }
    }
    assert!(checked >= known_archs().len());
    // What the issue found wrong: DeiT's crop is 0.9 in timm 1.0, patch32 / 384 names are known.
    let deit = arch::known("deit_small_patch16_224").unwrap().0.pretrained_cfg(None).1;
    assert_eq!(deit.crop_pct, Some(0.9));
    for n in ["vit_base_patch32_224", "vit_tiny_patch16_384", "vit_small_patch32_384", "deit_base_distilled_patch16_384"] {
        assert!(arch::known(n).is_some(), "{n}");
    }
    assert!(arch::excluded_archs()["deit3_small_patch16_224"].contains("layer scale"));
}

/// The seed's checkpoint is exactly vit_tiny_patch16_224 with a 10-class head: recognized by shape,
/// it gets vit_tiny's pretrained config (bicubic, crop 0.9, mean = std = 0.5), not timm's generic one.
#[test]
fn known_architectures_are_recognized_by_shape_with_any_head() {
    for a in known_archs() {
        let (config, how) = recognize(&shapes_of(a, 10), None).unwrap();
        let first = known_archs().iter().find(|b| {
            (b.embed_dim, b.depth, b.patch_size, b.img_size, b.mlp_hidden, b.distilled) == (a.embed_dim, a.depth, a.patch_size, a.img_size, a.mlp_hidden, a.distilled)
        });
        assert_eq!(config.arch, first.unwrap().name, "{}", a.name);
        assert!(matches!(how, Recognized::ByShape { .. }));
        assert_eq!((config.num_heads, config.num_classes), (a.num_heads, 10));
    }
    let tiny = arch::known("vit_tiny_patch16_224").unwrap().0;
    let (config, how) = recognize(&shapes_of(tiny, 10), None).unwrap();
    assert_eq!(how, Recognized::ByShape { also: vec!["deit_tiny_patch16_224".into()] });
    let (p, source) = settle_preprocess(&config, None, &ConvertOptions::default()).unwrap();
    assert!(source.starts_with("assumed: timm 1.0.31 pretrained_cfg of vit_tiny_patch16_224.augreg_in21k_ft_in1k"), "{source}");
    assert_eq!(p.describe(), "Resize(size=248, interpolation=bicubic), CenterCrop(size=(224, 224)), ToTensor(), Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))");
    // A stated transform wins and is said to be stated.
    let stated = parse_repr("Compose(Resize(224), ToTensor(), Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))").unwrap().config;
    let opts = ConvertOptions { preprocess: Some(stated.clone()), ..Default::default() };
    let (p, source) = settle_preprocess(&config, None, &opts).unwrap();
    assert_eq!((p, source.as_str()), (stated, "stated: --transform"));
    // A transform for another input size is refused.
    let other = parse_repr("Compose(Resize(384), CenterCrop(384), ToTensor())").unwrap().config;
    let err = settle_preprocess(&config, None, &ConvertOptions { preprocess: Some(other), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("384x384 inputs but the model takes 224x224"), "{err}");
}

#[test]
fn file_names_are_recognized_by_prefix() {
    let cases = [
        ("vit_tiny_patch16_224.safetensors", Some("vit_tiny_patch16_224")),
        ("vit_tiny_patch16_224_cifar10.ckpt", Some("vit_tiny_patch16_224")),
        ("vit_tiny_patch16_224-finetuned.pth", Some("vit_tiny_patch16_224")),
        ("vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors", Some("vit_tiny_patch16_224.augreg_in21k_ft_in1k")),
        ("vit_tiny_patch16_2240.ckpt", None),
        ("deit_base_distilled_patch16_384_ep3.ckpt", Some("deit_base_distilled_patch16_384")),
        ("epoch=3-step=100.ckpt", None),
    ];
    for (file, want) in cases {
        assert_eq!(arch_from_file_name(Path::new(file)).as_deref(), want, "{file}");
    }
}

#[test]
fn legacy_headers_keep_their_meaning() {
    // A header written before `transform` existed: timm's center rule from crop_pct.
    let old: PreprocessConfig = serde_json::from_str(
        r#"{"input_size": 224, "crop_pct": 0.9, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}"#,
    )
    .unwrap();
    assert_eq!(old.transform, None);
    assert_eq!(old.steps().resize, Some(Resize::ShorterSide { size: 248, max_size: None }));
    // Round trip of a new one.
    let new = parse_repr("Compose(Resize((224, 224), interpolation=InterpolationMode.BICUBIC), ToTensor())").unwrap().config;
    let back: PreprocessConfig = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
    assert_eq!(back, new);
}

