//! Bad requests over gRPC: each class gets its code (mostly INVALID_ARGUMENT, RESOURCE_EXHAUSTED
//! for limits) with a message naming the field or limit, and the server keeps serving. The
//! classes and their codes are listed in `docs/bad-input.md`. Beyond what a typed client can
//! send, hand-made calls carry undecodable protobuf, broken gRPC frames, wrong content types and
//! unknown methods, and raw bytes that are not HTTP/2 at all. Also: health and reflection are
//! served.

use bytes::{Buf, Bytes};
use half::f16;
use http_body_util::BodyExt;
use prost::Message;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_proto::v1::search_stream_response::Result as StreamResult;
use tandem_proto::v1::{
    FirstStage, Query, Rerank, SearchBatchRequest, SearchRequest, SearchStreamResponse,
    SparseVector, TokenVectors,
};
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index, synthetic_index_with, SyntheticIndex, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceExt;

const DIM: usize = 16;

struct Fixture {
    _synth: tandem_tests::SyntheticIndex,
    server: TestServer,
    client: TandemClient,
    good: SearchRequest,
}

async fn fixture(options: ServeOptions) -> Fixture {
    fixture_on(synthetic_index(300, 3, DIM, 5).unwrap(), options).await
}

async fn fixture_on(synth: SyntheticIndex, options: ServeOptions) -> Fixture {
    let queries = QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap();
    let good = queries.request(0, &QueryKnobs::default());
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let client = TandemClient::connect(&server.url).await.unwrap();
    Fixture {
        _synth: synth,
        server,
        client,
        good,
    }
}

/// Sends `request`, expects `code` with every `needle` in the message, then checks a good query
/// still works.
async fn expect_error(f: &mut Fixture, request: SearchRequest, code: Code, needles: &[&str]) {
    let status = f
        .client
        .search(request)
        .await
        .expect_err("the request must fail");
    assert_eq!(status.code(), code, "{}", status.message());
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{needle:?} not in {:?}",
            status.message()
        );
    }
    let ok = f
        .client
        .search(f.good.clone())
        .await
        .expect("the server keeps serving");
    assert!(!ok.hits.is_empty());
}

fn with_query(good: &SearchRequest, edit: impl FnOnce(&mut Query)) -> SearchRequest {
    let mut request = good.clone();
    edit(request.query.as_mut().unwrap());
    request
}

fn vectors(q: &mut Query) -> &mut TokenVectors {
    q.vectors.as_mut().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_bad_request_is_refused_with_its_field() {
    let mut f = fixture(ServeOptions::default()).await;
    let good = f.good.clone();

    // Wrong dim, and values that do not fill whole rows.
    let r = with_query(&good, |q| vectors(q).dim = DIM as u32 + 1);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors.dim", "index dim 16"],
    )
    .await;
    let r = with_query(&good, |q| {
        vectors(q).values.pop();
    });
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "multiple of dim"],
    )
    .await;

    // NaN / infinite values.
    let r = with_query(&good, |q| {
        let first = q.sparse_tokens.keys().next().unwrap().clone();
        q.sparse_tokens.insert(first, f32::NAN);
    });
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.sparse_tokens", "finite"],
    )
    .await;
    let r = with_query(&good, |q| vectors(q).values[3] = f32::INFINITY);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "not finite"],
    )
    .await;
    let r = with_query(&good, |q| {
        q.sparse_tokens.clear();
        q.sparse = Some(SparseVector {
            indices: vec![1, 2],
            values: vec![1.0, -0.5],
        });
    });
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.sparse.values[1]", "finite and >= 0"],
    )
    .await;

    // Empty or missing query, ids out of range, duplicate ids, mismatched arrays, both forms.
    let r = with_query(&good, |q| q.sparse_tokens.clear());
    expect_error(&mut f, r, Code::InvalidArgument, &["query.sparse", "empty"]).await;
    let mut r = good.clone();
    r.query = None;
    expect_error(&mut f, r, Code::InvalidArgument, &["query", "missing"]).await;
    let sparse = |indices: Vec<u32>, values: Vec<f32>| {
        with_query(&good, |q| {
            q.sparse_tokens.clear();
            q.sparse = Some(SparseVector { indices, values });
        })
    };
    let r = sparse(vec![5, 40_000], vec![1.0, 1.0]);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.sparse.indices[1]", "out of range"],
    )
    .await;
    let r = sparse(vec![5, 5], vec![1.0, 1.0]);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.sparse.indices", "more than once"],
    )
    .await;
    let r = sparse(vec![5, 6], vec![1.0]);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.sparse.values", "1 values for 2 indices"],
    )
    .await;
    let r = with_query(&good, |q| {
        q.sparse = Some(SparseVector {
            indices: vec![1],
            values: vec![1.0],
        })
    });
    expect_error(&mut f, r, Code::InvalidArgument, &["not both"]).await;

    // k = 0, k huge, kappa < k, kappa huge, CP/EE out of range, unknown rerank mode.
    let knobs = |edit: &dyn Fn(&mut SearchRequest)| {
        let mut r = good.clone();
        edit(&mut r);
        r
    };
    expect_error(
        &mut f,
        knobs(&|r| r.k = Some(0)),
        Code::InvalidArgument,
        &["k:", ">= 1"],
    )
    .await;
    expect_error(
        &mut f,
        knobs(&|r| r.k = Some(4_000_000_000)),
        Code::InvalidArgument,
        &["k:", "max_k = 1000"],
    )
    .await;
    let r = knobs(&|r| {
        r.k = Some(30);
        r.kappa = Some(20);
    });
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["kappa", "smaller than k = 30"],
    )
    .await;
    expect_error(
        &mut f,
        knobs(&|r| r.kappa = Some(u32::MAX)),
        Code::InvalidArgument,
        &["kappa", "max_kappa"],
    )
    .await;
    expect_error(
        &mut f,
        knobs(&|r| r.cp_alpha = Some(1.5)),
        Code::InvalidArgument,
        &["cp_alpha"],
    )
    .await;
    expect_error(
        &mut f,
        knobs(&|r| r.cp_alpha = Some(f32::NAN)),
        Code::InvalidArgument,
        &["cp_alpha"],
    )
    .await;
    // Fusion: an unknown method, a negative or non-finite weight, a non-positive RRF constant.
    expect_error(
        &mut f,
        knobs(&|r| r.fusion_method = 7),
        Code::InvalidArgument,
        &["fusion_method", "unknown value 7"],
    )
    .await;
    for weight in [-0.5, f32::NAN, f32::INFINITY] {
        expect_error(
            &mut f,
            knobs(&|r| r.fusion_weight = Some(weight)),
            Code::InvalidArgument,
            &["fusion_weight", "finite and >= 0"],
        )
        .await;
    }
    expect_error(
        &mut f,
        knobs(&|r| r.fusion_weight = Some(2e6)),
        Code::InvalidArgument,
        &["fusion_weight", "exceeds the limit of 1e6"],
    )
    .await;
    let r = knobs(&|r| {
        r.fusion_method = tandem_proto::v1::FusionMethod::Rrf as i32;
        r.rrf_k = Some(0.0);
    });
    expect_error(&mut f, r, Code::InvalidArgument, &["rrf_k", "> 0"]).await;
    expect_error(
        &mut f,
        knobs(&|r| r.rerank = 9),
        Code::InvalidArgument,
        &["rerank", "unknown value 9"],
    )
    .await;

    // Token vectors: missing when reranking, both encodings, broken f16 bytes, too many tokens.
    let r = with_query(&good, |q| q.vectors = None);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "required"],
    )
    .await;
    let r = with_query(&good, |q| vectors(q).f16_le = vec![0, 60]);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "exactly one of"],
    )
    .await;
    let r = with_query(&good, |q| {
        let v = vectors(q);
        v.values.clear();
        v.f16_le = vec![0; 3];
    });
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors.f16_le", "3 bytes"],
    )
    .await;
    let r = with_query(&good, |q| vectors(q).values = vec![0.1; DIM * 1025]);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "max_query_tokens = 1024"],
    )
    .await;

    // Zero-length vectors (a dim and no values), dim 0, values beyond the float16 range, f16
    // bytes that decode to NaN or infinity, or to a number of values that fills no whole row.
    let r = with_query(&good, |q| vectors(q).values.clear());
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "no values"],
    )
    .await;
    let r = with_query(&good, |q| vectors(q).dim = 0);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors.dim", "> 0"],
    )
    .await;
    let r = with_query(&good, |q| vectors(q).values[0] = 70_000.0);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "65504"],
    )
    .await;
    for special in [f16::NAN, f16::INFINITY] {
        let r = with_query(&good, |q| {
            let v = vectors(q);
            v.f16_le = v
                .values
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect();
            v.f16_le[..2].copy_from_slice(&special.to_le_bytes());
            v.values.clear();
        });
        expect_error(
            &mut f,
            r,
            Code::InvalidArgument,
            &["query.vectors", "not finite"],
        )
        .await;
    }
    let r = with_query(&good, |q| {
        let v = vectors(q);
        v.values.clear();
        v.f16_le = vec![0; 2 * (DIM + 1)];
    });
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.vectors", "multiple of dim 16"],
    )
    .await;

    // Token weights that are negative, infinite, or so large that scores would overflow.
    for (weight, needle) in [
        (-1.0, "finite and >= 0"),
        (f32::INFINITY, "finite and >= 0"),
        (f32::MAX, "exceeds the limit of 1e6"),
    ] {
        let r = with_query(&good, |q| {
            q.sparse_tokens.insert("w00001".into(), weight);
        });
        expect_error(
            &mut f,
            r,
            Code::InvalidArgument,
            &["query.sparse_tokens[\"w00001\"]", needle],
        )
        .await;
    }
    let r = sparse(vec![1, 2], vec![1.0, 1e7]);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.sparse.values[1]", "exceeds the limit of 1e6"],
    )
    .await;

    // Huge repeated fields: a million ids, ten thousand token strings (max_query_terms = 4096).
    let ids: Vec<u32> = (0..1_000_000).collect();
    let r = sparse(ids.clone(), vec![1.0; ids.len()]);
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["query.sparse:", "1000000 terms", "max_query_terms = 4096"],
    )
    .await;
    let r = with_query(&good, |q| {
        q.sparse_tokens = (0..10_000).map(|i| (format!("t{i}"), 1.0)).collect();
    });
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &[
            "query.sparse_tokens",
            "10000 terms",
            "max_query_terms = 4096",
        ],
    )
    .await;

    // First stage: an unknown value; the approximate stage's knobs out of range.
    expect_error(
        &mut f,
        knobs(&|r| r.first_stage = 5),
        Code::InvalidArgument,
        &["first_stage", "unknown value 5"],
    )
    .await;
    expect_error(
        &mut f,
        knobs(&|r| {
            r.first_stage = FirstStage::Approximate as i32;
            r.query_cut = Some(0);
        }),
        Code::InvalidArgument,
        &["query_cut", ">= 1"],
    )
    .await;
    expect_error(
        &mut f,
        knobs(&|r| {
            r.first_stage = FirstStage::Approximate as i32;
            r.rescore = Some(0);
        }),
        Code::InvalidArgument,
        &["rescore", ">= 1"],
    )
    .await;
    // A negative enum value (proto3 enums are open: any int32 arrives).
    expect_error(
        &mut f,
        knobs(&|r| r.rerank = -1),
        Code::InvalidArgument,
        &["rerank", "unknown value -1"],
    )
    .await;

    still_serving(&mut f).await;
    f.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_only_index_refuses_the_approximate_first_stage() {
    let synth = synthetic_index_with(200, 2, DIM, 6, None).unwrap();
    let mut f = fixture_on(synth, ServeOptions::default()).await;
    let mut r = f.good.clone();
    r.first_stage = FirstStage::Approximate as i32;
    expect_error(
        &mut f,
        r,
        Code::InvalidArgument,
        &["first_stage", "no approximate first stage"],
    )
    .await;
    // The approximate stage's knobs are ignored by the exact stage, even out of range.
    let mut r = f.good.clone();
    r.query_cut = Some(0);
    assert!(!f.client.search(r).await.unwrap().hits.is_empty());
    f.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_are_counted_and_f16_vectors_accepted() {
    let mut f = fixture(ServeOptions::default()).await;
    let baseline = f.client.search(f.good.clone()).await.unwrap();
    assert_eq!(baseline.unknown_tokens, 0);

    let r = with_query(&f.good, |q| {
        q.sparse_tokens.insert("no-such-token".into(), 1.0);
        q.sparse_tokens.insert("another unknown".into(), 2.0);
    });
    let reply = f.client.search(r).await.unwrap();
    assert_eq!(reply.unknown_tokens, 2);
    assert_eq!(reply.hits, baseline.hits);

    // The same vectors as float16 bytes give the same ranking (the synthetic query vectors are
    // float32; scores differ only by the f16 rounding of the query).
    let r = with_query(&f.good, |q| {
        let v = vectors(q);
        v.f16_le = v
            .values
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        v.values.clear();
    });
    let reply = f.client.search(r).await.unwrap();
    assert_eq!(reply.hits.len(), baseline.hits.len());
    for (a, b) in reply.hits.iter().zip(&baseline.hits) {
        assert!((a.score - b.score).abs() < 1e-2, "{a:?} vs {b:?}");
    }

    // Only unknown tokens: a valid query that matches nothing.
    let r = with_query(&f.good, |q| {
        q.sparse_tokens.clear();
        q.sparse_tokens.insert("zzz-unknown".into(), 1.0);
    });
    let reply = f.client.search(r).await.unwrap();
    assert_eq!((reply.hits.len(), reply.unknown_tokens), (0, 1));

    // Sparse only: no vectors needed, scores are the sparse scores.
    let mut r = with_query(&f.good, |q| q.vectors = None);
    r.rerank = Rerank::None as i32;
    let reply = f.client.search(r).await.unwrap();
    assert!(reply
        .hits
        .iter()
        .all(|h| h.maxsim_score.is_none() && h.score == h.sparse_score));
    f.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_message_limits_are_resource_exhausted() {
    let options = ServeOptions {
        max_batch: 4,
        max_message_bytes: 64 * 1024,
        ..ServeOptions::default()
    };
    let mut f = fixture(options).await;
    let mut raw = tandem_proto::v1::search_client::SearchClient::connect(f.server.url.clone())
        .await
        .unwrap();

    let status = raw
        .search_batch(SearchBatchRequest {
            requests: vec![f.good.clone(); 5],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("max_batch = 4"),
        "{}",
        status.message()
    );

    let mut bad_second = vec![f.good.clone(); 3];
    bad_second[1].k = Some(0);
    let status = raw
        .search_batch(SearchBatchRequest {
            requests: bad_second,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("requests[1].k"),
        "{}",
        status.message()
    );

    // Mixed dims in a batch: the odd one out is named by its position.
    let mut mixed = vec![f.good.clone(); 3];
    let v = mixed[2].query.as_mut().unwrap().vectors.as_mut().unwrap();
    v.dim = 8;
    let status = raw
        .search_batch(SearchBatchRequest { requests: mixed })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("requests[2].query.vectors.dim: 8 does not match the index dim 16"),
        "{}",
        status.message()
    );

    let huge = with_query(&f.good, |q| vectors(q).values = vec![0.1; 20_000]);
    let status = raw.search(huge).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("max_message_bytes"),
        "{}",
        status.message()
    );

    let ok = f.client.search(f.good.clone()).await.unwrap();
    assert!(!ok.hits.is_empty());
    let batch = raw
        .search_batch(SearchBatchRequest {
            requests: vec![f.good.clone(); 4],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(batch.responses.iter().all(|r| r.hits == ok.hits));
    f.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let f = fixture(ServeOptions::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(f.server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "tandem.v1.Search"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status, 1, "{service:?} is not SERVING");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"tandem.v1.Search".to_string()), "{names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    f.server.stop().await.unwrap();
}

/// Checks the server still answers: health is SERVING and a good query has hits.
async fn still_serving(f: &mut Fixture) {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let mut health = HealthClient::new(channel(f).await);
    let reply = health
        .check(HealthCheckRequest {
            service: "tandem.v1.Search".into(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(reply.status, 1, "tandem.v1.Search is not SERVING");
    let ok = f
        .client
        .search(f.good.clone())
        .await
        .expect("the server keeps serving");
    assert!(!ok.hits.is_empty());
}

async fn channel(f: &Fixture) -> Channel {
    tonic::transport::Endpoint::from_shared(f.server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// What a hand-made call got back.
struct RawReply {
    http: http::StatusCode,
    /// From the headers (a trailers-only answer) or else the trailers.
    status: Status,
    /// The payloads of the response's message frames.
    messages: Vec<Bytes>,
}

/// One gRPC message frame: the flag byte, the big-endian length, the payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    framed(flag, payload.len() as u32, payload)
}

/// A frame whose length prefix says `declared` whatever the payload's length.
fn framed(flag: u8, declared: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Sends `body` as it is on a POST to `path` (content type `application/grpc` unless `headers`
/// set another) and collects the answer.
async fn raw_call(
    channel: &Channel,
    method: http::Method,
    path: &str,
    headers: &[(&'static str, &'static str)],
    body: Vec<u8>,
) -> RawReply {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("te", "trailers")
        .header("content-type", "application/grpc");
    let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(body)));
    let mut request = request.body(body).unwrap();
    for &(name, value) in headers {
        request
            .headers_mut()
            .insert(name, http::HeaderValue::from_static(value));
    }
    let response = channel
        .clone()
        .oneshot(request)
        .await
        .expect("an HTTP answer");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the response body");
    let trailers = collected.trailers().cloned();
    let mut data = collected.to_bytes();
    let status = Status::from_header_map(&parts.headers)
        .or_else(|| trailers.as_ref().and_then(Status::from_header_map))
        .expect("a grpc-status");
    let mut messages = Vec::new();
    while data.remaining() >= 5 {
        let _flag = data.get_u8();
        let len = data.get_u32() as usize;
        messages.push(data.split_to(len));
    }
    RawReply {
        http: parts.status,
        status,
        messages,
    }
}

fn assert_status(what: &str, reply: &RawReply, code: Code, needles: &[&str]) {
    let status = &reply.status;
    assert_eq!(status.code(), code, "{what}: {status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{what}: {needle:?} not in {:?}",
            status.message()
        );
    }
}

const SEARCH: &str = "/tandem.v1.Search/Search";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_broken_frames_and_stray_calls_are_refused() {
    let options = ServeOptions {
        max_message_bytes: 64 * 1024,
        ..ServeOptions::default()
    };
    let mut f = fixture(options).await;
    let channel = channel(&f).await;
    let good = f.good.encode_to_vec();
    let post = http::Method::POST;

    // The baseline: the good request, framed by hand, is answered.
    let reply = raw_call(&channel, post.clone(), SEARCH, &[], frame(0, &good)).await;
    assert_eq!(
        (reply.http, reply.status.code()),
        (http::StatusCode::OK, Code::Ok)
    );
    assert_eq!(reply.messages.len(), 1);
    // Accepted: an unknown field (field 99, a varint), as proto3 specifies; a malformed
    // grpc-timeout, which tonic ignores (the call then has no deadline).
    let unknown_field = [good.as_slice(), &[0x98, 0x06, 1]].concat();
    let reply = raw_call(
        &channel,
        post.clone(),
        SEARCH,
        &[],
        frame(0, &unknown_field),
    )
    .await;
    assert_status("unknown field", &reply, Code::Ok, &[]);
    let reply = raw_call(
        &channel,
        post.clone(),
        SEARCH,
        &[("grpc-timeout", "soon")],
        frame(0, &good),
    )
    .await;
    assert_status("malformed grpc-timeout", &reply, Code::Ok, &[]);
    assert_eq!(reply.messages.len(), 1);

    // Protobuf that does not decode: INVALID_ARGUMENT with prost's reason and the field.
    let with = |extra: &[u8]| [good.as_slice(), extra].concat();
    // query_id (field 7) with bytes that are not UTF-8.
    let bad_id = with(&[0x3a, 2, 0xff, 0xfe]);
    // A sparse_tokens entry (Query field 2) whose key is not UTF-8, merged into the query.
    let entry = [&[0x0a, 2, 0xff, 0xfe, 0x15][..], &1.0f32.to_le_bytes()].concat();
    let query = [&[0x12, entry.len() as u8][..], &entry].concat();
    let bad_token = with(&[&[0x0a, query.len() as u8][..], &query].concat());
    let cases: [(&str, Vec<u8>, &[&str]); 6] = [
        (
            "garbage",
            vec![0xff; 12],
            &["request message", "not a valid protobuf"],
        ),
        (
            "field number 0",
            vec![0x00, 0x01],
            &["request message", "tag"],
        ),
        (
            "wrong wire type for k",
            with(&[0x12, 1, 5]),
            &["SearchRequest.k", "wire type"],
        ),
        (
            "a string field running past the end",
            with(&[0x3a, 16, b'a']),
            &["request message", "SearchRequest.query_id"],
        ),
        (
            "invalid UTF-8 in query_id",
            bad_id,
            &["SearchRequest.query_id", "UTF-8"],
        ),
        (
            "invalid UTF-8 in a sparse_tokens key",
            bad_token,
            &["sparse_tokens", "UTF-8"],
        ),
    ];
    for (what, payload, needles) in cases {
        let reply = raw_call(&channel, post.clone(), SEARCH, &[], frame(0, &payload)).await;
        assert_status(what, &reply, Code::InvalidArgument, needles);
    }
    // GetIndexInfo decodes its (empty) request the same way.
    let reply = raw_call(
        &channel,
        post.clone(),
        "/tandem.v1.Search/GetIndexInfo",
        &[],
        frame(0, &[0xff; 3]),
    )
    .await;
    assert_status(
        "GetIndexInfo garbage",
        &reply,
        Code::InvalidArgument,
        &["request message"],
    );

    // A well-formed empty message is a request without a query; no message at all is refused.
    let reply = raw_call(&channel, post.clone(), SEARCH, &[], frame(0, &[])).await;
    assert_status(
        "empty message",
        &reply,
        Code::InvalidArgument,
        &["query", "missing"],
    );
    let reply = raw_call(&channel, post.clone(), SEARCH, &[], Vec::new()).await;
    assert_status(
        "no message",
        &reply,
        Code::InvalidArgument,
        &["request message", "exactly one"],
    );

    // Broken framing: a truncated frame, the compressed flag without grpc-encoding, an unknown
    // flag byte (INTERNAL, as gRPC specifies for protocol violations); a length prefix above
    // max_message_bytes (RESOURCE_EXHAUSTED, before the body is read); an unsupported
    // grpc-encoding (UNIMPLEMENTED).
    let truncated = framed(0, good.len() as u32 + 100, &good);
    let reply = raw_call(&channel, post.clone(), SEARCH, &[], truncated).await;
    assert_status("truncated frame", &reply, Code::Internal, &["truncated"]);
    let reply = raw_call(&channel, post.clone(), SEARCH, &[], frame(1, &good)).await;
    assert_status(
        "compressed flag",
        &reply,
        Code::Internal,
        &["compressed-flag", "grpc-encoding"],
    );
    let reply = raw_call(&channel, post.clone(), SEARCH, &[], frame(7, &good)).await;
    assert_status("flag 7", &reply, Code::Internal, &["compression flag: 7"]);
    let reply = raw_call(
        &channel,
        post.clone(),
        SEARCH,
        &[],
        framed(0, 1 << 30, &good),
    )
    .await;
    assert_status(
        "declared length above the limit",
        &reply,
        Code::ResourceExhausted,
        &["max_message_bytes", "65536"],
    );
    let reply = raw_call(
        &channel,
        post.clone(),
        SEARCH,
        &[("grpc-encoding", "br")],
        frame(1, &good),
    )
    .await;
    assert_status("grpc-encoding br", &reply, Code::Unimplemented, &["`br`"]);

    // Calls that are not this server's: unknown methods and services, other content types,
    // other HTTP methods.
    for path in ["/tandem.v1.Search/Nope", "/tandem.v1.Nope/Search", "/"] {
        let reply = raw_call(&channel, post.clone(), path, &[], frame(0, &good)).await;
        assert_status(path, &reply, Code::Unimplemented, &[path, "no such method"]);
    }
    for content_type in ["application/json", "application/grpc-web"] {
        let reply = raw_call(
            &channel,
            post.clone(),
            SEARCH,
            &[("content-type", content_type)],
            frame(0, &good),
        )
        .await;
        assert_eq!(reply.http, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_status(
            content_type,
            &reply,
            Code::InvalidArgument,
            &["content-type", content_type],
        );
    }
    let reply = raw_call(&channel, http::Method::GET, SEARCH, &[], Vec::new()).await;
    assert_eq!(reply.http, http::StatusCode::METHOD_NOT_ALLOWED);
    assert_status("GET", &reply, Code::InvalidArgument, &[":method", "GET"]);

    // Bytes that are not HTTP/2 at all: the connection is closed, the server carries on.
    let addr = f.server.url.trim_start_matches("http://").to_string();
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: tandem\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        &[0u8; 64][..],
    ] {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(junk).await.unwrap();
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            socket.read_to_end(&mut sink),
        )
        .await;
        assert!(read.is_ok(), "the server kept a junk connection open");
    }

    still_serving(&mut f).await;
    f.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_bad_queries_and_fails_cleanly_on_bad_bytes() {
    let mut f = fixture(ServeOptions::default()).await;

    // A bad query in the middle: a StreamError in its place, the stream goes on.
    let mut bad = f.good.clone();
    bad.k = Some(0);
    bad.query_id = "bad".into();
    let requests = vec![f.good.clone(), bad, f.good.clone()];
    let mut answers = f
        .client
        .search_stream(tokio_stream::iter(requests))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        kinds.push(match answer.result.unwrap() {
            StreamResult::Response(r) => {
                assert!(!r.hits.is_empty());
                "ok".to_string()
            }
            StreamResult::Error(e) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.query_id, "bad");
                assert!(e.message.starts_with("k: must be >= 1"), "{}", e.message);
                "error".to_string()
            }
        });
    }
    assert_eq!(kinds, ["ok", "error", "ok"]);

    // An undecodable message in the middle: the query before it is answered, then the call
    // fails with INVALID_ARGUMENT (the stream cannot be resynchronised past bad bytes).
    let channel = channel(&f).await;
    let good = f.good.encode_to_vec();
    let body = [frame(0, &good), frame(0, &[0xff; 8]), frame(0, &good)].concat();
    let reply = raw_call(
        &channel,
        http::Method::POST,
        "/tandem.v1.Search/SearchStream",
        &[],
        body,
    )
    .await;
    assert_status(
        "undecodable stream message",
        &reply,
        Code::InvalidArgument,
        &["request message", "not a valid protobuf"],
    );
    assert_eq!(reply.messages.len(), 1, "the query before it is answered");
    let answer = SearchStreamResponse::decode(reply.messages[0].clone()).unwrap();
    assert!(matches!(answer.result, Some(StreamResult::Response(_))));

    // A truncated frame at the end of a stream: INTERNAL, after the answers before it.
    let body = [frame(0, &good), framed(0, good.len() as u32 + 100, &good)].concat();
    let reply = raw_call(
        &channel,
        http::Method::POST,
        "/tandem.v1.Search/SearchStream",
        &[],
        body,
    )
    .await;
    assert_status(
        "truncated stream frame",
        &reply,
        Code::Internal,
        &["truncated"],
    );
    assert_eq!(reply.messages.len(), 1);

    still_serving(&mut f).await;
    f.server.stop().await.unwrap();
}
