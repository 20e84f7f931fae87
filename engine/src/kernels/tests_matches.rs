//! Tests of the kernels that also report each query token's best document token
//! ([`maxsim_matches`], [`maxsim_int8_matches`]), for every kernel available on the running CPU,
//! against dot products recomputed here in f64 from the unpacked rows.
//!
//! For each case: the total equals the plain kernel's bit for bit and the sum of the matches'
//! scores in query order; each match names a real token; its score is its recomputed dot product
//! to within the rounding of one dot product (`2 · (dim + 1) · ε · Σ|q_j · d_j|`); and no other
//! token beats it by more than that. A document whose rows repeat (exact ties) must report the
//! first of the tied tokens with every kernel.

use super::tests::{Rng, DIMS, DOC_TOKENS, QUERY_TOKENS};
use super::*;

/// Exact dot product of `q` and `d` and its mass Σ|q_j · d_j| (for the tolerance).
fn dot_and_mass(q: &[f32], d: &[f32]) -> (f64, f64) {
    q.iter().zip(d).fold((0.0, 0.0), |(dot, mass), (&a, &b)| {
        let p = f64::from(a) * f64::from(b);
        (dot + p, mass + p.abs())
    })
}

fn tolerance(dim: usize, mass: f64) -> f64 {
    2.0 * (dim + 1) as f64 * f64::from(f32::EPSILON) * mass + f64::from(f32::MIN_POSITIVE)
}

/// Checks `matches` and `total` of kernel `kind` against the decoded rows (`m × dim`, row-major).
fn check_matches(
    kind: KernelKind,
    query: &[f32],
    rows: &[f32],
    dim: usize,
    (total, plain): (f32, f32),
    matches: &[TokenMax],
    what: &str,
) {
    let m = rows.len() / dim;
    assert_eq!(
        total.to_bits(),
        plain.to_bits(),
        "{what}: {kind} total differs from maxsim"
    );
    let sum = matches.iter().fold(0.0f32, |s, t| s + t.score);
    assert_eq!(
        sum.to_bits(),
        total.to_bits(),
        "{what}: {kind} matches do not sum to the total"
    );
    for (i, (q, found)) in query.chunks_exact(dim).zip(matches).enumerate() {
        let token = found.token as usize;
        assert!(
            token < m,
            "{what}: {kind} query token {i} matched padding {token} (m={m})"
        );
        let (dot, mass) = dot_and_mass(q, &rows[token * dim..][..dim]);
        let tol = tolerance(dim, mass);
        assert!(
            (f64::from(found.score) - dot).abs() <= tol,
            "{what}: {kind} query token {i}: listed {} for token {token}, recomputed {dot}",
            found.score
        );
        for (t, d) in rows.chunks_exact(dim).enumerate() {
            let (other, other_mass) = dot_and_mass(q, d);
            assert!(
                other <= dot + tol + tolerance(dim, other_mass),
                "{what}: {kind} query token {i}: token {t} scores {other} > token {token}'s {dot}"
            );
        }
    }
}

fn check_f16(query: &[f32], halves: &[f16], dim: usize, what: &str) -> Vec<Vec<TokenMax>> {
    let (n_q, m) = (query.len() / dim, halves.len() / dim);
    let mut doc = Vec::new();
    pack_doc(halves, dim, &mut doc);
    let rows: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
    let mut all = Vec::new();
    for kind in KernelKind::available() {
        let mut matches = vec![
            TokenMax {
                token: u32::MAX,
                score: f32::NAN
            };
            n_q
        ];
        let total = maxsim_matches(kind, query, n_q, dim, &doc, m, &mut matches);
        let plain = maxsim(kind, query, n_q, dim, &doc, m);
        check_matches(kind, query, &rows, dim, (total, plain), &matches, what);
        all.push(matches);
    }
    all
}

fn check_int8(query: &[f32], rows: &[f32], dim: usize, what: &str) -> Vec<Vec<TokenMax>> {
    let (n_q, m) = (query.len() / dim, rows.len() / dim);
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    pack_doc_int8(rows, dim, &mut values, &mut scales);
    let mut decoded = Vec::new();
    for t in 0..m {
        decoded.extend((0..dim).map(|j| f32::from(values[packed_index(t, j, dim)]) * scales[t]));
    }
    let mut all = Vec::new();
    for kind in KernelKind::available() {
        let mut matches = vec![
            TokenMax {
                token: u32::MAX,
                score: f32::NAN
            };
            n_q
        ];
        let total = maxsim_int8_matches(kind, query, n_q, dim, &values, &scales, m, &mut matches);
        let plain = maxsim_int8(kind, query, n_q, dim, &values, &scales, m);
        check_matches(kind, query, &decoded, dim, (total, plain), &matches, what);
        all.push(matches);
    }
    all
}

#[test]
fn matches_are_argmaxes_on_random_shapes() {
    let mut rng = Rng(7);
    for dim in DIMS {
        for n_q in QUERY_TOKENS {
            for m in DOC_TOKENS {
                let query = rng.values(n_q * dim, -1.0, 1.0);
                let halves = rng.halves(m * dim, -1.0, 1.0);
                let what = format!("n_q={n_q} m={m} dim={dim}");
                check_f16(&query, &halves, dim, &format!("f16 {what}"));
                let rows: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
                check_int8(&query, &rows, dim, &format!("int8 {what}"));
            }
        }
    }
}

/// The scalar kernel's match is the first maximum of a naive loop in document order.
#[test]
fn scalar_matches_are_the_first_maximum() {
    let mut rng = Rng(11);
    for (dim, n_q, m) in [(1, 3, 40), (17, 5, 33), (96, 32, 113)] {
        let query = rng.values(n_q * dim, -1.0, 1.0);
        let halves = rng.halves(m * dim, -1.0, 1.0);
        let mut doc = Vec::new();
        pack_doc(&halves, dim, &mut doc);
        let mut matches = vec![
            TokenMax {
                token: 0,
                score: 0.0
            };
            n_q
        ];
        maxsim_matches(KernelKind::Scalar, &query, n_q, dim, &doc, m, &mut matches);
        for (q, found) in query.chunks_exact(dim).zip(&matches) {
            let dots: Vec<f32> = halves
                .chunks_exact(dim)
                .map(|d| q.iter().zip(d).fold(0.0f32, |s, (a, b)| s + a * b.to_f32()))
                .collect();
            let best = dots.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let first = dots.iter().position(|&x| x == best).unwrap();
            assert_eq!((found.token as usize, found.score), (first, best));
        }
    }
}

/// A document of `copies` repeats of a few distinct rows: every tied maximum is computed by the
/// same operations, so every kernel must report the first copy, whichever block or lane it is in.
#[test]
fn exact_ties_report_the_first_token() {
    let mut rng = Rng(13);
    for dim in [3, 16, 96, 129] {
        for (distinct, copies) in [(1, 40), (3, 17), (5, 7)] {
            let base = rng.halves(distinct * dim, -1.0, 1.0);
            let halves: Vec<f16> = (0..copies).flat_map(|_| base.iter().copied()).collect();
            let n_q = 9;
            let query = rng.values(n_q * dim, -1.0, 1.0);
            let what = format!("ties dim={dim} distinct={distinct} copies={copies}");
            let rows: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
            for all in [
                check_f16(&query, &halves, dim, &format!("f16 {what}")),
                check_int8(&query, &rows, dim, &format!("int8 {what}")),
            ] {
                for (kind, matches) in KernelKind::available().into_iter().zip(all) {
                    for (i, found) in matches.iter().enumerate() {
                        assert!(
                            (found.token as usize) < distinct,
                            "{what}: {kind} query token {i} reported copy {} not the first",
                            found.token
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "one match per query token")]
fn wrong_match_count_panics() {
    let doc = vec![f16::ZERO; packed_len(1, 4)];
    let mut matches = vec![
        TokenMax {
            token: 0,
            score: 0.0
        };
        1
    ];
    maxsim_matches(KernelKind::Scalar, &[0.0; 8], 2, 4, &doc, 1, &mut matches);
}
