//! cargo-fuzz target `torch_zip`: see [`vitedge_fuzz::checkpoint::torch_zip`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vitedge_fuzz::checkpoint::torch_zip(data));
