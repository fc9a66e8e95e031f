//! cargo-fuzz target `blob_open`: see [`vitedge_fuzz::blob::blob_open`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vitedge_fuzz::blob::blob_open(data));
