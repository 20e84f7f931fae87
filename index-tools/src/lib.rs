//! `tandem-index`: build, inspect and verify index directories. The command-line definition
//! and its implementation live here so tests can drive the exact code the binary runs.

#![warn(missing_docs)]

mod progress;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use tandem_engine::approx::{
    ApproxBuildParams, ApproxQueryParams, ApproxSettings, CalibrationParams,
};
use tandem_engine::build::{build_index, build_segments, BuildConfig};
use tandem_engine::compact::compact;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::tokens::Codec;
use tandem_engine::{Index, Segment, Verify};

/// Build, inspect and verify tandem index directories.
#[derive(Debug, Parser)]
#[command(name = "tandem-index", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an index from documents (JSONL), token vectors and token counts (.npy).
    Build(Box<BuildArgs>),
    /// Create an empty index that a server can serve and fill with live writes (Upsert,
    /// `tandem upsert`).
    Create {
        /// Dimensions per token vector.
        #[arg(long)]
        dim: usize,
        /// A fixed vocabulary, one term per line (id = line − 1): documents with other terms
        /// are refused. Without it, the vocabulary grows with the documents written.
        #[arg(long, value_name = "FILE")]
        vocab: Option<PathBuf>,
        /// How token vectors are stored: `f16` or `int8` (`pq` needs vectors to train its
        /// codebook: build the first documents with `tandem-index build --codec pq
        /// --segment-docs N` instead).
        #[arg(long, value_parser = ["f16", "int8", "pq"], default_value = "f16")]
        codec: String,
        /// The first stage of the segments the server seals and merges: `approx` (built with
        /// the default parameters) or `exact`.
        #[arg(long, value_parser = ["approx", "exact"], default_value = "approx")]
        first_stage: String,
        /// The index directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Replace --out if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print an index's manifest and statistics.
    Inspect {
        /// The index directory.
        dir: PathBuf,
    },
    /// Re-check every checksum and invariant of an index; exits non-zero on any fault.
    Verify {
        /// The index directory.
        dir: PathBuf,
    },
    /// Write a per-token weight table for inference-free sparse query encoding
    /// (`tandem-server --sparse-table`): each vocabulary term's IDF over the index's documents,
    /// ln(1 + (N − df + 0.5) / (df + 0.5)), as JSON {"token": weight}.
    WeightTable {
        /// The index directory.
        #[arg(long)]
        index: PathBuf,
        /// The JSON file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the index without its deleted documents (ids and order of the others kept; the
    /// approximate first stage rebuilt with the same parameters; no tombstones). Stop deleting
    /// while it runs: deletes that arrive meanwhile make it fail rather than be lost.
    Compact {
        /// The index directory.
        dir: PathBuf,
        /// Where to write the compacted index (default: replace DIR; a server serving DIR keeps
        /// its open files until reloaded).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace OUT if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// Arguments of `tandem-index build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Documents, one JSON object per line: {"id": ..., "vector": {"token": weight, ...}}.
    #[arg(long)]
    pub docs: PathBuf,
    /// Token vectors, .npy [total_tokens, dim] of float32, float16 or int8.
    #[arg(long)]
    pub vectors: PathBuf,
    /// Token vectors per document, .npy [docs] of an integer type, in document order.
    #[arg(long)]
    pub lens: PathBuf,
    /// Scale of int8 vectors: value = q × S (required for int8, refused otherwise). A number or
    /// a fraction such as `1/127`.
    #[arg(long, value_name = "S", value_parser = parse_scale, allow_negative_numbers = true)]
    pub int8_scale: Option<f32>,
    /// A fixed vocabulary, one term per line (id = line − 1). Without it, the vocabulary is the
    /// documents' terms in order of first appearance.
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// Document tokens are numeric ids into --vocab instead of terms.
    #[arg(long, requires = "vocab")]
    pub token_ids: bool,
    /// Document token strings, stored so explanations show text: JSONL, one JSON array of
    /// strings per document in --docs order, as long as its row of --lens.
    #[arg(long, value_name = "FILE")]
    pub doc_tokens: Option<PathBuf>,
    /// The index directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Write the index as segments of at most N documents each, in input order (each with its
    /// own first stage; the PQ codebook is trained once for all): a build that holds one
    /// segment's postings and first stage in memory at a time, and the layout live ingestion
    /// grows. Without it, the index is one segment.
    #[arg(long, value_name = "N")]
    pub segment_docs: Option<usize>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// How token vectors are stored: `f16` (2 bytes per value), `int8` (1 byte per value and a
    /// 4-byte scale per token) or `pq` (product quantization: one byte per subspace, at most 32,
    /// and a 2-byte scale per token, with a codebook trained by k-means during the build).
    #[arg(long, value_parser = ["f16", "int8", "pq"], default_value = "f16")]
    pub codec: String,
    /// The first stage to build: `approx` (the default: the inverted index plus impact-pruned
    /// lists and a forward index, for the approximate first stage queries then use by default,
    /// exact search staying available per query) or `exact` (the inverted index only).
    #[arg(long, value_parser = ["approx", "exact"], default_value = "approx")]
    pub first_stage: String,
    /// Approximate first stage: postings kept per term (its heaviest): the deepest a query can
    /// walk (see --depth).
    #[arg(long, default_value_t = ApproxBuildParams::default().n_postings)]
    pub n_postings: usize,
    /// Approximate first stage: documents per cluster at most, for cluster expansion (0: no
    /// clusters).
    #[arg(long, default_value_t = ApproxBuildParams::default().cluster_size)]
    pub cluster_size: usize,
    /// Approximate first stage: default query terms walked (queries may override). Setting
    /// any of --query-cut, --depth, --rescore or --expand fixes the defaults (the calibration then only
    /// measures them); otherwise the calibration chooses them.
    #[arg(long)]
    pub query_cut: Option<usize>,
    /// Approximate first stage: default number of documents rescored exactly (queries may
    /// override).
    #[arg(long)]
    pub rescore: Option<usize>,
    /// Approximate first stage: default number of clusters expanded (queries may override).
    #[arg(long)]
    pub expand: Option<usize>,
    /// Approximate first stage: default postings walked per query term, its heaviest in whole
    /// tiers of 1,000, 2,000, 4,000, … (queries may override).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Approximate first stage: documents used as pseudo-queries to measure its accuracy@10
    /// against exact search and choose its defaults (0: no calibration, the defaults are
    /// --query-cut, --rescore and --expand or their built-in values, and no expected accuracy
    /// is recorded).
    #[arg(long, default_value_t = CalibrationParams::default().queries)]
    pub calibration_queries: usize,
    /// Approximate first stage: the accuracy@10 the chosen defaults must reach on the
    /// pseudo-queries; when no setting does, queries default to the exact first stage.
    #[arg(long, default_value_t = CalibrationParams::default().target_accuracy)]
    pub target_accuracy: f32,
    /// Approximate first stage: calibrate with these queries (JSONL, `{"id", "vector": {token:
    /// weight}}`; terms outside the vocabulary are dropped) instead of pseudo-queries made from
    /// the documents: a sample of the queries the index will serve, apart from any evaluation
    /// set.
    #[arg(long, value_name = "FILE")]
    pub calibration_queries_file: Option<PathBuf>,
}

/// Parses a scale given as a number (`0.0078`) or a fraction (`1/127`).
fn parse_scale(text: &str) -> Result<f32, String> {
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|e| format!("{s:?} is not a number: {e}"))
    };
    let value = match text.split_once('/') {
        Some((num, den)) => number(num)? / number(den)?,
        None => number(text)?,
    };
    if value.is_finite() && value > 0.0 {
        Ok(value as f32)
    } else {
        Err(format!("{text:?} must be a finite number > 0"))
    }
}

/// Whether `error` is a write to a standard output whose reader has gone (`tandem-index inspect
/// | head`): the binary then exits quietly, as Unix tools do.
pub fn is_closed_stdout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs a parsed command line; the binary prints the error and exits non-zero.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(args) => build(*args),
        Command::Create {
            dim,
            vocab,
            codec,
            first_stage,
            out,
            force,
        } => create(dim, vocab.as_deref(), &codec, &first_stage, &out, force),
        Command::Inspect { dir } => inspect(&dir),
        Command::Verify { dir } => verify(&dir),
        Command::WeightTable { index, out } => weight_table(&index, &out),
        Command::Compact { dir, out, force } => {
            anyhow::ensure!(
                out.is_some() || !dir.join(tandem_engine::live::wal::DIR).exists(),
                "{} takes live writes (it has a write-ahead log): the server serving it merges its segments as it goes; compacting it in place would drop the writes not yet sealed. Give --out DIR to write its sealed segments elsewhere",
                dir.display()
            );
            let out = out.unwrap_or_else(|| dir.clone());
            let summary = compact(&dir, &out, force, &progress::Bar::new())
                .with_context(|| format!("cannot compact {}", dir.display()))?;
            writeln!(
                std::io::stdout(),
                "compacted {} into {} in {:.1} s: {} documents kept, {} deleted dropped",
                dir.display(),
                summary.dir.display(),
                summary.seconds,
                summary.kept,
                summary.dropped
            )?;
            Ok(())
        }
    }
}

/// `tandem-index create`.
fn create(
    dim: usize,
    vocab: Option<&std::path::Path>,
    codec: &str,
    first_stage: &str,
    out: &std::path::Path,
    force: bool,
) -> anyhow::Result<()> {
    let vocab = match vocab {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let terms: Vec<String> = text.lines().map(str::to_string).collect();
            let mut seen = std::collections::HashSet::new();
            for (i, term) in terms.iter().enumerate() {
                anyhow::ensure!(!term.is_empty(), "{}:{}: empty term", path.display(), i + 1);
                anyhow::ensure!(
                    seen.insert(term.as_str()),
                    "{}:{}: term {term:?} appears twice",
                    path.display(),
                    i + 1
                );
            }
            Some(terms)
        }
        None => None,
    };
    let config = tandem_engine::live::create::CreateConfig {
        dim,
        codec: Codec::from_name(codec).with_context(|| format!("--codec {codec}: not a codec"))?,
        vocab,
        first_stage: (first_stage == "approx").then(|| {
            tandem_engine::format::segments::SealStage {
                build: ApproxBuildParams::default(),
                query_defaults: tandem_engine::approx::ApproxQueryParams::default(),
            }
        }),
    };
    let dir = tandem_engine::live::create::create(&config, out, force)
        .with_context(|| format!("cannot create {}", out.display()))?;
    writeln!(
        std::io::stdout(),
        "created {}: an empty index of {dim}-d {codec} token vectors ({}); serve it with `tandem-server --index {}` and write with `tandem upsert`",
        dir.display(),
        match &config.vocab {
            Some(v) => format!("fixed vocabulary of {} terms", v.len()),
            None => "vocabulary grows with the documents".to_string(),
        },
        dir.display()
    )?;
    Ok(())
}

fn weight_table(dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let index = Index::open_with(dir, Verify::SkipChecksums)?;
    let table = tandem_engine::weight_table::idf_table(&index);
    tandem_engine::weight_table::write_json_table(out, &table)?;
    writeln!(
        std::io::stdout(),
        "wrote {}: IDF of {} terms over {} documents",
        out.display(),
        table.len(),
        index.doc_count()
    )?;
    Ok(())
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let query_defaults = ApproxQueryParams::default();
    let config = BuildConfig {
        docs: args.docs,
        vectors: args.vectors,
        lens: args.lens,
        int8_scale: args.int8_scale,
        vocab: args.vocab,
        token_ids: args.token_ids,
        out: args.out,
        overwrite: args.force,
        codec: Codec::from_name(&args.codec).unwrap_or(Codec::F16),
        doc_tokens: args.doc_tokens,
        approx: (args.first_stage == "approx").then_some(ApproxSettings {
            build: ApproxBuildParams {
                n_postings: args.n_postings,
                cluster_size: args.cluster_size,
                tiers: true,
            },
            query_defaults: ApproxQueryParams {
                query_cut: args.query_cut.unwrap_or(query_defaults.query_cut),
                rescore: args.rescore.unwrap_or(query_defaults.rescore),
                expand: args.expand.unwrap_or(query_defaults.expand),
                depth: args.depth.unwrap_or(query_defaults.depth),
            },
            calibration: CalibrationParams {
                queries: args.calibration_queries,
                target_accuracy: args.target_accuracy,
                choose_defaults: args.query_cut.is_none()
                    && args.rescore.is_none()
                    && args.expand.is_none()
                    && args.depth.is_none(),
            },
            calibration_queries: args.calibration_queries_file,
        }),
    };
    if let Some(segment_docs) = args.segment_docs {
        let summary = build_segments(&config, segment_docs, &progress::Bar::new())?;
        let docs: u64 = summary.segments.iter().map(|(_, m)| m.doc_count).sum();
        let bytes: u64 = summary
            .segments
            .iter()
            .flat_map(|(_, m)| m.files.values())
            .map(|f| f.bytes)
            .sum();
        writeln!(
            std::io::stdout(),
            "built {} in {:.1} s: {} segments, {docs} documents, {:.1} MiB",
            summary.dir.display(),
            summary.seconds,
            summary.segments.len(),
            bytes as f64 / (1 << 20) as f64
        )?;
        return Ok(());
    }
    let summary = build_index(&config, &progress::Bar::new())?;
    let m = &summary.manifest;
    let bytes: u64 = m.files.values().map(|f| f.bytes).sum();
    writeln!(
                std::io::stdout(),
        "built {} in {:.1} s: {} documents, {} terms, {} postings, {} token vectors of dim {}, {:.1} MiB",
        summary.dir.display(),
        summary.seconds,
        m.doc_count,
        m.vocab_size,
        m.posting_count,
        m.token_count,
        m.dim,
        bytes as f64 / (1 << 20) as f64
    )?;
    Ok(())
}

fn inspect(dir: &std::path::Path) -> anyhow::Result<()> {
    let index = Index::open_with(dir, Verify::SkipChecksums)?;
    let mut out = std::io::stdout();
    if let [segment] = index.segments() {
        writeln!(out, "{}", serde_json::to_string_pretty(segment.manifest())?)?;
        return inspect_segment(segment);
    }
    writeln!(
        out,
        "{} segments, {} documents ({} deleted), vocabulary of {} terms, {} token vectors of dim {} ({}), {} bytes",
        index.segments().len(),
        index.doc_count(),
        index.deleted_count(),
        index.vocab_size(),
        index.token_count(),
        index.dim(),
        index.vector_codec(),
        index.size_bytes()
    )?;
    for (name, segment) in index.segment_names().iter().zip(index.segments()) {
        writeln!(out)?;
        writeln!(
            out,
            "segment {name}: {} documents ({} deleted), {} postings, {} token vectors, {} bytes",
            segment.doc_count(),
            segment.tombstones().len(),
            segment.manifest().posting_count,
            segment.manifest().token_count,
            segment.size_bytes()
        )?;
        inspect_segment(segment)?;
    }
    Ok(())
}

/// The first stage and statistics of one segment.
fn inspect_segment(index: &Segment) -> anyhow::Result<()> {
    let manifest = index.manifest();
    let docs = index.doc_count().max(1) as f64;
    if let Some(approx) = &manifest.approx {
        let q = approx.query_defaults;
        let default = match index.default_first_stage() {
            FirstStage::Approx(_) => "approximate",
            FirstStage::Exact => "exact",
        };
        writeln!(std::io::stdout(), "first stage:")?;
        writeln!(std::io::stdout(), "  default                {default}")?;
        writeln!(
            std::io::stdout(),
            "  approximate defaults   query_cut {}, depth {}, rescore {}, expand {} (clusters of at most {} documents: {})",
            q.query_cut,
            q.depth,
            q.rescore,
            q.expand,
            approx.build.cluster_size,
            index.approx().map_or(0, |a| a.cluster_count())
        )?;
        match &approx.calibration {
            Some(c) => writeln!(
                std::io::stdout(),
                "  expected accuracy@10   {:.3} at those defaults (target {:.3}; {} queries from {}; {:.0} µs per query at build, exact {:.0} µs{})",
                c.accuracy_at_10,
                c.target_accuracy,
                c.queries,
                if c.source.is_empty() { "documents" } else { &c.source },
                c.mean_us,
                c.exact_mean_us,
                match (c.exact_by_default, c.accuracy_at_10 >= c.target_accuracy) {
                    (false, _) => "",
                    (true, true) => "; exact is faster, so queries default to it",
                    (true, false) => "; below target, so queries default to exact",
                }
            )?,
            None => writeln!(
                std::io::stdout(),
                "  expected accuracy@10   not measured (built without calibration)"
            )?,
        }
    }
    writeln!(std::io::stdout(), "stats:")?;
    writeln!(
        std::io::stdout(),
        "  postings per document  {:.1}",
        manifest.posting_count as f64 / docs
    )?;
    writeln!(
        std::io::stdout(),
        "  tokens per document    {:.1}",
        manifest.token_count as f64 / docs
    )?;
    writeln!(
        std::io::stdout(),
        "  token vector bytes     {} ({} per token)",
        index.tokens().vector_bytes(),
        index.tokens().vector_bytes() as u64 / manifest.token_count.max(1)
    )?;
    writeln!(
        std::io::stdout(),
        "  index size             {} bytes",
        index.size_bytes()
    )?;
    Ok(())
}

fn verify(dir: &std::path::Path) -> anyhow::Result<()> {
    let index = Index::open_with(dir, Verify::Full)
        .with_context(|| format!("{} failed verification", dir.display()))?;
    let mut files = 0;
    for (name, segment) in index.segment_names().iter().zip(index.segments()) {
        for (file, entry) in &segment.manifest().files {
            let file = if name.is_empty() {
                file.clone()
            } else {
                format!("{name}/{file}")
            };
            writeln!(
                std::io::stdout(),
                "ok  {file:<18} {:>14} bytes  xxh3 {}",
                entry.bytes,
                entry.xxh3
            )?;
            files += 1;
        }
    }
    writeln!(
        std::io::stdout(),
        "{}: {files} files, checksums and invariants verified",
        dir.display(),
    )?;
    Ok(())
}
