//! Live writes over gRPC: Upsert documents in engine terms, the calls' bookkeeping, and the
//! background refresh, seal and merge loop of a writable index.

use crate::convert::vector_values;
use crate::state::Shared;
use crate::status::to_status;
use half::f16;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tandem_data::jsonl::AttrValue;
use tandem_engine::live::record::NewDoc;
use tandem_engine::live::LiveIndex;
use tandem_engine::{Error, Index, Result};
use tandem_proto::v1::{self, attribute_value};
use tonic::Status;

/// Longest a call waits for its writes to become searchable (`wait_for_visible`).
pub const MAX_VISIBILITY_WAIT: Duration = Duration::from_secs(60);

/// The documents of an Upsert batch in engine terms; errors name `{prefix}documents[i]` and
/// the field. Terms given by id are resolved with `view`'s vocabulary.
pub fn documents(view: &Index, docs: Vec<v1::Document>, prefix: &str) -> Result<Vec<NewDoc>> {
    docs.into_iter()
        .enumerate()
        .map(|(i, doc)| document(view, doc, &format!("{prefix}documents[{i}]")))
        .collect()
}

fn document(view: &Index, doc: v1::Document, field: &str) -> Result<NewDoc> {
    let by_id = doc
        .sparse
        .as_ref()
        .filter(|s| !(s.indices.is_empty() && s.values.is_empty()));
    let terms = match (by_id, doc.sparse_tokens.is_empty()) {
        (Some(_), false) => {
            return Err(Error::invalid(
                field,
                "set either `sparse` (ids) or `sparse_tokens` (strings), not both",
            ))
        }
        (None, _) => {
            // Sorted, so that new terms join a growing vocabulary in an order that does not
            // depend on the map's.
            let mut terms: Vec<(String, f32)> = doc
                .sparse_tokens
                .into_iter()
                .filter(|(_, w)| *w != 0.0)
                .collect();
            terms.sort_by(|a, b| a.0.cmp(&b.0));
            terms
        }
        (Some(sparse), true) => {
            if sparse.indices.len() != sparse.values.len() {
                return Err(Error::invalid(
                    format!("{field}.sparse.values"),
                    format!(
                        "{} values for {} indices",
                        sparse.values.len(),
                        sparse.indices.len()
                    ),
                ));
            }
            let mut terms = Vec::with_capacity(sparse.indices.len());
            for (j, (&id, &weight)) in sparse.indices.iter().zip(&sparse.values).enumerate() {
                let term = view.term(id).ok_or_else(|| {
                    Error::invalid(
                        format!("{field}.sparse.indices[{j}]"),
                        format!(
                            "term id {id} is out of range (vocabulary size {})",
                            view.vocab_size()
                        ),
                    )
                })?;
                if weight != 0.0 {
                    terms.push((term.to_string(), weight));
                }
            }
            terms
        }
    };
    let vectors = doc.vectors.ok_or_else(|| {
        Error::invalid(
            format!("{field}.vectors"),
            "token vectors are required (at least one row of IndexInfo.dim values)",
        )
    })?;
    let (values, dim) = halves(vectors, &format!("{field}.vectors"))?;
    if dim != view.dim() {
        return Err(Error::invalid(
            format!("{field}.vectors.dim"),
            format!("{dim} does not match the index dim {}", view.dim()),
        ));
    }
    let mut attrs = Vec::with_capacity(doc.attributes.len());
    for (name, value) in doc.attributes {
        let value = match value.value {
            Some(attribute_value::Value::Text(s)) => AttrValue::Str(s),
            Some(attribute_value::Value::Integer(v)) => AttrValue::Int(v),
            Some(attribute_value::Value::List(list)) => AttrValue::List(list.values),
            None => {
                return Err(Error::invalid(
                    format!("{field}.attributes[{name:?}]"),
                    "no value (set text, integer or list)",
                ))
            }
        };
        attrs.push((name, value));
    }
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(NewDoc {
        id: doc.id,
        terms,
        vectors: values,
        attrs,
    })
}

/// Token vectors as float16 (what the index stores) and their dim: `f16_le` bytes are taken
/// as they are, other forms converted; errors name `field`.
fn halves(vectors: v1::TokenVectors, field: &str) -> Result<(Vec<f16>, usize)> {
    let only_f16 =
        !vectors.f16_le.is_empty() && vectors.values.is_empty() && vectors.f32_le.is_empty();
    if !only_f16 {
        let converted = vector_values(vectors, field)?;
        let values = converted.values.iter().map(|&v| f16::from_f32(v)).collect();
        return Ok((values, converted.dim));
    }
    if vectors.dim == 0 {
        return Err(Error::invalid(format!("{field}.dim"), "must be > 0"));
    }
    let (pairs, rest) = vectors.f16_le.as_chunks::<2>();
    if !rest.is_empty() {
        return Err(Error::invalid(
            format!("{field}.f16_le"),
            format!(
                "{} bytes is not a whole number of float16 values",
                vectors.f16_le.len()
            ),
        ));
    }
    let values = pairs.iter().map(|b| f16::from_le_bytes(*b)).collect();
    Ok((values, vectors.dim as usize))
}

/// Logs one batch (after the limit check and conversion); returns its outcome. `prefix`
/// locates the batch in a stream (`batches[i].`).
pub async fn upsert_batch(
    shared: &Shared,
    live: &Arc<LiveIndex>,
    request: v1::UpsertRequest,
    prefix: &str,
) -> std::result::Result<tandem_engine::live::UpsertOutcome, Status> {
    let max = shared.options.writes.max_upsert_docs;
    if request.documents.len() > max {
        return Err(Status::resource_exhausted(format!(
            "{prefix}documents: {} documents exceed the server limit max_upsert_docs = {max}; \
             send them in several batches",
            request.documents.len()
        )));
    }
    let _lane = shared
        .write_lane
        .acquire()
        .await
        .map_err(|_| Status::unavailable("the server is shutting down"))?;
    let view = shared.served().index.clone();
    let live = live.clone();
    let prefix = prefix.to_string();
    tokio::task::spawn_blocking(move || {
        let docs = documents(&view, request.documents, &prefix)?;
        live.upsert(docs).map_err(|e| match e {
            Error::InvalidArgument { field, message } => Error::InvalidArgument {
                field: format!("{prefix}{field}"),
                message,
            },
            other => other,
        })
    })
    .await
    .map_err(|e| Status::internal(format!("upsert failed: {e}")))?
    .map_err(to_status)
}

/// Waits until write `seq` is searchable; UNAVAILABLE when it is not within
/// [`MAX_VISIBILITY_WAIT`] (it is logged and will be).
pub async fn wait_visible(live: &Arc<LiveIndex>, seq: u64) -> std::result::Result<(), Status> {
    let live = live.clone();
    let visible = tokio::task::spawn_blocking(move || live.wait_visible(seq, MAX_VISIBILITY_WAIT))
        .await
        .map_err(|e| Status::internal(format!("waiting for visibility failed: {e}")))?;
    if visible {
        Ok(())
    } else {
        Err(Status::unavailable(format!(
            "write {seq} is logged (durable) but not searchable after {} s: the index's refreshes \
             are failing (see the server log)",
            MAX_VISIBILITY_WAIT.as_secs()
        )))
    }
}

/// Refreshes the writable index every `--refresh-interval` until `stopped` resolves, and
/// seals and merges when it should (one such job at a time; queries and writes go on
/// meanwhile). Both run on threads of their own at a lower CPU priority
/// ([`tandem_engine::priority`]), so queries keep the cores when both want them.
pub async fn refresh_loop(
    shared: Arc<Shared>,
    live: Arc<LiveIndex>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let interval = Duration::from_secs_f64(shared.options.writes.refresh_interval_s);
    let stop = Arc::new(AtomicBool::new(false));
    let (wake, woken) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("tandem-maintain".to_string())
        .spawn({
            let live = live.clone();
            move || {
                tandem_engine::priority::lower_this_thread();
                while woken.recv().is_ok() {
                    // Wake-ups sent while the last job ran ask for this one.
                    while woken.try_recv().is_ok() {}
                    maintain(&live);
                }
            }
        });
    let maintainer = spawned
        .map_err(|error| {
            tracing::error!(%error, "cannot start the seal and merge thread: segments are not sealed")
        })
        .ok();
    let refresher = std::thread::Builder::new()
        .name("tandem-refresh".to_string())
        .spawn({
            let stop = stop.clone();
            move || {
                tandem_engine::priority::lower_this_thread();
                while !stop.load(Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    if let Err(error) = live.refresh() {
                        tracing::error!(%error, "refresh failed; writes stay logged");
                    }
                    if live.wants_seal() || live.wants_merge() {
                        let _ = wake.send(());
                    }
                    std::thread::sleep(interval.saturating_sub(started.elapsed()));
                }
            }
        });
    let refresher = refresher
        .map_err(|error| {
            tracing::error!(%error, "cannot start the refresh thread: writes will not become searchable")
        })
        .ok();
    stopped.await;
    stop.store(true, Ordering::Relaxed);
    // The refresher ends within an interval and drops the maintainer's channel, which ends it
    // after its current job.
    let joined = tokio::task::spawn_blocking(move || {
        for thread in [refresher, maintainer].into_iter().flatten() {
            let _ = thread.join();
        }
    });
    let _ = joined.await;
}

/// Seals when a threshold is reached, then merges while the policy asks; logs each step.
fn maintain(live: &LiveIndex) {
    if live.wants_seal() {
        match live.seal() {
            Ok(_) => {
                let status = live.status();
                tracing::info!(
                    sealed_seq = status.sealed_seq,
                    seconds = status.last_seal_s,
                    segments = status.sealed_segments,
                    wal_bytes = status.wal_bytes,
                    "refresh segments sealed"
                );
            }
            Err(error) => {
                tracing::error!(%error, "seal failed; the writes stay in the log and refresh segments");
                return;
            }
        }
    }
    loop {
        match live.merge_step() {
            Ok(true) => {
                let status = live.status();
                tracing::info!(
                    seconds = status.last_merge_s,
                    segments = status.sealed_segments,
                    "segments merged"
                );
            }
            Ok(false) => break,
            Err(error) => {
                tracing::error!(%error, "merge failed; the segments stay as they are");
                break;
            }
        }
    }
}
