//! cargo-fuzz target `unpickle`: see [`vitedge_fuzz::checkpoint::unpickle`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vitedge_fuzz::checkpoint::unpickle(data));
