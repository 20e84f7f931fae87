//! `tandem-bench first-stage`: latency and accuracy of the first stage, in process.
//!
//! Queries are loaded from a JSONL file and resolved through the index vocabulary (unknown
//! tokens dropped, terms in id order as the server sends them). Each query runs the chosen first
//! stage for `kappa` candidates; its latency is the wall time of that call alone (a warm-up pass
//! first, then `--passes` timed passes). With `--exact-ground-truth`, the exact first stage runs
//! on every query too (one timed pass), and accuracy@10 / accuracy@κ are the shares of the exact
//! top-10 / top-κ that the measured stage returns, averaged over queries with a non-empty exact
//! answer.

use anyhow::Context;
use rayon::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tandem_data::jsonl::parse_all;
use tandem_engine::approx::ApproxQueryParams;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Index, Query, Verify};

/// Arguments of `tandem-bench first-stage`.
#[derive(Debug, clap::Args)]
pub struct FirstStageArgs {
    /// The index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// Queries JSONL (`{"id", "vector": {token: weight}}`).
    #[arg(long)]
    pub queries: PathBuf,
    /// The k of accuracy@k.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Candidates asked of the first stage (κ); at least k.
    #[arg(long)]
    pub kappa: Option<usize>,
    /// Threads running queries (each query runs on one thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// `approx` (the index default when built) or `exact`.
    #[arg(long, value_parser = ["approx", "exact"])]
    pub first_stage: Option<String>,
    /// Approximate: query terms walked (default: the index's).
    #[arg(long)]
    pub query_cut: Option<usize>,
    /// Approximate: documents rescored exactly (default: the index's).
    #[arg(long)]
    pub rescore: Option<usize>,
    /// Approximate: clusters expanded (default: the index's).
    #[arg(long)]
    pub expand: Option<usize>,
    /// Approximate: postings walked per query term, whole tiers (default: the index's).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Timed passes over the queries after the warm-up pass; latencies are summarised over all
    /// of them (more passes smooth out a noisy machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub passes: u32,
    /// Also run the exact first stage and report accuracy against it (and its latency).
    #[arg(long)]
    pub exact_ground_truth: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

impl Latency {
    /// Summarises per-query nanoseconds.
    pub fn of(mut nanos: Vec<u64>) -> Latency {
        nanos.sort_unstable();
        let pick = |q: f64| {
            let i = ((nanos.len() as f64 * q).ceil() as usize).clamp(1, nanos.len().max(1)) - 1;
            nanos.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        let mean = nanos.iter().sum::<u64>() as f64 / nanos.len().max(1) as f64 / 1000.0;
        Latency {
            mean_us: mean,
            p50_us: pick(0.5),
            p99_us: pick(0.99),
        }
    }
}

/// Runs every query through `stage` once to warm up, then `passes` timed times, returning the
/// ranked document ids (of the last pass) and the nanoseconds of every timed query.
fn run(
    index: &Index,
    queries: &[Query],
    kappa: usize,
    stage: &FirstStage,
    pool: &rayon::ThreadPool,
    passes: u32,
) -> anyhow::Result<(Vec<Vec<u32>>, Vec<u64>)> {
    let once = || -> anyhow::Result<Vec<(Vec<u32>, u64)>> {
        pool.install(|| {
            queries
                .par_iter()
                .map(|q| {
                    let started = Instant::now();
                    let hits = index.first_stage(q, kappa, stage)?;
                    let nanos = started.elapsed().as_nanos() as u64;
                    Ok((hits.iter().map(|h| h.id).collect(), nanos))
                })
                .collect()
        })
    };
    once()?; // warm-up: page in the index, size the per-thread buffers
    let mut all_nanos = Vec::with_capacity(queries.len() * passes as usize);
    let mut ids = Vec::new();
    for _ in 0..passes {
        let (pass_ids, nanos): (Vec<Vec<u32>>, Vec<u64>) = once()?.into_iter().unzip();
        all_nanos.extend(nanos);
        ids = pass_ids;
    }
    Ok((ids, all_nanos))
}

fn overlap(found: &[u32], truth: &[u32], depth: usize) -> Option<f64> {
    let truth = &truth[..truth.len().min(depth)];
    if truth.is_empty() {
        return None;
    }
    let found = &found[..found.len().min(depth)];
    let hits = truth.iter().filter(|d| found.contains(d)).count();
    Some(hits as f64 / truth.len() as f64)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The process's peak resident set size (`VmHWM`), if the platform reports it.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn first_stage(args: &FirstStageArgs) -> anyhow::Result<()> {
    let kappa = args.kappa.unwrap_or(args.k).max(args.k);
    let index = Index::open_with(&args.index, Verify::SkipChecksums)?;
    // The approximate defaults exist even when the index defaults to exact (calibration).
    let approx_defaults = index
        .primary()
        .manifest()
        .approx
        .as_ref()
        .map(|a| a.query_defaults);
    let approx = |defaults: ApproxQueryParams| {
        FirstStage::Approx(ApproxQueryParams {
            query_cut: args.query_cut.unwrap_or(defaults.query_cut),
            rescore: args.rescore.unwrap_or(defaults.rescore),
            expand: args.expand.unwrap_or(defaults.expand),
            depth: args.depth.unwrap_or(defaults.depth),
        })
    };
    let stage = match (args.first_stage.as_deref(), index.default_first_stage()) {
        (Some("exact"), _) => FirstStage::Exact,
        (None, FirstStage::Approx(defaults)) => approx(defaults),
        (None, FirstStage::Exact) => FirstStage::Exact,
        (Some(_), _) => match approx_defaults {
            Some(defaults) => approx(defaults),
            None => anyhow::bail!("{} has no approximate first stage", args.index.display()),
        },
    };
    let text = std::fs::read_to_string(&args.queries)
        .with_context(|| format!("cannot read {}", args.queries.display()))?;
    let queries: Vec<Query> = parse_all(&text, &args.queries.display().to_string())?
        .into_iter()
        .map(|record| {
            let (terms, _) =
                index.resolve_terms(record.terms.iter().map(|(t, w)| (t.as_str(), *w)));
            Query {
                terms,
                vectors: None,
                filter: Default::default(),
            }
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.max(1))
        .build()?;
    let (found, nanos) = run(&index, &queries, kappa, &stage, &pool, args.passes)?;
    let latency = Latency::of(nanos);
    let mut report = json!({
        "index": args.index.display().to_string(),
        "queries": queries.len(),
        "k": args.k,
        "kappa": kappa,
        "threads": args.threads,
        "passes": args.passes,
        "first_stage": match stage {
            FirstStage::Exact => json!({"kind": "exact"}),
            FirstStage::Approx(p) => json!({"kind": "approx", "query_cut": p.query_cut, "rescore": p.rescore, "expand": p.expand, "depth": p.depth}),
        },
        "mean_us": latency.mean_us,
        "p50_us": latency.p50_us,
        "p99_us": latency.p99_us,
    });
    println!(
        "{} queries, {} thread(s), first stage {:?}, kappa {kappa}: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs",
        queries.len(),
        args.threads,
        stage,
        latency.mean_us,
        latency.p50_us,
        latency.p99_us
    );
    if args.exact_ground_truth {
        let (truth, exact_nanos) = run(&index, &queries, kappa, &FirstStage::Exact, &pool, 1)?;
        let exact = Latency::of(exact_nanos);
        let at_k = mean(
            found
                .iter()
                .zip(&truth)
                .filter_map(|(f, t)| overlap(f, t, args.k)),
        );
        let at_kappa = mean(
            found
                .iter()
                .zip(&truth)
                .filter_map(|(f, t)| overlap(f, t, kappa)),
        );
        report["accuracy_at_10"] = json!(if args.k == 10 {
            at_k
        } else {
            mean(
                found
                    .iter()
                    .zip(&truth)
                    .filter_map(|(f, t)| overlap(f, t, 10)),
            )
        });
        report["accuracy_at_k"] = json!(at_k);
        report["accuracy_at_kappa"] = json!(at_kappa);
        report["exact"] =
            json!({"mean_us": exact.mean_us, "p50_us": exact.p50_us, "p99_us": exact.p99_us});
        println!(
            "accuracy@{}: {at_k:.4}, accuracy@{kappa}: {at_kappa:.4}; exact first stage: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs",
            args.k, exact.mean_us, exact.p50_us, exact.p99_us
        );
    }
    if let Some(rss) = peak_rss_bytes() {
        report["peak_rss_bytes"] = json!(rss);
        println!("peak RSS {:.1} MiB", rss as f64 / (1 << 20) as f64);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
