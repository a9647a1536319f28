//! [`Resync`]: why a subscriber is sent a fresh snapshot, the one server-side definition of a reset's reason. The
//! Hub flags a subscriber it cut loose with it, the session decides it, both transports tell it to the subscriber,
//! and the metrics count it; it sits below all of them so that counting a reset does not make the metrics depend on
//! the session.
//!
//! The store says why its log cannot serve a cursor with its own [`ResetReason`] (it knows nothing of
//! subscribers); that becomes a `Resync` here, once, by `From`. The Hub keeps a subscriber's flag in an atomic
//! byte: [`Resync::code`] and [`Resync::from_code`] are that encoding, with 0 left for "not cut loose".

use sitrep_store::ResetReason;

/// Why a subscriber is being sent a fresh snapshot. The discriminants are the Hub's atomic encoding (never 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Resync {
    /// Its queue overflowed: it fell behind the Hub.
    SlowSubscriber = 1,
    /// The log no longer holds the events after its cursor (or after the Hub's position: trimmed past it).
    CursorTooOld = 2,
    /// Its cursor belongs to another epoch of the log (or is not one sitrep issued), or the log started a new one.
    OtherEpoch = 3,
    /// Its cursor is beyond the log's end, or names an event the log does not hold (a failover lost the tail).
    CursorAhead = 4,
    /// The Hub had no position in the log when the subscriber registered (start-up, or after a log reset while
    /// the store was unreachable), or could not fold the log, so what it queued may not join up with what the
    /// subscriber read.
    Resync = 5,
}

impl Resync {
    /// Every reason, in the order the metrics label them (which is also the order of [`Resync::code`]).
    pub const ALL: [Resync; 5] =
        [Resync::SlowSubscriber, Resync::CursorTooOld, Resync::OtherEpoch, Resync::CursorAhead, Resync::Resync];

    /// The name subscribers are told (SSE) and the metrics' label.
    pub fn as_str(self) -> &'static str {
        match self {
            Resync::CursorTooOld => "cursor_too_old",
            Resync::OtherEpoch => "other_epoch",
            Resync::CursorAhead => "cursor_ahead",
            Resync::SlowSubscriber => "slow_subscriber",
            Resync::Resync => "resync",
        }
    }

    /// The reason as one byte, never 0 (see the module's header).
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    /// The reason [`Resync::code`] gave `code`; `None` for 0 (and any other byte no reason encodes to).
    pub(crate) fn from_code(code: u8) -> Option<Resync> {
        Resync::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The reason's position in [`Resync::ALL`].
    pub(crate) fn index(self) -> usize {
        usize::from(self.code()) - 1
    }
}

impl From<ResetReason> for Resync {
    fn from(reason: ResetReason) -> Self {
        match reason {
            ResetReason::TooOld => Resync::CursorTooOld,
            ResetReason::OtherEpoch => Resync::OtherEpoch,
            ResetReason::Ahead => Resync::CursorAhead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_index_all() {
        assert_eq!(Resync::from_code(0), None, "0 is left for a subscriber not cut loose");
        for (i, reason) in Resync::ALL.into_iter().enumerate() {
            assert_ne!(reason.code(), 0);
            assert_eq!(Resync::from_code(reason.code()), Some(reason));
            assert_eq!(reason.index(), i);
        }
        let names: Vec<&str> = Resync::ALL.map(Resync::as_str).to_vec();
        assert_eq!(names, ["slow_subscriber", "cursor_too_old", "other_epoch", "cursor_ahead", "resync"]);
    }
}
