//! `vitedge stream`: classify raw camera frames (file, pipe or V4L2 camera) as a long-running service.
//!
//! A reader thread fills a fixed [`ring::FrameRing`] (preallocated buffers, at most two queued
//! frames); the calling thread takes the newest frame, runs the fused [`pixel::FramePreprocessor`]
//! and the engine, and prints one line per frame, flushed. Nothing is allocated per frame after the
//! first (except MJPEG decoding in the reader). On end of input, SIGINT or SIGTERM a summary goes
//! to stderr.

pub mod pixel;
#[cfg(target_arch = "x86_64")]
mod pixel_avx2;
#[cfg(target_arch = "x86_64")]
mod pixel_avx512;
#[cfg(target_arch = "aarch64")]
mod pixel_neon;
pub mod ring;
pub mod signal;
pub mod source;
pub mod v4l2;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::blob::Verify;
use crate::engine::{self, Backend, Engine, EngineError, EngineOptions};
use crate::model::{Model, ModelError};
pub use pixel::{frame_size, row_bytes, ColorMatrix, ColorRange, ColorSpec, FramePreprocessor, PixelFormat};
pub use ring::DropPolicy;
use ring::{Discard, FrameMeta, FrameRing, Taken};
use source::{FrameSource, RawReader, ReadOutcome};

/// Errors of the stream command.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Bad or missing arguments.
    #[error("{0}")]
    Usage(String),
    /// A frame buffer does not match the declared geometry.
    #[error("frame has {found} bytes, but a {width}x{height} {format} frame has {expected}: check --size and --pixel-format")]
    FrameSize {
        /// Bytes a frame must have.
        expected: usize,
        /// Bytes it has.
        found: usize,
        /// Declared format.
        format: PixelFormat,
        /// Declared width.
        width: usize,
        /// Declared height.
        height: usize,
    },
    /// Reading input or writing results failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The camera refused something.
    #[error("camera: {0}")]
    Device(String),
    /// The camera went away mid-stream (unplugged, driver reset).
    #[error("camera disappeared: {0}")]
    DeviceGone(String),
    /// The model blob is unusable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A frame size `WIDTHxHEIGHT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSize {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl std::str::FromStr for FrameSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a frame size: use WIDTHxHEIGHT, e.g. 640x480");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height) = (w.trim().parse::<usize>().map_err(|_| bad())?, h.trim().parse::<usize>().map_err(|_| bad())?);
        if width == 0 || height == 0 || width > pixel::MAX_FRAME_SIDE || height > pixel::MAX_FRAME_SIDE {
            return Err(format!("frame size {width}x{height} is out of range (1..={} per side)", pixel::MAX_FRAME_SIDE));
        }
        Ok(FrameSize { width, height })
    }
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per frame per line.
    Json,
    /// One human-readable line per frame.
    Text,
}

/// Command-line arguments of `vitedge stream`.
#[derive(clap::Args, Clone, Debug)]
pub struct StreamArgs {
    /// Model blob (.vitb).
    #[arg(long)]
    pub model: PathBuf,
    /// Where frames come from: a file of raw frames, `-` for stdin (e.g. from
    /// `ffmpeg … -f rawvideo -pix_fmt nv12 -`), or a V4L2 camera such as /dev/video0.
    #[arg(long)]
    pub input: String,
    /// Pixel layout of the raw frames. Required for files and pipes; for a camera, the format to
    /// ask for (default: the first the camera offers of yuyv, nv12, i420, uyvy, rgb24, bgr24, else MJPEG).
    #[arg(long, value_enum)]
    pub pixel_format: Option<PixelFormat>,
    /// Frame size WIDTHxHEIGHT. Required for files and pipes; for a camera, the size to ask for
    /// (default 640x480; the driver may pick the nearest it supports).
    #[arg(long)]
    pub size: Option<FrameSize>,
    /// Classify every Nth frame and pass over the others.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
    /// How many classes to print per frame.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: u64,
    /// `json`: {"frame", "timestamp", "top": [{"index", "label", "score"}], "ms", "latency_ms"} per
    /// line; `text`: one readable line per frame.
    #[arg(long, value_enum, default_value = "json")]
    pub output: OutputFormat,
    /// When inference is slower than the source: `newest` keeps only the newest frame and counts the
    /// others as dropped, `never` makes the reader wait. Default: never for regular files, newest
    /// for pipes and cameras.
    #[arg(long, value_enum)]
    pub drop: Option<DropPolicy>,
    /// YCbCr matrix of YUV frames.
    #[arg(long, value_enum, default_value = "bt601")]
    pub color_matrix: ColorMatrix,
    /// YCbCr range of YUV frames (`limited` for most cameras and video, `full` for JPEG-derived frames).
    #[arg(long, value_enum, default_value = "limited")]
    pub color_range: ColorRange,
    /// Camera buffers to request (memory-mapped).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(2..=32))]
    pub buffers: u64,
}

/// Settings of one [`run`].
#[derive(Clone, Copy, Debug)]
pub struct StreamSettings {
    /// Classes per frame.
    pub top: usize,
    /// Line format.
    pub output: OutputFormat,
    /// Drop policy.
    pub drop: DropPolicy,
    /// Classify every Nth frame.
    pub every: u64,
    /// Colour conversion of YUV frames.
    pub color: ColorSpec,
}

/// What the stream did, printed on stderr at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Complete frames read from the source.
    pub frames: u64,
    /// Frames classified (one output line each).
    pub classified: u64,
    /// Frames replaced by a newer one before inference (real-time drop), or queued at a stop.
    pub dropped: u64,
    /// Frames passed over by `--every`.
    pub subsampled: u64,
    /// Short or corrupt frames skipped.
    pub skipped: u64,
    /// Wall time of the stream, seconds.
    pub seconds: f64,
    /// Classified frames per second.
    pub fps: f64,
    /// Median preprocessing + inference time, ms (log-bucketed, ±1 %).
    pub p50_ms: f64,
    /// 90th percentile of preprocessing + inference, ms.
    pub p90_ms: f64,
    /// Median capture → result time, ms.
    pub latency_p50_ms: f64,
    /// 90th percentile of capture → result, ms.
    pub latency_p90_ms: f64,
    /// Models swapped in on request (SIGHUP).
    pub reloads: u64,
    /// Reload requests refused (the new blob failed its checks; the previous model kept running).
    pub reload_failures: u64,
    /// Why the stream ended: `eof`, `SIGINT`, `SIGTERM` or `error`.
    pub ended_by: String,
}

/// The end of a [`run`]: the summary, and the error that ended it, if any.
pub struct StreamOutcome {
    /// Counts and timings.
    pub summary: Summary,
    /// The error that ended the stream (results printed before it are kept).
    pub error: Option<StreamError>,
}

/// A latency histogram with fixed log-spaced buckets (2 % apart from 1 µs up), so percentiles need
/// no memory that grows with the stream.
struct Histogram {
    counts: Box<[u32; Histogram::BUCKETS]>,
    total: u64,
}

impl Histogram {
    const BUCKETS: usize = 1200;
    const FIRST_MS: f64 = 0.001;
    const STEP: f64 = 1.02;

    fn new() -> Self {
        Histogram { counts: Box::new([0; Self::BUCKETS]), total: 0 }
    }

    fn record(&mut self, ms: f64) {
        let b = if ms > Self::FIRST_MS { ((ms / Self::FIRST_MS).ln() / Self::STEP.ln()) as usize + 1 } else { 0 };
        let b = b.min(Self::BUCKETS - 1);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    /// Nearest-rank percentile `q` (0..1), as the geometric middle of its bucket.
    fn percentile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c as u64;
            if seen >= rank {
                return if b == 0 { Self::FIRST_MS } else { Self::FIRST_MS * Self::STEP.powf(b as f64 - 0.5) };
            }
        }
        Self::FIRST_MS * Self::STEP.powf(Self::BUCKETS as f64)
    }
}

/// Indices of the `k` largest values into `idx` (largest first, ties keep the lower index first,
/// like [`crate::classify::top_k`]) without allocating (`idx` needs capacity `k + 1`).
pub(crate) fn top_k_into(values: &[f32], k: usize, idx: &mut Vec<usize>) {
    idx.clear();
    for (i, v) in values.iter().enumerate() {
        if idx.len() == k && v.total_cmp(&values[idx[k - 1]]).is_le() {
            continue;
        }
        let mut pos = idx.len();
        while pos > 0 && v.total_cmp(&values[idx[pos - 1]]).is_gt() {
            pos -= 1;
        }
        idx.insert(pos, i);
        idx.truncate(k);
    }
}

/// Writes `s` as a JSON string literal.
fn write_json_str(out: &mut dyn Write, s: &str) -> std::io::Result<()> {
    out.write_all(b"\"")?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        if esc.is_some() || (c as u32) < 0x20 {
            out.write_all(&s.as_bytes()[start..i])?;
            match esc {
                Some(e) => out.write_all(e.as_bytes())?,
                None => write!(out, "\\u{:04x}", c as u32)?,
            }
            start = i + c.len_utf8();
        }
    }
    out.write_all(&s.as_bytes()[start..])?;
    out.write_all(b"\"")
}

/// A finite number as JSON (`null` otherwise).
struct JsonNum(f64, usize);
impl std::fmt::Display for JsonNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_finite() {
            write!(f, "{:.*}", self.1, self.0)
        } else {
            f.write_str("null")
        }
    }
}

/// One frame's result line (no allocation: labels are borrowed from the blob header).
#[allow(clippy::too_many_arguments)]
fn write_result(out: &mut dyn Write, format: OutputFormat, meta: &FrameMeta, probs: &[f32], top: &[usize], labels: &[String], ms: f64, latency_ms: f64) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => {
            write!(out, "{{\"frame\":{},\"timestamp\":{},\"top\":[", meta.index, JsonNum(meta.timestamp, 6))?;
            for (n, &i) in top.iter().enumerate() {
                write!(out, "{}{{\"index\":{i},\"label\":", if n > 0 { "," } else { "" })?;
                match labels.get(i) {
                    Some(l) => write_json_str(out, l)?,
                    None => write!(out, "\"{i}\"")?,
                }
                let p = probs[i];
                if p.is_finite() {
                    write!(out, ",\"score\":{p}}}")?;
                } else {
                    write!(out, ",\"score\":null}}")?;
                }
            }
            writeln!(out, "],\"ms\":{},\"latency_ms\":{}}}", JsonNum(ms, 3), JsonNum(latency_ms, 3))?;
        }
        OutputFormat::Text => {
            write!(out, "frame {}:", meta.index)?;
            for (n, &i) in top.iter().enumerate() {
                let sep = if n > 0 { "," } else { "" };
                match labels.get(i) {
                    Some(l) => write!(out, "{sep} {l} {:.1}%", 100.0 * probs[i])?,
                    None => write!(out, "{sep} {i} {:.1}%", 100.0 * probs[i])?,
                }
            }
            writeln!(out, "  ({ms:.1} ms, {latency_ms:.1} ms after capture)")?;
        }
    }
    out.flush()
}

/// The reader thread: fills ring buffers from `source` until it ends, fails or the ring stops.
fn read_frames(mut source: Box<dyn FrameSource>, ring: Arc<FrameRing>, every: u64) {
    let mut index = 0u64;
    while let Some(mut buf) = ring.acquire() {
        match source.read_frame(&mut buf) {
            Ok(ReadOutcome::Frame { timestamp }) => {
                let i = index;
                index += 1;
                if i % every != 0 {
                    ring.discard(buf, Discard::Subsampled);
                } else if !ring.publish(buf, FrameMeta { index: i, timestamp, arrived: Instant::now() }) {
                    return;
                }
            }
            Ok(ReadOutcome::Skipped) => ring.discard(buf, Discard::Skipped),
            Ok(ReadOutcome::End) => {
                ring.discard(buf, Discard::Unused);
                ring.close(None);
                return;
            }
            Err(e) => {
                ring.discard(buf, Discard::Unused);
                ring.close(Some(e));
                return;
            }
        }
    }
}

/// Where a running stream gets a new model when asked to (SIGHUP in `vitedge stream`).
pub struct Reload<'a> {
    /// Set (by the SIGHUP handler) to ask for a reload; [`run`] clears it when it acts on it.
    pub requested: &'a AtomicBool,
    /// The blob to open again: the `--model` path, replaced by renaming a new file over it.
    pub path: &'a Path,
    /// Engine to build for the new model.
    pub backend: Backend,
    /// Options of that engine.
    pub options: &'a EngineOptions,
    /// Where the one-line reload events go (`vitedge stream event: {…}`; stderr in the CLI).
    pub events: &'a mut dyn Write,
}

/// Prefix of the event lines a stream writes about model reloads.
pub const EVENT_PREFIX: &str = "vitedge stream event: ";

impl Reload<'_> {
    fn event(&mut self, value: serde_json::Value) {
        let line = format!("{EVENT_PREFIX}{value}\n");
        let _ = self.events.write_all(line.as_bytes()).and_then(|()| self.events.flush());
    }

    /// Opens the new blob with every check (checksums included, whatever the first open did), and
    /// builds what the new model needs for this stream, without touching the running model; an
    /// engine is built once and dropped, so that building it again after the swap cannot fail.
    fn prepare(&self, format: PixelFormat, width: usize, height: usize, settings: &StreamSettings) -> Result<(Model, ModelIo), StreamError> {
        let model = Model::open(self.path)?;
        let io = ModelIo::new(&model, format, width, height, settings)?;
        drop(engine::create(&model, self.backend, self.options)?);
        Ok((model, io))
    }
}

/// What depends on the model: the fused preprocessor for the stream's frames and the buffers
/// sized by the model (allocated once per model, reused for every frame).
struct ModelIo {
    pre: FramePreprocessor,
    input: Vec<f32>,
    probs: Vec<f32>,
    top: Vec<usize>,
    k: usize,
}

impl ModelIo {
    fn new(model: &Model, format: PixelFormat, width: usize, height: usize, settings: &StreamSettings) -> Result<Self, StreamError> {
        let pre = FramePreprocessor::new(model.preprocess(), format, width, height, settings.color)?;
        let cfg = model.config();
        let k = settings.top.clamp(1, cfg.num_classes);
        Ok(ModelIo { pre, input: vec![0f32; cfg.input_len()], probs: vec![0f32; cfg.num_classes], top: Vec::with_capacity(k + 1), k })
    }
}

/// The state of a [`run`] that outlives model swaps.
struct Serving<'r> {
    ring: &'r FrameRing,
    settings: &'r StreamSettings,
    summary: Summary,
    ms_hist: Histogram,
    latency_hist: Histogram,
    /// Index of the last frame classified (reload events say after which frame they happened).
    last_frame: Option<u64>,
    error: Option<StreamError>,
    source_done: bool,
}

/// How [`serve`] ended.
enum Step {
    /// End of input, a stop signal, or an error (in [`Serving`]).
    Done,
    /// A reload was requested and the new model passed every check.
    Swap(Model, ModelIo),
}

/// Classifies frames with one model until the stream ends or a reload brings a new model.
/// Reload requests are handled between two frames: no frame is lost or classified twice.
#[allow(clippy::too_many_arguments)]
fn serve(st: &mut Serving<'_>, model: &Model, engine: &mut dyn Engine, io: &mut ModelIo, reload: &mut Option<Reload<'_>>, out: &mut dyn Write, stop: &AtomicBool, geometry: (PixelFormat, usize, usize)) -> Step {
    let labels = &model.header().labels;
    loop {
        if stop.load(Ordering::SeqCst) {
            st.summary.ended_by = signal::received().unwrap_or("stop").into();
            return Step::Done;
        }
        if let Some(r) = reload.as_mut().filter(|r| r.requested.swap(false, Ordering::SeqCst)) {
            let (format, width, height) = geometry;
            match r.prepare(format, width, height, st.settings) {
                Ok((new_model, new_io)) => return Step::Swap(new_model, new_io),
                Err(e) => {
                    st.summary.reload_failures += 1;
                    let ev = serde_json::json!({"event": "model_reload_failed", "model": r.path.display().to_string(), "after_frame": st.last_frame, "error": e.to_string()});
                    r.event(ev);
                    continue;
                }
            }
        }
        match st.ring.take(Duration::from_millis(50)) {
            Taken::Timeout => continue,
            Taken::Closed(e) => {
                st.source_done = true;
                st.summary.ended_by = if e.is_some() { "error".into() } else { "eof".into() };
                st.error = e;
                return Step::Done;
            }
            Taken::Frame(buf, meta) => {
                let t = Instant::now();
                let result = io.pre.run_on(&buf, &mut io.input, engine.workers()).and_then(|()| engine.infer(&io.input, &mut io.probs).map_err(StreamError::from));
                st.ring.release(buf);
                if let Err(e) = result {
                    st.error = Some(e);
                    return Step::Done;
                }
                crate::classify::softmax(&mut io.probs);
                top_k_into(&io.probs, io.k, &mut io.top);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let latency_ms = meta.arrived.elapsed().as_secs_f64() * 1e3;
                if let Err(e) = write_result(out, st.settings.output, &meta, &io.probs, &io.top, labels, ms, latency_ms) {
                    st.error = Some(StreamError::Io { what: "writing results".into(), source: e });
                    return Step::Done;
                }
                st.last_frame = Some(meta.index);
                st.summary.classified += 1;
                st.ms_hist.record(ms);
                st.latency_hist.record(latency_ms);
            }
        }
    }
}

/// Streams frames of `format` at `width × height` from `source` through `engine` (over `model`),
/// writing one line per frame to `out`, until the source ends, fails, or `stop` becomes true.
/// With `reload`, a request swaps in the blob at its path between two frames once it passes every
/// check (a new engine is built for it); a blob that fails is refused with an event and the
/// current model keeps running.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Model,
    engine: &mut dyn Engine,
    mut reload: Option<Reload<'_>>,
    source: Box<dyn FrameSource>,
    format: PixelFormat,
    width: usize,
    height: usize,
    settings: &StreamSettings,
    out: &mut dyn Write,
    stop: &AtomicBool,
) -> StreamOutcome {
    let started = Instant::now();
    let summary = Summary { ended_by: "error".into(), ..Summary::default() };
    let mut io = match ModelIo::new(model, format, width, height, settings) {
        Ok(io) => io,
        Err(e) => return StreamOutcome { summary, error: Some(e) },
    };
    let ring = Arc::new(FrameRing::new(io.pre.frame_len(), settings.drop));
    let reader = {
        let ring = ring.clone();
        let every = settings.every.max(1);
        std::thread::Builder::new().name("vitedge-reader".into()).spawn(move || read_frames(source, ring, every))
    };
    let reader = match reader {
        Ok(r) => r,
        Err(e) => return StreamOutcome { summary, error: Some(StreamError::Io { what: "starting the reader thread".into(), source: e }) },
    };
    let mut st = Serving { ring: &ring, settings, summary, ms_hist: Histogram::new(), latency_hist: Histogram::new(), last_frame: None, error: None, source_done: false };
    let geometry = (format, width, height);
    let mut step = serve(&mut st, model, engine, &mut io, &mut reload, out, stop, geometry);
    // The reloaded model in use; replacing it drops the previous one, whose engine is gone by then.
    let mut current: Option<Model>;
    while let Step::Swap(new_model, new_io) = step {
        current = Some(new_model);
        let m = current.as_ref().expect("just set");
        io = new_io;
        let r = reload.as_mut().expect("swaps only come from a reload");
        match engine::create(m, r.backend, r.options) {
            Ok(mut e) => {
                st.summary.reloads += 1;
                let h = m.header();
                log::info!("model reloaded from {} ({}, {} classes)", r.path.display(), h.precision, h.config.num_classes);
                let ev = serde_json::json!({"event": "model_reloaded", "model": r.path.display().to_string(), "after_frame": st.last_frame, "precision": h.precision, "classes": h.config.num_classes});
                r.event(ev);
                step = serve(&mut st, m, e.as_mut(), &mut io, &mut reload, out, stop, geometry);
            }
            Err(e) => {
                st.error = Some(e.into());
                break;
            }
        }
    }
    ring.stop();
    if st.source_done {
        // The reader has returned (it closed the ring); a reader blocked in read() after a signal or
        // an output error is left behind: the process is about to exit.
        let _ = reader.join();
    }
    let Serving { mut summary, ms_hist, latency_hist, error, .. } = st;
    let counts = ring.counts();
    summary.frames = counts.read;
    summary.dropped = counts.dropped;
    summary.subsampled = counts.subsampled;
    summary.skipped = counts.skipped;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.fps = if summary.seconds > 0.0 { summary.classified as f64 / summary.seconds } else { 0.0 };
    summary.p50_ms = ms_hist.percentile(0.5);
    summary.p90_ms = ms_hist.percentile(0.9);
    summary.latency_p50_ms = latency_hist.percentile(0.5);
    summary.latency_p90_ms = latency_hist.percentile(0.9);
    StreamOutcome { summary, error }
}

/// Where `--input` points.
enum InputKind {
    Camera,
    Stdin,
    Path,
}

fn input_kind(input: &str) -> InputKind {
    use std::os::unix::fs::FileTypeExt;
    if input == "-" {
        InputKind::Stdin
    } else if input.starts_with("/dev/video") || std::fs::metadata(input).is_ok_and(|m| m.file_type().is_char_device()) {
        InputKind::Camera
    } else {
        InputKind::Path
    }
}

fn require_raw_geometry(args: &StreamArgs) -> Result<(PixelFormat, FrameSize), StreamError> {
    let names = PixelFormat::ALL.map(PixelFormat::name).join(", ");
    let format = args.pixel_format.ok_or_else(|| {
        StreamError::Usage(format!("--pixel-format is required for raw frames from a file or pipe (one of {names})"))
    })?;
    let size = args.size.ok_or_else(|| StreamError::Usage("--size WIDTHxHEIGHT is required for raw frames from a file or pipe".into()))?;
    Ok((format, size))
}

/// An opened `--input`: the source, the geometry of its frames and its default drop policy.
struct OpenedSource {
    source: Box<dyn FrameSource>,
    format: PixelFormat,
    width: usize,
    height: usize,
    default_drop: DropPolicy,
}

/// Opens the source `args` describe.
fn open_source(args: &StreamArgs) -> Result<OpenedSource, StreamError> {
    match input_kind(&args.input) {
        InputKind::Camera => {
            let size = args.size.unwrap_or(FrameSize { width: 640, height: 480 });
            let dev = v4l2::V4l2Device::open(&args.input)?;
            let src = v4l2::DeviceSource::start(dev, args.pixel_format, size.width, size.height, args.buffers as usize)?;
            let n = src.negotiated();
            Ok(OpenedSource { source: Box::new(src), format: n.frame_format(), width: n.format.width, height: n.format.height, default_drop: DropPolicy::Newest })
        }
        InputKind::Stdin => {
            let (format, size) = require_raw_geometry(args)?;
            use std::os::fd::AsFd;
            let fd = std::io::stdin().as_fd().try_clone_to_owned().map_err(|e| StreamError::Io { what: "opening stdin".into(), source: e })?;
            let file = std::fs::File::from(fd);
            let regular = file.metadata().is_ok_and(|m| m.is_file());
            let default_drop = if regular { DropPolicy::Never } else { DropPolicy::Newest };
            Ok(OpenedSource { source: Box::new(RawReader::new(file, "stdin")), format, width: size.width, height: size.height, default_drop })
        }
        InputKind::Path => {
            let (format, size) = require_raw_geometry(args)?;
            let file = std::fs::File::open(&args.input).map_err(|e| StreamError::Io { what: format!("opening {}", args.input), source: e })?;
            let meta = file.metadata().map_err(|e| StreamError::Io { what: format!("reading {}", args.input), source: e })?;
            let frame = frame_size(format, size.width, size.height) as u64;
            if meta.is_file() {
                if meta.len() < frame {
                    return Err(StreamError::Usage(format!(
                        "{} holds {} bytes, less than one {}x{} {format} frame ({frame} bytes): check --size and --pixel-format",
                        args.input,
                        meta.len(),
                        size.width,
                        size.height
                    )));
                }
                if meta.len() % frame != 0 {
                    log::warn!(
                        "{} holds {} bytes, not a whole number of {}x{} {format} frames ({frame} bytes each): the last {} bytes will be skipped; check --size and --pixel-format if that is unexpected",
                        args.input,
                        meta.len(),
                        size.width,
                        size.height,
                        meta.len() % frame
                    );
                }
            }
            let default_drop = if meta.is_file() { DropPolicy::Never } else { DropPolicy::Newest };
            Ok(OpenedSource { source: Box::new(RawReader::new(file, args.input.clone())), format, width: size.width, height: size.height, default_drop })
        }
    }
}

/// `vitedge stream`: installs the signal handlers, opens the model (checked as `verify` says), the
/// engine and the source, streams (reloading the model on SIGHUP, always with every check), and
/// prints the summary on stderr. Returns the error that ended the stream, if any (after the
/// summary; the results printed before it stay printed).
pub fn run_command(args: &StreamArgs, backend: Backend, options: &EngineOptions, verify: Verify) -> Result<(), StreamError> {
    let flags = signal::install()?;
    let model = Model::open_with(&args.model, verify)?;
    let mut engine = engine::create(&model, backend, options)?;
    let OpenedSource { source, format, width, height, default_drop } = open_source(args)?;
    let settings = StreamSettings {
        top: args.top as usize,
        output: args.output,
        drop: args.drop.unwrap_or(default_drop),
        every: args.every,
        color: ColorSpec::new(args.color_matrix, args.color_range),
    };
    log::info!("streaming {} as {width}x{height} {format}, drop policy {:?}", source.describe(), settings.drop);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut events = std::io::stderr();
    let reload = Reload { requested: flags.reload, path: &args.model, backend, options, events: &mut events };
    let outcome = run(&model, engine.as_mut(), Some(reload), source, format, width, height, &settings, &mut out, flags.stop);
    let _ = out.flush();
    let s = &outcome.summary;
    let json = serde_json::to_string(s).unwrap_or_default();
    eprintln!("vitedge stream summary: {json}");
    match outcome.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{random_blob, tiny_config, Rng};

    #[test]
    fn top_k_into_matches_classify() {
        let mut rng = Rng::new(3);
        let mut idx = Vec::with_capacity(8);
        for n in [1usize, 5, 10, 1000] {
            let mut v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            if n > 4 {
                v[3] = v[1]; // a tie
            }
            for k in [1, 3, 7].into_iter().filter(|&k| k <= n) {
                top_k_into(&v, k, &mut idx);
                assert_eq!(idx, crate::classify::top_k(&v, k), "n {n} k {k}");
            }
        }
    }

    #[test]
    fn histogram_percentiles_are_within_two_percent() {
        let mut h = Histogram::new();
        for i in 1..=1000 {
            h.record(i as f64 * 0.1);
        }
        let (p50, p90) = (h.percentile(0.5), h.percentile(0.9));
        assert!((p50 / 50.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p90 / 90.0 - 1.0).abs() < 0.02, "{p90}");
        assert_eq!(Histogram::new().percentile(0.5), 0.0);
    }

    #[test]
    fn frame_size_parsing() {
        assert_eq!("640x480".parse::<FrameSize>().unwrap(), FrameSize { width: 640, height: 480 });
        assert!("640".parse::<FrameSize>().unwrap_err().contains("WIDTHxHEIGHT"));
        assert!("0x10".parse::<FrameSize>().is_err());
        assert!("99999x10".parse::<FrameSize>().is_err());
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = Vec::new();
        write_json_str(&mut out, "a \"b\"\\\n\u{1}é").unwrap();
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, "a \"b\"\\\n\u{1}é");
    }

    fn tiny_model(dir: &std::path::Path) -> Model {
        let path = dir.join("tiny.vitb");
        random_blob(&tiny_config(10), 1).write(&path).unwrap();
        Model::open(&path).unwrap()
    }

    #[test]
    fn a_camera_that_disappears_ends_the_stream_with_an_error_after_its_frames() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path());
        let mut engine = engine::create(&model, Backend::Native, &EngineOptions { kernels: "auto".into(), threads: 1, ..Default::default() }).unwrap();
        let (w, h) = (40, 30);
        let frames: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8 * 40; frame_size(PixelFormat::Yuyv, w, h)]).collect();
        let mut dev = v4l2::FakeDevice::new(vec![v4l2::FourCC::of(PixelFormat::Yuyv)], frames);
        dev.disappear = true;
        let src = v4l2::DeviceSource::start(dev, None, w, h, 2).unwrap();
        let settings = StreamSettings { top: 3, output: OutputFormat::Json, drop: DropPolicy::Never, every: 1, color: ColorSpec::default() };
        let mut out = Vec::new();
        let outcome = run(&model, engine.as_mut(), None, Box::new(src), PixelFormat::Yuyv, w, h, &settings, &mut out, &AtomicBool::new(false));
        assert!(matches!(outcome.error, Some(StreamError::DeviceGone(_))), "{:?}", outcome.error.map(|e| e.to_string()));
        let lines: Vec<serde_json::Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 6, "every frame before the camera vanished is printed");
        assert_eq!(lines[5]["frame"], 5);
        assert_eq!(lines[0]["top"].as_array().unwrap().len(), 3);
        let s = &outcome.summary;
        assert_eq!((s.frames, s.classified, s.dropped, s.ended_by.as_str()), (6, 6, 0, "error"));
    }

    #[test]
    fn every_nth_frame_and_short_frames_are_accounted_for() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path());
        let mut engine = engine::create(&model, Backend::Native, &EngineOptions { kernels: "scalar".into(), threads: 1, ..Default::default() }).unwrap();
        let (w, h) = (33, 17);
        let n = frame_size(PixelFormat::I420, w, h);
        let mut data = Vec::new();
        for i in 0..10u8 {
            data.extend(std::iter::repeat_n(i * 20, n));
        }
        data.extend_from_slice(&[1, 2, 3]); // short final frame
        let settings = StreamSettings { top: 2, output: OutputFormat::Text, drop: DropPolicy::Never, every: 3, color: ColorSpec::default() };
        let mut out = Vec::new();
        let src = Box::new(RawReader::new(std::io::Cursor::new(data), "mem"));
        let outcome = run(&model, engine.as_mut(), None, src, PixelFormat::I420, w, h, &settings, &mut out, &AtomicBool::new(false));
        assert!(outcome.error.is_none());
        let text = String::from_utf8(out).unwrap();
        let indices: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(indices, ["frame 0", "frame 3", "frame 6", "frame 9"]);
        let s = outcome.summary;
        assert_eq!((s.frames, s.classified, s.subsampled, s.skipped, s.dropped), (10, 4, 6, 1, 0));
        assert_eq!(s.ended_by, "eof");
    }
}
