//! What every call shares: the served index (swappable), the options, the worker pool, the
//! metrics and the open-stream count.

use crate::config::ServeOptions;
use crate::encode::Encoders;
use crate::metrics::Metrics;
use crate::workers::Workers;
use arc_swap::ArcSwap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tandem_engine::{DeleteOutcome, Index, Verify};

/// The index being served and when it was loaded.
pub struct Served {
    /// The index.
    pub index: Index,
    /// When it was swapped in.
    pub loaded: Instant,
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
    /// How indexes are verified when (re)loaded.
    pub verify: Verify,
    /// When the server started.
    pub started: Instant,
    /// The encoders of text queries.
    pub encoders: Encoders,
    streams: AtomicUsize,
    /// One reload or delete at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Shared {
    /// Shared state serving `index` with `options` (starts the worker threads).
    pub fn new(index: Index, options: ServeOptions, verify: Verify) -> std::io::Result<Shared> {
        let workers = Workers::new(options.workers, options.max_queue)?;
        let now = Instant::now();
        Ok(Shared {
            served: ArcSwap::from_pointee(Served { index, loaded: now }),
            options,
            workers,
            metrics: Metrics::new(),
            verify,
            started: now,
            encoders: Encoders::default(),
            streams: AtomicUsize::new(0),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The index now served; a call keeps using the one it got even if a reload swaps another in.
    pub fn served(&self) -> Arc<Served> {
        self.served.load_full()
    }

    /// Loads `dir` (default: the directory served now) off the reactor and swaps it in. On
    /// failure the current index stays. Returns the new index and how long the load took.
    pub async fn reload(&self, dir: Option<PathBuf>) -> tandem_engine::Result<(Arc<Served>, u128)> {
        let _one_at_a_time = self.reloading.lock().await;
        let dir = dir.unwrap_or_else(|| self.served().index.dir().to_path_buf());
        let verify = self.verify;
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
        let served = Arc::new(Served {
            index,
            loaded: Instant::now(),
        });
        self.served.store(served.clone());
        Ok((served, started.elapsed().as_millis()))
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
        let deleting = served.clone();
        let outcome = tokio::task::spawn_blocking(move || deleting.index.delete(&ids))
            .await
            .map_err(|e| {
                tandem_engine::Error::corrupt(served.index.dir(), format!("delete failed: {e}"))
            })??;
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
