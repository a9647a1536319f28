//! Redis high availability end to end: a master, two replicas and three Sentinels (real `redis-server` processes
//! on free ports), the aggregator configured with the Sentinels, a steady load of reports, a subscriber, and the
//! master killed (SIGKILL) in the middle. What a failover may and may not do to acknowledged reports and to
//! subscribers, with `store.ack_replicas` 1 and 0.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::{RedisProcess, SentinelWatch};

use crate::support::*;

const PROVIDERS: [&str; 4] = ["RJ7", "RGT", "RM1", "RAP"];

/// A report the aggregator acknowledged.
struct Acked {
    provider: String,
    revision: u32,
    cursor: String,
    at: Instant,
}

/// What the subscriber received, in order.
enum Seen {
    Event {
        provider: String,
        revision: u32,
        cursor: String,
    },
    Reset,
    /// The fresh snapshot after a reset, as of this cursor.
    Snapshot {
        cursor: String,
    },
}

/// A field of `SENTINEL MASTER <name>`, asked of one Sentinel.
async fn sentinel_field(sentinel: &RedisProcess, field: &str) -> Option<String> {
    let client = redis::Client::open(sentinel.url()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let fields: Vec<String> = redis::cmd("SENTINEL").arg("MASTER").arg("m").query_async(&mut conn).await.ok()?;
    fields.chunks(2).find(|kv| kv[0] == field).map(|kv| kv[1].clone())
}

/// Whether the replicas have the master's data when it is killed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replicas {
    InSync,
    NeverSynced,
}

/// Whether both replicas are attached and in sync.
async fn replicas_online(master: &RedisProcess) -> bool {
    let Ok(client) = redis::Client::open(master.url()) else { return false };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
    let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap_or_default();
    info.matches("state=online").count() == 2
}

/// Runs the scenario and checks what holds whatever `ack_replicas` is; returns the acknowledged reports that the
/// store no longer has, and the resets the subscriber saw.
async fn failover(ack_replicas: u32, replicas: Replicas) -> (Vec<(String, u32)>, usize) {
    // In sync: the replicas are sent the data at once and are online before the load starts. Lagging: Redis's
    // default 5 s wait before the first transfer (to serve several replicas with one) is still running when the
    // master is killed, so the replica promoted has none of the data.
    let delay = match replicas {
        Replicas::InSync => "0",
        Replicas::NeverSynced => "5",
    };
    let mut master = RedisProcess::start_with(&["--repl-diskless-sync-delay", delay]).expect("redis-server");
    let _replicas =
        [RedisProcess::start_replica_of(&master).unwrap(), RedisProcess::start_replica_of(&master).unwrap()];
    let deadline = Instant::now() + DEADLINE;
    while replicas == Replicas::InSync && !replicas_online(&master).await {
        assert!(Instant::now() < deadline, "the replicas did not sync");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watch = SentinelWatch {
        name: "m",
        master_port: master.port(),
        quorum: 2,
        down_after_ms: 1000,
        failover_timeout_ms: 5000,
    };
    let sentinels: Vec<RedisProcess> =
        (0..3).map(|_| RedisProcess::start_sentinel(&watch).expect("sentinel")).collect();
    // Every Sentinel knows both replicas and the other Sentinels before the master goes.
    let deadline = Instant::now() + DEADLINE;
    for s in &sentinels {
        while sentinel_field(s, "num-slaves").await.as_deref() != Some("2")
            || sentinel_field(s, "num-other-sentinels").await.as_deref() != Some("2")
        {
            assert!(Instant::now() < deadline, "the Sentinels did not find each other and the replicas: {}", s.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let addresses: Vec<String> = sentinels.iter().map(|s| format!("\"127.0.0.1:{}\"", s.port())).collect();
    let config = format!(
        "[store]\nredis_sentinels = [{}]\nredis_master = \"m\"\nack_replicas = {ack_replicas}\nack_timeout = \"500ms\"\n\
         redis_timeout_ms = 1000\n[limits]\nreports_per_provider_per_minute = 0\n",
        addresses.join(", ")
    );
    let server = Server::start_with(&config, &[]).await;

    // The subscriber records everything it is sent.
    let mut updates = server.updates(1).await;
    expect_snapshot(next(&mut updates).await);
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let recording = seen.clone();
    let subscriber = tokio::spawn(async move {
        while let Ok(Some(u)) = updates.message().await {
            let record = match u.kind {
                Some(pb::update::Kind::Event(e)) => {
                    Seen::Event { provider: e.provider, revision: e.revision, cursor: e.cursor }
                }
                Some(pb::update::Kind::Reset(_)) => Seen::Reset,
                Some(pb::update::Kind::Snapshot(snapshot)) => Seen::Snapshot { cursor: snapshot.cursor },
                _ => continue,
            };
            recording.lock().unwrap().push(record);
        }
    });

    // The load: each provider's revisions in turn, every report resent until it is acknowledged (a retry is
    // answered as a duplicate if it was stored), so the stored revisions of a provider have no holes of its making.
    let period = ts(sitrep_core::Timestamp::now().hour_start());
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (acked, stop, mut client, period) = (acked.clone(), stop.clone(), server.provider().await, period);
        tokio::spawn(async move {
            let mut revision = BTreeMap::<&str, u32>::new();
            for i in 0.. {
                let provider = PROVIDERS[i % PROVIDERS.len()];
                let rev = *revision.entry(provider).and_modify(|r| *r += 1).or_insert(1);
                let mut r = report(provider, 0, rev, &[("ed.in_department", f64::from(rev))]);
                r.period = Some(period);
                loop {
                    if stop.is_cancelled() {
                        return;
                    }
                    let answer = tokio::time::timeout(Duration::from_secs(3), client.submit(r.clone())).await;
                    match answer {
                        Ok(Ok(ack)) => {
                            let ack = ack.into_inner();
                            assert!(matches!(ack.outcome(), Outcome::Accepted | Outcome::Duplicate), "{ack:?}");
                            let at = Instant::now();
                            let cursor = ack.cursor;
                            acked.lock().unwrap().push(Acked { provider: provider.into(), revision: rev, cursor, at });
                            break;
                        }
                        Ok(Err(status)) => {
                            assert_eq!(status.code(), tonic::Code::Unavailable, "a failover is retryable: {status:?}")
                        }
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let count =
        |acked: &Arc<Mutex<Vec<Acked>>>, after: Instant| acked.lock().unwrap().iter().filter(|a| a.at > after).count();
    let started = Instant::now();
    while count(&acked, started) < 30 {
        assert!(started.elapsed() < DEADLINE, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    master.kill();
    let killed = Instant::now();
    while count(&acked, killed) < 30 {
        assert!(killed.elapsed() < Duration::from_secs(40), "no reports acknowledged after the failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    load.await.unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let first_after = acked.iter().find(|a| a.at > killed).expect("acked after the kill").at;
    let before = acked.iter().filter(|a| a.at <= killed).count();

    // What the store has now, through the aggregator (the promoted replica's history).
    let mut query = server.query().await;
    let mut stored = BTreeSet::new();
    for p in PROVIDERS {
        let request =
            pb::GetHistoryRequest { provider: p.into(), from: Some(period), to: Some(period), metrics: vec![] };
        for e in query.get_history(request).await.unwrap().into_inner().entries {
            stored.insert((p.to_owned(), e.revision));
        }
    }
    let lost: Vec<(String, u32)> =
        acked.iter().map(|a| (a.provider.clone(), a.revision)).filter(|k| !stored.contains(k)).collect();

    // The subscriber catches up with the last acknowledged report: its event, or a snapshot after a reset that
    // includes it.
    let last = acked.last().expect("acked").cursor.clone();
    let last_pos = sitrep_core::Cursor::parse(&last).expect("a cursor");
    let reached = |s: &Seen| match s {
        Seen::Event { cursor, .. } => *cursor == last,
        Seen::Snapshot { cursor } => {
            sitrep_core::Cursor::parse(cursor).is_some_and(|c| c.epoch == last_pos.epoch && c.pos >= last_pos.pos)
        }
        Seen::Reset => false,
    };
    let deadline = Instant::now() + DEADLINE;
    while !seen.lock().unwrap().iter().any(reached) {
        if Instant::now() > deadline {
            let acked: Vec<_> = acked.iter().map(|a| format!("{} {} {}", a.provider, a.revision, a.cursor)).collect();
            let seen: Vec<_> = seen
                .lock()
                .unwrap()
                .iter()
                .map(|s| match s {
                    Seen::Event { provider, revision, cursor } => format!("{provider} {revision} {cursor}"),
                    Seen::Reset => "reset".into(),
                    Seen::Snapshot { cursor } => format!("snapshot {cursor}"),
                })
                .collect();
            panic!(
                "the subscriber never caught up with the last acknowledged report:\nacked {acked:#?}\nseen {seen:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    subscriber.abort();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let resets = seen.iter().filter(|s| matches!(s, Seen::Reset)).count();
    // Between resets: every event once, in order, and each provider's revisions one after another: no silent gap.
    let mut last_revision = BTreeMap::<String, u32>::new();
    let mut last_cursor: Option<sitrep_core::Cursor> = None;
    for s in &seen {
        match s {
            Seen::Reset => {
                last_revision.clear();
                last_cursor = None;
            }
            Seen::Snapshot { .. } => {}
            Seen::Event { provider, revision, cursor } => {
                let c = sitrep_core::Cursor::parse(cursor).expect("a cursor");
                if let Some(prev) = &last_cursor {
                    assert!(
                        c.epoch == prev.epoch && c.pos > prev.pos,
                        "out of order or twice: {cursor} after {prev:?}"
                    );
                }
                if let Some(prev) = last_revision.get(provider) {
                    assert_eq!(*revision, prev + 1, "a silent gap in {provider}'s events");
                }
                last_revision.insert(provider.clone(), *revision);
                last_cursor = Some(c);
            }
        }
    }
    // What the subscriber holds since its last reset is what the store has.
    let since_reset = seen.iter().rev().take_while(|s| !matches!(s, Seen::Reset));
    for s in since_reset {
        if let Seen::Event { provider, revision, .. } = s {
            assert!(stored.contains(&(provider.clone(), *revision)), "{provider} {revision} shown but not stored");
        }
    }
    println!(
        "failover with ack_replicas = {ack_replicas}: {} ms from SIGKILL to the first acknowledged report; {before} \
         acknowledged before, {} after; {} acknowledged reports lost; {resets} resets seen by the subscriber",
        (first_after - killed).as_millis(),
        acked.len() - before,
        lost.len()
    );
    (lost, resets)
}

/// With `ack_replicas = 1` a report is acknowledged only once a replica has it, so the failover loses none of
/// them, and the subscriber sees every event once, in order (or a reset: never a silent gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_no_acknowledged_report_with_ack_replicas() {
    let (lost, _) = failover(1, Replicas::InSync).await;
    assert!(lost.is_empty(), "acknowledged reports lost: {lost:?}");
}

/// With `ack_replicas = 0` the promoted replica may lack acknowledged reports: here, the worst case, it never
/// received any. The reports are lost, and subscribers that saw them are reset (never left with a silent gap, which
/// `failover` checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_without_ack_replicas_shows_any_loss_as_a_reset() {
    let (lost, resets) = failover(0, Replicas::NeverSynced).await;
    assert!(!lost.is_empty(), "the promoted replica never had the data, so acknowledged reports were lost");
    assert!(resets >= 1, "lost {lost:?} without a reset");
}

/// With `ack_replicas = 0` and replicas in sync, a failover under steady load typically loses nothing (the
/// replicas were less than a millisecond behind); whatever it loses shows as a reset, which `failover` checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_without_ack_replicas_with_replicas_in_sync() {
    failover(0, Replicas::InSync).await;
}
