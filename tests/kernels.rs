//! Every kernel set this CPU supports, against the scalar reference, on random shapes with ragged
//! edges (columns not multiples of 16, reductions not multiples of 4), strides and all epilogues.
//! The checks live in `kernel_checks/`; `kernels_main.rs` runs the same checks without threads.

mod kernel_checks;

use proptest::prelude::*;
use vitedge::kernels::Kernels;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn gemm_f32_and_f16_match_scalar(m in 1usize..40, n in 1usize..70, k in 1usize..300, pad_a in 0usize..5, pad_c in 0usize..5,
                                      with_bias: bool, ep in 0u8..3, seed: u64) {
        kernel_checks::gemm_float(m, n, k, pad_a, pad_c, with_bias, ep, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn gemm_u8i8_matches_scalar(m in 1usize..40, n in 1usize..70, k in 1usize..300, pad_a in 0usize..9, pad_c in 0usize..5,
                                with_bias: bool, ep in 0u8..3, seed: u64) {
        kernel_checks::gemm_u8i8(m, n, k, pad_a, pad_c, with_bias, ep, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn gemm_bf16_matches_scalar(m in 1usize..40, n in 1usize..70, k in 1usize..300, pad_a in 0usize..5, pad_c in 0usize..5, seed: u64) {
        kernel_checks::gemm_bf16(m, n, k, pad_a, pad_c, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn attention_packing_matches_scalar(n in 1usize..70, k in 1usize..100, pad in 0usize..5, seed: u64, special: bool) {
        kernel_checks::attention_packing(n, k, pad, seed, special).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn row_kernels_equal_the_one_row_kernels(rows in 1usize..11, k in 1usize..300, pad in 0usize..5, seed: u64, special: bool) {
        kernel_checks::row_ops(rows, k, pad, seed, special).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn vector_ops_match_scalar(len in 1usize..900, scale in 0.01f32..3.0, seed: u64, big: bool) {
        kernel_checks::vector_ops(len, scale, seed, big).map_err(TestCaseError::fail)?;
    }
}

/// A float GEMM with k past the aarch64 f16 GEMM's widening buffer (k > 1024), so its per-k-step
/// widening path is checked as well.
#[test]
fn gemm_f16_long_k_matches_scalar() {
    kernel_checks::gemm_float(7, 21, 1030, 1, 2, true, 2, 5).unwrap();
}

/// The AMX kernels run a GEMM's last `m % 16` rows as one zero-padded tile when a row fits their
/// 4 KiB row buffer (k ≤ 4096 int8, ≤ 2048 bf16) and hand longer rows to the AVX-512 kernels:
/// both sides of that limit, with ragged rows and a k tail.
#[test]
fn amx_ragged_rows_match_scalar_on_both_sides_of_the_row_buffer() {
    for (m, k) in [(21, 2048), (21, 2050), (37, 4096), (19, 4100)] {
        kernel_checks::gemm_u8i8(m, 40, k, 3, 1, true, 2, k as u64).unwrap();
        kernel_checks::gemm_bf16(m, 40, k, 2, 1, k as u64).unwrap();
    }
}

/// The AMX int8 GEMM finishes its sums with the AVX-512 kernel's arithmetic: the same bits on
/// ViT-Tiny's shapes and every epilogue, also at the largest sums k allows on both sides of k = 514
/// (zero point subtracted in f32 below, in i32 above) and with ragged rows.
#[test]
fn amx_int8_gemm_equals_the_avx512_kernel_bit_for_bit() {
    let mut compared = 0;
    for (m, n, k, extreme) in [(197, 576, 192, false), (197, 192, 768, false), (37, 48, 512, true), (37, 48, 516, true), (21, 40, 2048, true), (5, 17, 64, false)] {
        for ep in 0..3 {
            compared += kernel_checks::gemm_u8i8_same_bits("amx", "avx512", m, n, k, ep, extreme, (m * k) as u64).unwrap() as usize;
        }
    }
    let has_amx = Kernels::available().contains(&"amx");
    assert_eq!(compared > 0, has_amx, "compared {compared} GEMMs; AMX kernels available: {has_amx}");
}

/// bf16 GEMMs that round their results to bf16 rows (fc1 with GELU feeding fc2, in bf16 blobs) on
/// ViT-Tiny's shapes split like one and two threads, ragged rows, a row-tile-only case, and shapes the
/// AMX path declines (k tail, fewer than 16 rows): where a set runs it, the same bits as its `gemm`
/// plus `convert_rows`.
#[test]
fn gemm_to_bf16_equals_gemm_then_convert() {
    let mut ran = 0;
    for (m, n, k, pad_a, pad_c) in [(197, 768, 192, 0, 0), (112, 768, 192, 0, 0), (85, 768, 192, 0, 0), (32, 40, 64, 2, 3), (21, 17, 96, 0, 1), (20, 40, 70, 0, 0), (9, 40, 64, 0, 0)] {
        for gelu in [false, true] {
            ran += kernel_checks::gemm_to_bf16(m, n, k, pad_a, pad_c, gelu, (m * n + k) as u64).unwrap();
        }
    }
    let has_amx = Kernels::available().contains(&"amx");
    assert!(ran > 0 || !has_amx, "the AMX kernels ran no bf16-output GEMM");
}

/// Attention-sized bf16 GEMMs (QKᵀ and PV of ViT-Tiny, split like two threads do), where the AMX
/// kernel runs full tiles, its k tail and ragged rows in one call.
#[test]
fn gemm_bf16_matches_scalar_on_attention_shapes() {
    for (m, n, k) in [(197, 197, 64), (112, 197, 64), (85, 64, 197), (197, 64, 197), (48, 32, 64)] {
        let compared = kernel_checks::gemm_bf16(m, n, k, 0, 0, m as u64).unwrap();
        #[cfg(target_arch = "x86_64")]
        assert!(compared >= 1 || !is_x86_feature_detected!("avx512bf16"), "no bf16 kernel was compared");
        let _ = compared;
    }
}

/// The linear layers of a ViT-Tiny bf16 blob (qkv, fc1 with GELU, fc2 and proj adding into the
/// residual, the head's single row), split like two threads do, with and without bias; the last
/// shape has a k tail, which the AMX kernel hands to AVX512-BF16 when there is an epilogue.
#[test]
fn gemm_bf16_matches_scalar_on_linear_shapes() {
    for (m, n, k, seed) in [(197, 576, 192, 0), (99, 768, 192, 4), (98, 192, 768, 2), (197, 192, 192, 3), (1, 1000, 192, 6), (37, 40, 70, 10)] {
        let compared = kernel_checks::gemm_bf16(m, n, k, 0, 1, seed).unwrap();
        #[cfg(target_arch = "x86_64")]
        assert!(compared >= 1 || !is_x86_feature_detected!("avx512bf16"), "no bf16 kernel was compared");
        let _ = compared;
    }
}

#[test]
fn gelu_is_exact_over_its_range_and_extremes() {
    kernel_checks::gelu_range().unwrap();
}

#[test]
fn every_kernel_set_runs_the_whole_model_like_scalar() {
    kernel_checks::whole_model(true, &[1, 2]).unwrap();
}
