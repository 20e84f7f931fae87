//! MaxSim scoring of candidates: the query's token vectors against each document's packed
//! token vectors, with the fastest kernel this CPU supports (see [`crate::kernels`]).

use crate::kernels::{self, KernelKind, TokenMax};
use crate::tokens::DocTokens;

/// Scores documents against one query's token vectors.
pub struct MaxSimScorer<'q> {
    query: &'q [f32],
    rows: usize,
    dim: usize,
    kernel: KernelKind,
}

impl<'q> MaxSimScorer<'q> {
    /// A scorer for `query` (`n × dim` values, row-major; `dim` > 0 and `query.len()` a
    /// multiple of it, as the pipeline validates), using the detected kernel.
    pub fn new(query: &'q [f32], dim: usize) -> Self {
        MaxSimScorer {
            query,
            rows: query.len() / dim.max(1),
            dim,
            kernel: kernels::detect(),
        }
    }

    /// MaxSim of the query against a document: Σ over query tokens of the best dot product with
    /// any of the document's tokens. A document without tokens scores 0.
    pub fn score(&self, doc: DocTokens<'_>) -> f32 {
        doc.maxsim(self.kernel, self.query, self.rows, self.dim)
    }

    /// Query tokens (rows of the query's vectors).
    pub fn query_tokens(&self) -> usize {
        self.rows
    }

    /// [`MaxSimScorer::score`] that also writes, for each query token, its best document token
    /// and their dot product into `matches` (one per query token; left as they were for a
    /// document without tokens). The total is bit for bit the one [`MaxSimScorer::score`]
    /// returns.
    ///
    /// # Panics
    ///
    /// If `matches` does not hold one entry per query token.
    pub fn score_with_matches(&self, doc: DocTokens<'_>, matches: &mut [TokenMax]) -> f32 {
        doc.maxsim_matches(self.kernel, self.query, self.rows, self.dim, matches)
    }
}
