//! Reading FHIR SANER `MeasureReport`s (the HL7 Situational Awareness for Novel Epidemic Response format) into
//! sitrep reports, so a provider that already produces SANER can feed sitrep without a new export.
//!
//! A SANER report counts populations by code (`numICUBeds`, `numVentUse`, ...). A [`Mapping`] says which
//! population becomes which sitrep metric; [`Mapping::cdc_capacity`] covers the CDC "Patient Impact and Hospital
//! Capacity" measure. A population without a `count` is absent and stays absent (`not_available`): never zero.
//! Populations the mapping does not know are reported back, not silently dropped. SANER periods are usually days;
//! the report's period is the start of that day (UTC) and its observation time the report's `date`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{AbsentReason, MetricInput, Report, Timestamp, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SanerError {
    #[error("not JSON in the FHIR shape expected: {0}")]
    Json(String),
    #[error("resourceType {0:?} is neither a MeasureReport nor a Bundle of them")]
    ResourceType(String),
    #[error("MeasureReport {id}: {field}: {message}")]
    Field { id: String, field: &'static str, message: String },
    #[error("the reports are about several subjects ({0}); send each subject's reports with its own provider")]
    Subjects(String),
}

#[derive(Deserialize)]
struct Coding {
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct Concept {
    #[serde(default)]
    coding: Vec<Coding>,
}

#[derive(Deserialize)]
struct Population {
    #[serde(default)]
    code: Option<Concept>,
    #[serde(default)]
    count: Option<f64>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    population: Vec<Population>,
}

#[derive(Deserialize)]
struct Period {
    #[serde(default)]
    start: Option<String>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    display: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    resource: Resource,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    resource_type: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    measure: Option<String>,
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default)]
    subject: Option<Subject>,
    #[serde(default)]
    group: Vec<Group>,
    #[serde(default)]
    entry: Vec<Entry>,
}

/// One SANER MeasureReport, reduced to what sitrep uses.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasureReport {
    pub id: String,
    pub measure: String,
    /// Start of the reported period (midnight UTC for a date).
    pub period: Timestamp,
    /// When the report was produced (`date`), or the period start when it does not say.
    pub date: Timestamp,
    pub subject: Option<String>,
    /// Each population's codes (every coding it carries, in document order) and its count; `None` where the
    /// count is absent.
    pub populations: Vec<(Vec<String>, Option<f64>)>,
}

/// A FHIR date (`2020-04-04`) or dateTime (`2020-04-04T10:00:00Z`) as an instant.
fn fhir_time(text: &str) -> Option<Timestamp> {
    if text.len() == 10 {
        return Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"));
    }
    Timestamp::parse_rfc3339(text)
}

fn reduce(r: Resource) -> Result<MeasureReport, SanerError> {
    let id = r.id.unwrap_or_else(|| "(no id)".into());
    let field = |field, message: String| SanerError::Field { id: id.clone(), field, message };
    let start = r.period.and_then(|p| p.start).ok_or_else(|| field("period.start", "is required".into()))?;
    let period = fhir_time(&start).ok_or_else(|| field("period.start", format!("{start:?} is not a FHIR date")))?;
    let date = match r.date {
        Some(d) => fhir_time(&d).ok_or_else(|| field("date", format!("{d:?} is not a FHIR dateTime")))?,
        None => period,
    };
    let mut populations = Vec::new();
    for g in r.group {
        for p in g.population {
            // FHIR does not order codings: keep them all, and let the mapping find the one it knows.
            let codes: Vec<String> =
                p.code.map(|c| c.coding.into_iter().filter_map(|c| c.code).collect()).unwrap_or_default();
            if !codes.is_empty() {
                populations.push((codes, p.count));
            }
        }
    }
    Ok(MeasureReport {
        measure: r.measure.unwrap_or_default(),
        period,
        date,
        subject: r.subject.and_then(|s| s.display),
        populations,
        id,
    })
}

/// Parses a MeasureReport, or a Bundle of them, from JSON text.
pub fn parse(text: &str) -> Result<Vec<MeasureReport>, SanerError> {
    let r: Resource = serde_json::from_str(text).map_err(|e| SanerError::Json(e.to_string()))?;
    match r.resource_type.as_str() {
        "MeasureReport" => Ok(vec![reduce(r)?]),
        "Bundle" => r
            .entry
            .into_iter()
            .filter(|e| e.resource.resource_type == "MeasureReport")
            .map(|e| reduce(e.resource))
            .collect(),
        other => Err(SanerError::ResourceType(other.to_owned())),
    }
}

/// Which SANER population becomes which sitrep metric.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mapping(BTreeMap<String, String>);

impl Mapping {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Mapping(pairs.into_iter().collect())
    }

    /// The CDC Patient Impact and Hospital Capacity measure, as far as the NHS England catalogue has an
    /// equivalent: ICU beds as adult critical care, and ventilators. (SANER's `numbeds` counts every inpatient bed,
    /// critical care included, which no single NHS bed type matches, so it is left unmapped.)
    pub fn cdc_capacity() -> Self {
        Mapping::new(
            [
                ("numICUBeds", "beds.cc_adult.open"),
                ("numICUBedsOcc", "beds.cc_adult.occupied"),
                ("numVent", "ventilators.total"),
                ("numVentUse", "ventilators.in_use"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
        )
    }
}

/// A SANER report turned into a sitrep report, with the populations that had no metric to go to.
#[derive(Clone, Debug, PartialEq)]
pub struct Converted {
    pub report: Report,
    pub unmapped: Vec<String>,
}

/// Checks that the reports are all about one subject, so they can be sent as one provider's. Returns the subject.
pub fn single_subject(reports: &[MeasureReport]) -> Result<Option<&str>, SanerError> {
    let mut subjects: Vec<&str> = reports.iter().filter_map(|r| r.subject.as_deref()).collect();
    subjects.sort_unstable();
    subjects.dedup();
    match subjects[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(SanerError::Subjects(subjects.join(", "))),
    }
}

/// Turns MeasureReports into one sitrep report per period for `provider` (later reports' values win within a
/// period). Absent counts become `absent: not_available`. The reports should be about one subject (see
/// [`single_subject`]).
pub fn to_reports(reports: &[MeasureReport], provider: &str, revision: u32, mapping: &Mapping) -> Vec<Converted> {
    let mut by_period: BTreeMap<Timestamp, Converted> = BTreeMap::new();
    for mr in reports {
        let period = mr.period.hour_start();
        let c = by_period.entry(period).or_insert_with(|| Converted {
            report: Report {
                provider: provider.to_owned(),
                period: Some(period),
                revision,
                observed_at: Some(mr.date),
                source: Some(format!("FHIR SANER {}", mr.measure.rsplit('/').next().unwrap_or(""))),
                ..Default::default()
            },
            unmapped: Vec::new(),
        });
        c.report.observed_at = c.report.observed_at.max(Some(mr.date));
        for (codes, count) in &mr.populations {
            let mapped = codes.iter().find_map(|c| mapping.0.get(c));
            let code = &codes[0];
            match mapped {
                Some(metric) => {
                    let value = match count {
                        Some(n) => Value::Number(*n),
                        None => Value::Absent(AbsentReason::NotAvailable),
                    };
                    c.report.values.insert(metric.clone(), MetricInput::from(value));
                }
                None if !c.unmapped.contains(code) => c.unmapped.push(code.clone()),
                None => {}
            }
        }
    }
    by_period.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{demo_directory, nhs_england_catalogue};
    use crate::{Limits, validate};

    /// A MeasureReport in SANER's shape, written for this test.
    const SAMPLE: &str = r#"{
      "resourceType": "MeasureReport", "id": "sample-1", "status": "complete", "type": "summary",
      "measure": "http://hl7.org/fhir/us/saner/Measure/CDCPatientImpactAndHospitalCapacity",
      "subject": {"display": "Sample Hospital"}, "date": "2026-11-20T09:30:00Z",
      "period": {"start": "2026-11-20", "end": "2026-11-20"},
      "group": [
        {"code": {"coding": [{"code": "Beds"}]}, "population": [
          {"code": {"coding": [{"system": "x", "code": "numICUBeds"}]}, "count": 28},
          {"code": {"coding": [{"code": "numICUBedsOcc"}]}},
          {"code": {"coding": [{"code": "numbeds"}]}, "count": 600}]},
        {"code": {"coding": [{"code": "Ventilators"}]}, "population": [
          {"code": {"coding": [{"code": "numVent"}]}, "count": 40},
          {"code": {"coding": [{"code": "numVentUse"}]}, "count": 0}]}
      ]}"#;

    #[test]
    fn absent_counts_stay_absent_and_zero_stays_zero() {
        let reports = parse(SAMPLE).unwrap();
        assert_eq!(reports[0].subject.as_deref(), Some("Sample Hospital"));
        let converted = to_reports(&reports, "RJ7", 1, &Mapping::cdc_capacity());
        let r = &converted[0].report;
        assert_eq!(r.period, Timestamp::parse_rfc3339("2026-11-20T00:00:00Z"));
        assert_eq!(r.observed_at, Timestamp::parse_rfc3339("2026-11-20T09:30:00Z"));
        assert_eq!(r.values["beds.cc_adult.open"].value, Some(Value::Number(28.0)));
        assert_eq!(r.values["beds.cc_adult.occupied"].value, Some(Value::Absent(AbsentReason::NotAvailable)));
        assert_eq!(r.values["ventilators.in_use"].value, Some(Value::Number(0.0)));
        assert_eq!(converted[0].unmapped, ["numbeds"]);
        let now = Timestamp::parse_rfc3339("2026-11-20T10:00:00Z").unwrap();
        validate(r, &demo_directory(), &nhs_england_catalogue(), &Limits::default(), now).unwrap();
    }

    #[test]
    fn codings_in_any_order_and_one_subject_only() {
        let reordered = SAMPLE.replace(
            r#"{"coding": [{"system": "x", "code": "numICUBeds"}]}"#,
            r#"{"coding": [{"code": "measure-population"}, {"system": "x", "code": "numICUBeds"}]}"#,
        );
        let reports = parse(&reordered).unwrap();
        let r = &to_reports(&reports, "RJ7", 1, &Mapping::cdc_capacity())[0].report;
        assert_eq!(r.values["beds.cc_adult.open"].value, Some(Value::Number(28.0)));
        assert_eq!(single_subject(&reports), Ok(Some("Sample Hospital")));
        let mut two = reports.clone();
        two.push(MeasureReport { subject: Some("Other Hospital".into()), ..reports[0].clone() });
        assert!(matches!(single_subject(&two), Err(SanerError::Subjects(s)) if s == "Other Hospital, Sample Hospital"));
    }

    #[test]
    fn errors_name_the_report_and_field() {
        assert_eq!(parse(r#"{"resourceType": "Patient"}"#), Err(SanerError::ResourceType("Patient".into())));
        let err = parse(r#"{"resourceType": "MeasureReport", "id": "m1"}"#).unwrap_err().to_string();
        assert_eq!(err, "MeasureReport m1: period.start: is required");
        let err = parse(r#"{"resourceType": "MeasureReport", "id": "m2", "period": {"start": "April"}}"#).unwrap_err();
        assert!(err.to_string().contains("\"April\" is not a FHIR date"));
    }

    /// The public SANER examples in `../shared/fixtures/saner`, when the folder is there (CI has it beside the
    /// clone): every file parses, every absent count stays absent, and the converted reports are valid.
    #[test]
    fn public_saner_fixtures() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/saner");
        let Ok(files) = std::fs::read_dir(&dir) else {
            println!("SANER fixtures not found at {}: skipping the check against them", dir.display());
            return;
        };
        let mut checked = 0;
        for file in files {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let reports = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!reports.is_empty(), "{}", path.display());
            single_subject(&reports).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for mr in &reports {
                let absent: Vec<_> =
                    mr.populations.iter().filter(|(_, c)| c.is_none()).flat_map(|(codes, _)| codes).collect();
                for c in to_reports(std::slice::from_ref(mr), "RJ7", 1, &Mapping::cdc_capacity()) {
                    for (population, metric) in &Mapping::cdc_capacity().0 {
                        if absent.contains(&population) {
                            let v = c.report.values[metric].value;
                            assert_eq!(
                                v,
                                Some(Value::Absent(AbsentReason::NotAvailable)),
                                "{}: {population}",
                                path.display()
                            );
                        }
                    }
                    let now = c.report.period.unwrap().add_hours(24);
                    validate(&c.report, &demo_directory(), &nhs_england_catalogue(), &Limits::default(), now)
                        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                }
                checked += 1;
            }
        }
        println!("checked {checked} SANER MeasureReports from {}", dir.display());
        assert!(checked > 0);
    }
}
