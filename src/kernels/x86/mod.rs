//! x86-64 kernels: one file per instruction set.

pub mod amx;
pub mod avx2;
pub mod avx512;
pub mod avxvnni;

use super::Kernels;

/// The x86-64 kernel sets this CPU supports, fastest first.
pub fn kernel_sets() -> Vec<(&'static str, Kernels)> {
    let mut v = Vec::new();
    if let (Some(amx), Some(k)) = (amx::Amx::detect(), avx512::Avx512::detect()) {
        v.push(("amx", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: amx, vector: k }));
    }
    if let Some(k) = avx512::Avx512::detect() {
        v.push(("avx512", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: k, vector: k }));
    }
    if let Some(k) = avx2::Avx2::detect() {
        if let Some(vnni) = avxvnni::AvxVnni::detect() {
            v.push(("avxvnni", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: vnni, vector: k }));
        }
        v.push(("avx2", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: k, vector: k }));
    }
    v
}
