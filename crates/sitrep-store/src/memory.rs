//! `MemoryStore`: the embedded store, for a single aggregator with no Redis (demos, development, tests).
//!
//! All state lives behind one `std::sync::Mutex`: `apply` is a few map operations, so a blocking lock held for
//! microseconds, never across an `.await`, is both the simplest and the fastest way to make it atomic. Readers
//! waiting for new events park on a `watch` channel that `apply` bumps. Nothing survives the process: every
//! start is a new epoch, so subscribers that resume across a restart are reset rather than misled.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sitrep_core::cursor::Position;
use sitrep_core::derive::{self, Derived};
use sitrep_core::rollup::{ScopeRollup, Totals, rollup};
use sitrep_core::state::{diff, event, is_newer};
use sitrep_core::{Alert, Cursor, Event, ProviderLive, Rules, Scope, Selection, Timestamp, ValidReport};
use tokio::sync::watch;

use crate::{Applied, HistoryRecord, Read, ResetReason, Snapshot, Store, StoreError};

/// Tunables of the memory store.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// How many recent events the log keeps for resuming subscribers.
    pub event_log_capacity: usize,
    /// How many hours of history are kept per provider, counted back from its latest period.
    pub retention_hours: i64,
    /// What derived figures, ratings, alerts and staleness are computed by.
    pub rules: Rules,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions { event_log_capacity: 100_000, retention_hours: 35 * 24, rules: Rules::demo() }
    }
}

/// One stored revision of one period.
#[derive(Clone, Debug)]
struct Revision {
    record: HistoryRecord,
    cursor: Cursor,
}

struct Inner {
    /// Sequence number the next event gets; the first event is 1, so position 0 means "before everything".
    next_seq: u64,
    log: VecDeque<Event>,
    live: BTreeMap<String, ProviderLive>,
    /// provider -> period -> revision -> what it said.
    history: HashMap<String, BTreeMap<Timestamp, BTreeMap<u32, Revision>>>,
}

pub struct MemoryStore {
    epoch: String,
    options: MemoryOptions,
    inner: Mutex<Inner>,
    appended: watch::Sender<u64>,
}

impl MemoryStore {
    pub fn new(options: MemoryOptions) -> Self {
        let (appended, _) = watch::channel(0);
        MemoryStore {
            epoch: crate::new_epoch('m'),
            options,
            inner: Mutex::new(Inner {
                next_seq: 1,
                log: VecDeque::new(),
                live: BTreeMap::new(),
                history: HashMap::new(),
            }),
            appended,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this file; the data is still consistent because every
        // mutation below completes before anything can panic, so carry on with it rather than poison everyone.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rollups of `scopes`, from scratch: for `metrics`, or all. A memory store holds one deployment's
    /// providers, so summing them afresh is cheap and obviously right; the Redis store keeps running totals, and
    /// the conformance suite checks the two agree.
    fn rollups(&self, inner: &Inner, scopes: &[Scope], metrics: Option<&BTreeSet<String>>) -> Vec<ScopeRollup> {
        let rules = &self.options.rules;
        scopes
            .iter()
            .map(|scope| {
                let mut totals = Totals::default();
                for p in inner.live.values().filter(|p| rules.in_scope(&p.provider, scope)) {
                    totals.add(&rules.catalogue, &p.values(), p.stale);
                }
                rollup(rules, scope, &totals, metrics)
            })
            .collect()
    }

    fn append(&self, inner: &mut Inner, ev: Event) {
        inner.log.push_back(ev);
        while inner.log.len() > self.options.event_log_capacity {
            inner.log.pop_front();
        }
        inner.next_seq += 1;
    }

    fn cursor(&self, seq: u64) -> Cursor {
        Cursor::new(self.epoch.clone(), Position(seq, 0))
    }

    fn read_now(&self, inner: &Inner, after: &Cursor, max: usize) -> Read {
        if after.epoch != self.epoch {
            return Read::Reset(ResetReason::OtherEpoch);
        }
        let head = inner.next_seq - 1;
        let after = after.pos.0;
        if after > head {
            return Read::Reset(ResetReason::Ahead);
        }
        let first = inner.log.front().map_or(inner.next_seq, |e| e.cursor.pos.0);
        if after + 1 < first {
            return Read::Reset(ResetReason::TooOld);
        }
        let skip = (after + 1 - first) as usize;
        Read::Events(inner.log.iter().skip(skip).take(max).cloned().collect())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(MemoryOptions::default())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn apply(&self, report: &ValidReport, received_at: Timestamp) -> Result<Applied, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let periods = inner.history.entry(report.provider().to_owned()).or_default();
        let revisions = periods.entry(report.period()).or_default();
        if let Some(seen) = revisions.get(&report.revision()) {
            return Ok(Applied::Duplicate { cursor: Some(seen.cursor.clone()) });
        }
        let cursor = self.cursor(inner.next_seq);
        let mut live = inner.live.remove(report.provider());
        let fresh = is_newer(report.period(), report.revision(), live.as_ref());
        let (changes, derived) = if fresh {
            derive::advance(&self.options.rules, &mut live, report, received_at)
        } else {
            // Late: diff against the previous revision of the same period, if there is one.
            let previous = revisions.range(..report.revision()).next_back().map(|(_, r)| &r.record.values);
            (diff(|code| previous.and_then(|v| v.get(code)), report), Derived::default())
        };
        if let Some(live) = live {
            inner.live.insert(report.provider().to_owned(), live);
        }
        let record = HistoryRecord {
            period: report.period(),
            revision: report.revision(),
            observed_at: report.observed_at(),
            received_at,
            values: report.values().clone(),
            narrative: report.narrative().map(str::to_owned),
            source: report.source().map(str::to_owned),
            site: report.site().map(str::to_owned),
        };
        revisions.insert(report.revision(), Revision { record, cursor: cursor.clone() });
        let newest = *periods.keys().next_back().expect("just inserted");
        let keep_from = newest.add_hours(-self.options.retention_hours);
        *periods = periods.split_off(&keep_from);

        let mut ev = event(report, received_at, fresh, changes, cursor);
        if fresh {
            let metrics = crate::rollup_metrics(&self.options.rules, &ev.changes);
            ev.rollups = self.rollups(inner, &self.options.rules.scopes_of(report.provider()), Some(&metrics));
        }
        ev.derived = derived;
        self.append(inner, ev.clone());
        let head = inner.next_seq - 1;
        drop(guard);
        self.appended.send_replace(head);
        Ok(Applied::Accepted(ev))
    }

    async fn snapshot(&self, selection: &Selection) -> Result<Snapshot, StoreError> {
        let inner = self.lock();
        let providers = inner.live.values().filter(|p| selection.contains(&p.provider)).cloned().collect();
        let rollups = self.rollups(&inner, &crate::snapshot_scopes(&self.options.rules, selection), None);
        Ok(Snapshot { cursor: self.cursor(inner.next_seq - 1), providers, rollups })
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        Ok(self.cursor(self.lock().next_seq - 1))
    }

    async fn read(&self, after: &Cursor, max: usize, wait: Duration) -> Result<Read, StoreError> {
        // Subscribe before looking, so an event appended between the look and the wait still wakes us.
        let mut appended = self.appended.subscribe();
        appended.borrow_and_update();
        let first = self.read_now(&self.lock(), after, max);
        match first {
            Read::Events(ref events) if events.is_empty() && !wait.is_zero() => {
                if tokio::time::timeout(wait, appended.changed()).await.is_err() {
                    return Ok(first);
                }
                Ok(self.read_now(&self.lock(), after, max))
            }
            other => Ok(other),
        }
    }

    async fn history(&self, provider: &str, from: Timestamp, to: Timestamp) -> Result<Vec<HistoryRecord>, StoreError> {
        let inner = self.lock();
        let Some(periods) = inner.history.get(provider) else { return Ok(Vec::new()) };
        if from > to {
            return Ok(Vec::new());
        }
        Ok(periods.range(from..=to).flat_map(|(_, revisions)| revisions.values().map(|r| r.record.clone())).collect())
    }

    async fn check_stale(&self, now: Timestamp) -> Result<Vec<Event>, StoreError> {
        let rules = &self.options.rules;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let quiet: Vec<String> = inner
            .live
            .values()
            .filter(|p| !p.stale && derive::is_stale(rules, &p.provider, p.received_at, now))
            .map(|p| p.provider.clone())
            .collect();
        let mut events = Vec::new();
        for code in quiet {
            let p = inner.live.get_mut(&code).expect("listed above");
            let alert = derive::stale_alert(rules, &code, p.received_at, now);
            let mut ev = p.go_stale(alert, now, self.cursor(inner.next_seq));
            ev.rollups = self.rollups(inner, &rules.scopes_of(&code), Some(&BTreeSet::new()));
            self.append(inner, ev.clone());
            events.push(ev);
        }
        let head = inner.next_seq - 1;
        drop(guard);
        if !events.is_empty() {
            self.appended.send_replace(head);
        }
        Ok(events)
    }

    async fn alerts(&self, selection: &Selection) -> Result<Vec<Alert>, StoreError> {
        let inner = self.lock();
        Ok(inner.live.values().filter(|p| selection.contains(&p.provider)).flat_map(|p| p.alerts.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance;

    #[tokio::test]
    async fn conformance_suite() {
        let small = MemoryOptions { event_log_capacity: 3, ..Default::default() };
        conformance::run_all(|| async { MemoryStore::default() }, async { MemoryStore::new(small) }, 3).await;
    }
}
