//! Request ids: every call runs in a tracing span `rpc{method, request_id}`, so every log line
//! it causes names it, and the id is echoed in the `x-request-id` response header.
//!
//! A client's own `x-request-id` (up to 64 visible ASCII characters) is kept, so its logs and
//! ours can be joined; otherwise the server makes one: a per-process random prefix and a
//! counter (`3f9a1c-0000002a`).

use http::{HeaderValue, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tracing::Instrument;

/// The header carrying the id both ways.
pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id kept.
const MAX_LEN: usize = 64;

/// The layer adding ids and spans.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = RequestIds<S>;
    fn layer(&self, inner: S) -> RequestIds<S> {
        RequestIds { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIds<S> {
    inner: S,
}

/// The id of a client, if usable: visible ASCII, 1 to [`MAX_LEN`] bytes.
fn client_id(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let visible =
        !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic());
    visible.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// A fresh id: this process's prefix and the next counter value.
fn fresh_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        // Distinct across restarts: the low bits of the start time and the process id.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (nanos ^ std::process::id().rotate_left(16)) & 0x00ff_ffff
    });
    format!("{prefix:06x}-{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl<S, B, R> tower::Service<Request<B>> for RequestIds<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let id = request
            .headers()
            .get(HEADER)
            .and_then(client_id)
            .unwrap_or_else(fresh_id);
        let span = tracing::info_span!("rpc", method = %request.uri().path(), request_id = %id);
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let mut response = answer.await?;
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert(HEADER, value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_when_sane_and_fresh_ones_are_unique() {
        let ok = HeaderValue::from_static("client-42");
        assert_eq!(client_id(&ok).as_deref(), Some("client-42"));
        for bad in ["", "has space", &"x".repeat(65)] {
            let value = HeaderValue::from_str(bad).unwrap();
            assert_eq!(client_id(&value), None, "{bad:?}");
        }
        let (a, b) = (fresh_id(), fresh_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 15, "{a}");
    }
}
