//! The aggregator's address as the commands take it (`--server`), and what went wrong when it could not be
//! reached, told apart so that a person (or the feed agent) knows what to do: nothing listening there
//! (refused), something there that is not a sitrep aggregator, or no answer at all (unreachable, timed out).
//!
//! A configuration error (an address that is not one, a scheme this build cannot speak, something there that is
//! not sitrep, a TLS handshake that fails: unknown CA, hostname mismatch, a client certificate refused) is
//! reported at once and not retried; an aggregator that is down or unreachable is retried by the commands that
//! retry (`feed`, `watch`). `https://` addresses are reached over TLS only (`crate::tls`).

use std::time::Duration;

use anyhow::bail;
use sitrep_client::diagnose::{self, Diagnose, Diagnosis};
use tonic::transport::Endpoint;

use crate::tls::{self, TlsArgs};

/// How long a connection attempt may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may wait for the server's first answer (a unary reply, a stream's headers).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `--server` as a URL: `host:port` without a scheme is taken as `http://host:port`; `https://` is TLS. Refuses,
/// with a hint, what is not an address.
pub fn url(server: &str) -> anyhow::Result<String> {
    let s = server.trim();
    let url = if s.contains("://") { s.to_owned() } else { format!("http://{s}") };
    let hint = "give the aggregator's address like https://sitrep.example:50051, http://127.0.0.1:50051 or \
        127.0.0.1:50051";
    let Ok(endpoint) = Endpoint::from_shared(url.clone()) else {
        bail!("--server {server:?} is not an address; {hint}");
    };
    let uri = endpoint.uri();
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => bail!("--server {server:?}: the scheme {other:?} is neither https nor http; {hint}"),
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

/// The endpoint and connector for `server`: TLS for `https://` (with `tls`'s roots and client certificate), TCP
/// for `http://`. Everything is checked now: a bad address or an unreadable file fails here, not at the first call.
pub fn endpoint(server: &str, tls: &TlsArgs) -> anyhow::Result<(Endpoint, tls::Connector)> {
    let url = url(server)?;
    let https = url.starts_with("https://");
    let config = tls::for_scheme(server, https, tls)?;
    Ok((Endpoint::from_shared(url)?.connect_timeout(CONNECT_TIMEOUT), tls::Connector::new(config)))
}

/// A connection to the aggregator that sends the caller's credential with every call.
pub type Conn = sitrep_client::credentials::AuthedChannel;

/// The credential of `--key-file`, else of `SITREP_KEY`; none when neither is given. A key is never echoed in an
/// error.
pub fn credential(tls: &TlsArgs) -> anyhow::Result<sitrep_client::credentials::Bearer> {
    let key = match &tls.key_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read the key file {}: {e}", file.display()))?,
        ),
        None => std::env::var("SITREP_KEY").ok(),
    };
    match key.filter(|k| !k.trim().is_empty()) {
        None => Ok(sitrep_client::credentials::Bearer::default()),
        Some(k) => {
            sitrep_client::credentials::Bearer::new(&k).map_err(|e| anyhow::anyhow!("--key-file or SITREP_KEY: {e}"))
        }
    }
}

/// A channel to `server` that connects when first used (checked now: a bad address fails here, not later).
pub fn connect(server: &str, tls: &TlsArgs) -> anyhow::Result<Conn> {
    let bearer = credential(tls)?;
    let (endpoint, connector) = endpoint(server, tls)?;
    Ok(sitrep_client::credentials::authed(endpoint.connect_with_connector_lazy(connector), bearer))
}

/// A channel to `server`, connected now.
pub async fn connect_now(server: &str, tls: &TlsArgs) -> anyhow::Result<Conn> {
    let bearer = credential(tls)?;
    let (endpoint, connector) = endpoint(server, tls)?;
    let channel = endpoint.connect_with_connector(connector).await.map_err(|e| {
        let status = tonic::Status::from_error(Box::new(e));
        anyhow::anyhow!("{}", describe(server, &status))
    })?;
    Ok(sitrep_client::credentials::authed(channel, bearer))
}

/// Why a call to the aggregator failed, as far as the transport tells: finer than the client library's
/// [`diagnose::Failure`] (whether to retry), because the sentences people read need the cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Nothing listens at the address (the aggregator is down, or the port is wrong).
    Refused,
    /// Something answered, but not as a sitrep aggregator does (another service on that port).
    NotSitrep,
    /// No answer: the host cannot be found or reached, or did not answer in time.
    Unreachable,
    /// The connection was closed before any answer: something that is not sitrep, or an aggregator going down.
    Closed,
    /// The TLS handshake failed: an unknown CA, a hostname mismatch, a client certificate refused or missing.
    Tls,
    /// A plaintext call reached a port that serves TLS.
    NeedsTls,
    /// The aggregator answered with an error of its own (its status says what).
    Answered,
}

impl Cause {
    /// Whether retrying cannot help until someone changes the command's settings or the aggregator's.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Cause::NotSitrep | Cause::Tls | Cause::NeedsTls)
    }
}

/// Tells a failed call's status apart: refused, not sitrep, unreachable, or the aggregator's own answer.
pub fn classify(status: &tonic::Status) -> Cause {
    if tls::failure_in(Some(status)).is_some() {
        return Cause::Tls;
    }
    if status.message().contains(sitrep_server::tls::PLAINTEXT_REFUSED) {
        return Cause::NeedsTls;
    }
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return Cause::Refused,
                TimedOut | HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable => {
                    return Cause::Unreachable;
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
        return Cause::Unreachable;
    }
    if text.contains("connection refused") {
        return Cause::Refused;
    }
    if text.contains("connection closed") && !text.contains("connection closed before message completed") {
        return Cause::Closed;
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
        return Cause::NotSitrep;
    }
    if status.code() == tonic::Code::Unavailable && (text.contains("transport error") || text.contains("connect")) {
        return Cause::Unreachable;
    }
    Cause::Answered
}

/// A sentence for a failed call to `server`: which of the cases it is, and what was said.
pub fn describe(server: &str, status: &tonic::Status) -> String {
    let said = match status.message() {
        "" => format!("{:?}", status.code()),
        m => m.to_owned(),
    };
    match classify(status) {
        Cause::Refused => format!(
            "connection refused at {server}: nothing is listening there (is the aggregator running, and is the port right?)"
        ),
        Cause::NotSitrep => {
            format!("{server} answered, but it is not a sitrep aggregator ({said}); check --server's host and port")
        }
        Cause::Unreachable => {
            format!("{server} is unreachable: {said} (check the host name, the network, or a firewall)")
        }
        Cause::Tls => {
            let why = tls::failure_in(Some(status)).unwrap_or_else(|| said.clone());
            format!("{server}: {why}")
        }
        Cause::NeedsTls => format!(
            "{server} serves TLS, and this call was plaintext: use https:// (and --ca FILE \
            if the aggregator's certificate is not from a CA this system trusts)"
        ),
        Cause::Closed => format!(
            "{server} closed the connection without answering: it is not a sitrep aggregator, or one shutting down; \
             check --server's host and port"
        ),
        // tonic's decoder refusing a message over the aggregator's size limit: say which setting that is.
        Cause::Answered if status.code() == tonic::Code::OutOfRange && said.contains("too large") => format!(
            "{server}: the report is larger than the aggregator takes ({said}; its setting limits.max_message_bytes)"
        ),
        Cause::Answered => format!("{server}: {said} ({:?})", status.code()),
    }
}

/// The status a call that never answered gets: unreachable, after `after`.
pub fn no_answer(after: Duration) -> tonic::Status {
    tonic::Status::unavailable(format!("no answer within {} s (timed out)", after.as_secs()))
}

/// Failed calls to `server` told apart as the library's retrying clients (the feed agent, `follow`) need them:
/// [`classify`] and [`describe`] here, because only this side knows its TLS errors and the address as given.
pub struct Classify {
    pub server: String,
}

impl Diagnose for Classify {
    fn diagnose(&self, status: &tonic::Status) -> Diagnosis {
        let failure = match classify(status) {
            f if f.is_configuration() => diagnose::Failure::Configuration,
            Cause::Closed => diagnose::Failure::Closed,
            _ => diagnose::Failure::Passing,
        };
        Diagnosis { failure, message: describe(&self.server, status) }
    }

    fn no_answer(&self, after: Duration) -> tonic::Status {
        no_answer(after)
    }
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
            ("https://sitrep.example:50051", "https://sitrep.example:50051"),
        ];
        for (given, want) in ok {
            assert_eq!(url(given).unwrap(), want, "{given}");
        }
        let bad = [
            ("127.0.0.1:99999", "port \"99999\" is not a port number"),
            ("127.0.0.1:port", "port \"port\" is not a port number"),
            ("ftp://x:1", "the scheme \"ftp\" is neither https nor http"),
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
            (tonic::Status::unimplemented(""), Cause::NotSitrep),
            (tonic::Status::unknown("grpc-status header missing, mapped from HTTP status code 404"), Cause::NotSitrep),
            (tonic::Status::internal("h2 protocol error: http2 error"), Cause::NotSitrep),
            (tonic::Status::cancelled("operation was canceled: connection closed"), Cause::Closed),
            (no_answer(ANSWER_TIMEOUT), Cause::Unreachable),
            (tonic::Status::invalid_argument("bad filter"), Cause::Answered),
            (tonic::Status::unavailable("the store is unavailable"), Cause::Answered),
            (tonic::Status::failed_precondition(sitrep_server::tls::PLAINTEXT_REFUSED), Cause::NeedsTls),
        ];
        for (status, want) in cases {
            assert_eq!(classify(&status), want, "{status:?}");
        }
    }
}
