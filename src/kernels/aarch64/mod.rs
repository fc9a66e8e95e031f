//! aarch64 kernels: one file per instruction set.

pub mod neon;

use super::Kernels;

/// The aarch64 kernel sets this CPU supports, fastest first.
pub fn kernel_sets() -> Vec<(&'static str, Kernels)> {
    let mut v = Vec::new();
    if let Some(k) = neon::Neon::detect() {
        v.push(("neon", Kernels { gemm_f32: k, gemm_f16: k, gemm_u8i8: k, vector: k }));
    }
    v
}
