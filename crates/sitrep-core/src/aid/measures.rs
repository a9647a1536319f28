//! Measures of mutual aid for one scope: how many requests are open, how long requests waited for a first offer,
//! an acceptance and completion (median and 90th percentile), how often they went unmet, and each provider's
//! balance of beds given and received.
//!
//! A request belongs to a scope when its requesting provider does. Percentiles use the nearest-rank method
//! (the smallest observed value with at least `p` percent of observations at or below it), so every figure is a
//! duration some request actually took. The unfulfilled rate is `(unfulfilled + expired) / (completed +
//! unfulfilled + expired)`: cancelled requests are left out (the need went away), as are those still open; `None`
//! when no request has closed. Balances count the quantity of accepted offers on completed requests: given to the
//! offering provider, received to the requesting one; every provider of the scope on either side is listed.

use std::collections::BTreeMap;

use super::{AidBook, OfferState, RequestState};
use crate::{Directory, Timestamp};

/// Durations in milliseconds over the requests that reached a milestone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Durations {
    pub count: usize,
    pub median_ms: Option<i64>,
    pub p90_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Balance {
    pub given: u32,
    pub received: u32,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Measures {
    /// Requests counted: every request of the scope, or (by day) those made that day.
    pub requests: usize,
    /// Requests not yet closed (open, offered, accepted or in transit).
    pub open_requests: usize,
    /// The age of the oldest request not yet closed, at `now`.
    pub oldest_open_ms: Option<i64>,
    pub to_first_offer: Durations,
    pub to_acceptance: Durations,
    pub to_completion: Durations,
    pub unfulfilled_rate: Option<f64>,
    pub balances: BTreeMap<String, Balance>,
}

/// The nearest-rank percentile `p` (0 < p <= 100) of `values`; `None` when empty.
pub fn percentile(values: &[i64], p: u32) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * p as usize).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn durations(values: &[i64]) -> Durations {
    Durations { count: values.len(), median_ms: percentile(values, 50), p90_ms: percentile(values, 90) }
}

/// The measures of `scope` (written as for [`Directory::members`]: `system:QWE`, `region:Y56`, `nation`); `None`
/// when the directory has no such scope.
pub fn measures(scope: &str, book: &AidBook, directory: &Directory, now: Timestamp) -> Option<Measures> {
    let members = directory.members(scope)?;
    Some(measure(&members, book, now, |_| true))
}

/// The measures of `scope` for each of the `days` UTC days up to and including `now`'s, oldest first: each counts
/// the requests made that day (how they fared since, as of `now`). `None` when the directory has no such scope.
pub fn measures_by_day(
    scope: &str,
    book: &AidBook,
    directory: &Directory,
    now: Timestamp,
    days: u32,
) -> Option<Vec<(Timestamp, Measures)>> {
    const DAY_MS: i64 = 24 * 3_600_000;
    let members = directory.members(scope)?;
    let today = Timestamp(now.0.div_euclid(DAY_MS) * DAY_MS);
    let out = (0..i64::from(days))
        .rev()
        .map(|back| {
            let start = Timestamp(today.0 - back * DAY_MS);
            let day = start.0..start.0 + DAY_MS;
            (start, measure(&members, book, now, |r| day.contains(&r.created_at.0)))
        })
        .collect();
    Some(out)
}

fn measure(
    members: &std::collections::BTreeSet<String>,
    book: &AidBook,
    now: Timestamp,
    counted: impl Fn(&super::Request) -> bool,
) -> Measures {
    let mut m = Measures::default();
    let (mut first_offer, mut acceptance, mut completion) = (Vec::new(), Vec::new(), Vec::new());
    let (mut unmet, mut closed) = (0u32, 0u32);
    for r in book.requests().filter(|r| counted(r)) {
        let ours = members.contains(&r.ask.provider);
        if r.state == RequestState::Completed {
            for o in book.offers_of(r.id).filter(|o| o.state == OfferState::Accepted) {
                if members.contains(&o.provider) {
                    m.balances.entry(o.provider.clone()).or_default().given += o.quantity;
                }
                if ours {
                    m.balances.entry(r.ask.provider.clone()).or_default().received += o.quantity;
                }
            }
        }
        if !ours {
            continue;
        }
        m.requests += 1;
        let since = |t: Option<Timestamp>| t.map(|t| t.0 - r.created_at.0);
        first_offer.extend(since(r.first_offer_at));
        acceptance.extend(since(r.first_accepted_at));
        match r.state {
            RequestState::Completed => {
                completion.extend(since(r.closed_at));
                closed += 1;
            }
            RequestState::Unfulfilled | RequestState::Expired => {
                unmet += 1;
                closed += 1;
            }
            RequestState::Cancelled => {}
            _ => {
                m.open_requests += 1;
                let age = now.0 - r.created_at.0;
                m.oldest_open_ms = Some(m.oldest_open_ms.map_or(age, |o: i64| o.max(age)));
            }
        }
    }
    m.to_first_offer = durations(&first_offer);
    m.to_acceptance = durations(&acceptance);
    m.to_completion = durations(&completion);
    m.unfulfilled_rate = (closed > 0).then(|| f64::from(unmet) / f64::from(closed));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aid::tests::{actor, ask, t};
    use crate::aid::{Action, RequestId, Stage};
    use crate::profile::demo_directory;

    #[test]
    fn nearest_rank_percentiles() {
        let table: &[(&[i64], Option<i64>, Option<i64>)] = &[
            (&[], None, None),
            (&[7], Some(7), Some(7)),
            (&[4, 1, 3, 2], Some(2), Some(4)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], Some(5), Some(9)),
            (&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110], Some(60), Some(100)),
        ];
        for &(values, median, p90) in table {
            assert_eq!((percentile(values, 50), percentile(values, 90)), (median, p90), "{values:?}");
        }
    }

    /// Creates a request by `requester` at minute `created` and, when `giver` is set, an offer of its whole
    /// quantity `offered` minutes later, accepted `accepted` minutes after creation.
    fn run(book: &mut AidBook, requester: &str, giver: &str, created: i64, offered: i64, accepted: i64) -> RequestId {
        book.apply(Action::Create(ask(requester, 2)), &actor(requester), t(created)).unwrap();
        let request = book.requests().last().unwrap().id;
        book.apply(
            Action::Offer { request, provider: giver.into(), site: None, quantity: 2, hold_until: t(created + 500) },
            &actor(giver),
            t(created + offered),
        )
        .unwrap();
        let offer = book.offers_of(request).last().unwrap().id;
        book.apply(Action::Accept { offer, baseline_occupied: 0 }, &actor(requester), t(created + accepted)).unwrap();
        request
    }

    #[test]
    fn measures_of_a_scope() {
        let mut book = AidBook::new();
        let d = demo_directory();
        // Three QWE requests offered after 5, 10, 30 minutes; two completed, one unfulfilled.
        let a = run(&mut book, "RJ7", "RVR", 0, 5, 10);
        let b = run(&mut book, "RJ7", "RRV", 0, 10, 20);
        let c = run(&mut book, "RAX", "RVR", 0, 30, 40);
        for (r, done) in [(a, 60), (b, 120)] {
            book.apply(Action::Progress { request: r, stage: Stage::InTransit }, &actor("RJ7"), t(done - 1)).unwrap();
            book.apply(Action::Progress { request: r, stage: Stage::Completed }, &actor("RJ7"), t(done)).unwrap();
        }
        book.apply(Action::Unfulfilled { request: c, reason: "no transport".into() }, &actor("RAX"), t(50)).unwrap();
        // One open request in QWE (age 100 minutes at t=200), and one cancelled, which counts nowhere.
        book.apply(Action::Create(ask("RJ6", 1)), &actor("RJ6"), t(100)).unwrap();
        book.apply(Action::Create(ask("RJ6", 1)), &actor("RJ6"), t(100)).unwrap();
        let last = book.requests().last().unwrap().id;
        book.apply(Action::Cancel { request: last, reason: "patient improved".into() }, &actor("RJ6"), t(101)).unwrap();
        // A request elsewhere (QUE) is not QWE's.
        run(&mut book, "RGT", "RJ7", 0, 1, 2);

        let m = measures("system:QWE", &book, &d, t(200)).unwrap();
        assert_eq!(m.open_requests, 1);
        assert_eq!(m.oldest_open_ms, Some(100 * 60_000));
        let min = |n: i64| Some(n * 60_000);
        assert_eq!(m.to_first_offer, Durations { count: 3, median_ms: min(10), p90_ms: min(30) });
        assert_eq!(m.to_acceptance, Durations { count: 3, median_ms: min(20), p90_ms: min(40) });
        assert_eq!(m.to_completion, Durations { count: 2, median_ms: min(60), p90_ms: min(120) });
        assert_eq!(m.unfulfilled_rate, Some(1.0 / 3.0));
        // RVR gave 2 (to a); RRV's 2 (to b) was given from outside QWE; RJ7 received 4. c was never completed.
        assert_eq!(
            m.balances.into_iter().collect::<Vec<_>>(),
            [
                ("RJ7".to_owned(), Balance { given: 0, received: 4 }),
                ("RVR".to_owned(), Balance { given: 2, received: 0 })
            ]
        );
        // The region sees RRV's gift too; an unknown scope is None.
        let region = measures("region:Y56", &book, &d, t(200)).unwrap();
        assert_eq!(region.balances["RRV"], Balance { given: 2, received: 0 });
        assert!(measures("system:NOPE", &book, &d, t(200)).is_none());
        assert_eq!(measures("system:QMM", &book, &d, t(200)).unwrap().unfulfilled_rate, None);
    }

    #[test]
    fn measures_by_day_count_the_requests_made_each_day() {
        let mut book = AidBook::new();
        let d = demo_directory();
        // t(0) is 08:00 UTC; t(16 * 60) is midnight.
        run(&mut book, "RJ7", "RVR", 0, 5, 10);
        let next_day = |provider: &str| crate::aid::NewRequest { needed_by: t(20 * 60), ..ask(provider, 1) };
        book.apply(Action::Create(next_day("RJ7")), &actor("RJ7"), t(16 * 60 + 10)).unwrap();
        let request = book.requests().last().unwrap().id;
        let offer = Action::Offer { request, provider: "RVR".into(), site: None, quantity: 1, hold_until: t(20 * 60) };
        book.apply(offer, &actor("RVR"), t(16 * 60 + 30)).unwrap();
        book.apply(Action::Create(next_day("RAX")), &actor("RAX"), t(16 * 60 + 20)).unwrap();
        let days = measures_by_day("system:QWE", &book, &d, t(17 * 60), 3).unwrap();
        let summary: Vec<(String, usize, usize, Option<i64>)> = days
            .iter()
            .map(|(day, m)| (day.to_string(), m.requests, m.open_requests, m.to_first_offer.median_ms))
            .collect();
        assert_eq!(
            summary,
            [
                ("2027-01-14T00:00:00Z".to_owned(), 0, 0, None),
                ("2027-01-15T00:00:00Z".to_owned(), 1, 1, Some(5 * 60_000)),
                ("2027-01-16T00:00:00Z".to_owned(), 2, 2, Some(20 * 60_000)),
            ]
        );
        assert_eq!(measures("system:QWE", &book, &d, t(17 * 60)).unwrap().requests, 3);
    }
}
