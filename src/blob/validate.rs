//! What a parsed header must mean, beyond its syntax: one check per part of the header, all run by
//! [`header`] when a blob is opened and before the writer writes one (FORMAT.md §4 lists them).
//! Each refusal names the field (`preprocess.mean[1]`, `config.depth`, …) or the tensor.
//! New header fields get their check here, in the same style.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;

use super::{BlobError, DType, Header, Layout, TensorInfo, ALIGN, MAX_TENSOR_ELEMENTS};
use crate::model::{is_matrix, VitConfig};

/// Smallest `preprocess.crop_pct` accepted: the resize side is `input_size / crop_pct`, so this
/// bounds it to 10× the input (timm's models use 0.875–1.0).
pub const CROP_PCT_MIN: f32 = 0.1;
/// Accepted range of each `preprocess.mean` value (0..1 pixel scale).
pub const MEAN_RANGE: RangeInclusive<f32> = -1.0..=2.0;
/// Accepted range of each `preprocess.std` value (0..1 pixel scale).
pub const STD_RANGE: RangeInclusive<f32> = 1e-3..=10.0;

fn field(name: impl Into<String>, reason: impl Into<String>) -> BlobError {
    BlobError::BadField { field: name.into(), reason: reason.into() }
}

/// Runs every check; returns the tensor table's index by name.
pub(super) fn header(h: &Header, payload_len: u64) -> Result<HashMap<String, usize>, BlobError> {
    let by_name = tensor_table(&h.tensors, payload_len)?;
    precision(h)?;
    h.config.validate().map_err(|(name, reason)| field(format!("config.{name}"), reason))?;
    preprocess(h)?;
    labels(h)?;
    architecture(h, &by_name)?;
    quantization(h, &by_name)?;
    Ok(by_name)
}

/// Every entry inside the payload, aligned, of the length its shape needs; names unique; no two
/// tensors overlapping.
fn tensor_table(tensors: &[TensorInfo], payload_len: u64) -> Result<HashMap<String, usize>, BlobError> {
    let mut by_name = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        entry(t, payload_len)?;
        if by_name.insert(t.name.clone(), i).is_some() {
            return Err(BlobError::BadTensor { name: t.name.clone(), reason: "appears twice in the table".into() });
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.offset < a.offset + a.length {
            return Err(BlobError::BadTensor {
                name: b.name.clone(),
                reason: format!(
                    "bytes {}..{} overlap tensor `{}` (bytes {}..{})",
                    b.offset,
                    b.offset + b.length,
                    a.name,
                    a.offset,
                    a.offset + a.length
                ),
            });
        }
    }
    Ok(by_name)
}

fn entry(t: &TensorInfo, payload_len: u64) -> Result<(), BlobError> {
    let bad = |reason: String| BlobError::BadTensor { name: t.name.clone(), reason };
    if t.shape.is_empty() || t.shape.contains(&0) {
        return Err(bad(format!("shape {:?} has no elements", t.shape)));
    }
    let logical = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    match logical {
        Some(n) if n <= MAX_TENSOR_ELEMENTS => {}
        _ => return Err(bad(format!("shape {:?} is absurdly large", t.shape))),
    }
    let stored = t
        .layout
        .stored_elements(&t.shape)
        .ok_or_else(|| bad(format!("layout {:?} does not apply to shape {:?}", t.layout, t.shape)))?;
    let expected_len = (stored as u64).checked_mul(t.dtype.size() as u64).ok_or_else(|| bad("size overflows".into()))?;
    if t.length != expected_len {
        return Err(bad(format!(
            "length {} bytes, but {:?} {:?} in layout {:?} needs {expected_len}",
            t.length, t.dtype, t.shape, t.layout
        )));
    }
    if !t.offset.is_multiple_of(ALIGN as u64) {
        return Err(bad(format!("offset {} is not {ALIGN}-byte aligned", t.offset)));
    }
    match t.offset.checked_add(t.length) {
        Some(end) if end <= payload_len => Ok(()),
        _ => Err(bad(format!("bytes {}..+{} lie outside the {payload_len}-byte payload", t.offset, t.length))),
    }
}

/// A known precision; int8 needs format version 2, bf16 version 3.
fn precision(h: &Header) -> Result<(), BlobError> {
    let needs = |v: u32| {
        if h.version >= v {
            Ok(())
        } else {
            Err(field("precision", format!("is `{}`, which needs format version {v} (the header says {})", h.precision, h.version)))
        }
    };
    match h.precision.as_str() {
        "f32" | "f16" => Ok(()),
        "int8" => needs(2),
        "bf16" => needs(3),
        other => Err(field("precision", format!("`{other}` is not one of f32, f16, bf16, int8"))),
    }
}

/// Finite, plausible preprocessing values that fit the network.
fn preprocess(h: &Header) -> Result<(), BlobError> {
    let p = &h.preprocess;
    if p.input_size != h.config.image_size {
        return Err(field(
            "preprocess.input_size",
            format!("{} differs from the network's config.image_size {}", p.input_size, h.config.image_size),
        ));
    }
    if !(CROP_PCT_MIN..=1.0).contains(&p.crop_pct) {
        return Err(field("preprocess.crop_pct", format!("{} is outside [{CROP_PCT_MIN}, 1]", p.crop_pct)));
    }
    for (c, m) in p.mean.iter().enumerate() {
        if !MEAN_RANGE.contains(m) {
            return Err(field(format!("preprocess.mean[{c}]"), format!("{m} is outside [{}, {}] (0..1 pixel scale)", MEAN_RANGE.start(), MEAN_RANGE.end())));
        }
    }
    for (c, s) in p.std.iter().enumerate() {
        if !STD_RANGE.contains(s) {
            return Err(field(format!("preprocess.std[{c}]"), format!("{s} is outside [{}, {}] (0..1 pixel scale)", STD_RANGE.start(), STD_RANGE.end())));
        }
    }
    // The preprocessing layer's own rules (they cover fields added there).
    p.validate().map_err(|reason| field("preprocess", reason))
}

/// One label per class (or none), one id per label (or none).
fn labels(h: &Header) -> Result<(), BlobError> {
    let (labels, classes) = (h.labels.len(), h.config.num_classes);
    if labels != 0 && labels != classes {
        return Err(field("labels", format!("{labels} labels for {classes} classes")));
    }
    if !h.label_ids.is_empty() && h.label_ids.len() != labels {
        return Err(field("label_ids", format!("{} ids for {labels} labels", h.label_ids.len())));
    }
    Ok(())
}

/// The tensor table holds exactly the tensors `config` implies, with its shapes, the dtypes
/// `precision` allows, and a scale for every int8 matrix.
fn architecture(h: &Header, by_name: &HashMap<String, usize>) -> Result<(), BlobError> {
    let cfg = &h.config;
    let table = |name: &str| by_name.get(name).map(|&i| &h.tensors[i]);
    let mut used: HashSet<&str> = HashSet::with_capacity(h.tensors.len());
    let mut any_i8 = false;
    for (name, shape) in cfg.blob_tensor_shapes() {
        let t = table(&name).ok_or_else(|| BlobError::Missing(name.clone()))?;
        used.insert(&t.name);
        if t.shape != shape {
            return Err(field(
                "config",
                format!("tensor `{name}` has shape {:?}, but {} implies {shape:?}", t.shape, describe(cfg)),
            ));
        }
        if !is_matrix(&name, &shape) {
            if (t.dtype, t.layout) != (DType::F32, Layout::RowMajor) {
                return Err(BlobError::BadTensor { name, reason: format!("is {:?} in layout {:?}; it must be F32 RowMajor", t.dtype, t.layout) });
            }
            continue;
        }
        let allowed = matches!(
            (h.precision.as_str(), t.dtype, t.layout),
            ("f32", DType::F32, Layout::Panel16)
                | ("f16", DType::F16, Layout::Panel16)
                | ("bf16", DType::Bf16, Layout::Panel16x2)
                | ("int8", DType::I8, Layout::Panel16x4)
                | ("int8", DType::F16 | DType::F32, Layout::Panel16)
        );
        if !allowed {
            return Err(field(
                "precision",
                format!("is `{}`, but weight matrix `{name}` is stored as {:?} in layout {:?}", h.precision, t.dtype, t.layout),
            ));
        }
        if t.dtype == DType::I8 {
            any_i8 = true;
            let scale_name = format!("{name}_scale");
            let s = table(&scale_name).ok_or(BlobError::Missing(scale_name))?;
            if (s.dtype, s.layout, &s.shape[..]) != (DType::F32, Layout::RowMajor, &[shape[0]][..]) {
                return Err(BlobError::BadTensor {
                    name: s.name.clone(),
                    reason: format!("is {:?} {:?} in layout {:?}; the scales of `{name}` must be F32 [{}] RowMajor", s.dtype, s.shape, s.layout, shape[0]),
                });
            }
            used.insert(&s.name);
        }
    }
    if h.precision == "int8" && !any_i8 {
        return Err(field("precision", "is `int8`, but no weight matrix is stored as i8 (an f32 or f16 blob with a wrong precision?)"));
    }
    match h.tensors.iter().find(|t| !used.contains(t.name.as_str())) {
        None => Ok(()),
        Some(t) => Err(unexpected(cfg, &t.name)),
    }
}

/// The error for a tensor the configuration does not account for, blaming the field that would.
fn unexpected(cfg: &VitConfig, name: &str) -> BlobError {
    let block = name.strip_prefix("blocks.").and_then(|r| r.split('.').next()).and_then(|i| i.parse::<usize>().ok());
    match block {
        Some(i) if i >= cfg.depth => {
            return field("config.depth", format!("is {}, but the tensor table holds `{name}` (block {i})", cfg.depth));
        }
        _ => {}
    }
    if !cfg.distilled && (name == "dist_token" || name.starts_with("head_dist.")) {
        return field("config.distilled", format!("is false, but the tensor table holds `{name}`"));
    }
    BlobError::BadTensor { name: name.to_string(), reason: format!("is not a tensor of {} (FORMAT.md §3)", describe(cfg)) }
}

fn describe(c: &VitConfig) -> String {
    format!(
        "config (embed_dim {}, depth {}, mlp_hidden {}, num_classes {}, patch_size {}, image_size {}{})",
        c.embed_dim,
        c.depth,
        c.mlp_hidden,
        c.num_classes,
        c.patch_size,
        c.image_size,
        if c.distilled { ", distilled" } else { "" }
    )
}

/// Only int8 blobs carry a quantization block; each layer names a weight matrix of the model and
/// the precision it is stored in.
fn quantization(h: &Header, by_name: &HashMap<String, usize>) -> Result<(), BlobError> {
    let Some(q) = &h.quantization else { return Ok(()) };
    if h.precision != "int8" {
        return Err(field("quantization", format!("is present, but precision is `{}`: only int8 blobs carry one", h.precision)));
    }
    for (i, l) in q.layers.iter().enumerate() {
        let weight = format!("{}.weight", l.name);
        let t = by_name
            .get(&weight)
            .map(|&j| &h.tensors[j])
            .filter(|t| is_matrix(&t.name, &t.shape))
            .ok_or_else(|| field(format!("quantization.layers[{i}].name"), format!("`{}` is not a linear layer of this model", l.name)))?;
        let stored = match l.weights.as_str() {
            "int8" => DType::I8,
            "f16" => DType::F16,
            "f32" => DType::F32,
            other => return Err(field(format!("quantization.layers[{i}].weights"), format!("`{other}` is not one of int8, f16, f32"))),
        };
        if t.dtype != stored {
            return Err(field(
                format!("quantization.layers[{i}].weights"),
                format!("says {} for `{}`, but `{weight}` is stored as {:?}", l.weights, l.name, t.dtype),
            ));
        }
    }
    Ok(())
}
