//! The `tandem-bench` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use tandem_data::resample::{resample, ResampleConfig, SHORT_DOC_TERMS, SHORT_QUERY_TERMS};
use tandem_data::synth::{generate, SynthConfig};
use tandem_eval::{evaluate, Qrels, Run};

/// Benchmarks and evaluation for tandem.
#[derive(Debug, Parser)]
#[command(name = "tandem-bench", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score a TREC run against TREC qrels (trec_eval semantics): nDCG@10, Recall@10/100, MRR@10.
    Eval(EvalArgs),
    /// Generate a deterministic synthetic corpus in the eval-set layout, from the built-in model
    /// or (`--from DIR`) resampled from a real encoded eval set.
    Gen(GenArgs),
    /// Latency of filtered queries (selectivities via random include sets, or an attribute
    /// expression) against unfiltered ones, in process.
    Filter(crate::filter::FilterArgs),
    /// Latency and accuracy of the first stage, in process.
    FirstStage(crate::first_stage::FirstStageArgs),
    /// MaxSim kernel throughput on real candidates (ns/candidate, GFLOP/s, % of FMA peak).
    Rerank(crate::rerank::RerankArgs),
    /// The CP(α)/EE(β) trade-off over κ: nDCG@10 and rerank work per query.
    Sweep(crate::sweep::SweepArgs),
    /// Score fusion: nDCG@10 over methods, weights and κ, and the stability of one setting.
    Fusion(crate::fusion::FusionArgs),
    /// The token-level gather-and-refine baseline (HNSW over every document token, then exact
    /// MaxSim) next to tandem's two-stage path: quality, candidates scored and latency.
    TokenGather(crate::token_gather::TokenGatherArgs),
    /// Text queries: encoding time per query of each encoder (1 and 2 threads), and quality
    /// and end-to-end latency with the neural encoders and with the inference-free one.
    Encoders(crate::encoders::EncodersArgs),
    /// Load-test a running server (closed or open loop), with latency percentiles and quality.
    Load(Box<crate::load::LoadArgs>),
    /// Live writes: documents/s a running server takes over gRPC (Upsert batches from
    /// concurrent writers), time until searchable, and query latency idle and during ingest.
    Ingest(Box<crate::ingest::IngestArgs>),
    /// Compare two load reports (JSON from `load --json`).
    Compare {
        /// The baseline report.
        a: PathBuf,
        /// The report compared with it.
        b: PathBuf,
    },
}

/// Arguments of `tandem-bench eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The run: `qid Q0 docid rank score tag` per line.
    #[arg(long)]
    pub run: PathBuf,
    /// The judgments: `qid iter docid rel` per line.
    #[arg(long)]
    pub qrels: PathBuf,
    /// Average over every judged query, counting queries missing from the run as 0 (trec_eval -c).
    #[arg(long)]
    pub complete: bool,
    /// Print the measures as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `tandem-bench gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Documents to generate.
    #[arg(long)]
    pub docs: usize,
    /// Queries to generate.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Seed: the same seed gives byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Token-vector dimensions; without it only the sparse files are written. Not with `--from`
    /// (see `--token-vectors`).
    #[arg(long, conflicts_with = "from")]
    pub dim: Option<usize>,
    /// Mean token vectors per document.
    #[arg(long, default_value_t = 64)]
    pub tokens_per_doc: usize,
    /// Mean token vectors per query.
    #[arg(long, default_value_t = 32)]
    pub query_tokens: usize,
    /// Resample this real encoded eval set (`docs.jsonl`, `queries.jsonl`, `vocab.txt`,
    /// `qrels.trec`) instead of using the built-in model: documents and queries are perturbed
    /// copies of the source's, keeping its term popularity, lengths, weights and topical
    /// clusters (see `tandem_data::resample`).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With `--from`: `source` keeps the source's lengths, `short` cuts documents to ~100
    /// terms and queries to ~20 (their heaviest, with noise).
    #[arg(long, value_enum, requires = "from")]
    pub shape: Option<Shape>,
    /// With `--from`: mean terms per document (the heaviest kept); overrides `--shape`.
    #[arg(long, requires = "from")]
    pub doc_terms: Option<usize>,
    /// With `--from`: mean terms per query (the heaviest kept); overrides `--shape`.
    #[arg(long, requires = "from")]
    pub query_terms: Option<usize>,
    /// With `--from`: also write token vectors, perturbed from the source's (its dimension).
    #[arg(long, requires = "from")]
    pub token_vectors: bool,
}

/// Length shapes of a resampled corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// The source's own lengths (scifact: ~274 terms per document, ~49 per query).
    #[value(alias = "scifact")]
    Source,
    /// A short-document corpus: ~100 terms per document, ~20 per query.
    Short,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Eval(args) => eval(&args),
        Command::Gen(args) => gen(&args),
        Command::Filter(args) => crate::filter::filter(&args),
        Command::FirstStage(args) => crate::first_stage::first_stage(&args),
        Command::Rerank(args) => crate::rerank::rerank(&args),
        Command::Sweep(args) => crate::sweep::sweep(&args),
        Command::Fusion(args) => crate::fusion::fusion(&args),
        Command::TokenGather(args) => crate::token_gather::token_gather(&args),
        Command::Encoders(args) => crate::encoders::encoders(&args),
        Command::Load(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(crate::load::load(&args)),
        Command::Ingest(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(crate::ingest::ingest(&args))
            .map(|_| ()),
        Command::Compare { a, b } => {
            let (a, b) = (
                crate::load::report::read(&a)?,
                crate::load::report::read(&b)?,
            );
            print!("{}", crate::load::report::compare(&a, &b));
            Ok(())
        }
    }
}

fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let run = Run::from_path(&args.run)?;
    let qrels = Qrels::from_path(&args.qrels)?;
    let m = evaluate(&run, &qrels, args.complete);
    if args.json {
        let report = serde_json::json!({
            "queries": m.queries,
            "ndcg_at_10": m.ndcg_at_10,
            "recall_at_10": m.recall_at_10,
            "recall_at_100": m.recall_at_100,
            "mrr_at_10": m.mrr_at_10,
            "mrr": m.mrr,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("queries     {}", m.queries);
        println!("nDCG@10     {:.4}", m.ndcg_at_10);
        println!("Recall@10   {:.4}", m.recall_at_10);
        println!("Recall@100  {:.4}", m.recall_at_100);
        println!("MRR@10      {:.4}", m.mrr_at_10);
        println!("MRR         {:.4}", m.mrr);
    }
    Ok(())
}

fn gen(args: &GenArgs) -> anyhow::Result<()> {
    if let Some(from) = &args.from {
        return gen_from(args, from);
    }
    let config = SynthConfig {
        docs: args.docs,
        queries: args.queries,
        seed: args.seed,
        dim: args.dim,
        tokens_per_doc: args.tokens_per_doc,
        query_tokens: args.query_tokens,
    };
    let bar = progress_bar(args.docs);
    let summary = generate(&config, &args.out, &|done| bar.set_position(done))?;
    bar.finish();
    println!(
        "wrote {}: {} documents ({} postings, {} token vectors), {} queries ({} token vectors)",
        args.out.display(),
        summary.docs,
        summary.postings,
        summary.doc_tokens,
        summary.queries,
        summary.query_tokens
    );
    Ok(())
}

fn progress_bar(docs: usize) -> ProgressBar {
    let bar = ProgressBar::new(docs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "generate [{bar:40}] {pos}/{len} docs {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// `gen --from`: the resampler.
fn gen_from(args: &GenArgs, from: &std::path::Path) -> anyhow::Result<()> {
    let (doc_terms, query_terms) = match args.shape {
        Some(Shape::Short) => (Some(SHORT_DOC_TERMS), Some(SHORT_QUERY_TERMS)),
        Some(Shape::Source) | None => (None, None),
    };
    let config = ResampleConfig {
        docs: args.docs,
        queries: args.queries,
        seed: args.seed,
        doc_terms: args.doc_terms.or(doc_terms),
        query_terms: args.query_terms.or(query_terms),
        token_vectors: args.token_vectors,
    };
    let bar = progress_bar(args.docs);
    let s = resample(&config, from, &args.out, &|done| bar.set_position(done))?;
    bar.finish();
    println!(
        "wrote {}: {} documents ({} postings, {:.1} terms each; source {:.1}; {} token vectors), {} queries ({:.1} terms each; source {:.1}; {} token vectors), {} judgments",
        args.out.display(),
        s.docs,
        s.postings,
        s.postings as f64 / s.docs.max(1) as f64,
        s.source_doc_terms,
        s.doc_tokens,
        s.queries,
        s.query_postings as f64 / s.queries.max(1) as f64,
        s.source_query_terms,
        s.query_tokens,
        s.judgments
    );
    Ok(())
}
