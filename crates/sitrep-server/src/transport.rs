//! A connection as the servers see it, plaintext or TLS, and who is at the other end.
//!
//! The accept loop ([`route`]) decides for each new connection where it goes: to hyper (gRPC, gRPC-Web, the JSON
//! API, the wallboard's files), to the event stream served outside hyper (`http::serve_direct`), or, on a TLS port
//! that was sent plaintext, to a refusal that says to use `https://`. Under TLS the handshake comes first; a
//! connection that negotiated HTTP/2 (ALPN `h2`: every gRPC client, and browsers) goes to hyper at once, and an
//! HTTP/1 one has its first bytes read and looked at the way a plaintext connection's are peeked at, then replayed
//! to whoever serves it ([`Replayed`]).
//!
//! # Who is at the other end
//!
//! Every request served by hyper carries a [`Peer`] in its extensions: the addresses and, over TLS, the client's
//! certificate chain as verified against `tls.client_ca` (the client's own certificate first). In a tonic service:
//!
//! ```ignore
//! let peer = request.extensions().get::<sitrep_server::transport::Peer>();
//! let certificate = peer.and_then(|p| p.certificates.as_deref()).and_then(|chain| chain.first());
//! ```
//!
//! and in an axum handler the same through `axum::Extension<Peer>` (or `request.extensions()`). tonic's
//! `Request::remote_addr()` keeps working ([`PeerAddrLayer`] adds tonic's `TcpConnectInfo`); tonic's
//! `Request::peer_certs()` does not (it is compiled only with tonic's own TLS, which is not used: see `crate::tls`).
//! The event stream served outside hyper gets its connection's [`Peer`] from [`Connection::peer`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::ServerTls;

/// Who is at the other end of a connection: in every request's extensions (see the module's documentation).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub local_addr: Option<SocketAddr>,
    pub remote_addr: Option<SocketAddr>,
    /// Over TLS, the certificate chain the client presented, verified against `tls.client_ca` (its own
    /// certificate first); `None` over plaintext or when it presented none (`client_auth = "optional"`).
    pub certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// A served connection: TCP as accepted, or TLS over it with the bytes already read to route it.
pub enum Connection {
    Plain(TcpStream),
    Tls(Box<Replayed<TlsStream<TcpStream>>>),
}

impl Connection {
    pub fn peer(&self) -> Peer {
        match self {
            Connection::Plain(tcp) => Peer {
                local_addr: tcp.local_addr().ok(),
                remote_addr: tcp.peer_addr().ok(),
                certificates: None,
                tls: false,
            },
            Connection::Tls(tls) => {
                let (tcp, session) = tls.inner.get_ref();
                Peer {
                    local_addr: tcp.local_addr().ok(),
                    remote_addr: tcp.peer_addr().ok(),
                    certificates: session.peer_certificates().map(|chain| chain.iter().cloned().collect()),
                    tls: true,
                }
            }
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer()
    }
}

/// Where the accept loop sends a new connection.
pub enum Routed {
    /// gRPC and HTTP, served by hyper.
    Hyper(Connection),
    /// A first request for the event stream, served outside hyper.
    Events(Connection),
    /// Plaintext sent to the TLS port: answered with a refusal.
    Plaintext(TcpStream),
    /// A failed or abandoned TLS handshake: nothing to serve.
    Dropped,
}

/// Decides where `stream` goes (see the module's documentation). Plaintext connections are routed exactly as
/// before TLS existed: a peek, nothing read.
pub async fn route(stream: TcpStream, tls: Option<&ServerTls>) -> Routed {
    let Some(tls) = tls else {
        // A connection that says nothing is let go, as one that does not finish its TLS handshake is: idle sockets
        // held open by the thousand would otherwise use up the descriptors.
        let mut first = [0u8; 1];
        match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                tracing::debug!(remote = ?stream.peer_addr().ok(), "a connection sent nothing: closed");
                return Routed::Dropped;
            }
        }
        return if sniff(&stream).await {
            Routed::Events(Connection::Plain(stream))
        } else {
            Routed::Hyper(Connection::Plain(stream))
        };
    };
    if !crate::tls::looks_like_tls(&stream, crate::tls::HANDSHAKE_TIMEOUT).await {
        return Routed::Plaintext(stream);
    }
    let remote = stream.peer_addr().ok();
    let mut stream = match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => s,
        // Scanners and misconfigured clients fail here all day: not worth more than a debug line each.
        Ok(Err(error)) => {
            tracing::debug!(?remote, %error, "TLS handshake failed");
            return Routed::Dropped;
        }
        Err(_) => {
            tracing::debug!(?remote, "TLS handshake timed out");
            return Routed::Dropped;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        return Routed::Hyper(Connection::Tls(Box::new(Replayed::new(stream, Vec::new()))));
    }
    let (events, first) = sniff_read(&mut stream).await;
    let connection = Connection::Tls(Box::new(Replayed::new(stream, first)));
    if events { Routed::Events(connection) } else { Routed::Hyper(connection) }
}

/// A stream whose first bytes were read already: they are read again first, then the stream's own.
pub struct Replayed<S> {
    first: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replayed<S> {
    pub fn new(inner: S, first: Vec<u8>) -> Self {
        Replayed { first, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.first.len() {
            let n = (this.first.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.first[this.at..this.at + n]);
            this.at += n;
            if this.at == this.first.len() {
                this.first = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(s) => s.is_write_vectored(),
            Connection::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_flush(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Connection::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What a connection's first request starts with when it asks for the event stream (then a space or a query).
const EVENTS: &[u8] = b"GET /api/v1/events";
/// How long a new connection may take to send its request head (to be sniffed here, then read by the event
/// stream).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a new connection's first request is for the event stream. Waits for the first bytes (a partial line is
/// waited for briefly); errors and silence count as "not the stream", leaving the connection to hyper, whose
/// own timeouts and errors then apply.
pub async fn sniff(stream: &TcpStream) -> bool {
    let mut first = [0u8; EVENTS.len() + 1];
    let mut pause = Duration::from_millis(2);
    let look = async {
        loop {
            let n = match stream.peek(&mut first).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            let seen = &first[..n];
            if n == first.len() {
                return seen.starts_with(EVENTS) && matches!(seen[EVENTS.len()], b' ' | b'?');
            }
            if !EVENTS.starts_with(seen) {
                return false;
            }
            // A request line split across packets: peek again in a moment (the bytes stay readable, so there is
            // nothing to wait on), less and less often, so a client trickling bytes costs next to nothing.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, look).await.unwrap_or(false)
}

/// Whether a connection's first bytes, read (not peeked) from `stream`, are a request for the event stream; and
/// those bytes, to be replayed to whoever serves the connection. For TLS connections, whose bytes cannot be peeked
/// at.
pub async fn sniff_read<S: AsyncRead + Unpin>(stream: &mut S) -> (bool, Vec<u8>) {
    let could_be = |seen: &[u8]| EVENTS.starts_with(&seen[..seen.len().min(EVENTS.len())]);
    let first = read_first(stream, EVENTS.len() + 1, could_be, HEAD_TIMEOUT).await;
    let events =
        first.len() == EVENTS.len() + 1 && first.starts_with(EVENTS) && matches!(first[EVENTS.len()], b' ' | b'?');
    (events, first)
}

/// Reads up to `n` bytes, for routing a TLS connection by its first bytes: fewer if the stream ends, `matches`
/// says those read so far cannot be what is looked for, or `wait` passes. What was read is returned either way,
/// to be replayed.
pub async fn read_first<S: AsyncRead + Unpin>(
    stream: &mut S,
    n: usize,
    matches: impl Fn(&[u8]) -> bool,
    wait: std::time::Duration,
) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut first = vec![0u8; n];
    let mut len = 0;
    while len < n && matches(&first[..len]) {
        match tokio::time::timeout_at(deadline, stream.read(&mut first[len..])).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(k)) => len += k,
        }
    }
    first.truncate(len);
    first
}

/// Adds tonic's `TcpConnectInfo` beside each request's [`Peer`], so `tonic::Request::remote_addr()` answers as it
/// does with tonic's own listener.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerAddrLayer;

impl<S> tower_layer::Layer<S> for PeerAddrLayer {
    type Service = PeerAddr<S>;

    fn layer(&self, inner: S) -> PeerAddr<S> {
        PeerAddr(inner)
    }
}

#[derive(Clone, Debug)]
pub struct PeerAddr<S>(S);

impl<S, B> tower_service::Service<axum::http::Request<B>> for PeerAddr<S>
where
    S: tower_service::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        if let Some(peer) = request.extensions().get::<Peer>() {
            let info = TcpConnectInfo { local_addr: peer.local_addr, remote_addr: peer.remote_addr };
            request.extensions_mut().insert(info);
        }
        self.0.call(request)
    }
}

/// A connection counted against `[limits] max_connections` until it is dropped (when hyper or its own task is done
/// with it).
pub struct Counted {
    inner: Connection,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Counted {
    pub fn new(inner: Connection, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Counted { inner, _permit: permit }
    }
}

impl Connected for Counted {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.inner.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientAuth, TlsConfig};
    use rustls_pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;
    use tower_layer::Layer;

    /// A client certificate verified in the handshake is in the connection's `Peer` (what tonic puts in every
    /// request's extensions), with the addresses; without one (optional), `certificates` is `None`. tonic's
    /// `TcpConnectInfo` is added beside it.
    #[tokio::test]
    async fn the_client_certificate_reaches_the_request() {
        let tmp = tempfile::Builder::new().prefix("sitrep-peer-").tempdir().unwrap();
        let dir = tmp.path();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let issue = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
            (cert, key)
        };
        let (server_cert, server_key) = issue("localhost");
        let (client_cert, client_key) = issue("provider-rj7");
        let ca_pem = AsRef::<rcgen::Certificate>::as_ref(&ca).pem();
        std::fs::write(dir.join("cert.pem"), server_cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), server_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        let config = TlsConfig {
            cert: Some(dir.join("cert.pem")),
            key: Some(dir.join("key.pem")),
            client_ca: Some(dir.join("ca.pem")),
            client_auth: ClientAuth::Optional,
            ..Default::default()
        };
        let tls = crate::tls::ServerTls::from_config(&config).unwrap().unwrap();
        drop(tmp);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for with_certificate in [true, false] {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
            let builder =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots);
            let mut client = if with_certificate {
                let key =
                    rustls_pki_types::PrivateKeyDer::from_pem_slice(client_key.serialize_pem().as_bytes()).unwrap();
                builder.with_client_auth_cert(vec![client_cert.der().clone()], key).unwrap()
            } else {
                builder.with_no_client_auth()
            };
            client.alpn_protocols = vec![b"h2".to_vec()];
            let connecting = tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.unwrap();
                // TLS 1.3: the server verifies the client's certificate after the client has finished; wait for
                // the server to close rather than drop at once.
                let _ = s.read(&mut [0u8; 1]).await;
            });
            let (tcp, _) = listener.accept().await.unwrap();
            let Routed::Hyper(connection) = route(tcp, Some(&tls)).await else { panic!("h2 goes to hyper") };
            let peer = connection.connect_info();
            assert!(peer.tls && peer.local_addr == Some(addr) && peer.remote_addr.is_some());
            match with_certificate {
                true => assert_eq!(peer.certificates.as_deref().unwrap()[0].as_ref(), client_cert.der().as_ref()),
                false => assert!(peer.certificates.is_none()),
            }
            drop(connection);
            connecting.await.unwrap();

            // What a handler sees: the Peer, and tonic's TcpConnectInfo beside it.
            let mut request = axum::http::Request::new(());
            request.extensions_mut().insert(peer);
            let mut service = PeerAddrLayer.layer(Echo);
            let seen = tower_service::Service::call(&mut service, request).await.unwrap();
            assert_eq!(seen, Some(addr));
        }
    }

    /// Answers the `TcpConnectInfo`'s local address a request carries.
    struct Echo;
    impl tower_service::Service<axum::http::Request<()>> for Echo {
        type Response = Option<SocketAddr>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Option<SocketAddr>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: axum::http::Request<()>) -> Self::Future {
            std::future::ready(Ok(request.extensions().get::<TcpConnectInfo>().and_then(|i| i.local_addr)))
        }
    }
    use std::convert::Infallible;

    #[tokio::test]
    async fn replayed_bytes_come_first_then_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Replayed::new(b, b"hello".to_vec());
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn first_bytes_stop_at_a_mismatch_or_the_end() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"GET /api").await.unwrap();
        a.write_all(b"/v1/events HTTP/1.1").await.unwrap();
        let prefix = b"GET /api/v1/events";
        let wait = std::time::Duration::from_secs(5);
        let first = read_first(&mut b, prefix.len() + 1, |seen| prefix.starts_with(seen), wait).await;
        assert_eq!(first, b"GET /api/v1/events ");
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"PRI * HTTP/2.0").await.unwrap();
        let first = read_first(&mut b, prefix.len() + 1, |seen| prefix.starts_with(seen), wait).await;
        assert_eq!(first, b"PRI * HTTP/2.0", "one read, then a mismatch: no waiting for more");
        a.write_all(b"GET").await.unwrap();
        let first = read_first(&mut b, 10, |_| true, std::time::Duration::from_millis(50)).await;
        assert_eq!(first, b"GET", "what came before the wait ran out");
        drop(a);
        let first = read_first(&mut b, 4, |_| true, wait).await;
        assert!(first.is_empty());
    }
}
