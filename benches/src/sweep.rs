//! `tandem-bench sweep`: the CP(α) / EE(β) trade-off on an eval set, in process.
//!
//! For every combination of κ, α and β, every query runs the two-stage pipeline (exact first
//! stage, MaxSim with the detected kernel); the run is scored against the qrels (trec_eval
//! semantics) and the rerank work is averaged: candidates scored by MaxSim and microseconds in
//! the rerank stage per query. "off" disables a rule.

use crate::trec_eval::{evaluate, Qrels, Run};
use crate::workload::{load_queries, QueryFiles};
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Index, Limits, SearchParams, Verify};

/// Arguments of `tandem-bench sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The index and query files.
    #[command(flatten)]
    pub files: QueryFiles,
    /// Relevance judgments (TREC qrels).
    #[arg(long)]
    pub qrels: PathBuf,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// κ values.
    #[arg(long, value_delimiter = ',', default_value = "10,20,30,50")]
    pub kappa: Vec<usize>,
    /// CP(α) values (`off` disables it).
    #[arg(long, value_delimiter = ',', default_value = "off,0.015,0.025,0.05")]
    pub alpha: Vec<String>,
    /// EE(β) values (`off` disables it).
    #[arg(long, value_delimiter = ',', default_value = "off,2,3,4")]
    pub beta: Vec<String>,
    /// Timed passes per configuration (the rerank time is their mean).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Write the table as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn parse_off<T: std::str::FromStr>(value: &str, what: &str) -> anyhow::Result<Option<T>> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("--{what}: {value:?} is neither `off` nor a number"))
}

/// Runs the sweep and prints (and optionally writes) the table.
pub fn sweep(args: &SweepArgs) -> anyhow::Result<()> {
    let index = Index::open_with(&args.files.index, Verify::SkipChecksums)?;
    let queries = load_queries(&args.files, &index)?;
    let qrels = Qrels::from_path(&args.qrels)?;
    let alphas: Vec<Option<f32>> = args
        .alpha
        .iter()
        .map(|a| parse_off(a, "alpha"))
        .collect::<anyhow::Result<_>>()?;
    let betas: Vec<Option<usize>> = args
        .beta
        .iter()
        .map(|b| parse_off(b, "beta"))
        .collect::<anyhow::Result<_>>()?;
    let limits = Limits {
        max_kappa: usize::MAX,
        ..Limits::default()
    };
    println!(
        "{:>5} {:>6} {:>5} {:>8} {:>10} {:>12}",
        "kappa", "alpha", "beta", "nDCG@10", "reranked", "rerank µs/q"
    );
    let mut rows = Vec::new();
    for &kappa in &args.kappa {
        for &alpha in &alphas {
            for &beta in &betas {
                let params = SearchParams {
                    first_stage: FirstStage::Exact,
                    k: args.k.min(kappa),
                    kappa,
                    cp_alpha: alpha,
                    ee_beta: beta,
                    rerank: true,
                    prefetch: false,
                };
                let (mut rerank_us, mut reranked) = (0u64, 0usize);
                let mut ranked = Vec::with_capacity(queries.len());
                for pass in 0..args.repeat.max(1) {
                    for (id, query) in &queries {
                        let out = index.search(query, &params, &limits)?;
                        rerank_us += out.stats.rerank_us;
                        reranked += out.stats.reranked;
                        if pass == 0 {
                            let hits = out
                                .hits
                                .iter()
                                .map(|h| {
                                    (
                                        index.external_id(h.doc).unwrap_or_default().to_string(),
                                        f64::from(h.score),
                                    )
                                })
                                .collect();
                            ranked.push((id.clone(), hits));
                        }
                    }
                }
                let runs = (queries.len() * args.repeat.max(1)).max(1) as f64;
                let metrics = evaluate(&Run::from_ranked(ranked), &qrels, false);
                let show = |v: Option<String>| v.unwrap_or_else(|| "off".to_string());
                let (a, b) = (
                    show(alpha.map(|a| a.to_string())),
                    show(beta.map(|b| b.to_string())),
                );
                println!(
                    "{kappa:>5} {a:>6} {b:>5} {:>8.4} {:>10.1} {:>12.1}",
                    metrics.ndcg_at_10,
                    reranked as f64 / runs,
                    rerank_us as f64 / runs
                );
                rows.push(json!({"kappa": kappa, "cp_alpha": alpha, "ee_beta": beta, "ndcg_at_10": metrics.ndcg_at_10, "reranked_per_query": reranked as f64 / runs, "rerank_us_per_query": rerank_us as f64 / runs}));
            }
        }
    }
    if let Some(path) = &args.json {
        let report = json!({"index": args.files.index.display().to_string(), "queries": queries.len(), "k": args.k, "rows": rows});
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
