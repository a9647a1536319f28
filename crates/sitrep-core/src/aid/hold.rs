//! Holds: beds an accepted offer keeps back at the offering provider, and the headroom that is left.
//!
//! An accepted offer of `q` beds of a capacity pair (`beds.cc_adult`) places a hold of `q` on the offering provider.
//! Until the hold ends, the provider's **headroom** for that pair is `open - occupied - held`, so the same free bed is
//! never offered twice.
//!
//! # When a hold ends
//! - **On a report** ([`super::AidBook::release_on_report`]): a hold records the provider's occupied count when it
//!   began (its *baseline*, read from the picture at the accepting decision's cursor). Holds of one provider and
//!   pair are considered oldest first; a hold is released by a report whose occupied count has risen since its
//!   baseline by at least its own quantity **plus the quantities of the older holds still in force** (including
//!   those this same report releases). The older holds' patients raise the same count, so without that sum one
//!   arriving patient would release two holds of one bed each. The rule is conservative: churn (admissions and discharges in the same hour) can delay a
//!   release, never hasten it, and expiry bounds the delay.
//! - **Explicitly**: when its request is cancelled or declared unfulfilled.
//! - **On expiry**: when the offer's hold time passes ([`super::AidBook::tick`]).
//!
//! A report that leaves `open - occupied` below the beds still held raises an `overcommitted` event: the provider
//! has promised beds it no longer has.

use serde::{Deserialize, Serialize};

use super::OfferId;
use crate::Timestamp;

/// What `open - occupied - held` leaves; negative when the provider is overcommitted.
pub fn headroom(open: u32, occupied: u32, held: u32) -> i64 {
    i64::from(open) - i64::from(occupied) - i64::from(held)
}

/// Beds held at one provider for one accepted offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub offer: OfferId,
    pub provider: String,
    /// The capacity pair, e.g. `beds.cc_adult` (its metrics are `.open` and `.occupied`).
    pub pair: String,
    pub quantity: u32,
    /// The provider's occupied count for the pair when the hold began.
    pub baseline_occupied: u32,
    pub since: Timestamp,
    pub until: Timestamp,
}

/// Why a hold ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldEnd {
    /// A report showed the beds occupied.
    Occupied,
    /// The request was cancelled or declared unfulfilled.
    Released,
    /// The offer's hold time passed.
    Expired,
}

impl HoldEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldEnd::Occupied => "occupied",
            HoldEnd::Released => "released",
            HoldEnd::Expired => "expired",
        }
    }
}

/// The holds of one provider and pair, oldest first, that a report with `occupied_now` releases (see the module
/// header for the rule).
pub(super) fn released_by<'a>(holds: impl IntoIterator<Item = &'a Hold>, occupied_now: u32) -> Vec<OfferId> {
    let mut ordered: Vec<&Hold> = holds.into_iter().collect();
    ordered.sort_by_key(|h| (h.since, h.offer));
    // Holds released by this same report count as older holds in force: their patients are in `occupied_now`.
    let mut older_in_force = 0i64;
    let mut released = Vec::new();
    for hold in ordered {
        let rise = i64::from(occupied_now) - i64::from(hold.baseline_occupied);
        if rise >= i64::from(hold.quantity) + older_in_force {
            released.push(hold.offer);
        }
        older_in_force += i64::from(hold.quantity);
    }
    released
}

/// Ends the holds a provider's report shows occupied: for each pair, by [`released_by`] against the occupied count
/// `number` gives for `<pair>.occupied` (a pair with no such count releases nothing). Returns the ended holds; the
/// rest stay in `holds`, in their order.
pub fn release_on_report(holds: &mut Vec<Hold>, number: impl Fn(&str) -> Option<f64>) -> Vec<Hold> {
    if holds.is_empty() {
        return Vec::new();
    }
    let mut pairs: Vec<&str> = holds.iter().map(|h| h.pair.as_str()).collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut ended: Vec<OfferId> = Vec::new();
    for pair in pairs {
        let Some(occupied) = number(&format!("{pair}.occupied")) else { continue };
        let occupied = occupied.max(0.0).min(f64::from(u32::MAX)) as u32;
        ended.extend(released_by(holds.iter().filter(|h| h.pair == pair), occupied));
    }
    let (gone, kept): (Vec<Hold>, Vec<Hold>) =
        std::mem::take(holds).into_iter().partition(|h| ended.contains(&h.offer));
    *holds = kept;
    gone
}

/// Beds held, by the position of each pair's `<pair>.occupied` among the rules' reported metrics: what derived
/// figures add to that metric (free beds become headroom) and the picture adds to its scopes' totals of them.
/// Pairs the catalogue does not know are left out.
pub fn held_by_metric(rules: &crate::Rules, holds: &[Hold]) -> Vec<(usize, f64)> {
    let mut out: Vec<(usize, f64)> = Vec::new();
    for h in holds {
        let Some(crate::rules::Position::Metric(m)) = rules.index().position(&format!("{}.occupied", h.pair)) else {
            continue;
        };
        match out.iter_mut().find(|(p, _)| *p == m) {
            Some((_, q)) => *q += f64::from(h.quantity),
            None => out.push((m, f64::from(h.quantity))),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(offer: u64, quantity: u32, baseline: u32, since: i64) -> Hold {
        Hold {
            offer: OfferId(offer),
            provider: "RVR".into(),
            pair: "beds.cc_adult".into(),
            quantity,
            baseline_occupied: baseline,
            since: Timestamp(since),
            until: Timestamp(i64::MAX),
        }
    }

    #[test]
    fn headroom_subtracts_holds_and_goes_negative() {
        assert_eq!(headroom(10, 6, 0), 4);
        assert_eq!(headroom(10, 6, 3), 1);
        assert_eq!(headroom(10, 9, 2), -1);
        assert_eq!(headroom(0, 0, 0), 0);
    }

    #[test]
    fn release_counts_older_holds_in_force() {
        // Two holds of one bed from the same baseline: one arrival releases only the older.
        let holds = [hold(2, 1, 10, 200), hold(1, 1, 10, 100)];
        let table: &[(u32, &[u64])] = &[(9, &[]), (10, &[]), (11, &[1]), (12, &[1, 2]), (20, &[1, 2])];
        for &(occupied, expected) in table {
            let got: Vec<u64> = released_by(&holds, occupied).into_iter().map(|o| o.0).collect();
            assert_eq!(got, expected, "occupied {occupied}");
        }
        // A hold of two is not released by one arrival.
        assert!(released_by(&[hold(3, 2, 5, 0)], 6).is_empty());
        assert_eq!(released_by(&[hold(3, 2, 5, 0)], 7), vec![OfferId(3)]);
    }
}
