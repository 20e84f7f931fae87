//! Nearest-centroid search over a packed set of centroids: the inner loop of product-quantization
//! training and encoding ([`crate::pq`]).
//!
//! # Packed centroid layout
//!
//! `k` centroids of width `w ≥ 1` are stored like a packed document (see the
//! [parent module](super)), as f32: `ceil(k / 16)` *groups* of [`BLOCK`] = 16 centroids, each
//! group dimension-major (for each dimension `d` in `0..w`, the value of dimension `d` of the
//! group's 16 centroids), [`packed_len`]`(k, w)` values in all; and per centroid a *half norm*
//! `‖c‖² / 2`, `ceil(k / 16) · 16` of them. The padding of the last group must have half norm
//! +∞ (its values are then irrelevant, as long as they are finite): [`pack_centroids`] writes
//! zeros and +∞.
//!
//! # Search
//!
//! [`nearest`] returns the centroid `c` minimising `score(c) = ‖c‖²/2 − x·c`, which orders
//! centroids as the squared distance `‖x − c‖² = ‖x‖² + 2 · score(c)` does. Every kernel computes
//! each score in the same f32 operations in the same order, `((h − x₀·c₀) − x₁·c₁) − …` (products
//! rounded, no fused multiply-add), so all kernels return the same index, bit for bit: ties, and
//! a query whose scores are all NaN or +∞, go to the lowest index.

use super::{packed_len, scalar, KernelKind, BLOCK};

#[cfg(target_arch = "x86_64")]
use super::x86;

/// Appends `rows` (`k × width` centroid values, row-major) to `out_values` in the packed
/// centroid layout, and their half norms `‖c‖² / 2` to `out_half_norms`; the last group's padding
/// is value 0 and half norm +∞.
///
/// # Panics
///
/// If `width` is 0 or `rows.len()` is not a multiple of it.
pub fn pack_centroids(
    rows: &[f32],
    width: usize,
    out_values: &mut Vec<f32>,
    out_half_norms: &mut Vec<f32>,
) {
    assert!(
        width > 0 && rows.len().is_multiple_of(width),
        "pack_centroids: {} values are not rows of width {width}",
        rows.len()
    );
    let k = rows.len() / width;
    let (values_start, norms_start) = (out_values.len(), out_half_norms.len());
    out_values.resize(values_start + packed_len(k, width), 0.0);
    out_half_norms.resize(norms_start + packed_len(k, 1), f32::INFINITY);
    let values = &mut out_values[values_start..];
    for (c, row) in rows.chunks_exact(width).enumerate() {
        for (d, &value) in row.iter().enumerate() {
            values[super::packed_index(c, d, width)] = value;
        }
        out_half_norms[norms_start + c] = row.iter().map(|v| v * v).sum::<f32>() / 2.0;
    }
}

/// The index of the centroid nearest to `x` among packed centroids (`centroids`, of width
/// `x.len()`, and their `half_norms`; see the [module documentation](self)), computed by kernel
/// `kind`. Every kernel returns the same index.
///
/// # Panics
///
/// If `kind` is not available on this CPU, if `x` is empty, if `half_norms.len()` is not a
/// multiple of 16, or if `centroids.len() != half_norms.len() · x.len()`.
pub fn nearest(kind: KernelKind, x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    check_args(x, centroids, half_norms);
    match kind {
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 => x86::nearest_avx2(x, centroids, half_norms),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512 => x86::nearest_avx512(x, centroids, half_norms),
        // The portable loop: on aarch64 the compiler already vectorizes it with NEON.
        _ if kind.is_available() => scalar::nearest(x, centroids, half_norms),
        _ => panic!("kernel `{kind}` is not available on this CPU"),
    }
}

/// Panics unless the arguments of [`nearest`] describe consistent shapes (the SIMD kernels' own
/// checks, which make their unchecked loads sound whoever calls them).
pub(super) fn check_args(x: &[f32], centroids: &[f32], half_norms: &[f32]) {
    assert!(!x.is_empty(), "nearest: empty query");
    assert!(
        half_norms.len().is_multiple_of(BLOCK)
            && Some(centroids.len()) == half_norms.len().checked_mul(x.len()),
        "nearest: centroids are not whole groups of width {}",
        x.len()
    );
}

/// The winner among 16 lanes, each holding its best score and the group it came from: the lowest
/// score, ties going to the lowest centroid index (`group · 16 + lane`).
pub(super) fn lowest(best: &[f32; BLOCK], group: &[f32; BLOCK]) -> usize {
    let index = |lane: usize| group[lane] as usize * BLOCK + lane;
    let mut winner = 0;
    for lane in 1..BLOCK {
        let better = best[lane] < best[winner]
            || (best[lane] == best[winner] && index(lane) < index(winner));
        if better {
            winner = lane;
        }
    }
    index(winner)
}
