//! A client for tandem's `tandem.v1` gRPC API, the query-file loader shared by the CLIs, and
//! the `tandem` command line ([`cli`]).

// `tandem info --json` builds one `serde_json::json!` object per IndexInfo field, deeper than
// the default macro recursion limit.
#![recursion_limit = "256"]
#![warn(missing_docs)]

pub mod cli;
pub mod filters;
pub mod queries;
pub mod trec;
pub mod upsert;

use anyhow::Context;
use std::path::PathBuf;
use tandem_proto::v1::admin_client::AdminClient;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{
    DeleteRequest, DeleteResponse, GetIndexInfoRequest, IndexInfo, ReloadIndexRequest,
    ReloadIndexResponse, SearchBatchRequest, SearchRequest, SearchResponse, SearchStreamResponse,
    UpsertRequest, UpsertResponse,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Largest message the client sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How to reach a server beyond its address.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Trust this PEM CA certificate for an `https://` address (else the system roots are not
    /// consulted: give the CA of the server's certificate).
    pub tls_ca: Option<PathBuf>,
    /// The server name to verify in its certificate (default: the address's host).
    pub tls_domain: Option<String>,
    /// Send `authorization: Bearer <token>` with every call.
    pub token: Option<String>,
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the bearer token.
type Authed = InterceptedService<Channel, Bearer>;

/// A connection to a tandem server.
#[derive(Clone)]
pub struct TandemClient {
    inner: SearchClient<Authed>,
    admin: AdminClient<Authed>,
}

impl TandemClient {
    /// Connects to `addr` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(addr: &str) -> anyhow::Result<TandemClient> {
        Self::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects to `addr` with TLS settings and a token.
    pub async fn connect_with(
        addr: &str,
        options: &ConnectOptions,
    ) -> anyhow::Result<TandemClient> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(addr.to_string())
            .with_context(|| format!("invalid server address {addr:?}"))?;
        if let Some(ca) = &options.tls_ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(domain) = &options.tls_domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).context("cannot configure TLS")?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let token = match &options.token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .context("the token is not a valid header value")?,
            ),
            None => None,
        };
        let authed = InterceptedService::new(channel, Bearer(token));
        Ok(TandemClient {
            inner: SearchClient::new(authed.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: AdminClient::new(authed)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// Runs queries over one `SearchStream` call; the answers come back in request order, one
    /// message per request (a response, or the error of that request).
    pub async fn search_stream(
        &mut self,
        requests: impl tokio_stream::Stream<Item = SearchRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<SearchStreamResponse>, tonic::Status> {
        Ok(self.inner.search_stream(requests).await?.into_inner())
    }

    /// Asks the server to load `path` (empty: its current directory) and serve it.
    pub async fn reload_index(&mut self, path: &str) -> Result<ReloadIndexResponse, tonic::Status> {
        let request = ReloadIndexRequest {
            path: path.to_string(),
        };
        Ok(self.admin.reload_index(request).await?.into_inner())
    }

    /// Deletes documents by external id (Admin/Delete); unknown ids come back in the answer.
    pub async fn delete(&mut self, ids: Vec<String>) -> Result<DeleteResponse, tonic::Status> {
        Ok(self.admin.delete(DeleteRequest { ids }).await?.into_inner())
    }

    /// Adds or replaces one batch of documents (Admin/Upsert).
    pub async fn upsert(
        &mut self,
        request: UpsertRequest,
    ) -> Result<UpsertResponse, tonic::Status> {
        Ok(self.admin.upsert(request).await?.into_inner())
    }

    /// Sends batches of documents on one Admin/UpsertStream call (bulk loads); the answer
    /// counts them all.
    pub async fn upsert_stream(
        &mut self,
        batches: impl tokio_stream::Stream<Item = UpsertRequest> + Send + 'static,
    ) -> Result<UpsertResponse, tonic::Status> {
        Ok(self.admin.upsert_stream(batches).await?.into_inner())
    }

    /// Runs one query.
    pub async fn search(
        &mut self,
        request: SearchRequest,
    ) -> Result<SearchResponse, tonic::Status> {
        Ok(self.inner.search(request).await?.into_inner())
    }

    /// Runs queries with one `SearchBatch` call; responses in request order.
    pub async fn search_batch(
        &mut self,
        requests: Vec<SearchRequest>,
    ) -> Result<Vec<SearchResponse>, tonic::Status> {
        let reply = self
            .inner
            .search_batch(SearchBatchRequest { requests })
            .await?;
        Ok(reply.into_inner().responses)
    }

    /// Runs queries with `SearchBatch`, `batch_size` per call; responses in request order. An
    /// error names the batch's query positions (0-based, in `requests`).
    pub async fn search_batches(
        &mut self,
        requests: Vec<SearchRequest>,
        batch_size: usize,
    ) -> Result<Vec<SearchResponse>, tonic::Status> {
        let mut responses = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let first = responses.len();
            let batch: Vec<SearchRequest> = requests.by_ref().take(batch_size.max(1)).collect();
            let last = first + batch.len() - 1;
            let reply = self
                .inner
                .search_batch(SearchBatchRequest { requests: batch })
                .await
                .map_err(|s| {
                    // `requests[i]` in the message counts from the start of this batch.
                    let message =
                        format!("{} (in the batch of queries {first}..={last})", s.message());
                    tonic::Status::new(s.code(), message)
                })?;
            responses.extend(reply.into_inner().responses);
        }
        Ok(responses)
    }

    /// Describes the server's index.
    pub async fn index_info(&mut self) -> Result<IndexInfo, tonic::Status> {
        Ok(self
            .inner
            .get_index_info(GetIndexInfoRequest {})
            .await?
            .into_inner())
    }
}
