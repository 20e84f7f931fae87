//! Admin is not search, over gRPC on loopback: search tokens cannot delete or reload (and
//! nothing changes when they try), admin tokens can and also search, a server with search
//! tokens but no admin token refuses every Admin call, `--admin-listen` moves Admin to its own
//! port, reloads stay under the index root (`..` and symlinks cannot leave it), and a Delete
//! with too many ids is RESOURCE_EXHAUSTED.

use std::path::{Path, PathBuf};
use tandem_client::queries::{QueryKnobs, QuerySet};
use tandem_client::{ConnectOptions, TandemClient};
use tandem_proto::v1::FirstStage;
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

fn knobs() -> QueryKnobs {
    QueryKnobs {
        k: Some(3),
        kappa: Some(10),
        first_stage: FirstStage::Exact,
        ..QueryKnobs::default()
    }
}

/// A client of `url` sending `token` (none when `None`).
async fn client(url: &str, token: Option<&str>) -> TandemClient {
    let options = ConnectOptions {
        token: token.map(str::to_string),
        ..ConnectOptions::default()
    };
    TandemClient::connect_with(url, &options).await.unwrap()
}

fn tokens(token: &str) -> Option<Tokens> {
    Some(Tokens::new([token.to_string()]))
}

/// Asserts `result` failed with `code` and a message containing `needle`.
fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(needle), "{status:?}");
}

async fn health_status(url: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_tokens_cannot_write_and_admin_tokens_can() {
    let synth = synthetic_index(300, 3, 16, 61).unwrap();
    let qs = queries(&synth);
    let options = ServeOptions {
        auth: tokens("reader"),
        admin_auth: tokens("writer"),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let mut reader = client(&server.url, Some("reader")).await;
    let mut writer = client(&server.url, Some("writer")).await;
    let mut anonymous = client(&server.url, None).await;

    let hits = reader.search(qs.request(0, &knobs())).await.unwrap().hits;
    assert_eq!(hits.len(), 3);
    let victim = hits[0].doc_id.clone();

    // A search token on an Admin call: PERMISSION_DENIED, and nothing is deleted or reloaded.
    refused(
        reader.delete(vec![victim.clone()]).await,
        Code::PermissionDenied,
        "admin rights are needed",
    );
    refused(
        reader.reload_index("").await,
        Code::PermissionDenied,
        "admin rights are needed",
    );
    let info = reader.index_info().await.unwrap();
    assert_eq!((info.deleted_count, info.live_count), (0, 300));
    assert!(info.index_loaded_seconds_ago <= info.uptime_seconds);
    let again = reader.search(qs.request(0, &knobs())).await.unwrap().hits;
    assert_eq!(
        again[0].doc_id, victim,
        "the refused delete deleted nothing"
    );

    // No token, or an unknown one: UNAUTHENTICATED, on both services.
    refused(
        anonymous.delete(vec![victim.clone()]).await,
        Code::Unauthenticated,
        "missing",
    );
    refused(
        anonymous.search(qs.request(0, &knobs())).await,
        Code::Unauthenticated,
        "missing",
    );
    let mut guessing = client(&server.url, Some("writer2")).await;
    refused(
        guessing.delete(vec![victim.clone()]).await,
        Code::Unauthenticated,
        "not accepted",
    );

    // An admin token deletes, reloads, and searches too.
    let reply = writer.delete(vec![victim.clone()]).await.unwrap();
    assert_eq!((reply.deleted, reply.deleted_count), (1, 1));
    let after = writer.search(qs.request(0, &knobs())).await.unwrap().hits;
    assert!(after.iter().all(|h| h.doc_id != victim), "{after:?}");
    let reloaded = writer.reload_index("").await.unwrap();
    assert_eq!(reloaded.info.unwrap().deleted_count, 1);
    // The reader still searches (and sees the delete).
    let seen = reader.search(qs.request(0, &knobs())).await.unwrap().hits;
    assert!(seen.iter().all(|h| h.doc_id != victim));
    assert_eq!(health_status(&server.url).await, 1, "health needs no token");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_search_tokens_and_no_admin_token_admin_calls_are_refused() {
    let synth = synthetic_index(200, 2, 16, 62).unwrap();
    let qs = queries(&synth);
    let options = ServeOptions {
        auth: tokens("reader"),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let mut reader = client(&server.url, Some("reader")).await;
    assert_eq!(
        reader
            .search(qs.request(0, &knobs()))
            .await
            .unwrap()
            .hits
            .len(),
        3
    );
    refused(
        reader.delete(vec!["d0000001".into()]).await,
        Code::PermissionDenied,
        "no admin credentials configured",
    );
    refused(
        reader.reload_index("").await,
        Code::PermissionDenied,
        "--admin-tokens-file",
    );
    refused(
        client(&server.url, None)
            .await
            .delete(vec!["d0000001".into()])
            .await,
        Code::Unauthenticated,
        "missing",
    );
    assert_eq!(reader.index_info().await.unwrap().deleted_count, 0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_admin_and_the_main_port_refuses_it() {
    let synth = synthetic_index(250, 2, 16, 63).unwrap();
    let qs = queries(&synth);
    let options = ServeOptions {
        auth: tokens("reader"),
        admin_auth: tokens("writer"),
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_admin_listener(&synth.index, options)
        .await
        .unwrap();
    let admin_url = server.admin_url.clone().unwrap();
    assert_ne!(admin_url, server.url);

    // The main port: search as usual, Admin refused even with an admin token.
    let mut main = client(&server.url, Some("writer")).await;
    assert_eq!(
        main.search(qs.request(0, &knobs()))
            .await
            .unwrap()
            .hits
            .len(),
        3
    );
    refused(
        main.delete(vec!["d0000001".into()]).await,
        Code::Unimplemented,
        "--admin-listen",
    );
    refused(
        main.reload_index("").await,
        Code::Unimplemented,
        "admin listener",
    );
    assert_eq!(main.index_info().await.unwrap().deleted_count, 0);

    // The admin port: Admin with an admin token, no search, health open.
    let mut admin = client(&admin_url, Some("writer")).await;
    let reply = admin.delete(vec!["d0000001".into()]).await.unwrap();
    assert_eq!(reply.deleted, 1);
    assert_eq!(
        admin
            .reload_index("")
            .await
            .unwrap()
            .info
            .unwrap()
            .deleted_count,
        1
    );
    refused(
        client(&admin_url, Some("reader"))
            .await
            .delete(vec!["d0000002".into()])
            .await,
        Code::PermissionDenied,
        "admin rights",
    );
    refused(
        client(&admin_url, None)
            .await
            .delete(vec!["d0000002".into()])
            .await,
        Code::Unauthenticated,
        "missing",
    );
    refused(
        admin.search(qs.request(0, &knobs())).await,
        Code::Unimplemented,
        "tandem.v1.Search",
    );
    assert_eq!(health_status(&admin_url).await, 1);
    assert_eq!(main.index_info().await.unwrap().deleted_count, 1);
    server.stop().await.unwrap();
}

/// Moves the index of `synth` to `to` (same filesystem), keeping `synth` for its corpus.
fn move_index(synth: &SyntheticIndex, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(&synth.index, to).unwrap();
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_stay_under_the_index_root() {
    let work = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        synthetic_index(300, 2, 16, 64).unwrap(),
        synthetic_index(450, 2, 16, 65).unwrap(),
        synthetic_index(120, 2, 16, 66).unwrap(),
    );
    let root = work.path().join("indexes");
    let v1 = move_index(&a, &root.join("v1"));
    let v2 = move_index(&b, &root.join("v2"));
    let outside = move_index(&c, &work.path().join("outside/v3"));
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(&v2, root.join("latest")).unwrap();
    let real_v2 = v2.canonicalize().unwrap();

    let options = ServeOptions {
        index_root: Some(root.clone()),
        ..ServeOptions::default()
    };
    let server = TestServer::start(&v1, options).await.unwrap();
    let mut admin = client(&server.url, None).await;
    // A relative path is taken from the root.
    let info = admin.reload_index("v2").await.unwrap().info.unwrap();
    assert_eq!(info.doc_count, 450);
    assert_eq!(info.path, real_v2.display().to_string());
    let escapes = [
        outside.display().to_string(),
        "../outside/v3".to_string(),
        "v2/../../outside/v3".to_string(),
        root.join("../outside/v3").display().to_string(),
        "escape".to_string(),
        "/".to_string(),
    ];
    for path in &escapes {
        let status = admin.reload_index(path).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{path}: {status:?}");
        assert!(
            status.message().starts_with("path: ") && status.message().contains("index root"),
            "{path}: {status:?}"
        );
        assert_eq!(admin.index_info().await.unwrap().doc_count, 450, "{path}");
    }
    // A symlink that stays under the root, the root's own path, and the served directory.
    let info = admin.reload_index("latest").await.unwrap().info.unwrap();
    assert_eq!(info.path, real_v2.display().to_string());
    let absolute = v1.display().to_string();
    assert_eq!(
        admin
            .reload_index(&absolute)
            .await
            .unwrap()
            .info
            .unwrap()
            .doc_count,
        300
    );
    assert_eq!(
        admin
            .reload_index("")
            .await
            .unwrap()
            .info
            .unwrap()
            .doc_count,
        300
    );
    refused(
        admin.reload_index("v9").await,
        Code::FailedPrecondition,
        "previous index keeps serving",
    );
    server.stop().await.unwrap();

    // Without --index-root: the parent directory of the index served at start.
    let server = TestServer::start(&v1, ServeOptions::default())
        .await
        .unwrap();
    let mut admin = client(&server.url, None).await;
    assert_eq!(
        admin
            .reload_index("v2")
            .await
            .unwrap()
            .info
            .unwrap()
            .doc_count,
        450
    );
    refused(
        admin.reload_index(&outside.display().to_string()).await,
        Code::PermissionDenied,
        "path: ",
    );
    refused(
        admin.reload_index("escape").await,
        Code::PermissionDenied,
        "path: ",
    );
    server.stop().await.unwrap();

    // An index outside the configured root is not served at all.
    let options = ServeOptions {
        index_root: Some(root.clone()),
        ..ServeOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused_start = tandem_server::serve(
        tandem_engine::Index::open(&outside).unwrap(),
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
        refused_start.to_string().contains("not under --index-root"),
        "{refused_start:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_are_bounded_and_report_unknown_ids_once_in_order() {
    let synth = synthetic_index(200, 2, 16, 67).unwrap();
    let options = ServeOptions {
        max_delete_ids: 5,
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let mut admin = client(&server.url, None).await;
    let six: Vec<String> = (1..=6).map(|i| format!("d{i:07}")).collect();
    let status = admin.delete(six.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("ids: 6 ids exceed")
            && status.message().contains("max_delete_ids = 5"),
        "{status:?}"
    );
    assert_eq!(admin.index_info().await.unwrap().deleted_count, 0);
    let ids: Vec<String> = ["x3", "x1", "x3", "d0000002", "x1", "x2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let reply = admin.delete(ids[..5].to_vec()).await.unwrap();
    assert_eq!(reply.deleted, 1);
    assert_eq!(reply.unknown_ids, ["x3", "x1"]);
    server.stop().await.unwrap();

    // Unknown ids are reported each once, in the order of first appearance, however many repeat
    // (the bookkeeping is a hash set; its speed belongs to benchmarks, not to a timed test).
    let options = ServeOptions {
        max_delete_ids: 300_000,
        ..ServeOptions::default()
    };
    let server = TestServer::start(&synth.index, options).await.unwrap();
    let mut admin = client(&server.url, None).await;
    let mut many: Vec<String> = (0..299_990).map(|i| format!("gone-{i}")).collect();
    many.extend((0..10).map(|i| format!("gone-{i}")));
    let reply = admin.delete(many.clone()).await.unwrap();
    assert_eq!(reply.unknown_ids.len(), 299_990);
    assert_eq!(reply.unknown_ids[..], many[..299_990]);
    server.stop().await.unwrap();

    // The default limit takes 100,000 ids and no more.
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut admin = client(&server.url, None).await;
    many.truncate(100_000);
    assert_eq!(
        admin.delete(many.clone()).await.unwrap().unknown_ids.len(),
        100_000
    );
    many.push("one-too-many".into());
    refused(
        admin.delete(many).await,
        Code::ResourceExhausted,
        "max_delete_ids = 100000",
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_everything_is_open() {
    let synth = synthetic_index(150, 2, 16, 68).unwrap();
    let server = TestServer::start_with_admin_listener(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let mut admin = client(server.admin_url.as_deref().unwrap(), None).await;
    assert_eq!(
        admin.delete(vec!["d0000003".into()]).await.unwrap().deleted,
        1
    );
    let mut main = client(&server.url, None).await;
    assert_eq!(main.index_info().await.unwrap().deleted_count, 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_speaks_tls_too() {
    let synth = synthetic_index(150, 2, 16, 69).unwrap();
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
        admin_auth: tokens("writer"),
        ..ServeOptions::default()
    };
    let server = TestServer::start_with_admin_listener(&synth.index, options)
        .await
        .unwrap();
    let admin_url = server.admin_url.clone().unwrap();
    assert!(admin_url.starts_with("https://"), "{admin_url}");
    let trusted = ConnectOptions {
        tls_ca: Some(cert_path),
        tls_domain: Some("localhost".into()),
        token: Some("writer".into()),
    };
    let mut admin = TandemClient::connect_with(&admin_url, &trusted)
        .await
        .unwrap();
    assert_eq!(
        admin.delete(vec!["d0000004".into()]).await.unwrap().deleted,
        1
    );
    // A plaintext client gets no answer from the admin port either.
    let plain = admin_url.replacen("https://", "http://", 1);
    let answered = match TandemClient::connect(&plain).await {
        Ok(mut c) => c.delete(vec!["d0000005".into()]).await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a plaintext call must fail against TLS");
    server.stop().await.unwrap();
}
