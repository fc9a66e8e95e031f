//! safetensors reader (F32, F16, BF16, F64 tensors; integer tensors are skipped). The header is
//! validated before any tensor is read — size, dtype names, shapes against byte lengths (with
//! overflow checks), offsets inside the file and not overlapping — and each error names the
//! tensor. Tensors are then read one by one from the file, never the whole file at once.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use super::{read_f32s, Budget, CheckpointError, FloatDtype, FloatTensor, Group, KeyFilter, Limits, StateDict, WeightsKind, WeightsReader};

/// One header entry as written (`__metadata__` has none of these fields and is skipped).
#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: Option<String>,
    shape: Option<Vec<u64>>,
    data_offsets: Option<[u64; 2]>,
}

/// A validated tensor entry.
struct Entry {
    dtype: Option<FloatDtype>,
    dtype_name: String,
    shape: Vec<u64>,
    start: u64,
    end: u64,
}

/// Element size in bits of every safetensors dtype (sub-byte types count 4, 6 or 8).
fn dtype_bits(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

/// A safetensors file with a validated header.
pub(super) struct Reader<R> {
    path: String,
    r: R,
    data_start: u64,
    entries: BTreeMap<String, Entry>,
    groups: Vec<Group>,
}

impl<R: Read + Seek> Reader<R> {
    /// Reads and validates the header.
    pub(super) fn open(path: &str, mut r: R, file_len: u64, limits: &Limits) -> Result<Self, CheckpointError> {
        let fmt = |reason: String| CheckpointError::Format { path: path.to_string(), reason };
        let io = |source| CheckpointError::Io { path: path.to_string(), source };
        let mut len = [0u8; 8];
        r.read_exact(&mut len).map_err(|_| fmt("not a valid safetensors file: shorter than its 8-byte header length".into()))?;
        let n = u64::from_le_bytes(len);
        if n > limits.max_header_bytes {
            return Err(CheckpointError::Limit {
                path: path.into(),
                what: format!(
                    "the safetensors header claims {n} bytes, more than the {}-byte limit (a ViT's header is a few KB)",
                    limits.max_header_bytes
                ),
            });
        }
        if n > file_len.saturating_sub(8) {
            return Err(fmt(format!(
                "the safetensors header claims {n} bytes but the file has only {} after the length: truncated?",
                file_len.saturating_sub(8)
            )));
        }
        let mut header = vec![0u8; n as usize];
        r.read_exact(&mut header).map_err(io)?;
        let raw: BTreeMap<String, RawEntry> =
            serde_json::from_slice(&header).map_err(|e| fmt(format!("the safetensors header is not the expected JSON object of tensors: {e}")))?;
        drop(header);
        let data_len = file_len.saturating_sub(8 + n);
        let mut entries = BTreeMap::new();
        for (name, e) in raw {
            if name == "__metadata__" {
                continue;
            }
            let bad = |why: String| fmt(format!("safetensors tensor `{name}`: {why}"));
            let (Some(dtype_name), Some(shape), Some([start, end])) = (e.dtype, e.shape, e.data_offsets) else {
                return Err(bad("its header entry lacks dtype, shape or data_offsets".into()));
            };
            let bits = dtype_bits(&dtype_name).ok_or_else(|| bad(format!("unknown dtype `{dtype_name}`")))?;
            let bytes = shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_mul(bits))
                .map(|b| b.div_ceil(8))
                .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
            if end < start || end - start != bytes {
                return Err(bad(format!(
                    "{dtype_name} × shape {shape:?} is {bytes} bytes, but its data_offsets [{start}, {end}] span {}",
                    end as i128 - start as i128
                )));
            }
            if end > data_len {
                return Err(bad(format!("its data ends at byte {end}, beyond the file's {data_len} bytes of tensor data: truncated?")));
            }
            let dtype = match dtype_name.as_str() {
                "F32" => Some(FloatDtype::F32),
                "F16" => Some(FloatDtype::F16),
                "BF16" => Some(FloatDtype::BF16),
                "F64" => Some(FloatDtype::F64),
                _ => None,
            };
            entries.insert(name, Entry { dtype, dtype_name, shape, start, end });
        }
        let mut spans: Vec<(u64, u64, &str)> = entries.iter().filter(|(_, e)| e.end > e.start).map(|(k, e)| (e.start, e.end, k.as_str())).collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(fmt(format!(
                    "safetensors tensors `{}` and `{}` overlap (bytes {}..{} and {}..{})",
                    w[0].2, w[1].2, w[0].0, w[0].1, w[1].0, w[1].1
                )));
            }
        }
        let groups = vec![Group { kind: WeightsKind::Raw, location: "the tensors".into(), keys: entries.keys().cloned().collect(), unusable: None }];
        Ok(Reader { path: path.into(), r, data_start: 8 + n, entries, groups })
    }
}

impl<R: Read + Seek> WeightsReader for Reader<R> {
    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn placeholders(&self) -> Vec<String> {
        Vec::new()
    }

    fn read(&mut self, _group: usize, filter: &KeyFilter, budget: &mut Budget) -> Result<StateDict, CheckpointError> {
        let path = self.path.clone();
        let mut chosen = Vec::new();
        let (mut out_bytes, mut stored) = (0u64, 0u64);
        for (name, e) in self.entries.iter().filter(|(k, _)| filter.accepts(k)) {
            match e.dtype {
                Some(d) => {
                    let len = e.end - e.start;
                    out_bytes += len / d.size() as u64 * 4;
                    stored += len;
                    chosen.push((name, e, d));
                }
                None => log::debug!("skipping non-float tensor `{name}` ({})", e.dtype_name),
            }
        }
        budget
            .charge(out_bytes.saturating_sub(stored), || {
                "the f32 copy of the weights beyond the file's own bytes (f16/bf16 weights double in f32)".into()
            })
            .map_err(|what| CheckpointError::Limit { path: path.clone(), what })?;
        let mut out = StateDict::new();
        for (name, e, dtype) in chosen {
            let len = e.end - e.start;
            self.r.seek(SeekFrom::Start(self.data_start + e.start)).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
            let data = read_f32s((&mut self.r).take(len), len, dtype, 0, len / dtype.size() as u64)
                .map_err(|w| CheckpointError::Format { path: path.clone(), reason: format!("safetensors tensor `{name}` {w}") })?;
            out.insert(name.clone(), FloatTensor { shape: e.shape.iter().map(|&d| d as usize).collect(), data });
        }
        Ok(out)
    }
}
