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
//! to assign). Values and providers go through the mapping, so a trust can keep its own names here too; zone-less
//! times are read in the mapping's time zone.
//!
//! The text is parsed as JSON first, then each field is checked by hand, so that a wrong type names its field, the
//! type expected and the value given: `$.values."beds.cc_adult.open": expected a number or {"absent": reason}, got
//! the string "12" (rule: number)`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::{InputError, Mapping, check_narrative, parse_time};
use crate::{AbsentReason, MetricInput, Report, Timestamp, Value};

/// The fields of a report, for the complaint about an unknown one.
const FIELDS: &str = "provider, site, period, revision, observed_at, values, opel_level, narrative, source";

/// sitrep's JSON form as the agent writes it (reading is by hand, below).
#[derive(Serialize)]
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

#[derive(Serialize)]
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
    Missing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
}

/// A JSON value described for a message: `the string "12"`, `the number 12`, `an array`, ... Long strings are cut.
fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("{b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) if s.chars().count() > 40 => {
            let head: String = s.chars().take(40).collect();
            format!("the string {head:?}... ({} characters)", s.chars().count())
        }
        Json::String(s) => format!("the string {s:?}"),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

/// `key` as a step of a JSON path: `.provider`, or `."beds.cc_adult.open"` when it is not a plain name.
fn step(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!(".{key}")
    } else {
        format!(".{key:?}")
    }
}

/// One report's fields, checked one by one; `at` is its JSON path (`$`, `$[3]`).
struct Fields<'a> {
    name: &'a str,
    at: String,
}

impl Fields<'_> {
    fn err(&self, path: &str, message: String) -> InputError {
        InputError::new(format!("{}: {}{path}", self.name, self.at), message)
    }

    fn text<'v>(&self, obj: &'v Map<String, Json>, key: &str) -> Result<Option<&'v str>, InputError> {
        match obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.err(&step(key), format!("expected a string, got {} (rule: string)", describe(other))))
            }
        }
    }

    fn whole(&self, obj: &Map<String, Json>, key: &str) -> Result<Option<u32>, InputError> {
        match obj.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
                Ok(n.as_u64().map(|n| n as u32))
            }
            Some(other) => Err(self.err(
                &step(key),
                format!("expected a whole number from 0 to 4294967295, got {} (rule: integer)", describe(other)),
            )),
        }
    }

    fn time(&self, obj: &Map<String, Json>, key: &str, mapping: &Mapping) -> Result<Option<Timestamp>, InputError> {
        let Some(text) = self.text(obj, key)? else { return Ok(None) };
        parse_time(text, &mapping.timezone).map(Some).ok_or_else(|| {
            self.err(
                &step(key),
                format!("{text:?} is not a time like 2026-11-27T14:00:00Z or 2026-11-27 14:00 (rule: time)"),
            )
        })
    }

    fn number(&self, path: &str, v: &Json) -> Result<f64, InputError> {
        match v.as_f64() {
            Some(n) if n.is_finite() => Ok(n),
            _ => Err(self.err(path, format!("expected a number, got {} (rule: number)", describe(v)))),
        }
    }

    /// One entry of `values`: a number, `{"value": n, "unit": u}`, `{"absent": reason, "unit": u}`, or `{}` (kept
    /// so that validation names it as a value with neither).
    fn value(&self, code: &str, v: &Json) -> Result<MetricInput, InputError> {
        let path = format!(".values{}", step(code));
        let wrong = || {
            self.err(
                &path,
                format!(
                    "expected a number or {{\"absent\": reason}} (or {{\"value\": number, \"unit\": text}}), got {} \
                     (rule: number)",
                    describe(v)
                ),
            )
        };
        let obj = match v {
            Json::Number(_) => {
                return Ok(MetricInput { value: Some(Value::Number(self.number(&path, v)?)), unit: None });
            }
            Json::Object(obj) => obj,
            _ => return Err(wrong()),
        };
        if let Some(key) = obj.keys().find(|k| !matches!(k.as_str(), "value" | "absent" | "unit")) {
            return Err(self.err(
                &format!("{path}{}", step(key)),
                "is not a field of a value; expected value, absent or unit (rule: known_field)".into(),
            ));
        }
        let unit = match obj.get("unit") {
            None | Some(Json::Null) => None,
            Some(Json::String(u)) => Some(u.clone()),
            Some(other) => {
                return Err(self.err(
                    &format!("{path}.unit"),
                    format!("expected a string, got {} (rule: string)", describe(other)),
                ));
            }
        };
        match (obj.get("value"), obj.get("absent")) {
            (Some(_), Some(_)) => Err(self.err(&path, "has both a value and an absent reason (rule: one_of)".into())),
            (Some(n), None) => Ok(MetricInput { value: Some(Value::Number(self.number(&format!("{path}.value"), n)?)), unit }),
            (None, Some(Json::String(reason))) => match AbsentReason::parse(reason) {
                Some(r) => Ok(MetricInput { value: Some(Value::Absent(r)), unit }),
                None => Err(self.err(
                    &format!("{path}.absent"),
                    format!("{reason:?} is not one of not_applicable, not_available, suppressed (rule: absent_reason)"),
                )),
            },
            (None, Some(other)) => Err(self.err(
                &format!("{path}.absent"),
                format!(
                    "expected one of \"not_applicable\", \"not_available\", \"suppressed\", got {} (rule: absent_reason)",
                    describe(other)
                ),
            )),
            (None, None) => Ok(MetricInput { value: None, unit }),
        }
    }
}

fn one(name: &str, at: String, json: &Json, mapping: &Mapping, now: Timestamp) -> Result<Report, InputError> {
    let f = Fields { name, at };
    let Json::Object(obj) = json else {
        return Err(f.err("", format!("expected a report (a JSON object), got {} (rule: object)", describe(json))));
    };
    if let Some(key) = obj.keys().find(|k| !FIELDS.split(", ").any(|f| f == k.as_str())) {
        return Err(
            f.err(&step(key), format!("is not a field of a report; expected one of {FIELDS} (rule: known_field)"))
        );
    }
    let provider = f
        .text(obj, "provider")?
        .ok_or_else(|| f.err(".provider", "is required: the provider's code, e.g. \"RJ7\" (rule: required)".into()))?;
    let mut values = BTreeMap::new();
    match obj.get("values") {
        None | Some(Json::Null) => {}
        Some(Json::Object(entries)) => {
            for (code, v) in entries {
                values.insert(mapping.metric_code(code), f.value(code, v)?);
            }
        }
        Some(other) => {
            return Err(f.err(
                ".values",
                format!("expected an object of metric code -> value, got {} (rule: object)", describe(other)),
            ));
        }
    }
    let narrative = f.text(obj, "narrative")?;
    check_narrative(|| format!("{name}: {}.narrative", f.at), narrative)?;
    Ok(Report {
        provider: mapping.provider_code(provider),
        site: f.text(obj, "site")?.map(str::to_owned),
        period: Some(f.time(obj, "period", mapping)?.unwrap_or(now.hour_start())),
        revision: f.whole(obj, "revision")?.unwrap_or(0),
        observed_at: Some(f.time(obj, "observed_at", mapping)?.unwrap_or(now)),
        values,
        opel_level: f.whole(obj, "opel_level")?,
        narrative: narrative.map(str::to_owned),
        source: f.text(obj, "source")?.map(str::to_owned),
    })
}

/// Reads one report, or an array of reports.
pub fn parse(name: &str, text: &str, mapping: &Mapping, now: Timestamp) -> Result<Vec<Report>, InputError> {
    let json: Json = serde_json::from_str(text).map_err(|e| {
        InputError::new(format!("{name}:{}", e.line()), format!("not JSON ({e}) (rule: json); see docs/FEEDS.md"))
    })?;
    match &json {
        Json::Array(list) => {
            list.iter().enumerate().map(|(i, r)| one(name, format!("$[{i}]"), r, mapping, now)).collect()
        }
        other => Ok(vec![one(name, "$".into(), other, mapping, now)?]),
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
                None => ValueJson::Missing { unit: input.unit.clone() },
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
    fn errors_name_the_file_the_field_the_type_and_the_value() {
        let now = Timestamp::now();
        let m = Mapping::default();
        let cases = [
            (
                r#"{"provider":"RJ7","period":"2pm"}"#,
                r#"a.json: $.period: "2pm" is not a time like 2026-11-27T14:00:00Z"#,
            ),
            (
                r#"[{"provider":"RJ7"},{"provider":"RJ7","values":{"x":{"absent":"gone"}}}]"#,
                r#"a.json: $[1].values.x.absent: "gone" is not one of not_applicable"#,
            ),
            (
                r#"{"provider":"RJ7","values":{"beds.cc_adult.open":"12"}}"#,
                r#"a.json: $.values."beds.cc_adult.open": expected a number or {"absent": reason} (or {"value": number, "unit": text}), got the string "12" (rule: number)"#,
            ),
            (
                r#"{"provider":"RJ7","values":{"a":{"value":"12"}}}"#,
                r#"a.json: $.values.a.value: expected a number, got the string "12" (rule: number)"#,
            ),
            (
                r#"{"provider":"RJ7","values":{"a":[1]}}"#,
                r#"a.json: $.values.a: expected a number or {"absent": reason}"#,
            ),
            (r#"{"provider":"RJ7","values":{"a":null}}"#, "got null (rule: number)"),
            (r#"{"provider":"RJ7","values":{"a":{"absent":1}}}"#, "$.values.a.absent: expected one of"),
            (r#"{"provider":"RJ7","values":{"a":{"value":1,"absent":"suppressed"}}}"#, "$.values.a: has both"),
            (r#"{"provider":"RJ7","values":{"a":{"vaule":1}}}"#, "$.values.a.vaule: is not a field of a value"),
            (r#"{"provider":"RJ7","values":{"a":{"value":1,"unit":5}}}"#, "$.values.a.unit: expected a string"),
            (
                r#"{"provider":"RJ7","values":[1]}"#,
                "$.values: expected an object of metric code -> value, got an array",
            ),
            (r#"{"provider":12}"#, "a.json: $.provider: expected a string, got the number 12 (rule: string)"),
            (r#"{"values":{}}"#, "a.json: $.provider: is required"),
            (
                r#"{"provider":"RJ7","revision":"3"}"#,
                r#"$.revision: expected a whole number from 0 to 4294967295, got the string "3""#,
            ),
            (
                r#"{"provider":"RJ7","revision":-1}"#,
                "$.revision: expected a whole number from 0 to 4294967295, got the number -1",
            ),
            (r#"{"provider":"RJ7","revision":4294967296}"#, "got the number 4294967296 (rule: integer)"),
            (r#"{"provider":"RJ7","opel_level":2.5}"#, "$.opel_level: expected a whole number"),
            (r#"{"provider":"RJ7","narrative":7}"#, "$.narrative: expected a string, got the number 7"),
            (
                "{\n\"provider\":\"RJ7\",\n\"colour\":1}",
                "a.json: $.colour: is not a field of a report; expected one of provider,",
            ),
            ("[1]", "a.json: $[0]: expected a report (a JSON object), got the number 1 (rule: object)"),
            ("{\n\"provider\":\"RJ7\",\n}", "a.json:3: not JSON (trailing comma"),
        ];
        for (text, expected) in cases {
            let err = parse("a.json", text, &m, now).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}:\n  {err}\nshould contain\n  {expected}");
            assert!(err.starts_with("a.json"), "{err}");
        }
    }

    #[test]
    fn numbers_survive_the_spool_exactly() {
        // Found by the `json` fuzz target: without serde_json's float_roundtrip, this read back one unit off.
        let now = Timestamp::now();
        let text =
            r#"{"provider":"RJ7","values":{"a":4.1844674407370955e21,"b":0.1,"c":1e-300,"d":1.7976931348623157e308}}"#;
        let r = parse("r.json", text, &Mapping::default(), now).unwrap().remove(0);
        assert_eq!(r.values["a"].value, Some(Value::Number(4.184_467_440_737_095_5e21)));
        assert_eq!(parse("s.json", &write(&r), &Mapping::default(), now).unwrap(), vec![r]);
    }

    #[test]
    fn an_oversized_narrative_is_named_with_its_limit() {
        let now = Timestamp::now();
        let text = format!(
            r#"[{{"provider":"RJ7","narrative":"ok"}},{{"provider":"RJ7","narrative":"{}"}}]"#,
            "x".repeat(5 << 20)
        );
        let err = parse("big.json", &text, &Mapping::default(), now).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "big.json: $[1].narrative: the narrative has 5242880 characters (5242880 bytes), more than a report \
                 may carry (rule: max_length; the aggregator's limits.max_narrative_chars is 2000"
            ),
            "{err}"
        );
        // Longer than the aggregator's default but within a message: the aggregator, which knows its own limit, says.
        let long = format!(r#"{{"provider":"RJ7","narrative":"{}"}}"#, "é".repeat(5000));
        assert!(parse("ok.json", &long, &Mapping::default(), now).is_ok());
    }

    #[test]
    fn zone_less_times_follow_the_mappings_timezone() {
        let now = Timestamp::now();
        let text = r#"{"provider":"RJ7","period":"2026-06-01T15:00:00","observed_at":"2026-06-01T15:20:00+01:00"}"#;
        let r = parse("t.json", text, &Mapping::default(), now).unwrap().remove(0);
        assert_eq!(r.period, Timestamp::parse_rfc3339("2026-06-01T14:00:00Z"));
        assert_eq!(r.observed_at, Timestamp::parse_rfc3339("2026-06-01T14:20:00Z"));
        let utc = Mapping::from_toml("m", "timezone = \"UTC\"\n").unwrap();
        let r = parse("t.json", text, &utc, now).unwrap().remove(0);
        assert_eq!(r.period, Timestamp::parse_rfc3339("2026-06-01T15:00:00Z"));
    }
}
