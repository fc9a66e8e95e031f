//! `vitedge stream` end to end, through the real binary: raw frames in every pixel format against
//! `classify` on the JPEGs (real ViT-Tiny), 10,000 frames through a pipe with flat memory and exact
//! frame accounting, SIGTERM / SIGINT, and bad input.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use vitedge::model::synthetic::{random_blob, tiny_config};
use vitedge::stream::{frame_size, PixelFormat};
use vitedge_quant::convert::Precision;

fn vitedge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vitedge"));
    c.env("RUST_LOG", "warn");
    c
}

/// A small random-weight model (32x32 input), so thousands of frames take seconds.
fn tiny_model() -> PathBuf {
    let path = common::scratch().join("stream_tiny.vitb");
    if !path.exists() {
        let tmp = common::scratch().join(format!("stream_tiny.{:?}.tmp", std::thread::current().id()));
        random_blob(&tiny_config(10), 5).write(&tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// RGB → BT.601 limited-range YCbCr in floating point (an independent reference, not the crate's code).
fn ycbcr(p: [f64; 3]) -> [f64; 3] {
    let [r, g, b] = p;
    [
        16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0,
        128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0,
        128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0,
    ]
}

fn q(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Converts an RGB8 image to a raw frame (ffmpeg rawvideo layout; chroma averaged over each 2x1 or
/// 2x2 block, blocks cut short at odd edges).
fn to_frame(rgb: &[u8], w: usize, h: usize, format: PixelFormat) -> Vec<u8> {
    let px = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        [rgb[i] as f64, rgb[i + 1] as f64, rgb[i + 2] as f64]
    };
    // Mean Cb, Cr over columns 2cx..2cx+1 and the given rows.
    let chroma = |cx: usize, rows: &[usize]| {
        let (mut u, mut v, mut n) = (0.0, 0.0, 0.0);
        for &y in rows {
            for x in [2 * cx, 2 * cx + 1] {
                if x < w && y < h {
                    let c = ycbcr(px(x, y));
                    u += c[1];
                    v += c[2];
                    n += 1.0;
                }
            }
        }
        (q(u / n), q(v / n))
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = Vec::with_capacity(frame_size(format, w, h));
    match format {
        PixelFormat::Rgb24 => out.extend_from_slice(rgb),
        PixelFormat::Bgr24 => out.extend(rgb.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]])),
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            for y in 0..h {
                for cx in 0..cw {
                    let y0 = q(ycbcr(px(2 * cx, y))[0]);
                    let y1 = if 2 * cx + 1 < w { q(ycbcr(px(2 * cx + 1, y))[0]) } else { y0 };
                    let (u, v) = chroma(cx, &[y]);
                    out.extend(if format == PixelFormat::Yuyv { [y0, u, y1, v] } else { [u, y0, v, y1] });
                }
            }
        }
        PixelFormat::Nv12 | PixelFormat::I420 => {
            for y in 0..h {
                for x in 0..w {
                    out.push(q(ycbcr(px(x, y))[0]));
                }
            }
            let uv: Vec<(u8, u8)> = (0..ch).flat_map(|cy| (0..cw).map(move |cx| (cx, cy))).map(|(cx, cy)| chroma(cx, &[2 * cy, 2 * cy + 1])).collect();
            if format == PixelFormat::Nv12 {
                out.extend(uv.iter().flat_map(|&(u, v)| [u, v]));
            } else {
                out.extend(uv.iter().map(|p| p.0));
                out.extend(uv.iter().map(|p| p.1));
            }
        }
    }
    assert_eq!(out.len(), frame_size(format, w, h));
    out
}

/// Runs `stream` on one frame from stdin and returns its JSON line.
fn stream_one(model: &Path, frame: &[u8], format: PixelFormat, w: usize, h: usize) -> Value {
    let mut child = vitedge()
        .args(["stream", "--model"])
        .arg(model)
        .args(["--input", "-", "--pixel-format", format.name(), "--size", &format!("{w}x{h}"), "--top", "1", "--drop", "never", "--threads", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(frame).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{format} {w}x{h}: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{format}: {stdout}\n{stderr}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn raw_frames_in_every_format_agree_with_classify_on_the_jpeg() {
    if common::skip_without_real_data("raw_frames_in_every_format_agree_with_classify_on_the_jpeg") {
        return;
    }
    let model = common::real_blob(Precision::F32);
    let all = common::sample_images();
    let images: Vec<PathBuf> = (0..40).map(|i| all[i * all.len() / 40].clone()).collect();
    // classify on the JPEG files: the reference top-1 (and score) per image.
    let out = vitedge().args(["classify", "--json", "--top", "1", "--threads", "1", "--model"]).arg(&model).args(&images).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reference: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reference.len(), images.len());
    let mut agree = vec![0usize; PixelFormat::ALL.len()];
    let mut odd = 0;
    for (path, want) in images.iter().zip(&reference) {
        let (rgb, w, h) = vitedge::preprocess::load_rgb8(path).unwrap();
        odd += usize::from(w % 2 == 1 || h % 2 == 1);
        let want_top = &want["top"][0];
        for (f, format) in PixelFormat::ALL.into_iter().enumerate() {
            let got = stream_one(&model, &to_frame(&rgb, w, h, format), format, w, h);
            let got_top = &got["top"][0];
            if got_top["index"] == want_top["index"] {
                agree[f] += 1;
            }
            if format == PixelFormat::Rgb24 {
                // Same pixels, same preprocessing, same engine: the very same probability.
                assert_eq!(got_top["index"], want_top["index"], "{}", path.display());
                assert_eq!(got_top["score"].as_f64().unwrap() as f32, want_top["score"].as_f64().unwrap() as f32, "{}", path.display());
            }
        }
    }
    let n = images.len();
    for (f, format) in PixelFormat::ALL.into_iter().enumerate() {
        println!("{format:>6}: top-1 agrees with classify on the JPEG for {}/{n} images ({:.1} %)", agree[f], 100.0 * agree[f] as f64 / n as f64);
    }
    println!("({odd} of the {n} images have an odd width or height)");
    for (f, format) in PixelFormat::ALL.into_iter().enumerate() {
        let need = if format == PixelFormat::Rgb24 { n } else { (n * 95).div_ceil(100) };
        assert!(agree[f] >= need, "{format}: {}/{n} agree, need {need}", agree[f]);
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Reads the child's stdout on a thread, counting and checking lines; returns (count, join handle).
fn collect_lines(child: &mut Child) -> (Arc<AtomicUsize>, std::thread::JoinHandle<Vec<Value>>) {
    let stdout = child.stdout.take().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let handle = std::thread::spawn(move || {
        let mut values = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("incomplete or bad JSON line {line:?}: {e}"));
            values.push(v);
            c.fetch_add(1, Ordering::SeqCst);
        }
        values
    });
    (count, handle)
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn summary(stderr: &str) -> Value {
    let line = stderr.lines().find_map(|l| l.strip_prefix("vitedge stream summary: ")).unwrap_or_else(|| panic!("no summary in stderr:\n{stderr}"));
    serde_json::from_str(line).unwrap()
}

fn spawn_stream(model: &Path, extra: &[&str]) -> Child {
    vitedge()
        .args(["stream", "--model"])
        .arg(model)
        .args(["--input", "-", "--pixel-format", "nv12", "--size", "64x48", "--top", "2", "--threads", "1"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ten_thousand_frames_through_a_pipe_keep_memory_flat_and_are_all_accounted_for() {
    const FRAMES: usize = 10_000;
    let model = tiny_model();
    let len = frame_size(PixelFormat::Nv12, 64, 48);
    for drop in ["newest", "never"] {
        let mut child = spawn_stream(&model, &["--drop", drop]);
        let pid = child.id();
        let (lines, reader) = collect_lines(&mut child);
        let mut stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            stderr.read_to_string(&mut s).unwrap();
            s
        });
        let mut stdin = child.stdin.take().unwrap();
        let mut frame = vec![0u8; len];
        let (mut early, mut late) = (0, 0);
        for i in 0..FRAMES {
            frame.iter_mut().enumerate().for_each(|(j, b)| *b = (i + j) as u8);
            stdin.write_all(&frame).unwrap();
            if i == 1000 {
                // Warm-up done (first results printed): the high-water mark from here on must not move.
                wait_for("the first results", || lines.load(Ordering::SeqCst) > 0);
                early = status_kib(pid, "VmHWM:");
            }
            if i == FRAMES - 1 {
                if drop == "never" {
                    wait_for("the backlog", || lines.load(Ordering::SeqCst) >= FRAMES - 3);
                }
                late = status_kib(pid, "VmHWM:");
            }
        }
        drop_stdin(stdin);
        let status = child.wait().unwrap();
        let values = reader.join().unwrap();
        let stderr = err_reader.join().unwrap();
        assert!(status.success(), "{stderr}");
        let s = summary(&stderr);
        let n = |k: &str| s[k].as_u64().unwrap() as usize;
        println!("--drop {drop}: {s}; VmHWM {early} kB after 1,000 frames, {late} kB after {FRAMES}");
        assert_eq!(n("frames"), FRAMES, "{s}");
        assert_eq!(n("classified") + n("dropped"), FRAMES, "every frame is classified or counted as dropped: {s}");
        assert_eq!(n("classified"), values.len(), "one line per classified frame");
        assert_eq!(n("skipped"), 0);
        if drop == "never" {
            assert_eq!(n("dropped"), 0);
        }
        let indices: Vec<u64> = values.iter().map(|v| v["frame"].as_u64().unwrap()).collect();
        assert!(indices.windows(2).all(|w| w[0] < w[1]), "frame indices increase");
        assert!(late <= early + 256, "--drop {drop}: peak RSS grew from {early} kB to {late} kB over {FRAMES} frames");
    }
}

fn drop_stdin(stdin: std::process::ChildStdin) {
    drop(stdin);
}

/// Feeds frames until the child goes away; returns frames written.
fn feed_forever(mut stdin: std::process::ChildStdin, len: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let frame = vec![100u8; len];
        let mut n = 0;
        while stdin.write_all(&frame).is_ok() {
            n += 1;
        }
        n
    })
}

#[test]
fn sigterm_and_sigint_print_the_summary_and_exit_zero() {
    let model = tiny_model();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let mut child = spawn_stream(&model, &[]);
        let (lines, reader) = collect_lines(&mut child);
        let feeder = feed_forever(child.stdin.take().unwrap(), frame_size(PixelFormat::Nv12, 64, 48));
        wait_for("20 results", || lines.load(Ordering::SeqCst) >= 20);
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        let values = reader.join().unwrap(); // panics on any incomplete line
        feeder.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {:?}\n{stderr}", out.status);
        let s = summary(&stderr);
        assert_eq!(s["ended_by"], name);
        assert_eq!(s["classified"].as_u64().unwrap() as usize, values.len(), "{s}");
        assert!(values.len() >= 20);
        assert_eq!(s["frames"].as_u64().unwrap(), s["classified"].as_u64().unwrap() + s["dropped"].as_u64().unwrap(), "{s}");
    }
}

fn run_stream(model: &Path, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = vitedge()
        .args(["stream", "--model"])
        .arg(model)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let out = child.wait_with_output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code().unwrap_or(-1), o, e)
}

#[test]
fn bad_input_gives_clear_errors_or_counted_skips() {
    let model = tiny_model();
    let frame = frame_size(PixelFormat::Yuyv, 40, 30);
    // Unknown pixel format: rejected by the argument parser with the list of formats.
    let (code, _, err) = run_stream(&model, &["--input", "-", "--pixel-format", "yuv444", "--size", "40x30"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nv12") && err.contains("yuyv"), "{err}");
    // Bad size.
    let (code, _, err) = run_stream(&model, &["--input", "-", "--pixel-format", "yuyv", "--size", "640"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("WIDTHxHEIGHT"), "{err}");
    // Missing format or size for a pipe.
    let (code, _, err) = run_stream(&model, &["--input", "-", "--size", "40x30"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--pixel-format is required"), "{err}");
    let (code, _, err) = run_stream(&model, &["--input", "-", "--pixel-format", "yuyv"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--size WIDTHxHEIGHT is required"), "{err}");
    // Three frames and a short one from a pipe: three results, one counted skip, exit 0.
    let data = vec![128u8; 3 * frame + 100];
    let (code, out, err) = run_stream(&model, &["--input", "-", "--pixel-format", "yuyv", "--size", "40x30", "--drop", "never"], &data);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3);
    assert!(err.contains("last frame is short"), "{err}");
    let s = summary(&err);
    assert_eq!((s["frames"].as_u64(), s["skipped"].as_u64(), s["ended_by"].as_str()), (Some(3), Some(1), Some("eof")));
    // A file smaller than one frame (e.g. a wrong --size): an error that says what to check.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.raw");
    std::fs::write(&small, vec![0u8; frame - 1]).unwrap();
    let (code, _, err) = run_stream(&model, &["--input", small.to_str().unwrap(), "--pixel-format", "yuyv", "--size", "40x30"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("less than one 40x30 yuyv frame") && err.contains("check --size"), "{err}");
    // A file that is not a whole number of frames: processed (files default to --drop never), warned about.
    let file = dir.path().join("frames.raw");
    std::fs::write(&file, vec![90u8; 5 * frame + 7]).unwrap();
    let (code, out, err) = run_stream(&model, &["--input", file.to_str().unwrap(), "--pixel-format", "yuyv", "--size", "40x30", "--output", "text"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(out.starts_with("frame 0:"), "{out}");
    assert!(err.contains("not a whole number"), "{err}");
    assert_eq!(summary(&err)["dropped"].as_u64(), Some(0));
    // A camera that is not there.
    let (code, _, err) = run_stream(&model, &["--input", "/dev/video-none-here"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot open /dev/video-none-here"), "{err}");
    // A missing file.
    let (code, _, err) = run_stream(&model, &["--input", "/nonexistent/frames.raw", "--pixel-format", "nv12", "--size", "64x48"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("opening /nonexistent/frames.raw"), "{err}");
}

/// A tiny model whose labels start with `prefix`, written atomically to `path`.
fn labelled_model(path: &Path, seed: u64, prefix: &str) -> Vec<u8> {
    let mut w = random_blob(&tiny_config(10), seed);
    w.header_mut().labels = (0..10).map(|i| format!("{prefix}{i}")).collect();
    w.write(path).unwrap();
    w.to_bytes()
}

/// Collects the child's stderr lines on a thread.
fn collect_stderr(child: &mut Child) -> (Arc<std::sync::Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = lines.clone();
    let handle = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            l.lock().unwrap().push(line.unwrap());
        }
    });
    (lines, handle)
}

fn events(stderr: &std::sync::Mutex<Vec<String>>, kind: &str) -> Vec<Value> {
    let lines = stderr.lock().unwrap();
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(vitedge::stream::EVENT_PREFIX))
        .map(|j| serde_json::from_str::<Value>(j).unwrap())
        .filter(|v| v["event"] == kind)
        .collect()
}

/// Feeds frames until `stop` is set, then closes stdin; returns frames written.
fn feed_until(mut stdin: std::process::ChildStdin, len: usize, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let frame = vec![(n * 37 % 251) as u8; len];
            if stdin.write_all(&frame).is_err() {
                break;
            }
            n += 1;
        }
        n
    })
}

fn sighup(child: &Child) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGHUP) }, 0);
}

#[test]
fn sighup_swaps_models_between_two_frames_and_a_bad_blob_leaves_the_old_one_running() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.vitb");
    labelled_model(&model, 1, "a");
    let mut child = spawn_stream(&model, &["--drop", "never"]);
    let (lines, reader) = collect_lines(&mut child);
    let (stderr, err_reader) = collect_stderr(&mut child);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = feed_until(child.stdin.take().unwrap(), frame_size(PixelFormat::Nv12, 64, 48), stop.clone());
    wait_for("30 results from model A", || lines.load(Ordering::SeqCst) >= 30);

    // A valid new model, renamed over the path (BlobWriter::write is atomic), then SIGHUP while
    // frames keep coming.
    labelled_model(&model, 2, "b");
    sighup(&child);
    wait_for("the reload event", || !events(&stderr, "model_reloaded").is_empty());
    let n = lines.load(Ordering::SeqCst);
    wait_for("30 results from model B", || lines.load(Ordering::SeqCst) >= n + 30);

    // A damaged blob (one flipped bit in the last tensor), renamed over the path: refused, model B
    // keeps running.
    let mut bytes = random_blob(&tiny_config(10), 3).to_bytes();
    let len = bytes.len();
    bytes[len - 2] ^= 0x08;
    let tmp = dir.path().join("incoming.tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &model).unwrap();
    sighup(&child);
    wait_for("the failed-reload event", || !events(&stderr, "model_reload_failed").is_empty());
    // And a path that holds no blob at all for a moment.
    std::fs::remove_file(&model).unwrap();
    sighup(&child);
    wait_for("the second failed-reload event", || events(&stderr, "model_reload_failed").len() >= 2);
    let n = lines.load(Ordering::SeqCst);
    wait_for("30 more results", || lines.load(Ordering::SeqCst) >= n + 30);

    stop.store(true, Ordering::SeqCst);
    let written = feeder.join().unwrap();
    let status = child.wait().unwrap();
    let values = reader.join().unwrap();
    err_reader.join().unwrap();
    let stderr_text = stderr.lock().unwrap().join("\n");
    assert!(status.success(), "{stderr_text}");

    // Every frame exactly once, in order (--drop never): nothing lost or doubled across the swaps.
    let frames: Vec<u64> = values.iter().map(|v| v["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, (0..written as u64).collect::<Vec<_>>(), "{stderr_text}");
    // Model A's labels up to one frame boundary, model B's after it; nothing else.
    let models: Vec<char> = values.iter().map(|v| v["top"][0]["label"].as_str().unwrap().chars().next().unwrap()).collect();
    let switch = models.iter().position(|&m| m == 'b').expect("model B was used");
    assert!(switch > 0 && models[..switch].iter().all(|&m| m == 'a') && models[switch..].iter().all(|&m| m == 'b'), "{models:?}");
    let reloaded = &events(&stderr, "model_reloaded")[0];
    assert_eq!(reloaded["after_frame"].as_u64(), Some(switch as u64 - 1), "{reloaded}");
    assert_eq!(reloaded["model"].as_str(), model.to_str());
    let failed = events(&stderr, "model_reload_failed");
    assert_eq!(failed.len(), 2);
    let e0 = failed[0]["error"].as_str().unwrap();
    assert!(e0.contains("tensor `head.bias`") && e0.contains("re-copy"), "{e0}");
    assert!(failed[1]["error"].as_str().unwrap().contains("cannot read blob"), "{}", failed[1]);
    let s = summary(&stderr_text);
    assert_eq!((s["reloads"].as_u64(), s["reload_failures"].as_u64()), (Some(1), Some(2)), "{s}");
    assert_eq!(s["classified"].as_u64(), Some(written as u64));
}

#[test]
fn a_blob_truncated_under_a_running_stream_ends_it_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.vitb");
    random_blob(&tiny_config(10), 5).write(&model).unwrap();
    let mut child = spawn_stream(&model, &[]);
    let (lines, reader) = collect_lines(&mut child);
    let feeder = feed_forever(child.stdin.take().unwrap(), frame_size(PixelFormat::Nv12, 64, 48));
    wait_for("10 results", || lines.load(Ordering::SeqCst) >= 10);
    // Truncation drops the file's pages from every mapping: the next read of a weight faults.
    std::fs::OpenOptions::new().write(true).open(&model).unwrap().set_len(0).unwrap();
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap(); // every line printed before the fault is complete
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(vitedge::blob::TRUNCATED_EXIT_CODE), "{:?}\n{stderr}", out.status);
    assert!(stderr.contains(&format!("the model blob {} was truncated or rewritten in place while in use", model.display())), "{stderr}");
    assert!(stderr.contains("renaming it over") && stderr.contains("SIGHUP"), "{stderr}");
}

#[test]
fn a_damaged_blob_is_refused_before_the_first_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = random_blob(&tiny_config(10), 5).to_bytes();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    let bad = dir.path().join("damaged.vitb");
    std::fs::write(&bad, &bytes).unwrap();
    let frames = vec![0u8; 3 * frame_size(PixelFormat::Nv12, 64, 48)];
    let args = ["--input", "-", "--pixel-format", "nv12", "--size", "64x48"];
    let (code, out, err) = run_stream(&bad, &args, &frames);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "nothing classified: {out}");
    assert!(err.contains("checksum mismatch in tensor `") && err.contains("re-copy"), "{err}");
    // --no-verify is the explicit opt-out.
    let (code, out, err) = run_stream(&bad, &[&args[..], &["--no-verify", "--drop", "never"]].concat(), &frames);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3);
}

#[test]
fn a_sigbus_that_is_not_about_a_blob_keeps_its_default_action() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = spawn_stream(&tiny_model(), &[]);
    let (lines, reader) = collect_lines(&mut child);
    let feeder = feed_forever(child.stdin.take().unwrap(), frame_size(PixelFormat::Nv12, 64, 48));
    wait_for("5 results", || lines.load(Ordering::SeqCst) >= 5);
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGBUS) }, 0);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    feeder.join().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("truncated"));
}
