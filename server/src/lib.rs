//! `tandem-server`: serves one index over gRPC (`tandem.v1.Search` and `tandem.v1.Admin`, plus
//! the standard health and reflection services). The service is a thin adapter: requests are
//! converted to engine queries ([`convert`]), run on blocking threads off the async reactor, and
//! engine errors are mapped to gRPC status codes in one place ([`status`]). Admin calls need
//! admin rights ([`auth`]) and may have a listener of their own ([`Listeners::admin`]).

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod convert;
pub mod deadline;
pub mod demo;
pub mod encode;
pub mod metrics;
pub mod request_id;
pub mod service;
pub mod settings;
pub mod state;
pub mod status;
pub mod wire;
pub mod workers;
pub mod writes;

use anyhow::Context;
use config::ServeOptions;
use state::Shared;
use std::future::Future;
use std::sync::Arc;
use tandem_proto::v1::admin_server::AdminServer;
use tandem_proto::v1::search_server::SearchServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Identity, ServerTlsConfig};

/// The sockets a server answers on.
pub struct Listeners {
    /// gRPC: Search, health, reflection, and Admin unless `admin` is given.
    pub grpc: TcpListener,
    /// gRPC for Admin and health alone (`--admin-listen`), when wanted; `grpc` then refuses
    /// Admin calls (see [`admin::Elsewhere`]).
    pub admin: Option<TcpListener>,
    /// Prometheus text metrics at `/metrics` over HTTP, when wanted.
    pub metrics: Option<TcpListener>,
}

/// Serves `index` with `options` until `shutdown` resolves, then stops accepting (on every
/// listener) and lets in-flight calls finish. SIGHUP reloads the index from its directory (see
/// [`admin::reload`]). Options that fail [`ServeOptions::validate`], and an index outside
/// `options.index_root`, are refused before anything is served.
pub async fn serve(
    source: impl Into<state::Source>,
    options: ServeOptions,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    options
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid server options: {e}"))?;
    let source = source.into();
    let (dir, dim) = match &source {
        state::Source::Static { index, .. } => (index.dir().to_path_buf(), index.dim()),
        state::Source::Live(live) => (live.dir().to_path_buf(), live.view().dim()),
    };
    let root = admin::IndexRoot::new(options.index_root.as_deref(), &dir)?;
    tracing::info!(root = %root.path().display(), "ReloadIndex loads directories under this root");
    let credentials = auth::Credentials {
        search: options.auth.clone(),
        admin: options.admin_auth.clone(),
    };
    log_open_access(&credentials);
    let max_message = options.max_message_bytes;
    let tls = match &options.tls {
        Some(files) => Some(tls_config(files)?),
        None => None,
    };
    let encoders = load_encoders(&options, dim).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SearchServer<service::SearchService>>()
        .await;
    let mut shared =
        Shared::new(source, options, health).context("cannot start the query worker threads")?;
    shared.encoders = encoders;
    let shared = Arc::new(shared);
    shared.start_checksums();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let search = SearchServer::new(service::SearchService::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let admin = tonic::service::interceptor::InterceptedService::new(
        AdminServer::new(admin::AdminService::new(shared.clone(), root))
            .max_decoding_message_size(max_message),
        auth::Guard::admin(credentials.clone()),
    );
    let search_guard = auth::Guard::search(credentials);

    // One shutdown signal for the gRPC server, the metrics endpoint and the SIGHUP listener.
    let (stop, stopped) = watch::channel(false);
    let when_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let stopping = shared.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.stop_background_work();
        let _ = stop.send(true);
    });
    tokio::spawn(reload_on_hangup(shared.clone(), when_stopped()));
    let refreshing = match &shared.writes {
        state::Writes::Live(live) => Some(tokio::spawn(writes::refresh_loop(
            shared.clone(),
            live.clone(),
            when_stopped(),
        ))),
        state::Writes::Refused(_) => None,
    };
    if shared.options.prefetch {
        tokio::spawn(watch_residency(shared.clone(), when_stopped()));
    }
    let metrics = listeners
        .metrics
        .map(|listener| tokio::spawn(metrics::serve(shared.clone(), listener, when_stopped())));

    // Both listeners speak gRPC with the same TLS identity and the same layers.
    let builder = || -> anyhow::Result<_> {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls.clone() {
            builder = builder.tls_config(tls).context("cannot configure TLS")?;
        }
        Ok(builder
            .layer(wire::WireLayer::new(max_message))
            .layer(request_id::RequestIdLayer)
            .layer(deadline::layer()))
    };
    // Small gRPC answers must not wait for Nagle's algorithm (40 ms stalls with delayed ACKs).
    let incoming =
        |listener| tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let main = builder()?
        .add_service(health_service.clone())
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            search_guard.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            search,
            search_guard,
        ));
    match listeners.admin {
        None => main
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming(listeners.grpc), when_stopped())
            .await
            .context("gRPC server failed")?,
        Some(admin_listener) => {
            let main = main
                .add_service(AdminServer::new(admin::Elsewhere))
                .serve_with_incoming_shutdown(incoming(listeners.grpc), when_stopped());
            let admin = builder()?
                .add_service(health_service)
                .add_service(admin)
                .serve_with_incoming_shutdown(incoming(admin_listener), when_stopped());
            let main = async { main.await.context("gRPC server failed") };
            let admin = async { admin.await.context("admin gRPC server failed") };
            tokio::try_join!(main, admin)?;
        }
    }
    if let Some(metrics) = metrics {
        metrics.await.context("metrics server task failed")??;
    }
    // The writer's threads are done (and hold the index no more) before `serve` returns.
    if let Some(refreshing) = refreshing {
        refreshing.await.context("refresh task failed")?;
    }
    Ok(())
}

/// Logs at start who may call what when credentials leave something open: a warning when
/// anyone reaching the server can search or write, a note when Admin calls are refused to all.
fn log_open_access(credentials: &auth::Credentials) {
    match (&credentials.search, &credentials.admin) {
        (None, None) => tracing::warn!(
            "authentication is off: search and writes (Admin: Delete, ReloadIndex) are open to \
             anyone who reaches the server; set --auth-tokens-file or TANDEM_AUTH_TOKENS \
             (search) and --admin-tokens-file or TANDEM_ADMIN_TOKENS (admin) to close them"
        ),
        (None, Some(_)) => tracing::warn!(
            "search needs no token (no --auth-tokens-file or TANDEM_AUTH_TOKENS): anyone who \
             reaches the server can search; Admin calls need an admin token"
        ),
        (Some(_), None) => tracing::info!(
            "no admin tokens (--admin-tokens-file or TANDEM_ADMIN_TOKENS): Admin calls (Delete, \
             ReloadIndex) are refused"
        ),
        (Some(_), Some(_)) => {}
    }
}

/// Loads the configured query encoders off the reactor and checks that their token vectors fit
/// the index (`dim`).
async fn load_encoders(options: &ServeOptions, dim: usize) -> anyhow::Result<encode::Encoders> {
    let settings = options.encoders.clone();
    if settings.any() {
        tracing::info!(?settings, "loading query encoders");
    }
    let encoders = tokio::task::spawn_blocking(move || encode::Encoders::load(&settings))
        .await
        .context("loading the query encoders failed")?
        .context("cannot load the query encoders")?;
    if let Some(encoded) = encoders.vector_dim() {
        anyhow::ensure!(
            encoded == dim,
            "the token-vector encoder makes {encoded}-d vectors but the index stores {dim}-d              vectors (give --vector-projection-mean/--vector-projection-matrix to project them)"
        );
    }
    for info in encoders.info() {
        tracing::info!(role = %info.role, kind = %info.kind, source = %info.source,
            max_tokens = info.max_tokens, "query encoder loaded");
    }
    Ok(encoders)
}

/// The TLS identity from PEM files, naming the file that cannot be read.
fn tls_config(files: &config::TlsFiles) -> anyhow::Result<ServerTlsConfig> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path)
            .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
    };
    let identity = Identity::from_pem(read(&files.cert, "certificate")?, read(&files.key, "key")?);
    Ok(ServerTlsConfig::new().identity(identity))
}

/// Reloads the served index from its directory on each SIGHUP, until `stopped`.
async fn reload_on_hangup(shared: Arc<Shared>, stopped: impl Future<Output = ()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP ({e}); reload with the Admin RPC");
                return;
            }
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received, reloading the index");
                    let _ = admin::reload(&shared, None).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (shared, stopped.await);
    }
}

/// How often the served index's token files are checked for residency.
const RESIDENCY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks every [`RESIDENCY_CHECK`], until `stopped`, whether the served index's token vectors
/// are all in memory, so that queries skip the per-candidate prefetch while they are (see
/// `TokenStore::check_residency`). The check runs on a blocking thread: a `mincore` over a large
/// file takes milliseconds.
async fn watch_residency(shared: Arc<Shared>, stopped: impl Future<Output = ()>) {
    let mut ticks = tokio::time::interval(RESIDENCY_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = ticks.tick() => {
                let served = shared.served();
                let check = tokio::task::spawn_blocking(move || served.index.check_residency());
                if let Err(e) = check.await {
                    tracing::warn!("residency check failed: {e}");
                }
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (not when the
/// future is first polled), so a signal arriving while the server starts up is not fatal.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for {name} ({e}); it will not stop the server");
                None
            }
        };
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
        async fn received(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        async move {
            tokio::select! {
                _ = received(&mut interrupt) => tracing::info!("SIGINT received, shutting down"),
                _ = received(&mut terminate) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupt received, shutting down");
        }
    }
}
