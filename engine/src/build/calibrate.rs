//! Build-time calibration of the approximate first stage: how accurate it is on this corpus,
//! and which query defaults reach the accuracy asked for.
//!
//! **Pseudo-queries.** Real queries are not known at build time, so `queries` are made from the
//! corpus: each mixes the heaviest terms of three documents spread over the index, 16, 32 or 64
//! terms in all (in turn). One document's heaviest terms alone make queries far easier than
//! real ones (its near-duplicates share exactly those terms): on the realistic 100k corpus
//! (`tandem-bench gen --from` scifact) they rated today's default 0.97 where the real queries
//! get 0.77, while mixes of three tracked the real queries' accuracy within 0.03 at every
//! setting of [`LADDER`] (mixes of two were too easy, of four too hard).
//!
//! **Accuracy@10.** Each pseudo-query is answered exactly (the inverted index, every posting)
//! and approximately, both for 11 documents; the first document it was made from is removed
//! from both, and the score is the share of the exact top 10 the approximate top 10 holds,
//! averaged over the queries.
//!
//! **Choosing.** The settings of [`LADDER`] are tried cheapest first; the first ones whose
//! accuracy reaches the target (at most [`RUNGS_TIMED`]) are timed on one thread over the
//! queries, and the fastest becomes the index's query defaults. Exact search is timed too: when
//! it is faster (small indexes), or when no rung reaches the target, the index defaults to the
//! exact first stage (the rung found stays the approximate defaults for queries that ask for
//! it), so a default query never silently gets less than the target, nor waits longer than
//! exact search would take. Times depend on the machine, so two builds of one corpus may choose
//! differently between rungs of close speed; the manifest records the times.

use crate::admit::Admit;
use crate::approx::build::tier_end;
use crate::approx::{ApproxIndex, ApproxQueryParams};
use crate::format::manifest::Calibration;
use crate::params::CalibrationParams;
use crate::sparse::InvertedIndex;
use rayon::prelude::*;
use std::time::Instant;

/// Query lengths of the pseudo-queries, used in turn.
const QUERY_TERMS: [usize; 3] = [16, 32, 64];

/// Documents mixed into one pseudo-query.
const MIX: usize = 3;

/// Spreads the mixed-in documents of successive queries (a prime, so they rarely repeat).
const OTHER_STRIDE: usize = 7_919;

/// The top of the accuracy measure.
const K: usize = 10;

/// Query settings tried, cheapest first: `(depth, rescore, expand)`, all with `query_cut` 20.
/// Rungs deeper than the postings kept are skipped, and so are expansion rungs for an index
/// without clusters.
pub const LADDER: [(usize, usize, usize); 10] = [
    (1_000, 200, 0),
    (1_000, 200, 16),
    (2_000, 400, 32),
    (4_000, 1_000, 64),
    (8_000, 1_000, 64),
    (8_000, 2_000, 128),
    (16_000, 2_000, 128),
    (16_000, 4_000, 256),
    (16_000, 8_000, 512),
    (16_000, 16_000, 1_024),
];

/// Query terms walked at every rung.
const QUERY_CUT: usize = 20;

/// Rungs reaching the target that are timed (the first and the next ones): a deeper rung is
/// usually slower, but not always (expansion and rescoring trade places on small indexes).
const RUNGS_TIMED: usize = 3;

/// Mean microseconds per query of `run` over `queries` on this thread, after a warm-up pass.
fn mean_us(queries: &[PseudoQuery], run: impl Fn(&PseudoQuery)) -> f32 {
    if queries.is_empty() {
        return 0.0;
    }
    queries.iter().for_each(&run);
    let start = Instant::now();
    queries.iter().for_each(&run);
    (start.elapsed().as_secs_f64() * 1e6 / queries.len() as f64) as f32
}

/// The outcome of a calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The query defaults to record.
    pub query_defaults: ApproxQueryParams,
    /// What the manifest records.
    pub calibration: Calibration,
}

/// One calibration query: the document it was made from (left out of both answers) and its
/// terms.
struct PseudoQuery {
    doc: u32,
    terms: Vec<(u32, f32)>,
}

/// `count` pseudo-queries from the documents (`row(d)`: document `d`'s terms and weights):
/// query `i` starts from document `i · N / count` and mixes in [`MIX`] − 1 others spread over
/// the index, taking the heaviest `QUERY_TERMS[i % 3] / MIX` terms of each (a term already
/// taken keeps its first weight). Queries without terms are skipped.
fn pseudo_queries(
    doc_count: usize,
    row: impl Fn(u32) -> Vec<(u32, f32)>,
    count: usize,
) -> Vec<PseudoQuery> {
    let count = count.min(doc_count);
    let heaviest = |doc: u32, m: usize| {
        let mut terms = row(doc);
        terms.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        terms.truncate(m);
        terms
    };
    (0..count)
        .filter_map(|i| {
            let first = i * doc_count / count;
            let m = (QUERY_TERMS[i % QUERY_TERMS.len()] / MIX).max(1);
            let mut terms = heaviest(first as u32, m);
            for j in 1..MIX {
                let other = (first + j * doc_count / MIX + OTHER_STRIDE * i) % doc_count;
                for (t, w) in heaviest(other as u32, m) {
                    if !terms.iter().any(|e| e.0 == t) {
                        terms.push((t, w));
                    }
                }
            }
            (!terms.is_empty()).then_some(PseudoQuery {
                doc: first as u32,
                terms,
            })
        })
        .collect()
}

/// The top 10 of `found` without document `skip`.
fn top_without(found: impl IntoIterator<Item = u32>, skip: u32) -> Vec<u32> {
    found.into_iter().filter(|&d| d != skip).take(K).collect()
}

/// Accuracy@10 of `knobs` on the queries, against their exact answers.
fn accuracy(
    approx: &ApproxIndex,
    queries: &[PseudoQuery],
    exact: &[Vec<u32>],
    knobs: &ApproxQueryParams,
) -> f32 {
    let shares: Vec<f64> = queries
        .par_iter()
        .zip(exact)
        .filter(|(_, truth)| !truth.is_empty())
        .map(|(q, truth)| {
            let found = approx.search(&q.terms, K + 1, knobs, &Admit::All);
            let found = top_without(found.iter().map(|s| s.id), q.doc);
            found.iter().filter(|d| truth.contains(d)).count() as f64 / truth.len() as f64
        })
        .collect();
    if shares.is_empty() {
        1.0
    } else {
        (shares.iter().sum::<f64>() / shares.len() as f64) as f32
    }
}

/// A term-weight vector: `(term id, weight)` pairs.
pub type Terms = Vec<(u32, f32)>;

/// Where the calibration queries come from.
pub enum QuerySource<R: Fn(u32) -> Terms> {
    /// Pseudo-queries made from the documents (`row(d)`: document `d`'s terms and weights).
    Documents {
        /// Documents in the index.
        doc_count: usize,
        /// A document's row.
        row: R,
    },
    /// A sample of real queries, named (the file) for the manifest.
    Sample {
        /// What the manifest records as the source.
        name: String,
        /// The queries.
        queries: Vec<Terms>,
    },
}

/// The approximate first stage to calibrate, and the exact one it is measured against.
pub struct Stages<'a> {
    /// The inverted index (exact search).
    pub postings: &'a InvertedIndex,
    /// The approximate first stage.
    pub approx: &'a ApproxIndex,
    /// Postings it kept per term (rungs deeper are skipped).
    pub kept: usize,
}

/// Measures the approximate first stage on the first `params.queries` queries of `source` and,
/// when `params.choose_defaults`, picks the query defaults from [`LADDER`]; otherwise `given`
/// stays the defaults and only its accuracy and time are measured.
pub fn calibrate<R: Fn(u32) -> Terms>(
    stages: &Stages,
    source: QuerySource<R>,
    params: &CalibrationParams,
    given: ApproxQueryParams,
) -> Outcome {
    let Stages {
        postings,
        approx,
        kept,
    } = *stages;
    let (source, queries) = match source {
        // Real queries: no document to leave out (`u32::MAX` names none).
        QuerySource::Sample { name, queries } => (
            name,
            queries
                .into_iter()
                .take(params.queries)
                .map(|terms| PseudoQuery {
                    doc: u32::MAX,
                    terms,
                })
                .collect(),
        ),
        QuerySource::Documents { doc_count, row } => (
            "documents".to_string(),
            pseudo_queries(doc_count, row, params.queries),
        ),
    };
    let exact: Vec<Vec<u32>> = queries
        .par_iter()
        .map(|q| {
            let found = postings.search_exact(&q.terms, K + 1, &Admit::All);
            top_without(found.iter().map(|s| s.id), q.doc)
        })
        .collect();
    let record = |knobs: ApproxQueryParams,
                  accuracy_at_10: f32,
                  exact_by_default: bool,
                  mean_us: f32,
                  exact_mean_us: f32| Outcome {
        query_defaults: knobs,
        calibration: Calibration {
            queries: queries.len(),
            source: source.clone(),
            target_accuracy: params.target_accuracy,
            accuracy_at_10,
            exact_by_default,
            mean_us,
            exact_mean_us,
        },
    };
    let exact_us = mean_us(&queries, |q| {
        postings.search_exact(&q.terms, K + 1, &Admit::All);
    });
    let approx_us = |knobs: &ApproxQueryParams| {
        mean_us(&queries, |q| {
            approx.search(&q.terms, K + 1, knobs, &Admit::All);
        })
    };
    if !params.choose_defaults {
        let reached = accuracy(approx, &queries, &exact, &given);
        return record(given, reached, false, approx_us(&given), exact_us);
    }
    let clustered = approx.cluster_count() > 0;
    // Rungs reaching the target (the first and at most RUNGS_TIMED − 1 after it), else the last.
    let mut reaching: Vec<(ApproxQueryParams, f32)> = Vec::new();
    let mut last = None;
    for (depth, rescore, expand) in LADDER {
        if (expand > 0 && !clustered) || depth > tier_end(kept) || reaching.len() == RUNGS_TIMED {
            continue;
        }
        let knobs = ApproxQueryParams {
            query_cut: QUERY_CUT,
            depth,
            rescore,
            expand,
        };
        let reached = accuracy(approx, &queries, &exact, &knobs);
        if reached >= params.target_accuracy {
            reaching.push((knobs, reached));
        }
        last = Some((knobs, reached));
    }
    let timed = reaching
        .into_iter()
        .map(|(knobs, reached)| (knobs, reached, approx_us(&knobs)))
        .min_by(|a, b| a.2.total_cmp(&b.2));
    match (timed, last) {
        // The fastest rung reaching the target, unless exact search is faster still.
        (Some((knobs, reached, us)), _) => record(knobs, reached, exact_us < us, us, exact_us),
        (None, Some((knobs, reached))) => {
            let us = approx_us(&knobs);
            record(knobs, reached, true, us, exact_us)
        }
        (None, None) => record(given, 1.0, false, approx_us(&given), exact_us),
    }
}
