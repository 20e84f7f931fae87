//! `tandem-server --demo`: build a small demo index on first start, then show a query working.
//!
//! The demo uses the scifact eval set when it is present (by default at
//! `../shared/evalsets/scifact`), otherwise a synthetic corpus from the engine's generator.

use anyhow::Context;
use std::path::{Path, PathBuf};
use tandem_data::jsonl::parse_all;
use tandem_data::npy::{row_offsets, NpyArray};
use tandem_data::synth::{generate, SynthConfig};
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::format::files;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{Query, SearchRequest, TokenVectors};

/// Input files of the demo corpus.
#[derive(Debug, Clone)]
pub struct DemoCorpus {
    /// Where the corpus came from, for the log.
    pub source: String,
    /// Documents JSONL.
    pub docs: PathBuf,
    /// Document token vectors and counts.
    pub vectors: PathBuf,
    /// Tokens per document.
    pub lens: PathBuf,
    /// Vocabulary file.
    pub vocab: PathBuf,
    /// int8 scale of the vectors, if int8.
    pub int8_scale: Option<f32>,
    /// Queries JSONL, their vectors and counts.
    pub queries: PathBuf,
    /// Query token vectors.
    pub query_vectors: PathBuf,
    /// Tokens per query.
    pub query_lens: PathBuf,
}

/// The synthetic demo corpus. A query is judged relevant to the documents of its topic, and a
/// query whose topic drew no document is left out of `qrels.trec`; with 10,000 documents over
/// the generator's 1,024 topics every one of the 20 queries has relevant documents (tested),
/// so the query file and the qrels agree.
fn synthetic_config() -> SynthConfig {
    SynthConfig {
        docs: 10_000,
        queries: 20,
        seed: 42,
        dim: Some(64),
        tokens_per_doc: 32,
        query_tokens: 16,
    }
}

/// Chooses the demo corpus: the scifact eval set at `evalset` if it exists, else a synthetic
/// corpus generated (once) under `work_dir`.
pub fn corpus(work_dir: &Path, evalset: &Path) -> anyhow::Result<DemoCorpus> {
    if evalset.join("docs.jsonl").exists() {
        return Ok(DemoCorpus {
            source: format!("the scifact eval set at {}", evalset.display()),
            docs: evalset.join("docs.jsonl"),
            vectors: evalset.join("doc_vectors.npy"),
            lens: evalset.join("doc_lens.npy"),
            vocab: evalset.join("vocab.txt"),
            int8_scale: Some(1.0 / 127.0),
            queries: evalset.join("queries.jsonl"),
            query_vectors: evalset.join("query_vectors.npy"),
            query_lens: evalset.join("query_lens.npy"),
        });
    }
    let dir = work_dir.join("synthetic");
    if !dir.join("query_lens.npy").exists() {
        tracing::info!(dir = %dir.display(), "generating a synthetic demo corpus");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        generate(&synthetic_config(), &dir, &|_| {})?;
    }
    Ok(DemoCorpus {
        source: format!("a synthetic corpus in {}", dir.display()),
        docs: dir.join("docs.jsonl"),
        vectors: dir.join("doc_vectors.npy"),
        lens: dir.join("doc_lens.npy"),
        vocab: dir.join("vocab.txt"),
        int8_scale: None,
        queries: dir.join("queries.jsonl"),
        query_vectors: dir.join("query_vectors.npy"),
        query_lens: dir.join("query_lens.npy"),
    })
}

/// Builds the demo index under `work_dir` unless a finished one is already there.
pub fn index(work_dir: &Path, corpus: &DemoCorpus) -> anyhow::Result<PathBuf> {
    let out = work_dir.join("index");
    let existing = out.join(files::MANIFEST).exists();
    if existing {
        // Reuse the index of an earlier start unless this version cannot open it (e.g. it was
        // built by an older tandem) or it lacks the approximate first stage (older demo indexes
        // were exact-only); then build it again in its place.
        match tandem_engine::Index::open_with(&out, tandem_engine::Verify::SkipChecksums) {
            Ok(index) if index.primary().approx().is_some() => return Ok(out),
            Ok(_) => tracing::info!(
                "the existing demo index has no approximate first stage; rebuilding it"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "the existing demo index cannot be opened; rebuilding it")
            }
        }
    }
    tracing::info!(from = %corpus.source, out = %out.display(), "building the demo index");
    let config = BuildConfig {
        docs: corpus.docs.clone(),
        vectors: corpus.vectors.clone(),
        lens: corpus.lens.clone(),
        int8_scale: corpus.int8_scale,
        vocab: Some(corpus.vocab.clone()),
        token_ids: false,
        out: out.clone(),
        overwrite: existing,
        approx: Some(tandem_engine::approx::ApproxSettings::default()),
        codec: tandem_engine::tokens::Codec::F16,
        doc_tokens: None,
    };
    let summary = build_index(&config, &NoProgress)?;
    tracing::info!(
        seconds = summary.seconds,
        docs = summary.manifest.doc_count,
        "demo index built"
    );
    Ok(out)
}

/// Queries shown by the demo.
const SHOWN: usize = 3;

/// Sends the first queries of the demo corpus to the server at `addr` (plain gRPC through the
/// generated client, as any user's program would) and prints the answers, then how to run the
/// whole query set with the CLI.
pub async fn show_queries(addr: &str, corpus: &DemoCorpus) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&corpus.queries)
        .with_context(|| format!("cannot read {}", corpus.queries.display()))?;
    let records = parse_all(&text, &corpus.queries.display().to_string())?;
    let vectors = NpyArray::open(&corpus.query_vectors)?;
    let (_, dim) = vectors.matrix_shape()?;
    let lens = NpyArray::open(&corpus.query_lens)?.to_u64_vec()?;
    let offsets = row_offsets(&lens, &corpus.query_lens)?;
    let mut client = SearchClient::connect(addr.to_string())
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let mut shown = String::new();
    for (record, range) in records.iter().zip(offsets.windows(2)).take(SHOWN) {
        let mut values = Vec::new();
        vectors.rows_f32(range[0] as usize..range[1] as usize, None, &mut values)?;
        let request = SearchRequest {
            query: Some(Query {
                sparse_tokens: record.terms.iter().cloned().collect(),
                vectors: Some(TokenVectors {
                    dim: dim as u32,
                    values,
                    f16_le: Vec::new(),
                    f32_le: Vec::new(),
                }),
                ..Query::default()
            }),
            k: Some(3),
            query_id: record.id.clone(),
            ..SearchRequest::default()
        };
        let reply = client.search(request).await?.into_inner();
        let title = record.text.as_deref().unwrap_or("(synthetic query)");
        shown.push_str(&format!("\n  query {} {title:?}\n", record.id));
        for hit in &reply.hits {
            shown.push_str(&format!(
                "    doc {:<10} score {:8.4}  (maxsim {:7.4}, sparse {:8.4})\n",
                hit.doc_id,
                hit.score,
                hit.maxsim_score.unwrap_or(f32::NAN),
                hit.sparse_score
            ));
        }
    }
    let qrels = corpus.queries.with_file_name("qrels.trec");
    let eval = if qrels.exists() {
        format!(
            "\n  cargo run -q --bin tandem-bench -- eval --run run.trec --qrels {}",
            qrels.display()
        )
    } else {
        String::new()
    };
    println!(
        "demo queries over gRPC at {addr} (k = 3, server-default kappa):{shown}\nrun every query and score the run:\n  cargo run -q --bin tandem -- search --addr {addr} --queries {} --query-vectors {} --query-lens {} --out run.trec{eval}\n",
        corpus.queries.display(),
        corpus.query_vectors.display(),
        corpus.query_lens.display(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_synthetic_demo_query_is_judged() {
        let work = tempfile::tempdir().unwrap();
        let corpus = corpus(work.path(), &work.path().join("no-evalset")).unwrap();
        let queries = std::fs::read_to_string(&corpus.queries).unwrap();
        let records = parse_all(&queries, "queries.jsonl").unwrap();
        let qrels = std::fs::read_to_string(corpus.queries.with_file_name("qrels.trec")).unwrap();
        let judged: std::collections::HashSet<&str> = qrels
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        assert_eq!(records.len(), 20);
        for record in &records {
            assert!(
                judged.contains(record.id.as_str()),
                "{} has no qrels",
                record.id
            );
        }
    }
}
