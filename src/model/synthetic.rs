//! Deterministic random ViT weights, for tests and benchmarks that must not depend on downloaded
//! checkpoints.

use crate::blob::{round_up, BlobWriter, Header, Layout, FORMAT_NAME, FORMAT_VERSION};
use crate::kernels::pack;
use crate::model::VitConfig;
use crate::preprocess::PreprocessConfig;

/// A small deterministic PRNG (SplitMix64) with a normal-distribution helper.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    /// `n` normal values times `std`.
    pub fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }
}

/// A small ViT configuration for fast tests (`image_size` 32, 4 patches, 2 blocks).
pub fn tiny_config(num_classes: usize) -> VitConfig {
    VitConfig {
        arch: "custom".into(),
        image_size: 32,
        patch_size: 16,
        in_chans: 3,
        embed_dim: 32,
        depth: 2,
        num_heads: 2,
        mlp_hidden: 128,
        num_classes,
        distilled: false,
        layer_norm_eps: 1e-6,
    }
}

/// The ViT-Tiny/16 at 224 configuration (`vit_tiny_patch16_224`) with `num_classes` outputs.
pub fn vit_tiny_config(num_classes: usize) -> VitConfig {
    VitConfig {
        arch: "vit_tiny_patch16_224".into(),
        image_size: 224,
        patch_size: 16,
        in_chans: 3,
        embed_dim: 192,
        depth: 12,
        num_heads: 3,
        mlp_hidden: 768,
        num_classes,
        distilled: false,
        layer_norm_eps: 1e-6,
    }
}

/// Row-major timm-named f32 tensors of a random ViT (`patch_embed.proj.weight` already flattened to
/// `[embed_dim, patch_len]`), in the blob's order ([`VitConfig::blob_tensor_shapes`]): matrices
/// ~ N(0, 1/k), LayerNorm scales ~ 1 + N(0, 0.1²), LayerNorm shifts ~ N(0, 0.05²), biases
/// ~ N(0, 0.02²), class/distillation tokens ~ N(0, 0.5²), position embedding ~ N(0, 0.2²).
pub fn random_tensors(cfg: &VitConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = Rng::new(seed);
    cfg.blob_tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = if is_matrix(&name, &shape) {
                rng.normals(n, (1.0 / shape[1] as f32).sqrt())
            } else if name.contains("norm") && name.ends_with(".weight") {
                (0..n).map(|_| 1.0 + 0.1 * rng.normal()).collect()
            } else if name.contains("norm") {
                rng.normals(n, 0.05)
            } else if name.ends_with(".bias") {
                rng.normals(n, 0.02)
            } else if name == "pos_embed" {
                rng.normals(n, 0.2)
            } else {
                rng.normals(n, 0.5)
            };
            (name, shape, data)
        })
        .collect()
}

pub use crate::model::is_matrix;

/// A header template for `cfg` with no tensors yet.
pub fn header_for(cfg: &VitConfig, preprocess: PreprocessConfig, labels: Vec<String>, precision: &str) -> Header {
    Header {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        precision: precision.into(),
        config: cfg.clone(),
        preprocess,
        labels,
        label_ids: Vec::new(),
        quantization: None,
        source: Default::default(),
        tensors: Vec::new(),
    }
}

/// A complete f32 blob with random weights (preprocessing: mean = std = 0.5, bicubic, crop 0.9).
pub fn random_blob(cfg: &VitConfig, seed: u64) -> BlobWriter {
    random_blob_in(cfg, seed, "f32")
}

/// [`random_blob`] with the weight matrices stored in `precision`: `f32`, `f16`, `bf16`, or `int8`
/// (symmetric per-row scales, like the quantizer; activations are quantized at run time).
pub fn random_blob_in(cfg: &VitConfig, seed: u64, precision: &str) -> BlobWriter {
    let mut w = BlobWriter::new(header_for(cfg, PreprocessConfig::augreg(cfg.image_size), Vec::new(), precision));
    for (name, shape, data) in random_tensors(cfg, seed) {
        if !is_matrix(&name, &shape) {
            w.add_f32(&name, &shape, Layout::RowMajor, &data);
            continue;
        }
        let (n, k) = (shape[0], shape[1]);
        match precision {
            "f16" => {
                let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                let mut p = vec![half::f16::ZERO; round_up(n, 16) * k];
                pack::panel16_from_rows(&h, n, k, k, &mut p);
                w.add_f16(&name, &shape, Layout::Panel16, &p);
            }
            "bf16" => {
                let mut p = vec![half::bf16::ZERO; round_up(n, 16) * round_up(k, 2)];
                pack::panel16x2_from_rows(&data, n, k, k, &mut p);
                w.add_bf16(&name, &shape, Layout::Panel16x2, &p);
            }
            "int8" => {
                let scales: Vec<f32> = data.chunks_exact(k).map(|r| r.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0).collect();
                let q: Vec<i8> = data.iter().enumerate().map(|(i, v)| (v / scales[i / k]).round() as i8).collect();
                w.add_i8(&name, &shape, Layout::Panel16x4, &pack::panel16x4_from_rows(&q, n, k));
                w.add_f32(&format!("{name}_scale"), &[n], Layout::RowMajor, &scales);
            }
            _ => {
                let mut p = vec![0f32; round_up(n, 16) * k];
                pack::panel16_from_rows(&data, n, k, k, &mut p);
                w.add_f32(&name, &shape, Layout::Panel16, &p);
            }
        }
    }
    w
}

