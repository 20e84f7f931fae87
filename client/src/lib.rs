//! A client for tandem's `tandem.v1` gRPC API, the query-file loader shared by the CLIs, and
//! the `tandem` command line ([`cli`]).

#![warn(missing_docs)]

pub mod cli;
pub mod queries;
pub mod trec;

use anyhow::Context;
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{
    GetIndexInfoRequest, IndexInfo, SearchBatchRequest, SearchRequest, SearchResponse,
};
use tonic::transport::Channel;

/// Largest message the client sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A connection to a tandem server.
#[derive(Clone)]
pub struct TandemClient {
    inner: SearchClient<Channel>,
}

impl TandemClient {
    /// Connects to `addr` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(addr: &str) -> anyhow::Result<TandemClient> {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
            .with_context(|| format!("invalid server address {addr:?}"))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        Ok(TandemClient {
            inner: SearchClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// Runs one query.
    pub async fn search(
        &mut self,
        request: SearchRequest,
    ) -> Result<SearchResponse, tonic::Status> {
        Ok(self.inner.search(request).await?.into_inner())
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
