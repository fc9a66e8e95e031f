//! Building a blob from a float state dict: architecture check, preprocessing and labels in the
//! header, weight matrices packed into the kernels' panel layout in the requested precision.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;
use vitedge::blob::{round_up, BlobWriter, Layout};
use vitedge::kernels::pack;
use vitedge::model::is_matrix;
use vitedge::model::synthetic::header_for;
use vitedge::model::VitConfig;
use vitedge::preprocess::PreprocessConfig;

use crate::arch::{self, ArchError};
use crate::checkpoint::{self, CheckpointError, FloatTensor, StateDict, WeightsChoice, WeightsSource};

/// Precision of the weight matrices in the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// 32-bit float weights.
    F32,
    /// 16-bit float weights (f32 accumulation).
    F16,
    /// Calibrated int8 (per-channel weights, per-token activations).
    Int8,
}

impl Precision {
    /// Name stored in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }
}

/// Everything `convert` needs besides the checkpoint.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Known architecture name (`--arch`), or the checkpoint file name's prefix when that is a known name.
    pub arch: Option<String>,
    /// Attention heads, for architectures that are not named (default: timm's `embed_dim / 64`).
    pub heads: Option<usize>,
    /// Preprocessing override (else timm's default for the architecture).
    pub preprocess: Option<PreprocessConfig>,
    /// Class labels and optional ids (`--labels FILE`).
    pub labels: Option<Labels>,
    /// Which weights to take when the checkpoint holds several (`--weights`).
    pub weights: WeightsChoice,
}

/// Class names and (optional) identifiers, parsed from a labels file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labels {
    /// Display names, in logit order.
    pub names: Vec<String>,
    /// Identifiers such as ImageNet synsets (`n01440764`), empty when the file has none.
    pub ids: Vec<String>,
}

impl Labels {
    /// Parses one label per line. A line `n01440764 tench` (a WordNet synset id, a space, a name)
    /// yields id and name; any other line is a name. Blank lines are skipped.
    pub fn parse(text: &str) -> Labels {
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let is_synset = |s: &str| s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit());
        let with_ids = !lines.is_empty() && lines.iter().all(|l| l.split_once(' ').is_some_and(|(id, _)| is_synset(id)));
        if with_ids {
            let (ids, names) = lines
                .iter()
                .map(|l| {
                    let (id, name) = l.split_once(' ').expect("checked above");
                    (id.to_string(), name.trim().to_string())
                })
                .unzip();
            Labels { names, ids }
        } else {
            Labels { names: lines.iter().map(|s| s.to_string()).collect(), ids: Vec::new() }
        }
    }

    /// Reads and parses a labels file.
    pub fn read(path: &Path) -> Result<Labels, ConvertError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConvertError::Input(format!("cannot read labels file {}: {e}", path.display())))?;
        Ok(Labels::parse(&text))
    }
}

/// Errors of a conversion.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint is not a ViT vitedge can run.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// Options or side inputs are wrong.
    #[error("{0}")]
    Input(String),
    /// Writing the blob failed.
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// A recognized checkpoint, ready to be written in any precision.
pub struct Prepared {
    /// Architecture.
    pub config: VitConfig,
    /// Preprocessing stored in the header.
    pub preprocess: PreprocessConfig,
    /// Labels stored in the header.
    pub labels: Labels,
    /// Float tensors by blob name, in blob shapes (row-major).
    pub tensors: BTreeMap<String, FloatTensor>,
    /// Which of the checkpoint's weights these are (recorded in the header's `source`).
    pub weights: Option<WeightsSource>,
}

/// The part of a file name before the first `.`, if it is a known architecture name.
pub fn arch_from_file_name(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?;
    arch::known(stem).map(|a| a.name.to_string())
}

/// Recognizes the architecture of `sd` and maps its tensors (see [`arch::map_tensors`]).
pub fn prepare(sd: StateDict, opts: &ConvertOptions) -> Result<Prepared, ConvertError> {
    let sd = arch::strip_prefix(sd)?;
    let mut config = arch::infer_config(&sd, opts.arch.as_deref())?;
    if let Some(h) = opts.heads {
        if config.arch != "custom" && h != config.num_heads {
            return Err(ConvertError::Input(format!("--heads {h} contradicts {} ({} heads)", config.arch, config.num_heads)));
        }
        config.num_heads = h;
        config.validate().map_err(|(field, reason)| ConvertError::Input(format!("{field}: {reason}")))?;
    }
    if config.arch == "custom" {
        log::warn!(
            "architecture not named: inferred embed_dim {}, depth {}, {} heads (timm's embed_dim/64 rule), {} classes; pass --arch to pin it",
            config.embed_dim, config.depth, config.num_heads, config.num_classes
        );
    }
    let preprocess = match &opts.preprocess {
        Some(p) => p.clone(),
        None => {
            let p = arch::default_preprocess(&config);
            if config.arch == "custom" {
                log::warn!("using timm's generic preprocessing (crop_pct {}, mean {:?}, std {:?}); override with --crop-pct/--mean/--std if the model was trained otherwise", p.crop_pct, p.mean, p.std);
            }
            p
        }
    };
    preprocess.validate().map_err(ConvertError::Input)?;
    let labels = opts.labels.clone().unwrap_or_default();
    if !labels.names.is_empty() && labels.names.len() != config.num_classes {
        return Err(ConvertError::Input(format!(
            "the labels file has {} labels but the checkpoint's head has {} classes",
            labels.names.len(),
            config.num_classes
        )));
    }
    let tensors = arch::map_tensors(&sd, &config)?;
    Ok(Prepared { config, preprocess, labels, tensors, weights: None })
}

/// Loads a checkpoint file and prepares it (the architecture name defaults to the file name's).
pub fn prepare_file(path: &Path, opts: &ConvertOptions) -> Result<Prepared, ConvertError> {
    let ckpt = checkpoint::load(path, &checkpoint::LoadOptions { weights: opts.weights, ..Default::default() })?;
    let mut opts = opts.clone();
    if opts.arch.is_none() {
        opts.arch = arch_from_file_name(path);
        if let Some(a) = &opts.arch {
            log::info!("architecture {a} (from the file name)");
        }
    }
    let mut prepared = prepare(ckpt.state_dict, &opts)?;
    prepared.weights = Some(ckpt.weights);
    Ok(prepared)
}

/// Header template for a prepared model.
pub fn header(p: &Prepared, precision: Precision) -> vitedge::blob::Header {
    let mut h = header_for(&p.config, p.preprocess.clone(), p.labels.names.clone(), precision.as_str());
    h.label_ids = p.labels.ids.clone();
    h.source.insert("producer".into(), format!("vitedge-quant {}", env!("CARGO_PKG_VERSION")).into());
    if let Some(w) = &p.weights {
        h.source.insert("weights".into(), w.kind.as_str().into());
        h.source.insert("weights_from".into(), w.location.clone().into());
    }
    h
}

/// Packs a row-major `[n, k]` matrix as f32 `Panel16`.
pub fn pack_f32(data: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut packed = vec![0.0; round_up(n, 16) * k];
    pack::panel16_from_rows(data, n, k, k, &mut packed);
    packed
}

/// Packs a row-major `[n, k]` matrix as f16 `Panel16` (round to nearest even).
pub fn pack_f16(data: &[f32], n: usize, k: usize) -> Vec<f16> {
    let h: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
    let mut packed = vec![f16::ZERO; round_up(n, 16) * k];
    pack::panel16_from_rows(&h, n, k, k, &mut packed);
    packed
}

/// Builds an f32 or f16 blob (matrices in that precision; vectors, tokens and embeddings in f32).
pub fn float_blob(p: &Prepared, precision: Precision) -> BlobWriter {
    assert!(precision != Precision::Int8, "int8 blobs are built by the calibrating quantizer");
    let mut w = BlobWriter::new(header(p, precision));
    for (name, shape) in p.config.blob_tensor_shapes() {
        let t = &p.tensors[&name];
        if is_matrix(&name, &shape) {
            let (n, k) = (shape[0], shape[1]);
            match precision {
                Precision::F16 => w.add_f16(&name, &shape, Layout::Panel16, &pack_f16(&t.data, n, k)),
                _ => w.add_f32(&name, &shape, Layout::Panel16, &pack_f32(&t.data, n, k)),
            }
        } else {
            w.add_f32(&name, &shape, Layout::RowMajor, &t.data);
        }
    }
    w
}

/// Builds the blob of `p` in `precision`: f32 and f16 directly, int8 calibrated on up to
/// `calib_count` images of the folder `calibrate` (required for int8). Returns the int8 report too.
pub fn build_blob(p: &Prepared, precision: Precision, calibrate: Option<&Path>, calib_count: usize) -> Result<(BlobWriter, Option<crate::int8::Report>), ConvertError> {
    match precision {
        Precision::F32 | Precision::F16 => {
            if calibrate.is_some() {
                log::warn!("--calibrate is only used with --precision int8; ignoring it");
            }
            Ok((float_blob(p, precision), None))
        }
        Precision::Int8 => {
            let dir = calibrate.ok_or_else(|| {
                ConvertError::Input("--precision int8 needs calibration images: add --calibrate DIR (e.g. --calibrate ../shared/imagenet-sample)".into())
            })?;
            let q = crate::int8::quantize(p, dir, calib_count)?;
            Ok((q.writer, Some(q.report)))
        }
    }
}

impl Prepared {
    /// Overrides preprocessing fields by their header (JSON) names, e.g. `{"crop_pct": 0.875,
    /// "interpolation": "bilinear"}`, for callers that take them as key/value pairs (the Python
    /// `vitedge.convert`). Unknown names and unusable values are errors.
    pub fn override_preprocess(&mut self, overrides: &serde_json::Map<String, serde_json::Value>) -> Result<(), ConvertError> {
        let bad = |e: serde_json::Error| ConvertError::Input(format!("preprocessing override: {e}"));
        let mut fields = match serde_json::to_value(&self.preprocess).map_err(bad)? {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("PreprocessConfig serializes to an object"),
        };
        fields.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let p: PreprocessConfig = serde_json::from_value(serde_json::Value::Object(fields)).map_err(bad)?;
        let known = serde_json::to_value(&p).map_err(bad)?;
        if let Some(k) = overrides.keys().find(|k| known.get(k.as_str()).is_none()) {
            let names: Vec<&String> = known.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            return Err(ConvertError::Input(format!("`{k}` is not a preprocessing field (fields: {names:?})")));
        }
        p.validate().map_err(ConvertError::Input)?;
        self.preprocess = p;
        Ok(())
    }
}

/// Writes a blob to `path`, mapping I/O errors.
pub fn write_blob(w: &BlobWriter, path: &Path) -> Result<(), ConvertError> {
    w.write(path).map_err(|source| ConvertError::Write { path: path.display().to_string(), source })
}
