//! The Python package `python/` (`tandem_client`) against a real server, and explanations
//! checked independently of the server.
//!
//! A fresh virtual environment gets `pip install ./python` (which generates the gRPC stubs from
//! `proto/` at build time), mypy and pytest; `mypy --strict -p tandem_client` must pass, and so
//! must the package's own tests against a fake server (`python/tests/test_client.py`). Then, for
//! an index in each codec (f16, int8, pq) built with document token strings,
//! `python/tests/query_client.py` queries a running server with `Client.search`,
//! `Client.search_batch`, `AsyncClient.search`, `info`, `health`, an invalid query and `delete`,
//! and must get exactly the hits, scores and explanations the Rust client gets.
//!
//! Each explanation is checked against the index itself: every listed dot product is recomputed
//! from the document's stored vectors (decoded by the codec), every listed document token is an
//! argmax for its query token, the token scores add up to the MaxSim score and the term
//! contributions to the sparse score, every term's weights are the query's and the posting
//! list's, and each document token's string is the one given at build time.
//!
//! Without Python, venv or PyPI the test is skipped with a message, except under CI.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::tokens::Codec;
use tandem_engine::Segment;
use tandem_proto::v1::{FirstStage, Hit, SearchRequest};
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index_with, workspace_root, TestServer};

/// Runs `command`, returning its output when it exited 0, else what went wrong.
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

/// A fresh virtual environment with `pip install ./python mypy pytest`; `None` (skipped) when
/// Python, venv or PyPI is unavailable outside CI.
fn fresh_env(dir: &Path) -> Option<PathBuf> {
    let venv = dir.join("venv");
    if let Err(error) = run(Command::new("python3").args(["-m", "venv"]).arg(&venv)) {
        return tandem_tests::skip(&format!("no Python 3 with venv: {error}"));
    }
    let python = venv.join("bin").join("python");
    let installed = run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--retries", "2", "--timeout", "60"])
        .arg(workspace_root().join("python"))
        .args(["mypy==2.4.1", "pytest==9.2.0"]));
    if let Err(error) = installed {
        return tandem_tests::skip(&format!("cannot pip install ./python: {error}"));
    }
    Some(python)
}

/// One JSON line per document of `docs.jsonl`: its token strings, `w<n>` with repeats (so the
/// index stores each distinct string once).
fn token_string(line: usize, position: usize) -> String {
    format!("w{}", (line * 7 + position) % 37)
}

/// The corpus's external ids in input order, and the token counts.
fn corpus_docs(corpus: &Path) -> (Vec<String>, Vec<u64>) {
    let text = std::fs::read_to_string(corpus.join("docs.jsonl")).unwrap();
    let ids = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let lens = tandem_data::npy::NpyArray::open(&corpus.join("doc_lens.npy"))
        .unwrap()
        .to_u64_vec()
        .unwrap();
    (ids, lens)
}

fn build(corpus: &Path, out: &Path, codec: Codec, doc_tokens: &Path) {
    build_index(
        &BuildConfig {
            docs: corpus.join("docs.jsonl"),
            vectors: corpus.join("doc_vectors.npy"),
            lens: corpus.join("doc_lens.npy"),
            int8_scale: None,
            vocab: Some(corpus.join("vocab.txt")),
            token_ids: false,
            out: out.to_path_buf(),
            overwrite: false,
            approx: None,
            codec,
            doc_tokens: Some(doc_tokens.to_path_buf()),
        },
        &NoProgress,
    )
    .unwrap();
}

/// A float the script printed (a float32 widened to a Python float) as that float32.
fn f32_of(value: &Value) -> f32 {
    value.as_f64().unwrap() as f32
}

/// The Rust client's hits in the script's JSON form, floats as f32 bits for exact comparison.
fn hits_json(hits: &[Hit]) -> Value {
    let bits = |x: f32| json!(x.to_bits());
    Value::Array(
        hits.iter()
            .map(|h| {
                let explanation = h.explanation.as_ref().map(|e| {
                    json!({
                        "token_matches": e.token_matches.iter().map(|m| json!({
                            "query_token": m.query_token, "doc_token": m.doc_token,
                            "score": bits(m.score), "query_text": m.query_text,
                            "doc_text": m.doc_text,
                        })).collect::<Vec<_>>(),
                        "terms": e.terms.iter().map(|t| json!({
                            "term": t.term, "term_id": t.term_id,
                            "query_weight": bits(t.query_weight), "doc_weight": bits(t.doc_weight),
                            "contribution": bits(t.contribution),
                        })).collect::<Vec<_>>(),
                    })
                });
                json!({
                    "id": h.doc_id, "score": bits(h.score), "maxsim": h.maxsim_score.map(bits),
                    "sparse": bits(h.sparse_score), "fused": h.fused_score.map(bits),
                    "explanation": explanation,
                })
            })
            .collect(),
    )
}

/// The script's hits with every float replaced by its f32 bits.
fn python_hits_json(hits: &Value) -> Value {
    fn narrow(value: &Value) -> Value {
        match value {
            Value::Number(n) if n.is_f64() => json!(f32_of(value).to_bits()),
            Value::Array(items) => Value::Array(items.iter().map(narrow).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), narrow(v))).collect())
            }
            other => other.clone(),
        }
    }
    narrow(hits)
}

/// The script's spec of one query: its vectors as rows, sparse terms, k, kappa, explain.
fn spec_of(request: &SearchRequest) -> Value {
    let query = request.query.as_ref().unwrap();
    let vectors = query.vectors.as_ref().unwrap();
    let rows: Vec<Vec<f32>> = vectors
        .values
        .chunks(vectors.dim as usize)
        .map(<[f32]>::to_vec)
        .collect();
    json!({
        "vectors": rows, "dtype": "float32", "sparse": query.sparse_tokens,
        "k": request.k, "kappa": request.kappa, "explain": request.explain,
    })
}

/// Checks one explained hit against the index (see the module documentation).
fn check_explanation(
    index: &Segment,
    request: &SearchRequest,
    hit: &Hit,
    strings: &dyn Fn(u32, u32) -> String,
) {
    let what = format!("{} / {}", request.query_id, hit.doc_id);
    let e = hit
        .explanation
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no explanation"));
    let doc = index.doc_by_id(&hit.doc_id).unwrap();
    let query = request.query.as_ref().unwrap();
    let vectors = query.vectors.as_ref().unwrap();
    let dim = vectors.dim as usize;
    let mut rows = Vec::new();
    index.tokens().doc(doc).unwrap().decode(dim, &mut rows);
    assert_eq!(
        e.token_matches.len(),
        vectors.values.len() / dim,
        "{what}: one match per query token"
    );
    let mut total = 0.0f32;
    for (i, (m, q)) in e
        .token_matches
        .iter()
        .zip(vectors.values.chunks(dim))
        .enumerate()
    {
        assert_eq!(m.query_token as usize, i, "{what}");
        let dot = |row: &[f32]| -> (f64, f64) {
            q.iter().zip(row).fold((0.0, 0.0), |(d, mass), (&a, &b)| {
                let p = f64::from(a) * f64::from(b);
                (d + p, mass + p.abs())
            })
        };
        let t = m.doc_token as usize;
        let (listed, mass) = dot(&rows[t * dim..][..dim]);
        let tol = 4.0 * (dim + 1) as f64 * f64::from(f32::EPSILON) * mass.max(1e-30);
        assert!(
            (f64::from(m.score) - listed).abs() <= tol,
            "{what}: query token {i} lists {} for doc token {t}, recomputed {listed}",
            m.score
        );
        for (other, row) in rows.chunks(dim).enumerate() {
            let (d, other_mass) = dot(row);
            let slack = tol + 4.0 * (dim + 1) as f64 * f64::from(f32::EPSILON) * other_mass;
            assert!(
                d <= listed + slack,
                "{what}: query token {i}: doc token {other} scores {d} > {listed}"
            );
        }
        assert_eq!(
            m.doc_text,
            strings(doc, m.doc_token),
            "{what}: doc token {t} string"
        );
        assert_eq!(m.query_text, "", "{what}: no wordpieces for a vector query");
        total += m.score;
    }
    assert_eq!(
        Some(total),
        hit.maxsim_score,
        "{what}: token scores sum to MaxSim"
    );

    let mut expected: Vec<(u32, f32, f32)> = query
        .sparse_tokens
        .iter()
        .filter(|(_, &w)| w > 0.0)
        .filter_map(|(term, &w)| {
            let id = index.term_id(term)?;
            let (docs, weights) = index.postings().postings(id);
            let at = docs.iter().position(|&d| d == doc)?;
            Some((id, w, weights[at]))
        })
        .collect();
    expected.sort_unstable_by_key(|t| t.0);
    let mut listed: Vec<(u32, f32, f32)> = e
        .terms
        .iter()
        .map(|t| (t.term_id, t.query_weight, t.doc_weight))
        .collect();
    listed.sort_unstable_by_key(|t| t.0);
    assert_eq!(
        listed, expected,
        "{what}: the terms the query and the document share"
    );
    let mut sum = 0.0f64;
    for (i, t) in e.terms.iter().enumerate() {
        assert_eq!(t.term, index.term(t.term_id).unwrap(), "{what}");
        assert_eq!(t.contribution, t.query_weight * t.doc_weight, "{what}");
        if i > 0 {
            assert!(
                t.contribution <= e.terms[i - 1].contribution,
                "{what}: heaviest first"
            );
        }
        sum += f64::from(t.contribution);
    }
    let sparse = f64::from(hit.sparse_score);
    assert!(
        (sum - sparse).abs() <= 1e-5 * sparse.abs().max(1e-6),
        "{what}: contributions sum to {sum}, sparse score {sparse}"
    );
}

#[test]
fn python_package_gets_the_rust_clients_hits_and_explanations_check_out_for_every_codec() {
    let work = tempfile::tempdir().unwrap();
    let Some(python) = fresh_env(work.path()) else {
        return;
    };
    run(Command::new(&python)
        .args(["-m", "mypy", "--strict", "-p", "tandem_client"])
        .current_dir(work.path()))
    .unwrap_or_else(|e| panic!("mypy --strict failed: {e}"));
    run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(workspace_root().join("python/tests/test_client.py"))
        .current_dir(work.path()))
    .unwrap_or_else(|e| panic!("the package's tests failed: {e}"));

    let synth = synthetic_index_with(400, 6, 16, 23, None).unwrap();
    let (ids, lens) = corpus_docs(&synth.corpus);
    let tokens_file = work.path().join("doc_tokens.jsonl");
    let lines: Vec<String> = lens
        .iter()
        .enumerate()
        .map(|(line, &n)| {
            json!((0..n as usize)
                .map(|p| token_string(line, p))
                .collect::<Vec<_>>())
            .to_string()
        })
        .collect();
    std::fs::write(&tokens_file, lines.join("\n") + "\n").unwrap();
    let queries = QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap();
    let requests: Vec<SearchRequest> = (0..queries.len())
        .map(|i| SearchRequest {
            explain: i % 3 != 2,
            ..queries.request(
                i,
                &QueryKnobs {
                    k: Some(5),
                    kappa: Some(20),
                    first_stage: FirstStage::Exact,
                    ..QueryKnobs::default()
                },
            )
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    for (n, codec) in [Codec::F16, Codec::Int8, Codec::Pq].into_iter().enumerate() {
        let dir = work.path().join(codec.name());
        build(&synth.corpus, &dir, codec, &tokens_file);
        let index = Segment::open(&dir).unwrap();
        let line_of = |doc: u32| {
            ids.iter()
                .position(|id| Some(id.as_str()) == index.external_id(doc))
                .unwrap()
        };
        let strings = |doc: u32, pos: u32| token_string(line_of(doc), pos as usize);
        let server = runtime
            .block_on(TestServer::start(&dir, ServeOptions::default()))
            .unwrap();

        let rust: Vec<Vec<Hit>> = runtime.block_on(async {
            let mut client = TandemClient::connect(&server.url).await.unwrap();
            let info = client.index_info().await.unwrap();
            assert!(
                info.doc_tokens,
                "{}: GetIndexInfo reports the doc token strings",
                codec.name()
            );
            let mut all = Vec::new();
            for request in &requests {
                all.push(client.search(request.clone()).await.unwrap().hits);
            }
            all
        });
        for (request, hits) in requests.iter().zip(&rust) {
            assert!(
                !hits.is_empty(),
                "{}: {} has no hits",
                codec.name(),
                request.query_id
            );
            for hit in hits {
                if request.explain {
                    check_explanation(&index, request, hit, &strings);
                } else {
                    assert!(hit.explanation.is_none(), "an explanation nobody asked for");
                }
            }
        }

        let last = n == 2;
        let spec = json!({
            "target": server.url.strip_prefix("http://").unwrap(),
            "queries": requests.iter().map(spec_of).collect::<Vec<_>>(),
            "invalid": { "vectors": [vec![0.5f32; 16]], "sparse": {}, "k": 0 },
            "delete": if last { json!([ids[0], "no-such-id"]) } else { Value::Null },
        });
        let spec_file = work.path().join(format!("spec-{}.json", codec.name()));
        std::fs::write(&spec_file, spec.to_string()).unwrap();
        let output = run(Command::new(&python)
            .arg(workspace_root().join("python/tests/query_client.py"))
            .arg(&spec_file))
        .unwrap_or_else(|e| panic!("query_client.py failed: {e}"));
        runtime.block_on(server.stop()).unwrap();
        let py: Value = serde_json::from_slice(&output.stdout).unwrap();

        let want = Value::Array(rust.iter().map(|h| hits_json(h)).collect());
        for part in ["search", "batch", "async"] {
            assert_eq!(
                python_hits_json(&py[part]),
                want,
                "{}: Python `{part}` differs from Rust",
                codec.name()
            );
        }
        assert_eq!(py["info"]["doc_count"], json!(400));
        assert_eq!(py["info"]["vector_codec"], json!(codec.name()));
        assert_eq!(py["health"], json!("SERVING"));
        assert_eq!(
            py["error"]["code"],
            json!("INVALID_ARGUMENT"),
            "{}",
            py["error"]
        );
        assert!(
            py["error"]["message"].as_str().unwrap().contains('k'),
            "{}",
            py["error"]
        );
        if last {
            assert_eq!(py["delete"]["deleted"], json!(1), "{}", py["delete"]);
            assert_eq!(
                py["delete"]["unknown_ids"],
                json!(["no-such-id"]),
                "{}",
                py["delete"]
            );
        }
    }
}
