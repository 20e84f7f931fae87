//! A real external client: Python stubs generated from `proto/tandem/v1/search.proto` with
//! grpcio-tools query a running server (`tests/python/query_tandem.py`) with `Search`,
//! `SearchBatch`, `SearchStream` and `GetIndexInfo`, and get exactly what the Rust client gets
//! (same documents in the same order, the same f32 scores, the same errors). The script also
//! checks health with the standard `grpc.health.v1` stub and lists the services through
//! reflection.
//!
//! The Python packages are installed from PyPI, pinned, into a virtual environment under the
//! cargo target directory that later runs reuse. Without Python or PyPI the test is skipped
//! with a message, except under CI (`CI` set), where it fails: CI proves that it ran.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_engine::Segment;
use tandem_proto::v1::search_stream_response::Result as StreamResult;
use tandem_proto::v1::{
    FirstStage, FusionMethod, Rerank, SearchRequest, SearchResponse, SearchStreamResponse,
    SparseVector,
};
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index, workspace_root, TestServer};

/// The Python packages, pinned. Changing the list rebuilds the virtual environment.
const PYTHON_PACKAGES: &[&str] = &[
    "grpcio==1.85.1",
    "grpcio-tools==1.85.1",
    "grpcio-health-checking==1.85.1",
    "grpcio-reflection==1.85.1",
    "protobuf==7.36.2",
];

/// The file in the virtual environment that records the packages installed in it.
const INSTALLED_MARKER: &str = "tandem-packages.txt";

/// Runs `command`, returning its output when it ran and exited 0, else what went wrong.
fn run(command: &mut Command) -> Result<Output, String> {
    match command.output() {
        Ok(output) if output.status.success() => Ok(output),
        Ok(output) => Err(format!(
            "{command:?} exited with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
        Err(error) => Err(format!("cannot run {command:?}: {error}")),
    }
}

/// The Python interpreter of a virtual environment with [`PYTHON_PACKAGES`], created (or
/// recreated when its packages differ or it no longer works) under the cargo target directory;
/// `None` when Python, venv or PyPI is not available.
fn python_env() -> Option<PathBuf> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = tmp.join("python-client-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(INSTALLED_MARKER);
    let wanted = PYTHON_PACKAGES.join("\n");
    // Test runs sharing the target directory take turns creating the environment.
    let lock = std::fs::File::create(tmp.join("python-client-venv.lock")).unwrap();
    lock.lock().unwrap();
    let installed = std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str());
    if installed
        && run(Command::new(&python).args(["-c", "import grpc_tools, grpc_health, grpc_reflection"]))
            .is_ok()
    {
        eprintln!("reusing the Python environment {}", venv.display());
        return Some(python);
    }
    let started = Instant::now();
    eprintln!(
        "creating the Python environment {} with {}",
        venv.display(),
        PYTHON_PACKAGES.join(" ")
    );
    let created = run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv));
    if let Err(error) = created {
        return tandem_tests::skip(&format!("no Python 3 with venv: {error}"));
    }
    let installed = run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--retries", "2", "--timeout", "30"])
        .args(PYTHON_PACKAGES));
    if let Err(error) = installed {
        return tandem_tests::skip(&format!("cannot install the Python packages: {error}"));
    }
    std::fs::write(&marker, wanted).unwrap();
    eprintln!(
        "Python environment ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Some(python)
}

/// Generates the Python stubs of our proto into `out`, as the README shows.
fn generate_stubs(python: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    run(Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(workspace_root().join("proto"))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg("tandem/v1/search.proto"))
    .unwrap_or_else(|error| panic!("grpc_tools.protoc failed: {error}"));
    for stub in ["search_pb2.py", "search_pb2_grpc.py"] {
        assert!(out.join("tandem/v1").join(stub).exists(), "no {stub}");
    }
}

/// An f32 as a JSON number holding exactly its value (widened to f64, which Python parses and
/// narrows back to the same f32).
fn exact(value: f32) -> Value {
    json!(f64::from(value))
}

/// `value` with every float narrowed to f32. The script prints each f32 score exactly (as the
/// f64 it widens to), but serde_json's default parser may land an ulp of f64 away; narrowing
/// recovers the f32 that was sent, so scores are compared exactly as f32 values.
fn narrow_floats(value: Value) -> Value {
    match value {
        Value::Number(n) if n.is_f64() => exact(n.as_f64().unwrap() as f32),
        Value::Array(items) => Value::Array(items.into_iter().map(narrow_floats).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, v)| (name, narrow_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `request` as the JSON the Python script reads: the proto's field names, enums by name,
/// absent optional fields left out.
fn request_json(request: &SearchRequest) -> Value {
    let query = request.query.as_ref().expect("every request has a query");
    let mut query_json = json!({
        "sparse_tokens": query
            .sparse_tokens
            .iter()
            .map(|(token, weight)| (token.clone(), exact(*weight)))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let Some(sparse) = &query.sparse {
        query_json["sparse"] = json!({
            "indices": sparse.indices,
            "values": sparse.values.iter().copied().map(exact).collect::<Vec<_>>(),
        });
    }
    if let Some(vectors) = &query.vectors {
        assert!(vectors.f16_le.is_empty(), "the script sends float32 values");
        query_json["vectors"] = json!({
            "dim": vectors.dim,
            "values": vectors.values.iter().copied().map(exact).collect::<Vec<_>>(),
        });
    }
    let mut out = json!({
        "query_id": request.query_id,
        "query": query_json,
        "rerank": Rerank::try_from(request.rerank).unwrap().as_str_name(),
        "first_stage": FirstStage::try_from(request.first_stage).unwrap().as_str_name(),
        "fusion_method": FusionMethod::try_from(request.fusion_method).unwrap().as_str_name(),
    });
    let integers = [
        ("k", request.k),
        ("kappa", request.kappa),
        ("ee_beta", request.ee_beta),
        ("query_cut", request.query_cut),
        ("rescore", request.rescore),
    ];
    for (name, value) in integers {
        if let Some(value) = value {
            out[name] = json!(value);
        }
    }
    let floats = [
        ("cp_alpha", request.cp_alpha),
        ("fusion_weight", request.fusion_weight),
        ("rrf_k", request.rrf_k),
    ];
    for (name, value) in floats {
        if let Some(value) = value {
            out[name] = exact(value);
        }
    }
    out
}

/// `response` in the script's JSON form: hits as `[doc_id, score, sparse, MaxSim, fused]`,
/// stats as `[candidates, pruned, reranked]` (timings differ between calls).
fn response_json(response: &SearchResponse) -> Value {
    let hits: Vec<Value> = response
        .hits
        .iter()
        .map(|h| {
            json!([
                h.doc_id,
                exact(h.score),
                exact(h.sparse_score),
                h.maxsim_score.map(exact),
                h.fused_score.map(exact),
            ])
        })
        .collect();
    let stats = response.stats.unwrap_or_default();
    json!({
        "query_id": response.query_id,
        "unknown_tokens": response.unknown_tokens,
        "hits": hits,
        "stats": [stats.candidates, stats.pruned, stats.reranked],
    })
}

/// A `SearchStream` message in the script's JSON form.
fn stream_message_json(message: &SearchStreamResponse) -> Value {
    match message
        .result
        .as_ref()
        .expect("a stream message has a result")
    {
        StreamResult::Response(response) => json!({ "response": response_json(response) }),
        StreamResult::Error(error) => json!({
            "error": { "code": error.code, "message": error.message, "query_id": error.query_id }
        }),
    }
}

/// The requests: every query, with knobs varied over the query set so that each field of
/// `SearchRequest` crosses from Python (defaults, exact and approximate first stages, sparse
/// ids or token strings, no reranking, CP/EE, each fusion method), one with an unknown token.
/// Each knob is set away from its default far enough to change some answer, so a field the
/// script dropped would show.
fn requests(synth: &tandem_tests::SyntheticIndex) -> Vec<SearchRequest> {
    let queries = QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap();
    let index = Segment::open(&synth.index).unwrap();
    let exact_stage = |k, kappa| QueryKnobs {
        k: Some(k),
        kappa: Some(kappa),
        first_stage: FirstStage::Exact,
        ..QueryKnobs::default()
    };
    (0..queries.len())
        .map(|i| {
            let knobs = match i % 5 {
                0 => QueryKnobs::default(),
                1 => QueryKnobs {
                    ee_beta: Some(2),
                    ..exact_stage(5, 30)
                },
                2 => QueryKnobs {
                    sparse_only: true,
                    ..exact_stage(8, 30)
                },
                3 => QueryKnobs {
                    cp_alpha: Some(0.05),
                    fusion_method: FusionMethod::Rrf,
                    fusion_weight: Some(1.0),
                    rrf_k: Some(20.0),
                    ..exact_stage(5, 40)
                },
                _ => QueryKnobs {
                    k: Some(6),
                    kappa: Some(6),
                    first_stage: FirstStage::Approximate,
                    query_cut: Some(4),
                    rescore: Some(8),
                    fusion_method: FusionMethod::Minmax,
                    fusion_weight: Some(0.5),
                    ..QueryKnobs::default()
                },
            };
            let mut request = queries.request(i, &knobs);
            let query = request.query.as_mut().unwrap();
            if i == 0 {
                query
                    .sparse_tokens
                    .insert("no-such-token-in-the-vocabulary".into(), 0.5);
            }
            if i % 5 == 2 {
                // Vocabulary ids instead of token strings.
                let mut ids: Vec<(u32, f32)> = query
                    .sparse_tokens
                    .drain()
                    .map(|(token, weight)| (index.term_id(&token).unwrap(), weight))
                    .collect();
                ids.sort_unstable_by_key(|t| t.0);
                query.sparse = Some(SparseVector {
                    indices: ids.iter().map(|t| t.0).collect(),
                    values: ids.iter().map(|t| t.1).collect(),
                });
            }
            request
        })
        .collect()
}

/// What the Rust client gets for the same calls, in the script's JSON form.
async fn rust_answers(url: &str, requests: &[SearchRequest], invalid: &SearchRequest) -> Value {
    let mut client = TandemClient::connect(url).await.unwrap();
    let info = client.index_info().await.unwrap();
    let mut search = Vec::new();
    for request in requests {
        let response = client.search(request.clone()).await.unwrap();
        assert!(
            !response.hits.is_empty(),
            "{} has no hits",
            request.query_id
        );
        search.push(response_json(&response));
    }
    let status = client.search(invalid.clone()).await.unwrap_err();
    let batch = client
        .search_batches(requests.to_vec(), requests.len())
        .await
        .unwrap();
    let sent: Vec<SearchRequest> = requests.iter().chain([invalid]).cloned().collect();
    let mut stream = client
        .search_stream(tokio_stream::iter(sent))
        .await
        .unwrap();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(stream_message_json(&message));
    }
    json!({
        "info": {
            "doc_count": info.doc_count,
            "vocab_size": info.vocab_size,
            "dim": info.dim,
            "default_first_stage": info.default_first_stage,
        },
        "search": search,
        "invalid_search": { "code": status.code() as i32, "message": status.message() },
        "batch": batch.iter().map(response_json).collect::<Vec<_>>(),
        "stream": messages,
    })
}

#[test]
fn python_client_gets_the_rust_clients_answers_and_sees_health_and_reflection() {
    let started = Instant::now();
    let Some(python) = python_env() else { return };
    let work = tempfile::tempdir().unwrap();
    let stubs = work.path().join("stubs");
    generate_stubs(&python, &stubs);

    let synth = synthetic_index(600, 10, 16, 9).unwrap();
    let requests = requests(&synth);
    let invalid = SearchRequest {
        k: Some(0),
        query_id: "invalid".into(),
        ..requests[1].clone()
    };
    let request_file = work.path().join("requests.json");
    let specs = json!({
        "requests": requests.iter().map(request_json).collect::<Vec<_>>(),
        "invalid": request_json(&invalid),
    });
    std::fs::write(&request_file, specs.to_string()).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .block_on(TestServer::start(&synth.index, ServeOptions::default()))
        .unwrap();
    let rust = runtime.block_on(rust_answers(&server.url, &requests, &invalid));
    // The server keeps running on the runtime's threads while Python queries it.
    let script = workspace_root().join("tests/python/query_tandem.py");
    let output = run(Command::new(&python)
        .arg(&script)
        .arg("--stubs")
        .arg(&stubs)
        .arg("--target")
        .arg(server.url.strip_prefix("http://").unwrap())
        .arg("--requests")
        .arg(&request_file))
    .unwrap_or_else(|error| panic!("the Python client failed: {error}"));
    runtime.block_on(server.stop()).unwrap();
    let py = narrow_floats(serde_json::from_slice(&output.stdout).unwrap());

    for part in ["info", "search", "batch", "stream"] {
        assert_eq!(py[part], rust[part], "Python and Rust disagree on {part}");
    }
    assert_eq!(py["invalid_search"], rust["invalid_search"]);
    assert_eq!(rust["invalid_search"]["code"], json!(3), "INVALID_ARGUMENT");
    assert_eq!(
        py["stream"].as_array().unwrap().len(),
        requests.len() + 1,
        "one stream message per request"
    );
    assert_eq!(
        py["health"],
        json!({
            "": "SERVING",
            "tandem.v1.Search": "SERVING",
            "no.such.Service": "NOT_FOUND",
        })
    );
    let services = py["reflection"]["services"].as_array().unwrap();
    for service in [
        "tandem.v1.Search",
        "tandem.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&json!(service)), "{service} not listed");
    }
    assert_eq!(
        py["reflection"]["search_methods"],
        json!(["Search", "SearchBatch", "SearchStream", "GetIndexInfo"])
    );
    eprintln!(
        "grpcio {} answered {} queries like the Rust client ({:.1} s in all)",
        py["grpc_version"].as_str().unwrap_or("?"),
        requests.len(),
        started.elapsed().as_secs_f64()
    );
}
