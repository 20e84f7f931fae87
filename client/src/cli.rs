//! The `tandem` command line: run query files against a server, describe its index.

use crate::filters::{read_ids, FilterArgs};
use crate::queries::{QueryKnobs, QuerySet};
use crate::trec::write_run;
use crate::{ConnectOptions, TandemClient};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tandem_proto::v1::{FirstStage, FusionMethod, Hit, IndexInfo};

/// Query a tandem server.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every query of a file (with SearchBatch) and write a TREC run.
    Search(Box<SearchArgs>),
    /// Print what the server has loaded: its index, defaults, limits and encoders.
    Info {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
        /// Print every field of GetIndexInfo as one JSON object (proto field names) instead.
        #[arg(long)]
        json: bool,
    },
    /// Ask the server to load an index directory and swap it in (hot reload).
    Reload {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
        /// The index directory, as the server sees it (default: the one it serves, reloaded).
        #[arg(long, default_value = "")]
        path: String,
    },
    /// Add or replace documents (the build's input formats) in a writable index, in batches
    /// on one UpsertStream call; prints the documents acknowledged (logged and fsynced).
    Upsert(Box<crate::upsert::UpsertArgs>),
    /// Delete documents by id (tombstones persisted by the server before it answers).
    Delete {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
        /// The ids to delete, one per line.
        #[arg(long, value_name = "FILE")]
        ids: PathBuf,
        /// Ids per Delete call.
        #[arg(long, default_value_t = 100_000)]
        batch_size: usize,
    },
}

/// Where the server is and how to talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Server address (`https://` for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "TANDEM_ADDR")]
    pub addr: String,
    /// PEM CA certificate to verify the server's TLS certificate with.
    #[arg(long, env = "TANDEM_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Server name to verify in its certificate (default: the address's host).
    #[arg(long, env = "TANDEM_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Bearer token sent with every call: a search token, or an admin token for `delete` and
    /// `reload` (prefer the environment variable: command lines are visible to other users).
    #[arg(long, env = "TANDEM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServerArgs {
    /// A server on `addr` without TLS or token.
    pub fn plain(addr: &str) -> ServerArgs {
        ServerArgs {
            addr: addr.to_string(),
            tls_ca: None,
            tls_domain: None,
            token: None,
        }
    }

    /// Connects.
    pub async fn connect(&self) -> anyhow::Result<TandemClient> {
        let options = ConnectOptions {
            tls_ca: self.tls_ca.clone(),
            tls_domain: self.tls_domain.clone(),
            token: self.token.clone(),
        };
        TandemClient::connect_with(&self.addr, &options).await
    }
}

/// Arguments of `tandem search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The query files.
    #[command(flatten)]
    pub files: QueryFileArgs,
    /// The knobs sent with every query.
    #[command(flatten)]
    pub knobs: KnobArgs,
    /// The filter applied to every query.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Queries per SearchBatch call.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Where to write the TREC run (`-` for stdout).
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    /// The run tag (last column).
    #[arg(long, default_value = "tandem")]
    pub tag: String,
    /// Ask for explanations and print each hit's on stdout, aligned: the document token each
    /// query token matched (with their strings when known) and the terms behind the sparse
    /// score. The TREC run then goes only to --out FILE (not to stdout).
    #[arg(long)]
    pub explain: bool,
}

/// Query files on a command line (`tandem search`, `tandem-bench load`).
#[derive(Debug, Clone, clap::Args)]
pub struct QueryFileArgs {
    /// Queries JSONL: {"id": ..., "vector": {"token": weight, ...}} (or {"id", "text"} with
    /// --text).
    #[arg(long)]
    pub queries: PathBuf,
    /// Query token vectors, .npy [total_tokens, dim] float32 or float16 (needed to rerank).
    #[arg(long)]
    pub query_vectors: Option<PathBuf>,
    /// Token vectors per query, .npy [queries].
    #[arg(long)]
    pub query_lens: Option<PathBuf>,
    /// Send each line's `text` field only: the server encodes it with its query encoders (see
    /// `tandem info`); no vectors are read or sent.
    #[arg(long, conflicts_with_all = ["query_vectors", "query_lens"])]
    pub text: bool,
}

impl QueryFileArgs {
    /// Loads the queries, with their token vectors unless `sparse_only` (then not needed), or
    /// their texts with `text`.
    pub fn load(&self, sparse_only: bool) -> anyhow::Result<QuerySet> {
        if self.text {
            let queries = QuerySet::load_texts(&self.queries)?;
            anyhow::ensure!(
                !queries.is_empty(),
                "{}: no queries",
                self.queries.display()
            );
            return Ok(queries);
        }
        anyhow::ensure!(
            sparse_only || self.query_vectors.is_some(),
            "--query-vectors and --query-lens are needed to rerank (or pass --sparse-only)"
        );
        let queries = QuerySet::load(
            &self.queries,
            self.query_vectors.as_deref().filter(|_| !sparse_only),
            self.query_lens.as_deref().filter(|_| !sparse_only),
        )?;
        anyhow::ensure!(
            !queries.is_empty(),
            "{}: no queries",
            self.queries.display()
        );
        Ok(queries)
    }
}

/// The per-query knobs on a command line (`tandem search`, `tandem-bench load`); anything
/// left out is the server's default.
#[derive(Debug, Clone, clap::Args)]
pub struct KnobArgs {
    /// Results per query (server default 10).
    #[arg(long, default_value_t = 10)]
    pub k: u32,
    /// Candidates reranked per query (server default max(30, k)).
    #[arg(long)]
    pub kappa: Option<u32>,
    /// CP(α) candidate pruning, in [0, 1] (default: the server's; 1 keeps every candidate).
    #[arg(long)]
    pub cp_alpha: Option<f32>,
    /// EE(β) early exit (default: the server's; 0 turns it off).
    #[arg(long)]
    pub ee_beta: Option<u32>,
    /// Weight of the sparse score fused with MaxSim (default: the server's; 0: MaxSim alone).
    #[arg(long = "fusion")]
    pub fusion_weight: Option<f32>,
    /// How the two scores are normalised before fusing (default: the server's).
    #[arg(long, value_parser = ["zscore", "minmax", "rrf"])]
    pub fusion_method: Option<String>,
    /// The RRF constant k (default: the server's).
    #[arg(long)]
    pub rrf_k: Option<f32>,
    /// Return the first stage's ranking (no MaxSim); query vectors are not needed.
    #[arg(long)]
    pub sparse_only: bool,
    /// The first stage: `exact` or `approximate` (default: the index's).
    #[arg(long, value_parser = ["exact", "approximate"])]
    pub first_stage: Option<String>,
    /// Approximate first stage: query terms walked (default: the index's).
    #[arg(long)]
    pub query_cut: Option<u32>,
    /// Approximate first stage: documents rescored exactly, >= 1 (default: the index's).
    #[arg(long)]
    pub rescore: Option<u32>,
    /// Approximate first stage: clusters expanded, 0 for none (default: the index's).
    #[arg(long)]
    pub expand: Option<u32>,
    /// Approximate first stage: postings walked per query term, whole tiers of 1000, 2000,
    /// 4000, ... (default: the index's).
    #[arg(long)]
    pub depth: Option<u32>,
}

impl KnobArgs {
    /// The knobs as sent in requests.
    pub fn knobs(&self) -> QueryKnobs {
        QueryKnobs {
            k: Some(self.k),
            kappa: self.kappa,
            cp_alpha: self.cp_alpha,
            ee_beta: self.ee_beta,
            sparse_only: self.sparse_only,
            first_stage: match self.first_stage.as_deref() {
                Some("exact") => FirstStage::Exact,
                Some(_) => FirstStage::Approximate,
                None => FirstStage::Unspecified,
            },
            query_cut: self.query_cut,
            rescore: self.rescore,
            expand: self.expand,
            depth: self.depth,
            fusion_method: match self.fusion_method.as_deref() {
                Some("zscore") => FusionMethod::Zscore,
                Some("minmax") => FusionMethod::Minmax,
                Some(_) => FusionMethod::Rrf,
                None => FusionMethod::Unspecified,
            },
            fusion_weight: self.fusion_weight,
            rrf_k: self.rrf_k,
        }
    }
}

/// Whether `error` is a write to a standard output whose reader has gone (`tandem info | head`):
/// the binary then exits quietly, as Unix tools do.
pub fn is_closed_stdout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Search(args) => search(*args).await.map(|_| ()),
        Command::Info { server, json } => {
            let info = server.connect().await?.index_info().await?;
            if json {
                writeln!(std::io::stdout(), "{:#}", info_json(&info))?;
            } else {
                write!(std::io::stdout(), "{}", info_summary(&info))?;
            }
            Ok(())
        }
        Command::Reload { server, path } => {
            let reply = server.connect().await?.reload_index(&path).await?;
            let info = reply.info.unwrap_or_default();
            writeln!(
                std::io::stdout(),
                "serving {} ({} documents), loaded in {} ms",
                info.path,
                info.doc_count,
                reply.load_ms
            )?;
            Ok(())
        }
        Command::Delete {
            server,
            ids,
            batch_size,
        } => delete(&server, &ids, batch_size).await,
        Command::Upsert(args) => {
            let docs = args.docs.clone();
            let reply = crate::upsert::run(*args).await?;
            writeln!(
                std::io::stdout(),
                "{}",
                crate::upsert::summary(&reply, &docs)
            )?;
            Ok(())
        }
    }
}

/// `tandem info`: the index and server description as aligned `key: value` lines.
pub fn info_summary(info: &IndexInfo) -> String {
    let off = |v: Option<String>| v.unwrap_or_else(|| "off".to_string());
    let expected = match info.expected_accuracy_at_10 {
        Some(a) => format!(
            "; expected accuracy@10 {a:.3} on {} queries from {}",
            info.calibration_queries, info.calibration_source
        ),
        None => String::new(),
    };
    let first_stage = match info.default_first_stage.as_str() {
        "approximate" => format!(
            "approximate (query_cut {}, depth {}, rescore {}, expand {}{expected})",
            info.default_query_cut, info.default_depth, info.default_rescore, info.default_expand
        ),
        "exact" if info.default_query_cut > 0 => format!(
            "exact (approximate available: query_cut {}, depth {}, rescore {}, expand {}{expected})",
            info.default_query_cut, info.default_depth, info.default_rescore, info.default_expand
        ),
        other => other.to_string(),
    };
    let fusion = match info.default_fusion_method.as_str() {
        "rrf" => format!(
            "rrf, weight {}, k {}",
            info.default_fusion_weight, info.default_rrf_k
        ),
        method => format!("{method}, weight {}", info.default_fusion_weight),
    };
    let attributes = {
        let mut kinds: Vec<String> = info
            .attributes
            .iter()
            .map(|(name, kind)| format!("{name} ({kind})"))
            .collect();
        kinds.sort();
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        }
    };
    let mut lines: Vec<(&str, String)> = vec![
        ("index", info.path.clone()),
        (
            "documents",
            format!(
                "{} ({} live, {} deleted)",
                info.doc_count, info.live_count, info.deleted_count
            ),
        ),
        ("vocabulary", format!("{} terms", info.vocab_size)),
        ("postings", info.posting_count.to_string()),
        (
            "token vectors",
            format!(
                "{} of dim {}, codec {} ({:.1} bytes per token)",
                info.token_count, info.dim, info.vector_codec, info.bytes_per_token
            ),
        ),
        (
            "size",
            format!(
                "{} (format version {})",
                bytes(info.size_bytes),
                info.format_version
            ),
        ),
        ("checksums", info.checksums.clone()),
        ("segments", segments_summary(info)),
        ("writes", writes_summary(info)),
        ("attributes", attributes),
        ("first stage", first_stage),
        (
            "defaults",
            format!(
                "k {}, kappa {}, CP(α) {}, EE(β) {}",
                info.default_k,
                info.default_kappa,
                off(info.default_cp_alpha.map(|a| a.to_string())),
                off(info.default_ee_beta.map(|b| b.to_string())),
            ),
        ),
        ("fusion", fusion),
        (
            "limits",
            format!("max_k {}, max_kappa {}", info.max_k, info.max_kappa),
        ),
        (
            "workers",
            format!("{} threads, queue of {}", info.workers, info.max_queue),
        ),
    ];
    if info.encoders.is_empty() {
        lines.push(("encoders", "none (pre-encoded queries only)".to_string()));
    }
    for e in &info.encoders {
        let mut about = format!(
            "{} from {}, up to {} tokens",
            e.kind, e.source, e.max_tokens
        );
        if e.dim > 0 {
            about.push_str(&format!(", dim {}", e.dim));
        }
        if !e.files.is_empty() {
            about.push_str(&format!(", with {}", e.files.join(", ")));
        }
        lines.push(("encoder", format!("{}: {about}", e.role)));
    }
    lines.extend([
        (
            "server",
            format!(
                "tandem {} ({}, {}, {}), MaxSim kernel {}",
                info.server_version,
                info.build_target,
                info.build_profile,
                info.rustc_version,
                info.maxsim_kernel
            ),
        ),
        (
            "uptime",
            format!(
                "{} (index loaded {} ago)",
                duration(info.uptime_seconds),
                duration(info.index_loaded_seconds_ago)
            ),
        ),
    ]);
    let mut parameters: Vec<(&String, &String)> = info.build_parameters.iter().collect();
    parameters.sort();
    let width = lines
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (key, value) in &lines {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    if !parameters.is_empty() {
        out.push_str("build parameters:\n");
        for (name, value) in parameters {
            out.push_str(&format!("  {name}: {value}\n"));
        }
    }
    out
}

/// `tandem info --json`: every field of `info`, named as in the proto.
pub fn info_json(info: &IndexInfo) -> serde_json::Value {
    let encoders: Vec<serde_json::Value> = info
        .encoders
        .iter()
        .map(|e| {
            serde_json::json!({
                "role": e.role,
                "kind": e.kind,
                "source": e.source,
                "max_tokens": e.max_tokens,
                "dim": e.dim,
                "files": e.files,
            })
        })
        .collect();
    let segments: Vec<serde_json::Value> = info
        .segments
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "doc_count": s.doc_count,
                "deleted_count": s.deleted_count,
                "size_bytes": s.size_bytes,
                "first_stage": s.first_stage,
            })
        })
        .collect();
    serde_json::json!({
        "path": info.path,
        "doc_count": info.doc_count,
        "live_count": info.live_count,
        "deleted_count": info.deleted_count,
        "vocab_size": info.vocab_size,
        "token_count": info.token_count,
        "dim": info.dim,
        "vector_codec": info.vector_codec,
        "bytes_per_token": info.bytes_per_token,
        "format_version": info.format_version,
        "posting_count": info.posting_count,
        "size_bytes": info.size_bytes,
        "build_parameters": info.build_parameters,
        "attributes": info.attributes,
        "default_first_stage": info.default_first_stage,
        "default_query_cut": info.default_query_cut,
        "default_rescore": info.default_rescore,
        "default_expand": info.default_expand,
        "default_depth": info.default_depth,
        "cluster_size": info.cluster_size,
        "expected_accuracy_at_10": info.expected_accuracy_at_10,
        "calibration_queries": info.calibration_queries,
        "calibration_source": info.calibration_source,
        "default_k": info.default_k,
        "default_kappa": info.default_kappa,
        "default_cp_alpha": info.default_cp_alpha,
        "default_ee_beta": info.default_ee_beta,
        "default_fusion_method": info.default_fusion_method,
        "default_fusion_weight": info.default_fusion_weight,
        "default_rrf_k": info.default_rrf_k,
        "max_k": info.max_k,
        "max_kappa": info.max_kappa,
        "workers": info.workers,
        "max_queue": info.max_queue,
        "encoders": encoders,
        "server_version": info.server_version,
        "build_target": info.build_target,
        "build_profile": info.build_profile,
        "rustc_version": info.rustc_version,
        "maxsim_kernel": info.maxsim_kernel,
        "uptime_seconds": info.uptime_seconds,
        "index_loaded_seconds_ago": info.index_loaded_seconds_ago,
        "segments": segments,
        "writes": info.writes.as_ref().map(|w| serde_json::json!({
            "writable": w.writable,
            "reason": w.reason,
            "logged_seq": w.logged_seq,
            "visible_seq": w.visible_seq,
            "sealed_seq": w.sealed_seq,
            "wal_bytes": w.wal_bytes,
            "unsealed_docs": w.unsealed_docs,
            "refresh_interval_s": w.refresh_interval_s,
            "seal_docs": w.seal_docs,
            "seal_bytes": w.seal_bytes,
        })),
    })
}

/// Whether the server takes writes, and where they stand.
fn writes_summary(info: &IndexInfo) -> String {
    match &info.writes {
        Some(w) if w.writable => format!(
            "writable; log sequence {} logged, {} searchable, {} sealed; log {}; {} documents \
             not sealed (refresh every {} s, seal at {} documents or {})",
            w.logged_seq,
            w.visible_seq,
            w.sealed_seq,
            bytes(w.wal_bytes),
            w.unsealed_docs,
            w.refresh_interval_s,
            w.seal_docs,
            bytes(w.seal_bytes)
        ),
        Some(w) => format!("refused: {}", w.reason),
        None => "refused (the server predates live writes)".to_string(),
    }
}

/// The index's segments: their count, and for several, each one's documents and first stage.
fn segments_summary(info: &IndexInfo) -> String {
    match info.segments.as_slice() {
        [] | [_] => "1".to_string(),
        segments => {
            let each: Vec<String> = segments
                .iter()
                .map(|s| {
                    format!(
                        "{} {} docs ({} deleted, {})",
                        s.name, s.doc_count, s.deleted_count, s.first_stage
                    )
                })
                .collect();
            format!("{}: {}", segments.len(), each.join("; "))
        }
    }
}

/// A byte count in binary units, e.g. `221.3 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Seconds as the two largest units, e.g. `3h 02m`, `45s`.
fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h:02}h"),
    }
}

/// `tandem delete`: sends the ids in batches; prints the counts, then each unknown id.
async fn delete(
    server: &ServerArgs,
    path: &std::path::Path,
    batch_size: usize,
) -> anyhow::Result<()> {
    let ids = read_ids(path)?;
    anyhow::ensure!(!ids.is_empty(), "{}: no ids", path.display());
    let mut client = server.connect().await?;
    let (mut deleted, mut already) = (0u64, 0u64);
    let mut unknown = Vec::new();
    let mut last = None;
    for chunk in ids.chunks(batch_size.max(1)) {
        let reply = client
            .delete(chunk.to_vec())
            .await
            .map_err(|s| anyhow::anyhow!("server answered {:?}: {}", s.code(), s.message()))?;
        deleted += reply.deleted;
        already += reply.already_deleted;
        unknown.extend(reply.unknown_ids.iter().cloned());
        last = Some(reply);
    }
    let reply = last.unwrap_or_default();
    writeln!(
        std::io::stdout(),
        "deleted {deleted}, already deleted {already}, unknown {}; the index now has {} live and {} deleted documents",
        unknown.len(),
        reply.live_count,
        reply.deleted_count
    )?;
    for id in unknown {
        writeln!(std::io::stdout(), "unknown id: {id}")?;
    }
    Ok(())
}

/// What `tandem search` did.
#[derive(Debug, Clone, Copy)]
pub struct SearchReport {
    /// Queries answered.
    pub queries: usize,
    /// Wall-clock seconds of the RPCs.
    pub seconds: f64,
}

/// `tandem search`: loads the queries, runs them in batches, writes the run.
pub async fn search(args: SearchArgs) -> anyhow::Result<SearchReport> {
    let queries = args.files.load(args.knobs.sparse_only)?;
    let knobs = args.knobs.knobs();
    let filter = args.filter.load()?;
    let requests = (0..queries.len())
        .map(|i| {
            let mut request = queries.request(i, &knobs);
            filter.apply(&mut request);
            request.explain = args.explain;
            request
        })
        .collect();
    let mut client = args.server.connect().await?;
    let started = Instant::now();
    let responses = client
        .search_batches(requests, args.batch_size)
        .await
        .map_err(|s| anyhow::anyhow!("server answered {:?}: {}", s.code(), s.message()))?;
    let seconds = started.elapsed().as_secs_f64();
    let unknown: u64 = responses.iter().map(|r| r.unknown_tokens as u64).sum();
    if args.explain {
        let mut stdout = std::io::stdout().lock();
        for response in &responses {
            for (rank, hit) in response.hits.iter().enumerate() {
                write!(
                    stdout,
                    "{}",
                    explanation_view(&response.query_id, rank + 1, hit)
                )?;
            }
        }
    }
    if args.out.as_os_str() == "-" {
        if !args.explain {
            let stdout = std::io::stdout();
            write_run(&mut stdout.lock(), &responses, &args.tag)?;
        }
    } else {
        let file = std::fs::File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?;
        let mut out = std::io::BufWriter::new(file);
        write_run(&mut out, &responses, &args.tag)?;
        out.flush()
            .with_context(|| format!("cannot write {}", args.out.display()))?;
    }
    eprintln!(
        "{} queries in {:.3} s ({:.0} queries/s over {} SearchBatch calls); {} unknown query tokens ignored",
        responses.len(),
        seconds,
        responses.len() as f64 / seconds.max(1e-9),
        responses.len().div_ceil(args.batch_size.max(1)),
        unknown
    );
    Ok(SearchReport {
        queries: responses.len(),
        seconds,
    })
}

/// One hit's explanation as aligned text: a header line, then one line per query token (its
/// wordpiece when known, the matched document token and its string when known, the dot
/// product), then one line per shared term.
pub fn explanation_view(query_id: &str, rank: usize, hit: &Hit) -> String {
    let mut out = format!(
        "query {query_id}  rank {rank}  doc {}  score {:.4}  maxsim {}  sparse {:.4}\n",
        hit.doc_id,
        hit.score,
        hit.maxsim_score
            .map_or("-".to_string(), |m| format!("{m:.4}")),
        hit.sparse_score
    );
    let Some(e) = &hit.explanation else {
        out.push_str("  (no explanation)\n");
        return out;
    };
    let shown = |text: &str, position: u32| {
        if text.is_empty() {
            format!("#{position}")
        } else {
            format!("{text} #{position}")
        }
    };
    let rows: Vec<(String, String, f32)> = e
        .token_matches
        .iter()
        .map(|m| {
            let query = shown(&m.query_text, m.query_token);
            (query, shown(&m.doc_text, m.doc_token), m.score)
        })
        .collect();
    if !rows.is_empty() {
        let wq = rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0)
            .max(11);
        let wd = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max(9);
        out.push_str(&format!(
            "  {:<wq$}    {:<wd$}  {:>8}\n",
            "query token", "doc token", "score"
        ));
        for (query, doc, score) in &rows {
            out.push_str(&format!("  {query:<wq$} -> {doc:<wd$}  {score:>8.4}\n"));
        }
    }
    if !e.terms.is_empty() {
        let wt = e
            .terms
            .iter()
            .map(|t| t.term.chars().count())
            .max()
            .unwrap_or(0)
            .max(4);
        out.push_str(&format!(
            "  {:<wt$}  {:>8}  {:>8}  {:>12}\n",
            "term", "query w", "doc w", "contribution"
        ));
        for t in &e.terms {
            out.push_str(&format!(
                "  {:<wt$}  {:>8.4}  {:>8.4}  {:>12.4}\n",
                t.term, t.query_weight, t.doc_weight, t.contribution
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::v1::{EncoderInfo, SegmentInfo};

    #[test]
    fn the_explanation_view_aligns_tokens_and_terms() {
        use tandem_proto::v1::{Explanation, TermContribution, TokenMatch};
        let hit = Hit {
            doc_id: "d7".into(),
            score: 1.5,
            sparse_score: 0.75,
            maxsim_score: Some(1.5),
            explanation: Some(Explanation {
                token_matches: vec![
                    TokenMatch {
                        query_token: 0,
                        doc_token: 3,
                        score: 1.0,
                        query_text: "[CLS]".into(),
                        doc_text: "protein".into(),
                    },
                    TokenMatch {
                        query_token: 1,
                        doc_token: 12,
                        score: 0.5,
                        query_text: String::new(),
                        doc_text: String::new(),
                    },
                ],
                terms: vec![TermContribution {
                    term: "protein".into(),
                    term_id: 9,
                    query_weight: 1.5,
                    doc_weight: 0.5,
                    contribution: 0.75,
                }],
            }),
            ..Hit::default()
        };
        let view = explanation_view("q1", 2, &hit);
        let lines: Vec<&str> = view.lines().collect();
        assert_eq!(
            lines[0],
            "query q1  rank 2  doc d7  score 1.5000  maxsim 1.5000  sparse 0.7500"
        );
        assert_eq!(lines[1], "  query token    doc token      score");
        assert_eq!(lines[2], "  [CLS] #0    -> protein #3    1.0000");
        assert_eq!(lines[3], "  #1          -> #12           0.5000");
        assert_eq!(lines[4], "  term      query w     doc w  contribution");
        assert_eq!(lines[5], "  protein    1.5000    0.5000        0.7500");
        assert_eq!(lines.len(), 6);
    }

    fn sample() -> IndexInfo {
        IndexInfo {
            path: "/srv/indexes/v2".into(),
            doc_count: 5183,
            live_count: 5180,
            deleted_count: 3,
            vocab_size: 30522,
            token_count: 814_584,
            dim: 128,
            vector_codec: "f16".into(),
            bytes_per_token: 256.0,
            size_bytes: 232_000_000,
            default_first_stage: "approximate".into(),
            default_query_cut: 8,
            default_rescore: 200,
            default_expand: 16,
            default_depth: 2000,
            expected_accuracy_at_10: Some(0.9812),
            calibration_queries: 300,
            calibration_source: "documents".into(),
            default_k: 10,
            default_kappa: 30,
            default_cp_alpha: Some(0.05),
            default_fusion_method: "zscore".into(),
            default_fusion_weight: 0.2,
            max_k: 1000,
            max_kappa: 10000,
            uptime_seconds: 3 * 3600 + 2 * 60 + 5,
            index_loaded_seconds_ago: 45,
            attributes: [("year".to_string(), "integer".to_string())]
                .into_iter()
                .collect(),
            build_parameters: [("codec".to_string(), "f16".to_string())]
                .into_iter()
                .collect(),
            segments: ["seg-000000", "seg-000001"]
                .iter()
                .zip(["approximate", "exact"])
                .map(|(name, first_stage)| SegmentInfo {
                    name: name.to_string(),
                    doc_count: 5000,
                    deleted_count: 3,
                    size_bytes: 1 << 20,
                    first_stage: first_stage.to_string(),
                })
                .collect(),
            encoders: vec![EncoderInfo {
                role: "vectors".into(),
                kind: "bert".into(),
                source: "models/minilm".into(),
                max_tokens: 128,
                dim: 128,
                files: vec![],
            }],
            ..IndexInfo::default()
        }
    }

    #[test]
    fn the_summary_is_aligned_key_value_lines() {
        let text = info_summary(&sample());
        for line in [
            "documents:     5183 (5180 live, 3 deleted)",
            "first stage:   approximate (query_cut 8, depth 2000, rescore 200, expand 16; expected accuracy@10 0.981 on 300 queries from documents)",
            "defaults:      k 10, kappa 30, CP(α) 0.05, EE(β) off",
            "size:          221.3 MiB (format version 0)",
            "attributes:    year (integer)",
            "encoder:       vectors: bert from models/minilm, up to 128 tokens, dim 128",
            "uptime:        3h 02m (index loaded 45s ago)",
            "segments:      2: seg-000000 5000 docs (3 deleted, approximate); seg-000001 5000 docs (3 deleted, exact)",
            "  codec: f16",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(!text.contains("IndexInfo {"), "not a Debug dump: {text}");
        // Every value starts in the same column.
        let value_at = |line: &str| {
            let after = &line[line.find(':').unwrap() + 1..];
            line.len() - after.trim_start().len()
        };
        let columns: Vec<usize> = text
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with("build parameters"))
            .map(value_at)
            .collect();
        assert!(
            columns.windows(2).all(|w| w[0] == w[1]),
            "not aligned:\n{text}"
        );
        let bare = info_summary(&IndexInfo::default());
        assert!(bare.contains("encoders:") && bare.contains("none (pre-encoded queries only)"));
        assert!(bare.contains("attributes:    none"), "{bare}");
    }

    #[test]
    fn the_json_has_every_field() {
        let json = info_json(&sample());
        assert_eq!(json["doc_count"], 5183);
        assert_eq!(json["deleted_count"], 3);
        assert_eq!(json["default_ee_beta"], serde_json::Value::Null);
        assert_eq!(json["attributes"]["year"], "integer");
        assert_eq!(json["encoders"][0]["source"], "models/minilm");
        assert_eq!(json["build_parameters"]["codec"], "f16");
        assert_eq!(json["segments"][1]["name"], "seg-000001");
        assert_eq!(json["segments"][1]["first_stage"], "exact");
        // One key per proto field.
        assert_eq!(json.as_object().unwrap().len(), 44);
    }

    #[test]
    fn units_are_readable() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(61), "1m 01s");
        assert_eq!(duration(2 * 86_400 + 3600), "2d 01h");
    }
}
