//! Tests of the PQ codec: k-means, the codebook's stored form, encoding error, decoding into the
//! packed layout, and MaxSim over codes with every kernel available on the running CPU.
//!
//! MaxSim over codes must equal MaxSim over the decoded rows `steps[j] · value · scale`: the
//! int8 kernels compute `(Σ_j fl(q_j · steps[j]) · value) · scale`, so the int8 kernel tests'
//! bound applies with one more rounding per product (each within `(dim + 2 + n_q) · u · mass` of
//! the exact value, `mass` = Σ over query tokens of max over document tokens of
//! Σ_j |q_j · d_j|); the tests allow twice `(dim + 2 + n_q) · ε · mass` against the exact f64
//! value.

use super::codebook::split;
use super::kmeans::{self, Centroids};
use super::*;
use crate::kernels::unpack_doc_int8;

/// A small deterministic generator (SplitMix64), enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.symmetric()).collect()
    }

    /// `n` points of `dim` values near `prototypes` random prototypes (uniform in [-1, 1)),
    /// each value perturbed by at most `noise`.
    fn clustered(&mut self, n: usize, dim: usize, prototypes: usize, noise: f32) -> Vec<f32> {
        let centres = self.values(prototypes * dim);
        let mut points = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let p = (self.next_u64() % prototypes as u64) as usize;
            for j in 0..dim {
                points.push(centres[p * dim + j] + noise * self.symmetric());
            }
        }
        points
    }
}

fn params(subspaces: usize) -> TrainParams {
    TrainParams {
        subspaces,
        sample: usize::MAX,
        iterations: 10,
        seed: 7,
    }
}

/// A document encoded: its codes and scales.
struct Encoded {
    codes: Vec<u8>,
    scales: Vec<f16>,
}

impl Encoded {
    fn doc<'a>(&'a self, codebook: &'a Codebook) -> PqDoc<'a> {
        PqDoc {
            codebook,
            codes: &self.codes,
            scales: &self.scales,
        }
    }
}

/// Encodes `rows` and decodes them back: the encoding and the decoded rows (row-major, in f64:
/// `steps[j] · value · scale` exactly).
fn round_trip(codebook: &Codebook, rows: &[f32]) -> (Encoded, Vec<f64>) {
    let dim = codebook.dim();
    let mut codes = Vec::new();
    let scales: Vec<f16> = rows
        .chunks_exact(dim)
        .map(|row| codebook.encode(row, &mut codes))
        .collect();
    let m = rows.len() / dim;
    let (mut values, mut packed_scales, mut unit) = (Vec::new(), Vec::new(), Vec::new());
    codebook.decode_packed(&codes, &scales, m, &mut values, &mut packed_scales);
    // With unit scales, unpacking gives the table values exactly.
    unpack_doc_int8(&values, &vec![1.0; packed_scales.len()], m, dim, &mut unit);
    let decoded = unit
        .chunks_exact(dim)
        .zip(&scales)
        .flat_map(|(row, scale)| {
            row.iter()
                .zip(codebook.steps())
                .map(move |(&v, &step)| f64::from(v) * f64::from(step) * scale.to_f64())
        })
        .collect();
    (Encoded { codes, scales }, decoded)
}

/// Mean squared error per value between `rows` and `decoded`.
fn mse(rows: &[f32], decoded: &[f64]) -> f64 {
    let sum: f64 = rows
        .iter()
        .zip(decoded)
        .map(|(&x, y)| (f64::from(x) - y).powi(2))
        .sum();
    sum / rows.len() as f64
}

#[test]
fn nearest_is_the_brute_force_nearest_with_ties_to_the_lowest_index() {
    let mut rng = Rng(1);
    for (k, width) in [(1, 1), (5, 3), (8, 4), (13, 5), (256, 4), (256, 1)] {
        let rows = rng.values(k * width);
        let centroids = Centroids::from_rows(rows.clone(), width);
        assert_eq!(centroids.rows(), &rows[..]);
        for _ in 0..200 {
            let x = rng.values(width);
            let distance = |c: usize| -> f64 {
                (0..width)
                    .map(|d| (f64::from(x[d]) - f64::from(rows[c * width + d])).powi(2))
                    .sum()
            };
            let best = (0..k).map(distance).fold(f64::INFINITY, f64::min);
            let got = centroids.nearest(&x);
            // The scan's f32 scores may swap near-ties; the winner is nearest up to rounding.
            assert!(distance(got) <= best + 1e-5, "k {k} width {width}");
        }
    }
    let duplicates = Centroids::from_rows(vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0], 2);
    assert_eq!(duplicates.nearest(&[0.9, 0.1]), 0);
    assert_eq!(duplicates.nearest(&[f32::NAN, 0.0]), 0);
}

#[test]
fn kmeans_is_deterministic_by_seed() {
    let mut rng = Rng(2);
    let points = rng.values(3000 * 4);
    let a = kmeans::train(&points, 4, 256, 8, 11);
    let b = kmeans::train(&points, 4, 256, 8, 11);
    let c = kmeans::train(&points, 4, 256, 8, 12);
    assert_eq!(a.rows(), b.rows());
    assert_ne!(a.rows(), c.rows());
    let sample = rng.values(2000 * 130);
    let first = Codebook::train(&sample, 130, &params(32));
    let second = Codebook::train(&sample, 130, &params(32));
    assert_eq!(first.centroids(), second.centroids());
}

#[test]
fn kmeans_finds_separated_clusters_and_copes_with_few_points() {
    let mut rng = Rng(3);
    let points = rng.clustered(4000, 3, 20, 1e-3);
    let centroids = kmeans::train(&points, 3, 20, 20, 1);
    let error: f32 = points
        .chunks_exact(3)
        .map(|p| {
            let c = centroids.nearest(p);
            let row = &centroids.rows()[c * 3..c * 3 + 3];
            p.iter()
                .zip(row)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max);
    assert!(error < 2e-3, "{error}");

    // Fewer points than centroids: every point is a centroid; the rest repeat.
    let few = [0.5, -0.5, 0.25, 0.5, -0.5, 0.25];
    let centroids = kmeans::train(&few, 2, 256, 10, 1);
    assert_eq!(centroids.rows().len(), 256 * 2);
    for p in few.chunks_exact(2) {
        let c = centroids.nearest(p);
        assert_eq!(&centroids.rows()[c * 2..c * 2 + 2], p);
    }
    let none = kmeans::train(&[], 3, 256, 10, 1);
    assert!(none.rows().iter().all(|&v| v == 0.0) && none.rows().len() == 256 * 3);
}

#[test]
fn split_is_contiguous_and_nearly_even() {
    assert_eq!(split(128, 32), (0..=32).map(|s| 4 * s).collect::<Vec<_>>());
    assert_eq!(split(7, 7), (0..=7).collect::<Vec<_>>());
    assert_eq!(split(1, 1), vec![0, 1]);
    let bounds = split(130, 32);
    assert_eq!((bounds[0], bounds[32]), (0, 130));
    assert!(bounds.windows(2).all(|w| (4..=5).contains(&(w[1] - w[0]))));
}

#[test]
fn encode_decode_error_is_small() {
    let mut rng = Rng(4);
    // Data made of at most 256 prototypes per subspace is reproduced to the noise (and f16).
    let rows = rng.clustered(5000, 128, 200, 1e-3);
    let codebook = Codebook::train(&rows, 128, &params(32));
    assert_eq!(codebook.subspaces(), 32);
    let (encoded, decoded) = round_trip(&codebook, &rows);
    assert_eq!(encoded.codes.len(), 5000 * 32);
    // The noise, plus half a table step (at most 1/254 of a dimension's largest value).
    let worst = rows
        .iter()
        .zip(&decoded)
        .map(|(&x, y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 8e-3, "{worst}");

    // Uniform data has no structure to find: 256 centroids for 4 dimensions (2 bits per value)
    // still leave a small fraction of the variance (1/3 for uniform [-1, 1)).
    let rows = rng.values(20_000 * 16);
    let codebook = Codebook::train(&rows, 16, &params(4));
    let (_, decoded) = round_trip(&codebook, &rows);
    let relative = mse(&rows, &decoded) / (1.0 / 3.0);
    assert!(relative < 0.12, "relative error {relative}");
}

#[test]
fn stored_form_round_trips_and_is_validated() {
    let mut rng = Rng(5);
    let rows = rng.values(600 * 7);
    let codebook = Codebook::train(&rows, 7, &params(32));
    assert_eq!(codebook.bounds(), (0..=7).collect::<Vec<u32>>());
    let centroids = codebook.centroids();
    assert_eq!(centroids.len(), CENTROIDS * 7);
    let back = Codebook::from_parts(7, &codebook.bounds(), &centroids).unwrap();
    assert_eq!(back.centroids(), centroids);
    let (encoded, decoded) = round_trip(&codebook, &rows);
    let (encoded_back, decoded_back) = round_trip(&back, &rows);
    assert_eq!(encoded.codes, encoded_back.codes);
    assert_eq!(encoded.scales, encoded_back.scales);
    assert_eq!(decoded, decoded_back);

    let err = |bounds: &[u32], values: &[f32]| Codebook::from_parts(7, bounds, values).unwrap_err();
    assert!(err(&[0, 3, 3, 7], &centroids).contains("do not split"));
    assert!(err(&[0, 7, 3], &centroids).contains("do not split"));
    assert!(err(&[0, 6], &centroids).contains("do not split"));
    assert!(err(&[0], &centroids).contains("do not split"));
    assert!(err(&[0, 7], &centroids[1..]).contains("1791 centroid values"));
    let mut bad = centroids.clone();
    bad[9] = f32::NAN;
    assert!(err(&[0, 7], &bad).contains("centroid value 9"));
}

/// The exact MaxSim over decoded rows (f64) and its `mass`.
fn exact_and_mass(query: &[f32], rows: &[f64], dim: usize) -> (f64, f64) {
    let (mut total, mut mass) = (0.0f64, 0.0f64);
    for q in query.chunks_exact(dim) {
        let (mut best, mut best_mass) = (f64::NEG_INFINITY, 0.0f64);
        for d in rows.chunks_exact(dim) {
            let products = q.iter().zip(d).map(|(&x, y)| f64::from(x) * y);
            let (dot, abs) = products.fold((0.0, 0.0), |(s, a), p| (s + p, a + p.abs()));
            best = best.max(dot);
            best_mass = best_mass.max(abs);
        }
        total += best;
        mass += best_mass;
    }
    (total, mass)
}

#[test]
fn maxsim_over_codes_is_maxsim_over_the_decoded_vectors() {
    let mut rng = Rng(6);
    for dim in [1, 2, 7, 16, 128, 130] {
        let training = rng.values(1500 * dim);
        let codebook = Codebook::train(&training, dim, &params(32));
        assert_eq!(codebook.subspaces(), dim.min(32));
        for m in [1, 2, 15, 16, 17, 33, 80, 161] {
            let rows = rng.values(m * dim);
            let (encoded, decoded) = round_trip(&codebook, &rows);
            assert_eq!(encoded.scales.len(), m);
            for n_q in [1, 5, 32] {
                let query = rng.values(n_q * dim);
                let (exact, mass) = exact_and_mass(&query, &decoded, dim);
                let bound = 2.0 * (dim + 2 + n_q) as f64 * f64::from(f32::EPSILON) * mass;
                for kind in KernelKind::available() {
                    let got = maxsim(kind, &query, n_q, dim, encoded.doc(&codebook));
                    assert!(
                        (f64::from(got) - exact).abs() <= bound,
                        "{kind} dim {dim} m {m} n_q {n_q}: {got} vs {exact}"
                    );
                }
            }
        }
        // No tokens, or no query tokens: 0.
        let empty = Encoded {
            codes: Vec::new(),
            scales: Vec::new(),
        };
        let query = rng.values(dim);
        assert_eq!(
            maxsim(KernelKind::Scalar, &query, 1, dim, empty.doc(&codebook)),
            0.0
        );
        let (one, _) = round_trip(&codebook, &rng.values(dim));
        assert_eq!(
            maxsim(KernelKind::Scalar, &[], 0, dim, one.doc(&codebook)),
            0.0
        );
    }
}

#[test]
fn the_scale_fits_the_decoded_vector_to_the_token() {
    let mut rng = Rng(9);
    let dim = 12;
    let codebook = Codebook::train(&rng.values(2000 * dim), dim, &params(4));
    let rows = rng.values(50 * dim);
    let (encoded, decoded) = round_trip(&codebook, &rows);
    for ((row, d), scale) in rows
        .chunks_exact(dim)
        .zip(decoded.chunks_exact(dim))
        .zip(&encoded.scales)
    {
        // The residual of the least-squares fit is orthogonal to the decoded vector (up to the
        // f16 rounding of the scale).
        let residual: f64 = row
            .iter()
            .zip(d)
            .map(|(&x, y)| (f64::from(x) - y) * y)
            .sum();
        let norm2: f64 = d.iter().map(|y| y * y).sum();
        assert!(residual.abs() <= 1e-3 * norm2, "{residual} vs {norm2}");
        assert!(scale.to_f32() > 0.5 && scale.to_f32() < 2.0);
    }
    // A zero token decodes to (nearly) zero whatever its scale.
    let mut codes = Vec::new();
    let scale = codebook.encode(&vec![0.0; dim], &mut codes);
    assert!(scale.is_finite());
}

#[test]
fn decoding_reuses_the_buffers_across_lengths() {
    let mut rng = Rng(8);
    let dim = 9;
    let codebook = Codebook::train(&rng.values(800 * dim), dim, &params(32));
    let query = rng.values(3 * dim);
    let (long, _) = round_trip(&codebook, &rng.values(40 * dim));
    let (short, _) = round_trip(&codebook, &rng.values(3 * dim));
    let expected = maxsim(KernelKind::Scalar, &query, 3, dim, short.doc(&codebook));
    maxsim(KernelKind::Scalar, &query, 3, dim, long.doc(&codebook));
    let after = maxsim(KernelKind::Scalar, &query, 3, dim, short.doc(&codebook));
    assert_eq!(expected, after);
    let (mut values, mut scales) = (Vec::new(), Vec::new());
    codebook.decode_packed(&short.codes, &short.scales, 3, &mut values, &mut scales);
    let scaled: Vec<f32> = query
        .chunks_exact(dim)
        .flat_map(|q| q.iter().zip(codebook.steps()).map(|(a, b)| a * b))
        .collect();
    assert_eq!(
        after,
        crate::kernels::maxsim_int8(KernelKind::Scalar, &scaled, 3, dim, &values, &scales, 3)
    );
}
