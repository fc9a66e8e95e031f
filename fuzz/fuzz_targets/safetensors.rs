//! cargo-fuzz target `safetensors`: see [`vitedge_fuzz::checkpoint::safetensors`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vitedge_fuzz::checkpoint::safetensors(data));
