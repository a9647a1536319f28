//! Where sitrep keeps live state, the hour-by-hour history and the event log, behind one contract.
//!
//! # Layout
//! - [`Store`]: the contract every backend keeps (documented on the trait), with [`Applied`], [`Snapshot`],
//!   [`Read`] and [`StoreError`].
//! - [`memory`]: [`MemoryStore`], the embedded default: everything in one process, one lock.
//! - [`redis`]: [`RedisStore`], the store of record: one Lua script per report, a stream as the event log, shared
//!   by any number of aggregator replicas; and [`redis::RedisProcess`], a `redis-server` started on a free port for
//!   tests and benchmarks.
//! - [`conformance`]: `pub async fn` checks any backend must pass; each backend's tests run all of them.
//!
//! The store knows the domain types of `sitrep-core` and nothing of gRPC.

pub mod conformance;
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use std::collections::BTreeMap;

use sitrep_core::rollup::ScopeRollup;
use sitrep_core::{Alert, Cursor, Event, ProviderLive, Rules, Scope, Selection, Timestamp, ValidReport, Value};

pub use memory::{MemoryOptions, MemoryStore};
pub use redis::{RedisOptions, RedisStore};

/// The outcome of [`Store::apply`].
// One per report, moved once: boxing the event would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// The report was stored and produced this event.
    Accepted(Event),
    /// A report with the same (provider, period, revision) was stored before, with the event at `cursor` (if the
    /// backend still knows it). Nothing changed.
    Duplicate { cursor: Option<Cursor> },
}

/// The live state of a set of providers as of one cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Every event up to and including this cursor is reflected in `providers`; no later one is.
    pub cursor: Cursor,
    /// Providers that have reported, in code order.
    pub providers: Vec<ProviderLive>,
    /// The figures of every scope a selected provider rolls up into (every scope for a full snapshot), in scope
    /// order: systems, regions, the nation.
    pub rollups: Vec<ScopeRollup>,
}

/// The scopes a snapshot of `selection` carries rollups for.
pub fn snapshot_scopes(rules: &Rules, selection: &Selection) -> Vec<Scope> {
    let mut scopes = rules.scopes();
    if let Selection::Only(set) = selection {
        scopes.retain(|scope| set.iter().any(|p| rules.in_scope(p, scope)));
    }
    scopes
}

/// The metrics whose rollups an event of `changes` carries: the changed ones and the derived metrics they feed.
pub fn rollup_metrics(rules: &Rules, changes: &[sitrep_core::MetricChange]) -> std::collections::BTreeSet<String> {
    rules.catalogue.affected(changes.iter().map(|c| c.metric.as_str()))
}

/// Why the log cannot serve a read from a cursor: the reader must start again from a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Events after the cursor have been trimmed from the log.
    TooOld,
    /// The cursor belongs to another epoch of the log (or is malformed).
    OtherEpoch,
    /// The cursor is beyond the end of the log.
    Ahead,
}

/// The outcome of [`Store::read`].
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    /// The events after the cursor, in order (empty if none arrived within the wait).
    Events(Vec<Event>),
    /// The cursor cannot be served; see the reason.
    Reset(ResetReason),
}

/// One stored revision of one period of a provider: what the report said, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRecord {
    pub period: Timestamp,
    pub revision: u32,
    pub observed_at: Timestamp,
    pub received_at: Timestamp,
    /// Metric code -> value, as reported (including the declared OPEL level as `opel.level`).
    pub values: BTreeMap<String, Value>,
    pub narrative: Option<String>,
    pub source: Option<String>,
    pub site: Option<String>,
}

/// A fresh epoch id: the time, the process id and a counter, in base 36. Unique per call, so a log recreated by
/// the same process (a flushed Redis) still gets a new epoch.
pub(crate) fn new_epoch(tag: char) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut n = (nanos as u64) ^ (u64::from(std::process::id()) << 40) ^ count.rotate_right(8);
    let mut s = String::from(tag);
    while n > 0 {
        s.push(char::from_digit((n % 36) as u32, 36).expect("digit"));
        n /= 36;
    }
    s
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time. The call may be retried: if it did take effect
    /// before the answer was lost (a response timeout), an `apply` retry is answered as a duplicate.
    #[error("store unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend answered with something this version of sitrep cannot understand.
    #[error("store internal error: {0}")]
    Internal(String),
}

/// The contract of a sitrep store.
///
/// - **One atomic step.** [`apply`](Store::apply) checks idempotency, diffs the report against live state, writes
///   live state, writes the hourly history and appends the event, all or nothing. Concurrent applies behave as if
///   run one after the other.
/// - **Idempotent.** (provider, period, revision) identifies a report. Applying a key seen before returns
///   [`Applied::Duplicate`] and changes nothing, for as long as history keeps that period.
/// - **Late reports.** A report whose (period, revision) is not newer than the provider's live state goes into
///   history only; its event has `live == false` and diffs against the previous revision of that period.
/// - **Total order.** Events get strictly increasing cursors in the order they were applied. A
///   [`Snapshot`] reflects exactly the events up to its cursor.
/// - **Derived in the same step.** An accepted live report's event carries what it changed in the provider's
///   derived picture ([`sitrep_core::derive::report`]) and its system's, region's and nation's rollups of the
///   metrics it changed; the open alerts it raised or cleared are stored with it. Reports into history only derive
///   nothing.
/// - **Staleness once.** [`check_stale`](Store::check_stale) marks a quiet provider stale and appends its event
///   exactly once however many aggregators call it at the same moment; its next live report clears it.
/// - **Bounded log.** The event log keeps a bounded number of recent events. A [`read`](Store::read) from a cursor
///   whose successors were trimmed, of another epoch, or beyond the end, answers [`Read::Reset`]: never a gap.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs ("memory", "redis").
    fn name(&self) -> &'static str;

    /// Stores a validated report received at `received_at` (see the contract above).
    async fn apply(&self, report: &ValidReport, received_at: Timestamp) -> Result<Applied, StoreError>;

    /// The live state of the selected providers, and the cursor it is as of.
    async fn snapshot(&self, selection: &Selection) -> Result<Snapshot, StoreError>;

    /// The cursor of the latest event (the start of the log when there is none).
    async fn head(&self) -> Result<Cursor, StoreError>;

    /// Up to `max` events after `after`, in order. If there are none yet, waits up to `wait` for one to be
    /// appended, then answers (possibly with no events).
    async fn read(&self, after: &Cursor, max: usize, wait: Duration) -> Result<Read, StoreError>;

    /// Every stored revision of `provider`'s periods from `from` to `to` inclusive, in (period, revision) order.
    async fn history(&self, provider: &str, from: Timestamp, to: Timestamp) -> Result<Vec<HistoryRecord>, StoreError>;

    /// Marks every provider whose last live report is older than its cadence plus grace at `now` as stale, raising
    /// its stale alert, unless it is already. Returns the events this call appended (none for providers another
    /// caller marked first).
    async fn check_stale(&self, now: Timestamp) -> Result<Vec<Event>, StoreError>;

    /// The open alerts of the selected providers, by provider then key.
    async fn alerts(&self, selection: &Selection) -> Result<Vec<Alert>, StoreError>;
}
