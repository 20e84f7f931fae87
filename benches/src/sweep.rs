//! `tandem-bench sweep`: the CP(α) / EE(β) trade-off on an eval set, in process.
//!
//! For every combination of κ, α and β, every query runs the two-stage pipeline (exact first
//! stage, MaxSim with the detected kernel, the given fusion); the run is scored against the
//! qrels (trec_eval semantics) and the rerank work is averaged: candidates scored by MaxSim and
//! microseconds in the rerank stage per query. "off" disables a rule. With `--plot`, a PNG shows
//! nDCG@10 against the candidates reranked per query (rerank time is proportional to them, and
//! unlike a time they do not depend on the machine or its load), one colour per κ.

use crate::plot::{write_png, LineChart, Series};
use crate::workload::{load_queries, measure, QueryFiles};
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;
use tandem_engine::pipeline::{parse_off, FirstStage};
use tandem_engine::{Fusion, FusionMethod, SearchParams, Segment, Verify};
use tandem_eval::Qrels;

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
    #[arg(long, value_delimiter = ',', default_value = "off,0.015,0.025,0.05", value_parser = parse_off::<f32>)]
    pub alpha: Vec<Option<f32>>,
    /// EE(β) values (`off` disables it).
    #[arg(long, value_delimiter = ',', default_value = "off,2,3,4", value_parser = parse_off::<usize>)]
    pub beta: Vec<Option<usize>>,
    /// Fusion method of every configuration.
    #[command(flatten)]
    pub fusion: FusionArgs,
    /// Timed passes per configuration (the rerank time is their mean).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Write the table as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw nDCG@10 against candidates reranked per query (one colour per κ) to this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// One fusion setting on the command line (the server's default unless given).
#[derive(Debug, clap::Args)]
pub struct FusionArgs {
    /// Fusion method.
    #[arg(long, default_value = Fusion::DEFAULT.method.name(), value_parser = ["zscore", "minmax", "rrf"])]
    pub fusion_method: String,
    /// Weight of the sparse score (0: MaxSim alone).
    #[arg(long = "fusion", default_value_t = Fusion::DEFAULT.weight)]
    pub fusion_weight: f32,
    /// The RRF constant k.
    #[arg(long, default_value_t = tandem_engine::fusion::DEFAULT_RRF_K)]
    pub rrf_k: f32,
}

impl FusionArgs {
    /// The fusion these arguments describe.
    pub fn fusion(&self) -> anyhow::Result<Fusion> {
        let method = FusionMethod::from_name(&self.fusion_method, self.rrf_k)
            .with_context(|| format!("unknown fusion method {:?}", self.fusion_method))?;
        let fusion = Fusion {
            method,
            weight: self.fusion_weight,
        };
        fusion.validate()?;
        Ok(fusion)
    }
}

/// `off` or the value, for tables.
fn show<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "off".to_string(), |v| v.to_string())
}

/// Runs the sweep and prints (and optionally writes and plots) the table.
pub fn sweep(args: &SweepArgs) -> anyhow::Result<()> {
    let index = Segment::open_with(&args.files.index, Verify::SkipChecksums)?;
    let queries = load_queries(&args.files, &index)?;
    let qrels = Qrels::from_path(&args.qrels)?;
    let fusion = args.fusion.fusion()?;
    println!(
        "fusion {} w={}; {} queries",
        fusion.method.name(),
        fusion.weight,
        queries.len()
    );
    println!(
        "{:>5} {:>6} {:>5} {:>8} {:>10} {:>12}",
        "kappa", "alpha", "beta", "nDCG@10", "reranked", "rerank µs/q"
    );
    let mut rows = Vec::new();
    let mut series = Vec::new();
    for &kappa in &args.kappa {
        let mut points = Vec::new();
        for &alpha in &args.alpha {
            for &beta in &args.beta {
                let params = SearchParams {
                    first_stage: FirstStage::Exact,
                    k: args.k.min(kappa),
                    kappa,
                    cp_alpha: alpha,
                    ee_beta: beta,
                    rerank: true,
                    prefetch: false,
                    explain: false,
                    fusion,
                };
                let m = measure(&index, &queries, &qrels, &params, args.repeat)?;
                let ndcg = m.metrics.ndcg_at_10;
                println!(
                    "{kappa:>5} {:>6} {:>5} {ndcg:>8.4} {:>10.1} {:>12.1}",
                    show(alpha),
                    show(beta),
                    m.reranked_per_query,
                    m.rerank_us_per_query
                );
                points.push((m.reranked_per_query, ndcg));
                rows.push(json!({"kappa": kappa, "cp_alpha": alpha, "ee_beta": beta, "ndcg_at_10": ndcg, "reranked_per_query": m.reranked_per_query, "rerank_us_per_query": m.rerank_us_per_query}));
            }
        }
        series.push(Series {
            name: format!("κ = {kappa}"),
            points,
            joined: false,
        });
    }
    if let Some(path) = &args.json {
        let report = json!({"index": args.files.index.display().to_string(), "queries": queries.len(), "k": args.k, "fusion_method": fusion.method.name(), "fusion_weight": fusion.weight, "rows": rows});
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let chart = LineChart {
            title: format!(
                "CP(α) / EE(β) sweep: nDCG@10 vs rerank work (fusion {} w={})",
                fusion.method.name(),
                fusion.weight
            ),
            x_label: "candidates reranked per query".into(),
            y_label: "nDCG@10".into(),
            series,
        };
        write_png(&chart, path)?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}
