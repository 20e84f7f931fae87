//! Grouping documents into small clusters of similar ones, for the approximate first stage's
//! cluster expansion (see [`super`]).
//!
//! **Recursive spherical k-means.** A group larger than the target size is split into
//! `min(16, ⌈n / size⌉)` parts and each part split again until it fits:
//! - *seeds*: the first uniformly at random, each next one the candidate (of 8 per seed, drawn
//!   at random) least similar to the seeds so far (farthest-first), so that two near-duplicate
//!   seeds do not split one family;
//! - [`ROUNDS`] rounds of assignment (each document to the centroid of greatest dot product)
//!   and update (a centroid is the sum of its documents, cut to its [`CENTROID_TERMS`] heaviest
//!   terms and normalised; an empty part keeps its centroid);
//! - a split that leaves every document in one part is replaced by cutting the group in
//!   document order, so the recursion always ends.
//!
//! Every draw comes from a generator seeded by the build seed and the group's first document
//! and size, and groups are split in parallel but collected in order: the clusters depend only
//! on the documents and the seed, not on the thread count.

use super::build::SparseMatrices;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// Parts a group is split into at most.
const BRANCH: usize = 16;
/// Terms a centroid keeps (its heaviest).
const CENTROID_TERMS: usize = 64;
/// Assignment and update rounds per split.
const ROUNDS: usize = 3;
/// Random candidates per seed in the farthest-first choice.
const SEED_CANDIDATES: usize = 8;
/// A slot of [`CentroidTable::slot`] holding no term.
const NO_SLOT: u32 = u32::MAX;

/// A partition of the documents into clusters.
#[derive(Debug, Default, PartialEq)]
pub struct Clusters {
    /// Cluster `c`'s documents are `docs[offsets[c]..offsets[c + 1]]` (`clusters + 1` entries).
    pub offsets: Vec<u64>,
    /// Every document once, grouped by cluster, ascending within one.
    pub docs: Vec<u32>,
    /// The cluster of each document.
    pub of: Vec<u32>,
}

/// Partitions the documents of `m` into clusters of at most `size` documents (`size` ≥ 1).
pub fn cluster(m: &SparseMatrices, vocab_size: usize, size: usize, seed: u64) -> Clusters {
    let doc_count = m.doc_offsets.len() - 1;
    let size = size.max(1);
    let all: Vec<u32> = (0..doc_count as u32).collect();
    let groups = split(m, vocab_size, size, seed, all);
    let mut out = Clusters {
        offsets: Vec::with_capacity(groups.len() + 1),
        docs: Vec::with_capacity(doc_count),
        of: vec![0; doc_count],
    };
    out.offsets.push(0);
    for (c, mut group) in groups.into_iter().filter(|g| !g.is_empty()).enumerate() {
        group.sort_unstable();
        for &d in &group {
            out.of[d as usize] = c as u32;
        }
        out.docs.extend_from_slice(&group);
        out.offsets.push(out.docs.len() as u64);
    }
    out
}

/// The clusters of `group`, in a deterministic order.
fn split(
    m: &SparseMatrices,
    vocab_size: usize,
    size: usize,
    seed: u64,
    group: Vec<u32>,
) -> Vec<Vec<u32>> {
    if group.len() <= size {
        return vec![group];
    }
    let parts = BRANCH.min(group.len().div_ceil(size));
    let mut parts = kmeans(m, vocab_size, seed, &group, parts);
    if parts.iter().filter(|p| !p.is_empty()).count() < 2 {
        // No split: cut in document order (the group is in document order).
        parts = group.chunks(size).map(<[u32]>::to_vec).collect();
    }
    parts
        .into_par_iter()
        .filter(|p| !p.is_empty())
        .map(|p| split(m, vocab_size, size, seed, p))
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

/// A document's terms and weights.
fn row<'a>(m: &SparseMatrices<'a>, doc: u32) -> (&'a [u32], &'a [f32]) {
    let range = m.doc_offsets[doc as usize] as usize..m.doc_offsets[doc as usize + 1] as usize;
    (&m.doc_terms[range.clone()], &m.doc_weights[range])
}

/// Sparse centroids laid out for scoring a document against all of them at once: each term of
/// any centroid has a slot holding its weight in every centroid.
struct CentroidTable {
    /// Slot of each term id ([`NO_SLOT`] when no centroid has it).
    slot: Vec<u32>,
    /// `BRANCH` weights per slot.
    weights: Vec<[f32; BRANCH]>,
}

impl CentroidTable {
    fn new(vocab_size: usize, centroids: &[Vec<(u32, f32)>]) -> CentroidTable {
        let mut table = CentroidTable {
            slot: vec![NO_SLOT; vocab_size],
            weights: Vec::new(),
        };
        for (c, centroid) in centroids.iter().enumerate() {
            for &(t, w) in centroid {
                let slot = &mut table.slot[t as usize];
                if *slot == NO_SLOT {
                    *slot = table.weights.len() as u32;
                    table.weights.push([0.0; BRANCH]);
                }
                table.weights[*slot as usize][c] = w;
            }
        }
        table
    }

    /// The dot product of a document with every centroid.
    fn scores(&self, terms: &[u32], weights: &[f32]) -> [f32; BRANCH] {
        let mut sums = [0f32; BRANCH];
        for (&t, &w) in terms.iter().zip(weights) {
            let slot = self.slot[t as usize];
            if slot != NO_SLOT {
                for (s, c) in sums.iter_mut().zip(&self.weights[slot as usize]) {
                    *s += w * c;
                }
            }
        }
        sums
    }

    /// The centroid of greatest dot product with a document among the first `k` (ties: lower).
    fn nearest(&self, terms: &[u32], weights: &[f32], k: usize) -> usize {
        let scores = self.scores(terms, weights);
        let mut best = 0;
        for c in 1..k {
            if scores[c] > scores[best] {
                best = c;
            }
        }
        best
    }
}

/// A document as a centroid: its heaviest terms, normalised.
fn centroid_of(terms: &[u32], weights: &[f32]) -> Vec<(u32, f32)> {
    truncate_normalise(terms.iter().copied().zip(weights.iter().copied()).collect())
}

/// Keeps the [`CENTROID_TERMS`] heaviest entries (ties: lower term) and scales them to unit norm.
fn truncate_normalise(mut v: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
    if v.len() > CENTROID_TERMS {
        v.select_nth_unstable_by(CENTROID_TERMS - 1, |a, b| {
            b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
        });
        v.truncate(CENTROID_TERMS);
    }
    let norm = v.iter().map(|e| e.1 * e.1).sum::<f32>().sqrt();
    if norm > 0.0 {
        for e in &mut v {
            e.1 /= norm;
        }
    }
    v
}

/// Splits `group` into `k` parts (some possibly empty) by spherical k-means.
fn kmeans(
    m: &SparseMatrices,
    vocab_size: usize,
    seed: u64,
    group: &[u32],
    k: usize,
) -> Vec<Vec<u32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(
        seed ^ (u64::from(group[0]) << 32)
            ^ (group.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    // Farthest-first seeds.
    let first = group[rng.random_range(0..group.len())];
    let (t, w) = row(m, first);
    let mut centroids = vec![centroid_of(t, w)];
    while centroids.len() < k {
        let table = CentroidTable::new(vocab_size, &centroids);
        let mut best: Option<(f32, u32)> = None;
        for _ in 0..SEED_CANDIDATES {
            let d = group[rng.random_range(0..group.len())];
            let (t, w) = row(m, d);
            let norm = w
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            let scores = table.scores(t, w);
            let closest = scores[..centroids.len()]
                .iter()
                .fold(f32::MIN, |a, &b| a.max(b))
                / norm;
            if best.is_none_or(|(s, _)| closest < s) {
                best = Some((closest, d));
            }
        }
        let Some((_, d)) = best else { break };
        let (t, w) = row(m, d);
        centroids.push(centroid_of(t, w));
    }

    let mut assignment = vec![0u8; group.len()];
    let mut sums = vec![0f32; vocab_size];
    let mut touched: Vec<u32> = Vec::new();
    for round in 0..ROUNDS {
        let table = CentroidTable::new(vocab_size, &centroids);
        assignment
            .par_iter_mut()
            .zip(group.par_iter())
            .for_each(|(a, &d)| {
                let (t, w) = row(m, d);
                *a = table.nearest(t, w, k) as u8;
            });
        if round + 1 == ROUNDS {
            break;
        }
        for (c, centroid) in centroids.iter_mut().enumerate() {
            for (&d, _) in group
                .iter()
                .zip(&assignment)
                .filter(|(_, &a)| a as usize == c)
            {
                let (t, w) = row(m, d);
                for (&t, &w) in t.iter().zip(w) {
                    let s = &mut sums[t as usize];
                    if *s == 0.0 {
                        touched.push(t);
                    }
                    *s += w;
                }
            }
            if touched.is_empty() {
                continue;
            }
            let v: Vec<(u32, f32)> = touched
                .iter()
                .map(|&t| (t, std::mem::take(&mut sums[t as usize])))
                .collect();
            touched.clear();
            *centroid = truncate_normalise(v);
        }
    }
    let mut parts = vec![Vec::new(); k];
    for (&d, &a) in group.iter().zip(&assignment) {
        parts[a as usize].push(d);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small corpus of `families` groups of near-identical documents over disjoint terms.
    fn families(families: usize, per: usize) -> (Vec<u64>, Vec<u32>, Vec<f32>) {
        let (mut offsets, mut terms, mut weights) = (vec![0u64], Vec::new(), Vec::new());
        for f in 0..families {
            for i in 0..per {
                for j in 0..5u32 {
                    terms.push(f as u32 * 5 + j);
                    weights.push(1.0 + 0.01 * (i as f32 + j as f32));
                }
                offsets.push(terms.len() as u64);
            }
        }
        (offsets, terms, weights)
    }

    fn matrices<'a>(o: &'a [u64], t: &'a [u32], w: &'a [f32]) -> SparseMatrices<'a> {
        SparseMatrices {
            doc_offsets: o,
            doc_terms: t,
            doc_weights: w,
            post_offsets: &[],
            post_docs: &[],
            post_weights: &[],
        }
    }

    #[test]
    fn clusters_partition_the_documents_within_the_size() {
        let (o, t, w) = families(40, 25);
        let m = matrices(&o, &t, &w);
        for size in [1, 7, 25, 64, 5_000] {
            let c = cluster(&m, 200, size, 3);
            let mut seen = c.docs.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..1_000).collect::<Vec<u32>>(), "size {size}");
            for k in 0..c.offsets.len() - 1 {
                let members = &c.docs[c.offsets[k] as usize..c.offsets[k + 1] as usize];
                assert!(!members.is_empty() && members.len() <= size, "size {size}");
                assert!(members.windows(2).all(|p| p[0] < p[1]));
                assert!(members.iter().all(|&d| c.of[d as usize] == k as u32));
            }
        }
        assert_eq!(cluster(&m, 200, 25, 3), cluster(&m, 200, 25, 3));
    }

    #[test]
    fn families_of_disjoint_terms_are_not_mixed() {
        // 40 families of 25 documents sharing no term across families, clusters of 25: the
        // farthest-first seeds land in distinct families, so no cluster mixes two.
        let (o, t, w) = families(40, 25);
        let m = matrices(&o, &t, &w);
        let c = cluster(&m, 200, 25, 11);
        let mut mixed = 0;
        for k in 0..c.offsets.len() - 1 {
            let members = &c.docs[c.offsets[k] as usize..c.offsets[k + 1] as usize];
            let family = members[0] / 25;
            mixed += members.iter().filter(|&&d| d / 25 != family).count();
        }
        assert_eq!(mixed, 0);
    }

    #[test]
    fn empty_and_identical_documents_still_end() {
        // Identical documents never split by similarity: cut in document order.
        let o: Vec<u64> = (0..=100).map(|d| d * 2).collect();
        let t: Vec<u32> = (0..100).flat_map(|_| [1, 2]).collect();
        let w = vec![1.0; 200];
        let m = matrices(&o, &t, &w);
        let c = cluster(&m, 3, 10, 0);
        assert_eq!(c.offsets.len(), 11);
        let empty = matrices(&[0], &[], &[]);
        assert_eq!(cluster(&empty, 3, 10, 0).docs, Vec::<u32>::new());
    }
}
