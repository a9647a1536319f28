//! The metric catalogue: which metrics a deployment accepts, what unit and kind each has, and how it rolls up.
//!
//! A catalogue is data (TOML), not code, so a deployment can extend or replace the shipped NHS England profile
//! (see [`crate::profile`]) without a rebuild. Parsing checks the catalogue is self-consistent: unique codes,
//! `at_most` naming an existing count, sensible level ranges.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ConfigError;

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
    /// Inclusive range, for levels only.
    #[serde(default)]
    pub min: Option<u32>,
    #[serde(default)]
    pub max: Option<u32>,
    #[serde(default)]
    pub description: String,
}

/// The metrics a deployment accepts, by code.
#[derive(Clone, Debug)]
pub struct Catalogue {
    pub profile: String,
    metrics: BTreeMap<String, Metric>,
}

/// The metric that a report's declared OPEL level is recorded as.
pub const OPEL_METRIC: &str = "opel.level";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    profile: String,
    #[serde(rename = "metric")]
    metrics: Vec<Metric>,
}

impl Catalogue {
    /// Parses a catalogue from TOML text; `what` names the source in errors (e.g. a file path).
    pub fn from_toml(what: &str, text: &str) -> Result<Self, ConfigError> {
        let file: CatalogueFile =
            toml::from_str(text).map_err(|cause| ConfigError::Parse { what: what.to_owned(), cause })?;
        Self::new(what, file.profile, file.metrics)
    }

    /// Builds a catalogue from metrics, checking it is self-consistent.
    pub fn new(what: &str, profile: String, list: Vec<Metric>) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { what: what.to_owned(), message };
        let mut metrics = BTreeMap::new();
        for m in list {
            if m.code.is_empty() || m.code.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(invalid(format!("metric code {:?} must be non-empty without spaces or quotes", m.code)));
            }
            match m.kind {
                Kind::Level => match (m.min, m.max) {
                    (Some(lo), Some(hi)) if lo <= hi => {}
                    _ => return Err(invalid(format!("metric {}: a level needs min <= max", m.code))),
                },
                _ if m.min.is_some() || m.max.is_some() => {
                    return Err(invalid(format!("metric {}: min and max are for levels only", m.code)));
                }
                _ => {}
            }
            let code = m.code.clone();
            if metrics.insert(code.clone(), m).is_some() {
                return Err(invalid(format!("metric {code} is defined twice")));
            }
        }
        for m in metrics.values() {
            if let Some(bound) = &m.at_most {
                match metrics.get(bound) {
                    Some(b) if b.kind == m.kind && m.kind == Kind::Count => {}
                    Some(_) => {
                        return Err(invalid(format!("metric {}: at_most {bound} must be a count like it", m.code)));
                    }
                    None => return Err(invalid(format!("metric {}: at_most names unknown metric {bound}", m.code))),
                }
            }
        }
        if let Some(m) = metrics.get(OPEL_METRIC)
            && m.kind != Kind::Level
        {
            return Err(invalid(format!("metric {OPEL_METRIC} must be a level")));
        }
        Ok(Catalogue { profile, metrics })
    }

    pub fn get(&self, code: &str) -> Option<&Metric> {
        self.metrics.get(code)
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
