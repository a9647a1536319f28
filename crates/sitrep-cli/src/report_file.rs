//! The JSON form of a report that `sitrep push` reads, and its conversion to the domain report.
//!
//! ```json
//! { "provider": "RJ7", "period": "2026-11-27T14:00:00Z", "revision": 1,
//!   "values": { "beds.cc_adult.open": 28, "beds.cc_adult.occupied": 25,
//!               "ed.over_12h": { "absent": "not_available" },
//!               "ambulance.handover_mean_minutes": { "value": 41.5, "unit": "minutes" } },
//!   "opel_level": 3, "narrative": "Two wards closed (norovirus).", "source": "bedview-export" }
//! ```
//! `period` defaults to the current hour, `observed_at` to now, `revision` to 1. Anything the aggregator would
//! reject is left for it to reject, so the user sees the same precise violations as a feed would.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::Deserialize;
use sitrep_core::{AbsentReason, MetricInput, Report, Timestamp, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportJson {
    provider: String,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    revision: Option<u32>,
    #[serde(default)]
    observed_at: Option<String>,
    #[serde(default)]
    values: BTreeMap<String, ValueJson>,
    #[serde(default)]
    opel_level: Option<u32>,
    #[serde(default)]
    narrative: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ValueJson {
    Number(f64),
    Absent {
        absent: String,
        #[serde(default)]
        unit: Option<String>,
    },
    WithUnit {
        value: f64,
        #[serde(default)]
        unit: Option<String>,
    },
}

fn time(field: &str, text: &str) -> anyhow::Result<Timestamp> {
    Timestamp::parse_rfc3339(text)
        .with_context(|| format!("{field}: {text:?} is not an RFC 3339 UTC time like 2026-11-27T14:00:00Z"))
}

/// Parses the JSON text of a report, filling defaults from `now`.
pub fn parse(text: &str, now: Timestamp) -> anyhow::Result<Report> {
    let json: ReportJson =
        serde_json::from_str(text).context("not a report in sitrep's JSON form (see `sitrep push --help`)")?;
    let mut values = BTreeMap::new();
    for (code, v) in json.values {
        let input = match v {
            ValueJson::Number(n) => MetricInput { value: Some(Value::Number(n)), unit: None },
            ValueJson::WithUnit { value, unit } => MetricInput { value: Some(Value::Number(value)), unit },
            ValueJson::Absent { absent, unit } => match AbsentReason::parse(&absent) {
                Some(r) => MetricInput { value: Some(Value::Absent(r)), unit },
                None => {
                    bail!("values.{code}.absent: {absent:?} is not one of not_applicable, not_available, suppressed")
                }
            },
        };
        values.insert(code, input);
    }
    Ok(Report {
        provider: json.provider,
        site: json.site,
        period: Some(json.period.as_deref().map(|p| time("period", p)).transpose()?.unwrap_or(now.hour_start())),
        revision: json.revision.unwrap_or(1),
        observed_at: Some(json.observed_at.as_deref().map(|t| time("observed_at", t)).transpose()?.unwrap_or(now)),
        values,
        opel_level: json.opel_level,
        narrative: json.narrative,
        source: json.source.or_else(|| Some("sitrep push".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_units_and_absent_values_with_defaults() {
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let r = parse(
            r#"{"provider":"RJ7","values":{"a":28,"b":{"absent":"not_available"},"c":{"value":41.5,"unit":"minutes"}},"opel_level":3}"#,
            now,
        )
        .unwrap();
        assert_eq!(r.period, Some(now.hour_start()));
        assert_eq!(r.observed_at, Some(now));
        assert_eq!(r.revision, 1);
        assert_eq!(r.values["a"].value, Some(Value::Number(28.0)));
        assert_eq!(r.values["b"].value, Some(Value::Absent(AbsentReason::NotAvailable)));
        assert_eq!(r.values["c"].unit.as_deref(), Some("minutes"));
    }

    #[test]
    fn errors_name_the_field() {
        let now = Timestamp::now();
        let err = parse(r#"{"provider":"RJ7","period":"2pm"}"#, now).unwrap_err().to_string();
        assert!(err.contains("period: \"2pm\""), "{err}");
        let err = parse(r#"{"provider":"RJ7","values":{"x":{"absent":"gone"}}}"#, now).unwrap_err().to_string();
        assert!(err.contains("values.x.absent"), "{err}");
        let plain = parse(r#"{"provider":"RJ7","values":{"a":{"value":3}}}"#, now).unwrap();
        assert_eq!(plain.values["a"], MetricInput { value: Some(Value::Number(3.0)), unit: None });
        let err = format!("{:#}", parse(r#"{"provider":"RJ7","colour":1}"#, now).unwrap_err());
        assert!(err.contains("unknown field `colour`"), "{err}");
    }
}
