//! The fuzz targets, as plain functions of their input bytes, so that libFuzzer (`fuzz_targets/`, nightly, via
//! `cargo fuzz`) and the stable driver (`src/bin/smoke.rs`) run exactly the same code.
//!
//! Each target feeds its bytes to one of sitrep's readers of untrusted or hand-written text, and checks more than
//! "does not panic" where there is a property to check:
//! - [`csv`], [`json`], [`fhir`]: the feed readers (`sitrep_core::input`), through `read_bytes` as `sitrep feed`
//!   and `sitrep push` call them. What they read has a period on the hour boundary sitrep expects or none, and
//!   narratives within the limit; JSON the agent writes reads back to the same report.
//! - [`validate`]: `sitrep_core::validate` on reports built from the bytes (any numbers, including NaN and
//!   infinities; any times; known and unknown codes). What passes is hour-aligned and has only finite numbers.
//! - [`directory`]: the directory TOML and the rules made from it, then staleness arithmetic at extreme instants.
//! - [`server_config`]: the aggregator's configuration TOML, then the rules it loads.
//! - [`mapping`]: a feed's mapping TOML, then a CSV read with it.
//!
//! # Layout
//! - this file: the targets and the [`Input`] splitter they share.
//! - `fuzz_targets/*.rs`: one libFuzzer entry point each.
//! - `src/bin/smoke.rs`: the stable driver.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use sitrep_core::input::{self, Format, Mapping};
use sitrep_core::rules::Staleness;
use sitrep_core::{Catalogue, Directory, Limits, MetricInput, Report, Rules, Timestamp, Value};

/// The targets by name, for the stable driver.
pub const TARGETS: [(&str, fn(&[u8])); 7] = [
    ("csv", csv),
    ("json", json),
    ("fhir", fhir),
    ("validate", validate),
    ("directory", directory),
    ("server_config", server_config),
    ("mapping", mapping),
];

/// A fixed "now", so that a failure reproduces from its input alone.
fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").expect("a time")
}

fn catalogue() -> &'static Catalogue {
    static C: OnceLock<Catalogue> = OnceLock::new();
    C.get_or_init(sitrep_core::profile::nhs_england_catalogue)
}

fn demo_directory() -> &'static Directory {
    static D: OnceLock<Directory> = OnceLock::new();
    D.get_or_init(sitrep_core::profile::demo_directory)
}

/// Reading the fuzzer's bytes as a sequence of choices, then a remainder.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        for b in &mut out {
            *b = self.byte();
        }
        out
    }

    /// Up to `max` bytes as (lossy) text.
    fn text(&mut self, max: usize) -> String {
        let n = usize::from(self.byte()) % (max + 1);
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        String::from_utf8_lossy(head).into_owned()
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// A mapping chosen by the first byte: the default, or `;`, tab, windows-1252, UTC, Paris.
fn mapping_from(byte: u8) -> Mapping {
    let toml = [
        "",
        "delimiter = \";\"\n",
        "delimiter = \"tab\"\ntimezone = \"UTC\"\n",
        "encoding = \"windows-1252\"\n",
        "timezone = \"Europe/Paris\"\nprovider = \"RJ7\"\n[absent]\n\"N/A\" = \"not_applicable\"\n",
        "encoding = \"utf-16le\"\ndelimiter = \"|\"\n",
    ][usize::from(byte) % 6];
    Mapping::from_toml("fuzz mapping", toml).expect("the fixed mappings parse")
}

/// What every reader's output must satisfy.
fn check_read(read: &input::Read) {
    assert!(!read.reports.is_empty(), "a read that succeeds has reports");
    for r in &read.reports {
        if let Some(n) = &r.narrative {
            // More than a message may carry is refused by the reader; the aggregator checks its own limit.
            assert!(n.len() <= 1 << 20, "a narrative larger than a message was read");
        }
        for input in r.values.values() {
            if let Some(Value::Number(n)) = input.value {
                assert!(n.is_finite(), "a reader let {n} through");
            }
        }
    }
}

fn read_as(format: Format, data: &[u8]) {
    let Some((&choice, bytes)) = data.split_first() else { return };
    let mapping = mapping_from(choice);
    if let Ok(read) = input::read_bytes("fuzz", bytes, Some(format), &mapping, now()) {
        check_read(&read);
    }
}

/// The CSV reader, under one of several mappings (delimiter, encoding, time zone).
pub fn csv(data: &[u8]) {
    read_as(Format::Csv, data);
}

/// sitrep's JSON reader; what it reads, written as the feed agent spools it, reads back the same.
pub fn json(data: &[u8]) {
    let Some((&choice, bytes)) = data.split_first() else { return };
    let mapping = mapping_from(choice);
    let Ok(read) = input::read_bytes("fuzz", bytes, Some(Format::Json), &mapping, now()) else { return };
    check_read(&read);
    for r in &read.reports {
        let written = input::json::write(r);
        let back = input::json::parse("spool", &written, &Mapping::default(), now())
            .unwrap_or_else(|e| panic!("the agent's own JSON does not read back: {e}\n{written}"));
        assert_eq!(back.as_slice(), std::slice::from_ref(r), "round trip through {written}");
    }
}

/// FHIR MeasureReports and Bundles.
pub fn fhir(data: &[u8]) {
    read_as(Format::Fhir, data);
}

/// Validation of reports built from the bytes; the first byte chooses whether they are read as sitrep JSON (the
/// way real reports arrive) or generated field by field (to reach numbers and times JSON cannot carry).
pub fn validate(data: &[u8]) {
    let mut input = Input(data);
    let reports = if input.byte() % 2 == 0 {
        match input::json::parse("fuzz", &String::from_utf8_lossy(input.rest()), &Mapping::default(), now()) {
            Ok(reports) => reports,
            Err(_) => return,
        }
    } else {
        vec![generated_report(&mut input)]
    };
    let limits = Limits::default();
    for report in &reports {
        if let Ok(valid) = sitrep_core::validate(report, demo_directory(), catalogue(), &limits, now()) {
            assert!(valid.period().is_hour_aligned(), "a valid report's period is an hour");
            assert!(valid.values().len() <= limits.max_values + 1, "values within the limit (and the OPEL level)");
            for v in valid.values().values() {
                if let Value::Number(n) = v {
                    assert!(n.is_finite(), "a valid report carries {n}");
                }
            }
        }
    }
}

fn generated_report(input: &mut Input) -> Report {
    let providers = ["RJ7", "RGT", "RAL", "", "rj7", "XXX", "RJ7 "];
    let codes: Vec<&str> = catalogue().metrics().map(|m| m.code.as_str()).collect();
    let numbers = [0.0, 1.0, -1.0, 28.0, 1e20, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE];
    let instant = |input: &mut Input| match input.byte() % 4 {
        0 => None,
        1 => Some(now().hour_start().add_hours(-i64::from(input.byte()))),
        2 => Some(Timestamp::from_millis(i64::from_le_bytes(input.bytes()))),
        _ => Some(now().add_millis(i64::from(i32::from_le_bytes(input.bytes())))),
    };
    let mut report = Report {
        provider: input.pick(&providers).to_owned(),
        site: (input.byte() % 3 == 0).then(|| input.text(8)),
        period: instant(input),
        revision: u32::from_le_bytes(input.bytes()),
        observed_at: instant(input),
        opel_level: (input.byte() % 2 == 0).then(|| u32::from(input.byte())),
        narrative: (input.byte() % 3 == 0).then(|| input.text(64)),
        source: (input.byte() % 3 == 0).then(|| input.text(32)),
        ..Default::default()
    };
    for _ in 0..input.byte() % 12 {
        let code = if input.byte() % 5 == 0 { input.text(12) } else { input.pick(&codes).to_owned() };
        let value = match input.byte() % 4 {
            0 => None,
            1 => Some(Value::Absent(input.pick(&[
                sitrep_core::AbsentReason::NotApplicable,
                sitrep_core::AbsentReason::NotAvailable,
                sitrep_core::AbsentReason::Suppressed,
            ]))),
            2 => Some(Value::Number(input.pick(&numbers))),
            _ => Some(Value::Number(f64::from_le_bytes(input.bytes()))),
        };
        let unit = (input.byte() % 4 == 0).then(|| input.text(8));
        report.values.insert(code, MetricInput { value, unit });
    }
    report
}

/// The directory loader and the rules made from it; then staleness arithmetic at the extremes of time.
pub fn directory(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(directory) = Directory::from_toml("fuzz directory", &text) else { return };
    let codes: Vec<String> = directory.providers().map(|p| p.code.clone()).collect();
    let Ok(rules) = Rules::new(Arc::new(catalogue().clone()), Arc::new(directory), None, Staleness::default()) else {
        return;
    };
    for code in codes.iter().map(String::as_str).chain(["not in the directory"]) {
        let after = rules.stale_after(code);
        assert!(after <= sitrep_core::rules::MAX_CADENCE + sitrep_core::rules::MAX_GRACE, "bounded at load");
        for t in [Timestamp::from_millis(i64::MIN), Timestamp::from_millis(0), now(), Timestamp::from_millis(i64::MAX)]
        {
            let _ = sitrep_core::derive::stale_deadline(&rules, code, t);
            let _ = sitrep_core::derive::is_stale(&rules, code, t, now());
        }
    }
}

/// The aggregator's configuration loader (no files are read: paths in it point nowhere), then its rules.
pub fn server_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = sitrep_server::Config::from_toml(Path::new("/nonexistent/fuzz/sitrep.toml"), &text) else {
        return;
    };
    let st = &config.staleness;
    let (cadence, grace, check) = (st.cadence.get(), st.grace.get(), st.check_interval.get());
    assert!(cadence <= sitrep_core::rules::MAX_CADENCE && grace <= sitrep_core::rules::MAX_GRACE);
    assert!(!check.is_zero(), "a zero check interval would spin");
    let _ = config.load_rules();
}

/// A feed's mapping (the bytes up to the first 0), then a CSV (the rest) read with it.
pub fn mapping(data: &[u8]) {
    let (toml, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"provider,period,beds.cc_adult.open\nRJ7,2026-11-27 14:00,12\n"[..]),
    };
    let Ok(mapping) = Mapping::from_toml("fuzz mapping", &String::from_utf8_lossy(toml)) else { return };
    if let Ok(read) = input::read_bytes("fuzz.csv", rest, None, &mapping, now()) {
        check_read(&read);
    }
}
