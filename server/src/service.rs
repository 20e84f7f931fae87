//! The `tandem.v1.Search` service: a thin adapter from gRPC to the engine.
//!
//! Every query runs on the worker pool ([`crate::workers`]), never on the async reactor; a full
//! queue is RESOURCE_EXHAUSTED at once, a client deadline (`grpc-timeout`) DEADLINE_EXCEEDED,
//! and a call whose caller stops waiting has its work cancelled. SearchBatch spreads a batch over
//! the workers in contiguous chunks; SearchStream pipelines up to `stream_window` queries of a
//! stream and answers them in order. Text queries are encoded inside their job: a SearchBatch
//! chunk, or the text queries of a stream that arrived together, in one encoder batch.

use crate::config::ServeOptions;
use crate::convert::{prepare, response};
use crate::deadline::deadline;
use crate::state::{ChecksumState, Served, Shared, StreamSlot, Writes};
use crate::status::to_status;
use crate::wire::request_fault;
use crate::workers::{Cancel, Rejected};
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tandem_engine::approx::ApproxQueryParams;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Index, SearchStats};
use tandem_proto::v1::search_server::Search;
use tandem_proto::v1::search_stream_response::Result as StreamResult;
use tandem_proto::v1::{
    self as v1, GetIndexInfoRequest, IndexInfo, SearchBatchRequest, SearchBatchResponse,
    SearchRequest, SearchResponse, SearchStreamResponse, SegmentInfo, StreamError,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Answers queries over the served index.
pub struct SearchService {
    shared: Arc<Shared>,
}

impl SearchService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        SearchService { shared }
    }
}

/// One answered query and what it did.
type Answer = (SearchResponse, SearchStats);

/// Encodes the texts of `requests` together (see [`crate::encode`]), then converts, runs and
/// answers each (on a worker thread).
fn answer_all(
    shared: &Shared,
    index: &Index,
    mut requests: Vec<SearchRequest>,
    cancelled: &AtomicBool,
) -> Vec<tandem_engine::Result<Answer>> {
    let runs = shared.encoders.fill(&mut requests);
    requests
        .into_iter()
        .zip(runs)
        .map(|(request, runs)| {
            let encoded = runs?;
            let (mut response, stats) = answer(
                index,
                &shared.options,
                request,
                &encoded.query_tokens,
                cancelled,
            )?;
            response.encoders = encoded.runs;
            Ok((response, stats))
        })
        .collect()
}

/// Answers one request whose text (if any) is encoded already.
fn answer_one(
    shared: &Shared,
    index: &Index,
    request: SearchRequest,
    cancelled: &AtomicBool,
) -> tandem_engine::Result<Answer> {
    answer_all(shared, index, vec![request], cancelled)
        .pop()
        .unwrap_or(Err(tandem_engine::Error::Cancelled))
}

/// Converts, runs and answers one request (`query_tokens`: the wordpieces of its token vectors,
/// when known, for explanations).
fn answer(
    index: &Index,
    options: &ServeOptions,
    request: SearchRequest,
    query_tokens: &[String],
    cancelled: &AtomicBool,
) -> tandem_engine::Result<Answer> {
    let prepared = prepare(index, options, request)?;
    let output = index.search_cancellable(
        &prepared.query,
        &prepared.params,
        &options.limits,
        cancelled,
    )?;
    let stats = output.stats;
    Ok((response(index, &prepared, output, query_tokens), stats))
}

/// The status of a job the pool would not take.
fn rejected(rejection: Rejected) -> Status {
    match rejection {
        Rejected::QueueFull { capacity } => Status::resource_exhausted(format!(
            "max_queue: all workers are busy and {capacity} queries are waiting (the server \
             limit); retry later"
        )),
        Rejected::Closed => Status::unavailable("the server is shutting down"),
    }
}

/// Awaits a worker's answer, giving up with DEADLINE_EXCEEDED at `deadline`.
async fn until<T>(deadline: Option<Instant>, answer: oneshot::Receiver<T>) -> Result<T, Status> {
    let answer = async {
        answer
            .await
            .map_err(|_| Status::internal("the query was dropped before it ran"))
    };
    match deadline {
        None => answer.await,
        Some(at) => tokio::time::timeout_at(at, answer).await.map_err(|_| {
            Status::deadline_exceeded("the call's deadline (grpc-timeout) passed before the answer")
        })?,
    }
}

/// Runs one query on the pool and records it in the metrics.
async fn run_one(
    shared: &Arc<Shared>,
    deadline: Option<Instant>,
    request: SearchRequest,
) -> Result<SearchResponse, Status> {
    let started = Instant::now();
    let cancel = Cancel::default();
    let job_shared = shared.clone();
    let served = shared.served();
    in_service(&served)?;
    let answer = shared
        .workers
        .submit(&cancel, move |cancelled| {
            answer_one(&job_shared, &served.index, request, cancelled)
        })
        .map_err(rejected)?;
    let (response, stats) = until(deadline, answer).await?.map_err(to_status)?;
    shared.metrics.observe(&stats, started.elapsed());
    Ok(response)
}

/// Counts a finished call of `method` in the metrics and passes its result on.
fn counted<T>(shared: &Shared, method: &str, result: Result<T, Status>) -> Result<T, Status> {
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    shared.metrics.count(method, code);
    result
}

#[tonic::async_trait]
impl Search for SearchService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let deadline = deadline(&request);
        let result = run_one(&self.shared, deadline, request.into_inner()).await;
        counted(&self.shared, "Search", result).map(Response::new)
    }

    async fn search_batch(
        &self,
        request: Request<SearchBatchRequest>,
    ) -> Result<Response<SearchBatchResponse>, Status> {
        let deadline = deadline(&request);
        let result = run_batch(&self.shared, deadline, request.into_inner().requests).await;
        counted(&self.shared, "SearchBatch", result)
            .map(|responses| Response::new(SearchBatchResponse { responses }))
    }

    type SearchStreamStream = ReceiverStream<Result<SearchStreamResponse, Status>>;

    async fn search_stream(
        &self,
        request: Request<Streaming<SearchRequest>>,
    ) -> Result<Response<Self::SearchStreamStream>, Status> {
        let deadline = deadline(&request);
        let Some(slot) = self.shared.open_stream() else {
            let status = Status::resource_exhausted(format!(
                "max_streams: {} SearchStream calls are open (the server limit)",
                self.shared.options.max_streams
            ));
            return counted(&self.shared, "SearchStream", Err(status));
        };
        let (answers, stream) = mpsc::channel(self.shared.options.stream_window);
        tokio::spawn(pump(
            self.shared.clone(),
            slot,
            request.into_inner(),
            answers,
            deadline,
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn get_index_info(
        &self,
        _request: Request<GetIndexInfoRequest>,
    ) -> Result<Response<IndexInfo>, Status> {
        let served = self.shared.served();
        let info = index_info(&self.shared, &served);
        counted(&self.shared, "GetIndexInfo", Ok(Response::new(info)))
    }
}

/// SearchBatch: the requests in contiguous chunks, one job per worker, answered in order. Either
/// every chunk is queued or none (the queue's room is checked chunk by chunk; on refusal the
/// queued ones are cancelled).
async fn run_batch(
    shared: &Arc<Shared>,
    deadline: Option<Instant>,
    requests: Vec<SearchRequest>,
) -> Result<Vec<SearchResponse>, Status> {
    let max_batch = shared.options.max_batch;
    if requests.len() > max_batch {
        return Err(Status::resource_exhausted(format!(
            "requests: {} queries exceed the server limit max_batch = {max_batch}",
            requests.len()
        )));
    }
    let started = Instant::now();
    let total = requests.len();
    let chunk = total.div_ceil(shared.workers.threads().max(1)).max(1);
    let cancel = Cancel::default();
    let served = shared.served();
    in_service(&served)?;
    let mut pending = Vec::new();
    let mut requests = requests.into_iter();
    loop {
        let part: Vec<SearchRequest> = requests.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let (served, job_shared) = (served.clone(), shared.clone());
        let answers = shared
            .workers
            .submit(&cancel, move |cancelled| {
                answer_all(&job_shared, &served.index, part, cancelled)
            })
            .map_err(rejected)?;
        pending.push(answers);
    }
    let mut responses = Vec::with_capacity(total);
    for answers in pending {
        for answer in until(deadline, answers).await? {
            let i = responses.len();
            let (response, stats) =
                answer.map_err(|e| to_status(e.within(&format!("requests[{i}]."))))?;
            shared.metrics.observe(&stats, started.elapsed());
            responses.push(response);
        }
    }
    Ok(responses)
}

/// A stream query on its way: the worker's answer to come, or why there will be none. Queries
/// that went to the workers together share one cancel flag, raised when the last of them is
/// dropped.
struct Pending {
    query_id: String,
    started: Instant,
    state: Result<
        (
            oneshot::Receiver<tandem_engine::Result<Answer>>,
            Arc<Cancel>,
        ),
        Status,
    >,
}

/// UNAVAILABLE when the served index is out of service (a file failed its checksum), so that
/// clients and routers try another replica.
fn in_service(served: &Served) -> Result<(), Status> {
    match served.out_of_service() {
        Some(error) => Err(Status::unavailable(format!(
            "the index is out of service until a good one is loaded: {error}"
        ))),
        None => Ok(()),
    }
}

impl Pending {
    fn start(shared: &Arc<Shared>, request: SearchRequest) -> Pending {
        let query_id = request.query_id.clone();
        let cancel = Cancel::default();
        let (served, job_shared) = (shared.served(), shared.clone());
        let state = in_service(&served).and_then(|()| {
            shared
                .workers
                .submit(&cancel, move |cancelled| {
                    answer_one(&job_shared, &served.index, request, cancelled)
                })
                .map(|receiver| (receiver, Arc::new(cancel)))
                .map_err(rejected)
        });
        Pending {
            query_id,
            started: Instant::now(),
            state,
        }
    }

    /// Starts `requests` read together from a stream: text queries as one job (their texts
    /// encoded in one batch), the others one job each.
    fn start_all(shared: &Arc<Shared>, requests: Vec<SearchRequest>) -> Vec<Pending> {
        let has_text = |r: &SearchRequest| r.query.as_ref().is_some_and(|q| !q.text.is_empty());
        if requests.iter().filter(|r| has_text(r)).count() < 2 {
            return requests
                .into_iter()
                .map(|r| Pending::start(shared, r))
                .collect();
        }
        let started = Instant::now();
        let cancel = Arc::new(Cancel::default());
        let mut pending = Vec::with_capacity(requests.len());
        let mut group = Vec::new();
        let mut senders = Vec::new();
        for request in requests {
            if !has_text(&request) {
                pending.push(Pending::start(shared, request));
                continue;
            }
            let (sender, receiver) = oneshot::channel();
            pending.push(Pending {
                query_id: request.query_id.clone(),
                started,
                state: Ok((receiver, cancel.clone())),
            });
            senders.push(sender);
            group.push(request);
        }
        let (served, job_shared) = (shared.served(), shared.clone());
        let submitted = in_service(&served).and_then(|()| {
            shared
                .workers
                .submit(&cancel, move |cancelled| {
                    let answers = answer_all(&job_shared, &served.index, group, cancelled);
                    for (sender, answer) in senders.into_iter().zip(answers) {
                        let _ = sender.send(answer);
                    }
                })
                .map_err(rejected)
        });
        if let Err(refusal) = submitted {
            for p in &mut pending {
                if p.state.as_ref().is_ok_and(|(_, c)| Arc::ptr_eq(c, &cancel)) {
                    p.state = Err(refusal.clone());
                }
            }
        }
        pending
    }
}

/// The answer of the oldest pending stream query (never resolves when there is none).
async fn next_answer(shared: &Shared, pending: &mut VecDeque<Pending>) -> SearchStreamResponse {
    let outcome = match pending.front_mut().map(|p| &mut p.state) {
        None => return std::future::pending().await,
        Some(Err(_)) => None,
        Some(Ok((receiver, _))) => Some(receiver.await),
    };
    let Some(done) = pending.pop_front() else {
        return std::future::pending().await;
    };
    let result = match (done.state, outcome) {
        (Err(status), _) => Err(status),
        (Ok(_), Some(Ok(Ok((response, stats))))) => {
            shared.metrics.observe(&stats, done.started.elapsed());
            Ok(response)
        }
        (Ok(_), Some(Ok(Err(e)))) => Err(to_status(e)),
        (Ok(_), _) => Err(Status::internal("the query was dropped before it ran")),
    };
    let code = result
        .as_ref()
        .map_or_else(Status::code, |_| tonic::Code::Ok);
    shared.metrics.count("SearchStream", code);
    SearchStreamResponse {
        result: Some(match result {
            Ok(response) => StreamResult::Response(response),
            Err(status) => StreamResult::Error(StreamError {
                code: status.code() as i32,
                message: status.message().to_string(),
                query_id: done.query_id,
            }),
        }),
    }
}

/// Reads a stream's requests, keeps up to `stream_window` of them in flight on the workers, and
/// sends their answers in request order; stops at the call's deadline or when the client goes
/// away (pending queries are then cancelled). A request message that cannot be read (see
/// [`request_fault`]) ends the reading: the queries read before it are still answered, then the
/// call fails with its status.
async fn pump(
    shared: Arc<Shared>,
    _slot: StreamSlot,
    mut requests: Streaming<SearchRequest>,
    answers: mpsc::Sender<Result<SearchStreamResponse, Status>>,
    deadline: Option<Instant>,
) {
    let window = shared.options.stream_window;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut reading = true;
    let mut unreadable = None;
    let expired = tokio::time::sleep_until(deadline.unwrap_or_else(far_future));
    tokio::pin!(expired);
    while reading || !pending.is_empty() {
        let room = reading && pending.len() < window;
        tokio::select! {
            biased;
            _ = &mut expired, if deadline.is_some() => {
                let status = Status::deadline_exceeded(
                    "the call's deadline (grpc-timeout) passed; unanswered queries were cancelled",
                );
                let _ = answers.send(Err(status)).await;
                return;
            }
            answer = next_answer(&shared, &mut pending), if !pending.is_empty() => {
                if answers.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
            message = requests.message(), if room => match message {
                Ok(Some(request)) => {
                    // The requests that have already arrived go to the workers together (text
                    // queries are then encoded in one batch).
                    let mut arrived = vec![request];
                    while reading && pending.len() + arrived.len() < window {
                        let next = tokio::select! {
                            biased;
                            message = requests.message() => Some(message),
                            () = std::future::ready(()) => None,
                        };
                        match next {
                            None => break,
                            Some(Ok(Some(request))) => arrived.push(request),
                            Some(Ok(None)) => reading = false,
                            Some(Err(status)) => {
                                unreadable =
                                    Some(request_fault(status, shared.options.max_message_bytes));
                                reading = false;
                            }
                        }
                    }
                    pending.extend(Pending::start_all(&shared, arrived));
                }
                Ok(None) => reading = false,
                Err(status) => {
                    unreadable = Some(request_fault(status, shared.options.max_message_bytes));
                    reading = false;
                }
            },
        }
    }
    if let Some(status) = unreadable {
        let _ = answers.send(Err(status)).await;
    }
}

/// An instant no deadline reaches (a timer that never fires for calls without one).
fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

/// The description of the served index and of the server (GetIndexInfo, ReloadIndex).
pub fn index_info(shared: &Shared, served: &Served) -> IndexInfo {
    let index = &served.index;
    // Counts are the index's; build settings are the primary segment's (see `Index::primary`).
    let manifest = index.primary().manifest();
    let options = &shared.options;
    let deleted = index.deleted_count();
    let doc_count = index.doc_count() as u64;
    let approx = manifest.approx.as_ref();
    let calibration = approx.and_then(|a| a.calibration.as_ref());
    let approx_default = |knob: fn(&ApproxQueryParams) -> usize| {
        approx.map_or(0, |a| saturate(knob(&a.query_defaults)))
    };
    IndexInfo {
        doc_count,
        vocab_size: index.vocab_size() as u64,
        token_count: index.token_count(),
        dim: saturate(index.dim()),
        vector_codec: index.vector_codec().to_string(),
        doc_tokens: index.has_doc_tokens(),
        checksums: match served.checksums() {
            ChecksumState::Verified => "verified".to_string(),
            ChecksumState::Pending => "pending".to_string(),
            ChecksumState::Skipped => "skipped".to_string(),
            ChecksumState::Corrupt(error) => format!("corrupt: {error}"),
        },
        format_version: manifest.format_version,
        posting_count: index.posting_count(),
        size_bytes: index.size_bytes(),
        build_parameters: manifest
            .build_parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        path: index.dir().display().to_string(),
        default_k: saturate(options.default_k),
        default_kappa: saturate(options.default_kappa),
        max_k: saturate(options.limits.max_k),
        max_kappa: saturate(options.limits.max_kappa),
        default_first_stage: match index.default_first_stage() {
            FirstStage::Approx(_) => "approximate".to_string(),
            FirstStage::Exact => "exact".to_string(),
        },
        default_query_cut: approx_default(|q| q.query_cut),
        default_rescore: approx_default(|q| q.rescore),
        default_depth: approx_default(|q| q.depth),
        default_expand: approx_default(|q| q.expand),
        cluster_size: approx.map_or(0, |a| saturate(a.build.cluster_size)),
        expected_accuracy_at_10: calibration.map(|c| c.accuracy_at_10),
        calibration_source: calibration.map(|c| c.source.clone()).unwrap_or_default(),
        calibration_queries: calibration.map_or(0, |c| saturate(c.queries)),
        bytes_per_token: index.vector_bytes() as f32 / index.token_count().max(1) as f32,
        default_cp_alpha: options.default_cp_alpha,
        default_ee_beta: options.default_ee_beta.map(saturate),
        default_fusion_method: options.default_fusion.method.name().to_string(),
        default_fusion_weight: options.default_fusion.weight,
        default_rrf_k: options.default_rrf_k,
        uptime_seconds: shared.started.elapsed().as_secs(),
        index_loaded_seconds_ago: served.loaded.elapsed().as_secs(),
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        build_target: env!("TANDEM_BUILD_TARGET").to_string(),
        build_profile: env!("TANDEM_BUILD_PROFILE").to_string(),
        rustc_version: env!("TANDEM_RUSTC_VERSION").to_string(),
        maxsim_kernel: tandem_engine::kernels::detect().to_string(),
        workers: saturate(shared.workers.threads()),
        max_queue: saturate(shared.workers.capacity()),
        encoders: shared.encoders.info().to_vec(),
        // One snapshot, so doc_count = live_count + deleted_count even during a delete.
        live_count: doc_count.saturating_sub(deleted),
        deleted_count: deleted,
        attributes: index
            .attribute_kinds()
            .into_iter()
            .map(|(name, kind)| (name, kind.name().to_string()))
            .collect(),
        segments: index
            .segment_names()
            .iter()
            .zip(index.segments())
            .map(|(name, segment)| SegmentInfo {
                name: name.clone(),
                doc_count: segment.doc_count() as u64,
                deleted_count: segment.tombstones().len(),
                size_bytes: segment.size_bytes(),
                first_stage: if segment.approx().is_some() {
                    "approximate".to_string()
                } else {
                    "exact".to_string()
                },
            })
            .collect(),
        writes: Some(write_info(shared)),
    }
}

/// Where the live writes stand, for IndexInfo.
fn write_info(shared: &Shared) -> v1::WriteInfo {
    let options = &shared.options.writes;
    let settings = v1::WriteInfo {
        refresh_interval_s: options.refresh_interval_s,
        seal_docs: options.seal_docs,
        seal_bytes: options.seal_bytes,
        ..Default::default()
    };
    match (&shared.writes, options.read_only) {
        (Writes::Live(live), false) => {
            let status = live.status();
            v1::WriteInfo {
                writable: true,
                logged_seq: status.logged_seq,
                visible_seq: status.visible_seq,
                sealed_seq: status.sealed_seq,
                wal_bytes: status.wal_bytes,
                unsealed_docs: status.unsealed_docs,
                seals: status.seals,
                merges: status.merges,
                ..settings
            }
        }
        (Writes::Refused(reason), false) => v1::WriteInfo {
            reason: reason.clone(),
            ..settings
        },
        (_, true) => v1::WriteInfo {
            reason: "this server was started with --read-only".to_string(),
            ..settings
        },
    }
}

/// A configured count as a `u32` field (limits above `u32::MAX` behave as unlimited).
fn saturate(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}
