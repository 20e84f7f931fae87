//! aarch64 kernels: NEON (Advanced SIMD, part of every aarch64 target's baseline here), over the
//! f16 and the int8 layouts.
//!
//! They work like the x86 AVX2 kernel (see `x86/avx2.rs`): query tokens in tiles of up to 6; for each
//! dimension `j` of a block, the 16 values are loaded and widened exactly to four f32x4 vectors,
//! and each query token's `q[j]` multiplies-adds into its 4 accumulators, so a tile holds 6 × 16
//! dot products in 24 of the 32 vector registers. Int8 dot products are multiplied by the
//! block's 16 token scales, and padding lanes become −∞ before the running max. The two layouts
//! share this code through [`Element`].
//!
//! Halves are widened with `FCVTL`/`FCVTL2` through inline assembly: these are base ARMv8 NEON
//! instructions, but the Rust intrinsic (`vcvt_f32_f16`) takes `float16x4_t`, which is not stable.
//! Int8 values are sign-extended twice (`SXTL`/`SXTL2`) and converted (`SCVTF`).
//!
//! Safety: the only `unsafe` operations are the loads (after explicit checks of the slices'
//! lengths) and the register-only conversion instructions.

#![deny(unsafe_op_in_unsafe_fn)]

use super::{check_kernel_args as check, tiles, tokens_in_block, BLOCK};
use core::arch::aarch64::*;
use core::arch::asm;
use half::f16;

/// Query tokens per tile: 6 · 4 = 24 accumulators, 4 widened document vectors, 1 broadcast.
const MR: usize = 6;

/// An element type of a packed layout: how the kernel loads 16 consecutive values and widens
/// them (exactly) to f32.
trait Element: Copy {
    /// The 16 values at `p`, widened to f32: lanes 0–3, 4–7, 8–11 and 12–15.
    ///
    /// # Safety
    ///
    /// 16 values must be readable at `p` (aligned as `Self`).
    unsafe fn widen16(p: *const Self) -> [float32x4_t; 4];
}

impl Element for f16 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn widen16(p: *const f16) -> [float32x4_t; 4] {
        let p = p.cast::<u16>();
        // SAFETY: the caller guarantees that the 16 halves (2 × 8) at `p` are readable;
        // `vld1q_u16` has no alignment requirement beyond u16's, which f16 shares.
        let (lo, hi) = unsafe { (vld1q_u16(p), vld1q_u16(p.add(8))) };
        let (d0, d1) = widen_halves(lo);
        let (d2, d3) = widen_halves(hi);
        [d0, d1, d2, d3]
    }
}

impl Element for i8 {
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn widen16(p: *const i8) -> [float32x4_t; 4] {
        // SAFETY: the caller guarantees that the 16 bytes at `p` are readable.
        let bytes = unsafe { vld1q_s8(p) };
        let (lo, hi) = (vmovl_s8(vget_low_s8(bytes)), vmovl_high_s8(bytes));
        [
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
            vcvtq_f32_s32(vmovl_high_s16(lo)),
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
            vcvtq_f32_s32(vmovl_high_s16(hi)),
        ]
    }
}

/// MaxSim with the NEON kernel; `query` is `n_q × dim` row-major, `doc` a packed document of
/// `m ≥ 1` tokens.
///
/// # Panics
///
/// If the shapes are inconsistent.
pub(super) fn maxsim(query: &[f32], dim: usize, doc: &[f16], m: usize) -> f32 {
    check(query, dim, doc, None, m);
    // SAFETY: `maxsim_neon` only requires the `neon` target feature (it is otherwise safe: it
    // reads memory only through the checked slices it is given), and this module is compiled
    // only for targets that enable NEON (`cfg(target_feature = "neon")`), so every CPU that can
    // run this code has it.
    unsafe { maxsim_neon(query, dim, doc, None, m) }
}

/// MaxSim with the NEON kernel over a packed int8 document of `m ≥ 1` tokens (`values`, and
/// `scales` padded to whole blocks); `query` is `n_q × dim` row-major.
///
/// # Panics
///
/// If the shapes are inconsistent.
pub(super) fn maxsim_int8(
    query: &[f32],
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
) -> f32 {
    check(query, dim, values, Some(scales), m);
    // SAFETY: as in `maxsim`: every CPU that runs this code has NEON.
    unsafe { maxsim_neon(query, dim, values, Some(scales), m) }
}

/// [`maxsim`] and [`maxsim_int8`] once the shapes have been checked: tile by tile, in query
/// order.
#[target_feature(enable = "neon")]
fn maxsim_neon<T: Element>(
    query: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
) -> f32 {
    let mut total = 0.0f32;
    for (first, rows) in tiles(query.len() / dim, MR) {
        let q = &query[first * dim..(first + rows) * dim];
        match rows {
            1 => tile::<T, 1>(q, dim, doc, scales, m, &mut total),
            2 => tile::<T, 2>(q, dim, doc, scales, m, &mut total),
            3 => tile::<T, 3>(q, dim, doc, scales, m, &mut total),
            4 => tile::<T, 4>(q, dim, doc, scales, m, &mut total),
            5 => tile::<T, 5>(q, dim, doc, scales, m, &mut total),
            6 => tile::<T, 6>(q, dim, doc, scales, m, &mut total),
            rows => unreachable!("tile of {rows} query tokens"),
        }
    }
    total
}

/// Adds to `total`, in order, the MaxSim terms of the `R` query tokens in `q` (`R × dim`). With
/// `scales`, each block's dot products are multiplied by its 16 token scales.
#[target_feature(enable = "neon")]
fn tile<T: Element, const R: usize>(
    q: &[f32],
    dim: usize,
    doc: &[T],
    scales: Option<&[f32]>,
    m: usize,
    total: &mut f32,
) {
    let neg_inf = vdupq_n_f32(f32::NEG_INFINITY);
    let block_len = BLOCK * dim;
    let blocks = m.div_ceil(BLOCK);
    let lanes: [u32; 4] = [0, 1, 2, 3];
    // SAFETY: `lanes` holds exactly the 4 u32 that `vld1q_u32` reads.
    let lanes = unsafe { vld1q_u32(lanes.as_ptr()) };
    let mut best = [[neg_inf; 4]; R];
    for b in 0..blocks {
        let mut acc = dots::<T, R>(q, dim, &doc[b * block_len..(b + 1) * block_len]);
        if let Some(scales) = scales {
            let scales = &scales[b * BLOCK..(b + 1) * BLOCK];
            // SAFETY: `scales` holds exactly the 16 f32 that the four `vld1q_f32` read.
            let scales: [float32x4_t; 4] =
                core::array::from_fn(|k| unsafe { vld1q_f32(scales.as_ptr().add(4 * k)) });
            for acc in acc.iter_mut() {
                for (acc, scale) in acc.iter_mut().zip(scales) {
                    *acc = vmulq_f32(*acc, scale);
                }
            }
        }
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
fn dots<T: Element, const R: usize>(q: &[f32], dim: usize, block: &[T]) -> [[float32x4_t; 4]; R] {
    assert_eq!(q.len(), R * dim);
    assert_eq!(block.len(), BLOCK * dim);
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    for j in 0..dim {
        // SAFETY: j < dim, so the 16 values at j·16 end at most at 16·dim = block.len().
        let d = unsafe { T::widen16(block.as_ptr().add(j * BLOCK)) };
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
fn widen_halves(halves: uint16x8_t) -> (float32x4_t, float32x4_t) {
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
