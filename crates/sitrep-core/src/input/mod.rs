//! Reading what trusts' systems export into reports: sitrep's own JSON, CSV in two layouts, and FHIR R4
//! MeasureReports (HL7 SANER), with a mapping from a trust's own names and codes to sitrep's.
//!
//! Parsing is all-or-nothing per file: a file either becomes reports, or an [`InputError`] naming where (file and
//! line, or JSON path), the field, the value and the rule. Whether the reports are *valid* (known provider, counts
//! within capacity, ...) is for [`crate::validate()`] at the aggregator, so feeds get the same precise violations
//! as any other client. A report whose file gave no revision has revision 0, for the feed agent to assign.
//!
//! # Layout
//! - [`Mapping`]: a feed's mapping file (TOML).
//! - [`json`]: sitrep's own JSON, one report or an array of them (what `sitrep push` takes).
//! - [`csv`]: one row per metric, or one column per metric, detected from the header.
//! - [`fhir`]: MeasureReports and Bundles of them; absent counts (data-absent-reason) stay absent.

pub mod csv;
pub mod fhir;
pub mod json;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::{AbsentReason, ConfigError, Report, Timestamp};

/// Why a file could not be read as reports: where, and what is wrong (the field, the value, the rule).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    /// `file:line`, `file:line: column "x"`, or `file: $.json.path`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl InputError {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> Self {
        InputError { location: location.into(), message: message.into() }
    }
}

/// The formats a feed can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Fhir,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "fhir" | "saner" => Some(Format::Fhir),
            _ => None,
        }
    }

    /// The format of a file from its name and content: `.csv` is CSV; JSON with a FHIR `resourceType` is FHIR;
    /// other JSON is sitrep's own.
    pub fn detect(name: &str, text: &str) -> Format {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            return Format::Csv;
        }
        let start = text.trim_start_matches('\u{feff}').trim_start();
        if (start.starts_with('{') || start.starts_with('[')) && text.contains("\"resourceType\"") {
            return Format::Fhir;
        }
        if start.starts_with('{') || start.starts_with('[') {
            return Format::Json;
        }
        Format::Csv
    }
}

/// A feed's mapping from a trust's own names and codes to sitrep's. Every part is optional.
///
/// ```toml
/// provider = "RJ7"                        # the provider when a file does not say
/// source = "bedview nightly export"       # recorded with every report
/// [providers]                             # the trust's codes -> directory codes
/// "STG" = "RJ7"
/// [columns]                               # CSV column names (or a long file's metric names) -> catalogue codes
/// "ICU beds open" = "beds.cc_adult.open"
/// [absent]                                # cell texts that mean "absent", and why
/// "N/A" = "not_applicable"
/// [fhir.populations]                      # SANER population codes -> catalogue codes
/// numICUBeds = "beds.cc_adult.open"
/// [fhir.subjects]                         # MeasureReport subject/reporter (reference or identifier) -> provider
/// "Organization/st-georges" = "RJ7"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub providers: BTreeMap<String, String>,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub absent: BTreeMap<String, String>,
    #[serde(default)]
    pub fhir: FhirMapping,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirMapping {
    /// Population code -> catalogue code. Empty: the CDC capacity codes (`numICUBeds`, `numICUBedsOcc`, `numVent`,
    /// `numVentUse`).
    #[serde(default)]
    pub populations: BTreeMap<String, String>,
    #[serde(default)]
    pub subjects: BTreeMap<String, String>,
}

impl Mapping {
    pub fn from_toml(what: &str, text: &str) -> Result<Self, ConfigError> {
        let m: Mapping = toml::from_str(text).map_err(|cause| ConfigError::Parse { what: what.to_owned(), cause })?;
        for (text, reason) in &m.absent {
            if AbsentReason::parse(reason).is_none() {
                return Err(ConfigError::Invalid {
                    what: what.to_owned(),
                    message: format!(
                        "absent: {text:?} = {reason:?} is not one of not_applicable, not_available, suppressed"
                    ),
                });
            }
        }
        Ok(m)
    }

    /// The directory code for a provider code as a file gives it.
    pub fn provider_code(&self, theirs: &str) -> String {
        self.providers.get(theirs).cloned().unwrap_or_else(|| theirs.to_owned())
    }

    /// The catalogue code for a column or metric name as a file gives it.
    pub fn metric_code(&self, theirs: &str) -> String {
        self.columns.get(theirs).cloned().unwrap_or_else(|| theirs.to_owned())
    }

    /// Whether a cell's text means "absent", and why: the mapping's own words, or sitrep's reason names.
    pub fn absent_reason(&self, text: &str) -> Option<AbsentReason> {
        match self.absent.get(text) {
            Some(reason) => AbsentReason::parse(reason),
            None => AbsentReason::parse(text),
        }
    }

    pub fn populations(&self) -> BTreeMap<String, String> {
        if !self.fhir.populations.is_empty() {
            return self.fhir.populations.clone();
        }
        [
            ("numICUBeds", "beds.cc_adult.open"),
            ("numICUBedsOcc", "beds.cc_adult.occupied"),
            ("numVent", "ventilators.total"),
            ("numVentUse", "ventilators.in_use"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
    }
}

/// A time as feeds write it: RFC 3339 (`2026-11-27T14:00:00Z`), or a date and time with no zone, taken as UTC
/// (`2026-11-27 14:00`, `2026-11-27T14:00:00`), or a date (`2026-11-27`, midnight UTC).
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let t = text.trim();
    if let Some(ts) = Timestamp::parse_rfc3339(t) {
        return Some(ts);
    }
    let t = t.replacen(' ', "T", 1);
    let candidates = [format!("{t}Z"), format!("{t}:00Z"), format!("{t}T00:00:00Z")];
    candidates.iter().find_map(|c| Timestamp::parse_rfc3339(c))
}

/// What a file held: its reports, and notes for the operator (parts of the file that had nowhere to go).
#[derive(Clone, Debug, PartialEq)]
pub struct Read {
    pub reports: Vec<Report>,
    pub notes: Vec<String>,
}

/// Reads `text` (the content of the file `name`) in `format`. `now` fills in what a file may leave out: the
/// period (the current hour) and the observation time.
pub fn read(name: &str, text: &str, format: Format, mapping: &Mapping, now: Timestamp) -> Result<Read, InputError> {
    // Windows tools often start a file with a byte-order mark.
    let text = text.trim_start_matches('\u{feff}');
    let (mut reports, notes) = match format {
        Format::Json => (json::parse(name, text, mapping, now)?, Vec::new()),
        Format::Csv => (csv::parse(name, text, mapping, now)?, Vec::new()),
        Format::Fhir => fhir::parse(name, text, mapping)?,
    };
    if reports.is_empty() {
        return Err(InputError::new(name, "holds no reports"));
    }
    for r in &mut reports {
        if r.source.is_none() {
            r.source = mapping.source.clone();
        }
    }
    Ok(Read { reports, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_and_times_read() {
        assert_eq!(Format::detect("x.CSV", "{"), Format::Csv);
        assert_eq!(Format::detect("x.json", r#"{"resourceType":"Bundle"}"#), Format::Fhir);
        assert_eq!(Format::detect("x.json", r#"{"provider":"RJ7"}"#), Format::Json);
        assert_eq!(Format::detect("x", "provider,period"), Format::Csv);
        let want = Timestamp::parse_rfc3339("2026-11-27T14:00:00Z");
        for text in ["2026-11-27T14:00:00Z", "2026-11-27 14:00", "2026-11-27T14:00:00", " 2026-11-27T14:00 "] {
            assert_eq!(parse_time(text), want, "{text}");
        }
        assert_eq!(parse_time("2026-11-27"), Timestamp::parse_rfc3339("2026-11-27T00:00:00Z"));
        assert_eq!(parse_time("2pm"), None);
    }

    #[test]
    fn mappings_check_their_absent_reasons() {
        let m = Mapping::from_toml("m", "[absent]\n\"N/A\" = \"not_applicable\"\n").unwrap();
        assert_eq!(m.absent_reason("N/A"), Some(AbsentReason::NotApplicable));
        assert_eq!(m.absent_reason("suppressed"), Some(AbsentReason::Suppressed));
        assert_eq!(m.absent_reason("12"), None);
        let err = Mapping::from_toml("m", "[absent]\n\"-\" = \"gone\"\n").unwrap_err().to_string();
        assert!(err.contains("\"-\" = \"gone\" is not one of"), "{err}");
    }
}
