//! x86-64 kernels: one file per instruction set.

pub mod avx512;

use super::Kernels;

/// The x86-64 kernel sets this CPU supports, fastest first.
pub fn kernel_sets() -> Vec<(&'static str, Kernels)> {
    let mut v = Vec::new();
    if let Some(k) = avx512::Avx512::detect() {
        v.push(("avx512", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: k, vector: k }));
    }
    v
}
