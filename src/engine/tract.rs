//! An independent second engine: the same blob evaluated by tract-core. The graph is built here from
//! tract's own operators (EinSum matmuls, reductions for LayerNorm, tract's exact GELU and softmax);
//! nothing of vitedge's kernels or forward pass is reused, so the tests can use it as an oracle.
//!
//! Weights are unpacked from the panel layouts to row-major f32 (f16 widened; int8 dequantized with
//! its per-channel scales). For int8 layers the per-token u8 activation quantization the native
//! engine performs is emulated with tract operators, so int8 blobs are checked too.

use tract_core::internal::*;
use tract_core::ops::array::{Slice, TypedConcat};
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::change_axes::{wire_with_rank_broadcast, AxisOp};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math;
use tract_core::ops::nn::{self as tnn, Reduce, Reducer, Softmax, SoftmaxKind};

use super::{check_len, Engine, EngineError, EngineOptions};
use crate::kernels::pack;
use crate::model::{Linear, Matrix, Model, Norm, VitConfig};

/// Runs the model through an optimized tract-core `TypedModel` built from the blob.
pub struct TractEngine {
    plan: Arc<TypedRunnableModel>,
    cfg: VitConfig,
}

fn be(e: impl std::fmt::Display) -> EngineError {
    EngineError::Backend(format!("tract: {e}"))
}

/// Graph-building helper with unique node names.
struct Builder {
    m: TypedModel,
    n: usize,
}

impl Builder {
    fn name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}.{}", self.n)
    }
    fn konst(&mut self, what: &str, t: Tensor) -> TractResult<OutletId> {
        let name = self.name(what);
        self.m.add_const(name, t)
    }
    fn scalar(&mut self, v: f32) -> TractResult<OutletId> {
        self.konst("scalar", tensor0(v))
    }
    fn bin(&mut self, what: &str, op: TypedBinOp, a: OutletId, b: OutletId) -> TractResult<OutletId> {
        let name = self.name(what);
        Ok(wire_with_rank_broadcast(name, &mut self.m, op, &[a, b])?[0])
    }
    fn op(&mut self, what: &str, op: impl Into<Box<dyn TypedOp>>, inputs: &[OutletId]) -> TractResult<OutletId> {
        let name = self.name(what);
        Ok(self.m.wire_node(name, op, inputs)?[0])
    }
    fn einsum(&mut self, expr: &str, a: OutletId, b: OutletId) -> TractResult<OutletId> {
        let axes: AxesMapping = expr.parse()?;
        self.op("einsum", EinSum::new(axes, f32::datum_type()), &[a, b])
    }
    fn slice(&mut self, x: OutletId, axis: usize, start: usize, end: usize) -> TractResult<OutletId> {
        self.op("slice", Slice::new(axis, start, end), &[x])
    }
    fn reduce(&mut self, x: OutletId, reducer: Reducer) -> TractResult<OutletId> {
        self.op("reduce", Reduce::new(tvec!(1), reducer), &[x])
    }

    /// LayerNorm over the last axis of a `[rows, d]` wire.
    fn layer_norm(&mut self, x: OutletId, norm: &Norm<'_>, eps: f32) -> TractResult<OutletId> {
        let d = norm.weight.len();
        let inv_d = self.scalar(1.0 / d as f32)?;
        let sum = self.reduce(x, Reducer::Sum)?;
        let mean = self.bin("mean", math::mul(), sum, inv_d)?;
        let xc = self.bin("center", math::sub(), x, mean)?;
        let sq = self.bin("square", math::mul(), xc, xc)?;
        let sum_sq = self.reduce(sq, Reducer::Sum)?;
        let var = self.bin("var", math::mul(), sum_sq, inv_d)?;
        let eps = self.scalar(eps)?;
        let var_eps = self.bin("var_eps", math::add(), var, eps)?;
        let inv = self.op("rsqrt", math::rsqrt(), &[var_eps])?;
        let normed = self.bin("normed", math::mul(), xc, inv)?;
        let g = self.konst("gamma", tensor1(norm.weight))?;
        let b = self.konst("beta", tensor1(norm.bias))?;
        let scaled = self.bin("scaled", math::mul(), normed, g)?;
        self.bin("shifted", math::add(), scaled, b)
    }

    /// Per-row asymmetric u8 fake-quantization (quantize then dequantize), as the native engine
    /// quantizes int8 layer inputs.
    fn fake_quant_rows(&mut self, x: OutletId) -> TractResult<OutletId> {
        let zero = self.scalar(0.0)?;
        let mx = self.reduce(x, Reducer::Max)?;
        let mn = self.reduce(x, Reducer::Min)?;
        let hi = self.bin("hi", math::max(), mx, zero)?;
        let lo = self.bin("lo", math::min(), mn, zero)?;
        let range = self.bin("range", math::sub(), hi, lo)?;
        let tiny = self.scalar(1e-30)?;
        let range = self.bin("range_safe", math::max(), range, tiny)?;
        let inv255 = self.scalar(1.0 / 255.0)?;
        let scale = self.bin("scale", math::mul(), range, inv255)?;
        let neg_lo = self.bin("neg_lo", math::sub(), zero, lo)?;
        let zp = self.bin("zp_raw", math::div(), neg_lo, scale)?;
        let zp = self.op("zp", math::round(), &[zp])?;
        let xs = self.bin("x_over_s", math::div(), x, scale)?;
        let xs = self.op("x_round", math::round(), &[xs])?;
        let q = self.bin("q", math::add(), xs, zp)?;
        let c0 = self.scalar(0.0)?;
        let c255 = self.scalar(255.0)?;
        let q = self.bin("q_lo", math::max(), q, c0)?;
        let q = self.bin("q_hi", math::min(), q, c255)?;
        let centered = self.bin("q_centered", math::sub(), q, zp)?;
        self.bin("dequant", math::mul(), centered, scale)
    }

    /// `x · Wᵀ + b` for a `[rows, k]` wire.
    fn linear(&mut self, x: OutletId, l: &Linear<'_>) -> TractResult<OutletId> {
        let (w, quantized) = match l.weight {
            Matrix::F32(p) => (pack::rows_from_panel16(p, l.n, l.k), false),
            Matrix::F16(p) => (pack::rows_from_panel16(p, l.n, l.k).iter().map(|v| v.to_f32()).collect(), false),
            // The bf16 weights exactly; activations stay f32 (the native engine rounds them to bf16).
            Matrix::Bf16(p) => (pack::f32_rows_from_panel16x2(p, l.n, l.k), false),
            Matrix::I8 { w, scale } => {
                let rows = pack::rows_from_panel16x4(w, l.n, l.k);
                (rows.iter().enumerate().map(|(i, &q)| q as f32 * scale[i / l.k]).collect(), true)
            }
        };
        let x = if quantized { self.fake_quant_rows(x)? } else { x };
        let wt = self.konst("weight", tensor1(&w).into_shape(&[l.n, l.k])?)?;
        let y = self.einsum("mk,nk->mn", x, wt)?;
        let b = self.konst("bias", tensor1(l.bias))?;
        self.bin("bias_add", math::add(), y, b)
    }
}

fn build(model: &Model) -> TractResult<TypedModel> {
    let c = model.config().clone();
    let w = model.weights()?;
    let (s, p, g, d) = (c.image_size, c.patch_size, c.grid(), c.embed_dim);
    let (t, heads, hd) = (c.num_tokens(), c.num_heads, c.head_dim());
    let mut b = Builder { m: TypedModel::default(), n: 0 };
    let input = b.m.add_source("input", f32::fact([3, s, s]))?;
    // Unfold patches: [3, S, S] → [3, G, P, G, P] → [G, G, 3, P, P] → [G·G, 3·P·P].
    let x = b.op("unfold", AxisOp::Reshape(1, tvec!(s.to_dim(), s.to_dim()), tvec!(g.to_dim(), p.to_dim(), g.to_dim(), p.to_dim())), &[input])?;
    let x = b.op("move_gy", AxisOp::Move(1, 0), &[x])?;
    let x = b.op("move_gx", AxisOp::Move(3, 1), &[x])?;
    let x = b.op(
        "flatten",
        AxisOp::Reshape(0, tvec![g.to_dim(), g.to_dim(), 3.to_dim(), p.to_dim(), p.to_dim()], tvec![(g * g).to_dim(), (3 * p * p).to_dim()]),
        &[x],
    )?;
    let patches = b.linear(x, &w.patch_embed)?;
    let mut prefix = vec![b.konst("cls_token", tensor1(w.cls_token).into_shape(&[1, d])?)?];
    if let Some(dist) = w.dist_token {
        prefix.push(b.konst("dist_token", tensor1(dist).into_shape(&[1, d])?)?);
    }
    prefix.push(patches);
    let tokens = b.op("concat_tokens", TypedConcat::new(0), &prefix)?;
    let pos = b.konst("pos_embed", tensor1(w.pos_embed).into_shape(&[t, d])?)?;
    let mut x = b.bin("add_pos", math::add(), tokens, pos)?;
    let scale = b.scalar((hd as f32).powf(-0.5))?;
    for blk in &w.blocks {
        let h = b.layer_norm(x, &blk.norm1, c.layer_norm_eps)?;
        let qkv = b.linear(h, &blk.qkv)?;
        let mut outs = Vec::with_capacity(heads);
        for head in 0..heads {
            let q = b.slice(qkv, 1, head * hd, (head + 1) * hd)?;
            let k = b.slice(qkv, 1, d + head * hd, d + (head + 1) * hd)?;
            let v = b.slice(qkv, 1, 2 * d + head * hd, 2 * d + (head + 1) * hd)?;
            let scores = b.einsum("id,jd->ij", q, k)?;
            let scores = b.bin("attn_scale", math::mul(), scores, scale)?;
            let probs = b.op("softmax", Softmax::new(tvec!(1), None, SoftmaxKind::Softmax), &[scores])?;
            outs.push(b.einsum("ij,jd->id", probs, v)?);
        }
        let ctx = b.op("concat_heads", TypedConcat::new(1), &outs)?;
        let attn = b.linear(ctx, &blk.proj)?;
        x = b.bin("residual1", math::add(), x, attn)?;
        let h = b.layer_norm(x, &blk.norm2, c.layer_norm_eps)?;
        let h = b.linear(h, &blk.fc1)?;
        let h = b.op("gelu", tnn::gelu_exact::gelu_exact(), &[h])?;
        let h = b.linear(h, &blk.fc2)?;
        x = b.bin("residual2", math::add(), x, h)?;
    }
    let cls = b.slice(x, 0, 0, 1)?;
    let cls = b.layer_norm(cls, &w.norm, c.layer_norm_eps)?;
    let mut logits = b.linear(cls, &w.head)?;
    if let Some(head_dist) = &w.head_dist {
        let dist = b.slice(x, 0, 1, 2)?;
        let dist = b.layer_norm(dist, &w.norm, c.layer_norm_eps)?;
        let dl = b.linear(dist, head_dist)?;
        let sum = b.bin("heads_sum", math::add(), logits, dl)?;
        let half = b.scalar(0.5)?;
        logits = b.bin("heads_mean", math::mul(), sum, half)?;
    }
    b.m.select_output_outlets(&[logits])?;
    Ok(b.m)
}

impl TractEngine {
    /// Builds and optimizes the tract graph for `model`. tract runs single-threaded here;
    /// `opts.threads` is not used.
    pub fn new(model: &Model, opts: &EngineOptions) -> Result<Self, EngineError> {
        let _ = opts;
        let graph = build(model).map_err(be)?;
        let plan = graph.into_optimized().map_err(be)?.into_runnable().map_err(be)?;
        Ok(TractEngine { plan, cfg: model.config().clone() })
    }
}

impl Engine for TractEngine {
    fn backend(&self) -> &'static str {
        "tract"
    }

    fn describe(&self) -> String {
        "tract-core 0.23 (optimized TypedModel)".into()
    }

    fn infer(&mut self, input: &[f32], logits: &mut [f32]) -> Result<(), EngineError> {
        let s = self.cfg.image_size;
        check_len("input", self.cfg.input_len(), input.len())?;
        check_len("logits", self.cfg.num_classes, logits.len())?;
        let t = tensor1(input).into_shape(&[3, s, s]).map_err(be)?;
        let out = self.plan.run(tvec!(t.into_tvalue())).map_err(be)?;
        let view = out[0].to_plain_array_view::<f32>().map_err(be)?;
        for (o, v) in logits.iter_mut().zip(view.iter()) {
            *o = *v;
        }
        Ok(())
    }
}
