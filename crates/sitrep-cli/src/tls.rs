//! The commands' side of TLS: `--ca`, `--client-cert` and `--client-key`, the connector that gives tonic a TCP or
//! TLS stream as the address's scheme says, and sentences for what went wrong in a handshake.
//!
//! An `https://` address is only ever reached over TLS (rustls, the `ring` provider, TLS 1.2 or 1.3, ALPN `h2`),
//! verified against `--ca` or else the system's roots (`rustls-native-certs`: the system's store, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`), for the host named in the address. There is no fallback to cleartext and no
//! switch to skip verification. An `http://` address is plaintext, and refuses the TLS flags rather than ignore them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError};
use sitrep_server::transport::Replayed;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;
use tonic::codegen::http::Uri;

/// How to trust an `https://` aggregator, and how to prove who this client is.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// For an https:// --server: the CA certificates (PEM) its certificate must be signed by. Default: the
    /// system's trusted roots.
    #[arg(long, env = "SITREP_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// For an https:// --server: this client's certificate chain (PEM), for an aggregator that asks for one.
    #[arg(long, env = "SITREP_CLIENT_CERT", value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(long, env = "SITREP_CLIENT_KEY", value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// A file holding the API key or signed token to authenticate with (sent as `authorization: Bearer ...`).
    /// Without it, the SITREP_KEY environment variable, if set. Never put a key on the command line.
    #[arg(long, env = "SITREP_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl TlsArgs {
    fn given(&self) -> Option<&'static str> {
        if self.ca.is_some() {
            Some("--ca")
        } else if self.client_cert.is_some() {
            Some("--client-cert")
        } else {
            None
        }
    }
}

/// The client's TLS configuration for `args`, every file read and checked now (errors name the flag and file).
pub fn client_config(args: &TlsArgs) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match &args.ca {
        Some(path) => {
            for ca in certificates("--ca", path)? {
                roots
                    .add(ca)
                    .with_context(|| format!("--ca {}: a certificate that cannot be a trust root", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!(
                    "no trusted root certificates found on this system ({}); give the CA that signed the \
                     aggregator's certificate with --ca FILE",
                    found.errors.first().map_or("none installed".to_owned(), |e| e.to_string())
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let mut config = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("--client-cert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                anyhow::anyhow!(
                    "--client-key {}: not a PEM private key ({})",
                    key.display(),
                    match e {
                        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
                        rustls::pki_types::pem::Error::NoItemsFound => "no private key in the file".to_owned(),
                        _ => "unreadable".to_owned(),
                    }
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                let why = match e {
                    rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".to_owned(),
                    other => other.to_string(),
                };
                anyhow::anyhow!("--client-cert {} and --client-key {}: {why}", cert.display(), key.display())
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("{flag} {}: cannot read the file", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{flag} {}: not a PEM certificate file ({e})", path.display()))?;
    if certs.is_empty() {
        bail!("{flag} {}: no certificate in the file (expected PEM blocks BEGIN CERTIFICATE)", path.display());
    }
    Ok(certs)
}

/// The TLS configuration for an address with `scheme`: `Some` for https, `None` for http; the TLS flags with an
/// http:// address are refused (they would give a false sense of a protected connection).
pub fn for_scheme(server: &str, https: bool, args: &TlsArgs) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if https {
        return client_config(args).map(Some);
    }
    if let Some(flag) = args.given() {
        bail!(
            "{flag} is for an https:// address, and --server {server:?} is plaintext http://; use https:// to \
             connect over TLS"
        );
    }
    Ok(None)
}

/// A connection to the aggregator: TCP, or TLS over it (with the first bytes read by [`Connector`]'s probe).
pub type Stream = Either<TcpStream, Replayed<TlsStream<TcpStream>>>;

/// How long a new TLS 1.3 connection waits for the server's word after the handshake (see [`Connector`]), for a
/// server that sends no session tickets.
const PROBE: std::time::Duration = std::time::Duration::from_secs(3);

/// Connects tonic's channel: TCP to the address's host and port, then TLS when configured (https://).
///
/// With TLS 1.3 a server checks the client's certificate (or its absence) after the handshake has finished on the
/// client's side, and refuses it with an alert the HTTP/2 client would only report as a closed connection. So the
/// connector waits for the server's word after the handshake (its session tickets, sent at once, or data; at most
/// [`PROBE`]) and turns an alert into a [`TlsFailure`] that says what happened. Any bytes read are replayed to the
/// HTTP/2 client. This costs a round trip per new connection, and connections are long-lived.
#[derive(Clone)]
pub struct Connector {
    tls: Option<TlsConnector>,
}

impl Connector {
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Connector { tls: tls.map(TlsConnector::from) }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
            let host = uri.host().ok_or_else(|| invalid("the address names no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls else { return Ok(TokioIo::new(Either::Left(tcp))) };
            let name = ServerName::try_from(host.clone()).map_err(|_| invalid("the host is not a valid TLS name"))?;
            let failed = |e: &std::io::Error| {
                std::io::Error::other(TlsFailure { host: host.clone(), explanation: explain_io(e) })
            };
            let mut stream = tls.connect(name, tcp).await.map_err(|e| failed(&e))?;
            let mut first = Vec::new();
            if stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
                match tokio::time::timeout(PROBE, accepted(&mut stream)).await {
                    Ok(Ok(bytes)) => first = bytes,
                    Ok(Err(e)) => return Err(failed(&e)),
                    Err(_) => {}
                }
            }
            Ok(TokioIo::new(Either::Right(Replayed::new(stream, first))))
        })
    }
}

/// Waits until a TLS 1.3 server has shown it accepted the connection: its session tickets (sent once it has
/// checked the client's certificate, or its absence) or its first application bytes (returned, to be replayed);
/// or until it refused it (the alert, as an error).
async fn accepted(stream: &mut TlsStream<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 1024];
    std::future::poll_fn(|cx| {
        let mut read = tokio::io::ReadBuf::new(&mut buf);
        match Pin::new(&mut *stream).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection after the handshake",
            ))),
            Poll::Ready(result) => Poll::Ready(result.map(|()| read.filled().to_vec())),
            Poll::Pending if stream.get_ref().1.tls13_tickets_received() > 0 => Poll::Ready(Ok(Vec::new())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A TLS handshake that failed, explained.
#[derive(Debug)]
pub struct TlsFailure {
    host: String,
    explanation: String,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS with {} failed: {}", self.host, self.explanation)
    }
}

impl std::error::Error for TlsFailure {}

fn explain_io(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => explain(tls),
        None => e.to_string(),
    }
}

/// What a rustls error means for the person running the command, and what to do.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::Error::*;
    match e {
        InvalidCertificate(CertificateError::UnknownIssuer) => "the aggregator's certificate is not signed by a CA \
            this client trusts (unknown CA); give the CA that signed it with --ca FILE"
            .into(),
        InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
            let names = match e {
                InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => {
                    // rustls writes each name as `DnsName("sitrep.example")`: keep what is quoted.
                    let name = |p: &String| match (p.find('"'), p.rfind('"')) {
                        (Some(a), Some(b)) if b > a => p[a + 1..b].to_owned(),
                        _ => p.clone(),
                    };
                    format!(" (it names {})", presented.iter().map(name).collect::<Vec<_>>().join(", "))
                }
                _ => String::new(),
            };
            format!(
                "the aggregator's certificate is not valid for the host name in --server{names} (hostname mismatch); \
                 use a name the certificate carries"
            )
        }
        InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the aggregator's certificate has expired".into()
        }
        InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "the aggregator's certificate is not valid yet (is this machine's clock right?)".into()
        }
        InvalidCertificate(other) => format!("the aggregator's certificate is not acceptable: {other:?}"),
        AlertReceived(AlertDescription::CertificateRequired) => {
            "the aggregator requires a client certificate; give --client-cert and --client-key".into()
        }
        AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied,
        ) => format!(
            "the aggregator refused this client's certificate ({e}); it must be signed by a CA the aggregator's \
             tls.client_ca names"
        ),
        AlertReceived(AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure) => {
            format!("handshake failure: the aggregator and this client share no TLS version or cipher suite ({e})")
        }
        InvalidMessage(_) | InappropriateMessage { .. } | InappropriateHandshakeMessage { .. } => {
            format!("the server did not answer in TLS ({e}); if it serves plaintext, use http://")
        }
        other => format!("handshake failure: {other}"),
    }
}

/// The TLS failure somewhere in an error's chain, as a sentence: from the connector ([`TlsFailure`]), or a rustls
/// error met later.
pub fn failure_in(mut e: Option<&(dyn std::error::Error + 'static)>) -> Option<String> {
    while let Some(err) = e {
        if let Some(f) = err.downcast_ref::<TlsFailure>() {
            return Some(f.to_string());
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("TLS failed: {}", explain(tls)));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(f) = inner.downcast_ref::<TlsFailure>() {
                return Some(f.to_string());
            }
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(format!("TLS failed: {}", explain(tls)));
            }
        }
        e = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_failures_say_what_to_do() {
        let cases = [
            (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), "unknown CA"),
            (rustls::Error::InvalidCertificate(CertificateError::NotValidForName), "hostname mismatch"),
            (rustls::Error::AlertReceived(AlertDescription::CertificateRequired), "--client-cert"),
            (rustls::Error::AlertReceived(AlertDescription::UnknownCA), "refused this client's certificate"),
            (rustls::Error::AlertReceived(AlertDescription::ProtocolVersion), "handshake failure"),
        ];
        for (e, expected) in cases {
            assert!(explain(&e).contains(expected), "{e:?}: {}", explain(&e));
        }
        let io = std::io::Error::other(TlsFailure { host: "sitrep".into(), explanation: "why".into() });
        let status = tonic::Status::from_error(Box::new(io));
        assert_eq!(failure_in(Some(&status)).as_deref(), Some("TLS with sitrep failed: why"));
    }

    #[test]
    fn tls_flags_need_an_https_address() {
        let args = TlsArgs { ca: Some("ca.pem".into()), ..Default::default() };
        let err = for_scheme("http://x:1", false, &args).unwrap_err().to_string();
        assert!(err.starts_with("--ca is for an https:// address"), "{err}");
        assert!(for_scheme("http://x:1", false, &TlsArgs::default()).unwrap().is_none());
        let err = client_config(&TlsArgs { ca: Some("/nonexistent/ca.pem".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--ca /nonexistent/ca.pem: cannot read the file"), "{err}");
    }
}
