//! The reference kernels: plain loops over the packed layouts, one dot product at a time.

use super::packed_index;
use half::f16;

/// MaxSim of `query` (row-major, `dim` values per token) against a packed document of `m ≥ 1`
/// tokens. Each dot product is summed in f32 in dimension order, and the per-token maxima are
/// summed in query order, exactly like a naive loop over the unpacked rows.
pub(super) fn maxsim(query: &[f32], dim: usize, doc: &[f16], m: usize) -> f32 {
    let mut total = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for t in 0..m {
            let mut dot = 0.0f32;
            for (j, &qj) in q.iter().enumerate() {
                dot += qj * doc[packed_index(t, j, dim)].to_f32();
            }
            best = best.max(dot);
        }
        total += best;
    }
    total
}

/// MaxSim of `query` (row-major, `dim` values per token) against a packed int8 document of
/// `m ≥ 1` tokens (`values` and per-token `scales`). Each dot product with a token's integer
/// values is summed in f32 in dimension order and then multiplied by the token's scale; the
/// per-token maxima are summed in query order.
pub(super) fn maxsim_int8(
    query: &[f32],
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
) -> f32 {
    let mut total = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for (t, &scale) in scales.iter().enumerate().take(m) {
            let mut dot = 0.0f32;
            for (j, &qj) in q.iter().enumerate() {
                dot += qj * f32::from(values[packed_index(t, j, dim)]);
            }
            best = best.max(dot * scale);
        }
        total += best;
    }
    total
}
