//! How fast the feed readers read large files, to show they run in time linear in their input: prints MB/s for
//! CSV files of 1, 5 and 10 MB in both layouts (wide: one column per metric; long: one row per metric), and for
//! sitrep's JSON. Run with `cargo run --release -p sitrep-core --example read_bench` (docs/PERFORMANCE.md).
//!
//! A rate that stays level as the size grows is linear time; a rate that falls as the size grows is not.

use std::fmt::Write;
use std::time::Instant;

use sitrep_core::Timestamp;
use sitrep_core::input::{Format, Mapping, read_bytes};

/// A wide CSV of about `bytes`: `columns` metric columns, as many rows as fit.
fn wide(bytes: usize, columns: usize) -> String {
    let mut s = String::from("provider,period");
    for c in 0..columns {
        write!(s, ",metric.{c}").unwrap();
    }
    s.push('\n');
    let mut row = 0usize;
    while s.len() < bytes {
        write!(s, "P{},2026-11-27T{:02}:00:00Z", row % 500, row % 24).unwrap();
        for c in 0..columns {
            write!(s, ",{}", (row + c) % 97).unwrap();
        }
        s.push('\n');
        row += 1;
    }
    s
}

/// A long CSV of about `bytes`: one row per metric, 20 metrics a report.
fn long(bytes: usize) -> String {
    let mut s = String::from("provider,period,metric,value\n");
    let mut row = 0usize;
    while s.len() < bytes {
        let report = row / 20;
        writeln!(
            s,
            "P{},2026-11-27T{:02}:00:00Z,metric.{},{}",
            report % 5000,
            (report / 5000) % 24,
            row % 20,
            row % 97
        )
        .unwrap();
        row += 1;
    }
    s
}

/// A JSON array of reports of about `bytes`, 20 values each.
fn json(bytes: usize) -> String {
    let mut s = String::from("[");
    let mut report = 0usize;
    while s.len() < bytes {
        if report > 0 {
            s.push(',');
        }
        write!(s, r#"{{"provider":"P{}","period":"2026-11-27 {:02}:00","values":{{"#, report % 5000, report % 24)
            .unwrap();
        for m in 0..20 {
            write!(s, r#"{}"metric.{m}":{}"#, if m > 0 { "," } else { "" }, (report + m) % 97).unwrap();
        }
        s.push_str("}}");
        report += 1;
    }
    s.push(']');
    s
}

fn measure(what: &str, text: &str, format: Format) {
    let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
    let mapping = Mapping::default();
    let start = Instant::now();
    // From bytes, as `sitrep feed` and `sitrep push` read: the UTF-8 check is part of the cost.
    let read = read_bytes("bench", text.as_bytes(), Some(format), &mapping, now).expect("the generated file reads");
    let secs = start.elapsed().as_secs_f64();
    let mb = text.len() as f64 / 1e6;
    println!("{what:<28} {mb:>6.1} MB  {:>7} reports  {secs:>7.3} s  {:>7.1} MB/s", read.reports.len(), mb / secs);
}

fn main() {
    for mb in [1, 5, 10] {
        let bytes = mb * 1_000_000;
        measure("csv wide, 50 columns", &wide(bytes, 50), Format::Csv);
        measure("csv wide, 20000 columns", &wide(bytes, 20_000), Format::Csv);
        measure("csv long", &long(bytes), Format::Csv);
        measure("json, 20 values a report", &json(bytes), Format::Json);
    }
}
