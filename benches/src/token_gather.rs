//! `tandem-bench token-gather`: the token-level gather-and-refine baseline that multivector
//! retrieval papers compare two-stage pipelines with (PLAID / EMVB-style candidate generation),
//! run in process next to tandem's two-stage path on the same data.
//!
//! - **Gather.** An HNSW graph (`hnsw_rs`) holds every document token vector, scaled to unit
//!   length, with the distance 1 − dot ([`UnitDot`]). Each query token looks up its
//!   `k_per_token` nearest document tokens (search width `ef`); the documents those tokens belong
//!   to, united over the query's tokens, are the candidates.
//! - **Refine.** Every candidate is scored by exact MaxSim over the index's token store with the
//!   engine's kernel ([`MaxSimScorer`], the scorer of tandem's reranker) and the best `depth` are
//!   kept.
//!
//! The rows compared run one query at a time on one thread, after an untimed pass that pages in
//! the index (every query through the two-stage path, one MaxSim over every document): tandem's
//! two-stage path per κ (exact first stage; with the server's default fusion, and with MaxSim
//! alone), exhaustive MaxSim over every document (what the baseline returns when it gathers every
//! document: its ceiling), and the baseline per (k_per_token, ef). Each row has nDCG@10, R@10 and
//! R@100 against the qrels (trec_eval semantics), the candidates scored by MaxSim per query, and
//! the latency per query split into the candidate stage (first stage or gather) and the MaxSim
//! stage (rerank or refine); the last column is the mean latency relative to the first row.
//!
//! The graph is built by parallel insertion on every core, and its build time is reported. With
//! `--hnsw-cache DIR` it is dumped into `DIR` and later runs with the same vectors and
//! construction settings reload it instead of building it again.

use crate::first_stage::{peak_rss_bytes, Latency};
use crate::workload::{load_queries, QueryFiles};
use anyhow::{ensure, Context};
use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tandem_data::npy::NpyArray;
use tandem_engine::maxsim::MaxSimScorer;
use tandem_engine::pipeline::FirstStage;
use tandem_engine::{Fusion, Limits, Query, SearchParams, Segment, Verify};
use tandem_eval::{evaluate, Metrics, Qrels, Run};

/// Arguments of `tandem-bench token-gather`.
#[derive(Debug, clap::Args)]
pub struct TokenGatherArgs {
    /// The index and query files.
    #[command(flatten)]
    pub files: QueryFiles,
    /// Relevance judgments (TREC qrels).
    #[arg(long)]
    pub qrels: PathBuf,
    /// Document token vectors (.npy [tokens, dim]; float32, float16 or int8): the file the index
    /// was built from.
    #[arg(long)]
    pub vectors: PathBuf,
    /// Token vectors per document (.npy, one count per document), in index order.
    #[arg(long)]
    pub lens: PathBuf,
    /// Nearest document tokens looked up per query token.
    #[arg(long, value_delimiter = ',', default_value = "10,32,100")]
    pub k_per_token: Vec<usize>,
    /// HNSW search widths (hnsw_rs searches with max(ef, k_per_token)).
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    pub ef: Vec<usize>,
    /// HNSW links per node and layer (twice as many in the bottom layer); at most 255.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// HNSW search width while inserting.
    #[arg(long, default_value_t = 100)]
    pub ef_construction: usize,
    /// κ of tandem's two-stage rows (each with the server's default fusion and with MaxSim
    /// alone).
    #[arg(long, value_delimiter = ',', default_value = "30")]
    pub kappa: Vec<usize>,
    /// Results kept per query by the baseline and exhaustive rows (Recall@100 needs 100); a
    /// two-stage row keeps its κ reranked candidates.
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// Dump the graph into this directory, or reload it from there when it was built from the
    /// same vectors with the same m and ef_construction.
    #[arg(long)]
    pub hnsw_cache: Option<PathBuf>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// hnsw_rs distance between unit vectors: 1 − dot, clamped at 0. (Rounding can take the dot of
/// two unit vectors past 1, which hnsw_rs's own `DistDot` answers with a panic.)
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product with eight independent sums, so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_lanes, a_tail) = a.as_chunks::<8>();
    let (b_lanes, b_tail) = b.as_chunks::<8>();
    let mut sums = [0f32; 8];
    for (x, y) in a_lanes.iter().zip(b_lanes) {
        for ((s, x), y) in sums.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    sums.iter().sum::<f32>() + tail
}

/// hnsw_rs's layer count; its dumps require exactly this many.
const HNSW_LAYERS: usize = 16;

/// Rows inserted per parallel batch (progress is reported between batches).
const INSERT_BATCH: usize = 16_384;

/// How the graph is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphParams {
    /// Links per node and layer (twice as many in the bottom layer).
    pub m: usize,
    /// Search width while inserting.
    pub ef_construction: usize,
}

/// An HNSW graph over document token vectors, and the document of each of its nodes.
pub struct TokenGraph<'g> {
    hnsw: Hnsw<'g, f32, UnitDot>,
    /// Node i is token row i, of document `doc_of_row[i]`.
    doc_of_row: Vec<u32>,
    /// Documents (one more than the largest document id).
    docs: usize,
}

impl<'g> TokenGraph<'g> {
    /// Builds the graph over `rows` (unit vectors of `dim` values, row-major): node i is row i,
    /// a token of document `doc_of_row[i]`. Insertion runs in parallel on rayon's pool;
    /// `progress` is called with the rows inserted so far after each batch.
    pub fn build(
        rows: &[f32],
        dim: usize,
        doc_of_row: Vec<u32>,
        params: GraphParams,
        progress: &dyn Fn(u64),
    ) -> TokenGraph<'g> {
        let mut hnsw = Hnsw::new(
            params.m,
            doc_of_row.len(),
            HNSW_LAYERS,
            params.ef_construction,
            UnitDot,
        );
        let items: Vec<(&[f32], usize)> = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, row)| (row, i))
            .collect();
        let mut inserted = 0u64;
        for batch in items.chunks(INSERT_BATCH) {
            hnsw.parallel_insert_slice(&batch.to_vec());
            inserted += batch.len() as u64;
            progress(inserted);
        }
        hnsw.set_searching_mode(true);
        TokenGraph::new(hnsw, doc_of_row)
    }

    fn new(hnsw: Hnsw<'g, f32, UnitDot>, doc_of_row: Vec<u32>) -> TokenGraph<'g> {
        let docs = doc_of_row.iter().max().map_or(0, |&d| d as usize + 1);
        TokenGraph {
            hnsw,
            doc_of_row,
            docs,
        }
    }

    /// Token vectors in the graph.
    pub fn tokens(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    /// The candidates of `query` (`n × dim` values, row-major): the documents of each query
    /// token's `k_per_token` nearest document tokens (found with search width `ef`), united, in
    /// order of discovery.
    pub fn gather(&self, query: &[f32], dim: usize, k_per_token: usize, ef: usize) -> Vec<u32> {
        let mut seen = vec![false; self.docs];
        let mut candidates = Vec::new();
        for token in query.chunks_exact(dim) {
            for neighbour in self.hnsw.search(token, k_per_token, ef) {
                let doc = self.doc_of_row[neighbour.d_id];
                if !std::mem::replace(&mut seen[doc as usize], true) {
                    candidates.push(doc);
                }
            }
        }
        candidates
    }
}

/// Scores `candidates` by MaxSim against `query` (`n × index.dim()` values) with the engine's
/// kernel, as tandem's reranker does, and returns the best `depth` (document, score), best first
/// (equal scores by document id).
pub fn refine(index: &Segment, query: &[f32], candidates: &[u32], depth: usize) -> Vec<(u32, f32)> {
    let scorer = MaxSimScorer::new(query, index.dim());
    let mut scored: Vec<(u32, f32)> = candidates
        .iter()
        .filter_map(|&doc| Some((doc, scorer.score(index.tokens().doc(doc)?))))
        .collect();
    scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(depth);
    scored
}

/// The document of every token row: document d owns the next `lens[d]` rows, documents in index
/// order. Each count must match the index's token store.
pub fn doc_of_rows(lens_path: &Path, index: &Segment) -> anyhow::Result<Vec<u32>> {
    let lens = NpyArray::open(lens_path)?.to_u64_vec()?;
    ensure!(
        lens.len() == index.doc_count(),
        "{}: {} documents, the index has {}",
        lens_path.display(),
        lens.len(),
        index.doc_count()
    );
    let mut doc_of_row = Vec::new();
    for (doc, &len) in (0u32..).zip(&lens) {
        let stored = index.tokens().doc(doc).map_or(0, |t| t.tokens);
        ensure!(
            stored as u64 == len,
            "{}: document {doc} has {len} token vectors, {stored} in the index",
            lens_path.display()
        );
        doc_of_row.extend(std::iter::repeat_n(doc, stored));
    }
    Ok(doc_of_row)
}

/// Every row of the matrix `path` (`rows × dim`) as f32, scaled to unit length (all-zero rows
/// stay zero). Unit rows make an int8 file's scale irrelevant.
pub fn unit_rows(path: &Path, rows: usize, dim: usize) -> anyhow::Result<Vec<f32>> {
    let matrix = NpyArray::open(path)?;
    let shape = matrix.matrix_shape()?;
    ensure!(
        shape == (rows, dim),
        "{}: shape {shape:?}, expected ({rows}, {dim}) (the index's token count and dim)",
        path.display()
    );
    let mut values = Vec::new();
    matrix.rows_f32(0..rows, None, &mut values)?;
    ensure!(
        values.iter().all(|v| v.is_finite()),
        "{}: values must be finite float32, float16 or int8",
        path.display()
    );
    for row in values.chunks_exact_mut(dim) {
        let norm = dot(row, row).sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    Ok(values)
}

/// How the graph was obtained.
#[derive(Debug, Clone, Copy)]
struct GraphOrigin {
    /// Wall seconds of the build (of the cached build when reloaded).
    build_seconds: f64,
    /// Threads of the build.
    build_threads: usize,
    /// Seconds to reload it, when it came from the cache.
    load_seconds: Option<f64>,
}

/// What a cached graph was built from; a cache is reused only when this matches.
fn cache_key(
    args: &TokenGatherArgs,
    tokens: usize,
    dim: usize,
) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::metadata(&args.vectors)
        .with_context(|| format!("cannot read {}", args.vectors.display()))?
        .len();
    Ok(json!({
        "vectors": std::fs::canonicalize(&args.vectors)?.display().to_string(),
        "vectors_bytes": bytes,
        "tokens": tokens,
        "dim": dim,
        "m": args.m,
        "ef_construction": args.ef_construction,
    }))
}

/// The graph of `args`: reloaded from `--hnsw-cache` when a matching one is there (through
/// `reloader`, which the reloaded graph borrows), else built from `--vectors` (and dumped when a
/// cache directory is given).
fn open_graph<'g>(
    args: &TokenGatherArgs,
    index: &Segment,
    reloader: &'g mut Option<HnswIo>,
) -> anyhow::Result<(TokenGraph<'g>, GraphOrigin)> {
    let doc_of_row = doc_of_rows(&args.lens, index)?;
    let (tokens, dim) = (doc_of_row.len(), index.dim());
    let key = cache_key(args, tokens, dim)?;
    let basename = format!("tokens-m{}-efc{}", args.m, args.ef_construction);
    let sidecar = args
        .hnsw_cache
        .as_ref()
        .map(|dir| dir.join(format!("{basename}.json")));
    if let (Some(dir), Some(sidecar)) = (&args.hnsw_cache, &sidecar) {
        let cached: Option<serde_json::Value> = std::fs::read_to_string(sidecar)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        if let Some(cached) = cached.filter(|c| c["key"] == key) {
            let started = Instant::now();
            let io = reloader.insert(HnswIo::new(dir, &basename));
            let hnsw: Hnsw<'g, f32, UnitDot> = io.load_hnsw().with_context(|| {
                format!("cannot reload the graph {basename} from {}", dir.display())
            })?;
            ensure!(
                hnsw.get_nb_point() == tokens,
                "{}: the graph {basename} has {} nodes, expected {tokens}",
                dir.display(),
                hnsw.get_nb_point()
            );
            let origin = GraphOrigin {
                build_seconds: cached["build_seconds"].as_f64().unwrap_or(f64::NAN),
                build_threads: cached["build_threads"].as_u64().unwrap_or(0) as usize,
                load_seconds: Some(started.elapsed().as_secs_f64()),
            };
            return Ok((TokenGraph::new(hnsw, doc_of_row), origin));
        }
    }

    let rows = unit_rows(&args.vectors, tokens, dim)?;
    let bar = ProgressBar::new(tokens as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "hnsw [{bar:40}] {pos}/{len} token vectors {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let params = GraphParams {
        m: args.m,
        ef_construction: args.ef_construction,
    };
    let started = Instant::now();
    let graph = TokenGraph::build(&rows, dim, doc_of_row, params, &|n| bar.set_position(n));
    let origin = GraphOrigin {
        build_seconds: started.elapsed().as_secs_f64(),
        build_threads: rayon::current_num_threads(),
        load_seconds: None,
    };
    bar.finish_and_clear();
    drop(rows);
    if let (Some(dir), Some(sidecar)) = (&args.hnsw_cache, &sidecar) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        graph
            .hnsw
            .file_dump(dir, &basename)
            .with_context(|| format!("cannot dump the graph into {}", dir.display()))?;
        let meta = json!({"key": key, "build_seconds": origin.build_seconds, "build_threads": origin.build_threads});
        std::fs::write(sidecar, serde_json::to_string_pretty(&meta)?)
            .with_context(|| format!("cannot write {}", sidecar.display()))?;
    }
    Ok((graph, origin))
}

/// One compared configuration over the query set.
struct Row {
    /// `two-stage`, `exhaustive` or `token-gather`.
    path: &'static str,
    /// Its settings, for the table.
    setting: String,
    /// Its settings, for the JSON report.
    params: serde_json::Value,
    metrics: Metrics,
    /// Candidates scored by MaxSim per query (mean).
    scored: f64,
    /// Nanoseconds per query in the candidate stage (first stage or gather).
    candidate_ns: Vec<u64>,
    /// Nanoseconds per query in the MaxSim stage (rerank or refine).
    maxsim_ns: Vec<u64>,
    /// Nanoseconds per query in all.
    total_ns: Vec<u64>,
}

/// Per-query timings and ranked results of one configuration.
#[derive(Default)]
struct Timed {
    ranked: Vec<(String, Vec<(String, f64)>)>,
    scored: usize,
    candidate_ns: Vec<u64>,
    maxsim_ns: Vec<u64>,
    total_ns: Vec<u64>,
}

impl Timed {
    fn push(&mut self, id: &str, hits: Vec<(String, f64)>, scored: usize, times: [u64; 3]) {
        self.ranked.push((id.to_string(), hits));
        self.scored += scored;
        self.candidate_ns.push(times[0]);
        self.maxsim_ns.push(times[1]);
        self.total_ns.push(times[2]);
    }

    fn into_row(
        self,
        path: &'static str,
        setting: String,
        params: serde_json::Value,
        qrels: &Qrels,
    ) -> Row {
        let queries = self.total_ns.len().max(1) as f64;
        Row {
            path,
            setting,
            params,
            metrics: evaluate(&Run::from_ranked(self.ranked), qrels, false),
            scored: self.scored as f64 / queries,
            candidate_ns: self.candidate_ns,
            maxsim_ns: self.maxsim_ns,
            total_ns: self.total_ns,
        }
    }
}

/// External ids and scores of `hits`.
fn named(index: &Segment, hits: impl IntoIterator<Item = (u32, f32)>) -> Vec<(String, f64)> {
    hits.into_iter()
        .map(|(doc, score)| {
            let id = index.external_id(doc).unwrap_or_default();
            (id.to_string(), f64::from(score))
        })
        .collect()
}

/// A query's token vectors (empty without them).
fn vectors(query: &Query) -> &[f32] {
    query.vectors.as_ref().map_or(&[], |v| v.values.as_slice())
}

/// Nanoseconds since `started`.
fn nanos(started: Instant) -> u64 {
    started.elapsed().as_nanos() as u64
}

/// tandem's two-stage path: exact first stage, κ candidates reranked with `fusion` (no prefetch:
/// the index is in memory).
fn two_stage(
    index: &Segment,
    queries: &[(String, Query)],
    kappa: usize,
    fusion: Fusion,
) -> anyhow::Result<Timed> {
    let params = SearchParams {
        first_stage: FirstStage::Exact,
        k: kappa,
        kappa,
        cp_alpha: None,
        ee_beta: None,
        rerank: true,
        prefetch: false,
        explain: false,
        fusion,
    };
    let limits = Limits {
        max_kappa: usize::MAX,
        ..Limits::default()
    };
    let mut timed = Timed::default();
    for (id, query) in queries {
        let started = Instant::now();
        let out = index.search(query, &params, &limits)?;
        let total = nanos(started);
        let hits = named(index, out.hits.iter().map(|h| (h.doc, h.score)));
        let stats = out.stats;
        let times = [stats.first_stage_us * 1000, stats.rerank_us * 1000, total];
        timed.push(id, hits, stats.reranked, times);
    }
    Ok(timed)
}

/// The baseline; `gather` of `None` scores every document (exhaustive MaxSim).
fn gather_refine(
    index: &Segment,
    queries: &[(String, Query)],
    gather: Option<(&TokenGraph, usize, usize)>,
    depth: usize,
) -> Timed {
    let all: Vec<u32> = (0..index.doc_count() as u32).collect();
    let mut timed = Timed::default();
    for (id, query) in queries {
        let values = vectors(query);
        let started = Instant::now();
        let candidates = match gather {
            Some((graph, k_per_token, ef)) => graph.gather(values, index.dim(), k_per_token, ef),
            None => all.clone(),
        };
        let candidate_ns = nanos(started);
        let started = Instant::now();
        let hits = refine(index, values, &candidates, depth);
        let maxsim_ns = nanos(started);
        let times = [candidate_ns, maxsim_ns, candidate_ns + maxsim_ns];
        timed.push(id, named(index, hits), candidates.len(), times);
    }
    timed
}

/// µs with one decimal.
fn us(value: f64) -> String {
    format!("{value:.1}")
}

fn latency_json(latency: Latency) -> serde_json::Value {
    json!({"mean": latency.mean_us, "p50": latency.p50_us, "p99": latency.p99_us})
}

/// Prints the table (latencies relative to the first row) and returns the JSON rows.
fn report_rows(rows: &[Row]) -> Vec<serde_json::Value> {
    println!(
        "{:<12} {:<22} {:>7} {:>6} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "path",
        "setting",
        "nDCG@10",
        "R@10",
        "R@100",
        "scored/q",
        "cand µs",
        "MaxSim µs",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "× row 1"
    );
    let reference = rows
        .first()
        .map_or(f64::NAN, |r| Latency::of(r.total_ns.clone()).mean_us);
    let mut out = Vec::new();
    for row in rows {
        let candidate = Latency::of(row.candidate_ns.clone());
        let maxsim = Latency::of(row.maxsim_ns.clone());
        let total = Latency::of(row.total_ns.clone());
        let m = &row.metrics;
        println!(
            "{:<12} {:<22} {:>7.4} {:>6.4} {:>6.4} {:>8.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2}",
            row.path,
            row.setting,
            m.ndcg_at_10,
            m.recall_at_10,
            m.recall_at_100,
            row.scored,
            us(candidate.mean_us),
            us(maxsim.mean_us),
            us(total.mean_us),
            us(total.p50_us),
            us(total.p99_us),
            total.mean_us / reference
        );
        out.push(json!({
            "path": row.path,
            "params": row.params,
            "ndcg_at_10": m.ndcg_at_10,
            "recall_at_10": m.recall_at_10,
            "recall_at_100": m.recall_at_100,
            "mrr": m.mrr,
            "scored_per_query": row.scored,
            "candidate_stage_us": latency_json(candidate),
            "maxsim_stage_us": latency_json(maxsim),
            "total_us": latency_json(total),
        }));
    }
    out
}

/// Runs the comparison and prints (and optionally writes) the table.
pub fn token_gather(args: &TokenGatherArgs) -> anyhow::Result<()> {
    ensure!(
        (2..=255).contains(&args.m),
        "--m must be in 2..=255 (hnsw_rs stores it in a byte)"
    );
    ensure!(
        args.ef_construction > 0,
        "--ef-construction must be positive"
    );
    ensure!(args.depth > 0, "--depth must be positive");
    for (name, values) in [
        ("--k-per-token", &args.k_per_token),
        ("--ef", &args.ef),
        ("--kappa", &args.kappa),
    ] {
        ensure!(
            values.iter().all(|&v| v > 0),
            "{name} values must be positive"
        );
    }
    let index = Segment::open_with(&args.files.index, Verify::SkipChecksums)?;
    let queries = load_queries(&args.files, &index)?;
    let qrels = Qrels::from_path(&args.qrels)?;
    let mut reloader = None;
    let (graph, origin) = open_graph(args, &index, &mut reloader)?;
    match origin.load_seconds {
        Some(load) => println!(
            "HNSW over {} token vectors (m {}, ef_construction {}): reloaded from {} in {load:.1} s \
             (built in {:.1} s on {} threads)",
            graph.tokens(),
            args.m,
            args.ef_construction,
            args.hnsw_cache.as_deref().unwrap_or(Path::new("")).display(),
            origin.build_seconds,
            origin.build_threads
        ),
        None => println!(
            "HNSW over {} token vectors (m {}, ef_construction {}): built in {:.1} s on {} threads",
            graph.tokens(),
            args.m,
            args.ef_construction,
            origin.build_seconds,
            origin.build_threads
        ),
    }
    // Warm-up, so no row pays for paging the index in: every query once through the two-stage
    // path (postings), one MaxSim over every document (token vectors).
    if let Some(&kappa) = args.kappa.iter().max() {
        two_stage(&index, &queries, kappa, Fusion::DEFAULT)?;
    }
    if let Some((_, query)) = queries.first() {
        let all: Vec<u32> = (0..index.doc_count() as u32).collect();
        std::hint::black_box(refine(&index, vectors(query), &all, 1));
    }
    println!(
        "{} queries, one thread; {} documents; latency per query",
        queries.len(),
        index.doc_count()
    );

    let mut rows = Vec::new();
    for &kappa in &args.kappa {
        for (name, fusion) in [
            ("default fusion", Fusion::DEFAULT),
            ("MaxSim", Fusion::NONE),
        ] {
            let params = json!({"kappa": kappa, "fusion_method": fusion.method.name(), "fusion_weight": fusion.weight});
            rows.push(two_stage(&index, &queries, kappa, fusion)?.into_row(
                "two-stage",
                format!("κ={kappa} {name}"),
                params,
                &qrels,
            ));
        }
    }
    rows.push(gather_refine(&index, &queries, None, args.depth).into_row(
        "exhaustive",
        "every document".into(),
        json!({}),
        &qrels,
    ));
    for &k_per_token in &args.k_per_token {
        for &ef in &args.ef {
            let params =
                json!({"k_per_token": k_per_token, "ef": ef, "effective_ef": ef.max(k_per_token)});
            let timed = gather_refine(
                &index,
                &queries,
                Some((&graph, k_per_token, ef)),
                args.depth,
            );
            rows.push(timed.into_row(
                "token-gather",
                format!("k/token={k_per_token} ef={ef}"),
                params,
                &qrels,
            ));
        }
    }
    let json_rows = report_rows(&rows);
    let rss = peak_rss_bytes();
    if let Some(rss) = rss {
        println!("peak RSS {:.1} MiB", rss as f64 / (1 << 20) as f64);
    }
    if let Some(path) = &args.json {
        let report = json!({
            "index": args.files.index.display().to_string(),
            "queries": queries.len(),
            "documents": index.doc_count(),
            "depth": args.depth,
            "hnsw": {
                "tokens": graph.tokens(),
                "m": args.m,
                "ef_construction": args.ef_construction,
                "build_seconds": origin.build_seconds,
                "build_threads": origin.build_threads,
                "loaded_from_cache": origin.load_seconds.is_some(),
                "load_seconds": origin.load_seconds,
            },
            "rows": json_rows,
            "peak_rss_bytes": rss,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{run, Cli};
    use clap::Parser;
    use tandem_data::synth::{generate, SynthConfig};
    use tandem_engine::build::{build_index, BuildConfig, NoProgress};
    use tandem_engine::tokens::Codec;

    /// A small synthetic corpus (float16 token vectors) and its exact-only index, in a
    /// temporary directory: (directory, corpus, index).
    fn corpus() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus");
        let config = SynthConfig {
            docs: 60,
            queries: 6,
            seed: 5,
            dim: Some(16),
            tokens_per_doc: 12,
            query_tokens: 8,
        };
        generate(&config, &corpus, &|_| {}).unwrap();
        let index = dir.path().join("index");
        build_index(
            &BuildConfig {
                docs: corpus.join("docs.jsonl"),
                vectors: corpus.join("doc_vectors.npy"),
                lens: corpus.join("doc_lens.npy"),
                int8_scale: None,
                vocab: Some(corpus.join("vocab.txt")),
                token_ids: false,
                out: index.clone(),
                overwrite: false,
                approx: None,
                codec: Codec::F16,
                doc_tokens: None,
            },
            &NoProgress,
        )
        .unwrap();
        (dir, corpus, index)
    }

    fn files(corpus: &Path, index: &Path) -> QueryFiles {
        QueryFiles {
            index: index.to_path_buf(),
            queries: corpus.join("queries.jsonl"),
            query_vectors: corpus.join("query_vectors.npy"),
            query_lens: corpus.join("query_lens.npy"),
        }
    }

    /// MaxSim written out: Σ over query tokens of the best dot product with a document token.
    fn naive_maxsim(query: &[f32], doc: &[f32], dim: usize) -> f32 {
        query
            .chunks_exact(dim)
            .map(|q| {
                doc.chunks_exact(dim)
                    .map(|d| q.iter().zip(d).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .sum()
    }

    #[test]
    fn unit_dot_is_one_minus_the_dot_product_and_never_negative() {
        let unit = |v: Vec<f32>| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
        };
        let a = unit((0..19).map(|i| (i as f32 * 0.37).sin()).collect());
        let b = unit((0..19).map(|i| (i as f32 * 0.11).cos() + 0.5).collect());
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-6);
        assert!((UnitDot.eval(&a, &b) - (1.0 - plain)).abs() < 1e-6);
        // A vector a rounding step longer than unit is at distance 0 from itself, not below.
        let long: Vec<f32> = a.iter().map(|v| v * (1.0 + 1e-6)).collect();
        assert!(dot(&long, &long) > 1.0);
        assert_eq!(UnitDot.eval(&long, &long), 0.0);
    }

    #[test]
    fn gathering_every_document_reproduces_exhaustive_maxsim() {
        let (_dir, corpus, index_dir) = corpus();
        let index = Segment::open(&index_dir).unwrap();
        let (docs, dim) = (index.doc_count(), index.dim());
        let doc_of_row = doc_of_rows(&corpus.join("doc_lens.npy"), &index).unwrap();
        let tokens = doc_of_row.len();
        let vectors_path = corpus.join("doc_vectors.npy");
        let rows = unit_rows(&vectors_path, tokens, dim).unwrap();
        let params = GraphParams {
            m: 8,
            ef_construction: 50,
        };
        let graph = TokenGraph::build(&rows, dim, doc_of_row.clone(), params, &|_| {});
        assert_eq!(graph.tokens(), tokens);
        // The documents' own vectors (float16 in the file, as in the index), not unit ones.
        let mut raw = Vec::new();
        NpyArray::open(&vectors_path)
            .unwrap()
            .rows_f32(0..tokens, None, &mut raw)
            .unwrap();
        let mut doc_rows = vec![Vec::new(); docs];
        for (row, &doc) in raw.chunks_exact(dim).zip(&doc_of_row) {
            doc_rows[doc as usize].extend_from_slice(row);
        }
        let queries = load_queries(&files(&corpus, &index_dir), &index).unwrap();
        assert_eq!(queries.len(), 6);
        for (id, query) in &queries {
            let values = vectors(query);
            // Few neighbours per token: a proper subset of the documents.
            let few = graph.gather(values, dim, 1, 16);
            assert!(!few.is_empty() && few.len() < docs, "{id}: {}", few.len());
            let mut gathered = graph.gather(values, dim, tokens, tokens);
            gathered.sort_unstable();
            assert_eq!(gathered, (0..docs as u32).collect::<Vec<_>>(), "{id}");
            let ranked = refine(&index, values, &gathered, docs);
            let naive: Vec<f32> = doc_rows
                .iter()
                .map(|doc| naive_maxsim(values, doc, dim))
                .collect();
            let mut expected: Vec<u32> = (0..docs as u32).collect();
            expected.sort_by(|&a, &b| {
                naive[b as usize]
                    .total_cmp(&naive[a as usize])
                    .then(a.cmp(&b))
            });
            assert_eq!(ranked.len(), docs);
            for (&(doc, score), &want) in ranked.iter().zip(&expected) {
                let (got, best) = (naive[doc as usize], naive[want as usize]);
                assert!(
                    (score - got).abs() <= 1e-4 * (1.0 + got.abs()),
                    "{id}: doc {doc} scored {score}, naive {got}"
                );
                // The same document, or one with the same score (a tie within rounding).
                assert!(
                    doc == want || (got - best).abs() <= 1e-4 * (1.0 + best.abs()),
                    "{id}: doc {doc} ({got}) where naive ranks doc {want} ({best})"
                );
            }
        }
    }

    #[test]
    fn the_command_builds_its_graph_then_reloads_it() {
        let (dir, corpus, index) = corpus();
        let cache = dir.path().join("hnsw");
        let json_path = dir.path().join("report.json");
        let path = |p: &Path| p.display().to_string();
        let args = [
            "tandem-bench".to_string(),
            "token-gather".into(),
            "--index".into(),
            path(&index),
            "--queries".into(),
            path(&corpus.join("queries.jsonl")),
            "--query-vectors".into(),
            path(&corpus.join("query_vectors.npy")),
            "--query-lens".into(),
            path(&corpus.join("query_lens.npy")),
            "--qrels".into(),
            path(&corpus.join("qrels.trec")),
            "--vectors".into(),
            path(&corpus.join("doc_vectors.npy")),
            "--lens".into(),
            path(&corpus.join("doc_lens.npy")),
            "--k-per-token".into(),
            "2,1000".into(),
            "--ef".into(),
            "16".into(),
            "--m".into(),
            "8".into(),
            "--ef-construction".into(),
            "40".into(),
            "--kappa".into(),
            "10".into(),
            "--hnsw-cache".into(),
            path(&cache),
            "--json".into(),
            path(&json_path),
        ];
        let mut reports = Vec::new();
        for reloaded in [false, true] {
            run(Cli::parse_from(&args)).unwrap();
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
            assert_eq!(report["hnsw"]["loaded_from_cache"], reloaded);
            assert!(report["hnsw"]["build_seconds"].as_f64().unwrap() > 0.0);
            let rows = report["rows"].as_array().unwrap().clone();
            let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
            assert_eq!(
                paths,
                [
                    "two-stage",
                    "two-stage",
                    "exhaustive",
                    "token-gather",
                    "token-gather"
                ]
            );
            // Gathering every document ranks as exhaustive MaxSim does.
            assert_eq!(rows[4]["scored_per_query"], json!(60.0));
            assert_eq!(rows[4]["ndcg_at_10"], rows[2]["ndcg_at_10"]);
            assert!(rows[3]["scored_per_query"].as_f64().unwrap() < 60.0);
            reports.push(rows);
        }
        // The reloaded graph answers as the built one did.
        for (built, reloaded) in reports[0].iter().zip(&reports[1]) {
            assert_eq!(built["ndcg_at_10"], reloaded["ndcg_at_10"]);
            assert_eq!(built["scored_per_query"], reloaded["scored_per_query"]);
        }
    }
}
