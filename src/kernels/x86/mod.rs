//! x86-64 kernels: one file per instruction set.

pub mod amx;
pub mod avx2;
pub mod avx512;
pub mod avx512bf16;
pub mod avxvnni;

use super::{GemmBf16, Kernels};

/// The x86-64 kernel sets this CPU supports, fastest first.
pub fn kernel_sets() -> Vec<(&'static str, Kernels)> {
    let mut v = Vec::new();
    let bf16 = avx512bf16::Avx512Bf16::detect().map(|k| k as &'static dyn GemmBf16);
    if let (Some(amx), Some(k)) = (amx::Amx::detect(), avx512::Avx512::detect()) {
        let amx_bf16 = amx::AmxBf16::detect().map(|k| k as &'static dyn GemmBf16).or(bf16);
        v.push(("amx", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: amx, gemm_bf16: amx_bf16, int8_attention: false, vector: k }));
    }
    if let Some(k) = avx512::Avx512::detect() {
        v.push(("avx512", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: k, gemm_bf16: bf16, int8_attention: false, vector: k }));
    }
    if let Some(k) = avx2::Avx2::detect() {
        if let Some(vnni) = avxvnni::AvxVnni::detect() {
            // int8 attention, as on aarch64: `vpdpbusd` takes four times the multiply-adds per
            // instruction of f32 FMA (the whole int8 pass 0.84× of f32 attention's, 1 thread).
            v.push(("avxvnni", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: vnni, gemm_bf16: None, int8_attention: true, vector: k }));
        }
        // f32 attention: without VNNI the int8 GEMM widens to `vpmaddwd`, and int8 attention is
        // no faster (0.99× of f32 attention's pass), so the more accurate one stays.
        v.push(("avx2", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: k, gemm_bf16: None, int8_attention: false, vector: k }));
    }
    v
}
