//! Reading float checkpoints: safetensors, and PyTorch's zip format (`torch.save`, Lightning
//! `.ckpt`) through a restricted unpickler that never executes code.

pub mod pickle;
mod safetensors;
mod torch;

use std::collections::BTreeMap;
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

/// Errors reading a checkpoint; each says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file cannot be read.
    #[error("cannot read checkpoint {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The file is not in a format vitedge reads.
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    /// The pickle inside a torch checkpoint is refused or malformed.
    #[error("{path}: {source}")]
    Pickle { path: String, source: PickleError },
    /// A tensor has a dtype that cannot be converted to f32.
    #[error("{path}: tensor `{name}` has dtype {dtype}, which is not a float type vitedge converts (f32, f16, bf16, f64)")]
    Dtype { path: String, name: String, dtype: String },
}

/// Loads a checkpoint, choosing the reader by extension (`.safetensors`; `.pth`, `.pt`, `.ckpt`,
/// `.bin`) or, failing that, by the file's first bytes.
pub fn load_state_dict(path: &Path) -> Result<StateDict, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.display().to_string(), source })?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let is_zip = bytes.starts_with(b"PK\x03\x04");
    match ext.as_str() {
        "safetensors" => safetensors::read(path, &bytes),
        "pth" | "pt" | "ckpt" | "bin" | "tar" if is_zip => torch::read(path, &bytes),
        _ if is_zip => torch::read(path, &bytes),
        _ if bytes.len() > 8 && bytes[8] == b'{' => safetensors::read(path, &bytes),
        _ => Err(CheckpointError::Format {
            path: path.display().to_string(),
            reason: "neither a safetensors file nor a torch.save zip archive (legacy non-zip torch files are not supported: re-save with a current PyTorch)".into(),
        }),
    }
}
