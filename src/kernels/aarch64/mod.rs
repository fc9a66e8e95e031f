//! aarch64 kernels: one file per instruction set.
//!
//! Sets, fastest first (each is registered only when the CPU has its features):
//! - `i8mm`: int8 GEMM with `usmmla` (FEAT_I8MM);
//! - `dotprod`: int8 GEMM with `sdot` by element (FEAT_DotProd: Cortex-A76 / Pi 5, A78AE / Orin);
//! - `neon`: plain Armv8.0 NEON for every kind (Cortex-A72 / Pi 4, A57 / Jetson Nano, A53).
//!
//! The faster sets reuse the NEON f32, f16-weight and element-wise kernels. Every set runs the
//! attention of int8 models in int8 (`int8_attention`: `q·kᵀ` and `p·v` on its int8 GEMM, see
//! `engine::native::attention_int8`): no core of the boards has bf16 dot products, and f32 attention
//! would cost as much as all int8 linear layers together on an A76 (8 f32 FMAs per cycle against
//! 32 int8 MACs with `sdot`). There is no separate
//! fp16 set: the f16-weight GEMM widens each weight panel with `fcvtl` (Armv8.0) once and
//! accumulates in f32 everywhere, also on CPUs with FEAT_FP16 (see `neon.rs`). Native f16 arithmetic was rejected on
//! accuracy. Simulated k = 768 dot products (N(0,1) activations, N(0,1/k) f16 weights, 60 trials;
//! error relative to 1 + |exact|) against the property tests' tolerance 2e-6·√k = 5.5e-5:
//! `fmla .8h` (f16 products and sums) median 1.2e-3, 59/60 over; f16 products in 8-term f16 partial
//! sums widened to f32: median 1.6e-4, 48/60 over; `fmlal` (FEAT_FHM, exact products of f16-rounded
//! activations, f32 sums): median 5.9e-5, 31/60 over; `fcvtl` + f32 FMA: max 8.1e-7, 0/60 over.
//! The conversion costs 4 `fcvtl` per 16 weights, shared by every row block of the panel.

pub mod dotprod;
pub mod i8mm;
pub mod neon;

use super::Kernels;

/// The aarch64 kernel sets this CPU supports, fastest first.
pub fn kernel_sets() -> Vec<(&'static str, Kernels)> {
    let mut v = Vec::new();
    let Some(neon) = neon::Neon::detect() else {
        return v;
    };
    let base = Kernels { gemm_f32: neon, gemm_f16: neon, gemm_u8i8: neon, gemm_bf16: None, int8_attention: true, vector: neon };
    if let Some(k) = i8mm::I8mm::detect() {
        v.push(("i8mm", Kernels { gemm_u8i8: k, ..base }));
    }
    if let Some(k) = dotprod::Dotprod::detect() {
        v.push(("dotprod", Kernels { gemm_u8i8: k, ..base }));
    }
    v.push(("neon", base));
    v
}
