//! The inverted index of the sparse first stage and its exact (every posting scored) search.

use crate::admit::Admit;
use crate::error::{Error, Result};
use crate::format::array::ArrayFile;
use crate::format::{files, invariants};
use crate::topk::{Scored, TopK};
use roaring::RoaringBitmap;
use std::path::Path;

/// Posting lists by term id: ascending document ids with their weights, memory-mapped.
pub struct InvertedIndex {
    offsets: ArrayFile<u64>,
    docs: ArrayFile<u32>,
    weights: ArrayFile<f32>,
    doc_count: usize,
}

impl InvertedIndex {
    /// Opens the posting files of `dir` for `vocab_size` terms over `doc_count` documents and
    /// checks every invariant the search relies on (offsets ascending and in range, document ids
    /// below `doc_count` and strictly ascending within a list, weights finite and positive).
    pub fn open(dir: &Path, vocab_size: usize, doc_count: usize) -> Result<InvertedIndex> {
        let offsets_path = dir.join(files::POSTINGS_OFFSETS);
        let docs_path = dir.join(files::POSTINGS_DOCS);
        let weights_path = dir.join(files::POSTINGS_WEIGHTS);
        let offsets = ArrayFile::<u64>::open(&offsets_path, files::POSTINGS_OFFSETS)?;
        let docs = ArrayFile::<u32>::open(&docs_path, files::POSTINGS_DOCS)?;
        let weights = ArrayFile::<f32>::open(&weights_path, files::POSTINGS_WEIGHTS)?;
        let index = InvertedIndex {
            offsets,
            docs,
            weights,
            doc_count,
        };
        let offs = index.offsets.as_slice();
        if offs.len() != vocab_size + 1 || offs.first() != Some(&0) {
            return Err(Error::corrupt(
                &offsets_path,
                format!("{} offsets for {vocab_size} terms", offs.len()),
            ));
        }
        if offs.last() != Some(&(index.docs.len() as u64))
            || index.docs.len() != index.weights.len()
        {
            return Err(Error::corrupt(
                &offsets_path,
                "offsets, document ids and weights disagree on the posting count",
            ));
        }
        if offs.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::corrupt(&offsets_path, "offsets are not ascending"));
        }
        let (docs, weights) = (index.docs.as_slice(), index.weights.as_slice());
        if let Some(term) = invariants::first_unordered_list(offs, docs) {
            return Err(Error::corrupt(
                &docs_path,
                format!("posting list of term {term} is not ascending"),
            ));
        }
        if !invariants::all_below(docs, doc_count as u64) {
            return Err(Error::corrupt(
                &docs_path,
                format!("a posting's document id is not below {doc_count}"),
            ));
        }
        if !invariants::all_positive(weights) {
            return Err(Error::corrupt(
                &weights_path,
                "a posting weight is not finite and > 0",
            ));
        }
        Ok(index)
    }

    /// The posting list of `term`: document ids and weights. Empty for ids past the vocabulary.
    pub fn postings(&self, term: u32) -> (&[u32], &[f32]) {
        let offs = self.offsets.as_slice();
        let t = term as usize;
        match (offs.get(t), offs.get(t + 1)) {
            (Some(&start), Some(&end)) => {
                let range = start as usize..end as usize;
                (
                    &self.docs.as_slice()[range.clone()],
                    &self.weights.as_slice()[range],
                )
            }
            _ => (&[], &[]),
        }
    }

    /// Total number of postings.
    pub fn posting_count(&self) -> usize {
        self.docs.len()
    }

    /// Exact search: scores every posting of every query term (term at a time, query terms in the
    /// order given, f32 sums) and returns the best `kappa` admitted documents, best first, ties by
    /// document order. Documents sharing no term with the query are never returned.
    ///
    /// With a filter ([`Admit::Only`]) each query term takes the cheaper of two walks: its posting
    /// list, skipping documents the filter refuses (one bit test each), or — when the admitted
    /// set is much smaller than the list — the admitted documents, each found in the list by a
    /// galloping cursor. Either way a document's score is summed in query-term order, so the
    /// results are those of brute force over the admitted documents.
    ///
    /// `query` must hold distinct term ids with finite positive weights (the pipeline validates).
    pub fn search_exact(&self, query: &[(u32, f32)], kappa: usize, admit: &Admit) -> Vec<Scored> {
        let mut scores = vec![0f32; self.doc_count];
        // A separate mark (not `score == 0`): a product can underflow to 0.
        let mut seen = vec![false; self.doc_count];
        let mut touched: Vec<u32> = Vec::new();
        let mut add = |doc: u32, product: f32| {
            let d = doc as usize;
            if !seen[d] {
                seen[d] = true;
                touched.push(doc);
            }
            scores[d] += product;
        };
        let bits = match admit {
            Admit::Only(allowed) => Some(dense_bits(allowed, self.doc_count)),
            _ => None,
        };
        if let (Admit::Only(allowed), Some(bits)) = (admit, &bits) {
            // Testing each posting pays when the filter refuses most documents (the branch is
            // then predictable and refused documents cost no accumulator writes); a broad filter
            // is cheaper applied once per touched document at selection.
            let test_postings = allowed.len() as f64 <= TEST_POSTINGS_BELOW * self.doc_count as f64;
            let mut admitted: Option<Vec<u32>> = None;
            for &(term, q_weight) in query {
                let (docs, weights) = self.postings(term);
                if allowed.len().saturating_mul(GALLOP_COST) < docs.len() as u64 {
                    let admitted = admitted.get_or_insert_with(|| allowed.iter().collect());
                    let mut cursor = 0;
                    for &doc in admitted.iter() {
                        cursor += gallop(&docs[cursor..], doc);
                        match docs.get(cursor) {
                            Some(&found) if found == doc => add(doc, q_weight * weights[cursor]),
                            Some(_) => {}
                            None => break,
                        }
                    }
                } else if test_postings {
                    for (&doc, &d_weight) in docs.iter().zip(weights) {
                        if bit(bits, doc) {
                            add(doc, q_weight * d_weight);
                        }
                    }
                } else {
                    for (&doc, &d_weight) in docs.iter().zip(weights) {
                        add(doc, q_weight * d_weight);
                    }
                }
            }
        } else {
            for &(term, q_weight) in query {
                let (docs, weights) = self.postings(term);
                for (&doc, &d_weight) in docs.iter().zip(weights) {
                    add(doc, q_weight * d_weight);
                }
            }
        }
        let mut top = TopK::new(kappa);
        for doc in touched {
            let admitted = match &bits {
                Some(bits) => bit(bits, doc),
                None => admit.admits(doc),
            };
            // Refused documents enter as −∞ (no branch to mispredict on broad filters): any
            // admitted one displaces them, and those left are dropped below.
            let score = if admitted {
                scores[doc as usize]
            } else {
                f32::NEG_INFINITY
            };
            top.push(Scored { id: doc, score });
        }
        let mut best = top.into_sorted_vec();
        best.retain(|s| s.score != f32::NEG_INFINITY);
        best
    }
}

/// Filters admitting at most this share of the documents are tested posting by posting.
const TEST_POSTINGS_BELOW: f64 = 0.25;

/// Whether `doc`'s bit is set.
#[inline]
fn bit(bits: &[u64], doc: u32) -> bool {
    bits[doc as usize / 64] >> (doc % 64) & 1 == 1
}

/// A posting list is walked through the admitted documents (galloping) rather than posting by
/// posting when it is longer than this many times the admitted set: a galloping step costs
/// several sequential postings.
const GALLOP_COST: u64 = 8;

/// One bit per document of `0..doc_count`, set for the members of `set`.
fn dense_bits(set: &RoaringBitmap, doc_count: usize) -> Vec<u64> {
    let mut bits = vec![0u64; doc_count.div_ceil(64)];
    for doc in set.iter() {
        if let Some(word) = bits.get_mut(doc as usize / 64) {
            *word |= 1 << (doc % 64);
        }
    }
    bits
}

/// The number of leading elements of ascending `docs` below `target` (exponential then binary
/// search, so walking a list forward costs the logarithm of each step).
fn gallop(docs: &[u32], target: u32) -> usize {
    let mut bound = 1;
    while bound < docs.len() && docs[bound] < target {
        bound *= 2;
    }
    let low = bound / 2;
    let high = bound.min(docs.len());
    low + docs[low..high].partition_point(|&d| d < target)
}

#[cfg(test)]
mod tests {
    use super::gallop;

    #[test]
    fn gallop_counts_the_elements_below() {
        let docs = [1, 3, 5, 7, 9, 11, 13, 15, 17];
        for target in 0..20 {
            let expected = docs.iter().filter(|&&d| d < target).count();
            assert_eq!(gallop(&docs, target), expected, "{target}");
        }
        assert_eq!(gallop(&[], 4), 0);
    }
}
