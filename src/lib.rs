//! vitedge: quantized Vision Transformer inference for edge devices.
//!
//! Layers, bottom up: [`blob`] (the memory-mapped weight file), [`model`] (architecture and zero-copy
//! weight views), [`kernels`] (one trait per kernel kind, one file per instruction set),
//! [`engine`] (the native forward pass and the tract-core oracle), [`preprocess`] (timm-identical
//! image preprocessing) and [`classify`] (top-K results); [`session`] puts them together for
//! embedding (the Python package and the C library are built on it).

pub mod blob;
pub mod classify;
pub mod engine;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod preprocess;
pub mod quant;
pub mod session;
pub mod stream;
