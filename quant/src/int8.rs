//! Calibrated int8 quantization.
//!
//! Scheme (what the runtime computes): weights are symmetric int8 per output channel (clipping
//! chosen per channel by least squared error); activations at the input of every linear layer are
//! asymmetric u8 with a scale and zero point computed per token at run time; LayerNorm, softmax,
//! GELU, residual adds and the attention matmuls stay in f32.
//!
//! Calibration decides, per layer and by measurement on real images:
//! - the SmoothQuant migration strength α (0 = none) for layers whose input scaling can be folded
//!   exactly into the previous operation (qkv and fc1 into their LayerNorm, proj into the value
//!   rows of qkv, the head into the final LayerNorm);
//! - whether the layer stays int8 or keeps f16 weights with float activations, when its int8
//!   output SQNR is below a threshold.
//!
//! Every figure is measured with the runtime's own kernels on the layer's float input captured
//! from the f32 model, so the report shows the error each layer adds on its own.

use std::path::Path;

use serde::Serialize;
use vitedge::blob::{round_up, BlobWriter, Layout};
use vitedge::classify::{argmax, cosine};
use vitedge::engine::native::{layer_names, NativeEngine};
use vitedge::engine::{Engine, EngineOptions};
use vitedge::kernels::{pack, Epilogue, GemmArgs, GemmU8I8Args, Kernels};
use vitedge::model::Model;
use vitedge::quant::{LayerQuant, QuantInfo};

use crate::convert::{float_blob, header, pack_f16, pack_f32, ConvertError, Prepared, Precision};
use crate::checkpoint::FloatTensor;

/// SmoothQuant strengths tried for foldable layers.
pub const ALPHAS: [f32; 4] = [0.0, 0.3, 0.5, 0.7];
/// Layers whose int8 output SQNR (dB) is below this keep f16 weights and float activations.
pub const MIN_INT8_SQNR_DB: f32 = 20.0;
/// Token rows kept per image and layer for the measurements.
const ROWS_PER_IMAGE: usize = 48;

/// Per-layer line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// Layer name.
    pub name: String,
    /// Chosen weight precision.
    pub weights: String,
    /// Chosen activation scheme.
    pub activations: String,
    /// Chosen SmoothQuant α.
    pub smooth_alpha: f32,
    /// Output SQNR (dB) of the chosen scheme vs float, on the calibration set.
    pub sqnr_db: f32,
    /// Output cosine of the chosen scheme vs float.
    pub cosine: f64,
    /// Output SQNR of plain int8 (no smoothing), for comparison.
    pub sqnr_db_plain_int8: f32,
    /// Output SQNR of f16 weights with float activations, for comparison.
    pub sqnr_db_f16: f32,
}

/// Whole-model agreement on the calibration images.
#[derive(Clone, Debug, Serialize, Default)]
pub struct EndToEnd {
    /// Calibration images run.
    pub images: usize,
    /// Top-1 agreement with the f32 model.
    pub agreement: f64,
    /// Mean logit cosine vs f32.
    pub cosine_mean: f64,
    /// Worst logit cosine vs f32.
    pub cosine_min: f64,
}

/// The quantization report (`--report FILE` writes it as JSON).
#[derive(Clone, Debug, Serialize, Default)]
pub struct Report {
    /// Calibration image file names.
    pub calibration_images: Vec<String>,
    /// One line per linear layer, in forward order.
    pub layers: Vec<LayerReport>,
    /// Whole-model figures on the calibration images.
    pub end_to_end: EndToEnd,
}

impl Report {
    /// A fixed-width table for the terminal.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<22} {:>7} {:>11} {:>6} {:>9} {:>10} {:>10} {:>9}\n",
            "layer", "weights", "activations", "alpha", "SQNR dB", "cosine", "plain int8", "f16"
        );
        for l in &self.layers {
            s += &format!(
                "{:<22} {:>7} {:>11} {:>6.2} {:>9.2} {:>10.6} {:>10.2} {:>9.2}\n",
                l.name,
                l.weights,
                if l.activations == "float" { "float" } else { "u8/token" },
                l.smooth_alpha,
                l.sqnr_db,
                l.cosine,
                l.sqnr_db_plain_int8,
                l.sqnr_db_f16
            );
        }
        let e = &self.end_to_end;
        s += &format!(
            "end to end on {} calibration images: top-1 agreement {:.2}%, logit cosine mean {:.6}, min {:.6}",
            e.images,
            100.0 * e.agreement,
            e.cosine_mean,
            e.cosine_min
        );
        s
    }
}

/// An int8 blob and its report.
pub struct Quantized {
    /// The blob, ready to write.
    pub writer: BlobWriter,
    /// What calibration measured and chose.
    pub report: Report,
}

/// Symmetric per-row int8 quantization of a row-major `[n, k]` matrix with a per-row clipping
/// ratio chosen from a small grid by least squared error. Returns `(q, scales)`.
pub fn quantize_weights(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0f32; n];
    for j in 0..n {
        let row = &w[j * k..(j + 1) * k];
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            scales[j] = 1.0;
            continue;
        }
        let mut best = (f64::INFINITY, 1.0f32);
        for ratio in [1.0f32, 0.97, 0.94, 0.91, 0.88, 0.85, 0.8, 0.75] {
            let s = amax * ratio / 127.0;
            let err: f64 = row
                .iter()
                .map(|&v| {
                    let d = v - (v / s).round().clamp(-127.0, 127.0) * s;
                    (d * d) as f64
                })
                .sum();
            if err < best.0 {
                best = (err, s);
            }
        }
        let s = best.1;
        scales[j] = s;
        for (o, &v) in q[j * k..(j + 1) * k].iter_mut().zip(row) {
            *o = (v / s).round().clamp(-127.0, 127.0) as i8;
        }
    }
    (q, scales)
}

fn sqnr_db(reference: &[f32], test: &[f32]) -> f32 {
    let (mut sig, mut noise) = (0f64, 0f64);
    for (&r, &t) in reference.iter().zip(test) {
        sig += r as f64 * r as f64;
        noise += (r as f64 - t as f64).powi(2);
    }
    if noise == 0.0 {
        return 200.0;
    }
    (10.0 * (sig / noise).log10()) as f32
}

/// Where a layer's input scaling can be folded.
#[derive(Clone, Copy, PartialEq)]
enum Fold {
    /// Into the LayerNorm with this prefix.
    Norm,
    /// Into the value rows of the same block's qkv.
    Value,
    /// Not foldable.
    None,
}

fn fold_kind(name: &str) -> Fold {
    // The head is not smoothed: with a distillation head both heads share the final norm.
    if name.ends_with("attn.qkv") || name.ends_with("mlp.fc1") {
        Fold::Norm
    } else if name.ends_with("attn.proj") {
        Fold::Value
    } else {
        Fold::None
    }
}

/// Per-input-channel smoothing factors `s_c = amax_x(c)^α / amax_w(c)^(1-α)`.
fn smoothing(act_amax: &[f32], w: &[f32], n: usize, k: usize, alpha: f32) -> Vec<f32> {
    (0..k)
        .map(|c| {
            if alpha == 0.0 {
                return 1.0;
            }
            let wmax = (0..n).fold(0f32, |m, j| m.max(w[j * k + c].abs())).max(1e-5);
            let xmax = act_amax[c].max(1e-5);
            (xmax.powf(alpha) / wmax.powf(1.0 - alpha)).clamp(1e-3, 1e3)
        })
        .collect()
}

/// Runs the layer on `x` (`rows × k`) with float weights `w` (`[n, k]` row-major) and returns
/// `(float output, int8 output with smoothing s, f16-weight output)`.
fn measure(kern: &Kernels, x: &[f32], rows: usize, w: &[f32], bias: &[f32], n: usize, k: usize, s: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut yf = vec![0f32; rows * n];
    let wp = pack_f32(w, n, k);
    let args = GemmArgs { m: rows, n, k, a: x, lda: k, w: &wp, bias: Some(bias), epilogue: Epilogue::Store };
    kern.gemm_f32.gemm(&args, &mut yf, n);

    let mut yh = vec![0f32; rows * n];
    let wh = pack_f16(w, n, k);
    let args = GemmArgs { m: rows, n, k, a: x, lda: k, w: &wh, bias: Some(bias), epilogue: Epilogue::Store };
    kern.gemm_f16.gemm(&args, &mut yh, n);

    // Smoothed weights W·diag(s), smoothed activations X·diag(1/s).
    let ws: Vec<f32> = (0..n * k).map(|i| w[i] * s[i % k]).collect();
    let (q, scales) = quantize_weights(&ws, n, k);
    let w_sum: Vec<i32> = q.chunks_exact(k).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
    let qp = pack::panel16x4_from_rows(&q, n, k);
    let kp = round_up(k, 4);
    let mut a = vec![0u8; rows * kp];
    let (mut a_scale, mut a_zero) = (vec![0f32; rows], vec![0i32; rows]);
    let mut xs = vec![0f32; k];
    for i in 0..rows {
        for c in 0..k {
            xs[c] = x[i * k + c] / s[c];
        }
        let (sc, z) = kern.vector.quantize_u8(&xs, &mut a[i * kp..i * kp + k]);
        a_scale[i] = sc;
        a_zero[i] = z;
    }
    let mut yq = vec![0f32; rows * n];
    let args = GemmU8I8Args {
        m: rows,
        n,
        k,
        a: &a,
        lda: kp,
        a_scale: &a_scale,
        a_zero: &a_zero,
        w: &qp,
        w_scale: &scales,
        w_sum: &w_sum,
        bias: Some(bias),
        epilogue: Epilogue::Store,
    };
    kern.gemm_u8i8.gemm(&args, &mut yq, n);
    (yf, yq, yh)
}

struct Capture {
    /// Sampled input rows per layer.
    rows: Vec<Vec<f32>>,
    /// Per-channel max |x| per layer over all rows.
    amax: Vec<Vec<f32>>,
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vitedge-quant-{}-{tag}.vitb", std::process::id()))
}

fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{what:<12} {{bar:40}} {{pos}}/{{len}} {{msg}}")).expect("static template"),
    );
    bar
}

/// Calibrates on up to `count` images of `dir` (evenly spaced in name order) and builds an int8 blob.
pub fn quantize(p: &Prepared, dir: &Path, count: usize) -> Result<Quantized, ConvertError> {
    // A flat folder or a torchvision ImageFolder tree (DIR/CLASS/IMAGE); sorted by relative path, so
    // evenly spaced picks spread over the classes.
    let (_, all) = vitedge::eval::dataset_images(dir).map_err(|e| ConvertError::Input(e.to_string()))?;
    if all.is_empty() || count == 0 {
        return Err(ConvertError::Input(format!("no JPEG/PNG calibration images in {} (a folder of images, or DIR/CLASS/IMAGE)", dir.display())));
    }
    let count = count.min(all.len());
    let chosen: Vec<&vitedge::eval::Sample> = (0..count).map(|i| &all[i * all.len() / count]).collect();
    let names: Vec<String> = chosen.iter().map(|s| s.name.clone()).collect();
    let mut inputs = Vec::with_capacity(count);
    for s in &chosen {
        let mut input = vec![0f32; p.config.input_len()];
        vitedge::preprocess::preprocess_file(&s.path, &p.preprocess, &mut input).map_err(|e| ConvertError::Input(e.to_string()))?;
        inputs.push(input);
    }

    // 1. Capture every linear layer's float input.
    let f32_path = temp_path("f32");
    crate::convert::write_blob(&float_blob(p, Precision::F32), &f32_path)?;
    let f32_model = Model::open(&f32_path).map_err(|e| ConvertError::Input(e.to_string()))?;
    let _ = std::fs::remove_file(&f32_path); // the map keeps the data alive
    let names_l = layer_names(&p.config);
    let mut cap = Capture { rows: vec![Vec::new(); names_l.len()], amax: vec![Vec::new(); names_l.len()] };
    let mut engine = NativeEngine::new(&f32_model, &EngineOptions::default()).map_err(|e| ConvertError::Input(e.to_string()))?;
    let mut logits = vec![0f32; p.config.num_classes];
    let bar = progress(count, "calibrating");
    for input in &inputs {
        let mut tap = |layer: usize, a: &[f32], m: usize, k: usize, lda: usize| {
            let amax = &mut cap.amax[layer];
            if amax.is_empty() {
                amax.resize(k, 0.0);
            }
            let step = (m / ROWS_PER_IMAGE).max(1);
            for i in 0..m {
                let row = &a[i * lda..i * lda + k];
                for (mx, v) in amax.iter_mut().zip(row) {
                    *mx = mx.max(v.abs());
                }
                if i % step == 0 {
                    cap.rows[layer].extend_from_slice(row);
                }
            }
        };
        engine.infer_tapped(input, &mut logits, &mut tap).map_err(|e| ConvertError::Input(e.to_string()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(engine);

    // 2. Per layer: measure plain int8, smoothed int8 and f16; choose.
    let kern = Kernels::auto();
    let mut tensors = p.tensors.clone();
    let mut layers = Vec::new();
    let mut reports = Vec::new();
    let bar = progress(names_l.len(), "measuring");
    for (li, name) in names_l.iter().enumerate() {
        let wt = &p.tensors[&format!("{name}.weight")];
        let (n, k) = (wt.shape[0], wt.shape[1]);
        let bias = &p.tensors[&format!("{name}.bias")].data;
        let x = &cap.rows[li];
        let rows = x.len() / k;
        let fold = fold_kind(name);
        let alphas: &[f32] = if fold == Fold::None { &ALPHAS[..1] } else { &ALPHAS };
        let mut best: Option<(f32, f32, f64, Vec<f32>)> = None; // (alpha, sqnr, cos, s)
        let (mut plain, mut f16_sqnr) = (0f32, 0f32);
        for &alpha in alphas {
            let s = smoothing(&cap.amax[li], &wt.data, n, k, alpha);
            let (yf, yq, yh) = measure(&kern, x, rows, &wt.data, bias, n, k, &s);
            let sq = sqnr_db(&yf, &yq);
            if alpha == 0.0 {
                plain = sq;
                f16_sqnr = sqnr_db(&yf, &yh);
            }
            if best.as_ref().is_none_or(|b| sq > b.1) {
                best = Some((alpha, sq, cosine(&yf, &yq), s));
            }
        }
        let (alpha, sq, cos, s) = best.expect("at least one alpha");
        let int8 = sq >= MIN_INT8_SQNR_DB;
        if int8 && alpha > 0.0 {
            apply_smoothing(&mut tensors, name, fold, &s, p.config.embed_dim);
        }
        layers.push(LayerQuant {
            name: name.clone(),
            weights: if int8 { "int8" } else { "f16" }.into(),
            activations: if int8 { "dynamic_per_token_u8" } else { "float" }.into(),
            sqnr_db: if int8 { sq } else { f16_sqnr },
            smooth_alpha: if int8 { alpha } else { 0.0 },
        });
        reports.push(LayerReport {
            name: name.clone(),
            weights: if int8 { "int8" } else { "f16" }.into(),
            activations: if int8 { "dynamic_per_token_u8" } else { "float" }.into(),
            smooth_alpha: if int8 { alpha } else { 0.0 },
            sqnr_db: if int8 { sq } else { f16_sqnr },
            cosine: if int8 { cos } else { f64::NAN },
            sqnr_db_plain_int8: plain,
            sqnr_db_f16: f16_sqnr,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();

    // 3. Write the blob.
    let mut h = header(p, Precision::Int8);
    h.quantization = Some(QuantInfo { layers: layers.clone(), calibration_images: names.clone() });
    let mut w = BlobWriter::new(h);
    for (tname, shape) in p.config.blob_tensor_shapes() {
        let t = &tensors[&tname];
        let layer = tname.strip_suffix(".weight").and_then(|l| layers.iter().find(|q| q.name == l));
        match layer {
            Some(q) if shape.len() == 2 => {
                let (n, k) = (shape[0], shape[1]);
                if q.weights == "int8" {
                    let (qw, scales) = quantize_weights(&t.data, n, k);
                    w.add_i8(&tname, &shape, Layout::Panel16x4, &pack::panel16x4_from_rows(&qw, n, k));
                    w.add_f32(&format!("{tname}_scale"), &[n], Layout::RowMajor, &scales);
                } else {
                    w.add_f16(&tname, &shape, Layout::Panel16, &pack_f16(&t.data, n, k));
                }
            }
            _ => w.add_f32(&tname, &shape, Layout::RowMajor, &t.data),
        }
    }

    // 4. End-to-end check on the calibration images.
    let q_path = temp_path("int8");
    crate::convert::write_blob(&w, &q_path)?;
    let q_model = Model::open(&q_path).map_err(|e| ConvertError::Input(e.to_string()))?;
    let _ = std::fs::remove_file(&q_path);
    let mut fe = NativeEngine::new(&f32_model, &EngineOptions::default()).map_err(|e| ConvertError::Input(e.to_string()))?;
    let mut qe = NativeEngine::new(&q_model, &EngineOptions::default()).map_err(|e| ConvertError::Input(e.to_string()))?;
    let mut ql = vec![0f32; p.config.num_classes];
    let mut e2e = EndToEnd { images: inputs.len(), cosine_min: f64::INFINITY, ..Default::default() };
    for input in &inputs {
        fe.infer(input, &mut logits).map_err(|e| ConvertError::Input(e.to_string()))?;
        qe.infer(input, &mut ql).map_err(|e| ConvertError::Input(e.to_string()))?;
        let c = cosine(&logits, &ql);
        e2e.cosine_mean += c / inputs.len() as f64;
        e2e.cosine_min = e2e.cosine_min.min(c);
        e2e.agreement += (argmax(&logits) == argmax(&ql)) as usize as f64 / inputs.len() as f64;
    }
    Ok(Quantized { writer: w, report: Report { calibration_images: names, layers: reports, end_to_end: e2e } })
}

/// Folds input smoothing `s` of layer `name` into the preceding operation and the layer's weights:
/// the layer sees `x / s` and uses `W · diag(s)`, so the float function is unchanged.
fn apply_smoothing(t: &mut std::collections::BTreeMap<String, FloatTensor>, name: &str, fold: Fold, s: &[f32], d: usize) {
    let w = t.get_mut(&format!("{name}.weight")).expect("layer weight");
    let k = w.shape[1];
    for (i, v) in w.data.iter_mut().enumerate() {
        *v *= s[i % k];
    }
    match fold {
        Fold::Norm => {
            let norm = match name.strip_suffix(".attn.qkv") {
                Some(block) => format!("{block}.norm1"),
                None => format!("{}.norm2", name.strip_suffix(".mlp.fc1").expect("qkv or fc1")),
            };
            for part in ["weight", "bias"] {
                let v = t.get_mut(&format!("{norm}.{part}")).expect("norm tensor");
                for (x, si) in v.data.iter_mut().zip(s) {
                    *x /= si;
                }
            }
        }
        Fold::Value => {
            let block = name.strip_suffix(".attn.proj").expect("proj layer");
            let qkv_w = t.get_mut(&format!("{block}.attn.qkv.weight")).expect("qkv weight");
            let kq = qkv_w.shape[1];
            for (c, si) in s.iter().enumerate() {
                for v in &mut qkv_w.data[(2 * d + c) * kq..(2 * d + c + 1) * kq] {
                    *v /= si;
                }
            }
            let qkv_b = t.get_mut(&format!("{block}.attn.qkv.bias")).expect("qkv bias");
            for (c, si) in s.iter().enumerate() {
                qkv_b.data[2 * d + c] /= si;
            }
        }
        Fold::None => unreachable!("only foldable layers are smoothed"),
    }
}
