//! Tests of the int8 codec: the packed int8 layout, the quantization error bound, and every
//! int8 kernel available on the running CPU.
//!
//! Tolerance: each kernel computes, per query token and document token `t`,
//! `fl(fl(Σ_j q_j · v_{t,j}) · s_t)` with the sum in some association, the maximum over `t`, and
//! the sum of the maxima in query order. With unit roundoff `u = ε / 2` that is, to first order,
//! within `(dim + 1 + n_q) · u · mass` of the exact value, where `mass` = Σ over query tokens of
//! max over document tokens of Σ_j |q_j · v_{t,j} · s_t| (a maximum adds no error). A naive loop
//! over the dequantized rows (`Σ_j q_j · fl(v_{t,j} · s_t)`) obeys the same bound. So two of them
//! differ by at most `(dim + 1 + n_q) · ε · mass`; the tests allow twice that (for second-order
//! terms), against the scalar reference and against the exact value (f64). The scalar reference
//! must equal a naive row-major loop over the integer rows and scales bit for bit (same
//! operations, same order).

use super::tests::{Rng, DIMS, DOC_TOKENS, QUERY_TOKENS};
use super::*;

/// A token quantized independently of `pack_doc_int8`, straight from the documented rule: its
/// values (row order) and its scale.
fn quantize_token(row: &[f32]) -> (Vec<i8>, f32) {
    let largest = row.iter().fold(0.0f32, |a, x| a.max(x.abs()));
    let scale = largest / 127.0;
    if scale == 0.0 {
        return (vec![0; row.len()], 0.0);
    }
    let values = row
        .iter()
        .map(|&x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (values, scale)
}

/// `rows` quantized token by token: `m × dim` values (row-major) and `m` scales.
fn quantize_rows(rows: &[f32], dim: usize) -> (Vec<i8>, Vec<f32>) {
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    for row in rows.chunks_exact(dim) {
        let (v, s) = quantize_token(row);
        values.extend(v);
        scales.push(s);
    }
    (values, scales)
}

fn packed_int8(rows: &[f32], dim: usize) -> (Vec<i8>, Vec<f32>) {
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    pack_doc_int8(rows, dim, &mut values, &mut scales);
    (values, scales)
}

/// MaxSim by the most naive loop over row-major integer rows and their scales, in the scalar
/// kernel's order.
fn naive_int8(query: &[f32], values: &[i8], scales: &[f32], dim: usize) -> f32 {
    let mut total = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for (v, &s) in values.chunks_exact(dim).zip(scales) {
            let mut dot = 0.0f32;
            for j in 0..dim {
                dot += q[j] * f32::from(v[j]);
            }
            best = best.max(dot * s);
        }
        total += best;
    }
    total
}

/// MaxSim by a naive loop over the dequantized f32 rows (as `unpack_doc_int8` gives them).
fn naive_dequantized(query: &[f32], rows: &[f32], dim: usize) -> f32 {
    let mut total = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for d in rows.chunks_exact(dim) {
            let mut dot = 0.0f32;
            for j in 0..dim {
                dot += q[j] * d[j];
            }
            best = best.max(dot);
        }
        total += best;
    }
    total
}

/// The exact int8 MaxSim (in f64: each `q_j · v_j` is exact, the rest is far more precise than
/// f32) and its `mass`.
fn exact_and_mass(query: &[f32], values: &[i8], scales: &[f32], dim: usize) -> (f64, f64) {
    let (mut total, mut mass) = (0.0f64, 0.0f64);
    for q in query.chunks_exact(dim) {
        let (mut best, mut best_mass) = (f64::NEG_INFINITY, 0.0f64);
        for (v, &s) in values.chunks_exact(dim).zip(scales) {
            let products = q.iter().zip(v).map(|(&x, &y)| x as f64 * y as f64);
            let (dot, abs) = products.fold((0.0, 0.0), |(s, a), p| (s + p, a + p.abs()));
            best = best.max(dot * s as f64);
            best_mass = best_mass.max(abs * s as f64);
        }
        total += best;
        mass += best_mass;
    }
    (total, mass)
}

/// Allowed difference between two int8 kernels, or a kernel and the exact value (see the module
/// documentation).
fn tolerance(n_q: usize, dim: usize, mass: f64) -> f64 {
    2.0 * (dim + 1 + n_q) as f64 * f32::EPSILON as f64 * mass + f64::from(f32::MIN_POSITIVE)
}

/// Checks every available int8 kernel on one case (document given as f32 rows) against the
/// scalar reference and the exact value, and the reference against the naive loops.
fn check_case(query: &[f32], rows: &[f32], dim: usize, what: &str) {
    check_kernels(&KernelKind::available(), query, rows, dim, what);
}

/// Checks the int8 kernels `kinds` on one case (document given as f32 rows) against the scalar
/// reference and the exact value, and the reference against the naive loops.
pub(super) fn check_kernels(
    kinds: &[KernelKind],
    query: &[f32],
    rows: &[f32],
    dim: usize,
    what: &str,
) {
    let (n_q, m) = (query.len() / dim, rows.len() / dim);
    let (values, scales) = packed_int8(rows, dim);
    let (row_values, row_scales) = quantize_rows(rows, dim);
    let reference = maxsim_int8(KernelKind::Scalar, query, n_q, dim, &values, &scales, m);
    assert_eq!(
        reference.to_bits(),
        naive_int8(query, &row_values, &row_scales, dim).to_bits(),
        "{what}: scalar int8 kernel differs from the naive loop over the integer rows"
    );
    let (exact, mass) = exact_and_mass(query, &row_values, &row_scales, dim);
    let tol = tolerance(n_q, dim, mass);
    let mut dequantized = Vec::new();
    unpack_doc_int8(&values, &scales, m, dim, &mut dequantized);
    let naive = naive_dequantized(query, &dequantized, dim);
    assert!(
        ((naive - reference).abs() as f64) <= tol,
        "{what}: scalar int8 kernel gives {reference}, naive loop over the dequantized rows \
         {naive}, tolerance {tol}"
    );
    for &kind in kinds {
        let got = maxsim_int8(kind, query, n_q, dim, &values, &scales, m);
        let (vs_ref, vs_exact) = ((got - reference).abs() as f64, (got as f64 - exact).abs());
        assert!(
            vs_ref <= tol && vs_exact <= tol,
            "{what}: {kind} gives {got}, scalar {reference}, exact {exact}, tolerance {tol}"
        );
    }
}

#[test]
fn int8_packing_places_every_value_and_pads_with_zeros() {
    let mut rng = Rng(101);
    for dim in [1, 3, 17, 128] {
        for m in [0, 1, 15, 16, 17, 33] {
            let rows = rng.values(m * dim, -2.0, 2.0);
            let (values, scales) = packed_int8(&rows, dim);
            assert_eq!(values.len(), packed_len(m, dim));
            assert_eq!(scales.len(), packed_scales_len(m));
            assert_eq!(scales.len() % BLOCK, 0);
            let (row_values, row_scales) = quantize_rows(&rows, dim);
            for t in 0..m.div_ceil(BLOCK) * BLOCK {
                let want_scale = if t < m { row_scales[t] } else { 0.0 };
                assert_eq!(scales[t].to_bits(), want_scale.to_bits(), "m={m} t={t}");
                for j in 0..dim {
                    let want = if t < m { row_values[t * dim + j] } else { 0 };
                    // The layout formula, written out once more independently.
                    let index = (t / 16) * 16 * dim + j * 16 + t % 16;
                    assert_eq!(values[index], want, "m={m} dim={dim} t={t} j={j}");
                }
            }
            let mut unpacked = Vec::new();
            unpack_doc_int8(&values, &scales, m, dim, &mut unpacked);
            let want: Vec<f32> = (0..m * dim)
                .map(|i| f32::from(row_values[i]) * row_scales[i / dim])
                .collect();
            assert_eq!(unpacked, want);
        }
    }
}

#[test]
fn pack_doc_int8_appends_and_accepts_halves() {
    let first = [1.0f32, -0.5, 0.25];
    let second = [-4.0f32, 2.0, 0.0, 0.0, 0.0, 0.0];
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    pack_doc_int8(&first, 3, &mut values, &mut scales);
    pack_doc_int8(&second, 3, &mut values, &mut scales);
    assert_eq!(values.len(), packed_len(1, 3) + packed_len(2, 3));
    assert_eq!(scales.len(), 2 * BLOCK);
    // Second document, token 0: −4 is its largest magnitude, 2 is half of it; token 1 is zero.
    assert_eq!(values[packed_len(1, 3)], -127);
    assert_eq!(values[packed_len(1, 3) + BLOCK], 64);
    assert_eq!(scales[BLOCK], 4.0 / 127.0);
    assert_eq!(scales[BLOCK + 1], 0.0);
    assert_eq!(values[packed_len(1, 3) + 1], 0);
    // f16 rows quantize exactly like their f32 widenings.
    let mut rng = Rng(5);
    let halves = rng.halves(37 * 19, -3.0, 3.0);
    let widened: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    let (mut hv, mut hs) = (Vec::new(), Vec::new());
    pack_doc_int8(&halves, 19, &mut hv, &mut hs);
    assert_eq!((hv, hs), packed_int8(&widened, 19));
}

/// The documented bound: every component is within `s · (1/2 + 2⁻¹⁷)` of `q · s` when the scale
/// `s` is normal, within `s · (1/2 + 2⁻¹⁶) + 2⁻¹⁴³` always, and the f32 dequantized value adds at
/// most `2⁻¹⁷ · s` (+ 2⁻¹⁵⁰). Also: nothing maps to −128, and the largest component maps to ±127
/// when `s` is normal.
#[test]
fn quantization_error_is_within_the_documented_bound() {
    let mut rng = Rng(77);
    let dim = 64;
    let mut rows: Vec<f32> = Vec::new();
    // Magnitudes across the whole f32 range, including subnormal scales and underflow to 0.
    let magnitudes = [
        1e-44, 1e-42, 1e-40, 1e-38, 1.5e-36, 1e-30, 1e-6, 0.01, 1.0, 3.0, 1e6, 1e30, 3e38,
    ];
    for &magnitude in &magnitudes {
        for _ in 0..20 {
            rows.extend(
                rng.values(dim, -1.0, 1.0)
                    .into_iter()
                    .map(|x| x * magnitude),
            );
        }
    }
    // Tokens made to hit rounding edges: components at k + 1/2 steps, ties, equal magnitudes.
    for k in 0..dim {
        rows.push((k as f32 - 31.5) / 31.5);
    }
    rows.extend(std::iter::repeat_n(-2.5f32, dim));
    rows.extend(std::iter::repeat_n(0.0f32, dim));
    rows.extend((0..dim).map(|k| {
        if k == 7 {
            -f32::MAX / 2.0
        } else {
            f32::MAX / 508.0
        }
    }));

    let m = rows.len() / dim;
    let (values, scales) = packed_int8(&rows, dim);
    let mut dequantized = Vec::new();
    unpack_doc_int8(&values, &scales, m, dim, &mut dequantized);
    for (t, row) in rows.chunks_exact(dim).enumerate() {
        let largest = row.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let s = scales[t];
        assert_eq!(s.to_bits(), (largest / 127.0).to_bits(), "token {t}");
        let s64 = s as f64;
        let always = s64 * (0.5 + 2f64.powi(-16)) + 2f64.powi(-143);
        let normal = s64 * (0.5 + 2f64.powi(-17));
        let mut top = 0i8;
        for (j, &x) in row.iter().enumerate() {
            let q = values[packed_index(t, j, dim)];
            assert!(q != i8::MIN, "token {t}: −128 stored");
            if x.abs() == largest {
                top = q;
            }
            let err = (x as f64 - q as f64 * s64).abs();
            assert!(
                err <= always,
                "token {t} j={j}: x={x} q={q} s={s} error {err}"
            );
            if s.is_normal() {
                assert!(
                    err <= normal,
                    "token {t} j={j}: x={x} q={q} s={s} error {err}"
                );
                assert!(
                    err <= largest as f64 / 254.0 * (1.0 + 2f64.powi(-15)),
                    "token {t} j={j}: error {err} against the largest magnitude {largest}"
                );
                let stored = dequantized[t * dim + j] as f64;
                let err_f32 = (x as f64 - stored).abs();
                assert!(
                    err_f32 <= s64 * (0.5 + 2f64.powi(-16)) + 2f64.powi(-150),
                    "token {t} j={j}: dequantized {stored} for {x}"
                );
            }
        }
        if s.is_normal() {
            assert_eq!(
                top.unsigned_abs(),
                127,
                "token {t}: largest component → {top}"
            );
        } else if s == 0.0 {
            assert!(largest as f64 <= 2f64.powi(-143), "token {t}: zero scale");
        }
    }
}

/// The quantization bound carried to MaxSim: the int8 score of a document is within
/// Σ over query tokens of `‖q‖₁ · max_t s_t · (1/2 + 2⁻¹⁷)` of the exact score of its original
/// rows, plus the kernels' rounding.
#[test]
fn int8_maxsim_is_within_the_quantization_bound_of_the_original() {
    let mut rng = Rng(31);
    for (n_q, m, dim) in [(32, 80, 128), (23, 159, 128), (5, 17, 3), (1, 1, 1)] {
        let query = rng.values(n_q * dim, -1.0, 1.0);
        let rows = rng.values(m * dim, -1.0, 1.0);
        let (values, scales) = packed_int8(&rows, dim);
        let mut exact = 0.0f64;
        let mut bound = 0.0f64;
        let largest_scale = scales.iter().fold(0.0f32, |a, &s| a.max(s)) as f64;
        for q in query.chunks_exact(dim) {
            let dots = rows
                .chunks_exact(dim)
                .map(|d| q.iter().zip(d).map(|(&a, &b)| a as f64 * b as f64).sum());
            exact += dots.fold(f64::NEG_INFINITY, f64::max);
            let norm1: f64 = q.iter().map(|&x| x.abs() as f64).sum();
            bound += norm1 * largest_scale * (0.5 + 2f64.powi(-17));
        }
        let (row_values, row_scales) = quantize_rows(&rows, dim);
        let (_, mass) = exact_and_mass(&query, &row_values, &row_scales, dim);
        let bound = bound + tolerance(n_q, dim, mass);
        for kind in KernelKind::available() {
            let got = maxsim_int8(kind, &query, n_q, dim, &values, &scales, m) as f64;
            assert!(
                (got - exact).abs() <= bound,
                "n_q={n_q} m={m} dim={dim} {kind}: {got} vs original {exact}, bound {bound}"
            );
        }
    }
}

#[test]
fn int8_kernels_match_reference_on_random_shapes() {
    let mut rng = Rng(4242);
    for dim in DIMS {
        for n_q in QUERY_TOKENS {
            for m in DOC_TOKENS {
                let query = rng.values(n_q * dim, -1.0, 1.0);
                // Per-token magnitudes vary, so the scales differ from token to token.
                let mut rows = Vec::with_capacity(m * dim);
                for _ in 0..m {
                    let magnitude = rng.uniform(0.1, 4.0);
                    rows.extend(rng.values(dim, -magnitude, magnitude));
                }
                let what = format!("int8 random n_q={n_q} m={m} dim={dim}");
                check_case(&query, &rows, dim, &what);
            }
        }
    }
}

/// Every dot product is negative, so a kernel that let a padding token (value 0, scale 0: dot 0)
/// win the max would be off by far more than the tolerance whenever `m` is not a multiple of 16.
#[test]
fn int8_padding_never_wins_against_negative_maxima() {
    let mut rng = Rng(8);
    for dim in DIMS {
        for n_q in [1, 6, 14, 32] {
            for m in DOC_TOKENS {
                let query = rng.values(n_q * dim, 0.05, 1.0);
                let rows = rng.values(m * dim, -1.0, -0.05);
                let what = format!("int8 negative n_q={n_q} m={m} dim={dim}");
                check_case(&query, &rows, dim, &what);
                let (values, scales) = packed_int8(&rows, dim);
                for kind in KernelKind::available() {
                    let got = maxsim_int8(kind, &query, n_q, dim, &values, &scales, m);
                    assert!(got < 0.0, "{what}: {kind} gives {got}");
                }
            }
        }
    }
}

/// Padding is ignored whatever it holds: values of −128 or 127 and scales that are huge,
/// infinite or NaN score the same as the zero padding.
#[test]
fn int8_padding_content_is_ignored() {
    let mut rng = Rng(10);
    for (n_q, m, dim) in [(7, 21, 19), (14, 1, 128), (3, 47, 1), (32, 159, 128)] {
        let query = rng.values(n_q * dim, -1.0, 1.0);
        let rows = rng.values(m * dim, -1.0, -0.5);
        let (values, scales) = packed_int8(&rows, dim);
        let garbage_scales = [f32::MAX, f32::INFINITY, f32::NAN, -f32::INFINITY, 1e30];
        let (mut dirty_values, mut dirty_scales) = (values.clone(), scales.clone());
        for t in m..packed_scales_len(m) {
            dirty_scales[t] = garbage_scales[t % garbage_scales.len()];
            for j in 0..dim {
                dirty_values[packed_index(t, j, dim)] = if (t + j) % 2 == 0 { -128 } else { 127 };
            }
        }
        for kind in KernelKind::available() {
            let a = maxsim_int8(kind, &query, n_q, dim, &values, &scales, m);
            let b = maxsim_int8(kind, &query, n_q, dim, &dirty_values, &dirty_scales, m);
            assert_eq!(a.to_bits(), b.to_bits(), "n_q={n_q} m={m} dim={dim} {kind}");
        }
    }
}

/// Tokens of wildly different magnitudes in one document (each with its own scale), extreme
/// stored values (±127 everywhere) and all-zero tokens.
#[test]
fn int8_extreme_scales_and_values() {
    let dim = 20;
    let magnitudes = [1e-30f32, 1e30, 1.0, 0.0, 3e-3, 7e4];
    let mut rng = Rng(12);
    let mut rows = Vec::new();
    for t in 0..37 {
        let magnitude = magnitudes[t % magnitudes.len()];
        if t % 5 == 0 {
            // All components ±magnitude: every stored value is ±127.
            rows.extend((0..dim).map(|j| {
                if (t + j) % 3 == 0 {
                    -magnitude
                } else {
                    magnitude
                }
            }));
        } else {
            rows.extend(
                rng.values(dim, -1.0, 1.0)
                    .into_iter()
                    .map(|x| x * magnitude),
            );
        }
    }
    let query = rng.values(5 * dim, -1.0, 1.0);
    check_case(&query, &rows, dim, "int8 extreme scales");
    // A document of only zero tokens scores 0 with every kernel.
    let zeros = vec![0.0f32; 17 * dim];
    check_case(&query, &zeros, dim, "int8 zero tokens");
    let (values, scales) = packed_int8(&zeros, dim);
    for kind in KernelKind::available() {
        assert_eq!(maxsim_int8(kind, &query, 5, dim, &values, &scales, 17), 0.0);
    }
}

#[test]
fn int8_empty_document_and_empty_query_score_zero() {
    for kind in KernelKind::available() {
        assert_eq!(maxsim_int8(kind, &[1.0, 2.0], 1, 2, &[], &[], 0), 0.0);
        let (values, scales) = packed_int8(&[1.0, 1.0], 2);
        assert_eq!(maxsim_int8(kind, &[], 0, 2, &values, &scales, 1), 0.0);
    }
}

#[test]
fn int8_unavailable_kernel_panics() {
    let unavailable = KernelKind::ALL.into_iter().find(|k| !k.is_available());
    if let Some(kind) = unavailable {
        let (values, scales) = packed_int8(&[1.0], 1);
        let result =
            std::panic::catch_unwind(|| maxsim_int8(kind, &[1.0], 1, 1, &values, &scales, 1));
        assert!(result.is_err(), "{kind} ran although unavailable");
    }
}

#[test]
#[should_panic(expected = "packed values length")]
fn int8_wrong_values_length_panics() {
    // One token of dimension 4 packs to 64 values, not 4.
    maxsim_int8(KernelKind::Scalar, &[1.0; 4], 1, 4, &[1; 4], &[1.0; 16], 1);
}

#[test]
#[should_panic(expected = "scales length")]
fn int8_wrong_scales_length_panics() {
    // One token has 16 scales (a whole block), not 1.
    maxsim_int8(KernelKind::Scalar, &[1.0; 4], 1, 4, &[1; 64], &[1.0], 1);
}

#[test]
#[should_panic(expected = "query length")]
fn int8_wrong_query_length_panics() {
    maxsim_int8(KernelKind::Scalar, &[1.0; 5], 1, 4, &[1; 64], &[1.0; 16], 1);
}

#[test]
#[should_panic(expected = "not finite")]
fn pack_doc_int8_rejects_non_finite_values() {
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    pack_doc_int8(&[1.0, f32::NAN], 2, &mut values, &mut scales);
}
