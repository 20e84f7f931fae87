//! Building the approximate first stage from the documents and their inverted lists.
//!
//! Three structures, all deterministic:
//! - the **forward index**: each document's terms (ascending, `u16`) and weights, for exact
//!   rescoring;
//! - the **impact-pruned lists**: per term, its `n_postings` heaviest postings (ties go to the
//!   lower document id), stored in document order with their weights. A term with at most
//!   `n_postings` postings keeps them all.
//! - the **clusters** (when `cluster_size` > 0): documents grouped by similarity, at most
//!   `cluster_size` per cluster (see [`super::cluster`]).

use super::cluster::{cluster, Clusters};
use super::ApproxBuildParams;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// The sparse document matrix (rows = documents) and its inverse (rows = terms).
pub struct SparseMatrices<'a> {
    /// Document `d`'s entries are `doc_terms/doc_weights[doc_offsets[d]..doc_offsets[d + 1]]`.
    pub doc_offsets: &'a [u64],
    /// Term ids of the document rows.
    pub doc_terms: &'a [u32],
    /// Weights of the document rows.
    pub doc_weights: &'a [f32],
    /// Term `t`'s postings are `post_docs/post_weights[post_offsets[t]..post_offsets[t + 1]]`.
    pub post_offsets: &'a [u64],
    /// Document ids of the postings, ascending per term.
    pub post_docs: &'a [u32],
    /// Weights of the postings.
    pub post_weights: &'a [f32],
}

/// The arrays of the approximate first stage, ready to be written (see [`super::files`]).
#[derive(Debug, Default)]
pub struct ApproxArrays {
    /// First forward entry of each document (`doc_count + 1`).
    pub forward_offsets: Vec<u64>,
    /// Forward term ids, ascending per document.
    pub forward_terms: Vec<u16>,
    /// Forward weights.
    pub forward_weights: Vec<f32>,
    /// First pruned posting of each term (`vocab_size + 1`).
    pub impact_offsets: Vec<u64>,
    /// Documents of the pruned lists, ascending per term.
    pub impact_docs: Vec<u32>,
    /// Weights of the pruned lists.
    pub impact_weights: Vec<f32>,
    /// The clusters, when built with them.
    pub clusters: Option<Clusters>,
}

/// Seed of the clustering: fixed, so a build is reproducible.
const CLUSTER_SEED: u64 = 0x7A4D_E3C1_0000_0001;

/// Builds the approximate first stage; fails when the vocabulary does not fit 16-bit term ids
/// or `n_postings` is 0.
pub fn build(
    m: &SparseMatrices,
    vocab_size: usize,
    params: &ApproxBuildParams,
) -> Result<ApproxArrays> {
    if vocab_size > usize::from(u16::MAX) + 1 {
        return Err(Error::bad_input(
            "--first-stage approx",
            format!("the approximate first stage needs a vocabulary of at most 65,536 terms, this one has {vocab_size} (use --first-stage exact)"),
        ));
    }
    params.validate()?;
    let doc_count = m.doc_offsets.len() - 1;
    // Forward index: each document's terms ascending.
    let rows: Vec<(Vec<u16>, Vec<f32>)> = (0..doc_count)
        .into_par_iter()
        .map(|d| {
            let range = m.doc_offsets[d] as usize..m.doc_offsets[d + 1] as usize;
            let mut row: Vec<(u16, f32)> = m.doc_terms[range.clone()]
                .iter()
                .zip(&m.doc_weights[range])
                .map(|(&t, &w)| (t as u16, w))
                .collect();
            row.sort_unstable_by_key(|e| e.0);
            row.into_iter().unzip()
        })
        .collect();
    let mut out = ApproxArrays {
        forward_offsets: Vec::with_capacity(doc_count + 1),
        impact_offsets: Vec::with_capacity(vocab_size + 1),
        ..ApproxArrays::default()
    };
    out.forward_offsets.push(0);
    for (terms, weights) in &rows {
        out.forward_terms.extend_from_slice(terms);
        out.forward_weights.extend_from_slice(weights);
        out.forward_offsets.push(out.forward_terms.len() as u64);
    }
    drop(rows);

    // Pruned lists, terms in parallel, appended in order.
    let lists: Vec<Vec<(u32, f32)>> = (0..vocab_size)
        .into_par_iter()
        .map(|t| {
            let range = m.post_offsets[t] as usize..m.post_offsets[t + 1] as usize;
            prune(
                &m.post_docs[range.clone()],
                &m.post_weights[range],
                params.n_postings,
            )
        })
        .collect();
    out.impact_offsets.push(0);
    for list in lists {
        for (doc, weight) in list {
            out.impact_docs.push(doc);
            out.impact_weights.push(weight);
        }
        out.impact_offsets.push(out.impact_docs.len() as u64);
    }
    if params.cluster_size > 0 {
        out.clusters = Some(cluster(m, vocab_size, params.cluster_size, CLUSTER_SEED));
    }
    Ok(out)
}

/// The `keep` heaviest of one term's postings (ties: lower document first), in tiers: ranks
/// `[0, FIRST_TIER)`, `[FIRST_TIER, 2 · FIRST_TIER)`, `[2 · FIRST_TIER, 4 · FIRST_TIER)`, … by
/// weight, each tier in document order (see [`tier_end`]).
fn prune(docs: &[u32], weights: &[f32], keep: usize) -> Vec<(u32, f32)> {
    let mut postings: Vec<(u32, f32)> = docs.iter().copied().zip(weights.iter().copied()).collect();
    let heavier = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if postings.len() > keep {
        postings.select_nth_unstable_by(keep - 1, heavier);
        postings.truncate(keep);
    }
    postings.sort_unstable_by(heavier);
    let mut start = 0;
    while start < postings.len() {
        let end = tier_end(start + 1).min(postings.len());
        postings[start..end].sort_unstable_by_key(|p| p.0);
        start = end;
    }
    postings
}

/// Postings in a term's first tier; each next tier is as long as all the earlier ones.
pub const FIRST_TIER: usize = 1000;

/// The end of the tier holding the `depth`-th posting (1-based) of a term's pruned list: the
/// postings walked when `depth` are asked for (whole tiers: 1,000, 2,000, 4,000, …). 0 gives 0.
pub fn tier_end(depth: usize) -> usize {
    let mut end = FIRST_TIER;
    if depth == 0 {
        return 0;
    }
    while end < depth {
        end = end.saturating_mul(2);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_heaviest_in_document_order() {
        let docs = [1, 3, 4, 7, 9];
        let weights = [0.5, 2.0, 0.5, 1.0, 3.0];
        assert_eq!(prune(&docs, &weights, 2), vec![(3, 2.0), (9, 3.0)]);
        // Ties at the cut go to the lower document.
        assert_eq!(
            prune(&docs, &weights, 4),
            vec![(1, 0.5), (3, 2.0), (7, 1.0), (9, 3.0)]
        );
        assert_eq!(prune(&docs, &weights, 9).len(), 5);
    }

    #[test]
    fn tiers_hold_the_heaviest_first_each_in_document_order() {
        // 5,000 postings with distinct weights, heavier for higher (d · 7919) mod 5000.
        let docs: Vec<u32> = (0..5_000).collect();
        let weights: Vec<f32> = docs
            .iter()
            .map(|&d| 1.0 + ((d * 7919) % 5_000) as f32)
            .collect();
        let kept = prune(&docs, &weights, 4_500);
        assert_eq!(kept.len(), 4_500);
        let mut by_weight = weights.clone();
        by_weight.sort_by(|a, b| b.total_cmp(a));
        for (start, end) in [(0, 1_000), (1_000, 2_000), (2_000, 4_000), (4_000, 4_500)] {
            let tier = &kept[start..end];
            assert!(tier.windows(2).all(|p| p[0].0 < p[1].0), "tier {start}");
            let mut w: Vec<f32> = tier.iter().map(|p| p.1).collect();
            w.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(w, by_weight[start..end], "tier {start}");
        }
        assert_eq!(
            [0, 1, 1_000, 1_001, 2_000, 2_001, 4_000, 4_001].map(tier_end),
            [0, 1_000, 1_000, 2_000, 2_000, 4_000, 4_000, 8_000]
        );
    }
}
