//! Prometheus metrics, served as text at `/metrics` on `--metrics-listen`.
//!
//! Counted as calls finish: requests by method and status code, latency histograms per stage
//! (first stage, rerank, and the whole call as the server saw it), candidates reranked per
//! query. Read at scrape time: queue depth and running jobs, the served index's document count,
//! size on disk and how much of its token vectors is resident in memory, and for a writable
//! index where its writes stand (`tandem_writes{measure=...}`).

use crate::state::Shared;
use anyhow::Context;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_engine::SearchStats;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    /// The RPC, e.g. `Search`.
    method: String,
    /// The gRPC status code name, e.g. `OK`, `InvalidArgument`.
    code: String,
}

/// Labels of the latency histograms.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    /// `first_stage`, `rerank` or `total`.
    stage: String,
}

/// Labels of the live-write gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    /// What is measured: `logged_seq`, `visible_seq`, `sealed_seq`, `wal_bytes`,
    /// `unsealed_docs`, `sealed_segments`, `refresh_segments`, `seals`, `merges`,
    /// `last_seal_seconds`, `last_merge_seconds`.
    measure: String,
}

/// Labels of the per-file gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    /// The file's name in the index directory, e.g. `tokens.packed`.
    file: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 10 µs to ~5 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 20))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    latency: HistogramFamily<StageLabels>,
    reranked: Histogram,
    queue_depth: Gauge,
    running: Gauge,
    index_docs: Gauge,
    index_bytes: Gauge,
    index_resident_bytes: Gauge,
    index_out_of_service: Gauge,
    file_resident_bytes: Family<FileLabels, Gauge>,
    /// Live writes, read from the writable index at scrape time (absent otherwise).
    writes: Family<WriteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Serialises scrapes (the registry is encoded into one buffer).
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `tandem_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tandem");
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "requests",
            "Finished calls (for streams: queries) by method and gRPC status code",
            requests.clone(),
        );
        let latency: HistogramFamily<StageLabels> = Family::new_with_constructor(latency_histogram);
        registry.register(
            "query_latency_seconds",
            "Query latency by stage: first_stage, rerank, total (queue wait included)",
            latency.clone(),
        );
        let reranked = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "candidates_reranked",
            "Candidates scored by MaxSim per query",
            reranked.clone(),
        );
        let gauges = [
            ("queue_depth", "Query jobs waiting for a worker"),
            ("workers_busy", "Workers running a query job"),
            ("index_documents", "Documents in the served index"),
            ("index_size_bytes", "Bytes of the served index's files"),
            (
                "index_token_vectors_resident_bytes",
                "Bytes of the token-vector files resident in memory",
            ),
            (
                "index_out_of_service",
                "1 while a file of the served index failed its checksum (searches answer \
                 UNAVAILABLE), else 0",
            ),
        ]
        .map(|(name, help)| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        });
        let [queue_depth, running, index_docs, index_bytes, index_resident_bytes, index_out_of_service] =
            gauges;
        let file_resident_bytes = Family::<FileLabels, Gauge>::default();
        registry.register(
            "index_file_resident_bytes",
            "Bytes of each file of the served index in the page cache (by file name)",
            file_resident_bytes.clone(),
        );
        let writes = Family::<WriteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "writes",
            "Live writes of a writable index by measure: log sequence numbers (logged, visible, \
             sealed), write-ahead log bytes, documents not sealed yet, sealed and refresh \
             segments, seals and merges since start and the seconds the last of each took",
            writes.clone(),
        );
        Metrics {
            writes,
            registry,
            requests,
            latency,
            reranked,
            queue_depth,
            running,
            index_docs,
            index_bytes,
            index_resident_bytes,
            index_out_of_service,
            file_resident_bytes,
            scrape: Mutex::new(()),
        }
    }

    /// Counts a finished call (or stream query) of `method` with status `code`.
    pub fn count(&self, method: &str, code: tonic::Code) {
        self.requests
            .get_or_create(&CallLabels {
                method: method.to_string(),
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// Records one answered query: its stage times and candidates, and its total time.
    pub fn observe(&self, stats: &SearchStats, total: Duration) {
        let stage = |name: &str, seconds: f64| {
            self.latency
                .get_or_create(&StageLabels {
                    stage: name.to_string(),
                })
                .observe(seconds);
        };
        stage("first_stage", stats.first_stage_us as f64 * 1e-6);
        stage("rerank", stats.rerank_us as f64 * 1e-6);
        stage("total", total.as_secs_f64());
        self.reranked.observe(stats.reranked as f64);
    }

    /// The text exposition of every metric, gauges refreshed from `shared`.
    pub fn render(&self, shared: &Shared) -> String {
        let _one_at_a_time = self.scrape.lock();
        let served = shared.served();
        let index = &served.index;
        let to_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.queue_depth.set(to_i64(shared.workers.queued()));
        self.running.set(to_i64(shared.workers.running()));
        self.index_docs.set(to_i64(index.doc_count()));
        self.index_bytes
            .set(i64::try_from(index.size_bytes()).unwrap_or(i64::MAX));
        self.index_resident_bytes
            .set(to_i64(index.token_resident_bytes()));
        self.index_out_of_service
            .set(i64::from(served.out_of_service().is_some()));
        // A reload may serve other files: only the served index's are reported.
        self.file_resident_bytes.clear();
        for (file, bytes) in index.resident_bytes_by_file() {
            self.file_resident_bytes
                .get_or_create(&FileLabels { file })
                .set(to_i64(bytes));
        }
        if let crate::state::Writes::Live(live) = &shared.writes {
            let status = live.status();
            let measures = [
                ("logged_seq", status.logged_seq as f64),
                ("visible_seq", status.visible_seq as f64),
                ("sealed_seq", status.sealed_seq as f64),
                ("wal_bytes", status.wal_bytes as f64),
                ("unsealed_docs", status.unsealed_docs as f64),
                ("sealed_segments", status.sealed_segments as f64),
                ("refresh_segments", status.refresh_segments as f64),
                ("seals", status.seals as f64),
                ("merges", status.merges as f64),
                ("last_seal_seconds", status.last_seal_s),
                ("last_merge_seconds", status.last_merge_s),
            ];
            for (measure, value) in measures {
                self.writes
                    .get_or_create(&WriteLabels {
                        measure: measure.to_string(),
                    })
                    .set(value);
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move {
                // Residency is a system call over the mapped files: off the reactor.
                tokio::task::spawn_blocking(move || shared.metrics.render(&shared))
                    .await
                    .map(|text| ([(http::header::CONTENT_TYPE, TEXT_FORMAT)], text))
                    .map_err(|_| http::StatusCode::INTERNAL_SERVER_ERROR)
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("metrics server failed")
}
