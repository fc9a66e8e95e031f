//! Accuracy evaluation over a folder of labelled images (ImageNet-style file names starting with
//! the synset id), optionally against a reference model.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::classify::{argmax, cosine, top_k};
use crate::engine::{self, AttentionPrecision, Backend, EngineOptions};
use crate::model::Model;

/// Accuracy and agreement figures (fractions in 0..1).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct EvalResult {
    /// Images evaluated.
    pub images: usize,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Top-1 agreement with the reference model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Mean logit cosine against the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_mean: Option<f64>,
    /// Worst logit cosine against the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_min: Option<f64>,
    /// Top-1 accuracy of the reference model on the same images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_top1: Option<f64>,
    /// Mean inference milliseconds per image (model under test).
    pub ms_mean: f64,
}

/// Errors of an evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Something is wrong with the inputs; the message says what to do.
    #[error("{0}")]
    Input(String),
    /// Engine failure.
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    /// Image failure.
    #[error(transparent)]
    Image(#[from] crate::preprocess::PreprocessError),
}

/// JPEG/PNG files of a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| EvalError::Input(format!("cannot read image folder {}: {e}", dir.display())))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The class index of an image whose file name starts with a label id (e.g. `n01440764_tench.JPEG`).
pub fn label_from_file_name(model: &Model, path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    let id = name.split(['_', '.']).next()?;
    model.header().label_ids.iter().position(|x| x == id)
}

/// Evaluates `model` on `images`; with `reference`, also agreement and logit cosine.
pub fn evaluate(
    model: &Model,
    reference: Option<&Model>,
    images: &[PathBuf],
    backend: Backend,
    opts: &EngineOptions,
    progress: bool,
) -> Result<EvalResult, EvalError> {
    if model.header().label_ids.is_empty() {
        return Err(EvalError::Input(
            "the model carries no label ids; convert it with --labels ../shared/imagenet_classes.txt (lines `n01440764 tench`)".into(),
        ));
    }
    if images.is_empty() {
        return Err(EvalError::Input("no images to evaluate (JPEG or PNG files expected)".into()));
    }
    let n = model.config().num_classes;
    let mut engine = engine::create(model, backend, opts)?;
    // The reference runs at its own blob's default attention precision (f32 for float blobs), so a
    // forced `--attention` measures only the model under test.
    let ref_opts = EngineOptions { attention: AttentionPrecision::Auto, ..opts.clone() };
    let mut ref_engine = reference.map(|r| engine::create(r, backend, &ref_opts)).transpose()?;
    if let Some(r) = reference {
        if r.config().num_classes != n || r.preprocess() != model.preprocess() {
            return Err(EvalError::Input("the reference model has other classes or preprocessing".into()));
        }
    }
    let mut input = vec![0f32; model.config().input_len()];
    let (mut logits, mut ref_logits) = (vec![0f32; n], vec![0f32; n]);
    let bar = if progress { indicatif::ProgressBar::new(images.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}")
            .expect("static template"),
    );
    let (mut top1, mut top5, mut agree, mut labelled, mut ref_top1) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut cos_sum, mut cos_min) = (0f64, f64::INFINITY);
    let mut ms = 0f64;
    for path in images {
        let (rgb, w, h) = crate::preprocess::load_rgb8(path)?;
        crate::preprocess::preprocess_rgb8(&rgb, w, h, model.preprocess(), &mut input)?;
        let t = std::time::Instant::now();
        engine.infer(&input, &mut logits)?;
        ms += t.elapsed().as_secs_f64() * 1e3;
        if let Some(label) = label_from_file_name(model, path) {
            labelled += 1;
            let top = top_k(&logits, 5);
            top1 += (top[0] == label) as usize;
            top5 += top.contains(&label) as usize;
        } else {
            log::warn!("{}: file name does not start with a known label id; not counted for accuracy", path.display());
        }
        if let Some(re) = ref_engine.as_mut() {
            re.infer(&input, &mut ref_logits)?;
            agree += (argmax(&logits) == argmax(&ref_logits)) as usize;
            if let Some(label) = label_from_file_name(model, path) {
                ref_top1 += (argmax(&ref_logits) == label) as usize;
            }
            let c = cosine(&logits, &ref_logits);
            cos_sum += c;
            cos_min = cos_min.min(c);
        }
        bar.inc(1);
        if labelled > 0 {
            bar.set_message(format!("top-1 {:.1}%", 100.0 * top1 as f64 / labelled as f64));
        }
    }
    bar.finish_and_clear();
    let count = images.len() as f64;
    let frac = |x: usize| if labelled == 0 { 0.0 } else { x as f64 / labelled as f64 };
    Ok(EvalResult {
        images: images.len(),
        top1: frac(top1),
        top5: frac(top5),
        agreement: reference.map(|_| agree as f64 / count),
        cosine_mean: reference.map(|_| cos_sum / count),
        cosine_min: reference.map(|_| cos_min),
        reference_top1: reference.map(|_| frac(ref_top1)),
        ms_mean: ms / count,
    })
}
