//! End-to-end tests of the HTTP side with a plain HTTP client: the JSON API, Server-Sent Events resuming from
//! `Last-Event-ID`, health endpoints for load balancers, and gRPC-Web.

use std::time::Duration;

use prost::Message;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;

use crate::http::{Sse, get, request};
use crate::support::*;

/// The SSE stream's ids are cursors. A client that reconnects with `Last-Event-ID` gets exactly the events it
/// missed, in order, with no snapshot, no gap and no duplicate, and its totals current; the header wins over the
/// query parameter; a cursor the log cannot serve gets a reset and a fresh snapshot.
#[tokio::test]
async fn sse_resumes_from_last_event_id_without_gap_or_duplicate() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    let mut sse = Sse::open(&server.url, "/api/v1/events?system=QWE&heartbeat=1", &[]).await;
    assert_eq!(sse.status, 200);
    assert!(
        sse.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("text/event-stream"))
    );
    let snapshot = sse.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.id.as_deref(), Some(snapshot.json()["cursor"].as_str().unwrap()));

    let mut acks = Vec::new();
    for (i, p) in ["RJ7", "RVR", "RGT", "RJ7"].iter().enumerate() {
        let ack = provider.submit(report(p, 0, i as u32 + 1, &[("ed.in_department", 10.0 + i as f64)])).await.unwrap();
        acks.push(ack.into_inner());
    }
    // RGT is in another system: the filter leaves its event out, and sends only the England totals it moved.
    let mut seen = Vec::new();
    for (i, ack) in acks.iter().enumerate() {
        let m = sse.next_non_heartbeat().await;
        assert_eq!(m.id.as_deref(), Some(ack.cursor.as_str()));
        assert_eq!(m.id.as_deref(), m.json()["cursor"].as_str());
        if i == 2 {
            assert_eq!(m.event, "rollups");
            let json = m.json();
            let scopes: Vec<&str> =
                json["rollups"].as_array().unwrap().iter().map(|r| r["scope"]["code"].as_str().unwrap()).collect();
            assert_eq!(scopes, ["ENG"]);
        } else {
            assert_eq!(m.event, "event");
            seen.push(m.id.clone().unwrap());
        }
    }
    drop(sse);

    // Away: three more reports, one of them for another system.
    let mut missed = Vec::new();
    for (i, p) in ["RVR", "RGT", "RAX"].iter().enumerate() {
        let ack = provider.submit(report(p, 0, 10 + i as u32, &[("ed.in_department", 20.0 + i as f64)])).await.unwrap();
        missed.push(ack.into_inner());
    }
    let last = seen.last().unwrap().clone();
    let mut back = Sse::open(
        &server.url,
        "/api/v1/events?system=QWE&heartbeat=1&last_event_id=garbage",
        &[("Last-Event-ID", &last)],
    )
    .await;
    // Back: the two missed QWE events, once each and in order, and no snapshot. RGT's report between them may come
    // as rollups, depending on how far the aggregator's Hub (which tails the log, and on a busy machine lags the
    // acknowledgements) had folded the log when the stream came back: not yet, and it comes from the Hub's queue
    // as it would live (the England totals it moved); exactly, and it ends the catch-up (the totals of every scope
    // followed, as of it); past it, and it is passed over (the next event carries the totals). Whichever, the
    // cursors are in log order and the totals end current.
    let place = |id: &str| missed.iter().position(|a| a.cursor == id).unwrap_or_else(|| panic!("{id}: not missed"));
    let mut got = Vec::new();
    let mut reached = None;
    let mut england = None;
    while got.len() < 2 {
        let m = back.next_non_heartbeat().await;
        let json = m.json();
        let at = place(m.id.as_deref().expect("an id"));
        assert_eq!(m.id.as_deref(), json["cursor"].as_str());
        assert!(reached < Some(at), "in log order, nothing twice: {m:?}");
        reached = Some(at);
        match m.event.as_str() {
            "event" => got.push(m.id.clone().unwrap()),
            "rollups" => {
                assert_eq!(at, 1, "only RGT's report comes as rollups: {m:?}");
                let scopes: Vec<&str> =
                    json["rollups"].as_array().unwrap().iter().map(|r| r["scope"]["code"].as_str().unwrap()).collect();
                assert!(scopes.contains(&"ENG") && scopes.iter().all(|s| ["QWE", "Y56", "ENG"].contains(s)), "{m:?}");
            }
            _ => panic!("no snapshot when resuming: {m:?}"),
        }
        england = rollup_figure(&json, "ENG", "ed.in_department").or(england);
    }
    assert_eq!(got, [missed[0].cursor.clone(), missed[2].cursor.clone()]);
    // RJ7's 13, then RVR's 20, RGT's 21 and RAX's 22.
    assert_eq!(england, Some(76.0), "England's total is current");
    assert!(back.quiet_for(Duration::from_millis(1500)).await.is_none(), "nothing twice, nothing extra");
    // The event carries the derived picture as JSON.
    let e = missed[2].clone();
    let again =
        provider.submit(report("RAX", 0, 20, &[("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", 10.0)])).await;
    let again = again.unwrap().into_inner();
    let m = back.next_non_heartbeat().await;
    assert_eq!(m.id.as_deref(), Some(again.cursor.as_str()));
    let json = m.json();
    assert_eq!(json["provider"], "RAX");
    assert!(json["raised"].as_array().unwrap().iter().any(|a| a["key"] == "threshold:RAX:beds.cc_adult.occupancy"));
    // Compactly: each metric named once, figures and rollups by position.
    let metrics: Vec<&str> = json["metrics"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    let at = |code: &str| metrics.iter().position(|m| *m == code).unwrap_or_else(|| panic!("{code} in {metrics:?}"));
    let occupancy = at("beds.cc_adult.occupancy");
    assert!(json["changes"].as_array().unwrap().iter().any(|c| c[0] == at("beds.cc_adult.occupied") && c[2] == 10));
    assert!(json["figures"].as_array().unwrap().iter().any(|f| f == &serde_json::json!([occupancy, 100, "red"])));
    let qwe = json["rollups"].as_array().unwrap().iter().find(|r| r["scope"]["code"] == "QWE").expect("QWE");
    assert_eq!(qwe["value"].as_array().unwrap().len(), metrics.len());
    assert!(qwe["n"][occupancy].as_u64().unwrap() >= 1);
    drop(e);

    // The query parameter is used when there is no header; a cursor of another epoch gets a reset and a snapshot.
    let path = format!("/api/v1/events?system=QWE&last_event_id={}", urlencode(&last));
    let mut by_query = Sse::open(&server.url, &path, &[]).await;
    assert_eq!(by_query.next_non_heartbeat().await.id.as_deref(), Some(missed[0].cursor.as_str()));
    let mut foreign = Sse::open(&server.url, "/api/v1/events?last_event_id=otherepoch%3A1-0", &[]).await;
    let reset = foreign.next().await;
    assert_eq!((reset.event.as_str(), reset.json()["reason"].as_str()), ("reset", Some("other_epoch")));
    assert_eq!(foreign.next().await.event, "snapshot");
    // A bad filter is a 400 naming the field.
    let bad = Sse::open(&server.url, "/api/v1/events?system=QXX", &[]).await;
    assert_eq!(bad.status, 400);
}

/// A scope's figure for `metric` in an SSE message's rollups, if it has one: an event's (compact: figures by the
/// position of the event's metrics) or a `rollups` message's.
fn rollup_figure(json: &serde_json::Value, scope: &str, metric: &str) -> Option<f64> {
    let r = json["rollups"].as_array()?.iter().find(|r| r["scope"]["code"] == scope)?;
    match json["metrics"].as_array() {
        Some(metrics) => r["value"][metrics.iter().position(|m| m == metric)?].as_f64(),
        None => r["metrics"].as_array()?.iter().find(|f| f["metric"] == metric)?["value"].as_f64(),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON API answers with the same filters and rules as gRPC, and the wallboard page is served.
#[tokio::test]
async fn json_api_health_and_the_page() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    let r = report("RJ7", 0, 1, &[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 19.0), ("opel.level", 3.0)]);
    assert_eq!(provider.submit(r).await.unwrap().into_inner().outcome(), Outcome::Accepted);

    let live = get(&server.url, "/healthz").await;
    assert_eq!((live.status, live.json()["live"].as_bool()), (200, Some(true)));
    // HTTP/1 answers close their connection, so a browser's event stream gets a fresh one (served directly): a
    // keep-alive HTTP/1.1 client is told so, and the server closes.
    assert_eq!(live.header("connection"), Some("close"));
    let mut raw = tokio::net::TcpStream::connect(crate::http::authority(&server.url)).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, raw.read_to_end(&mut answer)).await.expect("the server closes").unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200") && answer.contains("connection: close"), "{answer}");
    // Ready once the Hub has loaded the picture, which a loaded machine may take a moment over after the first
    // line "listening" (the server answers /healthz at once; /readyz says why it is not ready yet).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let ready = get(&server.url, "/readyz").await;
        if ready.status == 200 {
            assert_eq!(ready.json()["ready"].as_bool(), Some(true));
            break;
        }
        assert_eq!(ready.status, 503);
        assert!(tokio::time::Instant::now() < deadline, "never ready: {}", ready.json()["reason"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let snap = get(&server.url, "/api/v1/snapshot?system=QWE&metric=beds.cc_adult.occupancy").await;
    assert_eq!(snap.status, 200);
    let snap = snap.json();
    let rj7 = &snap["providers"][0];
    assert_eq!(rj7["provider"], "RJ7");
    assert_eq!(
        rj7["figures"],
        serde_json::json!([{ "metric": "beds.cc_adult.occupancy", "value": 95.0, "rag": "red" }])
    );
    assert_eq!(rj7["opel"]["declared"], 3);
    assert_eq!(rj7["alerts"].as_array().unwrap().len(), 2, "{}", rj7["alerts"]);
    let scopes: Vec<&str> =
        snap["rollups"].as_array().unwrap().iter().map(|r| r["scope"]["code"].as_str().unwrap()).collect();
    assert_eq!(scopes, ["QWE", "Y56", "ENG"]);

    let bad = get(&server.url, "/api/v1/snapshot?region=Y99").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["violations"][0]["field"], "filter.regions[0]");

    let directory = get(&server.url, "/api/v1/directory").await.json();
    assert_eq!(directory["nation"]["code"], "ENG");
    let catalogue = get(&server.url, "/api/v1/catalogue").await.json();
    assert!(catalogue["derived"].as_array().unwrap().iter().any(|d| d["code"] == "beds.cc_adult.occupancy"));
    let history = get(&server.url, "/api/v1/history?provider=RJ7").await;
    assert_eq!(history.status, 200);
    assert_eq!(history.json()["entries"][0]["values"]["beds.cc_adult.occupied"], 19.0);
    let missing = get(&server.url, "/api/v1/history").await;
    assert_eq!((missing.status, missing.json()["violations"][0]["field"].as_str()), (400, Some("provider")));
    let range = get(&server.url, "/api/v1/history?provider=RJ7&from=2026-11-27T14:00:00Z&to=yesterday").await;
    assert_eq!(range.status, 400);
    let alerts = get(&server.url, "/api/v1/alerts?provider=RJ7").await.json();
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 2);
    let previous = get(&server.url, "/api/v1/previous_hour?system=QWE").await;
    assert_eq!(previous.status, 200);
    // What reports changed in the last hour, newest first, each change as [metric, before, after].
    let again = report("RJ7", 0, 2, &[("beds.cc_adult.occupied", 17.0)]);
    assert_eq!(provider.submit(again).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    let changes = get(&server.url, "/api/v1/changes?system=QWE").await.json();
    let list = changes["changes"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{changes}");
    assert_eq!((&list[0]["provider"], &list[0]["revision"]), (&serde_json::json!("RJ7"), &serde_json::json!(2)));
    assert_eq!(list[0]["changes"], serde_json::json!([["beds.cc_adult.occupied", 19, 17]]));
    assert_eq!(list[1]["changes"][0], serde_json::json!(["beds.cc_adult.occupied", null, 19]));
    assert_eq!(get(&server.url, "/api/v1/changes?system=QWE&limit=0").await.status, 400);
    assert_eq!(get(&server.url, "/api/v1/changes?system=QXX").await.status, 400);

    let page = get(&server.url, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("wallboard.js"));
    assert_eq!(get(&server.url, "/wallboard.js").await.status, 200);
    assert_eq!(get(&server.url, "/nope").await.status, 404);
}

/// `/readyz` fails while Redis is down and recovers by itself; `/healthz` (the process is alive) stays up.
#[tokio::test]
async fn readyz_follows_the_store() {
    let mut redis = RedisProcess::start().expect("redis-server");
    let server = Server::start_redis(&redis.url()).await;
    let ready = || async { get(&server.url, "/readyz").await };
    let becomes = |want: u16| async move {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let r = ready().await;
            if r.status == want {
                return r;
            }
            assert!(tokio::time::Instant::now() < deadline, "readyz stayed {}, expected {want}", r.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    becomes(200).await;
    redis.kill();
    let down = becomes(503).await;
    assert_eq!(down.json()["ready"], false);
    assert!(down.json()["reason"].as_str().unwrap().contains("store"), "{}", down.json());
    assert_eq!(get(&server.url, "/healthz").await.status, 200);
    redis.restart().expect("restart redis-server");
    becomes(200).await;
}

/// A browser-style gRPC-Web call (HTTP/1, base64-free binary framing) reaches sitrep's services on the same port.
#[tokio::test]
async fn grpc_web_calls_are_served() {
    let server = Server::start("").await;
    let message = pb::GetDirectoryRequest {}.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let headers = [("Content-Type", "application/grpc-web+proto"), ("X-Grpc-Web", "1")];
    let r = request(&server.url, "POST", "/sitrep.v1.QueryService/GetDirectory", &headers, &body).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/grpc-web"));
    // Frames: a message (flag 0), then trailers (flag 0x80) with grpc-status 0.
    let (mut rest, mut directory, mut trailers) = (&r.body[..], None, String::new());
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let frame = &rest[5..5 + len];
        match rest[0] {
            0 => directory = Some(pb::Directory::decode(frame).unwrap()),
            0x80 => trailers = String::from_utf8_lossy(frame).into_owned(),
            other => panic!("unexpected frame flag {other}"),
        }
        rest = &rest[5 + len..];
    }
    assert_eq!(directory.expect("a message").nation.unwrap().code, "ENG");
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
}
