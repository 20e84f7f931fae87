//! The `tandem.v1.Search` service.

use crate::config::ServeOptions;
use crate::convert::{prepare, response};
use crate::status::to_status;
use rayon::prelude::*;
use std::sync::Arc;
use tandem_engine::Index;
use tandem_proto::v1::search_server::Search;
use tandem_proto::v1::{
    GetIndexInfoRequest, IndexInfo, SearchBatchRequest, SearchBatchResponse, SearchRequest,
    SearchResponse,
};
use tonic::{Request, Response, Status};

/// Answers queries over one index. Query work (conversion, first stage, MaxSim) runs on
/// blocking threads, never on the async reactor.
pub struct SearchService {
    index: Arc<Index>,
    options: Arc<ServeOptions>,
}

impl SearchService {
    /// A service over `index` with `options`.
    pub fn new(index: Arc<Index>, options: ServeOptions) -> Self {
        SearchService {
            index,
            options: Arc::new(options),
        }
    }
}

/// Converts, runs and answers one request (blocking; call off the reactor).
fn answer(
    index: &Index,
    options: &ServeOptions,
    request: SearchRequest,
) -> tandem_engine::Result<SearchResponse> {
    let prepared = prepare(index, options, request)?;
    let output = index.search(&prepared.query, &prepared.params, &options.limits)?;
    Ok(response(index, &prepared, output))
}

/// Runs `work` on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("query task failed: {e}")))?
}

#[tonic::async_trait]
impl Search for SearchService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let (index, options) = (self.index.clone(), self.options.clone());
        let request = request.into_inner();
        let reply = blocking(move || answer(&index, &options, request).map_err(to_status)).await?;
        Ok(Response::new(reply))
    }

    async fn search_batch(
        &self,
        request: Request<SearchBatchRequest>,
    ) -> Result<Response<SearchBatchResponse>, Status> {
        let requests = request.into_inner().requests;
        if requests.len() > self.options.max_batch {
            return Err(Status::resource_exhausted(format!(
                "requests: {} queries exceed the server limit max_batch = {}",
                requests.len(),
                self.options.max_batch
            )));
        }
        let (index, options) = (self.index.clone(), self.options.clone());
        let responses = blocking(move || {
            let answers: Vec<_> = requests
                .into_par_iter()
                .map(|r| answer(&index, &options, r))
                .collect();
            // Collected in order first, so the error reported is the first bad request's.
            answers
                .into_iter()
                .enumerate()
                .map(|(i, a)| a.map_err(|e| to_status(e.within(&format!("requests[{i}].")))))
                .collect::<Result<Vec<_>, Status>>()
        })
        .await?;
        Ok(Response::new(SearchBatchResponse { responses }))
    }

    async fn get_index_info(
        &self,
        _request: Request<GetIndexInfoRequest>,
    ) -> Result<Response<IndexInfo>, Status> {
        let manifest = self.index.manifest();
        let options = &self.options;
        Ok(Response::new(IndexInfo {
            doc_count: manifest.doc_count,
            vocab_size: manifest.vocab_size,
            token_count: manifest.token_count,
            dim: manifest.dim,
            vector_codec: manifest.vector_codec.clone(),
            format_version: manifest.format_version,
            posting_count: manifest.posting_count,
            size_bytes: self.index.size_bytes(),
            build_parameters: manifest
                .build_parameters
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            path: self.index.dir().display().to_string(),
            default_k: saturate(options.default_k),
            default_kappa: saturate(options.default_kappa),
            max_k: saturate(options.limits.max_k),
            max_kappa: saturate(options.limits.max_kappa),
            default_first_stage: match &manifest.approx {
                Some(_) => "approximate".to_string(),
                None => "exact".to_string(),
            },
            default_query_cut: manifest
                .approx
                .as_ref()
                .map_or(0, |a| saturate(a.query_defaults.query_cut)),
            default_heap_factor: manifest
                .approx
                .as_ref()
                .map_or(0.0, |a| a.query_defaults.heap_factor),
            bytes_per_token: self.index.tokens().vector_bytes() as f32
                / manifest.token_count.max(1) as f32,
            default_cp_alpha: options.default_cp_alpha,
            default_ee_beta: options.default_ee_beta.map(saturate),
            default_fusion_method: options.default_fusion.method.name().to_string(),
            default_fusion_weight: options.default_fusion.weight,
            default_rrf_k: options.default_rrf_k,
        }))
    }
}

/// A configured count as a `u32` field (limits above `u32::MAX` behave as unlimited).
fn saturate(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
