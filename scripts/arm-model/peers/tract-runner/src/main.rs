//! tract as a peer of vitedge for the aarch64 cost model: loads an ONNX graph with tract-onnx,
//! optimizes it (tract's own NEON / arm64 assembly matrix kernels on aarch64), runs `--iters K`
//! inferences on one preprocessed input (`.npy`, float32 `[1, 3, H, W]`) and prints the top-5 as
//! one JSON line: `{"engine": "tract", "model": ..., "iters": K, "top": [{"index": i, "score": p}, ...]}`
//! (scores are softmax probabilities of the last run's logits).
//!
//! Usage: tract-runner --model vit.onnx --input input.npy --iters K [--top 5]
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tract_onnx::prelude::*;

/// Command-line options.
struct Options {
    model: PathBuf,
    input: PathBuf,
    iters: usize,
    top: usize,
}

const USAGE: &str = "usage: tract-runner --model MODEL.onnx --input INPUT.npy --iters K [--top N]";

fn parse_args() -> Result<Options, String> {
    let mut model = None;
    let mut input = None;
    let mut iters = 1;
    let mut top = 5;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--input" => input = Some(PathBuf::from(value()?)),
            "--iters" => iters = value()?.parse().map_err(|e| format!("--iters: {e}"))?,
            "--top" => top = value()?.parse().map_err(|e| format!("--top: {e}"))?,
            "-h" | "--help" => return Err(USAGE.to_string()),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    let model = model.ok_or_else(|| format!("--model is required\n{USAGE}"))?;
    let input = input.ok_or_else(|| format!("--input is required\n{USAGE}"))?;
    if iters == 0 || top == 0 {
        return Err("--iters and --top must be at least 1".into());
    }
    Ok(Options { model, input, iters, top })
}

/// Reads a little-endian float32 C-order `.npy` file (numpy's format version 1–3) into a tensor.
fn read_npy(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |why: &str| format!("{}: not a float32 .npy file ({why}); save it with numpy.save", path.display());
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unknown format version")),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if !header.contains("'descr': '<f4'") {
        return Err(bad("dtype is not '<f4'"));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran order"));
    }
    let shape_text = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + header_len..];
    let count: usize = shape.iter().product();
    if data.len() != count * 4 {
        return Err(bad(&format!("{} data bytes for shape {shape:?}", data.len())));
    }
    let values: Vec<f32> = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Tensor::from_shape(&shape, &values).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(opts: &Options) -> TractResult<String> {
    let input = read_npy(&opts.input).map_err(TractError::msg)?;
    let model = tract_onnx::onnx()
        .model_for_path(&opts.model)?
        .with_input_fact(0, f32::fact(input.shape()).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: TValue = input.into_tvalue();
    let mut logits = None;
    for _ in 0..opts.iters {
        let out = model.run(tvec!(input.clone()))?;
        logits = Some(out[0].clone());
    }
    let logits = logits.expect("iters >= 1");
    let logits: Vec<f32> = logits.to_plain_array_view::<f32>()?.iter().copied().collect();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..exp.len()).collect();
    order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]));
    let top: Vec<String> =
        order.iter().take(opts.top).map(|&i| format!("{{\"index\": {i}, \"score\": {:.7}}}", exp[i] / sum)).collect();
    Ok(format!(
        "{{\"engine\": \"tract\", \"model\": {:?}, \"iters\": {}, \"top\": [{}]}}",
        opts.model.display().to_string(),
        opts.iters,
        top.join(", ")
    ))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:?}");
            ExitCode::FAILURE
        }
    }
}
