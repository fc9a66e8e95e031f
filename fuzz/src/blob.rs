//! The blob reader (`blob_open`) and blob + forward pass (`blob_forward`).

use vitedge::blob::{Blob, Verify, ALIGN, PRELUDE_LEN};
use vitedge::engine::native::NativeEngine;
use vitedge::engine::{Engine, EngineOptions};
use vitedge::model::synthetic::{random_blob_in, tiny_config};
use vitedge::model::{Model, VitConfig};

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `bytes` with the prelude's header CRC recomputed over the header it declares (unchanged when
/// that range is not inside the bytes).
pub fn with_header_crc(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() >= PRELUDE_LEN {
        let h = u64_at(&out, 16);
        if let Some(end) = (PRELUDE_LEN as u64).checked_add(h).filter(|&e| e <= out.len() as u64) {
            let crc = crc32fast::hash(&out[PRELUDE_LEN..end as usize]);
            out[40..44].copy_from_slice(&crc.to_le_bytes());
        }
    }
    out
}

/// `bytes` with every checksum made to hold: each tensor CRC the (parseable) header lists, over
/// the bytes its offset and length point at, then the header re-laid out (new length, payload
/// offset) and its CRC. Lets mutations get past the checksums to the checks behind them. The
/// prelude's payload length is kept, so length mutations survive.
pub fn with_valid_checksums(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() < PRELUDE_LEN {
        return bytes.to_vec();
    }
    let (h, p) = (u64_at(bytes, 16), u64_at(bytes, 24));
    let header_end = (PRELUDE_LEN as u64).saturating_add(h);
    if header_end > bytes.len() as u64 || p > bytes.len() as u64 || p < header_end {
        return with_header_crc(bytes);
    }
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes[PRELUDE_LEN..header_end as usize]) else {
        return with_header_crc(bytes);
    };
    let payload = &bytes[p as usize..];
    if let Some(tensors) = json.get_mut("tensors").and_then(|t| t.as_array_mut()) {
        for t in tensors {
            let (Some(off), Some(len)) = (t.get("offset").and_then(|v| v.as_u64()), t.get("length").and_then(|v| v.as_u64())) else { continue };
            if let Some(end) = off.checked_add(len).filter(|&e| e <= payload.len() as u64) {
                t["crc32"] = crc32fast::hash(&payload[off as usize..end as usize]).into();
            }
        }
    }
    let header = serde_json::to_vec(&json).expect("a Value serializes");
    let new_p = (PRELUDE_LEN + header.len()).div_ceil(ALIGN) * ALIGN;
    let mut out = bytes[..PRELUDE_LEN].to_vec();
    out[16..24].copy_from_slice(&(header.len() as u64).to_le_bytes());
    out[24..32].copy_from_slice(&(new_p as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.resize(new_p, 0);
    out.extend_from_slice(payload);
    with_header_crc(&out)
}

/// The reader on arbitrary bytes. The first byte picks what is fixed up before opening: nothing,
/// the header CRC, or every checksum. Oracles: a blob that opens binds as a model (the header
/// checks are complete), and one opened with checksums verifies again.
pub fn blob_open(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => with_header_crc(rest),
        _ => with_valid_checksums(rest),
    };
    for verify in [Verify::Checksums, Verify::SkipChecksums] {
        let Ok(blob) = Blob::from_bytes("fuzz input", &bytes, verify) else { continue };
        if verify == Verify::Checksums {
            blob.verify().expect("a blob that opened with its checksums verifies again");
        } else {
            let _ = blob.verify();
        }
        for t in &blob.header().tensors {
            let v = blob.tensor(&t.name).expect("listed tensors exist");
            let _ = (v.f32s().is_ok(), v.f16s().is_ok(), v.i8s().is_ok(), v.i32s().is_ok());
        }
        if let Err(e) = Model::from_blob(blob) {
            panic!("a blob that passed validation does not bind as a model: {e}");
        }
    }
}

/// A small network chosen by 8 bytes (width, heads, depth, MLP, classes, patch grid, distillation,
/// precision, LayerNorm epsilon, kernel set).
pub fn config_from(b: &[u8; 8]) -> (VitConfig, &'static str, &'static str) {
    let embed_dim = 8 * (1 + b[0] as usize % 3);
    let heads: Vec<usize> = [1, 2, 4, 8].into_iter().filter(|h| embed_dim % h == 0).collect();
    let patch_size = [4, 8][b[5] as usize & 1];
    let cfg = VitConfig {
        embed_dim,
        num_heads: heads[b[1] as usize % heads.len()],
        depth: 1 + b[2] as usize % 2,
        mlp_hidden: 8 * (1 + b[3] as usize % 4),
        num_classes: 1 + b[4] as usize % 12,
        patch_size,
        image_size: patch_size * (1 + (b[5] as usize >> 1) % 3),
        distilled: b[5] & 0x10 != 0,
        layer_norm_eps: [1e-6, 1e-12, 0.5][((b[7] >> 1) % 3) as usize],
        ..tiny_config(1)
    };
    let precision = ["f32", "f16", "int8"][b[6] as usize % 3];
    let kernels = if b[7] & 1 == 1 { "scalar" } else { "auto" };
    (cfg, precision, kernels)
}

/// A valid blob of the network the first 8 bytes choose, its weights XOR-ed with the other bytes
/// (NaN, infinities, huge and subnormal values all reachable), checksums made to hold, opened and
/// run once on an input built from the same bytes. Oracles: such a blob opens, binds and runs
/// without error, and the logits have the right length.
pub fn blob_forward(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<8>() else { return };
    let (cfg, precision, kernels) = config_from(head);
    let writer = random_blob_in(&cfg, 7, precision);
    let mut bytes = writer.to_bytes();
    let p = u64_at(&bytes, 24) as usize;
    let mut k = 0usize;
    if !rest.is_empty() {
        // Only tensor bytes: the padding must stay zero.
        for t in &Blob::from_bytes("writer output", &bytes, Verify::Checksums).expect("the writer's blob opens").header().tensors.clone() {
            for b in &mut bytes[p + t.offset as usize..p + (t.offset + t.length) as usize] {
                *b ^= rest[k % rest.len()];
                k += 1;
            }
        }
    }
    let bytes = with_valid_checksums(&bytes);
    let blob = Blob::from_bytes("fuzzed weights", &bytes, Verify::Checksums).expect("weights are not validated by value");
    let model = Model::from_blob(blob).expect("binds");
    let mut engine = NativeEngine::new(&model, &EngineOptions { kernels: kernels.into(), threads: 1, ..Default::default() }).expect("engine");
    let input: Vec<f32> = (0..cfg.input_len())
        .map(|i| match rest.get(i % rest.len().max(1)).copied().unwrap_or(128) {
            0xff => f32::NAN,
            0xfe => f32::INFINITY,
            0xfd => -1e30,
            b => (b as f32 - 128.0) / 32.0,
        })
        .collect();
    let mut logits = vec![0f32; cfg.num_classes];
    engine.infer(&input, &mut logits).expect("the forward pass runs on any weights");
}
