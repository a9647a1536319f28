//! Instants in UTC with millisecond precision, and the hour arithmetic that periods need.
//!
//! A period is identified by the [`Timestamp`] of the start of its hour. Keeping one type for both keeps
//! conversions at the edges trivial; [`Timestamp::is_hour_aligned`] says whether an instant can be a period.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const HOUR_MS: i64 = 3_600_000;
    /// 1970-01-01T00:00:00Z: the earliest instant sitrep represents as text.
    pub const MIN_TEXT: Timestamp = Timestamp(0);
    /// 9999-12-31T23:59:59.999Z: the latest instant RFC 3339 can write.
    pub const MAX_TEXT: Timestamp = Timestamp(253_402_300_799_999);

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn from_secs(secs: i64) -> Self {
        Timestamp(secs * 1000)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// The current time from the system clock.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// The start of the hour this instant falls in.
    pub fn hour_start(self) -> Self {
        Timestamp(self.0.div_euclid(Self::HOUR_MS).saturating_mul(Self::HOUR_MS))
    }

    pub fn is_hour_aligned(self) -> bool {
        self.0.rem_euclid(Self::HOUR_MS) == 0
    }

    pub fn add_hours(self, hours: i64) -> Self {
        Timestamp(self.0.saturating_add(hours.saturating_mul(Self::HOUR_MS)))
    }

    pub fn add_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Parses RFC 3339 text such as `2026-11-27T14:00:00Z` or `2026-06-01T15:00:00.250+01:00` (the zone is
    /// required; fractions of a second are kept to the millisecond).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let t = text.trim();
        // The zone is read here: humantime's lenient parser reads the date and time, but would ignore an offset
        // that follows a fraction of a second.
        let (body, offset_ms) = match t.strip_suffix(['Z', 'z']) {
            Some(body) => (body, 0),
            None => {
                let split = t.len().checked_sub(6).filter(|&i| t.is_char_boundary(i))?;
                let (body, zone) = t.split_at(split);
                let z = zone.as_bytes();
                let digits = |a: u8, b: u8| {
                    (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
                };
                let sign = match z[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let (hours, minutes) = (digits(z[1], z[2])?, digits(z[4], z[5])?);
                if z[3] != b':' || hours > 23 || minutes > 59 {
                    return None;
                }
                (body, sign * (hours * 60 + minutes) * 60_000)
            }
        };
        if body.ends_with(['+', '-', 'Z', 'z']) {
            return None;
        }
        let local = humantime::parse_rfc3339_weak(body).ok().map(Self::from)?;
        Some(local.add_millis(-offset_ms))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(d.as_millis() as i64),
            Err(e) => Timestamp(-(e.duration().as_millis() as i64)),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(t.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(t.0.unsigned_abs())
        }
    }
}

/// RFC 3339 text, e.g. `2026-11-27T14:00:00Z` (milliseconds shown only when non-zero).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Outside what RFC 3339 can write (as a hostile or broken client may send), show the raw number.
        if *self < Self::MIN_TEXT || *self > Self::MAX_TEXT {
            return write!(f, "{} ms from 1970-01-01T00:00:00Z", self.0);
        }
        let st = SystemTime::from(*self);
        if self.0 % 1000 == 0 {
            write!(f, "{}", humantime::format_rfc3339_seconds(st))
        } else {
            write!(f, "{}", humantime::format_rfc3339_millis(st))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours() {
        let t = Timestamp::parse_rfc3339("2026-11-27T14:35:10Z").unwrap();
        assert!(!t.is_hour_aligned());
        assert_eq!(t.hour_start().to_string(), "2026-11-27T14:00:00Z");
        assert!(t.hour_start().is_hour_aligned());
        assert_eq!(t.hour_start().add_hours(-1).to_string(), "2026-11-27T13:00:00Z");
        assert_eq!(Timestamp(-1).hour_start(), Timestamp(-Timestamp::HOUR_MS));
    }

    #[test]
    fn extreme_instants_display_without_panicking() {
        for t in [i64::MIN, -3_600_000, -1, 253_402_300_800_000, i64::MAX] {
            let text = Timestamp(t).to_string();
            assert!(text.contains("ms from 1970"), "{text}");
            let _ = Timestamp(t).hour_start().add_hours(i64::MAX).add_millis(i64::MIN);
        }
        assert_eq!(Timestamp::MAX_TEXT.to_string(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn offsets_are_honoured_and_junk_refused() {
        let utc = Timestamp::parse_rfc3339("2026-06-01T14:00:00Z").unwrap();
        for text in [
            "2026-06-01T15:00:00+01:00",
            "2026-06-01T15:00:00.000+01:00",
            "2026-06-01T13:30:00-00:30",
            "2026-06-01 14:00:00Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(text), Some(utc), "{text}");
        }
        for text in
            ["2026-06-01T14:00:00Zjunk", "2026-06-01T14:00:00+1:00", "2026-06-01T14:00:00", "2026-06-01T14:00:00+25:00"]
        {
            assert_eq!(Timestamp::parse_rfc3339(text), None, "{text}");
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        for text in ["2026-11-27T14:00:00Z", "2026-11-27T14:00:00.250Z"] {
            assert_eq!(Timestamp::parse_rfc3339(text).unwrap().to_string(), text);
        }
        assert!(Timestamp::parse_rfc3339("yesterday").is_none());
    }
}
