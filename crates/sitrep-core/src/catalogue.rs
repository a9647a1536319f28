//! The metric catalogue: which metrics a deployment accepts, what unit and kind each has, and how it rolls up.
//!
//! A catalogue is data (TOML), not code, so a deployment can extend or replace the shipped NHS England profile
//! (see [`crate::profile`]) without a rebuild. Parsing checks the catalogue is self-consistent: unique codes,
//! `at_most` naming an existing count, sensible level ranges, RAG thresholds that agree with their direction.
//!
//! Besides the metrics providers report, a catalogue defines *derived* metrics that sitrep computes: a ratio of two
//! counts as a percentage (occupancy) or their difference (free beds). Derived metrics roll up from the rolled-up
//! counts, so a system's occupancy is its summed occupied beds over its summed open beds, never an average of
//! percentages.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Code, ConfigError};

/// What sort of number a metric holds; decides which validation rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A whole, non-negative number of things (beds, patients, handovers).
    Count,
    /// A percentage in 0..=100.
    Percent,
    /// A non-negative duration in minutes (may be fractional).
    Minutes,
    /// A whole number in the metric's `min..=max` (e.g. OPEL 1..=4).
    Level,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Percent => "percent",
            Kind::Minutes => "minutes",
            Kind::Level => "level",
        }
    }
}

/// How values of a metric combine across providers into a system, region or nation figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rollup {
    Sum,
    Max,
    Mean,
}

impl Rollup {
    pub fn as_str(self) -> &'static str {
        match self {
            Rollup::Sum => "sum",
            Rollup::Max => "max",
            Rollup::Mean => "mean",
        }
    }
}

/// Which way a metric gets worse, for RAG ratings and OPEL scoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    HigherIsWorse,
    LowerIsWorse,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::HigherIsWorse => "higher_is_worse",
            Direction::LowerIsWorse => "lower_is_worse",
        }
    }

    /// Whether `value` is at or beyond `threshold` in the worsening direction.
    pub fn reaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Direction::HigherIsWorse => value >= threshold,
            Direction::LowerIsWorse => value <= threshold,
        }
    }
}

/// RAG thresholds of a metric: red at or beyond `red`, amber at or beyond `amber`, green otherwise ("beyond" in
/// the worsening `direction`). With `min_capacity`, a figure whose capacity (a ratio's denominator, or the count
/// a count is bounded by) is below it is not rated: one patient must not turn a four-bed unit from green to red.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RagRule {
    pub direction: Direction,
    pub amber: f64,
    pub red: f64,
    #[serde(default)]
    pub min_capacity: Option<f64>,
}

impl RagRule {
    /// Why the thresholds are inconsistent, if they are.
    pub fn problem(&self) -> Option<String> {
        if !self.amber.is_finite() || !self.red.is_finite() {
            return Some("rag thresholds must be finite numbers".into());
        }
        if self.min_capacity.is_some_and(|c| !c.is_finite() || c < 0.0) {
            return Some("rag.min_capacity must be a non-negative number".into());
        }
        if !self.direction.reaches(self.red, self.amber) {
            return Some(format!(
                "rag: with direction {} red ({}) must be at or beyond amber ({})",
                self.direction.as_str(),
                self.red,
                self.amber
            ));
        }
        None
    }
}

/// How a derived metric is computed from two reported counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Formula {
    /// `100 * numerator / denominator`, a percentage; no value when the denominator is zero.
    Ratio { numerator: String, denominator: String },
    /// `minuend - subtrahend`.
    Difference { minuend: String, subtrahend: String },
}

impl Formula {
    /// The two metrics it reads.
    pub fn inputs(&self) -> [&str; 2] {
        match self {
            Formula::Ratio { numerator, denominator } => [numerator, denominator],
            Formula::Difference { minuend, subtrahend } => [minuend, subtrahend],
        }
    }

    /// The value from its inputs' values.
    pub fn apply(&self, a: f64, b: f64) -> Option<f64> {
        match self {
            Formula::Ratio { .. } => (b > 0.0).then(|| 100.0 * a / b),
            Formula::Difference { .. } => Some(a - b),
        }
    }
}

/// A metric sitrep computes from reported ones; it cannot be reported.
#[derive(Clone, Debug, PartialEq)]
pub struct DerivedMetric {
    pub code: String,
    pub label: String,
    pub unit: String,
    pub kind: Kind,
    pub formula: Formula,
    pub rag: Option<RagRule>,
    pub description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DerivedFile {
    code: String,
    label: String,
    unit: String,
    #[serde(default)]
    ratio: Option<[String; 2]>,
    #[serde(default)]
    difference: Option<[String; 2]>,
    #[serde(default)]
    rag: Option<RagRule>,
    #[serde(default)]
    description: String,
}

/// One entry of the catalogue.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    pub code: String,
    pub label: String,
    pub unit: String,
    pub kind: Kind,
    pub rollup: Rollup,
    /// For a count bounded by another count of the same report (occupied by open): that metric's code.
    #[serde(default)]
    pub at_most: Option<String>,
    /// The largest number that is plausible for one provider (counts and minutes): a report above it is rejected
    /// (rule `plausible`) as a likely typo. Without it, counts may go up to [`DEFAULT_PLAUSIBLE_COUNT`] and minutes
    /// up to [`DEFAULT_PLAUSIBLE_MINUTES`].
    #[serde(default)]
    pub plausible_max: Option<f64>,
    /// Inclusive range, for levels only.
    #[serde(default)]
    pub min: Option<u32>,
    #[serde(default)]
    pub max: Option<u32>,
    /// RAG thresholds, if the metric is rated.
    #[serde(default)]
    pub rag: Option<RagRule>,
    /// A move between consecutive reports larger than this fraction of capacity is flagged as a suspicious jump
    /// (a warning; the report is still accepted). Capacity is the `at_most` count, or else the larger of the two
    /// values.
    #[serde(default)]
    pub jump: Option<f64>,
    #[serde(default)]
    pub description: String,
}

/// The largest count one provider may report of anything, unless its metric says otherwise (`plausible_max`).
pub const DEFAULT_PLAUSIBLE_COUNT: f64 = 100_000.0;
/// The longest time in minutes a provider may report (a week), unless its metric says otherwise.
pub const DEFAULT_PLAUSIBLE_MINUTES: f64 = 7.0 * 24.0 * 60.0;

impl Metric {
    /// The largest plausible number for this metric, if its kind has one (see [`Metric::plausible_max`]).
    pub fn plausible_max(&self) -> Option<f64> {
        match self.kind {
            Kind::Count => Some(self.plausible_max.unwrap_or(DEFAULT_PLAUSIBLE_COUNT)),
            Kind::Minutes => Some(self.plausible_max.unwrap_or(DEFAULT_PLAUSIBLE_MINUTES)),
            Kind::Percent | Kind::Level => None,
        }
    }
}

/// The metrics a deployment accepts, by code.
#[derive(Clone, Debug)]
pub struct Catalogue {
    pub profile: String,
    metrics: ByCode<Metric>,
    derived: ByCode<DerivedMetric>,
}

/// Entries in code order, found by code with a hash lookup: every report looks its metrics up several times, and
/// a search of a sorted map compared codes a byte string at a time.
#[derive(Clone, Debug)]
struct ByCode<T> {
    list: Vec<T>,
    codes: Vec<Code>,
    at: rustc_hash::FxHashMap<String, usize>,
}

/// Whether `code` can name a metric: not empty, and without spaces or quotes (it is written in files and URLs).
fn valid_code(code: &str) -> Result<(), String> {
    match code.is_empty() || code.chars().any(|c| c.is_whitespace() || c == '"') {
        true => Err(format!("metric code {code:?} must be non-empty without spaces or quotes")),
        false => Ok(()),
    }
}

/// The reported metrics by code, each with a valid code, defined once, and with bounds only if it is a level
/// (which needs both, in order). Checked in the list's order: the first problem is the one told.
fn metrics_by_code(list: Vec<Metric>) -> Result<BTreeMap<String, Metric>, String> {
    let mut metrics = BTreeMap::new();
    for m in list {
        valid_code(&m.code)?;
        match m.kind {
            Kind::Level => match (m.min, m.max) {
                (Some(lo), Some(hi)) if lo <= hi => {}
                _ => return Err(format!("metric {}: a level needs min <= max", m.code)),
            },
            _ if m.min.is_some() || m.max.is_some() => {
                return Err(format!("metric {}: min and max are for levels only", m.code));
            }
            _ => {}
        }
        let code = m.code.clone();
        if metrics.insert(code.clone(), m).is_some() {
            return Err(format!("metric {code} is defined twice"));
        }
    }
    Ok(metrics)
}

/// That every `at_most` names a count bounding a count, and that the OPEL metric, if there is one, is a level.
fn check_bounds(metrics: &BTreeMap<String, Metric>) -> Result<(), String> {
    for m in metrics.values() {
        if let Some(bound) = &m.at_most {
            match metrics.get(bound) {
                Some(b) if b.kind == m.kind && m.kind == Kind::Count => {}
                Some(_) => return Err(format!("metric {}: at_most {bound} must be a count like it", m.code)),
                None => return Err(format!("metric {}: at_most names unknown metric {bound}", m.code)),
            }
        }
    }
    if let Some(m) = metrics.get(OPEL_METRIC)
        && m.kind != Kind::Level
    {
        return Err(format!("metric {OPEL_METRIC} must be a level"));
    }
    Ok(())
}

/// That every metric's RAG rule is sound (a minimum capacity only with a capacity to compare with), and its jump
/// threshold, if any, a fraction above 0.
fn check_ratings(metrics: &BTreeMap<String, Metric>) -> Result<(), String> {
    for m in metrics.values() {
        if let Some(problem) = m.rag.as_ref().and_then(RagRule::problem) {
            return Err(format!("metric {}: {problem}", m.code));
        }
        if m.rag.as_ref().is_some_and(|r| r.min_capacity.is_some()) && m.at_most.is_none() {
            return Err(format!("metric {}: rag.min_capacity needs a capacity (at_most) to compare with", m.code));
        }
        if let Some(j) = m.jump
            && !(j > 0.0 && j.is_finite())
        {
            return Err(format!("metric {}: jump must be a fraction above 0, not {j}", m.code));
        }
    }
    Ok(())
}

/// The derived metrics by code, each with a valid code no other metric has, inputs that are reported counts
/// rolling up by sum, and a sound RAG rule (a minimum capacity only for ratios).
fn derived_by_code(
    metrics: &BTreeMap<String, Metric>,
    derived_list: Vec<DerivedMetric>,
) -> Result<BTreeMap<String, DerivedMetric>, String> {
    let mut derived = BTreeMap::new();
    for d in derived_list {
        valid_code(&d.code)?;
        if metrics.contains_key(&d.code) || derived.contains_key(&d.code) {
            return Err(format!("metric {} is defined twice", d.code));
        }
        for input in d.formula.inputs() {
            match metrics.get(input) {
                Some(m) if m.kind == Kind::Count && m.rollup == Rollup::Sum => {}
                Some(_) => {
                    return Err(format!(
                        "derived metric {}: input {input} must be a count that rolls up by sum",
                        d.code
                    ));
                }
                None => return Err(format!("derived metric {}: unknown input {input}", d.code)),
            }
        }
        if let Some(problem) = d.rag.as_ref().and_then(RagRule::problem) {
            return Err(format!("derived metric {}: {problem}", d.code));
        }
        if d.rag.as_ref().is_some_and(|r| r.min_capacity.is_some()) && !matches!(d.formula, Formula::Ratio { .. }) {
            return Err(format!("derived metric {}: rag.min_capacity is for ratios only", d.code));
        }
        derived.insert(d.code.clone(), d);
    }
    Ok(derived)
}

impl<T> ByCode<T> {
    fn new(sorted: BTreeMap<String, T>) -> Self {
        let mut at = rustc_hash::FxHashMap::default();
        let codes = sorted.keys().map(|c| Code::new(c)).collect();
        let list = sorted
            .into_iter()
            .enumerate()
            .map(|(i, (code, entry))| {
                at.insert(code, i);
                entry
            })
            .collect();
        ByCode { list, codes, at }
    }

    fn get(&self, code: &str) -> Option<&T> {
        self.at.get(code).map(|i| &self.list[*i])
    }

    fn lookup(&self, code: &str) -> Option<(Code, &T)> {
        self.at.get(code).map(|i| (self.codes[*i], &self.list[*i]))
    }

    fn contains_key(&self, code: &str) -> bool {
        self.at.contains_key(code)
    }

    fn values(&self) -> std::slice::Iter<'_, T> {
        self.list.iter()
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The metric that a report's declared OPEL level is recorded as.
pub const OPEL_METRIC: &str = "opel.level";

/// The metric a critical care unit declares its CRITCON level (0..=3) as; see [`crate::critcon`].
pub const CRITCON_METRIC: &str = "critcon.level";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    profile: String,
    #[serde(rename = "metric")]
    metrics: Vec<Metric>,
    #[serde(rename = "derived", default)]
    derived: Vec<DerivedFile>,
}

impl Catalogue {
    /// Parses a catalogue from TOML text; `what` names the source in errors (e.g. a file path).
    pub fn from_toml(what: &str, text: &str) -> Result<Self, ConfigError> {
        let file: CatalogueFile =
            toml::from_str(text).map_err(|cause| ConfigError::Parse { what: what.to_owned(), cause })?;
        let invalid = |message: String| ConfigError::Invalid { what: what.to_owned(), message };
        let mut derived = Vec::new();
        for d in file.derived {
            let formula = match (d.ratio, d.difference) {
                (Some([numerator, denominator]), None) => Formula::Ratio { numerator, denominator },
                (None, Some([minuend, subtrahend])) => Formula::Difference { minuend, subtrahend },
                _ => {
                    return Err(invalid(format!("derived metric {}: give exactly one of ratio or difference", d.code)));
                }
            };
            let kind = match formula {
                Formula::Ratio { .. } => Kind::Percent,
                Formula::Difference { .. } => Kind::Count,
            };
            derived.push(DerivedMetric {
                code: d.code,
                label: d.label,
                unit: d.unit,
                kind,
                formula,
                rag: d.rag,
                description: d.description,
            });
        }
        Self::with_derived(what, file.profile, file.metrics, derived)
    }

    /// Builds a catalogue from metrics, checking it is self-consistent.
    pub fn new(what: &str, profile: String, list: Vec<Metric>) -> Result<Self, ConfigError> {
        Self::with_derived(what, profile, list, Vec::new())
    }

    /// Builds a catalogue from reported and derived metrics, checking it is self-consistent.
    pub fn with_derived(
        what: &str,
        profile: String,
        list: Vec<Metric>,
        derived_list: Vec<DerivedMetric>,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { what: what.to_owned(), message };
        let metrics = metrics_by_code(list).map_err(invalid)?;
        check_bounds(&metrics).map_err(invalid)?;
        check_ratings(&metrics).map_err(invalid)?;
        let derived = derived_by_code(&metrics, derived_list).map_err(invalid)?;
        Ok(Catalogue { profile, metrics: ByCode::new(metrics), derived: ByCode::new(derived) })
    }

    /// A derived metric by code.
    pub fn derived(&self, code: &str) -> Option<&DerivedMetric> {
        self.derived.get(code)
    }

    /// Every derived metric, in code order.
    pub fn derived_metrics(&self) -> impl Iterator<Item = &DerivedMetric> {
        self.derived.values()
    }

    /// Whether `code` is a reported or a derived metric.
    pub fn knows(&self, code: &str) -> bool {
        self.metrics.contains_key(code) || self.derived.contains_key(code)
    }

    /// The catalogue's RAG thresholds for a reported or derived metric.
    pub fn rag_rule(&self, code: &str) -> Option<&RagRule> {
        match self.metrics.get(code) {
            Some(m) => m.rag.as_ref(),
            None => self.derived.get(code).and_then(|d| d.rag.as_ref()),
        }
    }

    pub fn get(&self, code: &str) -> Option<&Metric> {
        self.metrics.get(code)
    }

    /// A reported metric by code, with its interned [`Code`].
    pub fn lookup(&self, code: &str) -> Option<(Code, &Metric)> {
        self.metrics.lookup(code)
    }

    pub fn contains(&self, code: &str) -> bool {
        self.metrics.contains_key(code)
    }

    /// Every metric, in code order.
    pub fn metrics(&self) -> impl Iterator<Item = &Metric> {
        self.metrics.values()
    }

    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalogue, String> {
        Catalogue::from_toml("test", text).map_err(|e| e.to_string())
    }

    #[test]
    fn rejects_inconsistent_catalogues() {
        let head = "profile = \"t\"\n";
        let count = |code: &str, extra: &str| {
            format!(
                "[[metric]]\ncode = \"{code}\"\nlabel = \"x\"\nunit = \"beds\"\nkind = \"count\"\nrollup = \"sum\"\n{extra}\n"
            )
        };
        let cases = [
            (format!("{head}{}{}", count("a", ""), count("a", "")), "metric a is defined twice"),
            (format!("{head}{}", count("a", "at_most = \"b\"")), "at_most names unknown metric b"),
            (format!("{head}{}", count("a", "min = 1")), "min and max are for levels only"),
            (format!("{head}{}", count("a b", "")), "without spaces"),
            (format!("{head}{}", count("a", "colour = 1")), "unknown field `colour`"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
}
