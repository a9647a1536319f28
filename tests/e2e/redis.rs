//! End-to-end tests with Redis as the store: real `redis-server` processes started by the tests on free ports,
//! real `sitrep serve` processes, real gRPC clients.

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;

use crate::support::*;

/// A report accepted by one replica reaches subscribers of another; both serve the same picture; a replica that
/// is replaced lets its subscribers resume from their cursors on the new one.
#[tokio::test]
async fn replicas_share_one_picture_through_redis() {
    let redis = RedisProcess::start().expect("redis-server");
    let a = Server::start_redis(&redis.url()).await;
    let b = Server::start_redis(&redis.url()).await;
    let mut on_a = a.updates(1).await;
    let mut on_b = b.updates(1).await;
    expect_snapshot(next(&mut on_a).await);
    expect_snapshot(next(&mut on_b).await);

    let mut to_a = a.provider().await;
    let mut to_b = b.provider().await;
    let first = to_a.submit(report("RJ7", 0, 1, &[("beds.cc_adult.open", 30.0)])).await.unwrap().into_inner();
    let second = to_b.submit(report("RGT", 0, 1, &[("beds.cc_adult.open", 12.0)])).await.unwrap().into_inner();
    assert_eq!((first.outcome(), second.outcome()), (Outcome::Accepted, Outcome::Accepted));
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(expect_event(next_non_heartbeat(stream).await).cursor, first.cursor);
        assert_eq!(expect_event(next_non_heartbeat(stream).await).cursor, second.cursor);
    }
    // A duplicate sent to the other replica is still a duplicate: idempotency lives in Redis.
    let again = to_b.submit(report("RJ7", 0, 1, &[("beds.cc_adult.open", 30.0)])).await.unwrap().into_inner();
    assert_eq!((again.outcome(), again.cursor.as_str()), (Outcome::Duplicate, first.cursor.as_str()));
    let snap_a = a.query().await.get_snapshot(pb::GetSnapshotRequest::default()).await.unwrap().into_inner();
    let snap_b = b.query().await.get_snapshot(pb::GetSnapshotRequest::default()).await.unwrap().into_inner();
    assert_eq!(snap_a, snap_b);
    assert_eq!(snap_a.cursor, second.cursor);

    // Replace replica A: its subscriber resumes from its last cursor on a brand-new replica, missing nothing.
    drop(on_a);
    drop(a);
    let third = to_b.submit(report("RJ7", 0, 2, &[("beds.cc_adult.open", 31.0)])).await.unwrap().into_inner();
    let a2 = Server::start_redis(&redis.url()).await;
    let resume =
        pb::SubscribeRequest { resume_from: second.cursor.clone(), heartbeat_seconds: 1, ..Default::default() };
    let mut resumed = a2.subscriber().await.subscribe(resume).await.unwrap().into_inner();
    let e = expect_event(next(&mut resumed).await);
    assert_eq!(e.cursor, third.cursor);
    assert_eq!(changes(&e), vec![("beds.cc_adult.open".to_string(), Some(30.0), 31.0)]);
    assert_eq!(expect_event(next_non_heartbeat(&mut on_b).await).cursor, third.cursor);
}

/// While Redis is down: ingest answers UNAVAILABLE and acknowledges nothing, health is NOT_SERVING, subscribers
/// are told the picture is degraded. When it returns, everything resumes by itself, without gaps or duplicates.
#[tokio::test]
async fn redis_outage_degrades_then_resumes_without_gaps() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let mut redis = RedisProcess::start().expect("redis-server");
    let server = Server::start_redis(&redis.url()).await;
    let mut provider = server.provider().await;
    let health = HealthClient::new(server.channel().await);
    let mut watcher = server.updates(1).await;
    expect_snapshot(next(&mut watcher).await);
    let before = provider.submit(report("RM1", 0, 1, &[("ed.in_department", 10.0)])).await.unwrap().into_inner();
    assert_eq!(before.outcome(), Outcome::Accepted);
    assert_eq!(expect_event(next_non_heartbeat(&mut watcher).await).cursor, before.cursor);
    // A second subscriber that will be away during the outage.
    let away_from = before.cursor.clone();

    let mut feed = Feed::open(&mut provider).await;
    redis.kill();
    // A feed's stream ends with UNAVAILABLE: the report it was sending is not acknowledged.
    let streamed = report("RM1", 0, 3, &[("ed.over_12h", 1.0)]);
    let status = feed.try_send(streamed.clone()).await.expect_err("the stream ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let during = report("RM1", 0, 2, &[("ed.in_department", 20.0)]);
    let status = provider.submit(during.clone()).await.expect_err("nothing can be stored while redis is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    match next_non_heartbeat(&mut watcher).await {
        pb::update::Kind::Status(s) => assert!(s.degraded, "{s:?}"),
        other => panic!("expected a degraded status, got {other:?}"),
    }
    let check = HealthCheckRequest { service: "sitrep.v1.ProviderService".into() };
    // Health follows the same signal on its own task: wait for it (failing after the deadline).
    let health_becomes = |want: ServingStatus| {
        let (mut health, check) = (health.clone(), check.clone());
        async move {
            let deadline = tokio::time::Instant::now() + DEADLINE;
            loop {
                let got = health.check(check.clone()).await.unwrap().into_inner().status();
                if got == want {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "health stayed {got:?}, expected {want:?}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    health_becomes(ServingStatus::NotServing).await;

    redis.restart().expect("restart redis-server");
    match next_non_heartbeat(&mut watcher).await {
        pb::update::Kind::Status(s) => assert!(!s.degraded, "{s:?}"),
        other => panic!("expected a restored status, got {other:?}"),
    }
    health_becomes(ServingStatus::Serving).await;
    // The report refused during the outage was not stored: resent, it is accepted (not a duplicate).
    let after = provider.submit(during).await.unwrap().into_inner();
    assert_eq!(after.outcome(), Outcome::Accepted, "{after:?}");
    let e = expect_event(next_non_heartbeat(&mut watcher).await);
    assert_eq!(e.cursor, after.cursor);
    assert_eq!(changes(&e), vec![("ed.in_department".to_string(), Some(10.0), 20.0)]);
    // The feed reconnects and resends what was not acknowledged: accepted.
    let mut feed = Feed::open(&mut provider).await;
    let resent = feed.send(streamed).await;
    assert_eq!(resent.outcome(), Outcome::Accepted, "{resent:?}");
    assert_eq!(expect_event(next_non_heartbeat(&mut watcher).await).cursor, resent.cursor);
    // Exactly once: the next update is a heartbeat at that cursor.
    match next(&mut watcher).await {
        pb::update::Kind::Heartbeat(h) => assert_eq!(h.cursor, resent.cursor),
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    // The subscriber that was away resumes from its cursor: exactly the one event it missed.
    let resume = pb::SubscribeRequest { resume_from: away_from, heartbeat_seconds: 1, ..Default::default() };
    let mut back = server.subscriber().await.subscribe(resume).await.unwrap().into_inner();
    assert_eq!(expect_event(next(&mut back).await).cursor, after.cursor);
    assert_eq!(expect_event(next(&mut back).await).cursor, resent.cursor);
    assert!(matches!(next(&mut back).await, pb::update::Kind::Heartbeat(_)));
}

/// The hour-by-hour history of a provider and of a metric, from Redis.
#[tokio::test]
async fn history_of_a_provider_and_of_a_metric() {
    let redis = RedisProcess::start().expect("redis-server");
    let server = Server::start_redis(&redis.url()).await;
    let mut provider = server.provider().await;
    for (who, hours_ago, revision, value) in
        [("RJ7", 3, 1, 20.0), ("RJ7", 2, 1, 21.0), ("RJ7", 2, 2, 22.0), ("RJ7", 0, 1, 23.0), ("RGT", 2, 1, 9.0)]
    {
        let ack = provider
            .submit(report(
                who,
                hours_ago,
                revision,
                &[("beds.cc_adult.occupied", value), ("beds.cc_adult.open", 30.0)],
            ))
            .await;
        assert_eq!(ack.unwrap().into_inner().outcome(), Outcome::Accepted);
    }
    let mut query = server.query().await;
    let history = query
        .get_history(pb::GetHistoryRequest {
            provider: "RJ7".into(),
            metrics: vec!["beds.cc_adult.occupied".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<_> = history
        .entries
        .iter()
        .map(|e| (e.revision, num(&Some(e.values["beds.cc_adult.occupied"].clone())), e.values.len()))
        .collect();
    assert_eq!(got, [(1, Some(20.0), 1), (1, Some(21.0), 1), (2, Some(22.0), 1), (1, Some(23.0), 1)]);

    let filter = pb::Filter { systems: vec!["QWE".into(), "QUE".into()], ..Default::default() };
    let metric = query
        .get_metric_history(pb::GetMetricHistoryRequest {
            metric: "beds.cc_adult.occupied".into(),
            filter: Some(filter),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let series: Vec<_> = metric
        .series
        .iter()
        .map(|s| {
            (s.provider.as_str(), s.points.iter().map(|p| (p.revision, num(&p.value).unwrap())).collect::<Vec<_>>())
        })
        .collect();
    assert_eq!(series, [("RGT", vec![(1, 9.0)]), ("RJ7", vec![(1, 20.0), (2, 22.0), (1, 23.0)])]);

    let bad = pb::GetHistoryRequest { provider: "NOPE".into(), ..Default::default() };
    assert_eq!(query.get_history(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// A Redis that still answers reads but refuses writes (here: a master that requires a replica it does not have,
/// as after a failover gone wrong) degrades the picture too, and recovers when it accepts writes again.
#[tokio::test]
async fn a_redis_refusing_writes_degrades_the_picture() {
    let redis = RedisProcess::start().expect("redis-server");
    let server = Server::start_redis(&redis.url()).await;
    let mut provider = server.provider().await;
    let mut watcher = server.updates(1).await;
    expect_snapshot(next(&mut watcher).await);
    let first = provider.submit(report("RAP", 0, 1, &[("ed.in_department", 1.0)])).await.unwrap().into_inner();
    assert_eq!(first.outcome(), Outcome::Accepted);
    assert_eq!(expect_event(next_non_heartbeat(&mut watcher).await).cursor, first.cursor);

    assert_eq!(redis.command("CONFIG SET min-replicas-to-write 1").unwrap(), "+OK");
    for rev in 2..=4 {
        let status = provider.submit(report("RAP", 0, rev, &[("ed.in_department", 2.0)])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    match next_non_heartbeat(&mut watcher).await {
        pb::update::Kind::Status(s) => assert!(s.degraded && s.message.contains("refuses reports"), "{s:?}"),
        other => panic!("expected a degraded status, got {other:?}"),
    }
    assert_eq!(redis.command("CONFIG SET min-replicas-to-write 0").unwrap(), "+OK");
    let after = provider.submit(report("RAP", 0, 2, &[("ed.in_department", 2.0)])).await.unwrap().into_inner();
    assert_eq!(after.outcome(), Outcome::Accepted, "nothing refused was stored: revision 2 is new");
    // The restored status and the new event travel separately (status from the health signal, the event from the
    // log), so either may come first; both must come.
    let (mut restored, mut event) = (false, false);
    while !(restored && event) {
        match next_non_heartbeat(&mut watcher).await {
            pb::update::Kind::Status(s) if !s.degraded && !restored => restored = true,
            pb::update::Kind::Event(e) if e.cursor == after.cursor && !event => event = true,
            other => panic!("expected a restored status and the event, got {other:?}"),
        }
    }
}

/// Before Redis fills (at `maxmemory` it refuses every write, so sitrep every report), the aggregator warns.
#[tokio::test]
async fn the_aggregator_warns_before_redis_fills() {
    let redis = RedisProcess::start_with(&["--maxmemory", "1mb"]).expect("redis-server");
    let config = "[staleness]\ncheck_interval = \"1s\"\n";
    let server = Server::start_with(config, &["--redis", &redis.url()]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !server.logs().contains("the store is") {
        assert!(tokio::time::Instant::now() < deadline, "no warning: {}", server.logs());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let logs = server.logs();
    assert!(logs.contains("% full") && logs.contains("raise maxmemory"), "{logs}");
}

/// An aggregator pointed at data written by a newer sitrep (its `{prefix}:schema` version is above what this build
/// knows) refuses to start: it exits non-zero, and says which key, which versions, and what to do.
#[tokio::test]
async fn the_aggregator_refuses_data_of_a_newer_version() {
    let redis = RedisProcess::start().expect("redis-server");
    assert_eq!(redis.command("SET {sitrep}:schema 99").unwrap(), "+OK");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &redis.url()])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, run).await.expect("sitrep exits").expect("sitrep runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let newest = sitrep_store::redis::SCHEMA_VERSION;
    for part in [
        "{sitrep}:schema says the data in Redis is of version 99".to_owned(),
        format!("this build knows versions up to {newest}"),
        "Upgrade sitrep".into(),
        "store.key_prefix".into(),
    ] {
        assert!(stderr.contains(&part), "{part:?} not in {stderr}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "it never said it was listening");
    // Its data untouched.
    assert_eq!(redis.command("GET {sitrep}:schema").unwrap(), "$2");
}
