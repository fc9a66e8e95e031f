//! vitedge-quant: turns float ViT checkpoints (timm / Hugging Face `.safetensors`, PyTorch `.pth`,
//! Lightning `.ckpt`) into vitedge blobs in f32, f16 or calibrated int8.

pub mod arch;
pub mod checkpoint;
pub mod convert;
pub mod int8;
pub mod timm_config;
pub mod transform;
