//! `tandem-bench encoders`: the cost of text queries.
//!
//! 1. **Encoding time per query** of each encoder — the SPLADE-style MLM (`mlm`), the
//!    inference-free IDF table (`table`) and the token-vector BERT with its projection
//!    (`bert`) — one query per call as a unary Search encodes it, on a rayon pool of each
//!    `--threads` size (candle's matrix products and row kernels run on the pool they are
//!    called from). An untimed pass warms each one up; every query is then timed `--rounds`
//!    times and the p50 / p99 over all of them reported.
//! 2. **End to end**: an in-process server on loopback (default settings: 2 workers, κ 30,
//!    z-score fusion 0.2) answers every query as a unary Search from one client, one at a
//!    time: with the pre-encoded vectors (no encoder), with (a) both neural encoders, and with
//!    (b) the inference-free table + the token-vector encoder. Each row has nDCG@10 against
//!    the qrels, the client-observed latency p50 / p99 and the server-reported encoding time
//!    p50 (sum of the encoders that ran).
//!
//! The index is built from the eval set into a temporary directory unless `--index` names one,
//! and the IDF table is derived from it (as `tandem-index weight-table` does).

use crate::first_stage::Latency;
use anyhow::Context;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::encoders::{
    MlmSparseEncoder, Projection, TableSparseEncoder, TextTokenizer, TokenVectorEncoder,
};
use tandem_eval::{evaluate, Qrels, Run};
use tandem_proto::v1::SearchResponse;
use tandem_server::config::ServeOptions;
use tandem_server::encode::{EncoderSettings, DEFAULT_MAX_TOKENS};

/// Arguments of `tandem-bench encoders`.
#[derive(Debug, clap::Args)]
pub struct EncodersArgs {
    /// The eval set folder (queries.jsonl with `text`, qrels.trec, proj_mean.npy, proj_W.npy,
    /// and the files an index is built from).
    #[arg(long, default_value = "../shared/evalsets/scifact")]
    pub evalset: PathBuf,
    /// The models folder of `scripts/fetch-models.sh` (splade-tiny/ and minilm/).
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// A prebuilt index of the eval set (default: build one in a temporary directory).
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Thread counts of the encoding-time rows.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Timed passes over the queries per encoder and thread count.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Skip the end-to-end rows.
    #[arg(long)]
    pub no_server: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `tandem-bench encoders`.
pub fn encoders(args: &EncodersArgs) -> anyhow::Result<()> {
    let data = &args.evalset;
    let texts = QuerySet::load_texts(&data.join("queries.jsonl"))?;
    let all: Vec<&str> = texts
        .texts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    let sparse_dir = args.models.join("splade-tiny");
    let vector_dir = args.models.join("minilm");
    let projection = (data.join("proj_mean.npy"), data.join("proj_W.npy"));

    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let index_dir = match &args.index {
        Some(dir) => dir.clone(),
        None => {
            let dir = work.path().join("index");
            eprintln!("building the eval set's index in {}", dir.display());
            build_evalset_index(data, &dir)?;
            dir
        }
    };
    let table = work.path().join("idf.json");
    {
        let index = tandem_engine::Index::open(&index_dir)?;
        let idf = tandem_engine::weight_table::idf_table(&index);
        tandem_engine::weight_table::write_json_table(&table, &idf)?;
    }

    let max = DEFAULT_MAX_TOKENS;
    let mlm = MlmSparseEncoder::load(&sparse_dir, max)?;
    let table_encoder = TableSparseEncoder::load(&table, TextTokenizer::load(&vector_dir, max)?)?;
    let bert = TokenVectorEncoder::load(
        &vector_dir,
        max,
        Some(Projection::load(&projection.0, &projection.1)?),
    )?;
    type Encode<'e> = Box<dyn Fn(&str) -> anyhow::Result<()> + Sync + 'e>;
    let encoders: Vec<(&str, Encode)> = vec![
        (
            "mlm (SPLADE-style, 2 layers, h=128)",
            Box::new(|t| mlm.encode_batch(&[t]).map(drop).map_err(Into::into)),
        ),
        (
            "table (inference-free IDF)",
            Box::new(|t| table_encoder.encode(t).map(drop).map_err(Into::into)),
        ),
        (
            "bert (MiniLM-L6, h=384, + projection)",
            Box::new(|t| bert.encode_batch(&[t]).map(drop).map_err(Into::into)),
        ),
    ];
    let mut timing_rows = Vec::new();
    println!(
        "encoding time per query ({} queries × {} rounds, one per call)",
        all.len(),
        args.rounds
    );
    println!(
        "{:<40} {:>7} {:>10} {:>10} {:>10}",
        "encoder", "threads", "p50 ms", "p99 ms", "mean ms"
    );
    for (name, encode) in &encoders {
        for &threads in &args.threads {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .context("cannot start the thread pool")?;
            let nanos = pool.install(|| -> anyhow::Result<Vec<u64>> {
                for text in all.iter().take(50) {
                    encode(text)?;
                }
                let mut nanos = Vec::with_capacity(all.len() * args.rounds);
                for _ in 0..args.rounds {
                    for text in &all {
                        let started = Instant::now();
                        encode(text)?;
                        nanos.push(started.elapsed().as_nanos() as u64);
                    }
                }
                Ok(nanos)
            })?;
            let l = Latency::of(nanos);
            println!(
                "{name:<40} {threads:>7} {:>10.3} {:>10.3} {:>10.3}",
                l.p50_us / 1e3,
                l.p99_us / 1e3,
                l.mean_us / 1e3
            );
            timing_rows.push(json!({
                "encoder": name, "threads": threads,
                "p50_ms": l.p50_us / 1e3, "p99_ms": l.p99_us / 1e3, "mean_ms": l.mean_us / 1e3,
            }));
        }
    }
    drop(encoders);
    drop((mlm, table_encoder, bert));

    let mut end_to_end = Vec::new();
    if !args.no_server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let neural = EncoderSettings {
            sparse_model: Some(sparse_dir.clone()),
            vector_model: Some(vector_dir.clone()),
            vector_projection: Some(projection.clone()),
            ..EncoderSettings::none()
        };
        let inference_free = EncoderSettings {
            sparse_table: Some(table.clone()),
            vector_model: Some(vector_dir.clone()),
            vector_projection: Some(projection.clone()),
            ..EncoderSettings::none()
        };
        let encoded = QuerySet::load(
            &data.join("queries.jsonl"),
            Some(&data.join("query_vectors.npy")),
            Some(&data.join("query_lens.npy")),
        )?;
        let qrels = Qrels::from_path(&data.join("qrels.trec"))?;
        println!();
        println!(
            "end to end: unary Search, one client, server defaults (κ 30, z-score fusion 0.2)"
        );
        println!(
            "{:<46} {:>8} {:>10} {:>10} {:>14}",
            "queries", "nDCG@10", "p50 ms", "p99 ms", "encode p50 ms"
        );
        let rows: [(&str, EncoderSettings, &QuerySet); 3] = [
            (
                "pre-encoded vectors (no encoder)",
                EncoderSettings::none(),
                &encoded,
            ),
            ("(a) text: mlm + bert", neural, &texts),
            (
                "(b) text: table (inference-free) + bert",
                inference_free,
                &texts,
            ),
        ];
        for (name, settings, queries) in rows {
            let (responses, nanos) =
                runtime.block_on(serve_and_query(&index_dir, settings, queries))?;
            let mut text = Vec::new();
            tandem_client::trec::write_run(&mut text, &responses, "bench")?;
            let run = Run::parse(&String::from_utf8_lossy(&text), name)?;
            let quality = evaluate(&run, &qrels, false);
            let encode_us: Vec<u64> = responses
                .iter()
                .map(|r| r.encoders.iter().map(|e| e.micros).sum::<u64>() * 1000)
                .collect();
            let l = Latency::of(nanos);
            let e = Latency::of(encode_us);
            println!(
                "{name:<46} {:>8.4} {:>10.3} {:>10.3} {:>14.3}",
                quality.ndcg_at_10,
                l.p50_us / 1e3,
                l.p99_us / 1e3,
                e.p50_us / 1e3
            );
            end_to_end.push(json!({
                "queries": name, "ndcg_at_10": quality.ndcg_at_10,
                "p50_ms": l.p50_us / 1e3, "p99_ms": l.p99_us / 1e3,
                "encode_p50_ms": e.p50_us / 1e3,
            }));
        }
    }
    if let Some(path) = &args.json {
        let report = json!({ "encoding": timing_rows, "end_to_end": end_to_end });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn build_evalset_index(data: &Path, out: &Path) -> anyhow::Result<()> {
    build_index(
        &BuildConfig {
            docs: data.join("docs.jsonl"),
            vectors: data.join("doc_vectors.npy"),
            lens: data.join("doc_lens.npy"),
            int8_scale: Some(1.0 / 127.0),
            vocab: Some(data.join("vocab.txt")),
            token_ids: false,
            out: out.to_path_buf(),
            overwrite: false,
            approx: None,
            codec: tandem_engine::tokens::Codec::F16,
            doc_tokens: None,
        },
        &NoProgress,
    )?;
    Ok(())
}

/// Serves `index` with `encoders` on loopback and sends every query (one unary Search at a
/// time, after an untimed pass); returns the timed pass's answers and client latencies.
async fn serve_and_query(
    index: &Path,
    encoders: EncoderSettings,
    queries: &QuerySet,
) -> anyhow::Result<(Vec<SearchResponse>, Vec<u64>)> {
    let opened = {
        let dir = index.to_path_buf();
        tokio::task::spawn_blocking(move || tandem_engine::Index::open(&dir)).await??
    };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", grpc.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        encoders,
        ..ServeOptions::default()
    };
    let server = tokio::spawn(tandem_server::serve(
        opened,
        options,
        tandem_server::Listeners {
            grpc,
            admin: None,
            metrics: None,
        },
        async {
            let _ = stopped.await;
        },
    ));
    let mut client = connect(&url, &server).await?;
    let knobs = QueryKnobs {
        k: Some(10),
        ..QueryKnobs::default()
    };
    let mut responses = Vec::with_capacity(queries.len());
    let mut nanos = Vec::with_capacity(queries.len());
    for timed in [false, true] {
        for i in 0..queries.len() {
            let request = queries.request(i, &knobs);
            let started = Instant::now();
            let response = client
                .search(request)
                .await
                .map_err(|s| anyhow::anyhow!("query {i}: {:?}: {}", s.code(), s.message()))?;
            if timed {
                nanos.push(started.elapsed().as_nanos() as u64);
                responses.push(response);
            }
        }
    }
    let _ = stop.send(());
    server.await??;
    Ok((responses, nanos))
}

/// Connects to the server just started, or reports why it stopped (e.g. a model that does not
/// load).
async fn connect(
    url: &str,
    server: &tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<TandemClient> {
    for _ in 0..600 {
        if server.is_finished() {
            anyhow::bail!("the server stopped at start (see its error above)");
        }
        if let Ok(mut client) = TandemClient::connect(url).await {
            if client.index_info().await.is_ok() {
                return Ok(client);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the server at {url} did not answer within a minute")
}
