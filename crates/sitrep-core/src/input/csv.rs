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
//! be left out when the mapping names one; `period` defaults to the current hour. Quoting follows RFC 4180; the
//! field separator is the mapping's `delimiter` (`,` unless it says otherwise).
//!
//! Records are split by the `csv` crate, and each header is looked up once per file, not once per row, so reading
//! is linear in the file's size (`cargo run --release -p sitrep-core --example read_bench` measures it).

use std::collections::BTreeMap;

use super::{InputError, Mapping, check_narrative, parse_time};
use crate::{MetricInput, Report, Timestamp, Value};

/// The line each record starts on, for errors. The `csv` crate's own line numbers drift where it skips blank
/// lines, so they are counted here from its byte positions: one pass over the text in all.
struct Lines<'a> {
    text: &'a [u8],
    byte: usize,
    line: usize,
}

impl Lines<'_> {
    /// The line `record` starts on; records must come in order.
    fn of(&mut self, record: &csv::StringRecord) -> usize {
        let mut start = record.position().map_or(self.byte, |p| p.byte() as usize).clamp(self.byte, self.text.len());
        // A record's position is where the reader began looking: before any blank lines it skipped.
        while start < self.text.len() && matches!(self.text[start], b'\n' | b'\r') {
            start += 1;
        }
        self.line += self.text[self.byte..start].iter().filter(|&&b| b == b'\n').count();
        self.byte = start;
        self.line
    }
}

/// The line of a record whose quoted field is never closed, if any. The `csv` crate reads such a field to the
/// end of the file without complaint; this scan (one pass, the same quoting rules) finds it.
fn unclosed_quote(text: &str, delimiter: u8) -> Option<usize> {
    let (mut line, mut record_start) = (1, 1);
    let (mut quoted, mut field_start) = (false, true);
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        if quoted {
            match b {
                b'"' if bytes.peek() == Some(&b'"') => {
                    bytes.next();
                }
                b'"' => quoted = false,
                b'\n' => line += 1,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' if field_start => {
                quoted = true;
                field_start = false;
            }
            b'\n' => {
                line += 1;
                record_start = line;
                field_start = true;
            }
            b'\r' => {}
            _ if b == delimiter => field_start = true,
            _ => field_start = false,
        }
    }
    quoted.then_some(record_start)
}

/// What a header column is: one of the columns sitrep understands, or a metric (wide layout).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    Provider,
    Site,
    Period,
    ObservedAt,
    Revision,
    OpelLevel,
    Narrative,
    Source,
    Metric,
    Value,
    Unit,
}

const SPECIAL: [(&str, Special); 11] = [
    ("provider", Special::Provider),
    ("site", Special::Site),
    ("period", Special::Period),
    ("observed_at", Special::ObservedAt),
    ("revision", Special::Revision),
    ("opel_level", Special::OpelLevel),
    ("narrative", Special::Narrative),
    ("source", Special::Source),
    ("metric", Special::Metric),
    ("value", Special::Value),
    ("unit", Special::Unit),
];

/// The header, looked up once: where each special column is, and each metric column's catalogue code.
struct Columns {
    names: Vec<String>,
    special: BTreeMap<u8, usize>,
    /// Wide layout: (column, its name as the file gives it, its catalogue code).
    metrics: Vec<(usize, String, String)>,
}

impl Columns {
    fn new(header: &csv::StringRecord, mapping: &Mapping) -> Columns {
        let names: Vec<String> = header.iter().map(|h| h.trim().to_owned()).collect();
        let mut special = BTreeMap::new();
        let mut metrics = Vec::new();
        for (i, h) in names.iter().enumerate() {
            match SPECIAL.iter().find(|(s, _)| h.eq_ignore_ascii_case(s)) {
                // The first of two columns with one name wins, as before.
                Some((_, kind)) => {
                    special.entry(*kind as u8).or_insert(i);
                }
                None => metrics.push((i, h.clone(), mapping.metric_code(h))),
            }
        }
        Columns { names, special, metrics }
    }

    fn get(&self, kind: Special) -> Option<usize> {
        self.special.get(&(kind as u8)).copied()
    }
}

pub fn parse(name: &str, text: &str, mapping: &Mapping, now: Timestamp) -> Result<Vec<Report>, InputError> {
    if let Some(line) = unclosed_quote(text, mapping.delimiter) {
        return Err(InputError::new(format!("{name}:{line}"), "a quoted field is never closed (rule: csv)"));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(mapping.delimiter)
        .from_reader(text.as_bytes());
    let mut lines = Lines { text: text.as_bytes(), byte: 0, line: 1 };
    let mut record = csv::StringRecord::new();
    let columns = read_header(name, mapping, &mut reader, &mut record, &mut lines)?;
    let long = columns.get(Special::Metric).is_some() && columns.get(Special::Value).is_some();
    let width = columns.names.len();

    let mut reports: Vec<Report> = Vec::new();
    let mut index: BTreeMap<ReportKey, usize> = BTreeMap::new();
    while reader.read_record(&mut record).map_err(|e| malformed(name, e))? {
        if blank(&record) {
            continue;
        }
        let row = Row { name, line: lines.of(&record), record: &record, columns: &columns, mapping };
        if record.len() > width {
            return Err(InputError::new(
                format!("{name}:{}", row.line),
                format!("{} fields, but the header has {width} (rule: csv)", record.len()),
            ));
        }
        let key = row.key(now)?;
        let i = match (long, index.get(&key)) {
            (true, Some(i)) => *i,
            _ => {
                reports.push(row.report(&key, now)?);
                index.insert(key, reports.len() - 1);
                reports.len() - 1
            }
        };
        row.add_values(&mut reports[i], long)?;
    }
    Ok(reports)
}

/// A record the `csv` crate could not read, at the line it names.
fn malformed(name: &str, e: csv::Error) -> InputError {
    let line = e.position().map_or(0, |p| p.line());
    InputError::new(format!("{name}:{line}"), format!("{e} (rule: csv)"))
}

/// Whether a record has nothing in it but blanks (such rows are skipped, before the header and after).
fn blank(record: &csv::StringRecord) -> bool {
    record.iter().all(|f| f.trim().is_empty())
}

/// The header (the first record that is not blank), looked up in the mapping; an error for an empty file, or for a
/// header of one column that another separator would have split (a mapping with the wrong `delimiter`).
fn read_header(
    name: &str,
    mapping: &Mapping,
    reader: &mut csv::Reader<&[u8]>,
    record: &mut csv::StringRecord,
    lines: &mut Lines<'_>,
) -> Result<Columns, InputError> {
    let header = loop {
        if !reader.read_record(record).map_err(|e| malformed(name, e))? {
            return Err(InputError::new(name, "is empty (rule: csv)"));
        }
        if !blank(record) {
            break record.clone();
        }
    };
    let header_line = lines.of(&header);
    let columns = Columns::new(&header, mapping);
    if columns.names.len() == 1
        && let Some(sep) = [';', '\t', '|'].into_iter().find(|c| columns.names[0].contains(*c))
    {
        let shown = if sep == '\t' { "tab".to_owned() } else { sep.to_string() };
        return Err(InputError::new(
            format!("{name}:{header_line}"),
            format!(
                "the header is one column, {:?}, split by {shown:?} rather than by {:?} (rule: delimiter); if the \
                 file's fields are separated by {shown:?}, set delimiter = {shown:?} in the mapping",
                columns.names[0], mapping.delimiter as char
            ),
        ));
    }
    Ok(columns)
}

/// What makes rows of the long layout one report: provider, site, period and revision.
type ReportKey = (String, Option<String>, Timestamp, u32);

/// One data row, with what its cells are read against and where it is, for complaints.
struct Row<'a> {
    name: &'a str,
    line: usize,
    record: &'a csv::StringRecord,
    columns: &'a Columns,
    mapping: &'a Mapping,
}

impl Row<'_> {
    fn at(&self, column: &str) -> String {
        format!("{}:{}: column {column:?}", self.name, self.line)
    }

    fn cell(&self, i: Option<usize>) -> Option<&str> {
        i.and_then(|i| self.record.get(i)).map(str::trim).filter(|s| !s.is_empty())
    }

    fn special(&self, kind: Special) -> Option<&str> {
        self.cell(self.columns.get(kind))
    }

    /// The report this row belongs to: its provider (the mapping's when the row names none), site, period (the
    /// current hour when none is given) and revision (0, the store's choice, when none is given).
    fn key(&self, now: Timestamp) -> Result<ReportKey, InputError> {
        let provider = match (self.special(Special::Provider), &self.mapping.provider) {
            (Some(p), _) => self.mapping.provider_code(p),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(InputError::new(
                    self.at("provider"),
                    "is empty and the mapping names no provider (rule: required)",
                ));
            }
        };
        let period = self.time(Special::Period, "period")?.unwrap_or(now.hour_start());
        let revision = self.whole(Special::Revision, "revision")?.unwrap_or(0);
        let site = self.special(Special::Site).map(str::to_owned);
        Ok((provider, site, period, revision))
    }

    /// A new report for `key` with this row's report-wide cells (observed_at, OPEL level, narrative, source) and no
    /// values yet.
    fn report(&self, key: &ReportKey, now: Timestamp) -> Result<Report, InputError> {
        let narrative = self.special(Special::Narrative);
        check_narrative(|| self.at("narrative"), narrative)?;
        Ok(Report {
            provider: key.0.clone(),
            site: key.1.clone(),
            period: Some(key.2),
            revision: key.3,
            observed_at: Some(self.time(Special::ObservedAt, "observed_at")?.unwrap_or(now)),
            opel_level: self.whole(Special::OpelLevel, "opel_level")?,
            narrative: narrative.map(str::to_owned),
            source: self.special(Special::Source).map(str::to_owned),
            ..Default::default()
        })
    }

    /// This row's values into `report`: its metric and value (long layout), or every metric column it fills (wide).
    fn add_values(&self, report: &mut Report, long: bool) -> Result<(), InputError> {
        if long {
            let Some(metric) = self.special(Special::Metric) else {
                return Err(InputError::new(self.at("metric"), "is empty (rule: required)"));
            };
            let Some(text) = self.special(Special::Value) else { return Ok(()) };
            let v = self.value("value", text)?;
            let unit = self.special(Special::Unit).map(str::to_owned);
            report.values.insert(self.mapping.metric_code(metric), MetricInput { value: Some(v), unit });
        } else {
            for (c, h, code) in &self.columns.metrics {
                let Some(text) = self.cell(Some(*c)) else { continue };
                report.values.insert(code.clone(), self.value(h, text)?.into());
            }
        }
        Ok(())
    }

    fn time(&self, kind: Special, column: &str) -> Result<Option<Timestamp>, InputError> {
        match self.special(kind) {
            None => Ok(None),
            Some(t) => parse_time(t, &self.mapping.timezone).map(Some).ok_or_else(|| {
                InputError::new(
                    self.at(column),
                    format!("value {t:?} is not a time like 2026-11-27T14:00:00Z or 2026-11-27 14:00 (rule: time)"),
                )
            }),
        }
    }

    fn whole(&self, kind: Special, column: &str) -> Result<Option<u32>, InputError> {
        match self.special(kind) {
            None => Ok(None),
            Some(t) => t.parse::<u32>().map(Some).map_err(|_| {
                InputError::new(
                    self.at(column),
                    format!("value {t:?} is not a whole number from 0 to 4294967295 (rule: integer)"),
                )
            }),
        }
    }

    fn value(&self, column: &str, text: &str) -> Result<Value, InputError> {
        if let Some(reason) = self.mapping.absent_reason(text) {
            return Ok(Value::Absent(reason));
        }
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Value::Number(n)),
            Ok(_) => {
                Err(InputError::new(self.at(column), format!("value {text:?} is not a finite number (rule: finite)")))
            }
            Err(_) => Err(InputError::new(
                self.at(column),
                format!("value {text:?} is neither a number nor an absent reason (rule: number)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AbsentReason;

    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap()
    }

    fn mapping(toml: &str) -> Mapping {
        Mapping::from_toml("m", toml).unwrap()
    }

    #[test]
    fn rfc4180_quoting() {
        let text = "provider,narrative,a\r\nRJ7,\"x, y\",1\n\"RGT\",\"say \"\"hi\"\"\non two lines\",2\nRJ6,plain,3\n";
        let r = parse("f", text, &Mapping::default(), now()).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].narrative.as_deref(), Some("x, y"));
        assert_eq!((r[1].provider.as_str(), r[1].narrative.as_deref()), ("RGT", Some("say \"hi\"\non two lines")));
        assert_eq!(r[2].values["a"].value, Some(Value::Number(3.0)));
        for (text, line) in [("a\n\"open", 2), ("provider,a\nRJ7,1\nRGT,\"2\nRJ6,3\n", 3)] {
            let err = parse("f", text, &Mapping::default(), now()).unwrap_err().to_string();
            assert_eq!(err, format!("f:{line}: a quoted field is never closed (rule: csv)"));
        }
        // Blank lines, and a header after them, are skipped; the line numbers stay the file's.
        for text in ["\n\nprovider,a\n\nRJ7,x\n", "provider,narrative,a\r\nRJ7,\"two\r\nlines\",1\r\n\r\nRGT,n,x\r\n"] {
            let err = parse("f", text, &Mapping::default(), now()).unwrap_err().to_string();
            assert!(err.starts_with("f:5: column \"a\": value \"x\""), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_mappings_delimiter_splits_fields() {
        // (mapping, text): each reads as RJ7 with a = 1.5 and b = 2.
        let cases = [
            ("", "provider,a,b\nRJ7,1.5,2\n"),
            ("delimiter = \";\"\n", "provider;a;b\nRJ7;1.5;2\n"),
            ("delimiter = \";\"\n", "provider;a;b\nRJ7;\"1.5\";\" 2 \"\n"),
            ("delimiter = \"tab\"\n", "provider\ta\tb\nRJ7\t1.5\t2\n"),
            ("delimiter = \"|\"\n", "provider|a|b\r\nRJ7|1.5|2\r\n"),
        ];
        for (toml, text) in cases {
            let r = parse("f.csv", text, &mapping(toml), now()).unwrap();
            assert_eq!(r.len(), 1, "{text:?}");
            assert_eq!(r[0].provider, "RJ7");
            assert_eq!(r[0].values["a"].value, Some(Value::Number(1.5)), "{text:?}");
            assert_eq!(r[0].values["b"].value, Some(Value::Number(2.0)), "{text:?}");
        }
    }

    #[test]
    fn a_file_split_by_another_separator_says_which_to_set() {
        let cases = [
            ("provider;period;beds.cc_adult.open\nRJ7;2026-11-27 14:00;12\n", "\";\""),
            ("provider\tbeds.cc_adult.open\nRJ7\t12\n", "\"tab\""),
        ];
        for (text, sep) in cases {
            let err = parse("semi.csv", text, &Mapping::default(), now()).unwrap_err().to_string();
            assert!(err.starts_with("semi.csv:1: the header is one column"), "{err}");
            assert!(err.contains(&format!("set delimiter = {sep} in the mapping")), "{err}");
        }
    }

    #[test]
    fn zone_less_times_follow_the_mappings_timezone() {
        let text = "provider,period,observed_at,a\nRJ7,2026-06-01 15:00,2026-06-01 15:20,1\n";
        let cases = [
            ("", "2026-06-01T14:00:00Z", "2026-06-01T14:20:00Z"),
            ("timezone = \"Europe/London\"\n", "2026-06-01T14:00:00Z", "2026-06-01T14:20:00Z"),
            ("timezone = \"UTC\"\n", "2026-06-01T15:00:00Z", "2026-06-01T15:20:00Z"),
        ];
        for (toml, period, observed) in cases {
            let r = parse("t.csv", text, &mapping(toml), now()).unwrap().remove(0);
            assert_eq!(r.period, Timestamp::parse_rfc3339(period), "{toml}");
            assert_eq!(r.observed_at, Timestamp::parse_rfc3339(observed), "{toml}");
        }
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
            (
                "provider,opel_level\nRJ7,three\n",
                "x.csv:2: column \"opel_level\": value \"three\" is not a whole number from 0 to 4294967295 (rule: integer)",
            ),
            ("provider,metric,value\nRJ7,,1\n", "x.csv:2: column \"metric\": is empty (rule: required)"),
            ("provider,a\n,,\nRJ7,inf\n", "x.csv:3: column \"a\": value \"inf\" is not a finite number (rule: finite)"),
            ("provider,a\nRJ7,NaN\n", "x.csv:2: column \"a\": value \"NaN\" is not a finite number"),
        ];
        let long_narrative = format!("provider,narrative\nRJ7,ok\nRGT,{}\n", "x".repeat((1 << 20) + 1));
        let cases: Vec<(&str, &str)> = cases
            .into_iter()
            .chain([(
                long_narrative.as_str(),
                "x.csv:3: column \"narrative\": the narrative has 1048577 characters (1048577 bytes), more than a \
                 report may carry (rule: max_length",
            )])
            .collect();
        for (text, expected) in cases {
            let err = parse("x.csv", text, &m, now()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err:?} should start with {expected:?}");
        }
    }
}
