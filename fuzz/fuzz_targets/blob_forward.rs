//! cargo-fuzz target `blob_forward`: see [`vitedge_fuzz::blob::blob_forward`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vitedge_fuzz::blob::blob_forward(data));
