//! Server options: query defaults and limits, credentials, and their validation.

use crate::auth::Tokens;
use crate::encode::EncoderSettings;
use std::path::PathBuf;
use tandem_engine::fusion::MAX_FUSION_WEIGHT;
use tandem_engine::{Fusion, Limits, Verify};

/// When the files' checksums of a (re)loaded index are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksums {
    /// Before serving it: every byte is read before the server listens (or a reload swaps
    /// it in), and a mismatch refuses the index.
    Full,
    /// After it is served: the open checks headers, sizes and invariants only, and a
    /// background pass reads every file; a mismatch takes the index out of service (health
    /// NOT_SERVING, searches UNAVAILABLE) until a good one is loaded. The default.
    Background,
    /// Never (headers, sizes and invariants only).
    Off,
}

impl Checksums {
    /// What the open itself checks.
    pub fn at_open(self) -> Verify {
        match self {
            Checksums::Full => Verify::Full,
            Checksums::Background | Checksums::Off => Verify::SkipChecksums,
        }
    }
}

/// What the service applies to every call.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `k` when a request does not set it.
    pub default_k: usize,
    /// `kappa` when a request does not set it (raised to `k` when smaller).
    pub default_kappa: usize,
    /// CP(α) when a request does not set `cp_alpha` (`None`: off).
    pub default_cp_alpha: Option<f32>,
    /// EE(β) when a request does not set `ee_beta` (`None`: off).
    pub default_ee_beta: Option<usize>,
    /// Fusion method and weight for what a request leaves out.
    pub default_fusion: Fusion,
    /// The RRF constant when a request uses RRF without giving one.
    pub default_rrf_k: f32,
    /// Per-query limits.
    pub limits: Limits,
    /// Most requests in one SearchBatch call.
    pub max_batch: usize,
    /// Largest gRPC request message, bytes (responses are not limited: their size follows from
    /// `max_batch` and `max_k`).
    pub max_message_bytes: usize,
    /// Read candidates' token vectors ahead before reranking (for indexes larger than memory).
    pub prefetch: bool,
    /// Worker threads running queries.
    pub workers: usize,
    /// Jobs that may wait for a worker; beyond it calls get RESOURCE_EXHAUSTED at once.
    pub max_queue: usize,
    /// SearchStream calls open at once.
    pub max_streams: usize,
    /// Queries of one SearchStream in flight at once (read ahead of the answers).
    pub stream_window: usize,
    /// When the checksums of loaded and reloaded indexes are verified.
    pub verify: Checksums,
    /// Search tokens: bearer tokens granting `tandem.v1.Search` and reflection (`None`: search
    /// needs no token). See [`crate::auth`].
    pub auth: Option<Tokens>,
    /// Admin tokens: bearer tokens granting `tandem.v1.Admin` and search (`None`: Admin calls
    /// are refused when `auth` is set, open when it is not).
    pub admin_auth: Option<Tokens>,
    /// ReloadIndex loads only directories under this one (`None`: under the parent directory of
    /// the index served at start). The index served at start must be under it.
    pub index_root: Option<PathBuf>,
    /// Most ids in one Delete call.
    pub max_delete_ids: usize,
    /// Live writes: read-only, refresh and seal settings, batch limit.
    pub writes: WriteOptions,
    /// Serve TLS with this certificate chain and key (`None`: plaintext).
    pub tls: Option<TlsFiles>,
    /// The encoders of text queries (none by default).
    pub encoders: EncoderSettings,
}

/// How the server takes live writes.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// Refuse writes; serve a segmented index's sealed segments without replaying its log.
    pub read_only: bool,
    /// Seconds between refreshes.
    pub refresh_interval_s: f64,
    /// Seal the refresh segments at this many documents …
    pub seal_docs: u64,
    /// … or this many bytes of stored token vectors.
    pub seal_bytes: u64,
    /// Most documents in one Upsert batch.
    pub max_upsert_docs: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            read_only: false,
            refresh_interval_s: 1.0,
            seal_docs: 100_000,
            seal_bytes: 1 << 30,
            max_upsert_docs: 10_000,
        }
    }
}

/// PEM files of the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            default_k: 10,
            default_kappa: 30,
            default_cp_alpha: None,
            default_ee_beta: None,
            default_fusion: Fusion::DEFAULT,
            default_rrf_k: tandem_engine::fusion::DEFAULT_RRF_K,
            limits: Limits::default(),
            max_batch: 1024,
            max_message_bytes: 32 << 20,
            prefetch: true,
            workers: default_workers(),
            max_queue: 256,
            max_streams: 64,
            stream_window: 16,
            verify: Checksums::Background,
            auth: None,
            admin_auth: None,
            index_root: None,
            max_delete_ids: 100_000,
            writes: WriteOptions::default(),
            tls: None,
            encoders: EncoderSettings::none(),
        }
    }
}

/// One worker per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads (far more than any machine has cores).
pub const MAX_WORKERS: usize = 4096;
/// Largest job queue (its slots are allocated up front).
pub const MAX_QUEUE: usize = 1 << 20;
/// Largest SearchStream window.
pub const MAX_STREAM_WINDOW: usize = 1 << 16;

/// An option the server cannot run with.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidOption {
    /// The setting at fault, as its flag (`--stream-window`).
    pub setting: &'static str,
    /// The other setting a relation between two involves (`--max-k` for `--default-k must be
    /// <= --max-k`).
    pub other: Option<&'static str>,
    /// What is wrong, starting with the setting and its value.
    pub message: String,
}

impl std::fmt::Display for InvalidOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvalidOption {}

/// `Ok` when `ok`, else the [`InvalidOption`] of `setting` (and `other`) with `message`.
fn require(
    ok: bool,
    setting: &'static str,
    other: Option<&'static str>,
    message: impl FnOnce() -> String,
) -> Result<(), InvalidOption> {
    match ok {
        true => Ok(()),
        false => Err(InvalidOption {
            setting,
            other,
            message: message(),
        }),
    }
}

/// `Ok` when `min <= value <= max`, else the [`InvalidOption`] of `setting` saying so.
fn within(
    setting: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), InvalidOption> {
    require(value >= min, setting, None, || {
        format!("{setting} = {value}: must be >= {min}")
    })?;
    require(value <= max, setting, None, || {
        format!("{setting} = {value}: must be <= {max}")
    })
}

impl ServeOptions {
    /// Checks every option has a value the server can run with, naming the first that has not
    /// (and its value). [`crate::serve`] refuses options that fail this.
    pub fn validate(&self) -> Result<(), InvalidOption> {
        let l = &self.limits;
        within("--default-k", self.default_k, 1, usize::MAX)?;
        within("--max-k", l.max_k, 1, usize::MAX)?;
        require(
            self.default_k <= l.max_k,
            "--default-k",
            Some("--max-k"),
            || {
                format!(
                    "--default-k = {} must be <= --max-k = {}",
                    self.default_k, l.max_k
                )
            },
        )?;
        require(
            l.max_k <= l.max_kappa,
            "--max-kappa",
            Some("--max-k"),
            || {
                format!(
                    "--max-kappa = {} must be >= --max-k = {}",
                    l.max_kappa, l.max_k
                )
            },
        )?;
        require(
            self.default_kappa <= l.max_kappa,
            "--default-kappa",
            Some("--max-kappa"),
            || {
                format!(
                    "--default-kappa = {} must be <= --max-kappa = {}",
                    self.default_kappa, l.max_kappa
                )
            },
        )?;
        if let Some(alpha) = self.default_cp_alpha {
            require(
                (0.0..=1.0).contains(&alpha),
                "--default-cp-alpha",
                None,
                || format!("--default-cp-alpha = {alpha}: must be in [0, 1] (or off)"),
            )?;
        }
        if let Some(beta) = self.default_ee_beta {
            require(beta >= 1, "--default-ee-beta", None, || {
                format!("--default-ee-beta = {beta}: must be >= 1 (or off)")
            })?;
        }
        let weight = self.default_fusion.weight;
        require(
            (0.0..=MAX_FUSION_WEIGHT).contains(&weight),
            "--default-fusion-weight",
            None,
            || format!("--default-fusion-weight = {weight}: must be in [0, 1e6]"),
        )?;
        let rrf_k = self.default_rrf_k;
        require(
            rrf_k.is_finite() && rrf_k > 0.0,
            "--default-rrf-k",
            None,
            || format!("--default-rrf-k = {rrf_k}: must be finite and > 0"),
        )?;
        within("--max-batch", self.max_batch, 1, usize::MAX)?;
        within("--max-query-tokens", l.max_query_tokens, 1, usize::MAX)?;
        within("--max-query-terms", l.max_query_terms, 1, usize::MAX)?;
        within(
            "--max-message-bytes",
            self.max_message_bytes,
            1024,
            usize::MAX,
        )?;
        within("--workers", self.workers, 1, MAX_WORKERS)?;
        within("--max-queue", self.max_queue, 1, MAX_QUEUE)?;
        within("--max-streams", self.max_streams, 1, usize::MAX)?;
        within("--stream-window", self.stream_window, 1, MAX_STREAM_WINDOW)?;
        within("--max-delete-ids", self.max_delete_ids, 1, usize::MAX)?;
        within(
            "--max-upsert-docs",
            self.writes.max_upsert_docs,
            1,
            usize::MAX,
        )?;
        within("--seal-docs", self.writes.seal_docs as usize, 1, usize::MAX)?;
        within(
            "--seal-bytes",
            self.writes.seal_bytes as usize,
            1,
            usize::MAX,
        )?;
        let refresh = self.writes.refresh_interval_s;
        require(
            refresh.is_finite() && (0.001..=3600.0).contains(&refresh),
            "--refresh-interval",
            None,
            || format!("--refresh-interval = {refresh}: must be between 0.001 and 3600 seconds"),
        )?;
        // Room for [CLS] and [SEP].
        within(
            "--query-max-tokens",
            self.encoders.max_tokens,
            2,
            usize::MAX,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_inconsistent_options_are_named() {
        assert_eq!(ServeOptions::default().validate(), Ok(()));
        let bad = ServeOptions {
            default_k: 2000,
            ..ServeOptions::default()
        };
        let error = bad.validate().unwrap_err();
        assert_eq!(
            (error.setting, error.other),
            ("--default-k", Some("--max-k"))
        );
        assert_eq!(
            error.message,
            "--default-k = 2000 must be <= --max-k = 1000"
        );
    }

    #[test]
    fn every_count_out_of_range_is_refused() {
        type Edit = fn(&mut ServeOptions);
        let cases: [(Edit, &str, &str); 17] = [
            (|o| o.default_k = 0, "--default-k", "= 0: must be >= 1"),
            (|o| o.limits.max_k = 0, "--max-k", "= 0: must be >= 1"),
            (
                |o| o.limits.max_kappa = 5,
                "--max-kappa",
                "must be >= --max-k",
            ),
            (
                |o| o.default_kappa = 20_000,
                "--default-kappa",
                "<= --max-kappa",
            ),
            (
                |o| o.default_cp_alpha = Some(f32::NAN),
                "--default-cp-alpha",
                "[0, 1]",
            ),
            (|o| o.default_ee_beta = Some(0), "--default-ee-beta", ">= 1"),
            (
                |o| o.default_fusion.weight = -1.0,
                "--default-fusion-weight",
                "[0, 1e6]",
            ),
            (
                |o| o.default_rrf_k = f32::INFINITY,
                "--default-rrf-k",
                "finite",
            ),
            (|o| o.max_batch = 0, "--max-batch", ">= 1"),
            (
                |o| o.limits.max_query_tokens = 0,
                "--max-query-tokens",
                ">= 1",
            ),
            (
                |o| o.limits.max_query_terms = 0,
                "--max-query-terms",
                ">= 1",
            ),
            (
                |o| o.max_message_bytes = 10,
                "--max-message-bytes",
                ">= 1024",
            ),
            (|o| o.workers = 0, "--workers", ">= 1"),
            (|o| o.max_queue = usize::MAX, "--max-queue", "<= 1048576"),
            (|o| o.max_streams = 0, "--max-streams", ">= 1"),
            (
                |o| o.stream_window = 0,
                "--stream-window",
                "= 0: must be >= 1",
            ),
            (|o| o.max_delete_ids = 0, "--max-delete-ids", ">= 1"),
        ];
        for (edit, setting, needle) in cases {
            let mut options = ServeOptions::default();
            edit(&mut options);
            let error = options.validate().unwrap_err();
            assert_eq!(error.setting, setting, "{error}");
            assert!(
                error.message.starts_with(setting) && error.message.contains(needle),
                "{error}"
            );
        }
        let huge_window = ServeOptions {
            stream_window: MAX_STREAM_WINDOW + 1,
            ..ServeOptions::default()
        };
        assert!(huge_window.validate().is_err());
        let huge_pool = ServeOptions {
            workers: MAX_WORKERS + 1,
            ..ServeOptions::default()
        };
        assert!(huge_pool.validate().is_err());
        let mut short = ServeOptions::default();
        short.encoders.max_tokens = 1;
        assert_eq!(short.validate().unwrap_err().setting, "--query-max-tokens");
    }
}
