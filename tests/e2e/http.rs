//! A plain HTTP client for the tests, on a bare TCP socket: requests are HTTP/1.0, so the server answers with the
//! body as it is (no chunked framing) and closes at the end. Enough to read JSON, Server-Sent Events and gRPC-Web.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::DEADLINE;

/// `http://host:port` -> `host:port`.
pub fn authority(url: &str) -> &str {
    url.trim_start_matches("http://").trim_end_matches('/')
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

async fn send(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(authority(url)).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.0\r\n");
    // The server's own address as Host, unless the test names another.
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {}\r\n", authority(url)));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    BufReader::new(stream)
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let status =
        line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (status, headers)
}

pub async fn request(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let exchange = async {
        let mut reader = send(url, method, path, headers, body).await;
        let (status, headers) = read_head(&mut reader).await;
        let mut body = Vec::new();
        reader.read_to_end(&mut body).await.unwrap();
        Response { status, headers, body }
    };
    tokio::time::timeout(DEADLINE, exchange).await.expect("an HTTP answer in time")
}

pub async fn get(url: &str, path: &str) -> Response {
    request(url, "GET", path, &[], &[]).await
}

/// One Server-Sent Event.
#[derive(Clone, Debug, Default)]
pub struct SseMessage {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl SseMessage {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// An open Server-Sent Events stream.
pub struct Sse {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Sse {
    pub async fn open(url: &str, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let mut reader = send(url, "GET", path, &all, &[]).await;
        let (status, headers) = tokio::time::timeout(DEADLINE, read_head(&mut reader)).await.expect("SSE head in time");
        Sse { reader, status, headers }
    }

    /// The next event (comments and keep-alives skipped), failing the test if none comes in time.
    pub async fn next(&mut self) -> SseMessage {
        tokio::time::timeout(DEADLINE, self.read()).await.expect("an SSE event in time").expect("stream open")
    }

    /// The next event, or None if the stream ended.
    pub async fn read(&mut self) -> Option<SseMessage> {
        let mut msg = SseMessage::default();
        let mut seen = false;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if seen && !msg.event.is_empty() {
                    return Some(msg);
                }
                msg = SseMessage::default();
                seen = false;
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (field, value) =
                l.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((l, ""));
            match field {
                "event" => msg.event = value.to_owned(),
                "id" => msg.id = Some(value.to_owned()),
                "data" => {
                    if !msg.data.is_empty() {
                        msg.data.push('\n');
                    }
                    msg.data.push_str(value);
                }
                _ => {}
            }
            seen = true;
        }
    }

    /// The next event that is not a heartbeat.
    pub async fn next_non_heartbeat(&mut self) -> SseMessage {
        loop {
            let m = self.next().await;
            if m.event != "heartbeat" {
                return m;
            }
        }
    }

    /// Whether anything but heartbeats arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.read()).await {
                Err(_) => return None,
                Ok(None) => return None,
                Ok(Some(m)) if m.event == "heartbeat" => continue,
                Ok(Some(m)) => return Some(m),
            }
        }
    }
}
