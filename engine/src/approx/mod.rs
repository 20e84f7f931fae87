//! The approximate first stage: pruned, clustered posting lists with block summaries, scored
//! exactly against a forward index.
//!
//! The ideas are Seismic's (Bruch, Nardini, Rulli, Venturini, SIGIR 2024), written anew:
//!
//! - **Static pruning**: each term keeps only its `n_postings` heaviest postings.
//! - **Blocks**: a term's kept postings are clustered into blocks of similar documents
//!   ([`build`]); each block stores its documents and a *summary*: the coordinate-wise maximum of
//!   its documents' vectors, cut to the components holding `summary_energy` of its L1 mass and
//!   quantized to `u8` with a per-block scale (rounded up, so an unpruned summary bounds every
//!   document of the block from above).
//! - **Summaries transposed**: a term's block summaries are stored as a small inverted index
//!   (component term → blocks, values), so a block's bound ⟨query, summary⟩ costs work only for
//!   the summary components the query has, not for every component.
//! - **Query time** ([`ApproxIndex::search`]): only the `query_cut` heaviest query terms are
//!   walked. The bounds of all their blocks are computed first (over *all* query terms); blocks
//!   are then visited by decreasing bound, and the walk stops at the first block whose
//!   `bound × heap_factor` is below the current `kappa`-th score. Every document of a visited
//!   block not seen yet is scored **exactly** against the full query through the forward
//!   index, so returned scores are real sparse scores.
//!
//! `heap_factor` ∈ (0, 1]: 1 skips only blocks whose (approximate) bound cannot enter; smaller
//! values skip more.

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
    /// Postings kept per term (its heaviest).
    pub n_postings: usize,
    /// Blocks per kept posting list, as a fraction of its length (at least one block).
    pub centroid_fraction: f32,
    /// Share of a block summary's L1 mass kept (its heaviest components), in (0, 1].
    pub summary_energy: f32,
    /// Most components kept in one block summary (the heaviest), ≥ 1.
    pub max_summary_terms: usize,
}

impl Default for ApproxBuildParams {
    fn default() -> Self {
        ApproxBuildParams {
            n_postings: 4000,
            centroid_fraction: 0.1,
            summary_energy: 0.4,
            max_summary_terms: 64,
        }
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
    /// Block skipping aggressiveness, in (0, 1].
    pub heap_factor: f32,
}

impl Default for ApproxQueryParams {
    fn default() -> Self {
        ApproxQueryParams {
            query_cut: 10,
            heap_factor: 0.9,
        }
    }
}

impl ApproxQueryParams {
    /// Checks the knobs, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        if self.query_cut == 0 {
            return Err(Error::invalid("query_cut", "must be >= 1"));
        }
        if !(self.heap_factor > 0.0 && self.heap_factor <= 1.0) {
            return Err(Error::invalid(
                "heap_factor",
                format!("{} is not in (0, 1]", self.heap_factor),
            ));
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
    /// First block of each term (`u64`, vocab_size + 1); a term's blocks are contiguous.
    pub const TERM_BLOCKS: &str = "blocks.by_term";
    /// First document of each block (`u64`, blocks + 1).
    pub const BLOCK_DOC_OFFSETS: &str = "blocks.offsets";
    /// Documents of all blocks (`u32`), ascending within a block.
    pub const BLOCK_DOCS: &str = "blocks.docs";
    /// First summary key of each term (`u64`, vocab_size + 1).
    pub const SUMMARY_TERM_OFFSETS: &str = "sum.term_offsets";
    /// Summary keys (`u16`): for each term, the component terms present in its blocks'
    /// summaries, ascending.
    pub const SUMMARY_KEYS: &str = "sum.keys";
    /// First entry of each key (`u64`, keys + 1).
    pub const SUMMARY_KEY_OFFSETS: &str = "sum.key_offsets";
    /// Entries (`u16`): the block, numbered within its term, whose summary has the key.
    pub const SUMMARY_BLOCKS: &str = "sum.blocks";
    /// Entries (`u8`): the quantized value; value × the block's scale ≥ the true maximum.
    pub const SUMMARY_VALUES: &str = "sum.values";
    /// Per-block dequantization scale (`f32`, blocks).
    pub const SUMMARY_SCALES: &str = "sum.scales";
    /// Per-block bound on the components the summary dropped (`u8`, blocks, same scale).
    pub const SUMMARY_FLOORS: &str = "sum.floors";

    /// Every file of the approximate first stage.
    pub const ALL: [&str; 13] = [
        FORWARD_OFFSETS,
        FORWARD_TERMS,
        FORWARD_WEIGHTS,
        TERM_BLOCKS,
        BLOCK_DOC_OFFSETS,
        BLOCK_DOCS,
        SUMMARY_TERM_OFFSETS,
        SUMMARY_KEYS,
        SUMMARY_KEY_OFFSETS,
        SUMMARY_BLOCKS,
        SUMMARY_VALUES,
        SUMMARY_SCALES,
        SUMMARY_FLOORS,
    ];
}

/// The memory-mapped approximate first stage.
pub struct ApproxIndex {
    forward_offsets: ArrayFile<u64>,
    forward_terms: ArrayFile<u16>,
    forward_weights: ArrayFile<f32>,
    term_blocks: ArrayFile<u64>,
    block_doc_offsets: ArrayFile<u64>,
    block_docs: ArrayFile<u32>,
    summary_term_offsets: ArrayFile<u64>,
    summary_keys: ArrayFile<u16>,
    summary_key_offsets: ArrayFile<u64>,
    summary_blocks: ArrayFile<u16>,
    summary_values: ArrayFile<u8>,
    summary_scales: ArrayFile<f32>,
    summary_floors: ArrayFile<u8>,
    vocab_size: usize,
    doc_count: usize,
}

/// Per-thread buffers reused across queries: the query as a dense vector, and a visit stamp per
/// document (a document is seen in this query when its stamp equals the query's generation).
#[derive(Default)]
struct Scratch {
    dense: Vec<f32>,
    stamps: Vec<u32>,
    generation: u32,
    bounds: Vec<(f32, f32)>,
    blocks: Vec<(f32, u32)>,
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
    /// on (offsets in range and ascending, ids below their bounds).
    pub fn open(dir: &Path, vocab_size: usize, doc_count: usize) -> Result<ApproxIndex> {
        fn open<T: crate::format::array::Element>(dir: &Path, name: &str) -> Result<ArrayFile<T>> {
            ArrayFile::open(&dir.join(name), name)
        }
        let index = ApproxIndex {
            forward_offsets: open(dir, files::FORWARD_OFFSETS)?,
            forward_terms: open(dir, files::FORWARD_TERMS)?,
            forward_weights: open(dir, files::FORWARD_WEIGHTS)?,
            term_blocks: open(dir, files::TERM_BLOCKS)?,
            block_doc_offsets: open(dir, files::BLOCK_DOC_OFFSETS)?,
            block_docs: open(dir, files::BLOCK_DOCS)?,
            summary_term_offsets: open(dir, files::SUMMARY_TERM_OFFSETS)?,
            summary_keys: open(dir, files::SUMMARY_KEYS)?,
            summary_key_offsets: open(dir, files::SUMMARY_KEY_OFFSETS)?,
            summary_blocks: open(dir, files::SUMMARY_BLOCKS)?,
            summary_values: open(dir, files::SUMMARY_VALUES)?,
            summary_scales: open(dir, files::SUMMARY_SCALES)?,
            summary_floors: open(dir, files::SUMMARY_FLOORS)?,
            vocab_size,
            doc_count,
        };
        let path = |name: &str| dir.join(name);
        let postings = index.forward_terms.len();
        check_offsets(
            &path(files::FORWARD_OFFSETS),
            index.forward_offsets.as_slice(),
            doc_count,
            postings,
            "forward index",
        )?;
        if index.forward_weights.len() != postings {
            return Err(Error::corrupt(
                path(files::FORWARD_WEIGHTS),
                "length differs from forward.terms",
            ));
        }
        let blocks = index.summary_scales.len();
        if index.summary_floors.len() != blocks {
            return Err(Error::corrupt(
                path(files::SUMMARY_FLOORS),
                "length differs from sum.scales",
            ));
        }
        check_offsets(
            &path(files::TERM_BLOCKS),
            index.term_blocks.as_slice(),
            vocab_size,
            blocks,
            "blocks by term",
        )?;
        check_offsets(
            &path(files::BLOCK_DOC_OFFSETS),
            index.block_doc_offsets.as_slice(),
            blocks,
            index.block_docs.len(),
            "block documents",
        )?;
        let keys = index.summary_keys.len();
        check_offsets(
            &path(files::SUMMARY_TERM_OFFSETS),
            index.summary_term_offsets.as_slice(),
            vocab_size,
            keys,
            "summary keys",
        )?;
        let entries = index.summary_blocks.len();
        check_offsets(
            &path(files::SUMMARY_KEY_OFFSETS),
            index.summary_key_offsets.as_slice(),
            keys,
            entries,
            "summary entries",
        )?;
        if index.summary_values.len() != entries {
            return Err(Error::corrupt(
                path(files::SUMMARY_VALUES),
                "length differs from sum.blocks",
            ));
        }
        let too_big = |values: &[u16]| values.iter().any(|&t| t as usize >= vocab_size);
        if too_big(index.forward_terms.as_slice()) || too_big(index.summary_keys.as_slice()) {
            return Err(Error::corrupt(
                path(files::FORWARD_TERMS),
                "a term id is past the vocabulary",
            ));
        }
        if index
            .block_docs
            .as_slice()
            .iter()
            .any(|&d| d as usize >= doc_count)
        {
            return Err(Error::corrupt(
                path(files::BLOCK_DOCS),
                "a document id is past the end",
            ));
        }
        // Each term's summary entries must name blocks of that term.
        let term_blocks = index.term_blocks.as_slice();
        let term_keys = index.summary_term_offsets.as_slice();
        let key_entries = index.summary_key_offsets.as_slice();
        for t in 0..vocab_size {
            let term_block_count = term_blocks[t + 1] - term_blocks[t];
            let entries = key_entries[term_keys[t] as usize] as usize
                ..key_entries[term_keys[t + 1] as usize] as usize;
            if index.summary_blocks.as_slice()[entries]
                .iter()
                .any(|&b| u64::from(b) >= term_block_count)
            {
                return Err(Error::corrupt(
                    path(files::SUMMARY_BLOCKS),
                    format!("term {t} names a block it does not have"),
                ));
            }
        }
        Ok(index)
    }

    fn range(offsets: &[u64], i: usize) -> std::ops::Range<usize> {
        offsets[i] as usize..offsets[i + 1] as usize
    }

    /// The approximate top `kappa` admitted documents for `query` (distinct term ids below the
    /// vocabulary size, finite weights ≥ 0), best first, with their exact sparse scores.
    /// Documents `admit` refuses are skipped as blocks are visited (they neither enter the top
    /// `kappa` nor raise the threshold that stops the walk).
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
            scratch.stamps = vec![0; self.doc_count];
            scratch.generation = 0;
        }
        scratch.generation = scratch.generation.wrapping_add(1);
        if scratch.generation == 0 {
            scratch.stamps.fill(0);
            scratch.generation = 1;
        }
        let generation = scratch.generation;
        for &(term, weight) in query {
            scratch.dense[term as usize] = weight;
        }
        let mut walked: Vec<(u32, f32)> = query.iter().copied().filter(|t| t.1 > 0.0).collect();
        walked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        walked.truncate(params.query_cut);

        let mut sorted: Vec<(u32, f32)> = query.iter().copied().filter(|t| t.1 > 0.0).collect();
        sorted.sort_unstable_by_key(|t| t.0);

        let Scratch {
            dense,
            stamps,
            bounds,
            blocks,
            ..
        } = scratch;
        let dense: &[f32] = dense;
        let term_blocks = self.term_blocks.as_slice();
        let term_keys = self.summary_term_offsets.as_slice();
        let keys = self.summary_keys.as_slice();
        let key_entries = self.summary_key_offsets.as_slice();
        let entry_blocks = self.summary_blocks.as_slice();
        let entry_values = self.summary_values.as_slice();
        let scales = self.summary_scales.as_slice();
        let floors = self.summary_floors.as_slice();
        let query_mass: f32 = sorted.iter().map(|t| t.1).sum();

        // 1. Bounds of every block of the walked terms: ⟨query, summary⟩ over all query terms,
        //    through each term's transposed summaries (work ∝ entries matching the query).
        blocks.clear();
        for &(term, _) in &walked {
            let first_block = term_blocks[term as usize] as usize;
            let block_count = term_blocks[term as usize + 1] as usize - first_block;
            bounds.clear();
            // Per block: Σ q·v over the summary's components the query has, and Σ q over them.
            bounds.resize(block_count, (0.0, 0.0));
            let mut term_keys_left =
                &keys[term_keys[term as usize] as usize..term_keys[term as usize + 1] as usize];
            let mut key_base = term_keys[term as usize] as usize;
            for &(s, weight) in &sorted {
                // Query terms ascend, so each search continues where the last one stopped.
                let (found, at) = match term_keys_left.binary_search(&(s as u16)) {
                    Ok(at) => (true, at),
                    Err(at) => (false, at),
                };
                key_base += at;
                term_keys_left = &term_keys_left[at..];
                if found {
                    for e in key_entries[key_base] as usize..key_entries[key_base + 1] as usize {
                        let bound = &mut bounds[entry_blocks[e] as usize];
                        bound.0 += weight * f32::from(entry_values[e]);
                        bound.1 += weight;
                    }
                }
            }
            for (local, &(kept, matched)) in bounds.iter().enumerate() {
                let block = first_block + local;
                // Query terms the summary dropped weigh at most the block's floor each.
                let dropped = (query_mass - matched).max(0.0) * f32::from(floors[block]);
                blocks.push(((kept + dropped) * scales[block], block as u32));
            }
        }

        // 2. Visit blocks by decreasing bound; stop once a bound cannot enter the top kappa.
        blocks.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let block_doc_offsets = self.block_doc_offsets.as_slice();
        let block_docs = self.block_docs.as_slice();
        let mut top = TopK::new(kappa);
        for &(bound, block) in blocks.iter() {
            if let Some(threshold) = top.threshold() {
                if bound * params.heap_factor < threshold {
                    break;
                }
            }
            for &doc in &block_docs[Self::range(block_doc_offsets, block as usize)] {
                let stamp = &mut stamps[doc as usize];
                if *stamp == generation {
                    continue;
                }
                *stamp = generation;
                if !admit.admits(doc) {
                    continue;
                }
                let score = self.score(dense, doc);
                top.push(Scored { id: doc, score });
            }
        }
        for &(term, _) in query {
            scratch.dense[term as usize] = 0.0;
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
