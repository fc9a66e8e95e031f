//! The safetensors reader (header validation, tensor reads) on arbitrary bytes: never a panic, an
//! abort or an allocation beyond the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitedge_quant::checkpoint::{load_from_bytes, LoadOptions};

fuzz_target!(|data: &[u8]| {
    let _ = load_from_bytes("fuzz.safetensors", data, &LoadOptions::default());
});
