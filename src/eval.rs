//! Accuracy evaluation over labelled images — torchvision `ImageFolder` trees (`DIR/CLASS/IMAGE`)
//! or flat folders of ImageNet-style file names starting with the synset id — optionally against a
//! reference model, overall and per class.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::classify::{argmax, cosine, top_k};
use crate::engine::{self, AttentionPrecision, Backend, EngineOptions};
use crate::model::Model;
use crate::preprocess::{DecodeLimits, Preprocessor};

/// Accuracy and agreement figures (fractions in 0..1).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct EvalResult {
    /// Images evaluated.
    pub images: usize,
    /// Images with a known label (the accuracy denominators).
    pub labelled: usize,
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
    /// Accuracy per class with labelled images, by logit index.
    pub per_class: Vec<ClassResult>,
}

/// Accuracy on the images of one class.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClassResult {
    /// Logit index.
    pub index: usize,
    /// Label (or the index when the model has none).
    pub label: String,
    /// Images of this class.
    pub images: usize,
    /// Top-1 accuracy on them.
    pub top1: f64,
    /// Top-5 accuracy on them.
    pub top5: f64,
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

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Extensions torchvision's `ImageFolder` accepts that vitedge does not decode.
fn is_other_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "ppm" | "bmp" | "pgm" | "tif" | "tiff" | "webp"))
}

/// JPEG/PNG files of a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| EvalError::Input(format!("cannot read image folder {}: {e}", dir.display())))?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file() && is_image(p)).collect();
    v.sort();
    Ok(v)
}

/// The class index of an image whose file name starts with a label id (e.g. `n01440764_tench.JPEG`).
pub fn label_from_file_name(model: &Model, path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    let id = name.split(['_', '.']).next()?;
    model.header().label_ids.iter().position(|x| x == id)
}

/// One image of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// Its path relative to the dataset folder (`CLASS/IMAGE` or `IMAGE`): its name in reports and
    /// in the blob's list of calibration images.
    pub name: String,
    /// Its class folder (ImageFolder layout).
    pub class_folder: Option<String>,
    /// The model's logit index for its class, when known.
    pub label: Option<usize>,
}

/// How the images of a folder are laid out.
#[derive(Clone, Debug, PartialEq)]
pub enum DatasetLayout {
    /// Images directly in the folder, labelled by an ImageNet synset id at the start of the file name.
    Flat,
    /// torchvision `ImageFolder`: one folder per class, classes in sorted folder-name order.
    ImageFolder {
        /// Class folder names, sorted as torchvision sorts them.
        classes: Vec<String>,
        /// How folders were matched to the model's classes.
        matched_by: String,
    },
}

/// The images of a folder, labelled.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Layout found.
    pub layout: DatasetLayout,
    /// Images, sorted by relative path.
    pub samples: Vec<Sample>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut usize) -> Result<(), EvalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| EvalError::Input(format!("cannot read {}: {e}", dir.display())))?;
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out, skipped)?;
        } else if is_image(&p) {
            out.push(p);
        } else if is_other_image(&p) {
            *skipped += 1;
        }
    }
    Ok(())
}

/// The images of `dir`, unlabelled: an `ImageFolder` tree (`DIR/CLASS/…/IMAGE`, when `dir` has
/// sub-folders holding images) or the JPEG/PNG files directly in `dir`. Returns the layout's class
/// folders (sorted like torchvision: by name) and the images sorted by relative path.
pub fn dataset_images(dir: &Path) -> Result<(Option<Vec<String>>, Vec<Sample>), EvalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| EvalError::Input(format!("cannot read image folder {}: {e}", dir.display())))?;
    let mut classes: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).to_string_lossy().into_owned();
    let mut skipped = 0;
    let mut samples = Vec::new();
    for c in &classes {
        let mut files = Vec::new();
        walk(&dir.join(c), &mut files, &mut skipped)?;
        if files.is_empty() {
            log::warn!("class folder {c} holds no JPEG/PNG image");
        }
        samples.extend(files.into_iter().map(|path| Sample { name: rel(&path), path, class_folder: Some(c.clone()), label: None }));
    }
    if skipped > 0 {
        log::warn!("{skipped} image(s) in formats vitedge does not decode (bmp, tiff, webp, ppm, pgm) skipped; convert them to PNG or JPEG");
    }
    let flat = list_images(dir)?;
    if samples.is_empty() {
        let samples = flat.into_iter().map(|path| Sample { name: rel(&path), path, class_folder: None, label: None }).collect();
        return Ok((None, samples));
    }
    if !flat.is_empty() {
        log::warn!("{}: {} image(s) beside the class folders are not in any class; ignoring them (as torchvision's ImageFolder does)", dir.display(), flat.len());
    }
    samples.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((Some(classes), samples))
}

fn normalized(s: &str) -> String {
    s.trim().to_lowercase().replace(['_', '-'], " ")
}

/// Matches class folders to the model's logits: by label id (e.g. `n01440764`), by label text
/// (case and `_`/`-`/space insensitive, also the first comma-separated name, as in `tench, Tinca
/// tinca`), or — when the model has exactly as many classes as there are folders and names do not
/// say otherwise — by index in sorted order, as torchvision's `ImageFolder` numbers classes for
/// training. Returns the index per folder and how they were matched.
pub fn match_classes(model: &Model, classes: &[String]) -> Result<(Vec<usize>, String), EvalError> {
    let h = model.header();
    let n = model.config().num_classes;
    let by_id: Vec<Option<usize>> = classes.iter().map(|c| h.label_ids.iter().position(|id| id == c)).collect();
    if by_id.iter().all(Option::is_some) {
        return Ok((by_id.into_iter().flatten().collect(), "label ids".into()));
    }
    let by_name: Vec<Option<usize>> = classes
        .iter()
        .map(|c| {
            let c = normalized(c);
            h.labels.iter().position(|l| normalized(l) == c || normalized(l.split(',').next().unwrap_or(l)) == c)
        })
        .collect();
    if by_name.iter().all(Option::is_some) {
        return Ok((by_name.into_iter().flatten().collect(), "label names".into()));
    }
    let matched: Vec<(usize, usize)> = by_name.iter().enumerate().filter_map(|(i, m)| m.map(|m| (i, m))).collect();
    if classes.len() == n && matched.iter().all(|&(i, m)| i == m) {
        if !matched.is_empty() {
            log::warn!("{} of {} class folders match label names; matching all by sorted order", matched.len(), classes.len());
        }
        return Ok(((0..n).collect(), "sorted folder order (torchvision ImageFolder indices)".into()));
    }
    let unmatched: Vec<&str> = classes.iter().zip(&by_name).filter(|(_, m)| m.is_none()).map(|(c, _)| c.as_str()).take(5).collect();
    Err(EvalError::Input(format!(
        "cannot match the {} class folders to the model's {n} classes: {} folder(s) match no label id or name (e.g. {unmatched:?}){}; the model's labels start {:?}. Convert the model with --labels listing its classes in logit order (one per line, named like the folders), or give exactly {n} class folders in training order",
        classes.len(),
        classes.len() - matched.len(),
        if classes.len() != n { format!(", and there are not {n} folders for index order") } else { String::new() },
        h.labels.iter().take(3).collect::<Vec<_>>()
    )))
}

/// The labelled images of `dir` for `model`: an `ImageFolder` tree matched with [`match_classes`],
/// or a flat folder labelled by [`label_from_file_name`].
pub fn open_dataset(dir: &Path, model: &Model) -> Result<Dataset, EvalError> {
    let (classes, mut samples) = dataset_images(dir)?;
    let layout = match classes {
        Some(classes) => {
            let (index, matched_by) = match_classes(model, &classes)?;
            for s in &mut samples {
                s.label = s.class_folder.as_ref().and_then(|c| classes.binary_search(c).ok()).map(|i| index[i]);
            }
            DatasetLayout::ImageFolder { classes, matched_by }
        }
        None => {
            label_by_file_name(model, &mut samples)?;
            DatasetLayout::Flat
        }
    };
    Ok(Dataset { layout, samples })
}

/// Labels flat-folder samples by the synset id starting each file name ([`label_from_file_name`]);
/// an error when the model has no label ids to match.
fn label_by_file_name(model: &Model, samples: &mut [Sample]) -> Result<(), EvalError> {
    if model.header().label_ids.is_empty() {
        return Err(EvalError::Input(
            "flat image folders are labelled by the synset id starting each file name, but the model carries no label ids; convert it with --labels ../shared/imagenet_classes.txt (lines `n01440764 tench`), or arrange the images as DIR/CLASS/IMAGE (torchvision ImageFolder)".into(),
        ));
    }
    for s in samples {
        s.label = label_from_file_name(model, &s.path);
    }
    Ok(())
}

/// Evaluates `model` on flat-folder `images` labelled by their file names (see
/// [`evaluate_samples`]).
pub fn evaluate(
    model: &Model,
    reference: Option<&Model>,
    images: &[PathBuf],
    backend: Backend,
    opts: &EngineOptions,
    progress: bool,
) -> Result<EvalResult, EvalError> {
    let mut samples: Vec<Sample> = images
        .iter()
        .map(|p| Sample {
            name: p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned()),
            path: p.clone(),
            class_folder: None,
            label: None,
        })
        .collect();
    label_by_file_name(model, &mut samples)?;
    evaluate_samples(model, reference, &samples, backend, opts, &DecodeLimits::default(), progress)
}

/// Evaluates `model` on labelled `samples` (unlabelled ones count for agreement only); with
/// `reference`, also agreement and logit cosine. Per-class figures are in [`EvalResult::per_class`].
pub fn evaluate_samples(
    model: &Model,
    reference: Option<&Model>,
    samples: &[Sample],
    backend: Backend,
    opts: &EngineOptions,
    limits: &DecodeLimits,
    progress: bool,
) -> Result<EvalResult, EvalError> {
    if samples.is_empty() {
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
    let mut pre = Preprocessor::new(model.preprocess().clone());
    let mut input = vec![0f32; model.config().input_len()];
    let (mut logits, mut ref_logits) = (vec![0f32; n], vec![0f32; n]);
    let bar = if progress { indicatif::ProgressBar::new(samples.len() as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}")
            .expect("static template"),
    );
    let (mut top1, mut top5, mut agree, mut labelled, mut ref_top1) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut cos_sum, mut cos_min) = (0f64, f64::INFINITY);
    let mut per_class = vec![(0usize, 0usize, 0usize); n];
    let mut unlabelled = 0usize;
    let mut ms = 0f64;
    for sample in samples {
        let (rgb, w, h) = crate::preprocess::load_rgb8_with(&sample.path, limits)?;
        pre.run(&rgb, w, h, &mut input)?;
        let t = std::time::Instant::now();
        engine.infer(&input, &mut logits)?;
        ms += t.elapsed().as_secs_f64() * 1e3;
        if let Some(label) = sample.label {
            labelled += 1;
            let top = top_k(&logits, 5);
            let (hit1, hit5) = (top[0] == label, top.contains(&label));
            top1 += hit1 as usize;
            top5 += hit5 as usize;
            let c = &mut per_class[label];
            *c = (c.0 + 1, c.1 + hit1 as usize, c.2 + hit5 as usize);
        } else {
            unlabelled += 1;
            log::debug!("{}: no known label; not counted for accuracy", sample.name);
        }
        if let Some(re) = ref_engine.as_mut() {
            re.infer(&input, &mut ref_logits)?;
            agree += (argmax(&logits) == argmax(&ref_logits)) as usize;
            if let Some(label) = sample.label {
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
    if unlabelled > 0 {
        log::warn!("{unlabelled} of {} images have no known label (file name without a label id, or an unmatched class); they count for agreement only", samples.len());
    }
    let count = samples.len() as f64;
    let frac = |x: usize| if labelled == 0 { 0.0 } else { x as f64 / labelled as f64 };
    let per_class = per_class
        .into_iter()
        .enumerate()
        .filter(|(_, c)| c.0 > 0)
        .map(|(index, (images, t1, t5))| ClassResult { index, label: model.label(index), images, top1: t1 as f64 / images as f64, top5: t5 as f64 / images as f64 })
        .collect();
    Ok(EvalResult {
        images: samples.len(),
        labelled,
        top1: frac(top1),
        top5: frac(top5),
        agreement: reference.map(|_| agree as f64 / count),
        cosine_mean: reference.map(|_| cos_sum / count),
        cosine_min: reference.map(|_| cos_min),
        reference_top1: reference.map(|_| frac(ref_top1)),
        ms_mean: ms / count,
        per_class,
    })
}
