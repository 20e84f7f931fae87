//! `tandem-bench filter`: latency of filtered queries against unfiltered ones, in process.
//!
//! For each selectivity `s` (share of the documents a query may return), an include set of
//! about `s · doc_count` documents is drawn at random (seeded) and every query runs with it,
//! single-threaded, through [`Segment::search`] (first stage, then MaxSim over κ candidates when
//! query vectors are given; first stage alone otherwise), after a warm-up pass. The include set
//! is resolved to a bitmap once, as a cached set or an attribute filter would be, and passed as
//! [`Filter::include_docs`]; the one-time cost of resolving it from external ids (what a
//! `SearchRequest.include_ids` pays per query) is reported beside. With `--filter EXPR` the
//! attribute expression runs as one more case. Each row reports the median and p99 of the
//! whole query and of its first stage, how many queries got k hits, and for the approximate
//! first stage its accuracy@κ: the share of the exact first stage's κ candidates (under the same
//! filter) it also returns, averaged over queries.

use crate::first_stage::Latency;
use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use roaring::RoaringBitmap;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tandem_client::queries::QuerySet;
use tandem_engine::filter::{parse, Filter};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Fusion, Limits, Query, QueryVectors, SearchParams, Segment, Verify};

/// Arguments of `tandem-bench filter`.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// The index directory.
    #[arg(long)]
    pub index: PathBuf,
    /// Queries JSONL (`{"id", "vector": {token: weight}}`).
    #[arg(long)]
    pub queries: PathBuf,
    /// Query token vectors (.npy); with --query-lens, queries are reranked by MaxSim.
    #[arg(long)]
    pub query_vectors: Option<PathBuf>,
    /// Token vectors per query (.npy).
    #[arg(long)]
    pub query_lens: Option<PathBuf>,
    /// At most this many queries (the first ones).
    #[arg(long)]
    pub max_queries: Option<usize>,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// First-stage candidates (reranked when vectors are given).
    #[arg(long, default_value_t = 30)]
    pub kappa: usize,
    /// Selectivities to measure (shares of the documents admitted), besides unfiltered.
    #[arg(long, value_delimiter = ',', default_value = "0.5,0.05,0.005")]
    pub selectivity: Vec<f64>,
    /// First stages to measure: `exact`, `approx` (the index must have it), or both.
    #[arg(long, value_delimiter = ',', default_value = "exact")]
    pub first_stage: Vec<String>,
    /// An attribute filter expression measured as one more case.
    #[arg(long)]
    pub filter: Option<String>,
    /// Seed of the random include sets.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One measured case.
struct Case {
    name: String,
    filter: Filter,
    admitted: u64,
    resolve_ms: Option<f64>,
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn filter(args: &FilterArgs) -> anyhow::Result<()> {
    let index = Segment::open_with(&args.index, Verify::SkipChecksums)?;
    let set = QuerySet::load(
        &args.queries,
        args.query_vectors.as_deref(),
        args.query_lens.as_deref(),
    )?;
    let count = args.max_queries.unwrap_or(set.len()).min(set.len());
    let queries: Vec<Query> = (0..count)
        .map(|i| {
            let (terms, _) =
                index.resolve_terms(set.records[i].terms.iter().map(|(t, w)| (t.as_str(), *w)));
            Query {
                terms,
                vectors: set.vectors.as_ref().map(|v| QueryVectors {
                    values: v[i].clone(),
                    dim: set.dim,
                }),
                filter: Filter::default(),
            }
        })
        .collect();
    let rerank = set.vectors.is_some();
    let n = index.doc_count() as u32;

    let mut cases = vec![Case {
        name: "unfiltered".into(),
        filter: Filter::default(),
        admitted: index.live_count(),
        resolve_ms: None,
    }];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    for &s in &args.selectivity {
        anyhow::ensure!(s > 0.0 && s <= 1.0, "--selectivity {s} is not in (0, 1]");
        let docs: RoaringBitmap = (0..n).filter(|_| rng.random::<f64>() < s).collect();
        let ids: Vec<String> = docs
            .iter()
            .map(|d| index.external_id(d).unwrap_or_default().to_string())
            .collect();
        let by_ids = Filter {
            include: Some(ids),
            ..Filter::default()
        };
        let started = Instant::now();
        let resolved = index.admit(&by_ids)?;
        let resolve_ms = started.elapsed().as_secs_f64() * 1e3;
        cases.push(Case {
            name: format!("{:.1} %", s * 100.0),
            admitted: resolved.len(index.doc_count()),
            filter: Filter {
                include_docs: Some(Arc::new(docs)),
                ..Filter::default()
            },
            resolve_ms: Some(resolve_ms),
        });
    }
    if let Some(text) = &args.filter {
        let expr = parse(text).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
        let filter = Filter {
            expr: Some(expr),
            ..Filter::default()
        };
        let admitted = index.admit(&filter)?.len(index.doc_count());
        cases.push(Case {
            name: format!("filter {text}"),
            filter,
            admitted,
            resolve_ms: None,
        });
    }

    let mut rows = Vec::new();
    println!(
        "{} queries, k {}, kappa {}, {}; {} documents ({} live)",
        queries.len(),
        args.k,
        args.kappa,
        if rerank {
            "reranked by MaxSim"
        } else {
            "first stage only"
        },
        index.doc_count(),
        index.live_count()
    );
    println!(
        "{:<10} {:<28} {:>9} {:>10} {:>10} {:>12} {:>12} {:>8} {:>11}",
        "stage",
        "case",
        "admitted",
        "p50 µs",
        "p99 µs",
        "1st p50 µs",
        "1st p99 µs",
        "k hits",
        "ids→set ms"
    );
    for stage_name in &args.first_stage {
        let stage = match (stage_name.as_str(), index.default_first_stage()) {
            ("exact", _) => FirstStage::Exact,
            ("approx", FirstStage::Approx(knobs)) => FirstStage::Approx(knobs),
            ("approx", FirstStage::Exact) => {
                anyhow::bail!("{} has no approximate first stage", args.index.display())
            }
            (other, _) => anyhow::bail!("--first-stage {other}: use exact or approx"),
        };
        let params = SearchParams {
            first_stage: stage,
            k: args.k,
            kappa: args.kappa.max(args.k),
            cp_alpha: None,
            ee_beta: None,
            rerank,
            prefetch: false,
            explain: false,
            fusion: Fusion::NONE,
        };
        for case in &cases {
            let run = |measure: bool| -> anyhow::Result<(Vec<u64>, Vec<u64>, usize)> {
                let (mut total, mut first) = (Vec::new(), Vec::new());
                let mut full = 0;
                for q in &queries {
                    let query = Query {
                        filter: case.filter.clone(),
                        ..q.clone()
                    };
                    let started = Instant::now();
                    let out = index
                        .search(&query, &params, &Limits::default())
                        .with_context(|| format!("case {}", case.name))?;
                    if measure {
                        total.push(started.elapsed().as_nanos() as u64);
                        first.push(out.stats.first_stage_us * 1000);
                        full += usize::from(out.hits.len() == args.k);
                    }
                }
                Ok((total, first, full))
            };
            run(false)?;
            let (total, first, full) = run(true)?;
            let (total, first) = (Latency::of(total), Latency::of(first));
            let accuracy = match stage {
                FirstStage::Exact => None,
                FirstStage::Approx(_) => {
                    let mut sum = 0.0;
                    let mut counted = 0usize;
                    for q in &queries {
                        let query = Query {
                            filter: case.filter.clone(),
                            ..q.clone()
                        };
                        let exact = index.first_stage(&query, params.kappa, &FirstStage::Exact)?;
                        let found = index.first_stage(&query, params.kappa, &stage)?;
                        if !exact.is_empty() {
                            let hit = exact
                                .iter()
                                .filter(|e| found.iter().any(|f| f.id == e.id))
                                .count();
                            sum += hit as f64 / exact.len() as f64;
                            counted += 1;
                        }
                    }
                    Some(sum / counted.max(1) as f64)
                }
            };
            println!(
                "{:<10} {:<28} {:>9} {:>10.0} {:>10.0} {:>12.0} {:>12.0} {:>8} {:>11} {:>7}",
                stage_name,
                case.name,
                case.admitted,
                total.p50_us,
                total.p99_us,
                first.p50_us,
                first.p99_us,
                format!("{full}/{}", queries.len()),
                case.resolve_ms
                    .map_or("-".to_string(), |ms| format!("{ms:.1}")),
                accuracy.map_or("-".to_string(), |a| format!("{a:.4}"))
            );
            rows.push(json!({
                "first_stage": stage_name,
                "case": case.name,
                "admitted": case.admitted,
                "p50_us": total.p50_us,
                "p99_us": total.p99_us,
                "first_stage_p50_us": first.p50_us,
                "first_stage_p99_us": first.p99_us,
                "queries_with_k_hits": full,
                "resolve_ids_ms": case.resolve_ms,
                "accuracy_at_kappa": accuracy,
            }));
        }
    }
    if let Some(path) = &args.json {
        let report = json!({
            "index": args.index.display().to_string(),
            "queries": queries.len(),
            "k": args.k,
            "kappa": args.kappa,
            "rerank": rerank,
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
