//! A ViT model backed by a memory-mapped blob: configuration plus zero-copy views of its weights.

mod config;
pub mod synthetic;

pub use config::{is_matrix, VitConfig, BLOCK_LINEARS};

use half::{bf16, f16};

use crate::blob::{Blob, BlobError, DType, Header, Layout, TensorView, Verify};
use crate::preprocess::PreprocessConfig;

/// A weight matrix as stored in the blob (zero-copy).
#[derive(Clone, Copy)]
pub enum Matrix<'a> {
    /// f32 in `Panel16` layout.
    F32(&'a [f32]),
    /// f16 in `Panel16` layout.
    F16(&'a [f16]),
    /// bf16 in `Panel16x2` layout (bf16 blobs: run with bf16 activations, f32 accumulation).
    Bf16(&'a [bf16]),
    /// Symmetric per-output-channel int8 in `Panel16x4` layout with its f32 scales.
    I8 {
        /// Packed weights.
        w: &'a [i8],
        /// Per-output-channel scale.
        scale: &'a [f32],
    },
}

impl Matrix<'_> {
    /// Short precision name (`f32`, `f16`, `int8`).
    pub fn precision(&self) -> &'static str {
        match self {
            Matrix::F32(_) => "f32",
            Matrix::F16(_) => "f16",
            Matrix::Bf16(_) => "bf16",
            Matrix::I8 { .. } => "int8",
        }
    }
}

/// One linear layer `y = x · Wᵀ + b` with `W` of logical shape `[n, k]`.
#[derive(Clone, Copy)]
pub struct Linear<'a> {
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Weights.
    pub weight: Matrix<'a>,
    /// Bias of length `n`.
    pub bias: &'a [f32],
}

/// LayerNorm affine parameters.
#[derive(Clone, Copy)]
pub struct Norm<'a> {
    /// Scale (gamma).
    pub weight: &'a [f32],
    /// Shift (beta).
    pub bias: &'a [f32],
}

/// Weights of one transformer block.
#[derive(Clone, Copy)]
pub struct Block<'a> {
    /// Pre-attention LayerNorm.
    pub norm1: Norm<'a>,
    /// Fused query/key/value projection (`n = 3·embed_dim`).
    pub qkv: Linear<'a>,
    /// Attention output projection.
    pub proj: Linear<'a>,
    /// Pre-MLP LayerNorm.
    pub norm2: Norm<'a>,
    /// MLP expansion.
    pub fc1: Linear<'a>,
    /// MLP contraction.
    pub fc2: Linear<'a>,
}

/// All weights of a ViT, borrowed from the blob.
pub struct Weights<'a> {
    /// Patch embedding as a linear layer over flattened `(c, y, x)` patches.
    pub patch_embed: Linear<'a>,
    /// Class token `[embed_dim]`.
    pub cls_token: &'a [f32],
    /// Distillation token (DeiT distilled only).
    pub dist_token: Option<&'a [f32]>,
    /// Position embedding `[num_tokens, embed_dim]`.
    pub pos_embed: &'a [f32],
    /// Transformer blocks.
    pub blocks: Vec<Block<'a>>,
    /// Final LayerNorm.
    pub norm: Norm<'a>,
    /// Classifier head.
    pub head: Linear<'a>,
    /// Distillation head (DeiT distilled only); logits are the mean of both heads.
    pub head_dist: Option<Linear<'a>>,
}

/// Errors found while opening a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The blob is unreadable, corrupt, or describes a network this runtime cannot run.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// A validated model: the mapped blob plus its parsed configuration.
pub struct Model {
    blob: Blob,
}

impl Model {
    /// Opens a blob, checking every byte of it (structure, header meaning, every tensor's CRC-32:
    /// [`Verify::Checksums`]) and that every tensor the architecture needs binds.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Model, ModelError> {
        Self::open_with(path, Verify::Checksums)
    }

    /// [`Model::open`] checking as much as `verify` says ([`Verify::SkipChecksums`] does not read
    /// the weights: only for files verified by other means).
    pub fn open_with(path: impl AsRef<std::path::Path>, verify: Verify) -> Result<Model, ModelError> {
        Self::from_blob(Blob::open_with(path, verify)?)
    }

    /// A model over an already opened blob.
    pub fn from_blob(blob: Blob) -> Result<Model, ModelError> {
        let model = Model { blob };
        // The header was validated against the architecture when the blob was opened; binding
        // the typed weight views cannot fail after that, but costs nothing to check.
        model.weights()?;
        Ok(model)
    }

    /// The underlying blob.
    pub fn blob(&self) -> &Blob {
        &self.blob
    }
    /// The blob header.
    pub fn header(&self) -> &Header {
        self.blob.header()
    }
    /// The network configuration.
    pub fn config(&self) -> &VitConfig {
        &self.blob.header().config
    }
    /// The preprocessing configuration.
    pub fn preprocess(&self) -> &PreprocessConfig {
        &self.blob.header().preprocess
    }
    /// Label of class `index`, or the index as text when the blob carries no labels.
    pub fn label(&self, index: usize) -> String {
        self.header().labels.get(index).cloned().unwrap_or_else(|| index.to_string())
    }

    fn vector(&self, name: &str, len: usize) -> Result<&[f32], BlobError> {
        let t = self.blob.tensor(name)?;
        let n: usize = t.info.shape.iter().product();
        if n != len || t.info.layout != Layout::RowMajor {
            return Err(BlobError::Mismatch {
                name: name.into(),
                expected: format!("{len} values, row-major"),
                found: format!("shape {:?} in layout {:?}", t.info.shape, t.info.layout),
            });
        }
        t.f32s()
    }

    fn matrix(&self, name: &str, n: usize, k: usize) -> Result<Matrix<'_>, BlobError> {
        let t: TensorView<'_> = self.blob.tensor(name)?;
        Ok(match t.info.dtype {
            DType::F32 => Matrix::F32(t.expect(&[n, k], Layout::Panel16)?.f32s()?),
            DType::F16 => Matrix::F16(t.expect(&[n, k], Layout::Panel16)?.f16s()?),
            DType::Bf16 => Matrix::Bf16(t.expect(&[n, k], Layout::Panel16x2)?.bf16s()?),
            DType::I8 => {
                let w = t.expect(&[n, k], Layout::Panel16x4)?.i8s()?;
                let scale = self.vector(&format!("{name}_scale"), n)?;
                Matrix::I8 { w, scale }
            }
            other => {
                return Err(BlobError::Mismatch {
                    name: name.into(),
                    expected: "dtype f32, f16, bf16 or i8".into(),
                    found: format!("dtype {other:?}"),
                })
            }
        })
    }

    fn linear(&self, prefix: &str, n: usize, k: usize) -> Result<Linear<'_>, BlobError> {
        Ok(Linear {
            n,
            k,
            weight: self.matrix(&format!("{prefix}.weight"), n, k)?,
            bias: self.vector(&format!("{prefix}.bias"), n)?,
        })
    }

    fn norm(&self, prefix: &str, d: usize) -> Result<Norm<'_>, BlobError> {
        Ok(Norm { weight: self.vector(&format!("{prefix}.weight"), d)?, bias: self.vector(&format!("{prefix}.bias"), d)? })
    }

    /// Binds every weight tensor (zero-copy views into the map).
    pub fn weights(&self) -> Result<Weights<'_>, BlobError> {
        let c = self.config();
        let d = c.embed_dim;
        let blocks = (0..c.depth)
            .map(|i| {
                let p = format!("blocks.{i}");
                Ok(Block {
                    norm1: self.norm(&format!("{p}.norm1"), d)?,
                    qkv: self.linear(&format!("{p}.attn.qkv"), 3 * d, d)?,
                    proj: self.linear(&format!("{p}.attn.proj"), d, d)?,
                    norm2: self.norm(&format!("{p}.norm2"), d)?,
                    fc1: self.linear(&format!("{p}.mlp.fc1"), c.mlp_hidden, d)?,
                    fc2: self.linear(&format!("{p}.mlp.fc2"), d, c.mlp_hidden)?,
                })
            })
            .collect::<Result<Vec<_>, BlobError>>()?;
        Ok(Weights {
            patch_embed: self.linear("patch_embed.proj", d, c.patch_len())?,
            cls_token: self.vector("cls_token", d)?,
            dist_token: if c.distilled { Some(self.vector("dist_token", d)?) } else { None },
            pos_embed: self.vector("pos_embed", c.num_tokens() * d)?,
            blocks,
            norm: self.norm("norm", d)?,
            head: self.linear("head", c.num_classes, d)?,
            head_dist: if c.distilled { Some(self.linear("head_dist", c.num_classes, d)?) } else { None },
        })
    }
}
