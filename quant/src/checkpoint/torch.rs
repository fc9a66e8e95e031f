//! PyTorch's zip checkpoint format: `<archive>/data.pkl` plus one file per storage in
//! `<archive>/data/<key>`. Entry sizes are checked against the zip directory, the pickle and
//! [`Limits`] before anything is allocated; tensor views are checked against their storage.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use zip::read::ZipFile;
use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, Object, Pickle, TensorRef, Value};
use super::{
    check_length, read_f32s, Budget, CheckpointError, FloatDtype, FloatTensor, Group, KeyFilter, Limits, StateDict, WeightsKind, WeightsReader,
};

/// A torch zip checkpoint, unpickled, with its groups of tensors found.
pub(super) struct Reader<'l, R> {
    archive: Archive<'l, R>,
    /// The folder of `data.pkl` inside the archive (`archive/`).
    prefix: String,
    pickle: Pickle,
    groups: Vec<Group>,
    group_values: Vec<Value>,
}

/// The zip archive and what its entries are checked against.
struct Archive<'l, R> {
    path: String,
    zip: ZipArchive<R>,
    file_len: u64,
    limits: &'l Limits,
}

fn storage_dtype(class: &str) -> Option<FloatDtype> {
    Some(match class {
        "FloatStorage" => FloatDtype::F32,
        "HalfStorage" => FloatDtype::F16,
        "BFloat16Storage" => FloatDtype::BF16,
        "DoubleStorage" => FloatDtype::F64,
        _ => return None,
    })
}

impl<'l, R: Read + Seek> Reader<'l, R> {
    /// Opens the archive and unpickles `data.pkl`.
    pub(super) fn open(path: &str, r: R, file_len: u64, limits: &'l Limits, budget: &mut Budget) -> Result<Self, CheckpointError> {
        let fmt = |reason: String| CheckpointError::Format { path: path.to_string(), reason };
        let zip = ZipArchive::new(r).map_err(|e| fmt(format!("not a readable zip archive: {e}")))?;
        if zip.len() > limits.max_zip_entries {
            return Err(CheckpointError::Limit {
                path: path.into(),
                what: format!(
                    "the zip archive has {} entries (the limit is {}; torch writes one per tensor storage)",
                    zip.len(),
                    limits.max_zip_entries
                ),
            });
        }
        let pkl_name = zip
            .file_names()
            .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
            .map(str::to_string)
            .ok_or_else(|| fmt("zip archive has no data.pkl: not a torch.save checkpoint".into()))?;
        let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
        let mut archive = Archive { path: path.into(), zip, file_len, limits };
        let pkl = archive.read_entry(&pkl_name, "the pickle", limits.max_pickle_bytes, None, budget)?;
        let pickle = pickle::load_with(&pkl, &limits.pickle).map_err(|source| CheckpointError::Pickle { path: path.into(), source })?;
        drop(pkl);
        budget
            .charge(pickle.bytes_used as u64, || "the unpickled objects".into())
            .map_err(|what| CheckpointError::Limit { path: path.into(), what })?;
        let mut reader = Reader { archive, prefix, pickle, groups: Vec::new(), group_values: Vec::new() };
        reader.find_groups()?;
        Ok(reader)
    }

    fn fmt(&self, reason: String) -> CheckpointError {
        CheckpointError::Format { path: self.archive.path.clone(), reason }
    }

    /// The raw weights (`state_dict`, `model`, or the top level), EMA copies (`state_dict_ema`,
    /// `model_ema`) and Lightning's SWA callback state.
    fn find_groups(&mut self) -> Result<(), CheckpointError> {
        let p = &self.pickle;
        let root = p.root;
        if p.dict(root).is_none() {
            let what = p.describe(root);
            return Err(self.fmt(if p.placeholder_of(root).is_some() {
                format!("the pickle's top-level object is {what}, not a dict of tensors (vitedge never imports Python classes); if this is a whole pickled model (torch.save(model)), save model.state_dict() instead")
            } else {
                format!("the pickle holds {what}, not a dict of tensors (expected a state_dict, or a checkpoint with `state_dict` / `model`)")
            }));
        }
        let mut groups: Vec<(WeightsKind, String, Value, Option<String>)> = Vec::new();
        let mut raw = None;
        for key in ["state_dict", "model"] {
            let Some(v) = p.get(root, key) else { continue };
            if p.dict(v).is_some() {
                raw = Some((key.to_string(), v));
                break;
            }
            if p.placeholder_of(v).is_some() {
                return Err(self.fmt(format!(
                    "`{key}` is {} (vitedge never imports Python classes), not a dict of tensors; if it is a whole pickled model, save model.state_dict() instead",
                    p.describe(v)
                )));
            }
        }
        let (location, v) = raw.unwrap_or_else(|| ("the top level".to_string(), root));
        groups.push((WeightsKind::Raw, location, v, None));
        for key in ["state_dict_ema", "model_ema"] {
            if let Some(v) = p.get(root, key).filter(|&v| p.dict(v).is_some()) {
                groups.push((WeightsKind::Ema, key.to_string(), v, None));
            }
        }
        if let Some(callbacks) = p.get(root, "callbacks") {
            for &(k, state) in p.dict(callbacks).unwrap_or(&[]) {
                let Some(name) = p.str(k).filter(|n| n.starts_with("StochasticWeightAveraging")) else {
                    continue;
                };
                let Some(avg) = p.get(state, "average_model_state").filter(|&v| p.dict(v).is_some()) else {
                    continue;
                };
                let unusable = match p.get(state, "n_averaged") {
                    Some(Value::Int(n)) if n > 0 => None,
                    Some(Value::Int(n)) => Some(format!("the StochasticWeightAveraging callback has averaged nothing yet (n_averaged {n}): its copy holds the weights from the start of training")),
                    _ => None,
                };
                groups.push((WeightsKind::Swa, format!("callbacks/{name}/average_model_state"), avg, unusable));
            }
        }
        for (kind, location, v, unusable) in groups {
            let keys = p.dict(v).unwrap_or(&[]).iter().filter_map(|&(k, _)| p.str(k).map(str::to_string)).collect();
            self.groups.push(Group { kind, location, keys, unusable });
            self.group_values.push(v);
        }
        Ok(())
    }
}

impl<R: Read + Seek> Archive<'_, R> {
    /// Opens entry `name` after checking its declared size against `max` and `expected` (what the
    /// pickle says), against the file, and its compression ratio; inflation is charged to `budget`.
    fn open_entry(
        &mut self,
        name: &str,
        what: &str,
        max: u64,
        expected: Option<u64>,
        budget: &mut Budget,
    ) -> Result<(ZipFile<'_, R>, u64), CheckpointError> {
        let (limits, file_len, path) = (self.limits, self.file_len, self.path.clone());
        let fmt = |reason: String| CheckpointError::Format { path: path.clone(), reason };
        let limit = |what: String| CheckpointError::Limit { path: path.clone(), what };
        let f = self.zip.by_name(name).map_err(|e| fmt(format!("cannot read {what} ({name}): {e}")))?;
        let declared = f.size();
        let compressed = f.compressed_size();
        if let Some(e) = expected {
            if declared != e {
                return Err(fmt(format!("{what} ({name}) has {declared} bytes in the zip directory, but the pickle describes {e} bytes")));
            }
        }
        if declared > max {
            return Err(limit(format!("{what} ({name}) declares {declared} bytes, more than the {max}-byte limit")));
        }
        if compressed > file_len {
            return Err(fmt(format!(
                "{what} ({name}) claims {compressed} compressed bytes, more than the whole file ({file_len} bytes): the zip directory is damaged"
            )));
        }
        if f.compression() == CompressionMethod::Stored {
            if declared > file_len {
                return Err(fmt(format!(
                    "{what} ({name}) declares {declared} bytes, more than the whole file ({file_len} bytes): the zip directory is damaged"
                )));
            }
        } else {
            if declared > limits.ratio_exempt_bytes && declared / compressed.max(1) > limits.max_compression_ratio {
                return Err(limit(format!(
                    "{what} ({name}) inflates from {compressed} to {declared} bytes, a compression ratio above {} : 1 (a zip bomb)",
                    limits.max_compression_ratio
                )));
            }
            budget.charge(declared.saturating_sub(compressed), || format!("inflating {what} ({name})")).map_err(limit)?;
        }
        Ok((f, declared))
    }

    /// Reads entry `name` whole (see [`Archive::open_entry`]), checking that it holds exactly the
    /// bytes it declares.
    fn read_entry(&mut self, name: &str, what: &str, max: u64, expected: Option<u64>, budget: &mut Budget) -> Result<Vec<u8>, CheckpointError> {
        let path = self.path.clone();
        let (f, declared) = self.open_entry(name, what, max, expected, budget)?;
        let mut buf = Vec::with_capacity(declared as usize);
        f.take(declared + 1)
            .read_to_end(&mut buf)
            .map_err(|e| CheckpointError::Format { path: path.clone(), reason: format!("cannot read {what} ({name}): {e}") })?;
        check_length(buf.len() as u64, declared).map_err(|w| CheckpointError::Format { path, reason: format!("{what} ({name}) {w}") })?;
        Ok(buf)
    }

    /// Streams entry `name` (see [`Archive::open_entry`]), `expected` bytes of `dtype`, and
    /// converts the `numel` elements from `t`'s offset to f32, checking that it holds exactly the
    /// bytes it declares.
    fn stream_entry(
        &mut self,
        name: &str,
        what: &str,
        expected: u64,
        budget: &mut Budget,
        t: &TensorRef,
        (dtype, numel): (FloatDtype, u64),
    ) -> Result<Vec<f32>, CheckpointError> {
        let path = self.path.clone();
        let (f, declared) = self.open_entry(name, what, u64::MAX, Some(expected), budget)?;
        read_f32s(f, declared, dtype, t.offset, numel).map_err(|w| CheckpointError::Format { path, reason: format!("{what} ({name}) {w}") })
    }
}

/// Checks a view against its storage: no overflow, every element inside the storage, no two
/// elements on the same storage element (stride 0 or overlapping strides). Returns the element count.
fn check_view(t: &TensorRef) -> Result<u64, String> {
    let shape = || format!("shape {:?}, stride {:?}, offset {}", t.size, t.stride, t.offset);
    let numel = t.size.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| format!("its element count overflows ({})", shape()))?;
    if numel == 0 {
        return Ok(0);
    }
    let mut dims: Vec<(u64, u64)> = t.size.iter().zip(&t.stride).filter(|(&n, _)| n > 1).map(|(&n, &s)| (s, n)).collect();
    dims.sort_unstable();
    let mut extent = 1u64; // elements spanned by the dimensions so far
    for &(stride, n) in &dims {
        if stride < extent {
            return Err(format!(
                "its view maps several elements onto the same storage element ({}: stride 0 or overlapping strides); vitedge reads plain tensors only: re-save the state dict after `.contiguous()`",
                shape()
            ));
        }
        extent = (n - 1).checked_mul(stride).and_then(|x| x.checked_add(1)).ok_or_else(|| format!("its extent overflows ({})", shape()))?;
    }
    let last = dims
        .iter()
        .try_fold(t.offset, |acc, &(s, n)| acc.checked_add((n - 1).checked_mul(s)?))
        .ok_or_else(|| format!("its extent overflows ({})", shape()))?;
    if last >= t.storage.numel {
        return Err(format!("its view ({}) reaches element {last} of a storage of {} elements", shape(), t.storage.numel));
    }
    Ok(numel)
}

/// Whether view `t` is its storage's elements in row-major order (strides of size-1 dimensions
/// do not matter).
fn is_row_major(t: &TensorRef) -> bool {
    let mut expected = 1u64;
    for (&n, &s) in t.size.iter().zip(&t.stride).rev() {
        if n > 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(n);
    }
    true
}

/// The elements of view `t` of storage `raw`, row-major.
fn gather(t: &TensorRef, dtype: FloatDtype, numel: u64, raw: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(numel as usize);
    let rank = t.size.len();
    let mut idx = vec![0u64; rank];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>();
        out.push(dtype.get(raw, off as usize));
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

impl<R: Read + Seek> WeightsReader for Reader<'_, R> {
    fn groups(&self) -> &[Group] {
        &self.groups
    }

    fn placeholders(&self) -> Vec<String> {
        self.pickle.placeholders.iter().cloned().collect()
    }

    fn read(&mut self, group: usize, filter: &KeyFilter, budget: &mut Budget) -> Result<StateDict, CheckpointError> {
        let p = &self.pickle;
        let path = self.archive.path.clone();
        let location = &self.groups[group].location;
        let tensor_err = |name: &str, reason: String| CheckpointError::Tensor { path: path.clone(), name: name.into(), reason };
        let location = location.clone();
        // Python dicts keep the last value of a repeated key.
        let mut entries: BTreeMap<&str, Value> = BTreeMap::new();
        for &(k, v) in p.dict(self.group_values[group]).unwrap_or(&[]) {
            if let Some(name) = p.str(k).filter(|n| filter.accepts(n)) {
                entries.insert(name, v);
            }
        }
        let mut views: Vec<(String, &TensorRef, FloatDtype, u64)> = Vec::new();
        for (name, v) in entries {
            match p.object(v) {
                Some(Object::Tensor(t)) => match storage_dtype(&t.storage.dtype) {
                    Some(d) => views.push((name.to_string(), t, d, check_view(t).map_err(|w| tensor_err(name, w))?)),
                    None => log::debug!("skipping non-float tensor `{name}` ({})", t.storage.dtype),
                },
                Some(Object::Invalid(why)) => return Err(tensor_err(name, format!("cannot be rebuilt: {why}"))),
                _ if p.placeholder_of(v).is_some() => {
                    let global = p.placeholder_of(v).unwrap_or_default().to_string();
                    return Err(CheckpointError::Placeholder { path: path.clone(), tensor: name.into(), global });
                }
                _ => log::debug!("skipping `{name}`: {}, not a tensor", p.describe(v)),
            }
        }
        if views.is_empty() {
            return Err(CheckpointError::Format {
                path: path.clone(),
                reason: format!("{location} holds no float tensors (expected a state_dict, or a checkpoint with `state_dict` / `model`)"),
            });
        }
        // Each storage is declared once. The f32 copy beyond the storages' own bytes (f16 and bf16
        // double, tensors viewing the same data twice) costs budget.
        let mut storages: BTreeMap<&str, (u64, FloatDtype, usize)> = BTreeMap::new();
        let mut out_bytes = 0u64;
        for (name, t, d, numel) in &views {
            let s = storages.entry(t.storage.key.as_str()).or_insert((t.storage.numel, *d, 0));
            if (s.0, s.1) != (t.storage.numel, *d) {
                return Err(tensor_err(name, format!("its storage {} is also declared with another size or type", t.storage.key)));
            }
            s.2 += 1;
            out_bytes = out_bytes.saturating_add(numel.saturating_mul(4));
        }
        let stored: u64 = storages.values().map(|(n, d, _)| n.saturating_mul(d.size() as u64)).fold(0, u64::saturating_add);
        let limit = |what: String| CheckpointError::Limit { path: path.clone(), what };
        budget
            .charge(out_bytes.saturating_sub(stored), || {
                "the f32 copy of the weights beyond the storages' own bytes (f16/bf16 weights double in f32; tensors viewing the same data twice)"
                    .into()
            })
            .map_err(limit)?;
        let views_of: BTreeMap<String, usize> = storages.iter().map(|(k, v)| (k.to_string(), v.2)).collect();
        views.sort_by(|a, b| a.1.storage.key.cmp(&b.1.storage.key));
        let mut out = StateDict::new();
        let mut raw: Option<(String, Vec<u8>)> = None;
        for (name, t, dtype, numel) in views {
            let entry = format!("{}data/{}", self.prefix, t.storage.key);
            let bytes = t.storage.numel.checked_mul(dtype.size() as u64).ok_or_else(|| tensor_err(&name, "its storage size overflows".into()))?;
            let what = format!("the storage of tensor `{name}`");
            let data = if views_of[&t.storage.key] == 1 && is_row_major(t) {
                // The common case: one plain view per storage, converted while it streams in.
                self.archive.stream_entry(&entry, &what, bytes, budget, t, (dtype, numel))?
            } else {
                // Several or strided views: the storage is held while they are gathered.
                if raw.as_ref().is_none_or(|(k, _)| *k != t.storage.key) {
                    if let Some((_, old)) = raw.take() {
                        budget.refund(old.len() as u64);
                    }
                    budget.charge(bytes, || format!("holding {what} for its strided views")).map_err(limit)?;
                    raw = Some((t.storage.key.clone(), self.archive.read_entry(&entry, &what, u64::MAX, Some(bytes), budget)?));
                }
                gather(t, dtype, numel, &raw.as_ref().expect("read above").1)
            };
            out.insert(name, FloatTensor { shape: t.size.iter().map(|&d| d as usize).collect(), data });
        }
        Ok(out)
    }
}
