//! The checkpoint readers of vitedge-quant: the restricted unpickler (`unpickle`), the whole torch
//! zip reader (`torch_zip`) and the safetensors reader (`safetensors`). Each must turn any bytes
//! into a result or a clear error: never a panic, an abort or unbounded work (the readers' limits).
//! Uses only `vitedge_quant`, so `quant/tests/hostile.rs` includes this file by path and replays
//! the committed crash inputs (`tests/fixtures/fuzz/<target>/`) through the same functions.

use vitedge_quant::checkpoint::{load_from_bytes, pickle, LoadOptions, WeightsChoice};

/// The unpickler; a result describes and debug-prints without recursing (cycles, deep nesting).
pub fn unpickle(data: &[u8]) {
    if let Ok(p) = pickle::load(data) {
        let _ = p.describe(p.root);
        let _ = format!("{p:?}");
    }
}

/// The torch zip reader (zip archive, data.pkl, storages, tensor views, weights choice).
pub fn torch_zip(data: &[u8]) {
    for weights in [WeightsChoice::Auto, WeightsChoice::Raw] {
        let _ = load_from_bytes("fuzz.ckpt", data, &LoadOptions { weights, ..Default::default() });
    }
}

/// The safetensors reader (header validation, tensor reads).
pub fn safetensors(data: &[u8]) {
    let _ = load_from_bytes("fuzz.safetensors", data, &LoadOptions::default());
}
