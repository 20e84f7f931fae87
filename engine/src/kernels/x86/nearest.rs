//! The nearest-centroid search of product quantization (see `crate::kernels::nearest`) with
//! AVX-512F and with AVX2. Each score is `((h − x₀·c₀) − x₁·c₁) − …` with a separate multiply and
//! subtract, exactly as the portable loop computes it, so every kernel picks the same centroid.

use super::{avx2_available, avx512_available};
use crate::kernels::BLOCK;
use core::arch::x86_64::*;

/// [`nearest`](crate::kernels::nearest) with AVX-512: one group of 16 centroids per vector.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, or the shapes are inconsistent.
pub(in crate::kernels) fn nearest_avx512(
    x: &[f32],
    centroids: &[f32],
    half_norms: &[f32],
) -> usize {
    assert!(avx512_available(), "the AVX-512 kernel needs AVX-512F");
    crate::kernels::nearest::check_args(x, centroids, half_norms);
    // SAFETY: `nearest512` only requires the `avx512f` target feature (its loads read within
    // the whole-group slices that the check above guarantees), asserted just above.
    unsafe { nearest512(x, centroids, half_norms) }
}

/// Expands to a `match` on a run-time centroid width, calling `$f::<N>(args)` for each listed
/// `N` (a copy of the kernel with its loop over dimensions unrolled), and `$f::<0>(args)` (any
/// width) otherwise.
macro_rules! by_width {
    ($width:expr, $f:ident $args:tt, [$($n:literal)*]) => {
        match $width {
            $($n => $f::<$n> $args,)*
            _ => $f::<0> $args,
        }
    };
}

#[target_feature(enable = "avx512f")]
fn nearest512(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    by_width!(x.len(), nearest512_w(x, centroids, half_norms), [1 2 3 4 5 6 7 8])
}

/// [`nearest512`] for centroids of width `W` (`x.len()`), or of any width if `W` is 0.
#[target_feature(enable = "avx512f")]
fn nearest512_w<const W: usize>(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    let width = if W == 0 { x.len() } else { W };
    let mut best = _mm512_set1_ps(f32::INFINITY);
    let mut best_group = _mm512_setzero_si512();
    for (g, (group, norms)) in centroids
        .chunks_exact(BLOCK * width)
        .zip(half_norms.chunks_exact(BLOCK))
        .enumerate()
    {
        // SAFETY: `norms` holds exactly 16 f32 (`chunks_exact`), one unaligned 512-bit load.
        let mut score = unsafe { _mm512_loadu_ps(norms.as_ptr()) };
        for (column, &value) in group.chunks_exact(BLOCK).zip(&x[..width]) {
            // SAFETY: `column` holds exactly 16 f32 (`chunks_exact`), one unaligned 512-bit load.
            let c = unsafe { _mm512_loadu_ps(column.as_ptr()) };
            score = _mm512_sub_ps(score, _mm512_mul_ps(_mm512_set1_ps(value), c));
        }
        let better = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(score, best);
        best = _mm512_mask_mov_ps(best, better, score);
        best_group = _mm512_mask_mov_epi32(best_group, better, _mm512_set1_epi32(g as i32));
    }
    // The lowest index (group · 16 + lane) among the lanes holding the lowest score.
    let lowest = _mm512_reduce_min_ps(best);
    let at_lowest = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(best, _mm512_set1_ps(lowest));
    let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let index = _mm512_add_epi32(_mm512_slli_epi32::<4>(best_group), lanes);
    _mm512_mask_reduce_min_epi32(at_lowest, index) as usize
}

/// [`nearest`](crate::kernels::nearest) with AVX2: one group of 16 centroids in two vectors.
///
/// # Panics
///
/// If the CPU lacks AVX2, FMA or F16C, or the shapes are inconsistent.
pub(in crate::kernels) fn nearest_avx2(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    assert!(avx2_available(), "the AVX2 kernel needs AVX2, FMA and F16C");
    crate::kernels::nearest::check_args(x, centroids, half_norms);
    // SAFETY: `nearest256` only requires the `avx2` target feature (its loads read within the
    // whole-group slices that the check above guarantees), asserted just above.
    unsafe { nearest256(x, centroids, half_norms) }
}

#[target_feature(enable = "avx2")]
fn nearest256(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    by_width!(x.len(), nearest256_w(x, centroids, half_norms), [1 2 3 4 5 6 7 8])
}

/// [`nearest256`] for centroids of width `W` (`x.len()`), or of any width if `W` is 0.
#[target_feature(enable = "avx2")]
fn nearest256_w<const W: usize>(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    let width = if W == 0 { x.len() } else { W };
    let mut best = [_mm256_set1_ps(f32::INFINITY); 2];
    let mut best_group = [_mm256_setzero_ps(); 2];
    for (g, (group, norms)) in centroids
        .chunks_exact(BLOCK * width)
        .zip(half_norms.chunks_exact(BLOCK))
        .enumerate()
    {
        // SAFETY: `norms` holds exactly 16 f32 (`chunks_exact`), so both 8-lane halves are in
        // bounds; the loads are unaligned.
        let mut score = unsafe {
            [
                _mm256_loadu_ps(norms.as_ptr()),
                _mm256_loadu_ps(norms.as_ptr().add(8)),
            ]
        };
        for (column, &value) in group.chunks_exact(BLOCK).zip(&x[..width]) {
            let v = _mm256_set1_ps(value);
            for (half, s) in score.iter_mut().enumerate() {
                // SAFETY: `column` holds exactly 16 f32 (`chunks_exact`) and `half` is 0 or 1,
                // so the 8 f32 at `8 · half` are in bounds; the load is unaligned.
                let c = unsafe { _mm256_loadu_ps(column.as_ptr().add(8 * half)) };
                *s = _mm256_sub_ps(*s, _mm256_mul_ps(v, c));
            }
        }
        // Group numbers as f32 (exact below 2²⁴), so the selects are float blends.
        let group_number = _mm256_set1_ps(g as f32);
        for half in 0..2 {
            let better = _mm256_cmp_ps::<_CMP_LT_OQ>(score[half], best[half]);
            best[half] = _mm256_blendv_ps(best[half], score[half], better);
            best_group[half] = _mm256_blendv_ps(best_group[half], group_number, better);
        }
    }
    let (mut lanes, mut groups) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
    // SAFETY: each array holds 16 f32, two 8-lane halves; the stores are unaligned.
    unsafe {
        for half in 0..2 {
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * half), best[half]);
            _mm256_storeu_ps(groups.as_mut_ptr().add(8 * half), best_group[half]);
        }
    }
    crate::kernels::nearest::lowest(&lanes, &groups)
}
