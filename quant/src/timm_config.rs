//! timm's `config.json`, the file timm writes beside `model.safetensors` (`save_pretrained`,
//! `push_to_hf_hub`): architecture, class count and names, and the pretrained config whose
//! preprocessing fields (`input_size`, `crop_pct`, `crop_mode`, `interpolation`, `mean`, `std`)
//! define timm's evaluation transform. The legacy single-dict layout is read too.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vitedge::preprocess::PreprocessConfig;

use crate::convert::{ConvertError, Labels};

/// What a timm config.json says about a model.
#[derive(Clone, Debug)]
pub struct TimmConfig {
    /// The file read.
    pub path: PathBuf,
    /// timm architecture name (`architecture`).
    pub architecture: Option<String>,
    /// Head size (`num_classes`).
    pub num_classes: Option<usize>,
    /// Attention heads from `model_args.num_heads` (the one shape the tensors do not show).
    pub num_heads: Option<usize>,
    /// Class names (`label_names`, with `label_descriptions` as display names when present).
    pub labels: Option<Labels>,
    /// timm's evaluation transform for the pretrained config.
    pub preprocess: PreprocessConfig,
    /// Remarks for the user (ignored fields).
    pub notes: Vec<String>,
}

fn f64_triple(v: Option<&Value>, key: &str) -> Result<[f64; 3], String> {
    let arr = v.and_then(Value::as_array).ok_or(format!("`{key}` is missing or not a list"))?;
    let vals: Vec<f64> = arr.iter().map(Value::as_f64).collect::<Option<_>>().ok_or(format!("`{key}` holds non-numbers"))?;
    match vals.as_slice() {
        [a, b, c] => Ok([*a, *b, *c]),
        [a] => Ok([*a; 3]),
        _ => Err(format!("`{key}` has {} values, expected 3", vals.len())),
    }
}

/// Parses the text of a timm config.json.
pub fn parse(text: &str, path: &Path) -> Result<TimmConfig, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = root.as_object().ok_or("not a JSON object")?;
    if !obj.contains_key("architecture") && !obj.contains_key("pretrained_cfg") {
        return Err("no `architecture` or `pretrained_cfg`: not a timm config.json (a Hugging Face transformers config has `model_type` instead)".into());
    }
    let cfg = obj.get("pretrained_cfg").and_then(Value::as_object).unwrap_or(obj);
    let input_size: Vec<usize> = cfg
        .get("input_size")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
        .ok_or("`input_size` is missing")?
        .ok_or("`input_size` holds non-integers")?;
    let mut notes = Vec::new();
    let crop_pct = cfg.get("crop_pct").and_then(Value::as_f64);
    if let Some(t) = cfg.get("test_crop_pct").and_then(Value::as_f64) {
        if Some(t) != crop_pct {
            notes.push(format!("config.json has test_crop_pct {t}; vitedge uses crop_pct {crop_pct:?} like timm's resolve_data_config (pass --crop-pct {t} for the other)"));
        }
    }
    if cfg.get("crop_border_pixels").and_then(Value::as_u64).is_some_and(|v| v > 0) {
        return Err("crop_border_pixels (timm's TrimBorder) is not supported".into());
    }
    let preprocess = crate::transform::timm_eval(
        &input_size,
        crop_pct,
        cfg.get("crop_mode").and_then(Value::as_str),
        cfg.get("interpolation").and_then(Value::as_str),
        f64_triple(cfg.get("mean"), "mean")?,
        f64_triple(cfg.get("std"), "std")?,
    )?;
    let mut architecture = obj.get("architecture").or_else(|| cfg.get("architecture")).and_then(Value::as_str).map(str::to_string);
    // `timm.create_model(name, embed_dim=32, depth=2, ...)` is saved as the name plus `model_args`:
    // the name then no longer describes the shapes, so the model is recognized by its tensors.
    let model_args = obj.get("model_args").and_then(Value::as_object);
    let num_heads = model_args.and_then(|m| m.get("num_heads")).and_then(Value::as_u64).map(|n| n as usize);
    let shape_args: Vec<String> = model_args
        .map(|m| {
            ["embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio"]
                .iter()
                .filter_map(|k| m.get(*k).map(|v| format!("{k} {v}")))
                .collect()
        })
        .unwrap_or_default();
    if let (Some(a), false) = (&architecture, shape_args.is_empty()) {
        notes.push(format!("config.json's model_args change {a}'s shapes ({}); the model is recognized by its tensors", shape_args.join(", ")));
        architecture = None;
    }
    let num_classes = obj.get("num_classes").or_else(|| cfg.get("num_classes")).and_then(Value::as_u64).map(|n| n as usize);
    let names = obj.get("label_names").or_else(|| cfg.get("label_names")).or_else(|| obj.get("labels"));
    let descriptions = obj.get("label_descriptions").or_else(|| cfg.get("label_descriptions")).and_then(Value::as_object);
    let labels = match names {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or("`label_names` holds non-strings")?),
        Some(Value::Object(m)) => {
            // {"0": "cat", "1": "dog"}: by index; every index must be present.
            let mut v: Vec<(usize, String)> = m
                .iter()
                .map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                .collect::<Option<_>>()
                .ok_or("`label_names` is not an index → name map")?;
            v.sort();
            if v.iter().enumerate().any(|(i, (k, _))| i != *k) {
                return Err("`label_names` has gaps in its indices".into());
            }
            Some(v.into_iter().map(|(_, n)| n).collect())
        }
        Some(_) => return Err("`label_names` is neither a list nor a map".into()),
    };
    let labels = labels.map(|names| match descriptions {
        Some(d) => Labels { ids: names.clone(), names: names.iter().map(|n| d.get(n).and_then(Value::as_str).unwrap_or(n).to_string()).collect() },
        None => Labels { names, ids: Vec::new() },
    });
    Ok(TimmConfig { path: path.to_path_buf(), architecture, num_classes, num_heads, labels, preprocess, notes })
}

/// Reads a timm config.json.
pub fn read(path: &Path) -> Result<TimmConfig, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::Input(format!("cannot read {}: {e}", path.display())))?;
    parse(&text, path).map_err(|e| ConvertError::Input(format!("{}: {e}", path.display())))
}

/// The timm config.json beside a checkpoint timm saved (`DIR/model.safetensors` or
/// `DIR/pytorch_model.bin` with `DIR/config.json`), if there is one.
pub fn beside(checkpoint: &Path) -> Option<PathBuf> {
    let name = checkpoint.file_name()?.to_str()?;
    if !matches!(name, "model.safetensors" | "pytorch_model.bin" | "open_clip_model.safetensors") {
        return None;
    }
    let cfg = checkpoint.with_file_name("config.json");
    cfg.is_file().then_some(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_timm_layout_with_labels() {
        let text = r#"{"architecture": "vit_tiny_patch16_224", "num_classes": 2, "num_features": 192, "global_pool": "token",
            "pretrained_cfg": {"tag": "augreg_in21k_ft_in1k", "input_size": [3, 224, 224], "fixed_input_size": true,
            "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
            "num_classes": 2, "pool_size": null, "first_conv": "patch_embed.proj", "classifier": "head"},
            "label_names": ["n01440764", "n01443537"], "label_descriptions": {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish"}}"#;
        let c = parse(text, Path::new("config.json")).unwrap();
        assert_eq!(c.architecture.as_deref(), Some("vit_tiny_patch16_224"));
        assert_eq!(c.num_classes, Some(2));
        let l = c.labels.unwrap();
        assert_eq!(l.ids, ["n01440764", "n01443537"]);
        assert_eq!(l.names, ["tench, Tinca tinca", "goldfish"]);
        assert_eq!(c.preprocess.describe(), "Resize(size=248, interpolation=bicubic), CenterCrop(size=(224, 224)), ToTensor(), Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))");
    }

    #[test]
    fn model_args_that_change_the_shapes_unname_the_architecture() {
        // What timm's save_config_for_hf writes for create_model("vit_tiny_patch16_224", embed_dim=32, depth=2, num_heads=2).
        let c = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lightning/config.json")).unwrap();
        assert_eq!(c.architecture, None);
        assert_eq!(c.num_heads, Some(2));
        assert!(c.notes.iter().any(|n| n.contains("model_args change vit_tiny_patch16_224's shapes (embed_dim 32, depth 2, num_heads 2)")), "{:?}", c.notes);
        // model_args that keep the shapes (a head size, an input size) keep the name.
        let text = r#"{"architecture": "vit_tiny_patch16_224", "model_args": {"num_classes": 10, "img_size": [224, 224]},
            "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}"#;
        let c = parse(text, Path::new("config.json")).unwrap();
        assert_eq!(c.architecture.as_deref(), Some("vit_tiny_patch16_224"));
        assert_eq!(c.num_heads, None);
    }

    #[test]
    fn refuses_other_configs() {
        assert!(parse(r#"{"model_type": "vit", "image_size": 224}"#, Path::new("c.json")).unwrap_err().contains("transformers"));
        assert!(parse(r#"{"architecture": "x", "input_size": [3, 224, 224], "mean": [0.5], "std": "a"}"#, Path::new("c.json")).is_err());
    }
}
