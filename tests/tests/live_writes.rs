//! Live writes rank exactly as a batch build of the same documents, and bad writes change
//! nothing.
//!
//! - An empty index (`create`) filled with upserts in batches ranks, with the exact first
//!   stage, exactly as the one-segment batch build of the corpus (every hit's id and scores
//!   bit for bit, explanations, filters, fusion, CP/EE): while the documents are in refresh
//!   segments, after they are sealed, after replacements and deletes (against a batch build of
//!   the documents that are then live, in the same order), and after a reopen that replays the
//!   write-ahead log.
//! - Over gRPC, a batch holding one bad document (wrong dim, a NaN, a term outside a fixed
//!   vocabulary, an id twice, an attribute of another kind, no vectors) is INVALID_ARGUMENT
//!   naming `documents[i]` and the field, and nothing of it is logged; the streaming variant
//!   names the batch and keeps the batches before it; `wait_for_visible` answers once the
//!   documents are searchable; `--read-only` and single-segment indexes refuse writes with
//!   FAILED_PRECONDITION; a batch over the limit is RESOURCE_EXHAUSTED.

use half::f16;
use std::path::Path;
use tandem_client::TandemClient;
use tandem_data::jsonl::parse_all;
use tandem_data::npy::{row_offsets, write_f32, write_u32, NpyArray};
use tandem_engine::approx::{ApproxBuildParams, ApproxQueryParams};
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::format::segments::SealStage;
use tandem_engine::live::create::{create, CreateConfig};
use tandem_engine::live::record::NewDoc;
use tandem_engine::live::{LiveIndex, LiveOptions};
use tandem_engine::tokens::Codec;
use tandem_engine::Index;
use tandem_proto::v1;
use tandem_server::config::ServeOptions;
use tandem_tests::equivalence::{compare, queries};
use tandem_tests::{synthetic_index_full, uncalibrated, TestServer};

const DIM: usize = 16;
const DOCS: usize = 400;

/// The documents of a corpus (eval-set layout) as a writer takes them.
fn new_docs(corpus: &Path) -> Vec<NewDoc> {
    let text = std::fs::read_to_string(corpus.join("docs.jsonl")).unwrap();
    let records = parse_all(&text, "docs.jsonl").unwrap();
    let vectors = NpyArray::open(&corpus.join("doc_vectors.npy")).unwrap();
    let lens_path = corpus.join("doc_lens.npy");
    let lens = NpyArray::open(&lens_path).unwrap().to_u64_vec().unwrap();
    let rows = row_offsets(&lens, &lens_path).unwrap();
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let mut values = Vec::new();
            vectors
                .rows_f32(rows[i] as usize..rows[i + 1] as usize, None, &mut values)
                .unwrap();
            // Sorted by term, as the server leaves a document's terms (and as the reference's
            // JSON objects list them): a growing vocabulary then numbers terms the same way.
            let mut terms = record.terms;
            terms.sort_by(|a, b| a.0.cmp(&b.0));
            NewDoc {
                id: record.id,
                terms,
                vectors: values.iter().map(|&v| f16::from_f32(v)).collect(),
                attrs: record.attrs,
            }
        })
        .collect()
}

/// Writes `docs` as a corpus (docs.jsonl, vectors, lens) and builds it as one segment with
/// the exact first stage, the reference; with the vocabulary of `like` when given (term ids
/// then agree, and so do explanations and the order sparse scores are summed in).
fn batch_build(docs: &[NewDoc], dir: &Path, like: Option<&Index>) -> Index {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let vocab = like.map(|index| {
        let path = corpus.join("vocab.txt");
        let terms: Vec<&str> = (0..index.vocab_size() as u32)
            .map(|t| index.term(t).unwrap())
            .collect();
        std::fs::write(&path, terms.join("\n")).unwrap();
        path
    });
    let mut jsonl = String::new();
    let (mut values, mut lens) = (Vec::new(), Vec::new());
    for doc in docs {
        let vector: serde_json::Map<String, serde_json::Value> = doc
            .terms
            .iter()
            .map(|(t, w)| (t.clone(), serde_json::json!(w)))
            .collect();
        let attrs: serde_json::Map<String, serde_json::Value> = doc
            .attrs
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    tandem_data::jsonl::AttrValue::Str(s) => serde_json::json!(s),
                    tandem_data::jsonl::AttrValue::Int(v) => serde_json::json!(v),
                    tandem_data::jsonl::AttrValue::List(items) => serde_json::json!(items),
                };
                (name.clone(), value)
            })
            .collect();
        let mut record = serde_json::json!({"id": doc.id, "vector": vector});
        if !attrs.is_empty() {
            record["attrs"] = serde_json::Value::Object(attrs);
        }
        jsonl.push_str(&record.to_string());
        jsonl.push('\n');
        values.extend(doc.vectors.iter().map(|v| v.to_f32()));
        lens.push((doc.vectors.len() / DIM) as u32);
    }
    std::fs::write(corpus.join("docs.jsonl"), jsonl).unwrap();
    let rows = (values.len() / DIM) as u64;
    write_f32(&corpus.join("v.npy"), &[rows, DIM as u64], &values).unwrap();
    write_u32(&corpus.join("l.npy"), &[lens.len() as u64], &lens).unwrap();
    let out = dir.join("reference");
    build_index(
        &BuildConfig {
            docs: corpus.join("docs.jsonl"),
            vectors: corpus.join("v.npy"),
            lens: corpus.join("l.npy"),
            int8_scale: None,
            vocab,
            token_ids: false,
            out: out.clone(),
            overwrite: true,
            approx: None,
            codec: Codec::F16,
            doc_tokens: None,
        },
        &NoProgress,
    )
    .unwrap();
    Index::open(&out).unwrap()
}

fn empty_index(dir: &Path, vocab: Option<Vec<String>>) -> std::path::PathBuf {
    let out = dir.join("live");
    create(
        &CreateConfig {
            dim: DIM,
            codec: Codec::F16,
            vocab,
            first_stage: Some(SealStage {
                build: ApproxBuildParams::default(),
                query_defaults: ApproxQueryParams::default(),
            }),
        },
        &out,
        false,
    )
    .unwrap();
    out
}

/// The external ids of `index`, in id order, live or not (for the id filters).
fn ids(index: &Index) -> Vec<String> {
    (0..index.doc_count() as u32)
        .map(|d| index.external_id(d).unwrap().to_string())
        .collect()
}

#[test]
fn upserts_rank_exactly_as_a_batch_build() {
    let synth = synthetic_index_full(DOCS, 12, DIM, 41, Some(uncalibrated()), true).unwrap();
    let qs = queries(&synth);
    let docs = new_docs(&synth.corpus);
    let work = tempfile::tempdir().unwrap();
    let dir = empty_index(work.path(), None);
    let options = LiveOptions {
        seal_docs: 1_000_000,
        ..LiveOptions::default()
    };
    let live = LiveIndex::open(&dir, options).unwrap();
    for (b, batch) in docs.chunks(37).enumerate() {
        live.upsert(batch.to_vec()).unwrap();
        if b % 3 == 2 {
            assert!(live.refresh().unwrap());
        }
    }
    live.refresh().unwrap();
    assert!(!live.refresh().unwrap(), "nothing left to refresh");
    let reference = batch_build(&docs, &work.path().join("r1"), None);
    let names = ids(&reference);
    let view = live.view();
    assert!(view.segments().len() > 3, "refresh segments");
    assert_eq!(view.live_count(), DOCS as u64);
    let in_refresh = compare(&reference, &view, &qs, &names);

    // Sealed: one segment with the approximate first stage, the log truncated.
    assert!(live.seal().unwrap());
    let view = live.view();
    assert_eq!(
        view.segments().len(),
        2,
        "the empty segment and the sealed one"
    );
    assert!(view.segments()[1].approx().is_some());
    assert_eq!(live.status().sealed_seq, live.status().logged_seq);
    compare(&reference, &view, &qs, &names);

    // Replacements (ids keep, contents of other documents) and deletes, then the documents
    // live are the untouched ones in order, then the replacements in the order written.
    let replaced: Vec<NewDoc> = (0..DOCS)
        .step_by(9)
        .map(|i| NewDoc {
            id: docs[i].id.clone(),
            ..docs[DOCS - 1 - i].clone()
        })
        .collect();
    let deleted: Vec<String> = (4..DOCS).step_by(13).map(|i| docs[i].id.clone()).collect();
    let outcome = live.upsert(replaced.clone()).unwrap();
    assert_eq!(outcome.replaced, replaced.len() as u64);
    let (delete, _) = live.delete(deleted.clone()).unwrap();
    assert_eq!(delete.deleted, deleted.len() as u64);
    live.refresh().unwrap();
    let touched: std::collections::HashSet<&str> = replaced
        .iter()
        .map(|d| d.id.as_str())
        .chain(deleted.iter().map(String::as_str))
        .collect();
    let deleted_set: std::collections::HashSet<&str> = deleted.iter().map(String::as_str).collect();
    let mut now: Vec<NewDoc> = docs
        .iter()
        .filter(|d| !touched.contains(d.id.as_str()))
        .cloned()
        .collect();
    now.extend(
        replaced
            .iter()
            .filter(|d| !deleted_set.contains(d.id.as_str()))
            .cloned(),
    );
    let view = live.view();
    let reference = batch_build(&now, &work.path().join("r2"), Some(&view));
    assert_eq!(view.live_count(), now.len() as u64);
    compare(&reference, &view, &qs, &ids(&reference));
    drop(view);
    drop(live);

    // Reopened: the writes after the seal come back from the log, once.
    let live = LiveIndex::open(&dir, options).unwrap();
    let view = live.view();
    assert_eq!(view.live_count(), now.len() as u64);
    compare(&reference, &view, &qs, &ids(&reference));
    assert!(live.seal().unwrap());
    compare(&reference, &live.view(), &qs, &ids(&reference));
    println!("{in_refresh} searches identical per state");
}

fn document(id: &str, terms: &[(&str, f32)], rows: usize, value: f32) -> v1::Document {
    v1::Document {
        id: id.to_string(),
        sparse_tokens: terms.iter().map(|(t, w)| (t.to_string(), *w)).collect(),
        vectors: Some(v1::TokenVectors {
            dim: DIM as u32,
            values: vec![value; rows * DIM],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn batch(documents: Vec<v1::Document>, wait_for_visible: bool) -> v1::UpsertRequest {
    v1::UpsertRequest {
        documents,
        wait_for_visible,
    }
}

async fn logged_seq(client: &mut TandemClient) -> u64 {
    client
        .index_info()
        .await
        .unwrap()
        .writes
        .unwrap()
        .logged_seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_whole_and_read_only_servers_refuse_writes() {
    let work = tempfile::tempdir().unwrap();
    let vocab = ["alpha", "beta", "gamma"].map(String::from).to_vec();
    let dir = empty_index(work.path(), Some(vocab));
    let mut options = ServeOptions::default();
    options.writes.max_upsert_docs = 3;
    let server = TestServer::start_live(&dir, options, LiveOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let good = || document("a", &[("alpha", 1.0)], 2, 0.5);
    let mut nan = document("b", &[("beta", 1.0)], 1, 0.5);
    if let Some(v) = nan.vectors.as_mut() {
        v.values[3] = f32::NAN;
    }
    let mut wrong_dim = document("b", &[("beta", 1.0)], 1, 0.5);
    if let Some(v) = wrong_dim.vectors.as_mut() {
        v.dim = 3;
    }
    let mut text_year = document("b", &[("beta", 1.0)], 1, 0.5);
    text_year.attributes.insert(
        "year".into(),
        v1::AttributeValue {
            value: Some(v1::attribute_value::Value::Text("2020".into())),
        },
    );
    let mut int_year = good();
    int_year.attributes.insert(
        "year".into(),
        v1::AttributeValue {
            value: Some(v1::attribute_value::Value::Integer(2020)),
        },
    );
    let no_vectors = v1::Document {
        vectors: None,
        ..document("b", &[("beta", 1.0)], 1, 0.5)
    };
    let cases: Vec<(&str, Vec<v1::Document>, &str)> = vec![
        (
            "wrong dim",
            vec![good(), wrong_dim],
            "documents[1].vectors.dim",
        ),
        ("nan", vec![good(), nan], "documents[1].vectors: value NaN"),
        (
            "unknown term",
            vec![good(), document("b", &[("delta", 1.0)], 1, 0.5)],
            "documents[1].sparse: term \"delta\" is not in the index's fixed vocabulary",
        ),
        (
            "same id twice",
            vec![good(), good()],
            "documents[1].id: \"a\" is also documents[0]'s id",
        ),
        (
            "attribute kinds",
            vec![int_year, text_year],
            "documents[1].attributes: attribute `year` is string here but integer",
        ),
        (
            "no vectors",
            vec![good(), no_vectors],
            "documents[1].vectors",
        ),
        (
            "negative weight",
            vec![document("b", &[("beta", -1.0)], 1, 0.5)],
            "documents[0].sparse",
        ),
    ];
    for (what, documents, needle) in cases {
        let status = client.upsert(batch(documents, false)).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains(needle),
            "{what}: {}",
            status.message()
        );
        assert_eq!(logged_seq(&mut client).await, 0, "{what}: nothing logged");
    }
    let too_many = (0..4)
        .map(|i| document(&format!("m{i}"), &[("alpha", 1.0)], 1, 0.1))
        .collect();
    let status = client.upsert(batch(too_many, false)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("max_upsert_docs = 3"),
        "{status:?}"
    );

    // Acknowledged and searchable before the answer with wait_for_visible.
    let reply = client.upsert(batch(vec![good()], true)).await.unwrap();
    assert_eq!((reply.acknowledged, reply.seq), (1, 1));
    let search = v1::SearchRequest {
        query: Some(v1::Query {
            sparse_tokens: [("alpha".to_string(), 1.0)].into(),
            ..Default::default()
        }),
        rerank: v1::Rerank::None as i32,
        ..Default::default()
    };
    let hits = client.search(search.clone()).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].doc_id.as_str(), hits[0].sparse_score), ("a", 1.0));

    // The stream names the bad batch; the batches before it stay.
    let batches = vec![
        batch(vec![document("s1", &[("gamma", 2.0)], 1, 0.2)], false),
        batch(vec![document("s2", &[("nope", 2.0)], 1, 0.2)], false),
    ];
    let status = client
        .upsert_stream(tokio_stream::iter(batches))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("batches[1].documents[0].sparse"),
        "{status:?}"
    );
    assert_eq!(logged_seq(&mut client).await, 2);

    // Replacing "a": its old copy goes when the new one is searchable.
    let reply = client
        .upsert(batch(vec![document("a", &[("alpha", 3.0)], 1, 0.5)], true))
        .await
        .unwrap();
    assert_eq!(reply.replaced, 1);
    let hits = client.search(search.clone()).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].doc_id.as_str(), hits[0].sparse_score), ("a", 3.0));
    let deleted = client.delete(vec!["a".into(), "zz".into()]).await.unwrap();
    assert_eq!(
        (deleted.deleted, deleted.unknown_ids),
        (1, vec!["zz".to_string()])
    );
    assert!(client.search(search).await.unwrap().hits.is_empty());
    server.stop().await.unwrap();

    // --read-only: writes refused, nothing in the directory changes.
    let mut options = ServeOptions::default();
    options.writes.read_only = true;
    let server = TestServer::start(&dir, options).await.unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let status = client.upsert(batch(vec![good()], false)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("--read-only"), "{status:?}");
    let status = client.delete(vec!["s1".into()]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    server.stop().await.unwrap();

    // A single-segment index cannot take writes, and says how to get one that can.
    let synth = synthetic_index_full(50, 2, DIM, 3, None, false).unwrap();
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let status = client.upsert(batch(vec![good()], false)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("single segment") && status.message().contains("create"),
        "{status:?}"
    );
    let info = client.index_info().await.unwrap().writes.unwrap();
    assert!(
        !info.writable && info.reason.contains("single segment"),
        "{info:?}"
    );
    server.stop().await.unwrap();
}

/// Writers, refreshes, seals and merges at once: every write completes (the log's locks are
/// taken in one order), and every acknowledged document is searchable once at the end.
#[test]
fn concurrent_writes_seals_and_merges_complete() {
    let synth = synthetic_index_full(300, 2, DIM, 5, None, false).unwrap();
    let docs = new_docs(&synth.corpus);
    let work = tempfile::tempdir().unwrap();
    let dir = empty_index(work.path(), None);
    let live = std::sync::Arc::new(LiveIndex::open(&dir, LiveOptions::default()).unwrap());
    let (done, finished) = std::sync::mpsc::channel();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (live, docs, done) = (live.clone(), docs.clone(), done.clone());
            std::thread::spawn(move || {
                for round in 0..3 {
                    for batch in docs.chunks(7).skip(w).step_by(4) {
                        live.upsert(batch.to_vec()).unwrap();
                    }
                    if round == 1 {
                        // The first document of each of its own batches.
                        let ids = docs.chunks(7).skip(w).step_by(4).map(|b| b[0].id.clone());
                        live.delete(ids.collect()).unwrap();
                    }
                }
                done.send(()).unwrap();
            })
        })
        .collect();
    let maintainer = {
        let live = live.clone();
        std::thread::spawn(move || {
            for _ in 0..40 {
                live.refresh().unwrap();
                live.seal().unwrap();
                while live.merge_step().unwrap() {}
            }
        })
    };
    for _ in 0..4 {
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a writer did not finish within 120 s: writes are blocked");
    }
    writers.into_iter().for_each(|w| w.join().unwrap());
    maintainer.join().unwrap();
    live.refresh().unwrap();
    let view = live.view();
    // The last round rewrote every document after the deletes of round 1.
    assert_eq!(view.live_count(), docs.len() as u64);
    let mut seen = std::collections::HashSet::new();
    for segment in view.segments() {
        let deleted = segment.tombstones().current();
        for d in (0..segment.doc_count() as u32).filter(|d| !deleted.contains(*d)) {
            let id = segment.external_id(d).unwrap().to_string();
            assert!(seen.insert(id.clone()), "{id} is live twice");
        }
    }
    assert_eq!(seen.len(), docs.len());
}
