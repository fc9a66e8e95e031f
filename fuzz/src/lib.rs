//! Fuzz harnesses of vitedge. Each `fuzz_targets/<name>.rs` calls one function here; the test
//! suites include these modules by path (`tests/fuzz_regressions.rs`; `quant/tests/hostile.rs` for
//! `checkpoint`) and run every committed crash input (`tests/fixtures/fuzz/<name>/`) through the
//! same function.
//! A harness panics only on a real defect: a panic, an abort or an assertion failure here is a bug.

pub mod blob;
pub mod checkpoint;
pub mod frames;
pub mod images;
