//! The real `tandem-server` binary: it logs where it listens and what it loaded, answers,
//! shuts down gracefully on SIGTERM and SIGINT, refuses a corrupt index with `--verify full` or
//! takes it out of service after the background checksum pass, and runs the demo.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tandem_data::jsonl::parse_all;
use tandem_data::synth::{generate, SynthConfig};
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_proto::v1::search_client::SearchClient;
use tandem_proto::v1::{GetIndexInfoRequest, Query, Rerank, SearchRequest};

fn corpus(dir: &Path) {
    let config = SynthConfig {
        docs: 200,
        queries: 2,
        seed: 1,
        dim: Some(8),
        tokens_per_doc: 6,
        query_tokens: 4,
    };
    generate(&config, dir, &|_| {}).unwrap();
}

fn build(corpus: &Path, out: &Path) {
    let config = BuildConfig {
        docs: corpus.join("docs.jsonl"),
        vectors: corpus.join("doc_vectors.npy"),
        lens: corpus.join("doc_lens.npy"),
        int8_scale: None,
        vocab: Some(corpus.join("vocab.txt")),
        token_ids: false,
        out: out.to_path_buf(),
        overwrite: false,
        approx: Some(tandem_engine::approx::ApproxSettings::default()),
        codec: tandem_engine::tokens::Codec::F16,
        doc_tokens: None,
    };
    build_index(&config, &NoProgress).unwrap();
}

/// Starts the server and forwards its stderr lines to a channel.
fn start(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    (child, forward_lines(stderr))
}

/// Forwards the lines of `output` (a child's stdout or stderr) to a channel.
fn forward_lines(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a log line containing `needle`; returns it.
fn wait_for(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}

fn listen_addr(line: &str) -> String {
    let start = line.find("addr=").expect("addr in the log line") + 5;
    line[start..].split_whitespace().next().unwrap().to_string()
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the server did not exit within 30 s of the signal");
}

#[test]
fn serves_then_stops_gracefully_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let corpus_dir = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    corpus(&corpus_dir);
    let index = dir.path().join("index");
    build(&corpus_dir, &index);
    let queries = std::fs::read_to_string(corpus_dir.join("queries.jsonl")).unwrap();
    let first = parse_all(&queries, "queries.jsonl").unwrap().remove(0);
    let request = SearchRequest {
        query: Some(Query {
            sparse_tokens: first.terms.into_iter().collect(),
            ..Query::default()
        }),
        rerank: Rerank::None as i32,
        ..SearchRequest::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();

    for signal in ["TERM", "INT"] {
        let (mut child, lines) = start(&[
            "--index",
            index.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        let loaded = wait_for(&lines, "index loaded");
        assert!(
            loaded.contains("docs=200") && loaded.contains("dim=8"),
            "{loaded}"
        );
        let url = format!("http://{}", listen_addr(&wait_for(&lines, "listening")));
        let reply = runtime.block_on(async {
            let mut client = SearchClient::connect(url.clone()).await.unwrap();
            client.search(request.clone()).await.unwrap().into_inner()
        });
        assert!(!reply.hits.is_empty());
        let killed = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(killed.success());
        wait_for(&lines, &format!("SIG{signal} received"));
        let status = wait_exit(&mut child);
        assert!(status.success(), "exit status {status:?} after SIG{signal}");
    }
}

/// A copy of the index `from` at `to` with one byte of its token vectors flipped (a value
/// changes, nothing the open's checks of headers, sizes and invariants can see).
fn corrupt_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let tokens = to.join("tokens.packed");
    let mut bytes = std::fs::read(&tokens).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&tokens, bytes).unwrap();
}

/// The health statuses of the whole server ("") and of tandem.v1.Search.
fn health(runtime: &tokio::runtime::Runtime, url: &str) -> [i32; 2] {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let mut status = [0; 2];
        for (slot, service) in status.iter_mut().zip(["", "tandem.v1.Search"]) {
            let request = HealthCheckRequest {
                service: service.to_string(),
            };
            *slot = client.check(request).await.unwrap().into_inner().status;
        }
        status
    })
}

#[test]
fn a_corrupt_index_is_refused_before_serving_or_taken_out_of_service_after() {
    use tandem_proto::v1::admin_client::AdminClient;
    use tandem_proto::v1::ReloadIndexRequest;
    use tonic_health::ServingStatus;
    let dir = tempfile::tempdir().unwrap();
    let corpus_dir = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    corpus(&corpus_dir);
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    build(&corpus_dir, &good);
    corrupt_copy(&good, &bad);

    // --verify full: refused before listening, naming the file.
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(["--index", bad.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--verify", "full"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tokens.packed") && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("checksum mismatch").count(), 1, "{stderr}");

    // By default it is served at once, and the background pass takes it out of service.
    let (mut child, lines) = start(&["--index", bad.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let loaded = wait_for(&lines, "index loaded");
    assert!(loaded.contains("checksums=Background"), "{loaded}");
    let addr = listen_addr(&wait_for(&lines, "listening"));
    let url = format!("http://{addr}");
    let corrupt = wait_for(&lines, "THE INDEX IS CORRUPT");
    assert!(
        corrupt.contains("tokens.packed") && corrupt.contains("checksum mismatch"),
        "{corrupt}"
    );
    let not_serving = ServingStatus::NotServing as i32;
    let rt = runtime();
    assert_eq!(health(&rt, &url), [not_serving; 2]);
    let queries = std::fs::read_to_string(corpus_dir.join("queries.jsonl")).unwrap();
    let first = parse_all(&queries, "queries.jsonl").unwrap().remove(0);
    let search = SearchRequest {
        query: Some(Query {
            sparse_tokens: first.terms.into_iter().collect(),
            ..Query::default()
        }),
        rerank: Rerank::None as i32,
        ..SearchRequest::default()
    };
    let (refused, info) = rt.block_on(async {
        let mut client = SearchClient::connect(url.clone()).await.unwrap();
        let refused = client.search(search.clone()).await.unwrap_err();
        let info = client
            .get_index_info(GetIndexInfoRequest::default())
            .await
            .unwrap()
            .into_inner();
        (refused, info)
    });
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("out of service") && refused.message().contains("tokens.packed"),
        "{refused:?}"
    );
    assert!(
        info.checksums.starts_with("corrupt: "),
        "{}",
        info.checksums
    );

    // Reloading a good index brings the server back, and its own pass verifies it.
    let reload = |path: &Path| {
        rt.block_on(async {
            let mut admin = AdminClient::connect(url.clone()).await.unwrap();
            let request = ReloadIndexRequest {
                path: path.display().to_string(),
            };
            admin.reload_index(request).await.unwrap();
        })
    };
    reload(&good);
    let serving = ServingStatus::Serving as i32;
    assert_eq!(health(&rt, &url), [serving; 2]);
    wait_for(&lines, "checksums verified");
    let (hits, info) = rt.block_on(async {
        let mut client = SearchClient::connect(url.clone()).await.unwrap();
        let hits = client
            .search(search.clone())
            .await
            .unwrap()
            .into_inner()
            .hits;
        let info = client
            .get_index_info(GetIndexInfoRequest::default())
            .await
            .unwrap()
            .into_inner();
        (hits, info)
    });
    assert!(!hits.is_empty());
    assert_eq!(info.checksums, "verified");

    // And reloading the corrupt one takes it out again.
    reload(&bad);
    wait_for(&lines, "THE INDEX IS CORRUPT");
    assert_eq!(health(&rt, &url), [not_serving; 2]);
    stop(&mut child, &addr);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

#[test]
fn demo_builds_an_index_and_shows_queries() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(["--demo", "--listen", "127.0.0.1:0", "--demo-evalset"])
        .arg(dir.path().join("no-evalset-here"))
        .arg("--demo-dir")
        .arg(&demo_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = forward_lines(child.stdout.take().unwrap());
    wait_for(&rx, "demo queries over gRPC");
    let first_hit = wait_for(&rx, "maxsim");
    assert!(first_hit.contains("doc d"), "{first_hit}");
    wait_for(&rx, "tandem -- search");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(wait_exit(&mut child).success());
    assert!(demo_dir.join("index/manifest.json").exists());
}

/// An index of the synthetic corpus, in `dir/index`.
fn small_index(dir: &Path) -> std::path::PathBuf {
    let corpus_dir = dir.join("corpus");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    corpus(&corpus_dir);
    let index = dir.join("index");
    build(&corpus_dir, &index);
    index
}

/// Stops a server started by the test (SIGTERM) once it answers on `addr` (its signal handlers
/// are installed by then), and waits for it to exit.
fn stop(child: &mut Child, addr: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = SearchClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        // Any answer will do (UNAUTHENTICATED included): the server is serving.
        let _ = client.get_index_info(GetIndexInfoRequest::default()).await;
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = wait_exit(child);
    assert!(status.success(), "exit status {status:?} after SIGTERM");
}

#[test]
fn warns_at_start_when_search_and_writes_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let index = small_index(dir.path());
    let index = index.to_str().unwrap();
    let (mut child, lines) = start(&["--index", index, "--listen", "127.0.0.1:0"]);
    let addr = listen_addr(&wait_for(&lines, "listening"));
    let warning = wait_for(&lines, "authentication is off");
    assert!(
        warning.contains("WARN")
            && warning.contains("writes")
            && warning.contains("--auth-tokens-file")
            && warning.contains("--admin-tokens-file"),
        "{warning}"
    );
    stop(&mut child, &addr);

    // Search tokens and no admin token: Admin is refused, and the log says so.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args(["--index", index, "--listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("TANDEM_AUTH_TOKENS", "reader")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = forward_lines(child.stderr.take().unwrap());
    let addr = listen_addr(&wait_for(&lines, "listening"));
    let admin = wait_for(&lines, "admin listener");
    assert!(admin.contains("addr=127.0.0.1:"), "{admin}");
    assert_ne!(listen_addr(&admin), addr);
    let note = wait_for(&lines, "Admin calls (Delete, ReloadIndex) are refused");
    assert!(!note.contains("WARN"), "{note}");
    stop(&mut child, &addr);
}

#[test]
fn settings_name_their_source_and_later_sources_turn_booleans_off() {
    let dir = tempfile::tempdir().unwrap();
    let index = small_index(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args([
            "--index",
            index.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("TANDEM_STREAM_WINDOW", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--stream-window = 0: must be >= 1")
            && stderr.contains("given by the environment variable TANDEM_STREAM_WINDOW"),
        "{stderr}"
    );

    // `skip-checksums = true` in the file, turned off by the environment.
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "skip-checksums = true\nno-prefetch = true\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args([
            "--index",
            index.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--no-prefetch=false")
        .env("RUST_LOG", "info")
        .env("TANDEM_SKIP_CHECKSUMS", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = forward_lines(child.stderr.take().unwrap());
    let effective = wait_for(&lines, "effective configuration");
    assert!(
        effective.contains("verify: Background") && effective.contains("prefetch: true"),
        "{effective}"
    );
    let addr = listen_addr(&wait_for(&lines, "listening"));
    stop(&mut child, &addr);
}
