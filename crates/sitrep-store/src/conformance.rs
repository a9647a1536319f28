//! The conformance suite: what every [`Store`] backend must do, as `pub async fn` checks.
//!
//! Each check takes a fresh, empty store and panics with a message on failure. A backend's tests call every
//! check (see the memory store's tests; the Redis store runs the same list against a real `redis-server`). The
//! reports used here are validated by `sitrep-core` against the built-in demo directory and NHS England catalogue,
//! with periods relative to the current hour.

use std::collections::BTreeSet;
use std::time::Duration;

use sitrep_core::cursor::Position;
use sitrep_core::profile::{demo_directory, nhs_england_catalogue};
use sitrep_core::{AbsentReason, Cursor, Event, Limits, Report, Selection, Timestamp, ValidReport, Value, validate};

use crate::{Applied, Read, ResetReason, Store};

/// Every check, in order, each on a fresh store from `make`; `small_log` makes a store whose event log keeps
/// only `capacity` events.
pub async fn run_all<S: Store, F: std::future::Future<Output = S>>(
    mut make: impl FnMut() -> F,
    small_log: impl std::future::Future<Output = S>,
    capacity: usize,
) {
    accepts_and_snapshots(&make().await).await;
    duplicate_is_idempotent(&make().await).await;
    diffs_against_live_state(&make().await).await;
    late_reports_go_to_history_only(&make().await).await;
    reads_events_after_a_cursor_in_order(&make().await).await;
    read_wakes_when_an_event_is_appended(&make().await).await;
    resets_foreign_and_future_cursors(&make().await).await;
    concurrent_applies_are_serialised(&make().await).await;
    history_keeps_every_revision(&make().await).await;
    bounded_log_resets_trimmed_cursors(&small_log.await, capacity).await;
}

/// A valid report for `provider`, `hours_ago` hours before the current hour, with the given revision and values.
pub fn report(provider: &str, hours_ago: i64, revision: u32, values: &[(&str, Value)]) -> ValidReport {
    let now = Timestamp::now();
    let r = Report {
        provider: provider.into(),
        period: Some(now.hour_start().add_hours(-hours_ago)),
        revision,
        observed_at: Some(now),
        values: values.iter().map(|(c, v)| (c.to_string(), (*v).into())).collect(),
        narrative: Some(format!("{provider} r{revision}")),
        source: Some("conformance".into()),
        ..Default::default()
    };
    validate(&r, &demo_directory(), &nhs_england_catalogue(), &Limits::default(), now)
        .expect("conformance reports are valid")
}

fn n(x: f64) -> Value {
    Value::Number(x)
}

async fn accept(store: &dyn Store, r: &ValidReport) -> Event {
    match store.apply(r, Timestamp::now()).await.expect("apply") {
        Applied::Accepted(e) => e,
        other => panic!("{}: expected the report to be accepted, got {other:?}", store.name()),
    }
}

async fn events_after(store: &dyn Store, cursor: &Cursor) -> Vec<Event> {
    match store.read(cursor, 1000, Duration::ZERO).await.expect("read") {
        Read::Events(e) => e,
        Read::Reset(r) => panic!("{}: unexpected reset {r:?}", store.name()),
    }
}

/// Accepted reports show up in the snapshot, whose cursor is the last event's; selections filter providers.
pub async fn accepts_and_snapshots(store: &dyn Store) {
    let empty = store.snapshot(&Selection::All).await.expect("snapshot");
    assert!(empty.providers.is_empty());
    assert_eq!(empty.cursor, store.head().await.expect("head"));

    let a =
        accept(store, &report("RJ7", 0, 1, &[("beds.cc_adult.open", n(28.0)), ("beds.cc_adult.occupied", n(25.0))]))
            .await;
    let b = accept(store, &report("RGT", 0, 1, &[("ed.in_department", n(70.0))])).await;
    assert!(a.live && b.live);
    assert!(a.cursor.pos < b.cursor.pos, "cursors increase");
    assert_eq!(a.changes.len(), 2);
    assert!(a.changes.iter().all(|c| c.before.is_none()));

    let snap = store.snapshot(&Selection::All).await.expect("snapshot");
    assert_eq!(snap.cursor, b.cursor);
    assert_eq!(store.head().await.expect("head"), b.cursor);
    let codes: Vec<_> = snap.providers.iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(codes, ["RGT", "RJ7"], "providers in code order");
    let rj7 = &snap.providers[1];
    assert_eq!(rj7.readings["beds.cc_adult.occupied"].value, n(25.0));
    assert_eq!(rj7.revision, 1);
    assert_eq!(rj7.narrative.as_deref(), Some("RJ7 r1"));
    assert_eq!(rj7.source.as_deref(), Some("conformance"));

    let only = store
        .snapshot(&Selection::Only(BTreeSet::from(["RJ7".to_string(), "RAL".to_string()])))
        .await
        .expect("snapshot");
    assert_eq!(only.providers.len(), 1);
    assert_eq!(only.providers[0].provider, "RJ7");
}

/// The same (provider, period, revision) twice is a duplicate with the first event's cursor, and adds no event.
pub async fn duplicate_is_idempotent(store: &dyn Store) {
    let r = report("RJ7", 0, 1, &[("ed.in_department", n(50.0))]);
    let first = accept(store, &r).await;
    let again = store.apply(&r, Timestamp::now()).await.expect("apply");
    assert_eq!(again, Applied::Duplicate { cursor: Some(first.cursor.clone()) });
    // Same key, different content: still a duplicate (the key is the identity), and live state keeps the first.
    let changed = report("RJ7", 0, 1, &[("ed.in_department", n(99.0))]);
    assert!(matches!(store.apply(&changed, Timestamp::now()).await.expect("apply"), Applied::Duplicate { .. }));
    assert_eq!(store.head().await.expect("head"), first.cursor);
    let snap = store.snapshot(&Selection::All).await.expect("snapshot");
    assert_eq!(snap.providers[0].readings["ed.in_department"].value, n(50.0));
}

/// A later revision's event lists exactly the metrics whose values changed, with before and after.
pub async fn diffs_against_live_state(store: &dyn Store) {
    let absent = Value::Absent(AbsentReason::NotAvailable);
    accept(
        store,
        &report("RAL", 1, 1, &[("ed.in_department", n(40.0)), ("ed.over_12h", n(2.0)), ("ed.dta_waiting", n(5.0))]),
    )
    .await;
    let e = accept(
        store,
        &report("RAL", 0, 1, &[("ed.in_department", n(40.0)), ("ed.over_12h", n(3.0)), ("ed.dta_waiting", absent)]),
    )
    .await;
    assert!(e.live);
    let changes: Vec<_> = e.changes.iter().map(|c| (c.metric.as_str(), c.before, c.after)).collect();
    assert_eq!(changes, [("ed.dta_waiting", Some(n(5.0)), absent), ("ed.over_12h", Some(n(2.0)), n(3.0))]);
    // A report that changes nothing still makes an event, with no changes.
    let same = accept(store, &report("RAL", 0, 2, &[("ed.in_department", n(40.0))])).await;
    assert!(same.live && same.changes.is_empty());
    // Unmentioned metrics keep their readings.
    let snap = store.snapshot(&Selection::All).await.expect("snapshot");
    let ral = &snap.providers[0];
    assert_eq!(ral.readings["ed.over_12h"].value, n(3.0));
    assert_eq!(ral.readings["ed.dta_waiting"].value, absent);
    assert_eq!((ral.period, ral.revision), (Timestamp::now().hour_start(), 2));
}

/// Reports for an earlier period, or a lower revision of the latest one, change history but not live state.
pub async fn late_reports_go_to_history_only(store: &dyn Store) {
    accept(store, &report("RGT", 2, 1, &[("ed.in_department", n(10.0))])).await;
    accept(store, &report("RGT", 0, 3, &[("ed.in_department", n(30.0))])).await;
    let late = accept(store, &report("RGT", 2, 2, &[("ed.in_department", n(12.0))])).await;
    assert!(!late.live, "an earlier period is history only");
    assert_eq!(late.changes.len(), 1);
    assert_eq!(late.changes[0].before, Some(n(10.0)), "diffs against the previous revision of its period");
    let lower = accept(store, &report("RGT", 0, 2, &[("ed.in_department", n(20.0))])).await;
    assert!(!lower.live, "a lower revision of the latest period is history only");
    assert_eq!(lower.changes[0].before, None, "no earlier revision of that period");
    let new_old_period = accept(store, &report("RGT", 5, 1, &[("ed.in_department", n(5.0))])).await;
    assert!(!new_old_period.live);
    let snap = store.snapshot(&Selection::All).await.expect("snapshot");
    assert_eq!(snap.providers[0].readings["ed.in_department"].value, n(30.0));
    assert_eq!(snap.providers[0].revision, 3);
    assert_eq!(snap.cursor, new_old_period.cursor, "late events are still events");
}

/// Reading after a cursor yields exactly the later events, in order, honouring `max`.
pub async fn reads_events_after_a_cursor_in_order(store: &dyn Store) {
    let start = store.head().await.expect("head");
    let mut cursors = Vec::new();
    for (i, p) in ["RJ7", "RGT", "RAL", "RM1", "RJ7"].iter().enumerate() {
        let e = accept(store, &report(p, 0, i as u32 + 1, &[("flow.discharges", n(i as f64))])).await;
        cursors.push(e.cursor);
    }
    let all = events_after(store, &start).await;
    assert_eq!(all.iter().map(|e| e.cursor.clone()).collect::<Vec<_>>(), cursors);
    let tail = events_after(store, &cursors[1]).await;
    assert_eq!(tail.iter().map(|e| e.cursor.clone()).collect::<Vec<_>>(), cursors[2..]);
    match store.read(&start, 2, Duration::ZERO).await.expect("read") {
        Read::Events(e) => assert_eq!(e.len(), 2),
        other => panic!("{other:?}"),
    }
    // At the head, a read with a short wait returns no events.
    match store.read(&cursors[4], 10, Duration::from_millis(50)).await.expect("read") {
        Read::Events(e) => assert!(e.is_empty()),
        other => panic!("{other:?}"),
    }
}

/// A read waiting at the head returns as soon as an event is appended (well before its wait runs out).
pub async fn read_wakes_when_an_event_is_appended(store: &dyn Store) {
    let head = store.head().await.expect("head");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let waiter = async {
        let _ = started_tx.send(());
        let r = store.read(&head, 10, Duration::from_secs(30)).await;
        let _ = tx.send(r);
    };
    let writer = async {
        let _ = started_rx.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        accept(store, &report("RJ7", 0, 1, &[("ed.in_department", n(1.0))])).await
    };
    let ((), written) = tokio::join!(waiter, writer);
    match rx.await.expect("read finished").expect("read") {
        Read::Events(e) => assert_eq!(e, vec![written], "the waiting read returns the new event"),
        other => panic!("{other:?}"),
    }
}

/// Cursors of another epoch, or beyond the head, are answered with a reset.
pub async fn resets_foreign_and_future_cursors(store: &dyn Store) {
    let e = accept(store, &report("RJ7", 0, 1, &[("ed.in_department", n(1.0))])).await;
    let foreign = Cursor::new("someotherepoch", e.cursor.pos);
    assert_eq!(store.read(&foreign, 10, Duration::ZERO).await.expect("read"), Read::Reset(ResetReason::OtherEpoch));
    let ahead = Cursor::new(e.cursor.epoch.clone(), Position(e.cursor.pos.0 + 1_000_000, 0));
    assert_eq!(store.read(&ahead, 10, Duration::ZERO).await.expect("read"), Read::Reset(ResetReason::Ahead));
}

/// With a log bounded to keep at least `capacity` events, a cursor whose successors were trimmed is reset while
/// the most recent `capacity` cursors still read. (Backends may trim approximately, as Redis's `MAXLEN ~` does by
/// whole stream nodes, so the check writes until trimming shows, within a bound.)
pub async fn bounded_log_resets_trimmed_cursors(store: &dyn Store, capacity: usize) {
    let start = store.head().await.expect("head");
    let mut cursors = Vec::new();
    let bound = capacity + 250;
    loop {
        let i = cursors.len();
        assert!(
            i < bound,
            "{}: the log still holds all {i} events; it is not bounded to about {capacity}",
            store.name()
        );
        cursors.push(accept(store, &report("RJ7", 0, i as u32 + 1, &[("flow.discharges", n(i as f64))])).await.cursor);
        if i >= capacity
            && store.read(&start, 1, Duration::ZERO).await.expect("read") == Read::Reset(ResetReason::TooOld)
        {
            break;
        }
    }
    let recent = &cursors[cursors.len() - capacity];
    assert_eq!(events_after(store, recent).await.len(), capacity - 1);
}

/// Many concurrent applies each get their own event, none lost, cursors unique and increasing in log order.
pub async fn concurrent_applies_are_serialised(store: &dyn Store) {
    let start = store.head().await.expect("head");
    let providers = ["RJ7", "RVR", "RAX", "RJ6", "RRV", "RAL", "RKE", "RAP"];
    let tasks = providers.iter().flat_map(|p| (1..=10u32).map(move |rev| (*p, rev))).map(|(p, rev)| async move {
        accept(store, &report(p, 0, rev, &[("flow.discharges", n(f64::from(rev)))])).await
    });
    let accepted = futures_util::future::join_all(tasks).await;
    let log = events_after(store, &start).await;
    assert_eq!(log.len(), accepted.len());
    let unique: BTreeSet<_> = log.iter().map(|e| e.cursor.pos).collect();
    assert_eq!(unique.len(), log.len());
    assert!(log.windows(2).all(|w| w[0].cursor.pos < w[1].cursor.pos));
    let snap = store.snapshot(&Selection::All).await.expect("snapshot");
    assert_eq!(snap.providers.len(), providers.len());
    assert!(snap.providers.iter().all(|p| p.revision == 10 && p.readings["flow.discharges"].value == n(10.0)));
}

/// History keeps every revision of every period, with what each said, in (period, revision) order; late reports
/// included.
pub async fn history_keeps_every_revision(store: &dyn Store) {
    let absent = Value::Absent(AbsentReason::Suppressed);
    accept(store, &report("RAL", 3, 1, &[("ed.in_department", n(30.0))])).await;
    accept(store, &report("RAL", 1, 1, &[("ed.in_department", n(31.0)), ("ed.over_12h", absent)])).await;
    accept(store, &report("RAL", 1, 2, &[("ed.in_department", n(32.0))])).await;
    accept(store, &report("RAL", 2, 1, &[("ed.in_department", n(33.0))])).await; // late
    accept(store, &report("RGT", 1, 1, &[("ed.in_department", n(99.0))])).await;
    let hour = Timestamp::now().hour_start();
    let all = store.history("RAL", hour.add_hours(-24), hour).await.expect("history");
    let keys: Vec<_> = all.iter().map(|h| (h.period, h.revision)).collect();
    assert_eq!(
        keys,
        [(hour.add_hours(-3), 1), (hour.add_hours(-2), 1), (hour.add_hours(-1), 1), (hour.add_hours(-1), 2)]
    );
    assert_eq!(all[2].values["ed.over_12h"], absent);
    assert_eq!(all[3].values["ed.in_department"], n(32.0));
    assert_eq!(all[3].narrative.as_deref(), Some("RAL r2"));
    assert_eq!(all[3].source.as_deref(), Some("conformance"));
    let some = store.history("RAL", hour.add_hours(-2), hour.add_hours(-2)).await.expect("history");
    assert_eq!(some.len(), 1);
    assert!(store.history("RM1", hour.add_hours(-24), hour).await.expect("history").is_empty());
}
