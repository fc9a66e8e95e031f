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

    /// Checks that the numbers describe a network this runtime can run; the error names the field
    /// (`num_heads`, …) and says what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
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
                return Err((name, format!("{v} is out of range (1..={})", 1 << 20)));
            }
        }
        if self.in_chans != 3 {
            return Err(("in_chans", format!("{} (only RGB input is supported)", self.in_chans)));
        }
        if self.image_size % self.patch_size != 0 {
            return Err(("patch_size", format!("image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size)));
        }
        if self.embed_dim % self.num_heads != 0 {
            return Err(("num_heads", format!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads)));
        }
        if self.num_tokens() > 4096 || self.image_size > 4096 {
            return Err(("image_size", format!("{} tokens is more than this runtime supports", self.num_tokens())));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(("layer_norm_eps", format!("{} is out of range (0, 1)", self.layer_norm_eps)));
        }
        Ok(())
    }

    /// Name and shape of every tensor a blob of this network stores, in file order (FORMAT.md §3),
    /// without the `<matrix>.weight_scale` tensors of int8 matrices. Weight matrices (see
    /// [`is_matrix`]) have their logical `[n, k]` shape.
    pub fn blob_tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.embed_dim;
        let mut v: Vec<(String, Vec<usize>)> = vec![
            ("patch_embed.proj.weight".into(), vec![d, self.patch_len()]),
            ("patch_embed.proj.bias".into(), vec![d]),
            ("cls_token".into(), vec![1, 1, d]),
        ];
        if self.distilled {
            v.push(("dist_token".into(), vec![1, 1, d]));
        }
        v.push(("pos_embed".into(), vec![1, self.num_tokens(), d]));
        for i in 0..self.depth {
            let b = format!("blocks.{i}");
            for (n, s) in [
                ("norm1.weight", vec![d]),
                ("norm1.bias", vec![d]),
                ("attn.qkv.weight", vec![3 * d, d]),
                ("attn.qkv.bias", vec![3 * d]),
                ("attn.proj.weight", vec![d, d]),
                ("attn.proj.bias", vec![d]),
                ("norm2.weight", vec![d]),
                ("norm2.bias", vec![d]),
                ("mlp.fc1.weight", vec![self.mlp_hidden, d]),
                ("mlp.fc1.bias", vec![self.mlp_hidden]),
                ("mlp.fc2.weight", vec![d, self.mlp_hidden]),
                ("mlp.fc2.bias", vec![d]),
            ] {
                v.push((format!("{b}.{n}"), s));
            }
        }
        v.push(("norm.weight".into(), vec![d]));
        v.push(("norm.bias".into(), vec![d]));
        v.push(("head.weight".into(), vec![self.num_classes, d]));
        v.push(("head.bias".into(), vec![self.num_classes]));
        if self.distilled {
            v.push(("head_dist.weight".into(), vec![self.num_classes, d]));
            v.push(("head_dist.bias".into(), vec![self.num_classes]));
        }
        v
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

/// Whether a tensor is a weight matrix (stored in a panel layout, int8-quantizable): a `.weight` of
/// rank 2 that is not a LayerNorm's.
pub fn is_matrix(name: &str, shape: &[usize]) -> bool {
    name.ends_with(".weight") && shape.len() == 2 && !name.contains("norm")
}

/// Weight-matrix names of one block, in forward order.
pub const BLOCK_LINEARS: [&str; 4] = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"];
