//! The inverted index of the sparse first stage and its exact (every posting scored) search.

use crate::error::{Error, Result};
use crate::filter::Admit;
use crate::format::array::ArrayFile;
use crate::format::files;
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
        for term in 0..vocab_size {
            let (list, weights) = index.postings(term as u32);
            let ascending = list.windows(2).all(|w| w[0] < w[1]);
            if !ascending || list.last().is_some_and(|&d| d as usize >= doc_count) {
                return Err(Error::corrupt(
                    &docs_path,
                    format!("posting list of term {term} is not ascending below {doc_count}"),
                ));
            }
            if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
                return Err(Error::corrupt(
                    &weights_path,
                    format!("posting list of term {term} has a weight that is not finite and > 0"),
                ));
            }
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
    /// With a small admitted set ([`Admit::Only`] with fewer documents than the query has
    /// postings) the admitted documents are scored one by one instead, each by a galloping search
    /// in every posting list; the sums are made in the same order, so the results are identical.
    ///
    /// `query` must hold distinct term ids with finite positive weights (the pipeline validates).
    pub fn search_exact(&self, query: &[(u32, f32)], kappa: usize, admit: &Admit) -> Vec<Scored> {
        if let Admit::Only(allowed) = admit {
            let postings: u64 = query
                .iter()
                .map(|&(t, _)| self.postings(t).0.len() as u64)
                .sum();
            if allowed.len().saturating_mul(query.len() as u64) < postings {
                return self.score_admitted(query, kappa, allowed);
            }
        }
        let mut scores = vec![0f32; self.doc_count];
        // A separate mark (not `score == 0`): a product can underflow to 0.
        let mut seen = vec![false; self.doc_count];
        let mut touched: Vec<u32> = Vec::new();
        for &(term, q_weight) in query {
            let (docs, weights) = self.postings(term);
            for (&doc, &d_weight) in docs.iter().zip(weights) {
                let d = doc as usize;
                if !seen[d] {
                    seen[d] = true;
                    touched.push(doc);
                }
                scores[d] += q_weight * d_weight;
            }
        }
        let mut top = TopK::new(kappa);
        for doc in touched {
            if admit.admits(doc) {
                top.push(Scored {
                    id: doc,
                    score: scores[doc as usize],
                });
            }
        }
        top.into_sorted_vec()
    }

    /// Document at a time over a small admitted set: each posting list is walked by a cursor
    /// that gallops forward to the next admitted document.
    fn score_admitted(
        &self,
        query: &[(u32, f32)],
        kappa: usize,
        allowed: &RoaringBitmap,
    ) -> Vec<Scored> {
        let lists: Vec<(&[u32], &[f32], f32)> = query
            .iter()
            .map(|&(term, q)| {
                let (docs, weights) = self.postings(term);
                (docs, weights, q)
            })
            .collect();
        let mut cursors = vec![0usize; lists.len()];
        let mut top = TopK::new(kappa);
        for doc in allowed.iter() {
            let mut score = 0f32;
            let mut matched = false;
            for ((docs, weights, q), cursor) in lists.iter().zip(cursors.iter_mut()) {
                *cursor += gallop(&docs[*cursor..], doc);
                if docs.get(*cursor) == Some(&doc) {
                    score += q * weights[*cursor];
                    matched = true;
                }
            }
            if matched {
                top.push(Scored { id: doc, score });
            }
        }
        top.into_sorted_vec()
    }
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
