//! Opening, validating and reading a blob through a read-only memory map.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;

use super::{
    DType, Header, Layout, TensorInfo, ALIGN, FORMAT_NAME, FORMAT_VERSION, MAGIC, MAX_HEADER_LEN,
    MAX_TENSOR_ELEMENTS, MIN_READ_VERSION, PRELUDE_LEN,
};

/// Everything that can be wrong with a blob file. Each message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file could not be opened or mapped.
    #[error("cannot read blob {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is shorter than the prelude or than the lengths the prelude announces.
    #[error("blob is truncated: {0}; the file was cut short (re-copy it or re-run `vitedge-quant convert`)")]
    Truncated(String),
    /// The file does not start with the vitedge magic bytes.
    #[error("not a vitedge blob (magic bytes {found:02x?}, expected {expected:02x?}); convert a checkpoint with `vitedge-quant convert`")]
    BadMagic { found: [u8; 8], expected: [u8; 8] },
    /// The format version is not one this build reads.
    #[error("blob format version {found} is not supported by this vitedge (reads versions {min}..={max}); {hint}")]
    UnsupportedVersion { found: u32, min: u32, max: u32, hint: &'static str },
    /// The header is not valid, or inconsistent with itself or the file.
    #[error("corrupt blob header: {0}")]
    BadHeader(String),
    /// A tensor entry points outside the payload, is misaligned, or has an inconsistent size.
    #[error("corrupt tensor entry `{name}`: {reason}")]
    BadTensor { name: String, reason: String },
    /// A checksum did not match: the bytes on disk are not the bytes that were written.
    #[error("checksum mismatch in {what}: stored {stored:08x}, computed {computed:08x}; the file is corrupt, re-copy or re-convert it")]
    Checksum { what: String, stored: u32, computed: u32 },
    /// A tensor the caller asked for is not in the blob.
    #[error("tensor `{0}` is missing from the blob")]
    Missing(String),
    /// A tensor exists but has another dtype, shape or layout than the caller needs.
    #[error("tensor `{name}`: expected {expected}, found {found}")]
    Mismatch { name: String, expected: String, found: String },
}

/// A validated, memory-mapped blob. Opening checks the prelude, the header and every tensor's bounds
/// and alignment, but does not read the payload; [`Blob::verify`] checks every checksum.
pub struct Blob {
    path: PathBuf,
    map: Mmap,
    header: Header,
    payload_offset: usize,
    by_name: HashMap<String, usize>,
}

/// A borrowed view of one tensor's bytes inside the map.
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    /// The tensor table entry.
    pub info: &'a TensorInfo,
    /// The tensor's bytes, 64-byte aligned.
    pub bytes: &'a [u8],
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Blob {
    /// Maps and validates the blob at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Blob, BlobError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| BlobError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; vitedge never writes blobs in
        // place (the writer creates a new file), so the bytes cannot change under us unless another
        // process truncates the file, which the documentation warns against. `populate` pre-faults
        // the whole (small) file in one go, which is much faster than faulting 4 KiB pages one by
        // one during the first forward pass (open → first result).
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
        Self::from_map(path, map)
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<Blob, BlobError> {
        if cfg!(target_endian = "big") {
            return Err(BlobError::BadHeader("blobs are little-endian; this host is big-endian".into()));
        }
        let bytes: &[u8] = &map;
        if bytes.len() < PRELUDE_LEN {
            return Err(BlobError::Truncated(format!(
                "file has {} bytes, the prelude alone needs {PRELUDE_LEN}",
                bytes.len()
            )));
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[..8]);
        if magic != MAGIC {
            return Err(BlobError::BadMagic { found: magic, expected: MAGIC });
        }
        let version = read_u32(bytes, 8);
        if !(MIN_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            let hint = if version > FORMAT_VERSION {
                "upgrade vitedge, or convert the checkpoint with this version's vitedge-quant"
            } else {
                "re-convert the checkpoint with this version's vitedge-quant"
            };
            return Err(BlobError::UnsupportedVersion {
                found: version,
                min: MIN_READ_VERSION,
                max: FORMAT_VERSION,
                hint,
            });
        }
        let header_len = read_u64(bytes, 16);
        let payload_offset = read_u64(bytes, 24);
        let payload_len = read_u64(bytes, 32);
        let header_crc = read_u32(bytes, 40);
        if header_len == 0 || header_len > MAX_HEADER_LEN {
            return Err(BlobError::BadHeader(format!("header length {header_len} is out of range")));
        }
        if payload_offset % ALIGN as u64 != 0 || payload_offset < PRELUDE_LEN as u64 + header_len {
            return Err(BlobError::BadHeader(format!(
                "payload offset {payload_offset} must be a multiple of {ALIGN} past the header"
            )));
        }
        let file_len = bytes.len() as u64;
        let end = payload_offset.checked_add(payload_len).ok_or_else(|| {
            BlobError::BadHeader(format!("payload length {payload_len} overflows"))
        })?;
        if end > file_len {
            return Err(BlobError::Truncated(format!(
                "payload should end at byte {end} but the file has {file_len} bytes"
            )));
        }
        if end < file_len {
            return Err(BlobError::BadHeader(format!(
                "{} unexpected trailing bytes after the payload",
                file_len - end
            )));
        }
        let header_bytes = &bytes[PRELUDE_LEN..PRELUDE_LEN + header_len as usize];
        let computed = crc32fast::hash(header_bytes);
        if computed != header_crc {
            return Err(BlobError::Checksum { what: "the header".into(), stored: header_crc, computed });
        }
        let header: Header = serde_json::from_slice(header_bytes)
            .map_err(|e| BlobError::BadHeader(format!("header JSON does not parse: {e}")))?;
        if header.format != FORMAT_NAME {
            return Err(BlobError::BadHeader(format!("format field is `{}`, expected `{FORMAT_NAME}`", header.format)));
        }
        if header.version != version {
            return Err(BlobError::BadHeader(format!(
                "header says version {} but the prelude says {version}",
                header.version
            )));
        }
        let mut by_name = HashMap::with_capacity(header.tensors.len());
        for (i, t) in header.tensors.iter().enumerate() {
            validate_entry(t, payload_len)?;
            if by_name.insert(t.name.clone(), i).is_some() {
                return Err(BlobError::BadTensor { name: t.name.clone(), reason: "appears twice in the table".into() });
            }
        }
        Ok(Blob { path, map, header, payload_offset: payload_offset as usize, by_name })
    }

    /// The path the blob was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Total file size in bytes.
    pub fn file_len(&self) -> usize {
        self.map.len()
    }

    /// Looks a tensor up by name; its bytes stay in the map (no copy).
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, BlobError> {
        let &i = self.by_name.get(name).ok_or_else(|| BlobError::Missing(name.to_string()))?;
        Ok(self.view(&self.header.tensors[i]))
    }

    /// Whether the blob has a tensor of that name.
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let start = self.payload_offset + info.offset as usize;
        TensorView { info, bytes: &self.map[start..start + info.length as usize] }
    }

    /// Reads every tensor and checks its CRC-32; returns the number of bytes checked.
    pub fn verify(&self) -> Result<u64, BlobError> {
        let mut total = 0u64;
        for info in &self.header.tensors {
            let v = self.view(info);
            let computed = crc32fast::hash(v.bytes);
            if computed != info.crc32 {
                return Err(BlobError::Checksum {
                    what: format!("tensor `{}`", info.name),
                    stored: info.crc32,
                    computed,
                });
            }
            total += info.length;
        }
        Ok(total)
    }
}

fn validate_entry(t: &TensorInfo, payload_len: u64) -> Result<(), BlobError> {
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
    if t.offset % ALIGN as u64 != 0 {
        return Err(bad(format!("offset {} is not {ALIGN}-byte aligned", t.offset)));
    }
    match t.offset.checked_add(t.length) {
        Some(end) if end <= payload_len => Ok(()),
        _ => Err(bad(format!(
            "bytes {}..+{} lie outside the {payload_len}-byte payload",
            t.offset, t.length
        ))),
    }
}

impl<'a> TensorView<'a> {
    fn check(&self, dtype: DType) -> Result<(), BlobError> {
        if self.info.dtype != dtype {
            return Err(BlobError::Mismatch {
                name: self.info.name.clone(),
                expected: format!("dtype {dtype:?}"),
                found: format!("dtype {:?}", self.info.dtype),
            });
        }
        Ok(())
    }

    /// Checks shape and layout against what the caller needs.
    pub fn expect(self, shape: &[usize], layout: Layout) -> Result<Self, BlobError> {
        if self.info.shape != shape || self.info.layout != layout {
            return Err(BlobError::Mismatch {
                name: self.info.name.clone(),
                expected: format!("shape {shape:?} in layout {layout:?}"),
                found: format!("shape {:?} in layout {:?}", self.info.shape, self.info.layout),
            });
        }
        Ok(self)
    }

    /// The tensor as `f32` values (zero-copy).
    pub fn f32s(&self) -> Result<&'a [f32], BlobError> {
        self.check(DType::F32)?;
        cast(self.info, self.bytes)
    }

    /// The tensor as `f16` values (zero-copy).
    pub fn f16s(&self) -> Result<&'a [f16], BlobError> {
        self.check(DType::F16)?;
        cast(self.info, self.bytes)
    }

    /// The tensor as `i8` values (zero-copy).
    pub fn i8s(&self) -> Result<&'a [i8], BlobError> {
        self.check(DType::I8)?;
        cast(self.info, self.bytes)
    }

    /// The tensor as `i32` values (zero-copy).
    pub fn i32s(&self) -> Result<&'a [i32], BlobError> {
        self.check(DType::I32)?;
        cast(self.info, self.bytes)
    }
}

fn cast<'a, T: bytemuck::AnyBitPattern>(info: &TensorInfo, bytes: &'a [u8]) -> Result<&'a [T], BlobError> {
    bytemuck::try_cast_slice(bytes).map_err(|e| BlobError::BadTensor {
        name: info.name.clone(),
        reason: format!("cannot view bytes as {}: {e:?}", std::any::type_name::<T>()),
    })
}
