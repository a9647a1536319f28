//! The aggregator's address as the commands take it (`--server`), and what went wrong when it could not be
//! reached, told apart so that a person (or the feed agent) knows what to do: nothing listening there
//! (refused), something there that is not a sitrep aggregator, or no answer at all (unreachable, timed out).
//!
//! A configuration error (an address that is not one, a scheme this build cannot speak, something there that is
//! not sitrep) is reported at once and not retried; an aggregator that is down or unreachable is retried by the
//! commands that retry (`feed`, `watch`).

use std::time::Duration;

use anyhow::bail;
use tonic::transport::{Channel, Endpoint};

/// How long a connection attempt may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may wait for the server's first answer (a unary reply, a stream's headers).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `--server` as a URL: `host:port` without a scheme is taken as `http://host:port`. Refuses, with a hint, what
/// is not an address, and `https://` (this build speaks gRPC over plain HTTP/2 only).
pub fn url(server: &str) -> anyhow::Result<String> {
    let s = server.trim();
    let url = if s.contains("://") { s.to_owned() } else { format!("http://{s}") };
    let hint = "give the aggregator's address like http://127.0.0.1:50051 or 127.0.0.1:50051";
    let Ok(endpoint) = Endpoint::from_shared(url.clone()) else {
        bail!("--server {server:?} is not an address; {hint}");
    };
    let uri = endpoint.uri();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => bail!(
            "--server {server:?}: this build of sitrep speaks gRPC over plain HTTP/2 and has no TLS; use http:// \
             (on a trusted network, or through a TLS-terminating proxy next to the agent)"
        ),
        Some(other) => bail!("--server {server:?}: the scheme {other:?} is not http; {hint}"),
        None => bail!("--server {server:?} is not an address; {hint}"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("--server {server:?} names no host; {hint}");
    }
    if let Some(port) = uri.authority().and_then(|a| a.as_str().rsplit_once(':')).map(|(_, p)| p)
        && !port.is_empty()
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        bail!("--server {server:?}: port {port:?} is not a port number (1-65535); {hint}");
    }
    Ok(url)
}

/// A channel to `server` that connects when first used (checked now: a bad address fails here, not later).
pub fn connect(server: &str) -> anyhow::Result<Channel> {
    let url = url(server)?;
    Ok(Endpoint::from_shared(url)?.connect_timeout(CONNECT_TIMEOUT).connect_lazy())
}

/// Why a call to the aggregator failed, as far as the transport tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens at the address (the aggregator is down, or the port is wrong).
    Refused,
    /// Something answered, but not as a sitrep aggregator does (another service on that port).
    NotSitrep,
    /// No answer: the host cannot be found or reached, or did not answer in time.
    Unreachable,
    /// The connection was closed before any answer: something that is not sitrep, or an aggregator going down.
    Closed,
    /// The aggregator answered with an error of its own (its status says what).
    Answered,
}

/// Tells a failed call's status apart: refused, not sitrep, unreachable, or the aggregator's own answer.
pub fn classify(status: &tonic::Status) -> Failure {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return Failure::Refused,
                TimedOut | HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable => {
                    return Failure::Unreachable;
                }
                _ => {}
            }
        }
        chain.push(e.to_string().to_lowercase());
        source = e.source();
    }
    let text = format!("{} {}", status.message().to_lowercase(), chain.join(" "));
    if text.contains("timed out") || text.contains("timeout") || text.contains("lookup address") || text.contains("dns")
    {
        return Failure::Unreachable;
    }
    if text.contains("connection refused") {
        return Failure::Refused;
    }
    if text.contains("connection closed") && !text.contains("connection closed before message completed") {
        return Failure::Closed;
    }
    // A gRPC server without sitrep's services, or an HTTP server that is not gRPC at all (a status mapped from
    // its HTTP status), or something that does not speak HTTP/2 (a protocol error in the handshake).
    if status.code() == tonic::Code::Unimplemented
        || text.contains("http status code")
        || text.contains("protocol error")
        || text.contains("frame with invalid size")
        || text.contains("invalid content-type")
        || text.contains("connection closed before")
        || text.contains("h2 ")
        || text.contains("http2 error")
    {
        return Failure::NotSitrep;
    }
    if status.code() == tonic::Code::Unavailable && (text.contains("transport error") || text.contains("connect")) {
        return Failure::Unreachable;
    }
    Failure::Answered
}

/// A sentence for a failed call to `server`: which of the cases it is, and what was said.
pub fn describe(server: &str, status: &tonic::Status) -> String {
    let said = match status.message() {
        "" => format!("{:?}", status.code()),
        m => m.to_owned(),
    };
    match classify(status) {
        Failure::Refused => format!(
            "connection refused at {server}: nothing is listening there (is the aggregator running, and is the port right?)"
        ),
        Failure::NotSitrep => {
            format!("{server} answered, but it is not a sitrep aggregator ({said}); check --server's host and port")
        }
        Failure::Unreachable => {
            format!("{server} is unreachable: {said} (check the host name, the network, or a firewall)")
        }
        Failure::Closed => format!(
            "{server} closed the connection without answering: it is not a sitrep aggregator, or one shutting down; \
             check --server's host and port"
        ),
        // tonic's decoder refusing a message over the aggregator's size limit: say which setting that is.
        Failure::Answered if status.code() == tonic::Code::OutOfRange && said.contains("too large") => format!(
            "{server}: the report is larger than the aggregator takes ({said}; its setting limits.max_message_bytes)"
        ),
        Failure::Answered => format!("{server}: {said} ({:?})", status.code()),
    }
}

/// The status a call that never answered gets: unreachable, after `after`.
pub fn no_answer(after: Duration) -> tonic::Status {
    tonic::Status::unavailable(format!("no answer within {} s (timed out)", after.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_without_a_scheme_are_http_and_bad_ones_are_refused_with_a_hint() {
        let ok = [
            ("127.0.0.1:50051", "http://127.0.0.1:50051"),
            (" localhost:9 ", "http://localhost:9"),
            ("http://sitrep.example:50051", "http://sitrep.example:50051"),
            ("[::1]:50051", "http://[::1]:50051"),
        ];
        for (given, want) in ok {
            assert_eq!(url(given).unwrap(), want, "{given}");
        }
        let bad = [
            ("https://sitrep.example:50051", "has no TLS; use http://"),
            ("127.0.0.1:99999", "port \"99999\" is not a port number"),
            ("127.0.0.1:port", "port \"port\" is not a port number"),
            ("ftp://x:1", "the scheme \"ftp\" is not http"),
            ("http://", "is not an address"),
            ("exa mple:1", "is not an address"),
        ];
        for (given, expected) in bad {
            let err = url(given).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--server {given:?}")) && err.contains(expected), "{given}: {err}");
        }
    }

    #[test]
    fn statuses_are_told_apart() {
        let cases = [
            (tonic::Status::unimplemented(""), Failure::NotSitrep),
            (
                tonic::Status::unknown("grpc-status header missing, mapped from HTTP status code 404"),
                Failure::NotSitrep,
            ),
            (tonic::Status::internal("h2 protocol error: http2 error"), Failure::NotSitrep),
            (tonic::Status::cancelled("operation was canceled: connection closed"), Failure::Closed),
            (no_answer(ANSWER_TIMEOUT), Failure::Unreachable),
            (tonic::Status::invalid_argument("bad filter"), Failure::Answered),
            (tonic::Status::unavailable("the store is unavailable"), Failure::Answered),
        ];
        for (status, want) in cases {
            assert_eq!(classify(&status), want, "{status:?}");
        }
    }
}
