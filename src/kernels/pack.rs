//! Conversions between row-major matrices and the panel layouts the GEMM kernels read.

use half::bf16;

use crate::blob::round_up;

/// `v` rounded to bf16 (nearest, ties to even; NaN stays NaN): plain bit operations, so loops over
/// it vectorize.
#[inline(always)]
pub fn to_bf16(v: f32) -> bf16 {
    let b = v.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    bf16::from_bits(if v.is_nan() { ((b >> 16) as u16) | 0x40 } else { rounded })
}

/// Converts `rows` rows of `k` values (`src` rows `src_stride` apart) to bf16 rows `dst_stride`
/// apart, zeroing each destination row from `k` to `dst_stride`.
pub fn rows_to_bf16(src: &[f32], rows: usize, k: usize, src_stride: usize, dst: &mut [bf16], dst_stride: usize) {
    for i in 0..rows {
        let (s, d) = (&src[i * src_stride..i * src_stride + k], &mut dst[i * dst_stride..(i + 1) * dst_stride]);
        for (o, &v) in d.iter_mut().zip(s) {
            *o = to_bf16(v);
        }
        d[k..].fill(bf16::ZERO);
    }
}

/// Packs an `n × k` matrix whose element `(j, kk)` is `src[j * row_stride + kk]` into `Panel16x2`
/// bf16 (see [`GemmBf16Args`](crate::kernels::GemmBf16Args)). `dst` must hold
/// `round_up(n, 16) * round_up(k, 2)` values; padding is zeroed.
pub fn panel16x2_from_rows(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
    let kp = round_up(k, 2);
    let dst = &mut dst[..round_up(n, 16) * kp];
    dst.fill(bf16::ZERO);
    for j in 0..n {
        let row = &src[j * row_stride..j * row_stride + k];
        let base = (j / 16) * 16 * kp + (j % 16) * 2;
        for (kk, &v) in row.iter().enumerate() {
            dst[base + (kk / 2) * 32 + kk % 2] = to_bf16(v);
        }
    }
}

/// Packs an `n × k` matrix whose element `(j, kk)` is `src[kk * row_stride + j]` (stored
/// transposed, `k` rows of `n`) into `Panel16x2` bf16; `dst` as for [`panel16x2_from_rows`].
pub fn panel16x2_from_cols(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [bf16]) {
    let kp = round_up(k, 2);
    let dst = &mut dst[..round_up(n, 16) * kp];
    for (p, panel) in dst.chunks_exact_mut(16 * kp).enumerate() {
        let j0 = p * 16;
        let width = (n - j0).min(16);
        for (g, pair_row) in panel.chunks_exact_mut(32).enumerate() {
            let k0 = &src[2 * g * row_stride + j0..2 * g * row_stride + j0 + width];
            let k1 = (2 * g + 1 < k).then(|| &src[(2 * g + 1) * row_stride + j0..(2 * g + 1) * row_stride + j0 + width]);
            for jj in 0..16 {
                pair_row[2 * jj] = if jj < width { to_bf16(k0[jj]) } else { bf16::ZERO };
                pair_row[2 * jj + 1] = match k1 {
                    Some(k1) if jj < width => to_bf16(k1[jj]),
                    _ => bf16::ZERO,
                };
            }
        }
    }
}

/// Packs an `n × k` matrix whose element `(j, kk)` is `src[j * row_stride + kk]` into `Panel16`.
/// `dst` must hold `round_up(n, 16) * k` values; padding columns are zeroed.
pub fn panel16_from_rows<T: Copy + Default>(src: &[T], n: usize, k: usize, row_stride: usize, dst: &mut [T]) {
    let dst = &mut dst[..round_up(n, 16) * k];
    for (p, panel) in dst.chunks_exact_mut(16 * k).enumerate() {
        for (kk, row) in panel.chunks_exact_mut(16).enumerate() {
            for (jj, d) in row.iter_mut().enumerate() {
                let j = p * 16 + jj;
                *d = if j < n { src[j * row_stride + kk] } else { T::default() };
            }
        }
    }
}

/// Packs an `n × k` matrix whose element `(j, kk)` is `src[kk * row_stride + j]` (i.e. the source is
/// stored transposed, `k` rows of `n`) into `Panel16`. `dst` must hold `round_up(n, 16) * k` values.
pub fn panel16_from_cols<T: Copy + Default>(src: &[T], n: usize, k: usize, row_stride: usize, dst: &mut [T]) {
    let dst = &mut dst[..round_up(n, 16) * k];
    for (p, panel) in dst.chunks_exact_mut(16 * k).enumerate() {
        let j0 = p * 16;
        let width = (n - j0).min(16);
        for (kk, row) in panel.chunks_exact_mut(16).enumerate() {
            let s = &src[kk * row_stride + j0..kk * row_stride + j0 + width];
            row[..width].copy_from_slice(s);
            row[width..].fill(T::default());
        }
    }
}

/// Unpacks a `Panel16` matrix back to row-major `n × k`.
pub fn rows_from_panel16<T: Copy>(src: &[T], n: usize, k: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(n * k);
    for j in 0..n {
        let (p, jj) = (j / 16, j % 16);
        out.extend((0..k).map(|kk| src[p * 16 * k + kk * 16 + jj]));
    }
    out
}

/// Packs a row-major `n × k` int8 matrix into `Panel16x4`.
pub fn panel16x4_from_rows(src: &[i8], n: usize, k: usize) -> Vec<i8> {
    let kp = round_up(k, 4);
    let mut dst = vec![0i8; round_up(n, 16) * kp];
    for j in 0..n {
        for kk in 0..k {
            dst[(j / 16) * kp * 16 + (kk / 4) * 64 + (j % 16) * 4 + kk % 4] = src[j * k + kk];
        }
    }
    dst
}

/// Per-row sums (`Σ_kk w[j, kk]` for each of the `n` rows) of a `Panel16x4` int8 matrix, read in
/// storage order (padding is zero, so it does not count).
pub fn panel16x4_row_sums(src: &[i8], n: usize, k: usize) -> Vec<i32> {
    let kp = round_up(k, 4);
    let mut sums = vec![0i32; round_up(n, 16)];
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::x86::avx512::Avx512::detect().is_some() {
        // SAFETY: `detect` found AVX-512F and VNNI.
        unsafe { crate::kernels::x86::avx512::panel16x4_sums(src, kp, &mut sums) };
        sums.truncate(n);
        return sums;
    }
    for (p, panel) in src.chunks_exact(16 * kp).enumerate() {
        // Fixed-size arrays let the compiler vectorize this (it runs at engine construction, on
        // every int8 weight, so it counts towards open → first result).
        let mut acc = [0i32; 16];
        for group in panel.chunks_exact(64) {
            let group: &[i8; 64] = group.try_into().expect("chunks of 64");
            for (jj, a) in acc.iter_mut().enumerate() {
                *a += group[4 * jj] as i32 + group[4 * jj + 1] as i32 + group[4 * jj + 2] as i32 + group[4 * jj + 3] as i32;
            }
        }
        sums[p * 16..p * 16 + 16].copy_from_slice(&acc);
    }
    sums.truncate(n);
    sums
}

/// Scale of the symmetric int8 quantization of values whose largest magnitude is `amax`:
/// `x ≈ scale · q` with `q = round(x / scale)` in `−127..=127`. Returns `(scale, 1 / scale)`, or
/// `(1, 0)` when `amax` is zero or not finite (then every value quantizes to 0).
#[inline]
pub fn i8_params(amax: f32) -> (f32, f32) {
    if amax > 0.0 && amax.is_finite() {
        (amax / 127.0, 127.0 / amax)
    } else {
        (1.0, 0.0)
    }
}

/// `round(v · inv)` clamped to `−127..=127` (rounding half away from zero, like `f32::round`).
#[inline(always)]
pub fn quantize_i8(v: f32, inv: f32) -> i8 {
    (v * inv).round().clamp(-127.0, 127.0) as i8
}

/// Quantizes an `n × k` matrix whose element `(j, kk)` is `src[j * row_stride + kk]` to int8 with
/// one symmetric scale per row `j` and packs it into `Panel16x4`, so that row `j` becomes output
/// column `j` of a [`GemmU8I8`](crate::kernels::GemmU8I8) (attention keys: one scale per token).
/// `dst` must hold `round_up(n, 16) * round_up(k, 4)` values, `scale` and `sum` `round_up(n, 16)`;
/// `scale[j]` and `sum[j] = Σ_kk q[j, kk]` are written for every column, padding included (scale
/// 1, sum 0, zero weights).
pub fn panel16x4_quantize_rows(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], scale: &mut [f32], sum: &mut [i32]) {
    let (kp, np) = (round_up(k, 4), round_up(n, 16));
    let dst = &mut dst[..np * kp];
    dst.fill(0);
    scale[n..np].fill(1.0);
    sum[n..np].fill(0);
    for j in 0..n {
        let row = &src[j * row_stride..j * row_stride + k];
        let (s, inv) = i8_params(row.iter().fold(0f32, |m, &v| m.max(v.abs())));
        let base = (j / 16) * 16 * kp + (j % 16) * 4;
        let mut total = 0i32;
        for (kk, &v) in row.iter().enumerate() {
            let q = quantize_i8(v, inv);
            dst[base + (kk / 4) * 64 + kk % 4] = q;
            total += q as i32;
        }
        scale[j] = s;
        sum[j] = total;
    }
}

/// Quantizes an `n × k` matrix stored transposed — element `(j, kk)` is `src[kk * row_stride + j]`,
/// i.e. `k` source rows of `n` values — to int8 with one symmetric scale per *source row* `kk`
/// (written to `row_scale[kk]`, `k` values) and packs it into `Panel16x4`; `sum[j] = Σ_kk q[j, kk]`
/// for all `round_up(n, 16)` columns (padding 0). The scales multiply the reduction's other operand
/// (attention values: one scale per token, folded into the probabilities before they are quantized),
/// so the GEMM's per-column scale is 1. `dst` must hold `round_up(n, 16) * round_up(k, 4)` values.
pub fn panel16x4_quantize_cols_by_row(src: &[f32], n: usize, k: usize, row_stride: usize, dst: &mut [i8], row_scale: &mut [f32], sum: &mut [i32]) {
    let (kp, np) = (round_up(k, 4), round_up(n, 16));
    let dst = &mut dst[..np * kp];
    dst.fill(0);
    sum[..np].fill(0);
    for kk in 0..k {
        let row = &src[kk * row_stride..kk * row_stride + n];
        let (s, inv) = i8_params(row.iter().fold(0f32, |m, &v| m.max(v.abs())));
        row_scale[kk] = s;
        for (j, &v) in row.iter().enumerate() {
            let q = quantize_i8(v, inv);
            dst[(j / 16) * 16 * kp + (kk / 4) * 64 + (j % 16) * 4 + kk % 4] = q;
            sum[j] += q as i32;
        }
    }
}

/// Unpacks a `Panel16x4` int8 matrix back to row-major `n × k`.
pub fn rows_from_panel16x4(src: &[i8], n: usize, k: usize) -> Vec<i8> {
    let kp = round_up(k, 4);
    let mut out = Vec::with_capacity(n * k);
    for j in 0..n {
        out.extend((0..k).map(|kk| src[(j / 16) * kp * 16 + (kk / 4) * 64 + (j % 16) * 4 + kk % 4]));
    }
    out
}

/// Unpacks a `Panel16x2` bf16 matrix back to row-major `n × k`.
pub fn rows_from_panel16x2(src: &[bf16], n: usize, k: usize) -> Vec<bf16> {
    let kp = round_up(k, 2);
    let mut out = Vec::with_capacity(n * k);
    for j in 0..n {
        out.extend((0..k).map(|kk| src[(j / 16) * 16 * kp + (kk / 2) * 32 + (j % 16) * 2 + kk % 2]));
    }
    out
}

/// [`rows_from_panel16x2`] widened to f32 (exact).
pub fn f32_rows_from_panel16x2(src: &[bf16], n: usize, k: usize) -> Vec<f32> {
    rows_from_panel16x2(src, n, k).iter().map(|v| v.to_f32()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel16_round_trips_ragged_shapes() {
        for (n, k) in [(1, 1), (15, 3), (16, 7), (17, 5), (40, 33)] {
            let src: Vec<f32> = (0..n * k).map(|i| i as f32).collect();
            let mut packed = vec![f32::NAN; round_up(n, 16) * k];
            panel16_from_rows(&src, n, k, k, &mut packed);
            assert_eq!(rows_from_panel16(&packed, n, k), src);
            assert!(packed.iter().all(|v| !v.is_nan()), "padding must be written");
            // transposed source gives the same panels
            let t: Vec<f32> = (0..k).flat_map(|kk| (0..n).map(move |j| (j * k + kk) as f32)).collect();
            let mut packed_t = vec![f32::NAN; round_up(n, 16) * k];
            panel16_from_cols(&t, n, k, n, &mut packed_t);
            assert_eq!(packed_t, packed);
        }
    }

    #[test]
    fn bf16_rounding_matches_half() {
        let mut x = 0x1234_5677u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = f32::from_bits(x);
            let (got, want) = (to_bf16(v), bf16::from_f32(v));
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{v:e}: {got} vs {want}");
        }
        for v in [0.0f32, -0.0, 1.0, f32::MAX, f32::INFINITY, f32::NEG_INFINITY, 1.0 + f32::EPSILON * 64.0, f32::MIN_POSITIVE] {
            assert_eq!(to_bf16(v).to_bits(), bf16::from_f32(v).to_bits(), "{v:e}");
        }
    }

    #[test]
    fn panel16x2_from_rows_and_cols_agree_on_ragged_shapes() {
        for (n, k) in [(1, 1), (15, 3), (16, 8), (17, 5), (40, 33)] {
            let src: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.5 - 7.0).collect();
            let kp = round_up(k, 2);
            let mut packed = vec![bf16::NAN; round_up(n, 16) * kp];
            panel16x2_from_rows(&src, n, k, k, &mut packed);
            let back: Vec<u16> = rows_from_panel16x2(&packed, n, k).iter().map(|v| v.to_bits()).collect();
            assert_eq!(back, src.iter().map(|&v| bf16::from_f32(v).to_bits()).collect::<Vec<_>>(), "n {n} k {k}");
            for j in 0..round_up(n, 16) {
                for kk in 0..kp {
                    let got = packed[(j / 16) * 16 * kp + (kk / 2) * 32 + (j % 16) * 2 + kk % 2];
                    let want = if j < n && kk < k { bf16::from_f32(src[j * k + kk]) } else { bf16::ZERO };
                    assert_eq!(got.to_bits(), want.to_bits(), "n {n} k {k} j {j} kk {kk}");
                }
            }
            let t: Vec<f32> = (0..k).flat_map(|kk| (0..n).map(move |j| (j * k + kk) as f32 * 0.5 - 7.0)).collect();
            let mut packed_t = vec![bf16::NAN; round_up(n, 16) * kp];
            panel16x2_from_cols(&t, n, k, n, &mut packed_t);
            assert_eq!(packed_t.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), packed.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn panel16x4_quantizers_reconstruct_within_half_a_step() {
        for (n, k) in [(1, 1), (10, 6), (16, 8), (33, 13), (197, 64), (64, 197)] {
            let val = |j: usize, kk: usize| ((j * k + kk) * 7919 % 1000) as f32 * 0.013 - 6.5 + j as f32 * 0.01;
            let (kp, np) = (round_up(k, 4), round_up(n, 16));
            // Per-row scales (one per GEMM column j).
            let src: Vec<f32> = (0..n).flat_map(|j| (0..k).map(move |kk| val(j, kk))).collect();
            let (mut d, mut s, mut z) = (vec![99i8; np * kp], vec![f32::NAN; np], vec![-1i32; np]);
            panel16x4_quantize_rows(&src, n, k, k, &mut d, &mut s, &mut z);
            let q = rows_from_panel16x4(&d, n, k);
            for j in 0..n {
                let amax = (0..k).fold(0f32, |m, kk| m.max(val(j, kk).abs()));
                assert_eq!(s[j], amax / 127.0);
                for kk in 0..k {
                    let err = (q[j * k + kk] as f32 * s[j] - val(j, kk)).abs();
                    assert!(err <= 0.5 * s[j] * 1.0001, "rows n {n} k {k} ({j}, {kk}): error {err} > half a step {}", s[j]);
                }
            }
            assert!(s[n..].iter().all(|&v| v == 1.0) && z[n..].iter().all(|&v| v == 0));
            assert_eq!(panel16x4_row_sums(&d, n, k), z[..n].to_vec());
            // Transposed storage, per-source-row scales (one per reduction index kk).
            let t: Vec<f32> = (0..k).flat_map(|kk| (0..n).map(move |j| val(j, kk))).collect();
            let (mut dt, mut st, mut zt) = (vec![99i8; np * kp], vec![f32::NAN; k], vec![-1i32; np]);
            panel16x4_quantize_cols_by_row(&t, n, k, n, &mut dt, &mut st, &mut zt);
            let qt = rows_from_panel16x4(&dt, n, k);
            for kk in 0..k {
                let amax = (0..n).fold(0f32, |m, j| m.max(val(j, kk).abs()));
                assert_eq!(st[kk], amax / 127.0);
                for j in 0..n {
                    let err = (qt[j * k + kk] as f32 * st[kk] - val(j, kk)).abs();
                    assert!(err <= 0.5 * st[kk] * 1.0001, "cols n {n} k {k} ({j}, {kk}): error {err} > half a step {}", st[kk]);
                }
            }
            assert!(zt[n..].iter().all(|&v| v == 0));
            assert_eq!(panel16x4_row_sums(&dt, n, k), zt[..n].to_vec());
            assert_eq!(dt.len(), np * kp);
            assert!(dt.chunks_exact(16 * kp).all(|p| p.chunks_exact(64).skip(k.div_ceil(4)).all(|g| g.iter().all(|&v| v == 0))));
        }
        // All-zero and non-finite rows quantize to zero with scale 1.
        let src = [0.0f32, 0.0, f32::INFINITY, 1.0];
        let (mut d, mut s, mut z) = (vec![1i8; 16 * 4], vec![0f32; 16], vec![0i32; 16]);
        panel16x4_quantize_rows(&src, 2, 2, 2, &mut d, &mut s, &mut z);
        assert_eq!((s[0], z[0], s[1], z[1]), (1.0, 0, 1.0, 0));
    }

    #[test]
    fn panel16x4_round_trips_ragged_shapes() {
        for (n, k) in [(1, 1), (10, 6), (16, 8), (33, 13)] {
            let src: Vec<i8> = (0..n * k).map(|i| (i % 251) as i8).collect();
            let packed = panel16x4_from_rows(&src, n, k);
            assert_eq!(packed.len(), round_up(n, 16) * round_up(k, 4));
            let sums: Vec<i32> = src.chunks_exact(k).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
            assert_eq!(panel16x4_row_sums(&packed, n, k), sums);
            assert_eq!(rows_from_panel16x4(&packed, n, k), src);
        }
    }
}
