//! What every call shares: the served index (swappable), the options, the worker pool, the
//! metrics and the open-stream count.

use crate::config::{Checksums, ServeOptions};
use crate::encode::Encoders;
use crate::metrics::Metrics;
use crate::workers::Workers;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tandem_engine::live::LiveIndex;
use tandem_engine::{DeleteOutcome, Index};
use tandem_proto::v1::search_server::SERVICE_NAME as SEARCH_SERVICE;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// Where the checksum pass over a served index's files stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumState {
    /// Not done yet: running (or about to) in the background.
    Pending,
    /// Every file matches its checksum.
    Verified,
    /// A file does not: the index is out of service. The error, naming the file.
    Corrupt(String),
    /// Not verified (`--verify off`).
    Skipped,
}

/// The index being served, when it was loaded, and whether its files were found intact.
pub struct Served {
    /// The index (for a writable index, the view of its last refresh).
    pub index: Arc<Index>,
    /// When it was swapped in.
    pub loaded: Instant,
    checksums: Mutex<ChecksumState>,
}

impl Served {
    /// `index`, loaded now, opened as `verify` says (so verified already with `Full`).
    fn new(index: Arc<Index>, verify: Checksums) -> Served {
        let state = match verify {
            Checksums::Full => ChecksumState::Verified,
            Checksums::Background => ChecksumState::Pending,
            Checksums::Off => ChecksumState::Skipped,
        };
        Served {
            index,
            loaded: Instant::now(),
            checksums: Mutex::new(state),
        }
    }

    /// A newer view of the same writable index: loaded and checked when `earlier` was (the
    /// segments a writer adds are verified as it writes them).
    fn refreshed(index: Arc<Index>, earlier: &Served) -> Served {
        Served {
            index,
            loaded: earlier.loaded,
            checksums: Mutex::new(earlier.checksums()),
        }
    }

    /// Where the checksum pass stands.
    pub fn checksums(&self) -> ChecksumState {
        self.checksums
            .lock()
            .map_or(ChecksumState::Pending, |s| s.clone())
    }

    /// Why the index is out of service (a file failed its checksum), if it is.
    pub fn out_of_service(&self) -> Option<String> {
        match self.checksums() {
            ChecksumState::Corrupt(error) => Some(error),
            _ => None,
        }
    }

    fn set_checksums(&self, state: ChecksumState) {
        if let Ok(mut s) = self.checksums.lock() {
            *s = state;
        }
    }
}

/// State shared by the services and the metrics endpoint.
pub struct Shared {
    served: ArcSwap<Served>,
    /// Query defaults and limits.
    pub options: ServeOptions,
    /// The threads queries run on.
    pub workers: Workers,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// When the checksums of (re)loaded indexes are verified.
    pub verify: Checksums,
    /// The gRPC health statuses: NOT_SERVING while the served index is out of service.
    pub health: HealthReporter,
    /// When the server started.
    pub started: Instant,
    /// The encoders of text queries.
    pub encoders: Encoders,
    streams: AtomicUsize,
    /// Set at shutdown: a background checksum pass stops (so the process exits without
    /// reading the rest of a large index).
    stopping: AtomicBool,
    /// One reload or delete at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Writes: the writable index, or why writes are refused.
    pub writes: Writes,
    /// One Upsert batch is converted, validated and logged at a time: ingest takes at most one
    /// core from queries however many clients write (they queue here, in arrival order).
    pub write_lane: tokio::sync::Semaphore,
}

/// Whether the server takes writes.
pub enum Writes {
    /// It does, into this index.
    Live(Arc<LiveIndex>),
    /// It does not, for this reason (FAILED_PRECONDITION names it).
    Refused(String),
}

/// What a server serves: an index opened for reading, or a writable one.
pub enum Source {
    /// Read-only (Delete still writes tombstones of a single-segment index unless the reason
    /// says writes are refused altogether).
    Static {
        /// The index.
        index: Index,
        /// Why writes (Upsert) are refused.
        reason: String,
    },
    /// Writable.
    Live(Arc<LiveIndex>),
}

impl From<Index> for Source {
    fn from(index: Index) -> Source {
        let reason = if index.segment_names().iter().all(|n| n.is_empty()) {
            format!(
                "{} is a single segment (manifest.json), which cannot take writes: build it with `tandem-index build --segment-docs N`, or start from `tandem-index create`",
                index.dir().display()
            )
        } else {
            "this server was given an index opened read-only".to_string()
        };
        Source::Static { index, reason }
    }
}

impl Shared {
    /// Shared state serving `index` (opened as `options.verify` says) with `options`, its
    /// health reported to `health` (starts the worker threads; the background checksum pass
    /// starts with [`Shared::start_checksums`]).
    pub fn new(
        source: Source,
        options: ServeOptions,
        health: HealthReporter,
    ) -> std::io::Result<Shared> {
        let workers = Workers::new(options.workers, options.max_queue)?;
        let now = Instant::now();
        let verify = options.verify;
        let (index, writes) = match source {
            Source::Static { index, reason } => (Arc::new(index), Writes::Refused(reason)),
            Source::Live(live) => (live.view(), Writes::Live(live)),
        };
        Ok(Shared {
            served: ArcSwap::from_pointee(Served::new(index, verify)),
            writes,
            write_lane: tokio::sync::Semaphore::new(1),
            options,
            workers,
            metrics: Metrics::new(),
            verify,
            health,
            started: now,
            encoders: Encoders::default(),
            streams: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The index now served; a call keeps using the one it got even if a reload (or, for a
    /// writable index, a refresh) swaps another in.
    pub fn served(&self) -> Arc<Served> {
        let served = self.served.load_full();
        if let Writes::Live(live) = &self.writes {
            let view = live.view();
            if !Arc::ptr_eq(&view, &served.index) {
                let next = Arc::new(Served::refreshed(view, &served));
                self.served.store(next.clone());
                return next;
            }
        }
        served
    }

    /// The writable index, or FAILED_PRECONDITION saying why writes are refused.
    pub fn live(&self) -> Result<&Arc<LiveIndex>, tonic::Status> {
        match &self.writes {
            Writes::Live(live) => Ok(live),
            Writes::Refused(reason) => Err(tonic::Status::failed_precondition(format!(
                "writes are refused: {reason}"
            ))),
        }
    }

    /// Loads `dir` (default: the directory served now) off the reactor and swaps it in. On
    /// failure the current index stays. Returns the new index and how long the load took.
    pub async fn reload(&self, dir: Option<PathBuf>) -> tandem_engine::Result<(Arc<Served>, u128)> {
        let _one_at_a_time = self.reloading.lock().await;
        if let Writes::Live(live) = &self.writes {
            return Err(tandem_engine::Error::Stale {
                path: live.dir().to_path_buf(),
                message: "this server writes into the index it serves, which refreshes itself; ReloadIndex serves new directories on servers started with --read-only"
                    .to_string(),
            });
        }
        let dir = dir.unwrap_or_else(|| self.served().index.dir().to_path_buf());
        let verify = self.verify.at_open();
        let started = Instant::now();
        let opening = dir.clone();
        let index = tokio::task::spawn_blocking(move || Index::open_with(&opening, verify))
            .await
            .map_err(|e| tandem_engine::Error::corrupt(&dir, format!("loading failed: {e}")))??;
        if let Some(encoded) = self.encoders.vector_dim() {
            if encoded != index.dim() {
                return Err(tandem_engine::Error::bad_input(
                    dir.display().to_string(),
                    format!(
                        "the index stores {}-d token vectors but the server's token-vector \
                         encoder makes {encoded}-d ones: text queries could not be answered",
                        index.dim()
                    ),
                ));
            }
        }
        let served = Arc::new(Served::new(Arc::new(index), self.verify));
        self.served.store(served.clone());
        self.set_health(ServingStatus::Serving).await;
        Ok((served, started.elapsed().as_millis()))
    }

    /// Starts the background checksum pass over the served index's files when it is pending
    /// (`--verify background`): one file after the other on a blocking thread. A mismatch
    /// takes the index out of service (searches UNAVAILABLE, health NOT_SERVING, an error in
    /// the log naming the file) until a reload serves another.
    pub fn start_checksums(self: &Arc<Self>) {
        let served = self.served();
        if served.checksums() != ChecksumState::Pending {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (checking, stopping) = (served.clone(), shared.clone());
            let result = tokio::task::spawn_blocking(move || {
                checking.index.verify_checksums(&stopping.stopping)
            })
            .await
            .map_err(|e| format!("the checksum pass failed: {e}"))
            .and_then(|r| match r {
                Err(tandem_engine::Error::Cancelled) => Ok(false),
                other => other.map(|()| true).map_err(|e| e.to_string()),
            });
            let dir = served.index.dir().display().to_string();
            match result {
                Ok(false) => tracing::info!(index = %dir, "checksum pass stopped: shutting down"),
                Ok(true) => {
                    served.set_checksums(ChecksumState::Verified);
                    tracing::info!(
                        index = %dir,
                        seconds = started.elapsed().as_secs_f64(),
                        "checksums verified: every file of the index is intact"
                    );
                }
                Err(error) => {
                    // Under the reload lock, so that a reload swapping a good index in does
                    // not have its SERVING overwritten by this older verdict.
                    let _no_reload = shared.reloading.lock().await;
                    served.set_checksums(ChecksumState::Corrupt(error.clone()));
                    // Health first, so that whoever reads the log line finds it NOT_SERVING.
                    if Arc::ptr_eq(&shared.served(), &served) {
                        shared.set_health(ServingStatus::NotServing).await;
                    }
                    tracing::error!(
                        index = %dir,
                        %error,
                        "THE INDEX IS CORRUPT and out of service (searches answer UNAVAILABLE, \
                         health NOT_SERVING) until a good index is loaded (ReloadIndex, SIGHUP)"
                    );
                }
            }
        });
    }

    /// Stops the background checksum pass, if one runs (at shutdown).
    pub fn stop_background_work(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Sets the overall health status and the Search service's.
    async fn set_health(&self, status: ServingStatus) {
        self.health.set_service_status("", status).await;
        self.health.set_service_status(SEARCH_SERVICE, status).await;
    }

    /// Deletes `ids` from the served index (see [`Index::delete`]), off the reactor. Holds the
    /// reload lock, so a delete and a reload never interleave: a reload of the same directory
    /// reads the tombstones this delete wrote, and a delete never lands on an index being
    /// swapped out. Returns the outcome and the index it applies to.
    pub async fn delete(
        &self,
        ids: Vec<String>,
    ) -> tandem_engine::Result<(DeleteOutcome, Arc<Served>)> {
        let _no_reload = self.reloading.lock().await;
        let served = self.served();
        let failed = |e: tokio::task::JoinError| {
            tandem_engine::Error::corrupt(served.index.dir(), format!("delete failed: {e}"))
        };
        if let Writes::Live(live) = &self.writes {
            let live = live.clone();
            let (outcome, _) = tokio::task::spawn_blocking(move || live.delete(ids))
                .await
                .map_err(failed)??;
            return Ok((outcome, self.served()));
        }
        let deleting = served.clone();
        let outcome = tokio::task::spawn_blocking(move || deleting.index.delete(&ids))
            .await
            .map_err(failed)??;
        Ok((outcome, served))
    }

    /// Claims one of the `max_streams` stream slots, released when the guard drops.
    pub fn open_stream(self: &Arc<Self>) -> Option<StreamSlot> {
        let max = self.options.max_streams;
        self.streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()
            .map(|_| StreamSlot(self.clone()))
    }
}

/// An open SearchStream's claim on a slot.
pub struct StreamSlot(Arc<Shared>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}
