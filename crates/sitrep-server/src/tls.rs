//! TLS on the aggregator's one port, with certificates that are rotated on disk.
//!
//! **Terminated in the accept loop.** Every connection's TLS handshake is made by `tokio-rustls` (the `ring`
//! provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`) before anything else looks at it; gRPC, gRPC-Web, the JSON
//! API, the wallboard and Server-Sent Events are then served over the TLS stream exactly as they are over TCP
//! (`crate::transport`). tonic's own TLS is not used: its features switch on tokio-rustls' default provider,
//! aws-lc-rs, whose C build needs cmake and minutes.
//!
//! **Rotation.** The chain, the key and the client CAs are read again every `tls.reload_interval`; when their
//! content changed, a whole new `rustls::ServerConfig` is built and swapped in. Each handshake takes the
//! configuration current at its start, so new connections get the new certificate while connections already open
//! (a wallboard's stream, a provider's report stream) carry on with the one they began with. A new pair that
//! cannot be used (a key that does not belong to the certificate, say, while a tool is half-way through writing
//! them) is logged once and the previous configuration kept; the next readable pair is taken.
//!
//! **Client certificates.** With `tls.client_ca`, a client may (`client_auth = "optional"`) or must (`"required"`)
//! present a certificate signed by one of those CAs; a presented certificate that does not verify fails the
//! handshake either way. The verified chain reaches request handlers as `transport::Peer::certificates`.
//!
//! **A plaintext client on the TLS port** gets an answer it can show rather than a reset: `400` with a sentence
//! over HTTP/1, and for gRPC a `FAILED_PRECONDITION` status saying to use `https://` ([`refuse_plaintext`]).
//!
//! Error messages name the setting and the file, and never include a key file's content.

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ClientAuth, TlsConfig};

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a plaintext client on the TLS port is given to read its answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a gRPC client speaking plaintext to the TLS port is told (ASCII only: it goes in `grpc-message` as is).
pub const PLAINTEXT_REFUSED: &str = "this port serves TLS: connect with https:// (and --ca FILE if its certificate \
    is not from a CA the system trusts)";

/// A TLS setting that cannot be used, naming the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} {}: {message}", path.display())]
    File { setting: &'static str, path: PathBuf, message: String },
    #[error("tls.cert {} and tls.key {}: {message}", cert.display(), key.display())]
    Pair { cert: PathBuf, key: PathBuf, message: String },
    #[error(
        "refusing to serve plaintext on {listen}, which is not a loopback address: set [tls] cert and key in the \
         configuration file to serve TLS there, or [tls] allow_plaintext = true to serve plaintext on purpose \
         (behind a TLS-terminating proxy, or on a trusted network)"
    )]
    Plaintext { listen: SocketAddr },
}

/// Whether `listen` may be served as `tls` says: TLS anywhere, plaintext on loopback, plaintext elsewhere only
/// with `tls.allow_plaintext`. Returns whether a warning is owed (plaintext on a non-loopback address).
pub fn check_listener(listen: SocketAddr, tls: &TlsConfig) -> Result<bool, TlsError> {
    if tls.enabled() || listen.ip().is_loopback() {
        return Ok(false);
    }
    if tls.allow_plaintext { Ok(true) } else { Err(TlsError::Plaintext { listen }) }
}

#[derive(Clone, Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// The files' content as last read.
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Material {
    fn read(files: &Files) -> Result<Material, TlsError> {
        let read = |setting, path: &Path| {
            std::fs::read(path).map_err(|e| TlsError::File {
                setting,
                path: path.to_owned(),
                message: format!("cannot read the file: {e}"),
            })
        };
        Ok(Material {
            cert: read("tls.cert", &files.cert)?,
            key: read("tls.key", &files.key)?,
            client_ca: files.client_ca.as_deref().map(|p| read("tls.client_ca", p)).transpose()?,
        })
    }

    /// Tells one content of the three files from another (not a secret: a change detector).
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.cert, &self.key, &self.client_ca).hash(&mut h);
        h.finish()
    }
}

/// The configuration every new connection's handshake takes, and what it was built from.
struct Current {
    config: Arc<ServerConfig>,
    fingerprint: u64,
}

/// The listener's TLS: the current `rustls` configuration, and how to build the next one.
pub struct ServerTls {
    files: Files,
    client_auth: ClientAuth,
    interval: Duration,
    current: RwLock<Current>,
}

impl ServerTls {
    /// Reads the files `tls` names and builds the configuration, or says which setting and file are at fault.
    /// `None` when TLS is not configured.
    pub fn from_config(tls: &TlsConfig) -> Result<Option<ServerTls>, TlsError> {
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else { return Ok(None) };
        let files = Files { cert: cert.clone(), key: key.clone(), client_ca: tls.client_ca.clone() };
        let material = Material::read(&files)?;
        let config = build(&files, &material, tls.client_auth)?;
        let current = RwLock::new(Current { config, fingerprint: material.fingerprint() });
        Ok(Some(ServerTls { files, client_auth: tls.client_auth, interval: tls.reload_interval.get(), current }))
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).config.clone())
    }

    /// A sentence for the log line that says how the port is served.
    pub fn describe(&self) -> String {
        let clients = match (&self.files.client_ca, self.client_auth) {
            (None, _) => "no client certificates asked for".to_owned(),
            (Some(ca), ClientAuth::Optional) => format!("client certificates optional, from {}", ca.display()),
            (Some(ca), ClientAuth::Required) => format!("client certificates required, from {}", ca.display()),
        };
        format!("TLS 1.2 and 1.3, certificate {} (reloaded when it changes); {clients}", self.files.cert.display())
    }

    /// Looks at the files every `tls.reload_interval` until `cancel`, and swaps in a new configuration when their
    /// content changed and can be used. Blocking file reads run off the async threads.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // The last problem reported, so a pair that stays bad is logged once, not at every look.
        let mut reported: Option<String> = None;
        fn report(reported: &mut Option<String>, problem: String) {
            if reported.as_ref() != Some(&problem) {
                tracing::warn!("{problem}; new connections keep the previous certificate");
                *reported = Some(problem);
            }
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let files = self.files.clone();
            let material = match tokio::task::spawn_blocking(move || Material::read(&files)).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    report(&mut reported, e.to_string());
                    continue;
                }
                Err(_) => continue,
            };
            let fingerprint = material.fingerprint();
            if fingerprint == self.current.read().unwrap_or_else(|e| e.into_inner()).fingerprint {
                reported = None;
                continue;
            }
            match build(&self.files, &material, self.client_auth) {
                Ok(config) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current { config, fingerprint };
                    reported = None;
                    tracing::info!(
                        cert = %self.files.cert.display(),
                        "TLS: loaded the new certificate; new connections use it, open ones carry on"
                    );
                }
                Err(e) => report(&mut reported, e.to_string()),
            }
        }
    }
}

/// The certificates of a PEM file, or what is wrong with it.
fn certificates(setting: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |message: String| TlsError::File { setting, path: path.to_owned(), message };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not a PEM certificate file ({})", pem_problem(&e))))?;
    if certs.is_empty() {
        return Err(problem("no certificate in the file (expected PEM blocks BEGIN CERTIFICATE)".into()));
    }
    Ok(certs)
}

/// What is wrong with a PEM file, in words that never quote the file (it may be a key).
fn pem_problem(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error::*;
    match e {
        MissingSectionEnd { .. } => "a BEGIN line without its END line",
        IllegalSectionStart { .. } => "a malformed BEGIN line",
        Base64Decode(_) => "a block that is not valid base64",
        NoItemsFound => "nothing of the expected kind",
        SectionTooLarge => "a block larger than 256 MB",
        _ => "unreadable",
    }
}

fn build(files: &Files, m: &Material, client_auth: ClientAuth) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("tls.cert", &files.cert, &m.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&m.key).map_err(|e| TlsError::File {
        setting: "tls.key",
        path: files.key.clone(),
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no private key in the file (expected a PEM block BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                    .to_owned()
            }
            other => format!("not a PEM private key ({})", pem_problem(&other)),
        },
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair { cert: files.cert.clone(), key: files.key.clone(), message: e.to_string() })?;
    let builder = match (&files.client_ca, &m.client_ca) {
        (Some(path), Some(pem)) => {
            let problem = |message: String| TlsError::File { setting: "tls.client_ca", path: path.clone(), message };
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls.client_ca", path, pem)? {
                roots.add(ca).map_err(|e| problem(format!("a certificate that cannot be a trust root: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| problem(e.to_string()))?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        message: match e {
            rustls::Error::InconsistentKeys(_) => "the private key does not belong to the certificate".to_owned(),
            other => format!("cannot be used together: {other}"),
        },
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(Arc::new(config))
}

/// Whether a new connection starts with a TLS handshake record. Waits for its first byte (up to `wait`); silence
/// or an error counts as TLS, so the handshake's own timeout and errors apply.
pub async fn looks_like_tls(stream: &TcpStream, wait: Duration) -> bool {
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == TLS_HANDSHAKE_RECORD,
        _ => true,
    }
}

/// Answers a client that speaks plaintext to the TLS port, so it can say what is wrong: over HTTP/1 a `400` with
/// a sentence, to gRPC (over HTTP/2 without TLS) a `FAILED_PRECONDITION` status. Then closes.
pub async fn refuse_plaintext(stream: TcpStream, cancel: &CancellationToken) {
    let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
        Ok::<_, Infallible>(refusal(&request))
    });
    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        _ = tokio::time::sleep(REFUSAL_TIMEOUT) => {}
        _ = cancel.cancelled() => {}
    }
}

fn refusal<B>(request: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
    let grpc = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let builder = hyper::Response::builder();
    let response = if grpc {
        // A trailers-only gRPC answer: the status in the headers, no body.
        builder
            .status(200)
            .header(hyper::header::CONTENT_TYPE, "application/grpc")
            .header("grpc-status", (tonic::Code::FailedPrecondition as i32).to_string())
            .header("grpc-message", PLAINTEXT_REFUSED)
            .body(Full::default())
    } else {
        let host = request.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("HOST:PORT");
        builder
            .status(400)
            .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(hyper::header::CONNECTION, "close")
            .body(Full::from(format!("This port serves HTTPS (TLS): use https://{host}/\n")))
    };
    response.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("sitrep-tls-{tag}-")).tempdir().unwrap()
    }

    /// A self-signed certificate for `name` and its key, as PEM.
    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn config(d: &Path, reload: &str) -> TlsConfig {
        TlsConfig {
            cert: Some(d.join("cert.pem")),
            key: Some(d.join("key.pem")),
            reload_interval: reload.parse().unwrap(),
            ..Default::default()
        }
    }

    /// The certificate a client is shown in a handshake with `tls` now (the client trusts `roots`).
    async fn served(tls: &ServerTls, roots: &[&str]) -> Vec<u8> {
        let mut store = RootCertStore::empty();
        for pem in roots {
            store.add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, a).await.unwrap();
        server.await.unwrap().unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().as_ref().to_vec()
    }

    /// New handshakes get a replaced certificate; a pair whose key does not match is not taken (the previous one
    /// stays), and the next good pair is.
    #[tokio::test]
    async fn a_rotated_certificate_is_served_and_a_bad_one_is_not() {
        let d = dir("rotate");
        let write = |(cert, key): &(String, String)| {
            std::fs::write(d.path().join("cert.pem"), cert).unwrap();
            std::fs::write(d.path().join("key.pem"), key).unwrap();
        };
        let (a, b, c) = (pair("localhost"), pair("localhost"), pair("localhost"));
        let roots = [a.0.as_str(), b.0.as_str(), c.0.as_str()];
        write(&a);
        let tls = Arc::new(ServerTls::from_config(&config(d.path(), "100ms")).unwrap().unwrap());
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(tls.clone().watch(cancel.clone()));
        assert_eq!(served(&tls, &roots).await, der(&a.0));
        let until = |want: Vec<u8>| {
            let tls = tls.clone();
            async move {
                for _ in 0..100 {
                    if served(&tls, &roots).await == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("the certificate was not taken");
            }
        };
        write(&b);
        until(der(&b.0)).await;
        // B's certificate with C's key: not a pair. B stays.
        std::fs::write(d.path().join("key.pem"), &c.1).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(served(&tls, &roots).await, der(&b.0));
        write(&c);
        until(der(&c.0)).await;
        cancel.cancel();
        watcher.await.unwrap();
    }

    #[test]
    fn errors_name_the_setting_and_the_file_and_never_quote_the_key() {
        let d = dir("errors");
        let (cert, key) = pair("localhost");
        let (_, other_key) = pair("localhost");
        std::fs::write(d.path().join("cert.pem"), &cert).unwrap();
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==!!\n-----END PRIVATE KEY-----\n";
        let cases = [
            (None, "tls.key", "cannot read the file"),
            (Some("not a key"), "tls.key", "no private key in the file"),
            (Some(secret), "tls.key", "not a PEM private key"),
            (Some(other_key.as_str()), "tls.cert", "the private key does not belong to the certificate"),
            (Some(key.as_str()), "", ""),
        ];
        for (key_text, setting, expected) in cases {
            let _ = std::fs::remove_file(d.path().join("key.pem"));
            if let Some(k) = key_text {
                std::fs::write(d.path().join("key.pem"), k).unwrap();
            }
            match ServerTls::from_config(&config(d.path(), "10s")) {
                Ok(tls) => assert!(setting.is_empty() && tls.is_some(), "{setting} should have failed"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.starts_with(setting) && text.contains(expected), "{text}");
                    assert!(text.contains("key.pem") || text.contains("cert.pem"), "names the file: {text}");
                    assert!(!text.contains("c2VjcmV0"), "never the key's content: {text}");
                }
            }
        }
        std::fs::write(d.path().join("cert.pem"), "no certificate here").unwrap();
        let text = ServerTls::from_config(&config(d.path(), "10s")).err().unwrap().to_string();
        assert!(text.starts_with("tls.cert") && text.contains("no certificate in the file"), "{text}");
    }

    #[test]
    fn plaintext_is_for_loopback_unless_allowed() {
        let mut tls = TlsConfig::default();
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let all: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert!(!check_listener(loopback, &tls).unwrap());
        assert!(!check_listener("[::1]:1".parse().unwrap(), &tls).unwrap());
        let refused = check_listener(all, &tls).unwrap_err().to_string();
        assert!(refused.contains("0.0.0.0:50051") && refused.contains("[tls] allow_plaintext = true"), "{refused}");
        tls.allow_plaintext = true;
        assert!(check_listener(all, &tls).unwrap(), "allowed, with a warning owed");
        tls.allow_plaintext = false;
        tls.cert = Some("c.pem".into());
        tls.key = Some("k.pem".into());
        assert!(!check_listener(all, &tls).unwrap(), "TLS anywhere");
    }

    #[test]
    fn plaintext_clients_are_told_to_use_https() {
        let grpc = hyper::Request::builder().header("content-type", "application/grpc").body(()).unwrap();
        let answer = refusal(&grpc);
        assert_eq!(answer.headers()["grpc-status"], "9");
        assert_eq!(answer.headers()["grpc-message"], PLAINTEXT_REFUSED);
        let page = hyper::Request::builder().header("host", "sitrep.example:443").body(()).unwrap();
        assert_eq!(refusal(&page).status(), 400);
    }
}
