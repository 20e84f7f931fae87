//! What the server answers for calls refused before any handler runs: the HTTP method and content
//! type, the routing, and the framing and decoding of request messages that tonic does.
//!
//! tonic's own answers there are written for a transport, not for a client that has to learn
//! what it sent wrong. [`WireLayer`] (over the whole gRPC port) and [`request_fault`] (for a
//! message read later from a stream, whose status travels in trailers the layer does not see)
//! make them follow tandem's conventions:
//!
//! | The client sent | tonic answers | tandem answers |
//! |---|---|---|
//! | a method other than POST | (serves it) | HTTP 405, `INVALID_ARGUMENT` naming `:method` |
//! | a content type other than `application/grpc[+proto]` | (serves it) | HTTP 415, `INVALID_ARGUMENT` naming `content-type` |
//! | an unknown service or method | `UNIMPLEMENTED`, no message | `UNIMPLEMENTED` naming the path |
//! | a message above `max_message_bytes` | `OUT_OF_RANGE` | `RESOURCE_EXHAUSTED` naming `max_message_bytes` |
//! | bytes that do not decode as the request message (bad varint or tag, wrong wire type, a field running past the end, invalid UTF-8 in a string) | `INTERNAL` | `INVALID_ARGUMENT` with prost's reason, naming the field |
//! | no message at all in a unary call | `INTERNAL` | `INVALID_ARGUMENT` |
//! | a body ending inside a message frame | `INTERNAL` (`Unexpected EOF`) | `INTERNAL`, saying the frame is truncated |
//!
//! A message that cannot be decoded is the client's fault and resending the same bytes can never
//! succeed, so it is `INVALID_ARGUMENT` (non-retryable, like every other request the client must
//! fix) rather than the `INTERNAL` of gRPC's reference implementations, which reads as a server
//! fault and which some retry policies retry. Broken framing (a truncated frame, the compressed
//! flag without `grpc-encoding`, an unknown flag byte) stays `INTERNAL`, as gRPC specifies for
//! protocol violations; an unsupported `grpc-encoding` stays `UNIMPLEMENTED` (tonic's answer,
//! as gRPC specifies).

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::{Code, Status};

/// The layer for a server whose message limit is `limit` bytes.
#[derive(Debug, Clone, Copy)]
pub struct WireLayer {
    limit: usize,
}

impl WireLayer {
    /// The layer for a message limit of `limit` bytes (`max_message_bytes`).
    pub fn new(limit: usize) -> Self {
        WireLayer { limit }
    }
}

impl<S> tower::Layer<S> for WireLayer {
    type Service = Wire<S>;

    fn layer(&self, inner: S) -> Wire<S> {
        Wire {
            inner,
            limit: self.limit,
        }
    }
}

/// The service [`WireLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct Wire<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Wire<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if let Some(refusal) = refusal(request.method(), request.headers()) {
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        let path = request.uri().path().to_string();
        let limit = self.limit;
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite(response.headers_mut(), &path, limit);
            Ok(response)
        })
    }
}

/// The answer to a request that is not a gRPC call at all (not a POST, or not a gRPC content
/// type), as gRPC's HTTP/2 protocol asks: an HTTP error status, plus a gRPC status for clients
/// that read one.
fn refusal<B: Default>(method: &Method, headers: &HeaderMap) -> Option<Response<B>> {
    let (http_status, status) = if method != Method::POST {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Status::invalid_argument(format!(
                ":method: {method} is not POST (gRPC calls are POST)"
            )),
        )
    } else {
        let content_type = headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
        if content_type.is_some_and(is_grpc_content_type) {
            return None;
        }
        let shown = content_type.map_or_else(
            || "none".to_string(),
            |v| format!("{:?}", String::from_utf8_lossy(v)),
        );
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Status::invalid_argument(format!(
                "content-type: {shown} is not application/grpc (this port speaks gRPC only)"
            )),
        )
    };
    let mut response = status.into_http::<B>();
    *response.status_mut() = http_status;
    Some(response)
}

/// `application/grpc`, alone or with a `+proto` (or other) suffix or parameters; not
/// `application/grpc-web`, which this server does not speak.
fn is_grpc_content_type(value: &[u8]) -> bool {
    match value.strip_prefix(b"application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"),
        None => false,
    }
}

/// Rewrites the status of a trailers-only response (one whose `grpc-status` is in the headers:
/// an error answered before or instead of any message) as the module documentation lists.
fn rewrite(headers: &mut HeaderMap, path: &str, limit: usize) {
    // tonic attaches no binary details to the statuses rewritten here (and would refuse to parse
    // malformed ones), so a response with details is left alone.
    if headers.contains_key("grpc-status-details-bin") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let replaced = match status.code() {
        Code::Unimplemented if status.message().is_empty() => Some(Status::unimplemented(format!(
            "{path}: no such method on this server (see the reflection service)"
        ))),
        _ => replacement(&status, limit),
    };
    if let Some(replaced) = replaced {
        let mut rewritten = headers.clone();
        rewritten.remove(Status::GRPC_MESSAGE);
        if replaced.add_header(&mut rewritten).is_ok() {
            *headers = rewritten;
        }
    }
}

/// The status to answer for `status`, an error tonic gave while reading a request message from a
/// stream (the same mapping [`WireLayer`] applies to unary calls).
pub fn request_fault(status: Status, limit: usize) -> Status {
    replacement(&status, limit).unwrap_or(status)
}

/// How tonic words the statuses rewritten here.
mod tonic_words {
    /// The prefix of a prost decode error, as tonic-prost reports it.
    pub const UNDECODABLE: &str = "failed to decode Protobuf message: ";
    /// A unary call whose body holds no message.
    pub const NO_MESSAGE: &str = "Missing request message.";
    /// A body that ended inside a message frame.
    pub const TRUNCATED: &str = "Unexpected EOF decoding stream.";
}

/// What to answer instead of a status tonic gave while reading a request message (`None`: keep
/// it).
fn replacement(status: &Status, limit: usize) -> Option<Status> {
    let message = status.message();
    match status.code() {
        // tandem never answers OUT_OF_RANGE itself: this is tonic's message size check.
        Code::OutOfRange => Some(Status::resource_exhausted(format!(
            "max_message_bytes: the message exceeds the server limit of {limit} bytes"
        ))),
        Code::Internal => {
            if let Some(reason) = message.strip_prefix(tonic_words::UNDECODABLE) {
                Some(Status::invalid_argument(format!(
                    "request message: not a valid protobuf encoding of the request type: {reason}"
                )))
            } else if message == tonic_words::NO_MESSAGE {
                Some(Status::invalid_argument(
                    "request message: the call carries none (a unary call takes exactly one)",
                ))
            } else if message == tonic_words::TRUNCATED {
                Some(Status::internal(
                    "protocol error: the request body ended inside a gRPC message frame (the \
                     frame is truncated: its length prefix promises more bytes than were sent)",
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc_content_type(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "application/json",
            "application/grpc-web",
            "application/grpc-web+proto",
            "text/plain",
            "",
        ] {
            assert!(!is_grpc_content_type(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn tonic_read_errors_are_rewritten_and_others_kept() {
        let undecodable = Status::internal(
            "failed to decode Protobuf message: SearchRequest.k: invalid wire type: \
             LengthDelimited (expected Varint)",
        );
        let status = request_fault(undecodable, 1024);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("SearchRequest.k"), "{status:?}");

        let status = request_fault(Status::out_of_range("too large"), 1024);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("max_message_bytes"), "{status:?}");

        let status = request_fault(Status::internal(tonic_words::TRUNCATED), 1024);
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("truncated"), "{status:?}");

        for kept in [
            Status::internal("corrupt index /x: bad checksum"),
            Status::invalid_argument("k: must be >= 1"),
            Status::unimplemented("Content is compressed with `gzip` which isn't supported"),
        ] {
            let (code, message) = (kept.code(), kept.message().to_string());
            let status = request_fault(kept, 1024);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
    }

    #[test]
    fn trailers_only_responses_are_rewritten_in_place() {
        let mut headers = Status::internal("failed to decode Protobuf message: bad")
            .into_http::<()>()
            .into_parts()
            .0
            .headers;
        rewrite(&mut headers, "/tandem.v1.Search/Search", 1024);
        let status = Status::from_header_map(&headers).expect("a status");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().ends_with(": bad"), "{status:?}");

        let mut headers = Status::unimplemented("")
            .into_http::<()>()
            .into_parts()
            .0
            .headers;
        rewrite(&mut headers, "/tandem.v1.Search/Nope", 1024);
        let status = Status::from_header_map(&headers).expect("a status");
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().starts_with("/tandem.v1.Search/Nope"));
    }
}
