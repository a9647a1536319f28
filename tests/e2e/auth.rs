//! Who may send and who may see (issue 13), against the real binary: an authorisation matrix of principals x
//! operations x targets inside and outside the grant, with what each answer carries checked against the grant.

use std::collections::BTreeSet;
use std::time::Duration;

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::query_service_client::QueryServiceClient;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;
use tokio::process::Command;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;

use crate::http::{Sse, request};
use crate::support::*;

/// Sends a credential (or a malformed one, or none) with every gRPC call.
#[derive(Clone)]
pub struct Credential(pub Option<String>);

impl Interceptor for Credential {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            r.metadata_mut().insert("authorization", MetadataValue::try_from(value.as_str()).unwrap());
        }
        Ok(r)
    }
}

/// A principal as the test holds it: its key (or none), and what the test expects it may write and read.
struct Who {
    name: &'static str,
    header: Option<String>,
    /// Providers it may write; `None`: it is not authenticated at all.
    write: Option<&'static [&'static str]>,
    /// Providers it may read (the test's view of its read grant). It may read the totals of a scope whose
    /// providers it may all read.
    read: Vec<String>,
}

/// `sitrep key`: the key, and the principals file lines it printed.
pub async fn make_key(name: &str, args: &[&str]) -> (String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_sitrep")).args(["key", "--name", name]).args(args).output().await.unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines = stderr.split_once("\n\n").expect("the lines to add").1.to_owned();
    (key, lines)
}

fn providers_of(systems: &[&str]) -> Vec<String> {
    let d = sitrep_core::profile::demo_directory();
    let regions: BTreeSet<String> =
        d.systems().filter(|s| systems.contains(&s.region.as_str())).map(|s| s.code.clone()).collect();
    d.providers()
        .filter(|p| systems.contains(&p.system.as_str()) || regions.contains(&p.system) || systems.contains(&"*"))
        .map(|p| p.code.clone())
        .collect()
}

/// A new Ed25519 key pair, as an identity provider holds.
pub fn ed25519() -> ring::signature::Ed25519KeyPair {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// `Bearer <a JWT of header and claims, signed by pair>`.
pub fn signed_token(pair: &ring::signature::Ed25519KeyPair, header: &str, claims: &serde_json::Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let signed = format!("{}.{}", B64.encode(header), B64.encode(claims.to_string()));
    format!("Bearer {signed}.{}", B64.encode(pair.sign(signed.as_bytes())))
}

/// The JWKS of one Ed25519 public key.
pub fn ed25519_jwks(pair: &ring::signature::Ed25519KeyPair, kid: Option<&str>) -> String {
    use base64::Engine;
    use ring::signature::KeyPair;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let mut key = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x });
    if let Some(kid) = kid {
        key["kid"] = kid.into();
    }
    serde_json::json!({ "keys": [key] }).to_string()
}

/// What an answer was, for the printed matrix.
fn outcome<T>(r: &Result<T, tonic::Status>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(s) if s.code() == tonic::Code::PermissionDenied => "denied",
        Err(s) if s.code() == tonic::Code::Unauthenticated => "unauth",
        Err(_) => "error",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorisation_matrix() {
    let specs: [(&str, &[&str]); 6] = [
        ("feed A", &["--write", "RJ7", "--read", "provider:RJ7"]),
        ("feed B", &["--write", "RGT", "--read", "provider:RGT"]),
        ("system reader", &["--read", "system:QWE"]),
        ("region reader", &["--read", "region:Y56"]),
        ("nation reader", &["--read", "nation"]),
        ("admin", &["--read", "*", "--admin", "--write", "*"]),
    ];
    let mut file = String::new();
    let mut keys = Vec::new();
    for (name, args) in specs {
        let (key, lines) = make_key(name, args).await;
        file.push_str(&lines);
        file.push('\n');
        keys.push(key);
    }
    // A key that was never (or is no longer) in the file, and one revoked while the server runs.
    let (revoked_key, revoked_lines) = make_key("revoked", &["--read", "*"]).await;
    let with_revoked = format!("{file}{revoked_lines}");
    // Tokens of an identity provider: the JWKS holds its key; an expired token, and one signed by another key.
    let (idp, stranger) = (ed25519(), ed25519());
    let token = |pair: &ring::signature::Ed25519KeyPair, exp_in: i64| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let claims = serde_json::json!({ "sub": "token reader", "exp": now + exp_in, "sitrep": { "read": ["*"] } });
        signed_token(pair, r#"{"alg":"EdDSA"}"#, &claims)
    };
    let jwks = ed25519_jwks(&idp, None);
    let config = "[auth]\nprincipals = \"principals.toml\"\njwks = \"jwks.json\"\n";
    let files = [("principals.toml", with_revoked.as_str()), ("jwks.json", jwks.as_str())];
    let server = Server::start_full(config, &[], "127.0.0.1:0", &files).await;
    let bearer = |k: &str| Some(format!("Bearer {k}"));
    let all = providers_of(&["*"]);
    let whos = vec![
        Who { name: "feed A", header: bearer(&keys[0]), write: Some(&["RJ7"]), read: vec!["RJ7".into()] },
        Who { name: "feed B", header: bearer(&keys[1]), write: Some(&["RGT"]), read: vec!["RGT".into()] },
        Who { name: "system reader", header: bearer(&keys[2]), write: Some(&[]), read: providers_of(&["QWE"]) },
        Who { name: "region reader", header: bearer(&keys[3]), write: Some(&[]), read: providers_of(&["Y56"]) },
        Who { name: "nation reader", header: bearer(&keys[4]), write: Some(&[]), read: all.clone() },
        Who { name: "admin", header: bearer(&keys[5]), write: None, read: all.clone() },
        Who { name: "none", header: None, write: None, read: vec![] },
        Who { name: "unknown key", header: bearer("sitrep_notakey"), write: None, read: vec![] },
        Who { name: "malformed", header: Some("Basic dXNlcjpwYXNz".into()), write: None, read: vec![] },
        Who { name: "expired token", header: Some(token(&idp, -10)), write: None, read: vec![] },
        Who { name: "wrong signature", header: Some(token(&stranger, 600)), write: None, read: vec![] },
    ];
    let authenticated = |w: &Who| w.name == "admin" || w.write.is_some();
    let may_write = |w: &Who, p: &str| w.name == "admin" || w.write.is_some_and(|list| list.contains(&p));
    let may_read = |w: &Who, p: &str| w.read.iter().any(|r| r == p);
    let scope_ok = |w: &Who, scope: &str| {
        let code = scope.split_once(':').expect("level:code").1;
        let inside = if scope.starts_with("nation") { all.clone() } else { providers_of(&[code]) };
        !w.read.is_empty() && inside.iter().all(|p| w.read.contains(p))
    };

    // Something to read: RJ7 and RGT have reported (as the admin).
    let admin = &whos[5];
    let channel = server.channel().await;
    let provider = |w: &Who| ProviderServiceClient::with_interceptor(channel.clone(), Credential(w.header.clone()));
    let query = |w: &Who| QueryServiceClient::with_interceptor(channel.clone(), Credential(w.header.clone()));
    let subscriber = |w: &Who| SubscriberServiceClient::with_interceptor(channel.clone(), Credential(w.header.clone()));
    for p in ["RJ7", "RGT"] {
        provider(admin).submit(report(p, 0, 1, &[("beds.cc_adult.open", 10.0)])).await.unwrap();
    }

    let ops = [
        "Submit RJ7",
        "Submit RGT",
        "Report RJ7",
        "Subscribe",
        "Subscribe QWE",
        "Snapshot",
        "Snapshot RGT",
        "History RJ7",
        "Hourly RJ7",
        "Hourly Y56",
        "Alerts",
        "Directory",
        "Catalogue",
        "MetricHistory",
        "Refusals",
        "HTTP snapshot",
        "HTTP history RJ7",
        "HTTP prev hour",
        "HTTP changes",
        "HTTP alerts",
        "HTTP directory",
        "HTTP refusals",
        "HTTP metrics",
        "SSE",
        "wallboard page",
    ];
    let mut rows = Vec::new();
    let mut revision = 10;
    for w in &whos {
        let mut row = Vec::new();
        let check = |op: &str, got: &str, expected: &str| {
            assert_eq!(got, expected, "{} / {op}", w.name);
        };
        let expect = |allowed: bool| match (authenticated(w), allowed) {
            (false, _) => "unauth",
            (true, true) => "ok",
            (true, false) => "denied",
        };
        for p in ["RJ7", "RGT"] {
            revision += 1;
            let got = provider(w).submit(report(p, 0, revision, &[("ed.over_12h", 1.0)])).await;
            if let Err(s) = &got
                && s.code() == tonic::Code::PermissionDenied
            {
                assert!(s.message().contains(&format!("provider {p}")), "{}", s.message());
            }
            check(&format!("Submit {p}"), outcome(&got), expect(may_write(w, p)));
            row.push(outcome(&got));
        }
        // On a stream: the report is refused and the stream ends with the same status; nothing stored.
        revision += 1;
        let stream = tokio_stream::iter([report("RJ7", 0, revision, &[("ed.over_12h", 2.0)])]);
        let got = match provider(w).report(stream).await {
            Ok(r) => r.into_inner().message().await.and_then(|m| m.ok_or_else(|| tonic::Status::ok("no ack"))),
            Err(s) => Err(s),
        };
        check("Report RJ7", outcome(&got), expect(may_write(w, "RJ7")));
        row.push(outcome(&got));

        // Subscribe without a filter: everything it may see, and nothing else, in the snapshot and the next event.
        let sub = subscriber(w).subscribe(subscribe_all(1)).await.map(|r| r.into_inner());
        row.push(outcome(&sub));
        check("Subscribe", outcome(&sub), expect(true));
        if let Ok(mut updates) = sub {
            let snap = expect_snapshot(next(&mut updates).await);
            for p in &snap.providers {
                assert!(may_read(w, &p.provider), "{}: snapshot carried {}", w.name, p.provider);
            }
            for r in &snap.rollups {
                let scope = r.scope.as_ref().unwrap();
                let text = format!("{}:{}", scope.level, scope.code);
                assert!(scope_ok(w, &text), "{}: snapshot carried the totals of {text}", w.name);
            }
            // An event of RJ7 (written by the admin) reaches only those who may read RJ7, with only their totals.
            revision += 1;
            provider(admin).submit(report("RJ7", 0, revision, &[("ed.over_12h", 3.0)])).await.unwrap();
            let seen = tokio::time::timeout(Duration::from_millis(800), async {
                loop {
                    match next(&mut updates).await {
                        pb::update::Kind::Event(e) => return Some(pb::update::Kind::Event(e)),
                        pb::update::Kind::Rollups(r) => return Some(pb::update::Kind::Rollups(r)),
                        _ => continue,
                    }
                }
            })
            .await
            .ok()
            .flatten();
            match seen {
                Some(pb::update::Kind::Event(e)) => {
                    assert!(may_read(w, &e.provider), "{}: event of {}", w.name, e.provider);
                    for r in &e.rollups {
                        let scope = r.scope.as_ref().unwrap();
                        let text = format!("{}:{}", scope.level, scope.code);
                        assert!(scope_ok(w, &text), "{}: event carried the totals of {text}", w.name);
                    }
                }
                Some(pb::update::Kind::Rollups(r)) => {
                    for r in &r.rollups {
                        let scope = r.scope.as_ref().unwrap();
                        let text = format!("{}:{}", scope.level, scope.code);
                        assert!(scope_ok(w, &text), "{}: rollups of {text}", w.name);
                    }
                }
                _ => assert!(!may_read(w, "RJ7"), "{}: RJ7's event did not come", w.name),
            }
        }
        let qwe = pb::Filter { systems: vec!["QWE".into()], ..Default::default() };
        let request_qwe =
            pb::SubscribeRequest { filter: Some(qwe.clone()), heartbeat_seconds: 1, ..Default::default() };
        let got = subscriber(w).subscribe(request_qwe).await;
        check("Subscribe QWE", outcome(&got), expect(providers_of(&["QWE"]).iter().all(|p| may_read(w, p))));
        row.push(outcome(&got));

        let got = query(w).get_snapshot(pb::GetSnapshotRequest::default()).await.map(|r| r.into_inner());
        check("Snapshot", outcome(&got), expect(true));
        if let Ok(snap) = &got {
            assert!(snap.providers.iter().all(|p| may_read(w, &p.provider)), "{}: snapshot", w.name);
        }
        row.push(outcome(&got));
        let rgt = pb::Filter { providers: vec!["RGT".into()], ..Default::default() };
        let got = query(w).get_snapshot(pb::GetSnapshotRequest { filter: Some(rgt) }).await;
        check("Snapshot RGT", outcome(&got), expect(may_read(w, "RGT")));
        row.push(outcome(&got));
        let got = query(w).get_history(pb::GetHistoryRequest { provider: "RJ7".into(), ..Default::default() }).await;
        check("History RJ7", outcome(&got), expect(may_read(w, "RJ7")));
        row.push(outcome(&got));
        let hourly = |provider: &str, scope: &str| pb::GetHourlyRequest {
            metric: "beds.cc_adult.open".into(),
            provider: provider.into(),
            scope: scope.into(),
            hours: 1,
            ..Default::default()
        };
        let got = query(w).get_hourly(hourly("RJ7", "")).await;
        check("Hourly RJ7", outcome(&got), expect(may_read(w, "RJ7")));
        row.push(outcome(&got));
        let got = query(w).get_hourly(hourly("", "region:Y56")).await;
        check("Hourly Y56", outcome(&got), expect(scope_ok(w, "region:Y56")));
        row.push(outcome(&got));
        let got = query(w).get_alerts(pb::GetAlertsRequest::default()).await.map(|r| r.into_inner());
        check("Alerts", outcome(&got), expect(true));
        if let Ok(a) = &got {
            assert!(a.alerts.iter().all(|a| may_read(w, &a.provider)), "{}: alerts", w.name);
        }
        row.push(outcome(&got));
        let got = query(w).get_directory(pb::GetDirectoryRequest::default()).await.map(|r| r.into_inner());
        check("Directory", outcome(&got), expect(true));
        if let Ok(d) = &got {
            assert!(d.providers.iter().all(|p| may_read(w, &p.code)), "{}: directory", w.name);
        }
        row.push(outcome(&got));
        let got = query(w).get_catalogue(pb::GetCatalogueRequest::default()).await;
        check("Catalogue", outcome(&got), expect(true));
        row.push(outcome(&got));
        let metric = pb::GetMetricHistoryRequest { metric: "beds.cc_adult.open".into(), ..Default::default() };
        let got = query(w).get_metric_history(metric).await.map(|r| r.into_inner());
        check("MetricHistory", outcome(&got), expect(true));
        if let Ok(h) = &got {
            assert!(h.series.iter().all(|s| may_read(w, &s.provider)), "{}: metric history", w.name);
        }
        row.push(outcome(&got));
        let got = query(w).get_refusals(pb::GetRefusalsRequest::default()).await;
        check("Refusals", outcome(&got), expect(w.name == "admin"));
        row.push(outcome(&got));

        // Over HTTP: 401 and 403 for the same reasons, with the same contents.
        let headers: Vec<(&str, &str)> = w.header.iter().map(|h| ("Authorization", h.as_str())).collect();
        let http = |status: u16| match status {
            200 => "ok",
            401 => "unauth",
            403 => "denied",
            _ => "error",
        };
        // Each JSON route: its answer, and the providers its body names (all must be readable).
        type Named = fn(&serde_json::Value) -> Vec<String>;
        fn codes(list: &serde_json::Value, field: &str) -> Vec<String> {
            list.as_array().unwrap().iter().map(|p| p[field].as_str().unwrap().to_owned()).collect()
        }
        let routes: [(&str, &str, bool, Option<Named>); 8] = [
            ("HTTP snapshot", "/api/v1/snapshot", true, Some(|j| codes(&j["providers"], "provider"))),
            ("HTTP history RJ7", "/api/v1/history?provider=RJ7", may_read(w, "RJ7"), None),
            (
                "HTTP prev hour",
                "/api/v1/previous_hour",
                true,
                Some(|j| j["providers"].as_object().unwrap().keys().cloned().collect()),
            ),
            ("HTTP changes", "/api/v1/changes", true, Some(|j| codes(&j["changes"], "provider"))),
            ("HTTP alerts", "/api/v1/alerts", true, None),
            ("HTTP directory", "/api/v1/directory", true, Some(|j| codes(&j["providers"], "code"))),
            ("HTTP refusals", "/api/v1/refusals", w.name == "admin", None),
            ("HTTP metrics", "/metrics", w.name == "admin", None),
        ];
        for (op, path, allowed, named) in routes {
            let answer = request(&server.url, "GET", path, &headers, &[]).await;
            check(op, http(answer.status), expect(allowed));
            if let (200, Some(named)) = (answer.status, named) {
                let outside: Vec<String> = named(&answer.json()).into_iter().filter(|p| !may_read(w, p)).collect();
                assert!(outside.is_empty(), "{} / {op} carried {outside:?}", w.name);
            }
            row.push(http(answer.status));
        }
        let sse = Sse::open(&server.url, "/api/v1/events?heartbeat=1", &headers).await;
        check("SSE", http(sse.status), expect(true));
        row.push(http(sse.status));
        let page = request(&server.url, "GET", "/", &[], &[]).await;
        check("wallboard page", http(page.status), "ok");
        row.push(http(page.status));
        rows.push((w.name, row));
    }

    println!("\n{:<14} {}", "", ops.iter().map(|o| format!("{o:>16}")).collect::<String>());
    for (name, row) in &rows {
        println!("{name:<14} {}", row.iter().map(|o| format!("{o:>16}")).collect::<String>());
    }

    // The audit trail: every accepted report's history entry names its principal, credential and address; a
    // refused one left nothing.
    let rj7 = pb::GetHistoryRequest { provider: "RJ7".into(), ..Default::default() };
    let entries = query(admin).get_history(rj7).await.unwrap().into_inner().entries;
    let senders: BTreeSet<String> = entries.iter().map(|e| e.sender.as_ref().unwrap().name.clone()).collect();
    assert_eq!(senders, BTreeSet::from(["admin".to_owned(), "feed A".to_owned()]), "only those who may write RJ7");
    let by_a = entries.iter().find(|e| e.sender.as_ref().unwrap().name == "feed A").unwrap().sender.clone().unwrap();
    assert!(by_a.credential.starts_with("feed-a-") && by_a.address.starts_with("127.0.0.1:"), "{by_a:?}");

    // Refused attempts are kept for the audit, for admins only: over gRPC, HTTP and the CLI alike.
    let refusals = query(admin).get_refusals(pb::GetRefusalsRequest::default()).await.unwrap().into_inner();
    let seen = |kind: &str, principal: &str, target: &str| {
        refusals.refusals.iter().any(|r| r.kind == kind && r.principal == principal && r.target.contains(target))
    };
    assert!(seen("permission_denied", "feed A", "ProviderService/Submit"), "{:?}", refusals.refusals.len());
    assert!(seen("permission_denied", "feed B", "/api/v1/history"), "an HTTP refusal too");
    assert!(seen("unauthenticated", "unauthenticated", "/api/v1/events"), "the direct event stream's too");
    assert!(seen("permission_denied", "feed B", "ProviderService/Report"), "a stream's refusal, from its trailers");
    let by_a = refusals.refusals.iter().find(|r| r.principal == "feed A" && r.target.ends_with("Submit")).unwrap();
    assert!(by_a.address.starts_with("127.0.0.1:") && by_a.reason.contains("may not report"), "{by_a:?}");
    let http = refusals.refusals.iter().find(|r| r.principal == "feed A" && r.target == "/api/v1/refusals").unwrap();
    assert_eq!(http.reason, "feed A has no admin grant", "an HTTP refusal's reason is kept too");
    assert!(refusals.counted >= refusals.refusals.len() as u64);
    let denied = query(&whos[2]).get_refusals(pb::GetRefusalsRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "only admins read the audit");
    let admin_header = format!("Bearer {}", keys[5]);
    let headers = [("Authorization", admin_header.as_str())];
    let http = request(&server.url, "GET", "/api/v1/refusals?limit=5", &headers, &[]).await;
    assert_eq!(http.status, 200);
    assert_eq!(http.json()["refusals"].as_array().unwrap().len(), 5);
    let cli = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["refusals", "--server", &server.url, "--limit", "3"])
        .env("SITREP_KEY", &keys[5])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && text.contains("refused attempt(s) shown"), "{text}");

    // Revocation without a restart: the key's lines go from the file, and within seconds it is refused.
    let mut q = query(&Who { name: "revoked", header: bearer(&revoked_key), write: None, read: vec![] });
    assert!(q.get_snapshot(pb::GetSnapshotRequest::default()).await.is_ok(), "the key works before");
    let principals = server.dir().join("principals.toml");
    std::fs::write(&principals, &file).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match q.get_snapshot(pb::GetSnapshotRequest::default()).await {
            Err(s) if s.code() == tonic::Code::Unauthenticated => break,
            _ if tokio::time::Instant::now() > deadline => panic!("the revoked key still works"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A page elsewhere that rebinds its DNS name to this server's address cannot read through a browser: a request
/// naming a Host this deployment does not answer to is refused, on hyper's path and the direct event stream alike;
/// and every HTTP answer carries the security headers.
#[tokio::test]
async fn a_foreign_host_is_refused_and_answers_carry_the_security_headers() {
    let server = Server::start("").await;
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let foreign = [("Host", "attacker.example")];
    for path in ["/", "/api/v1/snapshot"] {
        let r = request(&server.url, "GET", path, &foreign, &[]).await;
        assert_eq!(r.status, 421, "{path}");
    }
    let sse = Sse::open(&server.url, "/api/v1/events", &foreign).await;
    assert_eq!(sse.status, 421, "the direct event stream checks Host too");
    let local = format!("localhost:{port}");
    let page = request(&server.url, "GET", "/", &[("Host", local.as_str())], &[]).await;
    assert_eq!(page.status, 200);
    let header = |name: &str| page.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    assert!(header("content-security-policy").is_some_and(|v| v.contains("frame-ancestors 'none'")));
    assert_eq!(header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
}

/// One provider flooding at ten times its limit is refused (RESOURCE_EXHAUSTED, with when to retry) after its
/// minute's allowance, and another provider's acks go on as before: their latencies are printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_provider_is_refused_and_another_is_not_slowed() {
    use tonic_types::StatusExt;
    let server = Server::start("[limits]\nreports_per_provider_per_minute = 60\n").await;
    let mut quiet = server.provider().await;
    let latency = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut before = Vec::new();
    for r in 1..=20u32 {
        let t = std::time::Instant::now();
        quiet.submit(report("RGT", 0, r, &[("ed.over_12h", 1.0)])).await.unwrap();
        before.push(t.elapsed());
    }
    let mut flood = server.provider().await;
    let flooding = tokio::spawn(async move {
        let (mut accepted, mut refused, mut retry) = (0, 0, None);
        for r in 1..=600u32 {
            match flood.submit(report("RJ7", 0, r, &[("ed.over_12h", f64::from(r % 7))])).await {
                Ok(_) => accepted += 1,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    refused += 1;
                    retry = s.get_details_retry_info().and_then(|i| i.retry_delay);
                }
                Err(s) => panic!("{s:?}"),
            }
        }
        (accepted, refused, retry)
    });
    let mut during = Vec::new();
    for r in 21..=40u32 {
        let t = std::time::Instant::now();
        let ack = quiet.submit(report("RGT", 0, r, &[("ed.over_12h", 2.0)])).await.unwrap().into_inner();
        during.push(t.elapsed());
        assert_eq!(ack.outcome(), pb::report_ack::Outcome::Accepted);
    }
    let (accepted, refused, retry) = flooding.await.unwrap();
    println!(
        "limits: RJ7 sent 600 at once: {accepted} accepted, {refused} refused (retry in {retry:?}); RGT's ack p50 {:?} \
         before, {:?} during the flood",
        latency(&mut before),
        latency(&mut during)
    );
    assert!((60..=62).contains(&accepted), "a minute's allowance, and what refilled meanwhile: {accepted}");
    assert_eq!(accepted + refused, 600);
    assert!(retry.is_some_and(|d| d <= Duration::from_secs(1)), "{retry:?}");
}

/// A principal holds at most `subscribers.per_principal` subscriptions open (the next is refused, over gRPC and
/// SSE, until one ends); a subscriber that stops reading is disconnected once its stream has stayed full for
/// `subscribers.stall_seconds`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_limited_and_a_reader_that_stops_is_let_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = "[subscribers]\nper_principal = 2\nstall_seconds = 1\nqueue_capacity = 8\n\
                  [limits]\nreports_per_provider_per_minute = 0\n";
    let server = Server::start(config).await;
    let first = Sse::open(&server.url, "/api/v1/events?heartbeat=1", &[]).await;
    let mut second = server.updates(1).await;
    expect_snapshot(next(&mut second).await);
    let third = Sse::open(&server.url, "/api/v1/events?heartbeat=1", &[]).await;
    assert_eq!(third.status, 429, "the third of one principal's subscriptions is refused");
    let refused = server.subscriber().await.subscribe(subscribe_all(1)).await;
    assert_eq!(refused.err().map(|s| s.code()), Some(tonic::Code::ResourceExhausted));
    drop(first);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let again = Sse::open(&server.url, "/api/v1/events?heartbeat=1", &[]).await;
        if again.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a slot comes free when a subscription ends");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);

    // A raw event stream that is never read, while events of ~2 KB pour in.
    let mut silent = tokio::net::TcpStream::connect(crate::http::authority(&server.url)).await.unwrap();
    silent.write_all(b"GET /api/v1/events?heartbeat=1 HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    let narrative = "Ward 7 closed to admissions. ".repeat(68);
    // More than loopback's socket buffers hold (they grow to a few MB), then longer than the stall time.
    for rev in 1..=6000u32 {
        let mut r = report("RJ7", 0, rev, &[("flow.discharges", f64::from(rev))]);
        r.narrative = narrative.clone();
        feed.send(r).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Its stream filled, stayed full for the stall time, and the server let it go: what is buffered reads out,
    // then the connection ends.
    let mut drained = Vec::new();
    let ended = tokio::time::timeout(DEADLINE, silent.read_to_end(&mut drained)).await;
    assert!(ended.is_ok(), "the stalled stream was closed by the server ({} bytes read)", drained.len());
}

/// A signed token (EdDSA, from a key in the configured JWKS) is a credential with the grants of its `sitrep`
/// claim; an expired one, one signed by another key, or one naming an unknown scope is UNAUTHENTICATED with a
/// message saying which; a key removed from the JWKS file stops its tokens without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tokens_carry_their_grants_and_expire() {
    let pair = ed25519();
    let sign = |pair: &ring::signature::Ed25519KeyPair, claims: serde_json::Value| {
        signed_token(pair, r#"{"alg":"EdDSA","kid":"idp-1","typ":"JWT"}"#, &claims)
    };
    let jwks = ed25519_jwks(&pair, Some("idp-1"));
    let config = "[auth]\njwks = \"jwks.json\"\naudience = \"sitrep-test\"\n";
    let server = Server::start_full(config, &[], "127.0.0.1:0", &[("jwks.json", &jwks)]).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = |exp: i64, read: &str| {
        serde_json::json!({ "sub": "RJ7 feed (token)", "exp": exp, "aud": "sitrep-test", "jti": "t-1",
            "sitrep": { "write": ["RJ7"], "read": [read] } })
    };
    let channel = server.channel().await;
    let provider = |h: String| ProviderServiceClient::with_interceptor(channel.clone(), Credential(Some(h)));
    let good = sign(&pair, claims(now + 600, "provider:RJ7"));
    let ack = provider(good.clone()).submit(report("RJ7", 0, 1, &[("ed.over_12h", 1.0)])).await.unwrap().into_inner();
    assert_eq!(ack.outcome(), pb::report_ack::Outcome::Accepted);
    let denied = provider(good.clone()).submit(report("RGT", 0, 1, &[("ed.over_12h", 1.0)])).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let mut query = QueryServiceClient::with_interceptor(channel.clone(), Credential(Some(good.clone())));
    let request = pb::GetHistoryRequest { provider: "RJ7".into(), ..Default::default() };
    let entries = query.get_history(request).await.unwrap().into_inner().entries;
    let sender = entries[0].sender.clone().unwrap();
    assert_eq!((sender.name.as_str(), sender.credential.as_str()), ("RJ7 feed (token)", "token idp-1/t-1"));

    let other = ed25519();
    for (header, why) in [
        (sign(&pair, claims(now - 5, "provider:RJ7")), "expired"),
        (sign(&other, claims(now + 600, "provider:RJ7")), "not from a key"),
        (sign(&pair, claims(now + 600, "system:NOPE")), "sitrep claim"),
    ] {
        let err = provider(header).submit(report("RJ7", 0, 2, &[("ed.over_12h", 1.0)])).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{why}: {err:?}");
        assert!(err.message().contains(why), "{why}: {}", err.message());
    }
    // The issuer's key is withdrawn: its tokens stop working within seconds, without a restart.
    std::fs::write(server.dir().join("jwks.json"), r#"{"keys": []}"#).unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match provider(good.clone()).submit(report("RJ7", 0, 3, &[("ed.over_12h", 1.0)])).await {
            Err(s) if s.code() == tonic::Code::Unauthenticated => break,
            _ if tokio::time::Instant::now() > deadline => panic!("the withdrawn key's token still works"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The command-line clients send the key of `--key-file` or `SITREP_KEY`: `sitrep push` with the feed's key is
/// accepted; without one it is told a credential is needed; with a key for another provider, that it may not.
#[tokio::test]
async fn the_cli_sends_its_key() {
    let (key, lines) = make_key("RJ7 feed", &["--write", "RJ7", "--read", "provider:RJ7"]).await;
    let server =
        Server::start_full("[auth]\nprincipals = \"p.toml\"\n", &[], "127.0.0.1:0", &[("p.toml", &lines)]).await;
    let dir = temp_dir("cli-key");
    let report = |provider: &str| {
        let path = dir.path().join(format!("{provider}.json"));
        std::fs::write(&path, format!(r#"{{"provider": "{provider}", "values": {{"ed.over_12h": 3}}}}"#)).unwrap();
        path
    };
    let push = |file: std::path::PathBuf, key: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sitrep"));
        c.args(["push", "--server", &server.url]).arg(file).env_remove("SITREP_KEY");
        if let Some(k) = key {
            c.env("SITREP_KEY", k);
        }
        async move {
            let out = c.output().await.unwrap();
            (
                out.status.code(),
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            )
        }
    };
    let (code, text) = push(report("RJ7"), Some(&key)).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("accepted: RJ7"), "{text}");
    let (code, text) = push(report("RJ7"), None).await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("credential is needed"), "{text}");
    let (code, text) = push(report("RGT"), Some(&key)).await;
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("may not report for provider RGT"), "{text}");
    assert!(!text.contains(&key), "the key is never echoed");
    // The same key from a file.
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["alerts", "--server", &server.url, "--key-file"])
        .arg(&key_file)
        .env_remove("SITREP_KEY")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A sharing agreement in the directory (a mental health trust shares with its system's acute trusts) lets the
/// readers of an organisation within it see that trust, and nobody else; without one, a reader sees its grant.
#[tokio::test]
async fn the_directory_says_who_shares_with_whom() {
    let directory = format!(
        "{}\n[[share]]\nfrom = \"provider:RQY\"\nwith = \"system:QWE\"\n",
        sitrep_core::profile::DEMO_DIRECTORY
    );
    let (rj7, rj7_lines) = make_key("RJ7 control room", &["--read", "provider:RJ7"]).await;
    let (rgt, rgt_lines) = make_key("RGT control room", &["--read", "provider:RGT"]).await;
    // The organisation each belongs to.
    let principals = format!(
        "{}\n{}",
        rj7_lines.replacen("admin = false", "admin = false\norganisation = \"provider:RJ7\"", 1),
        rgt_lines.replacen("admin = false", "admin = false\norganisation = \"provider:RGT\"", 1)
    );
    let config = "directory = \"directory.toml\"\n[auth]\nprincipals = \"p.toml\"\n";
    let files = [("directory.toml", directory.as_str()), ("p.toml", principals.as_str())];
    let server = Server::start_full(config, &[], "127.0.0.1:0", &files).await;
    let providers = |key: String| {
        let url = server.url.clone();
        async move {
            let auth = format!("Bearer {key}");
            let d = request(&url, "GET", "/api/v1/directory", &[("Authorization", auth.as_str())], &[]).await.json();
            d["providers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["code"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(providers(rj7).await, ["RJ7", "RQY"], "RQY shares with RJ7's system");
    assert_eq!(providers(rgt).await, ["RGT"], "but not with RGT's");
}

/// A connection that never sends a byte is closed (within the handshake time, 10 s), rather than held forever.
#[tokio::test]
async fn a_connection_that_says_nothing_is_closed() {
    use tokio::io::AsyncReadExt;
    let server = Server::start("").await;
    let mut silent = tokio::net::TcpStream::connect(crate::http::authority(&server.url)).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed by the server: {read:?}");
    println!("hardening: a silent connection was closed after {:?}", started.elapsed());
}

/// At `[limits] max_connections`, a new connection is closed at once, while those already served carry on; when
/// one ends, there is room again.
#[tokio::test]
async fn at_the_connection_limit_new_connections_are_shed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("[limits]\nmax_connections = 3\n").await;
    let addr = crate::http::authority(&server.url).to_owned();
    // Three connections in the middle of a request line: held, counted.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the fourth is closed at once: {read:?}");
    // The held ones are still served.
    held[0].write_all(b"\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, held[0].read_to_end(&mut answer)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // That one has ended: room for another.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let r = crate::http::get(&server.url, "/healthz").await;
        if r.status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "room again after one ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a request says is logged quoted and escaped: a provider code carrying a newline and a forged log line, or
/// terminal escapes, cannot add a line to the aggregator's log.
#[tokio::test]
async fn a_forged_log_line_stays_inside_its_quotes() {
    use tokio::io::AsyncBufReadExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = listening(&mut child).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = ProviderServiceClient::new(channel);
    let forged = "RJ7\n2026-01-01T00:00:00.000000Z  WARN sitrep: forged line \u{1b}[31m";
    let mut r = report("RJ7", 0, 1, &[("ed.over_12h", 1.0)]);
    r.provider = forged.into();
    let _ = client.submit(r).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.start_kill();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logs = String::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(2), err.next_line()).await {
        logs.push_str(&line);
        logs.push('\n');
    }
    assert!(logs.contains("report rejected"), "the rejection is logged: {logs}");
    assert!(!logs.lines().any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")), "no forged line: {logs}");
    assert!(!logs.contains('\u{1b}'), "no terminal escape reaches the log: {logs}");
}

/// When the process runs out of file descriptors, failing accepts are logged and paced (not spun on), and once
/// connections close the aggregator serves again.
#[tokio::test]
async fn out_of_descriptors_is_logged_and_recovered_from() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let sitrep = env!("CARGO_BIN_EXE_sitrep");
    let mut child = Command::new("sh")
        .args(["-c", &format!("ulimit -n 64 && exec {sitrep} serve --listen 127.0.0.1:0")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = listening(&mut child).await;
    // More connections than descriptors, each mid-request so none is closed for silence.
    let mut held = Vec::new();
    for _ in 0..120 {
        if let Ok(mut c) = tokio::net::TcpStream::connect(&addr).await {
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            held.push(c);
        }
    }
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut logs = String::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !logs.contains("accepting a connection failed") {
        match tokio::time::timeout_at(deadline, err.next_line()).await {
            Ok(Ok(Some(line))) => logs.push_str(&line),
            _ => panic!("running out of descriptors was not logged: {logs}"),
        }
    }
    drop(held);
    let url = format!("http://{addr}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(r) =
            tokio::time::timeout(Duration::from_secs(2), crate::http::request(&url, "GET", "/healthz", &[], &[])).await
            && r.status == 200
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "serving again once connections closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CORS is closed unless configured: a page of a configured origin may call the JSON API (preflight answered, the
/// answer names the origin); any other origin gets no CORS headers, so the browser keeps the answer from it.
#[tokio::test]
async fn cors_is_closed_unless_configured() {
    let server = Server::start("[http]\ncors_origins = [\"https://portal.example\"]\n").await;
    let allowed = [("Origin", "https://portal.example")];
    let header = |r: &crate::http::Response, name: &str| {
        r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    };
    let pre = request(&server.url, "OPTIONS", "/api/v1/snapshot", &allowed, &[]).await;
    assert_eq!(pre.status, 204);
    assert!(header(&pre, "access-control-allow-headers").is_some_and(|v| v.contains("authorization")));
    let get = request(&server.url, "GET", "/api/v1/alerts", &allowed, &[]).await;
    assert_eq!(header(&get, "access-control-allow-origin").as_deref(), Some("https://portal.example"));
    let other = request(&server.url, "GET", "/api/v1/alerts", &[("Origin", "https://evil.example")], &[]).await;
    assert_eq!(header(&other, "access-control-allow-origin"), None, "another origin gets nothing");
    let closed = Server::start("").await;
    let get = request(&closed.url, "GET", "/api/v1/alerts", &allowed, &[]).await;
    assert_eq!(header(&get, "access-control-allow-origin"), None, "closed by default");
}
