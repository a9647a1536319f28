//! What people decide on, derived from a provider's figures: derived metrics, RAG ratings, the computed OPEL level
//! and the alerts a report raises or clears.
//!
//! Everything here is a pure function of the provider's values before and after a report (and the open alerts),
//! so every store computes the same thing inside its one atomic step and every subscriber sees the same numbers.
//! Rollups across providers are in [`crate::rollup`].

use std::collections::BTreeMap;

use crate::alert::{Alert, AlertKind, Severity};
use crate::catalogue::{Formula, OPEL_METRIC};
use crate::rag::{Rag, rate};
use crate::rules::{Position, Rules};
use crate::state::{Derived, Figure, MetricChange, Opel};
use crate::{Catalogue, Code, Timestamp, Value};

/// A provider's numbers: every reported metric that has one, and every derived metric that can be computed.
pub fn figures<K: AsRef<str>>(catalogue: &Catalogue, values: &BTreeMap<K, Value>) -> BTreeMap<String, f64> {
    numbers(catalogue, borrowed(values)).into_iter().map(|(c, n)| (c.to_owned(), n)).collect()
}

/// [`figures`], borrowing the codes rather than copying them.
fn numbers<'a>(catalogue: &'a Catalogue, values: impl Iterator<Item = (&'a str, Value)>) -> BTreeMap<&'a str, f64> {
    let mut out: BTreeMap<&str, f64> = values
        .filter_map(|(code, v)| match v {
            Value::Number(n) => Some((code, n)),
            Value::Absent(_) => None,
        })
        .collect();
    for d in catalogue.derived_metrics() {
        let [a, b] = d.formula.inputs();
        if let (Some(a), Some(b)) = (out.get(a), out.get(b))
            && let Some(v) = d.formula.apply(*a, *b)
        {
            out.insert(d.code.as_str(), v);
        }
    }
    out
}

fn borrowed<K: AsRef<str>>(values: &BTreeMap<K, Value>) -> impl Iterator<Item = (&str, Value)> {
    values.iter().map(|(c, v)| (c.as_ref(), *v))
}

/// One side of a report: a provider's figures (reported and derived) and their ratings, by ordinal (see
/// [`crate::rules::Index::all`]), and its OPEL levels.
struct Side {
    numbers: Vec<Option<f64>>,
    rags: Vec<Option<Rag>>,
    opel: Opel,
    /// Beds held for accepted mutual aid offers, by the reported `<pair>.occupied` metric's position (see
    /// [`crate::aid::hold`]): derived metrics read that metric as `occupied + held`, so free beds are headroom.
    held: Vec<(usize, f64)>,
}

impl Side {
    /// Derived afresh from a provider's values: derived metrics from their inputs, ratings (a figure's
    /// `min_capacity` compares with a ratio's denominator, or the count a count is bounded by), OPEL levels.
    fn of(rules: &Rules, provider: &str, values: impl Iterator<Item = (Code, Value)>, held: &[(usize, f64)]) -> Self {
        let index = rules.index();
        let mut numbers = vec![None; index.all.len()];
        for (code, v) in values {
            if let (Value::Number(n), Some(o)) = (v, index.ord(code)) {
                numbers[o] = Some(n);
            }
        }
        let input = |m: usize, numbers: &[Option<f64>]| {
            let extra: f64 = held.iter().filter(|(h, _)| *h == m).map(|(_, q)| q).sum();
            numbers[index.metric_ord[m]].map(|n| n + extra)
        };
        for (d, [a, b]) in index.inputs.iter().enumerate() {
            let (a, b) = (input(*a, &numbers), input(*b, &numbers));
            numbers[index.derived_ord[d]] = a.zip(b).and_then(|(a, b)| index.derived_rules[d].0.apply(a, b));
        }
        let overrides = rules.directory.provider(provider).map(|p| &p.rag).filter(|o| !o.is_empty());
        let rags = index
            .all
            .iter()
            .zip(&numbers)
            .map(|((code, position), value)| {
                let value = (*value)?;
                let (base, capacity) = match *position {
                    Position::Metric(m) => {
                        let (_, bound, rag) = &index.metric_rules[m];
                        (rag.as_ref()?, bound.and_then(|b| numbers[index.metric_ord[b]]))
                    }
                    Position::Derived(d) => {
                        let (formula, rag) = &index.derived_rules[d];
                        let capacity = match formula {
                            Formula::Ratio { .. } => numbers[index.metric_ord[index.inputs[d][1]]],
                            Formula::Difference { .. } => None,
                        };
                        (rag.as_ref()?, capacity)
                    }
                };
                match overrides.is_some_and(|o| o.contains_key(code.as_str())) {
                    true => rate(&rules.rag_rule(Some(provider), code)?, value, capacity),
                    false => rate(base, value, capacity),
                }
            })
            .collect();
        let opel = Opel {
            declared: index.ordinal(OPEL_METRIC).and_then(|o| numbers[o]).map(|v| v as u32),
            computed: rules.opel.as_ref().and_then(|f| f.assess_with(|m| index.ordinal(m).and_then(|o| numbers[o]))),
        };
        Side { numbers, rags, opel, held: held.to_vec() }
    }

    /// As a provider's state keeps it (what was derived when its last report came).
    fn kept(rules: &Rules, figures: &[Figure], opel: Opel) -> Self {
        let index = rules.index();
        let mut numbers = vec![None; index.all.len()];
        let mut rags = vec![None; index.all.len()];
        for f in figures {
            if let Some(o) = index.ord(f.metric) {
                numbers[o] = f.value;
                rags[o] = f.rag;
            }
        }
        Side { numbers, rags, opel, held: Vec::new() }
    }

    /// Every figure with a number, with its rating, in metric order.
    fn figures(&self, rules: &Rules) -> Vec<Figure> {
        let index = rules.index();
        (0..index.all.len())
            .filter_map(|o| Some(Figure { metric: index.all[o].0, value: Some(self.numbers[o]?), rag: self.rags[o] }))
            .collect()
    }
}

/// A provider's whole derived picture from its live values: every figure with its rating, and its OPEL levels.
/// `held` is what [`crate::aid::hold::held_by_metric`] makes of its holds.
pub fn provider_view(
    rules: &Rules,
    provider: &str,
    values: &BTreeMap<Code, Value>,
    held: &[(usize, f64)],
) -> (Vec<Figure>, Opel) {
    let side = Side::of(rules, provider, values.iter().map(|(c, v)| (*c, *v)), held);
    (side.figures(rules), side.opel)
}

/// A provider's state before a report, as far as derivation needs it (for [`report`]).
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub struct Before<'a> {
    /// Its live values (None: it never reported).
    pub values: Option<&'a BTreeMap<Code, Value>>,
    /// Its open alerts.
    pub open: &'a [Alert],
}

/// A figure's label, for messages.
fn label<'a>(catalogue: &'a Catalogue, metric: &'a str) -> &'a str {
    catalogue
        .get(metric)
        .map(|m| m.label.as_str())
        .or_else(|| catalogue.derived(metric).map(|d| d.label.as_str()))
        .unwrap_or(metric)
}

/// A number as people read it: whole numbers plainly, others to one decimal, percentages with a `%`.
pub fn show(catalogue: &Catalogue, metric: &str, value: f64) -> String {
    let unit =
        catalogue.get(metric).map(|m| m.unit.as_str()).or_else(|| catalogue.derived(metric).map(|d| d.unit.as_str()));
    let text = if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value:.1}") };
    match unit {
        Some("percent") => format!("{text}%"),
        _ => text,
    }
}

/// What a live report changes in `provider`'s derived picture: figures and ratings, OPEL levels, and the alerts
/// it raises (entering red, escalation, suspicious jumps, OPEL mismatch) and clears (leaving red, de-escalation,
/// staleness, earlier jumps). `after` is the provider's live values once the report is applied; `changes` are the
/// report's metric changes; `at` is when it was received. The tests' way in: the pipeline derives with
/// [`advance`], from the figures a provider's state keeps.
#[cfg(test)]
pub fn report(
    rules: &Rules,
    provider: &str,
    before: Before<'_>,
    after: &BTreeMap<Code, Value>,
    changes: &[MetricChange],
    at: Timestamp,
) -> Derived {
    let empty = BTreeMap::new();
    let b = Side::of(rules, provider, before.values.unwrap_or(&empty).iter().map(|(c, v)| (*c, *v)), &[]);
    let a = Side::of(rules, provider, after.iter().map(|(c, v)| (*c, *v)), &[]);
    between(rules, provider, &b, &a, before.open, Some(changes), at, None)
}

/// What changed between two sides of a report, and the alerts that raises and clears given the `open` ones.
/// `still_stale` is the stale alert to keep open when the report's period is itself too old to make the provider
/// fresh (see [`is_stale`]); `None` when the report ends staleness. `changes` is `None` when no report caused the
/// change (a mutual aid hold placed or ended): jump warnings, which only a report judges, stay as they are.
#[allow(clippy::too_many_arguments)]
fn between(
    rules: &Rules,
    provider: &str,
    b: &Side,
    a: &Side,
    open_alerts: &[Alert],
    changes: Option<&[MetricChange]>,
    at: Timestamp,
    still_stale: Option<Alert>,
) -> Derived {
    let c = &rules.catalogue;
    let index = rules.index();
    let (fb, fa, ra) = (&b.numbers, &a.numbers, &a.rags);
    let mut out = Derived { figures: Vec::with_capacity(index.all.len()), ..Default::default() };

    for (o, (code, _)) in index.all.iter().enumerate() {
        if fb[o] != fa[o] || b.rags[o] != ra[o] {
            out.figures.push(Figure { metric: *code, value: fa[o], rag: ra[o] });
        }
    }

    // A provider's open alerts are few, and its alerts' keys differ only by kind and metric: found by those, no
    // key is spelled out unless an alert is raised.
    let find = |kind: AlertKind, metric: Option<&str>| {
        open_alerts.iter().find(|a| a.kind == kind && a.metric.as_deref() == metric)
    };
    let raise = |out: &mut Derived, alert: Alert| out.raised.push(alert);
    let clear = |out: &mut Derived, kind: AlertKind, metric: Option<&str>| {
        if let Some(a) = find(kind, metric) {
            out.cleared.push(a.clone());
        }
    };

    // Entering and leaving red. Only a figure whose redness disagrees with its open alerts needs its alert's key
    // spelled out. A metric the catalogue no longer knows can only leave red.
    let open_red: Vec<&str> =
        open_alerts.iter().filter(|a| a.kind == AlertKind::Threshold).filter_map(|a| a.metric.as_deref()).collect();
    let known = index.all.iter().enumerate().map(|(o, (code, _))| (code.as_str(), Some(o)));
    let unknown = open_red.iter().filter(|m| index.ordinal(m).is_none()).map(|m| (*m, None));
    for (code, ordinal) in known.chain(unknown) {
        let red = ordinal.is_some_and(|o| ra[o] == Some(Rag::Red));
        let is_open = open_red.contains(&code);
        if red == is_open {
            continue;
        }
        match (red, is_open) {
            (true, false) => {
                let value = ordinal.and_then(|o| fa[o]).expect("a red figure has a number");
                let rule = rules.rag_rule(Some(provider), code).expect("rated metrics have a rule");
                let beyond = match rule.direction {
                    crate::catalogue::Direction::HigherIsWorse => "or more",
                    crate::catalogue::Direction::LowerIsWorse => "or less",
                };
                let message = format!(
                    "{provider}: {} is {}, in red (red at {} {beyond})",
                    label(c, code),
                    show(c, code, value),
                    show(c, code, rule.red)
                );
                raise(
                    &mut out,
                    Alert::new(
                        AlertKind::Threshold,
                        Severity::Critical,
                        provider,
                        Some(code),
                        Some(value),
                        message,
                        at,
                    ),
                );
            }
            (false, true) => clear(&mut out, AlertKind::Threshold, Some(code)),
            _ => {}
        }
    }

    // Escalation: the declared level went up (or was first declared at 3 or above); cleared when it comes down.
    let opel_ordinal = index.ordinal(OPEL_METRIC);
    let declared_before = opel_ordinal.and_then(|o| fb[o]);
    let declared_after = opel_ordinal.and_then(|o| fa[o]);
    let raised = match (declared_before, declared_after) {
        (Some(b), Some(a)) => a > b,
        (None, Some(a)) => a >= 3.0,
        _ => false,
    };
    let lowered = match (declared_before, declared_after) {
        (Some(b), Some(a)) => a < b,
        (Some(_), None) => true,
        _ => false,
    };
    if raised || lowered {
        clear(&mut out, AlertKind::Escalation, None);
    }
    if raised {
        let a = declared_after.expect("raised");
        let top = c.get(OPEL_METRIC).and_then(|m| m.max).map_or(4.0, f64::from);
        let severity = if a >= top { Severity::Critical } else { Severity::Warning };
        let was = declared_before.map_or_else(|| "none declared before".to_owned(), |b| format!("was {b}"));
        let message = format!("{provider}: declared OPEL {a} ({was})");
        raise(&mut out, Alert::new(AlertKind::Escalation, severity, provider, None, Some(a), message, at));
    }

    // Suspicious jumps: flagged, not refused. Earlier jump warnings close with this report unless it repeats them.
    let mut jumped: Vec<&str> = Vec::new();
    for ch in changes.unwrap_or_default() {
        let (Some(Value::Number(b)), Value::Number(a)) = (ch.before, ch.after) else { continue };
        let Some(metric) = c.get(&ch.metric) else { continue };
        let Some(fraction) = metric.jump else { continue };
        let bound = metric.at_most.as_deref().and_then(|bound| index.ordinal(bound));
        let cap = bound.and_then(|o| fa[o]).unwrap_or(a.max(b));
        if cap > 0.0 && (a - b).abs() > fraction * cap {
            clear(&mut out, AlertKind::Jump, Some(&ch.metric));
            jumped.push(ch.metric.as_str());
            let message = format!(
                "{provider}: {} moved from {} to {} since the previous report, more than {:.0}% of capacity ({}); accepted, please check",
                metric.label,
                show(c, &ch.metric, b),
                show(c, &ch.metric, a),
                fraction * 100.0,
                show(c, &ch.metric, cap)
            );
            raise(
                &mut out,
                Alert::new(AlertKind::Jump, Severity::Warning, provider, Some(&ch.metric), Some(a), message, at),
            );
        }
    }
    let repeated = |a: &Alert| a.metric.as_deref().is_some_and(|m| jumped.contains(&m));
    for a in open_alerts.iter().filter(|a| changes.is_some() && a.kind == AlertKind::Jump && !repeated(a)) {
        out.cleared.push(a.clone());
    }

    // Overcommitted: fewer free beds of a pair (`open - occupied`, as reported) than are held for accepted mutual
    // aid offers. Keyed by the pair's occupied metric.
    let mut over: Vec<&str> = Vec::new();
    for (m, held) in &a.held {
        let occupied_code = index.metrics[*m];
        let Some(pair) = occupied_code.as_str().strip_suffix(".occupied") else { continue };
        let number = |code: &str| index.ordinal(code).and_then(|o| fa[o]);
        let free = number(&format!("{pair}.open")).unwrap_or(0.0) - number(occupied_code.as_str()).unwrap_or(0.0);
        if free >= *held {
            continue;
        }
        over.push(occupied_code.as_str());
        if find(AlertKind::Overcommitted, Some(occupied_code.as_str())).is_none() {
            let message = format!(
                "{provider}: {held} {pair} held for mutual aid but only {free} free ({pair}.open - {pair}.occupied)",
                held = show(c, occupied_code.as_str(), *held),
                free = show(c, occupied_code.as_str(), free),
            );
            let alert = Alert::new(
                AlertKind::Overcommitted,
                Severity::Critical,
                provider,
                Some(occupied_code.as_str()),
                Some(free),
                message,
                at,
            );
            raise(&mut out, alert);
        }
    }
    for a in open_alerts.iter().filter(|a| a.kind == AlertKind::Overcommitted) {
        if !a.metric.as_deref().is_some_and(|m| over.contains(&m)) {
            out.cleared.push(a.clone());
        }
    }

    // A report for a recent enough period ends staleness; one for a period already too old to be fresh does not.
    match still_stale {
        None => clear(&mut out, AlertKind::Stale, None),
        Some(alert) if find(AlertKind::Stale, None).is_none() => raise(&mut out, alert),
        Some(_) => {}
    }

    // OPEL: declared and computed, and whether they disagree.
    let (ob, oa) = (&b.opel, &a.opel);
    let level = |o: &Opel| (o.declared, o.computed.as_ref().map(|c| (c.level, c.score.to_bits())));
    if ob != oa {
        out.opel = Some(oa.clone());
    }
    let open_mismatch = find(AlertKind::OpelMismatch, None);
    let now_level = (oa.declared, oa.computed.as_ref().map(|c| c.level));
    let stale_mismatch = open_mismatch
        .is_some_and(|_| level(ob).0 != now_level.0 || ob.computed.as_ref().map(|c| c.level) != now_level.1);
    if open_mismatch.is_some() && (!oa.mismatch() || stale_mismatch) {
        clear(&mut out, AlertKind::OpelMismatch, None);
    }
    if oa.mismatch() && (open_mismatch.is_none() || stale_mismatch) {
        let computed = oa.computed.as_ref().expect("mismatch has both");
        let message = format!(
            "{provider}: declared OPEL {} but its figures compute OPEL {} ({})",
            oa.declared.expect("mismatch has both"),
            computed.level,
            computed.explain()
        );
        raise(
            &mut out,
            Alert::new(
                AlertKind::OpelMismatch,
                Severity::Warning,
                provider,
                None,
                Some(f64::from(computed.level)),
                message,
                at,
            ),
        );
    }
    out
}

/// Applies a live report to a provider's state (see [`crate::state::apply_live`]) together with what it means:
/// derives the picture from the state before and after, records the alerts it raised and cleared and its new
/// figures and OPEL levels, ends staleness (unless the report's period is itself too old: freshness goes by the
/// period a report describes, not by when it arrived) and advances its version. Readings older than the rules'
/// `value_max_age` (by their period, against the report's) are left out of the derived figures and ratings.
/// [`crate::plan`] calls this one function for every store, so every backend derives and keeps the same thing. The
/// caller must already know the report is newer than `live`.
///
/// A live report also ends the mutual aid holds it shows occupied ([`crate::aid::hold`]); those are returned, and
/// the provider's figures are derived with the holds that remain.
pub fn advance(
    rules: &Rules,
    live: &mut Option<crate::ProviderLive>,
    report: &crate::ValidReport,
    received_at: Timestamp,
) -> (Vec<MetricChange>, Derived, Vec<crate::aid::Hold>) {
    // What was derived when the last report came is kept in the state: the side before this report, for free.
    let (kept_figures, kept_opel, open) = match live.as_mut() {
        Some(l) => (std::mem::take(&mut l.figures), std::mem::take(&mut l.opel), std::mem::take(&mut l.alerts)),
        None => Default::default(),
    };
    let changes = crate::state::apply_live(rules, live, report, received_at);
    let state = live.as_mut().expect("just applied");
    // By site, a lagging site's report is live for that site but says nothing about the provider's freshness,
    // which goes by its latest period.
    let stale = is_stale(rules, report.provider(), state.period, received_at);
    let still_stale = stale.then(|| stale_alert(rules, report.provider(), state.period, received_at));
    let mut holds = std::mem::take(&mut state.holds);
    let released = crate::aid::hold::release_on_report(&mut holds, |m| state.number(m));
    state.holds = holds;
    let (derived, kept_opel) = {
        let before = Side::kept(rules, &kept_figures, kept_opel);
        let values = counted_readings(rules, state).map(|(c, r)| (*c, r.value));
        let held = crate::aid::hold::held_by_metric(rules, &state.holds);
        let after = Side::of(rules, report.provider(), values, &held);
        let derived =
            between(rules, report.provider(), &before, &after, &open, Some(&changes), received_at, still_stale);
        (derived, before.opel)
    };
    state.figures = kept_figures;
    state.opel = kept_opel;
    state.alerts = open;
    state.record_alerts(&derived);
    state.stale = stale;
    state.version += 1;
    apply_derived(state, &derived);
    (changes, derived, released)
}

/// What placing or ending mutual aid holds changes in a provider's derived picture: `state` takes `holds` as its
/// holds, its figures are derived again (free beds and occupancy count held beds as taken) and the `overcommitted`
/// alert is raised or cleared; staleness and jump warnings stay as they are. Advances its version.
pub fn rehold(rules: &Rules, state: &mut crate::ProviderLive, holds: Vec<crate::aid::Hold>, at: Timestamp) -> Derived {
    let before = Side::kept(rules, &state.figures, state.opel.clone());
    state.holds = holds;
    let held = crate::aid::hold::held_by_metric(rules, &state.holds);
    let values = counted_readings(rules, state).map(|(c, r)| (*c, r.value));
    let after = Side::of(rules, &state.provider, values, &held);
    let still_stale = state.alerts.iter().find(|a| a.kind == AlertKind::Stale).cloned();
    let derived = between(rules, &state.provider, &before, &after, &state.alerts, None, at, still_stale);
    state.record_alerts(&derived);
    state.version += 1;
    apply_derived(state, &derived);
    derived
}

/// Brings a provider's figures and OPEL levels up to date with what an event derived: the figures it lists
/// replace (or, with no value, remove) the provider's, and its OPEL levels, if it has any, replace the provider's.
/// Planning and folding both call this, so a folded picture holds exactly what was planned.
pub fn apply_derived(state: &mut crate::ProviderLive, derived: &Derived) {
    for f in &derived.figures {
        let at = state.figures.binary_search_by(|g| g.metric.cmp(&f.metric));
        match (at, f.value) {
            (Ok(i), Some(_)) => state.figures[i] = f.clone(),
            (Ok(i), None) => {
                state.figures.remove(i);
            }
            (Err(i), Some(_)) => state.figures.insert(i, f.clone()),
            (Err(_), None) => {}
        }
    }
    if let Some(o) = &derived.opel {
        state.opel = o.clone();
    }
}

/// Whether a provider whose latest report is for the hour starting at `period` is stale at `now`: its next report
/// was due one cadence after that hour ended, and the grace on top of that has passed. Freshness goes by the period
/// a report describes, whenever it arrived, so a report for a past hour never makes a provider look fresh.
pub fn is_stale(rules: &Rules, provider: &str, period: Timestamp, now: Timestamp) -> bool {
    period <= stale_deadline(rules, provider, now)
}

/// The latest period a provider's latest report may be for, for it to be stale at `now`.
pub fn stale_deadline(rules: &Rules, provider: &str, now: Timestamp) -> Timestamp {
    let after = rules.stale_after(provider).as_millis().min(i64::MAX as u128) as i64;
    // The period is an hour: its report is due a cadence after the hour ends.
    now.add_millis(after.saturating_add(Timestamp::HOUR_MS).saturating_neg())
}

/// The earliest period a reading may be for to count in figures, ratings and totals, given the provider's latest
/// period: older readings (a metric the provider stopped sending) are kept and shown with their age, but counted
/// nowhere.
pub fn oldest_counted(rules: &Rules, latest: Timestamp) -> Timestamp {
    let age = rules.staleness.value_max_age.as_millis().min(i64::MAX as u128) as i64;
    latest.add_millis(age.saturating_neg())
}

/// A provider's readings recent enough to count (see [`oldest_counted`]), in code order: what its figures,
/// ratings and (while it is not stale) its scopes' totals are made from.
pub fn counted_readings<'a>(
    rules: &Rules,
    state: &'a crate::ProviderLive,
) -> impl Iterator<Item = (&'a Code, &'a crate::Reading)> + 'a {
    let oldest = oldest_counted(rules, state.period);
    state.readings.iter().filter(move |(_, r)| r.period >= oldest)
}

/// The alert raised when a provider goes quiet.
pub fn stale_alert(rules: &Rules, provider: &str, period: Timestamp, now: Timestamp) -> Alert {
    let (cadence, grace) = rules.cadence(provider);
    let message = format!(
        "{provider}: its latest report is for the hour from {period} (expected every {}, with {} grace)",
        humantime::format_duration(cadence),
        humantime::format_duration(grace)
    );
    Alert::new(AlertKind::Stale, Severity::Critical, provider, None, None, message, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::diff;
    use crate::{AbsentReason, Limits, Report, validate};

    fn values(list: &[(&str, f64)]) -> BTreeMap<Code, Value> {
        list.iter().map(|(c, v)| (Code::new(c), Value::Number(*v))).collect()
    }

    /// Applies `report` on top of `before` the way a store does, and derives.
    fn derive(rules: &Rules, before: &BTreeMap<Code, Value>, report: &[(&str, f64)], open: &[Alert]) -> Derived {
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let r = Report {
            provider: "RJ7".into(),
            period: Some(now.hour_start()),
            revision: 1,
            observed_at: Some(now),
            values: report.iter().map(|(c, v)| (c.to_string(), (*v).into())).collect(),
            ..Default::default()
        };
        let valid = validate(&r, &rules.directory, &rules.catalogue, &Limits::default(), now).unwrap();
        let changes = diff(|code| before.get(code), &valid);
        let mut after = before.clone();
        after.extend(valid.values().clone());
        let b = Before { values: (!before.is_empty()).then_some(before), open };
        report_derived(rules, b, &after, &changes, now)
    }

    fn report_derived(
        rules: &Rules,
        before: Before<'_>,
        after: &BTreeMap<Code, Value>,
        changes: &[MetricChange],
        at: Timestamp,
    ) -> Derived {
        report(rules, "RJ7", before, after, changes, at)
    }

    fn keys(alerts: &[Alert]) -> Vec<&str> {
        alerts.iter().map(|a| a.key.as_str()).collect()
    }

    #[test]
    fn figures_include_derived_metrics_and_ratings_use_capacity() {
        let rules = Rules::demo();
        let v = values(&[
            ("beds.cc_adult.open", 20.0),
            ("beds.cc_adult.occupied", 19.0),
            ("beds.cc_paed.open", 3.0),
            ("beds.cc_paed.occupied", 3.0),
        ]);
        let f = figures(&rules.catalogue, &v);
        assert_eq!(f["beds.cc_adult.occupancy"], 95.0);
        assert_eq!(f["beds.cc_adult.free"], 1.0);
        let (view, _) = provider_view(&rules, "RJ7", &v, &[]);
        let r: BTreeMap<&str, Rag> = view.iter().filter_map(|f| Some((f.metric.as_str(), f.rag?))).collect();
        assert_eq!(r["beds.cc_adult.occupancy"], Rag::Red);
        assert_eq!(r["beds.cc_adult.free"], Rag::Amber);
        // Three paediatric beds is below the minimum capacity of 4: full, but not rated on its percentage.
        assert_eq!(f["beds.cc_paed.occupancy"], 100.0);
        assert!(!r.contains_key("beds.cc_paed.occupancy"));
        assert_eq!(r["beds.cc_paed.free"], Rag::Red, "absolute free beds still rate");
    }

    #[test]
    fn alerts_raised_and_cleared_by_reports() {
        let rules = Rules::demo();
        let base = values(&[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 15.0), ("opel.level", 2.0)]);
        let red = Alert::new(
            AlertKind::Threshold,
            Severity::Critical,
            "RJ7",
            Some("beds.cc_adult.occupancy"),
            Some(95.0),
            "x".into(),
            Timestamp(0),
        );
        let stale = Alert::new(AlertKind::Stale, Severity::Critical, "RJ7", None, None, "x".into(), Timestamp(0));
        let jump = Alert::new(
            AlertKind::Jump,
            Severity::Warning,
            "RJ7",
            Some("beds.cc_adult.occupied"),
            None,
            "x".into(),
            Timestamp(0),
        );
        let esc =
            Alert::new(AlertKind::Escalation, Severity::Warning, "RJ7", None, Some(3.0), "x".into(), Timestamp(0));
        type Case<'a> = (&'a str, &'a [(&'a str, f64)], Vec<Alert>, &'a [&'a str], &'a [&'a str]);
        let cases: Vec<Case<'_>> = vec![
            ("into red", &[("beds.cc_adult.occupied", 19.0)], vec![], &["threshold:RJ7:beds.cc_adult.occupancy"], &[]),
            (
                "still red raises nothing",
                &[("beds.cc_adult.occupied", 20.0)],
                vec![red.clone()],
                &["threshold:RJ7:beds.cc_adult.free"],
                &[],
            ),
            (
                "out of red clears",
                &[("beds.cc_adult.occupied", 10.0)],
                vec![red.clone()],
                &[],
                &["threshold:RJ7:beds.cc_adult.occupancy"],
            ),
            ("escalation raised", &[("opel.level", 3.0)], vec![], &["escalation:RJ7"], &[]),
            ("escalation lowered clears", &[("opel.level", 1.0)], vec![esc.clone()], &[], &["escalation:RJ7"]),
            ("a report clears stale", &[("opel.level", 2.0)], vec![stale.clone()], &[], &["stale:RJ7"]),
            (
                "jump of more than half capacity",
                &[("beds.cc_adult.occupied", 4.0)],
                vec![],
                &["jump:RJ7:beds.cc_adult.occupied"],
                &[],
            ),
            ("exactly half is not a jump", &[("beds.cc_adult.occupied", 5.0)], vec![], &[], &[]),
            (
                "next report clears a jump",
                &[("beds.cc_adult.occupied", 14.0)],
                vec![jump.clone()],
                &[],
                &["jump:RJ7:beds.cc_adult.occupied"],
            ),
        ];
        for (name, report, open, raised, cleared) in cases {
            let d = derive(&rules, &base, report, &open);
            let mut got_raised: Vec<&str> = keys(&d.raised);
            got_raised.retain(|k| !k.starts_with("opel_mismatch"));
            let mut want: Vec<&str> = raised.to_vec();
            want.sort();
            got_raised.sort();
            assert_eq!(got_raised, want, "{name}: raised");
            let mut got_cleared = keys(&d.cleared);
            got_cleared.retain(|k| !k.starts_with("opel_mismatch"));
            assert_eq!(got_cleared, cleared, "{name}: cleared");
        }
    }

    #[test]
    fn entering_red_names_the_figure_and_the_rule() {
        let rules = Rules::demo();
        let base = values(&[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 15.0)]);
        let d = derive(&rules, &base, &[("beds.cc_adult.occupied", 19.0)], &[]);
        let a = d.raised.iter().find(|a| a.kind == AlertKind::Threshold).unwrap();
        assert_eq!(a.message, "RJ7: Adult critical care occupancy is 95%, in red (red at 95% or more)");
        assert_eq!(a.severity, Severity::Critical);
        let f: Vec<(&str, Option<f64>, Option<Rag>)> =
            d.figures.iter().map(|f| (f.metric.as_str(), f.value, f.rag)).collect();
        assert_eq!(
            f,
            [
                ("beds.cc_adult.free", Some(1.0), Some(Rag::Amber)),
                ("beds.cc_adult.occupancy", Some(95.0), Some(Rag::Red)),
                ("beds.cc_adult.occupied", Some(19.0), None)
            ]
        );
    }

    #[test]
    fn absent_values_end_ratings_and_their_alerts() {
        let rules = Rules::demo();
        let base = values(&[("beds.cc_adult.open", 20.0), ("beds.cc_adult.occupied", 19.0)]);
        let red = Alert::new(
            AlertKind::Threshold,
            Severity::Critical,
            "RJ7",
            Some("beds.cc_adult.occupancy"),
            Some(95.0),
            "x".into(),
            Timestamp(0),
        );
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let mut after = base.clone();
        after.insert("beds.cc_adult.occupied".into(), Value::Absent(AbsentReason::NotAvailable));
        let changes = [MetricChange {
            metric: "beds.cc_adult.occupied".into(),
            before: Some(Value::Number(19.0)),
            after: Value::Absent(AbsentReason::NotAvailable),
        }];
        let d = report(&rules, "RJ7", Before { values: Some(&base), open: &[red] }, &after, &changes, now);
        assert_eq!(keys(&d.cleared), ["threshold:RJ7:beds.cc_adult.occupancy"]);
        assert!(d.figures.iter().any(|f| f.metric == "beds.cc_adult.occupancy" && f.value.is_none()));
    }

    #[test]
    fn declared_and_computed_opel_and_their_mismatch() {
        let rules = Rules::demo();
        let calm = values(&[
            ("beds.ga_adult.open", 100.0),
            ("beds.ga_adult.occupied", 80.0),
            ("beds.cc_adult.open", 20.0),
            ("beds.cc_adult.occupied", 10.0),
            ("ed.over_12h", 0.0),
            ("ed.in_department", 40.0),
            ("opel.level", 1.0),
        ]);
        let d = derive(&rules, &calm, &[("opel.level", 1.0)], &[]);
        assert!(d.opel.is_none(), "nothing changed");
        // Everything at its worst while the provider still declares OPEL 1: computed 4, a mismatch.
        let d = derive(
            &rules,
            &calm,
            &[("beds.ga_adult.occupied", 99.0), ("beds.cc_adult.occupied", 20.0), ("ed.over_12h", 35.0)],
            &[],
        );
        let o = d.opel.as_ref().expect("levels changed");
        assert_eq!(o.declared, Some(1));
        let computed = o.computed.as_ref().unwrap();
        assert_eq!(computed.level, 4);
        assert!(computed.explain().starts_with("OPEL 4"), "{}", computed.explain());
        let m = d.raised.iter().find(|a| a.kind == AlertKind::OpelMismatch).expect("mismatch raised");
        assert!(m.message.starts_with("RJ7: declared OPEL 1 but its figures compute OPEL 4 (OPEL 4"), "{}", m.message);
        // Declaring 4 resolves it.
        let worst = {
            let mut v = calm.clone();
            v.extend(values(&[
                ("beds.ga_adult.occupied", 99.0),
                ("beds.cc_adult.occupied", 20.0),
                ("ed.over_12h", 35.0),
            ]));
            v
        };
        let d = derive(&rules, &worst, &[("opel.level", 4.0)], std::slice::from_ref(m));
        assert_eq!(keys(&d.cleared), ["opel_mismatch:RJ7"]);
        let escalation: Vec<&Alert> = d.raised.iter().filter(|a| a.kind == AlertKind::Escalation).collect();
        assert_eq!(escalation.len(), 1);
        assert_eq!(escalation[0].severity, Severity::Critical);
        assert_eq!(escalation[0].message, "RJ7: declared OPEL 4 (was 1)");
        assert!(!d.raised.iter().any(|a| a.kind == AlertKind::OpelMismatch));
    }

    #[test]
    fn staleness_with_a_fake_clock() {
        let rules = Rules::demo();
        // The hour from 14:00 ends at 15:00; the next report is due within the hour after (the cadence), and 15
        // minutes' grace: stale from 16:15, whenever the report for 14:00 arrived.
        let period = Timestamp::parse_rfc3339("2026-11-27T14:00:00Z").unwrap();
        let cases = [("16:14:59", false), ("16:15:00", true), ("17:00:00", true), ("14:05:00", false)];
        for (time, stale) in cases {
            let now = Timestamp::parse_rfc3339(&format!("2026-11-27T{time}Z")).unwrap();
            assert_eq!(is_stale(&rules, "RJ7", period, now), stale, "at {time}");
        }
        let a = stale_alert(&rules, "RJ7", period, period.add_hours(3));
        assert_eq!(a.key, "stale:RJ7");
        assert_eq!(
            a.message,
            "RJ7: its latest report is for the hour from 2026-11-27T14:00:00Z (expected every 1h, with 15m grace)"
        );
    }
}
