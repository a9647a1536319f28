//! The Server-Sent Events stream served straight on a connection whose first request asks for it, without hyper.
//!
//! A wallboard holds its event stream open for days, mostly idle. Through hyper, each such HTTP/1 connection
//! keeps an 8 KiB read buffer and an 8 KiB write buffer and its service stack: about 27 KiB before sitrep's session
//! adds anything (measured with 1,000 connections). A stream needs none of that: after the request head, the
//! server only writes messages that are already made (each event's message is shared by every subscriber). So the
//! listener looks at the first bytes of each new connection ([`crate::transport::sniff`]): `GET /api/v1/events` is served here
//! ([`serve`]) with a small request parser and a close-delimited body; everything else (gRPC, the JSON API, the
//! wallboard's files, and an events request that comes later on a reused connection) goes to hyper as before, and
//! gets the same answers there. Both paths open the stream with the same [`super::open_events`].
//!
//! Under TLS the same holds after the handshake: a connection that negotiated HTTP/2 goes to hyper, and an
//! HTTP/1 one has its first bytes read ([`crate::transport::sniff_read`]) rather than peeked, and replayed to whoever serves it
//! (`crate::transport`).

use std::sync::Arc;

use axum::http::{StatusCode, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{EventStream, open_events};
use crate::context::Context;
use crate::error::{Error, Kind};
use crate::transport::{Connection, HEAD_TIMEOUT};

/// The longest request head read here; a browser's is well under 2 KiB.
const MAX_HEAD: usize = 16 * 1024;

/// Serves the event stream on `stream`, whose first request [`crate::transport::sniff`] found to be for it: reads and parses the
/// request head, opens the stream (or answers the error as JSON, as the API does), then writes each message as it
/// comes until the subscriber goes, the session ends, or the aggregator shuts down.
pub async fn serve(ctx: Arc<Context>, mut stream: Connection) {
    let peer = stream.peer();
    tracing::debug!(remote = ?peer.remote_addr, tls = peer.tls, "event stream served directly");
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await;
    // The same Host check as through hyper (see `super::guard`).
    if let Ok(Ok(Some(head))) = &head
        && !ctx.hosts.allows(head.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
    {
        let message = "this server does not answer to that Host name (see [http] allowed_hosts)";
        let answer = response(StatusCode::MISDIRECTED_REQUEST, &format!("{{\"error\":{message:?}}}"));
        return Box::pin(write_answer(stream, answer)).await;
    }
    let head = match head {
        Ok(Ok(Some(head))) => Some(head),
        _ => None,
    };
    match open_direct(&ctx, head, &peer) {
        Ok(events) => {
            // Nothing but the stream is held while it runs: an idle stream's task stays small.
            drop(peer);
            stream_events(events, stream).await
        }
        Err(refused) => {
            let (e, who) = *refused;
            audit_refusal(&ctx, &e, who, peer);
            let (status, body) = e.0.http();
            // Boxed, so the error path's state does not weigh on every idle stream's task.
            Box::pin(write_answer(stream, response(status, &body.to_string()))).await
        }
    }
}

/// Opens the stream a request head asks for, authenticated by the same authenticator as hyper's path; or why
/// not, with who asked (boxed: the error is rare, and an idle stream's task should not carry room for it).
fn open_direct(
    ctx: &Arc<Context>,
    head: Option<Head>,
    peer: &crate::transport::Peer,
) -> Result<EventStream, Box<(super::ApiError, Option<crate::auth::Principal>)>> {
    let Some(head) = head else {
        return Err(Box::new((
            Error::new(Kind::Invalid(Vec::new()), "a malformed or incomplete request head").into(),
            None,
        )));
    };
    match ctx.auth.authenticate(&head.headers, Some(peer)) {
        Ok(Some(who)) => match open_events(ctx, &who, head.query, head.last_event_id.as_deref(), "directly") {
            Ok(events) => Ok(events),
            Err(e) => Err(Box::new((e, Some(who)))),
        },
        Ok(None) => {
            Err(Box::new((Error::unauthenticated("a credential is needed: authorization: Bearer <key>").into(), None)))
        }
        Err(status) => Err(Box::new((status.into(), None))),
    }
}

/// Writes a whole answer, after which the connection closes.
async fn write_answer(mut stream: Connection, answer: Vec<u8>) {
    let _ = stream.write_all(&answer).await;
}

/// Records a refusal of the event stream for the audit, as the layer does on hyper's path.
fn audit_refusal(
    ctx: &Context,
    e: &super::ApiError,
    who: Option<crate::auth::Principal>,
    peer: crate::transport::Peer,
) {
    if let Some(refusal) = e.refusal() {
        let attempt = crate::audit::Attempt {
            principal: who.as_ref().map_or("unauthenticated".into(), |w| w.name.clone()),
            credential: who.map(|w| w.credential).unwrap_or_default(),
            address: peer.remote_addr.map(|a| a.to_string()).unwrap_or_default(),
            target: "/api/v1/events".into(),
        };
        ctx.auth.refusals().refuse(&attempt, refusal);
    }
}

/// Writes the stream's head and then every message. A read on the socket watches for the subscriber going away
/// (EOF or an error) so an idle stream is let go at once rather than at its next heartbeat.
async fn stream_events(events: EventStream, mut stream: Connection) {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
        connection: close\r\n\r\n";
    if stream.write_all(HEAD).await.is_err() || stream.write_all(super::RETRY).await.is_err() {
        return;
    }
    match stream {
        // TCP splits into borrowed halves, as it always has; a TLS stream is one state for both directions.
        Connection::Plain(mut tcp) => {
            let (reader, writer) = tcp.split();
            pump(events, reader, writer).await
        }
        tls => {
            let (reader, writer) = tokio::io::split(tls);
            pump(events, reader, writer).await
        }
    }
}

/// Writes every message to `writer` until the session ends or the subscriber goes (`reader` ends).
async fn pump(mut events: EventStream, mut reader: impl AsyncRead + Unpin, mut writer: impl AsyncWrite + Unpin) {
    let mut scratch = [0u8; 64];
    loop {
        let message = tokio::select! {
            message = events.next() => message,
            read = reader.read(&mut scratch) => match read {
                // A subscriber has nothing more to say once its stream is open; anything it sends is ignored.
                Ok(n) if n > 0 => continue,
                _ => return,
            },
        };
        let Some(message) = message else {
            // The session ended (after its final message): close the body, which ends it.
            let _ = writer.shutdown().await;
            return;
        };
        if writer.write_all(&message).await.is_err() {
            return;
        }
    }
}

/// The parts of the request head the stream needs.
struct Head {
    query: Option<String>,
    last_event_id: Option<String>,
    /// The headers that carry credentials, and Host.
    headers: axum::http::HeaderMap,
}

/// Reads up to the end of the request head. `Ok(None)` when it is malformed, too long, or the connection ended
/// first.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<Head>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let target = request.path.unwrap_or_default();
                let query = target.split_once('?').map(|(_, q)| q.to_owned());
                let last_event_id = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("last-event-id"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_owned);
                let mut credentials = axum::http::HeaderMap::new();
                for (name, wanted) in
                    [("authorization", header::AUTHORIZATION), ("host", header::HOST), ("cookie", header::COOKIE)]
                {
                    let found = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
                    if let Some(value) = found.and_then(|h| axum::http::HeaderValue::from_bytes(h.value).ok()) {
                        credentials.insert(wanted, value);
                    }
                }
                return Ok(Some(Head { query, last_event_id, headers: credentials }));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => return Ok(None),
        }
    }
}

/// A whole JSON response, after which the connection closes.
fn response(status: StatusCode, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use crate::transport::{sniff, sniff_read};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn sniff_tells_the_event_stream_from_everything_else() {
        for (first, expect) in [
            (&b"GET /api/v1/events HTTP/1.1\r\n"[..], true),
            (b"GET /api/v1/events?system=QWE HTTP/1.1\r\n", true),
            (b"GET /api/v1/eventsx HTTP/1.1\r\n", false),
            (b"GET /api/v1/snapshot HTTP/1.1\r\n", false),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false),
            (b"POST /sitrep.v1.ProviderService/Report HTTP/1.1\r\n", false),
        ] {
            let (mut client, server) = pair().await;
            client.write_all(first).await.unwrap();
            assert_eq!(sniff(&server).await, expect, "{}", String::from_utf8_lossy(first));
            // Sniffing only peeks: the bytes are still there for whoever serves the connection.
            let mut again = vec![0u8; first.len()];
            let mut server = server;
            server.read_exact(&mut again).await.unwrap();
            assert_eq!(again, first);
        }
    }

    #[tokio::test]
    async fn sniff_read_tells_the_same_and_keeps_what_it_read() {
        for (first, expect) in [
            (&b"GET /api/v1/events HTTP/1.1\r\n"[..], true),
            (b"GET /api/v1/events?system=QWE HTTP/1.1\r\n", true),
            (b"GET /api/v1/eventsx HTTP/1.1\r\n", false),
            (b"GET / HTTP/1.1\r\n", false),
        ] {
            let (mut client, mut server) = pair().await;
            client.write_all(first).await.unwrap();
            let (events, read) = sniff_read(&mut server).await;
            assert_eq!(events, expect, "{}", String::from_utf8_lossy(first));
            assert!(first.starts_with(&read) && !read.is_empty());
        }
    }

    #[tokio::test]
    async fn a_request_line_split_across_packets_is_waited_for() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET /api/v1/ev").await.unwrap();
        let sniffing = tokio::spawn(async move { sniff(&server).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(b"ents HTTP/1.1\r\n").await.unwrap();
        assert!(sniffing.await.unwrap());
    }

    #[tokio::test]
    async fn the_request_head_gives_the_query_and_last_event_id() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(
                b"GET /api/v1/events?system=QWE&heartbeat=5 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: m1:4-0\r\n\r\n",
            )
            .await
            .unwrap();
        let head = read_head(&mut server).await.unwrap().unwrap();
        assert_eq!(head.query.as_deref(), Some("system=QWE&heartbeat=5"));
        assert_eq!(head.last_event_id.as_deref(), Some("m1:4-0"));
        let (mut client, mut server) = pair().await;
        client.write_all(b"GET /api/v1/events HTTP/1.1\r\nHost").await.unwrap();
        drop(client);
        assert!(read_head(&mut server).await.unwrap().is_none(), "a head cut short");
    }
}
