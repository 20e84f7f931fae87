//! MaxSim: for each query token, the best dot product with any document token, summed.
//!
//! This is the portable implementation: documents' f16 rows are widened to f32 once per
//! candidate, and the dot product is written with eight independent accumulators so the compiler
//! vectorises it. Hand-tuned SIMD kernels replace it in a later step; this stays as the
//! reference they are tested against.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Dot product of two equal-length slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for lane in 0..LANES {
            acc[lane] += ca[lane] * cb[lane];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in tail_a.iter().zip(tail_b) {
        sum += x * y;
    }
    sum
}

/// Scores documents against one query's token vectors, reusing a widening buffer.
pub struct MaxSimScorer<'q> {
    query: &'q [f32],
    dim: usize,
    widened: Vec<f32>,
}

impl<'q> MaxSimScorer<'q> {
    /// A scorer for `query` (`n × dim` values, row-major). `dim` must be > 0.
    pub fn new(query: &'q [f32], dim: usize) -> Self {
        MaxSimScorer {
            query,
            dim,
            widened: Vec::new(),
        }
    }

    /// MaxSim of the query against a document's f16 token rows (`m × dim` values). A document
    /// without tokens scores 0.
    pub fn score(&mut self, doc: &[f16]) -> f32 {
        self.widened.resize(doc.len(), 0.0);
        doc.convert_to_f32_slice(&mut self.widened);
        maxsim_f32(self.query, &self.widened, self.dim)
    }
}

/// MaxSim over f32 rows: Σ over query rows of the max dot product with any document row.
pub fn maxsim_f32(query: &[f32], doc: &[f32], dim: usize) -> f32 {
    if doc.is_empty() {
        return 0.0;
    }
    query
        .chunks_exact(dim)
        .map(|q| {
            doc.chunks_exact(dim)
                .map(|d| dot(q, d))
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(query: &[f32], doc: &[f32], dim: usize) -> f64 {
        let mut total = 0f64;
        for q in query.chunks(dim) {
            let mut best = f64::NEG_INFINITY;
            for d in doc.chunks(dim) {
                let s: f64 = q.iter().zip(d).map(|(x, y)| *x as f64 * *y as f64).sum();
                best = best.max(s);
            }
            total += best;
        }
        total
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator (xorshift) is enough for test data.
        let mut state = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_naive_loop_for_odd_shapes() {
        for (nq, nd, dim) in [(1, 1, 1), (3, 7, 13), (32, 80, 128), (5, 1, 96), (2, 9, 17)] {
            let query = values(nq * dim, nq as u32 + 7);
            let doc32 = values(nd * dim, nd as u32 + 11);
            let doc16: Vec<f16> = doc32.iter().map(|&x| f16::from_f32(x)).collect();
            let widened: Vec<f32> = doc16.iter().map(|x| x.to_f32()).collect();
            let expected = naive(&query, &widened, dim);
            let got = MaxSimScorer::new(&query, dim).score(&doc16);
            assert!(
                (got as f64 - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                "nq={nq} nd={nd} dim={dim}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn empty_document_scores_zero() {
        assert_eq!(MaxSimScorer::new(&[1.0, 2.0], 2).score(&[]), 0.0);
    }
}
