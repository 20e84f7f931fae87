//! The approximate first stage: static impact pruning, term-at-a-time accumulation over the
//! pruned lists of the heaviest query terms, and exact rescoring against a forward index.
//!
//! - **Static pruning** ([`build`]): each term keeps only its `n_postings` heaviest postings,
//!   in document order with their weights. Popular terms, whose long lists hold mostly small
//!   weights, shrink the most; a term's rare heavy postings, which decide rankings, stay.
//! - **Query time** ([`ApproxIndex::search`]): only the `query_cut` heaviest query terms are
//!   walked. Each document of their pruned lists accumulates `q · w`, a *partial* score: since
//!   every weight is positive and only postings are left out, it never exceeds the document's
//!   exact score. The `rescore` documents with the best partial scores (at least `kappa`) are
//!   then scored **exactly** against the whole query through the forward index, and the best
//!   `kappa` of them are returned with those exact scores, so returned scores are real sparse
//!   scores (CP(α) depends on them).
//!
//! Seismic (Bruch, Nardini, Rulli, Venturini, SIGIR 2024) prunes the same way but groups each
//! list into blocks with summaries, to skip blocks; an earlier version of this module did so too
//! and lost to plain accumulation over the pruned lists, which costs about a nanosecond per
//! posting, while a summary bound costs about as much per block entry and misses documents.
//! With `query_cut` ≥ the query's terms, `n_postings` ≥ the longest list and `rescore` ≥ the
//! documents matched, the result is the exact search's (up to float summation order).

pub mod build;

use crate::error::{Error, Result};
use crate::filter::Admit;
use crate::format::array::ArrayFile;
use crate::topk::{Scored, TopK};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::Path;

/// Build-time parameters of the approximate first stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxBuildParams {
    /// Postings kept per term (its heaviest), ≥ 1.
    pub n_postings: usize,
}

impl Default for ApproxBuildParams {
    fn default() -> Self {
        ApproxBuildParams { n_postings: 1000 }
    }
}

impl ApproxBuildParams {
    /// Checks the parameters, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.n_postings == 0 {
            return Err(Error::bad_input("--n-postings", "must be >= 1"));
        }
        Ok(())
    }
}

/// Everything chosen at build time about the approximate first stage.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ApproxSettings {
    /// How it is built.
    pub build: ApproxBuildParams,
    /// The knobs queries use unless they set their own.
    pub query_defaults: ApproxQueryParams,
}

/// Query-time knobs of the approximate first stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxQueryParams {
    /// Query terms walked (the heaviest), ≥ 1.
    pub query_cut: usize,
    /// Documents rescored exactly (those with the best partial scores), ≥ 1; at least `kappa`
    /// are rescored whatever this says.
    pub rescore: usize,
}

impl Default for ApproxQueryParams {
    fn default() -> Self {
        ApproxQueryParams {
            query_cut: 32,
            rescore: 100,
        }
    }
}

impl ApproxQueryParams {
    /// Checks the knobs, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.query_cut == 0 {
            return Err(Error::invalid("query_cut", "must be >= 1"));
        }
        if self.rescore == 0 {
            return Err(Error::invalid("rescore", "must be >= 1"));
        }
        Ok(())
    }
}

/// Names of the approximate first stage's files.
pub mod files {
    /// First forward-index entry of each document (`u64`, doc_count + 1).
    pub const FORWARD_OFFSETS: &str = "forward.offsets";
    /// Term ids of each document's vector (`u16`), ascending within a document.
    pub const FORWARD_TERMS: &str = "forward.terms";
    /// Weights parallel to `forward.terms` (`f32`).
    pub const FORWARD_WEIGHTS: &str = "forward.weights";
    /// First pruned posting of each term (`u64`, vocab_size + 1).
    pub const IMPACT_OFFSETS: &str = "impact.offsets";
    /// Documents of the pruned lists (`u32`), ascending within a term.
    pub const IMPACT_DOCS: &str = "impact.docs";
    /// Weights parallel to `impact.docs` (`f32`).
    pub const IMPACT_WEIGHTS: &str = "impact.weights";

    /// Every file of the approximate first stage.
    pub const ALL: [&str; 6] = [
        FORWARD_OFFSETS,
        FORWARD_TERMS,
        FORWARD_WEIGHTS,
        IMPACT_OFFSETS,
        IMPACT_DOCS,
        IMPACT_WEIGHTS,
    ];
}

/// The memory-mapped approximate first stage.
pub struct ApproxIndex {
    forward_offsets: ArrayFile<u64>,
    forward_terms: ArrayFile<u16>,
    forward_weights: ArrayFile<f32>,
    impact_offsets: ArrayFile<u64>,
    impact_docs: ArrayFile<u32>,
    impact_weights: ArrayFile<f32>,
    vocab_size: usize,
    doc_count: usize,
}

/// Per-thread buffers reused across queries: the query as a dense vector, a partial score per
/// document, valid when the document's stamp equals the query's generation, and the documents
/// touched by this query.
#[derive(Default)]
struct Scratch {
    dense: Vec<f32>,
    partial: Vec<f32>,
    stamps: Vec<u32>,
    generation: u32,
    touched: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn check_offsets(path: &Path, offsets: &[u64], len: usize, total: usize, what: &str) -> Result<()> {
    let ok = offsets.len() == len + 1
        && offsets.first() == Some(&0)
        && offsets.last() == Some(&(total as u64))
        && offsets.windows(2).all(|w| w[0] <= w[1]);
    if ok {
        Ok(())
    } else {
        Err(Error::corrupt(
            path,
            format!(
                "{what}: expected {} ascending offsets from 0 to {total}",
                len + 1
            ),
        ))
    }
}

impl ApproxIndex {
    /// Opens the approximate first stage of `dir` and checks every invariant the search relies
    /// on (offsets in range and ascending, ids below their bounds, weights finite and > 0).
    pub fn open(dir: &Path, vocab_size: usize, doc_count: usize) -> Result<ApproxIndex> {
        fn open<T: crate::format::array::Element>(dir: &Path, name: &str) -> Result<ArrayFile<T>> {
            ArrayFile::open(&dir.join(name), name)
        }
        let index = ApproxIndex {
            forward_offsets: open(dir, files::FORWARD_OFFSETS)?,
            forward_terms: open(dir, files::FORWARD_TERMS)?,
            forward_weights: open(dir, files::FORWARD_WEIGHTS)?,
            impact_offsets: open(dir, files::IMPACT_OFFSETS)?,
            impact_docs: open(dir, files::IMPACT_DOCS)?,
            impact_weights: open(dir, files::IMPACT_WEIGHTS)?,
            vocab_size,
            doc_count,
        };
        let path = |name: &str| dir.join(name);
        let forward = index.forward_terms.len();
        check_offsets(
            &path(files::FORWARD_OFFSETS),
            index.forward_offsets.as_slice(),
            doc_count,
            forward,
            "forward index",
        )?;
        if index.forward_weights.len() != forward {
            return Err(Error::corrupt(
                path(files::FORWARD_WEIGHTS),
                "length differs from forward.terms",
            ));
        }
        let pruned = index.impact_docs.len();
        check_offsets(
            &path(files::IMPACT_OFFSETS),
            index.impact_offsets.as_slice(),
            vocab_size,
            pruned,
            "pruned lists",
        )?;
        if index.impact_weights.len() != pruned {
            return Err(Error::corrupt(
                path(files::IMPACT_WEIGHTS),
                "length differs from impact.docs",
            ));
        }
        if index
            .forward_terms
            .as_slice()
            .iter()
            .any(|&t| t as usize >= vocab_size)
        {
            return Err(Error::corrupt(
                path(files::FORWARD_TERMS),
                "a term id is past the vocabulary",
            ));
        }
        if index
            .impact_docs
            .as_slice()
            .iter()
            .any(|&d| d as usize >= doc_count)
        {
            return Err(Error::corrupt(
                path(files::IMPACT_DOCS),
                "a document id is past the end",
            ));
        }
        let positive = |w: &[f32]| w.iter().all(|w| w.is_finite() && *w > 0.0);
        if !positive(index.forward_weights.as_slice()) || !positive(index.impact_weights.as_slice())
        {
            return Err(Error::corrupt(
                path(files::IMPACT_WEIGHTS),
                "a weight is not finite and > 0",
            ));
        }
        Ok(index)
    }

    /// Postings kept over all terms.
    pub fn pruned_postings(&self) -> usize {
        self.impact_docs.len()
    }

    fn range(offsets: &[u64], i: usize) -> std::ops::Range<usize> {
        offsets[i] as usize..offsets[i + 1] as usize
    }

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
            self.search_with(&mut scratch, query, kappa, params, admit)
        })
    }

    /// The exact top `kappa` of `docs` for `query`: every document of the set scored through the
    /// forward index (the plan for a small admitted set, cheaper than walking blocks that hold
    /// few admitted documents). Documents sharing no term with the query are not returned.
    pub fn search_within(
        &self,
        query: &[(u32, f32)],
        kappa: usize,
        docs: &RoaringBitmap,
    ) -> Vec<Scored> {
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            if scratch.dense.len() != self.vocab_size {
                scratch.dense = vec![0.0; self.vocab_size];
            }
            for &(term, weight) in query {
                scratch.dense[term as usize] = weight;
            }
            let mut top = TopK::new(kappa);
            for doc in docs.iter().filter(|&d| (d as usize) < self.doc_count) {
                if let Some(score) = self.score_matched(&scratch.dense, doc) {
                    top.push(Scored { id: doc, score });
                }
            }
            for &(term, _) in query {
                scratch.dense[term as usize] = 0.0;
            }
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
        if scratch.dense.len() != self.vocab_size {
            scratch.dense = vec![0.0; self.vocab_size];
        }
        if scratch.stamps.len() != self.doc_count {
            scratch.partial = vec![0.0; self.doc_count];
            scratch.stamps = vec![0; self.doc_count];
            scratch.generation = 0;
        }
        scratch.generation = scratch.generation.wrapping_add(1);
        if scratch.generation == 0 {
            scratch.stamps.fill(0);
            scratch.generation = 1;
        }
        let Scratch {
            dense,
            partial,
            stamps,
            generation,
            touched,
        } = scratch;
        let generation = *generation;
        touched.clear();

        // 1. Partial scores over the pruned lists of the heaviest query terms.
        let mut walked: Vec<(u32, f32)> = query.iter().copied().filter(|t| t.1 > 0.0).collect();
        walked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        walked.truncate(params.query_cut);
        let offsets = self.impact_offsets.as_slice();
        for &(term, q_weight) in &walked {
            let range = Self::range(offsets, term as usize);
            let docs = &self.impact_docs.as_slice()[range.clone()];
            let weights = &self.impact_weights.as_slice()[range];
            for (&doc, &weight) in docs.iter().zip(weights) {
                let d = doc as usize;
                if stamps[d] != generation {
                    stamps[d] = generation;
                    partial[d] = 0.0;
                    touched.push(doc);
                }
                partial[d] += q_weight * weight;
            }
        }

        // 2. The best partial scores, rescored exactly against the whole query.
        let mut candidates: Vec<(f32, u32)> = touched
            .iter()
            .filter(|&&d| admit.admits(d))
            .map(|&d| (partial[d as usize], d))
            .collect();
        let depth = params.rescore.max(kappa);
        if candidates.len() > depth {
            candidates
                .select_nth_unstable_by(depth - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            candidates.truncate(depth);
        }
        for &(term, weight) in query {
            dense[term as usize] = weight;
        }
        let mut top = TopK::new(kappa);
        for &(_, doc) in &candidates {
            top.push(Scored {
                id: doc,
                score: self.score(dense, doc),
            });
        }
        for &(term, _) in query {
            dense[term as usize] = 0.0;
        }
        top.into_sorted_vec()
    }

    /// The exact sparse score of `doc` against the dense query, or `None` when they share no
    /// term of positive weight.
    fn score_matched(&self, dense: &[f32], doc: u32) -> Option<f32> {
        let range = Self::range(self.forward_offsets.as_slice(), doc as usize);
        let terms = &self.forward_terms.as_slice()[range.clone()];
        let weights = &self.forward_weights.as_slice()[range];
        let mut matched = false;
        let mut score = 0f32;
        for (&t, &w) in terms.iter().zip(weights) {
            let q = dense[t as usize];
            matched |= q > 0.0;
            score += q * w;
        }
        matched.then_some(score)
    }

    /// The exact sparse score of `doc` against the dense query.
    fn score(&self, dense: &[f32], doc: u32) -> f32 {
        let range = Self::range(self.forward_offsets.as_slice(), doc as usize);
        let terms = &self.forward_terms.as_slice()[range.clone()];
        let weights = &self.forward_weights.as_slice()[range];
        terms
            .iter()
            .zip(weights)
            .map(|(&t, &w)| dense[t as usize] * w)
            .sum()
    }
}
