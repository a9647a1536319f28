//! TLS on the aggregator's one port, checked from outside with independent clients: `openssl s_client` (TLS 1.2
//! and 1.3 connect, 1.1 does not), `curl` (the health check, the JSON API, the wallboard, Server-Sent Events over
//! HTTP/1.1 and HTTP/2), Python's `grpcio` when it is installed, and sitrep's own commands (`push`, `watch`). Client
//! certificates, certificates rotated on disk under open streams, the refusal of plaintext where TLS is expected,
//! and Redis over TLS. Certificates are made in the test with `rcgen`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

/// A certificate authority made for the test.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Ca { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        AsRef::<rcgen::Certificate>::as_ref(&self.issuer).pem()
    }

    /// A certificate for `names` signed by this CA, and its key, as PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes a certificate and its key as `dir/name.crt` and `dir/name.key`; returns their paths.
fn write_pair(dir: &Path, name: &str, (cert, key): (String, String)) -> [String; 2] {
    std::fs::write(dir.join(format!("{name}.crt")), cert).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key).unwrap();
    [path(dir.join(format!("{name}.crt"))), path(dir.join(format!("{name}.key")))]
}

/// Writes `text` to `dir/name` all at once (a temporary file renamed), as rotation tools do.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs a command to its end (failing the test if it takes longer than the deadline).
async fn run(program: &str, args: &[&str]) -> Ran {
    let out = tokio::time::timeout(DEADLINE, Command::new(program).args(args).stdin(Stdio::null()).output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} ran too long"))
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sitrep(args: &[&str]) -> Ran {
    run(env!("CARGO_BIN_EXE_sitrep"), args).await
}

fn path(p: PathBuf) -> String {
    p.display().to_string()
}

/// A running aggregator serving TLS with a certificate for `localhost` from `ca` (the files `cert.pem`, `key.pem`
/// and `ca.pem` beside its configuration), plus `extra` configuration in its `[tls]` section and other files.
async fn start_tls(ca: &Ca, extra: &str, files: &[(&str, &str)]) -> Server {
    let (cert, key) = ca.issue(&["localhost"]);
    let config = format!("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n{extra}");
    let ca_pem = ca.pem();
    let mut all = vec![("cert.pem", cert.as_str()), ("key.pem", key.as_str()), ("ca.pem", ca_pem.as_str())];
    all.extend_from_slice(files);
    Server::start_full(&config, &[], "127.0.0.1:0", &all).await
}

/// A `push` of a small report for `provider`, with these extra arguments.
async fn push(server: &Server, url: &str, provider: &str, extra: &[&str]) -> Ran {
    let report = server.dir().join(format!("report-{provider}.json"));
    std::fs::write(&report, format!(r#"{{"provider":"{provider}","values":{{"beds.cc_adult.open":28}}}}"#)).unwrap();
    let mut args = vec!["push".to_owned(), "--server".into(), url.into(), path(report)];
    args.extend(extra.iter().map(|s| s.to_string()));
    sitrep(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
}

/// `openssl s_client` with one protocol version: whether the handshake completed, and what it printed.
async fn s_client(port: u16, ca: &Path, version: &str) -> Ran {
    let connect = format!("127.0.0.1:{port}");
    let ca = path(ca.to_owned());
    let mut args = vec!["s_client", "-connect", &connect, "-servername", "localhost", "-CAfile", &ca, "-brief"];
    args.extend(["-verify_return_error", version]);
    if version == "-tls1_1" {
        // OpenSSL 3 refuses TLS 1.1 itself at its default security level: lower it, so the refusal is the server's.
        args.extend(["-cipher", "DEFAULT@SECLEVEL=0"]);
    }
    run("openssl", &args).await
}

/// Every protocol of the one port over TLS, from independent clients; TLS 1.2 and 1.3 only; plaintext refused
/// with a sentence; `sitrep push` over https, and its clear failures.
#[tokio::test]
async fn tls_serves_every_protocol_on_the_one_port() {
    let ca = Ca::new("sitrep test CA");
    let server = start_tls(&ca, "", &[]).await;
    let port = server.port();
    let ca_file = server.dir().join("ca.pem");
    let https = format!("https://localhost:{port}");

    // TLS 1.2 and 1.3 connect (and the certificate verifies); TLS 1.1 is refused by the server.
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let r = s_client(port, &ca_file, flag).await;
        assert!(r.ok && r.stderr.contains(&format!("Protocol version: {version}")), "{flag}: {}", r.stderr);
        assert!(r.stderr.contains("Verification: OK"), "{flag}: {}", r.stderr);
    }
    let r = s_client(port, &ca_file, "-tls1_1").await;
    assert!(!r.ok && !r.stderr.contains("CONNECTION ESTABLISHED"), "TLS 1.1 refused: {}", r.stderr);
    assert!(r.stderr.contains("alert"), "the server's alert: {}", r.stderr);

    // curl: the health check, the JSON API, the wallboard, over HTTP/2 (ALPN) and HTTP/1.1.
    let ca_arg = path(ca_file.clone());
    for http in ["--http2", "--http1.1"] {
        let get = |p: &str| {
            let url = format!("{https}{p}");
            let ca_arg = ca_arg.clone();
            async move { run("curl", &["-sS", "--max-time", "10", http, "--cacert", &ca_arg, &url]).await }
        };
        let health = get("/healthz").await;
        assert!(health.ok && health.stdout.contains("\"live\":true"), "{http}: {} {}", health.stdout, health.stderr);
        let snapshot = get("/api/v1/snapshot").await;
        let json: serde_json::Value = serde_json::from_str(&snapshot.stdout).expect("JSON");
        assert!(json["cursor"].is_string(), "{http}: {json}");
        let page = get("/").await;
        assert!(page.ok && page.stdout.to_lowercase().starts_with("<!doctype html"), "{http}: {}", page.stdout);
    }
    // Without the CA, curl does not trust it; plaintext to the TLS port is answered with a sentence.
    let untrusted = run("curl", &["-sS", "--max-time", "10", &format!("{https}/healthz")]).await;
    assert!(!untrusted.ok, "{}", untrusted.stdout);
    let plain = run("curl", &["-sS", "--max-time", "10", &format!("http://localhost:{port}/healthz")]).await;
    assert!(plain.stdout.contains("This port serves HTTPS (TLS): use https://"), "{}", plain.stdout);

    // Server-Sent Events over TLS: HTTP/1.1 (served outside hyper) and HTTP/2.
    for http in ["--http1.1", "--http2"] {
        let mut sse = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "30", http, "--cacert", &ca_arg, &format!("{https}/api/v1/events")])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(sse.stdout.take().unwrap()).lines();
        loop {
            let line = tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("SSE in time").unwrap();
            if line.expect("the stream stays open").starts_with("event: snapshot") {
                break;
            }
        }
    }

    // sitrep push over https with the CA; and what it says when something is wrong.
    let ca_flag = ["--ca", ca_arg.as_str()];
    let ok = push(&server, &https, "RJ7", &ca_flag).await;
    assert!(ok.ok && ok.stdout.starts_with("accepted: RJ7"), "{}{}", ok.stdout, ok.stderr);
    let unknown = push(&server, &https, "RJ7", &[]).await;
    assert!(
        !unknown.ok && unknown.stderr.contains("unknown CA") && unknown.stderr.contains("--ca"),
        "{}",
        unknown.stderr
    );
    let mismatch = push(&server, &format!("https://127.0.0.1:{port}"), "RJ7", &ca_flag).await;
    assert!(!mismatch.ok && mismatch.stderr.contains("hostname mismatch"), "{}", mismatch.stderr);
    let plaintext = push(&server, &format!("http://localhost:{port}"), "RJ7", &[]).await;
    assert!(
        !plaintext.ok && plaintext.stderr.contains("serves TLS") && plaintext.stderr.contains("https://"),
        "{}",
        plaintext.stderr
    );
    let flags_without_tls = push(&server, &format!("http://localhost:{port}"), "RJ7", &ca_flag).await;
    assert!(flags_without_tls.stderr.contains("--ca is for an https:// address"), "{}", flags_without_tls.stderr);

    // An independent gRPC client: Python's grpcio, when it is installed (Debian's python3-grpcio).
    let python = [("python3"), ("/usr/bin/python3")];
    let mut found = None;
    for p in python {
        if run_quiet(p, &["-c", "import grpc"]).await {
            found = Some(p);
            break;
        }
    }
    match found {
        None => println!("note: Python grpcio is not installed (python3-grpcio); its TLS check is skipped"),
        Some(python) => {
            let script = "import grpc, sys\n\
                ca = open(sys.argv[1], 'rb').read()\n\
                channel = grpc.secure_channel(sys.argv[2], grpc.ssl_channel_credentials(root_certificates=ca))\n\
                check = channel.unary_unary('/grpc.health.v1.Health/Check')\n\
                print(check(b'', timeout=10).hex())\n";
            let r = run(python, &["-c", script, &ca_arg, &format!("localhost:{port}")]).await;
            assert!(r.ok, "{}", r.stderr);
            assert_eq!(r.stdout.trim(), "0801", "HealthCheckResponse {{ status: SERVING }}");
        }
    }
}

async fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// With `client_auth = "required"`, a client certificate from the configured CA is let in, and none, or one from
/// another CA, is refused with a message that says so.
#[tokio::test]
async fn client_certificates_are_verified_when_required() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let stranger = Ca::new("another CA");
    let clients_pem = clients.pem();
    let server =
        start_tls(&ca, "client_ca = \"clients.pem\"\nclient_auth = \"required\"\n", &[("clients.pem", &clients_pem)])
            .await;
    let https = format!("https://localhost:{}", server.port());
    let write_pair = |name: &str, pair: (String, String)| write_pair(server.dir(), name, pair);
    let [good_cert, good_key] = write_pair("rj7", clients.issue(&["provider-rj7"]));
    let [bad_cert, bad_key] = write_pair("other", stranger.issue(&["provider-rj7"]));
    let ca_arg = path(server.dir().join("ca.pem"));

    let ok =
        push(&server, &https, "RJ7", &["--ca", &ca_arg, "--client-cert", &good_cert, "--client-key", &good_key]).await;
    assert!(ok.ok && ok.stdout.starts_with("accepted: RJ7"), "{}{}", ok.stdout, ok.stderr);
    let none = push(&server, &https, "RJ7", &["--ca", &ca_arg]).await;
    assert!(!none.ok && none.stderr.contains("requires a client certificate"), "{}", none.stderr);
    let other =
        push(&server, &https, "RJ7", &["--ca", &ca_arg, "--client-cert", &bad_cert, "--client-key", &bad_key]).await;
    assert!(!other.ok && other.stderr.contains("refused this client's certificate"), "{}", other.stderr);
    // curl too: without a certificate nothing is served.
    let curl = run("curl", &["-sS", "--max-time", "10", "--cacert", &ca_arg, &format!("{https}/healthz")]).await;
    assert!(!curl.ok && !curl.stdout.contains("live"), "{}", curl.stdout);
    let curl = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            &ca_arg,
            "--cert",
            &good_cert,
            "--key",
            &good_key,
            &format!("{https}/healthz"),
        ],
    )
    .await;
    assert!(curl.ok && curl.stdout.contains("\"live\":true"), "{} {}", curl.stdout, curl.stderr);
}

/// Certificates replaced on disk are served to new connections, while streams opened before (a gRPC Subscribe
/// through `sitrep watch`, Server-Sent Events through curl) carry on; a key that does not match its certificate is
/// not taken.
#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_while_open_streams_carry_on() {
    let old = Ca::new("old CA");
    let new = Ca::new("new CA");
    let server = start_tls(&old, "reload_interval = \"100ms\"\n", &[]).await;
    let port = server.port();
    let dir = server.dir().to_owned();
    let https = format!("https://localhost:{port}");
    let old_ca = path(dir.join("ca.pem"));
    std::fs::write(dir.join("new-ca.pem"), new.pem()).unwrap();
    let new_ca = path(dir.join("new-ca.pem"));

    // Streams opened under the old certificate by clients that trust only the old CA: if they had to reconnect,
    // they could not, so an event arriving later shows the old connection carried on.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["watch", "--quiet", "--provider", "RJ7", "--server", &https, "--ca", &old_ca])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut watch_lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, watch_lines.next_line()).await.expect("a snapshot in time").unwrap();
    assert!(first.unwrap_or_default().starts_with("snapshot: "));
    let mut sse = Command::new("curl")
        .args(["-sS", "-N", "--http1.1", "--cacert", &old_ca, &format!("{https}/api/v1/events?provider=RJ7")])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut sse_lines = BufReader::new(sse.stdout.take().unwrap()).lines();
    let mut next_sse =
        async || tokio::time::timeout(DEADLINE, sse_lines.next_line()).await.expect("SSE in time").unwrap();
    while !next_sse().await.expect("SSE open").starts_with("event: snapshot") {}

    // The new certificate, from another CA, replaces the old on disk.
    let (cert, key) = new.issue(&["localhost"]);
    replace(&dir, "key.pem", &key);
    replace(&dir, "cert.pem", &cert);
    let healthy = |ca: String| {
        let url = format!("{https}/healthz");
        async move { run("curl", &["-sS", "--max-time", "5", "--cacert", &ca, &url]).await.ok }
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !healthy(new_ca.clone()).await {
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was not served in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!healthy(old_ca.clone()).await, "new connections no longer get the old certificate");

    // A certificate with a key that is not its own is not taken: the new one stays.
    let (old_cert, _) = old.issue(&["localhost"]);
    replace(&dir, "cert.pem", &old_cert);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(healthy(new_ca.clone()).await, "the previous certificate is kept");
    assert!(server.logs().contains("the private key does not belong to the certificate"), "{}", server.logs());
    replace(&dir, "cert.pem", &cert);

    // A report sent now over a new connection reaches both streams opened under the old certificate.
    let ok = push(&server, &https, "RJ7", &["--ca", &new_ca]).await;
    assert!(ok.ok, "{}{}", ok.stdout, ok.stderr);
    loop {
        let line = tokio::time::timeout(DEADLINE, watch_lines.next_line()).await.expect("an event in time").unwrap();
        let line = line.expect("the watch carries on");
        if line.contains(" RJ7 ") && line.contains("beds.cc_adult.open") {
            break;
        }
    }
    loop {
        let line = next_sse().await.expect("the event stream carries on");
        if line.starts_with("event: event") {
            break;
        }
    }
}

/// Plaintext on an address other than loopback needs `[tls] allow_plaintext = true` (and, with no principals,
/// `[auth] open = true`), and is then warned about.
#[tokio::test]
async fn plaintext_off_loopback_needs_allow_plaintext() {
    let refused = sitrep(&["serve", "--listen", "0.0.0.0:0"]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(refused.stderr.contains("refusing to serve plaintext on 0.0.0.0:0"), "{}", refused.stderr);
    assert!(refused.stderr.contains("[tls] allow_plaintext = true"), "{}", refused.stderr);
    let server =
        Server::start_full("[tls]\nallow_plaintext = true\n[auth]\nopen = true\n", &[], "0.0.0.0:0", &[]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !server.logs().contains("serving plaintext (no TLS) on a non-loopback address") {
        assert!(tokio::time::Instant::now() < deadline, "a warning: {}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `rediss://` with `[store] redis_ca`: the aggregator keeps its state in a Redis that speaks only TLS.
#[tokio::test]
async fn redis_over_tls() {
    let ca = Ca::new("redis CA");
    let dir = temp_dir("redis-tls");
    let (cert, key) = ca.issue(&["localhost"]);
    for (name, text) in [("redis.crt", cert), ("redis.key", key), ("ca.pem", ca.pem())] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let tls_port = free_addr().rsplit(':').next().unwrap().to_owned();
    let file = |name: &str| path(dir.path().join(name));
    let (crt, key, ca_file) = (file("redis.crt"), file("redis.key"), file("ca.pem"));
    let redis = RedisProcess::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &crt,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ])
    .expect("redis-server with TLS (is it built with TLS support?)");
    let ca_pem = ca.pem();
    let config = format!("[store]\nredis = \"rediss://localhost:{tls_port}/0\"\nredis_ca = \"redis-ca.pem\"\n");
    let server = Server::start_full(&config, &[], "127.0.0.1:0", &[("redis-ca.pem", &ca_pem)]).await;
    let ack = server
        .provider()
        .await
        .submit(report("RJ7", 0, 1, &[("beds.cc_adult.open", 30.0)]))
        .await
        .expect("stored in Redis over TLS")
        .into_inner();
    assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
    let snap = server.snapshot_at(&ack.cursor).await;
    assert_eq!(snap.providers.len(), 1);
    drop(redis);
}

/// The feed agent verifies the aggregator's certificate too: without the CA it stops with the reason (the report
/// kept in its spool) rather than send; with `--ca` it sends the spooled report.
#[tokio::test]
async fn the_feed_agent_verifies_the_certificate() {
    let ca = Ca::new("feed CA");
    let server = start_tls(&ca, "", &[]).await;
    let https = format!("https://localhost:{}", server.port());
    let file = server.dir().join("beds.json");
    std::fs::write(&file, r#"{"provider":"RM1","values":{"beds.cc_adult.open":9}}"#).unwrap();
    let spool = path(server.dir().join("spool"));
    let refused = sitrep(&["feed", "--server", &https, "--spool", &spool, &path(file)]).await;
    assert!(!refused.ok, "{}", refused.stdout);
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(said.contains("unknown CA") && said.contains("stay in the spool"), "{said}");
    let ca_file = path(server.dir().join("ca.pem"));
    // The spooled report goes first once the agent trusts the aggregator, then the file given now.
    let next = server.dir().join("more.json");
    std::fs::write(&next, r#"{"provider":"RGT","values":{"beds.cc_adult.open":7}}"#).unwrap();
    let sent = sitrep(&["feed", "--server", &https, "--ca", &ca_file, "--spool", &spool, &path(next)]).await;
    let said = format!("{}{}", sent.stdout, sent.stderr);
    assert!(sent.ok && said.contains("accepted RM1") && said.contains("accepted RGT"), "{said}");
}

/// A client certificate (verified against `client_ca`) names a principal by a subject alternative name or common
/// name, with that principal's grants: the audit records which certificate; an unmapped one is UNAUTHENTICATED,
/// naming the certificate's names so an operator can add one.
#[tokio::test]
async fn a_client_certificate_is_a_principal() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let clients_pem = clients.pem();
    let principals = "[[principal]]\nname = \"RJ7 feed (certificate)\"\nwrite = [\"RJ7\"]\nread = [\"provider:RJ7\"]\n\
                      certificates = [\"DNS:provider-rj7\"]\n";
    let extra = "client_ca = \"clients.pem\"\nclient_auth = \"optional\"\n[auth]\nprincipals = \"p.toml\"\n";
    let server = start_tls(&ca, extra, &[("clients.pem", &clients_pem), ("p.toml", principals)]).await;
    let https = format!("https://localhost:{}", server.port());
    let write_pair = |name: &str, pair: (String, String)| write_pair(server.dir(), name, pair);
    let [cert, key] = write_pair("rj7", clients.issue(&["provider-rj7"]));
    let [other_cert, other_key] = write_pair("unknown", clients.issue(&["provider-unknown"]));
    let ca_arg = path(server.dir().join("ca.pem"));
    let with = |c: &str, k: &str| {
        vec!["--ca".to_owned(), ca_arg.clone(), "--client-cert".into(), c.into(), "--client-key".into(), k.into()]
    };
    let args = with(&cert, &key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ok = push(&server, &https, "RJ7", &args).await;
    assert!(ok.ok && ok.stdout.starts_with("accepted: RJ7"), "{}{}", ok.stdout, ok.stderr);
    let denied = push(&server, &https, "RGT", &args).await;
    assert!(!denied.ok && denied.stderr.contains("may not report for provider RGT"), "{}", denied.stderr);
    let unknown = with(&other_cert, &other_key);
    let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
    let refused = push(&server, &https, "RJ7", &unknown).await;
    assert!(!refused.ok && refused.stderr.contains("DNS:provider-unknown"), "{}", refused.stderr);
    let history = sitrep(&[
        "history",
        "--server",
        &https,
        "--provider",
        "RJ7",
        "--ca",
        &ca_arg,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ])
    .await;
    assert!(history.ok, "{}", history.stderr);
    assert!(
        history.stdout.contains("sent by RJ7 feed (certificate) (certificate DNS:provider-rj7)"),
        "{}",
        history.stdout
    );
}
