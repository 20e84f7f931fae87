//! The int8 codec for stored token vectors: per-token symmetric quantization into the packed
//! layout, and MaxSim over it.
//!
//! # Packed int8 layout
//!
//! The *values* have exactly the block structure of the f16 layout (see the
//! [parent module](super)): `ceil(m / 16)` blocks of 16 tokens, dimension-major within a block,
//! token `t`, dimension `j` at [`packed_index`]`(t, j, dim)`, [`packed_len`]`(m, dim)` values in
//! all, but each value is an `i8` (one byte, so a block is `16 · dim` bytes). Each token `t` also
//! has an f32 *scale* `scales[t]`, stored apart from the values in a per-document array padded
//! to whole blocks ([`packed_scales_len`]`(m) = ceil(m / 16) · 16` scales, in token order). The
//! token's real value in dimension `j` is `q · scales[t]`, with `q` the stored `i8`.
//!
//! [`pack_doc_int8`] writes padding positions as value 0 and scale 0; readers must not depend on
//! them (every kernel ignores the padding's values *and* scales, whatever they hold).
//!
//! # Quantization and its error
//!
//! Each token is quantized on its own, symmetrically: with `a = max_j |x_j|` its largest
//! magnitude, the scale is `s = fl(a / 127)` (f32 division) and each value is stored as
//! `q_j = round(x_j / s)` (f32 division, rounding half away from zero) clamped to
//! `[−127, 127]`; a token whose scale is 0 (all zeros, or `a ≤ 127 · 2⁻¹⁵⁰`) is stored as scale 0
//! and all-zero values. So −128 never occurs, and the largest component maps to ±127 (for a
//! normal scale; a subnormal scale is coarse, and the largest component may map lower).
//!
//! Every component is then within half a quantization step, up to the f32 rounding of `s` and of
//! `x_j / s`:
//!
//! ```text
//! |x_j − q_j · s| ≤ s · (1/2 + 2⁻¹⁷) ≤ (a / 254) · (1 + 2⁻¹⁵)        (s a normal f32)
//! |x_j − q_j · s| ≤ s · (1/2 + 2⁻¹⁶) + 2⁻¹⁴³                        (any s, even subnormal/0)
//! ```
//!
//! (`q_j · s` is the exact product; the f32 product `fl(q_j · s)` adds at most `2⁻¹⁷ · s` more,
//! and 2⁻¹⁵⁰ when it is subnormal; it can overflow only for `a > f32::MAX · (1 − 2⁻²³)`.) The second form only matters for tokens with
//! `a < 127 · 2⁻¹²⁶ ≈ 1.5·10⁻³⁶`. For a dot product with a query token `q` this gives
//! `|q·x − q·x̂| ≤ ‖q‖₁ · s · (1/2 + 2⁻¹⁷)`, and since a maximum moves by at most the largest
//! change of its arguments, MaxSim over the int8 document differs from MaxSim over the original
//! rows by at most Σ over query tokens of `‖q‖₁ · max_t s_t · (1/2 + 2⁻¹⁷)`, plus the kernels' own
//! f32 rounding.
//!
//! # Kernels
//!
//! [`maxsim_int8`] runs the same [`KernelKind`]s as [`maxsim`](super::maxsim), with the same
//! register tiling: per block, each query token's dot products with the 16 tokens' values
//! (widened exactly to f32) are accumulated, then multiplied once by the 16 token scales, padding
//! lanes become −∞, and the running maximum is updated. Every kernel computes, for each query
//! token and document token `t`, `(Σ_j q_j · v_{t,j}) · scales[t]` in f32 (in some association
//! of the sum), the maximum over `t`, and the sum of the maxima in query order.

use super::{packed_index, packed_len, scalar, KernelKind, TokenMax, BLOCK};

#[cfg(target_arch = "x86_64")]
use super::x86;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
use super::neon;

/// Largest magnitude of a stored value: values are in `[−127, 127]`.
const LEVELS: f32 = 127.0;

/// Number of per-token scales a document of `m` tokens stores: `ceil(m / 16) · 16` (whole
/// blocks, like the values).
pub fn packed_scales_len(m: usize) -> usize {
    m.div_ceil(BLOCK) * BLOCK
}

/// Appends to `out_values` and `out_scales` the packed int8 layout (see the
/// [module documentation](self)) of a document given as `rows`: `m × dim` values (f32, f16 or
/// anything else that widens to f32), row-major, with `m = rows.len() / dim`. Appends
/// [`packed_len`]`(m, dim)` values and [`packed_scales_len`]`(m)` scales; padding is value 0 and
/// scale 0. Neither vector is cleared first, so documents can be packed one after the other.
///
/// Each token is quantized symmetrically with scale `max_j |x_j| / 127`; every component is then
/// within `(max_j |x_j| / 254) · (1 + 2⁻¹⁵)` of `q · scale` (see the module documentation for the
/// exact bound, which also covers tiny tokens).
///
/// # Panics
///
/// If `dim` is 0, `rows.len()` is not a multiple of `dim`, or a value is not finite.
pub fn pack_doc_int8<T: Copy + Into<f32>>(
    rows: &[T],
    dim: usize,
    out_values: &mut Vec<i8>,
    out_scales: &mut Vec<f32>,
) {
    assert!(dim > 0, "pack_doc_int8: dim must be > 0");
    assert!(
        rows.len().is_multiple_of(dim),
        "pack_doc_int8: {} values are not whole rows of dimension {dim}",
        rows.len()
    );
    let m = rows.len() / dim;
    let (values_start, scales_start) = (out_values.len(), out_scales.len());
    out_values.resize(values_start + packed_len(m, dim), 0);
    out_scales.resize(scales_start + packed_scales_len(m), 0.0);
    let values = &mut out_values[values_start..];
    let scales = &mut out_scales[scales_start..];
    for (t, row) in rows.chunks_exact(dim).enumerate() {
        let largest = row.iter().fold(0.0f32, |largest, &x| {
            let x: f32 = x.into();
            assert!(
                x.is_finite(),
                "pack_doc_int8: token {t} has a value that is not finite ({x})"
            );
            largest.max(x.abs())
        });
        let scale = largest / LEVELS;
        if scale == 0.0 {
            // All zeros (or so tiny that the scale underflows): the zero padding already holds.
            continue;
        }
        scales[t] = scale;
        for (j, &x) in row.iter().enumerate() {
            let x: f32 = x.into();
            // In range by construction (|x| / scale ≤ 127 · (1 + 2⁻²³)); the clamp only guards
            // the subnormal-scale case, where `scale` may be well below `largest / 127`.
            values[packed_index(t, j, dim)] = (x / scale).round().clamp(-LEVELS, LEVELS) as i8;
        }
    }
}

/// Appends to `out` the dequantized `m × dim` row-major token rows of a packed int8 document
/// (`fl(q · scale)` in f32, the inverse of [`pack_doc_int8`] up to its quantization error;
/// padding is dropped).
///
/// # Panics
///
/// If `dim` is 0, `values.len() != packed_len(m, dim)` or
/// `scales.len() != packed_scales_len(m)`.
pub fn unpack_doc_int8(values: &[i8], scales: &[f32], m: usize, dim: usize, out: &mut Vec<f32>) {
    assert!(dim > 0, "unpack_doc_int8: dim must be > 0");
    check_doc(values, scales, m, dim);
    out.reserve(m * dim);
    for (t, &scale) in scales.iter().enumerate().take(m) {
        out.extend((0..dim).map(|j| f32::from(values[packed_index(t, j, dim)]) * scale));
    }
}

/// MaxSim of a query against one packed int8 document, computed by the kernel `kind`.
///
/// `query` is `n_q × dim` f32 values, row-major; `values` and `scales` are a document of `m`
/// tokens in the packed int8 layout (as written by [`pack_doc_int8`]). Returns Σ over query
/// tokens of the best `(Σ_j q_j · v_{t,j}) · scales[t]` over the `m` document tokens `t`; padding
/// (values and scales) never takes part. A document without tokens (`m = 0`) scores 0, as does
/// an empty query. All kernels agree up to f32 rounding (each dot product is a sum of `dim` f32
/// products in some association, then one multiplication by the scale).
///
/// # Panics
///
/// If `kind` is not available on this CPU ([`KernelKind::is_available`]), if `dim` is 0, if
/// `query.len() != n_q · dim`, if `values.len() != packed_len(m, dim)`, or if
/// `scales.len() != packed_scales_len(m)`.
pub fn maxsim_int8(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
) -> f32 {
    int8_with(kind, query, n_q, dim, values, scales, m, None)
}

/// [`maxsim_int8`] that also writes each query token's best document token into `matches`, as
/// [`super::maxsim_matches`] does.
///
/// # Panics
///
/// As [`maxsim_int8`], and if `matches.len() != n_q`.
#[allow(clippy::too_many_arguments)]
pub fn maxsim_int8_matches(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
    matches: &mut [TokenMax],
) -> f32 {
    assert_eq!(
        matches.len(),
        n_q,
        "maxsim_int8_matches: one match per query token"
    );
    int8_with(kind, query, n_q, dim, values, scales, m, Some(matches))
}

/// [`maxsim_int8`] and [`maxsim_int8_matches`].
#[allow(clippy::too_many_arguments)]
fn int8_with(
    kind: KernelKind,
    query: &[f32],
    n_q: usize,
    dim: usize,
    values: &[i8],
    scales: &[f32],
    m: usize,
    matches: Option<&mut [TokenMax]>,
) -> f32 {
    assert!(dim > 0, "maxsim_int8: dim must be > 0");
    assert_eq!(
        Some(query.len()),
        n_q.checked_mul(dim),
        "maxsim_int8: query length does not match {n_q} tokens of dimension {dim}"
    );
    check_doc(values, scales, m, dim);
    if m == 0 || n_q == 0 {
        return 0.0;
    }
    match kind {
        KernelKind::Scalar => scalar::maxsim_int8(query, dim, values, scales, m, matches),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx2 => x86::maxsim_int8_avx2(query, dim, values, scales, m, matches),
        #[cfg(target_arch = "x86_64")]
        KernelKind::Avx512 => x86::maxsim_int8_avx512(query, dim, values, scales, m, matches),
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        KernelKind::Neon => match matches {
            None => neon::maxsim_int8(query, dim, values, scales, m),
            Some(matches) => scalar::maxsim_int8(query, dim, values, scales, m, Some(matches)),
        },
        #[allow(unreachable_patterns)]
        _ => panic!("MaxSim kernel `{kind}` is not available on this CPU"),
    }
}

/// Panics unless `values` and `scales` are a packed int8 document of `m` tokens of dimension
/// `dim`.
fn check_doc(values: &[i8], scales: &[f32], m: usize, dim: usize) {
    assert_eq!(
        values.len(),
        packed_len(m, dim),
        "int8 document: packed values length does not match {m} tokens of dimension {dim}"
    );
    assert_eq!(
        scales.len(),
        packed_scales_len(m),
        "int8 document: scales length does not match {m} tokens"
    );
}
