//! Helpers of the quant tests: a tiny timm-named ViT state dict, a pickle writer and a torch.save
//! zip writer for hand-made (hostile) checkpoints, and the CLI run as a child with its peak RSS.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vitedge_quant::checkpoint::{FloatTensor, StateDict};

/// A fixture file of `quant/tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A timm-named state dict for a small ViT (patch 16, 32×32 input, MLP 4×) with constant-ish
/// values, in checkpoint shapes (the patch embedding as a convolution).
pub fn tiny_state(d: usize, depth: usize, classes: usize, prefix: &str) -> StateDict {
    let cfg = vitedge::model::VitConfig {
        arch: "custom".into(),
        image_size: 32,
        patch_size: 16,
        in_chans: 3,
        embed_dim: d,
        depth,
        num_heads: 1,
        mlp_hidden: 4 * d,
        num_classes: classes,
        distilled: false,
        layer_norm_eps: 1e-6,
    };
    let mut sd = BTreeMap::new();
    for (name, mut shape) in cfg.blob_tensor_shapes() {
        if name == "patch_embed.proj.weight" {
            shape = vec![d, 3, 16, 16];
        }
        let n: usize = shape.iter().product();
        sd.insert(format!("{prefix}{name}"), FloatTensor { data: (0..n).map(|i| (i % 7) as f32 * 0.01).collect(), shape });
    }
    sd
}

/// Every tensor of a blob, as written: (name, shape, CRC-32, bytes); the header's `source` and
/// other metadata are left out.
pub fn tensor_payloads(w: &vitedge::blob::BlobWriter) -> Vec<(String, Vec<usize>, u32, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.vitb");
    w.write(&path).unwrap();
    let blob = vitedge::blob::Blob::open(&path).unwrap();
    blob.verify().unwrap();
    blob.header().tensors.iter().map(|t| (t.name.clone(), t.shape.clone(), t.crc32, blob.tensor(&t.name).unwrap().bytes.to_vec())).collect()
}

/// A pickle (protocol 2) written opcode by opcode.
#[derive(Clone, Default)]
pub struct Pk(pub Vec<u8>);

impl Pk {
    /// A new stream (PROTO 2).
    pub fn new() -> Pk {
        Pk(vec![0x80, 2])
    }
    /// Raw opcodes.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// BINUNICODE.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// BININT, or LONG1 for values outside i32.
    pub fn int(&mut self, i: i64) -> &mut Self {
        if let Ok(v) = i32::try_from(i) {
            self.0.push(b'J');
            self.0.extend_from_slice(&v.to_le_bytes());
        } else {
            self.0.extend_from_slice(&[0x8a, 8]);
            self.0.extend_from_slice(&i.to_le_bytes());
        }
        self
    }
    /// GLOBAL `module.name`.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }
    /// A tuple of integers.
    pub fn int_tuple(&mut self, v: &[i64]) -> &mut Self {
        self.raw(b"(");
        for &i in v {
            self.int(i);
        }
        self.raw(b"t")
    }
    /// `module.name(arg)` through REDUCE, with a string argument.
    pub fn call_str(&mut self, module: &str, name: &str, arg: &str) -> &mut Self {
        self.global(module, name).raw(b"(").str(arg).raw(b"tR")
    }
    /// A persistent storage id `("storage", torch.<class>, key, "cpu", numel)` resolved by BINPERSID.
    pub fn storage(&mut self, class: &str, key: &str, numel: i64) -> &mut Self {
        self.raw(b"(").str("storage").global("torch", class).str(key).str("cpu").int(numel).raw(b"tQ")
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    pub fn tensor(&mut self, class: &str, key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").raw(b"(");
        self.storage(class, key, numel).int(offset).int_tuple(size).int_tuple(stride);
        self.raw(b"\x89").global("collections", "OrderedDict").raw(b")R").raw(b"tR")
    }
    /// STOP, returning the bytes.
    pub fn stop(&mut self) -> Vec<u8> {
        self.0.push(b'.');
        std::mem::take(&mut self.0)
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1] as i64;
    }
    s
}

/// Zip entries as torch.save lays them out: `archive/data.pkl`, `archive/data/<key>`, ...
/// `(name, bytes, deflate)`.
pub fn zip_bytes(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, deflate) in entries {
        let method = if *deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method).large_file(bytes.len() > u32::MAX as usize);
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// A Lightning-style torch.save checkpoint of `sd` under `state_dict` with a `model.` prefix;
/// `extra` pushes more (key, value) pairs onto the top-level dict, `tweak` may replace the pickle
/// of a tensor (by name) before it is written.
pub fn lightning_ckpt(sd: &StateDict, extra: impl Fn(&mut Pk), tweak: impl Fn(&str, &mut Pk) -> bool) -> Vec<u8> {
    let mut pk = Pk::new();
    let mut storages = Vec::new();
    pk.raw(b"}(").str("state_dict").raw(b"}(");
    for (i, (name, t)) in sd.iter().enumerate() {
        pk.str(&format!("model.{name}"));
        if !tweak(name, &mut pk) {
            let key = i.to_string();
            pk.tensor(
                "FloatStorage",
                &key,
                t.data.len() as i64,
                0,
                &t.shape.iter().map(|&d| d as i64).collect::<Vec<_>>(),
                &contiguous_strides(&t.shape),
            );
            storages.push((format!("archive/data/{key}"), t.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()));
        }
    }
    pk.raw(b"u");
    pk.str("epoch").int(3);
    extra(&mut pk);
    pk.raw(b"u");
    let pkl = pk.stop();
    let mut entries: Vec<(&str, &[u8], bool)> = vec![("archive/data.pkl", &pkl, false)];
    for (n, b) in &storages {
        entries.push((n, b, false));
    }
    entries.push(("archive/version", b"3\n", false));
    zip_bytes(&entries)
}

/// A torch.save zip around a hand-written pickle and storages `(key, bytes, deflate)`.
pub fn torch_zip(pkl: &[u8], storages: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let names: Vec<String> = storages.iter().map(|(k, _, _)| format!("archive/data/{k}")).collect();
    let mut entries: Vec<(&str, &[u8], bool)> = vec![("archive/data.pkl", pkl, false)];
    for ((_, b, d), n) in storages.iter().zip(&names) {
        entries.push((n, b, *d));
    }
    zip_bytes(&entries)
}

/// Rewrites the uncompressed size of entry `name` in both its local header and the central
/// directory (a zip that lies about its sizes).
pub fn patch_zip_size(zip: &mut [u8], name: &str, size: u32) {
    let mut patched = 0;
    for i in 0..zip.len().saturating_sub(46) {
        let (sig, size_at, name_len_at, name_at) = match &zip[i..i + 4] {
            b"PK\x03\x04" => ("local", 22, 26, 30),
            b"PK\x01\x02" => ("central", 24, 28, 46),
            _ => continue,
        };
        let n = u16::from_le_bytes([zip[i + name_len_at], zip[i + name_len_at + 1]]) as usize;
        if zip.get(i + name_at..i + name_at + n) == Some(name.as_bytes()) {
            zip[i + size_at..i + size_at + 4].copy_from_slice(&size.to_le_bytes());
            patched += 1;
            let _ = sig;
        }
    }
    assert_eq!(patched, 2, "entry {name} not found in both headers");
}

/// How a `vitedge-quant` run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Terminating signal, if any.
    pub signal: Option<i32>,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Peak resident set size in bytes (`ru_maxrss` of this child alone).
    pub peak_rss: u64,
}

const PROBE_ARGS: &str = "VITEDGE_RSS_PROBE_ARGS";

/// Runs `vitedge-quant ARGS` and reports its exit, stderr and peak RSS.
///
/// `ru_maxrss` counts the memory of the process a child was forked from (Linux folds the old
/// address space's high-water mark in at exec), so the CLI is started from a fresh copy of this
/// test binary running only [`rss_probe`], whose few MB are all it adds; the figure is an upper
/// bound of the CLI's own peak.
pub fn run_cli(args: &[&std::ffi::OsStr]) -> Outcome {
    let joined: Vec<&str> = args.iter().map(|a| a.to_str().expect("UTF-8 arguments")).collect();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rss_probe", "--nocapture", "--test-threads", "1"])
        .env(PROBE_ARGS, joined.join("\u{1f}"))
        .stdin(Stdio::null())
        .output()
        .expect("spawn the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.split_once("RSS_PROBE ").map(|(_, r)| r)).unwrap_or_else(|| panic!("no probe report in:\n{stdout}"));
    let field = |k: &str| line.split(' ').find_map(|f| f.strip_prefix(k)).and_then(|v| v.parse::<i64>().ok());
    Outcome {
        code: field("code=").map(|c| c as i32),
        signal: field("signal=").map(|s| s as i32),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        peak_rss: field("maxrss=").expect("maxrss") as u64,
    }
}

/// The body of each test file's `rss_probe` test: when started by [`run_cli`], runs the CLI with
/// the arguments it was given, its stderr going to ours, and prints `RSS_PROBE code=.. signal=..
/// maxrss=..` (bytes, from wait4 on that child); otherwise does nothing.
pub fn rss_probe() {
    let Ok(joined) = std::env::var(PROBE_ARGS) else {
        return;
    };
    let child = Command::new(env!("CARGO_BIN_EXE_vitedge-quant"))
        .args(joined.split('\u{1f}'))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn vitedge-quant");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child (never waited for by `child`, which is dropped without
    // waiting) with valid pointers to a status int and a rusage struct; exercised by every
    // hostile-checkpoint test through run_cli.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4 failed");
    drop(child);
    let (code, signal) = if libc::WIFEXITED(status) { (libc::WEXITSTATUS(status), -1) } else { (-1, libc::WTERMSIG(status)) };
    let mut report = format!("RSS_PROBE maxrss={}", ru.ru_maxrss as u64 * 1024);
    if code >= 0 {
        report += &format!(" code={code}");
    }
    if signal >= 0 {
        report += &format!(" signal={signal}");
    }
    println!("{report}");
}

/// Converts `ckpt` (written to `dir/name`) with the CLI and returns the outcome; asserts that it
/// ended by itself (no signal) within the memory bound: file size + 256 MiB.
pub fn convert_bounded(dir: &Path, name: &str, bytes: &[u8], extra: &[&str]) -> Outcome {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = dir.join(format!("{name}.vitb"));
    let mut args: Vec<&std::ffi::OsStr> = vec!["convert".as_ref(), path.as_os_str(), "-o".as_ref(), out.as_os_str()];
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    let o = run_cli(&args);
    assert_eq!(o.signal, None, "{name}: killed by signal {:?}\n{}", o.signal, o.stderr);
    assert!(!o.stderr.contains("panicked"), "{name}: panicked\n{}", o.stderr);
    let bound = bytes.len() as u64 + (256 << 20);
    assert!(o.peak_rss <= bound, "{name}: peak RSS {} MiB above the bound {} MiB\n{}", o.peak_rss >> 20, bound >> 20, o.stderr);
    eprintln!("{name}: exit {:?}, peak RSS {:.1} MiB (file {} bytes)", o.code, o.peak_rss as f64 / (1 << 20) as f64, bytes.len());
    o
}
