//! Text queries with in-process encoders, on the real models (fetched by
//! `scripts/fetch-models.sh`; skipped without them except under CI) and the scifact eval set:
//!
//! - the server's encoders reproduce the eval set's pre-encoded query vectors: sparse weights
//!   within [`SPARSE_TOLERANCE`] (the eval set rounds them to 4 decimals) and token vectors
//!   within [`VECTOR_TOLERANCE`] per value, with exactly the same token counts;
//! - `tandem search --text` against a server with both neural encoders ranks like the
//!   pre-encoded queries (nDCG@10 within 0.002), and the responses name the encoders that ran;
//! - the inference-free encoder (an IDF table from `tandem-index weight-table`) answers text
//!   queries too;
//! - refusals: text to a server without encoders, bad model directories and tables, and an
//!   encoder whose vectors do not fit the index.

use clap::Parser;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tandem_client::cli::{KnobArgs, QueryFileArgs, SearchArgs, ServerArgs};
use tandem_client::queries::QuerySet;
use tandem_client::TandemClient;
use tandem_engine::encoders::{TableSparseEncoder, TextTokenizer};
use tandem_eval::{evaluate, Metrics, Qrels, Run};
use tandem_proto::v1::search_stream_response::Result as StreamResult;
use tandem_proto::v1::{Query, SearchRequest, SearchResponse};
use tandem_server::config::ServeOptions;
use tandem_server::encode::{EncoderSettings, Encoders};
use tandem_tests::{models, scifact_dir, synthetic_index, Models, TestServer};
use tonic::Code;

/// Largest difference between a sparse weight the server computes and the eval set's (rounded
/// to 4 decimals, so up to 5e-5 of it is rounding; a term missing on one side counts as 0).
const SPARSE_TOLERANCE: f32 = 1e-4;
/// Largest difference of one token-vector value (unit vectors, float32).
const VECTOR_TOLERANCE: f32 = 1e-5;
/// Largest nDCG@10 difference between text queries and pre-encoded ones.
const NDCG_TOLERANCE: f64 = 0.002;

fn neural_settings(models: &Models, data: &Path) -> EncoderSettings {
    EncoderSettings {
        sparse_model: Some(models.sparse.clone()),
        vector_model: Some(models.vectors.clone()),
        vector_projection: Some((data.join("proj_mean.npy"), data.join("proj_W.npy"))),
        ..EncoderSettings::none()
    }
}

fn docs(response: &SearchResponse) -> Vec<String> {
    response.hits.iter().map(|h| h.doc_id.clone()).collect()
}

fn text_request(id: &str, text: &str) -> SearchRequest {
    SearchRequest {
        query: Some(Query {
            text: text.to_string(),
            ..Query::default()
        }),
        query_id: id.to_string(),
        ..SearchRequest::default()
    }
}

#[test]
fn the_server_encoders_reproduce_the_eval_set_query_vectors() {
    let (Some(data), Some(models)) = (scifact_dir(), models()) else {
        return;
    };
    let encoders = Encoders::load(&neural_settings(&models, &data)).unwrap();
    let texts = QuerySet::load_texts(&data.join("queries.jsonl")).unwrap();
    let reference = QuerySet::load(
        &data.join("queries.jsonl"),
        Some(&data.join("query_vectors.npy")),
        Some(&data.join("query_lens.npy")),
    )
    .unwrap();
    let all_texts = texts.texts.as_ref().unwrap();
    assert_eq!(all_texts.len(), 300);
    // As the server does for a SearchBatch chunk: one encoder call per half for many texts.
    let mut requests: Vec<SearchRequest> = texts
        .records
        .iter()
        .zip(all_texts)
        .map(|(r, t)| text_request(&r.id, t))
        .collect();
    let mut runs = Vec::new();
    for chunk in requests.chunks_mut(64) {
        runs.extend(encoders.fill(chunk));
    }

    let (mut sparse_worst, mut vector_worst) = (0f32, 0f32);
    let mut terms_compared = 0usize;
    let reference_vectors = reference.vectors.as_ref().unwrap();
    for (i, (request, runs)) in requests.iter().zip(runs).enumerate() {
        let runs = runs.unwrap().runs;
        let roles: Vec<(&str, &str)> = runs
            .iter()
            .map(|r| (r.role.as_str(), r.kind.as_str()))
            .collect();
        assert_eq!(roles, [("sparse", "mlm"), ("vectors", "bert")]);
        let query = request.query.as_ref().unwrap();
        let expected: HashMap<&str, f32> = reference.records[i]
            .terms
            .iter()
            .map(|(t, w)| (t.as_str(), *w))
            .collect();
        for (token, &weight) in &query.sparse_tokens {
            let want = expected.get(token.as_str()).copied().unwrap_or(0.0);
            sparse_worst = sparse_worst.max((weight - want).abs());
        }
        for (token, &want) in &expected {
            let got = query.sparse_tokens.get(*token).copied().unwrap_or(0.0);
            sparse_worst = sparse_worst.max((got - want).abs());
        }
        terms_compared += expected.len();
        let vectors = query.vectors.as_ref().unwrap();
        assert_eq!(vectors.dim, 128);
        let want = &reference_vectors[i];
        assert_eq!(
            vectors.values.len(),
            want.len(),
            "query {}: token count",
            reference.records[i].id
        );
        for (a, b) in vectors.values.iter().zip(want) {
            vector_worst = vector_worst.max((a - b).abs());
        }
        assert!(runs[1].tokens as usize * 128 == want.len());
    }
    eprintln!(
        "scifact test queries: largest sparse weight difference {sparse_worst:.2e} over \
         {terms_compared} reference terms; largest token-vector value difference {vector_worst:.2e}"
    );
    assert!(
        sparse_worst <= SPARSE_TOLERANCE,
        "sparse weights differ by {sparse_worst}"
    );
    assert!(
        vector_worst <= VECTOR_TOLERANCE,
        "token vectors differ by {vector_worst}"
    );
}

/// Runs the queries file through `tandem search` (text or pre-encoded) with plain MaxSim over
/// κ = 30 exact candidates, and scores the run.
async fn search(url: &str, data: &Path, out: &Path, text: bool) -> Metrics {
    let args = SearchArgs {
        server: ServerArgs::plain(url),
        files: QueryFileArgs {
            queries: data.join("queries.jsonl"),
            query_vectors: (!text).then(|| data.join("query_vectors.npy")),
            query_lens: (!text).then(|| data.join("query_lens.npy")),
            text,
        },
        knobs: KnobArgs {
            k: 30,
            kappa: Some(30),
            cp_alpha: Some(1.0),
            ee_beta: Some(0),
            fusion_weight: Some(0.0),
            fusion_method: None,
            rrf_k: None,
            sparse_only: false,
            first_stage: Some("exact".to_string()),
            query_cut: None,
            rescore: None,
            expand: None,
            depth: None,
        },
        filter: Default::default(),
        batch_size: 32,
        out: out.to_path_buf(),
        tag: "text".to_string(),
        explain: false,
    };
    let report = tandem_client::cli::search(args).await.unwrap();
    assert_eq!(report.queries, 300);
    evaluate(
        &Run::from_path(out).unwrap(),
        &Qrels::from_path(&data.join("qrels.trec")).unwrap(),
        false,
    )
}

fn build_scifact(data: &Path, out: &Path) {
    let path = |name: &str| data.join(name).display().to_string();
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
        "--out".into(),
        out.display().to_string(),
    ];
    tandem_index_tools::run(tandem_index_tools::Cli::parse_from(args)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_queries_rank_like_pre_encoded_ones() {
    let (Some(data), Some(models)) = (scifact_dir(), models()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("scifact");
    {
        let (data, index) = (data.clone(), index.clone());
        tokio::task::spawn_blocking(move || build_scifact(&data, &index))
            .await
            .unwrap();
    }
    let options = ServeOptions {
        encoders: neural_settings(&models, &data),
        workers: 2,
        // The reload below loads an index in another temporary directory.
        index_root: Some(std::env::temp_dir()),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&index, options).await.unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let info = client.index_info().await.unwrap();
    let described: Vec<(&str, &str, u32)> = info
        .encoders
        .iter()
        .map(|e| (e.role.as_str(), e.kind.as_str(), e.dim))
        .collect();
    assert_eq!(described, [("sparse", "mlm", 0), ("vectors", "bert", 128)]);

    let encoded = search(&server.url, &data, &work.path().join("vectors.trec"), false).await;
    let text = search(&server.url, &data, &work.path().join("text.trec"), true).await;
    eprintln!(
        "scifact κ=30 MaxSim nDCG@10: text queries {:.4}, pre-encoded {:.4}",
        text.ndcg_at_10, encoded.ndcg_at_10
    );
    assert!(
        (text.ndcg_at_10 - encoded.ndcg_at_10).abs() <= NDCG_TOLERANCE,
        "text {:.4} vs pre-encoded {:.4}",
        text.ndcg_at_10,
        encoded.ndcg_at_10
    );

    // One query, unary: the response says which encoders ran and how long they took; the
    // hits are those of the pre-encoded query (same documents, scores within float noise).
    let queries = QuerySet::load(
        &data.join("queries.jsonl"),
        Some(&data.join("query_vectors.npy")),
        Some(&data.join("query_lens.npy")),
    )
    .unwrap();
    let knobs = tandem_client::queries::QueryKnobs {
        k: Some(10),
        fusion_weight: Some(0.0),
        ..Default::default()
    };
    let texts = QuerySet::load_texts(&data.join("queries.jsonl")).unwrap();
    for i in [0, 7, 123] {
        let by_text = client.search(texts.request(i, &knobs)).await.unwrap();
        let by_vectors = client.search(queries.request(i, &knobs)).await.unwrap();
        let ran: Vec<(&str, &str, u32)> = by_text
            .encoders
            .iter()
            .map(|r| (r.role.as_str(), r.kind.as_str(), r.batch_size))
            .collect();
        assert_eq!(ran, [("sparse", "mlm", 1), ("vectors", "bert", 1)]);
        assert!(by_text
            .encoders
            .iter()
            .all(|r| r.micros > 0 && r.tokens >= 3));
        assert!(by_vectors.encoders.is_empty());
        assert_eq!(docs(&by_text), docs(&by_vectors), "query {i}");
        for (a, b) in by_text.hits.iter().zip(&by_vectors.hits) {
            assert!(
                (a.score - b.score).abs() <= 1e-2,
                "{} vs {}",
                a.score,
                b.score
            );
        }
    }
    // SearchBatch: each worker's chunk is encoded in one call (5 queries over 2 workers: 3 + 2).
    let batch: Vec<SearchRequest> = (0..5).map(|i| texts.request(i, &knobs)).collect();
    let answers = client.search_batch(batch).await.unwrap();
    let sizes: Vec<u32> = answers.iter().map(|r| r.encoders[0].batch_size).collect();
    assert_eq!(sizes, [3, 3, 3, 2, 2]);
    // SearchStream: answers in request order, the same as unary ones; text queries that
    // arrived together share encoder calls, the pre-encoded query among them runs alone.
    let mut requests: Vec<SearchRequest> = (0..12).map(|i| texts.request(i, &knobs)).collect();
    requests.insert(6, queries.request(6, &knobs));
    let mut expected = Vec::new();
    for request in &requests {
        expected.push(docs(&client.search(request.clone()).await.unwrap()));
    }
    let mut stream = client
        .search_stream(tokio_stream::iter(requests))
        .await
        .unwrap();
    let mut answers = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        match message.result {
            Some(StreamResult::Response(response)) => answers.push(response),
            other => panic!("stream answered {other:?}"),
        }
    }
    assert_eq!(answers.iter().map(docs).collect::<Vec<_>>(), expected);
    assert!(answers[6].encoders.is_empty());
    assert!(answers
        .iter()
        .enumerate()
        .all(|(i, a)| i == 6 || a.encoders.len() == 2));
    let largest = answers
        .iter()
        .flat_map(|a| a.encoders.iter().map(|e| e.batch_size))
        .max();
    eprintln!("SearchStream of 13 queries: largest encoder batch {largest:?}");

    // Text with the sparse half given: only the token-vector encoder runs.
    let mut half = queries.request(3, &knobs);
    if let Some(q) = half.query.as_mut() {
        q.vectors = None;
        q.text = texts.texts.as_ref().unwrap()[3].clone();
    }
    let answer = client.search(half).await.unwrap();
    let ran: Vec<&str> = answer.encoders.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(ran, ["vectors"]);
    // An over-long text is refused, naming the field and the limit.
    let huge = text_request("huge", &"word ".repeat(20_000));
    let status = client.search(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("query.text") && status.message().contains("65536"));
    // A reload to an index of another dimension is refused: text queries could not be answered.
    let other = synthetic_index(200, 2, 16, 3).unwrap();
    let status = client
        .reload_index(other.index.to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("16-d") && status.message().contains("128-d"),
        "{status:?}"
    );
    assert_eq!(client.index_info().await.unwrap().doc_count, 5183);
    server.stop().await.unwrap();

    // (b) inference-free sparse encoding: the index's IDF as the weight table.
    let table = work.path().join("idf.json");
    let args = [
        "tandem-index",
        "weight-table",
        "--index",
        index.to_str().unwrap(),
        "--out",
        table.to_str().unwrap(),
    ];
    tandem_index_tools::run(tandem_index_tools::Cli::parse_from(args)).unwrap();
    let options = ServeOptions {
        encoders: EncoderSettings {
            sparse_table: Some(table.clone()),
            vector_model: Some(models.vectors.clone()),
            vector_projection: Some((data.join("proj_mean.npy"), data.join("proj_W.npy"))),
            ..EncoderSettings::none()
        },
        ..ServeOptions::default()
    };
    let server = TestServer::start(&index, options).await.unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let info = client.index_info().await.unwrap();
    assert_eq!(info.encoders[0].kind, "table");
    let table_run = search(&server.url, &data, &work.path().join("table.trec"), true).await;
    eprintln!(
        "scifact κ=30 MaxSim nDCG@10 with the IDF table (inference-free): {:.4}",
        table_run.ndcg_at_10
    );
    // Far from the neural sparse encoder's candidates, but a working first stage: well above
    // what random candidates would give (~0).
    assert!(table_run.ndcg_at_10 > 0.3, "{}", table_run.ndcg_at_10);
    let answer = client
        .search(text_request("q", "Vitamin D deficiency and bone density"))
        .await
        .unwrap();
    assert_eq!(answer.encoders[0].kind, "table");
    assert_eq!(answer.hits.len(), 10);
    server.stop().await.unwrap();
}

#[test]
fn the_table_encoder_weighs_each_distinct_token_once() {
    let Some(models) = models() else { return };
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.json");
    std::fs::write(&table, r#"{"hello": 2.0, "world": 0.5, "[CLS]": 9.0}"#).unwrap();
    let tokenizer = TextTokenizer::load(&models.vectors, 128).unwrap();
    let encoder = TableSparseEncoder::load(&table, tokenizer).unwrap();
    assert_eq!(encoder.weighted_tokens(), 3);
    let terms = encoder.encode("Hello, hello WORLD and more!").unwrap();
    // Special tokens ([CLS]) never count; tokens without a weight are left out; terms come in
    // vocabulary id order ("world" is 2088, "hello" 7592).
    assert_eq!(
        terms,
        vec![("world".to_string(), 0.5), ("hello".to_string(), 2.0)]
    );
    assert!(encoder.encode("").unwrap().is_empty());

    let bad = |text: &str| {
        std::fs::write(&table, text).unwrap();
        let tokenizer = TextTokenizer::load(&models.vectors, 128).unwrap();
        match TableSparseEncoder::load(&table, tokenizer) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => e.to_string(),
        }
    };
    let e = bad(r#"{"hello": 1.0, "notatokenxyz": 1.0}"#);
    assert!(
        e.contains("table.json") && e.contains("notatokenxyz"),
        "{e}"
    );
    let e = bad(r#"{"hello": -1.0}"#);
    assert!(e.contains("\"hello\"") && e.contains(">= 0"), "{e}");
    let e = bad("[1, 2]");
    assert!(
        e.contains("table.json:1") && e.contains("JSON object"),
        "{e}"
    );
    let npy = dir.path().join("table.npy");
    tandem_data::npy::write_f32(&npy, &[10], &[1.0; 10]).unwrap();
    let tokenizer = TextTokenizer::load(&models.vectors, 128).unwrap();
    let e = match TableSparseEncoder::load(&npy, tokenizer) {
        Ok(_) => panic!("a 10-token table was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("table.npy") && e.contains("30522"), "{e}");
}

/// A copy of a model directory without `missing`, or with `corrupt` overwritten by garbage.
fn broken_model(from: &Path, to: &Path, missing: Option<&str>, corrupt: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        if Some(name) == missing {
            continue;
        }
        if Some(name) == corrupt {
            std::fs::write(to.join(name), b"not what it should be").unwrap();
        } else {
            std::os::unix::fs::symlink(from.join(name), to.join(name)).unwrap();
        }
    }
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_without_encoders_and_bad_models_are_refused_clearly() {
    // No encoders: text queries are INVALID_ARGUMENT naming what is missing.
    let synth = synthetic_index(500, 4, 16, 5).unwrap();
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    assert!(client.index_info().await.unwrap().encoders.is_empty());
    let status = client
        .search(text_request("t", "a text query"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("query.text")
            && status.message().contains("no sparse encoder")
            && status.message().contains("--sparse-model"),
        "{status:?}"
    );
    // With the sparse half given, the missing encoder is the token-vector one.
    let mut request = text_request("t", "a text query");
    if let Some(q) = request.query.as_mut() {
        q.sparse_tokens.insert("t1".to_string(), 1.0);
    }
    let status = client.search(request.clone()).await.unwrap_err();
    assert!(
        status.message().contains("no token-vector encoder"),
        "{status:?}"
    );
    // ... unless the query does not rerank.
    request.rerank = tandem_proto::v1::Rerank::None as i32;
    assert!(client.search(request).await.unwrap().encoders.is_empty());
    // In a batch, the refusal names the request.
    let batch = tandem_proto::v1::SearchBatchRequest {
        requests: vec![text_request("a", "x"), text_request("b", "y")],
    };
    let mut raw = tandem_proto::v1::search_client::SearchClient::connect(server.url.clone())
        .await
        .unwrap();
    let status = raw.search_batch(batch).await.unwrap_err();
    assert!(
        status.message().starts_with("requests[0].query.text"),
        "{status:?}"
    );
    server.stop().await.unwrap();

    let Some(models) = models() else { return };
    let dir = tempfile::tempdir().unwrap();
    let load = |settings: EncoderSettings| match Encoders::load(&settings) {
        Ok(_) => panic!("{settings:?} loaded"),
        Err(e) => format!("{e:#}"),
    };
    let vectors = |dir: PathBuf| EncoderSettings {
        vector_model: Some(dir),
        ..EncoderSettings::none()
    };
    let e = load(vectors(dir.path().join("nowhere")));
    assert!(
        e.contains("nowhere") && e.contains("no such model directory"),
        "{e}"
    );
    let m = broken_model(
        &models.vectors,
        &dir.path().join("m1"),
        Some("model.safetensors"),
        None,
    );
    let e = load(vectors(m));
    assert!(
        e.contains("m1/model.safetensors") && e.contains("missing"),
        "{e}"
    );
    let m = broken_model(
        &models.vectors,
        &dir.path().join("m2"),
        None,
        Some("model.safetensors"),
    );
    let e = load(vectors(m));
    assert!(
        e.contains("m2/model.safetensors") && e.contains("safetensors"),
        "{e}"
    );
    let m = broken_model(
        &models.vectors,
        &dir.path().join("m3"),
        None,
        Some("tokenizer.json"),
    );
    let e = load(vectors(m));
    assert!(e.contains("m3/tokenizer.json"), "{e}");
    let m = broken_model(
        &models.vectors,
        &dir.path().join("m4"),
        None,
        Some("config.json"),
    );
    let e = load(vectors(m));
    assert!(
        e.contains("m4/config.json") && e.contains("BERT config"),
        "{e}"
    );
    // The MiniLM directory is no masked-language model: its weights lack the MLM head.
    let e = load(EncoderSettings {
        sparse_model: Some(models.vectors.clone()),
        ..EncoderSettings::none()
    });
    assert!(
        e.contains("model.safetensors") && e.contains("cls.predictions"),
        "{e}"
    );

    // A token-vector encoder whose vectors do not fit the index stops the server at start.
    let options = ServeOptions {
        encoders: vectors(models.vectors.clone()),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let e = format!("{:#}", server.stop().await.unwrap_err());
    assert!(e.contains("384-d") && e.contains("16-d"), "{e}");
}
