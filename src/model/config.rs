//! Architecture description of a Vision Transformer, as stored in the blob header.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a ViT / DeiT image classifier (pre-LN blocks, fused qkv, GELU MLP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Architecture name (a timm name such as `vit_tiny_patch16_224`, or `custom`).
    pub arch: String,
    /// Input image side in pixels (square input).
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input channels (3).
    pub in_chans: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Hidden width of the MLP.
    pub mlp_hidden: usize,
    /// Output classes.
    pub num_classes: usize,
    /// Whether a distillation token and a second head are present (DeiT distilled).
    #[serde(default)]
    pub distilled: bool,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f32,
}

impl VitConfig {
    /// Patches along one side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Number of patch tokens.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Class (and distillation) tokens before the patch tokens.
    pub fn num_prefix_tokens(&self) -> usize {
        1 + self.distilled as usize
    }
    /// Total sequence length.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + self.num_prefix_tokens()
    }
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    /// Length of one flattened patch (`in_chans * patch * patch`).
    pub fn patch_len(&self) -> usize {
        self.in_chans * self.patch_size * self.patch_size
    }
    /// Number of f32 values of one preprocessed input image (CHW).
    pub fn input_len(&self) -> usize {
        self.in_chans * self.image_size * self.image_size
    }

    /// Checks that the numbers describe a network this runtime can run; the error says which.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
            ("mlp_hidden", self.mlp_hidden),
            ("num_classes", self.num_classes),
        ];
        for (name, v) in positive {
            if v == 0 || v > 1 << 20 {
                return Err(format!("{name} = {v} is out of range"));
            }
        }
        if self.in_chans != 3 {
            return Err(format!("in_chans = {} (only RGB input is supported)", self.in_chans));
        }
        if self.image_size % self.patch_size != 0 {
            return Err(format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.embed_dim % self.num_heads != 0 {
            return Err(format!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads));
        }
        if self.num_tokens() > 4096 || self.image_size > 4096 {
            return Err(format!("{} tokens is more than this runtime supports", self.num_tokens()));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(format!("layer_norm_eps {} is out of range", self.layer_norm_eps));
        }
        Ok(())
    }

    /// Multiply-accumulate count of one forward pass (for GFLOP/s reporting).
    pub fn macs(&self) -> u64 {
        let t = self.num_tokens() as u64;
        let d = self.embed_dim as u64;
        let h = self.mlp_hidden as u64;
        let patch = self.num_patches() as u64 * self.patch_len() as u64 * d;
        let block = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * h;
        patch + self.depth as u64 * block + d * self.num_classes as u64
    }
}

/// Weight-matrix names of one block, in forward order.
pub const BLOCK_LINEARS: [&str; 4] = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"];
