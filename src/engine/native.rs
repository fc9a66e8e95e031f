//! The native forward pass: pre-LN ViT blocks written against the kernel traits. All scratch memory
//! is allocated once in [`NativeEngine::new`]; [`Engine::infer`] does not allocate.

use super::{check_len, AttentionPrecision, Engine, EngineError, EngineOptions};
use crate::blob::round_up;
use crate::kernels::{pack, Aligned, Epilogue, GemmArgs, GemmBf16, GemmBf16Args, GemmU8I8Args, Kernels};
use half::bf16;
use super::pool::Pool;
use crate::model::{Linear, Matrix, Model, Norm, VitConfig, Weights};

/// A raw pointer that may be shared with pool tasks which each touch a disjoint part of the buffer.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: every use below derives non-overlapping sub-slices per task (see the SAFETY comments at
// the use sites), so concurrent access never aliases.
unsafe impl<T: Send> Sync for SharedMut<T> {}
unsafe impl<T: Send> Send for SharedMut<T> {}

impl<T> SharedMut<T> {
    fn new(s: &mut [T]) -> Self {
        SharedMut(s.as_mut_ptr())
    }
    /// # Safety
    /// `[start, start + len)` must lie inside the original slice and not overlap any range another
    /// task uses concurrently.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// Scratch buffers sized from the model header.
struct Arena {
    x: Aligned<f32>,
    h: Aligned<f32>,
    qkv: Aligned<f32>,
    /// Per pool thread: attention scores of its query rows (at most `T` rows, padded to 16 values).
    scores: Aligned<f32>,
    /// Per head: keys packed as GEMM weights.
    k_panels: Aligned<f32>,
    /// Per head: values packed as GEMM weights.
    v_panels: Aligned<f32>,
    ctx: Aligned<f32>,
    /// The MLP hidden activations `[T, mlp_hidden]`; before the first block it holds the unfolded
    /// patches `[num_patches, patch_len]` (the two are never live at once, so they share memory).
    mlp: Aligned<f32>,
    head_out: Aligned<f32>,
    a_u8: Aligned<u8>,
    a_scale: Aligned<f32>,
    a_zero: Aligned<i32>,
    /// bf16 weights on a set with a bf16 GEMM only (empty otherwise): a linear layer's input rows
    /// rounded to bf16.
    a_bf16: Aligned<bf16>,
    /// bf16 weights on a set with a bf16 GEMM only (empty otherwise): the MLP's hidden activations
    /// rounded to bf16 `[T, round_up(mlp_hidden, 2)]`, which fc1 writes and fc2 reads.
    mlp_bf16: Aligned<bf16>,
    /// bf16 attention only (empty otherwise): per head, keys and values in `Panel16x2` …
    k_bf16: Aligned<bf16>,
    v_bf16: Aligned<bf16>,
    /// … and per pool thread, its query rows and attention probabilities.
    q_bf16: Aligned<bf16>,
    p_bf16: Aligned<bf16>,
    /// … and the row sums of its unnormalized probabilities.
    p_sums: Aligned<f32>,
    /// int8 attention only (empty otherwise): per head, keys and values quantized to i8 in
    /// `Panel16x4` with one scale per token and a weight sum per GEMM column …
    k_i8: Aligned<i8>,
    k_scale: Aligned<f32>,
    k_sum: Aligned<i32>,
    v_i8: Aligned<i8>,
    v_scale: Aligned<f32>,
    v_sum: Aligned<i32>,
    /// … a per-column scale of 1 for the `p·v` GEMM (the value scales are folded into `p`) …
    ones: Aligned<f32>,
    /// … and per pool thread, its quantized query rows and probability rows with their row scales
    /// and zero points.
    q_u8: Aligned<u8>,
    p_u8: Aligned<u8>,
    qp_scale: Aligned<f32>,
    qp_zero: Aligned<i32>,
}

impl Arena {
    /// Maps the pages of every buffer at construction ([`Aligned::populate`]: one system call per
    /// buffer), not a page fault at a time in the first forward pass: open → first result 0.96× on
    /// int8 and 0.97× on bf16 (40 alternated runs each).
    fn populate(&mut self) {
        #[rustfmt::skip]
        let Arena {
            x, h, qkv, scores, k_panels, v_panels, ctx, mlp, head_out, a_u8, a_scale, a_zero, a_bf16, mlp_bf16, k_bf16, v_bf16,
            q_bf16, p_bf16, p_sums, k_i8, k_scale, k_sum, v_i8, v_scale, v_sum, ones, q_u8, p_u8, qp_scale, qp_zero,
        } = self;
        for b in [x, h, qkv, scores, k_panels, v_panels, ctx, mlp, head_out, a_scale, p_sums, k_scale, v_scale, ones, qp_scale] {
            b.populate();
        }
        for b in [a_u8, q_u8, p_u8] {
            b.populate();
        }
        for b in [a_zero, k_sum, v_sum, qp_zero] {
            b.populate();
        }
        for b in [a_bf16, mlp_bf16, k_bf16, v_bf16, q_bf16, p_bf16] {
            b.populate();
        }
        k_i8.populate();
        v_i8.populate();
    }
}

/// How an engine runs the attention matmuls.
#[derive(Clone, Copy)]
enum Attention {
    F32,
    Bf16(&'static dyn GemmBf16),
    Int8,
}

impl Attention {
    /// The attention an engine with `kernels` runs for a blob of `precision`, or an error when the
    /// requested precision needs kernels this set does not have.
    fn choose(requested: AttentionPrecision, kernels: &Kernels, precision: &str) -> Result<Attention, EngineError> {
        Ok(match requested {
            AttentionPrecision::F32 => Attention::F32,
            AttentionPrecision::Int8 => Attention::Int8,
            AttentionPrecision::Bf16 => Attention::Bf16(kernels.gemm_bf16.ok_or_else(|| {
                EngineError::Backend(format!(
                    "bf16 attention needs bf16 dot products (AMX-BF16 or AVX512-BF16), which kernel set `{}` lacks; use --attention f32 or int8",
                    kernels.gemm_f32.name()
                ))
            })?),
            // int8 activations carry 8 significant bits, so bf16 or int8 attention keeps the int8
            // accuracy (README: measured agreement and cosine); f32 and f16 models keep f32.
            AttentionPrecision::Auto if precision == "int8" => match kernels.gemm_bf16 {
                Some(gb) => Attention::Bf16(gb),
                None if kernels.int8_attention => Attention::Int8,
                None => Attention::F32,
            },
            // A bf16 model's linear layers already round their inputs to bf16.
            AttentionPrecision::Auto if precision == "bf16" => kernels.gemm_bf16.map_or(Attention::F32, Attention::Bf16),
            AttentionPrecision::Auto => Attention::F32,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Attention::F32 => "f32",
            Attention::Bf16(_) => "bf16",
            Attention::Int8 => "int8",
        }
    }
}

/// Data the engine derives from the weight matrices once, keyed by the weight slice's address.
struct Derived {
    /// Per-column weight sums of every int8 matrix.
    w_sums: Vec<(usize, Vec<i32>)>,
    /// Kernel sets without a bf16 GEMM only: every bf16 matrix widened once, exactly, to f32
    /// `Panel16` and run by the f32 GEMM (activations then stay f32).
    bf16_widened: Vec<(usize, Vec<f32>)>,
}

impl Derived {
    fn find<'d, T>(list: &'d [(usize, Vec<T>)], w: *const u8, what: &str) -> &'d [T] {
        &list.iter().find(|(p, _)| *p == w as usize).unwrap_or_else(|| panic!("{what} are derived for every matrix at construction")).1
    }
}

/// vitedge's own engine.
pub struct NativeEngine<'m> {
    cfg: VitConfig,
    weights: Weights<'m>,
    kernels: Kernels,
    /// The precision of the attention matmuls.
    attention: Attention,
    /// What the linear layers need besides the blob's weights.
    derived: Derived,
    arena: Arena,
    pool: Pool,
}

impl<'m> NativeEngine<'m> {
    /// Binds the model's weights and allocates all scratch memory.
    pub fn new(model: &'m Model, opts: &EngineOptions) -> Result<Self, EngineError> {
        let kernels = Kernels::by_name(&opts.kernels).map_err(EngineError::Backend)?;
        let cfg = model.config().clone();
        let weights = model.weights()?;
        let (t, d, hd, heads) = (cfg.num_tokens(), cfg.embed_dim, cfg.head_dim(), cfg.num_heads);
        let max_k = cfg.patch_len().max(cfg.mlp_hidden).max(d);
        let mut w_sums = Vec::new();
        let mut linears: Vec<&Linear<'_>> = vec![&weights.patch_embed, &weights.head];
        linears.extend(weights.head_dist.iter());
        for b in &weights.blocks {
            linears.extend([&b.qkv, &b.proj, &b.fc1, &b.fc2]);
        }
        let has_bf16 = linears.iter().any(|l| matches!(l.weight, Matrix::Bf16(_)));
        // Only the bf16 GEMM reads its inputs as bf16 rows.
        let bf16_inputs = has_bf16 && kernels.gemm_bf16.is_some();
        let mut bf16_widened = Vec::new();
        for l in linears {
            match l.weight {
                Matrix::I8 { w, .. } => w_sums.push((w.as_ptr() as usize, pack::panel16x4_row_sums(w, l.n, l.k))),
                Matrix::Bf16(w) if kernels.gemm_bf16.is_none() => {
                    let rows = pack::f32_rows_from_panel16x2(w, l.n, l.k);
                    let mut p = vec![0.0; round_up(l.n, 16) * l.k];
                    pack::panel16_from_rows(&rows, l.n, l.k, l.k, &mut p);
                    bf16_widened.push((w.as_ptr() as usize, p));
                }
                _ => {}
            }
        }
        if has_bf16 && kernels.gemm_bf16.is_none() {
            log::warn!(
                "kernel set `{}` has no bf16 dot products (they need AMX-BF16 or AVX512-BF16): this bf16 blob's weights are widened to f32 in memory and run at f32 speed; an f16 or int8 blob suits this CPU better",
                kernels.gemm_f32.name()
            );
        }
        let derived = Derived { w_sums, bf16_widened };
        let attention = Attention::choose(opts.attention, &kernels, &model.header().precision)?;
        let threads = if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
        // Attention buffers for the precision in use only (the other set stays empty).
        let hdp = round_up(hd, 2);
        let (hd4, t4, t16, hd16) = (round_up(hd, 4), int8_prob_stride(t), round_up(t, 16), round_up(hd, 16));
        let only = |a: fn(Attention) -> bool, len: usize| if a(attention) { len } else { 0 };
        let f32_attention = |len| only(|a| matches!(a, Attention::F32), len);
        let bf16_attention = |len| only(|a| matches!(a, Attention::Bf16(_)), len);
        let int8_attention = |len| only(|a| matches!(a, Attention::Int8), len);
        let mut arena = Arena {
            x: Aligned::zeroed(t * d),
            h: Aligned::zeroed(t * d),
            qkv: Aligned::zeroed(t * 3 * d),
            scores: Aligned::zeroed(threads * t * round_up(t, 16)),
            k_panels: Aligned::zeroed(f32_attention(heads * round_up(t, 16) * hd)),
            v_panels: Aligned::zeroed(f32_attention(heads * round_up(hd, 16) * t)),
            ctx: Aligned::zeroed(t * d),
            mlp: Aligned::zeroed((t * cfg.mlp_hidden).max(cfg.num_patches() * cfg.patch_len())),
            head_out: Aligned::zeroed(2 * cfg.num_classes),
            a_u8: Aligned::zeroed(cfg.num_patches().max(t) * round_up(max_k, 4)),
            a_scale: Aligned::zeroed(t.max(cfg.num_patches())),
            a_zero: Aligned::zeroed(t.max(cfg.num_patches())),
            a_bf16: Aligned::zeroed(if bf16_inputs { cfg.num_patches().max(t) * round_up(max_k, 2) } else { 0 }),
            mlp_bf16: Aligned::zeroed(if bf16_inputs { t * round_up(cfg.mlp_hidden, 2) } else { 0 }),
            k_bf16: Aligned::zeroed(bf16_attention(heads * round_up(t, 16) * hdp)),
            v_bf16: Aligned::zeroed(bf16_attention(heads * round_up(hd, 16) * round_up(t, 32))),
            q_bf16: Aligned::zeroed(bf16_attention(threads * t * hdp)),
            p_bf16: Aligned::zeroed(bf16_attention(threads * t * round_up(t, 32))),
            p_sums: Aligned::zeroed(bf16_attention(threads * t)),
            k_i8: Aligned::zeroed(int8_attention(heads * t16 * hd4)),
            k_scale: Aligned::zeroed(int8_attention(heads * t16)),
            k_sum: Aligned::zeroed(int8_attention(heads * t16)),
            v_i8: Aligned::zeroed(int8_attention(heads * hd16 * round_up(t, 4))),
            v_scale: Aligned::zeroed(int8_attention(heads * t)),
            v_sum: Aligned::zeroed(int8_attention(heads * hd16)),
            ones: filled(int8_attention(hd16), 1.0),
            q_u8: Aligned::zeroed(int8_attention(threads * t * hd4)),
            p_u8: Aligned::zeroed(int8_attention(threads * t * t4)),
            qp_scale: Aligned::zeroed(int8_attention(threads * t)),
            qp_zero: Aligned::zeroed(int8_attention(threads * t)),
        };
        arena.populate();
        log::debug!("native engine: kernels {kernels:?}, attention in {}, {threads} threads", attention.name());
        Ok(NativeEngine { cfg, weights, kernels, attention, derived, arena, pool: Pool::new(threads) })
    }
}

/// Observer of every linear layer's input during [`NativeEngine::infer_tapped`]:
/// `(layer index, a, m, k, lda)` with the layer's `m × k` input rows `lda` apart.
pub type Tap<'t> = &'t mut dyn FnMut(usize, &[f32], usize, usize, usize);

/// Scratch rows of [`linear`]: the quantized input with its per-row scales and zero points (int8
/// weights) and the input rounded to bf16 (bf16 weights).
struct Staging<'a> {
    u8: &'a mut [u8],
    scale: &'a mut [f32],
    zero: &'a mut [i32],
    bf16: &'a mut [bf16],
}

/// The [`Staging`] buffers of an [`Arena`] (a macro, so the other fields stay borrowable).
macro_rules! staging {
    ($ar:expr) => {
        Staging { u8: &mut $ar.a_u8[..], scale: &mut $ar.a_scale[..], zero: &mut $ar.a_zero[..], bf16: &mut $ar.a_bf16[..] }
    };
}

/// The input rows of [`linear`].
enum Input<'a> {
    /// Rows `lda` apart, used as they are.
    Rows(&'a [f32]),
    /// The LayerNorm of the residual rows `x` (row stride `lda`, which equals `k`): each task
    /// normalizes its own rows into its rows of `h` and multiplies those, so the normalization
    /// runs on the pool and its output is still in L1 when the GEMM (or the bf16 conversion or
    /// int8 quantization before it) reads it.
    Normed { x: &'a [f32], norm: &'a Norm<'a>, eps: f32, h: &'a mut [f32] },
    /// Rows already rounded to bf16, `round_up(k, 2)` apart (a previous layer's `out_bf16`): only
    /// for bf16 weights on a set with a bf16 GEMM, and never with a calibration tap.
    Bf16(&'a [bf16]),
}

/// `out[i] = a[i] · Wᵀ + b` for `m` rows, dispatching on the weight precision; rows are split
/// across the pool (each task owns a disjoint block of output and staging rows). With `out_bf16`
/// (bf16 weights on a set with a bf16 GEMM only) the results go to those bf16 rows
/// (`round_up(n, 2)` apart) instead, for the next layer's [`Input::Bf16`]; `out` is then scratch
/// for kernels that cannot write bf16 directly.
#[allow(clippy::too_many_arguments)]
fn linear(
    tap: &mut Option<Tap<'_>>,
    layer: usize,
    kernels: &Kernels,
    pool: &Pool,
    derived: &Derived,
    l: &Linear<'_>,
    m: usize,
    input: Input<'_>,
    lda: usize,
    out: &mut [f32],
    ldc: usize,
    epilogue: Epilogue,
    staging: Staging<'_>,
    out_bf16: Option<&mut [bf16]>,
) {
    // A calibration tap sees the normalized rows: normalize them all first.
    let input = match (input, tap.is_some()) {
        (Input::Normed { x, norm, eps, h }, true) => {
            layer_norm_rows(kernels, norm, eps, &x[..m * lda], &mut h[..m * lda], lda);
            Input::Rows(h)
        }
        (input, _) => input,
    };
    let (qlda, blda) = (round_up(l.k, 4), round_up(l.k, 2));
    let (a, normed, a_bf16_rows): (&[f32], _, Option<&[bf16]>) = match input {
        Input::Rows(a) => (a, None, None),
        Input::Normed { x, norm, eps, h } => {
            assert!(lda == l.k && h.len() >= m * lda, "normalized rows are dense");
            (x, Some((norm, eps, SharedMut::new(h))), None)
        }
        Input::Bf16(rows) => {
            assert!(tap.is_none() && matches!(l.weight, Matrix::Bf16(_)) && kernels.gemm_bf16.is_some(), "bf16 input rows are for the bf16 GEMM only");
            assert!(rows.len() >= m * blda, "bf16 input rows are too short");
            (&[][..], None, Some(rows))
        }
    };
    if let Some(t) = tap.as_mut() {
        t(layer, a, m, l.k, lda);
    }
    assert!(m >= 1 && out.len() >= (m - 1) * ldc + l.n && (a_bf16_rows.is_some() || a.len() >= (m - 1) * lda + l.k));
    let obld = round_up(l.n, 2);
    if let Some(ob) = &out_bf16 {
        assert!(matches!(l.weight, Matrix::Bf16(_)) && kernels.gemm_bf16.is_some() && ob.len() >= m * obld, "bf16 output rows are for the bf16 GEMM only");
    }
    let ob_p = out_bf16.map(SharedMut::new);
    let w_sum: &[i32] = match l.weight {
        Matrix::I8 { w, .. } => Derived::find(&derived.w_sums, w.as_ptr() as *const u8, "int8 weight sums"),
        _ => &[],
    };
    let Staging { u8: a_u8, scale: a_scale, zero: a_zero, bf16: a_bf16 } = staging;
    match l.weight {
        Matrix::I8 { .. } => assert!(a_u8.len() >= m * qlda && a_scale.len() >= m && a_zero.len() >= m),
        Matrix::Bf16(_) if kernels.gemm_bf16.is_some() => assert!(a_bf16.len() >= m * blda),
        _ => {}
    }
    let tasks = pool.threads().min(m.div_ceil(16)).max(1);
    let (out_p, q_p, s_p, z_p, b_p) = (SharedMut::new(out), SharedMut::new(a_u8), SharedMut::new(a_scale), SharedMut::new(a_zero), SharedMut::new(a_bf16));
    let bias = Some(l.bias);
    // Both are AMX tile GEMMs on CPUs that have it.
    let align = if matches!(l.weight, Matrix::I8 { .. } | Matrix::Bf16(_)) { 16 } else { 1 };
    // Normalized rows for the bf16 GEMM are rounded to bf16 as they are made (`h` is not written).
    let normed_to_bf16 = normed.is_some() && matches!(l.weight, Matrix::Bf16(_)) && kernels.gemm_bf16.is_some();
    let run = |t: usize| {
        let (r0, r1) = (task_first_row(t, tasks, m, align), task_first_row(t + 1, tasks, m, align));
        if r0 >= r1 {
            return;
        }
        let rows = r1 - r0;
        let x_rows = a;
        let a: &[f32] = match &normed {
            None if a_bf16_rows.is_some() => &[],
            None => &a[r0 * lda..],
            Some(_) if normed_to_bf16 => &[],
            Some((norm, eps, h_p)) => {
                // SAFETY: task t writes and then reads rows r0..r1 of `h` only (disjoint across
                // tasks, inside `h`: asserted above).
                let h = unsafe { h_p.slice(r0 * lda, rows * lda) };
                layer_norm_rows(kernels, norm, *eps, &a[r0 * lda..r1 * lda], h, lda);
                h
            }
        };
        // SAFETY: task t writes output rows r0..r1 only (the tasks' row ranges are disjoint):
        // [r0·ldc, (r1−1)·ldc + n) lies inside `out` (asserted above) and below r1·ldc.
        let out = unsafe { out_p.slice(r0 * ldc, (rows - 1) * ldc + l.n) };
        match l.weight {
            Matrix::F32(w) => {
                let args = GemmArgs { m: rows, n: l.n, k: l.k, a, lda, w, bias, epilogue };
                kernels.gemm_f32.gemm(&args, out, ldc);
            }
            Matrix::F16(w) => {
                let args = GemmArgs { m: rows, n: l.n, k: l.k, a, lda, w, bias, epilogue };
                kernels.gemm_f16.gemm(&args, out, ldc);
            }
            Matrix::Bf16(w) => match kernels.gemm_bf16 {
                Some(gb) => {
                    let a_b: &[bf16] = match a_bf16_rows {
                        Some(given) => &given[r0 * blda..r1 * blda],
                        None => {
                            // SAFETY: bf16 rows r0..r1 belong to this task alone and lie inside the
                            // buffer (asserted above).
                            let a_b = unsafe { b_p.slice(r0 * blda, rows * blda) };
                            match &normed {
                                Some((norm, eps, h_p)) if normed_to_bf16 => {
                                    // SAFETY: as for the f32 normalized rows above.
                                    let h = unsafe { h_p.slice(r0 * lda, rows * lda) };
                                    gb.layer_norm_to_bf16(kernels.vector, &x_rows[r0 * lda..r1 * lda], rows, l.k, lda, (norm.weight, norm.bias, *eps), h, a_b, blda);
                                }
                                _ => gb.convert_rows(a, rows, l.k, lda, a_b, blda),
                            }
                            a_b
                        }
                    };
                    let args = GemmBf16Args { m: rows, n: l.n, k: l.k, a: a_b, lda: blda, w, bias, epilogue };
                    match &ob_p {
                        Some(ob_p) => {
                            // SAFETY: bf16 output rows r0..r1 belong to this task alone and lie
                            // inside the buffer (asserted above).
                            let ob = unsafe { ob_p.slice(r0 * obld, rows * obld) };
                            if !gb.gemm_to_bf16(&args, ob, obld) {
                                gb.gemm(&args, out, ldc);
                                gb.convert_rows(out, rows, l.n, ldc, ob, obld);
                            }
                        }
                        None => gb.gemm(&args, out, ldc),
                    }
                }
                None => {
                    let w = Derived::find(&derived.bf16_widened, w.as_ptr() as *const u8, "widened bf16 matrices");
                    let args = GemmArgs { m: rows, n: l.n, k: l.k, a, lda, w, bias, epilogue };
                    kernels.gemm_f32.gemm(&args, out, ldc);
                }
            },
            Matrix::I8 { w, scale } => {
                // SAFETY: quantized rows r0..r1 and their parameters belong to this task alone and
                // lie inside the buffers (asserted above).
                let (a_u8, a_scale, a_zero) = unsafe { (q_p.slice(r0 * qlda, rows * qlda), s_p.slice(r0, rows), z_p.slice(r0, rows)) };
                kernels.vector.quantize_u8_rows(a, rows, l.k, lda, a_u8, qlda, a_scale, a_zero);
                let args = GemmU8I8Args {
                    m: rows,
                    n: l.n,
                    k: l.k,
                    a: a_u8,
                    lda: qlda,
                    a_scale,
                    a_zero,
                    w,
                    w_scale: scale,
                    w_sum,
                    bias,
                    epilogue,
                };
                kernels.gemm_u8i8.gemm(&args, out, ldc);
            }
        }
    };
    pool.run(tasks, &run);
}

/// First row of task `t` (of `tasks`) when `m` rows are split: an even split rounded to a multiple
/// of `align` rows (16 for int8 weights and bf16 attention: the AMX tile height, so only the last
/// task has ragged rows; 1 for float GEMMs, whose 6-row tiles gain nothing from it and whose tasks
/// would otherwise differ by up to 15 rows). `task_first_row(tasks, ..) = m`; non-decreasing in `t`.
fn task_first_row(t: usize, tasks: usize, m: usize, align: usize) -> usize {
    if t >= tasks {
        return m;
    }
    ((t * m / tasks + align / 2) / align * align).min(m)
}

fn layer_norm_rows(kernels: &Kernels, norm: &Norm<'_>, eps: f32, x: &[f32], out: &mut [f32], d: usize) {
    kernels.vector.layer_norm_rows(x, x.len() / d, d, d, norm.weight, norm.bias, eps, out);
}

/// Multi-head attention in f32: `ctx = softmax(q·kᵀ·scale)·v` per head, from the `qkv` rows.
#[allow(clippy::too_many_arguments)]
fn attention_f32(k: &Kernels, pool: &Pool, ar: &mut Arena, t: usize, d: usize, hd: usize, heads: usize, scale: f32) {
    // Keys and values of every head packed as GEMM weights (one task per head) …
    let (tp, hp) = (round_up(t, 16) * hd, round_up(hd, 16) * t);
    let (kp_p, vp_p) = (SharedMut::new(&mut ar.k_panels), SharedMut::new(&mut ar.v_panels));
    let qkv = &ar.qkv;
    // Keys and values are separate tasks, so two threads share three heads evenly.
    let pack = |task: usize| {
        let head = task / 2;
        if task.is_multiple_of(2) {
            // SAFETY: each head's key task writes only that head's block of the key panels.
            pack::panel16_from_rows(&qkv[d + head * hd..], t, hd, 3 * d, unsafe { kp_p.slice(head * tp, tp) });
        } else {
            // SAFETY: each head's value task writes only that head's block of the value panels.
            pack::panel16_from_cols(&qkv[2 * d + head * hd..], hd, t, 3 * d, unsafe { vp_p.slice(head * hp, hp) });
        }
    };
    pool.run(2 * heads, &pack);
    // … then the query rows split across threads: each task runs every head for its rows and
    // writes the heads' outputs side by side into its own rows of `ctx`.
    let (k_panels, v_panels) = (&ar.k_panels, &ar.v_panels);
    let tasks = pool.threads().min(t.div_ceil(16)).max(1);
    // Score rows padded to 16 values so every row starts on a 64-byte boundary.
    let ts = round_up(t, 16);
    let (sc_p, ctx_p) = (SharedMut::new(&mut ar.scores), SharedMut::new(&mut ar.ctx));
    let attend = |task: usize| {
        let (r0, r1) = (task_first_row(task, tasks, t, 1), task_first_row(task + 1, tasks, t, 1));
        if r0 >= r1 {
            return;
        }
        let rows = r1 - r0;
        // SAFETY: task `task` uses score slot `task` (the buffer has one slot of `t` padded rows per
        // pool thread, and tasks ≤ threads) and rows r0..r1 of `ctx`; row ranges are disjoint.
        let (scores, ctx) = unsafe { (sc_p.slice(task * t * ts, rows * ts), ctx_p.slice(r0 * d, rows * d)) };
        for head in 0..heads {
            let w = &k_panels[head * tp..(head + 1) * tp];
            let args = GemmArgs { m: rows, n: t, k: hd, a: &qkv[r0 * 3 * d + head * hd..], lda: 3 * d, w, bias: None, epilogue: Epilogue::Store };
            k.gemm_f32.gemm(&args, scores, ts);
            for row in scores.chunks_exact_mut(ts) {
                k.vector.softmax(&mut row[..t], scale);
            }
            let w = &v_panels[head * hp..(head + 1) * hp];
            let args = GemmArgs { m: rows, n: hd, k: t, a: scores, lda: ts, w, bias: None, epilogue: Epilogue::Store };
            k.gemm_f32.gemm(&args, &mut ctx[head * hd..], d);
        }
    };
    pool.run(tasks, &attend);
}

/// Multi-head attention with bf16 operands and f32 sums (int8 models): keys and values of every
/// head are packed as `Panel16x2` (one task per head), then the query rows are split across
/// threads; each task converts its query rows, runs `q·kᵀ`, the unnormalized softmax (exp in f32,
/// stored as bf16) and `p·v` per head, then divides each context row by its probability sum.
#[allow(clippy::too_many_arguments)]
fn attention_bf16(gb: &dyn GemmBf16, pool: &Pool, ar: &mut Arena, t: usize, d: usize, hd: usize, heads: usize, scale: f32) {
    // Score and probability rows padded to 64 bytes (16 f32, 32 bf16) so every row is aligned.
    let (ts, ps) = (round_up(t, 16), round_up(t, 32));
    // Values are packed with ps (not round_up(t, 2)) k values per panel: the pair rows from t on
    // stay zero (the arena is zeroed and nothing writes them), and so do the probability rows'
    // (`softmax_to_bf16` zero-fills them), so the PV GEMM runs k = ps, a whole number of AMX tile
    // steps, with no k tail.
    let (hdp, tp) = (round_up(hd, 2), round_up(t, 2));
    let (kl, vl) = (round_up(t, 16) * hdp, round_up(hd, 16) * ps);
    let (kp_p, vp_p) = (SharedMut::new(&mut ar.k_bf16), SharedMut::new(&mut ar.v_bf16));
    let qkv = &ar.qkv;
    // Keys and values are separate tasks (six for three heads), so two threads share them evenly.
    let pack = |task: usize| {
        let head = task / 2;
        if task.is_multiple_of(2) {
            // SAFETY: each head's key task writes only that head's block of the key buffer.
            let kb = unsafe { kp_p.slice(head * kl, kl) };
            gb.pack_rows(&qkv[d + head * hd..], t, hd, 3 * d, kb);
        } else {
            // SAFETY: each head's value task writes only that head's block of the value buffer.
            let vb = unsafe { vp_p.slice(head * vl, vl) };
            for (p, panel) in vb.chunks_exact_mut(16 * ps).enumerate() {
                gb.pack_cols(&qkv[2 * d + head * hd + 16 * p..], (hd - 16 * p).min(16), t, 3 * d, &mut panel[..16 * tp]);
            }
        }
    };
    pool.run(2 * heads, &pack);
    let (kb, vb) = (&ar.k_bf16, &ar.v_bf16);
    let tasks = pool.threads().min(t.div_ceil(16)).max(1);
    let (sc_p, ctx_p) = (SharedMut::new(&mut ar.scores), SharedMut::new(&mut ar.ctx));
    let (q_p, p_p, sum_p) = (SharedMut::new(&mut ar.q_bf16), SharedMut::new(&mut ar.p_bf16), SharedMut::new(&mut ar.p_sums));
    let attend = |task: usize| {
        let (r0, r1) = (task_first_row(task, tasks, t, 16), task_first_row(task + 1, tasks, t, 16));
        if r0 >= r1 {
            return;
        }
        let rows = r1 - r0;
        // SAFETY: task `task` uses slot `task` of the per-thread buffers (each has one slot of
        // t rows per pool thread, and tasks ≤ threads) and rows r0..r1 of `ctx`; row ranges are
        // disjoint.
        let (scores, ctx, qb, pb) = unsafe {
            (sc_p.slice(task * t * ts, rows * ts), ctx_p.slice(r0 * d, rows * d), q_p.slice(task * t * hdp, rows * hdp), p_p.slice(task * t * ps, rows * ps))
        };
        // SAFETY: slot `task` of the per-thread row sums (t per thread), as above.
        let sums = unsafe { sum_p.slice(task * t, rows) };
        for head in 0..heads {
            gb.convert_rows(&qkv[r0 * 3 * d + head * hd..], rows, hd, 3 * d, qb, hdp);
            gb.gemm(&GemmBf16Args { m: rows, n: t, k: hd, a: qb, lda: hdp, w: &kb[head * kl..(head + 1) * kl], bias: None, epilogue: Epilogue::Store }, scores, ts);
            gb.softmax_rows_to_bf16(scores, rows, t, ts, scale, pb, ps, sums);
            gb.gemm(&GemmBf16Args { m: rows, n: hd, k: ps, a: pb, lda: ps, w: &vb[head * vl..(head + 1) * vl], bias: None, epilogue: Epilogue::Store }, &mut ctx[head * hd..], d);
            for (r, &sum) in sums[..rows].iter().enumerate() {
                let inv = 1.0 / sum;
                ctx[r * d + head * hd..r * d + (head + 1) * hd].iter_mut().for_each(|v| *v *= inv);
            }
        }
    };
    pool.run(tasks, &attend);
}

/// A 64-byte-aligned buffer of `len` copies of `v`.
fn filled(len: usize, v: f32) -> Aligned<f32> {
    let mut b = Aligned::zeroed(len);
    b.fill(v);
    b
}

/// Row stride in bytes of the quantized attention probabilities: `t` rounded up to 64 so every row
/// starts on a cache line (the GEMM reads `round_up(t, 4)` of them).
fn int8_prob_stride(t: usize) -> usize {
    round_up(t, 64)
}

/// Multi-head attention in int8 (int8 models on kernel sets without bf16 dot products), on the
/// int8 GEMM: keys are quantized to symmetric i8 with one scale per token (the GEMM's per-column
/// scale), values to symmetric i8 with one scale per token as well, both packed as `Panel16x4`
/// (one task per head). Each task then quantizes its query rows to u8 (per row, like every linear
/// layer's input), runs `q·kᵀ`, the f32 softmax, multiplies each probability by its token's value
/// scale, quantizes those rows to u8 (per row) and runs `p·v`, per head. Per-token value scales
/// (rather than one per channel) keep tokens with small values from losing their precision to a
/// few large-norm tokens: on the real ViT-Tiny the logit cosine to f32 measured 0.99935 mean /
/// 0.99753 min this way against 0.99928 / 0.99692 with per-channel value scales (README).
#[allow(clippy::too_many_arguments)]
fn attention_int8(k: &Kernels, pool: &Pool, ar: &mut Arena, t: usize, d: usize, hd: usize, heads: usize, scale: f32) {
    let (hd4, t4, t16, hd16, ps) = (round_up(hd, 4), round_up(t, 4), round_up(t, 16), round_up(hd, 16), int8_prob_stride(t));
    let (kl, vl) = (t16 * hd4, hd16 * t4);
    let (kq_p, ks_p, kz_p) = (SharedMut::new(&mut ar.k_i8), SharedMut::new(&mut ar.k_scale), SharedMut::new(&mut ar.k_sum));
    let (vq_p, vs_p, vz_p) = (SharedMut::new(&mut ar.v_i8), SharedMut::new(&mut ar.v_scale), SharedMut::new(&mut ar.v_sum));
    let qkv = &ar.qkv;
    // Keys and values are separate tasks, so two threads share three heads evenly.
    let pack = |task: usize| {
        let head = task / 2;
        if task.is_multiple_of(2) {
            // SAFETY: each head's key task writes only that head's blocks of the key buffers.
            let (kq, ks, kz) = unsafe { (kq_p.slice(head * kl, kl), ks_p.slice(head * t16, t16), kz_p.slice(head * t16, t16)) };
            k.vector.quantize_pack_keys(&qkv[d + head * hd..], t, hd, 3 * d, kq, ks, kz);
        } else {
            // SAFETY: each head's value task writes only that head's blocks of the value buffers.
            let (vq, vs, vz) = unsafe { (vq_p.slice(head * vl, vl), vs_p.slice(head * t, t), vz_p.slice(head * hd16, hd16)) };
            k.vector.quantize_pack_values(&qkv[2 * d + head * hd..], hd, t, 3 * d, vq, vs, vz);
        }
    };
    pool.run(2 * heads, &pack);
    let tasks = pool.threads().min(t.div_ceil(16)).max(1);
    let ts = round_up(t, 16);
    let (k_i8, k_scale, k_sum, v_i8, v_scale, v_sum, ones) = (&ar.k_i8, &ar.k_scale, &ar.k_sum, &ar.v_i8, &ar.v_scale, &ar.v_sum, &ar.ones[..]);
    let (sc_p, ctx_p) = (SharedMut::new(&mut ar.scores), SharedMut::new(&mut ar.ctx));
    let (q_p, p_p, s_p, z_p) = (SharedMut::new(&mut ar.q_u8), SharedMut::new(&mut ar.p_u8), SharedMut::new(&mut ar.qp_scale), SharedMut::new(&mut ar.qp_zero));
    let attend = |task: usize| {
        let (r0, r1) = (task_first_row(task, tasks, t, 16), task_first_row(task + 1, tasks, t, 16));
        if r0 >= r1 {
            return;
        }
        let rows = r1 - r0;
        // SAFETY: task `task` uses slot `task` of the per-thread buffers (each has one slot of t
        // rows per pool thread, and tasks ≤ threads) and rows r0..r1 of `ctx`; row ranges are
        // disjoint.
        let (scores, ctx, qu, pu, a_scale, a_zero) = unsafe {
            (
                sc_p.slice(task * t * ts, rows * ts),
                ctx_p.slice(r0 * d, rows * d),
                q_p.slice(task * t * hd4, rows * hd4),
                p_p.slice(task * t * ps, rows * ps),
                s_p.slice(task * t, rows),
                z_p.slice(task * t, rows),
            )
        };
        for head in 0..heads {
            // The queries: rows of the qkv matrix (3·d apart), padded to hd4 with their zero point.
            k.vector.quantize_u8_rows(&qkv[r0 * 3 * d + head * hd..], rows, hd, 3 * d, qu, hd4, a_scale, a_zero);
            let (w, w_scale, w_sum) = (&k_i8[head * kl..(head + 1) * kl], &k_scale[head * t16..(head + 1) * t16], &k_sum[head * t16..(head + 1) * t16]);
            let args = GemmU8I8Args { m: rows, n: t, k: hd, a: qu, lda: hd4, a_scale, a_zero, w, w_scale, w_sum, bias: None, epilogue: Epilogue::Store };
            k.gemm_u8i8.gemm(&args, scores, ts);
            let vs = &v_scale[head * t..(head + 1) * t];
            for (i, (row, prow)) in scores.chunks_exact_mut(ts).zip(pu.chunks_exact_mut(ps)).enumerate() {
                a_scale[i] = k.vector.softmax_quantize_u8(&mut row[..t], scale, vs, &mut prow[..t]);
                a_zero[i] = 0;
                prow[t..t4].fill(0);
            }
            let (w, w_sum) = (&v_i8[head * vl..(head + 1) * vl], &v_sum[head * hd16..(head + 1) * hd16]);
            let args = GemmU8I8Args { m: rows, n: hd, k: t, a: pu, lda: ps, a_scale, a_zero, w, w_scale: ones, w_sum, bias: None, epilogue: Epilogue::Store };
            k.gemm_u8i8.gemm(&args, &mut ctx[head * hd..], d);
        }
    };
    pool.run(tasks, &attend);
}

impl NativeEngine<'_> {
    /// Names of the linear layers in the order [`Tap`] indices use: `patch_embed.proj`, then per
    /// block `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`, then `head` (and `head_dist`).
    pub fn layer_names(&self) -> Vec<String> {
        layer_names(&self.cfg)
    }

    /// Like [`Engine::infer`], calling `tap` with the input of every linear layer.
    pub fn infer_tapped(&mut self, input: &[f32], logits: &mut [f32], tap: Tap<'_>) -> Result<(), EngineError> {
        self.forward(input, logits, Some(tap))
    }

    fn forward(&mut self, input: &[f32], logits: &mut [f32], mut tap: Option<Tap<'_>>) -> Result<(), EngineError> {
        let tap = &mut tap;
        let c = &self.cfg;
        check_len("input", c.input_len(), input.len())?;
        check_len("logits", c.num_classes, logits.len())?;
        let (t, d, hd, heads) = (c.num_tokens(), c.embed_dim, c.head_dim(), c.num_heads);
        let (p, g, s, np, pl) = (c.patch_size, c.grid(), c.image_size, c.num_patches(), c.patch_len());
        let prefix = c.num_prefix_tokens();
        let eps = c.layer_norm_eps;
        let k = &self.kernels;
        let w = &self.weights;
        let sums = &self.derived;
        let pool = &self.pool;
        let ar = &mut self.arena;

        // Patch embedding: unfold (c, y, x) patches, one matmul into token rows after the prefix.
        for gy in 0..g {
            for gx in 0..g {
                let row = &mut ar.mlp[(gy * g + gx) * pl..(gy * g + gx + 1) * pl];
                for ch in 0..3 {
                    for ky in 0..p {
                        let src = ch * s * s + (gy * p + ky) * s + gx * p;
                        let dst = ch * p * p + ky * p;
                        copy_patch_row(&input[src..src + p], &mut row[dst..dst + p]);
                    }
                }
            }
        }
        linear(tap, 0, k, pool, sums, &w.patch_embed, np, Input::Rows(&ar.mlp), pl, &mut ar.x[prefix * d..], d, Epilogue::Store, staging!(ar), None);
        ar.x[..d].copy_from_slice(w.cls_token);
        if let Some(dist) = w.dist_token {
            ar.x[d..2 * d].copy_from_slice(dist);
        }
        for (xv, pv) in ar.x.iter_mut().zip(w.pos_embed) {
            *xv += pv;
        }

        let scale = (hd as f32).powf(-0.5);
        for (bi, b) in w.blocks.iter().enumerate() {
            let input = Input::Normed { x: &ar.x, norm: &b.norm1, eps, h: &mut ar.h };
            linear(tap, 1 + 4 * bi, k, pool, sums, &b.qkv, t, input, d, &mut ar.qkv, 3 * d, Epilogue::Store, staging!(ar), None);
            match self.attention {
                Attention::F32 => attention_f32(k, pool, ar, t, d, hd, heads, scale),
                Attention::Bf16(gb) => attention_bf16(gb, pool, ar, t, d, hd, heads, scale),
                Attention::Int8 => attention_int8(k, pool, ar, t, d, hd, heads, scale),
            }
            linear(tap, 2 + 4 * bi, k, pool, sums, &b.proj, t, Input::Rows(&ar.ctx), d, &mut ar.x, d, Epilogue::Accumulate, staging!(ar), None);
            let input = Input::Normed { x: &ar.x, norm: &b.norm2, eps, h: &mut ar.h };
            // bf16 MLPs on a bf16 GEMM keep the hidden activations in bf16 (fc1 rounds its GELU
            // outputs as fc2 would round its input rows: the same bits, half the bytes).
            let bf16_mlp = !ar.mlp_bf16.is_empty() && tap.is_none() && matches!((&b.fc1.weight, &b.fc2.weight), (Matrix::Bf16(_), Matrix::Bf16(_)));
            if bf16_mlp {
                linear(tap, 3 + 4 * bi, k, pool, sums, &b.fc1, t, input, d, &mut ar.mlp, c.mlp_hidden, Epilogue::Gelu, staging!(ar), Some(&mut ar.mlp_bf16));
                linear(tap, 4 + 4 * bi, k, pool, sums, &b.fc2, t, Input::Bf16(&ar.mlp_bf16), c.mlp_hidden, &mut ar.x, d, Epilogue::Accumulate, staging!(ar), None);
            } else {
                linear(tap, 3 + 4 * bi, k, pool, sums, &b.fc1, t, input, d, &mut ar.mlp, c.mlp_hidden, Epilogue::Gelu, staging!(ar), None);
                linear(tap, 4 + 4 * bi, k, pool, sums, &b.fc2, t, Input::Rows(&ar.mlp), c.mlp_hidden, &mut ar.x, d, Epilogue::Accumulate, staging!(ar), None);
            }
        }

        // Final norm on the prefix tokens only, then the head(s).
        layer_norm_rows(k, &w.norm, eps, &ar.x[..prefix * d], &mut ar.h[..prefix * d], d);
        let n = c.num_classes;
        linear(tap, 1 + 4 * c.depth, k, pool, sums, &w.head, 1, Input::Rows(&ar.h), d, &mut ar.head_out[..n], n, Epilogue::Store, staging!(ar), None);
        if let Some(hd_lin) = &w.head_dist {
            linear(tap, 2 + 4 * c.depth, k, pool, sums, hd_lin, 1, Input::Rows(&ar.h[d..]), d, &mut ar.head_out[n..2 * n], n, Epilogue::Store, staging!(ar), None);
            for j in 0..n {
                logits[j] = 0.5 * (ar.head_out[j] + ar.head_out[n + j]);
            }
        } else {
            logits.copy_from_slice(&ar.head_out[..n]);
        }
        Ok(())
    }
}

/// One row of a patch: inline 64-byte moves for the usual 16-pixel patches (a `memcpy` call per
/// row of 16 values cost ~1 % of an int8 pass), a `copy_from_slice` otherwise.
#[inline]
fn copy_patch_row(src: &[f32], dst: &mut [f32]) {
    match (<&[f32; 16]>::try_from(src), <&mut [f32; 16]>::try_from(&mut *dst)) {
        (Ok(s), Ok(d)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

/// Linear-layer names of a ViT in forward order (see [`NativeEngine::layer_names`]).
pub fn layer_names(c: &VitConfig) -> Vec<String> {
    let mut v = vec!["patch_embed.proj".to_string()];
    for i in 0..c.depth {
        v.extend(crate::model::BLOCK_LINEARS.iter().map(|l| format!("blocks.{i}.{l}")));
    }
    v.push("head".into());
    if c.distilled {
        v.push("head_dist".into());
    }
    v
}

impl Engine for NativeEngine<'_> {
    fn backend(&self) -> &'static str {
        "native"
    }

    fn describe(&self) -> String {
        format!("{:?}, attention {}", self.kernels, self.attention.name())
    }

    fn infer(&mut self, input: &[f32], logits: &mut [f32]) -> Result<(), EngineError> {
        self.forward(input, logits, None)
    }

    fn workers(&self) -> &dyn crate::preprocess::Workers {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_start_on_64_bytes_and_are_zeroed() {
        for len in [0, 1, 15, 197 * 197, 100_000] {
            let f = Aligned::<f32>::zeroed(len);
            let b = Aligned::<u8>::zeroed(len);
            let h = Aligned::<bf16>::zeroed(len);
            assert_eq!((f.len(), b.len(), h.len()), (len, len, len));
            assert!(len == 0 || (f.as_ptr() as usize).is_multiple_of(64) && (b.as_ptr() as usize).is_multiple_of(64) && (h.as_ptr() as usize).is_multiple_of(64));
            assert!(f.iter().all(|&v| v == 0.0) && b.iter().all(|&v| v == 0) && h.iter().all(|v| v.to_bits() == 0));
        }
    }

    #[test]
    fn row_splits_cover_every_row_once() {
        for m in [1, 15, 16, 17, 196, 197] {
            for (tasks, align) in (1..5).flat_map(|t| [(t, 1), (t, 16)]) {
                let starts: Vec<usize> = (0..=tasks).map(|t| task_first_row(t, tasks, m, align)).collect();
                assert_eq!((starts[0], starts[tasks]), (0, m));
                assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{m} rows, {tasks} tasks: {starts:?}");
                assert!(starts[..tasks].iter().all(|&s| s % align == 0 || s == m), "{m} rows, align {align}: {starts:?}");
            }
        }
    }
}
