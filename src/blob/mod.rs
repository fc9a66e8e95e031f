//! The `.vitb` weight blob: one versioned, checksummed, 64-byte-aligned file that the runtime maps
//! with memmap2 and reads zero-copy, after checking every byte of it (see [`Verify`]). The byte
//! layout is specified in `FORMAT.md` at the repository root.

mod guard;
mod header;
mod reader;
mod validate;
mod writer;

pub use guard::{install_truncation_guard, TRUNCATED_EXIT_CODE};
pub use header::{DType, Header, Layout, TensorInfo, FORMAT_NAME};
pub use reader::{Blob, BlobError, TensorView, Verify};
pub use validate::{CROP_PCT_MIN, MEAN_RANGE, STD_RANGE};
pub use writer::BlobWriter;

/// The eight bytes every blob starts with.
pub const MAGIC: [u8; 8] = *b"VITEDGE\0";
/// The newest blob format version this build reads and writes. Version 2 added int8 tensors
/// (`Panel16x4` layout, per-channel scales) and the header's `quantization` block; version 3 added
/// bf16 matrices (`Panel16x2`). Writers stamp the oldest version that holds a blob's content
/// ([`BlobWriter`]), so f32, f16 and int8 blobs stay readable by version-2 readers.
pub const FORMAT_VERSION: u32 = 3;
/// The version a blob without bf16 tensors is written with.
pub const VERSION_WITHOUT_BF16: u32 = 2;
/// The oldest blob format version this build still reads.
pub const MIN_READ_VERSION: u32 = 1;
/// Size of the fixed prelude before the JSON header.
pub const PRELUDE_LEN: usize = 64;
/// Alignment of the payload and of every tensor in it, in bytes.
pub const ALIGN: usize = 64;
/// Upper bound on the JSON header size; anything larger is treated as corruption.
pub const MAX_HEADER_LEN: u64 = 64 << 20;
/// Upper bound on the element count of one tensor (1 G elements); anything larger is corruption.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 30;

/// Rounds `n` up to a multiple of `to`.
pub const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}
