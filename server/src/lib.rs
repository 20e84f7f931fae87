//! `tandem-server`: serves one index over gRPC (`tandem.v1.Search`, plus the standard health
//! and reflection services). The service is a thin adapter: requests are converted to engine
//! queries ([`convert`]), run on blocking threads off the async reactor, and engine errors are
//! mapped to gRPC status codes in one place ([`status`]).

#![warn(missing_docs)]

pub mod config;
pub mod convert;
pub mod demo;
mod oversize;
pub mod service;
pub mod status;

use anyhow::Context;
use config::ServeOptions;
use std::future::Future;
use std::sync::Arc;
use tandem_engine::Index;
use tandem_proto::v1::search_server::SearchServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Serves `index` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight calls finish.
pub async fn serve(
    index: Arc<Index>,
    options: ServeOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<SearchServer<service::SearchService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let max_message = options.max_message_bytes;
    let search = SearchServer::new(service::SearchService::new(index, options))
        .max_decoding_message_size(max_message);
    tonic::transport::Server::builder()
        .layer(oversize::layer(max_message))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(search)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("gRPC server failed")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM ({e}); only SIGINT stops the server");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!("interrupt received, shutting down");
    }
}
