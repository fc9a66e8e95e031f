//! Inference engines: the native forward pass over [`crate::kernels`], and (feature `tract`) an
//! independent tract-core engine used as the oracle of the tests.

pub mod native;
pub mod pool;
#[cfg(feature = "tract")]
pub mod tract;

use crate::model::Model;

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
}

/// Which engine to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// vitedge's own forward pass with SIMD kernels.
    Native,
    /// tract-core (only when built with the `tract` feature).
    Tract,
}

/// Engine construction options.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Kernel set name (`auto`, `scalar`, or an instruction-set name).
    pub kernels: String,
    /// Worker threads (0 = number of cores).
    pub threads: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { kernels: "auto".into(), threads: 0 }
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
