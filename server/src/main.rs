//! The `tandem-server` binary.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use tandem_engine::pipeline::parse_off;
use tandem_engine::{Fusion, FusionMethod, Index, Limits, Verify};
use tandem_server::config::ServeOptions;

/// Serve a tandem index over gRPC.
#[derive(Debug, Parser)]
#[command(name = "tandem-server", version, about)]
struct Args {
    /// The index directory to serve (built by `tandem-index build`).
    #[arg(long, env = "TANDEM_INDEX", required_unless_present = "demo")]
    index: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "TANDEM_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Serve a demo index (built on first start under --demo-dir) and run a few queries on it.
    #[arg(long, env = "TANDEM_DEMO", conflicts_with = "index")]
    demo: bool,
    /// Where the demo index (and a synthetic corpus, if needed) are kept.
    #[arg(long, env = "TANDEM_DEMO_DIR", default_value = "target/tandem-demo")]
    demo_dir: PathBuf,
    /// The scifact eval set the demo uses when present.
    #[arg(
        long,
        env = "TANDEM_DEMO_EVALSET",
        default_value = "../shared/evalsets/scifact"
    )]
    demo_evalset: PathBuf,
    /// Skip recomputing file checksums at load (sizes and invariants are still checked).
    #[arg(long, env = "TANDEM_SKIP_CHECKSUMS")]
    skip_checksums: bool,
    /// k when a request does not set it.
    #[arg(long, env = "TANDEM_DEFAULT_K", default_value_t = 10)]
    default_k: usize,
    /// kappa when a request does not set it (at least k).
    #[arg(long, env = "TANDEM_DEFAULT_KAPPA", default_value_t = 30)]
    default_kappa: usize,
    /// CP(α) when a request does not set cp_alpha: a number in [0, 1], or `off`.
    #[arg(long, env = "TANDEM_DEFAULT_CP_ALPHA", default_value = "off", value_parser = parse_off::<f32>)]
    default_cp_alpha: std::option::Option<f32>,
    /// EE(β) when a request does not set ee_beta: a number >= 1, or `off`.
    #[arg(long, env = "TANDEM_DEFAULT_EE_BETA", default_value = "off", value_parser = parse_off::<usize>)]
    default_ee_beta: std::option::Option<usize>,
    /// Fusion method when a request does not set one.
    #[arg(long, env = "TANDEM_DEFAULT_FUSION_METHOD", default_value = Fusion::DEFAULT.method.name(), value_parser = ["zscore", "minmax", "rrf"])]
    default_fusion_method: String,
    /// Weight of the sparse score in the fused score when a request does not set one (0: MaxSim
    /// alone). The default comes from `tandem-bench fusion` on the scifact eval set (README).
    #[arg(long, env = "TANDEM_DEFAULT_FUSION_WEIGHT", default_value_t = Fusion::DEFAULT.weight)]
    default_fusion_weight: f32,
    /// RRF constant k when a request uses RRF without one.
    #[arg(long, env = "TANDEM_DEFAULT_RRF_K", default_value_t = tandem_engine::fusion::DEFAULT_RRF_K)]
    default_rrf_k: f32,
    /// Largest k a request may ask for.
    #[arg(long, env = "TANDEM_MAX_K", default_value_t = 1000)]
    max_k: usize,
    /// Largest kappa a request may ask for.
    #[arg(long, env = "TANDEM_MAX_KAPPA", default_value_t = 10_000)]
    max_kappa: usize,
    /// Most sparse terms in a query.
    #[arg(long, env = "TANDEM_MAX_QUERY_TERMS", default_value_t = 4096)]
    max_query_terms: usize,
    /// Most token vectors in a query.
    #[arg(long, env = "TANDEM_MAX_QUERY_TOKENS", default_value_t = 1024)]
    max_query_tokens: usize,
    /// Most queries in one SearchBatch call.
    #[arg(long, env = "TANDEM_MAX_BATCH", default_value_t = 1024)]
    max_batch: usize,
    /// Do not read each query's candidates' token vectors ahead before reranking. Prefetch is
    /// on by default: ~100× faster reranking of cold (not in memory) candidates, ~4% slower on
    /// hot ones (one system call per candidate).
    #[arg(long, env = "TANDEM_NO_PREFETCH")]
    no_prefetch: bool,
    /// Largest gRPC request message, bytes.
    #[arg(long, env = "TANDEM_MAX_MESSAGE_BYTES", default_value_t = 32 << 20)]
    max_message_bytes: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tandem-server: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The service options the flags describe.
fn serve_options(args: &Args) -> anyhow::Result<ServeOptions> {
    Ok(ServeOptions {
        default_k: args.default_k,
        default_kappa: args.default_kappa,
        default_cp_alpha: args.default_cp_alpha,
        default_ee_beta: args.default_ee_beta,
        default_fusion: Fusion {
            method: FusionMethod::from_name(&args.default_fusion_method, args.default_rrf_k)
                .with_context(|| {
                    format!("unknown fusion method {:?}", args.default_fusion_method)
                })?,
            weight: args.default_fusion_weight,
        },
        default_rrf_k: args.default_rrf_k,
        limits: Limits {
            max_k: args.max_k,
            max_kappa: args.max_kappa,
            max_query_terms: args.max_query_terms,
            max_query_tokens: args.max_query_tokens,
        },
        max_batch: args.max_batch,
        max_message_bytes: args.max_message_bytes,
        prefetch: !args.no_prefetch,
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let options = serve_options(&args)?;
    options
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let demo = if args.demo {
        let corpus = tandem_server::demo::corpus(&args.demo_dir, &args.demo_evalset)?;
        let dir = {
            let (work, corpus) = (args.demo_dir.clone(), corpus.clone());
            tokio::task::spawn_blocking(move || tandem_server::demo::index(&work, &corpus))
                .await??
        };
        Some((corpus, dir))
    } else {
        None
    };
    let dir = match (&demo, args.index) {
        (Some((_, dir)), _) => dir.clone(),
        (None, Some(dir)) => dir,
        (None, None) => anyhow::bail!("--index DIR is required (or --demo)"),
    };
    let verify = if args.skip_checksums {
        Verify::SkipChecksums
    } else {
        Verify::Full
    };
    let index = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Index::open_with(&dir, verify)).await??
    };
    let m = index.manifest();
    tracing::info!(
        index = %dir.display(),
        docs = m.doc_count,
        vocab = m.vocab_size,
        tokens = m.token_count,
        dim = m.dim,
        codec = %m.vector_codec,
        bytes = index.size_bytes(),
        first_stage = ?index.default_first_stage(),
        maxsim_kernel = %tandem_engine::kernels::detect(),
        "index loaded"
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "tandem.v1.Search, grpc.health.v1 and reflection listening");
    if let Some((corpus, _)) = demo {
        let url = format!("http://{addr}");
        tokio::spawn(async move {
            if let Err(e) = tandem_server::demo::show_queries(&url, &corpus).await {
                tracing::warn!("demo queries failed: {e:#}");
            }
        });
    }
    tandem_server::serve(
        Arc::new(index),
        options,
        listener,
        tandem_server::shutdown_signal(),
    )
    .await?;
    tracing::info!("server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let args = Args::parse_from(["tandem-server", "--index", "idx"]);
        let options = serve_options(&args).unwrap();
        let defaults = ServeOptions::default();
        assert_eq!(format!("{options:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn off_switches_and_fusion_flags_parse() {
        let args = Args::parse_from([
            "tandem-server",
            "--index",
            "idx",
            "--default-cp-alpha",
            "0.1",
            "--default-ee-beta",
            "off",
            "--default-fusion-method",
            "rrf",
            "--default-rrf-k",
            "20",
        ]);
        let options = serve_options(&args).unwrap();
        assert_eq!(options.default_cp_alpha, Some(0.1));
        assert_eq!(options.default_ee_beta, None);
        assert_eq!(options.default_fusion.method, FusionMethod::Rrf { k: 20.0 });
        assert!(
            Args::try_parse_from(["tandem-server", "--index", "i", "--default-ee-beta", "x"])
                .is_err()
        );
    }
}
