//! PyTorch's zip checkpoint format: `<archive>/data.pkl` plus one file per storage in
//! `<archive>/data/<key>`.

use std::io::Read;
use std::path::Path;

use half::{bf16, f16};

use super::pickle::{self, TensorRef, Value};
use super::{CheckpointError, FloatTensor, StateDict};

/// Largest tensor accepted (elements).
const MAX_ELEMENTS: u64 = 1 << 31;

pub(super) fn read(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let p = path.display().to_string();
    let fmt = |reason: String| CheckpointError::Format { path: p.clone(), reason };
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| fmt(format!("not a readable zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| fmt("zip archive has no data.pkl: not a torch.save checkpoint".into()))?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| fmt(format!("cannot read {pkl_name}: {e}")))?;
    let top = pickle::load(&pkl).map_err(|source| CheckpointError::Pickle { path: p.clone(), source })?;
    let dict = choose_state_dict(&top).ok_or_else(|| fmt("the pickle holds no dict of tensors (expected a state_dict, or a checkpoint with `state_dict` / `model`)".into()))?;
    let mut out = StateDict::new();
    for (k, v) in dict {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else { continue };
        let elem = match t.dtype.as_str() {
            "FloatStorage" => 4,
            "HalfStorage" | "BFloat16Storage" => 2,
            "DoubleStorage" => 8,
            other => {
                log::debug!("skipping non-float tensor `{name}` ({other})");
                continue;
            }
        };
        let storage_name = format!("{prefix}data/{}", t.key);
        let mut raw = Vec::new();
        zip.by_name(&storage_name)
            .and_then(|mut f| f.read_to_end(&mut raw).map_err(Into::into))
            .map_err(|e| fmt(format!("tensor `{name}`: cannot read storage {storage_name}: {e}")))?;
        let data = gather(&t, &raw, elem).map_err(|w| fmt(format!("tensor `{name}`: {w}")))?;
        out.insert(name, FloatTensor { shape: t.size.iter().map(|&d| d as usize).collect(), data });
    }
    Ok(out)
}

/// Picks the state dict: `state_dict` (Lightning), else `model` / `model_ema` (timm training
/// checkpoints), else the top level.
fn choose_state_dict(top: &Value) -> Option<Vec<(Value, Value)>> {
    let Value::Dict(d) = top else { return None };
    let d = d.borrow();
    for key in ["state_dict", "model", "model_ema"] {
        if let Some((_, Value::Dict(inner))) = d.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)) {
            return Some(inner.borrow().clone());
        }
    }
    Some(d.clone())
}

fn gather(t: &TensorRef, raw: &[u8], elem: usize) -> Result<Vec<f32>, String> {
    if (raw.len() as u64) < t.storage_numel.saturating_mul(elem as u64) {
        return Err(format!("storage has {} bytes, expected {} elements of {elem} bytes", raw.len(), t.storage_numel));
    }
    let numel = t.size.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS).ok_or("shape is absurdly large")?;
    // Highest storage index touched must lie inside the storage.
    let max_index = t.size.iter().zip(&t.stride).try_fold(t.offset, |acc, (&d, &s)| {
        if d == 0 {
            Some(acc)
        } else {
            acc.checked_add((d - 1).checked_mul(s)?)
        }
    });
    match max_index {
        Some(m) if numel == 0 || m < t.storage_numel => {}
        _ => return Err("shape, stride and offset reach outside the storage".into()),
    }
    let read = |i: u64| -> f32 {
        let at = i as usize * elem;
        let b = &raw[at..at + elem];
        match elem {
            4 => f32::from_le_bytes(b.try_into().expect("4 bytes")),
            8 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            _ if t.dtype == "HalfStorage" => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        }
    };
    let mut out = Vec::with_capacity(numel as usize);
    let rank = t.size.len();
    let mut idx = vec![0u64; rank];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
        out.push(read(off));
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}
