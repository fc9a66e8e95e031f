//! Inference engines: the native forward pass over [`crate::kernels`], and (feature `tract`) an
//! independent tract-core engine used as the oracle of the tests.

pub mod native;
pub mod pool;
#[cfg(feature = "tract")]
pub mod tract;

use crate::model::Model;
use crate::preprocess::{Serial, Workers};

/// Errors raised while building or running an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input or output buffer has the wrong length.
    #[error("{what} has {found} values, expected {expected}")]
    Shape { what: &'static str, expected: usize, found: usize },
    /// The weights cannot be bound.
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    /// The backend failed.
    #[error("{0}")]
    Backend(String),
}

/// Something that turns one preprocessed image (CHW f32) into logits. `Send`, so that an engine (and
/// a [`crate::session::Session`]) can be handed to another thread.
pub trait Engine: Send {
    /// Backend name (`native` or `tract`).
    fn backend(&self) -> &'static str;
    /// Kernel description for logs (`vitedge info`).
    fn describe(&self) -> String;
    /// Runs one image: `input` is `3 × size × size` CHW, `logits` receives `num_classes` values.
    fn infer(&mut self, input: &[f32], logits: &mut [f32]) -> Result<(), EngineError>;
    /// Where preprocessing may run its row blocks: the engine's own thread pool (the threads
    /// `infer` uses), or serially when the engine has none.
    fn workers(&self) -> &dyn Workers {
        &Serial
    }
}

/// Which engine to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// vitedge's own forward pass with SIMD kernels.
    Native,
    /// tract-core (only when built with the `tract` feature).
    Tract,
}

/// Precision of the two attention matmuls (`q·kᵀ` and `p·v`) in the native engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AttentionPrecision {
    /// f32 for f32 and f16 blobs; for int8 blobs bf16 where the kernels have bf16 dot products,
    /// else int8 where the kernel set runs int8 attention by default, else f32.
    #[default]
    Auto,
    /// f32 operands and sums.
    F32,
    /// bf16 operands, f32 sums (needs a kernel set with bf16 dot products).
    Bf16,
    /// u8 queries and probabilities × i8 keys and values (per-row / per-channel scales), i32 sums.
    Int8,
}

/// Engine construction options.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Kernel set name (`auto`, `scalar`, or an instruction-set name).
    pub kernels: String,
    /// Worker threads (0 = number of cores).
    pub threads: usize,
    /// Attention precision (native engine).
    pub attention: AttentionPrecision,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { kernels: "auto".into(), threads: 0, attention: AttentionPrecision::Auto }
    }
}

/// Builds the engine `backend` over `model`.
pub fn create<'m>(model: &'m Model, backend: Backend, opts: &EngineOptions) -> Result<Box<dyn Engine + 'm>, EngineError> {
    match backend {
        Backend::Native => Ok(Box::new(native::NativeEngine::new(model, opts)?)),
        #[cfg(feature = "tract")]
        Backend::Tract => Ok(Box::new(tract::TractEngine::new(model, opts)?)),
        #[cfg(not(feature = "tract"))]
        Backend::Tract => Err(EngineError::Backend(
            "this vitedge was built without the `tract` feature; rebuild with `--features tract` or use --backend native".into(),
        )),
    }
}

pub(crate) fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), EngineError> {
    if expected == found {
        Ok(())
    } else {
        Err(EngineError::Shape { what, expected, found })
    }
}
