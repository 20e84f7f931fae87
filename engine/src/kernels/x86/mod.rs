//! x86-64 kernels: AVX-512F ([`avx512`]), and AVX2 with FMA and F16C ([`avx2`]), over the f16
//! and the int8 layouts; and the nearest-centroid search of product quantization ([`nearest`]).
//! This module holds what they share: the CPU feature checks and [`Element`]. (The FMA-peak
//! measurement, a benchmark rather than a kernel, is `super::peak`.)
//!
//! Both MaxSim kernels compute the same dot products the same way: the query tokens are cut into
//! tiles of a few tokens (`super::tiles`); for each dimension `j`, the 16 values of dimension `j`
//! of a block are loaded and widened exactly to f32 (`vcvtph2ps` for halves, `vpmovsxbd` +
//! `vcvtdq2ps` for int8), and each query token's value `q[j]` is broadcast and multiplied-added
//! into that token's accumulators. A tile thus holds tokens × 16 (or 32, or 48) dot products in
//! registers, and every widened document vector feeds one FMA per query token of the tile. When a
//! block is done, int8 dot products are multiplied by the block's 16 token scales, padding lanes
//! are left out and the dot products are folded into a running per-lane maximum; after the last
//! block, each query token's maximum is reduced across lanes and added to the total, in query
//! order. The two layouts share this code through [`Element`], which only says how 16 (or 8)
//! consecutive values are loaded and widened; so each kernel is one generic function per
//! instruction set, not one per layout.
//!
//! They differ in their loop order. The AVX2 kernel runs each tile over the whole document, block
//! after block. The AVX-512 kernel walks the document once, in steps of a few blocks, and runs
//! every tile over a step before going on (see [`avx512`] for why).
//!
//! Safety: the `#[target_feature]` functions are only entered from the `maxsim_*` and
//! `nearest_*` functions, which first check that the CPU has the features (so calling them is
//! sound); the only other `unsafe` operations are unaligned loads and unchecked reads, each after
//! explicit checks of the slices' lengths, and reads of the AVX-512 kernel's scratch and saved
//! sums, each after the write that initialised it (see `avx512::maxsim512`).

#![deny(unsafe_op_in_unsafe_fn)]

use super::{TokenMax, BLOCK};
use core::arch::x86_64::*;
use half::f16;

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

mod avx2;
mod avx512;
mod nearest;

pub(super) use avx2::{maxsim_avx2, maxsim_int8_avx2};
pub(super) use avx512::{maxsim_avx512, maxsim_int8_avx512};
pub(super) use nearest::{nearest_avx2, nearest_avx512};

/// The best document token of one query token from a kernel's 16 lanes of running maxima (lane
/// `i` being token `16·b + i` of some block `b`): `equal` has bit `i` set when lane `i` holds the
/// largest value `max`, and `blocks` is the block of each lane's maximum (as f32). Of the lanes
/// holding `max`, the lowest token. Called once per query token and candidate, so it only looks
/// at the lanes in `equal` (almost always one).
fn first_best(equal: u32, blocks: &[f32; BLOCK], max: f32) -> TokenMax {
    let token_of = |lane: u32| blocks[lane as usize] as u32 * BLOCK as u32 + lane;
    let (mut token, mut rest) = (u32::MAX, equal & 0xffff);
    while rest != 0 {
        token = token.min(token_of(rest.trailing_zeros()));
        rest &= rest - 1;
    }
    TokenMax {
        token: if token == u32::MAX { 0 } else { token },
        score: max,
    }
}

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
