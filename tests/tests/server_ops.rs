//! The server as an operator runs it, over gRPC on loopback: a bounded queue answering
//! RESOURCE_EXHAUSTED, client deadlines answering DEADLINE_EXCEEDED, SearchStream in order with
//! per-query errors, the open-stream limit, Prometheus metrics, bearer-token auth (health
//! stays open), TLS, and hot reload that keeps the old index on failure.

use std::time::Duration;
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::{ConnectOptions, TandemClient};
use tandem_proto::v1::search_stream_response::Result as StreamResult;
use tandem_proto::v1::{FirstStage, SearchRequest};
use tandem_server::auth::Tokens;
use tandem_server::config::{ServeOptions, TlsFiles};
use tandem_tests::{synthetic_index, SyntheticIndex, TestServer};
use tonic::Code;

fn queries(synth: &SyntheticIndex) -> QuerySet {
    QuerySet::load(
        &synth.corpus.join("queries.jsonl"),
        Some(&synth.corpus.join("query_vectors.npy")),
        Some(&synth.corpus.join("query_lens.npy")),
    )
    .unwrap()
}

fn knobs(k: u32, kappa: u32) -> QueryKnobs {
    QueryKnobs {
        k: Some(k),
        kappa: Some(kappa),
        first_stage: FirstStage::Exact,
        ..QueryKnobs::default()
    }
}

/// Plain HTTP/1.1 GET of `url` (`http://host:port/path`); returns the body.
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_resource_exhausted_and_deadlines_are_deadline_exceeded() {
    let synth = synthetic_index(3000, 8, 32, 21).unwrap();
    let qs = queries(&synth);
    let options = ServeOptions {
        workers: 1,
        max_queue: 1,
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let client = TandemClient::connect(&server.url).await.unwrap();
    // Reranking every matching document makes each query slow enough to pile up.
    let slow = qs.request(0, &knobs(10, 3000));

    let mut calls = Vec::new();
    for _ in 0..64 {
        let (mut client, request) = (client.clone(), slow.clone());
        calls.push(tokio::spawn(async move { client.search(request).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("max_queue"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");

    server.stop().await.unwrap();

    // A call that cannot be answered in time (the only worker is busy with a long batch) gets
    // DEADLINE_EXCEEDED from the server (not the client's own CANCELLED), and the server stays
    // healthy.
    let options = ServeOptions {
        workers: 1,
        max_queue: 16,
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let mut raw = tandem_proto::v1::search_client::SearchClient::connect(server.url.clone())
        .await
        .unwrap();
    let long = tandem_proto::v1::SearchBatchRequest {
        requests: vec![slow.clone(); 1000],
    };
    let mut busy = raw.clone();
    let hog = tokio::spawn(async move { busy.search_batch(long).await });
    // Until the hog occupies the worker, calls may still be answered in time; then one must
    // run out of time.
    let mut expired = false;
    for _ in 0..100 {
        // The deadline travels as the `grpc-timeout` header only: a client-side timer of the
        // same length would race the server's answer and could cancel the call first.
        let mut request = tonic::Request::new(slow.clone());
        request.metadata_mut().insert(
            "grpc-timeout",
            tonic::metadata::MetadataValue::from_static("200m"),
        );
        match raw.search(request).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(status) => {
                assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
                expired = true;
                break;
            }
        }
    }
    assert!(expired, "no call ran out of time behind a 1000-query batch");
    let mut batch = tonic::Request::new(tandem_proto::v1::SearchBatchRequest {
        requests: vec![slow.clone(); 4],
    });
    batch.set_timeout(Duration::from_millis(200));
    let status = raw.search_batch(batch).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        hog.await.unwrap().unwrap().into_inner().responses.len(),
        1000
    );
    let fine = client.search(qs.request(1, &knobs(5, 20))).await.unwrap();
    assert_eq!(fine.hits.len(), 5);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_stream_answers_in_order_with_per_query_errors_and_limits_streams() {
    let synth = synthetic_index(800, 12, 16, 4).unwrap();
    let qs = queries(&synth);
    let options = ServeOptions {
        max_streams: 1,
        stream_window: 3,
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    let mut requests: Vec<SearchRequest> = (0..qs.len())
        .map(|i| qs.request(i, &knobs(5, 20)))
        .collect();
    // A bad query in the middle does not break the stream.
    requests[5].k = Some(0);
    let mut expected = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        if i != 5 {
            expected.push(Some(client.search(r.clone()).await.unwrap()));
        } else {
            expected.push(None);
        }
    }
    let mut answers = client
        .search_stream(tokio_stream::iter(requests.clone()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(message) = answers.message().await.unwrap() {
        got.push(message.result.unwrap());
    }
    assert_eq!(got.len(), requests.len());
    for (i, (answer, want)) in got.into_iter().zip(expected).enumerate() {
        match (answer, want) {
            (StreamResult::Response(r), Some(want)) => {
                assert_eq!(r.query_id, requests[i].query_id);
                assert_eq!(r.hits, want.hits, "query {i}");
            }
            (StreamResult::Error(e), None) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert!(e.message.contains("k"), "{e:?}");
                assert_eq!(e.query_id, requests[i].query_id);
            }
            (answer, _) => panic!("query {i}: unexpected {answer:?}"),
        }
    }

    // max_streams = 1: while one stream is open, a second is refused.
    let (hold, held) = tokio::sync::mpsc::channel::<SearchRequest>(1);
    let mut open = client
        .search_stream(tokio_stream::wrappers::ReceiverStream::new(held))
        .await
        .unwrap();
    hold.send(requests[0].clone()).await.unwrap();
    assert!(open.message().await.unwrap().is_some());
    let mut second = client.clone();
    let refused = second
        .search_stream(tokio_stream::iter(vec![requests[0].clone()]))
        .await;
    let status = match refused {
        Err(status) => status,
        Ok(mut stream) => stream.message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_streams"), "{status:?}");
    drop(hold);
    assert!(open.message().await.unwrap().is_none());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_method_and_code_and_report_the_index() {
    let synth = synthetic_index(600, 6, 16, 8).unwrap();
    let qs = queries(&synth);
    let server = TestServer::start_with(&synth.index, ServeOptions::default(), true)
        .await
        .unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    for i in 0..qs.len() {
        client.search(qs.request(i, &knobs(5, 20))).await.unwrap();
    }
    let mut bad = qs.request(0, &knobs(5, 20));
    bad.k = Some(0);
    client.search(bad).await.unwrap_err();
    let info = client.index_info().await.unwrap();
    assert!(!info.server_version.is_empty() && !info.rustc_version.is_empty());

    // Every answer carries a request id: the client's own when it sent one, else a fresh one.
    let mut raw = tandem_proto::v1::search_client::SearchClient::connect(server.url.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(qs.request(0, &knobs(5, 20)));
    request
        .metadata_mut()
        .insert("x-request-id", "trace-123".parse().unwrap());
    let reply = raw.search(request).await.unwrap();
    assert_eq!(reply.metadata().get("x-request-id").unwrap(), "trace-123");
    let reply = raw.search(qs.request(0, &knobs(5, 20))).await.unwrap();
    assert!(reply.metadata().get("x-request-id").is_some());
    assert!(info.workers >= 1 && info.max_queue >= 1);
    let text = http_get(server.metrics_url.as_deref().unwrap()).await;
    for needle in [
        "tandem_requests_total{method=\"Search\",code=\"Ok\"} 8",
        "tandem_requests_total{method=\"Search\",code=\"InvalidArgument\"} 1",
        "tandem_query_latency_seconds_count{stage=\"total\"} 8",
        "tandem_query_latency_seconds_count{stage=\"rerank\"} 8",
        "tandem_candidates_reranked_count 8",
        "tandem_queue_depth 0",
        "tandem_index_documents 600",
        "tandem_index_token_vectors_resident_bytes",
        "tandem_index_out_of_service 0",
        "tandem_index_file_resident_bytes{file=\"tokens.packed\"}",
        "tandem_index_file_resident_bytes{file=\"postings.docs\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_everything_but_health() {
    let synth = synthetic_index(300, 3, 16, 9).unwrap();
    let qs = queries(&synth);
    let options = ServeOptions {
        auth: Some(Tokens::new(["s3cret".to_string()])),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let request = qs.request(0, &knobs(3, 10));

    let mut anonymous = TandemClient::connect(&server.url).await.unwrap();
    let status = anonymous.search(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = anonymous.index_info().await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = anonymous.reload_index("").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = anonymous.delete(vec!["0".into()]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let wrong = ConnectOptions {
        token: Some("guess".into()),
        ..ConnectOptions::default()
    };
    let mut guessing = TandemClient::connect_with(&server.url, &wrong)
        .await
        .unwrap();
    assert_eq!(
        guessing.search(request.clone()).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let right = ConnectOptions {
        token: Some("s3cret".into()),
        ..ConnectOptions::default()
    };
    let mut authed = TandemClient::connect_with(&server.url, &right)
        .await
        .unwrap();
    assert_eq!(authed.search(request).await.unwrap().hits.len(), 3);

    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status, 1, "SERVING without a token");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_its_certificate() {
    let synth = synthetic_index(300, 3, 16, 10).unwrap();
    let qs = queries(&synth);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let options = ServeOptions {
        tls: Some(TlsFiles {
            cert: cert_path.clone(),
            key: key_path,
        }),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    assert!(server.url.starts_with("https://"));
    let trusted = ConnectOptions {
        tls_ca: Some(cert_path),
        tls_domain: Some("localhost".into()),
        ..ConnectOptions::default()
    };
    let mut client = TandemClient::connect_with(&server.url, &trusted)
        .await
        .unwrap();
    let reply = client.search(qs.request(0, &knobs(3, 10))).await.unwrap();
    assert_eq!(reply.hits.len(), 3);
    // A plaintext client gets no answer from the TLS port.
    let plain_url = server.url.replacen("https://", "http://", 1);
    let plaintext = match TandemClient::connect(&plain_url).await {
        Ok(mut c) => c.index_info().await.is_err(),
        Err(_) => true,
    };
    assert!(plaintext, "a plaintext call must fail against TLS");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_index_and_a_failed_reload_keeps_the_old_one() {
    let first = synthetic_index(300, 3, 16, 11).unwrap();
    let second = synthetic_index(450, 3, 16, 12).unwrap();
    let qs = queries(&first);
    // The indexes are in different temporary directories: reloads may load any of them.
    let options = ServeOptions {
        index_root: Some(std::env::temp_dir()),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&first.index, options).await.unwrap();
    let mut client = TandemClient::connect(&server.url).await.unwrap();
    assert_eq!(client.index_info().await.unwrap().doc_count, 300);

    let reply = client
        .reload_index(&second.index.display().to_string())
        .await
        .unwrap();
    assert_eq!(reply.info.unwrap().doc_count, 450);
    let info = client.index_info().await.unwrap();
    assert_eq!(info.doc_count, 450);
    assert_eq!(info.path, second.index.display().to_string());

    // A corrupt directory: refused, and the second index keeps serving.
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("manifest.json"), "{").unwrap();
    let status = client
        .reload_index(&broken.path().display().to_string())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("previous index keeps serving"),
        "{status:?}"
    );
    assert_eq!(client.index_info().await.unwrap().doc_count, 450);
    let hits = client.search(qs.request(0, &knobs(3, 10))).await.unwrap();
    assert_eq!(hits.hits.len(), 3);

    // An empty path reloads the directory being served.
    let reply = client.reload_index("").await.unwrap();
    assert_eq!(reply.info.unwrap().doc_count, 450);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_the_server_cannot_run_with_are_refused_before_serving() {
    let synth = synthetic_index(100, 1, 16, 13).unwrap();
    for (options, setting) in [
        (
            ServeOptions {
                stream_window: 0,
                ..ServeOptions::default()
            },
            "--stream-window = 0",
        ),
        (
            ServeOptions {
                workers: 0,
                ..ServeOptions::default()
            },
            "--workers = 0",
        ),
        (
            ServeOptions {
                max_queue: usize::MAX,
                ..ServeOptions::default()
            },
            "--max-queue",
        ),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = tandem_server::serve(
            tandem_engine::Index::open(&synth.index).unwrap(),
            options,
            tandem_server::Listeners {
                grpc: listener,
                admin: None,
                metrics: None,
            },
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().starts_with("invalid server options: ")
                && error.to_string().contains(setting),
            "{error:#}"
        );
    }
}
