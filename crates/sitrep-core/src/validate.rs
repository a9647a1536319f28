//! The rules a report must satisfy before it may change anything, and the precise complaint for each.
//!
//! [`validate()`] checks a [`Report`] against the directory, the catalogue, the [`Limits`] and the current time,
//! and returns either a [`ValidReport`] (the only thing a store will apply) or every [`Violation`] found. Each
//! violation names the field (`values[beds.cc_adult.occupied]`), the rule (`at_most`) and a sentence with the
//! values, so a feed's operator can fix the export without reading sitrep's code.

use std::collections::BTreeMap;

use crate::catalogue::OPEL_METRIC;
use crate::{AbsentReason, Catalogue, Code, Directory, Kind, Metric, MetricInput, Report, Timestamp, Value};

/// Bounds on what one report may carry and how far its times may stray.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Most entries in a report's values.
    pub max_values: usize,
    /// Longest narrative, in characters.
    pub max_narrative_chars: usize,
    /// Longest source name, in characters.
    pub max_source_chars: usize,
    /// How far in the future `observed_at` may be (clock skew allowance), in milliseconds.
    pub future_tolerance_ms: i64,
    /// How many hours back a period may be; it is also how long history (and so idempotency) is kept.
    pub retention_hours: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_values: 200,
            max_narrative_chars: 2000,
            max_source_chars: 100,
            future_tolerance_ms: 5 * 60 * 1000,
            retention_hours: 35 * 24,
        }
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field, e.g. `period` or `values[beds.cc_adult.occupied]`.
    pub field: String,
    /// Stable rule name, e.g. `hour_aligned`.
    pub rule: &'static str,
    /// A sentence naming the field, the rule and the value.
    pub description: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.field, self.rule, self.description)
    }
}

/// A report that passed validation: every metric known, every value in range, times sane. Its declared OPEL level
/// is folded into its values as `opel.level`. Only [`validate()`] makes one.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidReport {
    pub(crate) provider: String,
    pub(crate) site: Option<String>,
    pub(crate) period: Timestamp,
    pub(crate) revision: u32,
    pub(crate) observed_at: Timestamp,
    pub(crate) values: BTreeMap<Code, Value>,
    pub(crate) narrative: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) sender: Option<Sender>,
    pub(crate) trace: Option<TraceContext>,
}

/// Who sent a report, as the aggregator authenticated it: kept with the report in history and its event, the
/// audit trail of who changed the picture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    /// The principal's name.
    pub name: String,
    /// The credential it presented (a key's id).
    pub credential: String,
    /// Where the connection came from (`ip:port`), when known.
    pub address: String,
}

/// The W3C trace context (`traceparent`, and `tracestate` when there is one) of the span in which the aggregator
/// handled a report. It travels with the report's event the way a message's headers do, through the store (the
/// memory store keeps the event, Redis a field of its stream entry) to every replica's subscribers, whose delivery
/// spans join the report's trace. The core only carries the text: it knows nothing of OpenTelemetry, and nothing
/// it decides depends on this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

impl ValidReport {
    pub fn provider(&self) -> &str {
        &self.provider
    }
    pub fn site(&self) -> Option<&str> {
        self.site.as_deref()
    }
    pub fn period(&self) -> Timestamp {
        self.period
    }
    pub fn revision(&self) -> u32 {
        self.revision
    }
    pub fn observed_at(&self) -> Timestamp {
        self.observed_at
    }
    /// Metric code -> value, in code order.
    pub fn values(&self) -> &BTreeMap<Code, Value> {
        &self.values
    }
    pub fn narrative(&self) -> Option<&str> {
        self.narrative.as_deref()
    }
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Who sent it, once the aggregator has said (see [`ValidReport::sent_by`]).
    pub fn sender(&self) -> Option<&Sender> {
        self.sender.as_ref()
    }

    /// The same report, sent by `sender`.
    pub fn sent_by(mut self, sender: Sender) -> ValidReport {
        self.sender = Some(sender);
        self
    }

    /// The trace context of the span that handled it, when tracing is on (see [`TraceContext`]).
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The same report, handled under `trace`: its event carries it to every replica's subscribers.
    pub fn traced(mut self, trace: Option<TraceContext>) -> ValidReport {
        self.trace = trace;
        self
    }

    /// Whether the sender left the revision to the store (revision 0): see [`crate::plan::next_revision`].
    pub fn needs_revision(&self) -> bool {
        self.revision == 0
    }

    /// The same report as revision `revision`: the store's choice for a report sent without one.
    pub fn with_revision(&self, revision: u32) -> ValidReport {
        ValidReport { revision, ..self.clone() }
    }
}

/// The largest revision a sender may give; the store's own (for reports sent without one) may go above it, up to
/// `u32::MAX`. Large enough for revisions numbered by the second (the feed agent's) until 2096.
pub const MAX_REVISION: u32 = 4_000_000_000;

/// Who a complaint is about: `report for RJ7`, or `report` when it names no provider. Written only when there is a
/// complaint to write.
#[derive(Clone, Copy)]
struct Who<'a>(&'a str);

impl std::fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            "" => f.write_str("report"),
            p => write!(f, "report for {p}"),
        }
    }
}

fn field(code: &str) -> String {
    format!("values[{code}]")
}

/// Checks `report` and returns the validated form, or every violation found (never an empty list).
pub fn validate(
    report: &Report,
    directory: &Directory,
    catalogue: &Catalogue,
    limits: &Limits,
    now: Timestamp,
) -> Result<ValidReport, Vec<Violation>> {
    validate_owned(report.clone(), directory, catalogue, limits, now)
}

/// [`validate`], taking the report, so that its codes and texts move into the validated form rather than being
/// copied (the aggregator's ingest path: it owns the report it decoded). The checks run in the order a reader
/// would ask (who, when, what, what else said), each adding to one list so that every violation is found.
pub fn validate_owned(
    report: Report,
    directory: &Directory,
    catalogue: &Catalogue,
    limits: &Limits,
    now: Timestamp,
) -> Result<ValidReport, Vec<Violation>> {
    let Report { provider, site, period, revision, observed_at, values: inputs, opel_level, narrative, source } =
        report;
    let says_nothing = inputs.is_empty() && opel_level.is_none() && narrative.as_deref().is_none_or(str::is_empty);
    let mut found = Found { who: Who(&provider), violations: Vec::new() };
    found.check_who(directory, site.as_deref());
    found.check_when(limits, now, period, revision, observed_at);
    let mut values = found.check_values(catalogue, limits, inputs);
    found.check_opel(catalogue, opel_level, &mut values);
    let narrative = narrative.filter(|n| !n.is_empty());
    let source = source.filter(|s| !s.is_empty());
    found.check_texts(limits, narrative.as_deref(), source.as_deref());
    if says_nothing {
        let who = found.who;
        found.bad(
            "values".into(),
            "not_empty",
            format!("{who}: the report carries no values, no OPEL level and no narrative: nothing to record"),
        );
    }

    if !found.violations.is_empty() {
        return Err(found.violations);
    }
    Ok(ValidReport {
        provider,
        site: site.filter(|s| !s.is_empty()),
        period: period.expect("checked above"),
        revision,
        observed_at: observed_at.expect("checked above"),
        values,
        narrative,
        source,
        sender: None,
        trace: None,
    })
}

/// The violations found so far in one report, and whom they are about.
struct Found<'a> {
    who: Who<'a>,
    violations: Vec<Violation>,
}

impl Found<'_> {
    fn bad(&mut self, field: String, rule: &'static str, description: String) {
        self.violations.push(Violation { field, rule, description });
    }

    /// Who: the provider is in the directory, and the site (if any) is one of its sites.
    fn check_who(&mut self, directory: &Directory, site: Option<&str>) {
        let who = self.who;
        let provider = who.0;
        match directory.provider(provider) {
            _ if provider.is_empty() => self.bad("provider".into(), "required", "provider code is required".into()),
            None => self.bad(
                "provider".into(),
                "known_provider",
                format!("provider {:?} is not in the directory", provider),
            ),
            Some(p) => {
                if let Some(site) = site
                    && !p.sites.iter().any(|s| s.code == site)
                {
                    self.bad(
                        "site".into(),
                        "known_site",
                        format!("{who}: site {site:?} is not a site of provider {}", p.code),
                    );
                }
            }
        }
    }

    /// When: the period is a past or current hour within retention, the revision within a sender's range, and the
    /// observation neither in the future nor long before the period.
    fn check_when(
        &mut self,
        limits: &Limits,
        now: Timestamp,
        period: Option<Timestamp>,
        revision: u32,
        observed_at: Option<Timestamp>,
    ) {
        let who = self.who;
        let current_hour = now.hour_start();
        match period {
            None => self.bad(
                "period".into(),
                "required",
                format!("{who}: period (the start of the hour reported) is required"),
            ),
            Some(p) if !p.is_hour_aligned() => self.bad(
                "period".into(),
                "hour_aligned",
                format!("{who}: period {p} is not the start of an hour (expected {})", p.hour_start()),
            ),
            Some(p) if p > current_hour => self.bad(
                "period".into(),
                "not_in_future",
                format!("{who}: period {p} is later than the current hour {current_hour}"),
            ),
            Some(p) if p < current_hour.add_hours(-limits.retention_hours) => self.bad(
                "period".into(),
                "within_retention",
                format!(
                    "{who}: period {p} is older than the {} hours of history kept (earliest {})",
                    limits.retention_hours,
                    current_hour.add_hours(-limits.retention_hours)
                ),
            ),
            Some(_) => {}
        }
        // Revision 0 (none given) asks the store for the next one. Senders' revisions stop at MAX_REVISION, and the
        // store may give revisions above it, so a typo of the largest revision cannot leave a period with nothing
        // newer to correct it (a report sent without a revision always gets one).
        if revision > MAX_REVISION {
            self.bad(
                "revision".into(),
                "max",
                format!("{who}: revision = {revision} exceeds the limit of {MAX_REVISION}"),
            );
        }
        match observed_at {
            None => self.bad("observed_at".into(), "required", format!("{who}: observed_at is required")),
            Some(t) if t > now.add_millis(limits.future_tolerance_ms) => self.bad(
                "observed_at".into(),
                "not_in_future",
                format!(
                    "{who}: observed_at {t} is more than {} s ahead of the server's clock ({now})",
                    limits.future_tolerance_ms / 1000
                ),
            ),
            Some(t) if period.is_some_and(|p| t < p.add_hours(-24)) => self.bad(
                "observed_at".into(),
                "near_period",
                format!(
                    "{who}: observed_at {t} is more than 24 hours before the hour it reports ({})",
                    period.expect("checked")
                ),
            ),
            Some(_) => {}
        }
    }

    /// What: each value is a known, reported (not derived) metric in its unit, a number its kind allows or an
    /// absence with a reason; then the bounds between metrics of the report. Returns the values that passed.
    fn check_values(
        &mut self,
        catalogue: &Catalogue,
        limits: &Limits,
        inputs: BTreeMap<String, MetricInput>,
    ) -> BTreeMap<Code, Value> {
        let who = self.who;
        if inputs.len() > limits.max_values {
            self.bad(
                "values".into(),
                "max_values",
                format!("{who}: {} values exceed the limit of {} per report", inputs.len(), limits.max_values),
            );
        }
        // Pushed in code order (the report's map is), then built into a map in one pass.
        let mut values = Vec::with_capacity(inputs.len());
        // Numbers bounded by another metric of the report, checked once every value is in.
        let mut bounded: Vec<(Code, f64, &str)> = Vec::new();
        for (owned, input) in inputs {
            let code = owned.as_str();
            let Some((key, metric)) = self.known_metric(catalogue, code) else { continue };
            let Some(value) = self.reported_value(code, metric, input) else { continue };
            let Value::Number(n) = value else {
                values.push((key, value));
                continue;
            };
            match number_rule(code, n, metric) {
                Some((rule, text)) => self.bad(field(code), rule, format!("{who}: {text}")),
                None => {
                    values.push((key, Value::Number(n)));
                    if let Some(bound) = &metric.at_most {
                        bounded.push((key, n, bound));
                    }
                }
            }
        }
        let values: BTreeMap<Code, Value> = values.into_iter().collect();
        // Bounds between metrics of the same report (occupied beds may not exceed open beds).
        for (code, n, bound) in bounded {
            if let Some(Value::Number(limit)) = values.get(bound)
                && n > *limit
            {
                self.bad(field(&code), "at_most", format!("{who}: {code} = {n} exceeds {bound} = {limit}"));
            }
        }
        values
    }

    /// The catalogue's metric for `code`, or `None` (with the violation noted) for one that is derived or unknown.
    fn known_metric<'c>(&mut self, catalogue: &'c Catalogue, code: &str) -> Option<(Code, &'c Metric)> {
        let who = self.who;
        let found = catalogue.lookup(code);
        if found.is_none() {
            match catalogue.derived(code) {
                Some(d) => self.bad(
                    field(code),
                    "not_derived",
                    format!(
                        "{who}: metric {code:?} is computed by sitrep from {}; report those instead",
                        d.formula.inputs().join(" and ")
                    ),
                ),
                None => {
                    self.bad(field(code), "known_metric", format!("{who}: metric {code:?} is not in the catalogue"))
                }
            }
        }
        found
    }

    /// The value `input` gives, or `None` (with the violation noted) for one in the wrong unit, with no value, or
    /// absent without a reason.
    fn reported_value(&mut self, code: &str, metric: &Metric, input: MetricInput) -> Option<Value> {
        let who = self.who;
        if let Some(unit) = &input.unit
            && unit != &metric.unit
        {
            self.bad(
                field(code),
                "unit_matches",
                format!("{who}: metric {code} is measured in {}, not {unit}", metric.unit),
            );
            return None;
        }
        match input.value {
            None => {
                self.bad(
                    field(code),
                    "required",
                    format!("{who}: metric {code} has neither a number nor an absent reason"),
                );
                None
            }
            Some(Value::Absent(AbsentReason::Unspecified)) => {
                self.bad(field(code), "absent_reason", format!("{who}: metric {code} is absent without a reason"));
                None
            }
            Some(v) => Some(v),
        }
    }

    /// The OPEL level, if declared, is within the catalogue's range and agrees with the OPEL metric if that was
    /// reported too; it is then stored as that metric.
    fn check_opel(&mut self, catalogue: &Catalogue, opel_level: Option<u32>, values: &mut BTreeMap<Code, Value>) {
        let who = self.who;
        let Some(level) = opel_level else { return };
        match catalogue.lookup(OPEL_METRIC) {
            None => self.bad(
                "opel_level".into(),
                "known_metric",
                format!("{who}: this deployment's catalogue has no {OPEL_METRIC} metric"),
            ),
            Some((opel, m)) => {
                let (lo, hi) = (m.min.unwrap_or(1), m.max.unwrap_or(4));
                let declared = Value::Number(f64::from(level));
                if !(lo..=hi).contains(&level) {
                    self.bad(
                        "opel_level".into(),
                        "range",
                        format!("{who}: opel_level = {level} is outside {lo}..={hi}"),
                    );
                } else if values.get(OPEL_METRIC).is_some_and(|v| v != &declared) {
                    self.bad(
                        "opel_level".into(),
                        "consistent",
                        format!("{who}: opel_level = {level} disagrees with values[{OPEL_METRIC}]"),
                    );
                } else {
                    values.insert(opel, declared);
                }
            }
        }
    }

    /// The narrative and the source's name are within their lengths.
    fn check_texts(&mut self, limits: &Limits, narrative: Option<&str>, source: Option<&str>) {
        let who = self.who;
        if let Some(n) = narrative
            && n.chars().count() > limits.max_narrative_chars
        {
            self.bad(
                "narrative".into(),
                "max_length",
                format!(
                    "{who}: narrative of {} characters exceeds {} (the aggregator's limits.max_narrative_chars)",
                    n.chars().count(),
                    limits.max_narrative_chars
                ),
            );
        }
        if let Some(s) = source
            && s.chars().count() > limits.max_source_chars
        {
            self.bad(
                "source".into(),
                "max_length",
                format!("{who}: source of {} characters exceeds {}", s.chars().count(), limits.max_source_chars),
            );
        }
    }
}

/// The rule a reported number `n` of `metric` breaks, and the complaint (without whom it is about), if any.
fn number_rule(code: &str, n: f64, metric: &Metric) -> Option<(&'static str, String)> {
    if !n.is_finite() {
        return Some(("finite", format!("{code} = {n} is not a finite number")));
    }
    match metric.kind {
        Kind::Count | Kind::Minutes if n < 0.0 => {
            Some(("non_negative", format!("{code} = {n} is negative ({} cannot be)", metric.unit)))
        }
        Kind::Count if n.fract() != 0.0 => {
            Some(("integer", format!("{code} = {n} is not a whole number of {}", metric.unit)))
        }
        _ if metric.plausible_max().is_some_and(|max| n > max) => Some((
            "plausible",
            format!(
                "{code} = {n} is more {} than one provider plausibly has (at most {}): a typo? If it is \
                 right, raise plausible_max in the catalogue",
                metric.unit,
                metric.plausible_max().unwrap_or_default()
            ),
        )),
        Kind::Percent if !(0.0..=100.0).contains(&n) => {
            Some(("range", format!("{code} = {n} is outside 0..=100 percent")))
        }
        Kind::Level => {
            let (lo, hi) = (metric.min.unwrap_or(0), metric.max.unwrap_or(u32::MAX));
            if n.fract() != 0.0 || n < f64::from(lo) || n > f64::from(hi) {
                Some(("range", format!("{code} = {n} is not a whole level in {lo}..={hi}")))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricInput;
    use crate::profile::{demo_directory, nhs_england_catalogue};

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap()
    }

    fn good() -> Report {
        let mut r = Report {
            provider: "RJ7".into(),
            period: Some(now().hour_start()),
            revision: 1,
            observed_at: Some(now()),
            ..Default::default()
        };
        r.values.insert("beds.cc_adult.open".into(), 28.0.into());
        r.values.insert("beds.cc_adult.occupied".into(), 25.0.into());
        r
    }

    fn check(report: &Report) -> Result<ValidReport, Vec<Violation>> {
        validate(report, &demo_directory(), &nhs_england_catalogue(), &Limits::default(), now())
    }

    #[test]
    fn accepts_a_good_report_and_folds_opel_into_values() {
        let mut r = good();
        r.opel_level = Some(3);
        r.values.insert("ed.over_12h".into(), Value::Absent(AbsentReason::NotAvailable).into());
        let v = check(&r).unwrap();
        assert_eq!(v.values().get("opel.level"), Some(&Value::Number(3.0)));
        assert_eq!(v.values().get("ed.over_12h"), Some(&Value::Absent(AbsentReason::NotAvailable)));
        assert_eq!(v.values().len(), 4);
    }

    #[test]
    fn accepts_every_critcon_level_a_unit_may_declare() {
        for level in [0.0, 1.0, 2.0, 3.0] {
            let mut r = good();
            r.values.insert("critcon.level".into(), level.into());
            let v = check(&r).unwrap_or_else(|e| panic!("critcon.level = {level}: {e:?}"));
            assert_eq!(v.values().get("critcon.level"), Some(&Value::Number(level)));
        }
    }

    /// Each case: a change to a good report, and the (field, rule) it must be rejected with, and a fragment of the
    /// description that shows the value.
    #[test]
    fn every_rule_names_field_rule_and_value() {
        type Edit = Box<dyn Fn(&mut Report)>;
        let set = |code: &'static str, v: MetricInput| -> Edit {
            Box::new(move |r| drop(r.values.insert(code.into(), v.clone())))
        };
        let cases: Vec<(Edit, &str, &str, &str)> = vec![
            (Box::new(|r| r.provider = String::new()), "provider", "required", "required"),
            (Box::new(|r| r.provider = "XYZ".into()), "provider", "known_provider", "\"XYZ\""),
            (Box::new(|r| r.site = Some("RGT01".into())), "site", "known_site", "\"RGT01\""),
            (set("beds.bogus", 1.0.into()), "values[beds.bogus]", "known_metric", "\"beds.bogus\""),
            (
                set("beds.cc_adult.occupancy", 90.0.into()),
                "values[beds.cc_adult.occupancy]",
                "not_derived",
                "computed by sitrep from beds.cc_adult.occupied and beds.cc_adult.open",
            ),
            (
                set(
                    "ambulance.handover_mean_minutes",
                    MetricInput { value: Some(Value::Number(1.0)), unit: Some("hours".into()) },
                ),
                "values[ambulance.handover_mean_minutes]",
                "unit_matches",
                "minutes, not hours",
            ),
            (set("beds.cc_adult.open", (-1.0).into()), "values[beds.cc_adult.open]", "non_negative", "= -1"),
            (set("ed.in_department", 2.5.into()), "values[ed.in_department]", "integer", "= 2.5"),
            (set("beds.cc_adult.open", 1e20.into()), "values[beds.cc_adult.open]", "plausible", "at most 10000"),
            (set("ed.in_department", 100_001.0.into()), "values[ed.in_department]", "plausible", "at most 100000"),
            (set("ed.in_department", f64::NAN.into()), "values[ed.in_department]", "finite", "NaN"),
            (set("staff.absence_percent", 101.0.into()), "values[staff.absence_percent]", "range", "= 101"),
            (
                set("critcon.level", 4.0.into()),
                "values[critcon.level]",
                "range",
                "critcon.level = 4 is not a whole level in 0..=3",
            ),
            (set("critcon.level", (-1.0).into()), "values[critcon.level]", "range", "= -1"),
            (set("critcon.level", 1.5.into()), "values[critcon.level]", "range", "= 1.5"),
            (
                set("beds.cc_adult.occupied", 31.0.into()),
                "values[beds.cc_adult.occupied]",
                "at_most",
                "beds.cc_adult.occupied = 31 exceeds beds.cc_adult.open = 28",
            ),
            (
                set("ed.in_department", MetricInput { value: None, unit: None }),
                "values[ed.in_department]",
                "required",
                "neither",
            ),
            (
                set("ed.in_department", Value::Absent(AbsentReason::Unspecified).into()),
                "values[ed.in_department]",
                "absent_reason",
                "without a reason",
            ),
            (Box::new(|r| r.period = None), "period", "required", "required"),
            (Box::new(|r| r.period = Some(now())), "period", "hour_aligned", "2026-11-27T14:35:00Z"),
            (
                Box::new(|r| r.period = Some(now().hour_start().add_hours(1))),
                "period",
                "not_in_future",
                "2026-11-27T15:00:00Z",
            ),
            (
                Box::new(|r| r.period = Some(now().hour_start().add_hours(-24 * 36))),
                "period",
                "within_retention",
                "840 hours",
            ),
            (
                Box::new(|r| r.revision = 4_000_000_001),
                "revision",
                "max",
                "revision = 4000000001 exceeds the limit of 4000000000",
            ),
            (
                Box::new(|r| {
                    r.values.clear();
                    r.opel_level = None;
                    r.narrative = None;
                }),
                "values",
                "not_empty",
                "no values, no OPEL level and no narrative",
            ),
            (Box::new(|r| r.period = Some(Timestamp(-3_600_000))), "period", "within_retention", "ms from 1970"),
            (Box::new(|r| r.period = Some(Timestamp(i64::MAX))), "period", "hour_aligned", "ms from 1970"),
            (Box::new(|r| r.observed_at = Some(Timestamp(i64::MAX))), "observed_at", "not_in_future", "ms from 1970"),
            (
                Box::new(|r| r.observed_at = Some(now().add_millis(600_000))),
                "observed_at",
                "not_in_future",
                "2026-11-27T14:45:00Z",
            ),
            (Box::new(|r| r.observed_at = None), "observed_at", "required", "required"),
            (
                Box::new(|r| r.observed_at = Some(now().hour_start().add_hours(-25))),
                "observed_at",
                "near_period",
                "more than 24 hours before the hour it reports",
            ),
            (
                Box::new(|r| {
                    for i in 0..201 {
                        r.values.insert(format!("m{i}"), 1.0.into());
                    }
                }),
                "values",
                "max_values",
                "203 values exceed the limit of 200",
            ),
            (Box::new(|r| r.opel_level = Some(5)), "opel_level", "range", "opel_level = 5"),
            (
                Box::new(|r| {
                    r.opel_level = Some(2);
                    r.values.insert("opel.level".into(), 3.0.into());
                }),
                "opel_level",
                "consistent",
                "opel_level = 2",
            ),
            (Box::new(|r| r.narrative = Some("x".repeat(2001))), "narrative", "max_length", "2001 characters"),
            (Box::new(|r| r.source = Some("s".repeat(101))), "source", "max_length", "101 characters"),
        ];
        for (edit, field, rule, fragment) in cases {
            let mut r = good();
            edit(&mut r);
            let errors = check(&r).expect_err(&format!("{field}/{rule} should be rejected"));
            let hit = errors.iter().find(|v| v.field == field && v.rule == rule);
            let hit = hit.unwrap_or_else(|| panic!("expected {field}/{rule}, got {errors:?}"));
            assert!(hit.description.contains(fragment), "{:?} should contain {fragment:?}", hit.description);
        }
    }

    #[test]
    fn reports_every_violation_at_once() {
        let mut r = good();
        r.revision = 4_000_000_001;
        r.values.insert("ed.in_department".into(), (-3.0).into());
        let errors = check(&r).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
