//! `GET /metrics` against the real binary: reports of every outcome are counted exactly, the scrape is guarded by
//! the admin grant, `promtool check metrics` accepts it, and a real Prometheus server scrapes it with a bearer key.

use std::time::Duration;

use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;

use crate::auth::{Credential, make_key};
use crate::http::{Response, Sse, authority, request};
use crate::support::*;

/// `GET /metrics` with `authorization` (if any) and `accept` (if any).
async fn scrape(url: &str, authorization: Option<&str>, accept: Option<&str>) -> Response {
    let mut headers = Vec::new();
    if let Some(a) = authorization {
        headers.push(("Authorization", a));
    }
    if let Some(a) = accept {
        headers.push(("Accept", a));
    }
    request(url, "GET", "/metrics", &headers, &[]).await
}

/// The value of the sample `name` (with its labels, as written) in a scrape's text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Reports of each outcome, then a scrape: every counter exact, every family well formed (promtool), and only an
/// admin may scrape. Then a real Prometheus server scrapes the aggregator with the admin's key every second, and
/// its query API returns the same counts.
#[tokio::test]
async fn metrics_count_every_outcome_and_prometheus_scrapes_them() {
    let (admin, admin_lines) = make_key("operations", &["--read", "*", "--admin"]).await;
    let (feed, feed_lines) = make_key("RJ7 feed", &["--write", "RJ7", "--read", "provider:RJ7"]).await;
    let (reader, reader_lines) = make_key("wall", &["--read", "*"]).await;
    let principals = format!("{admin_lines}\n{feed_lines}\n{reader_lines}\n");
    let server =
        Server::start_full("[auth]\nprincipals = \"p.toml\"\n", &[], "127.0.0.1:0", &[("p.toml", &principals)]).await;
    let bearer = |key: &str| format!("Bearer {key}");

    // A subscriber on each transport, so deliveries are timed and subscribers counted.
    let channel = server.channel().await;
    let mut subscriber = SubscriberServiceClient::with_interceptor(channel.clone(), Credential(Some(bearer(&reader))));
    let mut grpc = subscriber.subscribe(subscribe_all(30)).await.unwrap().into_inner();
    expect_snapshot(next(&mut grpc).await);
    let reader_header = bearer(&reader);
    let mut sse = Sse::open(&server.url, "/api/v1/events", &[("Authorization", &reader_header)]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.next().await.event, "snapshot");

    let mut provider = ProviderServiceClient::with_interceptor(channel.clone(), Credential(Some(bearer(&feed))));
    let good = |revision: u32| report("RJ7", 0, revision, &[("beds.cc_adult.open", 28.0), ("ed.in_department", 9.0)]);
    let mut cursors = Vec::new();
    for revision in [1, 2] {
        let ack = provider.submit(good(revision)).await.unwrap().into_inner();
        assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
        cursors.push(ack.cursor);
    }
    let duplicate = provider.submit(good(2)).await.unwrap().into_inner();
    assert_eq!(duplicate.outcome(), Outcome::Duplicate);
    // Rejected by two distinct rules: occupied beds above open beds, and a metric the catalogue lacks.
    let over = report("RJ7", 0, 3, &[("beds.cc_adult.open", 28.0), ("beds.cc_adult.occupied", 31.0)]);
    let unknown = report("RJ7", 0, 3, &[("beds.unicorn.open", 1.0)]);
    for bad in [over, unknown] {
        let status = provider.submit(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    // Refused before validation: another provider's report, and one with no credential.
    let status = provider.submit(report("RGT", 0, 1, &[("ed.in_department", 3.0)])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let mut anonymous = ProviderServiceClient::new(channel.clone());
    let status = anonymous.submit(good(4)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // Both subscribers have been sent both events.
    for cursor in &cursors {
        assert_eq!(&expect_event(next_non_heartbeat(&mut grpc).await).cursor, cursor);
        let mut message = sse.next().await;
        while message.event != "event" {
            message = sse.next().await;
        }
        assert_eq!(message.id.as_ref(), Some(cursor));
    }

    // Only an admin may scrape: no key is 401, a reader's is 403, and both are audited.
    assert_eq!(scrape(&server.url, None, None).await.status, 401);
    assert_eq!(scrape(&server.url, Some(&reader_header), None).await.status, 403);
    let answer = scrape(&server.url, Some(&bearer(&admin)), None).await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = String::from_utf8(answer.body).unwrap();
    let expected = [
        (r#"sitrep_reports_total{outcome="accepted"}"#, 2.0),
        (r#"sitrep_reports_total{outcome="duplicate"}"#, 1.0),
        (r#"sitrep_reports_total{outcome="conflict"}"#, 0.0),
        (r#"sitrep_reports_total{outcome="rejected"}"#, 2.0),
        (r#"sitrep_reports_total{outcome="refused"}"#, 2.0),
        (r#"sitrep_report_rejections_total{rule="at_most"}"#, 1.0),
        (r#"sitrep_report_rejections_total{rule="known_metric"}"#, 1.0),
        // The refused RGT report and the reader's scrape; the anonymous report and the keyless scrape.
        (r#"sitrep_refusals_total{reason="permission_denied"}"#, 2.0),
        (r#"sitrep_refusals_total{reason="unauthenticated"}"#, 2.0),
        (r#"sitrep_refusals_total{reason="resource_exhausted"}"#, 0.0),
        ("sitrep_ack_duration_seconds_count", 5.0),
        (r#"sitrep_subscribers{transport="grpc"}"#, 1.0),
        (r#"sitrep_subscribers{transport="sse"}"#, 1.0),
        (r#"sitrep_delivery_latency_seconds_count{transport="grpc"}"#, 2.0),
        (r#"sitrep_delivery_latency_seconds_count{transport="sse"}"#, 2.0),
        (r#"sitrep_store_duration_seconds_count{operation="apply"}"#, 3.0),
        (r#"sitrep_store_errors_total{operation="apply"}"#, 0.0),
        ("sitrep_store_up", 1.0),
        ("sitrep_providers_stale", 0.0),
        ("sitrep_event_log_events", 2.0),
    ];
    for (name, value) in expected {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }
    let providers = sitrep_core::profile::demo_directory().providers().count() as f64;
    assert_eq!(sample(&text, "sitrep_providers_not_reporting"), Some(providers - 1.0));
    assert!(sample(&text, "sitrep_log_follow_lag_seconds").is_some_and(|lag| lag < 5.0), "{text}");
    assert!(sample(&text, "sitrep_subscriber_queue_depth_max").is_some(), "{text}");
    let build = text.lines().find(|l| l.starts_with("sitrep_build_info{")).expect("build info");
    assert!(build.contains(r#"version="0.1.0""#) && build.ends_with(" 1"), "{build}");
    // OpenMetrics for a scraper that asks for it.
    let om = scrape(&server.url, Some(&bearer(&admin)), Some("application/openmetrics-text;version=1.0.0")).await;
    assert_eq!(om.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert!(String::from_utf8_lossy(&om.body).ends_with("# EOF\n"));

    promtool_accepts(&text).await;
    prometheus_scrapes(&server, &admin).await;
}

/// `promtool check metrics` (the Prometheus project's own linter) finds nothing to say about `text`.
async fn promtool_accepts(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

/// A real Prometheus server, scraping the aggregator every second with the admin's key as its bearer credential:
/// once it has scraped, its query API returns the aggregator's counts.
async fn prometheus_scrapes(server: &Server, admin: &str) {
    if which("prometheus").is_none() {
        // scripts/test installs it; a machine without it still checks everything above.
        eprintln!("NOTE: no prometheus binary; the real-server scrape is skipped (apt-get install prometheus)");
        return;
    }
    let dir = temp_dir("prometheus");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sitrep\n    \
         authorization:\n      credentials: {admin}\n    static_configs:\n      - targets: ['{}']\n",
        authority(&server.url)
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let listen = free_addr();
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let url = format!("http://{listen}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let counts = loop {
        assert!(tokio::time::Instant::now() < deadline, "Prometheus did not scrape the aggregator within a minute");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(5), async {
            let stream = tokio::net::TcpStream::connect(authority(&url)).await?;
            drop(stream);
            Ok::<_, std::io::Error>(request(&url, "GET", "/api/v1/query?query=sitrep_reports_total", &[], &[]).await)
        })
        .await
        else {
            continue;
        };
        if answer.status != 200 {
            continue;
        }
        let json = answer.json();
        let result = json["data"]["result"].as_array().cloned().unwrap_or_default();
        if result.len() == 5 {
            break result;
        }
    };
    let mut got: Vec<(String, String)> = counts
        .iter()
        .map(|r| (r["metric"]["outcome"].as_str().unwrap().to_owned(), r["value"][1].as_str().unwrap().to_owned()))
        .collect();
    got.sort();
    let expected = [("accepted", "2"), ("conflict", "0"), ("duplicate", "1"), ("refused", "2"), ("rejected", "2")];
    assert_eq!(got, expected.map(|(o, v)| (o.to_owned(), v.to_owned())), "what Prometheus scraped");
    let up = request(&url, "GET", "/api/v1/query?query=up", &[], &[]).await.json();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "the scrape with the admin's key succeeds: {up}");
}

/// The path of `program` on the `PATH`, if it is there.
fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| std::path::Path::new(d).join(program)).find(|p| p.is_file())
}
