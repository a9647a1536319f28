//! The conformance suite: what every [`Store`] backend must do, as `pub async fn` checks.
//!
//! Each check takes a fresh, empty store and panics with a message on failure. A backend's tests make each check
//! a test of its own with [`conformance_tests!`](crate::conformance_tests) (see the memory store's tests; the
//! Redis store runs the same list against a real `redis-server`). Built only for tests, and for users that enable
//! the `test-support` feature. The
//! reports used here are validated by `sitrep-core` against the built-in demo directory and NHS England catalogue,
//! with periods relative to the current hour. What a store holds is looked at the way the aggregator does: as the
//! [`Picture`] folded from what [`Store::load`] returns and the log after it.

use std::collections::BTreeSet;
use std::time::Duration;

use sitrep_core::cursor::Position;
use sitrep_core::profile::{demo_directory, nhs_england_catalogue};
use sitrep_core::{
    AbsentReason, AlertKind, Cursor, Event, EventKind, Limits, Picture, PictureSnapshot, Rag, Report, Rules, Selection,
    Timestamp, TraceContext, ValidReport, Value, validate,
};

use sitrep_core::aid::{
    Action, Actor, AidBook, AidEvent, Constraints, HoldEnd, Kind, NewRequest, OfferId, RequestId, RequestState, Urgency,
};

use crate::{Acted, Applied, Read, ResetReason, Store};

/// Makes every check of the suite a test of its own (so one failure hides none of the others), run on stores
/// from `$harness`, a type of the calling test module that provides, per test:
///
/// - `fn new() -> Self`: whatever the test's stores need for its life (a server, a key prefix);
/// - `async fn fresh(&self) -> impl Store`: a fresh, empty store;
/// - `async fn small_log(&self, capacity: usize) -> impl Store`: one whose event log keeps `capacity` events;
/// - `async fn short_history(&self, retention_hours: i64) -> impl Store`: one that keeps that much history;
/// - `async fn replicas(&self) -> [std::sync::Arc<dyn Store>; 2]`: two handles on one store, as two aggregator
///   replicas would hold.
///
/// The list of checks is written here once, for every backend; a further test, `every_check_of_the_suite_runs`,
/// fails if a public check of this module is missing from it.
#[macro_export]
macro_rules! conformance_tests {
    (@fresh $harness:ident; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $harness::new();
                $crate::conformance::$check(&harness.fresh().await).await;
            }
        )*

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn bounded_log_resets_trimmed_cursors() {
            let harness = $harness::new();
            $crate::conformance::bounded_log_resets_trimmed_cursors(&harness.small_log(3).await, 3).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn history_is_trimmed_to_retention() {
            let harness = $harness::new();
            $crate::conformance::history_is_trimmed_to_retention(&harness.short_history(2).await, 2).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn aid_races_take_one_of_two() {
            let harness = $harness::new();
            let [a, b] = harness.replicas().await;
            $crate::conformance::aid_races_take_one_of_two(&*a, &*b).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn aid_retried_creates_make_one_request() {
            let harness = $harness::new();
            let [a, b] = harness.replicas().await;
            $crate::conformance::aid_retried_creates_make_one_request(&*a, &*b).await;
        }

        #[test]
        fn every_check_of_the_suite_runs() {
            $crate::conformance::assert_every_check_runs(&[
                $(stringify!($check),)*
                "bounded_log_resets_trimmed_cursors",
                "history_is_trimmed_to_retention",
                "aid_races_take_one_of_two",
                "aid_retried_creates_make_one_request",
            ]);
        }
    };
    ($harness:ident) => {
        $crate::conformance_tests!(@fresh $harness;
            accepts_and_snapshots,
            a_seen_key_is_a_duplicate_or_a_conflict,
            revisions_are_given_when_missing,
            sites_report_apart,
            diffs_against_live_state,
            late_reports_go_to_history_only,
            reads_events_after_a_cursor_in_order,
            events_carry_their_reports_trace_context,
            read_wakes_when_an_event_is_appended,
            resets_foreign_and_future_cursors,
            concurrent_applies_are_serialised,
            history_keeps_every_revision,
            histories_are_each_providers_history,
            derives_in_the_same_step,
            rollups_match_a_fresh_count,
            stale_is_raised_once_and_cleared_by_a_report,
            load_and_replay_is_the_fold_of_the_whole_log,
            random_sequences_fold_into_a_fresh_count,
            aid_actions_change_the_book_and_holds_in_one_step,
        );
    };
}

/// The checks of this suite: its public `async fn`s that return nothing (the helpers, [`picture`] and [`act`],
/// return what they found), read from this file's own text so that a new check is counted without being listed.
pub fn checks() -> Vec<&'static str> {
    let source = include_str!("conformance.rs");
    let mut checks = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("\npub async fn ") {
        rest = &rest[at + "\npub async fn ".len()..];
        let name = &rest[..rest.find('(').expect("a parameter list")];
        let signature = &rest[..rest.find('{').expect("a body")];
        if !signature.contains("->") {
            checks.push(name);
        }
    }
    checks
}

/// Panics unless `run` names every check of the suite (see [`conformance_tests!`]).
pub fn assert_every_check_runs(run: &[&str]) {
    let missing: Vec<&str> = checks().into_iter().filter(|c| !run.contains(c)).collect();
    assert!(missing.is_empty(), "conformance checks no test runs (add them to conformance_tests!): {missing:?}");
}

/// The picture of what `store` holds, as an aggregator starting now would fold it: the loaded states, then every
/// later event of the log.
pub async fn picture(store: &dyn Store) -> Picture {
    let loaded = store.load().await.expect("load");
    let mut picture = Picture::with_aid(Rules::demo(), loaded.cursor, loaded.providers, loaded.aid);
    loop {
        match store.read(picture.cursor(), 1000, Duration::ZERO).await.expect("read") {
            Read::Events(events) if events.is_empty() => return picture,
            Read::Events(events) => {
                for e in &events {
                    picture.apply(e).expect("the log folds without gaps");
                }
            }
            Read::Reset(r) => panic!("{}: reset {r:?} while folding the log", store.name()),
        }
    }
}

async fn snapshot(store: &dyn Store, selection: &Selection) -> PictureSnapshot {
    picture(store).await.snapshot(selection)
}

/// A valid report for `provider`, `hours_ago` hours before the current hour, with the given revision and values.
pub fn report(provider: &str, hours_ago: i64, revision: u32, values: &[(&str, Value)]) -> ValidReport {
    site_report(provider, None, hours_ago, revision, values)
}

/// [`report`], from one of the provider's sites (`None`: the provider as a whole).
pub fn site_report(
    provider: &str,
    site: Option<&str>,
    hours_ago: i64,
    revision: u32,
    values: &[(&str, Value)],
) -> ValidReport {
    let now = Timestamp::now();
    let r = Report {
        provider: provider.into(),
        site: site.map(str::to_owned),
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
    let empty = snapshot(store, &Selection::All).await;
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

    let snap = snapshot(store, &Selection::All).await;
    assert_eq!(snap.cursor, b.cursor);
    assert_eq!(store.head().await.expect("head"), b.cursor);
    let codes: Vec<_> = snap.providers.iter().map(|p| p.provider.as_str()).collect();
    assert_eq!(codes, ["RGT", "RJ7"], "providers in code order");
    let rj7 = &snap.providers[1];
    assert_eq!(rj7.readings["beds.cc_adult.occupied"].value, n(25.0));
    assert_eq!(rj7.revision, 1);
    assert_eq!(rj7.narrative.as_deref(), Some("RJ7 r1"));
    assert_eq!(rj7.source.as_deref(), Some("conformance"));

    let only = snapshot(store, &Selection::Only(BTreeSet::from(["RJ7".to_string(), "RAL".to_string()]))).await;
    assert_eq!(only.providers.len(), 1);
    assert_eq!(only.providers[0].provider, "RJ7");
}

/// The same (provider, period, revision) twice is a duplicate with the first event's cursor, and adds no event.
pub async fn a_seen_key_is_a_duplicate_or_a_conflict(store: &dyn Store) {
    let r = report("RJ7", 0, 1, &[("ed.in_department", n(50.0))]);
    let first = accept(store, &r).await;
    let again = store.apply(&r, Timestamp::now()).await.expect("apply");
    assert_eq!(again, Applied::Duplicate { cursor: Some(first.cursor.clone()) });
    // Same key, other content: a conflict, never a duplicate; nothing changes, and the answer names the next
    // revision the period has free.
    let changed = report("RJ7", 0, 1, &[("ed.in_department", n(99.0))]);
    assert_eq!(
        store.apply(&changed, Timestamp::now()).await.expect("apply"),
        Applied::Conflict { cursor: Some(first.cursor.clone()), next_revision: 2 }
    );
    assert_eq!(store.head().await.expect("head"), first.cursor);
    let snap = snapshot(store, &Selection::All).await;
    assert_eq!(snap.providers[0].readings["ed.in_department"].value, n(50.0));
    // A later revision of the period, then a conflict on the first: the next free revision is after the highest.
    accept(store, &report("RJ7", 0, 4, &[("ed.in_department", n(51.0))])).await;
    let next = match store.apply(&changed, Timestamp::now()).await.expect("apply") {
        Applied::Conflict { next_revision, .. } => next_revision,
        other => panic!("{}: expected a conflict, got {other:?}", store.name()),
    };
    assert_eq!(next, 5, "{}", store.name());
}

/// Sites are part of a report's key: two sites' revision 1 of one hour are both accepted, each site's revisions,
/// duplicates, conflicts and late reports are its own, and the provider's figures are the sum of its sites'.
pub async fn sites_report_apart(store: &dyn Store) {
    let name = store.name();
    let beds = |open: f64, occupied: f64| [("beds.cc_adult.open", n(open)), ("beds.cc_adult.occupied", n(occupied))];
    let a1 = site_report("RJ7", Some("RJ701"), 0, 1, &beds(20.0, 15.0));
    let b1 = site_report("RJ7", Some("RJ731"), 0, 1, &beds(12.0, 11.0));
    let first = accept(store, &a1).await;
    let second = accept(store, &b1).await;
    assert_eq!(second.site.as_deref(), Some("RJ731"));
    assert!(second.changes.iter().all(|c| c.before.is_none()), "{name}: the second site's values are its own");
    assert_eq!(
        store.apply(&a1, Timestamp::now()).await.expect("apply"),
        Applied::Duplicate { cursor: Some(first.cursor.clone()) }
    );
    let changed = site_report("RJ7", Some("RJ701"), 0, 1, &beds(21.0, 15.0));
    assert_eq!(
        store.apply(&changed, Timestamp::now()).await.expect("apply"),
        Applied::Conflict { cursor: Some(first.cursor.clone()), next_revision: 2 },
        "{name}: a conflict names the site's next revision"
    );
    // The provider as a whole has its own revisions, and a revision 0 from a site gets that site's next.
    accept(store, &report("RJ7", 0, 1, &[("ed.over_12h", n(3.0))])).await;
    let given = accept(store, &site_report("RJ7", Some("RJ731"), 0, 0, &beds(12.0, 10.0))).await;
    assert_eq!(given.revision, 2, "{name}");
    // A late report of one site diffs against that site's previous revision.
    accept(store, &site_report("RJ7", Some("RJ701"), 1, 2, &beds(18.0, 12.0))).await;
    accept(store, &site_report("RJ7", Some("RJ731"), 1, 1, &beds(9.0, 9.0))).await;
    let late = accept(store, &site_report("RJ7", Some("RJ701"), 1, 3, &beds(18.0, 13.0))).await;
    assert!(!late.live);
    let before: Vec<_> = late.changes.iter().map(|c| (c.metric.as_str(), c.before)).collect();
    assert_eq!(before, [("beds.cc_adult.occupied", Some(n(12.0)))], "{name}: diffed against RJ701's revision 2");

    let snap = snapshot(store, &Selection::All).await;
    let rj7 = &snap.providers[0];
    assert_eq!(rj7.readings["beds.cc_adult.open"].value, n(32.0), "{name}: the sum of the sites");
    assert_eq!(rj7.readings["beds.cc_adult.occupied"].value, n(25.0), "{name}");
    assert_eq!(rj7.readings["ed.over_12h"].value, n(3.0), "{name}: the whole's own");
    let sites: Vec<(&str, u32)> = rj7.sites.iter().map(|(k, s)| (k.as_str(), s.revision)).collect();
    assert_eq!(sites, [("", 1), ("RJ701", 1), ("RJ731", 2)], "{name}");
    let free = rj7.figures.iter().find(|f| f.metric == "beds.cc_adult.free").and_then(|f| f.value);
    assert_eq!(free, Some(7.0), "{name}: the provider's figures are made from its sites' sums");
    let now = Timestamp::now().hour_start();
    let history = store.history("RJ7", now.add_hours(-1), now).await.expect("history");
    let keys: BTreeSet<(Option<&str>, i64, u32)> =
        history.iter().map(|h| (h.site.as_deref(), h.period.millis(), h.revision)).collect();
    assert_eq!(keys.len(), 7, "{name}: every site's revisions are kept apart: {keys:?}");
}

/// A report sent without a revision (0) is given the next its period has: after the live revision in the live
/// period, 1 in a new period, and after the highest in history for an earlier period (a late report).
pub async fn revisions_are_given_when_missing(store: &dyn Store) {
    let given = |e: &Event| (e.revision, e.live);
    let first = accept(store, &report("RGT", 0, 0, &[("ed.in_department", n(10.0))])).await;
    assert_eq!(given(&first), (1, true), "{}", store.name());
    let second = accept(store, &report("RGT", 0, 0, &[("ed.in_department", n(11.0))])).await;
    assert_eq!(given(&second), (2, true), "{}", store.name());
    accept(store, &report("RGT", 0, 7, &[("ed.in_department", n(12.0))])).await;
    let after_seven = accept(store, &report("RGT", 0, 0, &[("ed.over_12h", n(1.0))])).await;
    assert_eq!(given(&after_seven), (8, true), "{}", store.name());
    // Partial updates combine: the metric the last report did not name keeps its value.
    let snap = snapshot(store, &Selection::All).await;
    let readings = &snap.providers[0].readings;
    assert_eq!((readings["ed.in_department"].value, readings["ed.over_12h"].value), (n(12.0), n(1.0)));
    // An earlier period: after what history holds for it, and late (history only).
    let late_empty = accept(store, &report("RGT", 2, 0, &[("ed.in_department", n(5.0))])).await;
    assert_eq!(given(&late_empty), (1, false), "{}", store.name());
    accept(store, &report("RGT", 2, 3, &[("ed.in_department", n(6.0))])).await;
    let late = accept(store, &report("RGT", 2, 0, &[("ed.in_department", n(7.0))])).await;
    assert_eq!(given(&late), (4, false), "{}", store.name());
    let history = store
        .history("RGT", Timestamp::now().hour_start().add_hours(-2), Timestamp::now().hour_start())
        .await
        .expect("history");
    let keys: Vec<(i64, u32)> = history
        .iter()
        .map(|h| ((Timestamp::now().hour_start().millis() - h.period.millis()) / 3_600_000, h.revision))
        .collect();
    assert_eq!(keys, [(2, 1), (2, 3), (2, 4), (0, 1), (0, 2), (0, 7), (0, 8)], "{}", store.name());
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
    let snap = snapshot(store, &Selection::All).await;
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
    let skipped = accept(store, &report("RGT", 2, 4, &[("ed.in_department", n(14.0))])).await;
    assert_eq!(skipped.changes[0].before, Some(n(12.0)), "the latest revision below it, with revision 3 never sent");
    let lower = accept(store, &report("RGT", 0, 2, &[("ed.in_department", n(20.0))])).await;
    assert!(!lower.live, "a lower revision of the latest period is history only");
    assert_eq!(lower.changes[0].before, None, "no earlier revision of that period");
    let new_old_period = accept(store, &report("RGT", 5, 1, &[("ed.in_department", n(5.0))])).await;
    assert!(!new_old_period.live);
    let snap = snapshot(store, &Selection::All).await;
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

/// A traced report's event carries its trace context (like a message's headers) as applied and as read from the
/// log; an untraced report's carries none.
pub async fn events_carry_their_reports_trace_context(store: &dyn Store) {
    let start = store.head().await.expect("head");
    let trace = TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: "congo=t61rcWkgMzE".into(),
    };
    let traced = report("RJ7", 0, 1, &[("flow.discharges", n(1.0))]).traced(Some(trace.clone()));
    let applied = accept(store, &traced).await;
    assert_eq!(applied.trace.as_ref(), Some(&trace), "{}: the applied event", store.name());
    accept(store, &report("RGT", 0, 1, &[("flow.discharges", n(2.0))])).await;
    let read = events_after(store, &start).await;
    let traces: Vec<_> = read.iter().map(|e| e.trace.clone()).collect();
    assert_eq!(traces, [Some(trace), None], "{}: the events read from the log", store.name());
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
    let counted = |n: Option<u64>| n.expect("the backend counts its log");
    let before = counted(store.event_log_length().await.expect("log length"));
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
    // The length an operator sees: what was appended, less what was trimmed (approximately, on Redis).
    let length = counted(store.event_log_length().await.expect("log length"));
    assert!(
        length >= capacity as u64 && length < before + cursors.len() as u64,
        "{}: {length} events counted after {} appended to a log of {capacity}",
        store.name(),
        cursors.len()
    );
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
    let snap = snapshot(store, &Selection::All).await;
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

/// A batch read of many providers' history gives each exactly what its own history read gives, across the pieces
/// a backend reads in; providers with nothing in the range are left out.
pub async fn histories_are_each_providers_history(store: &dyn Store) {
    accept(store, &report("RAL", 2, 1, &[("ed.in_department", n(30.0))])).await;
    accept(store, &report("RAL", 1, 1, &[("ed.in_department", n(31.0))])).await;
    accept(store, &report("RGT", 1, 1, &[("ed.in_department", n(99.0))])).await;
    accept(store, &report("RGT", 1, 2, &[("ed.in_department", n(98.0))])).await;
    let hour = Timestamp::now().hour_start();
    let (from, to) = (hour.add_hours(-24), hour);
    // More providers than one piece, the ones with history last.
    let mut providers: Vec<String> = (0..crate::HISTORY_PIECE + 3).map(|i| format!("NONE{i}")).collect();
    providers.extend(["RAL".to_owned(), "RM1".to_owned(), "RGT".to_owned()]);
    let all = store.histories(&providers, from, to).await.expect("histories");
    assert_eq!(all.keys().collect::<Vec<_>>(), ["RAL", "RGT"], "only providers with history in the range");
    for p in ["RAL", "RGT"] {
        assert_eq!(all[p], store.history(p, from, to).await.expect("history"), "{p}");
    }
    assert_eq!(all["RGT"].len(), 2);
    let one_hour = store.histories(&providers, hour.add_hours(-2), hour.add_hours(-2)).await.expect("histories");
    assert_eq!(one_hour.keys().collect::<Vec<_>>(), ["RAL"]);
    assert!(store.histories(&providers, to, from).await.expect("histories").is_empty(), "an empty range");
}

/// Whether the picture of `store` is the one counted afresh from its providers' live states.
async fn assert_picture_is_counted_afresh(store: &dyn Store) {
    let folded = picture(store).await;
    let states = folded.providers().map(|p| (**p).clone()).collect::<Vec<_>>();
    let book = folded.aid();
    let records = AidBook::from_records(
        book.version(),
        book.requests().cloned().collect(),
        book.requests().flat_map(|r| book.offers_of(r.id).cloned()).collect(),
    );
    let fresh = Picture::with_aid(Rules::demo(), folded.cursor().clone(), states, records);
    assert_eq!(folded, fresh, "{}: the folded picture is the one counted afresh", store.name());
}

/// After a random sequence of reports (as a whole and by site, corrections, absences, late and repeated reports,
/// reports without a revision) and stale transitions, the picture folded from the whole log holds exactly the
/// stored live states, and every scope's running totals equal a fresh count from them. Seeded: a failure names
/// its seed.
pub async fn random_sequences_fold_into_a_fresh_count(store: &dyn Store) {
    // xorshift64*: small, seedable, reproducible.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }
    const PROVIDERS: [(&str, &[&str]); 4] =
        [("RJ7", &["RJ701", "RJ731"]), ("RVR", &["RVR05", "RVR50"]), ("RGT", &[]), ("RAL", &["RAL01"])];
    const METRICS: [&str; 6] = [
        "beds.cc_adult.open",
        "beds.cc_adult.occupied",
        "opel.level",
        "ambulance.handover_mean_minutes",
        "ed.over_12h",
        "staff.absence_percent",
    ];
    let seed = 0x5EED_0000 + u64::from(Timestamp::now().millis() as u32);
    let mut rng = Rng(seed | 1);
    let absent = Value::Absent(AbsentReason::NotAvailable);
    for step in 0..160 {
        if rng.below(12) == 0 {
            // The clock, a few hours on: some providers go stale.
            let later = Timestamp::now().add_hours(3 + rng.below(3) as i64);
            for (p, _) in PROVIDERS {
                store.mark_stale(p, later).await.expect("mark stale");
            }
            continue;
        }
        let (provider, sites) = PROVIDERS[rng.below(PROVIDERS.len() as u64) as usize];
        let site = match rng.below(3) as usize {
            0 => None,
            i => sites.get(i - 1).copied(),
        };
        let mut values = Vec::new();
        for m in METRICS {
            if rng.below(2) == 0 {
                let v = match (m, rng.below(8)) {
                    (_, 0) => absent,
                    ("opel.level", x) => n(1.0 + (x % 4) as f64),
                    ("ambulance.handover_mean_minutes", _) => n(rng.below(2000) as f64 / 7.0),
                    ("staff.absence_percent", _) => n(rng.below(1000) as f64 / 10.0),
                    // No more occupied beds than open ones (validation's `at_most`).
                    ("beds.cc_adult.occupied", _) => match values.first() {
                        Some((_, Value::Number(open))) => n(rng.below(*open as u64 + 1) as f64),
                        _ => n(rng.below(60) as f64),
                    },
                    _ => n(rng.below(60) as f64),
                };
                values.push((m, v));
            }
        }
        if values.is_empty() {
            values.push(("ed.over_12h", n(1.0)));
        }
        let r = site_report(provider, site, rng.below(3) as i64, rng.below(5) as u32, &values);
        store.apply(&r, Timestamp::now()).await.unwrap_or_else(|e| panic!("seed {seed}, step {step}: {e}"));
    }
    let loaded = store.load().await.expect("load");
    let head = store.head().await.expect("head");
    let start = Cursor::new(head.epoch.clone(), Position(0, 0));
    let mut folded = Picture::new(Rules::demo(), start.clone());
    for e in &events_after(store, &start).await {
        folded.apply(e).unwrap_or_else(|gap| panic!("seed {seed}: {gap}"));
    }
    let stored = Picture::from_states(Rules::demo(), head, loaded.providers);
    assert_eq!(folded, stored, "{} (seed {seed}): the fold of the whole log is the stored live state", store.name());
    assert!(stored.providers().any(|p| p.sites.len() > 1), "seed {seed}: some provider reported by site");
    assert_picture_is_counted_afresh(store).await;
}

/// The rollups `event` changed, as an aggregator's picture computes them when it folds the event in (folding the
/// log from its start, which these checks' logs still hold).
async fn rollups_of(store: &dyn Store, event: &Event) -> Vec<sitrep_core::rollup::ScopeRollup> {
    let start = Cursor::new(event.cursor.epoch.clone(), Position(0, 0));
    let mut picture = Picture::new(Rules::demo(), start.clone());
    for e in &events_after(store, &start).await {
        let rollups = picture.apply(e).expect("no gap");
        if e.cursor == event.cursor {
            return rollups;
        }
    }
    panic!("{}: event {} is not in the log", store.name(), event.cursor)
}

/// A report that takes a provider's critical care into red carries, in its one event, the provider's new figures
/// and ratings and the raised alert; folded in, it changes its system's, region's and nation's rollups; the alert
/// stays open (in the stored state and the picture) until a report takes it out of red.
pub async fn derives_in_the_same_step(store: &dyn Store) {
    accept(store, &report("RVR", 0, 1, &[("beds.cc_adult.open", n(10.0)), ("beds.cc_adult.occupied", n(5.0))])).await;
    accept(store, &report("RJ7", 0, 1, &[("beds.cc_adult.open", n(20.0)), ("beds.cc_adult.occupied", n(15.0))])).await;
    let e = accept(store, &report("RJ7", 0, 2, &[("beds.cc_adult.occupied", n(19.0))])).await;
    let figure = e.derived.figures.iter().find(|f| f.metric == "beds.cc_adult.occupancy").expect("occupancy");
    assert_eq!((figure.value, figure.rag), (Some(95.0), Some(Rag::Red)));
    let raised: Vec<_> = e.derived.raised.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(raised, ["threshold:RJ7:beds.cc_adult.occupancy"]);
    assert!(e.rollups.is_empty(), "rollups are the picture's, not stored");
    let rollups = rollups_of(store, &e).await;
    let scopes: Vec<String> = rollups.iter().map(|r| r.scope.to_string()).collect();
    assert_eq!(scopes, ["system:QWE", "region:Y56", "nation:ENG"]);
    for r in &rollups {
        let occ = r.metrics.iter().find(|m| m.metric == "beds.cc_adult.occupancy").expect("occupancy rollup");
        // (19 + 5) / (20 + 10): recomputed from the sums.
        assert_eq!((occ.value, occ.n, occ.rag), (Some(80.0), 2, Some(Rag::Green)), "{}", r.scope);
        assert_eq!(r.reporting, 2);
    }
    let folded = picture(store).await;
    let rj7 = folded.provider("RJ7").expect("RJ7");
    assert_eq!(rj7.alerts.len(), 1);
    let stored = store.load().await.expect("load");
    let stored_rj7 = stored.providers.iter().find(|p| p.provider == "RJ7").expect("stored RJ7");
    assert_eq!(stored_rj7.alerts, rj7.alerts, "the stored state keeps the open alerts");
    assert_eq!(folded.alerts(&Selection::All).iter().map(|a| a.kind).collect::<Vec<_>>(), [AlertKind::Threshold]);
    assert_picture_is_counted_afresh(store).await;

    let out = accept(store, &report("RJ7", 0, 3, &[("beds.cc_adult.occupied", n(12.0))])).await;
    let cleared: Vec<_> = out.derived.cleared.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(cleared, ["threshold:RJ7:beds.cc_adult.occupancy"]);
    assert!(picture(store).await.alerts(&Selection::All).is_empty());
    // A report into history only derives nothing.
    let late = accept(store, &report("RJ7", 3, 1, &[("beds.cc_adult.occupied", n(20.0))])).await;
    assert!(!late.live && late.derived.is_empty() && rollups_of(store, &late).await.is_empty());
}

/// The picture folded from the log agrees with counting afresh after values appear, change, become absent and
/// providers come and go; the events' rollups are the fresh count's for the metrics they changed.
pub async fn rollups_match_a_fresh_count(store: &dyn Store) {
    let absent = Value::Absent(AbsentReason::NotAvailable);
    type Step<'a> = (&'a str, u32, &'a [(&'a str, Value)]);
    let steps: [Step<'_>; 9] = [
        ("RJ7", 1, &[("beds.ga_adult.open", n(500.0)), ("beds.ga_adult.occupied", n(480.0)), ("opel.level", n(3.0))]),
        ("RVR", 1, &[("beds.ga_adult.open", n(300.0)), ("beds.ga_adult.occupied", n(200.0)), ("opel.level", n(4.0))]),
        ("RGT", 1, &[("ambulance.handover_mean_minutes", n(31.5)), ("opel.level", n(2.0))]),
        ("RJ7", 2, &[("ambulance.handover_mean_minutes", n(17.25)), ("beds.ga_adult.occupied", absent)]),
        ("RVR", 2, &[("opel.level", n(2.0)), ("staff.absence_percent", n(4.1))]),
        ("RAL", 1, &[("staff.absence_percent", n(6.3)), ("beds.ga_adult.open", n(0.0))]),
        // A typo of the largest plausible number of minutes (with more decimals than totals keep), corrected: the
        // running totals must come back exactly.
        ("RJ7", 3, &[("beds.ga_adult.occupied", n(450.0)), ("ambulance.handover_mean_minutes", n(10_079.123_456_789))]),
        ("RJ7", 4, &[("ambulance.handover_mean_minutes", n(0.1))]),
        ("RGT", 2, &[("opel.level", absent), ("ambulance.handover_mean_minutes", n(0.2))]),
    ];
    let mut last = None;
    for (provider, revision, values) in steps {
        last = Some(accept(store, &report(provider, 0, revision, values)).await);
    }
    assert_picture_is_counted_afresh(store).await;
    let folded = picture(store).await;
    let all = folded.rollups(&Rules::demo().scopes(), None);
    let nation = all.last().expect("nation");
    let get = |m: &str| nation.metrics.iter().find(|v| v.metric == m).map(|v| (v.value, v.n)).expect(m);
    assert_eq!(get("opel.level"), (Some(3.0), 2), "maximum over RJ7 (3) and RVR (2); RGT's is absent");
    assert_eq!(get("ambulance.handover_mean_minutes"), (Some(0.15), 2), "the typo left no residue");
    // The last event's rollups are the fresh count's, for the metrics it changed.
    let last = last.expect("events");
    for r in &rollups_of(store, &last).await {
        let want = all.iter().find(|f| f.scope == r.scope).expect("scope");
        for m in &r.metrics {
            let w = want.metrics.iter().find(|w| w.metric == m.metric);
            assert_eq!(m.value, w.and_then(|w| w.value), "{} of {}", m.metric, r.scope);
        }
    }
    // A selection's snapshot carries the rollups of its scopes only.
    let only = snapshot(store, &Selection::Only(BTreeSet::from(["RGT".to_string()]))).await;
    let scopes: Vec<String> = only.rollups.iter().map(|r| r.scope.to_string()).collect();
    assert_eq!(scopes, ["system:QUE", "region:Y61", "nation:ENG"]);
}

/// A quiet provider is marked stale once, however many callers ask at the same moment; its next report clears
/// it; a provider that reported recently is left alone.
pub async fn stale_is_raised_once_and_cleared_by_a_report(store: &dyn Store) {
    let rules = Rules::demo();
    let t0 = Timestamp::now();
    // RJ7 reports for the previous hour, RGT for the current one, so at the moment RJ7 becomes due (the hour it
    // reported ended, and a cadence and the grace passed) RGT is not.
    let r = report("RJ7", 1, 1, &[("ed.in_department", n(10.0))]);
    assert!(matches!(store.apply(&r, t0).await.expect("apply"), Applied::Accepted(_)));
    let rgt = report("RGT", 0, 1, &[("ed.in_department", n(10.0))]);
    assert!(matches!(store.apply(&rgt, t0.add_millis(1_000)).await.expect("apply"), Applied::Accepted(_)));
    assert!(store.mark_stale("RJ7", t0.add_millis(60_000)).await.expect("mark").is_none(), "not yet");
    let later = t0.hour_start().add_millis(rules.stale_after("RJ7").as_millis() as i64);
    assert_eq!(picture(store).await.due_stale(later), ["RJ7"], "only RJ7 is due");
    assert!(store.mark_stale("RGT", later).await.expect("mark").is_none(), "RGT is not due");
    let (a, b) = tokio::join!(store.mark_stale("RJ7", later), store.mark_stale("RJ7", later));
    let events: Vec<Event> = [a.expect("mark"), b.expect("mark")].into_iter().flatten().collect();
    assert_eq!(events.len(), 1, "{}: one stale event, not {}", store.name(), events.len());
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Stale);
    assert_eq!(e.derived.raised.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["stale:RJ7"]);
    assert_eq!(rollups_of(store, e).await.iter().map(|r| r.stale).collect::<Vec<_>>(), [1, 1, 1]);
    let head = store.head().await.expect("head");
    assert!(head.pos >= e.cursor.pos);
    assert!(store.mark_stale("RJ7", later).await.expect("mark").is_none(), "already stale");
    let folded = picture(store).await;
    assert!(folded.provider("RJ7").expect("RJ7").stale);
    assert!(folded.due_stale(later).is_empty());
    assert_picture_is_counted_afresh(store).await;

    let back = accept(store, &report("RJ7", 0, 2, &[("ed.in_department", n(11.0))])).await;
    assert_eq!(back.derived.cleared.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["stale:RJ7"]);
    assert!(rollups_of(store, &back).await.iter().all(|r| r.stale == 0 || r.scope.level != sitrep_core::Level::System));
    let folded = picture(store).await;
    assert!(!folded.provider("RJ7").expect("RJ7").stale);
    assert_picture_is_counted_afresh(store).await;
    assert!(folded.alerts(&Selection::All).iter().all(|a| a.kind != AlertKind::Stale));
}

/// What [`Store::load`] returns, with the log replayed onto it, is exactly the picture folded from the very first
/// event, whenever it is loaded; and every stored state is the one the log's events lead to.
pub async fn load_and_replay_is_the_fold_of_the_whole_log(store: &dyn Store) {
    let start = store.head().await.expect("head");
    let providers = ["RJ7", "RVR", "RGT", "RAL"];
    for round in 1..=6u32 {
        for (i, p) in providers.iter().enumerate() {
            let v = f64::from(round * 3 + i as u32);
            let values = [("beds.ga_adult.open", n(100.0 + v)), ("beds.ga_adult.occupied", n(50.0 + v))];
            accept(store, &report(p, 0, round, &values)).await;
        }
        // Loaded half-way through a round, and after it.
        let mut from_start = Picture::new(Rules::demo(), start.clone());
        for e in &events_after(store, &start).await {
            from_start.apply(e).expect("no gap");
        }
        assert_eq!(picture(store).await, from_start, "{}: round {round}", store.name());
    }
    let loaded = store.load().await.expect("load");
    assert_eq!(loaded.providers.len(), providers.len());
    assert!(loaded.providers.iter().all(|p| p.version == 6), "six live reports each: version 6");
}

/// A store keeping `retention_hours` of history drops the periods that fall out of it once a provider moves to a
/// later period, and keeps the rest.
pub async fn history_is_trimmed_to_retention(store: &dyn Store, retention_hours: i64) {
    let hour = Timestamp::now().hour_start();
    let old = retention_hours + 3;
    accept(store, &report("RJ7", old, 1, &[("ed.in_department", n(1.0))])).await;
    accept(store, &report("RJ7", old, 2, &[("ed.in_department", n(2.0))])).await;
    accept(store, &report("RJ7", 1, 1, &[("ed.in_department", n(3.0))])).await;
    accept(store, &report("RJ7", 0, 1, &[("ed.in_department", n(4.0))])).await;
    let kept: Vec<_> = store
        .history("RJ7", hour.add_hours(-old - 1), hour)
        .await
        .expect("history")
        .iter()
        .map(|h| (h.period, h.revision))
        .collect();
    assert_eq!(kept, [(hour.add_hours(-1), 1), (hour, 1)], "{}: periods out of retention are gone", store.name());
}

/// Who acts in the mutual aid checks, on which picture.
fn aid_actor(store: &dyn Store, cursor: Cursor) -> Actor {
    Actor { principal: format!("conformance.{}", store.name()), cursor }
}

/// A request by `provider` for `quantity` adult critical care beds, needed within four hours.
pub fn aid_request(provider: &str, quantity: u32) -> Action {
    // Each with a reference of its own, so that checks may make several open requests.
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    Action::Create(NewRequest {
        provider: provider.into(),
        site: None,
        kind: Kind::PatientTransfer,
        pair: "beds.cc_adult".into(),
        quantity,
        urgency: Urgency::Urgent,
        needed_by: Timestamp::now().add_hours(4),
        constraints: Constraints::default(),
        reference: format!("CONF-{}", MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1),
        summary: "adult needing level 3 care".into(),
    })
}

/// An offer of `quantity` beds by `provider`, held for two hours.
pub fn aid_offer(request: RequestId, provider: &str, quantity: u32) -> Action {
    Action::Offer {
        request,
        provider: provider.into(),
        site: None,
        quantity,
        hold_until: Timestamp::now().add_hours(2),
    }
}

/// Takes `action` on `store` now; panics if it is refused or fails.
pub async fn act(store: &dyn Store, action: Action) -> Vec<Event> {
    let head = store.head().await.expect("head");
    let name = action.name();
    match store.act(&action, &aid_actor(store, head), Timestamp::now()).await.expect("act") {
        Acted::Done(events) => events,
        Acted::Refused(r) => panic!("{}: {name} refused: {r}", store.name()),
        Acted::Unchanged { request, .. } => panic!("{}: {name} changed nothing: {}", store.name(), request.id),
    }
}

fn free_of(picture: &Picture, provider: &str) -> Option<f64> {
    let p = picture.provider(provider)?;
    p.figures.iter().find(|f| f.metric.as_str() == "beds.cc_adult.free").and_then(|f| f.value)
}

fn system_free(picture: &Picture) -> Option<f64> {
    let scope = sitrep_core::Scope { level: sitrep_core::Level::System, code: "QWE".into() };
    let rollup = picture.rollups(&[scope], None).remove(0);
    rollup.metrics.iter().find(|m| m.metric.as_str() == "beds.cc_adult.free").and_then(|m| m.value)
}

/// A mutual aid action is stored with the holds it places or ends in one step: its events come in order (the
/// book's, then each holding provider's, with its version advanced), the picture folded from the store's load and
/// log has the records and holds, the holding provider's free beds and its system's total drop by the held beds, a
/// report showing the beds occupied ends the hold, cancelling ends the rest, an expired hold ends once, and the
/// folded picture always equals one counted afresh.
pub async fn aid_actions_change_the_book_and_holds_in_one_step(store: &dyn Store) {
    let cc = |open: f64, occupied: f64| [("beds.cc_adult.open", n(open)), ("beds.cc_adult.occupied", n(occupied))];
    accept(store, &report("RJ7", 0, 1, &cc(10.0, 10.0))).await;
    accept(store, &report("RVR", 0, 1, &cc(10.0, 7.0))).await;
    accept(store, &report("RAX", 0, 1, &cc(6.0, 4.0))).await;
    let before = picture(store).await;
    assert_eq!((free_of(&before, "RVR"), system_free(&before)), (Some(3.0), Some(5.0)));

    let created = act(store, aid_request("RJ7", 2)).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].kind, EventKind::Aid);
    let r = RequestId(1);
    act(store, aid_offer(r, "RVR", 1)).await;
    act(store, aid_offer(r, "RAX", 1)).await;
    let accepted = act(store, Action::Accept { offer: OfferId(1), baseline_occupied: 0 }).await;
    let kinds: Vec<(&str, u64)> = accepted.iter().map(|e| (e.provider.as_str(), e.version)).collect();
    assert_eq!(kinds, [("RJ7", 0), ("RVR", 2)], "{}: the book's event, then the holder's", store.name());
    assert!(accepted[0].cursor.pos < accepted[1].cursor.pos);
    let held = picture(store).await;
    assert_eq!(held.aid().request(r).map(|r| r.state), Some(RequestState::Accepted), "{}", store.name());
    assert_eq!(held.aid().held("RVR", "beds.cc_adult"), 1, "{}", store.name());
    assert_eq!((free_of(&held, "RVR"), system_free(&held)), (Some(2.0), Some(4.0)), "{}: held", store.name());
    assert_picture_is_counted_afresh(store).await;

    // The patient arrives: RVR's next report shows the bed occupied, which ends the hold in the report's step.
    let e = accept(store, &report("RVR", 0, 2, &cc(10.0, 8.0))).await;
    let change = e.aid.as_ref().expect("the report ended the hold");
    assert!(matches!(change.happened[..], [AidEvent::HoldEnded { end: HoldEnd::Occupied, .. }]), "{}", store.name());
    let after = picture(store).await;
    assert_eq!(after.aid().held("RVR", "beds.cc_adult"), 0, "{}", store.name());
    assert_eq!((free_of(&after, "RVR"), system_free(&after)), (Some(2.0), Some(4.0)), "{}", store.name());

    // RAX covers the rest; cancelling releases its hold as RAX's own event.
    act(store, Action::Accept { offer: OfferId(2), baseline_occupied: 0 }).await;
    assert_eq!(free_of(&picture(store).await, "RAX"), Some(1.0), "{}", store.name());
    let cancelled = act(store, Action::Cancel { request: r, reason: "patient improved".into() }).await;
    assert_eq!(cancelled.iter().map(|e| e.provider.as_str()).collect::<Vec<_>>(), ["RJ7", "RAX"]);
    let after = picture(store).await;
    assert_eq!(free_of(&after, "RAX"), Some(2.0), "{}", store.name());
    assert_eq!(after.aid().request(r).map(|r| r.state), Some(RequestState::Cancelled));

    // An accepted hold past its time ends by the clock, once.
    act(store, aid_request("RJ7", 1)).await;
    let r2 = RequestId(2);
    // Held only briefly, but long enough to be in the future when a networked store plans it (its `now` is taken
    // after a round trip): a millisecond was not, against Redis.
    act(
        store,
        Action::Offer {
            request: r2,
            provider: "RVR".into(),
            site: None,
            quantity: 1,
            hold_until: Timestamp::now().add_millis(200),
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let late = act(
        store,
        Action::Offer {
            request: r2,
            provider: "RAX".into(),
            site: None,
            quantity: 1,
            hold_until: Timestamp::now().add_hours(1),
        },
    )
    .await;
    assert_eq!(late.len(), 1);
    act(store, Action::Accept { offer: OfferId(4), baseline_occupied: 0 }).await;
    let expire = Action::ExpireHold(OfferId(4));
    let actor = aid_actor(store, store.head().await.expect("head"));
    let later = Timestamp::now().add_hours(2);
    let done = store.act(&expire, &actor, later).await.expect("act");
    assert!(matches!(&done, Acted::Done(e) if e.len() == 2), "{}: {done:?}", store.name());
    let again = store.act(&expire, &actor, later).await.expect("act");
    assert!(matches!(again, Acted::Refused(_)), "{}: a hold ends once: {again:?}", store.name());
    assert_eq!(free_of(&picture(store).await, "RAX"), Some(2.0), "{}", store.name());
    assert_picture_is_counted_afresh(store).await;
}

/// A retried create (its answer lost) makes no second request, through either replica (`a` and `b`: two stores on
/// one backend), one after the other or racing: it is answered with the open request it made, and nothing is
/// written. The same reference with other content is refused naming it; once the request has ended, the reference
/// makes a new one.
pub async fn aid_retried_creates_make_one_request(a: &dyn Store, b: &dyn Store) {
    let name = a.name();
    let create = aid_request("RJ7", 2);
    let made = act(a, create.clone()).await;
    let id = made[0].aid.as_ref().expect("aid change").requests[0].id;
    let head = a.head().await.expect("head");
    let actor = aid_actor(b, head.clone());
    match b.act(&create, &actor, Timestamp::now()).await.expect("act") {
        Acted::Unchanged { request, offers } => {
            assert_eq!((request.id, request.state, offers.len()), (id, RequestState::Open, 0), "{name}");
        }
        other => panic!("{name}: a retry is answered with its request: {other:?}"),
    }
    assert_eq!(b.head().await.expect("head"), head, "{name}: nothing appended");
    assert_eq!(a.load().await.expect("load").aid.version(), 1, "{name}: the book unchanged");

    // Other content under the same reference: refused, naming the reference and the open request.
    let Action::Create(ask) = &create else { unreachable!() };
    let other = Action::Create(NewRequest { quantity: 3, ..ask.clone() });
    match a.act(&other, &actor, Timestamp::now()).await.expect("act") {
        Acted::Refused(r) => {
            let text = r.to_string();
            assert!(text.contains("reference_in_use") && text.contains(&format!("end {id} first")), "{name}: {text}");
        }
        other => panic!("{name}: other content is refused: {other:?}"),
    }

    // Two replicas sending the same new request at once: one makes it, the other is answered with it.
    let racing = aid_request("RJ7", 1);
    let now = Timestamp::now();
    let (ra, rb) = tokio::join!(a.act(&racing, &actor, now), b.act(&racing, &actor, now));
    let outcomes = [ra.expect("act"), rb.expect("act")];
    let made: Vec<RequestId> = outcomes
        .iter()
        .map(|o| match o {
            Acted::Done(events) => events[0].aid.as_ref().expect("aid change").requests[0].id,
            Acted::Unchanged { request, .. } => request.id,
            Acted::Refused(r) => panic!("{name}: {r}"),
        })
        .collect();
    assert_eq!(made[0], made[1], "{name}: one request: {outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Acted::Done(_))).count(), 1, "{name}: {outcomes:?}");

    // Ended, the reference is free: the same create makes a new request.
    act(b, Action::Cancel { request: id, reason: "patient improved".into() }).await;
    let again = act(b, create).await;
    let new = again[0].aid.as_ref().expect("aid change").requests[0].id;
    assert!(new > made[0], "{name}: a new request {new} after {id} ended");
    let picture = picture(a).await;
    let open = picture.aid().requests().filter(|r| !r.state.is_closed()).count();
    assert_eq!((picture.aid().requests().count(), open), (3, 2), "{name}");
    assert_picture_is_counted_afresh(a).await;
}

/// Two replicas (`a` and `b`: two stores on one backend) racing on one request behave as if one acted after the
/// other: of two accepts of one offer, or of two offers each covering the whole request, exactly one is done and
/// the other refused; an accept racing the holder's report leaves both stored and the picture consistent.
pub async fn aid_races_take_one_of_two(a: &dyn Store, b: &dyn Store) {
    let cc = |open: f64, occupied: f64| [("beds.cc_adult.open", n(open)), ("beds.cc_adult.occupied", n(occupied))];
    accept(a, &report("RJ7", 0, 1, &cc(10.0, 10.0))).await;
    accept(a, &report("RVR", 0, 1, &cc(40.0, 10.0))).await;
    accept(a, &report("RAX", 0, 1, &cc(40.0, 10.0))).await;
    let mut next_request = 0u64;
    let mut next_offer = 0u64;
    let mut revision = 1u32;
    for round in 0..10 {
        act(a, aid_request("RJ7", 2)).await;
        next_request += 1;
        let r = RequestId(next_request);
        act(b, aid_offer(r, "RVR", 2)).await;
        act(a, aid_offer(r, "RAX", 2)).await;
        next_offer += 2;
        let (o1, o2) = (OfferId(next_offer - 1), OfferId(next_offer));
        // Even rounds: both replicas accept the same offer; odd rounds: each accepts a different one.
        let (x, y) = if round % 2 == 0 { (o1, o1) } else { (o1, o2) };
        let actor_a = aid_actor(a, a.head().await.expect("head"));
        let actor_b = aid_actor(b, b.head().await.expect("head"));
        let now = Timestamp::now();
        let (accept_x, accept_y) =
            (Action::Accept { offer: x, baseline_occupied: 0 }, Action::Accept { offer: y, baseline_occupied: 0 });
        let (ra, rb) = tokio::join!(a.act(&accept_x, &actor_a, now), b.act(&accept_y, &actor_b, now));
        let outcomes = [ra.expect("act"), rb.expect("act")];
        let done = outcomes.iter().filter(|o| matches!(o, Acted::Done(_))).count();
        let refused = outcomes.iter().filter(|o| matches!(o, Acted::Refused(_))).count();
        assert_eq!((done, refused), (1, 1), "{}: round {round}: {outcomes:?}", a.name());
        // A report of the holder racing the request's next step: both are stored.
        revision += 1;
        let (holder, other) = if round % 2 == 0 { ("RVR", "RAX") } else { ("RAX", "RVR") };
        let holder_report = report(holder, 0, revision, &cc(40.0, 10.0));
        let progress = Action::Progress { request: r, stage: sitrep_core::aid::Stage::InTransit };
        let (reported, progressed) =
            tokio::join!(a.apply(&holder_report, Timestamp::now()), b.act(&progress, &actor_b, Timestamp::now()));
        assert!(matches!(reported.expect("apply"), Applied::Accepted(_)), "{}: round {round}", a.name());
        assert!(matches!(progressed.expect("act"), Acted::Done(_)), "{}: round {round}", a.name());
        accept(a, &report(other, 0, revision, &cc(40.0, 10.0))).await;
    }
    let picture = picture(a).await;
    let accepted: u32 = picture
        .aid()
        .requests()
        .flat_map(|r| picture.aid().offers_of(r.id))
        .filter(|o| o.state == sitrep_core::aid::OfferState::Accepted)
        .map(|o| o.quantity)
        .sum();
    assert_eq!(accepted, 20, "{}: one accept of two beds per round", a.name());
    assert_picture_is_counted_afresh(a).await;
    assert_picture_is_counted_afresh(b).await;
}
