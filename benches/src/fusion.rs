//! `tandem-bench fusion`: nDCG@10 of score fusion over methods, weights and κ, and how stable
//! a chosen setting is on random subsets of the queries.
//!
//! Every configuration runs the two-stage pipeline in process (exact first stage, MaxSim, the
//! fusion under test; CP and EE as given, off by default) and is scored against the qrels. The
//! setting under `--check` (the server default unless given) is then compared with MaxSim
//! alone (w = 0) on random halves and thirds of the queries: for each subset, the mean
//! per-query nDCG@10 difference. `--plot PREFIX` draws `PREFIX-weight.png` (nDCG@10 vs w, per
//! method and plotted κ) and `PREFIX-kappa.png` (nDCG@10 vs κ, MaxSim alone and each method at
//! the checked weight).

use crate::plot::{write_png, LineChart, Series};
use crate::workload::{load_queries, measure, QueryFiles};
use anyhow::Context;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tandem_engine::pipeline::{parse_off, FirstStage};
use tandem_engine::{Fusion, FusionMethod, SearchParams, Segment, Verify};
use tandem_eval::{Metrics, Qrels};

/// Arguments of `tandem-bench fusion`.
#[derive(Debug, clap::Args)]
pub struct FusionArgs {
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
    #[arg(long, value_delimiter = ',', default_value = "10,20,30,50,100")]
    pub kappa: Vec<usize>,
    /// Fusion methods.
    #[arg(long, value_delimiter = ',', default_value = "zscore,minmax,rrf", value_parser = ["zscore", "minmax", "rrf"])]
    pub methods: Vec<String>,
    /// Weights of the sparse score (0 is MaxSim alone).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.05,0.1,0.2,0.3,0.4,0.5,0.75,1,1.5,2"
    )]
    pub weights: Vec<f32>,
    /// The RRF constant k.
    #[arg(long, default_value_t = tandem_engine::fusion::DEFAULT_RRF_K)]
    pub rrf_k: f32,
    /// CP(α) of every configuration (`off` disables it).
    #[arg(long, default_value = "off", value_parser = parse_off::<f32>)]
    pub cp_alpha: std::option::Option<f32>,
    /// EE(β) of every configuration (`off` disables it).
    #[arg(long, default_value = "off", value_parser = parse_off::<usize>)]
    pub ee_beta: std::option::Option<usize>,
    /// The setting whose stability is checked, `METHOD:WEIGHT` (default: the server default).
    #[arg(long)]
    pub check: Option<String>,
    /// Random shuffles of the queries; each is cut into halves and into thirds (besides the
    /// fixed splits of the file order).
    #[arg(long, default_value_t = 10)]
    pub splits: usize,
    /// Seed of the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// κ values drawn in the weight plot (each must be in --kappa).
    #[arg(long, value_delimiter = ',', default_value = "20,50")]
    pub plot_kappa: Vec<usize>,
    /// A reference nDCG@10 drawn as a flat line in the κ plot, `LABEL=VALUE` (repeatable), e.g.
    /// `--baseline "exhaustive MaxSim=0.6931"`.
    #[arg(long, value_parser = parse_baseline)]
    pub baseline: Vec<(String, f64)>,
    /// Write the tables as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw `PREFIX-weight.png` and `PREFIX-kappa.png`.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Parses `LABEL=VALUE`.
fn parse_baseline(text: &str) -> Result<(String, f64), String> {
    let (label, value) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("{text:?}: expected LABEL=VALUE"))?;
    let value = value
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {value:?} is not a number"))?;
    Ok((label.trim().to_string(), value))
}

/// Parses `METHOD:WEIGHT`.
fn parse_check(text: &str, rrf_k: f32) -> anyhow::Result<Fusion> {
    let (method, weight) = text
        .split_once(':')
        .with_context(|| format!("--check {text:?}: expected METHOD:WEIGHT, e.g. zscore:0.3"))?;
    let fusion = Fusion {
        method: FusionMethod::from_name(method, rrf_k)
            .with_context(|| format!("--check {text:?}: unknown method {method:?}"))?,
        weight: weight
            .parse()
            .with_context(|| format!("--check {text:?}: {weight:?} is not a number"))?,
    };
    fusion.validate()?;
    Ok(fusion)
}

/// The per-query nDCG@10 of a run, by query id.
fn per_query(metrics: &Metrics) -> HashMap<&str, f64> {
    metrics
        .per_query
        .iter()
        .map(|q| (q.qid.as_str(), q.ndcg_at_10))
        .collect()
}

/// The largest loss against MaxSim alone that a subset of the queries may show (the issue's
/// stability target).
const TOLERATED_LOSS: f64 = 0.002;

/// How a fusion setting compares with MaxSim alone on subsets of the queries.
#[derive(Debug, Clone, Copy)]
struct Stability {
    /// Mean nDCG@10 difference over all queries.
    overall: f64,
    /// Smallest mean difference over the fixed splits: halves and thirds of the query file in
    /// file order, and its odd and even queries.
    worst_fixed: f64,
    /// Smallest mean difference over the halves and thirds of every random shuffle.
    worst_random: f64,
    /// Random subsets that lose more than [`TOLERATED_LOSS`].
    random_losing: usize,
    /// Random subsets compared.
    random_subsets: usize,
}

/// Compares `fused` with `plain` on fixed splits of `order` (the query ids in file order) and
/// on the halves and thirds of `shuffles` seeded shuffles.
fn stability(
    fused: &Metrics,
    plain: &Metrics,
    order: &[&str],
    shuffles: usize,
    seed: u64,
) -> Stability {
    let (fused, plain) = (per_query(fused), per_query(plain));
    // Queries without judgments are not evaluated, so they do not count.
    let mut qids: Vec<&str> = order
        .iter()
        .copied()
        .filter(|q| plain.contains_key(q))
        .collect();
    let delta = |ids: &[&str]| {
        ids.iter()
            .map(|q| fused.get(q).copied().unwrap_or(0.0) - plain[q])
            .sum::<f64>()
            / ids.len().max(1) as f64
    };
    let parts = |ids: &[&str], n: usize| -> Vec<f64> {
        ids.chunks(ids.len().div_ceil(n).max(1))
            .map(&delta)
            .collect()
    };
    let overall = delta(&qids);
    let alternate =
        |parity: usize| -> Vec<&str> { qids.iter().copied().skip(parity).step_by(2).collect() };
    let worst_fixed = parts(&qids, 2)
        .into_iter()
        .chain(parts(&qids, 3))
        .chain([delta(&alternate(0)), delta(&alternate(1))])
        .fold(overall, f64::min);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut random = Vec::new();
    for _ in 0..shuffles {
        qids.shuffle(&mut rng);
        random.extend(parts(&qids, 2));
        random.extend(parts(&qids, 3));
    }
    Stability {
        overall,
        worst_fixed,
        worst_random: random.iter().copied().fold(overall, f64::min),
        random_losing: random.iter().filter(|&&d| d < -TOLERATED_LOSS).count(),
        random_subsets: random.len(),
    }
}

/// Mean nDCG@10 of `metrics` over the queries `ids` (unjudged ones excluded).
fn mean_on(metrics: &Metrics, ids: &[&str]) -> f64 {
    let by_id = per_query(metrics);
    let scores: Vec<f64> = ids.iter().filter_map(|q| by_id.get(q).copied()).collect();
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
}

/// Shuffles used for the selection check: each gives two halves.
const SELECTION_SHUFFLES: usize = 3;

/// Is the choice stable? On both halves of a few seeded shuffles, the best setting of the grid
/// at each κ, and how far the checked setting is from it on that half. Printed and returned as
/// JSON rows.
fn selection_on_halves(
    grid: &[(Fusion, Vec<Metrics>)],
    check: Fusion,
    kappas: &[usize],
    order: &[&str],
    seed: u64,
) -> Vec<serde_json::Value> {
    println!(
        "selection on random halves ({SELECTION_SHUFFLES} shuffles, seed {seed}): the grid's best \
         setting on each half, and the checked setting's nDCG@10 on it"
    );
    println!(
        "{:>5} {:>5} {:>16} {:>8} {:>8} {:>8}",
        "kappa", "half", "best", "nDCG@10", "checked", "gap"
    );
    let checked = grid.iter().find(|(f, _)| *f == check);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5e1ec7);
    let mut ids: Vec<&str> = order.to_vec();
    let mut rows = Vec::new();
    for shuffle in 0..SELECTION_SHUFFLES {
        ids.shuffle(&mut rng);
        for (half, part) in ids.chunks(ids.len().div_ceil(2).max(1)).enumerate() {
            for (i, &kappa) in kappas.iter().enumerate() {
                let Some((best, best_ndcg)) = grid
                    .iter()
                    .map(|(f, m)| (*f, mean_on(&m[i], part)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                else {
                    continue;
                };
                let checked_ndcg = checked.map(|(_, m)| mean_on(&m[i], part));
                let name = format!("{} w={}", best.method.name(), best.weight);
                println!(
                    "{kappa:>5} {:>5} {name:>16} {best_ndcg:>8.4} {:>8} {:>8}",
                    format!("{shuffle}.{half}"),
                    checked_ndcg.map_or("-".into(), |c| format!("{c:.4}")),
                    checked_ndcg.map_or("-".into(), |c| format!("{:+.4}", c - best_ndcg)),
                );
                rows.push(json!({"shuffle": shuffle, "half": half, "kappa": kappa, "best_method": best.method.name(), "best_weight": best.weight, "best_ndcg_at_10": best_ndcg, "checked_ndcg_at_10": checked_ndcg}));
            }
        }
    }
    rows
}

fn write_plots(
    prefix: &Path,
    weight_series: Vec<Series>,
    kappa_series: Vec<Series>,
) -> anyhow::Result<()> {
    let with_suffix = |suffix: &str| {
        let mut name = prefix.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    for (path, chart) in [
        (
            with_suffix("-weight.png"),
            LineChart {
                title: "Fusion: nDCG@10 vs weight of the sparse score".into(),
                x_label: "w (final = norm(MaxSim) + w · norm(sparse))".into(),
                y_label: "nDCG@10".into(),
                series: weight_series,
            },
        ),
        (
            with_suffix("-kappa.png"),
            LineChart {
                title: "Fusion: nDCG@10 vs κ".into(),
                x_label: "κ (candidates reranked)".into(),
                y_label: "nDCG@10".into(),
                series: kappa_series,
            },
        ),
    ] {
        write_png(&chart, &path)?;
        println!("plot written to {}", path.display());
    }
    Ok(())
}

/// Runs the fusion sweep and prints (and optionally writes and plots) the tables.
pub fn fusion(args: &FusionArgs) -> anyhow::Result<()> {
    let index = Segment::open_with(&args.files.index, Verify::SkipChecksums)?;
    let queries = load_queries(&args.files, &index)?;
    let qrels = Qrels::from_path(&args.qrels)?;
    let check = match &args.check {
        Some(text) => parse_check(text, args.rrf_k)?,
        None => Fusion::DEFAULT,
    };
    let mut methods = Vec::new();
    for name in &args.methods {
        methods.push(
            FusionMethod::from_name(name, args.rrf_k)
                .with_context(|| format!("unknown fusion method {name:?}"))?,
        );
    }
    let run = |kappa: usize, fusion: Fusion| {
        let params = SearchParams {
            first_stage: FirstStage::Exact,
            k: args.k.min(kappa),
            kappa,
            cp_alpha: args.cp_alpha,
            ee_beta: args.ee_beta,
            rerank: true,
            prefetch: false,
            explain: false,
            fusion,
        };
        measure(&index, &queries, &qrels, &params, 1).map(|m| m.metrics)
    };

    // nDCG@10 of every method × weight × κ; w = 0 is the same run for every method.
    let mut plain = Vec::new();
    for &kappa in &args.kappa {
        plain.push(run(kappa, Fusion::NONE)?);
    }
    println!(
        "{} queries; CP {:?}, EE {:?}; nDCG@10 by κ:",
        queries.len(),
        args.cp_alpha,
        args.ee_beta
    );
    let header: String = args
        .kappa
        .iter()
        .map(|k| format!(" {:>8}", format!("κ={k}")))
        .collect();
    println!("{:>7} {:>6}{header}", "method", "w");
    let mut rows = Vec::new();
    // Every (setting, per-κ metrics) of the grid, for the selection check below.
    let mut grid: Vec<(Fusion, Vec<Metrics>)> = Vec::new();
    let mut weight_series = Vec::new();
    let mut kappa_series = vec![Series {
        name: "MaxSim alone".into(),
        points: args
            .kappa
            .iter()
            .zip(&plain)
            .map(|(&k, m)| (k as f64, m.ndcg_at_10))
            .collect(),
        joined: true,
    }];
    for &method in &methods {
        let mut by_kappa: Vec<Vec<(f64, f64)>> = vec![Vec::new(); args.kappa.len()];
        for &weight in &args.weights {
            let fusion = Fusion { method, weight };
            fusion.validate()?;
            let mut line = String::new();
            let mut ndcgs = Vec::new();
            let mut per_kappa = Vec::new();
            for (i, &kappa) in args.kappa.iter().enumerate() {
                let metrics = if fusion.is_active() {
                    run(kappa, fusion)?
                } else {
                    plain[i].clone()
                };
                let ndcg = metrics.ndcg_at_10;
                line.push_str(&format!(" {ndcg:>8.4}"));
                by_kappa[i].push((f64::from(weight), ndcg));
                ndcgs.push(ndcg);
                per_kappa.push(metrics);
            }
            grid.push((fusion, per_kappa));
            println!("{:>7} {weight:>6}{line}", method.name());
            rows.push(json!({"method": method.name(), "weight": weight, "kappa": args.kappa, "ndcg_at_10": ndcgs}));
        }
        for (i, &kappa) in args.kappa.iter().enumerate() {
            if args.plot_kappa.contains(&kappa) {
                weight_series.push(Series {
                    name: format!("{} κ={kappa}", method.name()),
                    points: by_kappa[i].clone(),
                    joined: true,
                });
            }
        }
    }

    // The checked setting against MaxSim alone, per κ, on random subsets.
    println!(
        "stability of {} w={} vs MaxSim alone: Δ nDCG@10 on file-order halves, thirds, odd/even \
         (fixed) and on halves and thirds of {} shuffles (seed {}); losing = Δ < -{TOLERATED_LOSS}:",
        check.method.name(),
        check.weight,
        args.splits,
        args.seed
    );
    println!(
        "{:>5} {:>8} {:>8} {:>8} {:>11} {:>12} {:>14}",
        "kappa", "MaxSim", "fused", "Δ all", "worst fixed", "worst random", "random losing"
    );
    let order: Vec<&str> = queries.iter().map(|(id, _)| id.as_str()).collect();
    let mut checks = Vec::new();
    let mut checked_points = Vec::new();
    for (i, &kappa) in args.kappa.iter().enumerate() {
        let fused = run(kappa, check)?;
        let s = stability(&fused, &plain[i], &order, args.splits, args.seed);
        println!(
            "{kappa:>5} {:>8.4} {:>8.4} {:>+8.4} {:>+11.4} {:>+12.4} {:>14}",
            plain[i].ndcg_at_10,
            fused.ndcg_at_10,
            s.overall,
            s.worst_fixed,
            s.worst_random,
            format!("{}/{}", s.random_losing, s.random_subsets)
        );
        checked_points.push((kappa as f64, fused.ndcg_at_10));
        checks.push(json!({"kappa": kappa, "maxsim_ndcg_at_10": plain[i].ndcg_at_10, "fused_ndcg_at_10": fused.ndcg_at_10, "delta": s.overall, "worst_fixed_split_delta": s.worst_fixed, "worst_random_subset_delta": s.worst_random, "random_subsets_losing": s.random_losing, "random_subsets": s.random_subsets, "tolerated_loss": TOLERATED_LOSS}));
    }
    let (lo, hi) = (
        args.kappa.iter().copied().min().unwrap_or(0) as f64,
        args.kappa.iter().copied().max().unwrap_or(0) as f64,
    );
    for (label, value) in &args.baseline {
        kappa_series.push(Series {
            name: label.clone(),
            points: vec![(lo, *value), (hi, *value)],
            joined: true,
        });
    }
    let selections = selection_on_halves(&grid, check, &args.kappa, &order, args.seed);
    kappa_series.push(Series {
        name: format!("{} w={}", check.method.name(), check.weight),
        points: checked_points,
        joined: true,
    });

    if let Some(path) = &args.json {
        let report = json!({
            "index": args.files.index.display().to_string(),
            "queries": queries.len(),
            "k": args.k,
            "cp_alpha": args.cp_alpha,
            "ee_beta": args.ee_beta,
            "rrf_k": args.rrf_k,
            "rows": rows,
            "check": {"method": check.method.name(), "weight": check.weight, "splits": args.splits, "seed": args.seed, "by_kappa": checks},
            "selection_on_halves": selections,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(prefix) = &args.plot {
        write_plots(prefix, weight_series, kappa_series)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_eval::QueryMetrics;

    fn metrics(ndcg: &[f64]) -> Metrics {
        let per_query: Vec<QueryMetrics> = ndcg
            .iter()
            .enumerate()
            .map(|(i, &n)| QueryMetrics {
                qid: format!("q{i}"),
                ndcg_at_10: n,
                recall_at_10: 0.0,
                recall_at_100: 0.0,
                mrr_at_10: 0.0,
                mrr: 0.0,
            })
            .collect();
        Metrics {
            queries: ndcg.len(),
            ndcg_at_10: ndcg.iter().sum::<f64>() / ndcg.len() as f64,
            recall_at_10: 0.0,
            recall_at_100: 0.0,
            mrr_at_10: 0.0,
            mrr: 0.0,
            per_query,
        }
    }

    #[test]
    fn stability_reports_overall_fixed_and_random_differences() {
        let plain = metrics(&[0.5; 6]);
        // q0 loses 0.1, the other five gain 0.1: overall +0.4 / 6. The first file-order third
        // (q0, q1) breaks even; subsets holding q0 do worse than the whole.
        let fused = metrics(&[0.4, 0.6, 0.6, 0.6, 0.6, 0.6]);
        let order = ["q0", "q1", "q2", "q3", "q4", "q5"];
        let s = stability(&fused, &plain, &order, 4, 7);
        assert!((s.overall - 0.4 / 6.0).abs() < 1e-12, "{s:?}");
        assert!(s.worst_fixed.abs() < 1e-12, "{s:?}");
        assert!(s.worst_random < s.overall, "{s:?}");
        assert_eq!(s.random_subsets, 4 * (2 + 3));
        assert_eq!(s.random_losing, 0);
        // Losing everywhere: every subset counts.
        let s = stability(&metrics(&[0.4; 6]), &plain, &order, 2, 0);
        assert_eq!((s.random_losing, s.random_subsets), (10, 10));
        let same = stability(&plain, &plain, &order, 2, 0);
        assert_eq!(
            (same.overall, same.worst_fixed, same.worst_random),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn check_settings_parse_and_bad_ones_are_named() {
        let f = parse_check("minmax:0.5", 60.0).unwrap();
        assert_eq!((f.method, f.weight), (FusionMethod::MinMax, 0.5));
        assert_eq!(
            parse_baseline("exhaustive MaxSim=0.7"),
            Ok(("exhaustive MaxSim".to_string(), 0.7))
        );
        assert!(parse_baseline("0.6931").is_err());
        for bad in ["zscore", "nope:1", "zscore:x", "zscore:-1"] {
            assert!(parse_check(bad, 60.0).is_err(), "{bad}");
        }
    }
}
