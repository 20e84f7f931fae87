//! The reference kernels: plain loops over the packed layouts, one dot product at a time; and the
//! portable nearest-centroid search.

use super::{packed_index, TokenMax, BLOCK};
use half::f16;

/// MaxSim of `query` (row-major, `dim` values per token) against a packed document of `m ≥ 1`
/// tokens. Each dot product is summed in f32 in dimension order, and the per-token maxima are
/// summed in query order, exactly like a naive loop over the unpacked rows. With `matches` (one
/// per query token), each query token's best document token (the first, in document order) and
/// its dot product are written there too.
pub(super) fn maxsim(
    query: &[f32],
    dim: usize,
    doc: &[f16],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    maxsim_by(query, dim, m, matches, |t, q| {
        let mut dot = 0.0f32;
        for (j, &qj) in q.iter().enumerate() {
            dot += qj * doc[packed_index(t, j, dim)].to_f32();
        }
        dot
    })
}

/// MaxSim of `query` (row-major, `dim` values per token) against a packed int8 document of
/// `m ≥ 1` tokens (`values` and per-token `scales`). Each dot product with a token's integer
/// values is summed in f32 in dimension order and then multiplied by the token's scale; the
/// per-token maxima are summed in query order. `matches` as in [`maxsim`].
pub(super) fn maxsim_int8(
    query: &[f32],
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    maxsim_by(query, dim, m, matches, |t, q| {
        let mut dot = 0.0f32;
        for (j, &qj) in q.iter().enumerate() {
            dot += qj * f32::from(values[packed_index(t, j, dim)]);
        }
        dot * scales[t]
    })
}

/// Σ over the query tokens (in order) of the largest `dot(t, query token)` over the `m`
/// document tokens `t`, recording each maximum and its first token in `matches` when given.
fn maxsim_by(
    query: &[f32],
    dim: usize,
    m: usize,
    mut matches: Option<&mut [TokenMax]>,
    dot: impl Fn(usize, &[f32]) -> f32,
) -> f32 {
    let mut total = 0.0f32;
    for (i, q) in query.chunks_exact(dim).enumerate() {
        let mut best = TokenMax {
            token: 0,
            score: f32::NEG_INFINITY,
        };
        for t in 0..m {
            let score = dot(t, q);
            if score > best.score {
                best = TokenMax {
                    token: t as u32,
                    score,
                };
            }
        }
        if let Some(out) = matches.as_deref_mut() {
            out[i] = best;
        }
        total += best.score;
    }
    total
}

/// The nearest packed centroid to `x` (see [`super::nearest`]): 16 lanes of scores per group,
/// each `((h − x₀·c₀) − x₁·c₁) − …`, a running per-lane minimum, then the lowest lane.
pub(super) fn nearest(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    let mut best = [f32::INFINITY; BLOCK];
    // Group numbers as f32 (exact below 2²⁴), as the SIMD kernels keep them.
    let mut best_group = [0.0f32; BLOCK];
    for (g, (group, norms)) in centroids
        .chunks_exact(BLOCK * x.len())
        .zip(half_norms.chunks_exact(BLOCK))
        .enumerate()
    {
        let mut score = [0.0f32; BLOCK];
        score.copy_from_slice(norms);
        for (column, &value) in group.chunks_exact(BLOCK).zip(x) {
            for (s, &c) in score.iter_mut().zip(column) {
                *s -= value * c;
            }
        }
        for lane in 0..BLOCK {
            let better = score[lane] < best[lane];
            best[lane] = if better { score[lane] } else { best[lane] };
            best_group[lane] = if better { g as f32 } else { best_group[lane] };
        }
    }
    super::nearest::lowest(&best, &best_group)
}
