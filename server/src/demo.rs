//! `tandem-server --demo`: build a small demo index on first start, then show a query working.
//!
//! The demo uses the scifact eval set when it is present (by default at
//! `../shared/evalsets/scifact`), otherwise a synthetic corpus from the engine's generator.

use anyhow::Context;
use std::path::{Path, PathBuf};
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::format::files;
use tandem_engine::synth::{generate, SynthConfig};

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
        let config = SynthConfig {
            docs: 3000,
            queries: 20,
            seed: 42,
            dim: Some(64),
            tokens_per_doc: 32,
            query_tokens: 16,
        };
        generate(&config, &dir, &|_| {})?;
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
            Ok(index) if index.approx().is_some() => return Ok(out),
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
    };
    let summary = build_index(&config, &NoProgress)?;
    tracing::info!(
        seconds = summary.seconds,
        docs = summary.manifest.doc_count,
        "demo index built"
    );
    Ok(out)
}

/// Sends the first queries of the demo corpus to the server at `addr` and prints the answers,
/// then how to run the whole query set with the CLI.
pub async fn show_queries(addr: &str, corpus: &DemoCorpus) -> anyhow::Result<()> {
    let queries = QuerySet::load(
        &corpus.queries,
        Some(&corpus.query_vectors),
        Some(&corpus.query_lens),
    )?;
    let mut client = TandemClient::connect(addr).await?;
    let knobs = QueryKnobs {
        k: Some(3),
        ..QueryKnobs::default()
    };
    let mut shown = String::new();
    for i in 0..queries.len().min(3) {
        let record = &queries.records[i];
        let reply = client.search(queries.request(i, &knobs)).await?;
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
