//! The JSON header of a blob: model configuration, preprocessing, labels, tensor table.

use serde::{Deserialize, Serialize};

use crate::model::VitConfig;
use crate::preprocess::PreprocessConfig;
use crate::quant::QuantInfo;

/// Value of the header's `format` field.
pub const FORMAT_NAME: &str = "vitedge-blob";

/// Element type of a stored tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE-754 binary32, little-endian.
    F32,
    /// IEEE-754 binary16, little-endian.
    F16,
    /// Two's-complement signed byte.
    I8,
    /// bfloat16 (the upper half of an IEEE-754 binary32), little-endian; format version 3.
    Bf16,
    /// Two's-complement 32-bit integer, little-endian.
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::I8 => 1,
        }
    }
}

/// How the elements of a tensor are arranged in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Plain row-major (C order) over `shape`.
    #[default]
    RowMajor,
    /// A weight matrix of logical shape `[n, k]` stored as `ceil(n/16)` panels of `k × 16` values:
    /// element `(j, kk)` sits at `(j / 16) * k * 16 + kk * 16 + j % 16`; padding columns are zero.
    Panel16,
    /// An int8 weight matrix of logical shape `[n, k]` stored as `ceil(n/16)` panels of
    /// `ceil(k/4)` groups of `16 × 4` bytes: element `(j, kk)` sits at
    /// `(j / 16) * kp * 16 + (kk / 4) * 64 + (j % 16) * 4 + kk % 4` with `kp = round_up(k, 4)`;
    /// padding is zero.
    Panel16x4,
    /// A bf16 weight matrix of logical shape `[n, k]` stored as `ceil(n/16)` panels of
    /// `ceil(k/2)` pair rows of `16 × 2` values: element `(j, kk)` sits at
    /// `(j / 16) * kp * 16 + (kk / 2) * 32 + (j % 16) * 2 + kk % 2` with `kp = round_up(k, 2)`;
    /// padding is zero. The operand layout of `vdpbf16ps` and of AMX `tdpbf16ps` B tiles.
    Panel16x2,
}

impl Layout {
    /// Number of stored elements for a tensor of `shape` in this layout, or `None` if the layout does
    /// not apply to that shape or the count overflows.
    pub fn stored_elements(self, shape: &[usize]) -> Option<usize> {
        match self {
            Layout::RowMajor => shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)),
            Layout::Panel16 => match shape {
                [n, k] => super::round_up(*n, 16).checked_mul(*k),
                _ => None,
            },
            Layout::Panel16x4 => match shape {
                [n, k] => super::round_up(*n, 16).checked_mul(super::round_up(*k, 4)),
                _ => None,
            },
            Layout::Panel16x2 => match shape {
                [n, k] => super::round_up(*n, 16).checked_mul(super::round_up(*k, 2)),
                _ => None,
            },
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Canonical (timm) tensor name, e.g. `blocks.0.attn.qkv.weight`.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Element arrangement.
    #[serde(default)]
    pub layout: Layout,
    /// Byte offset from the start of the payload; a multiple of 64.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// CRC-32 (IEEE, as zlib's `crc32`) of the tensor's bytes.
    pub crc32: u32,
}

/// The blob header, stored as UTF-8 JSON after the prelude.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Same as the prelude's version field.
    pub version: u32,
    /// Precision of the weight matrices: `f32`, `f16`, `bf16` or `int8`.
    pub precision: String,
    /// Network architecture.
    pub config: VitConfig,
    /// Input preprocessing the model was trained with.
    pub preprocess: PreprocessConfig,
    /// Class names in logit order (may be empty; then indices are printed).
    pub labels: Vec<String>,
    /// Optional class identifiers parallel to `labels` (e.g. ImageNet synset ids `n01440764`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_ids: Vec<String>,
    /// Quantization parameters and per-layer precision choices (int8 blobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantInfo>,
    /// Free-form provenance: producer, source checkpoint, its sha256...
    #[serde(default)]
    pub source: serde_json::Map<String, serde_json::Value>,
    /// The tensor table.
    pub tensors: Vec<TensorInfo>,
}
