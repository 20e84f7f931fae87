//! `tandem-bench rerank`: MaxSim kernel throughput on real candidates, hot (pages resident).
//!
//! For each query, the candidates are the exact first stage's top κ. Every available kernel
//! scores all candidates of all queries `repeat` times after a warm-up pass; a candidate's cost
//! is 2 · n_q · m · dim flops (one multiply-add per query token, document token and dimension).
//! Throughput is reported as ns per candidate, GFLOP/s, and a share of the single-core f32 FMA
//! peak measured in the same run (the widest SIMD width available).
//! The kernels run over the index's codec; for `pq` a candidate's time includes decoding its codes
//! (see `tandem_engine::pq`), and its flops are counted as for the other codecs.
//!
//! Then, with the detected kernel, hot versus cold and with versus without prefetch: *cold* evicts
//! the token file from memory (this process's mapping and the page cache) before each query, so
//! its candidates are read from the disk; *prefetch* asks the kernel to read all of a query's
//! candidates ahead (`MADV_WILLNEED`) before scoring the first, as the server's `--prefetch`
//! does. Times include the prefetch requests.

use crate::workload::{load_queries, QueryFiles};
use anyhow::Context;
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use tandem_engine::kernels::{self, KernelKind};
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Index, Verify};

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

fn load(args: &RerankArgs, index: &Index) -> anyhow::Result<Workload> {
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

/// One timed pass over `queries`; returns (seconds, candidates, flops).
fn pass(index: &Index, work: &Workload, kind: KernelKind, queries: usize) -> (f64, u64, f64) {
    let dim = work.dim;
    let started = Instant::now();
    let (mut candidates, mut flops, mut sink) = (0u64, 0f64, 0f32);
    for (values, docs) in work.queries.iter().take(queries) {
        let n_q = values.len() / dim;
        for &doc in docs {
            if let Some(tokens) = index.tokens().doc(doc) {
                sink += tokens.maxsim(kind, values, n_q, dim);
                candidates += 1;
                flops += 2.0 * (n_q * tokens.tokens * dim) as f64;
            }
        }
    }
    std::hint::black_box(sink);
    (started.elapsed().as_secs_f64(), candidates, flops)
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn rerank(args: &RerankArgs) -> anyhow::Result<()> {
    let index = Index::open_with(&args.files.index, Verify::SkipChecksums)?;
    let work = load(args, &index)?;
    let peak = KernelKind::ALL
        .iter()
        .filter(|k| k.is_available())
        .filter_map(|&k| kernels::fma_peak_gflops(k).map(|g| (k, g)))
        .fold(None, |best: Option<(KernelKind, f64)>, (k, g)| match best {
            Some((_, b)) if b >= g => best,
            _ => Some((k, g)),
        });
    if let Some((kind, gflops)) = peak {
        println!("measured single-core f32 FMA peak ({kind}): {gflops:.1} GFLOP/s");
    }
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
        "{} queries ({mean_query_tokens:.1} tokens), kappa {}, {mean_tokens:.1} tokens per candidate, dim {}, hot",
        work.queries.len(),
        args.kappa,
        work.dim
    );
    println!(
        "{:<8} {:>14} {:>10} {:>10} {:>16}",
        "kernel", "ns/candidate", "GFLOP/s", "% of peak", "µs/query rerank"
    );
    let mut rows = Vec::new();
    for kind in KernelKind::ALL.into_iter().filter(|k| k.is_available()) {
        let (queries, repeat) = if kind == KernelKind::Scalar {
            (10, 1)
        } else {
            (work.queries.len(), args.repeat.max(1))
        };
        pass(&index, &work, kind, queries); // warm-up
        let (mut seconds, mut candidates, mut flops) = (0.0, 0u64, 0.0);
        for _ in 0..repeat {
            let (s, c, f) = pass(&index, &work, kind, queries);
            seconds += s;
            candidates += c;
            flops += f;
        }
        let ns = seconds * 1e9 / candidates.max(1) as f64;
        let gflops = flops / seconds / 1e9;
        let share = peak.map(|(_, p)| 100.0 * gflops / p);
        let per_query = ns * args.kappa as f64 / 1000.0;
        println!(
            "{:<8} {:>14.0} {:>10.1} {:>10} {:>16.1}",
            kind.name(),
            ns,
            gflops,
            share.map_or("-".to_string(), |s| format!("{s:.1}")),
            per_query
        );
        rows.push(json!({"kernel": kind.name(), "codec": index.manifest().vector_codec, "cache": "hot", "ns_per_candidate": ns, "gflops": gflops, "percent_of_peak": share, "rerank_us_per_query": per_query}));
    }
    let cache_rows = if args.no_cold {
        Vec::new()
    } else {
        cache_modes(&index, &work, args.kappa)
    };
    if let Some(path) = &args.json {
        let report = json!({
            "cache_modes": cache_rows,
            "index": args.files.index.display().to_string(),
            "queries": work.queries.len(),
            "kappa": args.kappa,
            "mean_candidate_tokens": mean_tokens,
            "mean_query_tokens": mean_query_tokens,
            "dim": work.dim,
            "fma_peak": peak.map(|(k, g)| json!({"kernel": k.name(), "gflops": g})),
            "kernels": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Hot/cold × prefetch with the detected kernel: one pass per mode, per query (cold: evicted
/// first); returns the JSON rows after printing them.
fn cache_modes(index: &Index, work: &Workload, kappa: usize) -> Vec<serde_json::Value> {
    let kind = kernels::detect();
    let dim = work.dim;
    println!("\n{kind} kernel, per query of {kappa} candidates:");
    println!(
        "{:<6} {:>9} {:>14} {:>16}",
        "cache", "prefetch", "ns/candidate", "µs/query rerank"
    );
    let mut rows = Vec::new();
    for cold in [false, true] {
        for prefetch in [false, true] {
            pass(index, work, kind, work.queries.len()); // warm the index for the hot modes
            let (mut seconds, mut candidates) = (0.0, 0u64);
            let mut sink = 0f32;
            for (values, docs) in &work.queries {
                if cold {
                    index.tokens().evict();
                }
                let started = Instant::now();
                if prefetch {
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
            println!(
                "{cache:<6} {:>9} {ns:>14.0} {per_query:>16.1}",
                if prefetch { "on" } else { "off" }
            );
            rows.push(json!({"kernel": kind.name(), "cache": cache, "prefetch": prefetch, "ns_per_candidate": ns, "rerank_us_per_query": per_query}));
        }
    }
    rows
}
