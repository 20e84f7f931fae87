//! aarch64 kernel: NEON (Advanced SIMD, part of every aarch64 target's baseline here).
//!
//! It works like the x86 kernels (see `x86.rs`): query tokens in tiles of up to 6; for each
//! dimension `j` of a block, the 16 halves are loaded and widened to four f32x4 vectors, and each
//! query token's `q[j]` multiplies-adds into its 4 accumulators, so a tile holds 6 × 16 dot
//! products in 24 of the 32 vector registers. Padding lanes become −∞ before the running max.
//!
//! Widening uses `FCVTL`/`FCVTL2` through inline assembly: these are base ARMv8 NEON
//! instructions, but the Rust intrinsic (`vcvt_f32_f16`) takes `float16x4_t`, which is not stable.
//!
//! Safety: the only `unsafe` operations are the loads (after explicit checks of the slices'
//! lengths) and the register-only conversion instructions.

#![deny(unsafe_op_in_unsafe_fn)]

use super::{packed_len, tiles, tokens_in_block, BLOCK};
use core::arch::aarch64::*;
use core::arch::asm;
use half::f16;

/// Query tokens per tile: 6 · 4 = 24 accumulators, 4 widened document vectors, 1 broadcast.
const MR: usize = 6;

/// MaxSim with the NEON kernel; `query` is `n_q × dim` row-major, `doc` a packed document of
/// `m ≥ 1` tokens.
///
/// # Panics
///
/// If the shapes are inconsistent.
pub(super) fn maxsim(query: &[f32], dim: usize, doc: &[f16], m: usize) -> f32 {
    assert!(
        dim > 0 && query.len().is_multiple_of(dim),
        "maxsim: bad query shape"
    );
    assert!(
        m > 0,
        "maxsim: the kernels need at least one document token"
    );
    assert_eq!(doc.len(), packed_len(m, dim), "maxsim: bad packed length");
    // SAFETY: `maxsim_neon` only requires the `neon` target feature (it is otherwise safe: it
    // reads memory only through the checked slices it is given), and this module is compiled
    // only for targets that enable NEON (`cfg(target_feature = "neon")`), so every CPU that can
    // run this code has it.
    unsafe { maxsim_neon(query, dim, doc, m) }
}

/// [`maxsim`] once the shapes have been checked: tile by tile, in query order.
#[target_feature(enable = "neon")]
fn maxsim_neon(query: &[f32], dim: usize, doc: &[f16], m: usize) -> f32 {
    let mut total = 0.0f32;
    for (first, rows) in tiles(query.len() / dim, MR) {
        let q = &query[first * dim..(first + rows) * dim];
        match rows {
            1 => tile::<1>(q, dim, doc, m, &mut total),
            2 => tile::<2>(q, dim, doc, m, &mut total),
            3 => tile::<3>(q, dim, doc, m, &mut total),
            4 => tile::<4>(q, dim, doc, m, &mut total),
            5 => tile::<5>(q, dim, doc, m, &mut total),
            6 => tile::<6>(q, dim, doc, m, &mut total),
            rows => unreachable!("tile of {rows} query tokens"),
        }
    }
    total
}

/// Adds to `total`, in order, the MaxSim terms of the `R` query tokens in `q` (`R × dim`).
#[target_feature(enable = "neon")]
fn tile<const R: usize>(q: &[f32], dim: usize, doc: &[f16], m: usize, total: &mut f32) {
    let neg_inf = vdupq_n_f32(f32::NEG_INFINITY);
    let block_len = BLOCK * dim;
    let blocks = m.div_ceil(BLOCK);
    let lanes: [u32; 4] = [0, 1, 2, 3];
    // SAFETY: `lanes` holds exactly the 4 u32 that `vld1q_u32` reads.
    let lanes = unsafe { vld1q_u32(lanes.as_ptr()) };
    let mut best = [[neg_inf; 4]; R];
    for b in 0..blocks {
        let mut acc = dots::<R>(q, dim, &doc[b * block_len..(b + 1) * block_len]);
        let real = tokens_in_block(m, b);
        if real < BLOCK {
            // Lane i of vector k holds token 4·k + i: keep it if 4·k + i < real.
            let real = vdupq_n_u32(real as u32);
            let keep: [uint32x4_t; 4] = core::array::from_fn(|k| {
                vcltq_u32(vaddq_u32(lanes, vdupq_n_u32(4 * k as u32)), real)
            });
            for acc in acc.iter_mut() {
                for (acc, keep) in acc.iter_mut().zip(keep) {
                    *acc = vbslq_f32(keep, *acc, neg_inf);
                }
            }
        }
        for (best, acc) in best.iter_mut().zip(acc) {
            for (best, acc) in best.iter_mut().zip(acc) {
                *best = vmaxq_f32(*best, acc);
            }
        }
    }
    for [a, b, c, d] in best {
        *total += vmaxvq_f32(vmaxq_f32(vmaxq_f32(a, b), vmaxq_f32(c, d)));
    }
}

/// The `R × 16` dot products of the `R` query tokens in `q` (`R × dim`) with the packed block
/// `block` (`16 × dim`): `acc[r][k]` lane `i` is the dot product of query token `r` with token
/// `4·k + i` of the block.
#[inline]
#[target_feature(enable = "neon")]
fn dots<const R: usize>(q: &[f32], dim: usize, block: &[f16]) -> [[float32x4_t; 4]; R] {
    assert_eq!(q.len(), R * dim);
    assert_eq!(block.len(), BLOCK * dim);
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    for j in 0..dim {
        let at = block.as_ptr().cast::<u16>().wrapping_add(j * BLOCK);
        // SAFETY: j < dim, so the 16 halves (2 × 8) at j·16 end at most at 16·dim = block.len();
        // `vld1q_u16` has no alignment requirement beyond u16's, which f16 shares.
        let (lo, hi) = unsafe { (vld1q_u16(at), vld1q_u16(at.add(8))) };
        let (d0, d1) = widen(lo);
        let (d2, d3) = widen(hi);
        let d = [d0, d1, d2, d3];
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r < R and j < dim, so r·dim + j < R·dim = q.len().
            let qv = vdupq_n_f32(unsafe { *q.get_unchecked(r * dim + j) });
            for (acc, d) in acc.iter_mut().zip(d) {
                *acc = vfmaq_f32(*acc, d, qv);
            }
        }
    }
    acc
}

/// Widens 8 IEEE halves (as raw bits) to f32: lanes 0–3 and lanes 4–7. The conversion is exact
/// for every finite half, subnormals included (conversions ignore FPCR.FZ16); it assumes the
/// IEEE half format, FPCR.AHP = 0, which is the default and what Rust code runs with.
#[inline]
#[target_feature(enable = "neon")]
fn widen(halves: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let lo: float32x4_t;
    let hi: float32x4_t;
    // SAFETY: FCVTL/FCVTL2 read one vector register and write another; they touch no memory,
    // stack or flags (as declared), and NEON is enabled on this target (the module's cfg). The
    // outputs are `out` (not `lateout`), so `lo` is never allocated over `halves`, which the
    // second instruction still reads.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            h = in(vreg) halves,
            lo = out(vreg) lo,
            hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (lo, hi)
}
