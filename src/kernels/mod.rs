//! Compute kernels behind one trait per kind (f32 GEMM, f16-weight GEMM, u8×i8 GEMM, vector ops),
//! with one file per instruction set. [`scalar`] is the reference every SIMD kernel is tested against.
//!
//! All GEMMs compute `out[i, j] = epilogue(bias[j] + Σ_kk a[i, kk] · w[j, kk])` for `i < m`, `j < n`,
//! with `a` row-major (row stride `lda`), `w` pre-packed in 16-column panels (see
//! [`crate::blob::Layout`]) and `out` row-major (row stride `ldc`).
//!
//! [`GemmBf16`] runs on CPUs with bf16 dot products (AMX-BF16, AVX512-BF16): the linear layers of
//! bf16 blobs (weights stored in `Panel16x2`) and the attention of int8 and bf16 models (both
//! operands activations converted to bf16 at run time, see [`pack::panel16x2_from_rows`]). The
//! left operand is bf16, accumulation stays f32.

pub mod cpuinfo;
pub mod pack;
pub mod scalar;
#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use half::{bf16, f16};

/// What a GEMM does with each result before storing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = r`
    Store,
    /// `out += r` (fused residual add)
    Accumulate,
    /// `out = gelu(r)` with the exact erf GELU
    Gelu,
}

/// Operands of a GEMM whose weights are `W` values in the `Panel16` layout.
#[derive(Clone, Copy)]
pub struct GemmArgs<'a, W> {
    /// Rows of `a` and `out`.
    pub m: usize,
    /// Columns of `out` (rows of the logical weight matrix).
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Left operand, `m` rows of at least `k` values, `lda` apart.
    pub a: &'a [f32],
    /// Row stride of `a`.
    pub lda: usize,
    /// Packed weights: `ceil(n/16)` panels of `k × 16`.
    pub w: &'a [W],
    /// Optional bias of length `n`.
    pub bias: Option<&'a [f32]>,
    /// What to do with each result.
    pub epilogue: Epilogue,
}

/// Operands of an int8 GEMM: u8 activations with a per-row scale and zero point, i8 weights
/// (`Panel16x4` layout) with a per-column scale. Result: `a_scale[i] · w_scale[j] ·
/// (Σ a[i,kk]·w[j,kk] − a_zero[i]·w_sum[j]) + bias[j]`.
#[derive(Clone, Copy)]
pub struct GemmU8I8Args<'a> {
    /// Rows of `a` and `out`.
    pub m: usize,
    /// Columns of `out`.
    pub n: usize,
    /// Reduction length; `a` rows hold `round_up(k, 4)` bytes (padding bytes are ignored because the
    /// matching weights are zero).
    pub k: usize,
    /// Quantized activations.
    pub a: &'a [u8],
    /// Row stride of `a` in bytes (≥ `round_up(k, 4)`).
    pub lda: usize,
    /// Per-row activation scale.
    pub a_scale: &'a [f32],
    /// Per-row activation zero point.
    pub a_zero: &'a [i32],
    /// Packed weights.
    pub w: &'a [i8],
    /// Per-column weight scale (length `n`).
    pub w_scale: &'a [f32],
    /// Per-column sum of the int8 weights (length `n`).
    pub w_sum: &'a [i32],
    /// Optional bias of length `n`.
    pub bias: Option<&'a [f32]>,
    /// What to do with each result.
    pub epilogue: Epilogue,
}

impl<W> GemmArgs<'_, W> {
    /// Panics with a message unless every operand is long enough for `m`, `n`, `k` and the strides
    /// (`out` with row stride `ldc`). Every kernel calls this before touching memory unchecked.
    pub fn check(&self, out: &[f32], ldc: usize) {
        let GemmArgs { m, n, k, a, lda, w, bias, .. } = *self;
        assert!(m == 0 || (lda >= k && a.len() >= (m - 1) * lda + k), "a is too short");
        assert!(w.len() >= n.div_ceil(16) * 16 * k, "packed weights are too short");
        assert!(m == 0 || (ldc >= n && out.len() >= (m - 1) * ldc + n), "out is too short");
        assert!(bias.is_none_or(|b| b.len() >= n), "bias is too short");
    }
}

impl GemmU8I8Args<'_> {
    /// Panics with a message unless every operand is long enough for `m`, `n`, `k` and the strides;
    /// returns the padded reduction length `round_up(k, 4)`.
    pub fn check(&self, out: &[f32], ldc: usize) -> usize {
        let GemmU8I8Args { m, n, k, a, lda, a_scale, a_zero, w, w_scale, w_sum, bias, .. } = *self;
        let kp = crate::blob::round_up(k, 4);
        assert!(m == 0 || (lda >= kp && a.len() >= (m - 1) * lda + kp), "a is too short");
        assert!(a_scale.len() >= m && a_zero.len() >= m, "activation parameters are too short");
        assert!(w.len() >= n.div_ceil(16) * 16 * kp, "packed weights are too short");
        assert!(w_scale.len() >= n && w_sum.len() >= n && bias.is_none_or(|b| b.len() >= n), "per-column data too short");
        assert!(m == 0 || (ldc >= n && out.len() >= (m - 1) * ldc + n), "out is too short");
        kp
    }
}

/// Operands of a bf16 × bf16 → f32 GEMM: `out[i, j] = epilogue(bias[j] + Σ_kk a[i, kk] · w[j, kk])`.
/// Reductions run over `kp = round_up(k, 2)` values: `a` rows hold `kp` values (a padding
/// value must be finite, it meets zero weights) and `w` is in the `Panel16x2` layout: `ceil(n/16)`
/// panels of `kp/2` pair rows, each pair row 16 columns × 2 consecutive k values (32 bf16, 64
/// bytes — the operand layout of `vdpbf16ps` and of AMX `tdpbf16ps` B tiles).
#[derive(Clone, Copy)]
pub struct GemmBf16Args<'a> {
    /// Rows of `a` and `out`.
    pub m: usize,
    /// Columns of `out`.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Left operand, `m` rows of at least `round_up(k, 2)` values, `lda` apart.
    pub a: &'a [bf16],
    /// Row stride of `a` (≥ `round_up(k, 2)`).
    pub lda: usize,
    /// Packed right operand (`Panel16x2`).
    pub w: &'a [bf16],
    /// Optional bias of length `n`.
    pub bias: Option<&'a [f32]>,
    /// What to do with each result.
    pub epilogue: Epilogue,
}

impl GemmBf16Args<'_> {
    /// Panics with a message unless every operand is long enough; returns `round_up(k, 2)`.
    pub fn check(&self, out: &[f32], ldc: usize) -> usize {
        self.check_len(out.len(), ldc)
    }

    /// [`GemmBf16Args::check`] for an output of `out_len` values of any type.
    pub fn check_len(&self, out_len: usize, ldc: usize) -> usize {
        let GemmBf16Args { m, n, k, a, lda, w, bias, .. } = *self;
        let kp = crate::blob::round_up(k, 2);
        assert!(m == 0 || (lda >= kp && a.len() >= (m - 1) * lda + kp), "a is too short");
        assert!(w.len() >= n.div_ceil(16) * 16 * kp, "packed operand is too short");
        assert!(m == 0 || (ldc >= n && out_len >= (m - 1) * ldc + n), "out is too short");
        assert!(bias.is_none_or(|b| b.len() >= n), "bias is too short");
        kp
    }
}

/// f32 × f32 GEMM.
pub trait GemmF32: Send + Sync {
    /// Instruction-set name, e.g. `avx512`.
    fn name(&self) -> &'static str;
    /// Computes `args` into `out` (row stride `ldc`).
    fn gemm(&self, args: &GemmArgs<'_, f32>, out: &mut [f32], ldc: usize);
}

/// f32 activations × f16 weights GEMM (f32 accumulation).
pub trait GemmF16: Send + Sync {
    /// Instruction-set name.
    fn name(&self) -> &'static str;
    /// Computes `args` into `out` (row stride `ldc`).
    fn gemm(&self, args: &GemmArgs<'_, f16>, out: &mut [f32], ldc: usize);
}

/// u8 activations × i8 weights GEMM (i32 accumulation, f32 epilogue).
pub trait GemmU8I8: Send + Sync {
    /// Instruction-set name.
    fn name(&self) -> &'static str;
    /// Computes `args` into `out` (row stride `ldc`).
    fn gemm(&self, args: &GemmU8I8Args<'_>, out: &mut [f32], ldc: usize);
}

/// bf16 × bf16 GEMM with f32 accumulation (linear layers of bf16 blobs, attention of int8 and bf16
/// models).
pub trait GemmBf16: Send + Sync {
    /// Instruction-set name.
    fn name(&self) -> &'static str;
    /// Computes `args` into `out` (row stride `ldc`).
    fn gemm(&self, args: &GemmBf16Args<'_>, out: &mut [f32], ldc: usize);
    /// [`GemmBf16::gemm`] with a `Store` or `Gelu` epilogue whose results are rounded to bf16 rows of
    /// `out` (`ldc` apart; columns from `n` on are not written) for the next bf16 GEMM to read:
    /// the same bits as `gemm` into f32 rows followed by [`GemmBf16::convert_rows`], without
    /// writing and reading back the f32 rows. Returns `false`, having written nothing, where the
    /// set has no such path for these shapes or this epilogue (the caller then runs those two).
    fn gemm_to_bf16(&self, args: &GemmBf16Args<'_>, out: &mut [bf16], ldc: usize) -> bool {
        let _ = (args, out, ldc);
        false
    }
    /// The LayerNorm of `rows` rows of `d` values (`stride` apart in `x`; `norm` is gamma, beta and
    /// eps) rounded to bf16 rows of `out` (`out_stride ≥ d` apart, zero from `d` on): by default
    /// `vector.layer_norm_rows` into `h` (same layout as `x`), then [`GemmBf16::convert_rows`].
    /// The x86 sets fuse the two without writing `h`, with the same bits as `Avx512`'s vector
    /// kernels (the only ones they are bundled with).
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_to_bf16(&self, vector: &dyn VectorOps, x: &[f32], rows: usize, d: usize, stride: usize, norm: (&[f32], &[f32], f32), h: &mut [f32], out: &mut [bf16], out_stride: usize) {
        vector.layer_norm_rows(x, rows, d, stride, norm.0, norm.1, norm.2, h);
        self.convert_rows(h, rows, d, stride, out, out_stride);
    }
    /// [`pack::rows_to_bf16`]: f32 rows to bf16 rows (kernels with conversion instructions
    /// override it; results are bit-identical).
    fn convert_rows(&self, src: &[f32], rows: usize, k: usize, src_stride: usize, dst: &mut [bf16], dst_stride: usize) {
        pack::rows_to_bf16(src, rows, k, src_stride, dst, dst_stride);
    }
    /// [`pack::panel16x2_from_rows`], bit-identical.
    fn pack_rows(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
        pack::panel16x2_from_rows(src, n, k, row_stride, dst);
    }
    /// [`pack::panel16x2_from_cols`], bit-identical.
    fn pack_cols(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
        pack::panel16x2_from_cols(src, n, k, row_stride, dst);
    }
    /// Unnormalized softmax of attention scores: `out[i] = bf16(exp(x[i]·scale − max_j x[j]·scale))`
    /// for `i < x.len()`, zeros up to `out.len()`; returns `Σ out[i]` summed in f32 before rounding
    /// (the caller divides the `p·v` rows by it, so normalization costs `head_dim` multiplies instead
    /// of a pass over the scores).
    fn softmax_to_bf16(&self, x: &[f32], scale: f32, out: &mut [bf16]) -> f32 {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
        let mut sum = 0f64;
        for (o, &v) in out.iter_mut().zip(x) {
            let e = (v * scale - max).exp();
            sum += e as f64;
            *o = pack::to_bf16(e);
        }
        out[x.len()..].fill(bf16::ZERO);
        sum as f32
    }
    /// [`GemmBf16::softmax_to_bf16`] of `rows` score rows of `n` values (`x_stride` apart) into
    /// probability rows of `out` (`out_stride ≥ n` apart, each zero from `n` to `out_stride`); row
    /// `r`'s sum goes to `sums[r]`. SIMD sets may interleave rows; the results are the same bits as
    /// row by row.
    #[allow(clippy::too_many_arguments)]
    fn softmax_rows_to_bf16(&self, x: &[f32], rows: usize, n: usize, x_stride: usize, scale: f32, out: &mut [bf16], out_stride: usize, sums: &mut [f32]) {
        for r in 0..rows {
            sums[r] = self.softmax_to_bf16(&x[r * x_stride..r * x_stride + n], scale, &mut out[r * out_stride..(r + 1) * out_stride]);
        }
    }
}

/// Row-wise element-wise kernels.
pub trait VectorOps: Send + Sync {
    /// Instruction-set name.
    fn name(&self) -> &'static str;
    /// `out = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta` over one row.
    fn layer_norm(&self, x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]);
    /// Unnormalized softmax of one row: in place `x = exp(x·scale − max_j x[j]·scale)`; returns
    /// `Σ x` (the caller normalizes).
    fn softmax_exp(&self, x: &mut [f32], scale: f32) -> f32;
    /// In place `x = softmax(x·scale)` over one row: [`VectorOps::softmax_exp`], then every value
    /// times `1 / Σ`.
    fn softmax(&self, x: &mut [f32], scale: f32) {
        let inv = 1.0 / self.softmax_exp(x, scale);
        x.iter_mut().for_each(|v| *v *= inv);
    }
    /// In place exact (erf) GELU.
    fn gelu(&self, x: &mut [f32]);
    /// Asymmetric per-row quantization to u8: returns `(scale, zero_point)` with
    /// `x ≈ scale · (q − zero_point)`; the range always includes 0.
    fn quantize_u8(&self, x: &[f32], out: &mut [u8]) -> (f32, i32);
    /// [`VectorOps::layer_norm`] of `rows` rows of `d` values, `stride` apart in `x` and in `out`.
    /// SIMD sets may interleave rows (so that one row's reductions overlap another's); every row's
    /// result is the same bits as by `layer_norm`.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_rows(&self, x: &[f32], rows: usize, d: usize, stride: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        for r in 0..rows {
            self.layer_norm(&x[r * stride..r * stride + d], gamma, beta, eps, &mut out[r * stride..r * stride + d]);
        }
    }
    /// [`VectorOps::quantize_u8`] of `rows` rows of `k` values (`lda` apart) into rows of `out`
    /// `qlda ≥ k` bytes apart, each padded from `k` to `qlda` with its zero point; row `r`'s scale
    /// and zero point go to `scale[r]` and `zero[r]`. SIMD sets may interleave rows; the results
    /// are the same bits as by `quantize_u8`.
    #[allow(clippy::too_many_arguments)]
    fn quantize_u8_rows(&self, a: &[f32], rows: usize, k: usize, lda: usize, out: &mut [u8], qlda: usize, scale: &mut [f32], zero: &mut [i32]) {
        for r in 0..rows {
            let row = &mut out[r * qlda..(r + 1) * qlda];
            let (sc, z) = self.quantize_u8(&a[r * lda..r * lda + k], &mut row[..k]);
            row[k..].fill(z as u8);
            scale[r] = sc;
            zero[r] = z;
        }
    }
    /// The probabilities of int8 attention: `p = softmax(x · scale) ⊙ weight` (weights ≥ 0: the
    /// value scales of the tokens) quantized to u8 in `out` with zero point 0; returns the scale
    /// (`p ≈ scale · q`). `x` is scratch afterwards. SIMD sets fuse the passes; their result may
    /// differ from this reference by one level where a product rounds differently.
    /// int8 attention keys: [`pack::panel16x4_quantize_rows`] (one i8 scale per token, packed so
    /// that token `j` is GEMM column `j`). SIMD sets must give bit-identical results.
    #[allow(clippy::too_many_arguments)]
    fn quantize_pack_keys(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
        pack::panel16x4_quantize_rows(src, n, k, row_stride, dst, scale, sum)
    }
    /// int8 attention values: [`pack::panel16x4_quantize_cols_by_row`] (one i8 scale per token, the
    /// reduction index). SIMD sets must give bit-identical results.
    #[allow(clippy::too_many_arguments)]
    fn quantize_pack_values(&self, src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], row_scale: &mut [f32], sum: &mut [i32]) {
        pack::panel16x4_quantize_cols_by_row(src, n, k, row_stride, dst, row_scale, sum)
    }
    fn softmax_quantize_u8(&self, x: &mut [f32], scale: f32, weight: &[f32], out: &mut [u8]) -> f32 {
        self.softmax(x, scale);
        x.iter_mut().zip(weight).for_each(|(p, w)| *p *= w);
        // Rows whose largest product is negligible are zero (kernels that normalise after the max
        // would round such tiny values differently).
        if !(x.iter().fold(0f32, |m, &p| m.max(p)) >= PROB_ZERO) {
            out[..x.len()].fill(0);
            return 1.0;
        }
        self.quantize_u8(x, out).0
    }
}

/// A zeroed heap buffer whose first element sits on a 64-byte boundary (a `Vec` is only as aligned
/// as its element type, and glibc places large blocks 16 bytes into a page, so every 64-byte vector
/// load and store of a GEMM operand or output would straddle two cache lines).
pub struct Aligned<T> {
    storage: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` zeroed (default) values starting on a 64-byte boundary.
    pub fn zeroed(len: usize) -> Self {
        let spare = 64 / std::mem::size_of::<T>().max(1);
        let storage = vec![T::default(); len + spare];
        let start = storage.as_ptr().align_offset(64).min(spare);
        Aligned { storage, start, len }
    }
}

impl<T> Aligned<T> {
    /// Maps the whole pages of a buffer of 64 KiB or more now, in one `madvise(MADV_POPULATE_WRITE)`
    /// (Linux 5.14+; elsewhere, or if the kernel refuses, a no-op): a fresh zeroed allocation is
    /// otherwise mapped a page fault at a time by its first use, which on a VM costs more than a
    /// microsecond each.
    pub fn populate(&mut self) {
        #[cfg(target_os = "linux")]
        {
            const MADV_POPULATE_WRITE: libc::c_int = 23;
            let bytes = self.storage.len() * std::mem::size_of::<T>();
            if bytes < 1 << 16 {
                return;
            }
            let page = 4096;
            let start = (self.storage.as_ptr() as usize).next_multiple_of(page);
            let end = (self.storage.as_ptr() as usize + bytes) / page * page;
            if end > start {
                // SAFETY: the range lies inside this buffer's own allocation (rounded inwards to
                // whole pages); MADV_POPULATE_WRITE only faults pages in, leaving their contents
                // (zeros) as they are.
                unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_POPULATE_WRITE) };
            }
        }
    }
}

impl<T> Default for Aligned<T> {
    /// An empty buffer.
    fn default() -> Self {
        Aligned::empty()
    }
}

impl<T> Aligned<T> {
    /// An empty buffer (no allocation).
    pub const fn empty() -> Self {
        Aligned { storage: Vec::new(), start: 0, len: 0 }
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// The kernels one engine uses, chosen once at start-up.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// f32 GEMM.
    pub gemm_f32: &'static dyn GemmF32,
    /// f16-weight GEMM.
    pub gemm_f16: &'static dyn GemmF16,
    /// int8 GEMM.
    pub gemm_u8i8: &'static dyn GemmU8I8,
    /// bf16 GEMM on CPUs with bf16 dot products: linear layers of bf16 blobs and the attention
    /// of int8 and bf16 models. Without it (and in the scalar reference) attention runs in f32 and
    /// the native engine widens bf16 weights to f32 once and runs them on `gemm_f32`.
    pub gemm_bf16: Option<&'static dyn GemmBf16>,
    /// Whether int8 models run their attention matmuls in int8 by default (through `gemm_u8i8`)
    /// when there is no bf16 GEMM: set where that is faster than f32 attention and keeps the
    /// quantization suite's accuracy bounds.
    pub int8_attention: bool,
    /// Element-wise kernels.
    pub vector: &'static dyn VectorOps,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gemm_f32={} gemm_f16={} gemm_u8i8={} gemm_bf16={} int8_attention={} vector={}",
            self.gemm_f32.name(),
            self.gemm_f16.name(),
            self.gemm_u8i8.name(),
            self.gemm_bf16.map_or("none", |g| g.name()),
            if self.int8_attention { "yes" } else { "no" },
            self.vector.name()
        )
    }
}

impl Kernels {
    /// The portable scalar reference kernels.
    pub fn scalar() -> Kernels {
        Kernels {
            gemm_f32: &scalar::Scalar,
            gemm_f16: &scalar::Scalar,
            gemm_u8i8: &scalar::Scalar,
            gemm_bf16: None,
            int8_attention: false,
            vector: &scalar::Scalar,
        }
    }

    /// Every SIMD kernel set this CPU supports, fastest first, as `(name, kernels)`. Each
    /// instruction-set family registers its sets in its own module (`x86::kernel_sets`,
    /// `aarch64::kernel_sets`).
    pub fn simd_sets() -> Vec<(&'static str, Kernels)> {
        #[cfg(target_arch = "x86_64")]
        return x86::kernel_sets();
        #[cfg(target_arch = "aarch64")]
        return aarch64::kernel_sets();
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        return Vec::new();
    }

    /// The fastest kernels this CPU supports.
    pub fn auto() -> Kernels {
        Kernels::simd_sets().into_iter().next().map_or_else(Kernels::scalar, |(_, k)| k)
    }

    /// Kernels by name: `scalar`, `auto`, or an instruction-set name from [`Kernels::available`].
    pub fn by_name(name: &str) -> Result<Kernels, String> {
        match name {
            "scalar" => Ok(Kernels::scalar()),
            "auto" => Ok(Kernels::auto()),
            other => Kernels::simd_sets().into_iter().find(|(n, _)| *n == other).map(|(_, k)| k).ok_or_else(|| {
                format!("unknown or unsupported kernel set `{other}` on this CPU; available: {}", Kernels::available().join(", "))
            }),
        }
    }

    /// Names accepted by [`Kernels::by_name`] on this CPU.
    pub fn available() -> Vec<&'static str> {
        let mut v = vec!["auto", "scalar"];
        v.extend(Kernels::simd_sets().into_iter().map(|(n, _)| n));
        v
    }

    /// Every named kernel set this CPU supports (for tests that compare each with the reference).
    pub fn all_available() -> Vec<(&'static str, Kernels)> {
        let mut v = vec![("scalar", Kernels::scalar())];
        v.extend(Kernels::simd_sets());
        v
    }

    /// CPU features relevant to kernel choice, as seen at run time.
    pub fn cpu_features() -> Vec<(&'static str, bool)> {
        #[cfg(target_arch = "x86_64")]
        {
            vec![
                ("sse4.2", is_x86_feature_detected!("sse4.2")),
                ("avx2", is_x86_feature_detected!("avx2")),
                ("fma", is_x86_feature_detected!("fma")),
                ("f16c", is_x86_feature_detected!("f16c")),
                ("avx512f", is_x86_feature_detected!("avx512f")),
                ("avx512bw", is_x86_feature_detected!("avx512bw")),
                ("avx512vl", is_x86_feature_detected!("avx512vl")),
                ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
                ("avxvnni", is_x86_feature_detected!("avxvnni")),
                ("avx512bf16", is_x86_feature_detected!("avx512bf16")),
                ("amx-int8", std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 25) != 0),
                ("amx-bf16", std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 22) != 0),
            ]
        }
        #[cfg(target_arch = "aarch64")]
        {
            vec![
                ("neon", std::arch::is_aarch64_feature_detected!("neon")),
                ("dotprod", std::arch::is_aarch64_feature_detected!("dotprod")),
                ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
                ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            ]
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Vec::new()
        }
    }
}

/// Below this, the largest `probability × value scale` of an int8-attention row counts as zero
/// (every kernel set: all-zero u8 row, scale 1), far above where `1 / scale` would overflow.
pub const PROB_ZERO: f32 = 1e-30;

/// Scale and zero point of the asymmetric u8 quantization of values spanning `[lo, hi]` (with
/// `lo ≤ 0 ≤ hi`): `x ≈ scale · (q − zero)`. `None` when the range is empty or not finite, or so
/// small (below ~1e-36) that `1 / scale` overflows (then every value quantizes to 0 with scale 1).
/// Shared by every kernel set so their parameters are identical.
#[inline]
pub fn u8_params(lo: f32, hi: f32) -> Option<(f32, i32)> {
    let range = hi - lo;
    if !(range > 0.0) || !range.is_finite() {
        return None;
    }
    let scale = range / 255.0;
    // An infinite inverse scale would turn `v / scale` into ±inf, which no i32 holds (found by the
    // blob_forward fuzzer: weights XOR-ed into subnormal activations).
    if !(1.0 / scale).is_finite() {
        return None;
    }
    Some((scale, (-lo / scale).round().clamp(0.0, 255.0) as i32))
}

/// Panics unless the operands of [`VectorOps::quantize_u8_rows`] hold `rows ≥ 1` rows: `k` values
/// per row `lda` apart in `a`, `qlda` bytes per row in `out`, a scale and a zero point per row
/// (the SIMD sets index them without bounds checks).
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn check_quantize_u8_rows(a: &[f32], rows: usize, k: usize, lda: usize, out: &[u8], qlda: usize, scale: &[f32], zero: &[i32]) {
    assert!(
        lda >= k && qlda >= k && a.len() >= (rows - 1) * lda + k && out.len() >= rows * qlda && scale.len() >= rows && zero.len() >= rows,
        "quantize_u8_rows operands are too short"
    );
}

/// Exact GELU of one value (shared by the scalar kernels and the epilogues).
#[inline]
pub fn gelu_exact(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}
