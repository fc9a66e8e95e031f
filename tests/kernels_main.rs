//! The kernel checks of `tests/kernels.rs`, run on the main thread by a plain `main` (no libtest,
//! which runs each test on a spawned thread). CI runs this under qemu-aarch64 for each emulated CPU,
//! where creating threads is not possible on our sandboxes. Prints `N passed, N failed`.

mod kernel_checks;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn main() {
    let cases = std::env::var("VITEDGE_KERNEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    // A fresh runner per property: a `TestRunner` counts successes across `run` calls, so a shared
    // one would run every property after the first with zero cases.
    let runner = || TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let shape = (1usize..40, 1usize..70, 1usize..300, 0usize..9, 0usize..5, any::<bool>(), 0u8..3, any::<u64>());
    let mut results: Vec<(&str, Result<(), String>)> = Vec::new();
    let r = runner().run(&shape, |(m, n, k, pa, pc, b, ep, seed)| kernel_checks::gemm_float(m, n, k, pa, pc, b, ep, seed).map_err(TestCaseError::fail));
    results.push(("gemm_f32_and_f16_match_scalar", r.map_err(|e| e.to_string())));
    // Past the aarch64 f16 GEMM's widening buffer (k > 1024: the per-k-step widening path).
    results.push(("gemm_f16_long_k_matches_scalar", kernel_checks::gemm_float(7, 21, 1030, 1, 2, true, 2, 5)));
    let r = runner().run(&shape, |(m, n, k, pa, pc, b, ep, seed)| kernel_checks::gemm_u8i8(m, n, k, pa, pc, b, ep, seed).map_err(TestCaseError::fail));
    results.push(("gemm_u8i8_matches_scalar", r.map_err(|e| e.to_string())));
    let r = runner().run(&(1usize..40, 1usize..70, 1usize..300, 0usize..5, 0usize..5, any::<u64>()), |(m, n, k, pa, pc, seed)| {
        kernel_checks::gemm_bf16(m, n, k, pa, pc, seed).map(|_| ()).map_err(TestCaseError::fail)
    });
    results.push(("gemm_bf16_matches_scalar", r.map_err(|e| e.to_string())));
    let r = runner().run(&(1usize..900, 0.01f32..3.0, any::<u64>(), any::<bool>()), |(len, scale, seed, big)| {
        kernel_checks::vector_ops(len, scale, seed, big).map_err(TestCaseError::fail)
    });
    results.push(("vector_ops_match_scalar", r.map_err(|e| e.to_string())));
    let r = runner().run(&(1usize..11, 1usize..300, 0usize..5, any::<u64>(), any::<bool>()), |(rows, k, pad, seed, special)| {
        kernel_checks::row_ops(rows, k, pad, seed, special).map_err(TestCaseError::fail)
    });
    results.push(("row_kernels_equal_the_one_row_kernels", r.map_err(|e| e.to_string())));
    let r = runner().run(&(1usize..70, 1usize..100, 0usize..5, any::<u64>(), any::<bool>()), |(n, k, pad, seed, special)| {
        kernel_checks::attention_packing(n, k, pad, seed, special).map_err(TestCaseError::fail)
    });
    results.push(("attention_packing_matches_scalar", r.map_err(|e| e.to_string())));
    results.push(("gelu_is_exact_over_its_range_and_extremes", kernel_checks::gelu_range()));
    results.push(("every_kernel_set_runs_the_whole_model_like_scalar", kernel_checks::whole_model(false, &[1])));
    let names: Vec<&str> = vitedge::kernels::Kernels::all_available().iter().map(|(n, _)| *n).collect();
    println!("kernel sets checked: {} ({cases} random cases per property)", names.join(", "));
    let mut failed = 0;
    for (name, r) in &results {
        match r {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!("{} passed, {failed} failed", results.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
