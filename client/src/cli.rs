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
use tandem_proto::v1::{FirstStage, FusionMethod};

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
    /// Print what the server has loaded.
    Info {
        /// The server.
        #[command(flatten)]
        server: ServerArgs,
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
    /// Bearer token sent with every call (prefer the environment variable: command lines are
    /// visible to other users).
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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Search(args) => search(*args).await.map(|_| ()),
        Command::Info { server } => {
            let info = server.connect().await?.index_info().await?;
            println!("{info:#?}");
            Ok(())
        }
        Command::Reload { server, path } => {
            let reply = server.connect().await?.reload_index(&path).await?;
            let info = reply.info.unwrap_or_default();
            println!(
                "serving {} ({} documents), loaded in {} ms",
                info.path, info.doc_count, reply.load_ms
            );
            Ok(())
        }
        Command::Delete {
            server,
            ids,
            batch_size,
        } => delete(&server, &ids, batch_size).await,
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
    println!(
        "deleted {deleted}, already deleted {already}, unknown {}; the index now has {} live and {} deleted documents",
        unknown.len(),
        reply.live_count,
        reply.deleted_count
    );
    for id in unknown {
        println!("unknown id: {id}");
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
    if args.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        write_run(&mut stdout.lock(), &responses, &args.tag)?;
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
