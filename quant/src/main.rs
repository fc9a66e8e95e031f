//! `vitedge-quant`: converts float ViT checkpoints into vitedge blobs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vitedge::preprocess::{Interpolation, PreprocessConfig};
use vitedge_quant::checkpoint::WeightsChoice;
use vitedge_quant::convert::{self, ConvertOptions, Labels, Precision};

/// Convert float ViT checkpoints (timm / Hugging Face .safetensors, PyTorch .pth, Lightning .ckpt)
/// into vitedge weight blobs (.vitb) in f32, f16 or calibrated int8.
#[derive(Parser)]
#[command(version, about, long_about = None, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a checkpoint into a blob.
    ///
    /// Example: vitedge-quant convert ../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors
    ///          -o models/vit_tiny_f32.vitb --labels ../shared/imagenet_classes.txt
    Convert(ConvertArgs),
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Float checkpoint: .safetensors, .pth/.pt or .ckpt (torch.save zip format).
    checkpoint: PathBuf,
    /// Output blob path (.vitb).
    #[arg(short, long)]
    output: PathBuf,
    /// Precision of the weight matrices.
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Known timm architecture (e.g. vit_tiny_patch16_224, deit_small_distilled_patch16_224);
    /// default: the checkpoint file name's prefix if known, else inferred from tensor shapes.
    #[arg(long)]
    arch: Option<String>,
    /// Attention heads of an unnamed architecture (default: embed_dim / 64, timm's convention).
    #[arg(long)]
    heads: Option<usize>,
    /// Which weights to convert when the checkpoint holds several: `auto` takes the average
    /// (Lightning's StochasticWeightAveraging state, else an EMA copy such as timm's `model_ema` or
    /// `state_dict_ema`) when there is one, else the raw weights.
    #[arg(long, value_enum, default_value = "auto")]
    weights: WeightsChoice,
    /// Labels file, one class per line in logit order (`n01440764 tench` or just `tench`).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Override the center-crop fraction (timm crop_pct).
    #[arg(long)]
    crop_pct: Option<f32>,
    /// Override the normalization mean, as three comma-separated values (e.g. 0.485,0.456,0.406).
    #[arg(long, value_parser = parse_triple)]
    mean: Option<[f32; 3]>,
    /// Override the normalization std, as three comma-separated values.
    #[arg(long, value_parser = parse_triple)]
    std: Option<[f32; 3]>,
    /// Override the resize filter.
    #[arg(long, value_enum)]
    interpolation: Option<InterpolationArg>,
    /// int8: folder of calibration images (JPEG/PNG).
    #[arg(long)]
    calibrate: Option<PathBuf>,
    /// int8: how many calibration images to use (sorted by file name, evenly spaced).
    #[arg(long, default_value_t = 64)]
    calib_count: usize,
    /// int8: write the per-layer error report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InterpolationArg {
    Bicubic,
    Bilinear,
    Nearest,
}

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s.split(',').map(|x| x.trim().parse::<f32>().map_err(|e| format!("`{x}`: {e}"))).collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| "expected three comma-separated numbers".to_string())
}

fn run(args: ConvertArgs) -> Result<(), Box<dyn std::error::Error>> {
    let labels = args.labels.as_deref().map(Labels::read).transpose()?;
    let mut opts = ConvertOptions { arch: args.arch.clone(), heads: args.heads, preprocess: None, labels, weights: args.weights };
    let start = std::time::Instant::now();
    let mut prepared = convert::prepare_file(&args.checkpoint, &opts)?;
    if args.crop_pct.is_some() || args.mean.is_some() || args.std.is_some() || args.interpolation.is_some() {
        let mut p: PreprocessConfig = prepared.preprocess.clone();
        if let Some(c) = args.crop_pct {
            p.crop_pct = c;
        }
        if let Some(m) = args.mean {
            p.mean = m;
        }
        if let Some(s) = args.std {
            p.std = s;
        }
        if let Some(i) = args.interpolation {
            p.interpolation = match i {
                InterpolationArg::Bicubic => Interpolation::Bicubic,
                InterpolationArg::Bilinear => Interpolation::Bilinear,
                InterpolationArg::Nearest => Interpolation::Nearest,
            };
        }
        p.validate()?;
        prepared.preprocess = p.clone();
        opts.preprocess = Some(p);
    }
    let c = &prepared.config;
    log::info!(
        "{}: {} blocks, width {}, {} heads, {} classes, {}x{} input",
        c.arch, c.depth, c.embed_dim, c.num_heads, c.num_classes, c.image_size, c.image_size
    );
    let (writer, report) = convert::build_blob(&prepared, args.precision, args.calibrate.as_deref(), args.calib_count)?;
    if let Some(report) = &report {
        println!("{}", report.table());
        if let Some(path) = &args.report {
            std::fs::write(path, serde_json::to_string_pretty(report)?).map_err(|e| format!("cannot write report {}: {e}", path.display()))?;
        }
    }
    convert::write_blob(&writer, &args.output)?;
    let size = std::fs::metadata(&args.output)?.len();
    log::info!("wrote {} ({:.2} MiB) in {:.1} s", args.output.display(), size as f64 / (1 << 20) as f64, start.elapsed().as_secs_f64());
    eprintln!("wrote {} ({} bytes, {})", args.output.display(), size, args.precision.as_str());
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
