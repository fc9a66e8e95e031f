//! The whole torch zip reader (zip archive, data.pkl, storages, tensor views, weights choice) on
//! arbitrary bytes: never a panic, an abort or an allocation beyond the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitedge_quant::checkpoint::{load_from_bytes, LoadOptions, WeightsChoice};

fuzz_target!(|data: &[u8]| {
    for weights in [WeightsChoice::Auto, WeightsChoice::Raw] {
        let _ = load_from_bytes("fuzz.ckpt", data, &LoadOptions { weights, ..Default::default() });
    }
});
