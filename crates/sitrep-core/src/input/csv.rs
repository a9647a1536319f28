//! CSV, as scheduled reports export it, in either of two layouts, told apart by the header:
//!
//! - **long**, one row per metric: `provider,period,metric,value` (optionally `unit`, `site`, `observed_at`,
//!   `revision`). Rows with the same provider, site, period and revision make one report.
//! - **wide**, one column per metric: `provider,period,beds.cc_adult.open,beds.cc_adult.occupied,...` (optionally
//!   `site`, `observed_at`, `revision`, `opel_level`, `narrative`, `source`). Each row is one report.
//!
//! Column names and metric names go through the mapping's `[columns]`, provider codes through `[providers]`;
//! header names are matched without regard to case. An empty cell means "not reported" (the metric is left out);
//! `not_applicable`, `not_available`, `suppressed`, or the mapping's `[absent]` words, mean absent. `provider` may
//! be left out when the mapping names one; `period` defaults to the current hour. Quoting follows RFC 4180.

use std::collections::BTreeMap;

use super::{InputError, Mapping, parse_time};
use crate::{MetricInput, Report, Timestamp, Value};

/// The records of RFC 4180 CSV text, each with the line it starts on.
fn records(name: &str, text: &str) -> Result<Vec<(usize, Vec<String>)>, InputError> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut line, mut start) = (1, 1);
    let mut quoted = false;
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].is_empty()) {
                    out.push((start, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start = line;
                any = false;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(InputError::new(format!("{name}:{start}"), "a quoted field is never closed (rule: csv)"));
    }
    if any {
        fields.push(field);
        if !(fields.len() == 1 && fields[0].is_empty()) {
            out.push((start, fields));
        }
    }
    Ok(out)
}

const SPECIAL: [&str; 11] = [
    "provider",
    "site",
    "period",
    "observed_at",
    "revision",
    "opel_level",
    "narrative",
    "source",
    "metric",
    "value",
    "unit",
];

pub fn parse(name: &str, text: &str, mapping: &Mapping, now: Timestamp) -> Result<Vec<Report>, InputError> {
    let rows = records(name, text)?;
    let Some((_, header)) = rows.first() else { return Err(InputError::new(name, "is empty (rule: csv)")) };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_owned()).collect();
    let col = |want: &str| header.iter().position(|h| h.eq_ignore_ascii_case(want));
    let long = col("metric").is_some() && col("value").is_some();
    fn cell(row: &[String], i: Option<usize>) -> Option<&str> {
        i.and_then(|i| row.get(i)).map(|s| s.trim()).filter(|s| !s.is_empty())
    }
    let at = |line: usize, column: &str| format!("{name}:{line}: column {column:?}");

    let mut reports: Vec<Report> = Vec::new();
    let mut index: BTreeMap<(String, Option<String>, Timestamp, u32), usize> = BTreeMap::new();
    for (line, row) in &rows[1..] {
        let line = *line;
        if row.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if row.len() > header.len() {
            return Err(InputError::new(
                format!("{name}:{line}"),
                format!("{} fields, but the header has {} (rule: csv)", row.len(), header.len()),
            ));
        }
        let provider = match (cell(row, col("provider")), &mapping.provider) {
            (Some(p), _) => mapping.provider_code(p),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(InputError::new(
                    at(line, "provider"),
                    "is empty and the mapping names no provider (rule: required)",
                ));
            }
        };
        let time = |column: &str| -> Result<Option<Timestamp>, InputError> {
            match cell(row, col(column)) {
                None => Ok(None),
                Some(t) => parse_time(t).map(Some).ok_or_else(|| {
                    InputError::new(
                        at(line, column),
                        format!("value {t:?} is not a time like 2026-11-27T14:00:00Z (rule: time)"),
                    )
                }),
            }
        };
        let whole = |column: &str| -> Result<Option<u32>, InputError> {
            match cell(row, col(column)) {
                None => Ok(None),
                Some(t) => t.parse::<u32>().map(Some).map_err(|_| {
                    InputError::new(at(line, column), format!("value {t:?} is not a whole number (rule: integer)"))
                }),
            }
        };
        let period = time("period")?.unwrap_or(now.hour_start());
        let observed = time("observed_at")?.unwrap_or(now);
        let revision = whole("revision")?.unwrap_or(0);
        let site = cell(row, col("site")).map(str::to_owned);
        let value_of = |column: &str, text: &str| -> Result<Option<Value>, InputError> {
            if let Some(reason) = mapping.absent_reason(text) {
                return Ok(Some(Value::Absent(reason)));
            }
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(Some(Value::Number(n))),
                Ok(_) => Err(InputError::new(
                    at(line, column),
                    format!("value {text:?} is not a finite number (rule: finite)"),
                )),
                Err(_) => Err(InputError::new(
                    at(line, column),
                    format!("value {text:?} is neither a number nor an absent reason (rule: number)"),
                )),
            }
        };
        let key = (provider.clone(), site.clone(), period, revision);
        let i = match (long, index.get(&key)) {
            (true, Some(i)) => *i,
            _ => {
                reports.push(Report {
                    provider,
                    site,
                    period: Some(period),
                    revision,
                    observed_at: Some(observed),
                    opel_level: whole("opel_level")?,
                    narrative: cell(row, col("narrative")).map(str::to_owned),
                    source: cell(row, col("source")).map(str::to_owned),
                    ..Default::default()
                });
                index.insert(key, reports.len() - 1);
                reports.len() - 1
            }
        };
        let report = &mut reports[i];
        if long {
            let Some(metric) = cell(row, col("metric")) else {
                return Err(InputError::new(at(line, "metric"), "is empty (rule: required)"));
            };
            let Some(text) = cell(row, col("value")) else { continue };
            if let Some(v) = value_of("value", text)? {
                let unit = cell(row, col("unit")).map(str::to_owned);
                report.values.insert(mapping.metric_code(metric), MetricInput { value: Some(v), unit });
            }
        } else {
            for (c, h) in header.iter().enumerate() {
                if SPECIAL.iter().any(|s| h.eq_ignore_ascii_case(s)) {
                    continue;
                }
                let Some(text) = cell(row, Some(c)) else { continue };
                if let Some(v) = value_of(h, text)? {
                    report.values.insert(mapping.metric_code(h), v.into());
                }
            }
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AbsentReason;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap()
    }

    #[test]
    fn rfc4180_quoting() {
        let r = records("f", "a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\n\"two\nlines\",z").unwrap();
        assert_eq!(r[1], (2, vec!["x, y".to_string(), "say \"hi\"".to_string()]));
        assert_eq!(r[2], (3, vec!["two\nlines".to_string(), "z".to_string()]));
        assert!(records("f", "a\n\"open").unwrap_err().to_string().contains("f:2: a quoted field is never closed"));
    }

    #[test]
    fn wide_layout_with_a_mapping() {
        let mapping = Mapping::from_toml(
            "m",
            "[providers]\nSTG = \"RJ7\"\n[columns]\n\"ICU open\" = \"beds.cc_adult.open\"\n\"ICU occupied\" = \"beds.cc_adult.occupied\"\n[absent]\n\"N/A\" = \"not_applicable\"\n",
        )
        .unwrap();
        let text = "Provider,Period,ICU open,ICU occupied,ed.over_12h,OPEL_level\nSTG,2026-11-27 13:00,28,25,N/A,3\nRGT,,10,,not_available,\n";
        let r = parse("beds.csv", text, &mapping, now()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].provider, "RJ7");
        assert_eq!(r[0].period, Timestamp::parse_rfc3339("2026-11-27T13:00:00Z"));
        assert_eq!(r[0].values["beds.cc_adult.occupied"].value, Some(Value::Number(25.0)));
        assert_eq!(r[0].values["ed.over_12h"].value, Some(Value::Absent(AbsentReason::NotApplicable)));
        assert_eq!(r[0].opel_level, Some(3));
        assert_eq!(r[1].period, Some(now().hour_start()));
        assert!(!r[1].values.contains_key("beds.cc_adult.occupied"), "an empty cell is not reported");
        assert_eq!(r[1].values["ed.over_12h"].value, Some(Value::Absent(AbsentReason::NotAvailable)));
    }

    #[test]
    fn long_layout_groups_rows_into_reports() {
        let text = "provider,period,metric,value,unit\nRJ7,2026-11-27T14:00:00Z,beds.cc_adult.open,28,beds\nRJ7,2026-11-27T14:00:00Z,beds.cc_adult.occupied,25,\nRGT,2026-11-27T14:00:00Z,ed.over_12h,suppressed,\n";
        let r = parse("long.csv", text, &Mapping::default(), now()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].values.len(), 2);
        assert_eq!(r[0].values["beds.cc_adult.open"].unit.as_deref(), Some("beds"));
        assert_eq!(r[1].values["ed.over_12h"].value, Some(Value::Absent(AbsentReason::Suppressed)));
    }

    #[test]
    fn errors_name_the_line_the_column_the_value_and_the_rule() {
        let m = Mapping::default();
        let cases = [
            (
                "provider,beds.cc_adult.open\nRJ7,twelve\n",
                "x.csv:2: column \"beds.cc_adult.open\": value \"twelve\" is neither a number nor an absent reason (rule: number)",
            ),
            ("provider,period\nRJ7,2pm\n", "x.csv:2: column \"period\": value \"2pm\" is not a time"),
            (
                "period,ed.over_12h\n2026-11-27T14:00:00Z,3\n",
                "x.csv:2: column \"provider\": is empty and the mapping names no provider",
            ),
            ("provider,a\nRJ7,1,2\n", "x.csv:2: 3 fields, but the header has 2"),
            ("provider,revision\nRJ7,-1\n", "x.csv:2: column \"revision\": value \"-1\" is not a whole number"),
            ("provider,a\n,,\nRJ7,inf\n", "x.csv:3: column \"a\": value \"inf\" is not a finite number (rule: finite)"),
            ("provider,a\nRJ7,NaN\n", "x.csv:2: column \"a\": value \"NaN\" is not a finite number"),
        ];
        for (text, expected) in cases {
            let err = parse("x.csv", text, &m, now()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err:?} should start with {expected:?}");
        }
    }
}
