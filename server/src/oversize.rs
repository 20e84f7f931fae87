//! Oversized messages answer RESOURCE_EXHAUSTED, as gRPC specifies, naming the limit.
//!
//! tonic refuses a message above `max_decoding_message_size` with OUT_OF_RANGE before any
//! handler runs. This layer rewrites exactly that status (tandem never answers OUT_OF_RANGE
//! itself) to RESOURCE_EXHAUSTED with a message naming `max_message_bytes`.

use http::{HeaderValue, Response};
use tower::util::MapResponseLayer;

/// The gRPC status codes involved.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The layer for a server whose message limit is `limit` bytes.
pub fn layer<B>(limit: usize) -> MapResponseLayer<impl Fn(Response<B>) -> Response<B> + Clone> {
    MapResponseLayer::new(move |response| rewrite(response, limit))
}

/// Rewrites a trailers-only OUT_OF_RANGE response to RESOURCE_EXHAUSTED.
fn rewrite<B>(mut response: Response<B>, limit: usize) -> Response<B> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").and_then(|v| v.to_str().ok()) == Some(OUT_OF_RANGE) {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
        let message =
            format!("max_message_bytes: the message exceeds the server limit of {limit} bytes");
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
    }
    response
}
