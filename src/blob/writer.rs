//! Writing a blob: tensors are appended to an in-memory payload, then prelude, header and payload are
//! written to a new file in one go and renamed into place (atomic replacement).

use std::io::Write;
use std::path::Path;

use super::{round_up, DType, Header, Layout, TensorInfo, ALIGN, FORMAT_VERSION, MAGIC, PRELUDE_LEN, VERSION_WITHOUT_BF16};

/// Builds a blob file from a header template and tensors.
pub struct BlobWriter {
    header: Header,
    payload: Vec<u8>,
}

impl BlobWriter {
    /// Starts a blob; the header's `tensors` list is replaced by what [`BlobWriter::add`] appends.
    /// Its version is [`VERSION_WITHOUT_BF16`] until a bf16 tensor is added, then
    /// [`FORMAT_VERSION`].
    pub fn new(mut header: Header) -> Self {
        header.tensors.clear();
        header.version = VERSION_WITHOUT_BF16;
        header.format = super::FORMAT_NAME.to_string();
        BlobWriter { header, payload: Vec::new() }
    }

    /// Mutable access to the header template (labels, quantization info...).
    pub fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }

    /// Appends a tensor given as raw little-endian bytes, 64-byte aligned.
    ///
    /// Panics if `bytes` does not have the length `dtype`, `shape` and `layout` imply: that is a
    /// programming error in the converter, not bad input.
    pub fn add(&mut self, name: &str, dtype: DType, shape: &[usize], layout: Layout, bytes: &[u8]) {
        let stored = layout.stored_elements(shape).expect("layout fits shape");
        assert_eq!(bytes.len(), stored * dtype.size(), "tensor {name}: byte length does not match its shape");
        if dtype == DType::Bf16 {
            self.header.version = FORMAT_VERSION;
        }
        let offset = round_up(self.payload.len(), ALIGN);
        self.payload.resize(offset, 0);
        self.payload.extend_from_slice(bytes);
        self.header.tensors.push(TensorInfo {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            layout,
            offset: offset as u64,
            length: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        });
    }

    /// Appends an `f32` tensor.
    pub fn add_f32(&mut self, name: &str, shape: &[usize], layout: Layout, data: &[f32]) {
        self.add(name, DType::F32, shape, layout, bytemuck::cast_slice(data));
    }

    /// Appends an `f16` tensor.
    pub fn add_f16(&mut self, name: &str, shape: &[usize], layout: Layout, data: &[half::f16]) {
        self.add(name, DType::F16, shape, layout, bytemuck::cast_slice(data));
    }

    /// Appends a `bf16` tensor.
    pub fn add_bf16(&mut self, name: &str, shape: &[usize], layout: Layout, data: &[half::bf16]) {
        self.add(name, DType::Bf16, shape, layout, bytemuck::cast_slice(data));
    }

    /// Appends an `i8` tensor.
    pub fn add_i8(&mut self, name: &str, shape: &[usize], layout: Layout, data: &[i8]) {
        self.add(name, DType::I8, shape, layout, bytemuck::cast_slice(data));
    }

    /// Serializes the whole blob to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header_json = serde_json::to_vec(&self.header).expect("header serializes");
        let payload_offset = round_up(PRELUDE_LEN + header_json.len(), ALIGN);
        let mut out = Vec::with_capacity(payload_offset + self.payload.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.header.version.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // flags
        out.extend_from_slice(&(header_json.len() as u64).to_le_bytes());
        out.extend_from_slice(&(payload_offset as u64).to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&header_json).to_le_bytes());
        out.resize(PRELUDE_LEN, 0);
        out.extend_from_slice(&header_json);
        out.resize(payload_offset, 0);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Writes the blob to `path` atomically: the bytes go to a new temporary file in the same
    /// folder (created if needed), which is flushed to disk (fsync), renamed over `path`, and the
    /// folder is flushed too. Readers see the old file or the new one, never a partial one; on any
    /// error the temporary file is removed and `path` is untouched. The header is validated first
    /// (as a reader would), so a converter bug cannot write a blob that readers refuse.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let payload_len = self.payload.len() as u64;
        super::validate::header(&self.header, payload_len)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("refusing to write an invalid blob: {e}")))?;
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                d
            }
            None => Path::new("."),
        };
        let name = path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{} is not a file path", path.display())))?;
        let (tmp, mut file) = create_temporary(dir, name)?;
        let written = file
            .write_all(&self.to_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path));
        drop(file);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable once the folder's entry is on disk.
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Creates a new, uniquely named hidden file `.NAME.PID.N.partial` in `dir`.
fn create_temporary(dir: &Path, name: &std::ffi::OsStr) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.{n}.partial", std::process::id()));
        let tmp = dir.join(tmp_name);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
