//! The restricted unpickler on arbitrary bytes: never a panic, an abort or unbounded work; a
//! result describes and debug-prints without recursing (cycles, deep nesting).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vitedge_quant::checkpoint::pickle;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = pickle::load(data) {
        let _ = p.describe(p.root);
        let _ = format!("{p:?}");
    }
});
