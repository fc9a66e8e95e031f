//! aarch64 kernels: one file per instruction set.

pub mod neon;
