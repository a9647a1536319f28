//! `MemoryStore`: the embedded store, for a single aggregator with no Redis (demos, development, tests).
//!
//! It persists what [`sitrep_core::plan`] and [`sitrep_core::plan::aid::plan`] plan and nothing more: live state per
//! provider (the plan's prior), history, mutual aid's records, and the event log. All of it lives behind one `std::sync::Mutex`: an apply is a plan and a few map
//! operations, so a blocking lock held for microseconds, never across an `.await`, is both the simplest and the
//! fastest way to make it atomic. Nothing here looks at other providers, so a report costs the same with ten
//! thousand providers as with fifty; rollups are the picture's business. Readers waiting for new events park on a
//! `watch` channel that an append bumps. Nothing survives the process: every start is a new epoch, so subscribers
//! that resume across a restart are reset rather than misled.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use sitrep_core::aid::{Action, Actor, AidBook};
use sitrep_core::cursor::Position;
use sitrep_core::plan::aid::{AidOutcome, AidPlan};
use sitrep_core::plan::{self, Plan};
use sitrep_core::{Cursor, Event, HistoryRecord, ProviderLive, Rules, Timestamp, ValidReport};
use tokio::sync::watch;

use crate::{Acted, Applied, Loaded, Read, ResetReason, Store, StoreError};

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

/// One period's revisions of a provider, by site (`None`: the provider as a whole) and revision.
type Revisions = BTreeMap<(Option<String>, u32), Revision>;

struct Inner {
    /// Sequence number the next event gets; the first event is 1, so position 0 means "before everything".
    next_seq: u64,
    log: VecDeque<Event>,
    live: HashMap<String, ProviderLive>,
    /// provider -> period -> (site, revision) -> what it said.
    history: HashMap<String, BTreeMap<Timestamp, Revisions>>,
    /// Mutual aid's records (holds are in the providers' states).
    aid: AidBook,
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
                live: HashMap::new(),
                history: HashMap::new(),
                aid: AidBook::new(),
            }),
            appended,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this file; the data is still consistent because every
        // mutation below completes before anything can panic, so carry on with it rather than poison everyone.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cursor(&self, seq: u64) -> Cursor {
        Cursor::new(self.epoch.clone(), Position(seq, 0))
    }

    /// Persists `plan` (already checked against the provider's version and history) and returns its event.
    fn persist(&self, inner: &mut Inner, plan: Plan) -> Event {
        let cursor = self.cursor(inner.next_seq);
        inner.next_seq += 1;
        let Plan { provider, state, history, trim_before, mut event, .. } = plan;
        event.cursor = cursor.clone();
        if let Some(record) = history {
            let periods = inner.history.entry(provider.clone()).or_default();
            let key = (record.site.clone(), record.revision);
            periods.entry(record.period).or_default().insert(key, Revision { record, cursor });
            if let Some(before) = trim_before {
                *periods = periods.split_off(&before);
            }
        }
        if let Some(state) = state {
            inner.live.insert(provider, state);
        }
        inner.log.push_back(event.clone());
        while inner.log.len() > self.options.event_log_capacity {
            inner.log.pop_front();
        }
        event
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

    fn appended(&self, inner: MutexGuard<'_, Inner>) {
        let head = inner.next_seq - 1;
        drop(inner);
        self.appended.send_replace(head);
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

    async fn event_log_length(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.lock().log.len() as u64))
    }

    async fn apply(&self, report: &ValidReport, received_at: Timestamp) -> Result<Applied, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let periods = inner.history.get(report.provider()).and_then(|periods| periods.get(&report.period()));
        let prior = inner.live.get(report.provider());
        // The revisions of the report's site (or of the provider as a whole) in its period.
        let site = report.site().map(str::to_owned);
        let revisions = periods.map(|r| r.range((site.clone(), 0)..=(site.clone(), u32::MAX)));
        let highest = revisions.clone().and_then(|mut r| r.next_back()).map(|((_, revision), _)| *revision);
        let assigned;
        let report = match report.needs_revision() {
            true => {
                assigned = report.with_revision(plan::next_revision(prior, report, highest));
                &assigned
            }
            false => report,
        };
        if let Some(seen) = periods.and_then(|r| r.get(&(site.clone(), report.revision()))) {
            let cursor = Some(seen.cursor.clone());
            return Ok(match plan::same_content(&seen.record, report) {
                true => Applied::Duplicate { cursor },
                false => Applied::Conflict { cursor, next_revision: plan::next_revision(prior, report, highest) },
            });
        }
        // A late report diffs against the previous revision of its period.
        let previous = match plan::is_late(prior, report) {
            true => periods
                .and_then(|r| r.range((site.clone(), 0)..(site, report.revision())).next_back())
                .map(|(_, r)| &r.record.values),
            false => None,
        };
        let plan =
            plan::report(&self.options.rules, prior, previous, report, received_at, self.options.retention_hours);
        let event = self.persist(inner, plan);
        self.appended(guard);
        Ok(Applied::Accepted(event))
    }

    async fn act(&self, action: &Action, actor: &Actor, now: Timestamp) -> Result<Acted, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let states: BTreeMap<String, ProviderLive> = inner
            .aid
            .needs(action)
            .into_iter()
            .filter_map(|p| Some((p.clone(), inner.live.get(&p)?.clone())))
            .collect();
        // Under the lock nothing moves between planning and persisting: the versions the plan expects hold.
        let plan = match sitrep_core::plan::aid::plan(
            &self.options.rules,
            inner.aid.excerpt(action),
            &states,
            action.clone(),
            actor,
            now,
        ) {
            Ok(AidOutcome::Plan(plan)) => plan,
            Ok(AidOutcome::Unchanged { request, offers }) => return Ok(Acted::Unchanged { request, offers }),
            Err(refusal) => return Ok(Acted::Refused(refusal)),
        };
        let AidPlan { event, providers, .. } = plan;
        if let Some(change) = &event.aid {
            inner.aid.fold(&event.provider, change, false);
        }
        let book = Plan {
            provider: event.provider.clone(),
            expected_version: 0,
            state: None,
            history: None,
            trim_before: None,
            event,
        };
        let mut events = vec![self.persist(inner, book)];
        events.extend(providers.into_iter().map(|p| self.persist(inner, p)));
        self.appended(guard);
        Ok(Acted::Done(events))
    }

    async fn mark_stale(&self, provider: &str, now: Timestamp) -> Result<Option<Event>, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(plan) = inner.live.get(provider).and_then(|p| plan::stale(&self.options.rules, p, now)) else {
            return Ok(None);
        };
        let event = self.persist(inner, plan);
        self.appended(guard);
        Ok(Some(event))
    }

    async fn load(&self) -> Result<Loaded, StoreError> {
        let inner = self.lock();
        Ok(Loaded {
            cursor: self.cursor(inner.next_seq - 1),
            providers: inner.live.values().cloned().collect(),
            aid: inner.aid.clone(),
        })
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

    async fn histories(
        &self,
        providers: &[String],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, Vec<HistoryRecord>>, StoreError> {
        let mut out = BTreeMap::new();
        for provider in providers {
            let records = self.history(provider, from, to).await?;
            if !records.is_empty() {
                out.insert(provider.clone(), records);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    /// Every conformance check, each a test of its own.
    mod conformance {
        use std::sync::Arc;

        use crate::{MemoryOptions, MemoryStore, Store};

        /// Memory stores for the suite: each new and empty, nothing to share.
        struct Memory;

        impl Memory {
            fn new() -> Self {
                Memory
            }

            async fn fresh(&self) -> MemoryStore {
                MemoryStore::default()
            }

            async fn small_log(&self, capacity: usize) -> MemoryStore {
                MemoryStore::new(MemoryOptions { event_log_capacity: capacity, ..Default::default() })
            }

            async fn short_history(&self, retention_hours: i64) -> MemoryStore {
                MemoryStore::new(MemoryOptions { retention_hours, ..Default::default() })
            }

            /// One store is both replicas: its lock is what makes them take turns.
            async fn replicas(&self) -> [Arc<dyn Store>; 2] {
                let shared: Arc<dyn Store> = Arc::new(MemoryStore::default());
                [shared.clone(), shared]
            }
        }

        crate::conformance_tests!(Memory);
    }
}
