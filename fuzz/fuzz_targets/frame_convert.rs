//! cargo-fuzz target `frame_convert`: see [`vitedge_fuzz::frames::frame_convert`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vitedge_fuzz::frames::frame_convert(data));
