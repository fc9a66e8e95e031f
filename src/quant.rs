//! Quantization metadata carried in int8 blobs.

use serde::{Deserialize, Serialize};

/// Quantization parameters and per-layer choices, stored in the blob header of int8 blobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct QuantInfo {
    /// Per weight matrix (by tensor name without `.weight`): how it is computed.
    pub layers: Vec<LayerQuant>,
    /// File names of the calibration images (so evaluations can exclude them).
    #[serde(default)]
    pub calibration_images: Vec<String>,
}

/// How one linear layer is computed in an int8 blob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerQuant {
    /// Layer name, e.g. `blocks.3.mlp.fc2`.
    pub name: String,
    /// Weight precision stored for this layer: `int8`, `f16` or `f32`.
    pub weights: String,
    /// Activation scheme at the layer input: `dynamic_per_token` (asymmetric u8, scale and zero
    /// point computed per token at run time) or `float` (no activation quantization).
    pub activations: String,
    /// Output SQNR (dB) against float measured on the calibration set when this choice was made.
    #[serde(default)]
    pub sqnr_db: f32,
    /// SmoothQuant migration strength used for this layer (0 = none).
    #[serde(default)]
    pub smooth_alpha: f32,
}
