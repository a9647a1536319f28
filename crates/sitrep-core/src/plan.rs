//! The one pipeline: what a report (or the clock) changes, planned as a pure function of the provider's prior
//! state, for a store to persist in one atomic step.
//!
//! Every store calls these functions and only persists what they return, so no business rule lives in a store or
//! in a Redis script and both backends cannot disagree:
//! - [`report`]: a valid report against the provider's live state. Newer than live state (a later period, or a
//!   higher revision of the latest one) it is *live*: it advances the provider's state, derives figures, ratings,
//!   OPEL and alerts ([`crate::derive::advance`]), and moves the provider to a new version. Otherwise it is *late*:
//!   it goes into history only, its event diffs against the previous revision of its period, and live state and
//!   version stay as they are.
//! - [`stale`]: the clock's transition of a quiet provider to stale, once.
//! - [`mod@aid`]: a mutual aid action against the book and the holding providers' live states.
//!
//! A [`Plan`] names the version it was planned from. The store applies it only if the provider's stored version
//! is still that one (else the store answers with the current state and the plan is made again), and only if the
//! report's key (provider, site, period, revision) is not in history yet (else it is a duplicate). Those two checks are
//! the store's whole part in deciding anything.

pub mod aid;

use std::collections::BTreeMap;

use crate::derive;
use crate::state::{HistoryRecord, diff, event, is_newer};
use crate::{Code, Event, ProviderLive, Rules, Timestamp, ValidReport, Value};

/// A change planned against one version of a provider, for a store to persist atomically.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub provider: String,
    /// The provider's version the plan was made from (0: it had no live state).
    pub expected_version: u64,
    /// The provider's live state once the plan is applied; `None` when live state does not change (a late report).
    pub state: Option<ProviderLive>,
    /// The report's history entry (`None` for the clock's transitions).
    pub history: Option<HistoryRecord>,
    /// History of periods before this one may go (retention): set when a report moves its provider to a later
    /// period, so a store trims once an hour per provider rather than on every report.
    pub trim_before: Option<Timestamp>,
    /// The event, with no cursor yet (the store gives it one) and no rollups (the picture adds them).
    pub event: Event,
}

/// Whether a stored revision says what `report` says: the same site, values and narrative. A report sent again
/// with the same key and content is a duplicate (a retry: nothing changes); the same key with other content is a
/// conflict, which the sender must resend under a new revision, never dropped as a duplicate. When and from where
/// it was sent (`observed_at`, `source`) may differ between retries, so they are not part of the content.
pub fn same_content(stored: &HistoryRecord, report: &ValidReport) -> bool {
    stored.site.as_deref() == report.site()
        && stored.narrative.as_deref() == report.narrative()
        && stored.values == *report.values()
}

/// The revision a report sent without one gets (see [`ValidReport::needs_revision`]): the next after the highest
/// its period has. For the provider's live period that is its live revision (a higher one would have been live);
/// for a later period there is none yet; only an earlier period needs `highest_stored`, the highest revision
/// history holds for it, which a store reads only then (see [`needs_history_for_revision`]).
pub fn next_revision(prior: Option<&ProviderLive>, report: &ValidReport, highest_stored: Option<u32>) -> u32 {
    let latest = prior.and_then(|p| p.latest_of(report.site()));
    let live = latest.filter(|(period, _)| *period == report.period()).map(|(_, revision)| revision);
    live.max(highest_stored).map_or(1, |r| r.saturating_add(1))
}

/// Whether [`next_revision`] needs the highest revision history holds for `report`'s period (and site).
pub fn needs_history_for_revision(prior: Option<&ProviderLive>, report: &ValidReport) -> bool {
    prior.and_then(|p| p.latest_of(report.site())).is_some_and(|(period, _)| report.period() < period)
}

/// Whether `report` would go into history only (not newer than the live state of its site, or of the provider
/// as a whole). A store asks this first, because a late report's plan needs the previous revision of its period
/// (and site) from history.
pub fn is_late(prior: Option<&ProviderLive>, report: &ValidReport) -> bool {
    !is_newer(report.site(), report.period(), report.revision(), prior)
}

/// Plans `report`, received at `received_at`, against `prior` (the provider's live state, if it has any). For a
/// late report, `previous` is what the previous revision of its period (from the same site) said, if there is one. History is kept for
/// `retention_hours` back from each provider's latest period.
pub fn report(
    rules: &Rules,
    prior: Option<&ProviderLive>,
    previous: Option<&BTreeMap<Code, Value>>,
    report: &ValidReport,
    received_at: Timestamp,
    retention_hours: i64,
) -> Plan {
    let expected_version = prior.map_or(0, |p| p.version);
    let history = HistoryRecord {
        period: report.period(),
        revision: report.revision(),
        observed_at: report.observed_at(),
        received_at,
        values: report.values().clone(),
        narrative: report.narrative().map(str::to_owned),
        source: report.source().map(str::to_owned),
        site: report.site().map(str::to_owned),
        sender: report.sender().cloned(),
    };
    if is_late(prior, report) {
        let changes = diff(|code| previous.and_then(|v| v.get(code)), report);
        let mut ev = event(report, received_at, false, changes);
        ev.version = expected_version;
        return Plan {
            provider: report.provider().to_owned(),
            expected_version,
            state: None,
            history: Some(history),
            trim_before: None,
            event: ev,
        };
    }
    let new_period = prior.is_none_or(|p| report.period() > p.period);
    let mut next = prior.cloned();
    let (changes, derived, released) = derive::advance(rules, &mut next, report, received_at);
    let state = next.expect("advance leaves live state");
    let mut ev = event(report, received_at, true, changes);
    ev.version = state.version;
    ev.derived = derived;
    if !released.is_empty() {
        ev.aid = Some(Box::new(crate::aid::AidChange::holds_ended(
            state.holds.clone(),
            released,
            crate::aid::HoldEnd::Occupied,
        )));
    }
    Plan {
        provider: report.provider().to_owned(),
        expected_version,
        state: Some(state),
        history: Some(history),
        trim_before: new_period.then(|| report.period().add_hours(-retention_hours)),
        event: ev,
    }
}

/// Plans the clock's transition of `prior` to stale at `now`: `None` unless it has gone quiet (its latest period is
/// older than its cadence plus grace, see [`derive::is_stale`]) and is not stale already.
pub fn stale(rules: &Rules, prior: &ProviderLive, now: Timestamp) -> Option<Plan> {
    if prior.version == 0 || prior.stale || !derive::is_stale(rules, &prior.provider, prior.period, now) {
        return None;
    }
    let alert = derive::stale_alert(rules, &prior.provider, prior.period, now);
    let mut state = prior.clone();
    let event = state.go_stale(alert, now);
    Some(Plan::no_report(prior, state, event))
}

impl Plan {
    /// A change of `prior` to `state` that no report caused (the clock, mutual aid): no history entry.
    fn no_report(prior: &ProviderLive, state: ProviderLive, event: Event) -> Plan {
        Plan {
            provider: prior.provider.clone(),
            expected_version: prior.version,
            state: Some(state),
            history: None,
            trim_before: None,
            event,
        }
    }
}

/// Plans `prior`'s mutual aid holds becoming `holds` at `at` (an offer accepted, a request cancelled, a hold
/// expired): its figures are derived again and its version advances; the event's [`crate::aid::AidChange`] is
/// `change`, given the provider's holds as they are after.
pub fn holds(
    rules: &Rules,
    prior: &ProviderLive,
    holds: Vec<crate::aid::Hold>,
    mut change: crate::aid::AidChange,
    at: Timestamp,
) -> Plan {
    let mut state = prior.clone();
    let derived = derive::rehold(rules, &mut state, holds, at);
    let mut event = crate::state::provider_event(&state, crate::EventKind::Aid, derived, at);
    change.holds = Some(state.holds.clone());
    event.aid = Some(Box::new(change));
    Plan::no_report(prior, state, event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AlertKind, EventKind, Limits, Report, validate};

    fn valid(rules: &Rules, hours_ago: i64, revision: u32, values: &[(&str, f64)]) -> ValidReport {
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let r = Report {
            provider: "RJ7".into(),
            period: Some(now.hour_start().add_hours(-hours_ago)),
            revision,
            observed_at: Some(now),
            values: values.iter().map(|(c, v)| (c.to_string(), (*v).into())).collect(),
            ..Default::default()
        };
        validate(&r, &rules.directory, &rules.catalogue, &Limits::default(), now).unwrap()
    }

    #[test]
    fn live_then_late_then_stale() {
        let rules = Rules::demo();
        let t = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let first = report(&rules, None, None, &valid(&rules, 0, 1, &[("beds.cc_adult.open", 20.0)]), t, 24);
        assert_eq!((first.expected_version, first.event.version), (0, 1));
        assert!(first.event.live && first.trim_before.is_some());
        let s1 = first.state.clone().unwrap();
        assert_eq!(s1.figures.len(), 1);

        let r2 = valid(&rules, 0, 2, &[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 19.0)]);
        let second = report(&rules, Some(&s1), None, &r2, t, 24);
        assert_eq!((second.expected_version, second.event.version), (1, 2));
        assert_eq!(second.event.unchanged, ["beds.cc_adult.open"]);
        assert_eq!(second.trim_before, None, "same period: nothing to trim");
        let s2 = second.state.clone().unwrap();
        assert!(s2.alerts.iter().any(|a| a.kind == AlertKind::Threshold));

        let late = valid(&rules, 2, 1, &[("beds.cc_adult.open", 5.0)]);
        assert!(is_late(Some(&s2), &late));
        let previous = BTreeMap::from([(Code::new("beds.cc_adult.open"), Value::Number(4.0))]);
        let p = report(&rules, Some(&s2), Some(&previous), &late, t, 24);
        assert!(p.state.is_none() && !p.event.live);
        assert_eq!(p.event.version, 2, "a late report leaves the version");
        assert_eq!(p.event.changes[0].before, Some(Value::Number(4.0)));

        assert!(stale(&rules, &s2, t.add_millis(60_000)).is_none(), "not quiet yet");
        // Quiet: the hour it reported for ended, then a cadence and the grace passed.
        let quiet = t.hour_start().add_hours(1).add_millis(rules.stale_after("RJ7").as_millis() as i64);
        let st = stale(&rules, &s2, quiet).expect("quiet");
        assert_eq!((st.expected_version, st.event.version, st.event.kind), (2, 3, EventKind::Stale));
        assert!(st.state.as_ref().unwrap().stale);
        assert!(stale(&rules, st.state.as_ref().unwrap(), quiet).is_none(), "already stale");

        // Which events move a scope's counts of reporting and stale providers: the first report, going stale, and
        // the report that ends staleness; not an ordinary report, nor a late one.
        let back =
            report(&rules, st.state.as_ref(), None, &valid(&rules, 0, 3, &[("beds.cc_adult.open", 21.0)]), t, 24);
        let after =
            report(&rules, back.state.as_ref(), None, &valid(&rules, 0, 4, &[("beds.cc_adult.open", 22.0)]), t, 24);
        let moves: Vec<bool> =
            [&first, &second, &p, &st, &back, &after].iter().map(|plan| plan.event.moves_counts()).collect();
        assert_eq!(moves, [true, false, false, true, true, false]);
    }

    /// Freshness goes by the period a report describes: a report for an hour long past is live if it is the
    /// provider's newest, but leaves it stale (or makes it stale), and readings too old count in no figure.
    #[test]
    fn an_old_period_never_makes_a_provider_fresh() {
        let rules = Rules::demo();
        let t = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        // A first report, for an hour ten days ago: live (it is all there is), stale, with its stale alert.
        let old = report(&rules, None, None, &valid(&rules, 240, 1, &[("beds.cc_adult.open", 20.0)]), t, 24 * 35);
        let s = old.state.clone().unwrap();
        assert!(old.event.live && s.stale);
        assert!(s.alerts.iter().any(|a| a.kind == AlertKind::Stale));
        assert!(old.event.moves_counts());
        // A newer report, still for a past hour: stays stale, no new stale alert.
        let r = valid(&rules, 48, 1, &[("beds.cc_adult.open", 21.0)]);
        let newer = report(&rules, Some(&s), None, &r, t, 24 * 35);
        let s = newer.state.clone().unwrap();
        assert!(newer.event.live && s.stale && newer.event.derived.raised.is_empty());
        assert!(!newer.event.moves_counts());
        assert_eq!(stale(&rules, &s, t), None, "already stale");
        // The current hour ends staleness.
        let current = report(&rules, Some(&s), None, &valid(&rules, 0, 1, &[("ed.over_12h", 3.0)]), t, 24 * 35);
        let s = current.state.clone().unwrap();
        assert!(!s.stale && current.event.derived.cleared.iter().any(|a| a.kind == AlertKind::Stale));
        // Open beds were last reported two days ago: kept and shown, but in no figure; the current hour's count is.
        assert!(s.readings.contains_key("beds.cc_adult.open"));
        let figures: Vec<&str> = s.figures.iter().map(|f| f.metric.as_str()).collect();
        assert_eq!(figures, ["ed.over_12h"]);
    }
}
