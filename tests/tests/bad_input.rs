//! Bad requests over gRPC: each class gets INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) with a
//! message naming the field or limit, and the server keeps serving. Also: health and
//! reflection are served.

use half::f16;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::TandemClient;
use tandem_proto::v1::{
    Query, Rerank, SearchBatchRequest, SearchRequest, SparseVector, TokenVectors,
};
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index, TestServer};
use tonic::Code;

const DIM: usize = 16;

struct Fixture {
    _synth: tandem_tests::SyntheticIndex,
    server: TestServer,
    client: TandemClient,
    good: SearchRequest,
}

async fn fixture(options: ServeOptions) -> Fixture {
    let synth = synthetic_index(300, 3, DIM, 5).unwrap();
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
        &["query.vectors", "not both"],
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
