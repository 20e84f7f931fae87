//! `tandem-bench rerank`: MaxSim kernel throughput on real candidates.
//!
//! For each query, the candidates are the exact first stage's top κ. Every available kernel
//! scores them from two places (see `Residence`): from the CPU caches (a query's candidates
//! scored `repeat` times in a row, the "hot" of a kernel microbenchmark) and from memory (all
//! queries' candidates once per pass, `repeat` passes, the index resident in the page cache); a
//! candidate's cost is 2 · n_q · m · dim flops (one multiply-add per query token, document token
//! and dimension). Reported: ns per candidate (median and p99 over queries of each query's mean),
//! GFLOP/s, and a share of the single-core f32 FMA peak of the kernel's own instruction set
//! (AVX-512 or AVX2 FMAs, measured in the same run, best of many short runs; none for scalar).
//! The kernels run over the index's codec; for `pq` a candidate's time includes decoding its codes
//! (see `tandem_engine::pq`), and its flops are counted as for the other codecs.
//!
//! Then, with the detected kernel, pages in memory ("hot") versus on disk ("cold": the token
//! file is evicted from this process's mapping and the page cache before each query) and three
//! prefetch modes: *off*; *on*, which asks the kernel to read all of a query's candidates ahead
//! (`MADV_WILLNEED`, a system call per candidate) before scoring the first; and *auto*, the
//! server's default, which does so only while the last residency check (`mincore`, untimed here;
//! every few seconds in the server) found a page of the token files missing. Times include the
//! prefetch requests.
//!
//! Last, the cost of explanations (`SearchRequest.explain`): per kernel, the kernel tracking each
//! query token's best document token against the plain kernel (from the CPU caches), and whole
//! searches (exact first stage, κ candidates, detected kernel) with `explain` off and on,
//! interleaved query by query in the same run; the overhead is reported as a share of the rerank
//! time (search − first stage), medians over queries.

use crate::workload::{load_queries, QueryFiles};
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tandem_engine::kernels::{self, KernelKind};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Fusion, Limits, SearchParams, Segment, Verify};

/// Arguments of `tandem-bench rerank`.
#[derive(Debug, clap::Args)]
pub struct RerankArgs {
    /// The index and query files.
    #[command(flatten)]
    pub files: QueryFiles,
    /// Candidates per query.
    #[arg(long, default_value_t = 20)]
    pub kappa: usize,
    /// Timed passes over all candidates (the scalar reference does one pass over at most 10
    /// queries: it is two orders of magnitude slower).
    #[arg(long, default_value_t = 10)]
    pub repeat: usize,
    /// Skip the hot/cold × prefetch comparison.
    #[arg(long)]
    pub no_cold: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

struct Workload {
    /// Per query: its vectors and its candidates.
    queries: Vec<(Vec<f32>, Vec<u32>)>,
    dim: usize,
}

fn load(args: &RerankArgs, index: &Segment) -> anyhow::Result<Workload> {
    let mut queries = Vec::new();
    for (_, query) in load_queries(&args.files, index)? {
        let candidates = index.first_stage(&query, args.kappa, &FirstStage::Exact)?;
        if let Some(vectors) = query.vectors.filter(|v| !v.values.is_empty()) {
            queries.push((vectors.values, candidates.iter().map(|c| c.id).collect()));
        }
    }
    Ok(Workload {
        queries,
        dim: index.dim(),
    })
}

/// Where a timed candidate's token vectors are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Residence {
    /// CPU caches: each query's candidates are scored once untimed, then `repeat` times timed,
    /// so they come from L1/L2 (the "hot" of a kernel microbenchmark).
    CpuCache,
    /// Memory: every query's candidates once per pass over all queries, so a candidate was last
    /// touched a whole pass ago and streams from DRAM (or the shared L3), as in a server whose
    /// index is resident in the page cache.
    Memory,
}

impl Residence {
    fn name(self) -> &'static str {
        match self {
            Residence::CpuCache => "cpu-cache",
            Residence::Memory => "memory",
        }
    }
}

/// Timings of one kernel over one [`Residence`], per query: ns per candidate and GFLOP/s.
/// Medians rather than means, so that the other processes of a busy machine, which preempt a
/// few queries' timings, do not move the figures.
#[derive(Default)]
struct Timing {
    per_query_ns: Vec<f64>,
    per_query_gflops: Vec<f64>,
}

impl Timing {
    /// The `q`-quantile of the per-query ns per candidate.
    fn ns_quantile(&self, q: f64) -> f64 {
        quantile(&self.per_query_ns, q)
    }

    /// The median of the per-query GFLOP/s.
    fn median_gflops(&self) -> f64 {
        quantile(&self.per_query_gflops, 0.5)
    }
}

/// The `q`-quantile of `values` (nearest rank), 0 when empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Scores `docs` once with `kind`; returns (seconds, candidates, flops).
fn score_all(
    index: &Segment,
    kind: KernelKind,
    values: &[f32],
    docs: &[u32],
    dim: usize,
) -> (f64, u64, f64) {
    let n_q = values.len() / dim;
    let started = Instant::now();
    let (mut candidates, mut flops, mut sink) = (0u64, 0f64, 0f32);
    for &doc in docs {
        if let Some(tokens) = index.tokens().doc(doc) {
            sink += tokens.maxsim(kind, values, n_q, dim);
            candidates += 1;
            flops += 2.0 * (n_q * tokens.tokens * dim) as f64;
        }
    }
    std::hint::black_box(sink);
    (started.elapsed().as_secs_f64(), candidates, flops)
}

/// Times `kind` over the first `queries` queries, `repeat` times, from `residence`.
fn time_kernel(
    index: &Segment,
    work: &Workload,
    kind: KernelKind,
    residence: Residence,
    queries: usize,
    repeat: usize,
) -> Timing {
    let queries = &work.queries[..queries.min(work.queries.len())];
    // Per query: seconds, candidates, flops.
    let mut per_query = vec![(0.0, 0u64, 0.0); queries.len()];
    match residence {
        Residence::CpuCache => {
            for (slot, (values, docs)) in per_query.iter_mut().zip(queries) {
                score_all(index, kind, values, docs, work.dim); // brings them into the caches
                for _ in 0..repeat {
                    let (s, c, f) = score_all(index, kind, values, docs, work.dim);
                    *slot = (slot.0 + s, slot.1 + c, slot.2 + f);
                }
            }
        }
        Residence::Memory => {
            for (values, docs) in queries {
                score_all(index, kind, values, docs, work.dim); // pages the index in
            }
            for _ in 0..repeat {
                for (slot, (values, docs)) in per_query.iter_mut().zip(queries) {
                    let (s, c, f) = score_all(index, kind, values, docs, work.dim);
                    *slot = (slot.0 + s, slot.1 + c, slot.2 + f);
                }
            }
        }
    }
    let timed = per_query.iter().filter(|(s, c, _)| *c > 0 && *s > 0.0);
    Timing {
        per_query_ns: timed.clone().map(|(s, c, _)| s * 1e9 / *c as f64).collect(),
        per_query_gflops: timed.map(|(s, _, f)| f / s / 1e9).collect(),
    }
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn rerank(args: &RerankArgs) -> anyhow::Result<()> {
    // Checksums verified, as the server does by default: this also reads every page into memory.
    let index = Segment::open_with(&args.files.index, Verify::Full)?;
    let work = load(args, &index)?;
    // Each kernel is read against the FMA peak of its own instruction set (an AVX2 kernel near
    // its own peak is not "35 % of AVX-512").
    let peaks: Vec<(KernelKind, f64)> = KernelKind::ALL
        .iter()
        .filter(|k| k.is_available())
        .filter_map(|&k| kernels::fma_peak_gflops(k).map(|g| (k, g)))
        .collect();
    for (kind, gflops) in &peaks {
        println!("measured single-core f32 FMA peak ({kind}): {gflops:.1} GFLOP/s");
    }
    let peak_of = |kind: KernelKind| peaks.iter().find(|(k, _)| *k == kind).map(|(_, g)| *g);
    let mean_tokens: f64 = {
        let (mut tokens, mut docs) = (0usize, 0usize);
        for (_, candidates) in &work.queries {
            for &d in candidates {
                tokens += index.tokens().doc(d).map_or(0, |t| t.tokens);
                docs += 1;
            }
        }
        tokens as f64 / docs.max(1) as f64
    };
    let mean_query_tokens = work
        .queries
        .iter()
        .map(|q| q.0.len() / work.dim)
        .sum::<usize>() as f64
        / work.queries.len().max(1) as f64;
    println!(
        "{} queries ({mean_query_tokens:.1} tokens), kappa {}, {mean_tokens:.1} tokens per candidate, dim {}, codec {}",
        work.queries.len(),
        args.kappa,
        work.dim,
        index.manifest().vector_codec
    );
    println!(
        "{:<8} {:<10} {:>12} {:>12} {:>9} {:>10} {:>16}",
        "kernel", "from", "ns/cand p50", "ns/cand p99", "GFLOP/s", "% own peak", "µs/query (p50)"
    );
    let mut rows = Vec::new();
    for kind in KernelKind::ALL.into_iter().filter(|k| k.is_available()) {
        for residence in [Residence::CpuCache, Residence::Memory] {
            let (queries, repeat) = if kind == KernelKind::Scalar {
                (10, 1)
            } else {
                (work.queries.len(), args.repeat.max(1))
            };
            let timing = time_kernel(&index, &work, kind, residence, queries, repeat);
            let (p50, p99) = (timing.ns_quantile(0.5), timing.ns_quantile(0.99));
            let gflops = timing.median_gflops();
            let share = peak_of(kind).map(|p| 100.0 * gflops / p);
            let per_query = p50 * args.kappa as f64 / 1000.0;
            println!(
                "{:<8} {:<10} {:>12.0} {:>12.0} {:>9.1} {:>10} {:>16.1}",
                kind.name(),
                residence.name(),
                p50,
                p99,
                gflops,
                share.map_or("-".to_string(), |s| format!("{s:.1}")),
                per_query
            );
            rows.push(json!({
                "kernel": kind.name(),
                "codec": index.manifest().vector_codec,
                "from": residence.name(),
                "ns_per_candidate_p50": p50,
                "ns_per_candidate_p99": p99,
                "gflops": gflops,
                "percent_of_own_peak": share,
                "own_peak_gflops": peak_of(kind),
                "rerank_us_per_query": per_query,
            }));
        }
    }
    let cache_rows = if args.no_cold {
        Vec::new()
    } else {
        cache_modes(&index, &work, args.kappa)
    };
    let explain_rows = explain_cost(&index, args, &work)?;
    if let Some(path) = &args.json {
        let report = json!({
            "cache_modes": cache_rows,
            "explain": explain_rows,
            "index": args.files.index.display().to_string(),
            "queries": work.queries.len(),
            "kappa": args.kappa,
            "mean_candidate_tokens": mean_tokens,
            "mean_query_tokens": mean_query_tokens,
            "dim": work.dim,
            "fma_peaks": peaks
                .iter()
                .map(|(k, g)| json!({"kernel": k.name(), "gflops": g}))
                .collect::<Vec<_>>(),
            "kernels": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Hot/cold × prefetch with the detected kernel: one pass per mode, per query (cold: evicted
/// first); returns the JSON rows after printing them.
fn cache_modes(index: &Segment, work: &Workload, kappa: usize) -> Vec<serde_json::Value> {
    let kind = kernels::detect();
    let dim = work.dim;
    println!("\n{kind} kernel, per query of {kappa} candidates:");
    println!(
        "{:<6} {:>9} {:>14} {:>16}",
        "cache", "prefetch", "ns/candidate", "µs/query rerank"
    );
    let mut rows = Vec::new();
    for cold in [false, true] {
        for prefetch in ["off", "on", "auto"] {
            for (values, docs) in &work.queries {
                score_all(index, kind, values, docs, dim); // warms the index for the hot modes
            }
            let (mut seconds, mut candidates) = (0.0, 0u64);
            let mut sink = 0f32;
            for (values, docs) in &work.queries {
                if cold {
                    index.tokens().evict();
                }
                if prefetch == "auto" {
                    // Untimed: the server checks every few seconds on a background thread.
                    index.tokens().check_residency();
                }
                let started = Instant::now();
                let wanted = match prefetch {
                    "on" => true,
                    "auto" => index.tokens().needs_prefetch(),
                    _ => false,
                };
                if wanted {
                    for &doc in docs {
                        index.tokens().prefetch(doc);
                    }
                }
                for &doc in docs {
                    if let Some(tokens) = index.tokens().doc(doc) {
                        sink += tokens.maxsim(kind, values, values.len() / dim, dim);
                        candidates += 1;
                    }
                }
                seconds += started.elapsed().as_secs_f64();
            }
            std::hint::black_box(sink);
            let ns = seconds * 1e9 / candidates.max(1) as f64;
            let per_query = seconds * 1e6 / work.queries.len().max(1) as f64;
            let cache = if cold { "cold" } else { "hot" };
            println!("{cache:<6} {prefetch:>9} {ns:>14.0} {per_query:>16.1}");
            rows.push(json!({"kernel": kind.name(), "cache": cache, "prefetch": prefetch, "ns_per_candidate": ns, "rerank_us_per_query": per_query}));
        }
    }
    rows
}

/// The cost of explanations: per kernel (from the CPU caches) and per whole search; returns the
/// JSON object after printing it.
fn explain_cost(
    index: &Segment,
    args: &RerankArgs,
    work: &Workload,
) -> anyhow::Result<serde_json::Value> {
    let dim = work.dim;
    println!("\nexplanations, kernel tracking the best document token vs plain (cpu-cache):");
    println!(
        "{:<8} {:>16} {:>18} {:>10}",
        "kernel", "ns/cand plain", "ns/cand matches", "overhead"
    );
    let mut kernel_rows = Vec::new();
    for kind in KernelKind::ALL
        .into_iter()
        .filter(|k| k.is_available() && *k != KernelKind::Scalar)
    {
        // Per query, alternating plain and matches passes over the candidates (hot).
        let (mut plain, mut tracked) = (Vec::new(), Vec::new());
        let mut matches = Vec::new();
        let mut sink = 0f32;
        for (values, docs) in &work.queries {
            let n_q = values.len() / dim;
            let docs: Vec<_> = docs.iter().filter_map(|&d| index.tokens().doc(d)).collect();
            if docs.is_empty() {
                continue;
            }
            let (mut a, mut b) = (0.0, 0.0);
            for pass in 0..=args.repeat.max(1) {
                let started = Instant::now();
                for doc in &docs {
                    sink += doc.maxsim(kind, values, n_q, dim);
                }
                let t_plain = started.elapsed().as_secs_f64();
                let started = Instant::now();
                for doc in &docs {
                    matches.clear();
                    matches.resize(
                        n_q,
                        kernels::TokenMax {
                            token: 0,
                            score: 0.0,
                        },
                    );
                    sink += doc.maxsim_matches(kind, values, n_q, dim, &mut matches);
                }
                let t_tracked = started.elapsed().as_secs_f64();
                if pass > 0 {
                    (a, b) = (a + t_plain, b + t_tracked);
                }
            }
            let per = 1e9 / (docs.len() * args.repeat.max(1)) as f64;
            plain.push(a * per);
            tracked.push(b * per);
        }
        std::hint::black_box(sink);
        let (p, t) = (quantile(&plain, 0.5), quantile(&tracked, 0.5));
        let overhead = 100.0 * (t - p) / p;
        println!("{:<8} {p:>16.0} {t:>18.0} {overhead:>9.1}%", kind.name());
        kernel_rows.push(json!({"kernel": kind.name(), "ns_per_candidate_plain": p, "ns_per_candidate_matches": t, "overhead_percent": overhead}));
    }
    // Whole searches: first stage alone, then the two-stage search without and with
    // explanations, each query in turn, `repeat` times.
    let params = |explain| SearchParams {
        first_stage: FirstStage::Exact,
        k: 10,
        kappa: args.kappa,
        cp_alpha: None,
        ee_beta: None,
        rerank: true,
        prefetch: false,
        explain,
        fusion: Fusion::NONE,
    };
    let (off, on) = (params(false), params(true));
    let limits = Limits::default();
    let queries = load_queries(&args.files, index)?;
    let (mut first, mut plain, mut explained) = (Vec::new(), Vec::new(), Vec::new());
    for (_, query) in &queries {
        let (mut f, mut p, mut e) = (f64::MAX, f64::MAX, f64::MAX);
        // Best of the passes for each, so that a preempted pass does not count.
        for _ in 0..=args.repeat.max(1) {
            let started = Instant::now();
            std::hint::black_box(index.first_stage(query, args.kappa, &FirstStage::Exact)?);
            f = f.min(started.elapsed().as_secs_f64());
            let started = Instant::now();
            std::hint::black_box(index.search(query, &off, &limits)?);
            p = p.min(started.elapsed().as_secs_f64());
            let started = Instant::now();
            std::hint::black_box(index.search(query, &on, &limits)?);
            e = e.min(started.elapsed().as_secs_f64());
        }
        first.push(f * 1e6);
        plain.push(p * 1e6);
        explained.push(e * 1e6);
    }
    let (f, p, e) = (
        quantile(&first, 0.5),
        quantile(&plain, 0.5),
        quantile(&explained, 0.5),
    );
    // Per query, the explanation's extra time over its rerank time.
    let shares: Vec<f64> = first
        .iter()
        .zip(&plain)
        .zip(&explained)
        .filter(|((f, p), _)| *p > *f)
        .map(|((f, p), e)| 100.0 * (e - p) / (p - f))
        .collect();
    let share = quantile(&shares, 0.5);
    println!(
        "\n{} kernel, κ = {}, {} queries, µs per query (median of each query's best of {} passes):",
        kernels::detect(),
        args.kappa,
        queries.len(),
        args.repeat.max(1) + 1
    );
    println!(
        "first stage {f:.1}, search {p:.1}, search + explain {e:.1}: explain adds {:.1} µs, {share:.1}% of the rerank time (median over queries)",
        e - p
    );
    Ok(json!({
        "kernels": kernel_rows,
        "search": {
            "kernel": kernels::detect().name(),
            "kappa": args.kappa,
            "first_stage_us_p50": f,
            "search_us_p50": p,
            "search_explain_us_p50": e,
            "overhead_percent_of_rerank_p50": share,
        },
    }))
}
