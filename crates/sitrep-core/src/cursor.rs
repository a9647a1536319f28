//! Cursors: the position of an event in the event log, and the epoch of the log it belongs to.
//!
//! A cursor is opaque to clients but structured here: an epoch (a generation id that changes whenever the log may
//! have lost entries) and a position that orders events within the epoch. Positions are two numbers so that a
//! Redis stream id (`millis-seq`) maps onto them directly; the memory store uses `(seq, 0)`. The text form is
//! `<epoch>:<hi>-<lo>`.

use std::fmt;

/// A position in the event log of one epoch. Ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64, pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// An event's position together with the epoch of the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub epoch: String,
    pub pos: Position,
}

impl Cursor {
    pub fn new(epoch: impl Into<String>, pos: Position) -> Self {
        Cursor { epoch: epoch.into(), pos }
    }

    /// No cursor yet: what a planned event has until a store appends it to the log.
    pub fn none() -> Self {
        Cursor { epoch: String::new(), pos: Position(0, 0) }
    }

    /// Parses the text form. Returns `None` for anything malformed: callers treat that like a cursor of another
    /// epoch (the subscriber is reset), since a client cannot be caught up from a position nobody can read.
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, pos) = text.rsplit_once(':')?;
        let (hi, lo) = pos.split_once('-')?;
        if epoch.is_empty() || !epoch.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some(Cursor { epoch: epoch.to_owned(), pos: Position(hi.parse().ok()?, lo.parse().ok()?) })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.pos)
    }
}

/// As its text form (an empty epoch for [`Cursor::none`]), so records that keep the cursor a decision was made on
/// (mutual aid's audit trail) store it as people read it.
impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text == Cursor::none().to_string() {
            return Ok(Cursor::none());
        }
        Cursor::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a cursor")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_orders() {
        let c = Cursor::new("e1x", Position(1732716000000, 3));
        assert_eq!(c.to_string(), "e1x:1732716000000-3");
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        assert!(Position(1, 9) < Position(2, 0));
        for bad in ["", "e1", ":1-2", "e:1", "e:1-x", "e f:1-2", "e:-1-2"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }
}
