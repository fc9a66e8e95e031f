//! Turning logits into ranked, labelled probabilities.

use serde::Serialize;

/// One ranked class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Class index.
    pub index: usize,
    /// Class label.
    pub label: String,
    /// Softmax probability.
    pub score: f32,
}

/// In-place numerically stable softmax.
pub fn softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for v in logits.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    logits.iter_mut().for_each(|v| *v *= inv);
}

/// Indices of the `k` largest values, largest first (ties keep the lower index first).
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Index of the largest value.
pub fn argmax(values: &[f32]) -> usize {
    top_k(values, 1).first().copied().unwrap_or(0)
}

/// Cosine similarity of two vectors (f64 accumulation).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        return if aa == bb { 1.0 } else { 0.0 };
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Top-`k` labelled predictions from raw logits.
pub fn predictions(logits: &[f32], k: usize, label: impl Fn(usize) -> String) -> Vec<Prediction> {
    let mut probs = logits.to_vec();
    softmax(&mut probs);
    top_k(&probs, k).into_iter().map(|i| Prediction { index: i, label: label(i), score: probs[i] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, -1.0], 3), vec![1, 2, 0]);
        assert_eq!(argmax(&[3.0, 1.0]), 0);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let mut v = vec![1000.0, 1001.0, 999.0];
        softmax(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[1] > v[0] && v[0] > v[2]);
    }

    #[test]
    fn cosine_of_parallel_and_orthogonal() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
    }
}
