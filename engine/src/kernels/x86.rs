//! x86-64 kernels: AVX-512F, and AVX2 with FMA and F16C, over the f16 and the int8 layouts; and
//! the nearest-centroid search of product quantization (see the end of this file).
//!
//! Both work the same way. The query tokens are cut into tiles of a few tokens ([`super::tiles`]);
//! for each tile, the document's blocks are visited in order and, for each dimension `j`, the
//! 16 values of dimension `j` of a block are loaded and widened exactly to f32 (`vcvtph2ps` for
//! halves, `vpmovsxbd` + `vcvtdq2ps` for int8), and each query token's value `q[j]` is broadcast
//! and multiplied-added into that token's accumulators. A tile thus holds tokens × 16 (or 32) dot
//! products in registers, and every widened document vector feeds one FMA per query token of the
//! tile. When a block is done, int8 dot products are multiplied by the block's 16 token scales,
//! padding lanes are replaced by −∞ and the dot products are folded into a running per-lane
//! maximum; after the last block, each query token's maximum is reduced across lanes and added to
//! the total, in query order. The two layouts share this code through [`Element`], which only
//! says how 16 (or 8) consecutive values are loaded and widened.
//!
//! Safety: the `#[target_feature]` functions are only entered from the `maxsim_*` functions,
//! which first check that the CPU has the features (so calling them is sound); the only other
//! `unsafe` operations are unaligned loads and unchecked reads, each after explicit checks of the
//! slices' lengths.

#![deny(unsafe_op_in_unsafe_fn)]

use super::{check_kernel_args as check, tiles, tokens_in_block, BLOCK};
use core::arch::x86_64::*;
use half::f16;

/// Whether the CPU supports the AVX-512 kernel (AVX-512F).
pub(super) fn avx512_available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Whether the CPU supports the AVX2 kernel (AVX2, FMA and F16C).
pub(super) fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// An element type of a packed layout: how the kernels load consecutive values and widen them
/// (exactly) to f32.
trait Element: Copy {
    /// The 16 values at `p`, widened to f32.
    ///
    /// # Safety
    ///
    /// 16 values must be readable at `p` (no alignment needed), and the CPU must support
    /// AVX-512F.
    unsafe fn widen16(p: *const Self) -> __m512;

    /// The 8 values at `p`, widened to f32.
    ///
    /// # Safety
    ///
    /// 8 values must be readable at `p` (no alignment needed), and the CPU must support AVX2 and
    /// F16C.
    unsafe fn widen8(p: *const Self) -> __m256;
}

impl Element for f16 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn widen16(p: *const f16) -> __m512 {
        // SAFETY: the caller guarantees that the 16 halves (32 bytes) at `p` are readable; the
        // load is unaligned (`loadu`).
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees that the 8 halves (16 bytes) at `p` are readable; the
        // load is unaligned (`loadu`).
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }
}

impl Element for i8 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn widen16(p: *const i8) -> __m512 {
        // SAFETY: the caller guarantees that the 16 bytes at `p` are readable; the load is
        // unaligned (`loadu`).
        let bytes = unsafe { _mm_loadu_si128(p.cast()) };
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen8(p: *const i8) -> __m256 {
        // SAFETY: the caller guarantees that the 8 bytes at `p` are readable; `_mm_loadl_epi64`
        // reads exactly 8 bytes, unaligned.
        let bytes = unsafe { _mm_loadl_epi64(p.cast()) };
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes))
    }
}

/// Expands to a `match` on a run-time tile height, calling `$f::<_, N>(args)` for each listed `N`.
macro_rules! by_rows {
    ($rows:expr, $f:ident $args:tt, [$($n:literal)*]) => {
        match $rows {
            $($n => $f::<_, $n> $args,)*
            rows => unreachable!("tile of {rows} query tokens"),
        }
    };
}

// ---------------------------------------------------------------------------------------------
// AVX-512

/// Query tokens per AVX-512 tile. A step covers two blocks (32 document tokens), so a tile uses
/// 2 · 14 = 28 accumulators, 2 widened document vectors and 1 broadcast: 31 of the 32 registers.
const MR_512: usize = 14;

/// MaxSim with the AVX-512 kernel; `query` is `n_q × dim` row-major, `doc` a packed document of
/// `m ≥ 1` tokens.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, or the shapes are inconsistent.
pub(super) fn maxsim_avx512(query: &[f32], dim: usize, doc: &[f16], m: usize) -> f32 {
    assert!(avx512_available(), "the AVX-512 kernel needs AVX-512F");
    check(query, dim, doc, None, m);
    // SAFETY: `maxsim512` only requires the `avx512f` target feature (it is otherwise safe: it
    // reads memory only through the checked slices it is given), and the assert above has just
    // established that this CPU supports it.
    unsafe { maxsim512(query, dim, doc, None, m) }
}

/// MaxSim with the AVX-512 kernel over a packed int8 document of `m ≥ 1` tokens (`values`, and
/// `scales` padded to whole blocks); `query` is `n_q × dim` row-major.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, or the shapes are inconsistent.
pub(super) fn maxsim_int8_avx512(
    query: &[f32],
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
) -> f32 {
    assert!(avx512_available(), "the AVX-512 kernel needs AVX-512F");
    check(query, dim, values, Some(scales), m);
    // SAFETY: as in `maxsim_avx512`: the CPU supports AVX-512F, asserted just above.
    unsafe { maxsim512(query, dim, values, Some(scales), m) }
}

/// [`maxsim_avx512`] and [`maxsim_int8_avx512`] once the CPU and the shapes have been checked:
/// tile by tile, in query order.
#[target_feature(enable = "avx512f")]
fn maxsim512<T: Element>(
    query: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
) -> f32 {
    let mut total = 0.0f32;
    for (first, rows) in tiles(query.len() / dim, MR_512) {
        let q = &query[first * dim..(first + rows) * dim];
        by_rows!(
            rows,
            tile512(q, dim, doc, scales, m, &mut total),
            [1 2 3 4 5 6 7 8 9 10 11 12 13 14]
        );
    }
    total
}

/// Adds to `total`, in order, the MaxSim terms of the `R` query tokens in `q` (`R × dim`). With
/// `scales`, each block's dot products are multiplied by its 16 token scales.
#[target_feature(enable = "avx512f")]
fn tile512<T: Element, const R: usize>(
    q: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
    total: &mut f32,
) {
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let block_len = BLOCK * dim;
    let blocks = m.div_ceil(BLOCK);
    // The dot products of block `b` as MaxSim candidates: scaled (int8), and −∞ in the lanes of
    // padding tokens (whose values and scales may hold anything).
    let finish = |acc: __m512, b: usize| -> __m512 {
        // Lane mask of the real tokens of block `b` (bit i set: token 16·b + i is not padding).
        let valid = ((1u32 << tokens_in_block(m, b)) - 1) as u16;
        match scales {
            None => _mm512_mask_blend_ps(valid, neg_inf, acc),
            Some(scales) => {
                let scales = &scales[b * BLOCK..(b + 1) * BLOCK];
                // SAFETY: `scales` holds exactly the 16 f32 of one unaligned 512-bit load.
                let scales = unsafe { _mm512_loadu_ps(scales.as_ptr()) };
                _mm512_mask_mul_ps(neg_inf, valid, acc, scales)
            }
        }
    };
    let mut best = [neg_inf; R];
    let mut b = 0;
    while b + 2 <= blocks {
        let acc = dots512::<T, R, 2>(q, dim, &doc[b * block_len..(b + 2) * block_len]);
        for (best, [a0, a1]) in best.iter_mut().zip(acc) {
            *best = _mm512_max_ps(*best, _mm512_max_ps(finish(a0, b), finish(a1, b + 1)));
        }
        b += 2;
    }
    if b < blocks {
        let acc = dots512::<T, R, 1>(q, dim, &doc[b * block_len..(b + 1) * block_len]);
        for (best, [a0]) in best.iter_mut().zip(acc) {
            *best = _mm512_max_ps(*best, finish(a0, b));
        }
    }
    for best in best {
        *total += _mm512_reduce_max_ps(best);
    }
}

/// The `R × 16·B` dot products of the `R` query tokens in `q` (`R × dim`) with the `B`
/// consecutive packed blocks in `blocks` (`B × 16 × dim`): `acc[r][k]` lane `i` is the dot
/// product of query token `r` with token `i` of block `k`.
#[inline]
#[target_feature(enable = "avx512f")]
fn dots512<T: Element, const R: usize, const B: usize>(
    q: &[f32],
    dim: usize,
    blocks: &[T],
) -> [[__m512; B]; R] {
    let block_len = BLOCK * dim;
    assert_eq!(q.len(), R * dim);
    assert_eq!(blocks.len(), B * block_len);
    let mut acc = [[_mm512_setzero_ps(); B]; R];
    for j in 0..dim {
        let mut d = [_mm512_setzero_ps(); B];
        for (k, d) in d.iter_mut().enumerate() {
            // SAFETY: k < B and j < dim, so the 16 values at k·block_len + j·16 end at most at
            // B·block_len = blocks.len(); this function's target feature is AVX-512F.
            *d = unsafe { T::widen16(blocks.as_ptr().add(k * block_len + j * BLOCK)) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and j < dim, so r·dim + j < R·dim = q.len().
            let qv = _mm512_set1_ps(unsafe { *q.get_unchecked(r * dim + j) });
            for (acc, d) in acc.iter_mut().zip(d) {
                *acc = _mm512_fmadd_ps(qv, d, *acc);
            }
        }
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// AVX2

/// Query tokens per AVX2 tile. A step covers one block (16 document tokens = 2 registers), so a
/// tile uses 2 · 6 = 12 accumulators, 2 widened document vectors and 1 broadcast: 15 of the 16
/// registers.
const MR_256: usize = 6;

/// MaxSim with the AVX2 kernel; `query` is `n_q × dim` row-major, `doc` a packed document of
/// `m ≥ 1` tokens.
///
/// # Panics
///
/// If the CPU lacks AVX2, FMA or F16C, or the shapes are inconsistent.
pub(super) fn maxsim_avx2(query: &[f32], dim: usize, doc: &[f16], m: usize) -> f32 {
    assert!(avx2_available(), "the AVX2 kernel needs AVX2, FMA and F16C");
    check(query, dim, doc, None, m);
    // SAFETY: `maxsim256` only requires the `avx2`, `fma` and `f16c` target features (it is
    // otherwise safe: it reads memory only through the checked slices it is given), and the
    // assert above has just established that this CPU supports them.
    unsafe { maxsim256(query, dim, doc, None, m) }
}

/// MaxSim with the AVX2 kernel over a packed int8 document of `m ≥ 1` tokens (`values`, and
/// `scales` padded to whole blocks); `query` is `n_q × dim` row-major.
///
/// # Panics
///
/// If the CPU lacks AVX2, FMA or F16C, or the shapes are inconsistent.
pub(super) fn maxsim_int8_avx2(
    query: &[f32],
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
) -> f32 {
    assert!(avx2_available(), "the AVX2 kernel needs AVX2, FMA and F16C");
    check(query, dim, values, Some(scales), m);
    // SAFETY: as in `maxsim_avx2`: the CPU supports AVX2, FMA and F16C, asserted just above.
    unsafe { maxsim256(query, dim, values, Some(scales), m) }
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
) -> f32 {
    let mut total = 0.0f32;
    for (first, rows) in tiles(query.len() / dim, MR_256) {
        let q = &query[first * dim..(first + rows) * dim];
        by_rows!(
            rows,
            tile256(q, dim, doc, scales, m, &mut total),
            [1 2 3 4 5 6]
        );
    }
    total
}

/// Adds to `total`, in order, the MaxSim terms of the `R` query tokens in `q` (`R × dim`). With
/// `scales`, each block's dot products are multiplied by its 16 token scales.
#[target_feature(enable = "avx2,fma,f16c")]
fn tile256<T: Element, const R: usize>(
    q: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
    total: &mut f32,
) {
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
        for (best, acc) in best.iter_mut().zip(acc) {
            for (best, acc) in best.iter_mut().zip(acc) {
                *best = _mm256_max_ps(*best, acc);
            }
        }
    }
    for [lo, hi] in best {
        *total += hmax256(_mm256_max_ps(lo, hi));
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

// ---------------------------------------------------------------------------------------------
// Nearest centroid (see `super::nearest`): each score is `((h − x₀·c₀) − x₁·c₁) − …` with a
// separate multiply and subtract, exactly as the portable loop computes it, so every kernel picks
// the same centroid.

/// [`super::nearest`] with AVX-512: one group of 16 centroids per vector.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, or the shapes are inconsistent.
pub(super) fn nearest_avx512(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    assert!(avx512_available(), "the AVX-512 kernel needs AVX-512F");
    super::nearest::check_args(x, centroids, half_norms);
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
        // SAFETY: `norms` and every `column` hold exactly 16 f32 (`chunks_exact`); the loads are
        // unaligned.
        let mut score = unsafe { _mm512_loadu_ps(norms.as_ptr()) };
        for (column, &value) in group.chunks_exact(BLOCK).zip(&x[..width]) {
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

/// [`super::nearest`] with AVX2: one group of 16 centroids in two vectors.
///
/// # Panics
///
/// If the CPU lacks AVX2, FMA or F16C, or the shapes are inconsistent.
pub(super) fn nearest_avx2(x: &[f32], centroids: &[f32], half_norms: &[f32]) -> usize {
    assert!(avx2_available(), "the AVX2 kernel needs AVX2, FMA and F16C");
    super::nearest::check_args(x, centroids, half_norms);
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
        // SAFETY: `norms` and every `column` hold exactly 16 f32 (`chunks_exact`), so both
        // 8-lane halves are in bounds; the loads are unaligned.
        let mut score = unsafe {
            [
                _mm256_loadu_ps(norms.as_ptr()),
                _mm256_loadu_ps(norms.as_ptr().add(8)),
            ]
        };
        for (column, &value) in group.chunks_exact(BLOCK).zip(&x[..width]) {
            let v = _mm256_set1_ps(value);
            for (half, s) in score.iter_mut().enumerate() {
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
    super::nearest::lowest(&lanes, &groups)
}

// ---------------------------------------------------------------------------------------------
// FMA peak (for benchmarks: the roof that kernel throughput is compared with)

/// Independent FMA chains per measurement: enough to cover the FMA latency × throughput.
const CHAINS: usize = 20;

/// Runs `iters` rounds of [`CHAINS`] independent 16-lane FMAs; returns a value depending on all
/// of them so the work cannot be optimised away.
///
/// # Safety
///
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: u64) -> f32 {
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    let x = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let y = _mm512_set1_ps(std::hint::black_box(1e-7));
    // Rounds of 256 FMAs per chain; the barrier between rounds keeps the compiler from
    // reasoning about the whole loop, and costs little at that distance.
    for _ in 0..std::hint::black_box(iters).div_ceil(256) {
        for _ in 0..256 {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        acc = std::hint::black_box(acc);
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    _mm512_reduce_add_ps(sum)
}

/// [`fma_chains_avx512`] with 8-lane AVX2 FMAs.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: u64) -> f32 {
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    let x = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let y = _mm256_set1_ps(std::hint::black_box(1e-7));
    // Rounds of 256 FMAs per chain; the barrier between rounds keeps the compiler from
    // reasoning about the whole loop, and costs little at that distance.
    for _ in 0..std::hint::black_box(iters).div_ceil(256) {
        for _ in 0..256 {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        acc = std::hint::black_box(acc);
    }
    let mut lanes = [0f32; 8];
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    // SAFETY: `lanes` holds 8 f32, the width of one unaligned 256-bit store.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// Flops of one call of the FMA chains with `iters` rounds (rounded up to 256) and `lanes` lanes.
fn chain_flops(iters: u64, lanes: usize) -> f64 {
    (iters.div_ceil(256) * 256) as f64 * CHAINS as f64 * lanes as f64 * 2.0
}

/// Measured single-core f32 FMA throughput in GFLOP/s of AVX-512 (`wide`) or AVX2, or `None`
/// when the CPU lacks the features. Best of a few runs of about `millis` ms each.
pub(super) fn fma_peak_gflops(wide: bool, millis: u64) -> Option<f64> {
    let available = if wide {
        avx512_available()
    } else {
        avx2_available()
    };
    if !available {
        return None;
    }
    let run = |iters: u64| {
        let started = std::time::Instant::now();
        let sink = if wide {
            // SAFETY: AVX-512F was detected above.
            unsafe { fma_chains_avx512(iters) }
        } else {
            // SAFETY: AVX2 and FMA were detected above.
            unsafe { fma_chains_avx2(iters) }
        };
        std::hint::black_box(sink);
        started.elapsed().as_secs_f64()
    };
    let lanes = if wide { 16 } else { 8 };
    // Calibrate to about `millis` per run, then keep the best of five.
    let mut iters = 1u64 << 16;
    while run(iters) * 1000.0 < millis as f64 / 4.0 && iters < 1 << 34 {
        iters *= 2;
    }
    let best = (0..5).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
    Some(chain_flops(iters, lanes) / best / 1e9)
}
