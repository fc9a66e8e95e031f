//! cargo-fuzz target `image_decode`: see [`vitedge_fuzz::images::image_decode`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vitedge_fuzz::images::image_decode(data));
