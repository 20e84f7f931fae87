//! The approximate first stage: static impact pruning in tiers, term-at-a-time accumulation
//! over the heaviest postings of the heaviest query terms, exact rescoring against a forward
//! index, and expansion through clusters of similar documents.
//!
//! - **Static pruning** ([`build`]): each term keeps only its `n_postings` heaviest postings,
//!   in tiers by weight rank (1,000, 1,000, 2,000, 4,000, …; each in document order), so a query
//!   chooses how deep to walk (`depth`). Popular terms, whose long lists hold mostly small
//!   weights, shrink the most; a term's rare heavy postings, which decide rankings, stay.
//! - **Query time** ([`ApproxIndex::search`]): only the `query_cut` heaviest query terms are
//!   walked, each to `depth`. Each document met accumulates `q · w`, a *partial* score: since
//!   every weight is positive and only postings are left out, it never exceeds the document's
//!   exact score. The `rescore` documents with the best partial scores (at least `kappa`) are
//!   then scored **exactly** against the whole query through the forward index.
//! - **Cluster expansion** ([`cluster`]): `expand` times, the best document found so far whose
//!   cluster was not expanded yet has every other document of its cluster scored exactly. On a
//!   corpus with families of near-duplicates (a crawl; our realistic generator) the exact top 10
//!   sits in a few families whose members' partial scores are spread thin; their best member is
//!   found, and the cluster brings the rest.
//!
//! The best `kappa` are returned with exact scores, so returned scores are real sparse scores
//! (CP(α) depends on them). Which knobs reach which accuracy depends on the corpus: the build
//! measures it and picks the defaults (`build::calibrate`).
//!
//! Seismic (Bruch, Nardini, Rulli, Venturini, SIGIR 2024) prunes the same way but groups each
//! list into blocks with summaries, to skip blocks; an earlier version of this module did so too
//! and lost to plain accumulation over the pruned lists, which costs about two nanoseconds per
//! posting, while a summary bound costs about as much per block entry and misses documents.
//! With `query_cut` ≥ the query's terms, every posting kept and walked and `rescore` ≥ the
//! documents matched, the result is the exact search's (up to float summation order).

pub mod build;
pub mod cluster;
mod search;

use crate::error::{Error, Result};
use crate::format::array::ArrayFile;
use crate::format::invariants;
use std::path::Path;

pub use crate::params::{ApproxBuildParams, ApproxQueryParams, ApproxSettings, CalibrationParams};

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

    /// First member of each cluster (`u64`, clusters + 1).
    pub const CLUSTER_OFFSETS: &str = "cluster.offsets";
    /// Documents grouped by cluster (`u32`), ascending within one; each document once.
    pub const CLUSTER_DOCS: &str = "cluster.docs";
    /// The cluster of each document (`u32`, doc_count).
    pub const CLUSTER_OF: &str = "cluster.of";

    /// The files of the clusters, present when the index was built with them.
    pub const CLUSTERS: [&str; 3] = [CLUSTER_OFFSETS, CLUSTER_DOCS, CLUSTER_OF];

    /// Every file of the approximate first stage but the clusters.
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
    /// The pruned lists are in tiers (see [`build::tier_end`]).
    tiers: bool,
    clusters: Option<ClusterFiles>,
    doc_count: usize,
}

/// The memory-mapped clusters (see [`cluster`]).
struct ClusterFiles {
    offsets: ArrayFile<u64>,
    docs: ArrayFile<u32>,
    of: ArrayFile<u32>,
}

impl ClusterFiles {
    /// Opens the cluster files of `dir` and checks that they partition the documents
    /// consistently: every document in exactly one cluster, the one `cluster.of` names.
    fn open(dir: &Path, doc_count: usize) -> Result<ClusterFiles> {
        let files = ClusterFiles {
            offsets: ArrayFile::open(&dir.join(files::CLUSTER_OFFSETS), files::CLUSTER_OFFSETS)?,
            docs: ArrayFile::open(&dir.join(files::CLUSTER_DOCS), files::CLUSTER_DOCS)?,
            of: ArrayFile::open(&dir.join(files::CLUSTER_OF), files::CLUSTER_OF)?,
        };
        let offsets = files.offsets.as_slice();
        let docs = files.docs.as_slice();
        let of = files.of.as_slice();
        let clusters = offsets.len().saturating_sub(1);
        check_offsets(
            &dir.join(files::CLUSTER_OFFSETS),
            offsets,
            clusters,
            doc_count,
            "clusters",
        )?;
        if docs.len() != doc_count || of.len() != doc_count {
            return Err(Error::corrupt(
                dir.join(files::CLUSTER_DOCS),
                format!("expected {doc_count} documents in cluster.docs and cluster.of"),
            ));
        }
        // Each position of `docs` names a document whose `of` is that position's cluster; with
        // `doc_count` positions and every document's `of` matched once, each is listed once.
        let mut listed = vec![false; doc_count];
        for c in 0..clusters {
            for &d in &docs[offsets[c] as usize..offsets[c + 1] as usize] {
                let ok = (d as usize) < doc_count
                    && of[d as usize] as usize == c
                    && !std::mem::replace(&mut listed[d as usize], true);
                if !ok {
                    return Err(Error::corrupt(
                        dir.join(files::CLUSTER_DOCS),
                        format!(
                            "document {d} is past the end, listed twice or in the wrong cluster"
                        ),
                    ));
                }
            }
        }
        Ok(files)
    }

    /// The documents of cluster `c`.
    fn members(&self, c: u32) -> &[u32] {
        let offsets = self.offsets.as_slice();
        &self.docs.as_slice()[offsets[c as usize] as usize..offsets[c as usize + 1] as usize]
    }

    /// The cluster of document `d`.
    fn of(&self, d: u32) -> u32 {
        self.of.as_slice()[d as usize]
    }
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
    /// Opens the approximate first stage of `dir`, laid out as `build` says, and checks
    /// every invariant the search relies on (offsets in range and ascending, ids below their
    /// bounds, weights finite and > 0, clusters a partition).
    pub fn open(
        dir: &Path,
        vocab_size: usize,
        doc_count: usize,
        build: &ApproxBuildParams,
    ) -> Result<ApproxIndex> {
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
            tiers: build.tiers,
            clusters: if build.cluster_size > 0 {
                Some(ClusterFiles::open(dir, doc_count)?)
            } else {
                None
            },
            doc_count,
        };
        let path = |name: &str| dir.join(name);
        if vocab_size > search::TERM_IDS {
            return Err(Error::corrupt(
                path(files::FORWARD_TERMS),
                format!("a vocabulary of {vocab_size} terms does not fit its 16-bit term ids"),
            ));
        }
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
        if !invariants::all_below(index.forward_terms.as_slice(), vocab_size as u64) {
            return Err(Error::corrupt(
                path(files::FORWARD_TERMS),
                "a term id is past the vocabulary",
            ));
        }
        if !invariants::all_below(index.impact_docs.as_slice(), doc_count as u64) {
            return Err(Error::corrupt(
                path(files::IMPACT_DOCS),
                "a document id is past the end",
            ));
        }
        for (name, weights) in [
            (files::FORWARD_WEIGHTS, &index.forward_weights),
            (files::IMPACT_WEIGHTS, &index.impact_weights),
        ] {
            if !invariants::all_positive(weights.as_slice()) {
                return Err(Error::corrupt(path(name), "a weight is not finite and > 0"));
            }
        }
        Ok(index)
    }

    /// Postings kept over all terms.
    pub fn pruned_postings(&self) -> usize {
        self.impact_docs.len()
    }

    /// The sparse vector of `doc` from the forward index: term ids ascending (all below
    /// 2¹⁶, see `search::TERM_IDS`) and their weights; `None` past the last document.
    pub fn forward_row(&self, doc: u32) -> Option<(&[u16], &[f32])> {
        let offsets = self.forward_offsets.as_slice();
        let start = *offsets.get(doc as usize)? as usize;
        let end = *offsets.get(doc as usize + 1)? as usize;
        Some((
            self.forward_terms.as_slice().get(start..end)?,
            self.forward_weights.as_slice().get(start..end)?,
        ))
    }

    /// Clusters of the index (0 when built without them).
    pub fn cluster_count(&self) -> usize {
        self.clusters
            .as_ref()
            .map_or(0, |c| c.offsets.len().saturating_sub(1))
    }
}
