//! Query files shared by the benchmarks: an index, its queries (JSONL) and their token vectors.

use anyhow::Context;
use std::path::PathBuf;
use tandem_data::jsonl::parse_all;
use tandem_data::npy::{row_offsets, NpyArray};
use tandem_engine::{Limits, Query, QueryVectors, SearchParams, Segment};
use tandem_eval::{evaluate, Metrics, Qrels, Run};

/// The index and query files a benchmark runs over.
#[derive(Debug, clap::Args)]
pub struct QueryFiles {
    /// The index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// Queries JSONL.
    #[arg(long)]
    pub queries: PathBuf,
    /// Query token vectors (.npy [tokens, dim], float32 or float16).
    #[arg(long)]
    pub query_vectors: PathBuf,
    /// Token vectors per query (.npy [queries]).
    #[arg(long)]
    pub query_lens: PathBuf,
}

/// Loads every query with its id: sparse terms resolved through `index` (unknown tokens
/// dropped) and token vectors, checking their dim against the index.
pub fn load_queries(files: &QueryFiles, index: &Segment) -> anyhow::Result<Vec<(String, Query)>> {
    let text = std::fs::read_to_string(&files.queries)
        .with_context(|| format!("cannot read {}", files.queries.display()))?;
    let records = parse_all(&text, &files.queries.display().to_string())?;
    let matrix = NpyArray::open(&files.query_vectors)?;
    let (_, dim) = matrix.matrix_shape()?;
    anyhow::ensure!(
        dim == index.dim(),
        "{}: query vectors have dim {dim}, the index {}",
        files.query_vectors.display(),
        index.dim()
    );
    let lens = NpyArray::open(&files.query_lens)?.to_u64_vec()?;
    anyhow::ensure!(
        lens.len() == records.len(),
        "{}: {} token counts for {} queries",
        files.query_lens.display(),
        lens.len(),
        records.len()
    );
    let offsets = row_offsets(&lens, &files.query_lens)?;
    records
        .iter()
        .zip(offsets.windows(2))
        .map(|(record, range)| {
            let (terms, _) =
                index.resolve_terms(record.terms.iter().map(|(t, w)| (t.as_str(), *w)));
            let mut values = Vec::new();
            matrix.rows_f32(range[0] as usize..range[1] as usize, None, &mut values)?;
            let query = Query {
                terms,
                vectors: Some(QueryVectors { values, dim }),
                filter: Default::default(),
            };
            Ok((record.id.clone(), query))
        })
        .collect()
}

/// The quality and rerank work of one pipeline configuration over a query set.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The run's measures against the qrels.
    pub metrics: Metrics,
    /// Candidates scored by MaxSim per query (mean).
    pub reranked_per_query: f64,
    /// Microseconds in the rerank stage per query (mean over every timed pass).
    pub rerank_us_per_query: f64,
}

/// Runs every query with `params` (`passes` times; the ranking of the first pass is scored)
/// and measures the result against `qrels`. Limits are lifted so any κ can be measured.
pub fn measure(
    index: &Segment,
    queries: &[(String, Query)],
    qrels: &Qrels,
    params: &SearchParams,
    passes: usize,
) -> anyhow::Result<Measured> {
    let limits = Limits {
        max_kappa: usize::MAX,
        ..Limits::default()
    };
    let (mut rerank_us, mut reranked) = (0u64, 0usize);
    let mut ranked = Vec::with_capacity(queries.len());
    let passes = passes.max(1);
    for pass in 0..passes {
        for (id, query) in queries {
            let out = index.search(query, params, &limits)?;
            rerank_us += out.stats.rerank_us;
            reranked += out.stats.reranked;
            if pass == 0 {
                let hits = out
                    .hits
                    .iter()
                    .map(|h| {
                        let doc = index.external_id(h.doc).unwrap_or_default();
                        (doc.to_string(), f64::from(h.score))
                    })
                    .collect();
                ranked.push((id.clone(), hits));
            }
        }
    }
    let runs = (queries.len() * passes).max(1) as f64;
    Ok(Measured {
        metrics: evaluate(&Run::from_ranked(ranked), qrels, false),
        reranked_per_query: reranked as f64 / runs,
        rerank_us_per_query: rerank_us as f64 / runs,
    })
}
