//! Query files shared by the benchmarks: an index, its queries (JSONL) and their token vectors.

use anyhow::Context;
use std::path::PathBuf;
use tandem_engine::jsonl::parse_all;
use tandem_engine::npy::{row_offsets, NpyArray};
use tandem_engine::{Index, Query, QueryVectors};

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
pub fn load_queries(files: &QueryFiles, index: &Index) -> anyhow::Result<Vec<(String, Query)>> {
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
    Ok(records
        .iter()
        .zip(offsets.windows(2))
        .map(|(record, range)| {
            let (terms, _) =
                index.resolve_terms(record.terms.iter().map(|(t, w)| (t.as_str(), *w)));
            let mut values = Vec::new();
            matrix.rows_f32(range[0] as usize..range[1] as usize, None, &mut values);
            let query = Query {
                terms,
                vectors: Some(QueryVectors { values, dim }),
            };
            (record.id.clone(), query)
        })
        .collect())
}
