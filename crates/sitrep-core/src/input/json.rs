//! sitrep's own JSON form of a report (what `sitrep push` takes), one report or an array of them:
//!
//! ```json
//! { "provider": "RJ7", "period": "2026-11-27T14:00:00Z", "revision": 1,
//!   "values": { "beds.cc_adult.open": 28, "beds.cc_adult.occupied": 25,
//!               "ed.over_12h": { "absent": "not_available" },
//!               "ambulance.handover_mean_minutes": { "value": 41.5, "unit": "minutes" } },
//!   "opel_level": 3, "narrative": "Two wards closed (norovirus).", "source": "bedview-export" }
//! ```
//! `period` defaults to the current hour and `observed_at` to now; a missing `revision` is 0 (for the feed agent
//! to assign). Values and providers go through the mapping, so a trust can keep its own names here too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{InputError, Mapping, parse_time};
use crate::{AbsentReason, MetricInput, Report, Timestamp, Value};

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ReportJson {
    provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_at: Option<String>,
    #[serde(default)]
    values: BTreeMap<String, ValueJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    opel_level: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    narrative: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum ValueJson {
    Number(f64),
    Absent {
        absent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    WithUnit {
        value: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    /// Neither a number nor an absent reason: kept so that validation can name it.
    Missing {},
}

fn one(name: &str, at: &str, json: ReportJson, mapping: &Mapping, now: Timestamp) -> Result<Report, InputError> {
    let time = |field: &str, text: &str| {
        parse_time(text).ok_or_else(|| {
            InputError::new(
                format!("{name}: {at}.{field}"),
                format!("{text:?} is not a time like 2026-11-27T14:00:00Z (rule: time)"),
            )
        })
    };
    let mut values = BTreeMap::new();
    for (code, v) in json.values {
        let input = match v {
            ValueJson::Number(n) => MetricInput { value: Some(Value::Number(n)), unit: None },
            ValueJson::WithUnit { value, unit } => MetricInput { value: Some(Value::Number(value)), unit },
            ValueJson::Absent { absent, unit } => match AbsentReason::parse(&absent) {
                Some(r) => MetricInput { value: Some(Value::Absent(r)), unit },
                None => {
                    return Err(InputError::new(
                        format!("{name}: {at}.values.{code}.absent"),
                        format!(
                            "{absent:?} is not one of not_applicable, not_available, suppressed (rule: absent_reason)"
                        ),
                    ));
                }
            },
            ValueJson::Missing {} => MetricInput { value: None, unit: None },
        };
        values.insert(mapping.metric_code(&code), input);
    }
    Ok(Report {
        provider: mapping.provider_code(&json.provider),
        site: json.site,
        period: Some(json.period.as_deref().map(|p| time("period", p)).transpose()?.unwrap_or(now.hour_start())),
        revision: json.revision.unwrap_or(0),
        observed_at: Some(json.observed_at.as_deref().map(|t| time("observed_at", t)).transpose()?.unwrap_or(now)),
        values,
        opel_level: json.opel_level,
        narrative: json.narrative,
        source: json.source,
    })
}

/// Reads one report, or an array of reports.
pub fn parse(name: &str, text: &str, mapping: &Mapping, now: Timestamp) -> Result<Vec<Report>, InputError> {
    let shape = |e: serde_json::Error| {
        InputError::new(
            format!("{name}:{}", e.line()),
            format!("not a report in sitrep's JSON form ({e}); see docs/FEEDS.md"),
        )
    };
    if text.trim_start().starts_with('[') {
        let list: Vec<ReportJson> = serde_json::from_str(text).map_err(shape)?;
        list.into_iter().enumerate().map(|(i, r)| one(name, &format!("$[{i}]"), r, mapping, now)).collect()
    } else {
        let r: ReportJson = serde_json::from_str(text).map_err(shape)?;
        Ok(vec![one(name, "$", r, mapping, now)?])
    }
}

/// A report in sitrep's JSON form, every field explicit (what the feed agent keeps in its spool).
pub fn write(r: &Report) -> String {
    let values = r
        .values
        .iter()
        .map(|(code, input)| {
            let v = match input.value {
                Some(Value::Number(n)) => match &input.unit {
                    None => ValueJson::Number(n),
                    Some(u) => ValueJson::WithUnit { value: n, unit: Some(u.clone()) },
                },
                Some(Value::Absent(reason)) => {
                    ValueJson::Absent { absent: reason.as_str().to_owned(), unit: input.unit.clone() }
                }
                None => ValueJson::Missing {},
            };
            (code.clone(), v)
        })
        .collect();
    let json = ReportJson {
        provider: r.provider.clone(),
        site: r.site.clone(),
        period: r.period.map(|p| p.to_string()),
        revision: Some(r.revision),
        observed_at: r.observed_at.map(|t| t.to_string()),
        values,
        opel_level: r.opel_level,
        narrative: r.narrative.clone(),
        source: r.source.clone(),
    };
    serde_json::to_string(&json).expect("reports serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_units_and_absent_values_with_defaults() {
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let text = r#"{"provider":"RJ7","values":{"a":28,"b":{"absent":"not_available"},"c":{"value":41.5,"unit":"minutes"}},"opel_level":3}"#;
        let r = parse("r.json", text, &Mapping::default(), now).unwrap().remove(0);
        assert_eq!(r.period, Some(now.hour_start()));
        assert_eq!(r.observed_at, Some(now));
        assert_eq!(r.revision, 0, "for the agent to assign");
        assert_eq!(r.values["a"].value, Some(Value::Number(28.0)));
        assert_eq!(r.values["b"].value, Some(Value::Absent(AbsentReason::NotAvailable)));
        assert_eq!(r.values["c"].unit.as_deref(), Some("minutes"));
        // What the agent writes reads back the same.
        let mut with_revision = r.clone();
        with_revision.revision = 7;
        assert_eq!(parse("s.json", &write(&with_revision), &Mapping::default(), now).unwrap(), vec![with_revision]);
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_rule() {
        let now = Timestamp::now();
        let m = Mapping::default();
        let err = parse("a.json", r#"{"provider":"RJ7","period":"2pm"}"#, &m, now).unwrap_err().to_string();
        assert_eq!(err, "a.json: $.period: \"2pm\" is not a time like 2026-11-27T14:00:00Z (rule: time)");
        let err =
            parse("a.json", r#"[{"provider":"RJ7"},{"provider":"RJ7","values":{"x":{"absent":"gone"}}}]"#, &m, now)
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("a.json: $[1].values.x.absent: \"gone\""), "{err}");
        let err = parse("a.json", "{\n\"provider\":\"RJ7\",\n\"colour\":1}", &m, now).unwrap_err().to_string();
        assert!(err.starts_with("a.json:3: not a report") && err.contains("unknown field `colour`"), "{err}");
    }
}
