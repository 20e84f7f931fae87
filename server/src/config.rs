//! Server options: query defaults and limits.

use tandem_engine::Limits;

/// What the service applies to every call.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `k` when a request does not set it.
    pub default_k: usize,
    /// `kappa` when a request does not set it (raised to `k` when smaller).
    pub default_kappa: usize,
    /// Per-query limits.
    pub limits: Limits,
    /// Most requests in one SearchBatch call.
    pub max_batch: usize,
    /// Largest gRPC message received or sent, bytes.
    pub max_message_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            default_k: 10,
            default_kappa: 20,
            limits: Limits::default(),
            max_batch: 1024,
            max_message_bytes: 32 << 20,
        }
    }
}
