//! Store health: whether the store is well enough for the picture to count as up to date, and the picture's
//! status ([`PictureState`]) that follows from it, which the wallboard's banner, gRPC health, `/readyz`, the
//! sessions' status messages and the `sitrep_store_up` metric all show.
//!
//! Two parties report, and neither decides: the Hub reports each read of the event log ([`StoreHealth::read_ok`],
//! [`StoreHealth::read_failed`]), ingest each write ([`StoreHealth::write_stored`], [`StoreHealth::write_refused`]),
//! so ingest never touches the Hub. The policy is [`Tally`], a pure state machine over instants, tested here
//! without a store:
//! - reads failing make the store unreachable at once (the Hub retries with backoff meanwhile);
//! - writes refused degrade it only after [`WRITE_FAILURES_TO_DEGRADE`] in a row, so one slow answer under load is
//!   not an outage; a stored report clears them, and so do [`WRITE_FAILURES_FORGOTTEN_AFTER`] without a refusal
//!   (a replica that health checks took out of service gets no reports to prove the store well, so it comes back
//!   and tries); duplicates and conflicts write nothing and are not reported;
//! - refusals that began while the store was unreachable are forgotten when it returns; earlier ones are not.
//!
//! A change of cause is published even while the picture stays degraded, with a sentence saying which.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sitrep_core::Timestamp;
use tokio::sync::watch;

/// Whether the picture is being kept up to date: the store can be read and takes writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PictureState {
    pub degraded: bool,
    pub message: String,
    pub since: Timestamp,
}

/// Consecutive refused writes after which the picture counts as degraded.
pub(crate) const WRITE_FAILURES_TO_DEGRADE: u64 = 3;
/// With no refused write for this long, refused writes no longer count (see the module's header).
pub(crate) const WRITE_FAILURES_FORGOTTEN_AFTER: Duration = Duration::from_secs(30);

/// Why the picture is degraded, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    None,
    WritesRefused,
    Unreachable,
}

/// What is known of the store's reads and writes, and the rules that change it; times are the caller's.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    reads_failing_since: Option<Instant>,
    /// Refused writes since the last stored one.
    write_failures: u64,
    writes_failing_since: Option<Instant>,
    last_write_failure: Option<Instant>,
}

impl Tally {
    pub fn cause(&self) -> Cause {
        match (self.reads_failing_since, self.writes_failing_since) {
            (Some(_), _) => Cause::Unreachable,
            (None, Some(_)) => Cause::WritesRefused,
            (None, None) => Cause::None,
        }
    }

    /// A read of the log at `now` succeeded (`ok`) or failed. Reads come often (the Hub tails the log), so this is
    /// also where refused writes that have gone quiet are forgotten.
    pub fn read(&mut self, ok: bool, now: Instant) {
        if !ok {
            self.reads_failing_since.get_or_insert(now);
        } else if let Some(down) = self.reads_failing_since.take() {
            // Writes refused only once the store was unreachable are explained by that: start afresh. Writes
            // refused before it went down are a problem of their own and still count.
            if self.writes_failing_since.is_some_and(|w| w >= down) {
                self.forget_writes();
            }
        }
        if self.last_write_failure.is_some_and(|t| now.duration_since(t) >= WRITE_FAILURES_FORGOTTEN_AFTER) {
            self.forget_writes();
        }
    }

    /// A report was stored (`ok`) or refused by the store at `now`.
    pub fn write(&mut self, ok: bool, now: Instant) {
        if ok {
            self.write_failures = 0;
            self.writes_failing_since = None;
        } else {
            self.write_failures += 1;
            self.last_write_failure = Some(now);
            if self.write_failures >= WRITE_FAILURES_TO_DEGRADE {
                self.writes_failing_since.get_or_insert(now);
            }
        }
    }

    fn forget_writes(&mut self) {
        self.write_failures = 0;
        self.writes_failing_since = None;
        self.last_write_failure = None;
    }
}

/// What the status says when the cause goes from `before` to `after`: the reporter's own sentence (`reported`)
/// where its report caused the state, a plain one for the other transitions.
fn message(before: Cause, after: Cause, reported: impl FnOnce() -> String) -> String {
    match (before, after) {
        (Cause::Unreachable, Cause::WritesRefused) => "the store is reachable again but still refuses reports".into(),
        (_, Cause::None) => "the store is reachable and accepts reports again".into(),
        _ => reported(),
    }
}

/// The store's health as this replica sees it, and the picture's status that follows; cheap to clone (the Hub and
/// the [`crate::context::Context`] hold the same one).
#[derive(Clone)]
pub struct StoreHealth {
    tally: Arc<Mutex<Tally>>,
    status: watch::Sender<PictureState>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        let healthy = PictureState { degraded: false, message: "up to date".into(), since: Timestamp::now() };
        StoreHealth { tally: Default::default(), status: watch::channel(healthy).0 }
    }
}

impl StoreHealth {
    /// Follows the picture's status: degraded while the store cannot be read or refuses writes.
    pub fn status(&self) -> watch::Receiver<PictureState> {
        self.status.subscribe()
    }

    /// The Hub read the event log.
    pub fn read_ok(&self) {
        // A success can only end a cause, and `message` words every such change itself.
        self.update(|t, now| t.read(true, now), String::new);
    }

    /// The Hub could not read the event log.
    pub fn read_failed(&self, error: &dyn std::fmt::Display) {
        self.update(
            |t, now| t.read(false, now),
            || format!("the store is unreachable; no reports are being accepted ({error})"),
        );
    }

    /// The store took a report (not a duplicate or a conflict: those write nothing, and prove nothing).
    pub fn write_stored(&self) {
        // As for `read_ok`: `message` words the change.
        self.update(|t, now| t.write(true, now), String::new);
    }

    /// The store refused a report (it answered, but would not write: a demoted master, out of memory).
    pub fn write_refused(&self, error: &dyn std::fmt::Display) {
        self.update(
            |t, now| t.write(false, now),
            || format!("the store refuses reports; none are being accepted ({error})"),
        );
    }

    fn update(&self, change: impl FnOnce(&mut Tally, Instant), reported: impl FnOnce() -> String) {
        // Decided and published under one lock, so concurrent reporters cannot publish out of order.
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let before = tally.cause();
        change(&mut tally, Instant::now());
        let after = tally.cause();
        if after != before {
            let message = message(before, after, reported);
            self.status.send_replace(PictureState { degraded: after != Cause::None, message, since: Timestamp::now() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str = "the store refuses reports; none are being accepted (refused)";

    /// The policy on its own, at instants the test chooses.
    #[test]
    fn a_few_refused_writes_in_a_row_degrade_until_one_is_stored() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        t.write(false, t0);
        t.write(false, t0);
        assert_eq!(t.cause(), Cause::None, "one or two refusals are not an outage");
        t.write(false, t0);
        assert_eq!(t.cause(), Cause::WritesRefused);
        t.read(true, t0 + Duration::from_secs(1));
        assert_eq!(t.cause(), Cause::WritesRefused, "reads alone do not clear refused writes");
        t.write(true, t0 + Duration::from_secs(2));
        assert_eq!(t.cause(), Cause::None);
        t.write(false, t0 + Duration::from_secs(3));
        t.write(false, t0 + Duration::from_secs(3));
        t.write(true, t0 + Duration::from_secs(3));
        t.write(false, t0 + Duration::from_secs(3));
        assert_eq!(t.cause(), Cause::None, "a stored report starts the count again");
    }

    #[test]
    fn failed_reads_make_the_store_unreachable_at_once_and_their_refusals_are_forgotten() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        t.read(false, t0);
        assert_eq!(t.cause(), Cause::Unreachable);
        for _ in 0..5 {
            t.write(false, t0 + Duration::from_secs(1));
        }
        t.read(true, t0 + Duration::from_secs(2));
        assert_eq!(t.cause(), Cause::None, "refusals while unreachable are explained by it");
        // Refusals from before the store went down are a problem of their own.
        for _ in 0..3 {
            t.write(false, t0 + Duration::from_secs(3));
        }
        t.read(false, t0 + Duration::from_secs(4));
        assert_eq!(t.cause(), Cause::Unreachable);
        t.read(true, t0 + Duration::from_secs(5));
        assert_eq!(t.cause(), Cause::WritesRefused);
    }

    #[test]
    fn refused_writes_are_forgotten_when_quiet() {
        let t0 = Instant::now();
        let mut t = Tally::default();
        for _ in 0..3 {
            t.write(false, t0);
        }
        t.read(true, t0 + WRITE_FAILURES_FORGOTTEN_AFTER - Duration::from_millis(1));
        assert_eq!(t.cause(), Cause::WritesRefused, "still within the quiet period");
        t.read(true, t0 + WRITE_FAILURES_FORGOTTEN_AFTER);
        assert_eq!(t.cause(), Cause::None, "no refusal within the quiet period: try again");
        t.write(false, t0 + WRITE_FAILURES_FORGOTTEN_AFTER);
        assert_eq!(t.cause(), Cause::None, "the count started afresh");
    }

    /// What the status says, through the handle the Hub and ingest report to.
    #[test]
    fn the_status_says_each_change_of_cause() {
        let health = StoreHealth::default();
        let status = health.status();
        assert!(!status.borrow().degraded);
        for _ in 0..3 {
            health.write_refused(&"refused");
        }
        assert!(status.borrow().degraded);
        assert_eq!(status.borrow().message, REFUSED);
        health.read_ok();
        assert_eq!(status.borrow().message, REFUSED, "reads alone change nothing");
        health.read_failed(&"connection refused");
        assert_eq!(
            status.borrow().message,
            "the store is unreachable; no reports are being accepted (connection refused)",
            "the cause changed"
        );
        health.read_ok();
        assert!(status.borrow().degraded);
        assert_eq!(status.borrow().message, "the store is reachable again but still refuses reports");
        health.write_stored();
        assert!(!status.borrow().degraded);
        assert_eq!(status.borrow().message, "the store is reachable and accepts reports again");
    }
}
