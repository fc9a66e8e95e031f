//! Architecture recognition: from a state dict's tensor shapes plus an optional known timm name to a
//! [`VitConfig`] and default preprocessing, and the mapping of checkpoint keys to blob tensors.

use std::collections::BTreeMap;

use vitedge::model::VitConfig;
use vitedge::preprocess::PreprocessConfig;

use crate::checkpoint::{FloatTensor, StateDict};

/// Errors in recognizing the architecture of a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// A tensor the architecture needs is absent.
    #[error("missing tensor `{key}` (expected shape {expected:?}); is this a timm ViT/DeiT checkpoint?")]
    Missing { key: String, expected: Vec<usize> },
    /// A tensor has the wrong shape for the recognized architecture.
    #[error("tensor `{key}` has shape {found:?}, expected {expected:?}")]
    Shape { key: String, expected: Vec<usize>, found: Vec<usize> },
    /// The checkpoint holds tensors the ViT architecture does not use.
    #[error("unexpected tensor(s) {keys:?}: this checkpoint has parts vitedge's ViT does not implement (e.g. a different pooling, q/k norms or layer scale); refusing to silently drop them")]
    Unexpected { keys: Vec<String> },
    /// No ViT patch embedding was found at all.
    #[error("no key ends with `patch_embed.proj.weight` (found e.g. {sample:?}); vitedge reads timm-style ViT/DeiT state dicts")]
    NotVit { sample: Vec<String> },
    /// `--arch` named an unknown architecture, or one that disagrees with the tensors.
    #[error("{0}")]
    Arch(String),
}

/// A known timm architecture.
pub struct KnownArch {
    /// timm name.
    pub name: &'static str,
    /// Token width.
    pub embed_dim: usize,
    /// Blocks.
    pub depth: usize,
    /// Heads.
    pub num_heads: usize,
    /// Distillation token.
    pub distilled: bool,
    /// Whether timm's default pretrained config uses the augreg preprocessing (else DeiT's).
    pub augreg: bool,
}

/// The architectures vitedge knows by name.
pub const KNOWN_ARCHS: &[KnownArch] = &[
    KnownArch { name: "vit_tiny_patch16_224", embed_dim: 192, depth: 12, num_heads: 3, distilled: false, augreg: true },
    KnownArch { name: "vit_small_patch16_224", embed_dim: 384, depth: 12, num_heads: 6, distilled: false, augreg: true },
    KnownArch { name: "vit_base_patch16_224", embed_dim: 768, depth: 12, num_heads: 12, distilled: false, augreg: true },
    KnownArch { name: "deit_tiny_patch16_224", embed_dim: 192, depth: 12, num_heads: 3, distilled: false, augreg: false },
    KnownArch { name: "deit_small_patch16_224", embed_dim: 384, depth: 12, num_heads: 6, distilled: false, augreg: false },
    KnownArch { name: "deit_base_patch16_224", embed_dim: 768, depth: 12, num_heads: 12, distilled: false, augreg: false },
    KnownArch { name: "deit_tiny_distilled_patch16_224", embed_dim: 192, depth: 12, num_heads: 3, distilled: true, augreg: false },
    KnownArch { name: "deit_small_distilled_patch16_224", embed_dim: 384, depth: 12, num_heads: 6, distilled: true, augreg: false },
    KnownArch { name: "deit_base_distilled_patch16_224", embed_dim: 768, depth: 12, num_heads: 12, distilled: true, augreg: false },
];

/// Looks a known architecture up by timm name (a `.tag` suffix such as `.augreg_in21k_ft_in1k` is ignored).
pub fn known(name: &str) -> Option<&'static KnownArch> {
    let base = name.split('.').next().unwrap_or(name);
    KNOWN_ARCHS.iter().find(|a| a.name == base)
}

/// Strips the prefix under which a training framework stored the network (`model.` for Lightning,
/// `module.` for DataParallel...), found as whatever precedes `patch_embed.proj.weight`.
/// Keys outside that prefix (e.g. a Lightning module's loss buffers) are dropped with a log line.
pub fn strip_prefix(sd: StateDict) -> Result<StateDict, ArchError> {
    let prefix = sd
        .keys()
        .filter_map(|k| k.strip_suffix("patch_embed.proj.weight"))
        .min_by_key(|p| p.len())
        .map(str::to_string)
        .ok_or_else(|| ArchError::NotVit { sample: sd.keys().take(5).cloned().collect() })?;
    if !prefix.is_empty() {
        log::info!("tensor names carry the prefix `{prefix}`; stripping it");
    }
    let mut out = StateDict::new();
    for (k, v) in sd {
        match k.strip_prefix(prefix.as_str()) {
            Some(rest) => {
                out.insert(rest.to_string(), v);
            }
            None => log::info!("ignoring `{k}`: outside the network prefix `{prefix}`"),
        }
    }
    Ok(out)
}

fn get<'a>(sd: &'a StateDict, key: &str, expected: &[usize]) -> Result<&'a FloatTensor, ArchError> {
    sd.get(key).ok_or_else(|| ArchError::Missing { key: key.into(), expected: expected.to_vec() })
}

fn shape_of(sd: &StateDict, key: &str, rank: usize) -> Result<Vec<usize>, ArchError> {
    let t = get(sd, key, &vec![0; rank])?;
    if t.shape.len() != rank {
        return Err(ArchError::Shape { key: key.into(), expected: vec![0; rank], found: t.shape.clone() });
    }
    Ok(t.shape.clone())
}

/// Infers the architecture from tensor shapes. `name` (from `--arch` or the file name) selects a
/// known architecture, which must agree with the shapes; without it the head count follows timm's
/// convention (`embed_dim / 64`).
pub fn infer_config(sd: &StateDict, name: Option<&str>) -> Result<VitConfig, ArchError> {
    let pe = shape_of(sd, "patch_embed.proj.weight", 4)?;
    let (d, chans, p) = (pe[0], pe[1], pe[2]);
    if pe[3] != p {
        return Err(ArchError::Arch(format!("non-square patches {}x{} are not supported", pe[2], pe[3])));
    }
    let distilled = sd.contains_key("dist_token");
    let prefix = 1 + distilled as usize;
    let pos = shape_of(sd, "pos_embed", 3)?;
    let patches = pos[1].checked_sub(prefix).unwrap_or(0);
    let grid = (patches as f64).sqrt().round() as usize;
    if grid * grid != patches || patches == 0 || pos[2] != d {
        return Err(ArchError::Arch(format!(
            "pos_embed shape {pos:?} does not describe a square grid of patches plus {prefix} prefix token(s) of width {d}"
        )));
    }
    let mut depth = 0;
    while sd.contains_key(&format!("blocks.{depth}.norm1.weight")) {
        depth += 1;
    }
    if depth == 0 {
        return Err(ArchError::Missing { key: "blocks.0.norm1.weight".into(), expected: vec![d] });
    }
    let mlp_hidden = shape_of(sd, "blocks.0.mlp.fc1.weight", 2)?[0];
    let num_classes = shape_of(sd, "head.weight", 2)?[0];
    let known_arch = name.and_then(known);
    let num_heads = match (known_arch, name) {
        (Some(a), _) => {
            if a.embed_dim != d || a.depth != depth || a.distilled != distilled {
                return Err(ArchError::Arch(format!(
                    "--arch {} expects embed_dim {}, depth {}, distilled {}, but the checkpoint has {d}, {depth}, {distilled}",
                    a.name, a.embed_dim, a.depth, a.distilled
                )));
            }
            a.num_heads
        }
        (None, Some(n)) if n != "custom" => {
            return Err(ArchError::Arch(format!(
                "unknown architecture `{n}`; known: {}; or pass --arch custom --heads N",
                KNOWN_ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
            )))
        }
        _ => (d / 64).max(1),
    };
    let cfg = VitConfig {
        arch: known_arch.map_or("custom", |a| a.name).to_string(),
        image_size: grid * p,
        patch_size: p,
        in_chans: chans,
        embed_dim: d,
        depth,
        num_heads,
        mlp_hidden,
        num_classes,
        distilled,
        layer_norm_eps: 1e-6,
    };
    cfg.validate().map_err(|(field, reason)| ArchError::Arch(format!("{field}: {reason}")))?;
    Ok(cfg)
}

/// timm's pretrained preprocessing for `cfg`: augreg ViTs use mean = std = 0.5 and crop 0.9, DeiT uses
/// ImageNet statistics and crop 0.875; unknown architectures get the DeiT/ImageNet defaults.
pub fn default_preprocess(cfg: &VitConfig) -> PreprocessConfig {
    match known(&cfg.arch) {
        Some(a) if a.augreg => PreprocessConfig::augreg(cfg.image_size),
        _ => PreprocessConfig::deit(cfg.image_size),
    }
}

/// Checks every key against the architecture and returns the tensors by blob name, flattened to the
/// blob shapes (the patch convolution becomes a `[embed_dim, c·p·p]` matrix). Missing, mis-shaped
/// and unexpected keys are errors naming the key.
pub fn map_tensors(sd: &StateDict, cfg: &VitConfig) -> Result<BTreeMap<String, FloatTensor>, ArchError> {
    let mut out = BTreeMap::new();
    let mut used = std::collections::BTreeSet::new();
    for (name, shape) in cfg.blob_tensor_shapes() {
        let src_shape: Vec<usize> = if name == "patch_embed.proj.weight" {
            vec![cfg.embed_dim, cfg.in_chans, cfg.patch_size, cfg.patch_size]
        } else {
            shape.clone()
        };
        let t = get(sd, &name, &src_shape)?;
        // Accept [D] for tokens saved without the leading unit axes.
        let numel: usize = src_shape.iter().product();
        if t.shape != src_shape && !(t.data.len() == numel && t.shape.iter().filter(|&&d| d != 1).eq(src_shape.iter().filter(|&&d| d != 1))) {
            return Err(ArchError::Shape { key: name, expected: src_shape, found: t.shape.clone() });
        }
        if t.data.len() != numel {
            return Err(ArchError::Shape { key: name, expected: src_shape, found: t.shape.clone() });
        }
        used.insert(name.clone());
        out.insert(name, FloatTensor { shape, data: t.data.clone() });
    }
    let unexpected: Vec<String> = sd.keys().filter(|k| !used.contains(*k)).cloned().collect();
    if !unexpected.is_empty() {
        return Err(ArchError::Unexpected { keys: unexpected });
    }
    Ok(out)
}
