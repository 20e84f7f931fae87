//! Tests of the packed layout and of every kernel available on the running CPU.
//!
//! Tolerance: each kernel sums each dot product of `dim` f32 products in some order (with or
//! without fused multiply-adds) and then the `n_q` maxima in query order. With unit roundoff
//! `u = ε / 2`, the standard bound gives, for each kernel, |computed − exact| ≤
//! `(dim + n_q) · u · mass` to first order, where `mass` = Σ over query tokens of
//! max over document tokens of Σ_j |q_j · d_j| (taking a maximum adds no error). Two kernels
//! therefore differ by at most `(dim + n_q) · ε · mass`; the tests allow twice that (for the
//! second-order terms) against the scalar reference, and the same against the exact f64 value.
//! The scalar reference must equal a naive row-major loop bit for bit (same operations, same
//! order).

use super::*;

/// A small deterministic generator (SplitMix64), enough for test data.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub(super) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub(super) fn values(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub(super) fn halves(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f16> {
        (0..n)
            .map(|_| f16::from_f32(self.uniform(lo, hi)))
            .collect()
    }
}

/// MaxSim by the most naive loop over unpacked rows, in f32, in the scalar kernel's order.
fn naive_f32(query: &[f32], rows: &[f16], dim: usize) -> f32 {
    let mut total = 0.0f32;
    for q in query.chunks_exact(dim) {
        let mut best = f32::NEG_INFINITY;
        for d in rows.chunks_exact(dim) {
            let mut dot = 0.0f32;
            for j in 0..dim {
                dot += q[j] * d[j].to_f32();
            }
            best = best.max(dot);
        }
        total += best;
    }
    total
}

/// The exact MaxSim (in f64, whose products of f32 × f16 values are exact) and its `mass`.
fn exact_and_mass(query: &[f32], rows: &[f16], dim: usize) -> (f64, f64) {
    let (mut total, mut mass) = (0.0f64, 0.0f64);
    for q in query.chunks_exact(dim) {
        let (mut best, mut best_mass) = (f64::NEG_INFINITY, 0.0f64);
        for d in rows.chunks_exact(dim) {
            let products = q.iter().zip(d).map(|(&x, y)| x as f64 * y.to_f64());
            let (dot, abs) = products.fold((0.0, 0.0), |(s, a), p| (s + p, a + p.abs()));
            best = best.max(dot);
            best_mass = best_mass.max(abs);
        }
        total += best;
        mass += best_mass;
    }
    (total, mass)
}

/// Allowed difference between two kernels, or a kernel and the exact value (see the module
/// documentation).
fn tolerance(n_q: usize, dim: usize, mass: f64) -> f64 {
    2.0 * (dim + n_q) as f64 * f32::EPSILON as f64 * mass + f64::from(f32::MIN_POSITIVE)
}

fn packed(rows: &[f16], dim: usize) -> Vec<f16> {
    let mut out = Vec::new();
    pack_doc(rows, dim, &mut out);
    out
}

/// Checks every available kernel on one case against the scalar reference, the exact value and
/// (for the reference) the naive loop.
fn check_case(query: &[f32], rows: &[f16], dim: usize, what: &str) {
    check_kernels(&KernelKind::available(), query, rows, dim, what);
}

/// Checks the kernels `kinds` on one case against the scalar reference, the exact value and (for
/// the reference) the naive loop.
pub(super) fn check_kernels(
    kinds: &[KernelKind],
    query: &[f32],
    rows: &[f16],
    dim: usize,
    what: &str,
) {
    let (n_q, m) = (query.len() / dim, rows.len() / dim);
    let doc = packed(rows, dim);
    let reference = maxsim(KernelKind::Scalar, query, n_q, dim, &doc, m);
    assert_eq!(
        reference.to_bits(),
        naive_f32(query, rows, dim).to_bits(),
        "{what}: scalar kernel differs from the naive loop"
    );
    let (exact, mass) = exact_and_mass(query, rows, dim);
    let tol = tolerance(n_q, dim, mass);
    for &kind in kinds {
        let got = maxsim(kind, query, n_q, dim, &doc, m);
        let (vs_ref, vs_exact) = ((got - reference).abs() as f64, (got as f64 - exact).abs());
        assert!(
            vs_ref <= tol && vs_exact <= tol,
            "{what}: {kind} gives {got}, scalar {reference}, exact {exact}, tolerance {tol}"
        );
    }
}

/// Includes 128 (which the AVX-512 kernel compiles separately) and dimensions that take the
/// AVX-512 kernel two and three passes over its scratch (129, 257).
pub(super) const DIMS: [usize; 10] = [1, 3, 8, 17, 96, 100, 127, 128, 129, 257];
/// Covers every AVX-512 tile height (1–14 for steps of one or two blocks, 1–9 for steps of three)
/// and every AVX2/NEON one (1–6), alone and combined, and queries of one and two AVX-512 groups
/// (64 and 65 tokens).
pub(super) const QUERY_TOKENS: [usize; 20] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 18, 29, 32, 64, 65,
];
/// Covers 1 to 8 blocks (every sequence of AVX-512 steps: 1, 2, 3, 2+2, 3+2, 3+3, 3+2+2,
/// 3+3+2), and tails of 15, 16 and 17 tokens.
pub(super) const DOC_TOKENS: [usize; 16] = [
    1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 64, 65, 80, 81, 112, 113,
];

#[test]
fn packing_places_every_value_and_zero_pads() {
    let mut rng = Rng(1);
    for dim in [1, 3, 17, 128] {
        for m in [0, 1, 15, 16, 17, 33] {
            let rows = rng.halves(m * dim, 0.5, 1.0);
            let doc = packed(&rows, dim);
            assert_eq!(doc.len(), packed_len(m, dim));
            assert_eq!(doc.len() % (BLOCK * dim), 0);
            for t in 0..m.div_ceil(BLOCK) * BLOCK {
                for j in 0..dim {
                    let want = if t < m { rows[t * dim + j] } else { f16::ZERO };
                    // The layout formula, written out once more independently.
                    let index = (t / 16) * 16 * dim + j * 16 + t % 16;
                    assert_eq!(
                        doc[index].to_bits(),
                        want.to_bits(),
                        "m={m} dim={dim} t={t}"
                    );
                }
            }
            let mut unpacked = Vec::new();
            unpack_doc(&doc, m, dim, &mut unpacked);
            assert_eq!(unpacked, rows);
        }
    }
}

#[test]
fn pack_doc_appends() {
    let first = [f16::ONE; 3];
    let second = [f16::NEG_ONE; 6];
    let mut out = Vec::new();
    pack_doc(&first, 3, &mut out);
    pack_doc(&second, 3, &mut out);
    assert_eq!(out.len(), packed_len(1, 3) + packed_len(2, 3));
    assert_eq!(out[packed_len(1, 3) + 1], f16::NEG_ONE);
}

#[test]
fn kernels_match_reference_on_random_shapes() {
    let mut rng = Rng(42);
    for dim in DIMS {
        for n_q in QUERY_TOKENS {
            for m in DOC_TOKENS {
                let query = rng.values(n_q * dim, -1.0, 1.0);
                let rows = rng.halves(m * dim, -1.0, 1.0);
                check_case(
                    &query,
                    &rows,
                    dim,
                    &format!("random n_q={n_q} m={m} dim={dim}"),
                );
            }
        }
    }
}

/// Every dot product is negative, so a kernel that let a zero padding token (dot 0) win the max
/// would be off by far more than the tolerance whenever `m` is not a multiple of 16.
#[test]
fn padding_never_wins_against_negative_maxima() {
    let mut rng = Rng(7);
    for dim in DIMS {
        for n_q in [1, 6, 14, 32] {
            for m in DOC_TOKENS {
                let query = rng.values(n_q * dim, 0.05, 1.0);
                let rows = rng.halves(m * dim, -1.0, -0.05);
                let what = format!("negative n_q={n_q} m={m} dim={dim}");
                check_case(&query, &rows, dim, &what);
                let doc = packed(&rows, dim);
                for kind in KernelKind::available() {
                    assert!(
                        maxsim(kind, &query, n_q, dim, &doc, m) < 0.0,
                        "{what}: {kind}"
                    );
                }
            }
        }
    }
}

/// Padding is ignored whatever it holds: a document whose padding was overwritten with huge
/// values scores the same as the zero-padded one.
#[test]
fn padding_content_is_ignored() {
    let mut rng = Rng(9);
    let (n_q, m, dim) = (7, 21, 19);
    let query = rng.values(n_q * dim, -1.0, 1.0);
    let rows = rng.halves(m * dim, -1.0, 1.0);
    let clean = packed(&rows, dim);
    let mut dirty = clean.clone();
    for t in m..m.div_ceil(BLOCK) * BLOCK {
        for j in 0..dim {
            dirty[packed_index(t, j, dim)] = f16::MAX;
        }
    }
    for kind in KernelKind::available() {
        let a = maxsim(kind, &query, n_q, dim, &clean, m);
        let b = maxsim(kind, &query, n_q, dim, &dirty, m);
        assert_eq!(a.to_bits(), b.to_bits(), "{kind}");
    }
}

/// Large and tiny magnitudes (f16 subnormals, values near the f16 maximum) widen exactly.
#[test]
fn extreme_half_values() {
    let dim = 20;
    let specials = [
        f16::MAX,
        f16::MIN,
        f16::MIN_POSITIVE,
        f16::MIN_POSITIVE_SUBNORMAL,
        -f16::MIN_POSITIVE_SUBNORMAL,
        f16::from_f32(-3.5e-5),
        f16::ZERO,
        f16::NEG_ZERO,
    ];
    let rows: Vec<f16> = (0..17 * dim)
        .map(|i| specials[i % specials.len()])
        .collect();
    let mut rng = Rng(3);
    let query = rng.values(3 * dim, -1.0, 1.0);
    check_case(&query, &rows, dim, "extreme halves");
}

#[test]
fn empty_document_and_empty_query_score_zero() {
    for kind in KernelKind::available() {
        assert_eq!(maxsim(kind, &[1.0, 2.0], 1, 2, &[], 0), 0.0);
        let doc = packed(&[f16::ONE, f16::ONE], 2);
        assert_eq!(maxsim(kind, &[], 0, 2, &doc, 1), 0.0);
    }
}

#[test]
fn detect_picks_an_available_kernel() {
    let kind = detect();
    assert!(kind.is_available());
    assert!(KernelKind::Scalar.is_available());
    assert_eq!(KernelKind::available()[0], KernelKind::Scalar);
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        assert_eq!(kind, KernelKind::Avx512);
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(kind, KernelKind::Neon);
    let names: Vec<&str> = KernelKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, ["scalar", "avx2", "avx512", "neon"]);
}

#[test]
fn unavailable_kernel_panics() {
    let unavailable = KernelKind::ALL.into_iter().find(|k| !k.is_available());
    if let Some(kind) = unavailable {
        let doc = packed(&[f16::ONE], 1);
        let result = std::panic::catch_unwind(|| maxsim(kind, &[1.0], 1, 1, &doc, 1));
        assert!(result.is_err(), "{kind} ran although unavailable");
    }
}

#[test]
#[should_panic(expected = "packed document length")]
fn wrong_packed_length_panics() {
    // One token of dimension 4 packs to 64 values, not 4.
    maxsim(KernelKind::Scalar, &[1.0; 4], 1, 4, &[f16::ONE; 4], 1);
}

#[test]
#[should_panic(expected = "query length")]
fn wrong_query_length_panics() {
    maxsim(KernelKind::Scalar, &[1.0; 5], 1, 4, &[f16::ONE; 64], 1);
}

#[test]
fn tiles_are_balanced_and_cover_the_query() {
    for max in [1, 6, 14] {
        for n in 0..100 {
            let tiles: Vec<(usize, usize)> = tiles(n, max).collect();
            assert_eq!(tiles.len(), n.div_ceil(max));
            let mut next = 0;
            for &(first, rows) in &tiles {
                assert_eq!(first, next);
                assert!((1..=max).contains(&rows));
                next += rows;
            }
            assert_eq!(next, n);
            let sizes = tiles.iter().map(|t| t.1);
            let spread = sizes.clone().max().unwrap_or(0) - sizes.min().unwrap_or(0);
            assert!(spread <= 1, "n={n} max={max}: {tiles:?}");
        }
    }
}
