//! End-to-end tests of the derived picture: rollups, RAG and alerts carried inside events, and staleness raised
//! once across replicas sharing one Redis.

use std::time::Duration;

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;

use crate::support::*;

fn rollup<'a>(e: &'a pb::Event, level: &str) -> &'a pb::ScopeRollup {
    e.rollups
        .iter()
        .find(|r| r.scope.as_ref().is_some_and(|s| s.level == level))
        .unwrap_or_else(|| panic!("no {level} rollup in {e:?}"))
}

fn rollup_value(r: &pb::ScopeRollup, metric: &str) -> (Option<f64>, pb::Rag) {
    let v = r.metrics.iter().find(|m| m.metric == metric).unwrap_or_else(|| panic!("no {metric} in {r:?}"));
    (v.value, v.rag())
}

/// One report takes a provider's adult critical care into red: the one event its subscriber receives carries the
/// provider's new figures and ratings, the system's, region's and nation's new rollups, and the raised alert.
#[tokio::test]
async fn one_report_into_red_carries_figures_rollups_and_the_alert() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    // St George's (RJ7) and Epsom and St Helier (RVR) are both in South West London (QWE), in London (Y56).
    for (p, open, occupied) in [("RJ7", 40.0, 30.0), ("RVR", 20.0, 10.0)] {
        let r = report(p, 0, 1, &[("beds.cc_adult.open", open), ("beds.cc_adult.occupied", occupied)]);
        assert_eq!(provider.submit(r).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    }
    let mut watch = server.updates(60).await;
    let snap = expect_snapshot(next(&mut watch).await);
    let qwe = snap.rollups.iter().find(|r| r.scope.as_ref().is_some_and(|s| s.code == "QWE")).expect("QWE rollup");
    assert_eq!(rollup_value(qwe, "beds.cc_adult.occupancy"), (Some(100.0 * 40.0 / 60.0), pb::Rag::Green));
    assert_eq!((qwe.providers, qwe.reporting, qwe.stale), (5, 2, 0));

    let ack = provider.submit(report("RJ7", 0, 2, &[("beds.cc_adult.occupied", 39.0)])).await.unwrap().into_inner();
    let e = expect_event(next_non_heartbeat(&mut watch).await);
    assert_eq!(e.cursor, ack.cursor);
    assert_eq!(changes(&e), vec![("beds.cc_adult.occupied".to_string(), Some(30.0), 39.0)]);
    let figure = |m: &str| e.figures.iter().find(|f| f.metric == m).map(|f| (f.value, f.rag()));
    assert_eq!(figure("beds.cc_adult.occupancy"), Some((Some(97.5), pb::Rag::Red)));
    assert_eq!(figure("beds.cc_adult.free"), Some((Some(1.0), pb::Rag::Amber)));
    assert_eq!(figure("beds.cc_adult.occupied"), Some((Some(39.0), pb::Rag::None)));
    // The system and region now hold 49 of 60 beds occupied: their occupancy recomputed from the sums.
    for level in ["system", "region", "nation"] {
        let r = rollup(&e, level);
        assert_eq!(rollup_value(r, "beds.cc_adult.occupied"), (Some(49.0), pb::Rag::None), "{level}");
        assert_eq!(rollup_value(r, "beds.cc_adult.occupancy"), (Some(100.0 * 49.0 / 60.0), pb::Rag::Green), "{level}");
        assert_eq!(rollup_value(r, "beds.cc_adult.free"), (Some(11.0), pb::Rag::Green), "{level}");
    }
    assert_eq!(rollup(&e, "system").scope.as_ref().unwrap().name, "South West London ICB");
    assert_eq!(rollup(&e, "region").scope.as_ref().unwrap().code, "Y56");
    assert_eq!(e.raised.len(), 1, "{:?}", e.raised);
    let alert = &e.raised[0];
    assert_eq!(alert.kind(), pb::alert::Kind::Threshold);
    assert_eq!(alert.severity(), pb::alert::Severity::Critical);
    assert_eq!(alert.key, "threshold:RJ7:beds.cc_adult.occupancy");
    assert_eq!(alert.message, "RJ7: Adult critical care occupancy is 97.5%, in red (red at 95% or more)");

    // The alert is open until the figure leaves red, and queryable meanwhile.
    let mut query = server.query().await;
    let open = query.get_alerts(pb::GetAlertsRequest::default()).await.unwrap().into_inner();
    assert_eq!(open.alerts.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), [alert.key.as_str()]);
    provider.submit(report("RJ7", 0, 3, &[("beds.cc_adult.occupied", 33.0)])).await.unwrap();
    let e = expect_event(next_non_heartbeat(&mut watch).await);
    assert_eq!(e.cleared.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), [alert.key.as_str()]);
    assert!(query.get_alerts(pb::GetAlertsRequest::default()).await.unwrap().into_inner().alerts.is_empty());
}

/// Every event a subscription delivers until `until` (heartbeats, sent every second, keep it moving).
async fn events_until(stream: &mut tonic::Streaming<pb::Update>, until: std::time::Instant) -> Vec<pb::Event> {
    let mut events = Vec::new();
    while std::time::Instant::now() < until {
        match next(stream).await {
            pb::update::Kind::Heartbeat(_) => {}
            pb::update::Kind::Event(e) => events.push(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    events
}

/// Two aggregators share one Redis. A provider stops reporting: a subscriber of each receives exactly one stale
/// alert event; the provider reports again and the alert clears for both.
#[tokio::test]
async fn two_replicas_raise_one_stale_alert_and_clear_it() {
    let redis = RedisProcess::start().expect("redis-server");
    // A provider that last reported for the previous hour is stale 3 s from now; each replica looks ten times a
    // second.
    let config = stale_after_previous_hour(3);
    let a = Server::start_with(&config, &["--redis", &redis.url()]).await;
    let b = Server::start_with(&config, &["--redis", &redis.url()]).await;
    let mut on_a = a.updates(1).await;
    let mut on_b = b.updates(1).await;
    expect_snapshot(next(&mut on_a).await);
    expect_snapshot(next(&mut on_b).await);

    let ack = a.provider().await.submit(report("RJ7", 1, 1, &[("ed.in_department", 40.0)])).await.unwrap();
    let reported_at = std::time::Instant::now();
    let ack = ack.into_inner();
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(expect_event(next_non_heartbeat(stream).await).cursor, ack.cursor);
    }

    // Collect every event each subscriber gets over the next six seconds (the alert is due after three).
    let until = reported_at + Duration::from_secs(6);
    let (events_a, events_b) = tokio::join!(events_until(&mut on_a, until), events_until(&mut on_b, until));
    let stale_events = [events_a, events_b];
    for (events, replica) in stale_events.iter().zip(["a", "b"]) {
        assert_eq!(events.len(), 1, "subscriber of replica {replica}: exactly one event, got {events:?}");
        let e = &events[0];
        assert_eq!((e.kind(), e.provider.as_str()), (pb::event::Kind::Stale, "RJ7"));
        assert_eq!(e.raised.len(), 1);
        assert_eq!(e.raised[0].key, "stale:RJ7");
        assert!(
            e.raised[0].message.starts_with("RJ7: its latest report is for the hour from"),
            "{}",
            e.raised[0].message
        );
        assert_eq!(e.rollups.iter().map(|r| r.stale).collect::<Vec<_>>(), [1, 1, 1]);
    }
    assert_eq!(stale_events[0][0].cursor, stale_events[1][0].cursor, "the same event, from the one log");
    let alerts = b.query().await.get_alerts(pb::GetAlertsRequest::default()).await.unwrap().into_inner().alerts;
    assert_eq!(alerts.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["stale:RJ7"]);
    let snap = a.query().await.get_snapshot(pb::GetSnapshotRequest::default()).await.unwrap().into_inner();
    assert!(snap.providers.iter().find(|p| p.provider == "RJ7").expect("RJ7").stale);

    // It reports again (through the other replica): the alert clears for both subscribers.
    let back = b.provider().await.submit(report("RJ7", 0, 2, &[("ed.in_department", 41.0)])).await.unwrap();
    let back = back.into_inner();
    for stream in [&mut on_a, &mut on_b] {
        let e = expect_event(next_non_heartbeat(stream).await);
        assert_eq!(e.cursor, back.cursor);
        assert_eq!(e.cleared.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["stale:RJ7"]);
        assert_eq!(e.rollups.iter().map(|r| r.stale).collect::<Vec<_>>(), [0, 0, 0]);
    }
    let alerts = a.query().await.get_alerts(pb::GetAlertsRequest::default()).await.unwrap().into_inner().alerts;
    assert!(alerts.is_empty(), "{alerts:?}");
}

/// The hour-by-hour view of a provider and of its system: the latest revision of each hour with its corrections,
/// the change since the previous hour, ratios recomputed from the hour's sums, and which providers reported.
#[tokio::test]
async fn hour_by_hour_for_a_provider_and_its_system() {
    let server = Server::start("").await;
    let mut provider = server.provider().await;
    let now = sitrep_core::Timestamp::now();
    let at = |p: &str, hours_ago: i64, revision: u32, values: &[(&str, f64)]| {
        let mut r = report(p, 0, revision, values);
        r.period = Some(ts(now.hour_start().add_hours(-hours_ago)));
        r
    };
    let reports = [
        at("RJ7", 2, 1, &[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 10.0)]),
        at("RJ7", 1, 1, &[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 15.0)]),
        // A correction that only restates occupied beds: the hour keeps its open beds.
        at("RJ7", 1, 2, &[("beds.cc_adult.occupied", 16.0)]),
        at("RVR", 1, 1, &[("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", 9.0)]),
        at("RJ7", 0, 1, &[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 18.0)]),
    ];
    for r in reports {
        assert_eq!(provider.submit(r).await.unwrap().into_inner().outcome(), Outcome::Accepted);
    }
    let mut query = server.query().await;
    let to = Some(ts(now.hour_start()));
    let hourly = |provider: &str, scope: &str, metric: &str| pb::GetHourlyRequest {
        metric: metric.into(),
        provider: provider.into(),
        scope: scope.into(),
        hours: 3,
        to,
    };
    let rj7 = query.get_hourly(hourly("RJ7", "", "beds.cc_adult.occupied")).await.unwrap().into_inner();
    let got: Vec<_> = rj7.points.iter().map(|p| (p.value, p.change, p.revision, p.corrections)).collect();
    assert_eq!(
        got,
        [(Some(10.0), None, Some(1), 0), (Some(16.0), Some(6.0), Some(2), 1), (Some(18.0), Some(2.0), Some(1), 0)]
    );

    let qwe = query.get_hourly(hourly("", "system:QWE", "beds.cc_adult.occupancy")).await.unwrap().into_inner();
    assert_eq!(qwe.scope.as_ref().unwrap().name, "South West London ICB");
    let got: Vec<_> = qwe
        .points
        .iter()
        .map(|p| {
            (
                p.value.map(|v| (v * 100.0).round() / 100.0),
                p.providers_reported.clone(),
                p.providers_expected,
                p.corrections,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some(50.0), vec!["RJ7".to_string()], 5, 0),
            (Some(83.33), vec!["RJ7".to_string(), "RVR".to_string()], 5, 1),
            (Some(90.0), vec!["RJ7".to_string()], 5, 0),
        ]
    );
    assert_eq!(qwe.points[1].completeness, 0.4);
    assert!((qwe.points[1].change.unwrap() - (100.0 * 25.0 / 30.0 - 50.0)).abs() < 1e-9);

    // The JSON API answers the same view.
    let to_ms = now.hour_start().millis();
    let path = format!("/api/v1/hourly?scope=system:QWE&metric=beds.cc_adult.occupancy&hours=3&to={to_ms}");
    let json = crate::http::get(&server.url, &path).await.json();
    assert_eq!(json["scope"], "system:QWE");
    let points = json["points"].as_array().expect("points");
    assert_eq!(points.len(), qwe.points.len());
    for (j, p) in points.iter().zip(&qwe.points) {
        assert_eq!(j["value"].as_f64().map(|v| (v * 100.0).round()), p.value.map(|v| (v * 100.0).round()), "{j}");
        assert_eq!(j["providers_reported"], serde_json::json!(p.providers_reported));
        assert_eq!(j["providers_expected"], p.providers_expected);
    }
    let path = format!("/api/v1/hourly?provider=RJ7&metric=beds.cc_adult.occupied&hours=3&to={to_ms}");
    let json = crate::http::get(&server.url, &path).await.json();
    let got: Vec<_> =
        json["points"].as_array().unwrap().iter().map(|p| (p["value"].as_f64(), p["revision"].as_u64())).collect();
    assert_eq!(got, [(Some(10.0), Some(1)), (Some(16.0), Some(2)), (Some(18.0), Some(1))]);
    let bad =
        crate::http::get(&server.url, "/api/v1/hourly?provider=RJ7&scope=system:QWE&metric=beds.cc_adult.occupied")
            .await;
    assert_eq!((bad.status, bad.json()["violations"][0]["rule"].as_str()), (400, Some("one_of")));

    // Bad requests name the field and the rule.
    let err = query.get_hourly(hourly("RJ7", "system:QWE", "beds.cc_adult.occupied")).await.unwrap_err();
    assert!(err.message().contains("give exactly one of provider"), "{}", err.message());
    let err = query.get_hourly(hourly("", "system:QXX", "beds.cc_adult.occupied")).await.unwrap_err();
    assert!(err.message().contains("scope \"system:QXX\" is not"), "{}", err.message());

    // The command line shows the same.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["hourly", "--server", &server.url, "--scope", "system:QWE", "--metric", "beds.cc_adult.occupancy"])
        .args(["--hours", "3"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("beds.cc_adult.occupancy for system QWE (South West London ICB)"), "{text}");
    assert!(text.contains("83.3  +33.3  1 correction(s)  2/5 reported (40%)"), "{text}");
}
