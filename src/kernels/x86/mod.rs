//! x86-64 kernels: one file per instruction set.

pub mod avx512;
