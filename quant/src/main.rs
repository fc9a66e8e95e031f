//! `vitedge-quant`: converts float ViT checkpoints into vitedge blobs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vitedge::preprocess::Interpolation;
use vitedge_quant::checkpoint::WeightsChoice;
use vitedge_quant::convert::{self, ConvertOptions, Labels, Precision, PreprocessOverrides};
use vitedge_quant::{timm_config, transform};

/// Convert float ViT checkpoints (timm / Hugging Face .safetensors, PyTorch .pth, Lightning .ckpt)
/// into vitedge weight blobs (.vitb) in f32, f16, bf16 or calibrated int8.
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
    /// List the timm architectures known by name and the preprocessing of their default pretrained tag.
    Archs,
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
    /// Known timm architecture (e.g. vit_tiny_patch16_224, deit_small_distilled_patch16_224, optionally
    /// with a pretrained tag: vit_base_patch16_224.augreg_in21k); default: config.json's, the checkpoint
    /// file name's prefix if known (NAME_cifar10.ckpt), else the known architecture with these tensor
    /// shapes. `vitedge-quant archs` lists them.
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
    /// The evaluation transform as torchvision prints it, e.g.
    /// "Compose(Resize(size=248, interpolation=bicubic), CenterCrop(size=(224, 224)), ToTensor(),
    /// Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))" — the output of `print(val_transform)`
    /// (torchvision v1/v2, or timm's create_transform). Stored in the blob; `vitedge` applies it exactly.
    #[arg(long, conflicts_with_all = ["transform_file", "config"])]
    transform: Option<String>,
    /// File holding the printed evaluation transform (as --transform).
    #[arg(long, conflicts_with = "config")]
    transform_file: Option<PathBuf>,
    /// timm's config.json (architecture, labels, pretrained_cfg preprocessing); read automatically when
    /// it sits beside a model.safetensors.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the center-crop fraction (timm crop_pct; the resize becomes timm's center rule).
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
    Box,
    Hamming,
    Lanczos,
}

fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s.split(',').map(|x| x.trim().parse::<f32>().map_err(|e| format!("`{x}`: {e}"))).collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| "expected three comma-separated numbers".to_string())
}

fn run(args: ConvertArgs) -> Result<(), Box<dyn std::error::Error>> {
    let labels = args.labels.as_deref().map(Labels::read).transpose()?;
    let transform_text = match (&args.transform, &args.transform_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(f)) => Some(std::fs::read_to_string(f).map_err(|e| format!("cannot read --transform-file {}: {e}", f.display()))?),
        (None, None) => None,
    };
    let preprocess = match transform_text {
        Some(t) => {
            let stated = transform::parse_repr(&t).map_err(|e| format!("--transform: {e}"))?;
            for n in &stated.notes {
                log::warn!("{n}");
            }
            Some(stated.config)
        }
        None => None,
    };
    let timm_config = args.config.as_deref().map(timm_config::read).transpose()?;
    let overrides = PreprocessOverrides {
        crop_pct: args.crop_pct,
        mean: args.mean,
        std: args.std,
        interpolation: args.interpolation.map(|i| match i {
            InterpolationArg::Bicubic => Interpolation::Bicubic,
            InterpolationArg::Bilinear => Interpolation::Bilinear,
            InterpolationArg::Nearest => Interpolation::Nearest,
            InterpolationArg::Box => Interpolation::Box,
            InterpolationArg::Hamming => Interpolation::Hamming,
            InterpolationArg::Lanczos => Interpolation::Lanczos,
        }),
    };
    let opts = ConvertOptions { arch: args.arch.clone(), heads: args.heads, preprocess, timm_config, overrides, labels, weights: args.weights };
    let start = std::time::Instant::now();
    let prepared = convert::prepare_file(&args.checkpoint, &opts)?;
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

fn archs() -> Result<(), Box<dyn std::error::Error>> {
    println!("timm architectures vitedge runs (table from timm {}; any head size):", vitedge_quant::arch::timm_version());
    for a in vitedge_quant::arch::known_archs() {
        let (tag, cfg) = a.pretrained_cfg(None);
        println!("  {:<34} {:>4}x{:<4} width {:<4} depth {:<2} heads {:<2}  {tag}: {}", a.name, a.img_size, a.img_size, a.embed_dim, a.depth, a.num_heads, cfg.preprocess()?.describe());
    }
    println!("not supported (their forward pass differs):");
    for (n, why) in vitedge_quant::arch::excluded_archs() {
        println!("  {n:<34} {why}");
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(args) => run(args),
        Command::Archs => archs(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
