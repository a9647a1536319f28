//! Numbers a control room can act on (issue 12): old reports never show as live, no report is lost as a
//! "duplicate", revisions the server gives, partial updates that combine, and a Report stream that answers what it
//! cannot read.

use std::time::Duration;

use prost::Message;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;
use tokio::process::Command;

use crate::support::*;

/// `sitrep push --server URL FILE EXTRA...`: its exit code, and what it printed (standard output, then error).
async fn push(url: &str, file: std::path::PathBuf, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sitrep")).args(["push", "--server", url]).arg(file).args(extra).output();
    let out = out.await.unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `provider`'s history of the last 24 hours.
async fn history(server: &Server, provider: &str) -> pb::History {
    let request = pb::GetHistoryRequest { provider: provider.into(), ..Default::default() };
    server.query().await.get_history(request).await.unwrap().into_inner()
}

async fn snapshot(server: &Server) -> pb::Snapshot {
    server.query().await.get_snapshot(pb::GetSnapshotRequest::default()).await.unwrap().into_inner()
}

fn provider<'a>(snap: &'a pb::Snapshot, code: &str) -> Option<&'a pb::ProviderState> {
    snap.providers.iter().find(|p| p.provider == code)
}

/// The value and coverage of `metric` in the rollup of `scope` (a system code).
fn rollup(snap: &pb::Snapshot, system: &str, metric: &str) -> (Option<f64>, u32) {
    let r = snap.rollups.iter().find(|r| r.scope.as_ref().is_some_and(|s| s.code == system)).expect("system rollup");
    r.metrics.iter().find(|m| m.metric == metric).map_or((None, 0), |m| (m.value, m.providers))
}

/// A report for an hour ten days ago never shows as live: a provider with current figures keeps them (the old
/// report goes into history only), and a provider whose only report is that old is stale, with its numbers in no
/// total.
#[tokio::test]
async fn a_report_for_ten_days_ago_leaves_the_provider_stale_and_the_live_figures_unchanged() {
    let server = Server::start("").await;
    let mut client = server.provider().await;
    let open = "beds.cc_adult.open";
    let ack = client.submit(report("RJ7", 0, 1, &[(open, 20.0)])).await.unwrap().into_inner();
    assert_eq!(ack.outcome(), Outcome::Accepted);
    let old = client.submit(report("RJ7", 240, 1, &[(open, 99.0)])).await.unwrap().into_inner();
    assert_eq!(old.outcome(), Outcome::Accepted);
    assert!(old.message.contains("history only"), "{}", old.message);
    let first = client.submit(report("RVR", 240, 1, &[(open, 50.0)])).await.unwrap().into_inner();
    assert_eq!(first.outcome(), Outcome::Accepted);

    let snap = server.snapshot_at(&first.cursor).await;
    let rj7 = provider(&snap, "RJ7").expect("RJ7");
    assert!(!rj7.stale);
    assert_eq!(num(&rj7.readings[open].value), Some(20.0), "the old report did not become live");
    let rvr = provider(&snap, "RVR").expect("RVR");
    assert!(rvr.stale, "a first report ten days old is stale from the start");
    assert!(rvr.alerts.iter().any(|a| a.key == "stale:RVR"));
    // The system's open beds are RJ7's alone: RVR's ten-day-old 50 counts nowhere.
    assert_eq!(rollup(&snap, "QWE", open), (Some(20.0), 1));
    let qwe = snap.rollups.iter().find(|r| r.scope.as_ref().is_some_and(|s| s.code == "QWE")).unwrap();
    assert_eq!((qwe.reporting, qwe.stale), (2, 1));
}

/// `sitrep push` of the README's example with no revision: the server gives each push the next revision; the
/// same revision sent again with other content is a conflict (exit 3) naming the revision to use, never a
/// duplicate; sent again unchanged it is a duplicate (exit 0). Two reports for one hour with different metrics (a
/// SANER facility's two measures) combine.
#[tokio::test]
async fn conflicts_are_told_and_revisions_are_given() {
    let server = Server::start("").await;
    let dir = temp_dir("push");
    let run = |file: &str, extra: &'static [&'static str]| push(&server.url, dir.path().join(file), extra);
    let write = |file: &str, json: &str| std::fs::write(dir.path().join(file), json).unwrap();
    write("beds.json", r#"{"provider": "RJ7", "values": {"beds.cc_adult.open": 28, "beds.cc_adult.occupied": 25}}"#);
    write("ed.json", r#"{"provider": "RJ7", "values": {"ed.over_12h": 4}, "narrative": "ED busy"}"#);

    let (code, text) = run("beds.json", &[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("accepted: RJ7") && text.contains(" r1\n"), "{text}");
    let (code, text) = run("ed.json", &[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(" r2\n"), "the next revision: {text}");
    // Partial updates combine: both measures are live.
    let snap = server.snapshot_when("RJ7's revision 2", |s| provider(s, "RJ7").is_some_and(|p| p.revision == 2)).await;
    let rj7 = provider(&snap, "RJ7").unwrap();
    assert_eq!(num(&rj7.readings["beds.cc_adult.open"].value), Some(28.0));
    assert_eq!(num(&rj7.readings["ed.over_12h"].value), Some(4.0));

    // Revision 1 again, with other content: a conflict, nothing stored, and the revision to use.
    let (code, text) = run("ed.json", &["--revision", "1"]).await;
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with("conflict: RJ7"), "{text}");
    assert!(text.contains("Send it as revision 3"), "{text}");
    // Revision 2 again, unchanged (a retry): a duplicate.
    let (code, text) = run("ed.json", &["--revision", "2"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("duplicate: RJ7"), "{text}");
    let history = history(&server, "RJ7").await;
    assert_eq!(history.entries.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);

    // A report that says nothing is refused, naming the rule.
    write("empty.json", r#"{"provider": "RJ7", "values": {}}"#);
    let (code, text) = run("empty.json", &[]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("values (not_empty)"), "{text}");
}

/// Any bytes, sent as one message of a stream: for a message the server cannot read.
#[derive(Clone, Debug, Default, PartialEq)]
struct Raw(Vec<u8>);

impl Message for Raw {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// A message the server cannot read, then a valid report, on one Report stream: the stream ends with
/// INVALID_ARGUMENT saying why (never OK with the valid report unanswered), and a unary call with garbage is
/// INVALID_ARGUMENT too, not INTERNAL.
#[tokio::test]
async fn a_message_that_cannot_be_read_is_answered_with_an_error() {
    let server = Server::start("").await;
    // Field 1 (provider, a string) sent as a varint: not a StatusReport.
    let garbage = Raw(vec![0x08, 0x96, 0x01]);
    let valid = Raw(report("RJ7", 0, 1, &[("ed.over_12h", 2.0)]).encode_to_vec());

    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let path = |m: &'static str| tonic::codegen::http::uri::PathAndQuery::from_static(m);
    let codec = || tonic_prost::ProstCodec::<Raw, pb::ReportAck>::default();
    let stream = tokio_stream::iter([garbage.clone(), valid.clone()]);
    let mut acks = grpc
        .streaming(tonic::Request::new(stream), path("/sitrep.v1.ProviderService/Report"), codec())
        .await
        .unwrap()
        .into_inner();
    let end = tokio::time::timeout(DEADLINE, acks.message()).await.expect("an answer");
    let status = end.expect_err("the stream ends with an error, not OK");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("not a valid StatusReport"), "{}", status.message());
    assert!(status.message().contains("send them again"), "{}", status.message());

    grpc.ready().await.unwrap();
    let unary = grpc.unary(tonic::Request::new(garbage), path("/sitrep.v1.ProviderService/Submit"), codec()).await;
    let status = unary.expect_err("garbage is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // The valid report, sent again, is stored.
    grpc.ready().await.unwrap();
    let ack = grpc.unary(tonic::Request::new(valid), path("/sitrep.v1.ProviderService/Submit"), codec()).await;
    assert_eq!(ack.unwrap().into_inner().outcome(), Outcome::Accepted);

    // A message over the size limit ends the stream with an error naming the setting.
    let small = Server::start("[limits]\nmax_message_bytes = 2048\n").await;
    let mut client = small.provider().await;
    let mut feed = Feed::open(&mut client).await;
    let mut big = report("RJ7", 0, 1, &[("ed.over_12h", 2.0)]);
    big.narrative = "n".repeat(4000);
    let status = feed.try_send(big.clone()).await.expect_err("an error, not an ack or OK");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("limits.max_message_bytes"), "{}", status.message());
    // And sent on its own, the same.
    let status = small.provider().await.submit(big).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("limits.max_message_bytes"), "{}", status.message());
}

/// Thirty-two streams writing one provider at once, through two replicas of one Redis: every report is
/// acknowledged, and contention never makes a replica say the store is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_streams_for_one_provider_are_all_acknowledged() {
    let redis = RedisProcess::start().expect("redis-server");
    let replicas = [Server::start_redis(&redis.url()).await, Server::start_redis(&redis.url()).await];
    let mut streams = Vec::new();
    for s in 0..32u32 {
        let mut client = replicas[s as usize % 2].provider().await;
        streams.push(tokio::spawn(async move {
            let mut feed = Feed::open(&mut client).await;
            let mut outcomes = Vec::new();
            for i in 0..10u32 {
                let ack = feed.send(report("RJ7", 0, s * 100 + i + 1, &[("ed.over_12h", f64::from(i))])).await;
                outcomes.push((ack.outcome(), ack.message));
            }
            outcomes
        }));
    }
    for s in streams {
        for (outcome, message) in s.await.unwrap() {
            assert_eq!(outcome, Outcome::Accepted, "{message}");
        }
    }
    for replica in &replicas {
        let mut health = tonic_health::pb::health_client::HealthClient::new(replica.channel().await);
        let status = health.check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap().into_inner();
        assert_eq!(status.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    }
    // The highest revision is live, once the replica's picture has folded the log up to it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let snap = snapshot(&replicas[0]).await;
        let live = provider(&snap, "RJ7").map(|p| p.revision);
        if live == Some(31 * 100 + 10) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the highest revision is live: got {live:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A FHIR SANER facility sends two measures for one day (a CDC and a FEMA MeasureReport, say): neither carries a
/// revision, so each is given the next, and their metrics combine; neither is lost as a duplicate.
#[tokio::test]
async fn two_saner_measures_for_one_day_combine() {
    let server = Server::start("").await;
    let now = sitrep_core::Timestamp::now();
    let day = &now.to_string()[..10];
    let dir = temp_dir("saner-two");
    let measure = |name: &str, populations: &[(&str, u32)]| {
        let populations: Vec<String> = populations
            .iter()
            .map(|(code, n)| format!(r#"{{"code": {{"coding": [{{"code": "{code}"}}]}}, "count": {n}}}"#))
            .collect();
        let text = format!(
            r#"{{"resourceType": "MeasureReport", "status": "complete", "type": "summary",
            "measure": "http://hl7.org/fhir/us/saner/Measure/{name}", "date": "{now}",
            "period": {{"start": "{day}", "end": "{day}"}}, "group": [{{"population": [{}]}}]}}"#,
            populations.join(", ")
        );
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let cdc = measure("CDCPatientImpactAndHospitalCapacity", &[("numICUBeds", 30), ("numICUBedsOcc", 22)]);
    let fema = measure("FEMADailyHospitalCOVID19Reporting", &[("numVent", 12), ("numVentUse", 5)]);
    for (path, revision) in [(&cdc, "r1"), (&fema, "r2")] {
        let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
            .args(["push", "--saner", "--provider", "RGT", "--server", &server.url])
            .arg(path)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("accepted: RGT") && text.contains(&format!(" {revision}\n")), "{text}");
    }
    let snap = server.snapshot_when("RGT's revision 2", |s| provider(s, "RGT").is_some_and(|p| p.revision == 2)).await;
    let rgt = provider(&snap, "RGT").unwrap();
    let got: Vec<Option<f64>> =
        ["beds.cc_adult.open", "beds.cc_adult.occupied", "ventilators.total", "ventilators.in_use"]
            .iter()
            .map(|m| num(&rgt.readings[*m].value))
            .collect();
    assert_eq!(got, [Some(30.0), Some(22.0), Some(12.0), Some(5.0)]);
}

/// The scenario of a system total that invented spare beds: one provider reports open and occupied critical care
/// beds, another only open ones. A subscriber's event carries the system's free beds and occupancy over the first
/// alone, with coverage 1 of the 2 reporting (partial), while open beds count both.
#[tokio::test]
async fn a_total_counts_only_providers_with_both_inputs_and_says_so() {
    let server = Server::start("").await;
    let mut client = server.provider().await;
    let (open, occupied) = ("beds.cc_adult.open", "beds.cc_adult.occupied");
    client.submit(report("RJ7", 0, 1, &[(open, 62.0), (occupied, 49.0)])).await.unwrap();
    let mut updates = server.updates(1).await;
    expect_snapshot(next(&mut updates).await);
    let ack = client.submit(report("RVR", 0, 1, &[(open, 40.0)])).await.unwrap().into_inner();
    let e = expect_event(next_non_heartbeat(&mut updates).await);
    assert_eq!(e.cursor, ack.cursor);
    let qwe = e.rollups.iter().find(|r| r.scope.as_ref().is_some_and(|s| s.code == "QWE")).expect("QWE");
    let figure = |m: &str| qwe.metrics.iter().find(|v| v.metric == m).map(|v| (v.value, v.providers));
    assert_eq!(qwe.reporting, 2);
    assert_eq!(figure(open), Some((Some(102.0), 2)));
    assert_eq!(figure("beds.cc_adult.free"), Some((Some(13.0), 1)), "free beds of the provider with both alone");
    // And what it stands on: the open and occupied beds of the providers it counts (62 of the 102 open).
    let free = qwe.metrics.iter().find(|v| v.metric == "beds.cc_adult.free").unwrap();
    assert_eq!(free.inputs, [62.0, 49.0]);
    // The snapshot says the same, and every figure's coverage is what the watch line prints.
    let snap = snapshot(&server).await;
    assert_eq!(rollup(&snap, "QWE", "beds.cc_adult.free"), (Some(13.0), 1));
    let occupancy = rollup(&snap, "QWE", "beds.cc_adult.occupancy");
    assert_eq!(occupancy.1, 1);
    assert!((occupancy.0.unwrap() - 49.0 / 62.0 * 100.0).abs() < 1e-6, "{occupancy:?}");
    let line = sitrep_client::display::rollup_text(qwe, false);
    assert!(line.contains("beds.cc_adult.free 13") && line.contains("(1/5, partial)"), "{line}");
}

/// Two sites of one trust report revision 1 of the same hour: both are accepted (the site is part of the key), the
/// trust's figures are the sum of its sites', the breakdown is in the snapshot (gRPC and JSON) and in history, and a
/// site's event says whose values changed. Through two replicas of one Redis, so the site's state and history keys
/// are the stored ones, not a replica's memory.
#[tokio::test]
async fn two_sites_report_in_one_hour() {
    let redis = RedisProcess::start().expect("redis-server");
    let replicas = [Server::start_redis(&redis.url()).await, Server::start_redis(&redis.url()).await];
    let mut updates = replicas[1].updates(1).await;
    expect_snapshot(next(&mut updates).await);
    let dir = temp_dir("sites");
    let push = |file: &str, json: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, json).unwrap();
        let url = replicas[0].url.clone();
        async move { push(&url, path, &[]).await }
    };
    let (open, occupied) = ("beds.cc_adult.open", "beds.cc_adult.occupied");
    let site = |site: &str, o: u32, occ: u32| {
        format!(
            r#"{{"provider": "RJ7", "site": "{site}", "revision": 1, "values": {{"{open}": {o}, "{occupied}": {occ}}}}}"#
        )
    };
    for (file, json) in [("a.json", site("RJ701", 20, 15)), ("b.json", site("RJ731", 12, 11))] {
        let (code, text) = push(file, &json).await;
        assert_eq!(code, Some(0), "{text}");
        assert!(text.starts_with("accepted: RJ7"), "neither is a duplicate of the other: {text}");
    }
    // Sent again, one site's report is a duplicate; changed, a conflict naming that site's next revision.
    let (code, text) = push("a.json", &site("RJ701", 20, 15)).await;
    assert_eq!((code, text.starts_with("duplicate: RJ7")), (Some(0), true), "{text}");
    let (code, text) = push("a2.json", &site("RJ701", 21, 15)).await;
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("Send it as revision 2"), "{text}");

    // The subscriber (on the other replica) sees whose values changed, and the trust's new figures.
    expect_event(next_non_heartbeat(&mut updates).await);
    let e = expect_event(next_non_heartbeat(&mut updates).await);
    assert_eq!(e.site, "RJ731");
    assert_eq!(changes(&e), [(occupied.to_owned(), None, 11.0), (open.to_owned(), None, 12.0)]);
    let figure = |m: &str| e.figures.iter().find(|f| f.metric == m).and_then(|f| f.value);
    assert_eq!((figure(open), figure("beds.cc_adult.free")), (Some(32.0), Some(6.0)));

    let snap = snapshot(&replicas[1]).await;
    let rj7 = provider(&snap, "RJ7").unwrap();
    assert_eq!((num(&rj7.readings[open].value), num(&rj7.readings[occupied].value)), (Some(32.0), Some(26.0)));
    let sites: Vec<(&str, u32, Option<f64>)> =
        rj7.sites.iter().map(|s| (s.site.as_str(), s.revision, num(&s.readings[open].value))).collect();
    assert_eq!(sites, [("RJ701", 1, Some(20.0)), ("RJ731", 1, Some(12.0))]);
    assert_eq!(rollup(&snap, "QWE", "beds.cc_adult.free"), (Some(6.0), 1), "the system counts the trust once");
    let json = crate::http::get(&replicas[0].url, "/api/v1/snapshot?provider=RJ7").await.json();
    let names: Vec<&str> =
        json["providers"][0]["sites"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["St George's Hospital", "Queen Mary's Hospital"]);
    let history = history(&replicas[1], "RJ7").await;
    let mut kept: Vec<(String, u32)> = history.entries.iter().map(|h| (h.site.clone(), h.revision)).collect();
    kept.sort();
    assert_eq!(kept, [("RJ701".to_owned(), 1), ("RJ731".to_owned(), 1)]);
    // The hour-by-hour view combines the sites the same way: the trust's and its system's.
    let mut query = replicas[1].query().await;
    for (provider, scope, metric, want) in [("RJ7", "", open, 32.0), ("", "system:QWE", "beds.cc_adult.free", 6.0)] {
        let request = pb::GetHourlyRequest {
            metric: metric.into(),
            provider: provider.into(),
            scope: scope.into(),
            hours: 1,
            ..Default::default()
        };
        let hourly = query.get_hourly(request).await.unwrap().into_inner();
        assert_eq!(hourly.points[0].value, Some(want), "{provider}{scope} {metric}");
    }
    let filter = pb::Filter { providers: vec!["RJ7".into()], ..Default::default() };
    let request = pb::GetMetricHistoryRequest { metric: open.into(), filter: Some(filter), ..Default::default() };
    let series = query.get_metric_history(request).await.unwrap().into_inner().series;
    assert_eq!(num(&series[0].points[0].value), Some(32.0), "a metric's history combines the sites too");
}
