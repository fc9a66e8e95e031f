//! safetensors reader (F32, F16, BF16, F64 tensors; integer tensors are skipped).

use std::path::Path;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::{CheckpointError, FloatTensor, StateDict};

pub(super) fn read(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let p = path.display().to_string();
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| CheckpointError::Format { path: p.clone(), reason: format!("not a valid safetensors file: {e}") })?;
    let mut out = StateDict::new();
    for (name, t) in st.tensors() {
        let d = t.data();
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
            Dtype::F16 => d.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => d.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect(),
            other => {
                log::debug!("skipping non-float tensor `{name}` ({other:?})");
                continue;
            }
        };
        out.insert(name, FloatTensor { shape: t.shape().to_vec(), data });
    }
    Ok(out)
}
