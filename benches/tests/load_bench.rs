//! `tandem-bench load` and `compare` against a real server on loopback: closed and open loop,
//! every method, the JSON report's keys, quality from qrels, plots, and the comparison table.

use clap::Parser;
use tandem_bench::cli::{run, Cli};
use tandem_server::config::ServeOptions;
use tandem_tests::{synthetic_index, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_reports_latency_quality_and_compares() {
    let synth = synthetic_index(600, 20, 16, 31).unwrap();
    let server = TestServer::start(&synth.index, ServeOptions::default())
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let c = |name: &str| synth.corpus.join(name).display().to_string();
    let o = |name: &str| out.path().join(name).display().to_string();
    let base = [
        "tandem-bench".to_string(),
        "load".into(),
        "--addr".into(),
        server.url.clone(),
        "--queries".into(),
        c("queries.jsonl"),
        "--query-vectors".into(),
        c("query_vectors.npy"),
        "--query-lens".into(),
        c("query_lens.npy"),
        "--qrels".into(),
        c("qrels.trec"),
        "--warmup".into(),
        "0s".into(),
    ];
    let runs: [(&str, &[&str]); 4] = [
        ("closed.json", &["--requests", "120", "--concurrency", "3"]),
        (
            "batch.json",
            &["--requests", "10", "--method", "batch", "--batch-size", "8"],
        ),
        ("stream.json", &["--requests", "40", "--method", "stream"]),
        (
            "open.json",
            &[
                "--rate",
                "200,400",
                "--duration",
                "300ms",
                "--connections",
                "2",
            ],
        ),
    ];
    for (report, extra) in runs {
        let mut args: Vec<String> = base.to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--json".to_string(), o(report), "--plot".into(), o(report)]);
        let cli = Cli::parse_from(args);
        tokio::task::spawn_blocking(move || run(cli))
            .await
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(out.path().join(report)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in [
            "requests",
            "errors",
            "qps",
            "latency_us",
            "quality",
            "machine",
            "config",
        ] {
            assert!(json.get(key).is_some(), "{report}: {key} missing");
        }
        for p in ["p50", "p90", "p99", "p999"] {
            assert!(
                json["latency_us"][p].as_f64().unwrap() > 0.0,
                "{report}: {p}"
            );
        }
        assert_eq!(json["errors"], 0, "{report}");
        assert!(json["qps"].as_f64().unwrap() > 0.0);
        let ndcg = json["quality"]["ndcg_at_10"].as_f64().unwrap();
        assert!(
            ndcg > 0.5,
            "{report}: nDCG@10 {ndcg} of the answers collected"
        );
        assert!(out.path().join(format!("{report}-cdf.png")).exists());
    }
    let closed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("closed.json")).unwrap())
            .unwrap();
    assert_eq!(closed["requests"], 120);
    let batch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("batch.json")).unwrap())
            .unwrap();
    assert_eq!(batch["queries"], 80, "10 calls of 8 queries");
    let open: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("open.json")).unwrap())
            .unwrap();
    assert_eq!(open["runs"].as_array().unwrap().len(), 2);
    assert_eq!(open["offered_qps"], 400.0);
    assert!(open["dispatch_lag_us"]["p50"].is_number());
    assert!(out.path().join("open.json-load.png").exists());

    let compare = Cli::parse_from([
        "tandem-bench",
        "compare",
        &o("closed.json"),
        &o("stream.json"),
    ]);
    tokio::task::spawn_blocking(move || run(compare))
        .await
        .unwrap()
        .unwrap();
    server.stop().await.unwrap();
}
