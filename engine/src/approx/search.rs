//! Query time of the approximate first stage: accumulation over the pruned lists, selection of
//! the best partial scores, exact rescoring through the forward index.
//!
//! This is a hot path written by hand; where it departs from the obvious code, it is for one of
//! these measured reasons (1M-document synthetic corpus, see the README's first-stage section):
//! - **One accumulator array, no stamps.** Partial scores live in a per-thread `f32` array over
//!   all documents that is zero outside a query. A document enters the touched list when its
//!   slot is still zero, counted without a branch, and every touched slot is read back and
//!   zeroed once when candidates are chosen. One random access per posting instead of two
//!   (stamp and score), and no mispredicted branch.
//! - **Integer ranking keys, a sampled threshold.** Candidates are `u64` keys (score bits, then
//!   the inverted document id), which order like (score desc, document asc) for the positive
//!   scores accumulated here and compare as plain integers; a threshold taken from a sample of
//!   the touched documents leaves a few hundred keys to `select_nth_unstable` instead of
//!   ~20,000 (see [`best_partial`]).
//! - **Prefetched rescoring.** A forward row is ~1 KiB scattered in a large file; the offsets
//!   and then the rows of the documents a few places ahead are requested from memory while the
//!   current one is scored, so the misses overlap (without it rescoring 200 documents took
//!   ~60 µs longer), and each dot product keeps several running sums.

use super::build::tier_end;
use super::ApproxIndex;
use super::ApproxQueryParams;
use crate::admit::Admit;
use crate::mmap::prefetch_lines;
use crate::topk::{Scored, TopK};
use roaring::RoaringBitmap;
use std::cell::RefCell;

/// Term ids the forward index can hold (they are `u16`): the size of the dense query.
pub(super) const TERM_IDS: usize = 1 << 16;

/// How many documents ahead of the one being scored their forward rows are requested.
const PREFETCH_AHEAD: usize = 16;

/// Per-thread buffers reused across queries.
#[derive(Default)]
struct Scratch {
    /// The query as a dense vector over every term id; zero outside a query.
    dense: Vec<f32>,
    /// A partial score per document; zero outside a query.
    partial: Vec<f32>,
    /// The documents whose partial score became positive during this query, each once
    /// (sized ahead, only the first `n` entries are meaningful).
    touched: Vec<u32>,
    /// Ranking keys of the touched documents (see [`key`]).
    keys: KeyBuffers,
    /// One bit per document: set while it is scored exactly in this query (cluster expansion
    /// scores each document once); all clear outside a query.
    scored: Vec<u64>,
    /// The documents whose bit is set.
    marked: Vec<u32>,
    /// Set while a query uses `dense` and `partial`. Found set when a query starts, it means an
    /// earlier one unwound half-way, and both are zeroed again before use.
    in_use: bool,
}

impl Scratch {
    /// Readies the buffers for an index of `doc_count` documents.
    fn prepare(&mut self, doc_count: usize) {
        if self.in_use || self.dense.len() != TERM_IDS {
            self.dense = vec![0.0; TERM_IDS];
        }
        if self.in_use || self.partial.len() != doc_count {
            self.partial = vec![0.0; doc_count];
        }
        if self.in_use || self.scored.len() != doc_count.div_ceil(64) {
            self.scored = vec![0; doc_count.div_ceil(64)];
            self.marked.clear();
        }
        self.in_use = true;
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Buffers of [`best_partial`].
#[derive(Default)]
struct KeyBuffers {
    /// Every admitted touched document's key.
    all: Vec<u64>,
    /// Those at or above the sampled threshold.
    above: Vec<u64>,
    /// The sample the threshold is chosen from.
    sample: Vec<u64>,
}

/// A set of documents over a bit array that is all clear outside a query, cleared by visiting
/// only the members.
struct BitSet<'a> {
    bits: &'a mut [u64],
    marked: &'a mut Vec<u32>,
}

impl BitSet<'_> {
    /// Adds `d`; returns whether it was absent.
    fn insert(&mut self, d: u32) -> bool {
        let (word, bit) = (d as usize / 64, 1u64 << (d % 64));
        let absent = self.bits[word] & bit == 0;
        if absent {
            self.bits[word] |= bit;
            self.marked.push(d);
        }
        absent
    }

    /// Empties the set.
    fn clear(&mut self) {
        for d in self.marked.drain(..) {
            self.bits[d as usize / 64] = 0;
        }
    }
}

/// One touched document in [`SAMPLE_STRIDE`] is sampled to choose the selection threshold.
const SAMPLE_STRIDE: usize = 16;

/// Reads back and zeroes the partial score of every touched document and returns the keys of
/// the best `depth` admitted ones (all of them if there are fewer), in no particular order.
///
/// Selecting ~200 of ~20,000 keys directly costs ~1 ns per key; instead a threshold is taken
/// from a sample of the touched documents (in a sample of one in [`SAMPLE_STRIDE`], the key
/// ranked `2 · depth / SAMPLE_STRIDE + 8`, about twice as low as needed), the pass that zeroes
/// the slots also keeps the keys at or above it (a few hundred), and the selection runs on
/// those. When fewer than `depth` pass (an unlucky sample), it runs on all the admitted keys.
fn best_partial<'k>(
    touched: &[u32],
    partial: &mut [f32],
    admits: impl Fn(u32) -> bool,
    depth: usize,
    buffers: &'k mut KeyBuffers,
) -> &'k [u64] {
    let KeyBuffers { all, above, sample } = buffers;
    let mut threshold = u64::MAX;
    if touched.len() > depth.saturating_mul(8) {
        // Only admitted documents enter the sample, but `want` counts every sampled one: the
        // threshold then estimates the depth-th best admitted key, whatever the filter refuses.
        sample.clear();
        let mut sampled = 0;
        for &d in touched.iter().step_by(SAMPLE_STRIDE) {
            sampled += 1;
            if admits(d) {
                sample.push(key(partial[d as usize], d));
            }
        }
        let want = 2 * (sampled * depth).div_ceil(touched.len()) + 8;
        if want < sample.len() {
            let cut = sample.len() - want;
            sample.select_nth_unstable(cut);
            threshold = sample[cut];
        }
    }
    all.clear();
    above.clear();
    for &d in touched {
        // Every slot is zeroed, refused documents' too.
        let k = key(std::mem::take(&mut partial[d as usize]), d);
        if admits(d) {
            all.push(k);
            if k >= threshold {
                above.push(k);
            }
        }
    }
    let pool = if above.len() >= depth {
        &mut above[..]
    } else {
        &mut all[..]
    };
    if pool.len() > depth {
        let cut = pool.len() - depth;
        pool.select_nth_unstable(cut);
        &pool[cut..]
    } else {
        pool
    }
}

/// The ranking key of a positive partial score: greater keys are better, higher score first,
/// then the lower document (positive floats order like their bit patterns).
fn key(score: f32, doc: u32) -> u64 {
    (u64::from(score.to_bits()) << 32) | u64::from(!doc)
}

/// The document of a [`key`].
fn doc_of(key: u64) -> u32 {
    !(key as u32)
}

/// Σ `dense[t] · w` over a forward row, with eight running sums: one chain of dependent
/// additions over ~185 terms would cost ~4 cycles per term.
fn dot(dense: &[f32], terms: &[u16], weights: &[f32]) -> f32 {
    // Length TERM_IDS is what makes `usize::from(t)` always in bounds (no per-term check).
    let dense = &dense[..TERM_IDS];
    let mut sums = [0f32; 8];
    let mut term_chunks = terms.chunks_exact(8);
    let mut weight_chunks = weights.chunks_exact(8);
    for (t, w) in (&mut term_chunks).zip(&mut weight_chunks) {
        for lane in 0..8 {
            sums[lane] += dense[usize::from(t[lane])] * w[lane];
        }
    }
    let tail: f32 = term_chunks
        .remainder()
        .iter()
        .zip(weight_chunks.remainder())
        .map(|(&t, &w)| dense[usize::from(t)] * w)
        .sum();
    sums.iter().sum::<f32>() + tail
}

impl ApproxIndex {
    /// The approximate top `kappa` admitted documents for `query` (distinct term ids below the
    /// vocabulary size, finite weights ≥ 0), best first (ties by document order), with their
    /// exact sparse scores. Documents `admit` refuses never become candidates: they are dropped
    /// before the best partial scores are chosen, so they take no rescoring slot.
    pub fn search(
        &self,
        query: &[(u32, f32)],
        kappa: usize,
        params: &ApproxQueryParams,
        admit: &Admit,
    ) -> Vec<Scored> {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            scratch.prepare(self.doc_count);
            let found = self.search_with(&mut scratch, query, kappa, params, admit);
            scratch.in_use = false;
            found
        })
    }

    /// The exact top `kappa` of `docs` for `query`: every document of the set scored through the
    /// forward index (the plan for a small admitted set, cheaper than walking lists that hold
    /// few admitted documents). Documents sharing no term with the query (score 0) are not
    /// returned.
    pub fn search_within(
        &self,
        query: &[(u32, f32)],
        kappa: usize,
        docs: &RoaringBitmap,
    ) -> Vec<Scored> {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            scratch.prepare(self.doc_count);
            let dense = &mut scratch.dense;
            for &(term, weight) in query {
                dense[term as usize] = weight;
            }
            let mut top = TopK::new(kappa);
            let limit = self.doc_count as u32;
            self.score_each(
                dense,
                docs.iter().take_while(|&d| d < limit),
                |id, score| {
                    if score > 0.0 {
                        top.push(Scored { id, score });
                    }
                },
            );
            for &(term, _) in query {
                dense[term as usize] = 0.0;
            }
            scratch.in_use = false;
            top.into_sorted_vec()
        })
    }

    fn search_with(
        &self,
        scratch: &mut Scratch,
        query: &[(u32, f32)],
        kappa: usize,
        params: &ApproxQueryParams,
        admit: &Admit,
    ) -> Vec<Scored> {
        let Scratch {
            dense,
            partial,
            touched,
            keys,
            scored,
            marked,
            ..
        } = scratch;

        // 1. Partial scores over the pruned lists of the heaviest query terms.
        let mut walked: Vec<(u32, f32)> = query.iter().copied().filter(|t| t.1 > 0.0).collect();
        walked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        walked.truncate(params.query_cut);
        // Whole tiers of each list's heaviest postings; every kept one without tiers.
        let depth = match (self.tiers, params.depth) {
            (true, d) if d > 0 => tier_end(d),
            _ => usize::MAX,
        };
        let touched = self.accumulate(&walked, depth, partial, touched);

        // 2. The best partial scores of admitted documents; every touched slot is zeroed.
        let depth = params.rescore.max(kappa);
        let best = match admit {
            Admit::All => best_partial(touched, partial, |_| true, depth, keys),
            _ => best_partial(touched, partial, |d| admit.admits(d), depth, keys),
        };

        // 3. Those documents rescored exactly against the whole query.
        for &(term, weight) in query {
            dense[term as usize] = weight;
        }
        // With expansion, the best `expand` documents are kept too: their clusters are the
        // ones expanded.
        let expanding = self.clusters.is_some() && params.expand > 0;
        let mut top = TopK::new(if expanding {
            kappa.max(params.expand)
        } else {
            kappa
        });
        self.score_each(dense, best.iter().map(|&k| doc_of(k)), |id, score| {
            top.push(Scored { id, score });
        });

        // 4. Cluster expansion: the other documents of the best documents' clusters.
        if let (Some(clusters), true) = (&self.clusters, params.expand > 0) {
            let mut set = BitSet {
                bits: scored,
                marked,
            };
            best.iter().for_each(|&k| {
                set.insert(doc_of(k));
            });
            // Sorted, for a binary search: each round scans the whole top (up to `expand`
            // entries), so a linear `contains` would make the rounds cubic in `expand`.
            let mut expanded: Vec<u32> = Vec::with_capacity(params.expand.min(1024));
            let mut fresh: Vec<u32> = Vec::new();
            for _ in 0..params.expand {
                let next = top
                    .iter()
                    .filter(|s| expanded.binary_search(&clusters.of(s.id)).is_err())
                    .max();
                let Some(next) = next else { break };
                let cluster = clusters.of(next.id);
                if let Err(at) = expanded.binary_search(&cluster) {
                    expanded.insert(at, cluster);
                }
                fresh.clear();
                fresh.extend(
                    clusters
                        .members(cluster)
                        .iter()
                        .copied()
                        .filter(|&d| admit.admits(d) && set.insert(d)),
                );
                self.score_each(dense, fresh.iter().copied(), |id, score| {
                    // A member sharing no term with the query is no candidate.
                    if score > 0.0 {
                        top.push(Scored { id, score });
                    }
                });
            }
            set.clear();
        }
        for &(term, _) in query {
            dense[term as usize] = 0.0;
        }
        let mut found = top.into_sorted_vec();
        found.truncate(kappa);
        found
    }

    /// Adds `q · w` to `partial[d]` for every posting `(d, w)` of the first `depth` postings of
    /// the walked terms' pruned lists and returns the documents touched, each once. Each
    /// addition is at least the smallest positive float, so a touched slot is never zero again
    /// and nothing is listed twice.
    fn accumulate<'t>(
        &self,
        walked: &[(u32, f32)],
        depth: usize,
        partial: &mut [f32],
        touched: &'t mut Vec<u32>,
    ) -> &'t [u32] {
        let offsets = self.impact_offsets.as_slice();
        let all_docs = self.impact_docs.as_slice();
        let all_weights = self.impact_weights.as_slice();
        let list = |term: u32| {
            let start = offsets[term as usize] as usize;
            let end = offsets[term as usize + 1] as usize;
            start..end.min(start.saturating_add(depth))
        };
        let postings: usize = walked.iter().map(|&(term, _)| list(term).len()).sum();
        if touched.len() < postings {
            touched.resize(postings, 0);
        }
        let mut n = 0;
        for &(term, q) in walked {
            let range = list(term);
            for (&doc, &w) in all_docs[range.clone()].iter().zip(&all_weights[range]) {
                let slot = &mut partial[doc as usize];
                // Written always, kept only if the slot was still zero: no branch to mispredict.
                touched[n] = doc;
                n += usize::from(*slot == 0.0);
                *slot += (q * w).max(f32::MIN_POSITIVE);
            }
        }
        &touched[..n]
    }

    /// Calls `f(doc, score)` with the exact score of each of `docs` against the dense query,
    /// requesting the forward rows of the documents [`PREFETCH_AHEAD`] places ahead from memory
    /// while it scores the current one.
    fn score_each(
        &self,
        dense: &[f32],
        docs: impl Iterator<Item = u32> + Clone,
        mut f: impl FnMut(u32, f32),
    ) {
        let offsets = self.forward_offsets.as_slice();
        let terms = self.forward_terms.as_slice();
        let weights = self.forward_weights.as_slice();
        let row = |doc: u32| offsets[doc as usize] as usize..offsets[doc as usize + 1] as usize;
        // Two stages ahead: the offsets of the documents 2 · PREFETCH_AHEAD places on (one
        // line each, they are scattered too), then the rows of those PREFETCH_AHEAD places on,
        // whose offsets are in the cache by then.
        let prefetch_offsets = |doc: u32| prefetch_lines(&offsets[doc as usize..doc as usize + 2]);
        let prefetch_row = |doc: u32| {
            let range = row(doc);
            prefetch_lines(&terms[range.clone()]);
            prefetch_lines(&weights[range]);
        };
        let mut far = docs.clone();
        far.by_ref()
            .take(2 * PREFETCH_AHEAD)
            .for_each(prefetch_offsets);
        let mut near = docs.clone();
        near.by_ref().take(PREFETCH_AHEAD).for_each(prefetch_row);
        for doc in docs {
            if let Some(ahead) = far.next() {
                prefetch_offsets(ahead);
            }
            if let Some(ahead) = near.next() {
                prefetch_row(ahead);
            }
            let range = row(doc);
            f(doc, dot(dense, &terms[range.clone()], &weights[range]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// The best `depth` keys of `scores` (document → partial score, 0 = untouched) among the
    /// admitted documents, by a full sort.
    fn best_by_sorting(scores: &[f32], admits: impl Fn(u32) -> bool, depth: usize) -> Vec<u64> {
        let mut keys: Vec<u64> = (0..scores.len() as u32)
            .filter(|&d| scores[d as usize] > 0.0 && admits(d))
            .map(|d| key(scores[d as usize], d))
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.truncate(depth);
        keys.sort_unstable();
        keys
    }

    fn check_best_partial(seed: u64, docs: usize, touched_docs: usize, depth: usize, filter: u32) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut partial = vec![0f32; docs];
        let mut touched = Vec::new();
        for _ in 0..touched_docs {
            let d = rng.random_range(0..docs as u32);
            if partial[d as usize] == 0.0 {
                touched.push(d);
            }
            // Few distinct values: ties between documents are frequent.
            partial[d as usize] += rng.random_range(1..8u32) as f32 * 0.25;
        }
        let scores = partial.clone();
        // `filter` 0 admits everything; otherwise documents whose id is a multiple of it.
        let admits = |d: u32| filter == 0 || d.is_multiple_of(filter);
        let expected = best_by_sorting(&scores, admits, depth);
        let mut buffers = KeyBuffers::default();
        let mut found = best_partial(&touched, &mut partial, admits, depth, &mut buffers).to_vec();
        found.sort_unstable();
        assert_eq!(
            found, expected,
            "seed {seed}, depth {depth}, filter {filter}"
        );
        assert!(partial.iter().all(|&p| p == 0.0), "a touched slot was left");
    }

    #[test]
    fn best_partial_equals_a_full_sort_and_zeroes_every_slot() {
        for seed in 0..20 {
            for depth in [1, 10, 100, 1_000, 50_000] {
                for filter in [0, 2, 7] {
                    check_best_partial(seed, 40_000, 20_000, depth, filter);
                }
            }
        }
        // Fewer touched documents than 8 × depth: no sample, a direct selection.
        check_best_partial(1, 1_000, 300, 100, 0);
        check_best_partial(1, 1_000, 0, 100, 0);
    }

    #[test]
    fn best_partial_falls_back_to_all_keys_after_an_unlucky_sample() {
        // Every sampled key (one in SAMPLE_STRIDE, from the first) is far above the others, so
        // the threshold lets fewer than `depth` keys through: the selection must then run on
        // all of them.
        let docs = 20_000u32;
        let mut partial: Vec<f32> = (0..docs)
            .map(|d| {
                if (d as usize).is_multiple_of(SAMPLE_STRIDE) {
                    1_000.0 + d as f32
                } else {
                    1.0
                }
            })
            .collect();
        let scores = partial.clone();
        let touched: Vec<u32> = (0..docs).collect();
        let mut buffers = KeyBuffers::default();
        let mut found = best_partial(&touched, &mut partial, |_| true, 100, &mut buffers).to_vec();
        found.sort_unstable();
        assert_eq!(found, best_by_sorting(&scores, |_| true, 100));
    }

    #[test]
    fn best_partial_under_a_filter_that_refuses_the_best() {
        // The filter admits only the lowest-scoring documents: the threshold must come from
        // them, not from the refused documents above them.
        let docs = 20_000u32;
        let mut partial: Vec<f32> = (0..docs).map(|d| 1.0 + d as f32).collect();
        let touched: Vec<u32> = (0..docs).collect();
        let mut buffers = KeyBuffers::default();
        let mut found: Vec<u32> =
            best_partial(&touched, &mut partial, |d| d < 500, 100, &mut buffers)
                .iter()
                .map(|&k| doc_of(k))
                .collect();
        found.sort_unstable();
        assert_eq!(found, (400..500).collect::<Vec<u32>>());
    }

    #[test]
    fn keys_order_by_score_then_lower_document() {
        assert!(key(2.0, 9) > key(1.5, 0));
        assert!(key(1.0, 3) > key(1.0, 4));
        assert!(key(f32::MIN_POSITIVE, u32::MAX) > 0);
        assert_eq!(doc_of(key(0.5, 12_345)), 12_345);
    }

    #[test]
    fn dot_equals_a_plain_sum_at_every_length() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut dense = vec![0f32; TERM_IDS];
        for slot in dense.iter_mut().step_by(3) {
            *slot = rng.random_range(0.0..2.0f32);
        }
        for len in 0..50 {
            let terms: Vec<u16> = (0..len).map(|_| rng.random_range(0..=u16::MAX)).collect();
            let weights: Vec<f32> = (0..len).map(|_| rng.random_range(0.01..3.0f32)).collect();
            let plain: f64 = terms
                .iter()
                .zip(&weights)
                .map(|(&t, &w)| f64::from(dense[usize::from(t)]) * f64::from(w))
                .sum();
            let got = dot(&dense, &terms, &weights);
            // Sums of at most 50 positive products: relative error well under 1e-5.
            assert!(
                (f64::from(got) - plain).abs() <= 1e-5 * plain.max(1e-30),
                "length {len}: {got} vs {plain}"
            );
        }
    }
}
