//! Quality on the real eval set: build the scifact index with `tandem-index build`, serve it on
//! loopback, run the 300 test queries through `tandem search`, score the runs, and compare with
//! the exact reference numbers of `reference.json` (±0.001); then the int8 and pq codecs'
//! indexes against them (±0.005).

use clap::Parser;
use std::path::Path;
use tandem_client::cli::{KnobArgs, QueryFileArgs, SearchArgs};
use tandem_client::TandemClient;
use tandem_eval::{evaluate, Metrics, Qrels, Run};
use tandem_server::config::ServeOptions;
use tandem_tests::{scifact_dir, TestServer};

const TOLERANCE: f64 = 0.001;

fn reference(dir: &Path, key: &str) -> (f64, f64, f64) {
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &json[key];
    let get = |m: &str| {
        entry[m]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}.{m} missing"))
    };
    (get("nDCG@10"), get("R@100"), get("MRR"))
}

/// What a run asks of the pipeline beyond k and κ.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The first stage's ranking.
    SparseOnly,
    /// MaxSim over every candidate: no CP, no EE, no fusion (what `reference.json` computed).
    PlainMaxSim,
    /// Whatever the server does by default (the index's default first stage: approximate).
    ServerDefaults,
    /// The server's defaults but the exact first stage.
    ServerDefaultsExact,
}

async fn run_queries(
    url: &str,
    dir: &Path,
    out: &Path,
    k: u32,
    kappa: Option<u32>,
    mode: Mode,
) -> Metrics {
    let plain = mode == Mode::PlainMaxSim;
    let args = SearchArgs {
        server: tandem_client::cli::ServerArgs::plain(url),
        files: QueryFileArgs {
            queries: dir.join("queries.jsonl"),
            query_vectors: Some(dir.join("query_vectors.npy")),
            query_lens: Some(dir.join("query_lens.npy")),
            text: false,
        },
        knobs: KnobArgs {
            k,
            kappa,
            cp_alpha: plain.then_some(1.0),
            ee_beta: plain.then_some(0),
            fusion_weight: plain.then_some(0.0),
            fusion_method: None,
            rrf_k: None,
            sparse_only: mode == Mode::SparseOnly,
            // The reference figures are for the exact first stage; the server defaults use the
            // index's default, the approximate first stage.
            first_stage: (mode != Mode::ServerDefaults).then(|| "exact".to_string()),

            query_cut: None,
            rescore: None,
            expand: None,
            depth: None,
        },
        filter: Default::default(),
        batch_size: 32,
        out: out.to_path_buf(),
        tag: "test".to_string(),
        explain: false,
    };
    let report = tandem_client::cli::search(args).await.unwrap();
    assert_eq!(report.queries, 300);
    evaluate(
        &Run::from_path(out).unwrap(),
        &Qrels::from_path(&dir.join("qrels.trec")).unwrap(),
        false,
    )
}

fn assert_close(what: &str, got: f64, expected: f64) {
    assert!(
        (got - expected).abs() <= TOLERANCE,
        "{what}: measured {got:.4}, reference {expected:.4}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scifact_matches_reference_numbers() {
    let Some(data) = scifact_dir() else { return };
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("scifact-index");
    let int8_index = work.path().join("scifact-int8");
    let pq_index = work.path().join("scifact-pq");
    let path = |name: &str| data.join(name).display().to_string();
    for (out, codec) in [(&index, "f16"), (&int8_index, "int8"), (&pq_index, "pq")] {
        let args = [
            "tandem-index".to_string(),
            "build".into(),
            "--docs".into(),
            path("docs.jsonl"),
            "--vectors".into(),
            path("doc_vectors.npy"),
            "--lens".into(),
            path("doc_lens.npy"),
            "--int8-scale".into(),
            "1/127".into(),
            "--vocab".into(),
            path("vocab.txt"),
            "--codec".into(),
            codec.into(),
            "--out".into(),
            out.display().to_string(),
        ];
        let cli = tandem_index_tools::Cli::parse_from(args);
        tokio::task::spawn_blocking(move || tandem_index_tools::run(cli))
            .await
            .unwrap()
            .unwrap();
    }

    let server = TestServer::start(&index, ServeOptions::default())
        .await
        .unwrap();
    let info = TandemClient::connect(&server.url)
        .await
        .unwrap()
        .index_info()
        .await
        .unwrap();
    assert_eq!(
        (info.doc_count, info.vocab_size, info.token_count, info.dim),
        (5183, 30522, 814_584, 128)
    );
    assert_eq!(info.vector_codec, "f16");
    // 128 f16 values per token, plus the padding of each document's last block of 16.
    assert!(
        (256.0..300.0).contains(&info.bytes_per_token),
        "{}",
        info.bytes_per_token
    );

    let sparse = run_queries(
        &server.url,
        &data,
        &work.path().join("sparse.trec"),
        100,
        None,
        Mode::SparseOnly,
    )
    .await;
    let (ndcg, r100, mrr) = reference(&data, "sparse_exact");
    assert_close("sparse-only nDCG@10", sparse.ndcg_at_10, ndcg);
    assert_close("sparse-only R@100", sparse.recall_at_100, r100);
    assert_close("sparse-only MRR", sparse.mrr, mrr);

    let two_stage = run_queries(
        &server.url,
        &data,
        &work.path().join("k50.trec"),
        50,
        Some(50),
        Mode::PlainMaxSim,
    )
    .await;
    let (ndcg, r100, mrr) = reference(&data, "two_stage_k50");
    assert_close("two-stage κ=50 nDCG@10", two_stage.ndcg_at_10, ndcg);
    assert_close("two-stage κ=50 R@100", two_stage.recall_at_100, r100);
    assert_close("two-stage κ=50 MRR", two_stage.mrr, mrr);

    // The server's defaults (fusion with the sparse score, CP and EE as tuned) rank at least as
    // well as exhaustive MaxSim over every document: at the default κ as they are (approximate
    // first stage), and at κ = 50 with the exact first stage; the approximate first stage costs
    // at most 0.002 against the exact one at either κ.
    let (exhaustive, _, _) = reference(&data, "maxsim_exhaustive");
    let mut defaults = Vec::new();
    for kappa in [None, Some(50)] {
        let ndcg = |mode| {
            let url = &server.url;
            let out = work.path().join("defaults.trec");
            let data = &data;
            async move {
                run_queries(url, data, &out, 10, kappa, mode)
                    .await
                    .ndcg_at_10
            }
        };
        let approx = ndcg(Mode::ServerDefaults).await;
        let exact = ndcg(Mode::ServerDefaultsExact).await;
        let (name, best) = if kappa.is_none() {
            ("approximate", approx)
        } else {
            ("exact", exact)
        };
        assert!(
            best >= exhaustive,
            "server defaults, κ {kappa:?}, {name} first stage: nDCG@10 {best:.4} < exhaustive MaxSim {exhaustive:.4}"
        );
        assert!(
            approx >= exact - 0.002,
            "server defaults, κ {kappa:?}: nDCG@10 {approx:.4} with the approximate first stage, {exact:.4} with the exact one"
        );
        defaults.push((approx, exact));
    }
    eprintln!(
        "scifact nDCG@10: sparse-only {:.4}, two-stage κ=50 {:.4}, server defaults {:.4} (exact first stage {:.4}), at κ=50 {:.4} ({:.4})",
        sparse.ndcg_at_10, two_stage.ndcg_at_10, defaults[0].0, defaults[0].1, defaults[1].0, defaults[1].1
    );
    server.stop().await.unwrap();

    // The int8 codec (one byte per value and a scale per token) keeps the two-stage quality.
    let server = TestServer::start(&int8_index, ServeOptions::default())
        .await
        .unwrap();
    let info = TandemClient::connect(&server.url)
        .await
        .unwrap()
        .index_info()
        .await
        .unwrap();
    assert_eq!(info.vector_codec, "int8");
    assert!(info.bytes_per_token < 150.0, "{}", info.bytes_per_token);
    let int8 = run_queries(
        &server.url,
        &data,
        &work.path().join("int8.trec"),
        50,
        Some(50),
        Mode::PlainMaxSim,
    )
    .await;
    assert!(
        (int8.ndcg_at_10 - ndcg).abs() <= 0.005,
        "int8 two-stage κ=50 nDCG@10 {:.4} vs reference {ndcg:.4}",
        int8.ndcg_at_10
    );
    server.stop().await.unwrap();

    // The pq codec (32 one-byte codes and a 2-byte scale per token) stays within 0.005 of the
    // f16 index's two-stage quality at the same κ.
    let server = TestServer::start(&pq_index, ServeOptions::default())
        .await
        .unwrap();
    let info = TandemClient::connect(&server.url)
        .await
        .unwrap()
        .index_info()
        .await
        .unwrap();
    assert_eq!(info.vector_codec, "pq");
    assert_eq!(info.bytes_per_token, 34.0);
    let pq = run_queries(
        &server.url,
        &data,
        &work.path().join("pq.trec"),
        50,
        Some(50),
        Mode::PlainMaxSim,
    )
    .await;
    eprintln!(
        "scifact two-stage κ=50 nDCG@10: f16 {:.4}, int8 {:.4}, pq {:.4}",
        two_stage.ndcg_at_10, int8.ndcg_at_10, pq.ndcg_at_10
    );
    assert!(
        (pq.ndcg_at_10 - two_stage.ndcg_at_10).abs() <= 0.005,
        "pq two-stage κ=50 nDCG@10 {:.4} vs f16 {:.4}",
        pq.ndcg_at_10,
        two_stage.ndcg_at_10
    );
    server.stop().await.unwrap();
}

/// Live ingestion on the real eval set: an empty index (`tandem-index create` with the eval
/// set's vocabulary) filled through the server by `tandem upsert` in batches of 500, sealed as
/// it goes (`--seal-docs 2000`), ranks as the batch build does: with the exact first stage,
/// top-50 → MaxSim gives the batch-built index's run line for line (ids, ranks and scores) and
/// nDCG@10 within 0.001 of the reference, while the last documents are in refresh segments and
/// again after the server restarts and replays its log (with sealed segments then listed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scifact_upserted_in_batches_matches_reference_numbers() {
    let Some(data) = scifact_dir() else { return };
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("scifact-live");
    let path = |name: &str| data.join(name).display().to_string();
    let create = tandem_index_tools::Cli::parse_from([
        "tandem-index".to_string(),
        "create".into(),
        "--dim".into(),
        "128".into(),
        "--vocab".into(),
        path("vocab.txt"),
        "--out".into(),
        index.display().to_string(),
    ]);
    tandem_index_tools::run(create).unwrap();
    let live = tandem_engine::live::LiveOptions {
        seal_docs: 2000,
        ..Default::default()
    };
    let server = TestServer::start_live(&index, ServeOptions::default(), live)
        .await
        .unwrap();
    let upsert = tandem_client::upsert::UpsertArgs {
        server: tandem_client::cli::ServerArgs::plain(&server.url),
        docs: data.join("docs.jsonl"),
        vectors: data.join("doc_vectors.npy"),
        lens: data.join("doc_lens.npy"),
        int8_scale: Some(1.0 / 127.0),
        token_ids: false,
        batch_size: 500,
        wait_for_visible: true,
    };
    let reply = tandem_client::upsert::run(upsert).await.unwrap();
    assert_eq!((reply.acknowledged, reply.batches), (5183, 11));
    let (expected, _, _) = reference(&data, "two_stage_k50");
    let out = work.path().join("live.trec");
    let live_run = run_queries(&server.url, &data, &out, 10, Some(50), Mode::PlainMaxSim).await;
    assert_close(
        "upserted two-stage κ=50 nDCG@10",
        live_run.ndcg_at_10,
        expected,
    );
    server.stop().await.unwrap();

    // The batch build of the same documents answers the same, line for line.
    let built = work.path().join("scifact-built");
    let build = tandem_index_tools::Cli::parse_from([
        "tandem-index".to_string(),
        "build".into(),
        "--docs".into(),
        path("docs.jsonl"),
        "--vectors".into(),
        path("doc_vectors.npy"),
        "--lens".into(),
        path("doc_lens.npy"),
        "--int8-scale".into(),
        "1/127".into(),
        "--vocab".into(),
        path("vocab.txt"),
        "--out".into(),
        built.display().to_string(),
    ]);
    tokio::task::spawn_blocking(move || tandem_index_tools::run(build))
        .await
        .unwrap()
        .unwrap();
    let batch = TestServer::start(&built, ServeOptions::default())
        .await
        .unwrap();
    let built_out = work.path().join("built.trec");
    run_queries(
        &batch.url,
        &data,
        &built_out,
        10,
        Some(50),
        Mode::PlainMaxSim,
    )
    .await;
    batch.stop().await.unwrap();
    let (live_lines, built_lines) = (
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&built_out).unwrap(),
    );
    assert_eq!(live_lines.lines().count(), 3000);
    for (a, b) in live_lines.lines().zip(built_lines.lines()) {
        assert_eq!(a, b, "upserted vs batch-built run");
    }

    // Recovery: the writes past the last seal come back from the log.
    let server = TestServer::start_live(&index, ServeOptions::default(), live)
        .await
        .unwrap();
    let info = TandemClient::connect(&server.url)
        .await
        .unwrap()
        .index_info()
        .await
        .unwrap();
    assert_eq!(info.live_count, 5183);
    let writes = info.writes.unwrap();
    assert!(writes.writable && writes.visible_seq == 11, "{writes:?}");
    assert!(
        info.segments.iter().any(|s| s.name.starts_with("seg-")
            && s.doc_count > 0
            && s.first_stage == "approximate"),
        "a sealed segment with the approximate first stage: {:?}",
        info.segments
    );
    let after = run_queries(&server.url, &data, &out, 10, Some(50), Mode::PlainMaxSim).await;
    assert_close("after restart nDCG@10", after.ndcg_at_10, expected);
    let after_lines = std::fs::read_to_string(&out).unwrap();
    assert!(
        after_lines.lines().eq(built_lines.lines()),
        "after restart: the run differs from the batch-built index's"
    );
    server.stop().await.unwrap();
}
