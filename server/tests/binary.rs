//! The real `tandem-server` binary: it logs where it listens and what it loaded, answers,
//! shuts down gracefully on SIGTERM and SIGINT, refuses a corrupt index, and runs the demo.

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

#[test]
fn refuses_a_corrupt_index_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let corpus_dir = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus_dir).unwrap();
    corpus(&corpus_dir);
    let index = dir.path().join("index");
    build(&corpus_dir, &index);
    let weights = index.join("postings.weights");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tandem-server"))
        .args([
            "--index",
            index.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("postings.weights") && stderr.contains("checksum mismatch"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("checksum mismatch").count(), 1, "{stderr}");
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
        effective.contains("verify: Full") && effective.contains("prefetch: true"),
        "{effective}"
    );
    let addr = listen_addr(&wait_for(&lines, "listening"));
    stop(&mut child, &addr);
}
