//! The Redis store against a real `redis-server` started on a free port with its own data directory.

use sitrep_store::conformance;
use sitrep_store::redis::RedisProcess;
use sitrep_store::{RedisOptions, RedisStore};

/// Every conformance check, each a test of its own, on one `redis-server` the checks share.
mod suite {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, Weak};

    use sitrep_store::redis::RedisProcess;
    use sitrep_store::{RedisOptions, RedisStore, Store};

    /// A check's stores: on the shared server, under a key prefix of the check's own (as good as a fresh Redis,
    /// and it proves prefixes isolate deployments).
    struct Redis {
        server: Arc<RedisProcess>,
        prefix: String,
    }

    impl Redis {
        /// The server is shared by the checks running at once and stopped (its data directory removed) when the
        /// last of them ends: a server in a plain static would never be dropped, and would outlive the test run.
        fn new() -> Self {
            static SHARED: Mutex<Weak<RedisProcess>> = Mutex::new(Weak::new());
            static PREFIX: AtomicU64 = AtomicU64::new(0);
            let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            let server = shared.upgrade().unwrap_or_else(|| {
                let server = Arc::new(RedisProcess::start().expect("start redis-server"));
                *shared = Arc::downgrade(&server);
                server
            });
            Redis { server, prefix: format!("conf{}", PREFIX.fetch_add(1, Ordering::Relaxed)) }
        }

        async fn connect(&self, options: RedisOptions) -> RedisStore {
            let options = RedisOptions { url: self.server.url(), key_prefix: self.prefix.clone(), ..options };
            RedisStore::connect(options).await.expect("connect")
        }

        async fn fresh(&self) -> RedisStore {
            self.connect(RedisOptions::default()).await
        }

        async fn small_log(&self, capacity: usize) -> RedisStore {
            self.connect(RedisOptions { event_log_max_len: capacity, ..Default::default() }).await
        }

        async fn short_history(&self, retention_hours: i64) -> RedisStore {
            self.connect(RedisOptions { retention_hours, ..Default::default() }).await
        }

        /// Two replicas: two stores on one Redis under one prefix, each with its own connections and hints.
        async fn replicas(&self) -> [Arc<dyn Store>; 2] {
            [Arc::new(self.fresh().await), Arc::new(self.fresh().await)]
        }
    }

    sitrep_store::conformance_tests!(Redis);
}

/// Mutual aid's book survives the store: a new store on the same Redis (an aggregator restarted) loads the book
/// the first one left, records, version and holds, and takes the next action on from it.
#[tokio::test]
async fn a_restarted_store_loads_the_same_book() {
    use sitrep_core::aid::{Action, OfferId, RequestId};
    use sitrep_store::Store;
    let redis = RedisProcess::start().expect("redis-server");
    let options = RedisOptions { url: redis.url(), ..Default::default() };
    let first = RedisStore::connect(options.clone()).await.unwrap();
    let cc = [
        ("beds.cc_adult.open", sitrep_core::Value::Number(10.0)),
        ("beds.cc_adult.occupied", sitrep_core::Value::Number(7.0)),
    ];
    first.apply(&conformance::report("RVR", 0, 1, &cc), sitrep_core::Timestamp::now()).await.unwrap();
    conformance::act(&first, conformance::aid_request("RJ7", 2)).await;
    conformance::act(&first, conformance::aid_offer(RequestId(1), "RVR", 1)).await;
    conformance::act(&first, conformance::aid_offer(RequestId(1), "RAX", 1)).await;
    conformance::act(&first, Action::Accept { offer: OfferId(1), baseline_occupied: 0 }).await;
    let before = first.load().await.unwrap();
    let folded = conformance::picture(&first).await;
    drop(first);

    let second = RedisStore::connect(options).await.unwrap();
    let after = second.load().await.unwrap();
    assert_eq!(after.aid, before.aid, "the same records and version");
    assert_eq!(after.aid.version(), 4);
    assert_eq!(after.aid.offer(OfferId(2)).map(|o| o.provider.as_str()), Some("RAX"));
    let rvr = after.providers.iter().find(|p| p.provider == "RVR").expect("RVR's state");
    assert_eq!(rvr.holds.len(), 1, "the hold is in the holder's state");
    assert_eq!(conformance::picture(&second).await, folded, "the same picture");
    // The next action goes on from the stored book.
    let done = conformance::act(&second, Action::Decline(OfferId(2))).await;
    assert_eq!(done.len(), 1);
    assert_eq!(second.load().await.unwrap().aid.version(), 5);
}

fn report(provider: &str, revision: u32) -> sitrep_core::ValidReport {
    conformance::report(provider, 0, revision, &[("flow.discharges", sitrep_core::Value::Number(f64::from(revision)))])
}

async fn raw(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// Redis forgets loaded scripts when it restarts (or on SCRIPT FLUSH); the store re-loads them by itself.
#[tokio::test]
async fn scripts_are_reloaded_when_redis_forgets_them() {
    use sitrep_store::{Applied, Store};
    let redis = RedisProcess::start().expect("redis-server");
    let store = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    assert!(matches!(
        store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap(),
        Applied::Accepted(_)
    ));
    raw(&redis.url(), &["SCRIPT", "FLUSH"]).await;
    assert!(matches!(
        store.apply(&report("RJ7", 2), sitrep_core::Timestamp::now()).await.unwrap(),
        Applied::Accepted(_)
    ));
}

/// Deployments sharing a Redis under different key prefixes do not see each other; every key carries the
/// deployment's hash tag.
#[tokio::test]
async fn key_prefixes_isolate_deployments() {
    use sitrep_store::Store;
    let redis = RedisProcess::start().expect("redis-server");
    let a = RedisStore::connect(RedisOptions { url: redis.url(), key_prefix: "east".into(), ..Default::default() })
        .await
        .unwrap();
    let b = RedisStore::connect(RedisOptions { url: redis.url(), key_prefix: "west".into(), ..Default::default() })
        .await
        .unwrap();
    a.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap();
    assert_eq!(a.load().await.unwrap().providers.len(), 1);
    assert!(b.load().await.unwrap().providers.is_empty());
    assert!(
        matches!(b.history("RJ7", sitrep_core::Timestamp(0), sitrep_core::Timestamp::now()).await, Ok(h) if h.is_empty())
    );
    let redis::Value::Array(keys) = raw(&redis.url(), &["KEYS", "*"]).await else { panic!() };
    assert!(!keys.is_empty());
    for k in keys {
        let redis::Value::BulkString(k) = k else { panic!() };
        let k = String::from_utf8(k).unwrap();
        assert!(k.starts_with("{east}:") || k.starts_with("{west}:"), "{k} is outside the deployments' prefixes");
    }
}

/// With a maximum age, events older than it are trimmed from the log, and a cursor before them is reset.
#[tokio::test]
async fn events_older_than_the_maximum_age_are_trimmed() {
    use sitrep_store::{Read, ResetReason, Store};
    let redis = RedisProcess::start().expect("redis-server");
    let options = RedisOptions {
        url: redis.url(),
        event_log_max_age: Some(std::time::Duration::from_millis(50)),
        ..Default::default()
    };
    let store = RedisStore::connect(options).await.unwrap();
    let start = store.head().await.unwrap();
    // Enough old events to fill whole stream nodes (trimming is approximate: it drops whole nodes).
    for rev in 1..=300 {
        store.apply(&report("RJ7", rev), sitrep_core::Timestamp::now()).await.unwrap();
    }
    // Let them age past the limit (a step over the boundary, not a timing measurement).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    store.apply(&report("RJ7", 301), sitrep_core::Timestamp::now()).await.unwrap();
    assert_eq!(store.read(&start, 10, std::time::Duration::ZERO).await.unwrap(), Read::Reset(ResetReason::TooOld));
    let redis::Value::Int(len) = raw(&redis.url(), &["XLEN", "{sitrep}:events"]).await else { panic!() };
    assert!(len < 300, "old events were trimmed ({len} left)");
}

/// A flushed Redis is a new epoch: cursors from before are reset, whether read directly or by a waiting tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_starts_a_new_epoch() {
    use sitrep_store::{Applied, Read, ResetReason, Store};
    let redis = RedisProcess::start().expect("redis-server");
    let store = std::sync::Arc::new(
        RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap(),
    );
    let Applied::Accepted(first) = store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap() else {
        panic!()
    };
    let waiting = {
        let (store, cursor) = (store.clone(), first.cursor.clone());
        tokio::spawn(async move { store.read(&cursor, 10, std::time::Duration::from_secs(30)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    raw(&redis.url(), &["FLUSHALL"]).await;
    let Applied::Accepted(second) = store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap() else {
        panic!("after a flush the same report is new again")
    };
    assert_ne!(second.cursor.epoch, first.cursor.epoch);
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        Read::Reset(ResetReason::OtherEpoch),
        "the waiting tail sees the new epoch"
    );
    assert_eq!(
        store.read(&first.cursor, 10, std::time::Duration::ZERO).await.unwrap(),
        Read::Reset(ResetReason::OtherEpoch)
    );
}

/// Cursors no log could serve are reset; entries sitrep did not write are skipped (never an error, never a reset
/// storm), and sitrep's own events around them still read in order.
#[tokio::test]
async fn hostile_cursors_reset_and_foreign_entries_are_skipped() {
    use sitrep_core::Cursor;
    use sitrep_core::cursor::Position;
    use sitrep_store::{Applied, Read, ResetReason, Store};
    let redis = RedisProcess::start().expect("redis-server");
    let store = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap();
    let head = store.head().await.unwrap();
    let max = Cursor::new(head.epoch.clone(), Position(u64::MAX, u64::MAX));
    assert_eq!(store.read(&max, 10, std::time::Duration::ZERO).await.unwrap(), Read::Reset(ResetReason::Ahead));
    // Someone else writes into the stream, then sitrep writes again.
    for _ in 0..30 {
        raw(&redis.url(), &["XADD", "{sitrep}:events", "*", "junk", "1"]).await;
    }
    let Applied::Accepted(next) = store.apply(&report("RJ7", 2), sitrep_core::Timestamp::now()).await.unwrap() else {
        panic!()
    };
    // Pages of foreign entries (here 30, read 4 at a time) are read past, by the checking read and the tail alike.
    assert_eq!(store.read(&head, 4, std::time::Duration::ZERO).await.unwrap(), Read::Events(vec![next.clone()]));
    assert_eq!(
        store.read(&head, 4, std::time::Duration::from_secs(5)).await.unwrap(),
        Read::Events(vec![next.clone()])
    );
    // A tail waiting at the head is not woken into a loop by foreign entries: it waits for sitrep's next event.
    raw(&redis.url(), &["XADD", "{sitrep}:events", "*", "junk", "2"]).await;
    assert_eq!(store.read(&next.cursor, 4, std::time::Duration::from_millis(300)).await.unwrap(), Read::Events(vec![]));
    // If the log's epoch and head are lost, the log starts a new epoch: cursors from before are reset, not trusted.
    raw(&redis.url(), &["DEL", "{sitrep}:log"]).await;
    assert_ne!(store.head().await.unwrap().epoch, next.cursor.epoch);
    assert_eq!(
        store.read(&next.cursor, 4, std::time::Duration::ZERO).await.unwrap(),
        Read::Reset(ResetReason::OtherEpoch)
    );
}

/// The production Redis configuration shipped in deploy/ starts, keeps what sitrep needs, and serves sitrep.
#[tokio::test]
async fn the_shipped_redis_configuration_serves_sitrep() {
    use sitrep_store::{Applied, Store};
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/redis.conf");
    let redis = RedisProcess::start_with_config(&config).expect("redis-server with deploy/redis.conf");
    for (key, want) in [("maxmemory-policy", "noeviction"), ("appendonly", "yes")] {
        let got = raw(&redis.url(), &["CONFIG", "GET", key]).await;
        let pair = [redis::Value::BulkString(key.into()), redis::Value::BulkString(want.into())];
        assert_eq!(got, redis::Value::Array(pair.to_vec()), "{key}");
    }
    let store = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    assert!(matches!(
        store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap(),
        Applied::Accepted(_)
    ));
}

/// Two stores (two aggregator replicas) take turns with one provider. Each remembers what it last wrote, but that
/// is only a hint: when the other replica (or the clock) has changed the provider since, the version check refuses
/// the write and answers with the current state, so diffs and alerts always describe the state they apply to.
#[tokio::test]
async fn replicas_taking_turns_with_one_provider_derive_from_the_current_state() {
    use sitrep_core::{Timestamp, Value};
    use sitrep_store::{Applied, Store};
    let redis = RedisProcess::start().expect("redis-server");
    let a = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    let b = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    let occupied = |revision: u32, n: f64| {
        conformance::report(
            "RJ7",
            0,
            revision,
            &[("beds.cc_adult.open", Value::Number(20.0)), ("beds.cc_adult.occupied", Value::Number(n))],
        )
    };
    let accept = |applied: Applied| match applied {
        Applied::Accepted(e) => e,
        other => panic!("{other:?}"),
    };
    let t0 = Timestamp::now();
    accept(a.apply(&occupied(1, 10.0), t0).await.unwrap());
    let on_b = accept(b.apply(&occupied(2, 19.0), t0).await.unwrap());
    assert_eq!(on_b.derived.raised.len(), 1, "B read A's write and saw the move into red");
    // A last wrote 10 occupied; B has since written 19. A must diff against 19: no change, no second alert.
    let on_a = accept(a.apply(&occupied(3, 19.0), t0).await.unwrap());
    assert!(on_a.changes.is_empty(), "{:?}", on_a.changes);
    assert!(on_a.derived.raised.is_empty() && on_a.derived.cleared.is_empty(), "{:?}", on_a.derived);
    // B marks the provider stale (the clock given is hours ahead); A's next report, for the current hour and
    // received now, clears it.
    let quiet = t0.add_millis(3 * 3_600_000);
    assert!(b.mark_stale("RJ7", quiet).await.unwrap().is_some());
    assert!(a.mark_stale("RJ7", quiet).await.unwrap().is_none(), "once");
    let back = accept(a.apply(&occupied(4, 12.0), t0).await.unwrap());
    let cleared: Vec<&str> = back.derived.cleared.iter().map(|al| al.key.as_str()).collect();
    assert_eq!(cleared, ["threshold:RJ7:beds.cc_adult.occupancy", "stale:RJ7"]);
    assert_eq!(back.version, 5, "three reports, a stale transition, a report");
}

/// What one report costs Redis, counted by Redis itself (`INFO commandstats`): a handful of commands, whatever the
/// number of providers, and a compact history entry.
#[tokio::test]
async fn a_report_costs_a_handful_of_redis_commands() {
    use sitrep_core::{Timestamp, Value};
    use sitrep_store::Store;
    let redis = RedisProcess::start().expect("redis-server");
    let store = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    let providers = ["RJ7", "RVR", "RAX", "RGT", "RAL"];
    let values = |i: u32| {
        let v = f64::from(i % 7);
        [
            ("beds.cc_adult.open", Value::Number(20.0 + v)),
            ("beds.cc_adult.occupied", Value::Number(10.0 + v)),
            ("beds.ga_adult.open", Value::Number(400.0 + v)),
            ("beds.ga_adult.occupied", Value::Number(350.0 + v)),
            ("ed.in_department", Value::Number(40.0 + v)),
            ("ed.over_12h", Value::Number(v)),
        ]
    };
    // Warm: every provider's first report, and the dictionary.
    for p in providers {
        store.apply(&conformance::report(p, 0, 1, &values(1)), Timestamp::now()).await.unwrap();
    }
    let calls = |info: String| -> u64 { info.lines().filter_map(cmdstat_calls).sum() };
    let before = calls(commandstats(&redis.url()).await);
    let n = 200u32;
    for i in 0..n {
        let p = providers[(i as usize) % providers.len()];
        store.apply(&conformance::report(p, 0, 2 + i, &values(i)), Timestamp::now()).await.unwrap();
    }
    // The INFO call itself counts once.
    let after = calls(commandstats(&redis.url()).await) - 1;
    let per_report = (after - before) as f64 / f64::from(n);
    println!("redis commands per report: {per_report:.1} (including the script call)");
    assert!(per_report <= 15.0, "{per_report} commands per report");
}

/// `INFO commandstats`, as text.
async fn commandstats(url: &str) -> String {
    match raw(url, &["INFO", "commandstats"]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("{other:?}"),
    }
}

/// The `calls=` of one `cmdstat_` line of `INFO commandstats`.
fn cmdstat_calls(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("cmdstat_")?;
    rest.split(&[':', ','][..]).find_map(|kv| kv.strip_prefix("calls=")).and_then(|n| n.parse().ok())
}

/// A store's tail takes the events it appended itself from where its committer noted them, without reading the
/// stream back (no `XREAD`, no reply to parse), when they continue its cursor; and it still reads another writer's
/// events from the stream, in order, with its own after them.
#[tokio::test]
async fn a_store_tails_its_own_events_without_reading_them_back() {
    use sitrep_core::{Timestamp, Value};
    use sitrep_store::{Read, Store};
    use std::time::Duration;
    let redis = RedisProcess::start().expect("redis-server");
    let options = || RedisOptions { url: redis.url(), ..Default::default() };
    let (a, b) = (RedisStore::connect(options()).await.unwrap(), RedisStore::connect(options()).await.unwrap());
    let values =
        |v: f64| [("beds.cc_adult.open", Value::Number(20.0 + v)), ("beds.cc_adult.occupied", Value::Number(v))];
    let events = |read: Read| match read {
        Read::Events(e) => e.into_iter().map(|e| (e.provider, e.cursor)).collect::<Vec<_>>(),
        Read::Reset(r) => panic!("reset {r:?}"),
    };
    let start = a.head().await.unwrap();
    let xreads = |info: &str| -> u64 {
        info.lines().filter(|l| l.starts_with("cmdstat_xread:")).filter_map(cmdstat_calls).sum()
    };
    let url = redis.url();
    let info = || commandstats(&url);
    // Three of A's own events, read by A's tail: no XREAD.
    let mut mine = Vec::new();
    for i in 0..3u32 {
        let applied = a.apply(&conformance::report("RJ7", 0, 1 + i, &values(f64::from(i))), Timestamp::now()).await;
        let sitrep_store::Applied::Accepted(e) = applied.unwrap() else { panic!("accepted") };
        mine.push(e.cursor);
    }
    let before = xreads(&info().await);
    let read = events(a.read(&start, 10, Duration::from_secs(1)).await.unwrap());
    assert_eq!(read.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>(), mine);
    assert_eq!(xreads(&info().await), before, "A's own events came without an XREAD");
    // B writes one between A's: A's tail reads it from the stream, then A's own one after it.
    let after_mine = mine.last().unwrap().clone();
    b.apply(&conformance::report("RVR", 0, 1, &values(1.0)), Timestamp::now()).await.unwrap();
    a.apply(&conformance::report("RJ7", 0, 9, &values(9.0)), Timestamp::now()).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = after_mine;
    while seen.len() < 2 {
        let batch = events(a.read(&cursor, 10, Duration::from_secs(1)).await.unwrap());
        cursor = batch.last().expect("events within a second").1.clone();
        seen.extend(batch.into_iter().map(|(p, _)| p));
    }
    assert_eq!(seen, ["RVR", "RJ7"]);
}

/// Waits until `check` holds, polling; fails after `within`.
async fn eventually<F: std::future::Future<Output = bool>>(
    within: std::time::Duration,
    what: &str,
    check: impl Fn() -> F,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A field of `SENTINEL MASTER <name>` (or of `INFO replication`, as `name:value` lines), as text.
async fn sentinel_field(sentinel: &RedisProcess, master: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(sentinel.url()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let fields: Vec<String> = redis::cmd("SENTINEL").arg("MASTER").arg(master).query_async(&mut conn).await.ok()?;
    fields.chunks(2).find(|kv| kv[0] == field).map(|kv| kv[1].clone())
}

/// When Sentinel fails the master over (here by hand, `SENTINEL FAILOVER`, so the old master lives on as a
/// replica and answers writes with READONLY), the store asks Sentinel again and carries on with the new master:
/// the reports sent meanwhile are answered UNAVAILABLE (never a permanent error), and the next ones are stored.
#[tokio::test]
async fn the_store_follows_a_sentinel_failover() {
    use sitrep_store::redis::{SentinelOptions, SentinelWatch};
    use sitrep_store::{Applied, Store, StoreError};
    let master = RedisProcess::start().expect("redis-server");
    let replica = RedisProcess::start_replica_of(&master).expect("replica");
    let watch = SentinelWatch {
        name: "m",
        master_port: master.port(),
        quorum: 1,
        down_after_ms: 1000,
        failover_timeout_ms: 5000,
    };
    let sentinel = RedisProcess::start_sentinel(&watch).expect("sentinel");
    eventually(std::time::Duration::from_secs(20), "Sentinel sees the replica", || async {
        sentinel_field(&sentinel, "m", "num-slaves").await.as_deref() == Some("1")
    })
    .await;
    let options = RedisOptions {
        url: "redis://m/".into(),
        sentinel: Some(SentinelOptions {
            addresses: vec![("127.0.0.1".into(), sentinel.port())],
            master: "m".into(),
            password: None,
        }),
        response_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let store = RedisStore::connect(options).await.expect("connect through Sentinel");
    let accepted = |a: Applied| matches!(a, Applied::Accepted(_));
    assert!(accepted(store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap()));
    eventually(std::time::Duration::from_secs(10), "the replica has the write", || async {
        raw(&replica.url(), &["HEXISTS", "{sitrep}:states", "RJ7"]).await == redis::Value::Int(1)
    })
    .await;

    assert_eq!(raw(&sentinel.url(), &["SENTINEL", "FAILOVER", "m"]).await, redis::Value::Okay);
    let promoted = replica.port().to_string();
    eventually(std::time::Duration::from_secs(20), "Sentinel names the replica as master", || async {
        let client = redis::Client::open(sentinel.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let addr: Vec<String> =
            redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg("m").query_async(&mut conn).await.unwrap();
        addr.get(1) == Some(&promoted)
    })
    .await;
    // Until the store has moved over, reports are refused as unavailable, never as a permanent failure.
    let mut revision = 2;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match store.apply(&report("RJ7", revision), sitrep_core::Timestamp::now()).await {
            Ok(a) => {
                assert!(accepted(a));
                break;
            }
            Err(StoreError::Unavailable { .. }) => revision += 1,
            Err(e) => panic!("a failover must answer unavailable, not {e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the store never reached the new master");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The write went to the promoted replica; the old master, now its replica, refuses writes.
    assert_eq!(raw(&replica.url(), &["HEXISTS", "{sitrep}:states", "RJ7"]).await, redis::Value::Int(1));
    let head = store.head().await.unwrap();
    assert!(head.pos > sitrep_core::cursor::Position(0, 0));
    drop(master);
}

/// With `ack_replicas`, a report is acknowledged only once that many replicas have it (`WAIT`): with no replica
/// attached it is answered UNAVAILABLE, with a message naming the setting and the numbers, and it is still in the
/// master's log (so a retry is a duplicate, not lost).
#[tokio::test]
async fn ack_replicas_waits_for_replicas_before_acknowledging() {
    use sitrep_store::{Applied, Store, StoreError};
    let master = RedisProcess::start().expect("redis-server");
    let options = |ms| RedisOptions {
        url: master.url(),
        ack_replicas: 1,
        ack_timeout: std::time::Duration::from_millis(ms),
        ..Default::default()
    };
    let lonely = RedisStore::connect(options(200)).await.unwrap();
    match lonely.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await {
        Err(StoreError::Unavailable { message, .. }) => {
            assert!(message.contains("0 of the 1 replicas store.ack_replicas asks for"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    let replica = RedisProcess::start_replica_of(&master).expect("replica");
    eventually(std::time::Duration::from_secs(20), "the replica is attached", || async {
        matches!(raw(&master.url(), &["INFO", "replication"]).await,
            redis::Value::BulkString(b) if String::from_utf8_lossy(&b).contains("state=online"))
    })
    .await;
    // The retry of the report WAIT fell short on: it was on the master all along, now replicated. (A generous
    // timeout from here: this machine is shared, and a replica slow to answer would fail the test for nothing.)
    let lonely = RedisStore::connect(options(5000)).await.unwrap();
    let again = lonely.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap();
    assert!(matches!(again, Applied::Duplicate { .. }), "{again:?}");
    let next = lonely.apply(&report("RJ7", 2), sitrep_core::Timestamp::now()).await.unwrap();
    assert!(matches!(next, Applied::Accepted(_)), "{next:?}");
    eventually(std::time::Duration::from_secs(5), "the replica has it", || async {
        raw(&replica.url(), &["HEXISTS", "{sitrep}:states", "RJ7"]).await == redis::Value::Int(1)
    })
    .await;
}

/// A failover to a replica that lacked the log's tail (with `ack_replicas = 0`) leaves readers' cursors naming
/// events the log no longer has. Simulated here by removing the tail as such a replica would lack it: a read from
/// such a cursor is reset as ahead of the log, before and after new events, never a silent gap.
#[tokio::test]
async fn a_cursor_whose_event_the_log_lost_is_reset() {
    use sitrep_store::{Applied, Read, ResetReason, Store};
    let redis = RedisProcess::start().expect("redis-server");
    let store = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    let accept = |a: Applied| match a {
        Applied::Accepted(e) => e,
        other => panic!("{other:?}"),
    };
    let kept = accept(store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await.unwrap());
    let lost = accept(store.apply(&report("RGT", 1), sitrep_core::Timestamp::now()).await.unwrap());
    let id = lost.cursor.pos.to_string();
    raw(&redis.url(), &["XDEL", "{sitrep}:events", &id]).await;
    raw(&redis.url(), &["HSET", "{sitrep}:log", "head", &kept.cursor.pos.to_string()]).await;
    let zero = std::time::Duration::ZERO;
    assert_eq!(store.read(&lost.cursor, 10, zero).await.unwrap(), Read::Reset(ResetReason::Ahead));
    // New writes on the new master (another store: this one's memory of its own appends is of the old master).
    let other = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    let after = accept(other.apply(&report("RAL", 1), sitrep_core::Timestamp::now()).await.unwrap());
    assert!(after.cursor.pos > lost.cursor.pos);
    assert_eq!(store.read(&lost.cursor, 10, zero).await.unwrap(), Read::Reset(ResetReason::Ahead));
    let tail = store.read(&lost.cursor, 10, std::time::Duration::from_millis(300)).await.unwrap();
    assert_eq!(tail, Read::Reset(ResetReason::Ahead));
    // The cursor before the lost event still reads on: the new event follows it.
    assert_eq!(store.read(&kept.cursor, 10, zero).await.unwrap(), Read::Events(vec![after]));
}

/// The data's version: an empty Redis is stamped with the current one, data written before versions were kept is
/// stamped too, and data of a newer version is refused with a message saying what to do.
#[tokio::test]
async fn data_versions_are_stamped_and_newer_ones_refused() {
    use sitrep_store::{Store, StoreError};
    let redis = RedisProcess::start().expect("redis-server");
    let version = sitrep_store::redis::SCHEMA_VERSION.to_string();
    let fresh = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    fresh.head().await.unwrap();
    assert_eq!(raw(&redis.url(), &["GET", "{sitrep}:schema"]).await, redis::Value::BulkString(version.clone().into()));
    // Unversioned data of the current layout (as an older sitrep left it).
    raw(&redis.url(), &["HSET", "{old}:log", "epoch", "r1", "head", "0-0"]).await;
    let old = RedisStore::connect(RedisOptions { url: redis.url(), key_prefix: "old".into(), ..Default::default() });
    old.await.unwrap().head().await.unwrap();
    assert_eq!(raw(&redis.url(), &["GET", "{old}:schema"]).await, redis::Value::BulkString(version.clone().into()));
    // Version 1 data (before mutual aid): stamped with the current version, its data untouched.
    raw(&redis.url(), &["SET", "{v1}:schema", "1"]).await;
    raw(&redis.url(), &["HSET", "{v1}:log", "epoch", "r1", "head", "0-0"]).await;
    let v1 = RedisStore::connect(RedisOptions { url: redis.url(), key_prefix: "v1".into(), ..Default::default() });
    let v1 = v1.await.unwrap();
    assert_eq!(v1.head().await.unwrap(), sitrep_core::Cursor::new("r1", sitrep_core::cursor::Position(0, 0)));
    assert_eq!(raw(&redis.url(), &["GET", "{v1}:schema"]).await, redis::Value::BulkString(version.into()));
    // A newer version: refused, every time, with what to do.
    raw(&redis.url(), &["SET", "{new}:schema", "99"]).await;
    let new =
        RedisStore::new(RedisOptions { url: redis.url(), key_prefix: "new".into(), ..Default::default() }).unwrap();
    for _ in 0..2 {
        match new.prepare().await {
            Err(StoreError::Incompatible(m)) => {
                assert!(m.contains("{new}:schema") && m.contains("version 99") && m.contains("Upgrade sitrep"), "{m}")
            }
            other => panic!("expected incompatible, got {other:?}"),
        }
    }
    assert!(matches!(new.head().await, Err(StoreError::Incompatible(_))));
}

/// Without Sentinel, a master demoted to a replica (`READONLY`) is a passing condition too: the report is answered
/// UNAVAILABLE, the store makes fresh connections to the URL (which may lead elsewhere by then), and once the
/// server there takes writes again, so does the store.
#[tokio::test]
async fn a_demoted_master_is_unavailable_not_a_failure() {
    use sitrep_store::{Applied, Store, StoreError};
    let redis = RedisProcess::start().expect("redis-server");
    let other = RedisProcess::start().expect("redis-server");
    let store = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.unwrap();
    assert!(matches!(store.apply(&report("RJ7", 1), sitrep_core::Timestamp::now()).await, Ok(Applied::Accepted(_))));
    assert_eq!(redis.command(&format!("REPLICAOF 127.0.0.1 {}", other.port())).unwrap(), "+OK");
    match store.apply(&report("RJ7", 2), sitrep_core::Timestamp::now()).await {
        Err(StoreError::Unavailable { message, .. }) => assert!(message.contains("read only replica"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(redis.command("REPLICAOF NO ONE").unwrap(), "+OK");
    // Its data is now the other server's (empty): the report is new there.
    eventually(std::time::Duration::from_secs(10), "writes are taken again", || async {
        matches!(store.apply(&report("RJ7", 2), sitrep_core::Timestamp::now()).await, Ok(Applied::Accepted(_)))
    })
    .await;
}

/// Not a test: prints how long a mutual aid action takes on each store as the book grows (half of them creates,
/// which read only the index entry of their reference and the request it names, as the cancels read only their own
/// records). Run with `cargo test -p sitrep-store --release --test redis -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement; prints numbers"]
async fn measure_aid_action_time_as_the_book_grows() {
    use sitrep_core::Timestamp;
    use sitrep_core::aid::{Action, Actor, RequestId};
    use sitrep_store::{MemoryStore, Store};
    let redis = RedisProcess::start().expect("start redis-server");
    let on_redis = RedisStore::connect(RedisOptions { url: redis.url(), ..Default::default() }).await.expect("connect");
    let in_memory = MemoryStore::default();
    let stores: [&dyn Store; 2] = [&in_memory, &on_redis];
    for store in stores {
        let actor = Actor { principal: "measure".into(), cursor: store.head().await.expect("head") };
        let mut made = 0u64;
        for target in [10u64, 100, 1000, 5000] {
            // Grow the book: requests with an offer each, then closed, as a year of mutual aid leaves it.
            while made < target {
                let now = Timestamp::now();
                conformance::act(store, conformance::aid_request("RJ7", 1)).await;
                made += 1;
                let cancel = Action::Cancel { request: RequestId(made), reason: "measured".into() };
                store.act(&cancel, &actor, now).await.expect("act");
            }
            let start = std::time::Instant::now();
            let n = 50u64;
            for i in 0..n {
                conformance::act(store, conformance::aid_request("RJ7", 1)).await;
                let cancel = Action::Cancel { request: RequestId(made + i + 1), reason: "measured".into() };
                store.act(&cancel, &actor, Timestamp::now()).await.expect("act");
            }
            made += n;
            let per = start.elapsed() / (2 * n as u32);
            println!(
                "{:>6}: book of {:>5} records: {:>8.2} ms per action",
                store.name(),
                target,
                per.as_secs_f64() * 1e3
            );
        }
    }
}
