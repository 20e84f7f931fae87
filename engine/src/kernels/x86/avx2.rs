//! The AVX2 MaxSim kernel (AVX2, FMA and F16C), over the f16 and the int8 layouts: each tile
//! of query tokens runs over the whole document, block after block.

use super::first_best;
use super::{avx2_available, Element};
use crate::kernels::{check_kernel_args as check, tiles, tokens_in_block, TokenMax, BLOCK};
use core::arch::x86_64::*;
use half::f16;

/// Query tokens per AVX2 tile. A step covers one block (16 document tokens = 2 registers), so a
/// tile uses 2 · 6 = 12 accumulators, 2 widened document vectors and 1 broadcast: 15 of the 16
/// registers.
const MR_256: usize = 6;

/// MaxSim with the AVX2 kernel; `query` is `n_q × dim` row-major, `doc` a packed document of
/// `m ≥ 1` tokens; with `matches` (`n_q` of them), each query token's best document token too.
///
/// # Panics
///
/// If the CPU lacks AVX2, FMA or F16C, or the shapes are inconsistent.
pub(in crate::kernels) fn maxsim_avx2(
    query: &[f32],
    dim: usize,
    doc: &[f16],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    assert!(avx2_available(), "the AVX2 kernel needs AVX2, FMA and F16C");
    check(query, dim, doc, None, m);
    // SAFETY: `maxsim256` only requires the `avx2`, `fma` and `f16c` target features (it is
    // otherwise safe: it reads memory only through the checked slices it is given), and the
    // assert above has just established that this CPU supports them.
    unsafe { maxsim256(query, dim, doc, None, m, matches) }
}

/// MaxSim with the AVX2 kernel over a packed int8 document of `m ≥ 1` tokens (`values`, and
/// `scales` padded to whole blocks); `query` is `n_q × dim` row-major.
///
/// # Panics
///
/// If the CPU lacks AVX2, FMA or F16C, or the shapes are inconsistent.
pub(in crate::kernels) fn maxsim_int8_avx2(
    query: &[f32],
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    assert!(avx2_available(), "the AVX2 kernel needs AVX2, FMA and F16C");
    check(query, dim, values, Some(scales), m);
    // SAFETY: as in `maxsim_avx2`: the CPU supports AVX2, FMA and F16C, asserted just above.
    unsafe { maxsim256(query, dim, values, Some(scales), m, matches) }
}

/// [`maxsim_avx2`] and [`maxsim_int8_avx2`] once the CPU and the shapes have been checked: tile
/// by tile, in query order.
#[target_feature(enable = "avx2,fma,f16c")]
fn maxsim256<T: Element>(
    query: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
    mut matches: Option<&mut [TokenMax]>,
) -> f32 {
    let n_q = query.len() / dim;
    assert!(matches.as_ref().is_none_or(|out| out.len() == n_q));
    let mut total = 0.0f32;
    for (first, rows) in tiles(n_q, MR_256) {
        let q = &query[first * dim..(first + rows) * dim];
        let out = matches
            .as_deref_mut()
            .map(|out| &mut out[first..first + rows]);
        // Compiled twice, so that the plain kernel carries nothing of the tracking.
        match out {
            Some(out) => by_rows!(
                rows,
                tile256 [_, true] (q, dim, doc, scales, m, &mut total, out),
                [1 2 3 4 5 6]
            ),
            None => by_rows!(
                rows,
                tile256 [_, false] (q, dim, doc, scales, m, &mut total, &mut []),
                [1 2 3 4 5 6]
            ),
        }
    }
    total
}

/// Adds to `total`, in order, the MaxSim terms of the `R` query tokens in `q` (`R × dim`). With
/// `scales`, each block's dot products are multiplied by its 16 token scales. With `TRACK`, each
/// lane also keeps the block of its running maximum (the first block that reached it), from
/// which each query token's best document token is written to `matches` (`R` of them; unused
/// without `TRACK`) at the end.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile256<T: Element, const TRACK: bool, const R: usize>(
    q: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
    total: &mut f32,
    matches: &mut [TokenMax],
) {
    // Block numbers as f32 (exact below 2²⁴ blocks), so that they blend like the maxima.
    let mut arg = [[_mm256_setzero_ps(); 2]; R];
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let block_len = BLOCK * dim;
    let blocks = m.div_ceil(BLOCK);
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut best = [[neg_inf; 2]; R];
    for b in 0..blocks {
        let mut acc = dots256::<T, R>(q, dim, &doc[b * block_len..(b + 1) * block_len]);
        if let Some(scales) = scales {
            let scales = &scales[b * BLOCK..(b + 1) * BLOCK];
            // SAFETY: `scales` holds exactly the 16 f32 of two unaligned 256-bit loads.
            let scales = unsafe {
                [
                    _mm256_loadu_ps(scales.as_ptr()),
                    _mm256_loadu_ps(scales.as_ptr().add(8)),
                ]
            };
            for acc in acc.iter_mut() {
                for (acc, scale) in acc.iter_mut().zip(scales) {
                    *acc = _mm256_mul_ps(*acc, scale);
                }
            }
        }
        let real = tokens_in_block(m, b);
        if real < BLOCK {
            // Lanes of real tokens are all ones (lane < real), padding lanes all zeros.
            let real = _mm256_set1_epi32(real as i32);
            let keep = [
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(real, lanes)),
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                    real,
                    _mm256_add_epi32(lanes, _mm256_set1_epi32(8)),
                )),
            ];
            for acc in acc.iter_mut() {
                for (acc, keep) in acc.iter_mut().zip(keep) {
                    *acc = _mm256_blendv_ps(neg_inf, *acc, keep);
                }
            }
        }
        if TRACK {
            let block = _mm256_set1_ps(b as f32);
            for (arg, (best, acc)) in arg.iter_mut().zip(best.iter().zip(&acc)) {
                for (arg, (best, acc)) in arg.iter_mut().zip(best.iter().zip(acc)) {
                    let better = _mm256_cmp_ps::<_CMP_GT_OQ>(*acc, *best);
                    *arg = _mm256_blendv_ps(*arg, block, better);
                }
            }
        }
        for (best, acc) in best.iter_mut().zip(acc) {
            for (best, acc) in best.iter_mut().zip(acc) {
                *best = _mm256_max_ps(*best, acc);
            }
        }
    }
    for (r, [lo, hi]) in best.into_iter().enumerate() {
        let max = hmax256(_mm256_max_ps(lo, hi));
        *total += max;
        if TRACK {
            let mut blocks = [0.0f32; BLOCK];
            // SAFETY: the array holds 16 f32: two unaligned 256-bit stores.
            unsafe {
                _mm256_storeu_ps(blocks.as_mut_ptr(), arg[r][0]);
                _mm256_storeu_ps(blocks.as_mut_ptr().add(8), arg[r][1]);
            }
            let max_v = _mm256_set1_ps(max);
            let lo = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(lo, max_v)) as u32;
            let hi = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(hi, max_v)) as u32;
            let equal = lo | hi << 8;
            matches[r] = first_best(equal, &blocks, max);
        }
    }
}

/// The `R × 16` dot products of the `R` query tokens in `q` (`R × dim`) with the packed block
/// `block` (`16 × dim`): `acc[r][h]` lane `i` is the dot product of query token `r` with token
/// `8·h + i` of the block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dots256<T: Element, const R: usize>(q: &[f32], dim: usize, block: &[T]) -> [[__m256; 2]; R] {
    assert_eq!(q.len(), R * dim);
    assert_eq!(block.len(), BLOCK * dim);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for j in 0..dim {
        let at = block.as_ptr().wrapping_add(j * BLOCK);
        // SAFETY: j < dim, so the 16 values (2 × 8) at j·16 end at most at 16·dim = block.len();
        // this function's target features are AVX2, FMA and F16C.
        let d = unsafe { [T::widen8(at), T::widen8(at.add(8))] };
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and j < dim, so r·dim + j < R·dim = q.len().
            let qv = _mm256_set1_ps(unsafe { *q.get_unchecked(r * dim + j) });
            for (acc, d) in acc.iter_mut().zip(d) {
                *acc = _mm256_fmadd_ps(qv, d, *acc);
            }
        }
    }
    acc
}

/// The largest of the 8 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax256(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m));
    _mm_cvtss_f32(m)
}
