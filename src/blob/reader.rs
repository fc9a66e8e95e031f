//! Opening, validating and reading a blob through a read-only memory map (or from bytes).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;

use super::guard::MappedRange;
use super::{
    validate, DType, Header, Layout, TensorInfo, ALIGN, FORMAT_NAME, FORMAT_VERSION, MAGIC, MAX_HEADER_LEN,
    MIN_READ_VERSION, PRELUDE_LEN,
};
use crate::kernels::Aligned;

/// What to do when a blob is damaged: said at the end of every integrity error.
const RECOPY: &str = "the file is damaged (an incomplete copy, or failing storage such as an SD card): re-copy it, or re-convert the checkpoint with `vitedge-quant convert`";

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
    /// The prelude's flags or reserved bytes are not zero.
    #[error("corrupt blob prelude: {0}; {RECOPY}")]
    BadPrelude(String),
    /// The header is not valid, or inconsistent with itself or the file.
    #[error("corrupt blob header: {0}")]
    BadHeader(String),
    /// A header field parses but makes no sense (unknown precision, NaN mean, config that disagrees
    /// with the tensor table...).
    #[error("blob header field `{field}`: {reason}; the header does not describe a model vitedge can run: re-convert the checkpoint with `vitedge-quant convert`")]
    BadField { field: String, reason: String },
    /// A tensor entry points outside the payload, is misaligned, or has an inconsistent size.
    #[error("corrupt tensor entry `{name}`: {reason}")]
    BadTensor { name: String, reason: String },
    /// A checksum did not match: the bytes on disk are not the bytes that were written.
    #[error("checksum mismatch in {what} of {file}: stored {stored:08x}, computed {computed:08x}; {RECOPY}")]
    Checksum { file: String, what: String, stored: u32, computed: u32 },
    /// Padding that must be zero (after the header, between or after tensors) is not.
    #[error("non-zero byte 0x{value:02x} at file offset {offset} of {file}, in the padding {place}; {RECOPY}")]
    Padding { file: String, place: String, offset: u64, value: u8 },
    /// A tensor the caller asked for is not in the blob.
    #[error("tensor `{0}` is missing from the blob")]
    Missing(String),
    /// A tensor exists but has another dtype, shape or layout than the caller needs.
    #[error("tensor `{name}`: expected {expected}, found {found}")]
    Mismatch { name: String, expected: String, found: String },
}

/// How much of a blob opening checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// The structure, the header's meaning, every tensor's CRC-32 and the zero padding: nothing
    /// damaged is ever used. The default, and what every `vitedge` command does unless told
    /// otherwise.
    #[default]
    Checksums,
    /// The structure and the header's meaning only; tensor bytes are not read. Only for files
    /// verified by other means (e.g. a read-only image checked at boot): on an SD card, a damaged
    /// weight would be used without a word.
    SkipChecksums,
}

/// The bytes of a blob: a read-only file map, or an owned 64-byte-aligned copy.
enum Storage {
    Map(Mmap),
    Owned(Aligned<u8>),
}

impl std::ops::Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Map(m) => m,
            Storage::Owned(b) => b,
        }
    }
}

/// A validated blob. Opening checks the prelude, the header (syntax and meaning) and every
/// tensor's bounds and alignment, and, by default ([`Verify::Checksums`]), every checksum and the
/// padding, so that a damaged file is refused before its first use.
pub struct Blob {
    path: PathBuf,
    /// Declared before `storage`: fields drop in order, so the range is unregistered before the
    /// map goes away.
    _guard: Option<MappedRange>,
    storage: Storage,
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

/// Offset of the first non-zero byte of `bytes`, if any.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b != 0)
}

impl Blob {
    /// Maps the blob at `path` and validates it completely, checksums included ([`Verify::Checksums`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Blob, BlobError> {
        Self::open_with(path, Verify::Checksums)
    }

    /// Maps and validates the blob at `path`, checking as much as `verify` says.
    pub fn open_with(path: impl AsRef<Path>, verify: Verify) -> Result<Blob, BlobError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| BlobError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process, and vitedge never writes blobs
        // in place (the writer renames a new file over the old one), so the bytes only change if
        // another process modifies or truncates the file in place. Truncation makes reads of the
        // lost pages raise SIGBUS, which `guard` turns into a clear message and exit code
        // (`tests/stream.rs` truncates a blob under a running stream). `populate` pre-faults the
        // whole (small) file in one go, much faster than faulting 4 KiB pages one by one.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
        let guard = MappedRange::register(map.as_ptr(), map.len(), &path);
        Self::validated(path, Some(guard), Storage::Map(map), verify)
    }

    /// Validates a blob held in memory (copied to 64-byte-aligned storage); `name` stands for the
    /// file in messages.
    pub fn from_bytes(name: &str, bytes: &[u8], verify: Verify) -> Result<Blob, BlobError> {
        let mut owned = Aligned::zeroed(bytes.len());
        owned.copy_from_slice(bytes);
        Self::validated(PathBuf::from(name), None, Storage::Owned(owned), verify)
    }

    fn validated(path: PathBuf, guard: Option<MappedRange>, storage: Storage, verify: Verify) -> Result<Blob, BlobError> {
        let (header, payload_offset, by_name) = Self::parse(&storage, &path)?;
        let blob = Blob { path, _guard: guard, storage, header, payload_offset, by_name };
        blob.check_header_padding()?;
        if verify == Verify::Checksums {
            blob.verify()?;
        }
        Ok(blob)
    }

    /// Checks the prelude and the header; returns the header, the payload offset and the tensor
    /// index by name.
    fn parse(bytes: &[u8], path: &Path) -> Result<(Header, usize, HashMap<String, usize>), BlobError> {
        if cfg!(target_endian = "big") {
            return Err(BlobError::BadHeader("blobs are little-endian; this host is big-endian".into()));
        }
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
        let flags = read_u32(bytes, 12);
        if flags != 0 {
            return Err(BlobError::BadPrelude(format!("flags are 0x{flags:08x}, but versions 1 to 3 define none (must be 0)")));
        }
        if let Some(i) = first_nonzero(&bytes[44..PRELUDE_LEN]) {
            return Err(BlobError::BadPrelude(format!("reserved byte {} is 0x{:02x} (bytes 44..64 must be zero)", 44 + i, bytes[44 + i])));
        }
        let header_len = read_u64(bytes, 16);
        let payload_offset = read_u64(bytes, 24);
        let payload_len = read_u64(bytes, 32);
        let header_crc = read_u32(bytes, 40);
        if header_len == 0 || header_len > MAX_HEADER_LEN {
            return Err(BlobError::BadHeader(format!("the prelude's header length {header_len} is out of range (1..={MAX_HEADER_LEN})")));
        }
        if !payload_offset.is_multiple_of(ALIGN as u64) || payload_offset < PRELUDE_LEN as u64 + header_len {
            return Err(BlobError::BadHeader(format!(
                "the prelude's payload offset {payload_offset} must be a multiple of {ALIGN} past the {header_len}-byte header"
            )));
        }
        let file_len = bytes.len() as u64;
        let end = payload_offset.checked_add(payload_len).ok_or_else(|| {
            BlobError::BadHeader(format!("the prelude's payload length {payload_len} overflows"))
        })?;
        if end > file_len {
            return Err(BlobError::Truncated(format!(
                "the prelude says the payload ends at byte {end} but the file has {file_len} bytes"
            )));
        }
        if end < file_len {
            return Err(BlobError::BadHeader(format!(
                "{} unexpected trailing bytes after the payload (the prelude says the file ends at byte {end})",
                file_len - end
            )));
        }
        let header_bytes = &bytes[PRELUDE_LEN..PRELUDE_LEN + header_len as usize];
        let computed = crc32fast::hash(header_bytes);
        if computed != header_crc {
            return Err(BlobError::Checksum { file: path.display().to_string(), what: "the header".into(), stored: header_crc, computed });
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
        let by_name = validate::header(&header, payload_len)?;
        Ok((header, payload_offset as usize, by_name))
    }

    /// The bytes between the end of the header and the payload must be zero.
    fn check_header_padding(&self) -> Result<(), BlobError> {
        let header_end = PRELUDE_LEN + read_u64(&self.storage, 16) as usize;
        self.check_zero(header_end, self.payload_offset, "after the header")
    }

    fn check_zero(&self, from: usize, to: usize, place: &str) -> Result<(), BlobError> {
        match first_nonzero(&self.storage[from..to]) {
            None => Ok(()),
            Some(i) => Err(BlobError::Padding {
                file: self.path.display().to_string(),
                place: place.to_string(),
                offset: (from + i) as u64,
                value: self.storage[from + i],
            }),
        }
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
        self.storage.len()
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
        TensorView { info, bytes: &self.storage[start..start + info.length as usize] }
    }

    /// Reads every tensor and checks its CRC-32, and checks that the payload bytes no tensor covers
    /// are zero, so that every byte of the file is checked; returns the number of tensor bytes
    /// checked. Opening with [`Verify::Checksums`] (the default) already did this.
    pub fn verify(&self) -> Result<u64, BlobError> {
        let mut total = 0u64;
        for info in &self.header.tensors {
            let v = self.view(info);
            let computed = crc32fast::hash(v.bytes);
            if computed != info.crc32 {
                return Err(BlobError::Checksum {
                    file: self.path.display().to_string(),
                    what: format!("tensor `{}`", info.name),
                    stored: info.crc32,
                    computed,
                });
            }
            total += info.length;
        }
        // Gaps between tensors (validation guarantees they do not overlap) and after the last.
        let mut order: Vec<&TensorInfo> = self.header.tensors.iter().collect();
        order.sort_by_key(|t| t.offset);
        let p = self.payload_offset;
        let mut at = p;
        let mut after = String::from("before the first tensor");
        for t in order {
            self.check_zero(at, p + t.offset as usize, &after)?;
            at = p + (t.offset + t.length) as usize;
            after = format!("after tensor `{}`", t.name);
        }
        self.check_zero(at, self.storage.len(), &after)?;
        Ok(total)
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

    /// The tensor as `bf16` values (zero-copy).
    pub fn bf16s(&self) -> Result<&'a [half::bf16], BlobError> {
        self.check(DType::Bf16)?;
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
