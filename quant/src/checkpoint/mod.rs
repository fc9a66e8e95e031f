//! Reading float checkpoints: safetensors, and PyTorch's zip format (`torch.save`, Lightning
//! `.ckpt`, timm `train.py` `.pth.tar`) through a restricted unpickler that never executes code.
//!
//! Hostile files are expected: every size a file declares is checked against [`Limits`] before it
//! is allocated, so a reader never holds more than the bytes it read from the file, the f32 weights
//! it returns and [`Limits::extra_bytes`] besides. A checkpoint can hold several sets of weights —
//! the raw ones, a Stochastic Weight Averaging average in Lightning's callback state, an EMA copy —
//! and [`WeightsChoice`] picks one.

pub mod pickle;
mod safetensors;
mod torch;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

pub use pickle::PickleError;

/// A float tensor read from a checkpoint, converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// Tensor name → tensor, keys as stored in the checkpoint (e.g. `model.blocks.0.attn.qkv.weight`).
pub type StateDict = BTreeMap<String, FloatTensor>;

/// Bounds on what a checkpoint may make the readers allocate or do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The unpickler's own limits (nesting depth, objects, memo, bytes built).
    pub pickle: pickle::Limits,
    /// Largest `data.pkl` (uncompressed); a real one is a few KB to a few MB.
    pub max_pickle_bytes: u64,
    /// Most entries in a torch zip archive (one per storage, plus a few).
    pub max_zip_entries: usize,
    /// Highest compression ratio of a zip entry larger than [`Limits::ratio_exempt_bytes`]
    /// (torch stores entries uncompressed; deflated float weights compress about 1.1 : 1).
    pub max_compression_ratio: u64,
    /// Entries up to this size are not ratio-checked (a small all-zero tensor may compress 1000 : 1).
    pub ratio_exempt_bytes: u64,
    /// Memory beyond the file's own bytes and the f32 weights returned: zip inflation, the
    /// unpickled objects, tensors viewing the same storage data twice.
    pub extra_bytes: u64,
    /// Largest safetensors JSON header.
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pickle: pickle::Limits::default(),
            max_pickle_bytes: 64 << 20,
            max_zip_entries: 1 << 17,
            max_compression_ratio: 100,
            ratio_exempt_bytes: 1 << 20,
            extra_bytes: 256 << 20,
            max_header_bytes: 16 << 20,
        }
    }
}

/// Which weights to take from a checkpoint that holds more than one set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsChoice {
    /// The averaged weights when there are any (SWA first, then EMA), else the raw ones.
    #[default]
    Auto,
    /// The raw trained weights (`state_dict`).
    Raw,
    /// Stochastic Weight Averaging: Lightning's `StochasticWeightAveraging` callback state.
    Swa,
    /// An exponential moving average copy (timm `ModelEma*` as `model_ema`, `state_dict_ema`).
    Ema,
}

/// A kind of weights a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsKind {
    /// The trained weights as they are.
    Raw,
    /// A Stochastic Weight Averaging average.
    Swa,
    /// An exponential moving average copy.
    Ema,
}

impl WeightsKind {
    /// Lower-case name, as `--weights` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsKind::Raw => "raw",
            WeightsKind::Swa => "swa",
            WeightsKind::Ema => "ema",
        }
    }
}

/// One set of weights in a checkpoint: its kind and where it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightsSource {
    /// Raw, SWA or EMA.
    pub kind: WeightsKind,
    /// Where in the checkpoint, e.g. `callbacks/StochasticWeightAveraging/average_model_state` or
    /// `state_dict (keys model_ema.*)`.
    pub location: String,
}

/// Options of [`load`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Which weights to take.
    pub weights: WeightsChoice,
    /// Bounds for hostile files.
    pub limits: Limits,
}

/// A loaded checkpoint: the chosen weights and what else it holds.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The chosen weights, keys as stored.
    pub state_dict: StateDict,
    /// Which weights those are.
    pub weights: WeightsSource,
    /// Every set of weights the checkpoint offers (including the chosen one).
    pub offered: Vec<WeightsSource>,
    /// Python globals outside the weights that were kept as inert placeholders (`module.name`).
    pub placeholders: Vec<String>,
}

/// Errors reading a checkpoint; each says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read.
    #[error("cannot read checkpoint {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The file is not in a format vitedge reads, or is malformed.
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    /// The pickle inside a torch checkpoint is malformed or over a limit.
    #[error("{path}: {source}")]
    Pickle { path: String, source: PickleError },
    /// The file exceeds one of the [`Limits`].
    #[error("{path}: {what}; genuine checkpoints stay far below vitedge's limit, so the file is damaged or was crafted: re-download it, or re-export the weights")]
    Limit { path: String, what: String },
    /// A tensor of the chosen weights cannot be read as described.
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor { path: String, name: String, reason: String },
    /// A tensor of the chosen weights is built by a Python global vitedge does not load.
    #[error("{path}: tensor `{tensor}` is built by the Python global `{global}`, which vitedge never imports or calls; re-save the weights with `torch.save(model.state_dict(), path)` or export them to safetensors")]
    Placeholder { path: String, tensor: String, global: String },
    /// The requested weights are not in the checkpoint.
    #[error("{path}: {reason}")]
    Weights { path: String, reason: String },
}

/// Memory a reader may use beyond the file's bytes and the weights it returns.
pub(crate) struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    fn new(limit: u64) -> Budget {
        Budget { left: limit, limit }
    }

    /// Takes `bytes` from the budget, or says that `what` is over it.
    fn charge(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<(), String> {
        if bytes > self.left {
            return Err(format!("{} would take more than the {} MiB vitedge allows beyond the file's own data", what(), self.limit >> 20));
        }
        self.left -= bytes;
        Ok(())
    }

    /// Gives back `bytes` charged for something since freed.
    fn refund(&mut self, bytes: u64) {
        self.left = (self.left + bytes).min(self.limit);
    }
}

/// `Ok` when `read` bytes are the `declared` ones, else what is wrong.
fn check_length(read: u64, declared: u64) -> Result<(), String> {
    if read == declared {
        return Ok(());
    }
    let how = if read > declared { "more" } else { "fewer" };
    Err(format!("holds {how} bytes than the {declared} its header declares: the file is damaged or truncated"))
}

/// Reads `declared` bytes of `dtype` elements from `r` in chunks and returns elements
/// `skip..skip + numel` (already checked to lie inside) as f32; the rest is read and dropped, so
/// that a stream holding more or fewer bytes than declared is an error.
fn read_f32s(r: impl Read, declared: u64, dtype: FloatDtype, skip: u64, numel: u64) -> Result<Vec<f32>, String> {
    const CHUNK: usize = 64 << 10; // a multiple of every element size
    let elem = dtype.size() as u64;
    let (from, to) = (skip * elem, (skip + numel) * elem);
    let mut out = Vec::with_capacity(numel as usize);
    let mut r = r.take(declared + 1);
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64; // stream position of buf[0]
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot be read: {e}")),
            }
        }
        let (lo, hi) = (from.max(at), to.min(at + filled as u64));
        if lo < hi {
            let chunk = &buf[(lo - at) as usize..(hi - at) as usize];
            out.extend((0..chunk.len() / elem as usize).map(|i| dtype.get(chunk, i)));
        }
        at += filled as u64;
        if filled < CHUNK {
            break;
        }
    }
    check_length(at, declared)?;
    Ok(out)
}

/// Which keys of a group of tensors belong to one set of weights.
#[derive(Clone, Debug, PartialEq)]
enum KeyFilter {
    /// Every key.
    All,
    /// Keys starting with this prefix.
    Under(String),
    /// Keys starting with none of these prefixes.
    NotUnder(Vec<String>),
}

impl KeyFilter {
    fn accepts(&self, key: &str) -> bool {
        match self {
            KeyFilter::All => true,
            KeyFilter::Under(p) => key.starts_with(p.as_str()),
            KeyFilter::NotUnder(ps) => !ps.iter().any(|p| key.starts_with(p.as_str())),
        }
    }
}

/// A dict of tensors in a checkpoint (`state_dict`, an SWA average, `state_dict_ema`...).
struct Group {
    kind: WeightsKind,
    location: String,
    keys: Vec<String>,
    /// Why these weights must not be taken, if so (an SWA state that has averaged nothing yet).
    unusable: Option<String>,
}

/// One set of weights: a group, or the part of a group under (or outside) an EMA prefix.
struct Offer {
    source: WeightsSource,
    group: usize,
    filter: KeyFilter,
    unusable: Option<String>,
}

/// A checkpoint format: the groups of tensors it holds, and a way to read one.
trait WeightsReader {
    fn groups(&self) -> &[Group];
    fn read(&mut self, group: usize, filter: &KeyFilter, budget: &mut Budget) -> Result<StateDict, CheckpointError>;
    fn placeholders(&self) -> Vec<String>;
}

/// Key prefixes of EMA copies kept beside the network in one state dict: timm's `ModelEma*` as
/// `model_ema` (`model_ema.module.*`), `torch.optim.swa_utils.AveragedModel` as `ema`... A prefix
/// counts when it ends in a path component named `ema`, `ema_*` or `*_ema` and holds a ViT patch
/// embedding.
fn ema_prefixes(keys: &[String]) -> Vec<String> {
    let is_ema = |c: &str| {
        let c = c.to_ascii_lowercase();
        c == "ema" || c.starts_with("ema_") || c.ends_with("_ema")
    };
    let mut prefixes: Vec<String> = Vec::new();
    for k in keys.iter().filter(|k| k.ends_with("patch_embed.proj.weight")) {
        let mut at = 0;
        for part in k.split('.') {
            at += part.len() + 1;
            if at >= k.len() {
                break;
            }
            if is_ema(part) {
                let p = k[..at].to_string();
                if !prefixes.contains(&p) {
                    prefixes.push(p);
                }
                break;
            }
        }
    }
    prefixes.sort();
    prefixes
}

fn offers(groups: &[Group]) -> Vec<Offer> {
    let mut out = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let emas = if g.kind == WeightsKind::Ema { Vec::new() } else { ema_prefixes(&g.keys) };
        if g.kind == WeightsKind::Raw {
            for p in &emas {
                out.push(Offer {
                    source: WeightsSource { kind: WeightsKind::Ema, location: format!("{} (keys {p}*)", g.location) },
                    group: i,
                    filter: KeyFilter::Under(p.clone()),
                    unusable: None,
                });
            }
        }
        let filter = if emas.is_empty() { KeyFilter::All } else { KeyFilter::NotUnder(emas) };
        out.push(Offer { source: WeightsSource { kind: g.kind, location: g.location.clone() }, group: i, filter, unusable: g.unusable.clone() });
    }
    out
}

fn choose(offers: &[Offer], choice: WeightsChoice, path: &str) -> Result<usize, CheckpointError> {
    let usable = |k: WeightsKind| offers.iter().position(|o| o.source.kind == k && o.unusable.is_none());
    let wanted = match choice {
        WeightsChoice::Auto => {
            for o in offers.iter().filter(|o| o.unusable.is_some()) {
                log::warn!(
                    "{path}: not taking the {} weights in {}: {}",
                    o.source.kind.as_str(),
                    o.source.location,
                    o.unusable.as_deref().unwrap_or("")
                );
            }
            return usable(WeightsKind::Swa)
                .or_else(|| usable(WeightsKind::Ema))
                .or_else(|| usable(WeightsKind::Raw))
                .ok_or_else(|| CheckpointError::Weights { path: path.into(), reason: "the checkpoint holds no usable weights".into() });
        }
        WeightsChoice::Raw => WeightsKind::Raw,
        WeightsChoice::Swa => WeightsKind::Swa,
        WeightsChoice::Ema => WeightsKind::Ema,
    };
    if let Some(i) = usable(wanted) {
        return Ok(i);
    }
    let listed: Vec<String> = offers.iter().map(|o| format!("{} ({})", o.source.kind.as_str(), o.source.location)).collect();
    let reason = match offers.iter().find(|o| o.source.kind == wanted) {
        Some(o) => format!("the {} weights in {} cannot be used: {}", wanted.as_str(), o.source.location, o.unusable.as_deref().unwrap_or("")),
        None => format!("--weights {}: the checkpoint has no such weights; it holds {}", wanted.as_str(), listed.join(", ")),
    };
    Err(CheckpointError::Weights { path: path.into(), reason })
}

fn load_with(path: &str, mut reader: Box<dyn WeightsReader + '_>, opts: &LoadOptions, budget: &mut Budget) -> Result<Checkpoint, CheckpointError> {
    let offers = offers(reader.groups());
    let chosen = choose(&offers, opts.weights, path)?;
    let o = &offers[chosen];
    let state_dict = reader.read(o.group, &o.filter, budget)?;
    let usable: Vec<&Offer> = offers.iter().filter(|o| o.unusable.is_none()).collect();
    if usable.len() > 1 {
        let listed: Vec<String> = usable.iter().map(|o| format!("{} ({})", o.source.kind.as_str(), o.source.location)).collect();
        let taken = match (o.source.kind, opts.weights) {
            (WeightsKind::Raw, _) => format!("converting the raw weights ({})", o.source.location),
            (k, WeightsChoice::Auto) => {
                format!("converting the {} average ({}) by default; pass --weights raw for the raw trained weights", k.as_str(), o.source.location)
            }
            (k, _) => format!("converting the {} weights ({}) as asked", k.as_str(), o.source.location),
        };
        log::info!("{path}: holds {}; {taken}", listed.join(", "));
    }
    let placeholders = reader.placeholders();
    if !placeholders.is_empty() {
        log::warn!(
            "{path}: the pickle references Python objects outside the weights ({}); they were kept as inert placeholders, never imported or called (torch.load with weights_only=False would import them and call them); the weights do not depend on them",
            placeholders.join(", ")
        );
    }
    Ok(Checkpoint { state_dict, weights: o.source.clone(), offered: offers.iter().map(|o| o.source.clone()).collect(), placeholders })
}

fn load_from_reader<R: Read + Seek>(path: &str, mut r: R, len: u64, opts: &LoadOptions) -> Result<Checkpoint, CheckpointError> {
    let io = |source| CheckpointError::Io { path: path.to_string(), source };
    let mut head = Vec::with_capacity(9);
    (&mut r).take(9).read_to_end(&mut head).map_err(io)?;
    r.seek(SeekFrom::Start(0)).map_err(io)?;
    let ext = Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let is_zip = head.starts_with(b"PK\x03\x04");
    let mut budget = Budget::new(opts.limits.extra_bytes);
    if ext == "safetensors" || (!is_zip && head.len() == 9 && head[8] == b'{') {
        let reader = safetensors::Reader::open(path, r, len, &opts.limits)?;
        load_with(path, Box::new(reader), opts, &mut budget)
    } else if is_zip {
        let reader = torch::Reader::open(path, r, len, &opts.limits, &mut budget)?;
        load_with(path, Box::new(reader), opts, &mut budget)
    } else {
        Err(CheckpointError::Format {
            path: path.to_string(),
            reason: "neither a safetensors file nor a torch.save zip archive (legacy non-zip torch files are not supported: re-save with a current PyTorch)".into(),
        })
    }
}

/// Loads a checkpoint, choosing the reader by extension (`.safetensors`) or by the file's first
/// bytes (a zip archive: `torch.save`, `.pth`, `.pt`, `.ckpt`, `.bin`, `.pth.tar`), and takes the
/// weights `opts.weights` asks for.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Checkpoint, CheckpointError> {
    let name = path.display().to_string();
    let io = |source| CheckpointError::Io { path: name.clone(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    load_from_reader(&name, std::io::BufReader::new(file), len, opts)
}

/// [`load`] on a checkpoint held in memory; `name` (a file name) is used for messages and for
/// the extension.
pub fn load_from_bytes(name: &str, bytes: &[u8], opts: &LoadOptions) -> Result<Checkpoint, CheckpointError> {
    load_from_reader(name, std::io::Cursor::new(bytes), bytes.len() as u64, opts)
}

/// Loads the default weights of a checkpoint (see [`load`], [`WeightsChoice::Auto`]).
pub fn load_state_dict(path: &Path) -> Result<StateDict, CheckpointError> {
    Ok(load(path, &LoadOptions::default())?.state_dict)
}

/// The float element types the readers convert to f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FloatDtype {
    F32,
    F16,
    BF16,
    F64,
}

impl FloatDtype {
    fn size(self) -> usize {
        match self {
            FloatDtype::F32 => 4,
            FloatDtype::F16 | FloatDtype::BF16 => 2,
            FloatDtype::F64 => 8,
        }
    }

    /// Element `i` of little-endian `raw` (the caller checked the bounds).
    fn get(self, raw: &[u8], i: usize) -> f32 {
        let b = &raw[i * self.size()..(i + 1) * self.size()];
        match self {
            FloatDtype::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            FloatDtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            FloatDtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            FloatDtype::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
        }
    }
}
