//! Live state of a provider, and what an accepted report changes: the diff that becomes an [`Event`].
//!
//! Stores call these functions inside their one atomic step so that every backend agrees on what "changed" means:
//! a metric changed if the report carries a value for it that differs from the current one (numbers compare
//! exactly; absent with a reason is a value of its own). Metrics a report does not mention keep their reading.

use std::collections::BTreeMap;

use crate::derive::{Derived, Figure, Opel};
use crate::rollup::ScopeRollup;
use crate::{Alert, Code, Cursor, Timestamp, ValidReport, Value};

/// The current value of one metric, with the report that set it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub value: Value,
    pub period: Timestamp,
    pub observed_at: Timestamp,
}

/// The live state of one provider: latest reading of every metric it has reported, the latest report's facts, and
/// what sitrep derived from them.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderLive {
    pub provider: String,
    /// How many times its live state has changed (by a live report or the clock): 1 after its first report. Each
    /// change's event carries the version it made, so a store can refuse a change planned from an older state, and
    /// the picture can tell an event it already reflects from one it must fold in.
    pub version: u64,
    pub site: Option<String>,
    pub readings: BTreeMap<Code, Reading>,
    pub period: Timestamp,
    pub revision: u32,
    pub observed_at: Timestamp,
    pub received_at: Timestamp,
    pub narrative: Option<String>,
    pub source: Option<String>,
    /// Whether it has missed its expected report (see [`crate::derive::is_stale`]).
    pub stale: bool,
    /// Its open alerts, in key order.
    pub alerts: Vec<Alert>,
    /// Every figure (reported or derived) that has a number, with its rating, in metric order.
    pub figures: Vec<Figure>,
    /// Its declared and computed OPEL levels.
    pub opel: Opel,
}

impl ProviderLive {
    /// A provider that has not reported yet: version 0, nothing known.
    pub fn new(provider: &str) -> Self {
        ProviderLive {
            provider: provider.to_owned(),
            version: 0,
            site: None,
            readings: BTreeMap::new(),
            period: Timestamp(0),
            revision: 0,
            observed_at: Timestamp(0),
            received_at: Timestamp(0),
            narrative: None,
            source: None,
            stale: false,
            alerts: Vec::new(),
            figures: Vec::new(),
            opel: Opel::default(),
        }
    }

    /// The number currently reported for `metric`, if it has one.
    pub fn number(&self, metric: &str) -> Option<f64> {
        self.readings.get(metric)?.value.number()
    }

    /// Metric code -> current value.
    pub fn values(&self) -> BTreeMap<Code, Value> {
        self.readings.iter().map(|(code, r)| (*code, r.value)).collect()
    }

    /// Keeps the open alerts up to date with what an event raised and cleared (in key order).
    pub fn record_alerts(&mut self, derived: &Derived) {
        let gone: std::collections::BTreeSet<&str> =
            derived.cleared.iter().chain(&derived.raised).map(|a| a.key.as_str()).collect();
        self.alerts.retain(|a| !gone.contains(a.key.as_str()));
        self.alerts.extend(derived.raised.iter().cloned());
        self.alerts.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Marks the provider stale with its stale alert, and returns the event that says so (with no cursor yet: the
    /// store gives it one; and no rollups: the picture adds them).
    pub fn go_stale(&mut self, alert: Alert, now: Timestamp) -> Event {
        self.version += 1;
        let ev = stale_event(self, alert, now);
        self.stale = true;
        self.record_alerts(&ev.derived);
        ev
    }
}

/// The event of `live` going stale (its version already advanced): its latest report's period, revision and
/// observation time, the alert, when the clock noticed, and no cursor or rollups yet.
fn stale_event(live: &ProviderLive, alert: Alert, now: Timestamp) -> Event {
    Event {
        cursor: Cursor::none(),
        version: live.version,
        provider: live.provider.clone(),
        site: None,
        period: live.period,
        revision: live.revision,
        observed_at: live.observed_at,
        received_at: now,
        live: false,
        changes: Vec::new(),
        unchanged: Vec::new(),
        narrative: None,
        source: None,
        kind: EventKind::Stale,
        derived: Derived { raised: vec![alert], ..Default::default() },
        rollups: Vec::new(),
        planned: Planned::default(),
    }
}

/// What made an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventKind {
    /// An accepted report.
    #[default]
    Report,
    /// The clock: the provider missed its expected report and is now stale.
    Stale,
}

/// One metric's change.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricChange {
    pub metric: Code,
    pub before: Option<Value>,
    pub after: Value,
}

/// What changed because of one accepted report (or the clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub cursor: Cursor,
    /// The provider's version once this event is applied (see [`ProviderLive::version`]); for a report into
    /// history only, which changes no live state, the version it left in place.
    pub version: u64,
    pub provider: String,
    pub site: Option<String>,
    pub period: Timestamp,
    pub revision: u32,
    pub observed_at: Timestamp,
    pub received_at: Timestamp,
    /// False when the report was late (an earlier period, or a lower revision) and went into history only.
    pub live: bool,
    /// Changed metrics, in code order.
    pub changes: Vec<MetricChange>,
    /// Metrics the report carried with the value they already had, in code order: their readings now date from
    /// this report.
    pub unchanged: Vec<Code>,
    pub narrative: Option<String>,
    pub source: Option<String>,
    pub kind: EventKind,
    /// What changed in the provider's derived picture: figures, ratings, OPEL, alerts raised and cleared.
    pub derived: Derived,
    /// The provider's system, region and nation as they are after this event: their provider counts, and the
    /// figures of the metrics it changed (for a report that went into history only: none). Not stored: the picture
    /// adds them as it folds the event in.
    pub rollups: Vec<ScopeRollup>,
    /// The provider's state as the plan that made this event left it, when the reader is the writer (a store's own
    /// events read back by its own tail): the picture takes it rather than folding the event into its copy again.
    /// Not stored; ignored when events are compared.
    pub planned: Planned,
}

/// See [`Event::planned`]. Equal whatever it holds, so that events compare by what they say.
#[derive(Clone, Default)]
pub struct Planned(pub Option<std::sync::Arc<ProviderLive>>);

impl PartialEq for Planned {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Planned(Some(..))" } else { "Planned(None)" })
    }
}

/// One stored revision of one period of a provider: what the report said, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRecord {
    pub period: Timestamp,
    pub revision: u32,
    pub observed_at: Timestamp,
    pub received_at: Timestamp,
    /// Metric code -> value, as reported (including the declared OPEL level as `opel.level`).
    pub values: BTreeMap<Code, Value>,
    pub narrative: Option<String>,
    pub source: Option<String>,
    pub site: Option<String>,
}

impl Event {
    /// Whether this event changes how many providers of its scopes are reporting or stale: a first live report, a
    /// stale transition, or a report that ends staleness or begins it (it clears or raises the provider's stale
    /// alert: a report for a period too old to be fresh).
    pub fn moves_counts(&self) -> bool {
        self.kind == EventKind::Stale
            || (self.live && self.version == 1)
            || self.derived.cleared.iter().chain(&self.derived.raised).any(|a| a.kind == crate::AlertKind::Stale)
    }

    /// Keeps only the changes, figures and rollups of `metrics` (all when `None`). Returns whether anything is
    /// left worth delivering to a subscriber that asked for those metrics: a change, a changed figure (a derived
    /// metric such as occupancy changes when its inputs do), or an alert.
    pub fn retain_metrics(&mut self, metrics: Option<&std::collections::BTreeSet<String>>) -> bool {
        match metrics {
            None => true,
            Some(set) => {
                self.changes.retain(|c| set.contains(c.metric.as_str()));
                self.derived.figures.retain(|f| set.contains(f.metric.as_str()));
                for r in &mut self.rollups {
                    r.retain_metrics(metrics);
                }
                let alerts = !self.derived.raised.is_empty() || !self.derived.cleared.is_empty();
                !self.changes.is_empty() || !self.derived.figures.is_empty() || alerts || self.kind == EventKind::Stale
            }
        }
    }
}

/// Whether a report for (`period`, `revision`) is newer than live state last set by (`live_period`,
/// `live_revision`), and so updates live state rather than only history.
pub fn is_newer(period: Timestamp, revision: u32, live: Option<&ProviderLive>) -> bool {
    live.is_none_or(|l| (period, revision) > (l.period, l.revision))
}

/// The changes `report` makes relative to `before` (metric code -> current value).
pub fn diff<'a>(before: impl Fn(&str) -> Option<&'a Value>, report: &ValidReport) -> Vec<MetricChange> {
    report
        .values()
        .iter()
        .filter_map(|(code, after)| {
            let old = before(code);
            (old != Some(after)).then(|| MetricChange { metric: *code, before: old.copied(), after: *after })
        })
        .collect()
}

/// Diffs `report` against live state (if any), applies it, and returns the changes. The caller must already know
/// the report is newer (see [`is_newer`]).
pub fn apply_live(live: &mut Option<ProviderLive>, report: &ValidReport, received_at: Timestamp) -> Vec<MetricChange> {
    let state = live.get_or_insert_with(|| ProviderLive::new(report.provider()));
    let mut changes = Vec::with_capacity(report.values().len());
    let mut new = Vec::new();
    // One walk over both, in code order: the report's values and the readings they replace.
    let mut readings = state.readings.iter_mut().peekable();
    for (code, value) in report.values() {
        let found = loop {
            match readings.peek() {
                Some((k, _)) if *k == code => break readings.next().map(|(_, r)| r),
                Some((k, _)) if *k < code => drop(readings.next()),
                _ => break None,
            }
        };
        let reading = Reading { value: *value, period: report.period(), observed_at: report.observed_at() };
        match found {
            Some(r) => {
                if r.value != *value {
                    changes.push(MetricChange { metric: *code, before: Some(r.value), after: *value });
                }
                *r = reading;
            }
            None => {
                changes.push(MetricChange { metric: *code, before: None, after: *value });
                new.push((*code, reading));
            }
        }
    }
    state.readings.extend(new);
    state.site = report.site().map(str::to_owned);
    state.period = report.period();
    state.revision = report.revision();
    state.observed_at = report.observed_at();
    state.received_at = received_at;
    state.narrative = report.narrative().map(str::to_owned);
    state.source = report.source().map(str::to_owned);
    changes
}

/// The event for an accepted report, with no cursor yet (the store gives it one). Derived parts start empty.
pub fn event(report: &ValidReport, received_at: Timestamp, live: bool, changes: Vec<MetricChange>) -> Event {
    let unchanged = match live {
        true => {
            let mut changed = changes.iter().map(|c| c.metric).peekable();
            let mut out = Vec::with_capacity(report.values().len().saturating_sub(changes.len()));
            // Both lists are in code order.
            for code in report.values().keys() {
                if changed.peek() == Some(code) {
                    changed.next();
                } else {
                    out.push(*code);
                }
            }
            out
        }
        false => Vec::new(),
    };
    Event {
        cursor: Cursor::none(),
        version: 0,
        provider: report.provider().to_owned(),
        site: report.site().map(str::to_owned),
        period: report.period(),
        revision: report.revision(),
        observed_at: report.observed_at(),
        received_at,
        live,
        changes,
        unchanged,
        narrative: report.narrative().map(str::to_owned),
        source: report.source().map(str::to_owned),
        kind: EventKind::Report,
        derived: Derived::default(),
        rollups: Vec::new(),
        planned: Planned::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::Figure;
    use crate::profile::{demo_directory, nhs_england_catalogue};

    #[test]
    fn a_metric_filter_keeps_derived_figures_and_alerts() {
        let n = Value::Number;
        let mut live = None;
        let r = report(1, &[("beds.cc_adult.open", n(20.0)), ("beds.cc_adult.occupied", n(19.0))]);
        let changes = apply_live(&mut live, &r, Timestamp(1));
        let mut e = event(&r, Timestamp(1), true, changes);
        e.derived.figures.push(Figure { metric: "beds.cc_adult.occupancy".into(), value: Some(95.0), rag: None });
        let only = |codes: &[&str]| codes.iter().map(|c| c.to_string()).collect::<std::collections::BTreeSet<_>>();
        let mut occupancy = e.clone();
        assert!(occupancy.retain_metrics(Some(&only(&["beds.cc_adult.occupancy"]))), "its inputs changed");
        assert!(occupancy.changes.is_empty() && occupancy.derived.figures.len() == 1);
        let mut other = e.clone();
        assert!(!other.retain_metrics(Some(&only(&["ed.over_12h"]))), "nothing of interest");
        let stale = crate::alert::AlertKind::Stale;
        let alert = Alert::new(stale, crate::Severity::Critical, "RJ7", None, None, "quiet".into(), Timestamp(2));
        other.derived.raised.push(alert);
        assert!(other.retain_metrics(Some(&only(&["ed.over_12h"]))), "alerts always go through");
    }
    use crate::{AbsentReason, Limits, Report, validate};

    fn report(revision: u32, values: &[(&str, Value)]) -> ValidReport {
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let r = Report {
            provider: "RJ7".into(),
            period: Some(now.hour_start()),
            revision,
            observed_at: Some(now),
            values: values.iter().map(|(c, v)| (c.to_string(), (*v).into())).collect(),
            ..Default::default()
        };
        validate(&r, &demo_directory(), &nhs_england_catalogue(), &Limits::default(), now).unwrap()
    }

    #[test]
    fn diff_lists_only_what_changed_and_keeps_unmentioned_metrics() {
        let n = Value::Number;
        let mut live = None;
        let first = report(1, &[("beds.cc_adult.open", n(28.0)), ("beds.cc_adult.occupied", n(25.0))]);
        let changes = apply_live(&mut live, &first, Timestamp(1));
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.before.is_none()));

        let absent = Value::Absent(AbsentReason::NotAvailable);
        let second = report(2, &[("beds.cc_adult.open", n(28.0)), ("beds.cc_adult.occupied", absent)]);
        assert!(is_newer(second.period(), second.revision(), live.as_ref()));
        let changes = apply_live(&mut live, &second, Timestamp(2));
        assert_eq!(
            changes,
            vec![MetricChange { metric: "beds.cc_adult.occupied".into(), before: Some(n(25.0)), after: absent }]
        );
        let state = live.unwrap();
        assert_eq!(state.readings.len(), 2);
        assert_eq!(state.revision, 2);
        assert!(!is_newer(first.period(), 1, Some(&state)));
        assert!(!is_newer(second.period(), 2, Some(&state)));
    }
}
