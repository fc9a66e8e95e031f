//! `vitedge`: classify images and camera frames with a quantized Vision Transformer.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::json;
use vitedge::classify::predictions;
use vitedge::engine::{self, AttentionPrecision, Backend, EngineOptions};
use vitedge::kernels::Kernels;
use vitedge::blob::Verify;
use vitedge::model::Model;

/// Classify images and camera frames with a (quantized) Vision Transformer.
///
/// Models are .vitb blobs made by `vitedge-quant convert`.
#[derive(Parser)]
#[command(version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Engine choice shared by the commands that run the model.
#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// Inference engine: vitedge's own SIMD forward pass, or tract-core.
    #[arg(long, value_enum, default_value = "native")]
    backend: Backend,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Kernel set for the native engine: auto, scalar, or an instruction set (see `vitedge info`).
    #[arg(long, default_value = "auto")]
    kernels: String,
    /// Precision of the attention matmuls (native engine): auto = f32 for float blobs; for int8
    /// blobs bf16 where the CPU has bf16 dot products, else what the kernel set prefers (`vitedge info`).
    #[arg(long, value_enum, default_value = "auto")]
    attention: AttentionPrecision,
    /// Do not check the weights' CRC-32 checksums when opening the model (by default every byte of
    /// the blob is checked before the first result). Unsafe on SD cards and other storage that can
    /// rot: damaged weights would be used without a word. Only for files verified by other means.
    #[arg(long)]
    no_verify: bool,
}

impl EngineArgs {
    fn options(&self) -> EngineOptions {
        EngineOptions { kernels: self.kernels.clone(), threads: self.threads, attention: self.attention }
    }
    fn verify(&self) -> Verify {
        if self.no_verify {
            Verify::SkipChecksums
        } else {
            Verify::Checksums
        }
    }
    fn threads(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        }
    }
}

/// Image decoding limits shared by the commands that read image files.
#[derive(clap::Args, Clone)]
struct DecodeArgs {
    /// Largest image accepted, in pixels (width × height as the file's header declares it, checked
    /// before decoding). The default covers 40-megapixel cameras.
    #[arg(long, default_value_t = vitedge::preprocess::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

impl DecodeArgs {
    fn limits(&self) -> vitedge::preprocess::DecodeLimits {
        vitedge::preprocess::DecodeLimits { max_pixels: self.max_pixels }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Classify JPEG/PNG images (decoded like Pillow, preprocessed as the blob says) or raw input
    /// tensors, and print the top classes.
    Classify {
        /// Model blob (.vitb).
        #[arg(long)]
        model: PathBuf,
        /// Images to classify.
        #[arg(required_unless_present = "tensor")]
        images: Vec<PathBuf>,
        /// A preprocessed input as a float32 .npy file, [1, 3, H, W] or [3, H, W] (C order), used as it
        /// is — no preprocessing — to compare with PyTorch on exactly the same input. Repeatable.
        #[arg(long)]
        tensor: Vec<PathBuf>,
        /// How many classes to print per image.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// One JSON object per image per line: {"image", "top": [{"index", "label", "score"}], "ms"} ("ms": decoding or .npy reading, preprocessing and inference of that input).
        #[arg(long)]
        json: bool,
        /// Also print the raw logits (JSON lines, with "logits": [...] in logit order; implies --json).
        #[arg(long)]
        logits: bool,
        #[command(flatten)]
        decode: DecodeArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Show a blob's header and tensor table (also of a blob with damaged weights); --verify checks
    /// every checksum.
    Inspect {
        /// Model blob (.vitb).
        model: PathBuf,
        /// Read every tensor and check its CRC-32.
        #[arg(long)]
        verify: bool,
        /// Print the header as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Time the forward pass: median and p90 milliseconds per image, and load time.
    Bench {
        /// Model blob (.vitb).
        #[arg(long)]
        model: PathBuf,
        /// Timed iterations (after 3 warm-up runs).
        #[arg(long, default_value_t = 50)]
        iters: usize,
        /// Image to use as input (default: a fixed synthetic input).
        #[arg(long)]
        image: Option<PathBuf>,
        /// One JSON object with median_ms, p90_ms, load_ms, first_result_ms, threads, backend, precision,
        /// blob_bytes, peak_rss_kib (VmHWM), rss_anon_kib / rss_file_kib at the end (null off Linux) and
        /// every timed iteration (times_ms).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Top-1/top-5 accuracy on labelled images — a torchvision ImageFolder tree (DIR/CLASS/IMAGE,
    /// classes matched to the blob's labels by id, by name, or by sorted folder order) or a flat
    /// folder of ImageNet-style names (`n01440764_tench.JPEG`) — and agreement with a reference model.
    Eval {
        /// Model blob (.vitb).
        #[arg(long)]
        model: PathBuf,
        /// Image folder: DIR/CLASS/IMAGE (ImageFolder) or DIR/n01440764_*.JPEG.
        #[arg(long)]
        images: PathBuf,
        /// Also print the accuracy of every class (with --json: "per_class").
        #[arg(long)]
        per_class: bool,
        #[command(flatten)]
        decode: DecodeArgs,
        /// Reference model (e.g. the f32 blob) for agreement and logit cosine.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Skip the images the int8 quantizer calibrated on (recorded in the blob).
        #[arg(long)]
        exclude_calibration: bool,
        /// Evaluate at most this many images.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object: images, top1, top5, agreement, cosine_mean, cosine_min (fractions).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Classify raw camera frames from a file, a pipe (`-`) or a V4L2 camera as a long-running
    /// service: one JSON line per frame on stdout, a summary on stderr at end of input, SIGINT or SIGTERM.
    Stream {
        #[command(flatten)]
        args: vitedge::stream::StreamArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// CPU features seen and kernels chosen.
    Info,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[allow(clippy::too_many_arguments)]
fn classify(model: PathBuf, images: Vec<PathBuf>, tensors: Vec<PathBuf>, top: usize, as_json: bool, with_logits: bool, limits: vitedge::preprocess::DecodeLimits, ea: EngineArgs) -> Result<()> {
    let model = Model::open_with(&model, ea.verify())?;
    let mut engine = engine::create(&model, ea.backend, &ea.options())?;
    let c = model.config().clone();
    let mut pre = vitedge::preprocess::Preprocessor::new(model.preprocess().clone());
    let mut input = vec![0f32; c.input_len()];
    let mut logits = vec![0f32; c.num_classes];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0;
    let inputs = images.iter().map(|p| (p, false)).chain(tensors.iter().map(|p| (p, true)));
    let total = images.len() + tensors.len();
    for (path, is_tensor) in inputs {
        let t = Instant::now();
        let prepared = if is_tensor {
            vitedge::npy::read_input(path, c.in_chans, c.image_size).map(|v| input.copy_from_slice(&v)).map_err(|e| e.to_string())
        } else {
            vitedge::preprocess::load_rgb8_with(path, &limits)
                .and_then(|(rgb, w, h)| pre.run(&rgb, w, h, &mut input))
                .map_err(|e| e.to_string())
        };
        if let Err(e) = prepared {
            eprintln!("error: {e}");
            failures += 1;
            continue;
        }
        engine.infer(&input, &mut logits)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let preds = predictions(&logits, top.min(logits.len()), |i| model.label(i));
        if as_json || with_logits {
            let key = if is_tensor { "tensor" } else { "image" };
            let mut line = json!({key: path.display().to_string(), "top": preds, "ms": (ms * 1000.0).round() / 1000.0});
            if with_logits {
                line["logits"] = json!(logits);
            }
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{} ({ms:.1} ms)", path.display())?;
            for p in &preds {
                writeln!(out, "  {:6.2}%  {} ({})", 100.0 * p.score, p.label, p.index)?;
            }
        }
        out.flush()?;
    }
    if failures > 0 {
        return Err(format!("{failures} of {total} inputs could not be read").into());
    }
    Ok(())
}

fn inspect(path: PathBuf, verify: bool, as_json: bool) -> Result<()> {
    // The header of a blob with damaged weights is still worth showing: checksums come last.
    let model = Model::open_with(&path, Verify::SkipChecksums)?;
    let h = model.header();
    if as_json {
        println!("{}", serde_json::to_string_pretty(h)?);
    } else {
        let c = &h.config;
        println!("{}: vitedge blob v{}, {} bytes", path.display(), h.version, model.blob().file_len());
        println!("  architecture  {} ({} blocks, width {}, {} heads, mlp {}, patch {}, {}x{} input{})",
            c.arch, c.depth, c.embed_dim, c.num_heads, c.mlp_hidden, c.patch_size, c.image_size, c.image_size,
            if c.distilled { ", distilled" } else { "" });
        println!("  precision     {}", h.precision);
        let p = &h.preprocess;
        println!("  preprocess    {}", p.describe());
        println!("  classes       {} ({} labels{})", c.num_classes, h.labels.len(), if h.label_ids.is_empty() { "" } else { " with ids" });
        for (k, v) in &h.source {
            println!("  {k:<13} {v}");
        }
        if let Some(q) = &h.quantization {
            println!("  quantization  {} layers", q.layers.len());
            for l in &q.layers {
                println!("    {:<22} weights {:<5} activations {:<18} sqnr {:6.1} dB", l.name, l.weights, l.activations, l.sqnr_db);
            }
        }
        println!("  {:<28} {:<4} {:<14} {:<10} {:>10} {:>9}", "tensor", "type", "shape", "layout", "bytes", "crc32");
        for t in &h.tensors {
            println!("  {:<28} {:<4} {:<14} {:<10} {:>10} {:08x}",
                t.name, format!("{:?}", t.dtype).to_lowercase(), format!("{:?}", t.shape), format!("{:?}", t.layout), t.length, t.crc32);
        }
    }
    if verify {
        let bytes = model.blob().verify()?;
        eprintln!("verified: {} tensors, {bytes} bytes, all checksums match", h.tensors.len());
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Memory figures of this process in KiB from `/proc/self/status`, for the given keys (`VmHWM` = peak
/// resident set, `RssAnon`, `RssFile`); each `None` where that file (non-Linux) or line is missing.
fn proc_status_kib<const N: usize>(keys: [&str; N]) -> [Option<u64>; N] {
    let status = if cfg!(target_os = "linux") { std::fs::read_to_string("/proc/self/status").unwrap_or_default() } else { String::new() };
    keys.map(|key| {
        let rest = status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

fn bench(path: PathBuf, iters: usize, image: Option<PathBuf>, as_json: bool, ea: EngineArgs) -> Result<()> {
    let t0 = Instant::now();
    let model = Model::open_with(&path, ea.verify())?;
    let mut engine = engine::create(&model, ea.backend, &ea.options())?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let c = model.config().clone();
    let mut input = vec![0f32; c.input_len()];
    match &image {
        Some(p) => vitedge::preprocess::preprocess_file(p, model.preprocess(), &mut input)?,
        None => {
            let mut rng = vitedge::model::synthetic::Rng::new(42);
            input.iter_mut().for_each(|v| *v = rng.normal());
        }
    }
    let mut logits = vec![0f32; c.num_classes];
    let t1 = Instant::now();
    engine.infer(&input, &mut logits)?;
    let first_ms = t1.elapsed().as_secs_f64() * 1e3;
    for _ in 0..3 {
        engine.infer(&input, &mut logits)?;
    }
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        engine.infer(&input, &mut logits)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let [peak_rss, rss_anon, rss_file] = proc_status_kib(["VmHWM", "RssAnon", "RssFile"]);
    let blob_bytes = model.blob().file_len();
    let in_order = times.clone();
    times.sort_by(f64::total_cmp);
    let (median, p90) = (percentile(&times, 0.5), percentile(&times, 0.9));
    let gflops = 2.0 * c.macs() as f64 / (median * 1e6);
    if as_json {
        let j = json!({
            "model": path.display().to_string(), "backend": engine.backend(), "kernels": engine.describe(),
            "precision": model.header().precision, "threads": ea.threads(), "iters": times.len(),
            "median_ms": median, "p90_ms": p90, "min_ms": times[0], "load_ms": load_ms,
            "first_result_ms": load_ms + first_ms, "gflops": gflops,
            "blob_bytes": blob_bytes, "peak_rss_kib": peak_rss, "rss_anon_kib": rss_anon, "rss_file_kib": rss_file,
            "times_ms": in_order,
        });
        println!("{j}");
    } else {
        println!("{} [{} backend, {}, {} threads, {}]", path.display(), engine.backend(), model.header().precision, ea.threads(), engine.describe());
        println!("  load {load_ms:.2} ms, first result {:.2} ms after open", load_ms + first_ms);
        println!("  {} iterations: median {median:.3} ms, p90 {p90:.3} ms ({gflops:.1} GFLOP/s)", times.len());
        let mib = |kib: Option<u64>| kib.map_or_else(|| "unknown".to_string(), |k| format!("{:.2} MiB", k as f64 / 1024.0));
        println!("  blob {:.2} MiB ({blob_bytes} bytes), peak RSS {} (now {} anonymous, {} file-backed)",
            blob_bytes as f64 / (1024.0 * 1024.0), mib(peak_rss), mib(rss_anon), mib(rss_file));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval(model: PathBuf, images: PathBuf, per_class: bool, limits: vitedge::preprocess::DecodeLimits, reference: Option<PathBuf>, exclude_calibration: bool, limit: Option<usize>, as_json: bool, ea: EngineArgs) -> Result<()> {
    let m = Model::open_with(&model, ea.verify())?;
    let r = reference.as_ref().map(|p| Model::open_with(p, ea.verify())).transpose()?;
    let mut data = vitedge::eval::open_dataset(&images, &m)?;
    if let vitedge::eval::DatasetLayout::ImageFolder { classes, matched_by } = &data.layout {
        eprintln!("{}: ImageFolder with {} classes, matched to the model's labels by {matched_by}", images.display(), classes.len());
    }
    if exclude_calibration {
        let calib: Vec<String> = m.header().quantization.as_ref().map(|q| q.calibration_images.clone()).unwrap_or_default();
        data.samples.retain(|s| !calib.iter().any(|c| *c == s.name));
    }
    if let Some(l) = limit {
        data.samples.truncate(l);
    }
    let res = vitedge::eval::evaluate_samples(&m, r.as_ref(), &data.samples, ea.backend, &ea.options(), &limits, !as_json)?;
    if as_json {
        let mut j = serde_json::to_value(&res)?;
        if !per_class {
            j.as_object_mut().map(|o| o.remove("per_class"));
        }
        println!("{j}");
    } else {
        println!("{}: {} images ({} labelled), top-1 {:.2}%, top-5 {:.2}%, {:.2} ms/image", model.display(), res.images, res.labelled, 100.0 * res.top1, 100.0 * res.top5, res.ms_mean);
        if let (Some(a), Some(cm), Some(cmin)) = (res.agreement, res.cosine_mean, res.cosine_min) {
            println!("  vs reference: top-1 agreement {:.2}%, logit cosine mean {cm:.6}, min {cmin:.6}", 100.0 * a);
        }
        if per_class {
            println!("  {:>5}  {:<32} {:>6} {:>8} {:>8}", "index", "class", "images", "top-1", "top-5");
            for c in &res.per_class {
                println!("  {:>5}  {:<32} {:>6} {:>7.2}% {:>7.2}%", c.index, c.label, c.images, 100.0 * c.top1, 100.0 * c.top5);
            }
        }
    }
    Ok(())
}

fn info() -> Result<()> {
    println!("vitedge {} ({})", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH);
    println!("cores: {}", std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("tract backend: {}", if cfg!(feature = "tract") { "built in" } else { "not built (feature `tract` off)" });
    let feats: Vec<String> = Kernels::cpu_features().into_iter().map(|(n, on)| format!("{n}{}", if on { "+" } else { "-" })).collect();
    println!("cpu features: {}", feats.join(" "));
    println!("kernel sets available: {}", Kernels::available().join(", "));
    println!("auto choice: {:?}", Kernels::auto());
    #[cfg(target_arch = "aarch64")]
    println!("core: {}; kernels chosen: {}", vitedge::kernels::cpuinfo::describe_this_machine(), Kernels::auto().gemm_u8i8.name());
    Ok(())
}

fn main() -> ExitCode {
    // SAFETY: called first thing in main, before any thread exists; restores the default SIGPIPE
    // action so that `vitedge … | head` ends quietly like other Unix tools instead of panicking.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = vitedge::blob::install_truncation_guard() {
        log::warn!("cannot install the SIGBUS handler for truncated blobs: {e}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify { model, images, tensor, top, json, logits, decode, engine } => {
            classify(model, images, tensor, top, json, logits, decode.limits(), engine)
        }
        Command::Inspect { model, verify, json } => inspect(model, verify, json),
        Command::Bench { model, iters, image, json, engine } => bench(model, iters, image, json, engine),
        Command::Eval { model, images, per_class, decode, reference, exclude_calibration, limit, json, engine } => {
            eval(model, images, per_class, decode.limits(), reference, exclude_calibration, limit, json, engine)
        }
        Command::Stream { args, engine } => vitedge::stream::run_command(&args, engine.backend, &engine.options(), engine.verify()).map_err(Into::into),
        Command::Info => info(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
