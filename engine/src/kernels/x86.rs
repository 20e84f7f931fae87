//! x86-64 kernels: AVX-512F, and AVX2 with FMA and F16C, over the f16 and the int8 layouts; and
//! the nearest-centroid search of product quantization (see the end of this file).
//!
//! Both compute the same dot products the same way: the query tokens are cut into tiles of a few
//! tokens ([`super::tiles`]); for each dimension `j`, the 16 values of dimension `j` of a block
//! are loaded and widened exactly to f32 (`vcvtph2ps` for halves, `vpmovsxbd` + `vcvtdq2ps` for
//! int8), and each query token's value `q[j]` is broadcast and multiplied-added into that token's
//! accumulators. A tile thus holds tokens × 16 (or 32, or 48) dot products in registers, and every
//! widened document vector feeds one FMA per query token of the tile. When a block is done, int8
//! dot products are multiplied by the block's 16 token scales, padding lanes are left out and the
//! dot products are folded into a running per-lane maximum; after the last block, each query
//! token's maximum is reduced across lanes and added to the total, in query order. The two
//! layouts share this code through [`Element`], which only says how 16 (or 8) consecutive values
//! are loaded and widened.
//!
//! They differ in their loop order. The AVX2 kernel runs each tile over the whole document, block
//! after block. The AVX-512 kernel walks the document once, in steps of a few blocks, and runs
//! every tile over a step before going on (see the AVX-512 section below for why).
//!
//! Safety: the `#[target_feature]` functions are only entered from the `maxsim_*` functions,
//! which first check that the CPU has the features (so calling them is sound); the only other
//! `unsafe` operations are unaligned loads and unchecked reads, each after explicit checks of the
//! slices' lengths, and reads of the AVX-512 kernel's scratch and saved sums, each after the
//! write that initialised it (see `maxsim512`).

#![deny(unsafe_op_in_unsafe_fn)]

use super::{check_kernel_args as check, tiles, tokens_in_block, BLOCK};
use core::arch::x86_64::*;
use core::mem::MaybeUninit;
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

/// Expands to a `match` on a run-time tile height, calling `$f::<G.., N>(args)` for each listed
/// `N`, where `G..` are the generic arguments given in brackets before it.
macro_rules! by_rows {
    ($rows:expr, $f:ident $generics:tt $args:tt, [$($n:literal)*]) => {
        match $rows {
            $($n => by_rows!(@call $f $generics $n $args),)*
            rows => unreachable!("tile of {rows} query tokens"),
        }
    };
    (@call $f:ident [$($g:tt),*] $n:literal ($($arg:expr),*)) => {
        $f::<$($g,)* $n>($($arg),*)
    };
}

// ---------------------------------------------------------------------------------------------
// AVX-512
//
// The AVX-512 kernel walks the document once, in *steps* of up to three blocks, and every tile of
// query tokens visits a step before the next step is read. Three things follow:
//
// - Each document value is widened once, not once per tile: the first tile of a step widens the
//   step's values as it goes and also stores them in a small f32 scratch (at most 24 KiB, so it
//   stays in L1), which the step's other tiles then read. A widening is two uops on the two
//   ports that also execute the FMAs, so re-widening per tile took about one cycle in seven.
// - The document is read from memory while the tiles compute, not all within the first tile:
//   the first step is read by its first tile, and from then on every tile pass prefetches the
//   following values of the document at a steady pace ([`PREFETCH_EVERY`]), so later steps are
//   already cached when their turn comes. A candidate taken from a memory-mapped index is
//   usually in no cache, and one core reads memory at only about 10–12 GB/s: 22 KiB for an
//   80-token document take about half as long as its FMAs at full speed, so the reads must
//   overlap the arithmetic rather than precede it. The first line of each of the document's
//   pages is also requested up front, so its TLB misses are resolved in parallel.
// - The tiles' running maxima live on the stack between steps (one register's worth per query
//   token), so query tokens are processed in groups of at most [`GROUP_512`].
//
// Measured with `tandem-bench rerank` (hot pages, candidates mostly not in the CPU caches) on a
// 2-core KVM Xeon with AVX-512: 17% less time per candidate than running each tile over the
// whole document, on synthetic ~80-token documents with ~32-token queries, and 15% on scifact;
// 10% for a cached 32 × 80-token candidate. What is left is mostly memory: with the candidate
// cached, a 32 × 80 candidate runs at about 75% of the FMA peak (widening and the per-tile
// set-up cost the rest); read from memory, each candidate waits about 1 µs for its first step
// and its TLB misses (a 4 KiB page per 4 KiB block).

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
/// ([`super::tiles`]): 32 tokens make tiles of 8 for 3-block steps and of 11, 11 and 10 for
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
) -> f32 {
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
                        widen: i == 0,
                        prefetch: &doc[ahead..(ahead + pf_len).min(doc.len())],
                        valid,
                        scales: scales.map(|s| &s[b * BLOCK..after * BLOCK]),
                    };
                    ahead = (ahead + pf_len).min(doc.len());
                    let partial = &mut partial[tf..tf + tr];
                    let best = &mut best[tf..tf + tr];
                    // One arm per step size, each one match on the tile height.
                    macro_rules! run {
                        ($dim:literal) => {
                            match nb {
                                1 => by_rows!(
                                    tr,
                                    tile512 [T, $dim, 1] (&p, &mut scratch, partial, best),
                                    [1 2 3 4 5 6 7 8 9 10 11 12 13 14]
                                ),
                                2 => by_rows!(
                                    tr,
                                    tile512 [T, $dim, 2] (&p, &mut scratch, partial, best),
                                    [1 2 3 4 5 6 7 8 9 10 11 12 13 14]
                                ),
                                _ => by_rows!(
                                    tr,
                                    tile512 [T, $dim, 3] (&p, &mut scratch, partial, best),
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
        for best in &best[..rows] {
            total += _mm512_reduce_max_ps(*best);
        }
    }
    total
}

/// One pass of one tile of `R` query tokens over a step of `B` blocks: the `R × 16·B` dot
/// products over the pass's dimensions, added to those saved by the previous pass (if any); then,
/// after the last pass, each block's dot products become MaxSim candidates (scaled with int8) and
/// are folded into `best` (the tile's running maxima) by a masked max that leaves out the lanes
/// of padding tokens, whose values and scales may hold anything; otherwise they are saved in
/// `partial` for the next pass.
///
/// `DIM` is the dimension when it is known at compile time ([`FIXED_DIM`]), 0 otherwise.
#[inline]
#[target_feature(enable = "avx512f")]
fn tile512<T: Element, const DIM: usize, const B: usize, const R: usize>(
    p: &Pass<'_, T>,
    scratch: &mut Scratch,
    partial: &mut [[MaybeUninit<__m512>; STEP_MAX]],
    best: &mut [__m512],
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
        for (best, acc) in best.iter_mut().zip(&acc) {
            let candidates = match scales {
                None => acc[k],
                Some(scales) => _mm512_mul_ps(acc[k], scales),
            };
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
            tile256 [_] (q, dim, doc, scales, m, &mut total),
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
/// when the CPU lacks the features: the best of runs of about 2 ms, `millis` ms in all.
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
    // Calibrate runs of about 2 ms and keep the best of `millis / 2` (at least five) of them:
    // short runs are likelier to find the core unshared on a busy machine.
    let mut iters = 1u64 << 12;
    while run(iters) < 0.5e-3 && iters < 1 << 34 {
        iters *= 2;
    }
    let runs = (millis / 2).max(5);
    let best = (0..runs).map(|_| run(iters)).fold(f64::INFINITY, f64::min);
    Some(chain_flops(iters, lanes) / best / 1e9)
}
