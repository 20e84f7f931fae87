//! Load reports: the figures of a run, a ghz-style text summary, the JSON report, machine facts,
//! and `tandem-bench compare` of two reports.

use super::record::Recorder;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tandem_eval::{evaluate, Qrels, Run};

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Fastest call.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Slowest call.
    pub max: f64,
    /// Percentiles.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// Quality of the answers collected during the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Quality {
    /// Judged queries answered.
    pub queries: usize,
    /// Mean nDCG@10.
    pub ndcg_at_10: f64,
    /// Mean Recall@10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank at 10.
    pub mrr_at_10: f64,
}

/// How late an open-loop generator dispatched its arrivals, microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lag {
    /// Median lateness.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// The lateness figures of a recorder whose latencies are dispatch delays.
pub fn lag(recorder: &Recorder) -> Lag {
    let h = &recorder.latency;
    Lag {
        p50: h.value_at_quantile(0.5) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        max: h.max() as f64,
    }
}

/// One bucket of the latency histogram: calls at most `le_us` (and above the previous bucket).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    /// Upper bound, µs.
    pub le_us: f64,
    /// Calls in the bucket.
    pub count: u64,
}

/// The figures of one run (one closed-loop run, or one offered rate).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    /// What ran, e.g. `closed, concurrency 4` or `open, 500/s poisson`.
    pub label: String,
    /// Offered load (queries/s) of an open-loop run.
    pub offered_qps: Option<f64>,
    /// Calls made.
    pub requests: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Queries answered (≠ requests for batches).
    pub queries: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Queries answered per second.
    pub qps: f64,
    /// Calls per second.
    pub rps: f64,
    /// Call latency (open loop: from the intended send time).
    pub latency_us: Latency,
    /// Calls by status code.
    pub status_codes: BTreeMap<String, u64>,
    /// Open loop: arrivals not sent because `--max-in-flight` calls were outstanding (the
    /// client, not the server, was saturated).
    pub not_sent: u64,
    /// Open loop: how late the generator dispatched arrivals (included in the latencies).
    pub dispatch_lag_us: Option<Lag>,
    /// Latency histogram: ten equal-width buckets from the fastest to the slowest call.
    pub histogram: Vec<Bucket>,
    /// Latency CDF points `(µs, quantile)` at every percent and at 99.5, 99.9, 99.99 and 100 %.
    pub cdf: Vec<(f64, f64)>,
    /// Answer quality, when qrels were given.
    pub quality: Option<Quality>,
}

/// Facts about the machine the load generator ran on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// CPU model name.
    pub cpu_model: String,
    /// Cores available to the process.
    pub cores: usize,
    /// The MaxSim kernel this CPU selects (its SIMD level).
    pub simd: String,
    /// Operating system and architecture.
    pub os: String,
}

/// The JSON report: the last run's figures at the top level, every run, the configuration and
/// the machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The last run's figures (for a `--rate` list: the last rate's).
    #[serde(flatten)]
    pub last: RunReport,
    /// Every run, in order.
    pub runs: Vec<RunReport>,
    /// The command-line configuration.
    pub config: serde_json::Value,
    /// Where the load generator ran.
    pub machine: Machine,
}

/// The machine facts of this process.
pub fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        simd: tandem_engine::kernels::detect().to_string(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

/// The figures of `recorder` over `elapsed`.
pub fn run_report(
    label: String,
    offered_qps: Option<f64>,
    recorder: &Recorder,
    elapsed: Duration,
    not_sent: u64,
    qrels: Option<&Qrels>,
) -> RunReport {
    let h = &recorder.latency;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let at = |q: f64| h.value_at_quantile(q) as f64;
    let latency_us = if h.is_empty() {
        Latency {
            min: 0.0,
            mean: 0.0,
            max: 0.0,
            p50: 0.0,
            p90: 0.0,
            p95: 0.0,
            p99: 0.0,
            p999: 0.0,
        }
    } else {
        Latency {
            min: h.min() as f64,
            mean: h.mean(),
            max: h.max() as f64,
            p50: at(0.5),
            p90: at(0.9),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
        }
    };
    // ghz-style histogram: ten equal-width buckets from the fastest to the slowest call.
    let mut histogram = Vec::new();
    let mut cdf = Vec::new();
    if !h.is_empty() {
        let (lo, hi) = (h.min(), h.max());
        let mut below = lo.saturating_sub(1);
        for i in 1..=10u64 {
            let le = lo + (hi - lo) * i / 10;
            if le > below {
                histogram.push(Bucket {
                    le_us: le as f64,
                    count: h.count_between(below + 1, le),
                });
                below = le;
            }
        }
        // The CDF at every percent, and finer in the tail.
        let tail = [0.995, 0.999, 0.9999, 1.0];
        for q in (0..100).map(|p| f64::from(p) / 100.0).chain(tail) {
            cdf.push((h.value_at_quantile(q) as f64, q));
        }
    }
    let quality = qrels.map(|qrels| {
        let ranked = recorder
            .answers
            .iter()
            .map(|(qid, hits)| (qid.clone(), hits.clone()));
        let m = evaluate(&Run::from_ranked(ranked), qrels, false);
        Quality {
            queries: m.queries,
            ndcg_at_10: m.ndcg_at_10,
            recall_at_10: m.recall_at_10,
            mrr_at_10: m.mrr_at_10,
        }
    });
    RunReport {
        label,
        offered_qps,
        requests: recorder.calls,
        errors: recorder.errors,
        queries: recorder.queries,
        duration_s: seconds,
        qps: recorder.queries as f64 / seconds,
        rps: recorder.calls as f64 / seconds,
        latency_us,
        status_codes: recorder.codes.clone(),
        not_sent,
        dispatch_lag_us: None,
        histogram,
        cdf,
        quality,
    }
}

/// Milliseconds with three decimals.
fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}

/// The ghz-style text summary of a run.
pub fn summary(run: &RunReport) -> String {
    let l = &run.latency_us;
    let mut out = format!(
        "{}\n\nSummary:\n  Count:\t{}\n  Total:\t{:.2} s\n  Slowest:\t{}\n  Fastest:\t{}\n  \
         Average:\t{}\n  Requests/sec:\t{:.2}\n  Queries/sec:\t{:.2}\n",
        run.label,
        run.requests,
        run.duration_s,
        ms(l.max),
        ms(l.min),
        ms(l.mean),
        run.rps,
        run.qps
    );
    if let Some(offered) = run.offered_qps {
        out.push_str(&format!(
            "  Offered/sec:\t{offered:.2} (not sent: {})\n",
            run.not_sent
        ));
    }
    if let Some(lag) = &run.dispatch_lag_us {
        out.push_str(&format!(
            "  Dispatch lag:\tp50 {}, p99 {} (the generator's own lateness, included above)\n",
            ms(lag.p50),
            ms(lag.p99)
        ));
    }
    out.push_str("\nResponse time histogram:\n");
    let widest = run
        .histogram
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(1)
        .max(1);
    for b in &run.histogram {
        let bar = "∎".repeat(((b.count * 40).div_ceil(widest)) as usize);
        out.push_str(&format!("  {:>10} [{}]\t|{bar}\n", ms(b.le_us), b.count));
    }
    out.push_str("\nLatency distribution:\n");
    for (name, v) in [
        ("50", l.p50),
        ("90", l.p90),
        ("95", l.p95),
        ("99", l.p99),
        ("99.9", l.p999),
    ] {
        out.push_str(&format!("  {name} % in {}\n", ms(v)));
    }
    out.push_str("\nStatus code distribution:\n");
    for (code, n) in &run.status_codes {
        out.push_str(&format!("  [{code}]\t{n} responses\n"));
    }
    if let Some(q) = &run.quality {
        out.push_str(&format!(
            "\nQuality ({} judged queries): nDCG@10 {:.4}, Recall@10 {:.4}, MRR@10 {:.4}\n",
            q.queries, q.ndcg_at_10, q.recall_at_10, q.mrr_at_10
        ));
    }
    out
}

/// Reads a JSON report.
pub fn read(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a load report", path.display()))
}

/// The figures `compare` puts side by side: name, value, and whether larger is better.
fn figures(run: &RunReport) -> Vec<(&'static str, f64, bool)> {
    let l = &run.latency_us;
    let mut rows = vec![
        ("qps", run.qps, true),
        ("requests", run.requests as f64, true),
        ("errors", run.errors as f64, false),
        ("latency p50 µs", l.p50, false),
        ("latency p90 µs", l.p90, false),
        ("latency p99 µs", l.p99, false),
        ("latency p99.9 µs", l.p999, false),
        ("latency max µs", l.max, false),
    ];
    if let Some(q) = &run.quality {
        rows.push(("nDCG@10", q.ndcg_at_10, true));
        rows.push(("Recall@10", q.recall_at_10, true));
        rows.push(("MRR@10", q.mrr_at_10, true));
    }
    rows
}

/// The table of differences between two reports' top-level runs, marking regressions of B.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = format!(
        "A: {}\nB: {}\n{:<18} {:>14} {:>14} {:>12} {:>9}\n",
        a.last.label, b.last.label, "figure", "A", "B", "B − A", "change"
    );
    let b_rows: BTreeMap<&str, f64> = figures(&b.last)
        .into_iter()
        .map(|(n, v, _)| (n, v))
        .collect();
    for (name, va, higher_is_better) in figures(&a.last) {
        let Some(&vb) = b_rows.get(name) else {
            continue;
        };
        let change = if va != 0.0 {
            format!("{:+.1} %", (vb - va) / va.abs() * 100.0)
        } else {
            "-".to_string()
        };
        let worse = if higher_is_better { vb < va } else { vb > va };
        let flag = if worse && (vb - va).abs() > 0.05 * va.abs() {
            "  worse"
        } else {
            ""
        };
        out.push_str(&format!(
            "{name:<18} {va:>14.4} {vb:>14.4} {:>12.4} {change:>9}{flag}\n",
            vb - va
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::record::Outcome;

    fn run(latencies_us: &[u64]) -> RunReport {
        let mut r = Recorder::new(false);
        for &us in latencies_us {
            r.record(
                Duration::from_micros(us),
                Outcome::Answered(vec![Default::default()]),
            );
        }
        r.record(
            Duration::from_micros(50),
            Outcome::Failed(tonic::Code::Unavailable),
        );
        run_report("test".into(), None, &r, Duration::from_secs(2), 0, None)
    }

    #[test]
    fn percentiles_rates_and_codes_follow_the_recorded_calls() {
        let latencies: Vec<u64> = (1..=1000).collect();
        let r = run(&latencies);
        assert_eq!((r.requests, r.errors, r.queries), (1001, 1, 1000));
        assert!((r.qps - 500.0).abs() < 1e-9 && (r.rps - 500.5).abs() < 1e-9);
        // 3 significant digits: percentiles within 0.1 % of the exact values.
        assert!(
            (r.latency_us.p50 - 500.0).abs() <= 1.0,
            "{:?}",
            r.latency_us
        );
        assert!(
            (r.latency_us.p99 - 990.0).abs() <= 1.0,
            "{:?}",
            r.latency_us
        );
        assert_eq!(r.latency_us.max, 1000.0);
        assert_eq!(r.status_codes["Unavailable"], 1);
        assert_eq!(r.histogram.iter().map(|b| b.count).sum::<u64>(), 1001);
        assert!((r.cdf.last().unwrap().1 - 1.0).abs() < 1e-12);
        let text = summary(&r);
        assert!(text.contains("Requests/sec:\t500.50") && text.contains("[Unavailable]\t1"));
    }

    #[test]
    fn compare_flags_regressions() {
        let config = serde_json::json!({});
        let report = |r: RunReport| Report {
            last: r.clone(),
            runs: vec![r],
            config: config.clone(),
            machine: machine(),
        };
        let fast = report(run(&[100; 50]));
        let slow = report(run(&[300; 50]));
        let table = compare(&fast, &slow);
        let p50 = table
            .lines()
            .find(|l| l.starts_with("latency p50"))
            .unwrap();
        assert!(p50.contains("+200.0 %") && p50.ends_with("worse"), "{p50}");
        let json = serde_json::to_string(&fast).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (
                back.last.requests,
                back.last.latency_us.p50,
                back.runs.len()
            ),
            (51, 100.0, 1)
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in ["requests", "errors", "qps", "latency_us"] {
            assert!(value.get(key).is_some(), "{key}");
        }
        assert!(value["latency_us"]["p999"].is_number());
    }
}
