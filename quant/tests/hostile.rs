//! Hostile checkpoints: each class is refused with the specific limit or check that stops it, by
//! the CLI as a child process that exits by itself (no abort, no signal) within the memory bound
//! (file size + 256 MiB peak RSS, from wait4). Limits bound the work, so nothing here is timed.
//! The files are generated here, except the fuzzers' finds: every committed crash input of the
//! checkpoint fuzz targets (`tests/fixtures/fuzz/{unpickle,torch_zip,safetensors}/` at the repo root)
//! and every seed (`fuzz/corpus/<target>/`) is replayed through the fuzz harness itself.

mod common;
#[path = "../../fuzz/src/checkpoint.rs"]
mod fuzz_harness;

use common::{convert_bounded, lightning_ckpt, patch_zip_size, tiny_state, torch_zip, Pk};
use vitedge_quant::checkpoint::{load_from_bytes, pickle, CheckpointError, Limits, LoadOptions};

/// Started by `common::run_cli` in a fresh process to measure the CLI's peak RSS.
#[test]
fn rss_probe() {
    common::rss_probe();
}

fn tiny() -> vitedge_quant::checkpoint::StateDict {
    tiny_state(32, 1, 10, "")
}

/// A valid tiny checkpoint whose `hyper_parameters` value is the raw pickle `value`.
fn with_hparams(value: &[u8]) -> Vec<u8> {
    lightning_ckpt(
        &tiny(),
        |pk| {
            pk.str("hyper_parameters").raw(value);
        },
        |_, _| false,
    )
}

fn refused(o: &common::Outcome, needle: &str) {
    assert_eq!(o.code, Some(1), "expected a refusal:\n{}", o.stderr);
    assert!(o.stderr.contains(needle), "expected `{needle}` in:\n{}", o.stderr);
}

fn load_err(name: &str, bytes: &[u8]) -> String {
    match load_from_bytes(name, bytes, &LoadOptions::default()) {
        Ok(c) => panic!("{name}: loaded {} tensors, expected an error", c.state_dict.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn deep_nesting_stops_at_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    let n = 100_000;
    // ((((0,),),)...) through TUPLE1
    let mut tuples = vec![b'K', 0];
    tuples.extend(std::iter::repeat_n(0x85u8, n));
    // [[[[...]]]] through EMPTY_LIST ... APPEND
    let mut lists = vec![b']'; n];
    lists.extend(std::iter::repeat_n(b'a', n - 1));
    // {"k": {"k": ...}} through EMPTY_DICT, key, ..., SETITEM
    let mut dicts = Vec::new();
    for _ in 0..n {
        dicts.extend_from_slice(b"}\x8c\x01k");
    }
    dicts.push(b'}');
    dicts.extend(std::iter::repeat_n(b's', n));
    // ((((( ... marks that never close
    let marks = vec![b'('; n];
    for (name, value, needle) in [
        ("tuples.ckpt", tuples, "nests deeper than 1000 levels"),
        ("lists.ckpt", lists, "nests deeper than 1000 levels"),
        ("dicts.ckpt", dicts, "nests deeper than 1000 levels"),
        ("marks.ckpt", marks, "nests more than 1000 marks"),
    ] {
        let o = convert_bounded(dir.path(), name, &with_hparams(&value), &[]);
        refused(&o, needle);
    }
    // Just under the limit is fine: 900 nested tuples in the hyperparameters convert.
    let mut ok = vec![b'K', 0];
    ok.extend(std::iter::repeat_n(0x85u8, 900));
    let o = convert_bounded(dir.path(), "deep_ok.ckpt", &with_hparams(&ok), &[]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
}

#[test]
fn cyclic_structures_are_harmless_outside_tensors_and_refused_inside() {
    let dir = tempfile::tempdir().unwrap();
    // l = []; l.append(l); d = {}; d["self"] = d; hyper_parameters = (l, d), appended 5000 more times
    let mut cyc = b"]q\x00h\x00a}q\x01\x8c\x04selfh\x01s".to_vec();
    for _ in 0..500 {
        cyc.extend_from_slice(b"h\x00h\x00ah\x01\x8c\x01xh\x01s00");
    }
    cyc.extend_from_slice(b"\x86");
    let o = convert_bounded(dir.path(), "cyclic_hparams.ckpt", &with_hparams(&cyc), &[]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);

    // A tensor whose size is a list that contains itself.
    let bytes = lightning_ckpt(
        &tiny(),
        |_| {},
        |name, pk| {
            if name != "head.bias" {
                return false;
            }
            pk.global("torch._utils", "_rebuild_tensor_v2").raw(b"(").storage("FloatStorage", "x", 10).int(0);
            pk.raw(b"]q\x07h\x07a").int_tuple(&[1]).raw(b"\x89)tR");
            true
        },
    );
    let o = convert_bounded(dir.path(), "cyclic_size.ckpt", &bytes, &[]);
    refused(&o, "tensor `model.head.bias`: cannot be rebuilt: its size");

    // The unpickled cycle prints and drops without recursing.
    let p = pickle::load(b"\x80\x02]q\x00h\x00ah\x00a.").unwrap();
    assert_eq!(p.describe(p.root), "a list of 2 items");
    assert!(format!("{p:?}").len() < 1000);
}

#[test]
fn memo_bombs_stay_linear_or_hit_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    // The billion laughs: t0 = (0,)*10, t(i+1) = (ti,)*10 through the memo, 30 levels: 10^30
    // logical items, a few hundred bytes of pickle. The arena shares, so it converts in O(input).
    let mut laughs = vec![b'('];
    laughs.extend(std::iter::repeat_n([b'K', 0], 10).flatten());
    laughs.extend_from_slice(b"tq\x000");
    for i in 0..30u8 {
        laughs.push(b'(');
        for _ in 0..10 {
            laughs.extend_from_slice(&[b'h', i]);
        }
        laughs.extend_from_slice(&[b't', b'q', i + 1, b'0']);
    }
    laughs.extend_from_slice(&[b'h', 30]);
    let o = convert_bounded(dir.path(), "laughs.ckpt", &with_hparams(&laughs), &[]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);

    // A list of 20 M references to one memoized value: 40 MB of pickle, 640 MB of slots.
    let mut slots = b"]K\x00q\x000".to_vec();
    for _ in 0..20_000 {
        slots.push(b'(');
        slots.extend(std::iter::repeat_n([b'h', 0], 1000).flatten());
        slots.push(b'e');
    }
    let o = convert_bounded(dir.path(), "slots.ckpt", &with_hparams(&slots), &[]);
    refused(&o, "builds more than 128 MiB of objects");

    // Two million empty tuples: the object count.
    let objects = vec![b')'; 2_000_000];
    let o = convert_bounded(dir.path(), "objects.ckpt", &with_hparams(&objects), &[]);
    refused(&o, "more than 1048576");

    // One 1 MiB tensor memoized and stored under 400 keys: 400 MiB if materialized.
    let storage = vec![0u8; 1 << 20];
    let mut pk = Pk::new();
    pk.raw(b"}(").str("state_dict").raw(b"}(");
    pk.str("t0").tensor("FloatStorage", "0", 1 << 18, 0, &[1 << 18], &[1]).raw(b"q\x00");
    for i in 1..400 {
        pk.str(&format!("t{i}")).raw(b"h\x00");
    }
    pk.raw(b"uu");
    let bytes = torch_zip(&pk.stop(), &[("0", &storage, false)]);
    let o = convert_bounded(dir.path(), "shared_views.ckpt", &bytes, &[]);
    refused(&o, "tensors viewing the same data twice) would take more than the 256 MiB");
}

/// A checkpoint with one tensor `w` of the given view over a storage of `numel` f32.
fn view_ckpt(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    let mut pk = Pk::new();
    pk.raw(b"}(").str("w").tensor("FloatStorage", "0", numel, offset, size, stride).raw(b"u");
    let storage = vec![0u8; (numel.max(0) as usize * 4).min(1 << 20)];
    torch_zip(&pk.stop(), &[("0", &storage, false)])
}

#[test]
fn tensor_views_are_checked_against_their_storage() {
    let dir = tempfile::tempdir().unwrap();
    // stride 0 claiming 2^31 elements of a one-element storage
    let o = convert_bounded(dir.path(), "stride0.ckpt", &view_ckpt(1, 0, &[1 << 31], &[0]), &[]);
    refused(&o, "maps several elements onto the same storage element");
    for (name, bytes, needle) in [
        ("overlap.pt", view_ckpt(100, 0, &[10, 10], &[5, 1]), "maps several elements onto the same storage element"),
        ("overflow.pt", view_ckpt(100, 0, &[1 << 40, 1 << 40], &[1, 1]), "element count overflows"),
        ("extent_overflow.pt", view_ckpt(100, 0, &[5, 2], &[1 << 62, 1]), "extent overflows"),
        ("beyond.pt", view_ckpt(100, 90, &[20], &[1]), "reaches element 109 of a storage of 100 elements"),
        ("beyond_2d.pt", view_ckpt(100, 0, &[11, 10], &[10, 1]), "reaches element 109 of a storage of 100 elements"),
        ("negative_size.pt", view_ckpt(100, 0, &[-5], &[1]), "its size -5 is negative"),
        ("negative_stride.pt", view_ckpt(100, 0, &[5], &[-1]), "its stride -1 is negative"),
        ("negative_offset.pt", view_ckpt(100, -1, &[5], &[1]), "its storage offset -1 is negative"),
        ("rank.pt", view_ckpt(100, 0, &[10, 10], &[10]), "its size has 2 dimensions but its stride 1"),
        ("rank65.pt", view_ckpt(100, 0, &[1; 65], &[1; 65]), "more than 64"),
        ("numel_lie.pt", view_ckpt(1 << 40, 0, &[4], &[1]), "has 1048576 bytes in the zip directory, but the pickle describes 4398046511104 bytes"),
        ("negative_numel.pt", view_ckpt(-3, 0, &[4], &[1]), "the storage size -3 is negative"),
    ] {
        let e = load_err(name, &bytes);
        assert!(e.contains("tensor `w`") && e.contains(needle), "{name}: {e}");
    }
    // A legal transposed view, a scalar and an empty tensor still load.
    let mut pk = Pk::new();
    pk.raw(b"}(").str("t").tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3]);
    pk.str("s").tensor("FloatStorage", "0", 6, 5, &[], &[]).str("e").tensor("FloatStorage", "0", 6, 6, &[0, 4], &[4, 1]).raw(b"u");
    let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let c = load_from_bytes("ok.pt", &torch_zip(&pk.stop(), &[("0", &storage, false)]), &LoadOptions::default()).unwrap();
    assert_eq!(c.state_dict["t"].data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert_eq!(c.state_dict["s"].data, vec![5.0]);
    assert!(c.state_dict["e"].data.is_empty());
}

#[test]
fn zip_bomb_entries_are_refused_before_inflating() {
    let dir = tempfile::tempdir().unwrap();
    // A storage entry inflating to 1 GiB of zeros (about 1 MB deflated), as the pickle declares it.
    let gib = vec![0u8; 1 << 30];
    let mut pk = Pk::new();
    pk.raw(b"}(").str("w").tensor("FloatStorage", "0", 1 << 28, 0, &[1 << 28], &[1]).raw(b"u");
    let bytes = torch_zip(&pk.stop(), &[("0", &gib, true)]);
    drop(gib);
    let o = convert_bounded(dir.path(), "bomb.ckpt", &bytes, &[]);
    refused(&o, "a compression ratio above 100 : 1 (a zip bomb)");

    // A data.pkl inflating to 200 MiB.
    let mut pkl = vec![b'N'; 200 << 20];
    pkl.push(b'.');
    let bytes = common::zip_bytes(&[("archive/data.pkl", &pkl, true)]);
    let o = convert_bounded(dir.path(), "pkl_bomb.ckpt", &bytes, &[]);
    refused(&o, "more than the 67108864-byte limit");

    // Under the ratio limit, inflation is bounded by the budget: 10 entries of 40 MiB at about 27 : 1.
    let mut x = 1u32;
    let noise: Vec<u8> = (0..40u32 << 20)
        .map(|i| {
            if i % 64 != 0 {
                return 0;
            }
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect();
    let mut pk = Pk::new();
    pk.raw(b"}(");
    for i in 0..10 {
        pk.str(&format!("w{i}")).tensor("FloatStorage", &i.to_string(), 10 << 20, 0, &[10 << 20], &[1]);
    }
    pk.raw(b"u");
    let keys: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let storages: Vec<(&str, &[u8], bool)> = keys.iter().map(|k| (k.as_str(), noise.as_slice(), true)).collect();
    let bytes = torch_zip(&pk.stop(), &storages);
    let o = convert_bounded(dir.path(), "many_inflating.ckpt", &bytes, &[]);
    refused(&o, "would take more than the 256 MiB vitedge allows beyond the file's own data");
}

#[test]
fn lying_zip_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A deflated storage of 4 MiB whose headers claim 400 bytes (and the pickle agrees).
    let big = vec![0u8; 4 << 20];
    let mut pk = Pk::new();
    pk.raw(b"}(").str("w").tensor("FloatStorage", "0", 100, 0, &[100], &[1]).raw(b"u");
    let mut bytes = torch_zip(&pk.stop(), &[("0", &big, true)]);
    patch_zip_size(&mut bytes, "archive/data/0", 400);
    let o = convert_bounded(dir.path(), "understated.ckpt", &bytes, &[]);
    refused(&o, "holds more bytes than the 400 its header declares");

    // A stored storage of 40 bytes whose headers claim 400 (the pickle agrees).
    let small = vec![0u8; 40];
    let mut pk = Pk::new();
    pk.raw(b"}(").str("w").tensor("FloatStorage", "0", 100, 0, &[100], &[1]).raw(b"u");
    let mut bytes = torch_zip(&pk.stop(), &[("0", &small, false)]);
    patch_zip_size(&mut bytes, "archive/data/0", 400);
    let e = load_err("overstated.pt", &bytes);
    assert!(e.contains("fewer bytes than the 400") || e.contains("cannot read the storage"), "{e}");

    // A stored entry claiming 3 GiB in a small file.
    let mut pk = Pk::new();
    pk.raw(b"}(").str("w").tensor("FloatStorage", "0", 3 << 28, 0, &[4], &[1]).raw(b"u");
    let mut bytes = torch_zip(&pk.stop(), &[("0", &small, false)]);
    patch_zip_size(&mut bytes, "archive/data/0", 3 << 30);
    let o = convert_bounded(dir.path(), "huge_claim.ckpt", &bytes, &[]);
    refused(&o, "more than the whole file");

    // A data.pkl claiming 4 GiB - 1.
    let mut bytes = torch_zip(b"\x80\x02}.", &[]);
    patch_zip_size(&mut bytes, "archive/data.pkl", u32::MAX);
    let e = load_err("pkl_claim.pt", &bytes);
    assert!(e.contains("more than the 67108864-byte limit"), "{e}");

    // Too many entries, under a small limit.
    let names: Vec<String> = (0..20).map(|i| format!("archive/x{i}")).collect();
    let mut entries: Vec<(&str, &[u8], bool)> = vec![("archive/data.pkl", b"\x80\x02}.", false)];
    entries.extend(names.iter().map(|n| (n.as_str(), &b""[..], false)));
    let bytes = common::zip_bytes(&entries);
    let opts = LoadOptions { limits: Limits { max_zip_entries: 10, ..Limits::default() }, ..Default::default() };
    let e = load_from_bytes("entries.pt", &bytes, &opts).unwrap_err();
    assert!(matches!(e, CheckpointError::Limit { .. }) && e.to_string().contains("21 entries"), "{e}");
}

/// A safetensors file: `header` JSON (length-prefixed) followed by `data`.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn hostile_safetensors_headers_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // A header claiming 2^60 bytes.
    let mut claim = (1u64 << 60).to_le_bytes().to_vec();
    claim.extend_from_slice(b"{}");
    let o = convert_bounded(dir.path(), "claim.safetensors", &claim, &[]);
    refused(&o, "the safetensors header claims 1152921504606846976 bytes, more than the 16777216-byte limit");
    let data = [0u8; 64];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (name, bytes, needle) in [
        ("short", (100u64).to_le_bytes().iter().copied().chain(*b"{}").collect::<Vec<u8>>(), "the file has only 2 after the length: truncated?"),
        ("not_json", safetensors("{\"w\": [1, 2", &data), "not the expected JSON object"),
        (
            "deep_ignored",
            safetensors(&format!("{{\"w\": {{\"junk\": {deep}}}}}"), &data),
            "tensor `w`: its header entry lacks dtype, shape or data_offsets",
        ),
        (
            "deep_shape",
            safetensors(&format!("{{\"w\": {{\"dtype\": \"F32\", \"shape\": {deep}, \"data_offsets\": [0, 4]}}}}"), &data),
            "not the expected JSON object",
        ),
        (
            "no_offsets",
            safetensors(r#"{"w": {"dtype": "F32", "shape": [4]}}"#, &data),
            "tensor `w`: its header entry lacks dtype, shape or data_offsets",
        ),
        ("dtype", safetensors(r#"{"w": {"dtype": "F31", "shape": [4], "data_offsets": [0, 16]}}"#, &data), "tensor `w`: unknown dtype `F31`"),
        (
            "mismatch",
            safetensors(r#"{"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}"#, &data),
            "tensor `w`: F32 × shape [5] is 20 bytes, but its data_offsets [0, 16] span 16",
        ),
        ("backwards", safetensors(r#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}"#, &data), "span -16"),
        (
            "overflow",
            safetensors(r#"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}}"#, &data),
            "tensor `w`: shape [4294967296, 4294967296] overflows",
        ),
        ("negative", safetensors(r#"{"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}"#, &data), "not the expected JSON object"),
        (
            "beyond",
            safetensors(r#"{"w": {"dtype": "F32", "shape": [32], "data_offsets": [0, 128]}}"#, &data),
            "tensor `w`: its data ends at byte 128, beyond the file's 64 bytes",
        ),
        (
            "overlap",
            safetensors(
                r#"{"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}, "b": {"dtype": "F32", "shape": [8], "data_offsets": [16, 48]}}"#,
                &data,
            ),
            "tensors `a` and `b` overlap",
        ),
    ] {
        let e = load_err(&format!("{name}.safetensors"), &bytes);
        assert!(e.contains(needle), "{name}: {e}");
    }
    // A well-formed file with metadata and an integer tensor loads.
    let ok = safetensors(
        r#"{"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "i": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}}"#,
        &data,
    );
    let c = load_from_bytes("ok.safetensors", &ok, &LoadOptions::default()).unwrap();
    assert_eq!(c.state_dict.keys().collect::<Vec<_>>(), ["w"]);
}

/// A temporary folder, a file in it that does not exist, and the shell command that would create it.
fn marker_command() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let cmd = format!("touch {}", marker.display());
    (dir, marker, cmd)
}

#[test]
fn os_system_outside_the_tensors_never_runs_and_is_named() {
    let (dir, marker, cmd) = marker_command();
    // hyper_parameters = {"cmd": os.system(cmd), "exec": builtins.exec(cmd), "popen": subprocess.Popen(cmd)}
    let bytes = lightning_ckpt(
        &tiny(),
        |pk| {
            pk.str("hyper_parameters").raw(b"}(").str("cmd").call_str("os", "system", &cmd);
            pk.str("exec").call_str("builtins", "exec", &format!("import os; os.system('{cmd}')"));
            pk.str("popen").call_str("subprocess", "Popen", &cmd).raw(b"u");
        },
        |_, _| false,
    );
    let o = convert_bounded(dir.path(), "evil_hparams.ckpt", &bytes, &[]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr.contains("(builtins.exec, os.system, subprocess.Popen); they were kept as inert placeholders, never imported or called"),
        "{}",
        o.stderr
    );
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn a_tensor_built_by_os_system_is_refused() {
    let (dir, marker, cmd) = marker_command();
    // state_dict["model.head.bias"] = os.system(cmd)
    let bytes = lightning_ckpt(
        &tiny(),
        |_| {},
        |name, pk| {
            if name != "head.bias" {
                return false;
            }
            pk.call_str("os", "system", &cmd);
            true
        },
    );
    let o = convert_bounded(dir.path(), "evil_tensor.ckpt", &bytes, &[]);
    refused(&o, "tensor `model.head.bias` is built by the Python global `os.system`, which vitedge never imports or calls");
    // _rebuild_tensor_v2(os.system(cmd), 0, (10,), (1,), False, OrderedDict())
    let bytes = lightning_ckpt(
        &tiny(),
        |_| {},
        |name, pk| {
            if name != "head.bias" {
                return false;
            }
            pk.global("torch._utils", "_rebuild_tensor_v2").raw(b"(").call_str("os", "system", &cmd);
            pk.int(0).int_tuple(&[10]).int_tuple(&[1]).raw(b"\x89)tR");
            true
        },
    );
    let o = convert_bounded(dir.path(), "evil_storage.ckpt", &bytes, &[]);
    refused(&o, "tensor `model.head.bias`: cannot be rebuilt: its storage is an object built by the Python global `os.system`");
    assert!(!marker.exists(), "the command ran");
}

/// The checkpoint fuzz targets' harnesses (`fuzz/src/checkpoint.rs`) on their committed crash
/// inputs and seeds: no panic (an abort would end the test binary).
#[test]
fn fuzz_crash_inputs_and_seeds_no_longer_crash() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let targets: [(&str, fn(&[u8])); 3] =
        [("unpickle", fuzz_harness::unpickle), ("torch_zip", fuzz_harness::torch_zip), ("safetensors", fuzz_harness::safetensors)];
    let (mut crashes, mut seeds) = (0, 0);
    for (target, harness) in targets {
        for (dir, count) in [(repo.join("tests/fixtures/fuzz").join(target), &mut crashes), (repo.join("fuzz/corpus").join(target), &mut seeds)] {
            let mut files: Vec<_> = std::fs::read_dir(&dir).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).unwrap();
                let r = std::panic::catch_unwind(|| harness(&data));
                assert!(r.is_ok(), "{target}: {} panics", file.display());
                *count += 1;
            }
        }
    }
    assert!(seeds >= 3, "the seed corpora fuzz/corpus/{{unpickle,torch_zip,safetensors}} are missing");
    println!("{crashes} crash inputs and {seeds} seeds replayed");
}
