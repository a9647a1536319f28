//! Live state of a provider, and what an accepted report changes: the diff that becomes an [`Event`].
//!
//! Stores call these functions inside their one atomic step so that every backend agrees on what "changed" means:
//! a metric changed if the report carries a value for it that differs from the current one (numbers compare
//! exactly; absent with a reason is a value of its own). Metrics a report does not mention keep their reading.
//!
//! **Sites.** A provider may report as a whole or by site (a hospital of a trust). Each site is its own source: its
//! own revisions of each period (the idempotency key is provider, site, period and revision), its own readings. Once
//! a provider reports by site, its figures are the rollup of its sites' readings, metric by metric, by the metric's
//! catalogue rule (a sum of beds, the highest OPEL level), wherever any site reports that metric, and its own
//! readings as a whole elsewhere (see [`ProviderLive::sites`]). A combined reading is as old as its oldest site's,
//! so one lagging site keeps the provider's figure out of totals rather than mixing hours; and if any site says a
//! figure is not available, so is the provider's, rather than a sum that silently leaves a site out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalogue::Rollup;
use crate::opel::Assessment;
use crate::rag::Rag;
use crate::rollup::ScopeRollup;
use crate::{Alert, Code, Cursor, Rules, Timestamp, ValidReport, Value};

/// The current value of one metric, with the report that set it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub value: Value,
    pub period: Timestamp,
    pub observed_at: Timestamp,
}

/// The key under which [`ProviderLive::sites`] keeps a provider's own reports as a whole once it reports by site.
pub const WHOLE: &str = "";

/// One source of a provider that reports by site: a site, or the provider as a whole ([`WHOLE`]). Its latest live
/// report's facts and every reading it has sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteLive {
    pub period: Timestamp,
    pub revision: u32,
    pub observed_at: Timestamp,
    pub received_at: Timestamp,
    pub narrative: Option<String>,
    pub readings: BTreeMap<Code, Reading>,
}

/// The facts of one report that live state keeps: whose (which site), for which period and revision, when.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub site: Option<&'a str>,
    pub period: Timestamp,
    pub revision: u32,
    pub observed_at: Timestamp,
    pub received_at: Timestamp,
    pub narrative: Option<&'a str>,
    pub source: Option<&'a str>,
}

impl<'a> Facts<'a> {
    pub fn of(report: &'a ValidReport, received_at: Timestamp) -> Self {
        Facts {
            site: report.site(),
            period: report.period(),
            revision: report.revision(),
            observed_at: report.observed_at(),
            received_at,
            narrative: report.narrative(),
            source: report.source(),
        }
    }
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
    /// The site of the latest live report (`None`: the provider as a whole).
    pub site: Option<String>,
    /// Its figures' readings: its own, or where it reports by site, each metric's rollup over its sites (see the
    /// module doc). What its figures, ratings and its scopes' totals are made from.
    pub readings: BTreeMap<Code, Reading>,
    /// The latest period any of its live reports was for: what its freshness goes by.
    pub period: Timestamp,
    /// The revision, observation and receipt times, narrative and source of its latest live report. While it
    /// reports only as a whole, `period` and `revision` are that report's key, which a later report must pass to
    /// be live; by site, each site keeps its own key in `sites`.
    pub revision: u32,
    pub observed_at: Timestamp,
    pub received_at: Timestamp,
    pub narrative: Option<String>,
    pub source: Option<String>,
    /// Empty while it reports only as a whole. From its first report by site: each site's latest report and
    /// readings, and under [`WHOLE`] its own reports as a whole (the readings it had then move there).
    pub sites: BTreeMap<String, SiteLive>,
    /// Whether it has missed its expected report (see [`crate::derive::is_stale`]).
    pub stale: bool,
    /// Its open alerts, in key order.
    pub alerts: Vec<Alert>,
    /// Every figure (reported or derived) that has a number, with its rating, in metric order.
    pub figures: Vec<Figure>,
    /// Its declared and computed OPEL levels.
    pub opel: Opel,
    /// Beds it holds for accepted mutual aid offers, in offer order: its derived free beds and occupancy count
    /// them as taken until a report shows them occupied, the request is cancelled, or the hold expires (see
    /// [`crate::aid::hold`]).
    pub holds: Vec<crate::aid::Hold>,
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
            sites: BTreeMap::new(),
            stale: false,
            alerts: Vec::new(),
            figures: Vec::new(),
            opel: Opel::default(),
            holds: Vec::new(),
        }
    }

    /// The period and revision of the latest live report of `site` (`None`: of the provider as a whole), which a
    /// report from it must pass to be live; `None` if it has sent none.
    pub fn latest_of(&self, site: Option<&str>) -> Option<(Timestamp, u32)> {
        match (site, self.sites.is_empty()) {
            (None, true) => (self.revision > 0).then_some((self.period, self.revision)),
            (Some(_), true) => None,
            (site, false) => self.sites.get(site.unwrap_or(WHOLE)).map(|s| (s.period, s.revision)),
        }
    }

    /// Takes in a live report (see [`is_newer`]) of `facts` carrying `values` (in code order): the readings of its
    /// site (or of the provider) change, and with them the provider's. Returns the changes to its site's (or the
    /// provider's) readings. Planning and folding both call this, so both leave the same state.
    pub fn take(
        &mut self,
        rules: &Rules,
        facts: Facts<'_>,
        values: impl ExactSizeIterator<Item = (Code, Value)> + Clone,
    ) -> Vec<MetricChange> {
        let reading = |value| Reading { value, period: facts.period, observed_at: facts.observed_at };
        let changes = match facts.site.is_some() || !self.sites.is_empty() {
            false => merge(&mut self.readings, values, reading),
            true => {
                if self.sites.is_empty() && self.revision > 0 {
                    // Its first report by site: what it said as a whole so far is kept as the whole's.
                    let whole = SiteLive {
                        period: self.period,
                        revision: self.revision,
                        observed_at: self.observed_at,
                        received_at: self.received_at,
                        narrative: self.narrative.clone(),
                        readings: self.readings.clone(),
                    };
                    self.sites.insert(WHOLE.to_owned(), whole);
                }
                let key = facts.site.unwrap_or(WHOLE);
                let site = match self.sites.get_mut(key) {
                    Some(s) => s,
                    None => self.sites.entry(key.to_owned()).or_default(),
                };
                let changes = merge(&mut site.readings, values.clone(), reading);
                site.period = facts.period;
                site.revision = facts.revision;
                site.observed_at = facts.observed_at;
                site.received_at = facts.received_at;
                site.narrative = facts.narrative.map(str::to_owned);
                for (code, _) in values {
                    match combined(rules, &self.sites, code) {
                        Some(r) => self.readings.insert(code, r),
                        None => self.readings.remove(&code),
                    };
                }
                changes
            }
        };
        self.site = facts.site.map(str::to_owned);
        self.period = self.period.max(facts.period);
        self.revision = facts.revision;
        self.observed_at = facts.observed_at;
        self.received_at = facts.received_at;
        self.narrative = facts.narrative.map(str::to_owned);
        self.source = facts.source.map(str::to_owned);
        changes
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
    provider_event(live, EventKind::Stale, Derived { raised: vec![alert], ..Default::default() }, now)
}

/// An event of `live` that no report caused (the clock, mutual aid), at its current version: its latest report's
/// period, revision and observation time, what was derived, when it happened, and no cursor or rollups yet.
pub fn provider_event(live: &ProviderLive, kind: EventKind, derived: Derived, at: Timestamp) -> Event {
    Event {
        cursor: Cursor::none(),
        version: live.version,
        provider: live.provider.clone(),
        site: None,
        period: live.period,
        revision: live.revision,
        observed_at: live.observed_at,
        received_at: at,
        live: false,
        changes: Vec::new(),
        unchanged: Vec::new(),
        narrative: None,
        source: None,
        sender: None,
        kind,
        derived,
        rollups: Vec::new(),
        planned: Planned::default(),
        trace: None,
        aid: None,
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
    /// Mutual aid: a request or offer changed (see [`Event::aid`]), and with it perhaps the holds of the event's
    /// provider (then its version advances, as for a report).
    Aid,
}

/// One metric's change.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricChange {
    pub metric: Code,
    pub before: Option<Value>,
    pub after: Value,
}

/// One figure of a provider with its rating.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub metric: Code,
    /// None when the figure no longer has a value.
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<Rag>,
}

/// A provider's OPEL level: declared by the provider and computed by sitrep, each when known.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Opel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed: Option<Assessment>,
}

impl Opel {
    /// Both levels are known and they differ: itself a signal worth a look.
    pub fn mismatch(&self) -> bool {
        matches!((self.declared, &self.computed), (Some(d), Some(c)) if d != c.level)
    }
}

/// What a report (or the clock) changed in a provider's derived picture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    /// Figures (reported or derived) whose value or rating changed, as they are now, in metric order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
    /// The provider's OPEL levels, when either changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opel: Option<Opel>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raised: Vec<Alert>,
    /// The alerts this closed, as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleared: Vec<Alert>,
}

impl Derived {
    pub fn is_empty(&self) -> bool {
        self.figures.is_empty() && self.opel.is_none() && self.raised.is_empty() && self.cleared.is_empty()
    }
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
    /// Who sent the report (`None` for the clock's events).
    pub sender: Option<crate::Sender>,
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
    /// The trace context of the report's handling, when tracing was on and sampled it (see
    /// [`crate::validate::TraceContext`]); `None` for the clock's events and events stored without one.
    pub trace: Option<crate::validate::TraceContext>,
    /// What changed in mutual aid: the requests and offers it changed as they are now, and the provider's holds
    /// when they changed (a report that showed held beds occupied, or an aid action). `None` for most events.
    pub aid: Option<Box<crate::aid::AidChange>>,
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
    /// Who sent it (see [`crate::Sender`]); `None` for reports stored before senders were recorded.
    pub sender: Option<crate::Sender>,
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
    /// metric such as occupancy changes when its inputs do), an alert, or a mutual aid change (like an alert, a
    /// thing to act on whatever metrics are followed).
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
                !self.changes.is_empty()
                    || !self.derived.figures.is_empty()
                    || alerts
                    || self.kind == EventKind::Stale
                    || self.aid.is_some()
            }
        }
    }
}

/// Whether a report of `site` for (`period`, `revision`) is newer than the latest live report of that site (or
/// of the provider as a whole, see [`ProviderLive::latest_of`]), and so updates live state rather than only history.
pub fn is_newer(site: Option<&str>, period: Timestamp, revision: u32, live: Option<&ProviderLive>) -> bool {
    live.and_then(|l| l.latest_of(site)).is_none_or(|latest| (period, revision) > latest)
}

/// Merges `values` (in code order) into `readings`, one walk over both, and returns what changed.
fn merge(
    readings: &mut BTreeMap<Code, Reading>,
    values: impl ExactSizeIterator<Item = (Code, Value)>,
    reading: impl Fn(Value) -> Reading,
) -> Vec<MetricChange> {
    let mut changes = Vec::with_capacity(values.len());
    let mut new = Vec::new();
    let mut current = readings.iter_mut().peekable();
    for (code, value) in values {
        let found = loop {
            match current.peek() {
                Some((k, _)) if **k == code => break current.next().map(|(_, r)| r),
                Some((k, _)) if **k < code => drop(current.next()),
                _ => break None,
            }
        };
        match found {
            Some(r) => {
                if r.value != value {
                    changes.push(MetricChange { metric: code, before: Some(r.value), after: value });
                }
                *r = reading(value);
            }
            None => {
                changes.push(MetricChange { metric: code, before: None, after: value });
                new.push((code, reading(value)));
            }
        }
    }
    readings.extend(new);
    changes
}

/// A provider's reading of `code` from its sources (see the module doc): the rollup, by the metric's rule, of its
/// sites that report it, as old as the oldest of them, and not available if any says so; else its own as a whole.
fn combined(rules: &Rules, sites: &BTreeMap<String, SiteLive>, code: Code) -> Option<Reading> {
    let parts = || sites.iter().filter(|(k, _)| k.as_str() != WHOLE).filter_map(|(_, s)| s.readings.get(&code));
    let Some(value) = roll_sites(rules, code, parts().map(|r| r.value)) else {
        return sites.get(WHOLE).and_then(|w| w.readings.get(&code)).cloned();
    };
    let period = parts().map(|r| r.period).min().expect("some site reports it");
    let observed_at = parts().map(|r| r.observed_at).min().expect("some site reports it");
    Some(Reading { value, period, observed_at })
}

/// The provider's value of `code` from its sites' `values` (`None` when there are none): their rollup by the
/// metric's catalogue rule (a sum, the highest, a mean), not available if any site says so. Live state and the
/// hour-by-hour view of history both combine sites by this one rule.
pub fn roll_sites(rules: &Rules, code: Code, values: impl Iterator<Item = Value>) -> Option<Value> {
    let rollup = match rules.index().position_of(code) {
        Some(crate::rules::Position::Metric(m)) => rules.index().metric_rules[m].0,
        _ => Rollup::Sum,
    };
    let (mut out, mut count) = (None, 0.0);
    for v in values {
        count += 1.0;
        out = Some(match (out, v) {
            (None, v) => v,
            (Some(Value::Absent(reason)), _) | (_, Value::Absent(reason)) => Value::Absent(reason),
            (Some(Value::Number(a)), Value::Number(b)) => Value::Number(match rollup {
                Rollup::Sum | Rollup::Mean => a + b,
                Rollup::Max => a.max(b),
            }),
        });
    }
    match (rollup, out) {
        (Rollup::Mean, Some(Value::Number(total))) => Some(Value::Number(total / count)),
        (_, out) => out,
    }
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

/// Applies `report` to live state (if any) and returns the changes it makes to its site's (or the provider's)
/// readings. The caller must already know the report is newer (see [`is_newer`]).
pub fn apply_live(
    rules: &Rules,
    live: &mut Option<ProviderLive>,
    report: &ValidReport,
    received_at: Timestamp,
) -> Vec<MetricChange> {
    let state = live.get_or_insert_with(|| ProviderLive::new(report.provider()));
    state.take(rules, Facts::of(report, received_at), report.values().iter().map(|(c, v)| (*c, *v)))
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
        sender: report.sender().cloned(),
        kind: EventKind::Report,
        derived: Derived::default(),
        rollups: Vec::new(),
        planned: Planned::default(),
        trace: report.trace().cloned(),
        aid: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{demo_directory, nhs_england_catalogue};
    use crate::state::Figure;

    #[test]
    fn a_metric_filter_keeps_derived_figures_and_alerts() {
        let n = Value::Number;
        let mut live = None;
        let r = report(1, &[("beds.cc_adult.open", n(20.0)), ("beds.cc_adult.occupied", n(19.0))]);
        let changes = apply_live(&Rules::demo(), &mut live, &r, Timestamp(1));
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
        site_report(None, 0, revision, values)
    }

    fn site_report(site: Option<&str>, hours_ago: i64, revision: u32, values: &[(&str, Value)]) -> ValidReport {
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let r = Report {
            provider: "RJ7".into(),
            site: site.map(str::to_owned),
            period: Some(now.hour_start().add_hours(-hours_ago)),
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
        let changes = apply_live(&Rules::demo(), &mut live, &first, Timestamp(1));
        assert_eq!(changes.len(), 2);
        assert!(changes.iter().all(|c| c.before.is_none()));

        let absent = Value::Absent(AbsentReason::NotAvailable);
        let second = report(2, &[("beds.cc_adult.open", n(28.0)), ("beds.cc_adult.occupied", absent)]);
        assert!(is_newer(None, second.period(), second.revision(), live.as_ref()));
        let changes = apply_live(&Rules::demo(), &mut live, &second, Timestamp(2));
        assert_eq!(
            changes,
            vec![MetricChange { metric: "beds.cc_adult.occupied".into(), before: Some(n(25.0)), after: absent }]
        );
        let state = live.unwrap();
        assert_eq!(state.readings.len(), 2);
        assert_eq!(state.revision, 2);
        assert!(!is_newer(None, first.period(), 1, Some(&state)));
        assert!(!is_newer(None, second.period(), 2, Some(&state)));
    }

    /// A provider's figures by site: each metric the rollup of the sites that report it (a sum of beds, the
    /// highest level), its own as a whole elsewhere; as old as the oldest site's; not available if a site says so.
    #[test]
    fn sites_roll_up_into_the_provider() {
        let (n, rules) = (Value::Number, Rules::demo());
        let mut live = None;
        let apply = |live: &mut Option<ProviderLive>, r: &ValidReport| {
            assert!(is_newer(r.site(), r.period(), r.revision(), live.as_ref()), "{:?} is live", r.site());
            apply_live(&rules, live, r, Timestamp(1))
        };
        // As a whole first: OPEL and open beds.
        apply(&mut live, &report(1, &[("beds.cc_adult.open", n(50.0)), ("opel.level", n(2.0))]));
        // Then by site, revision 1 each, in the same hour: neither is a duplicate of the other or of the whole.
        let a = site_report(Some("RJ701"), 0, 1, &[("beds.cc_adult.open", n(20.0)), ("opel.level", n(3.0))]);
        let changes = apply(&mut live, &a);
        assert!(changes.iter().all(|c| c.before.is_none()), "a site's first values are all new to it");
        let b = site_report(Some("RJ731"), 1, 1, &[("beds.cc_adult.open", n(12.0)), ("opel.level", n(2.0))]);
        apply(&mut live, &b);
        let s = live.clone().unwrap();
        assert_eq!(s.number("beds.cc_adult.open"), Some(32.0), "summed over sites; the whole's 50 is replaced");
        assert_eq!(s.number("opel.level"), Some(3.0), "the highest level");
        assert_eq!(s.readings["beds.cc_adult.open"].period, b.period(), "as old as the oldest site's");
        assert_eq!(s.period, a.period(), "fresh by its latest site");
        assert_eq!(s.sites.keys().collect::<Vec<_>>(), ["", "RJ701", "RJ731"]);
        assert_eq!(s.sites[WHOLE].readings["beds.cc_adult.open"].value, n(50.0), "the whole's own, kept");
        // Each site keeps its own revisions: an earlier revision of a site is late; the other's is not.
        assert!(!is_newer(Some("RJ701"), a.period(), 1, Some(&s)));
        assert!(is_newer(Some("RJ731"), a.period(), 1, Some(&s)));
        assert!(!is_newer(None, a.period(), 1, Some(&s)), "the whole's own revision 1 is taken");
        // The whole still reports what no site does.
        apply(&mut live, &report(2, &[("ed.over_12h", n(4.0))]));
        let s = live.clone().unwrap();
        assert_eq!(s.number("ed.over_12h"), Some(4.0));
        // A site that cannot say makes the provider's figure unavailable, not a sum that leaves it out.
        let absent = Value::Absent(AbsentReason::NotAvailable);
        apply(&mut live, &site_report(Some("RJ731"), 0, 1, &[("beds.cc_adult.open", absent)]));
        assert_eq!(live.as_ref().unwrap().readings["beds.cc_adult.open"].value, absent);
    }
}
