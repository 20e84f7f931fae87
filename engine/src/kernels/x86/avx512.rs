//! The AVX-512 MaxSim kernel (AVX-512F), over the f16 and the int8 layouts.
//!
//! The AVX-512 kernel walks the document once, in *steps* of up to three blocks, and every tile of
//! query tokens visits a step before the next step is read. Three things follow:
//!
//! - Each document value is widened once, not once per tile: the first tile of a step widens the
//!   step's values as it goes and also stores them in a small f32 scratch (at most 24 KiB, so it
//!   stays in L1), which the step's other tiles then read. A widening is two uops on the two
//!   ports that also execute the FMAs, so re-widening per tile took about one cycle in seven.
//! - The document is read from memory while the tiles compute, not all within the first tile:
//!   the first step is read by its first tile, and from then on every tile pass prefetches the
//!   following values of the document at a steady pace ([`PREFETCH_EVERY`]), so later steps are
//!   already cached when their turn comes. A candidate taken from a memory-mapped index is
//!   usually in no cache, and one core reads memory at only about 10–12 GB/s: 22 KiB for an
//!   80-token document take about half as long as its FMAs at full speed, so the reads must
//!   overlap the arithmetic rather than precede it. The first line of each of the document's
//!   pages is also requested up front, so its TLB misses are resolved in parallel.
//! - The tiles' running maxima live on the stack between steps (one register's worth per query
//!   token), so query tokens are processed in groups of at most [`GROUP_512`].
//!
//! Measured with `tandem-bench rerank` (hot pages, candidates mostly not in the CPU caches) on a
//! 2-core KVM Xeon with AVX-512: 17% less time per candidate than running each tile over the
//! whole document, on synthetic ~80-token documents with ~32-token queries, and 15% on scifact;
//! 10% for a cached 32 × 80-token candidate. What is left is mostly memory: with the candidate
//! cached, a 32 × 80 candidate runs at about 75% of the FMA peak (widening and the per-tile
//! set-up cost the rest); read from memory, each candidate waits about 1 µs for its first step
//! and its TLB misses (a 4 KiB page per 4 KiB block).

use super::{avx512_available, first_best, Element};
use crate::kernels::{check_kernel_args as check, tiles, tokens_in_block, TokenMax, BLOCK};
use core::arch::x86_64::*;
use core::mem::MaybeUninit;
use half::f16;

/// Query tokens processed together in one walk over the document (a *group*): the group's running
/// maxima take `64 × 64` bytes of stack. ColBERT queries have 32 tokens, so a query is a single
/// group; a longer one is cut into balanced groups, each of which walks the (then cached)
/// document again. A group of 64 rather than 32 lets 33–64-token queries share one walk and one
/// widening of each value.
const GROUP_512: usize = 64;

/// Dimensions per prefetched cache line: each tile pass prefetches the document's values ahead
/// of the step being scored, one line (64 bytes) every 2 dimensions, that is every 25–35 cycles:
/// 7–10 GB/s, about what one core can draw from memory. Prefetching every dimension only queues
/// requests behind the core's few outstanding misses (and measured slower); every third
/// dimension falls behind on long documents.
const PREFETCH_EVERY: usize = 2;

/// Bytes per page of the document's mapping (the smallest x86-64 page).
const PAGE: usize = 4096;

/// Most blocks in one step (see [`step_blocks`]).
const STEP_MAX: usize = 3;

/// Dimensions per pass over the scratch. With 128 (the usual ColBERT dimension, in one pass) the
/// scratch holds at most 3 blocks × 128 × 16 f32 = 24 KiB, half of the L1 data cache next to the
/// query's 16 KiB (32 tokens × 128 × 4 bytes). Larger dimensions are done in passes of at most
/// this many dimensions, the tiles' dot products being saved between passes.
const DIM_CHUNK: usize = 128;

/// The dimension for which the kernel is compiled a second time with the dimension known: 128,
/// ColBERT's. Each query token's values are then at a fixed offset from one register, where a
/// run-time dimension costs a register or an address computation per query token of the tile
/// (more than the 16 general registers hold for a tile of 11: about 8% slower with cached data).
const FIXED_DIM: usize = 128;

/// Blocks in the step that starts when `left ≥ 1` blocks of the document are left: 3 (the widest
/// tile shape, see [`tile_rows_512`], and the fewest tile passes per block: a 32-token query
/// makes 4 passes per 3 blocks, against 3 per 2 blocks), except 2 when 2 or 4 are left (rather
/// than ending with a 1-block step, whose tiles load about one value per FMA), and 1 for a
/// one-block document.
fn step_blocks(left: usize) -> usize {
    match left {
        1 | 2 | 4 => left.min(2),
        _ => 3,
    }
}

/// Largest tile (query tokens) for a step of `blocks` blocks. The accumulators are one register
/// per query token and block, and each dimension needs one register per widened block and one
/// for the broadcast query value: 3 blocks × 9 + 3 + 1 = 31 of the 32 registers, 2 × 14 + 2 + 1 =
/// 31, and 1 × 14 + 1 + 1 (a larger one-block tile would help nobody: only documents of at most
/// 16 tokens have one-block steps). Per dimension, a tile loads `rows + blocks` values for
/// `rows × blocks` FMAs, so wide tiles keep the FMA ports busy (measured alone on the scratch: 3 ×
/// 8 or 9 and 2 × 14 run at 86% of the FMA peak, 2 × 11 at 83%, while with the query value as an
/// embedded-broadcast operand, loading it once per FMA, they fall to 65%). Tiles are balanced
/// ([`tiles`]): 32 tokens make tiles of 8 for 3-block steps and of 11, 11 and 10 for
/// 2-block steps.
fn tile_rows_512(blocks: usize) -> usize {
    if blocks == 3 {
        9
    } else {
        14
    }
}

/// The widened values of a step's blocks, for the dimensions of one pass: `[block][dimension]`.
type Scratch = [[MaybeUninit<__m512>; DIM_CHUNK]; STEP_MAX];

/// The dot products of a group's tiles saved between passes over the dimensions (only used when
/// `dim > DIM_CHUNK`): `[query token][block]`.
type Partial = [[MaybeUninit<__m512>; STEP_MAX]; GROUP_512];

/// MaxSim with the AVX-512 kernel; `query` is `n_q × dim` row-major, `doc` a packed document of
/// `m ≥ 1` tokens; with `matches` (`n_q` of them), each query token's best document token too.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, or the shapes are inconsistent.
pub(in crate::kernels) fn maxsim_avx512(
    query: &[f32],
    dim: usize,
    doc: &[f16],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    assert!(avx512_available(), "the AVX-512 kernel needs AVX-512F");
    check(query, dim, doc, None, m);
    // SAFETY: `maxsim512` only requires the `avx512f` target feature (it is otherwise safe: it
    // reads memory only through the checked slices it is given), and the assert above has just
    // established that this CPU supports it.
    unsafe { maxsim512(query, dim, doc, None, m, matches) }
}

/// MaxSim with the AVX-512 kernel over a packed int8 document of `m ≥ 1` tokens (`values`, and
/// `scales` padded to whole blocks); `query` is `n_q × dim` row-major.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, or the shapes are inconsistent.
pub(in crate::kernels) fn maxsim_int8_avx512(
    query: &[f32],
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    assert!(avx512_available(), "the AVX-512 kernel needs AVX-512F");
    check(query, dim, values, Some(scales), m);
    // SAFETY: as in `maxsim_avx512`: the CPU supports AVX-512F, asserted just above.
    unsafe { maxsim512(query, dim, values, Some(scales), m, matches) }
}

/// What one tile computes in one pass: its query tokens against one step's blocks, over one
/// range of dimensions.
struct Pass<'a, T> {
    /// The tile's query tokens, whole rows (`R × dim`).
    q: &'a [f32],
    dim: usize,
    /// The dimensions of this pass (at most [`DIM_CHUNK`]).
    dims: std::ops::Range<usize>,
    /// The step's blocks (`B × 16 × dim` values).
    blocks: &'a [T],
    /// The document's block number of the step's first block.
    first_block: usize,
    /// Whether this tile is the pass's first: it widens the blocks from `blocks` and fills the
    /// scratch; the others read the scratch.
    widen: bool,
    /// Values to prefetch during this pass: one cache line every [`PREFETCH_EVERY`] dimensions.
    prefetch: &'a [T],
    /// Lane masks of the step's real tokens, per block (bit i set: token i is not padding).
    valid: [u16; STEP_MAX],
    /// With int8, the step's token scales (`B × 16`).
    scales: Option<&'a [f32]>,
}

/// [`maxsim_avx512`] and [`maxsim_int8_avx512`] once the CPU and the shapes have been checked:
/// group by group (in query order), step by step, pass by pass, tile by tile.
#[target_feature(enable = "avx512f")]
fn maxsim512<T: Element>(
    query: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
    mut matches: Option<&mut [TokenMax]>,
) -> f32 {
    assert!(matches
        .as_ref()
        .is_none_or(|out| out.len() == query.len() / dim));
    let block_len = BLOCK * dim;
    let blocks = m.div_ceil(BLOCK);
    let passes = dim.div_ceil(DIM_CHUNK);
    // Uninitialised on purpose (zeroing 24 KiB would cost a few percent of a candidate): a
    // scratch entry is only read after the pass's first tile has written it, and a partial sum
    // only after the previous pass has saved it (see `tile512`).
    let mut scratch: Scratch = [[const { MaybeUninit::uninit() }; DIM_CHUNK]; STEP_MAX];
    let mut partial: Partial = [[const { MaybeUninit::uninit() }; STEP_MAX]; GROUP_512];
    // One line of each page of the document, so that the page walks of a candidate that is not
    // in the TLB (one walk per 4 KiB page) overlap instead of stalling the first step one by one.
    let bytes = size_of_val(doc);
    for offset in (0..bytes).step_by(PAGE).chain([bytes - 1]) {
        _mm_prefetch::<_MM_HINT_T0>(doc.as_ptr().cast::<i8>().wrapping_add(offset));
    }
    // The int8 scales are a separate array, a few lines per document: all of them.
    if let Some(scales) = scales {
        for offset in (0..size_of_val(scales)).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(scales.as_ptr().cast::<i8>().wrapping_add(offset));
        }
    }
    let mut total = 0.0f32;
    for (first, rows) in tiles(query.len() / dim, GROUP_512) {
        let group = &query[first * dim..(first + rows) * dim];
        let mut best = [_mm512_set1_ps(f32::NEG_INFINITY); GROUP_512];
        // With `matches`: per query token and lane, the block of the running maximum (as f32,
        // exact below 2²⁴ blocks).
        let mut arg = matches
            .is_some()
            .then_some([_mm512_setzero_ps(); GROUP_512]);
        // Where prefetching resumes: the first step is read by its first tile; the rest of the
        // document is prefetched ahead, `pf_len` values per tile pass.
        let mut ahead = step_blocks(blocks) * block_len;
        let mut b = 0;
        while b < blocks {
            let nb = step_blocks(blocks - b);
            let after = b + nb;
            let mut valid = [0u16; STEP_MAX];
            for (k, valid) in valid.iter_mut().enumerate().take(nb) {
                *valid = ((1u32 << tokens_in_block(m, b + k)) - 1) as u16;
            }
            let tile_rows = tile_rows_512(nb);
            for pass in 0..passes {
                let dims = pass * DIM_CHUNK..((pass + 1) * DIM_CHUNK).min(dim);
                let pf_len = dims.len().div_ceil(PREFETCH_EVERY) * 64 / size_of::<T>();
                for (i, (tf, tr)) in tiles(rows, tile_rows).enumerate() {
                    let p = Pass {
                        q: &group[tf * dim..(tf + tr) * dim],
                        dim,
                        dims: dims.clone(),
                        blocks: &doc[b * block_len..after * block_len],
                        first_block: b,
                        widen: i == 0,
                        prefetch: &doc[ahead..(ahead + pf_len).min(doc.len())],
                        valid,
                        scales: scales.map(|s| &s[b * BLOCK..after * BLOCK]),
                    };
                    ahead = (ahead + pf_len).min(doc.len());
                    let partial = &mut partial[tf..tf + tr];
                    let best = &mut best[tf..tf + tr];
                    let arg = arg.as_mut().map(|arg| &mut arg[tf..tf + tr]);
                    // One arm per step size, each one match on the tile height.
                    macro_rules! run {
                        ($dim:literal) => {
                            match nb {
                                1 => by_rows!(
                                    tr,
                                    tile512 [T, $dim, 1] (&p, &mut scratch, partial, best, arg),
                                    [1 2 3 4 5 6 7 8 9 10 11 12 13 14]
                                ),
                                2 => by_rows!(
                                    tr,
                                    tile512 [T, $dim, 2] (&p, &mut scratch, partial, best, arg),
                                    [1 2 3 4 5 6 7 8 9 10 11 12 13 14]
                                ),
                                _ => by_rows!(
                                    tr,
                                    tile512 [T, $dim, 3] (&p, &mut scratch, partial, best, arg),
                                    [1 2 3 4 5 6 7 8 9]
                                ),
                            }
                        };
                    }
                    if dim == FIXED_DIM {
                        run!(128)
                    } else {
                        run!(0)
                    }
                }
            }
            b = after;
        }
        for (r, best) in best[..rows].iter().enumerate() {
            let max = _mm512_reduce_max_ps(*best);
            total += max;
            if let (Some(arg), Some(out)) = (&arg, matches.as_deref_mut()) {
                let mut blocks = [0.0f32; BLOCK];
                // SAFETY: the array holds 16 f32: one unaligned 512-bit store.
                unsafe { _mm512_storeu_ps(blocks.as_mut_ptr(), arg[r]) };
                let equal = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(*best, _mm512_set1_ps(max));
                out[first + r] = first_best(u32::from(equal), &blocks, max);
            }
        }
    }
    total
}

/// One pass of one tile of `R` query tokens over a step of `B` blocks: the `R × 16·B` dot
/// products over the pass's dimensions, added to those saved by the previous pass (if any); then,
/// after the last pass, each block's dot products become MaxSim candidates (scaled with int8) and
/// are folded into `best` (the tile's running maxima) by a masked max that leaves out the lanes
/// of padding tokens, whose values and scales may hold anything; otherwise they are saved in
/// `partial` for the next pass. With `arg`, the lanes whose maximum a block raises record the
/// block's number there.
///
/// `DIM` is the dimension when it is known at compile time ([`FIXED_DIM`]), 0 otherwise.
#[inline]
#[target_feature(enable = "avx512f")]
fn tile512<T: Element, const DIM: usize, const B: usize, const R: usize>(
    p: &Pass<'_, T>,
    scratch: &mut Scratch,
    partial: &mut [[MaybeUninit<__m512>; STEP_MAX]],
    best: &mut [__m512],
    mut arg: Option<&mut [__m512]>,
) {
    assert!(DIM == 0 || DIM == p.dim);
    assert!(partial.len() == R && best.len() == R);
    let mut acc = [[_mm512_setzero_ps(); B]; R];
    if p.dims.start > 0 {
        for (acc, saved) in acc.iter_mut().zip(partial.iter()) {
            for (acc, saved) in acc.iter_mut().zip(saved) {
                // SAFETY: the previous pass of this tile (same step, same query tokens) saved
                // every `partial[r][k]` for r < R, k < B: passes run in order and only the last
                // one does not save.
                *acc = unsafe { saved.assume_init() };
            }
        }
    }
    acc = if p.widen {
        dots512::<T, DIM, B, R, true>(p, scratch, acc)
    } else {
        dots512::<T, DIM, B, R, false>(p, scratch, acc)
    };
    if p.dims.end < p.dim {
        for (acc, saved) in acc.iter().zip(partial.iter_mut()) {
            for (acc, saved) in acc.iter().zip(saved) {
                saved.write(*acc);
            }
        }
        return;
    }
    for k in 0..B {
        let valid = p.valid[k];
        let scales = p.scales.map(|s| {
            let s = &s[k * BLOCK..(k + 1) * BLOCK];
            // SAFETY: `s` holds exactly the 16 f32 of one unaligned 512-bit load.
            unsafe { _mm512_loadu_ps(s.as_ptr()) }
        });
        let block = _mm512_set1_ps((p.first_block + k) as f32);
        for (r, (best, acc)) in best.iter_mut().zip(&acc).enumerate() {
            let candidates = match scales {
                None => acc[k],
                Some(scales) => _mm512_mul_ps(acc[k], scales),
            };
            if let Some(arg) = arg.as_deref_mut() {
                let better = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(valid, candidates, *best);
                arg[r] = _mm512_mask_mov_ps(arg[r], better, block);
            }
            // Padding lanes keep their running maximum.
            *best = _mm512_mask_max_ps(*best, valid, *best, candidates);
        }
    }
}

/// `acc` plus the dot products of [`tile512`]'s pass: for each dimension `j` of the pass, the
/// `B` widened values (`WIDEN`: widened from the document and stored in the scratch; otherwise
/// read from the scratch) times each query token's `q[j]`. Also prefetches `p.prefetch`.
#[inline]
#[target_feature(enable = "avx512f")]
fn dots512<T: Element, const DIM: usize, const B: usize, const R: usize, const WIDEN: bool>(
    p: &Pass<'_, T>,
    scratch: &mut Scratch,
    mut acc: [[__m512; B]; R],
) -> [[__m512; B]; R] {
    let dim = if DIM == 0 { p.dim } else { DIM };
    let block_len = BLOCK * dim;
    assert_eq!(p.q.len(), R * dim);
    assert_eq!(p.blocks.len(), B * block_len);
    let (start, len) = (p.dims.start, p.dims.len());
    assert!(start + len <= dim && len <= DIM_CHUNK);
    let pf = p.prefetch.as_ptr().cast::<i8>();
    let pf_lines = size_of_val(p.prefetch).div_ceil(64);
    for (s, j) in (start..start + len).enumerate() {
        if s % PREFETCH_EVERY == 0 && s / PREFETCH_EVERY < pf_lines {
            // A hint (it cannot fault), for an address inside `p.prefetch`.
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(s / PREFETCH_EVERY * 64));
        }
        let mut d = [_mm512_setzero_ps(); B];
        for (k, d) in d.iter_mut().enumerate() {
            if WIDEN {
                // SAFETY: k < B and j < dim, so the 16 values at k·block_len + j·16 end at most
                // at B·block_len = p.blocks.len(); this function's target feature is AVX-512F.
                *d = unsafe { T::widen16(p.blocks.as_ptr().add(k * block_len + j * BLOCK)) };
                scratch[k][s].write(*d);
            } else {
                // SAFETY: the pass's first tile (`WIDEN`) ran before this one, on the same step
                // and dimensions, and wrote `scratch[k][s]` for every k < B and s < len.
                *d = unsafe { scratch[k][s].assume_init() };
            }
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and j < dim, so r·dim + j < R·dim = p.q.len().
            let qv = _mm512_set1_ps(unsafe { *p.q.get_unchecked(r * dim + j) });
            for (acc, d) in acc.iter_mut().zip(d) {
                *acc = _mm512_fmadd_ps(qv, d, *acc);
            }
        }
    }
    acc
}
