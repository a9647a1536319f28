//! FHIR R4 MeasureReports (HL7 SANER) and Bundles of them, read with JSON paths in every error.
//!
//! Each MeasureReport becomes one report: populations are matched to catalogue codes by the mapping's
//! `[fhir.populations]` (by default the CDC capacity codes `numICUBeds`, `numICUBedsOcc`, `numVent`, `numVentUse`);
//! a population with no count is absent, with the reason its `data-absent-reason` extension gives (on `_count`
//! or on the population), never zero; the subject or reporter (its reference, identifier value, or display)
//! names the provider through `[fhir.subjects]`, else the mapping's `provider`; `period.start` becomes the
//! report's period (the start of its hour) and `date` its observation time. Populations the mapping does not know
//! are left out. Resources in a Bundle other than MeasureReports are skipped.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{InputError, Mapping, parse_time};
use crate::{AbsentReason, MetricInput, Report, Timestamp, Value};

pub const DATA_ABSENT_REASON: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";

/// A FHIR data-absent-reason code as sitrep's reason.
pub fn absent_reason(code: &str) -> AbsentReason {
    match code {
        "not-applicable" => AbsentReason::NotApplicable,
        "masked" => AbsentReason::Suppressed,
        _ => AbsentReason::NotAvailable,
    }
}

struct At<'a> {
    name: &'a str,
}

impl At<'_> {
    fn err(&self, path: &str, message: String) -> InputError {
        InputError::new(format!("{}: {path}", self.name), message)
    }

    fn text<'v>(&self, v: &'v Json, path: &str) -> Result<Option<&'v str>, InputError> {
        match v {
            Json::Null => Ok(None),
            Json::String(s) => Ok(Some(s)),
            other => Err(self.err(path, format!("expected a string, got {other} (rule: string)"))),
        }
    }

    fn list<'v>(&self, v: &'v Json, path: &str) -> Result<&'v [Json], InputError> {
        match v {
            Json::Null => Ok(&[]),
            Json::Array(items) => Ok(items),
            other => Err(self.err(path, format!("expected an array, got {other} (rule: array)"))),
        }
    }
}

/// The absent reason a population's data-absent-reason extension gives (on `_count` or on itself), if any.
fn dar(pop: &Json) -> Option<AbsentReason> {
    [&pop["_count"]["extension"], &pop["extension"]].into_iter().find_map(|ext| {
        ext.as_array()?.iter().find_map(|e| {
            (e["url"].as_str() == Some(DATA_ABSENT_REASON))
                .then(|| absent_reason(e["valueCode"].as_str().unwrap_or("unknown")))
        })
    })
}

/// One MeasureReport as a report: its hour and observation time, its provider, and a value per population the
/// mapping knows (notes say which populations it does not).
fn measure_report(
    at: &At<'_>,
    path: &str,
    mr: &Json,
    mapping: &Mapping,
    populations: &BTreeMap<String, String>,
    notes: &mut Vec<String>,
) -> Result<Report, InputError> {
    let (period, observed) = times(at, path, mr, mapping)?;
    let provider = provider(at, path, mr, mapping)?;
    let mut values = BTreeMap::new();
    for (g, group) in at.list(&mr["group"], &format!("{path}.group"))?.iter().enumerate() {
        let gpath = format!("{path}.group[{g}].population");
        for (p, pop) in at.list(&group["population"], &gpath)?.iter().enumerate() {
            let ppath = format!("{gpath}[{p}]");
            if let Some((metric, value)) = population(at, &ppath, pop, populations, notes)? {
                values.insert(metric, MetricInput { value: Some(value), unit: None });
            }
        }
    }
    let measure = mr["measure"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_owned();
    Ok(Report {
        provider,
        site: None,
        period: Some(period.hour_start()),
        revision: 0,
        observed_at: Some(observed),
        values,
        opel_level: None,
        narrative: None,
        source: Some(if measure.is_empty() {
            "FHIR MeasureReport".into()
        } else {
            format!("FHIR MeasureReport {measure}")
        }),
    })
}

/// A MeasureReport's period start (required) and its date (the period start when absent).
fn times(at: &At<'_>, path: &str, mr: &Json, mapping: &Mapping) -> Result<(Timestamp, Timestamp), InputError> {
    let start_path = format!("{path}.period.start");
    let start = at
        .text(&mr["period"]["start"], &start_path)?
        .ok_or_else(|| at.err(&start_path, "is required (rule: required)".into()))?;
    let period = parse_time(start, &mapping.timezone)
        .ok_or_else(|| at.err(&start_path, format!("{start:?} is not a FHIR date or dateTime (rule: time)")))?;
    let date_path = format!("{path}.date");
    let observed = match at.text(&mr["date"], &date_path)? {
        None => period,
        Some(d) => parse_time(d, &mapping.timezone)
            .ok_or_else(|| at.err(&date_path, format!("{d:?} is not a FHIR dateTime (rule: time)")))?,
    };
    Ok((period, observed))
}

/// Who: the first of the subject's and the reporter's names that the mapping knows, else the mapping's provider.
fn provider(at: &At<'_>, path: &str, mr: &Json, mapping: &Mapping) -> Result<String, InputError> {
    let mut names = Vec::new();
    for who in ["subject", "reporter"] {
        let v = &mr[who];
        for (key, value) in [
            ("reference", &v["reference"]),
            ("identifier.value", &v["identifier"]["value"]),
            ("display", &v["display"]),
        ] {
            if let Some(name) = at.text(value, &format!("{path}.{who}.{key}"))? {
                names.push(name.to_owned());
            }
        }
    }
    match names.iter().find_map(|n| mapping.fhir.subjects.get(n)) {
        Some(p) => Ok(p.clone()),
        None => match &mapping.provider {
            Some(p) => Ok(p.clone()),
            None => Err(at.err(
                &format!("{path}.subject"),
                format!(
                    "no provider for {} (map one of them in [fhir.subjects], or set provider in the mapping) (rule: known_subject)",
                    if names.is_empty() { "a report with no subject or reporter".to_owned() } else { names.join(", ") }
                ),
            )),
        },
    }
}

/// FHIR's measure-population type codes (http://terminology.hl7.org/CodeSystem/measure-population).
const POPULATION_TYPES: [&str; 9] = [
    "initial-population",
    "numerator",
    "numerator-exclusion",
    "denominator",
    "denominator-exclusion",
    "denominator-exception",
    "measure-population",
    "measure-population-exclusion",
    "measure-observation",
];

/// The metric a population (at `ppath`) counts, by its codes, and its count; `None`, with a note, when no code maps
/// to a metric.
fn population(
    at: &At<'_>,
    ppath: &str,
    pop: &Json,
    populations: &BTreeMap<String, String>,
    notes: &mut Vec<String>,
) -> Result<Option<(String, Value)>, InputError> {
    let codings = at.list(&pop["code"]["coding"], &format!("{ppath}.code.coding"))?;
    let mut metric = None;
    let mut codes = Vec::new();
    for (c, coding) in codings.iter().enumerate() {
        if let Some(code) = at.text(&coding["code"], &format!("{ppath}.code.coding[{c}].code"))? {
            codes.push(code);
            if let Some(m) = populations.get(code) {
                metric = Some(m.clone());
            }
        }
    }
    let Some(metric) = metric else {
        // Not silently: say which populations had nowhere to go, and tell FHIR's own population type codes
        // (`initial-population`, ...) apart: they say what kind of population it is, not what it counts, so a
        // population with only those has no measure to map.
        let (types, theirs): (Vec<&str>, Vec<&str>) = codes.into_iter().partition(|c| POPULATION_TYPES.contains(c));
        if !theirs.is_empty() {
            notes.push(format!("{}: {ppath}: no sitrep metric for SANER population(s) {}", at.name, theirs.join(", ")));
        } else if !types.is_empty() {
            notes.push(format!(
                "{}: {ppath}: only FHIR population type code(s) {}, which name no measure (a population needs a \
                 SANER code such as numICUBeds); skipped",
                at.name,
                types.join(", ")
            ));
        }
        return Ok(None);
    };
    let value = match &pop["count"] {
        Json::Null => Value::Absent(dar(pop).unwrap_or(AbsentReason::NotAvailable)),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        other => {
            return Err(at.err(&format!("{ppath}.count"), format!("expected a number, got {other} (rule: number)")));
        }
    };
    Ok(Some((metric, value)))
}

/// The reports, and notes on populations that had no metric to go to.
pub fn parse(name: &str, text: &str, mapping: &Mapping) -> Result<(Vec<Report>, Vec<String>), InputError> {
    let at = At { name };
    let mut notes = Vec::new();
    let root: Json = serde_json::from_str(text)
        .map_err(|e| InputError::new(format!("{name}:{}", e.line()), format!("not JSON: {e} (rule: json)")))?;
    let populations = mapping.populations();
    match at.text(&root["resourceType"], "$.resourceType")? {
        Some("MeasureReport") => Ok((vec![measure_report(&at, "$", &root, mapping, &populations, &mut notes)?], notes)),
        Some("Bundle") => {
            let mut out = Vec::new();
            for (i, entry) in at.list(&root["entry"], "$.entry")?.iter().enumerate() {
                if entry["resource"]["resourceType"].as_str() == Some("MeasureReport") {
                    out.push(measure_report(
                        &at,
                        &format!("$.entry[{i}].resource"),
                        &entry["resource"],
                        mapping,
                        &populations,
                        &mut notes,
                    )?);
                }
            }
            if out.is_empty() {
                return Err(at.err("$.entry", "holds no MeasureReport (rule: measure_report)".into()));
            }
            Ok((out, notes))
        }
        Some(other) => Err(at
            .err("$.resourceType", format!("{other:?} is neither a MeasureReport nor a Bundle (rule: resource_type)"))),
        None => Err(at.err("$.resourceType", "is required (rule: required)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    fn mapping() -> Mapping {
        Mapping::from_toml("m", "[fhir.subjects]\n\"Organization/st-georges\" = \"RJ7\"\n").unwrap()
    }

    const REPORT: &str = r#"{"resourceType":"MeasureReport","id":"x","measure":"http://example.org/Measure/CDCPatientImpactAndHospitalCapacity",
      "subject":{"reference":"Organization/st-georges"},"date":"2026-11-27T14:20:00Z","period":{"start":"2026-11-27T14:00:00Z"},
      "group":[{"population":[
        {"code":{"coding":[{"code":"initial-population"},{"code":"numICUBeds"}]},"count":28},
        {"code":{"coding":[{"code":"numICUBedsOcc"}]},"_count":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"masked"}]}},
        {"code":{"coding":[{"code":"numVent"}]}},
        {"code":{"coding":[{"code":"numC19Died"}]},"count":3},
        {"code":{"coding":[{"code":"measure-population"}]},"count":9}]}]}"#;

    #[test]
    fn populations_map_and_absent_counts_stay_absent() {
        let (mut reports, notes) = parse("r.json", REPORT, &mapping()).unwrap();
        assert_eq!(
            notes,
            [
                "r.json: $.group[0].population[3]: no sitrep metric for SANER population(s) numC19Died",
                "r.json: $.group[0].population[4]: only FHIR population type code(s) measure-population, which name \
                 no measure (a population needs a SANER code such as numICUBeds); skipped"
            ]
        );
        let r = reports.remove(0);
        assert_eq!(r.provider, "RJ7");
        assert_eq!(r.period, Timestamp::parse_rfc3339("2026-11-27T14:00:00Z"));
        assert_eq!(r.observed_at, Timestamp::parse_rfc3339("2026-11-27T14:20:00Z"));
        assert_eq!(r.values["beds.cc_adult.open"].value, Some(Value::Number(28.0)));
        assert_eq!(r.values["beds.cc_adult.occupied"].value, Some(Value::Absent(AbsentReason::Suppressed)));
        assert_eq!(r.values["ventilators.total"].value, Some(Value::Absent(AbsentReason::NotAvailable)));
        assert_eq!(r.values.len(), 3, "unknown populations are left out");
        assert_eq!(r.source.as_deref(), Some("FHIR MeasureReport CDCPatientImpactAndHospitalCapacity"));
    }

    #[test]
    fn malformed_reports_are_rejected_with_their_json_path() {
        let m = mapping();
        let bad_count = REPORT.replace(r#""count":28"#, r#""count":"28""#);
        let cases = [
            (
                bad_count.as_str(),
                "r.json: $.group[0].population[0].count: expected a number, got \"28\" (rule: number)",
            ),
            (
                r#"{"resourceType":"MeasureReport","subject":{"reference":"Organization/st-georges"}}"#,
                "r.json: $.period.start: is required",
            ),
            (r#"{"resourceType":"Patient"}"#, "r.json: $.resourceType: \"Patient\" is neither"),
            (
                r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}}]}"#,
                "r.json: $.entry: holds no MeasureReport",
            ),
            (
                r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"MeasureReport","period":{"start":"2026-11-27"},"subject":{"reference":"Location/x"}}}]}"#,
                "r.json: $.entry[0].resource.subject: no provider for Location/x",
            ),
            (
                r#"{"resourceType":"MeasureReport","period":{"start":"soon"}}"#,
                "r.json: $.period.start: \"soon\" is not a FHIR date",
            ),
            ("{", "r.json:1: not JSON"),
        ];
        for (text, expected) in cases {
            let err = parse("r.json", text, &m).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err:?} should start with {expected:?}");
        }
    }

    /// The public SANER examples (in `../shared/fixtures/saner` beside the repository, as CI has them) parse, and
    /// their absent counts stay absent. Without the folder the test fails rather than passing having checked
    /// nothing.
    #[test]
    fn public_saner_fixtures_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/saner");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "the public SANER fixtures are expected at {} (../shared/fixtures/saner beside the repository): {e}",
                dir.display()
            )
        });
        let m = Mapping::from_toml("m", "provider = \"RJ7\"\n").unwrap();
        let mut absent = 0;
        let mut files = 0;
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let (reports, _) = parse(&name, &text, &m).unwrap_or_else(|err| panic!("{err}"));
            assert!(!reports.is_empty());
            absent += reports
                .iter()
                .flat_map(|r| r.values.values())
                .filter(|v| matches!(v.value, Some(Value::Absent(_))))
                .count();
            files += 1;
        }
        assert!(files >= 9, "{files} fixture files");
        assert!(absent > 0, "the fixtures' data-absent-reason counts are absent, not zero");
    }
}
