//! Per-call deadlines from the `grpc-timeout` header.
//!
//! tonic's transport enforces `grpc-timeout` itself, outside our layers, and answers CANCELLED
//! when it fires. We want DEADLINE_EXCEEDED, and the work abandoned. So [`layer`] stamps each
//! request with its arrival time as it enters our stack (synchronously within the same call in
//! which tonic starts its own timer), and a handler computes [`deadline`] = arrival + timeout −
//! a margin: our timer fires before tonic's, and tonic polls the handler before its own timer,
//! so the handler's DEADLINE_EXCEEDED is what is sent. The margin (a tenth of the timeout,
//! between 1 and 10 ms) also lets the answer reach a client whose own timer started when it sent
//! the call, a little before the server saw it: clients enforce deadlines too (tonic's reports
//! CANCELLED, others DEADLINE_EXCEEDED), and the server's answer should arrive first.

use http::Request;
use std::time::Duration;
use tokio::time::Instant;
use tower::util::MapRequestLayer;

/// How much earlier than the client's deadline a handler gives up: a tenth of the timeout,
/// at least one timer tick (1 ms), at most 10 ms.
pub fn margin(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// When a request entered the server's service stack.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// The layer that stamps every request with its [`Arrival`].
pub fn layer<B>() -> MapRequestLayer<fn(Request<B>) -> Request<B>> {
    MapRequestLayer::new(stamp::<B>)
}

fn stamp<B>(mut request: Request<B>) -> Request<B> {
    request.extensions_mut().insert(Arrival(Instant::now()));
    request
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.char_indices().last()?.0);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The instant a handler must answer by, if the client set a deadline: arrival (or now, for a
/// request that did not pass through [`layer`]) + timeout − [`margin`].
pub fn deadline<T>(request: &tonic::Request<T>) -> Option<Instant> {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_timeout)?;
    let arrival = request
        .extensions()
        .get::<Arrival>()
        .map_or_else(Instant::now, |a| a.0);
    Some(arrival + timeout.saturating_sub(margin(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_grpc_specifies() {
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("10n"), Some(Duration::from_nanos(10)));
        assert_eq!(margin(Duration::from_millis(3)), Duration::from_millis(1));
        assert_eq!(margin(Duration::from_millis(50)), Duration::from_millis(5));
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_millis(10));
        for bad in [
            "",
            "S",
            "5",
            "123456789S",
            "5s",
            "-5S",
            "5.0S",
            "五S",
            "5五",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
