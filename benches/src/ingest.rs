//! `tandem-bench ingest`: how fast a running server takes live writes over gRPC, and what they
//! do to query latency.
//!
//! 1. **Idle**: an open-loop query load (`--rate` queries/s, Poisson arrivals, latency from the
//!    intended start) for `--idle`, as the baseline.
//! 2. **Ingest**: every document of the inputs (the build's formats, as `tandem upsert` reads
//!    them) sent as Upsert batches of `--batch-size` by `--writers` concurrent writers, each on
//!    its own connection, while the same query load runs; documents/s counts acknowledged
//!    (logged and fsynced) documents over the time to the last acknowledgement. The time until
//!    the last write is searchable (`visible_seq` of GetIndexInfo) is reported too. The query
//!    load stops when the last write is searchable.
//!
//! The report: documents/s, vector MB/s, Upsert call latency, time to visible, and query
//! p50/p99 idle and during ingest with their ratio; `--json` writes it, `--plot FILE.png` draws
//! each query's latency over the ingest with the moments seals and merges finished (polled from
//! GetIndexInfo every 100 ms) marked.

use crate::load::report::{run_report, summary, RunReport};
use crate::load::{open_loop, Bounds, Method, Plan};
use crate::plot::{write_png, LineChart, Series};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_client::cli::{KnobArgs, QueryFileArgs};
use tandem_client::upsert::{batches, UpsertArgs};

/// Arguments of `tandem-bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The documents and the server (as `tandem upsert` takes them).
    #[command(flatten)]
    pub upsert: UpsertArgs,
    /// The queries of the query load.
    #[command(flatten)]
    pub files: QueryFileArgs,
    /// The knobs sent with every query.
    #[command(flatten)]
    pub knobs: KnobArgs,
    /// Concurrent writers (each its own connection, one Upsert call at a time).
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// Offered query load, queries/s (open loop, Poisson arrivals).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Measured time of the idle query load before ingesting.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub idle: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw query latency over the ingest, seals and merges marked, into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// What an ingest run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Documents acknowledged.
    pub documents: u64,
    /// Upsert calls.
    pub batches: usize,
    /// Concurrent writers.
    pub writers: usize,
    /// Token vectors sent.
    pub tokens: u64,
    /// Seconds from the first call to the last acknowledgement.
    pub ingest_s: f64,
    /// Seconds from the first call until the last write was searchable.
    pub visible_s: f64,
    /// Acknowledged documents per second.
    pub docs_per_s: f64,
    /// Token-vector megabytes (as float16) per second.
    pub vector_mb_per_s: f64,
    /// Upsert call latency, milliseconds.
    pub upsert_p50_ms: f64,
    /// Upsert call latency p99, milliseconds.
    pub upsert_p99_ms: f64,
    /// The query load before ingesting.
    pub idle: RunReport,
    /// The query load while ingesting.
    pub during: RunReport,
    /// Segments of the index afterwards (as GetIndexInfo lists them).
    pub segments_after: usize,
    /// Seconds from the start of the ingest at which seals finished.
    pub seals_at_s: Vec<f64>,
    /// Seconds from the start of the ingest at which merges finished.
    pub merges_at_s: Vec<f64>,
}

/// Runs `tandem-bench ingest` and prints the report.
pub async fn ingest(args: &IngestArgs) -> anyhow::Result<IngestReport> {
    let batches = Arc::new(batches(&args.upsert)?);
    let documents: u64 = batches.iter().map(|b| b.documents.len() as u64).sum();
    let tokens: u64 = batches
        .iter()
        .flat_map(|b| &b.documents)
        .map(|d| {
            d.vectors
                .as_ref()
                .map_or(0, |v| v.f16_le.len() as u64 / 2 / v.dim as u64)
        })
        .sum();
    let queries = args.files.load(args.knobs.sparse_only)?;
    let knobs = args.knobs.knobs();
    let plan = Arc::new(Plan {
        requests: (0..queries.len())
            .map(|i| queries.request(i, &knobs))
            .collect(),
        method: Method::Search,
        batch_size: 1,
        keep_answers: false,
        keep_timeline: true,
    });
    let server = &args.upsert.server;
    let searcher = vec![server.connect().await?];
    let mut info_client = server.connect().await?;
    let rate = args.rate;
    let run = |duration: Duration, stop: Option<Arc<AtomicBool>>, seed: u64| {
        let (searcher, plan) = (searcher.clone(), plan.clone());
        let bounds = Bounds {
            duration,
            calls: u64::MAX,
            stop,
        };
        async move { open_loop(&searcher, &plan, rate, true, seed, bounds, 4096).await }
    };

    let (recorder, elapsed, not_sent, _) = run(args.idle, None, 1).await?;
    let idle = run_report(
        format!("idle: {} queries/s", args.rate),
        Some(args.rate),
        &recorder,
        elapsed,
        not_sent,
        None,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run(Duration::from_secs(3600), Some(stop.clone()), 2));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let poller = tokio::spawn(poll_maintenance(
        server.connect().await?,
        stop.clone(),
        started,
    ));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..args.writers.max(1) {
        let mut client = server.connect().await?;
        let (batches, next) = (batches.clone(), next.clone());
        writers.spawn(async move {
            let mut latencies = Vec::new();
            let mut last_seq = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(n) else { break };
                let sent = Instant::now();
                let reply = client
                    .upsert(batch.clone())
                    .await
                    .map_err(|s| anyhow::anyhow!("batch {n}: {:?}: {}", s.code(), s.message()))?;
                latencies.push(sent.elapsed());
                last_seq = last_seq.max(reply.seq);
            }
            anyhow::Ok((latencies, last_seq))
        });
    }
    let mut latencies = Vec::new();
    let mut last_seq = 0;
    while let Some(done) = writers.join_next().await {
        let (mine, seq) = done.context("a writer failed")??;
        latencies.extend(mine);
        last_seq = last_seq.max(seq);
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let segments_after = loop {
        let info = info_client
            .index_info()
            .await
            .map_err(|s| anyhow::anyhow!("GetIndexInfo: {s}"))?;
        let writes = info.writes.unwrap_or_default();
        anyhow::ensure!(
            writes.writable,
            "the server does not take writes: {}",
            writes.reason
        );
        if writes.visible_seq >= last_seq {
            break info.segments.len();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let visible_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (recorder, elapsed, not_sent, _) = load.await??;
    let (seals_at_s, merges_at_s) = poller.await?;
    let timeline = recorder.timeline.clone().unwrap_or_default();
    let during = run_report(
        format!("during ingest: {} queries/s", args.rate),
        Some(args.rate),
        &recorder,
        elapsed,
        not_sent,
        None,
    );
    let mut histogram = Histogram::<u64>::new(3)?;
    for latency in &latencies {
        histogram.record(latency.as_micros() as u64)?;
    }
    let report = IngestReport {
        documents,
        batches: batches.len(),
        writers: args.writers.max(1),
        tokens,
        ingest_s,
        visible_s,
        docs_per_s: documents as f64 / ingest_s,
        vector_mb_per_s: tokens as f64 * 2.0 * dim_of(&batches) as f64 / ingest_s / 1e6,
        upsert_p50_ms: histogram.value_at_quantile(0.5) as f64 / 1e3,
        upsert_p99_ms: histogram.value_at_quantile(0.99) as f64 / 1e3,
        idle,
        during,
        segments_after,
        seals_at_s,
        merges_at_s,
    };
    println!("{}", text(&report));
    if let Some(path) = &args.plot {
        plot(&report, &timeline, path)?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// Polls GetIndexInfo every 100 ms until `stop`; returns when (seconds from `started`) the
/// seal and merge counters moved.
async fn poll_maintenance(
    mut client: tandem_client::TandemClient,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> (Vec<f64>, Vec<f64>) {
    let (mut seals_at, mut merges_at) = (Vec::new(), Vec::new());
    let mut last: Option<(u64, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(info) = client.index_info().await {
            let writes = info.writes.unwrap_or_default();
            let now = started.elapsed().as_secs_f64();
            if let Some((seals, merges)) = last {
                seals_at.extend((seals..writes.seals).map(|_| now));
                merges_at.extend((merges..writes.merges).map(|_| now));
            }
            last = Some((writes.seals, writes.merges));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (seals_at, merges_at)
}

/// Query latency (ms) over the ingest, with seals and merges marked at the top.
fn plot(
    report: &IngestReport,
    timeline: &[(f64, f64)],
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let top = timeline.iter().map(|p| p.1).fold(1.0, f64::max);
    let marks = |name: &str, at: &[f64], y: f64| Series {
        name: format!("{name} ({})", at.len()),
        points: at.iter().map(|&t| (t, y)).collect(),
        joined: false,
    };
    let chart = LineChart {
        title: format!(
            "query latency while ingesting {} documents ({:.0}/s, {} writers)",
            report.documents, report.docs_per_s, report.writers
        ),
        x_label: "seconds from the start of the ingest".to_string(),
        y_label: "query latency, ms".to_string(),
        series: vec![
            Series {
                name: "queries".to_string(),
                points: timeline.to_vec(),
                joined: false,
            },
            marks("seals finished", &report.seals_at_s, top * 1.05),
            marks("merges finished", &report.merges_at_s, top * 1.1),
        ],
    };
    write_png(&chart, path)
}

fn dim_of(batches: &[tandem_proto::v1::UpsertRequest]) -> u32 {
    batches
        .iter()
        .flat_map(|b| &b.documents)
        .find_map(|d| d.vectors.as_ref().map(|v| v.dim))
        .unwrap_or(0)
}

/// The report as text.
pub fn text(r: &IngestReport) -> String {
    let ratio = if r.idle.latency_us.p99 > 0.0 {
        r.during.latency_us.p99 / r.idle.latency_us.p99
    } else {
        f64::NAN
    };
    format!(
        "ingested {} documents ({} tokens) in {} batches by {} writers: {:.2} s to the last \
         acknowledgement, {:.2} s until searchable\n  {:.0} documents/s, {:.1} MB/s of token \
         vectors; Upsert call p50 {:.1} ms, p99 {:.1} ms; {} segments after\n  queries idle:   \
         {}\n  queries during: {}\n  p99 during / idle: {ratio:.2}",
        r.documents,
        r.tokens,
        r.batches,
        r.writers,
        r.ingest_s,
        r.visible_s,
        r.docs_per_s,
        r.vector_mb_per_s,
        r.upsert_p50_ms,
        r.upsert_p99_ms,
        r.segments_after,
        summary(&r.idle),
        summary(&r.during),
    )
}
