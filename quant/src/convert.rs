//! Building a blob from a float state dict: architecture check, preprocessing and labels in the
//! header, weight matrices packed into the kernels' panel layout in the requested precision.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use vitedge::blob::{round_up, BlobWriter, Layout};
use vitedge::kernels::pack;
use vitedge::model::is_matrix;
use vitedge::model::synthetic::header_for;
use vitedge::model::VitConfig;
use vitedge::preprocess::{CenterCrop, Interpolation, PreprocessConfig, Resize, Transform};

use crate::arch::{self, ArchError, Recognized};
use crate::checkpoint::{self, CheckpointError, FloatTensor, StateDict, WeightsChoice, WeightsSource};
use crate::timm_config::TimmConfig;

/// Precision of the weight matrices in the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    /// 32-bit float weights.
    F32,
    /// 16-bit float weights (f32 accumulation).
    F16,
    /// bfloat16 weights, run with bf16 activations and f32 accumulation where the CPU has bf16 dot
    /// products (AMX-BF16, AVX512-BF16); LayerNorm, softmax, GELU and residuals stay f32.
    Bf16,
    /// Calibrated int8 (per-channel weights, per-token activations).
    Int8,
}

impl Precision {
    /// Name stored in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
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
    /// Preprocessing stated by the user (`--transform`: a parsed torchvision repr), used as is.
    pub preprocess: Option<PreprocessConfig>,
    /// timm's config.json (`--config`, or found beside `model.safetensors`): architecture, labels and
    /// preprocessing.
    pub timm_config: Option<TimmConfig>,
    /// Single-field overrides (`--crop-pct`, `--mean`, `--std`, `--interpolation`).
    pub overrides: PreprocessOverrides,
    /// Class labels and optional ids (`--labels FILE`).
    pub labels: Option<Labels>,
    /// Which weights to take when the checkpoint holds several (`--weights`).
    pub weights: WeightsChoice,
}

/// Single preprocessing fields given on the command line, applied over the stated or assumed
/// preprocessing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreprocessOverrides {
    /// timm crop_pct: the resize becomes timm's center rule, shorter side to `floor(input / crop_pct)`.
    pub crop_pct: Option<f32>,
    /// Normalization mean.
    pub mean: Option<[f32; 3]>,
    /// Normalization std.
    pub std: Option<[f32; 3]>,
    /// Resize filter.
    pub interpolation: Option<Interpolation>,
}

impl PreprocessOverrides {
    fn any(&self) -> bool {
        *self != PreprocessOverrides::default()
    }

    fn all(&self) -> bool {
        self.crop_pct.is_some() && self.mean.is_some() && self.std.is_some() && self.interpolation.is_some()
    }

    fn apply(&self, p: &mut PreprocessConfig) {
        if let Some(c) = self.crop_pct {
            p.crop_pct = c;
            let s = p.input_size;
            let size = p.resize_size();
            p.transform = Some(Transform {
                resize: Some(Resize::ShorterSide { size, max_size: None }),
                center_crop: Some(CenterCrop { height: s, width: s, fill: [0; 3] }),
            });
        }
        if let Some(m) = self.mean {
            p.mean = m;
        }
        if let Some(s) = self.std {
            p.std = s;
        }
        if let Some(i) = self.interpolation {
            p.interpolation = i;
        }
    }
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
    /// Where the preprocessing came from (`--transform`, a config.json, or what was assumed), stored
    /// in the header's `source`.
    pub preprocess_source: String,
    /// Labels stored in the header.
    pub labels: Labels,
    /// Float tensors by blob name, in blob shapes (row-major).
    pub tensors: BTreeMap<String, FloatTensor>,
    /// Which of the checkpoint's weights these are (recorded in the header's `source`).
    pub weights: Option<WeightsSource>,
}

/// The known architecture (and pretrained tag) a checkpoint's file name starts with:
/// `NAME.ext`, `NAME.TAG.ext`, `NAME_cifar10.ckpt`, `NAME-finetuned.pth`.
pub fn arch_from_file_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let (a, tag) = arch::known_prefix(file)?;
    Some(match tag {
        Some(t) => format!("{}.{t}", a.name),
        None => a.name.clone(),
    })
}

/// Recognizes the architecture of `sd` and maps its tensors (see [`arch::map_tensors`]), and
/// settles the preprocessing: the one stated (`--transform`, timm's config.json, or every single
/// field flag), else timm's pretrained config of the recognized architecture (or timm's generic
/// one), with a warning that names the transform assumed and `--transform` to state the real one.
pub fn prepare(sd: StateDict, opts: &ConvertOptions) -> Result<Prepared, ConvertError> {
    let sd = arch::strip_prefix(sd)?;
    let tc = opts.timm_config.as_ref();
    let config_arch = tc.and_then(|c| c.architecture.clone()).filter(|a| {
        let known = arch::known(a).is_some();
        if !known {
            log::warn!("config.json names architecture `{a}`, which is not in vitedge's table; recognizing it by its tensors");
        }
        known
    });
    let name = match (&opts.arch, &config_arch) {
        (Some(a), Some(c)) if a.split('.').next() != c.split('.').next() => {
            log::warn!("--arch {a} overrides config.json's architecture {c}");
            Some(a.clone())
        }
        (Some(a), _) => Some(a.clone()),
        (None, c) => c.clone(),
    };
    let (mut config, how) = arch::recognize(&sd, name.as_deref())?;
    if let Some(h) = opts.heads.or_else(|| tc.and_then(|c| c.num_heads)) {
        if config.arch != "custom" && h != config.num_heads {
            return Err(ConvertError::Input(format!("--heads {h} contradicts {} ({} heads)", config.arch, config.num_heads)));
        }
        config.num_heads = h;
        config.validate().map_err(|(field, reason)| ConvertError::Input(format!("{field}: {reason}")))?;
    }
    match &how {
        Recognized::Custom => log::warn!(
            "architecture not named and no known timm architecture has these tensors: inferred embed_dim {}, depth {}, {} heads (timm's embed_dim/64 rule), {} classes; pass --arch to pin it",
            config.embed_dim, config.depth, config.num_heads, config.num_classes
        ),
        Recognized::ByShape { also } => log::info!(
            "recognized as {} by its tensor shapes ({} classes){}",
            config.arch,
            config.num_classes,
            if also.is_empty() { String::new() } else { format!("; {} fit too", also.join(", ")) }
        ),
        Recognized::Named => {}
    }
    if let Some(n) = tc.and_then(|c| c.num_classes) {
        if n != config.num_classes {
            return Err(ConvertError::Input(format!(
                "{} says num_classes {n} but the checkpoint's head has {} classes: is it the config of another model?",
                tc.map(|c| c.path.display().to_string()).unwrap_or_default(),
                config.num_classes
            )));
        }
    }
    let (preprocess, source) = settle_preprocess(&config, name.as_deref(), opts)?;
    let labels = match (&opts.labels, tc.and_then(|c| c.labels.clone())) {
        (Some(l), _) => l.clone(),
        (None, Some(l)) => l,
        (None, None) => Labels::default(),
    };
    if !labels.names.is_empty() && labels.names.len() != config.num_classes {
        return Err(ConvertError::Input(format!(
            "the labels file has {} labels but the checkpoint's head has {} classes",
            labels.names.len(),
            config.num_classes
        )));
    }
    let tensors = arch::map_tensors(&sd, &config)?;
    Ok(Prepared { config, preprocess, preprocess_source: source, labels, tensors, weights: None })
}

/// The preprocessing a blob of `config` gets: `--transform`, else timm's config.json, else timm's
/// pretrained config of the architecture (the tag `name` carries, or timm's default tag), else
/// timm's generic defaults; then the single-field overrides. Returns it with its source
/// (`stated: …` or `assumed: …`); an assumed one is logged as a warning that names the transform and
/// the option that states the real one.
pub fn settle_preprocess(config: &VitConfig, name: Option<&str>, opts: &ConvertOptions) -> Result<(PreprocessConfig, String), ConvertError> {
    let (mut preprocess, mut source, stated) = if let Some(p) = &opts.preprocess {
        (p.clone(), "stated: --transform".to_string(), true)
    } else if let Some(c) = &opts.timm_config {
        for n in &c.notes {
            log::warn!("{n}");
        }
        (c.preprocess.clone(), format!("stated: timm config {}", c.path.display()), true)
    } else if let Some((a, _)) = arch::known(&config.arch) {
        let tag = name.and_then(arch::known).and_then(|(_, t)| t);
        let (tag, cfg) = a.pretrained_cfg(tag);
        let p = cfg.preprocess().map_err(ConvertError::Input)?;
        (p, format!("assumed: timm {} pretrained_cfg of {}.{tag}", arch::timm_version(), a.name), false)
    } else {
        (arch::generic_preprocess(config.image_size), format!("assumed: timm {} generic defaults", arch::timm_version()), false)
    };
    if opts.overrides.any() {
        opts.overrides.apply(&mut preprocess);
        source += " + command-line overrides";
    }
    let stated = stated || opts.overrides.all();
    if stated && source.starts_with("assumed") {
        source = "stated: --crop-pct --mean --std --interpolation".into();
    }
    preprocess.validate().map_err(ConvertError::Input)?;
    if preprocess.input_size != config.image_size {
        return Err(ConvertError::Input(format!(
            "the preprocessing makes {s}x{s} inputs but the model takes {m}x{m} (its position embedding has a {g}x{g} grid of {p}-pixel patches)",
            s = preprocess.input_size,
            m = config.image_size,
            g = config.grid(),
            p = config.patch_size
        )));
    }
    if stated {
        log::info!("preprocessing ({source}): {}", preprocess.describe());
    } else {
        log::warn!(
            "preprocessing not stated: assumed {} — {}. If the model was trained or evaluated with another transform, state it once with --transform \"$(python -c 'print(val_transform)')\" (or --config config.json)",
            source.trim_start_matches("assumed: "),
            preprocess.describe()
        );
    }
    Ok((preprocess, source))
}

/// Loads a checkpoint file and prepares it. The architecture name defaults to the file name's; a
/// timm config.json beside a `model.safetensors` is read when none is given.
pub fn prepare_file(path: &Path, opts: &ConvertOptions) -> Result<Prepared, ConvertError> {
    let ckpt = checkpoint::load(path, &checkpoint::LoadOptions { weights: opts.weights, ..Default::default() })?;
    let mut opts = opts.clone();
    if opts.timm_config.is_none() && opts.preprocess.is_none() {
        if let Some(cfg) = crate::timm_config::beside(path) {
            log::info!("reading timm's {} beside the weights (architecture, labels, preprocessing)", cfg.display());
            opts.timm_config = Some(crate::timm_config::read(&cfg)?);
        }
    }
    if opts.arch.is_none() && opts.timm_config.as_ref().and_then(|c| c.architecture.as_ref()).is_none() {
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
    h.source.insert("preprocess".into(), p.preprocess_source.clone().into());
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

/// Packs a row-major `[n, k]` matrix as bf16 `Panel16x2` (round to nearest even).
pub fn pack_bf16(data: &[f32], n: usize, k: usize) -> Vec<bf16> {
    let mut packed = vec![bf16::ZERO; round_up(n, 16) * round_up(k, 2)];
    pack::panel16x2_from_rows(data, n, k, k, &mut packed);
    packed
}

/// Builds an f32, f16 or bf16 blob (matrices in that precision; vectors, tokens and embeddings in f32).
pub fn float_blob(p: &Prepared, precision: Precision) -> BlobWriter {
    assert!(precision != Precision::Int8, "int8 blobs are built by the calibrating quantizer");
    let mut w = BlobWriter::new(header(p, precision));
    for (name, shape) in p.config.blob_tensor_shapes() {
        let t = &p.tensors[&name];
        if is_matrix(&name, &shape) {
            let (n, k) = (shape[0], shape[1]);
            match precision {
                Precision::F16 => w.add_f16(&name, &shape, Layout::Panel16, &pack_f16(&t.data, n, k)),
                Precision::Bf16 => w.add_bf16(&name, &shape, Layout::Panel16x2, &pack_bf16(&t.data, n, k)),
                _ => w.add_f32(&name, &shape, Layout::Panel16, &pack_f32(&t.data, n, k)),
            }
        } else {
            w.add_f32(&name, &shape, Layout::RowMajor, &t.data);
        }
    }
    w
}

/// Builds the blob of `p` in `precision`: f32, f16 and bf16 directly, int8 calibrated on up to
/// `calib_count` images of the folder `calibrate` (required for int8). Returns the int8 report too.
pub fn build_blob(p: &Prepared, precision: Precision, calibrate: Option<&Path>, calib_count: usize) -> Result<(BlobWriter, Option<crate::int8::Report>), ConvertError> {
    match precision {
        Precision::F32 | Precision::F16 | Precision::Bf16 => {
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
