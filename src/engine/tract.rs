//! tract-core engine (being written).
use super::{Engine, EngineError, EngineOptions};
use crate::model::Model;

/// Runs the model through a tract-core `TypedModel` built from the blob.
pub struct TractEngine {}

impl TractEngine {
    /// Builds the tract graph.
    pub fn new(model: &Model, opts: &EngineOptions) -> Result<Self, EngineError> {
        let _ = (model, opts);
        Err(EngineError::Backend("tract engine not built yet".into()))
    }
}

impl Engine for TractEngine {
    fn backend(&self) -> &'static str {
        "tract"
    }
    fn describe(&self) -> String {
        "tract-core".into()
    }
    fn infer(&mut self, _input: &[f32], _logits: &mut [f32]) -> Result<(), EngineError> {
        Err(EngineError::Backend("tract engine not built yet".into()))
    }
}
