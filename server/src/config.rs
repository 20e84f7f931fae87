//! Server options: query defaults and limits.

use crate::auth::Tokens;
use crate::encode::EncoderSettings;
use std::path::PathBuf;
use tandem_engine::fusion::MAX_FUSION_WEIGHT;
use tandem_engine::{Fusion, Limits, Verify};

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
    /// How indexes are checked when loaded or reloaded.
    pub verify: Verify,
    /// Bearer tokens required of every call but health checks (`None`: no auth).
    pub auth: Option<Tokens>,
    /// Serve TLS with this certificate chain and key (`None`: plaintext).
    pub tls: Option<TlsFiles>,
    /// The encoders of text queries (none by default).
    pub encoders: EncoderSettings,
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
            verify: Verify::Full,
            auth: None,
            tls: None,
            encoders: EncoderSettings::none(),
        }
    }
}

/// One worker per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl ServeOptions {
    /// Checks the options are consistent, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let checks = [
            (self.default_k >= 1, "--default-k must be >= 1"),
            (self.default_k <= l.max_k, "--default-k must be <= --max-k"),
            (
                self.default_kappa <= l.max_kappa,
                "--default-kappa must be <= --max-kappa",
            ),
            (l.max_k <= l.max_kappa, "--max-k must be <= --max-kappa"),
            (
                self.default_cp_alpha
                    .is_none_or(|a| (0.0..=1.0).contains(&a)),
                "--default-cp-alpha must be in [0, 1] (or off)",
            ),
            (
                self.default_ee_beta.is_none_or(|b| b >= 1),
                "--default-ee-beta must be >= 1 (or off)",
            ),
            (
                (0.0..=MAX_FUSION_WEIGHT).contains(&self.default_fusion.weight),
                "--default-fusion-weight must be in [0, 1e6]",
            ),
            (
                self.default_rrf_k.is_finite() && self.default_rrf_k > 0.0,
                "--default-rrf-k must be finite and > 0",
            ),
            (self.max_batch >= 1, "--max-batch must be >= 1"),
            (l.max_query_tokens >= 1, "--max-query-tokens must be >= 1"),
            (l.max_query_terms >= 1, "--max-query-terms must be >= 1"),
            (
                self.max_message_bytes >= 1024,
                "--max-message-bytes must be >= 1024",
            ),
            (self.workers >= 1, "--workers must be >= 1"),
            (self.max_queue >= 1, "--max-queue must be >= 1"),
            (self.max_streams >= 1, "--max-streams must be >= 1"),
            (self.stream_window >= 1, "--stream-window must be >= 1"),
            (
                self.encoders.max_tokens >= 2,
                "--query-max-tokens must be >= 2 (room for [CLS] and [SEP])",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(message.to_string()),
            None => Ok(()),
        }
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
        assert_eq!(
            bad.validate(),
            Err("--default-k must be <= --max-k".to_string())
        );
        let bad = ServeOptions {
            max_batch: 0,
            ..ServeOptions::default()
        };
        assert_eq!(bad.validate(), Err("--max-batch must be >= 1".to_string()));
    }
}
