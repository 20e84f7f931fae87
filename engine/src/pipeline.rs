//! The two-stage query path: first stage → CP(α) → MaxSim with EE(β) → fusion → top k.
//!
//! CP(α) looks at sparse scores only, before reranking. EE(β) decides on MaxSim scores as they
//! are computed (the normalisation of a fused score needs every reranked candidate, so it is not
//! known while reranking). Fusion, when its weight is positive, then ranks the candidates that
//! were reranked by `norm(MaxSim) + w · norm(sparse)`, normalised over those candidates.

use crate::attributes::Kind;
use crate::error::{Error, Result};
use crate::explain::Explanation;
use crate::filter::{Admit, Filter};
use crate::fusion::Fusion;
use crate::kernels::TokenMax;
use crate::maxsim::MaxSimScorer;
use crate::segment::Segment;
use crate::topk::{Scored, TopK};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use crate::params::FirstStage;

/// Upper bounds on what one query may ask for; a violation is an [`Error::InvalidArgument`]
/// naming the field and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `k`.
    pub max_k: usize,
    /// Largest `kappa`.
    pub max_kappa: usize,
    /// Most sparse terms in a query.
    pub max_query_terms: usize,
    /// Most token vectors in a query.
    pub max_query_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_k: 1000,
            max_kappa: 10_000,
            max_query_terms: 4096,
            max_query_tokens: 1024,
        }
    }
}

/// Largest magnitude of a query vector value (the float16 range of stored vectors); it keeps
/// every MaxSim sum finite.
pub const MAX_VECTOR_VALUE: f32 = 65504.0;

/// Largest weight of a query term: far above what learned sparse encoders produce (SPLADE weights
/// are a few units), and low enough to keep sparse scores finite (4096 terms × 1e6 × document
/// weights up to 1e25 stay below `f32::MAX`).
pub const MAX_TERM_WEIGHT: f32 = 1e6;

/// Checks the weight of a query term: finite, ≥ 0 and at most [`MAX_TERM_WEIGHT`]; otherwise the
/// message saying what is wrong.
pub fn check_term_weight(weight: f32) -> std::result::Result<(), String> {
    if !weight.is_finite() || weight < 0.0 {
        Err(format!("weight {weight} must be finite and >= 0"))
    } else if weight > MAX_TERM_WEIGHT {
        Err(format!(
            "weight {weight:e} exceeds the limit of {MAX_TERM_WEIGHT:e}"
        ))
    } else {
        Ok(())
    }
}

/// With the approximate first stage, a filter admitting at most this fraction of the documents
/// is answered by scoring every admitted document exactly (through the forward index) rather
/// than by accumulating over pruned lists, most of whose documents it would refuse.
pub const SCAN_ADMITTED_FRACTION: f64 = 0.05;

/// Knobs of one query (already defaulted: every value is what will be used).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchParams {
    /// The first stage.
    pub first_stage: FirstStage,
    /// Results to return (≥ 1).
    pub k: usize,
    /// First-stage candidates to rerank (≥ k).
    pub kappa: usize,
    /// CP(α): drop candidates whose sparse score is below (1 − α) × the k-th candidate's.
    pub cp_alpha: Option<f32>,
    /// EE(β): after the first k, stop after β consecutive candidates that miss the top k.
    pub ee_beta: Option<usize>,
    /// Rerank by MaxSim (`true`) or return the first stage's top k (`false`).
    pub rerank: bool,
    /// How the final score combines MaxSim and the sparse score ([`Fusion::NONE`]: MaxSim alone).
    pub fusion: Fusion,
    /// Ask the kernel to read every candidate's token vectors ahead before scoring the first
    /// (helps when they are not in memory; costs a system call per candidate when they are, so
    /// it is skipped while the token store knows itself resident: see
    /// [`TokenStore::check_residency`](crate::tokens::TokenStore::check_residency)).
    pub prefetch: bool,
    /// Explain every hit (see [`crate::explain`]): which document token each query token matched,
    /// which terms carried the sparse score. Off, the pipeline does no extra work.
    pub explain: bool,
}

/// A query's token vectors: `values.len() / dim` rows of `dim` f32 values.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryVectors {
    /// Row-major values.
    pub values: Vec<f32>,
    /// Dimensions per row, as the client declared it.
    pub dim: usize,
}

/// A query in engine terms: term ids with weights, token vectors, and what it is restricted to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// `(term id, weight)` pairs; ids distinct and below the vocabulary size, weights as
    /// [`check_term_weight`] requires (zeros ignored). A query without positive weights matches nothing.
    pub terms: Vec<(u32, f32)>,
    /// Token vectors; required when reranking.
    pub vectors: Option<QueryVectors>,
    /// The documents it may return (deleted documents never are).
    pub filter: Filter,
}

/// One result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Internal document id (see [`Segment::external_id`]).
    pub doc: u32,
    /// The final score: the fused score when fused, else MaxSim when reranked, else the sparse
    /// score.
    pub score: f32,
    /// The first-stage sparse score.
    pub sparse_score: f32,
    /// The MaxSim score, when reranked.
    pub maxsim: Option<f32>,
    /// The fused score, when fusion was applied.
    pub fused: Option<f32>,
}

/// What one query did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SearchStats {
    /// Candidates from the first stage.
    pub candidates: usize,
    /// Candidates dropped by CP(α).
    pub pruned: usize,
    /// Candidates scored by MaxSim.
    pub reranked: usize,
    /// Microseconds in the first stage.
    pub first_stage_us: u64,
    /// Microseconds reranking.
    pub rerank_us: u64,
}

/// The answer to one query: hits best first, and the work counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchOutput {
    /// Up to k hits, best first.
    pub hits: Vec<Hit>,
    /// Counters.
    pub stats: SearchStats,
    /// With [`SearchParams::explain`], one explanation per hit (same order); else empty.
    pub explanations: Vec<Explanation>,
}

/// The segments of a [`Segments`] view: one borrowed segment, or an index's shared ones.
#[derive(Clone, Copy)]
pub enum Members<'a> {
    /// A single segment on its own.
    One(&'a Segment),
    /// An index's segments, shared with the snapshots that hold them.
    Shared(&'a [Arc<Segment>]),
}

impl<'a> Members<'a> {
    /// How many segments.
    pub fn len(&self) -> usize {
        match self {
            Members::One(_) => 1,
            Members::Shared(all) => all.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Segment `i`.
    pub fn get(&self, i: usize) -> Option<&'a Segment> {
        match self {
            Members::One(one) => (i == 0).then_some(*one),
            Members::Shared(all) => all.get(i).map(|s| &**s),
        }
    }

    /// The segments in order.
    pub fn iter(self) -> impl Iterator<Item = &'a Segment> {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

/// Segments searched as one index: the documents of segment `i` have the index-wide ids
/// `bases[i] + local id`, so ids follow segment order and ties between equal scores break the
/// same way as in one segment holding the same documents in the same order.
#[derive(Clone, Copy)]
pub struct Segments<'a> {
    /// The segments, in order.
    pub segments: Members<'a>,
    /// The index-wide id of each segment's first document (ascending, one per segment).
    pub bases: &'a [u32],
    /// Terms of the index: every segment's vocabulary is a prefix of the longest one.
    pub vocab_size: usize,
    /// Dimensions per token vector, the same in every segment.
    pub dim: usize,
    /// Every attribute some segment has, with its kind; `None` for a single segment (whose
    /// unknown attributes are errors).
    pub attribute_kinds: Option<&'a BTreeMap<String, Kind>>,
}

impl<'a> Segments<'a> {
    /// One segment on its own.
    pub fn one(segment: &'a Segment) -> Segments<'a> {
        Segments {
            segments: Members::One(segment),
            bases: &[0],
            vocab_size: segment.vocab_size(),
            dim: segment.dim(),
            attribute_kinds: None,
        }
    }

    /// The segment holding index-wide document `doc`, and the document's id in it.
    pub fn locate(&self, doc: u32) -> Option<(&'a Segment, u32)> {
        let at = self
            .bases
            .partition_point(|&base| base <= doc)
            .checked_sub(1)?;
        let segment = self.segments.get(at)?;
        let local = doc - self.bases.get(at)?;
        ((local as usize) < segment.doc_count()).then_some((segment, local))
    }

    /// Validates `query` and `params` against the index and `limits`, then runs the pipeline;
    /// gives up with [`Error::Cancelled`] once `cancelled` is raised (checked before the first
    /// stage, before reranking and before each candidate's MaxSim).
    pub fn search(
        &self,
        query: &Query,
        params: &SearchParams,
        limits: &Limits,
        cancelled: &AtomicBool,
    ) -> Result<SearchOutput> {
        let check = || {
            if cancelled.load(Ordering::Relaxed) {
                Err(Error::Cancelled)
            } else {
                Ok(())
            }
        };
        let vectors = validate(query, params, limits, self.vocab_size, self.dim)?;
        let mut stats = SearchStats::default();

        check()?;
        let started = Instant::now();
        let mut candidates = self.first_stage(query, params.kappa, &params.first_stage)?;
        stats.candidates = candidates.len();
        stats.first_stage_us = started.elapsed().as_micros() as u64;
        check()?;

        let Some(vectors) = vectors else {
            candidates.truncate(params.k);
            let hits: Vec<Hit> = candidates
                .iter()
                .map(|c| Hit {
                    doc: c.id,
                    score: c.score,
                    sparse_score: c.score,
                    maxsim: None,
                    fused: None,
                })
                .collect();
            let explanations = if params.explain {
                let docs: Vec<u32> = hits.iter().map(|h| h.doc).collect();
                self.explain(&docs, &[], &query.terms)
            } else {
                Vec::new()
            };
            return Ok(SearchOutput {
                hits,
                stats,
                explanations,
            });
        };

        if let Some(alpha) = params.cp_alpha {
            let kept = cp_cutoff(&candidates, params.k, alpha);
            stats.pruned = candidates.len() - kept;
            candidates.truncate(kept);
        }

        let started = Instant::now();
        // Each candidate's segment and id in it, looked up once.
        let located: Vec<Option<(&Segment, u32)>> =
            candidates.iter().map(|c| self.locate(c.id)).collect();
        if params.prefetch {
            for &(segment, doc) in located.iter().flatten() {
                if segment.tokens().needs_prefetch() {
                    segment.tokens().prefetch(doc);
                }
            }
        }
        let scorer = MaxSimScorer::new(&vectors.values, vectors.dim);
        let mut top = TopK::new(params.k);
        let mut maxsim = Vec::with_capacity(candidates.len());
        let mut misses = 0usize;
        // With `explain`, `n_q` matches per scored candidate (in candidate order), and whether
        // the candidate had tokens to match (else its matches are left out).
        let n_q = scorer.query_tokens();
        let mut matches: Vec<TokenMax> = Vec::new();
        let mut matched: Vec<bool> = Vec::new();
        for (position, place) in located.iter().enumerate() {
            check()?;
            let tokens = place.and_then(|(segment, doc)| segment.tokens().doc(doc));
            let score = match (tokens, params.explain) {
                (None, _) => 0.0,
                (Some(tokens), false) => scorer.score(tokens),
                (Some(tokens), true) => {
                    let at = matches.len();
                    matches.resize(at + n_q, TokenMax::NONE);
                    scorer.score_with_matches(tokens, &mut matches[at..])
                }
            };
            if params.explain {
                if tokens.is_none() {
                    matches.resize(matches.len() + n_q, TokenMax::NONE);
                }
                matched.push(tokens.is_some_and(|t| t.tokens > 0));
            }
            maxsim.push(score);
            // Ids in the top-k are positions in the candidate list: MaxSim ties go to the
            // candidate with the better sparse rank.
            let entered = top.push(Scored {
                id: position as u32,
                score,
            });
            if let Some(beta) = params.ee_beta {
                if position >= params.k {
                    misses = if entered { 0 } else { misses + 1 };
                    if misses >= beta {
                        break;
                    }
                }
            }
        }
        stats.reranked = maxsim.len();
        let hit = |s: Scored, fused: Option<f32>| {
            let candidate = candidates[s.id as usize];
            Hit {
                doc: candidate.id,
                score: s.score,
                sparse_score: candidate.score,
                maxsim: Some(maxsim[s.id as usize]),
                fused,
            }
        };
        // Positions in the candidate list with final scores, best first.
        let (ranked, fused) = if params.fusion.is_active() {
            let sparse: Vec<f32> = candidates[..maxsim.len()].iter().map(|c| c.score).collect();
            let mut top = TopK::new(params.k);
            for (position, score) in params.fusion.fuse(&maxsim, &sparse).into_iter().enumerate() {
                top.push(Scored {
                    id: position as u32,
                    score,
                });
            }
            (top.into_sorted_vec(), true)
        } else {
            (top.into_sorted_vec(), false)
        };
        let hits = ranked
            .iter()
            .map(|&s| hit(s, fused.then_some(s.score)))
            .collect();
        let explanations = if params.explain {
            let docs: Vec<u32> = ranked
                .iter()
                .map(|s| candidates[s.id as usize].id)
                .collect();
            // Each hit's matches, or none when it had no tokens to match.
            let of = |s: &Scored| {
                let at = s.id as usize;
                if matched[at] {
                    &matches[at * n_q..(at + 1) * n_q]
                } else {
                    &[][..]
                }
            };
            let hit_matches: Vec<&[TokenMax]> = ranked.iter().map(of).collect();
            self.explain(&docs, &hit_matches, &query.terms)
        } else {
            Vec::new()
        };
        stats.rerank_us = started.elapsed().as_micros() as u64;
        Ok(SearchOutput {
            hits,
            stats,
            explanations,
        })
    }

    /// The explanations of `docs` (index-wide ids), each from its own segment, with each
    /// one's kernel matches (`matches[i]`; missing or empty for a document not reranked).
    fn explain(
        &self,
        docs: &[u32],
        matches: &[&[TokenMax]],
        terms: &[(u32, f32)],
    ) -> Vec<Explanation> {
        docs.iter()
            .enumerate()
            .map(|(i, &doc)| {
                let own = matches.get(i).copied().unwrap_or_default();
                match self.locate(doc) {
                    Some((segment, local)) => {
                        let known = segment_terms(segment, terms);
                        Explanation::for_hits(segment, &[local], [own], &known)
                            .pop()
                            .unwrap_or_default()
                    }
                    None => Explanation::default(),
                }
            })
            .collect()
    }

    /// The first stage alone over every segment: the best `kappa` documents (index-wide ids)
    /// for `query`'s sparse terms among those its filter admits, best first, with their sparse
    /// scores; each segment gives its best `kappa`, and the best `kappa` of their union are
    /// kept, so an exact first stage returns exactly what one segment holding every document
    /// would. With [`FirstStage::Approx`], segments without an approximate first stage are
    /// searched exactly. `query` must have passed validation.
    pub fn first_stage(
        &self,
        query: &Query,
        kappa: usize,
        stage: &FirstStage,
    ) -> Result<Vec<Scored>> {
        let terms: Vec<(u32, f32)> = query.terms.iter().copied().filter(|t| t.1 > 0.0).collect();
        if let (1, Some(segment)) = (self.segments.len(), self.segments.get(0)) {
            let admit = segment.admit(&query.filter)?;
            return segment.first_stage_admitted(&terms, kappa, stage, &admit);
        }
        if let FirstStage::Approx(knobs) = stage {
            knobs.validate()?;
            if self.segments.iter().all(|s| s.approx().is_none()) {
                return Err(no_approx());
            }
        }
        let elsewhere = self.attribute_kinds.filter(|kinds| !kinds.is_empty());
        let mut top = TopK::new(kappa);
        for (segment, &base) in self.segments.iter().zip(self.bases) {
            let admit = segment.admit_among(&query.filter, base, elsewhere)?;
            let here = match stage {
                FirstStage::Approx(_) if segment.approx().is_none() => FirstStage::Exact,
                other => *other,
            };
            let known = segment_terms(segment, &terms);
            for c in segment.first_stage_admitted(&known, kappa, &here, &admit)? {
                top.push(Scored {
                    id: base + c.id,
                    score: c.score,
                });
            }
        }
        Ok(top.into_sorted_vec())
    }
}

/// The query terms a segment's vocabulary holds (the others have no postings in it).
fn segment_terms(segment: &Segment, terms: &[(u32, f32)]) -> Vec<(u32, f32)> {
    let vocab = segment.vocab_size();
    terms
        .iter()
        .copied()
        .filter(|&(t, _)| (t as usize) < vocab)
        .collect()
}

fn no_approx() -> Error {
    Error::invalid(
        "first_stage",
        "this index has no approximate first stage (built with --first-stage exact)",
    )
}

impl Segment {
    /// Validates `query` and `params` against this segment and `limits`, then runs the
    /// pipeline (see [`Segments::search`]).
    pub fn search(
        &self,
        query: &Query,
        params: &SearchParams,
        limits: &Limits,
    ) -> Result<SearchOutput> {
        self.search_cancellable(query, params, limits, &AtomicBool::new(false))
    }

    /// [`Segment::search`] that gives up with [`Error::Cancelled`] once `cancelled` is raised.
    pub fn search_cancellable(
        &self,
        query: &Query,
        params: &SearchParams,
        limits: &Limits,
        cancelled: &AtomicBool,
    ) -> Result<SearchOutput> {
        Segments::one(self).search(query, params, limits, cancelled)
    }

    /// The first stage alone: the best `kappa` documents for `query`'s sparse terms among those
    /// its filter admits (never a deleted one), best first, with their sparse scores. `query`
    /// must have passed validation (see [`Segment::search`]).
    ///
    /// The approximate first stage honours filters too: when the admitted set is small (at most
    /// [`SCAN_ADMITTED_FRACTION`] of the documents) every admitted document is scored exactly
    /// instead; otherwise refused documents are dropped before rescoring, and if fewer than
    /// `kappa` candidates remain (the pruned lists held too few admitted documents) the exact
    /// first stage over the admitted set answers instead. So a filtered query returns
    /// `kappa` candidates whenever `kappa` admitted documents share a term with it.
    pub fn first_stage(
        &self,
        query: &Query,
        kappa: usize,
        stage: &FirstStage,
    ) -> Result<Vec<Scored>> {
        Segments::one(self).first_stage(query, kappa, stage)
    }

    /// The first stage over `terms` (positive weights, ids in this segment's vocabulary) among
    /// the documents `admit` lets through.
    fn first_stage_admitted(
        &self,
        terms: &[(u32, f32)],
        kappa: usize,
        stage: &FirstStage,
        admit: &Admit,
    ) -> Result<Vec<Scored>> {
        match stage {
            FirstStage::Exact => Ok(self.postings().search_exact(terms, kappa, admit)),
            FirstStage::Approx(knobs) => {
                let approx = self.approx().ok_or_else(no_approx)?;
                knobs.validate()?;
                if let Admit::Only(allowed) = admit {
                    if (allowed.len() as f64) <= SCAN_ADMITTED_FRACTION * self.doc_count() as f64 {
                        return Ok(approx.search_within(terms, kappa, allowed));
                    }
                }
                let found = approx.search(terms, kappa, knobs, admit);
                if found.len() < kappa && !admit.is_all() {
                    return Ok(self.postings().search_exact(terms, kappa, admit));
                }
                Ok(found)
            }
        }
    }
}

/// Checks every field; returns the token vectors to rerank with (`None` when not reranking).
fn validate<'q>(
    query: &'q Query,
    params: &SearchParams,
    limits: &Limits,
    vocab: usize,
    dim: usize,
) -> Result<Option<&'q QueryVectors>> {
    if params.k == 0 {
        return Err(Error::invalid("k", "must be >= 1"));
    }
    if params.k > limits.max_k {
        return Err(Error::invalid(
            "k",
            format!(
                "{} exceeds the server limit max_k = {}",
                params.k, limits.max_k
            ),
        ));
    }
    if params.kappa < params.k {
        return Err(Error::invalid(
            "kappa",
            format!("kappa = {} is smaller than k = {}", params.kappa, params.k),
        ));
    }
    if params.kappa > limits.max_kappa {
        return Err(Error::invalid(
            "kappa",
            format!(
                "{} exceeds the server limit max_kappa = {}",
                params.kappa, limits.max_kappa
            ),
        ));
    }
    if let Some(alpha) = params.cp_alpha {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::invalid(
                "cp_alpha",
                format!("{alpha} is not in [0, 1]"),
            ));
        }
    }
    if params.ee_beta == Some(0) {
        return Err(Error::invalid("ee_beta", "must be >= 1"));
    }
    params.fusion.validate()?;
    if query.terms.len() > limits.max_query_terms {
        return Err(Error::invalid(
            "query.sparse",
            format!(
                "{} terms exceed the server limit max_query_terms = {}",
                query.terms.len(),
                limits.max_query_terms
            ),
        ));
    }
    let mut ids: Vec<u32> = Vec::with_capacity(query.terms.len());
    for (i, &(term, weight)) in query.terms.iter().enumerate() {
        if term as usize >= vocab {
            return Err(Error::invalid(
                format!("query.sparse.indices[{i}]"),
                format!("term id {term} is out of range (vocabulary size {vocab})"),
            ));
        }
        check_term_weight(weight)
            .map_err(|message| Error::invalid(format!("query.sparse.values[{i}]"), message))?;
        ids.push(term);
    }
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::invalid(
            "query.sparse.indices",
            format!("term id {} appears more than once", w[0]),
        ));
    }
    if params.rerank {
        let Some(vectors) = &query.vectors else {
            return Err(Error::invalid(
                "query.vectors",
                "token vectors are required to rerank (or ask for no reranking)",
            ));
        };
        validate_vectors(vectors, limits, dim)?;
        return Ok(Some(vectors));
    }
    Ok(None)
}
fn validate_vectors(vectors: &QueryVectors, limits: &Limits, dim: usize) -> Result<()> {
    if vectors.dim != dim {
        return Err(Error::invalid(
            "query.vectors.dim",
            format!("{} does not match the index dim {}", vectors.dim, dim),
        ));
    }
    if vectors.values.is_empty() || !vectors.values.len().is_multiple_of(vectors.dim) {
        return Err(Error::invalid(
            "query.vectors",
            format!(
                "{} values is not a positive multiple of dim {}",
                vectors.values.len(),
                vectors.dim
            ),
        ));
    }
    let rows = vectors.values.len() / vectors.dim;
    if rows > limits.max_query_tokens {
        return Err(Error::invalid(
            "query.vectors",
            format!(
                "{rows} token vectors exceed the server limit max_query_tokens = {}",
                limits.max_query_tokens
            ),
        ));
    }
    if let Some(i) = vectors
        .values
        .iter()
        .position(|v| !(v.is_finite() && v.abs() <= MAX_VECTOR_VALUE))
    {
        return Err(Error::invalid(
            "query.vectors",
            format!(
                "value {} (token {}, dimension {}) is not finite or exceeds ±{MAX_VECTOR_VALUE}",
                vectors.values[i],
                i / vectors.dim,
                i % vectors.dim
            ),
        ));
    }
    Ok(())
}

/// Parses a knob that can be switched off, as command lines spell it: `off` is `None`, anything
/// else must parse as a `T`.
pub fn parse_off<T: std::str::FromStr>(value: &str) -> std::result::Result<Option<T>, String> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{value:?} is neither `off` nor a number"))
}

/// CP(α): how many of the (sparse-sorted) candidates to keep, given k. The first k are always
/// kept; after them, candidates scoring below (1 − α) × the k-th score are dropped.
pub fn cp_cutoff(candidates: &[Scored], k: usize, alpha: f32) -> usize {
    let Some(kth) = candidates.get(k.saturating_sub(1)) else {
        return candidates.len();
    };
    let threshold = (1.0 - alpha) * kth.score;
    k + candidates[k..]
        .iter()
        .take_while(|c| c.score >= threshold)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_weights_must_be_finite_non_negative_and_bounded() {
        for ok in [0.0, 1.5, MAX_TERM_WEIGHT] {
            assert_eq!(check_term_weight(ok), Ok(()), "{ok}");
        }
        for bad in [-0.1, f32::NAN, f32::INFINITY] {
            let message = check_term_weight(bad).unwrap_err();
            assert!(message.contains("finite and >= 0"), "{message}");
        }
        let message = check_term_weight(f32::MAX).unwrap_err();
        assert!(message.ends_with("exceeds the limit of 1e6"), "{message}");
    }

    #[test]
    fn cp_keeps_first_k_and_those_near_the_kth() {
        let scored: Vec<Scored> = [10.0, 9.0, 8.0, 7.9, 7.5, 1.0]
            .iter()
            .enumerate()
            .map(|(i, &score)| Scored {
                id: i as u32,
                score,
            })
            .collect();
        assert_eq!(cp_cutoff(&scored, 3, 0.0), 3);
        assert_eq!(cp_cutoff(&scored, 3, 0.05), 4);
        assert_eq!(cp_cutoff(&scored, 3, 1.0), 6);
        assert_eq!(cp_cutoff(&scored[..2], 3, 0.05), 2);
    }
}
