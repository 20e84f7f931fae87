//! k-means over short vectors (one subspace's slices of the training tokens): k-means++ seeding,
//! then Lloyd iterations, deterministic for a given seed; and the centroid sets that training and
//! encoding search.

use crate::kernels::{self, KernelKind};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A set of centroids of one width, laid out for nearest-centroid search.
#[derive(Debug, Clone)]
pub struct Centroids {
    /// `k × width` values, row-major (centroid after centroid).
    rows: Vec<f32>,
    /// The same centroids in the packed layout of [`kernels::nearest`](mod@kernels::nearest).
    packed: Vec<f32>,
    /// `‖c‖² / 2` per packed centroid (+∞ for the padding).
    half_norms: Vec<f32>,
    /// The search kernel: the fastest this CPU supports (all return the same index).
    kernel: KernelKind,
}

impl Centroids {
    /// Centroids given as `rows` (`k × width` values, row-major, `k = rows.len() / width`).
    ///
    /// # Panics
    ///
    /// If `width` is 0 or `rows.len()` is not a multiple of it.
    pub fn from_rows(rows: Vec<f32>, width: usize) -> Centroids {
        let (mut packed, mut half_norms) = (Vec::new(), Vec::new());
        kernels::pack_centroids(&rows, width, &mut packed, &mut half_norms);
        Centroids {
            rows,
            packed,
            half_norms,
            kernel: kernels::detect(),
        }
    }

    /// All centroids, row-major.
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// The centroid nearest to `x` in Euclidean distance, ties going to the lowest index; 0
    /// when there are no centroids or `x` is not finite. The same on every CPU (see
    /// [`kernels::nearest`](mod@kernels::nearest)).
    ///
    /// # Panics
    ///
    /// If `x.len()` is not the width.
    pub fn nearest(&self, x: &[f32]) -> usize {
        kernels::nearest(self.kernel, x, &self.packed, &self.half_norms)
    }
}

/// Squared Euclidean distance.
fn distance2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Clusters `points` (`n × width` values, row-major) into `k` centroids: k-means++ seeding
/// (drawn from a Xoshiro256++ generator seeded with `seed`, on at most 16 · `k` evenly spaced
/// points), then up to `iterations` Lloyd iterations over all points, stopping early once no
/// point changes cluster. A cluster left empty takes the point farthest from its own centroid.
/// The result depends only on the arguments (the nearest-centroid search gives the same answer
/// on every CPU).
///
/// With fewer distinct points than `k`, the surplus centroids repeat earlier ones (the nearest
/// search then never picks them); without points every centroid is zero.
///
/// # Panics
///
/// If `width` is 0 or `points.len()` is not a multiple of it.
pub fn train(points: &[f32], width: usize, k: usize, iterations: usize, seed: u64) -> Centroids {
    assert!(
        width > 0 && points.len().is_multiple_of(width),
        "k-means: {} values are not points of width {width}",
        points.len()
    );
    if points.is_empty() {
        return Centroids::from_rows(vec![0.0; k * width], width);
    }
    let mut rows = seed_plus_plus(points, width, k, seed);
    let n = points.len() / width;
    let mut assignment = vec![usize::MAX; n];
    for _ in 0..iterations {
        let centroids = Centroids::from_rows(rows, width);
        let mut changed = false;
        for (a, point) in assignment.iter_mut().zip(points.chunks_exact(width)) {
            let nearest = centroids.nearest(point);
            changed |= *a != nearest;
            *a = nearest;
        }
        rows = centroids.rows;
        if !changed {
            break;
        }
        update(points, width, &assignment, &mut rows);
    }
    Centroids::from_rows(rows, width)
}

/// Most points k-means++ looks at per centroid: seeding is `O(points · k)`, so it runs on an
/// evenly spaced subset of at most this many points per centroid (Lloyd then uses all).
const SEEDING_POINTS_PER_CENTROID: usize = 16;

/// k-means++ on an evenly spaced subset of the points: the first centroid is a uniformly drawn
/// point, each next one a point drawn with probability proportional to its squared distance to
/// the nearest centroid so far.
fn seed_plus_plus(points: &[f32], width: usize, k: usize, seed: u64) -> Vec<f32> {
    let all = points.len() / width;
    let n = all.min(SEEDING_POINTS_PER_CENTROID.saturating_mul(k).max(1));
    let subset: Vec<&[f32]> = (0..n)
        .map(|i| {
            let p = i * all / n;
            &points[p * width..(p + 1) * width]
        })
        .collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut rows = Vec::with_capacity(k * width);
    let mut nearest2 = vec![f32::INFINITY; n];
    let mut chosen = rng.random_range(0..n);
    for _ in 0..k {
        let centroid = subset[chosen];
        rows.extend_from_slice(centroid);
        for (d, x) in nearest2.iter_mut().zip(&subset) {
            *d = d.min(distance2(x, centroid));
        }
        let total: f64 = nearest2.iter().map(|&d| f64::from(d)).sum();
        if total > 0.0 && total.is_finite() {
            let mut target = rng.random::<f64>() * total;
            // The last point with a positive distance, should rounding leave `target` unspent.
            chosen = nearest2.iter().rposition(|&d| d > 0.0).unwrap_or(0);
            for (i, &d) in nearest2.iter().enumerate() {
                target -= f64::from(d);
                if target < 0.0 && d > 0.0 {
                    chosen = i;
                    break;
                }
            }
        }
        // Otherwise every point is a centroid already: repeat the last one.
    }
    rows
}

/// One Lloyd update: every centroid becomes the mean of its points (summed in f64, in point
/// order); then each empty cluster takes the point farthest from its (updated) centroid, each
/// such point serving one cluster.
fn update(points: &[f32], width: usize, assignment: &[usize], rows: &mut [f32]) {
    let k = rows.len() / width;
    let mut sums = vec![0.0f64; k * width];
    let mut counts = vec![0usize; k];
    for (&c, point) in assignment.iter().zip(points.chunks_exact(width)) {
        counts[c] += 1;
        for (s, &x) in sums[c * width..(c + 1) * width].iter_mut().zip(point) {
            *s += f64::from(x);
        }
    }
    for ((row, sum), &count) in rows
        .chunks_exact_mut(width)
        .zip(sums.chunks_exact(width))
        .zip(&counts)
    {
        if count > 0 {
            for (r, &s) in row.iter_mut().zip(sum) {
                *r = (s / count as f64) as f32;
            }
        }
    }
    let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return;
    }
    let mut spread: Vec<f32> = assignment
        .iter()
        .zip(points.chunks_exact(width))
        .map(|(&c, x)| distance2(x, &rows[c * width..(c + 1) * width]))
        .collect();
    for c in empty {
        let mut far = 0;
        for (i, &d) in spread.iter().enumerate() {
            if d > spread[far] {
                far = i;
            }
        }
        spread[far] = f32::NEG_INFINITY;
        rows[c * width..(c + 1) * width].copy_from_slice(&points[far * width..(far + 1) * width]);
    }
}
