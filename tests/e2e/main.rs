//! End-to-end tests: the real `sitrep serve` process, real gRPC clients over TCP.

mod aid;
mod aid_web;
mod auth;
mod browser;
mod derived;
mod failover;
mod feed;
mod http;
mod integrity;
mod metrics;
mod redis;
mod support;
mod tls;
mod traces;
mod wallboard;
mod watch;
mod web;

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_proto::v1::reset::Reason;
use support::*;
use tonic_types::StatusExt;

/// Several providers stream several reports; a subscriber receives exactly each accepted report's diff, raw
/// values, in cursor order; a filtered subscriber receives only its providers and metrics.
#[tokio::test]
async fn subscriber_receives_exact_diffs_in_order() {
    let server = Server::start("").await;
    let mut sub = server.subscriber().await;
    let mut all = sub.subscribe(subscribe_all(15)).await.unwrap().into_inner();
    let snap = expect_snapshot(next(&mut all).await);
    assert!(snap.providers.is_empty());
    let filter = pb::Filter {
        systems: vec!["QWE".into()],
        metrics: vec!["beds.cc_adult.occupied".into()],
        ..Default::default()
    };
    let mut filtered =
        sub.subscribe(pb::SubscribeRequest { filter: Some(filter), ..Default::default() }).await.unwrap().into_inner();
    expect_snapshot(next(&mut filtered).await);

    let mut client = server.provider().await;
    let providers = ["RJ7", "RGT", "RAL"]; // RJ7 is in system QWE; the others are not.
    let mut feeds = Vec::new();
    for _ in providers {
        feeds.push(Feed::open(&mut client).await);
    }
    let mut model = Model::default();
    let mut expected = Vec::new();
    for round in 0..4u32 {
        for (i, p) in providers.iter().enumerate() {
            let occupied = 20.0 + f64::from(round % 2) + i as f64;
            let values = [
                ("beds.cc_adult.open", 30.0),
                ("beds.cc_adult.occupied", occupied),
                ("ed.in_department", 50.0 + f64::from(round * 3)),
            ];
            let ack = feeds[i].send(report(p, 0, round + 1, &values)).await;
            assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
            assert_eq!((ack.provider.as_str(), ack.revision), (*p, round + 1));
            expected.push((ack.cursor, p.to_string(), round + 1, model.apply(p, &values)));
        }
    }
    for (cursor, provider, revision, diff) in &expected {
        let e = expect_event(next_non_heartbeat(&mut all).await);
        assert_eq!((&e.cursor, &e.provider, e.revision), (cursor, provider, *revision));
        assert!(e.live);
        assert_eq!(&changes(&e), diff, "event {cursor} carries the exact diff");
        assert_eq!(e.source, "e2e");
    }
    // The filtered subscriber sees RJ7's changes to the one metric. The others' reports it sees only as the totals
    // they move of the scopes it shares with them (RAL is in London too; RGT only in England), trimmed to the one
    // metric: never their events, never their own system.
    let mut nation = None;
    for (cursor, provider, _, _) in &expected {
        match next_non_heartbeat(&mut filtered).await {
            pb::update::Kind::Event(e) => {
                assert_eq!((&e.cursor, e.provider.as_str()), (cursor, "RJ7"));
                assert_eq!(e.changes.len(), 1);
                assert_eq!(e.changes[0].metric, "beds.cc_adult.occupied");
            }
            pb::update::Kind::Rollups(r) => {
                assert_eq!(&r.cursor, cursor);
                assert_ne!(provider, "RJ7", "RJ7's reports come as events");
                let scopes: Vec<String> =
                    r.rollups.iter().map(|r| r.scope.as_ref().map(|s| s.code.clone()).unwrap_or_default()).collect();
                assert_eq!(scopes, if provider == "RAL" { vec!["Y56", "ENG"] } else { vec!["ENG"] }, "{provider}");
                for rollup in &r.rollups {
                    let metrics: Vec<&str> = rollup.metrics.iter().map(|m| m.metric.as_str()).collect();
                    assert_eq!(metrics, ["beds.cc_adult.occupied"]);
                }
                nation = r.rollups.last().map(|r| (r.reporting, r.metrics[0].value));
            }
            other => panic!("expected an event or rollups, got {other:?}"),
        }
    }
    // The last report (RAL's, round 3) left England's total at 21 + 22 + 23 occupied beds, three providers.
    assert_eq!(nation, Some((3, Some(66.0))));
    // The live picture agrees.
    let snap = server.query().await.get_snapshot(pb::GetSnapshotRequest::default()).await.unwrap().into_inner();
    assert_eq!(snap.cursor, expected.last().unwrap().0);
    assert_eq!(snap.providers.len(), 3);
    let rj7 = snap.providers.iter().find(|p| p.provider == "RJ7").unwrap();
    assert_eq!(num(&rj7.readings["ed.in_department"].value), Some(59.0));
}

/// A filtered subscriber that resumes where the last missed report is another system's gets no event for it, but
/// the totals of every scope it follows as of that report, so its wall is current however the catch-up ends.
///
/// The catch-up ends at the Hub's cursor when the subscriber registers, and the Hub folds a report a moment after
/// it is acknowledged (on a busy machine, several reports later); so each resume here waits until the Hub has
/// folded the last report (an unfiltered subscriber has been sent it). Had it not, that report would come from the
/// Hub's queue as it would live, which `session`'s unit tests cover with the Hub at each place.
#[tokio::test]
async fn a_resumed_filtered_subscriber_ends_its_catch_up_with_current_totals() {
    let server = Server::start("").await;
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    let mut sub = server.subscriber().await;
    let mut hub = sub.subscribe(subscribe_all(300)).await.unwrap().into_inner();
    expect_snapshot(next(&mut hub).await);
    let mut folded = async |cursor: &str| {
        while expect_event(next_non_heartbeat(&mut hub).await).cursor != cursor {}
    };
    let filter = || Some(pb::Filter { systems: vec!["QWE".into()], ..Default::default() });
    let mut stream = sub.subscribe(pb::SubscribeRequest { filter: filter(), ..Default::default() }).await.unwrap();
    let snap = expect_snapshot(next(stream.get_mut()).await);
    drop(stream);
    let rj7 = feed.send(report("RJ7", 0, 1, &[("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", 4.0)])).await;
    let ral = feed.send(report("RAL", 0, 1, &[("beds.cc_adult.open", 30.0), ("beds.cc_adult.occupied", 20.0)])).await;
    folded(&ral.cursor).await;
    let resume = pb::SubscribeRequest { filter: filter(), resume_from: snap.cursor, ..Default::default() };
    let mut stream = sub.subscribe(resume).await.unwrap().into_inner();
    assert_eq!(expect_event(next(&mut stream).await).cursor, rj7.cursor);
    let pb::update::Kind::Rollups(r) = next(&mut stream).await else { panic!("rollups after RAL's report") };
    assert_eq!(r.cursor, ral.cursor);
    let occupied = |code: &str| {
        let scope = r.rollups.iter().find(|s| s.scope.as_ref().is_some_and(|s| s.code == code)).expect(code);
        scope.metrics.iter().find(|m| m.metric == "beds.cc_adult.occupied").and_then(|m| m.value)
    };
    // QWE has RJ7 only; London and England have both.
    assert_eq!((occupied("QWE"), occupied("Y56"), occupied("ENG")), (Some(4.0), Some(24.0), Some(24.0)));
    // And that is the whole catch-up: nothing repeated, no event of RAL's.
    let quiet = pb::SubscribeRequest { heartbeat_seconds: 1, ..resume_request(filter(), &r.cursor, None) };
    let mut again = sub.subscribe(quiet).await.unwrap().into_inner();
    match next(&mut again).await {
        pb::update::Kind::Heartbeat(h) => assert_eq!(h.cursor, ral.cursor),
        other => panic!("expected only a heartbeat after the catch-up, got {other:?}"),
    }

    // With a metric filter too, a catch-up whose last event is the filter's own provider but carries none of its
    // metrics still ends with the totals as of that event.
    let metric = Some(vec!["beds.cc_adult.occupied".to_owned()]);
    let rj7_ed = feed.send(report("RJ7", 0, 2, &[("ed.in_department", 30.0)])).await;
    folded(&rj7_ed.cursor).await;
    let mut stream = sub.subscribe(resume_request(filter(), &ral.cursor, metric)).await.unwrap().into_inner();
    let pb::update::Kind::Rollups(r) = next(&mut stream).await else { panic!("rollups closing the catch-up") };
    assert_eq!(r.cursor, rj7_ed.cursor);
    assert!(r.rollups.iter().all(|s| s.metrics.iter().all(|m| m.metric == "beds.cc_adult.occupied")));
    assert_eq!(r.rollups.len(), 3, "QWE, London and England");
}

fn resume_request(filter: Option<pb::Filter>, from: &str, metrics: Option<Vec<String>>) -> pb::SubscribeRequest {
    let filter = filter.map(|f| pb::Filter { metrics: metrics.unwrap_or_default(), ..f });
    pb::SubscribeRequest { filter, resume_from: from.to_owned(), ..Default::default() }
}

/// A subscriber that disconnects and resumes from its last cursor receives exactly the events it missed; cursors
/// the log cannot serve get an explicit reset and a fresh snapshot.
#[tokio::test]
async fn resume_delivers_exactly_the_missed_events() {
    let server = Server::start("").await;
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    let mut sub = server.subscriber().await;

    let mut stream = sub.subscribe(subscribe_all(1)).await.unwrap().into_inner();
    expect_snapshot(next(&mut stream).await);
    let mut seen = String::new();
    for rev in 1..=2 {
        let ack = feed.send(report("RM1", 0, rev, &[("flow.discharges", f64::from(rev))])).await;
        let e = expect_event(next_non_heartbeat(&mut stream).await);
        assert_eq!(e.cursor, ack.cursor);
        seen = e.cursor;
    }
    drop(stream);

    let mut missed = Vec::new();
    for rev in 3..=5 {
        missed.push(feed.send(report("RM1", 0, rev, &[("flow.discharges", f64::from(rev))])).await.cursor);
    }
    let resume = pb::SubscribeRequest { resume_from: seen.clone(), heartbeat_seconds: 1, ..Default::default() };
    let mut stream = sub.subscribe(resume).await.unwrap().into_inner();
    for cursor in &missed {
        // No snapshot first: straight to the missed events, in order.
        let e = expect_event(next(&mut stream).await);
        assert_eq!(&e.cursor, cursor);
    }
    // Nothing more: the next update is a heartbeat at the last cursor.
    match next(&mut stream).await {
        pb::update::Kind::Heartbeat(h) => assert_eq!(&h.cursor, missed.last().unwrap()),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    // And it continues live.
    let ack = feed.send(report("RM1", 0, 6, &[("flow.discharges", 6.0)])).await;
    assert_eq!(expect_event(next_non_heartbeat(&mut stream).await).cursor, ack.cursor);

    // Cursors that cannot be served: reset and snapshot, never a silent gap.
    let (epoch, pos) = seen.rsplit_once(':').unwrap();
    let cases = [
        (format!("otherepoch:{pos}"), Reason::OtherEpoch),
        ("not a cursor".to_owned(), Reason::OtherEpoch),
        (format!("{epoch}:999999-0"), Reason::CursorAhead),
    ];
    for (cursor, reason) in cases {
        let req = pb::SubscribeRequest { resume_from: cursor.clone(), heartbeat_seconds: 1, ..Default::default() };
        let mut stream = sub.subscribe(req).await.unwrap().into_inner();
        match next(&mut stream).await {
            pb::update::Kind::Reset(r) => assert_eq!(r.reason(), reason, "{cursor}"),
            other => panic!("{cursor}: expected a reset, got {other:?}"),
        }
        let snap = expect_snapshot(next(&mut stream).await);
        assert_eq!(snap.cursor, ack.cursor);
        assert_eq!(num(&snap.providers[0].readings["flow.discharges"].value), Some(6.0));
    }
}

/// The same provider, period and revision twice: one accepted, one duplicate, and only one event.
#[tokio::test]
async fn duplicate_reports_make_one_event() {
    let server = Server::start("").await;
    let mut sub = server.subscriber().await;
    let mut stream = sub.subscribe(subscribe_all(1)).await.unwrap().into_inner();
    expect_snapshot(next(&mut stream).await);
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    let r = report("RGT", 1, 1, &[("ed.in_department", 40.0)]);
    let first = feed.send(r.clone()).await;
    let second = feed.send(r.clone()).await;
    let third = client.submit(r).await.unwrap().into_inner();
    assert_eq!(first.outcome(), Outcome::Accepted);
    for dup in [&second, &third] {
        assert_eq!(dup.outcome(), Outcome::Duplicate, "{dup:?}");
        assert_eq!(dup.cursor, first.cursor, "a duplicate names the original event");
    }
    assert_eq!(expect_event(next_non_heartbeat(&mut stream).await).cursor, first.cursor);
    match next(&mut stream).await {
        pb::update::Kind::Heartbeat(h) => assert_eq!(h.cursor, first.cursor, "no second event"),
        other => panic!("expected only a heartbeat after the one event, got {other:?}"),
    }
}

/// Every validation rule: the bad report is refused with INVALID_ARGUMENT whose BadRequest names the field and
/// the rule, and the live picture does not change. On the stream, a rejected report is acked as such and the
/// stream carries on.
#[tokio::test]
async fn every_validation_rule_is_reported_and_changes_nothing() {
    let server = Server::start("").await;
    let mut client = server.provider().await;
    let mut query = server.query().await;
    let good = || report("RJ7", 0, 1, &[("beds.cc_adult.open", 28.0), ("beds.cc_adult.occupied", 25.0)]);
    let ack = client.submit(good()).await.unwrap().into_inner();
    assert_eq!(ack.outcome(), Outcome::Accepted);
    let before = server.snapshot_at(&ack.cursor).await;

    let now = sitrep_core::Timestamp::now();
    type Edit = Box<dyn Fn(&mut pb::StatusReport)>;
    let set = |code: &'static str, v: pb::MetricValue| -> Edit {
        Box::new(move |r| drop(r.values.insert(code.into(), v.clone())))
    };
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        ("unknown provider", Box::new(|r| r.provider = "XYZ".into()), "provider", "KNOWN_PROVIDER"),
        ("unknown site", Box::new(|r| r.site = "RGT01".into()), "site", "KNOWN_SITE"),
        ("unknown metric", set("beds.unicorn.open", number(1.0)), "values[beds.unicorn.open]", "KNOWN_METRIC"),
        (
            "wrong unit",
            set("ambulance.handover_mean_minutes", pb::MetricValue { unit: "hours".into(), ..number(1.0) }),
            "values[ambulance.handover_mean_minutes]",
            "UNIT_MATCHES",
        ),
        ("negative count", set("ed.in_department", number(-4.0)), "values[ed.in_department]", "NON_NEGATIVE"),
        (
            "occupied above open",
            set("beds.cc_adult.occupied", number(31.0)),
            "values[beds.cc_adult.occupied]",
            "AT_MOST",
        ),
        ("non-integer count", set("ed.in_department", number(4.5)), "values[ed.in_department]", "INTEGER"),
        (
            "period not aligned",
            Box::new(move |r| r.period = Some(ts(now.hour_start().add_millis(90_000)))),
            "period",
            "HOUR_ALIGNED",
        ),
        (
            "observed_at in the future",
            Box::new(move |r| r.observed_at = Some(ts(now.add_millis(3_600_000)))),
            "observed_at",
            "NOT_IN_FUTURE",
        ),
        (
            "too many values",
            Box::new(|r| {
                for i in 0..250 {
                    r.values.insert(format!("x{i}"), number(1.0));
                }
            }),
            "values",
            "MAX_VALUES",
        ),
        ("oversized narrative", Box::new(|r| r.narrative = "n".repeat(2001)), "narrative", "MAX_LENGTH"),
        ("revision over the limit", Box::new(|r| r.revision = 4_000_000_001), "revision", "MAX"),
        ("OPEL out of range", Box::new(|r| r.opel_level = Some(7)), "opel_level", "RANGE"),
        (
            "a period just off the hour",
            Box::new(|r| r.period.as_mut().unwrap().nanos = 999_999),
            "period",
            "HOUR_ALIGNED",
        ),
        (
            "nanos out of range",
            Box::new(|r| r.observed_at.as_mut().unwrap().nanos = -1),
            "observed_at",
            "VALID_TIMESTAMP",
        ),
        (
            "a typo of beds",
            Box::new(|r| {
                r.values.insert("beds.cc_adult.open".into(), number(1e20));
            }),
            "values[beds.cc_adult.open]",
            "PLAUSIBLE",
        ),
    ];
    for (name, edit, field, rule) in &cases {
        let mut bad = good();
        bad.revision = 2;
        edit(&mut bad);
        let status = client.submit(bad).await.expect_err(name);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}: {status:?}");
        let details = status.get_details_bad_request().unwrap_or_else(|| panic!("{name}: no BadRequest details"));
        let hit = details.field_violations.iter().find(|v| v.field == *field && v.reason == *rule);
        let hit = hit.unwrap_or_else(|| panic!("{name}: expected {field}/{rule} in {:?}", details.field_violations));
        assert!(!hit.description.is_empty());
    }
    // A message over the size limit (1 MiB by default) is refused before it is even decoded.
    let mut huge = good();
    huge.narrative = "x".repeat(2 * 1024 * 1024);
    let status = client.submit(huge).await.expect_err("oversized message");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("limits.max_message_bytes"), "{status:?}");
    let after = query.get_snapshot(pb::GetSnapshotRequest::default()).await.unwrap().into_inner();
    assert_eq!(after, before, "no rejected report changed the live picture");

    // On the stream: rejected with violations, and the stream carries on.
    let mut feed = Feed::open(&mut client).await;
    let mut bad = good();
    bad.revision = 2;
    bad.values.insert("beds.cc_adult.occupied".into(), number(31.0));
    let ack = feed.send(bad).await;
    assert_eq!(ack.outcome(), Outcome::Rejected);
    assert_eq!(ack.violations[0].field, "values[beds.cc_adult.occupied]");
    assert_eq!(ack.violations[0].rule, "at_most");
    assert_eq!(
        ack.violations[0].description,
        "report for RJ7: beds.cc_adult.occupied = 31 exceeds beds.cc_adult.open = 28"
    );
    let mut next_good = good();
    next_good.revision = 2;
    assert_eq!(feed.send(next_good).await.outcome(), Outcome::Accepted);
}

/// A subscriber that never reads does not hold up ingest or another subscriber, and when it reads again it is
/// told it was reset and gets a fresh snapshot.
#[tokio::test]
async fn slow_subscriber_is_resynced_without_delaying_anyone() {
    let server =
        Server::start("[subscribers]\nqueue_capacity = 8\n[limits]\nreports_per_provider_per_minute = 0\n").await;
    // Separate connections, so HTTP/2 flow control on the slow one cannot touch the others; small windows so the
    // slow one's transport buffers fill after a few dozen events rather than megabytes.
    let slow_channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut slow_client = sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient::new(slow_channel);
    let mut slow = slow_client.subscribe(subscribe_all(300)).await.unwrap().into_inner();
    let mut fast = server.updates(300).await;
    expect_snapshot(next(&mut fast).await);

    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    // Events of ~2 KB: 1200 of them overflow the transport's buffers (the server's per-stream send buffer is
    // 400 KB) and then the queue of 8.
    let narrative = "Ward 7 closed to admissions. ".repeat(68);
    let mut last = String::new();
    for rev in 1..=1200u32 {
        let mut r = report("RJ7", 0, rev, &[("flow.discharges", f64::from(rev))]);
        r.narrative = narrative.clone();
        let ack = feed.send(r).await;
        assert_eq!(ack.outcome(), Outcome::Accepted);
        // The fast subscriber gets each event while the slow one sits unread.
        let e = expect_event(next_non_heartbeat(&mut fast).await);
        assert_eq!(e.cursor, ack.cursor);
        last = ack.cursor;
    }
    // Now the slow subscriber reads: some early events, then a reset and a snapshot as of the latest event.
    assert!(matches!(next(&mut slow).await, pb::update::Kind::Snapshot(_)));
    let mut events_before_reset = 0;
    loop {
        match next(&mut slow).await {
            pb::update::Kind::Event(_) => events_before_reset += 1,
            pb::update::Kind::Reset(r) => {
                assert_eq!(r.reason(), Reason::SlowSubscriber);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(events_before_reset < 1200, "the slow subscriber was never reset");
    }
    let snap = expect_snapshot(next(&mut slow).await);
    assert_eq!(snap.cursor, last);
    assert_eq!(num(&snap.providers[0].readings["flow.discharges"].value), Some(1200.0));
    // It is live again.
    let ack = feed.send(report("RJ7", 0, 1201, &[("flow.discharges", 1201.0)])).await;
    assert_eq!(expect_event(next_non_heartbeat(&mut slow).await).cursor, ack.cursor);
}

/// Health checking answers SERVING for the server and each service; reflection lists the four services.
#[tokio::test]
async fn health_and_reflection() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = Server::start("").await;
    let mut health = HealthClient::new(server.channel().await);
    let services = [
        "",
        "sitrep.v1.ProviderService",
        "sitrep.v1.SubscriberService",
        "sitrep.v1.QueryService",
        "sitrep.v1.AidService",
    ];
    for service in services {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("{response:?}") };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in services.iter().skip(1).chain(&["grpc.health.v1.Health"]) {
        assert!(names.contains(expected), "{expected} missing from {names:?}");
    }
    // The descriptors are served too, so generic clients can build requests.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("sitrep.v1.ProviderService".into())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().unwrap();
    assert!(
        matches!(response.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty())
    );
}

/// Query: the directory and the catalogue; filters with unknown codes are refused, naming the field.
#[tokio::test]
async fn query_directory_catalogue_and_bad_filters() {
    let server = Server::start("").await;
    let mut query = server.query().await;
    let dir = query.get_directory(pb::GetDirectoryRequest {}).await.unwrap().into_inner();
    assert_eq!(dir.nation.unwrap().code, "ENG");
    assert_eq!((dir.regions.len(), dir.systems.len()), (2, 4));
    assert!(dir.providers.len() >= 20);
    let cat = query.get_catalogue(pb::GetCatalogueRequest {}).await.unwrap().into_inner();
    assert_eq!(cat.profile, "nhs-england");
    let occupied = cat.metrics.iter().find(|m| m.code == "beds.cc_adult.occupied").unwrap();
    assert_eq!((occupied.kind.as_str(), occupied.at_most.as_str()), ("count", "beds.cc_adult.open"));

    let bad = pb::Filter { systems: vec!["QWE".into(), "NOPE".into()], ..Default::default() };
    let status = query.get_snapshot(pb::GetSnapshotRequest { filter: Some(bad.clone()) }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "filter.systems[1]");
    let status = server
        .subscriber()
        .await
        .subscribe(pb::SubscribeRequest { filter: Some(bad), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let metrics = pb::Filter { metrics: vec!["beds.unicorn".into()], ..Default::default() };
    let status = query.get_snapshot(pb::GetSnapshotRequest { filter: Some(metrics) }).await.unwrap_err();
    assert_eq!(status.get_details_bad_request().unwrap().field_violations[0].field, "filter.metrics[0]");
}

/// SIGTERM: subscribers are told the server is going away, and the process exits cleanly.
#[tokio::test]
async fn sigterm_drains_streams_and_exits_cleanly() {
    let mut server = Server::start("").await;
    let mut stream = server.updates(300).await;
    expect_snapshot(next(&mut stream).await);
    let pid = server.child.id().unwrap();
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let end = tokio::time::timeout(DEADLINE, stream.message()).await.expect("stream ends in time");
    match end {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(u)) => panic!("unexpected update {u:?}"),
    }
    let exit = tokio::time::timeout(DEADLINE, server.child.wait()).await.expect("exits in time").unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// The `push` command sends a JSON report and prints the ack; a bad one exits 2 listing the violations.
#[tokio::test]
async fn push_command_prints_the_ack() {
    let server = Server::start("").await;
    let dir = temp_dir("push");
    let good = dir.path().join("good.json");
    std::fs::write(&good, r#"{"provider":"RJ7","values":{"beds.cc_adult.open":28,"beds.cc_adult.occupied":25,"ed.over_12h":{"absent":"not_available"}},"opel_level":3}"#).unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"provider":"RJ7","revision":2,"values":{"beds.cc_adult.open":28,"beds.cc_adult.occupied":31}}"#,
    )
    .unwrap();
    let run = |file: std::path::PathBuf| {
        let url = server.url.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
                .args(["push", "--server", &url])
                .arg(file)
                .output()
                .await
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let (code, out) = run(good).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("accepted: RJ7"), "{out}");
    let (code, out) = run(bad).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("values[beds.cc_adult.occupied] (at_most): report for RJ7: beds.cc_adult.occupied = 31 exceeds beds.cc_adult.open = 28"), "{out}");
    let snap = server.snapshot_when("RJ7's report", |s| !s.providers.is_empty()).await;
    assert_eq!(snap.providers[0].readings.len(), 4, "three values and the declared OPEL level");
}

/// `serve --demo` runs simulated providers inside the aggregator, and `sitrep watch` (a separate process) prints
/// their changes, filtered to one system.
#[tokio::test]
async fn demo_and_watch_show_live_changes() {
    use tokio::io::AsyncBufReadExt;

    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--demo-seconds-per-hour", "0.2"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = listening(&mut demo).await;

    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["watch", "--quiet", "--system", "QWE", "--server", &format!("http://{addr}")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut line =
        async || tokio::time::timeout(DEADLINE, lines.next_line()).await.expect("a line in time").unwrap().unwrap();
    assert!(line().await.starts_with("snapshot: "));
    let qwe = ["RJ7", "RVR", "RAX", "RJ6", "RQY"];
    let (mut events, mut rollups, mut totals) = (0, 0, 0);
    while events < 10 {
        let l = line().await;
        if let Some(detail) = l.strip_prefix("  ") {
            // The snapshot's scopes and providers, and each event's derived picture, are indented.
            rollups += usize::from(detail.trim_start().starts_with("system QWE (South West London ICB)"));
            continue;
        }
        // Reports of other systems reach a filtered subscriber only as the London and England totals they move.
        if l.starts_with("totals moved by providers outside the filter") {
            totals += 1;
            continue;
        }
        let provider = l.split_whitespace().nth(1).unwrap_or_default();
        assert!(qwe.contains(&provider), "only system QWE's providers: {l}");
        assert!(l.contains("→") || l.contains("no change"), "{l}");
        events += 1;
    }
    assert!(rollups >= 10, "each event shows its system's rollup ({rollups} seen)");
    assert!(totals >= 1, "the other systems' reports move London's and England's totals");
}

/// `sitrep history` prints a provider's revisions, or a metric across providers, from the aggregator's history.
#[tokio::test]
async fn history_command_prints_revisions_and_series() {
    let server = Server::start("").await;
    let mut client = server.provider().await;
    for (who, hours_ago, revision, occupied) in
        [("RJ7", 1, 1, 20.0), ("RJ7", 1, 2, 21.0), ("RJ7", 0, 1, 22.0), ("RVR", 0, 1, 9.0)]
    {
        let r = report(who, hours_ago, revision, &[("beds.cc_adult.open", 30.0), ("beds.cc_adult.occupied", occupied)]);
        assert_eq!(client.submit(r).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    }
    let run = |args: Vec<&'static str>| {
        let url = server.url.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
                .arg("history")
                .args(args)
                .args(["--server", &url])
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let text = run(vec!["--provider", "RJ7", "--metric", "beds.cc_adult.occupied"]).await;
    // Each revision's line, then (indented) who sent it.
    assert!(text.contains("    sent by anonymous (anonymous) from 127.0.0.1:"), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    assert!(lines[0].starts_with("RJ7: 3 revision(s)"), "{text}");
    assert!(lines[1].ends_with(" r1 beds.cc_adult.occupied=20"), "{text}");
    assert!(lines[2].ends_with(" r2 beds.cc_adult.occupied=21"), "{text}");
    assert!(lines[3].ends_with(" r1 beds.cc_adult.occupied=22"), "{text}");
    let text = run(vec!["--metric", "beds.cc_adult.occupied", "--system", "QWE"]).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("beds.cc_adult.occupied: 2 provider(s)"), "{text}");
    assert!(lines[1].starts_with("RJ7") && lines[1].contains(":00=21 ") && lines[1].ends_with(":00=22"), "{text}");
    assert!(lines[2].starts_with("RVR") && lines[2].ends_with(":00=9"), "{text}");
}

/// `sitrep push --saner` sends a FHIR SANER MeasureReport: mapped counts arrive, absent counts stay absent,
/// unmapped populations are named.
#[tokio::test]
async fn push_saner_measure_report() {
    let server = Server::start("").await;
    let now = sitrep_core::Timestamp::now();
    let day = &now.to_string()[..10];
    let text = format!(
        r#"{{"resourceType": "MeasureReport", "id": "e2e", "status": "complete", "type": "summary",
        "measure": "http://hl7.org/fhir/us/saner/Measure/CDCPatientImpactAndHospitalCapacity",
        "date": "{now}", "period": {{"start": "{day}", "end": "{day}"}},
        "group": [{{"population": [
          {{"code": {{"coding": [{{"code": "numICUBeds"}}]}}, "count": 30}},
          {{"code": {{"coding": [{{"code": "numICUBedsOcc"}}]}}}},
          {{"code": {{"coding": [{{"code": "numC19Died"}}]}}, "count": 2}}]}}]}}"#
    );
    let dir = temp_dir("saner");
    let path = dir.path().join("measure-report.json");
    std::fs::write(&path, text).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["push", "--saner", "--provider", "RGT", "--server", &server.url])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("no sitrep metric for SANER population(s) numC19Died"), "{stdout}");
    assert!(stdout.contains("accepted: RGT"), "{stdout}");
    let snap = server.snapshot_when("RGT's report", |s| !s.providers.is_empty()).await;
    let rgt = &snap.providers[0];
    assert_eq!(num(&rgt.readings["beds.cc_adult.open"].value), Some(30.0));
    let occupied = rgt.readings["beds.cc_adult.occupied"].value.clone().unwrap();
    assert_eq!(
        occupied.kind,
        Some(pb::metric_value::Kind::Absent(pb::AbsentReason::NotAvailable as i32)),
        "absent, not zero"
    );
}

/// A snapshot of more providers than one part holds comes in parts over gRPC: the same cursor on every part, the
/// rollups with the first, `more` on all but the last, every provider once and in code order; the encodings the Hub
/// keeps (every metric) and those made for a metric filter agree; and the stream goes on with the next event.
#[tokio::test]
async fn a_large_snapshot_comes_in_parts_with_the_rollups_first() {
    const PROVIDERS: usize = 600;
    let mut directory =
        String::from("[nation]\ncode = \"ENG\"\nname = \"England\"\n[[region]]\ncode = \"R1\"\nname = \"Region\"\n");
    for s in 1..=3 {
        directory.push_str(&format!("[[system]]\ncode = \"S{s}\"\nname = \"System {s}\"\nregion = \"R1\"\n"));
    }
    for p in 0..PROVIDERS {
        directory.push_str(&format!(
            "[[provider]]\ncode = \"P{p:03}\"\nname = \"Provider {p}\"\nsystem = \"S{}\"\nkind = \"acute\"\n",
            p % 3 + 1
        ));
    }
    let server = Server::start_with_directory(&directory).await;
    let mut client = server.provider().await;
    let mut feed = Feed::open(&mut client).await;
    for p in 0..PROVIDERS {
        let values = [("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", (p % 20) as f64)];
        let ack = feed.send(report(&format!("P{p:03}"), 0, 1, &values)).await;
        assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
    }

    let collect = |request: pb::SubscribeRequest| {
        let server = &server;
        async move {
            let mut stream = server.subscriber().await.subscribe(request).await.unwrap().into_inner();
            let mut parts = Vec::new();
            loop {
                let part = expect_snapshot(next_non_heartbeat(&mut stream).await);
                let more = part.more;
                parts.push(part);
                if !more {
                    return (parts, stream);
                }
            }
        }
    };
    let occupied = "beds.cc_adult.occupied".to_string();
    let metric_filter = pb::Filter { metrics: vec![occupied.clone()], ..Default::default() };
    let (all, mut stream) = collect(subscribe_all(30)).await;
    let (filtered, _) =
        collect(pb::SubscribeRequest { filter: Some(metric_filter), heartbeat_seconds: 30, ..Default::default() })
            .await;
    for parts in [&all, &filtered] {
        assert_eq!(parts.iter().map(|p| p.providers.len()).collect::<Vec<_>>(), [250, 250, 100]);
        assert!(parts.iter().all(|p| p.cursor == parts[0].cursor), "one cursor for the whole snapshot");
        assert_eq!(parts[0].rollups.len(), 5, "three systems, the region and the nation, with the first part");
        assert!(parts[1..].iter().all(|p| p.rollups.is_empty()));
        let codes: Vec<&str> = parts.iter().flat_map(|p| &p.providers).map(|s| s.provider.as_str()).collect();
        let expected: Vec<String> = (0..PROVIDERS).map(|p| format!("P{p:03}")).collect();
        assert_eq!(codes, expected, "every provider once, in code order");
    }
    // The same providers' occupied beds through the Hub's kept encodings and through a filter's own.
    let occupied_of = |parts: &[pb::Snapshot]| -> Vec<Option<f64>> {
        parts
            .iter()
            .flat_map(|p| &p.providers)
            .map(|s| num(&s.readings.get(&occupied).and_then(|r| r.value.clone())))
            .collect()
    };
    assert_eq!(occupied_of(&all), occupied_of(&filtered));
    assert!(filtered.iter().flat_map(|p| &p.providers).all(|s| s.readings.len() == 1), "only the filter's metric");
    let total: f64 = all[0]
        .rollups
        .iter()
        .find(|r| r.scope.as_ref().unwrap().level == "nation")
        .unwrap()
        .metrics
        .iter()
        .find(|m| m.metric == occupied)
        .and_then(|m| m.value)
        .unwrap();
    assert_eq!(total, (0..PROVIDERS).map(|p| (p % 20) as f64).sum::<f64>(), "the nation's total, exactly");

    // After the snapshot, the next event, continuing from its cursor.
    let ack = feed.send(report("P007", 0, 2, &[("beds.cc_adult.occupied", 19.0)])).await;
    assert_eq!(ack.outcome(), Outcome::Accepted);
    let event = expect_event(next_non_heartbeat(&mut stream).await);
    assert_eq!((event.provider.as_str(), changes(&event)), ("P007", vec![(occupied.clone(), Some(7.0), 19.0)]));
}

/// A directory's places (latitude and longitude, optional, of providers and sites) reach readers of the directory
/// over gRPC and JSON; what has none carries none.
#[tokio::test]
async fn the_directory_gives_places() {
    let directory = "[nation]\ncode = \"ENG\"\nname = \"England\"\n[[region]]\ncode = \"R1\"\nname = \"Region\"\n\
        [[system]]\ncode = \"S1\"\nname = \"System\"\nregion = \"R1\"\n\
        [[provider]]\ncode = \"P1\"\nname = \"One\"\nsystem = \"S1\"\nkind = \"acute\"\nlatitude = 51.4975\nlongitude = -0.1357\n\
        [[provider.sites]]\ncode = \"P1A\"\nname = \"One A\"\nlatitude = 51.5\nlongitude = -0.12\n\
        [[provider.sites]]\ncode = \"P1B\"\nname = \"One B\"\n\
        [[provider]]\ncode = \"P2\"\nname = \"Two\"\nsystem = \"S1\"\nkind = \"acute\"\n";
    let server = Server::start_with_directory(directory).await;
    let dir = server.query().await.get_directory(pb::GetDirectoryRequest {}).await.unwrap().into_inner();
    let place = |l: &Option<pb::Location>| l.as_ref().map(|l| (l.latitude, l.longitude));
    let p1 = dir.providers.iter().find(|p| p.code == "P1").unwrap();
    assert_eq!(place(&p1.location), Some((51.4975, -0.1357)));
    assert_eq!(p1.sites.iter().map(|s| place(&s.location)).collect::<Vec<_>>(), [Some((51.5, -0.12)), None]);
    assert_eq!(place(&dir.providers.iter().find(|p| p.code == "P2").unwrap().location), None);

    let json = crate::http::get(&server.url, "/api/v1/directory").await.json();
    assert_eq!(json["providers"][0]["location"], serde_json::json!({"latitude": 51.4975, "longitude": -0.1357}));
    assert_eq!(json["providers"][0]["sites"][0]["location"]["latitude"], 51.5);
    assert!(json["providers"][0]["sites"][1].get("location").is_none());
    assert!(json["providers"][1].get("location").is_none());
}
