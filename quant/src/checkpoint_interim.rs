//! Interim safetensors-only reader (replaced by the full checkpoint module).
use std::collections::BTreeMap;
use std::path::Path;

/// A float tensor.
pub struct FloatTensor { pub shape: Vec<usize>, pub data: Vec<f32> }
impl Clone for FloatTensor { fn clone(&self) -> Self { FloatTensor { shape: self.shape.clone(), data: self.data.clone() } } }
/// Name → tensor.
pub type StateDict = BTreeMap<String, FloatTensor>;
/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError { #[error("{0}")] Other(String) }
/// Loads safetensors.
pub fn load_state_dict(path: &Path) -> Result<StateDict, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::Other(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| CheckpointError::Other(e.to_string()))?;
    let mut out = StateDict::new();
    for (name, t) in st.tensors() {
        let data: Vec<f32> = match t.dtype() {
            safetensors::Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            _ => continue,
        };
        out.insert(name, FloatTensor { shape: t.shape().to_vec(), data });
    }
    Ok(out)
}
