//! Helpers shared by the integration tests: paths to `../shared`, checkpoints written by the tests,
//! and converted blobs cached per test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vitedge::model::synthetic::random_tensors;
use vitedge::model::VitConfig;
use vitedge_quant::convert::{self, ConvertOptions, Labels, Precision};

/// `../shared` relative to the repository root, if present.
pub fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    p.join("imagenet-sample").is_dir().then_some(p)
}

/// The real pretrained ViT-Tiny checkpoint, if present.
pub fn real_checkpoint() -> Option<PathBuf> {
    let p = shared()?.join("weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors");
    p.is_file().then_some(p)
}

/// Sample images, sorted by name.
pub fn sample_images() -> Vec<PathBuf> {
    shared().map(|s| vitedge::eval::list_images(&s.join("imagenet-sample")).unwrap()).unwrap_or_default()
}

/// Whether slow real-data suites should be skipped (set under qemu emulation).
pub fn skip_slow() -> bool {
    std::env::var("VITEDGE_SLOW_UNDER_EMULATION").is_ok_and(|v| v == "1")
}

/// Prints why a test is skipped and returns true when the real checkpoint or images are missing.
pub fn skip_without_real_data(test: &str) -> bool {
    if skip_slow() {
        eprintln!("{test}: skipped under emulation (VITEDGE_SLOW_UNDER_EMULATION=1)");
        return true;
    }
    if real_checkpoint().is_none() {
        eprintln!("{test}: skipped: ../shared/weights or ../shared/imagenet-sample is missing");
        return true;
    }
    false
}

/// A per-process scratch folder that lives as long as the test binary.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// Writes timm-named random weights for `cfg` as a safetensors checkpoint (the patch embedding as a
/// `[D, 3, p, p]` convolution, as timm stores it).
pub fn write_random_safetensors(cfg: &VitConfig, seed: u64, path: &Path) {
    let tensors = random_tensors(cfg, seed);
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, data)| {
            let shape = if name == "patch_embed.proj.weight" {
                vec![cfg.embed_dim, cfg.in_chans, cfg.patch_size, cfg.patch_size]
            } else {
                shape
            };
            (name, shape, data.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// Converts a checkpoint into a blob at `out`.
pub fn convert_file(checkpoint: &Path, out: &Path, precision: Precision, labels: bool) -> PathBuf {
    let labels = labels.then(|| Labels::read(&shared().unwrap().join("imagenet_classes.txt")).unwrap());
    let opts = ConvertOptions { labels, ..Default::default() };
    let prepared = convert::prepare_file(checkpoint, &opts).unwrap();
    convert::write_blob(&convert::float_blob(&prepared, precision), out).unwrap();
    out.to_path_buf()
}

/// The real checkpoint converted to `precision` (f32 or f16), once per test binary.
pub fn real_blob(precision: Precision) -> PathBuf {
    static F32: OnceLock<PathBuf> = OnceLock::new();
    static F16: OnceLock<PathBuf> = OnceLock::new();
    static BF16: OnceLock<PathBuf> = OnceLock::new();
    let cell = match precision {
        Precision::F32 => &F32,
        Precision::F16 => &F16,
        Precision::Bf16 => &BF16,
        Precision::Int8 => panic!("int8 blobs come from the calibrating quantizer"),
    };
    cell.get_or_init(|| {
        let out = scratch().join(format!("vit_tiny_{}.vitb", precision.as_str()));
        convert_file(&real_checkpoint().unwrap(), &out, precision, true)
    })
    .clone()
}
