//! Where sitrep keeps live state, the hour-by-hour history and the event log, behind one contract.
//!
//! # Layout
//! - [`Store`]: the contract every backend keeps (documented on the trait), with [`Applied`], [`Acted`],
//!   [`Loaded`], [`Read`] and [`StoreError`].
//! - [`memory`]: [`MemoryStore`], the embedded default: everything in one process, one lock.
//! - [`redis`]: [`RedisStore`], the store of record: one Lua script per report (or batch of reports) and one per
//!   mutual aid action (`redis/aid.rs`, the book in one hash), a stream as the event log, shared by any number of
//!   aggregator replicas; the master found at a URL or through Redis Sentinel and followed across
//!   failovers (`redis/master.rs`), an optional `WAIT` for replicas before acknowledging, and the data's layout
//!   version with its migrations (`redis/schema.rs`); the scripts' arguments as named records (`redis/args.rs`)
//!   and their answers as `FromRedisValue` types (`redis/reply.rs`); and, with the `redis-process` feature (which `test-support`
//!   includes), `redis::RedisProcess`, a `redis-server` (or a replica, or a Sentinel) started on a free port for
//!   tests and for `sitrep bench`.
//! - `conformance` (with the `test-support` feature): `pub async fn` checks any backend must pass, and
//!   `conformance_tests!`, which makes each of them a test of its own in a backend's tests.
//!
//! The test support is behind the `test-support` feature (and built for this crate's own tests), so a normal
//! build neither compiles nor exports it; a crate whose tests use it names the feature in its dev-dependencies.
//! The `sitrep` binary enables only `redis-process`, for its benchmarks: the conformance suite is not in it.
//!
//! The store knows the domain types of `sitrep-core` and nothing of gRPC.

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod memory;
pub mod redis;
pub mod write;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use sitrep_core::aid::{Action, Actor, AidBook, Offer, Refusal, Request};
use sitrep_core::{Cursor, Event, ProviderLive, Timestamp, ValidReport};

pub use memory::{MemoryOptions, MemoryStore};
pub use redis::{RedisOptions, RedisStore};
pub use sitrep_core::HistoryRecord;

/// Providers whose history one call of a batch read ([`Store::histories`]) reads at most, so that no single
/// command holds Redis for long however many providers a view covers.
pub const HISTORY_PIECE: usize = 256;

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
    /// A report with the same (provider, period, revision) but other content was stored before (with the event at
    /// `cursor`, if the backend still knows it). Nothing changed: the sender must send it as a new revision, and
    /// `next_revision` is the next its period has free.
    Conflict { cursor: Option<Cursor>, next_revision: u32 },
}

/// The stored live state of every provider, for a picture to start from (see [`Store::load`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// A cursor every state reflects at least: the log's head when loading began. Fold the events after it, passing
    /// over those a state already reflects (their version is not above its own).
    pub cursor: Cursor,
    /// Every provider with live state, in no particular order.
    pub providers: Vec<ProviderLive>,
    /// Mutual aid's records and the book's version (read after the states: at least as new as the cursor; the
    /// picture passes over aid events it already reflects by the book's version). Holds are in the states.
    pub aid: AidBook,
}

/// The outcome of [`Store::act`].
// One per action, moved once: boxing the request would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Acted {
    /// The action was stored, with these events in log order: the book's, then each holding provider's.
    Done(Vec<Event>),
    /// The action had been taken before (a retried create, whose request is still open with the same content): the
    /// request and its offers as stored. Nothing was written and no event appended.
    Unchanged { request: Request, offers: Vec<Offer> },
    /// The book (or the rules) refused it against the current state; nothing changed.
    Refused(Refusal),
}

/// Why the log cannot serve a read from a cursor: the reader must start again from a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// Events after the cursor have been trimmed from the log.
    TooOld,
    /// The cursor belongs to another epoch of the log (or is malformed).
    OtherEpoch,
    /// The cursor is beyond the end of the log, or names an event the log does not hold (a Redis failover to a
    /// replica that lacked the log's tail).
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
    /// Other writers kept changing the provider (other replicas, many streams at once) through every retry of the
    /// atomic step. Nothing was stored; the store itself is fine, and the call may be retried.
    #[error("contention: {0}")]
    Contention(String),
    /// The backend answered with something this version of sitrep cannot understand.
    #[error("store internal error: {0}")]
    Internal(String),
    /// The stored data cannot be used by this build (it was written by a newer sitrep): do not retry; the message
    /// says what to do.
    #[error("store incompatible: {0}")]
    Incompatible(String),
    /// A stored record names a metric by a number this store's dictionary lacks (another replica, with a larger
    /// catalogue, added it): read the dictionary again.
    #[error("store internal error: metric number {0} is not in the dictionary")]
    UnknownCode(u32),
}

/// The contract of a sitrep store. A store persists what [`sitrep_core::plan`] plans and serves the log; it
/// decides nothing else.
///
/// - **One atomic step.** [`apply`](Store::apply) plans the report with the core against the provider's stored
///   state and persists the plan (live state, the history entry, the event) all or nothing, provided the provider
///   is still at the version the plan was made from; otherwise it plans again from the current state. Concurrent
///   applies behave as if run one after the other.
/// - **Idempotent, and nothing lost.** (provider, period, revision) identifies a report. Applying a key seen before
///   with the same content ([`sitrep_core::plan::same_content`]) returns [`Applied::Duplicate`]; with other content,
///   [`Applied::Conflict`]; neither changes anything, for as long as history keeps that period. A report sent
///   without a revision (0) is given the next its period has ([`sitrep_core::plan::next_revision`]), in the same
///   atomic step, so it is never a duplicate or a conflict.
/// - **Late reports.** A report whose (period, revision) is not newer than the provider's live state goes into
///   history only; its event has `live == false` and diffs against the previous revision of that period.
/// - **Total order.** Events get strictly increasing cursors in the order they were applied; each carries the
///   provider's version after it, and a live report or a stale transition advances that version by one.
/// - **Derived in the same step.** An accepted live report's event carries what it changed in the provider's
///   derived picture ([`sitrep_core::derive`]); the provider's stored state keeps its figures and open alerts.
///   Rollups are not stored: every reader folds them from the log ([`sitrep_core::Picture`]).
/// - **Mutual aid in one step.** [`act`](Store::act) plans an action with [`sitrep_core::plan::aid::plan`] against the
///   stored book and the live states of the providers it needs, and persists the plan (the changed records, the
///   holding providers' states, the events) all or nothing, provided the book and each of those providers are still
///   at the versions it was planned from; otherwise it plans again. Two replicas racing on one request behave as if
///   one acted after the other: of two accepts of one offer, one is done and the other refused.
/// - **A retried create is answered, not repeated.** A create whose provider has an open request with the same
///   reference and content is answered [`Acted::Unchanged`] with that request (nothing written); with other content
///   it is refused (the core decides both, [`sitrep_core::aid::AidBook::apply`]). Two replicas racing to create the
///   same request make one: the second plans again against the moved book and finds the first's.
/// - **Staleness once.** [`mark_stale`](Store::mark_stale) marks a quiet provider stale and appends its event
///   exactly once however many aggregators call it at the same moment; its next live report clears it.
/// - **Loading without stalls.** [`load`](Store::load) returns every provider's state, read in bounded pieces,
///   with a cursor from which the log replays onto them.
/// - **Bounded log.** The event log keeps a bounded number of recent events. A [`read`](Store::read) from a cursor
///   whose successors were trimmed, of another epoch, or beyond the end, answers [`Read::Reset`]: never a gap.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs ("memory", "redis").
    fn name(&self) -> &'static str;

    /// Stores a validated report received at `received_at` (see the contract above).
    async fn apply(&self, report: &ValidReport, received_at: Timestamp) -> Result<Applied, StoreError>;

    /// Takes one mutual aid action by `actor` at `now` (see the contract above).
    async fn act(&self, action: &Action, actor: &Actor, now: Timestamp) -> Result<Acted, StoreError>;

    /// Marks `provider` stale at `now` if it has gone quiet and is not stale already (see
    /// [`sitrep_core::plan::stale`]), and returns the event; `None` if there was nothing to do, or another caller
    /// did it first.
    async fn mark_stale(&self, provider: &str, now: Timestamp) -> Result<Option<Event>, StoreError>;

    /// Every provider's live state, and a cursor to replay the log from (see [`Loaded`]).
    async fn load(&self) -> Result<Loaded, StoreError>;

    /// The cursor of the latest event (the start of the log when there is none).
    async fn head(&self) -> Result<Cursor, StoreError>;

    /// Up to `max` events after `after`, in order. If there are none yet, waits up to `wait` for one to be
    /// appended, then answers (possibly with no events).
    async fn read(&self, after: &Cursor, max: usize, wait: Duration) -> Result<Read, StoreError>;

    /// Every stored revision of `provider`'s periods from `from` to `to` inclusive, in (period, revision) order.
    async fn history(&self, provider: &str, from: Timestamp, to: Timestamp) -> Result<Vec<HistoryRecord>, StoreError>;

    /// What [`history`](Store::history) gives for each of `providers`, read in as few round trips as the backend
    /// can (Redis: one script call for every [`HISTORY_PIECE`] providers): what a view over many providers reads.
    /// A provider with nothing in the range has no entry.
    async fn histories(
        &self,
        providers: &[String],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, Vec<HistoryRecord>>, StoreError>;

    /// How full the store is, `(used, limit)` in bytes, when it has a limit it will refuse writes at (Redis's
    /// `maxmemory`); `None` when it has none. The aggregator warns well before it is reached.
    async fn fullness(&self) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(None)
    }

    /// How many events the log holds now (Redis: the stream's `XLEN`); `None` when the backend cannot say. For
    /// operators (the aggregator's `sitrep_event_log_events`), not for deciding anything.
    async fn event_log_length(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}
