//! `tandem-bench load`: a gRPC load generator for a running tandem server.
//!
//! - **Closed loop** (default): `--concurrency` workers over `--connections` HTTP/2 channels;
//!   each sends its next call as soon as the previous one is answered.
//! - **Open loop** (`--rate R[,R2,...]`): calls start at scheduled times (Poisson or constant
//!   arrivals at R queries/s, seeded), whether or not earlier ones have been answered, and each
//!   latency is measured from its *intended* start, so a stalled server shows up in the
//!   percentiles instead of silently slowing the generator down (no coordinated omission).
//!
//! Every run is bounded in calls and time (`--requests`/`--duration`, capped by
//! `--max-requests`/`--max-duration`) and only talks to `--addr`. Calls are `Search`,
//! `SearchBatch` (`--batch-size` queries each) or messages of one `SearchStream` per worker
//! (`--method`). With `--qrels`, the first answer to each query is scored (nDCG@10, Recall@10,
//! MRR@10) in the same report. `--json` writes the report, `--plot PREFIX` draws the latency
//! CDF (`PREFIX-cdf.png`) and, for a rate list, latency against offered load
//! (`PREFIX-load.png`).

mod record;
pub mod report;

use crate::plot::{write_png, LineChart, Series};
use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use record::{Outcome, Recorder};
use report::{run_report, summary, Report, RunReport};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_client::cli::{KnobArgs, QueryFileArgs, ServerArgs};
use tandem_client::filters::FilterArgs;
use tandem_client::TandemClient;
use tandem_eval::Qrels;
use tandem_proto::v1::search_stream_response::Result as StreamResult;
use tandem_proto::v1::{SearchRequest, SearchStreamResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Arguments of `tandem-bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The server (loopback or the given address only).
    #[command(flatten)]
    pub server: ServerArgs,
    /// The query files.
    #[command(flatten)]
    pub files: QueryFileArgs,
    /// The knobs sent with every query.
    #[command(flatten)]
    pub knobs: KnobArgs,
    /// The filter sent with every query.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Closed loop: concurrent workers.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// HTTP/2 connections the workers (or open-loop calls) share, round robin.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Measured time of each run (e.g. 10s, 500ms); default 10s unless --requests is given.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Calls per run.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: offered load in queries/s; a comma-separated list runs each rate in turn.
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// Open-loop arrivals: `poisson` (exponential gaps) or `constant`.
    #[arg(long, default_value = "poisson", value_parser = ["poisson", "constant"])]
    pub arrivals: String,
    /// Unmeasured warm-up before the first run (same mode and load).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// The call: `search` (unary), `batch` (SearchBatch) or `stream` (SearchStream messages).
    #[arg(long, default_value = "search", value_parser = ["search", "batch", "stream"])]
    pub method: String,
    /// Queries per SearchBatch call.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Relevance judgments: score the answers collected during the load.
    #[arg(long)]
    pub qrels: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw `PREFIX-cdf.png` (and `PREFIX-load.png` for a rate list).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seed of the arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Cap on calls per run, whatever else is set.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_requests: u64,
    /// Cap on the measured time of a run, whatever else is set.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub max_duration: Duration,
    /// Open loop: most calls outstanding; arrivals beyond are counted as not sent.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
}

/// The kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Search,
    Batch,
    Stream,
}

/// How long and how much one run may do.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    /// Longest measured time.
    pub(crate) duration: Duration,
    /// Most calls.
    pub(crate) calls: u64,
    /// Ends the run early once raised (open loop).
    pub(crate) stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Everything the call sites share.
pub(crate) struct Plan {
    pub(crate) requests: Vec<SearchRequest>,
    pub(crate) method: Method,
    pub(crate) batch_size: usize,
    pub(crate) keep_answers: bool,
    /// Keep each call's answer time and latency (open loop; [`Recorder::with_timeline`]).
    pub(crate) keep_timeline: bool,
}

impl Plan {
    /// The requests of call number `n`: one, or a batch, taken round robin from the query set.
    fn call(&self, n: u64) -> Vec<SearchRequest> {
        let per_call = if self.method == Method::Batch {
            self.batch_size.max(1)
        } else {
            1
        };
        let len = self.requests.len() as u64;
        (0..per_call as u64)
            .map(|j| self.requests[((n * per_call as u64 + j) % len) as usize].clone())
            .collect()
    }
}

/// Runs one unary or batch call and classifies it.
async fn unary(client: &mut TandemClient, method: Method, requests: Vec<SearchRequest>) -> Outcome {
    let result = match (method, requests.len()) {
        (Method::Search, 1) => match requests.into_iter().next() {
            Some(request) => client.search(request).await.map(|r| vec![r]),
            None => Ok(Vec::new()),
        },
        _ => client.search_batch(requests).await,
    };
    match result {
        Ok(responses) => Outcome::Answered(responses),
        Err(status) => Outcome::Failed(status.code()),
    }
}

/// The outcome of one SearchStream message.
fn stream_outcome(message: Result<Option<SearchStreamResponse>, tonic::Status>) -> Outcome {
    match message {
        Ok(Some(SearchStreamResponse {
            result: Some(StreamResult::Response(response)),
        })) => Outcome::Answered(vec![response]),
        Ok(Some(SearchStreamResponse {
            result: Some(StreamResult::Error(e)),
        })) => Outcome::Failed(tonic::Code::from_i32(e.code)),
        Ok(_) => Outcome::Failed(tonic::Code::Unavailable),
        Err(status) => Outcome::Failed(status.code()),
    }
}

/// A closed-loop run: `concurrency` workers until the bounds are reached.
async fn closed_loop(
    clients: &[TandemClient],
    plan: &Arc<Plan>,
    concurrency: usize,
    bounds: Bounds,
) -> anyhow::Result<(Recorder, Duration)> {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + bounds.duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency.max(1) {
        let mut client = clients[w % clients.len()].clone();
        let (plan, issued) = (plan.clone(), issued.clone());
        workers.spawn(async move {
            let mut recorder = Recorder::new(plan.keep_answers);
            // A stream worker keeps one SearchStream open and sends one message at a time.
            let mut stream = None;
            if plan.method == Method::Stream {
                let (tx, rx) = mpsc::channel::<SearchRequest>(1);
                let answers = client
                    .search_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?;
                stream = Some((tx, answers));
            }
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= bounds.calls || Instant::now() >= end {
                    break;
                }
                let call = plan.call(n);
                let sent = Instant::now();
                let outcome = match &mut stream {
                    None => unary(&mut client, plan.method, call).await,
                    Some((tx, answers)) => {
                        let request = call.into_iter().next().unwrap_or_default();
                        if tx.send(request).await.is_err() {
                            Outcome::Failed(tonic::Code::Unavailable)
                        } else {
                            stream_outcome(answers.message().await)
                        }
                    }
                };
                recorder.record(sent.elapsed(), outcome);
            }
            anyhow::Ok(recorder)
        });
    }
    let mut total = Recorder::new(plan.keep_answers);
    while let Some(done) = workers.join_next().await {
        total.merge(done.context("a load worker panicked")??);
    }
    Ok((total, started.elapsed()))
}

/// One SearchStream of an open-loop run: requests go in through `tx`; a reader matches answers
/// (in order) with their intended start times.
struct OpenStream {
    tx: mpsc::UnboundedSender<SearchRequest>,
    intended: Arc<Mutex<VecDeque<Instant>>>,
}

/// An open-loop run at `rate` queries/s.
pub(crate) async fn open_loop(
    clients: &[TandemClient],
    plan: &Arc<Plan>,
    rate: f64,
    poisson: bool,
    seed: u64,
    bounds: Bounds,
    max_in_flight: usize,
) -> anyhow::Result<(Recorder, Duration, u64, Recorder)> {
    anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate {rate}: must be > 0");
    // How late the generator itself dispatches each arrival (timer resolution, its own load):
    // part of every open-loop latency, reported beside it.
    let mut lag = Recorder::new(false);
    let per_call = if plan.method == Method::Batch {
        plan.batch_size.max(1) as f64
    } else {
        1.0
    };
    let mean_gap = per_call / rate;
    let mut recorder = Recorder::new(plan.keep_answers);
    if plan.keep_timeline {
        recorder = recorder.with_timeline();
    }
    let recorder = Arc::new(Mutex::new(recorder));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    if plan.method == Method::Stream {
        for client in clients {
            let (tx, rx) = mpsc::unbounded_channel::<SearchRequest>();
            let mut answers = client
                .clone()
                .search_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                .await?;
            let intended = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
            let (queue, recorder, in_flight) =
                (intended.clone(), recorder.clone(), in_flight.clone());
            readers.spawn(async move {
                loop {
                    let message = answers.message().await;
                    let finished = matches!(message, Ok(None) | Err(_));
                    let start = queue.lock().ok().and_then(|mut q| q.pop_front());
                    if let Some(start) = start {
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        if let Ok(mut r) = recorder.lock() {
                            r.record(start.elapsed(), stream_outcome(message));
                        }
                    }
                    if finished {
                        break;
                    }
                }
            });
            streams.push(OpenStream { tx, intended });
        }
    }
    // The dispatcher runs on its own OS thread: `std::thread::sleep` wakes within tens of
    // microseconds, where the async timer's 1 ms ticks would add up to a millisecond of
    // generator lateness to every latency.
    let runtime = tokio::runtime::Handle::current();
    let (clients_owned, plan_owned) = (clients.to_vec(), plan.clone());
    let (recorder_d, in_flight_d) = (recorder.clone(), in_flight.clone());
    let started = Instant::now();
    let end = started + bounds.duration;
    let dispatch = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut calls = Vec::new();
        let mut due = started;
        let mut not_sent = 0u64;
        for n in 0..bounds.calls {
            let gap = if poisson {
                // Exponential gap by inversion; 1 − u is in (0, 1].
                -mean_gap * (1.0 - rng.random::<f64>()).ln()
            } else {
                mean_gap
            };
            due += Duration::from_secs_f64(gap);
            let stopped = bounds
                .stop
                .as_ref()
                .is_some_and(|stop| stop.load(Ordering::Relaxed));
            if due >= end || stopped {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            lag.record(due.elapsed(), Outcome::Answered(Vec::new()));
            if in_flight_d.load(Ordering::Relaxed) >= max_in_flight {
                not_sent += 1;
                continue;
            }
            in_flight_d.fetch_add(1, Ordering::Relaxed);
            let call = plan_owned.call(n);
            let slot = (n as usize) % clients_owned.len();
            match streams.get(slot) {
                Some(stream) => {
                    if let Ok(mut q) = stream.intended.lock() {
                        q.push_back(due);
                    }
                    let request = call.into_iter().next().unwrap_or_default();
                    anyhow::ensure!(
                        stream.tx.send(request).is_ok(),
                        "the SearchStream closed during the run"
                    );
                }
                None => {
                    let mut client = clients_owned[slot].clone();
                    let (recorder, in_flight, method) =
                        (recorder_d.clone(), in_flight_d.clone(), plan_owned.method);
                    calls.push(runtime.spawn(async move {
                        let outcome = unary(&mut client, method, call).await;
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                        if let Ok(mut r) = recorder.lock() {
                            r.record(due.elapsed(), outcome);
                        }
                    }));
                    // Forget finished calls so the list does not grow with the run.
                    if calls.len() >= 1024 {
                        calls.retain(|c| !c.is_finished());
                    }
                }
            }
        }
        Ok((calls, not_sent, lag, streams))
    });
    let (calls, not_sent, lag, streams) =
        dispatch.await.context("the load dispatcher panicked")??;
    for call in calls {
        call.await.context("a load call panicked")?;
    }
    // Closing the request streams ends the readers once every answer is in.
    drop(streams);
    while readers.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let recorder = Arc::try_unwrap(recorder)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .context("load recorder still shared after the run")?;
    Ok((recorder, elapsed, not_sent, lag))
}

/// Runs `tandem-bench load` and prints (and optionally writes and plots) the report.
pub async fn load(args: &LoadArgs) -> anyhow::Result<()> {
    let queries = args.files.load(args.knobs.sparse_only)?;
    let knobs = args.knobs.knobs();
    let filter = args.filter.load()?;
    let method = match args.method.as_str() {
        "batch" => Method::Batch,
        "stream" => Method::Stream,
        _ => Method::Search,
    };
    let qrels = match &args.qrels {
        Some(path) => Some(Qrels::from_path(path)?),
        None => None,
    };
    let plan = Arc::new(Plan {
        requests: (0..queries.len())
            .map(|i| {
                let mut request = queries.request(i, &knobs);
                filter.apply(&mut request);
                request
            })
            .collect(),
        method,
        batch_size: args.batch_size,
        keep_answers: qrels.is_some(),
        keep_timeline: false,
    });
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(args.server.connect().await?);
    }
    let bounds = Bounds {
        duration: args
            .duration
            .unwrap_or(if args.requests.is_some() {
                args.max_duration
            } else {
                Duration::from_secs(10)
            })
            .min(args.max_duration),
        calls: args.requests.unwrap_or(u64::MAX).min(args.max_requests),
        stop: None,
    };
    let warmup = Bounds {
        duration: args.warmup.min(args.max_duration),
        calls: args.max_requests,
        stop: None,
    };
    let poisson = args.arrivals == "poisson";
    let mut runs: Vec<RunReport> = Vec::new();
    if args.rate.is_empty() {
        if !args.warmup.is_zero() {
            closed_loop(&clients, &plan, args.concurrency, warmup).await?;
        }
        let (recorder, elapsed) = closed_loop(&clients, &plan, args.concurrency, bounds).await?;
        let label = format!(
            "closed loop: {}, concurrency {}, {} connection(s)",
            args.method,
            args.concurrency,
            clients.len()
        );
        runs.push(run_report(
            label,
            None,
            &recorder,
            elapsed,
            0,
            qrels.as_ref(),
        ));
    } else {
        for (i, &rate) in args.rate.iter().enumerate() {
            if i == 0 && !args.warmup.is_zero() {
                open_loop(
                    &clients,
                    &plan,
                    rate,
                    poisson,
                    args.seed ^ 0x5eed,
                    warmup.clone(),
                    args.max_in_flight,
                )
                .await?;
            }
            let (recorder, elapsed, not_sent, lag) = open_loop(
                &clients,
                &plan,
                rate,
                poisson,
                args.seed.wrapping_add(i as u64),
                bounds.clone(),
                args.max_in_flight,
            )
            .await?;
            let label = format!(
                "open loop: {} at {rate}/s ({} arrivals), {} connection(s)",
                args.method,
                args.arrivals,
                clients.len()
            );
            let mut run = run_report(
                label,
                Some(rate),
                &recorder,
                elapsed,
                not_sent,
                qrels.as_ref(),
            );
            run.dispatch_lag_us = Some(report::lag(&lag));
            runs.push(run);
        }
    }
    for run in &runs {
        println!("{}", summary(run));
    }
    if runs.len() > 1 {
        println!(
            "{:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            "offered/s", "qps", "p50 ms", "p90 ms", "p99 ms", "errors"
        );
        for r in &runs {
            println!(
                "{:>10.0} {:>10.1} {:>10.3} {:>10.3} {:>10.3} {:>8}",
                r.offered_qps.unwrap_or(0.0),
                r.qps,
                r.latency_us.p50 / 1000.0,
                r.latency_us.p90 / 1000.0,
                r.latency_us.p99 / 1000.0,
                r.errors
            );
        }
    }
    let Some(last) = runs.last().cloned() else {
        anyhow::bail!("no run was made");
    };
    let report = Report {
        last,
        runs,
        config: config_json(args),
        machine: report::machine(),
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if let Some(prefix) = &args.plot {
        plot(prefix, &report.runs)?;
    }
    Ok(())
}

/// The run configuration as JSON (the token is never written).
fn config_json(args: &LoadArgs) -> serde_json::Value {
    serde_json::json!({
        "addr": args.server.addr,
        "tls": args.server.tls_ca.is_some(),
        "auth": args.server.token.is_some(),
        "queries": args.files.queries.display().to_string(),
        "method": args.method,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "connections": args.connections,
        "duration_s": args.duration.map(|d| d.as_secs_f64()),
        "requests": args.requests,
        "rate": args.rate,
        "arrivals": args.arrivals,
        "warmup_s": args.warmup.as_secs_f64(),
        "seed": args.seed,
        "k": args.knobs.k,
        "kappa": args.knobs.kappa,
        "cp_alpha": args.knobs.cp_alpha,
        "ee_beta": args.knobs.ee_beta,
        "fusion_weight": args.knobs.fusion_weight,
        "fusion_method": args.knobs.fusion_method,
        "first_stage": args.knobs.first_stage,
        "query_cut": args.knobs.query_cut,
        "rescore": args.knobs.rescore,
        "sparse_only": args.knobs.sparse_only,
        "qrels": args.qrels.as_ref().map(|p| p.display().to_string()),
    })
}

/// The latency CDF of every run, and latency against offered load for a rate list.
fn plot(prefix: &std::path::Path, runs: &[RunReport]) -> anyhow::Result<()> {
    let with_suffix = |suffix: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let cdf = LineChart {
        title: "Latency CDF".into(),
        x_label: "latency (ms)".into(),
        y_label: "fraction of calls ≤ latency".into(),
        series: runs
            .iter()
            .map(|r| Series {
                name: r
                    .offered_qps
                    .map_or_else(|| "closed loop".to_string(), |q| format!("{q}/s offered")),
                points: r.cdf.iter().map(|&(us, f)| (us / 1000.0, f)).collect(),
                joined: true,
            })
            .collect(),
    };
    let path = with_suffix("-cdf.png");
    write_png(&cdf, &path)?;
    println!("plot written to {}", path.display());
    if runs.len() > 1 && runs.iter().all(|r| r.offered_qps.is_some()) {
        let line = |name: &str, f: fn(&RunReport) -> f64| Series {
            name: name.to_string(),
            points: runs
                .iter()
                .map(|r| (r.offered_qps.unwrap_or(0.0), f(r)))
                .collect(),
            joined: true,
        };
        let chart = LineChart {
            title: "Latency vs offered load".into(),
            x_label: "offered load (queries/s)".into(),
            y_label: "latency (ms)".into(),
            series: vec![
                line("p50", |r| r.latency_us.p50 / 1000.0),
                line("p90", |r| r.latency_us.p90 / 1000.0),
                line("p99", |r| r.latency_us.p99 / 1000.0),
            ],
        };
        let path = with_suffix("-load.png");
        write_png(&chart, &path)?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}
