//! Query files: queries JSONL (`{"id", "text", "vector": {token: weight}}`) plus, for
//! reranking, their token vectors (`.npy` `[total_tokens, dim]`) and counts (`.npy` `[queries]`);
//! or, for text queries, the JSONL's `id` and `text` fields only (the server encodes them).

use anyhow::{bail, Context};
use std::path::Path;
use tandem_data::jsonl::{parse_all, SparseRecord};
use tandem_data::npy::{row_offsets, NpyArray, NpyDType};
use tandem_proto::v1::{FirstStage, FusionMethod, Query, Rerank, SearchRequest, TokenVectors};

/// Loaded queries, in file order.
pub struct QuerySet {
    /// The sparse side of each query.
    pub records: Vec<SparseRecord>,
    /// Each query's token vectors (row-major) when vectors were given.
    pub vectors: Option<Vec<Vec<f32>>>,
    /// Dimensions per token vector (0 without vectors).
    pub dim: usize,
    /// Each query's text, when the queries are sent as text (then nothing else is sent).
    pub texts: Option<Vec<String>>,
}

/// Knobs sent with every query.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryKnobs {
    /// Results per query (`None`: server default).
    pub k: Option<u32>,
    /// Candidates reranked (`None`: server default).
    pub kappa: Option<u32>,
    /// CP(α) (`None`: server default; 1 keeps every candidate).
    pub cp_alpha: Option<f32>,
    /// EE(β) (`None`: server default; 0 turns early exit off).
    pub ee_beta: Option<u32>,
    /// Fusion method (`Unspecified`: server default).
    pub fusion_method: FusionMethod,
    /// Weight of the sparse score in the fused score (`None`: server default; 0: MaxSim alone).
    pub fusion_weight: Option<f32>,
    /// RRF constant (`None`: server default).
    pub rrf_k: Option<f32>,
    /// Skip reranking (sparse scores only).
    pub sparse_only: bool,
    /// The first stage (`Unspecified`: the index default).
    pub first_stage: FirstStage,
    /// Approximate first stage: query terms walked.
    pub query_cut: Option<u32>,
    /// Approximate first stage: documents rescored exactly.
    pub rescore: Option<u32>,
    /// Approximate first stage: clusters expanded.
    pub expand: Option<u32>,
    /// Approximate first stage: postings walked per query term.
    pub depth: Option<u32>,
}

impl QuerySet {
    /// Loads `queries` and, when given, the token vectors and counts, checking they agree.
    pub fn load(
        queries: &Path,
        vectors: Option<&Path>,
        lens: Option<&Path>,
    ) -> anyhow::Result<QuerySet> {
        let text = std::fs::read_to_string(queries)
            .with_context(|| format!("cannot read {}", queries.display()))?;
        let records = parse_all(&text, &queries.display().to_string())?;
        let (vectors, dim) = match (vectors, lens) {
            (None, None) => (None, 0),
            (Some(vectors), Some(lens)) => {
                let (per_query, dim) = load_vectors(vectors, lens, records.len())?;
                (Some(per_query), dim)
            }
            _ => bail!("--query-vectors and --query-lens go together"),
        };
        Ok(QuerySet {
            records,
            vectors,
            dim,
            texts: None,
        })
    }

    /// Loads text queries: each line's `id` and `text` (a non-empty string); any other field
    /// is ignored. Errors name the file, line and field.
    pub fn load_texts(queries: &Path) -> anyhow::Result<QuerySet> {
        let text = std::fs::read_to_string(queries)
            .with_context(|| format!("cannot read {}", queries.display()))?;
        let mut records = Vec::new();
        let mut texts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", queries.display(), i + 1);
            let value: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}: invalid record", at()))?;
            let id = match value.get("id") {
                Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
                Some(serde_json::Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                Some(other) => bail!(
                    "{}: field `id` must be a non-empty string or an integer, got {other}",
                    at()
                ),
                None => bail!("{}: field `id` is missing", at()),
            };
            match value.get("text") {
                Some(serde_json::Value::String(t)) if !t.trim().is_empty() => texts.push(t.clone()),
                Some(serde_json::Value::String(_)) => bail!("{}: field `text` is empty", at()),
                Some(other) => bail!("{}: field `text` must be a string, got {other}", at()),
                None => bail!("{}: field `text` is missing (needed with --text)", at()),
            }
            records.push(SparseRecord {
                id,
                terms: Vec::new(),
                text: None,
                attrs: Vec::new(),
            });
        }
        Ok(QuerySet {
            records,
            vectors: None,
            dim: 0,
            texts: Some(texts),
        })
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no queries.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The request for query `i`.
    pub fn request(&self, i: usize, knobs: &QueryKnobs) -> SearchRequest {
        let record = &self.records[i];
        let vectors = if knobs.sparse_only {
            None
        } else {
            self.vectors.as_ref().map(|all| TokenVectors {
                dim: self.dim as u32,
                values: all[i].clone(),
                f16_le: Vec::new(),
                f32_le: Vec::new(),
            })
        };
        let query = match &self.texts {
            Some(texts) => Query {
                text: texts[i].clone(),
                ..Query::default()
            },
            None => Query {
                sparse: None,
                sparse_tokens: record.terms.iter().cloned().collect(),
                vectors,
                text: String::new(),
            },
        };
        SearchRequest {
            query: Some(query),
            k: knobs.k,
            kappa: knobs.kappa,
            cp_alpha: knobs.cp_alpha,
            ee_beta: knobs.ee_beta,
            rerank: if knobs.sparse_only {
                Rerank::None as i32
            } else {
                Rerank::Maxsim as i32
            },
            query_id: record.id.clone(),
            first_stage: knobs.first_stage as i32,
            query_cut: knobs.query_cut,
            rescore: knobs.rescore,
            expand: knobs.expand,
            depth: knobs.depth,
            fusion_method: knobs.fusion_method as i32,
            fusion_weight: knobs.fusion_weight,
            rrf_k: knobs.rrf_k,
            ..SearchRequest::default()
        }
    }
}

fn load_vectors(
    vectors: &Path,
    lens: &Path,
    queries: usize,
) -> anyhow::Result<(Vec<Vec<f32>>, usize)> {
    let matrix = NpyArray::open(vectors)?;
    let (rows, dim) = matrix.matrix_shape()?;
    if !matches!(matrix.dtype(), NpyDType::F32 | NpyDType::F16) {
        bail!(
            "{}: query vectors must be float32 or float16, got {}",
            vectors.display(),
            matrix.dtype().name()
        );
    }
    let counts = NpyArray::open(lens)?.to_u64_vec()?;
    if counts.len() != queries {
        bail!(
            "{}: {} token counts for {queries} queries",
            lens.display(),
            counts.len()
        );
    }
    let offsets = row_offsets(&counts, lens)?;
    let total = offsets.last().copied().unwrap_or(0);
    if total != rows as u64 {
        bail!(
            "{}: token counts sum to {total} but {} has {rows} rows",
            lens.display(),
            vectors.display()
        );
    }
    let mut per_query = Vec::with_capacity(queries);
    for range in offsets.windows(2) {
        let mut values = Vec::new();
        matrix.rows_f32(range[0] as usize..range[1] as usize, None, &mut values)?;
        per_query.push(values);
    }
    Ok((per_query, dim))
}
