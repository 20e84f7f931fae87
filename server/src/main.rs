//! The `tandem-server` binary: settings (flags, environment, TOML file), then serve.

use anyhow::Context;
use tandem_engine::live::{LiveIndex, LiveOptions};
use tandem_engine::Index;
use tandem_server::settings::{EnvTokens, Resolved, Settings};
use tandem_server::state::Source;
use tandem_server::Listeners;

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
    let flags = Settings::from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match run(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, through the log (standard error), like every other line the server writes.
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(flags: Settings) -> anyhow::Result<()> {
    let settings = match flags.config.clone() {
        Some(path) => flags.merge(Settings::from_file(&path)?),
        None => flags,
    };
    let Resolved {
        index,
        demo,
        demo_dir,
        demo_evalset,
        listen,
        metrics_listen,
        admin_listen,
        options,
    } = settings.resolve(&EnvTokens::from_env())?;
    tracing::info!(
        %listen,
        metrics_listen = metrics_listen.as_deref().unwrap_or("off"),
        admin_listen = admin_listen.as_deref().unwrap_or("off"),
        ?options,
        "effective configuration"
    );
    let demo = if demo {
        let corpus = tandem_server::demo::corpus(&demo_dir, &demo_evalset)?;
        let dir = {
            let (work, corpus) = (demo_dir.clone(), corpus.clone());
            tokio::task::spawn_blocking(move || tandem_server::demo::index(&work, &corpus))
                .await??
        };
        Some((corpus, dir))
    } else {
        None
    };
    let dir = match (&demo, index) {
        (Some((_, dir)), _) => dir.clone(),
        (None, Some(dir)) => dir,
        (None, None) => anyhow::bail!("--index DIR is required (or --demo)"),
    };
    let verify = options.verify;
    let opening = std::time::Instant::now();
    let writable =
        !options.writes.read_only && dir.join(tandem_engine::format::segments::FILE).exists();
    let source: Source = if writable {
        let live_options = LiveOptions {
            seal_docs: options.writes.seal_docs,
            seal_bytes: options.writes.seal_bytes,
            verify: verify.at_open(),
            ..LiveOptions::default()
        };
        let dir = dir.clone();
        let live =
            tokio::task::spawn_blocking(move || LiveIndex::open(&dir, live_options)).await??;
        let status = live.status();
        tracing::info!(
            replayed_through = status.visible_seq,
            sealed_seq = status.sealed_seq,
            wal_bytes = status.wal_bytes,
            unsealed_docs = status.unsealed_docs,
            "writable index recovered: the write-ahead log is replayed"
        );
        Source::Live(std::sync::Arc::new(live))
    } else {
        let dir = dir.clone();
        let index =
            tokio::task::spawn_blocking(move || Index::open_with(&dir, verify.at_open())).await??;
        if options.writes.read_only {
            Source::Static {
                index,
                reason: "this server was started with --read-only".to_string(),
            }
        } else {
            Source::from(index)
        }
    };
    let open_ms = opening.elapsed().as_millis();
    let index = match &source {
        Source::Static { index, .. } => index,
        Source::Live(live) => &*live.view(),
    };
    tracing::info!(
        index = %dir.display(),
        segments = index.segments().len(),
        docs = index.doc_count(),
        vocab = index.vocab_size(),
        tokens = index.token_count(),
        dim = index.dim(),
        codec = %index.vector_codec(),
        bytes = index.size_bytes(),
        first_stage = ?index.default_first_stage(),
        maxsim_kernel = %tandem_engine::kernels::detect(),
        open_ms,
        checksums = ?verify,
        writable,
        "index loaded"
    );
    let grpc = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = grpc.local_addr()?;
    let metrics = match &metrics_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
            tracing::info!(addr = %listener.local_addr()?, "Prometheus metrics at /metrics");
            Some(listener)
        }
        None => None,
    };
    let admin = match &admin_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} (--admin-listen)"))?,
        ),
        None => None,
    };
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let (tls, auth, admin_auth) = (
        options.tls.is_some(),
        options.auth.is_some(),
        options.admin_auth.is_some(),
    );
    match &admin {
        None => tracing::info!(%addr, tls, auth, admin_auth,
            "tandem.v1.Search, tandem.v1.Admin, grpc.health.v1 and reflection listening"),
        Some(listener) => {
            tracing::info!(%addr, tls, auth,
                "tandem.v1.Search, grpc.health.v1 and reflection listening");
            tracing::info!(addr = %listener.local_addr()?, tls, admin_auth,
                "admin listener: tandem.v1.Admin and grpc.health.v1 listening");
        }
    }
    if let Some((corpus, _)) = demo {
        let url = format!("{scheme}://{addr}");
        tokio::spawn(async move {
            if let Err(e) = tandem_server::demo::show_queries(&url, &corpus).await {
                tracing::warn!("demo queries failed: {e:#}");
            }
        });
    }
    tandem_server::serve(
        source,
        options,
        Listeners {
            grpc,
            admin,
            metrics,
        },
        tandem_server::shutdown_signal(),
    )
    .await?;
    tracing::info!("server stopped");
    Ok(())
}
