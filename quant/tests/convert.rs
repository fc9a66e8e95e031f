//! Converter behaviour: architecture recognition, key checking, label files, Lightning checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use vitedge::model::synthetic::tiny_config;
use vitedge::model::VitConfig;
use vitedge_quant::arch::{infer_config, strip_prefix, ArchError};
use vitedge_quant::checkpoint::{FloatTensor, StateDict};
use vitedge_quant::convert::{float_blob, prepare, prepare_file, ConvertError, ConvertOptions, Labels, Precision};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A timm-named state dict for a small ViT with constant-ish values.
fn tiny_state(d: usize, depth: usize, classes: usize, prefix: &str) -> StateDict {
    let mut sd = BTreeMap::new();
    let mut put = |k: &str, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        sd.insert(format!("{prefix}{k}"), FloatTensor { data: (0..n).map(|i| (i % 7) as f32 * 0.01).collect(), shape });
    };
    // The blob's tensor list of a 32×32-input network (4 patches + class token), with the patch
    // embedding as timm's [D, 3, 16, 16] convolution.
    let cfg = VitConfig { embed_dim: d, depth, num_heads: 1, mlp_hidden: 4 * d, num_classes: classes, image_size: 32, patch_size: 16, ..tiny_config(classes) };
    for (name, shape) in cfg.blob_tensor_shapes() {
        put(&name, if name == "patch_embed.proj.weight" { vec![d, 3, 16, 16] } else { shape });
    }
    sd
}

#[test]
fn infers_architecture_from_shapes() {
    let sd = strip_prefix(tiny_state(64, 2, 10, "model.")).unwrap();
    let c = infer_config(&sd, None).unwrap();
    assert_eq!((c.image_size, c.patch_size, c.embed_dim, c.depth, c.num_heads, c.mlp_hidden, c.num_classes), (32, 16, 64, 2, 1, 256, 10));
    assert!(!c.distilled);
    assert_eq!(c.arch, "custom");
}

#[test]
fn known_name_must_agree_with_shapes() {
    let sd = tiny_state(64, 2, 10, "");
    let err = infer_config(&sd, Some("vit_tiny_patch16_224")).unwrap_err();
    assert!(err.to_string().contains("expects embed_dim 192"), "{err}");
    let err = infer_config(&sd, Some("vit_huge_patch99")).unwrap_err();
    assert!(err.to_string().contains("unknown architecture"), "{err}");
}

#[test]
fn missing_misshaped_and_unexpected_keys_are_named() {
    let opts = ConvertOptions::default();
    let mut sd = tiny_state(64, 1, 10, "");
    sd.remove("blocks.0.mlp.fc2.bias");
    let err = prepare(sd, &opts).err().unwrap();
    assert!(matches!(&err, ConvertError::Arch(ArchError::Missing { key, expected }) if key == "blocks.0.mlp.fc2.bias" && expected == &vec![64]), "{err}");

    let mut sd = tiny_state(64, 1, 10, "");
    sd.insert("blocks.0.attn.proj.weight".into(), FloatTensor { shape: vec![64, 32], data: vec![0.0; 64 * 32] });
    let err = prepare(sd, &opts).err().unwrap();
    assert!(err.to_string().contains("blocks.0.attn.proj.weight") && err.to_string().contains("[64, 64]"), "{err}");

    let mut sd = tiny_state(64, 1, 10, "");
    sd.insert("blocks.0.ls1.gamma".into(), FloatTensor { shape: vec![64], data: vec![1.0; 64] });
    let err = prepare(sd, &opts).err().unwrap();
    assert!(err.to_string().contains("blocks.0.ls1.gamma"), "{err}");

    let err = prepare(BTreeMap::from([("fc.weight".to_string(), FloatTensor { shape: vec![2, 2], data: vec![0.0; 4] })]), &opts).err().unwrap();
    assert!(err.to_string().contains("patch_embed.proj.weight"), "{err}");
}

#[test]
fn label_files_with_and_without_synsets() {
    let l = Labels::parse("n01440764 tench\nn01443537 goldfish\n\n");
    assert_eq!(l.names, ["tench", "goldfish"]);
    assert_eq!(l.ids, ["n01440764", "n01443537"]);
    let l = Labels::parse("cat\ndog\nfire truck\n");
    assert_eq!(l.names, ["cat", "dog", "fire truck"]);
    assert!(l.ids.is_empty());
    let opts = ConvertOptions { labels: Some(Labels::parse("a\nb\nc")), ..Default::default() };
    let err = prepare(tiny_state(64, 1, 10, ""), &opts).err().unwrap();
    assert!(err.to_string().contains("3 labels") && err.to_string().contains("10 classes"), "{err}");
}

#[test]
fn lightning_ckpt_converts_to_the_same_blob_as_safetensors() {
    let opts = ConvertOptions { heads: Some(2), ..Default::default() };
    let from_ckpt = prepare_file(&fixture("lightning_tiny.ckpt"), &opts).unwrap();
    let from_st = prepare_file(&fixture("lightning_tiny.safetensors"), &opts).unwrap();
    assert_eq!(from_ckpt.config.num_classes, 10);
    assert_eq!(from_ckpt.config.num_heads, 2);
    for p in [Precision::F32, Precision::F16] {
        let a = float_blob(&from_ckpt, p).to_bytes();
        let b = float_blob(&from_st, p).to_bytes();
        assert!(a == b, "{p:?} blobs differ");
    }
}
