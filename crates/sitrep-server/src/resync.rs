//! [`Resync`]: why a subscriber is sent a fresh snapshot. The session decides it, both transports tell it to the
//! subscriber, and the metrics count it; it sits below all of them so that counting a reset does not make the
//! metrics depend on the session.

/// Why a subscriber is being sent a fresh snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    CursorTooOld,
    OtherEpoch,
    CursorAhead,
    SlowSubscriber,
    Resync,
}

impl Resync {
    pub fn as_str(self) -> &'static str {
        match self {
            Resync::CursorTooOld => "cursor_too_old",
            Resync::OtherEpoch => "other_epoch",
            Resync::CursorAhead => "cursor_ahead",
            Resync::SlowSubscriber => "slow_subscriber",
            Resync::Resync => "resync",
        }
    }
}
