//! Reading what trusts' systems export into reports: sitrep's own JSON, CSV in two layouts, and FHIR R4
//! MeasureReports (HL7 SANER), with a mapping from a trust's own names and codes to sitrep's.
//!
//! Parsing is all-or-nothing per file: a file either becomes reports, or an [`InputError`] naming where (file and
//! line, or JSON path), the field, the value and the rule. Whether the reports are *valid* (known provider, counts
//! within capacity, ...) is for [`crate::validate()`] at the aggregator, so feeds get the same precise violations
//! as any other client; only the narrative's length is checked here too, against the aggregator's default limit,
//! so that an oversized narrative is named with its line before it meets a message-size limit on the wire. A
//! report whose file gave no revision has revision 0, for the feed agent to assign.
//!
//! Every reader runs in time linear in its input, and no file may be larger than [`MAX_INPUT_BYTES`]. Bytes become
//! text by the mapping's `encoding` (UTF-8 unless it says otherwise; a byte-order mark wins); zone-less times are
//! read in the mapping's `timezone` ([`DEFAULT_TIMEZONE`] unless it says otherwise).
//!
//! # Layout
//! - [`Mapping`]: a feed's mapping file (TOML), with how to read its bytes and times.
//! - [`read_bytes`] / [`read`]: a file's bytes (or text) to reports, in any of the formats below.
//! - [`json`]: sitrep's own JSON, one report or an array of them (what `sitrep push` takes).
//! - [`csv`]: one row per metric, or one column per metric, detected from the header.
//! - [`fhir`]: MeasureReports and Bundles of them; absent counts (data-absent-reason) stay absent.

pub mod csv;
pub mod fhir;
pub mod json;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use encoding_rs::Encoding;
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, de::Error as _};

use crate::{AbsentReason, ConfigError, Report, Timestamp};

/// The largest file a reader takes: 32 MiB (a trust's hourly export is a few kilobytes; a backfill of many hours a
/// few megabytes). Larger files are refused with this limit named, before any parsing.
pub const MAX_INPUT_BYTES: usize = 32 * 1024 * 1024;

/// The time zone zone-less times are read in unless the mapping's `timezone` says otherwise: sitrep's deployments
/// are NHS ones, whose systems export UK local time (GMT in winter, BST in summer).
pub const DEFAULT_TIMEZONE: &str = "Europe/London";

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
/// encoding = "windows-1252"               # how the file's bytes are text (default utf-8)
/// delimiter = ";"                         # CSV field separator (default ",")
/// timezone = "Europe/London"              # zone-less times are local times here (default Europe/London)
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// How the file's bytes are text: a WHATWG encoding label (`utf-8`, `windows-1252`, `latin1`, `utf-16le`, ...).
    #[serde(default = "utf8", deserialize_with = "encoding")]
    pub encoding: &'static Encoding,
    /// The CSV field separator: one ASCII character (`","`, `";"`, `"\t"` or `"tab"`, `"|"`).
    #[serde(default = "comma", deserialize_with = "delimiter")]
    pub delimiter: u8,
    /// The zone zone-less times are read in (an IANA name such as `Europe/London`, or `UTC`).
    #[serde(default = "default_zone", deserialize_with = "zone")]
    pub timezone: TimeZone,
    #[serde(default)]
    pub providers: BTreeMap<String, String>,
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    #[serde(default)]
    pub absent: BTreeMap<String, String>,
    #[serde(default)]
    pub fhir: FhirMapping,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            provider: None,
            source: None,
            encoding: utf8(),
            delimiter: comma(),
            timezone: default_zone(),
            providers: BTreeMap::new(),
            columns: BTreeMap::new(),
            absent: BTreeMap::new(),
            fhir: FhirMapping::default(),
        }
    }
}

fn utf8() -> &'static Encoding {
    encoding_rs::UTF_8
}

fn comma() -> u8 {
    b','
}

fn default_zone() -> TimeZone {
    TimeZone::get(DEFAULT_TIMEZONE).expect("the time zone database is bundled")
}

fn encoding<'de, D: Deserializer<'de>>(d: D) -> Result<&'static Encoding, D::Error> {
    let label = String::deserialize(d)?;
    match Encoding::for_label(label.trim().as_bytes()) {
        // The "replacement" encoding stands for ones that cannot be decoded safely (ISO-2022-KR, ...).
        Some(e) if e != encoding_rs::REPLACEMENT => Ok(e),
        _ => Err(D::Error::custom(format!(
            "{label:?} is not a known text encoding (rule: encoding); use a label like \"utf-8\", \"windows-1252\" or \"iso-8859-1\""
        ))),
    }
}

fn delimiter<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let text = String::deserialize(d)?;
    match text.as_str() {
        "tab" | "\\t" => return Ok(b'\t'),
        _ => {}
    }
    match text.as_bytes() {
        [b] if (b.is_ascii_punctuation() && *b != b'"') || *b == b' ' || *b == b'\t' => Ok(*b),
        _ => Err(D::Error::custom(format!(
            "{text:?} is not a field separator (rule: delimiter); use one ASCII punctuation character such as \",\", \";\" or \"|\", or \"tab\""
        ))),
    }
}

fn zone<'de, D: Deserializer<'de>>(d: D) -> Result<TimeZone, D::Error> {
    let name = String::deserialize(d)?;
    TimeZone::get(name.trim()).map_err(|_| {
        D::Error::custom(format!(
            "{name:?} is not a time zone (rule: timezone); use an IANA name such as \"Europe/London\", or \"UTC\""
        ))
    })
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

/// A time as feeds write it: RFC 3339 with its zone or offset (`2026-11-27T14:00:00Z`, `2026-06-01T15:00:00+01:00`),
/// or a local date and time with no zone, read in `zone` (`2026-11-27 14:00`, `2026-11-27T14:00:00`), or a date
/// (`2026-11-27`, its midnight in `zone`). A local time that a clock change skips or repeats is read as the
/// clocks' "compatible" choice: a skipped time (01:30 on the spring-forward day) is taken after the change, a
/// repeated one (01:30 on the fall-back day) the first time it occurs.
pub fn parse_time(text: &str, zone: &TimeZone) -> Option<Timestamp> {
    let t = text.trim();
    if let Some(ts) = Timestamp::parse_rfc3339(t) {
        return Some(ts);
    }
    // Only the shapes above: a date, then optionally `T` or one space and a time of at least hours and minutes.
    let (date, time) = match t.split_once(['T', 't', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    if date.len() != 10 || time.is_some_and(|tm| tm.len() < 5 || tm.as_bytes()[2] != b':') {
        return None;
    }
    let date: jiff::civil::Date = date.parse().ok()?;
    let civil = match time {
        None => date.to_datetime(jiff::civil::Time::midnight()),
        Some(tm) => date.to_datetime(tm.parse::<jiff::civil::Time>().ok()?),
    };
    let instant = zone.to_ambiguous_timestamp(civil).compatible().ok()?;
    let ts = Timestamp::from_millis(instant.as_millisecond());
    (Timestamp::MIN_TEXT..=Timestamp::MAX_TEXT).contains(&ts).then_some(ts)
}

/// The name of a mapping's time zone, for messages (`Europe/London`, `UTC`).
pub fn zone_name(zone: &TimeZone) -> &str {
    zone.iana_name().unwrap_or("the mapping's time zone")
}

/// What a file held: its reports, and notes for the operator (parts of the file that had nowhere to go).
#[derive(Clone, Debug, PartialEq)]
pub struct Read {
    pub reports: Vec<Report>,
    pub notes: Vec<String>,
}

/// Reads a file's bytes: refuses one larger than [`MAX_INPUT_BYTES`], makes them text by the mapping's
/// `encoding` (a byte-order mark wins), then reads the text as [`read`] does.
pub fn read_bytes(
    name: &str,
    bytes: &[u8],
    format: Option<Format>,
    mapping: &Mapping,
    now: Timestamp,
) -> Result<Read, InputError> {
    let text = decode(name, bytes, mapping.encoding)?;
    let format = format.unwrap_or_else(|| Format::detect(name, &text));
    read(name, &text, format, mapping, now)
}

/// A file's bytes as text in `encoding` (or the encoding its byte-order mark names), refusing what is too large
/// or is not text in that encoding, naming the line and the byte.
pub fn decode<'a>(name: &str, bytes: &'a [u8], encoding: &'static Encoding) -> Result<Cow<'a, str>, InputError> {
    check_size(name, bytes.len())?;
    let (encoding, bom) = Encoding::for_bom(bytes).unwrap_or((encoding, 0));
    let body = &bytes[bom..];
    if encoding == encoding_rs::UTF_8 {
        return std::str::from_utf8(body).map(Cow::Borrowed).map_err(|e| {
            let at = e.valid_up_to();
            let line = 1 + body[..at].iter().filter(|&&b| b == b'\n').count();
            let column = 1 + at - body[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            InputError::new(
                format!("{name}:{line}"),
                format!(
                    "byte 0x{:02X} at column {column} is not UTF-8 text (rule: utf8); if the file is in another \
                     encoding, say which in the mapping, e.g. encoding = \"windows-1252\"",
                    body[at]
                ),
            )
        });
    }
    match encoding.decode_without_bom_handling_and_without_replacement(body) {
        Some(text) => Ok(text),
        None => {
            // Where: the first character the decoder could not make, by decoding again with replacements.
            let (lossy, _) = encoding.decode_without_bom_handling(body);
            let at = lossy.find('\u{FFFD}').unwrap_or(0);
            let line = 1 + lossy[..at].matches('\n').count();
            Err(InputError::new(
                format!("{name}:{line}"),
                format!("is not valid {} text (rule: encoding)", encoding.name()),
            ))
        }
    }
}

/// Refuses a file of `len` bytes if it is larger than [`MAX_INPUT_BYTES`], naming the cap.
pub fn check_size(name: &str, len: usize) -> Result<(), InputError> {
    if len > MAX_INPUT_BYTES {
        return Err(InputError::new(
            name,
            format!(
                "{len} bytes is larger than the {MAX_INPUT_BYTES} bytes ({} MiB) a file may hold (rule: max_size); \
                 split the export into smaller files",
                MAX_INPUT_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

/// The largest narrative readers pass on, in bytes: more than a report may carry at the aggregator's default
/// `limits.max_message_bytes` (1 MiB). A narrative that fits a message but is longer than the aggregator's
/// `limits.max_narrative_chars` (configurable, 2000 by default) is left to the aggregator, which refuses it naming
/// the field and its own limit: a reader does not know how the aggregator is configured.
const MAX_NARRATIVE_BYTES: usize = 1 << 20;

/// Checks that a narrative could travel at all; `at` says where it is in the file.
pub(crate) fn check_narrative(at: impl FnOnce() -> String, narrative: Option<&str>) -> Result<(), InputError> {
    if let Some(n) = narrative
        && n.len() > MAX_NARRATIVE_BYTES
    {
        return Err(InputError::new(
            at(),
            format!(
                "the narrative has {} characters ({} bytes), more than a report may carry (rule: max_length; the \
                 aggregator's limits.max_narrative_chars is 2000 characters by default, and limits.max_message_bytes \
                 1 MiB)",
                n.chars().count(),
                n.len()
            ),
        ));
    }
    Ok(())
}

/// Reads `text` (the content of the file `name`) in `format`. `now` fills in what a file may leave out: the
/// period (the current hour) and the observation time.
pub fn read(name: &str, text: &str, format: Format, mapping: &Mapping, now: Timestamp) -> Result<Read, InputError> {
    check_size(name, text.len())?;
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

    fn at(text: &str) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(text)
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(Format::detect("x.CSV", "{"), Format::Csv);
        assert_eq!(Format::detect("x.json", r#"{"resourceType":"Bundle"}"#), Format::Fhir);
        assert_eq!(Format::detect("x.json", r#"{"provider":"RJ7"}"#), Format::Json);
        assert_eq!(Format::detect("x", "provider,period"), Format::Csv);
    }

    #[test]
    fn zone_less_times_are_read_in_the_mappings_zone() {
        let london = Mapping::default().timezone;
        let utc = TimeZone::UTC;
        let paris = TimeZone::get("Europe/Paris").unwrap();
        // (text, zone, instant): a zone or offset in the text always wins; otherwise the zone says.
        let cases: [(&str, &TimeZone, Option<&str>); 17] = [
            ("2026-11-27T14:00:00Z", &paris, Some("2026-11-27T14:00:00Z")),
            ("2026-06-01T15:00:00+01:00", &utc, Some("2026-06-01T14:00:00Z")),
            // Winter: London is on GMT.
            ("2026-11-27 14:00", &london, Some("2026-11-27T14:00:00Z")),
            ("2026-11-27T14:00:00", &london, Some("2026-11-27T14:00:00Z")),
            (" 2026-11-27T14:00 ", &london, Some("2026-11-27T14:00:00Z")),
            // Summer: BST, an hour ahead of UTC (the bug: read as UTC, an hour off).
            ("2026-06-01 15:00", &london, Some("2026-06-01T14:00:00Z")),
            ("2026-06-01T15:00:00.250", &london, Some("2026-06-01T14:00:00.250Z")),
            ("2026-06-01 15:00", &utc, Some("2026-06-01T15:00:00Z")),
            ("2026-06-01 15:00", &paris, Some("2026-06-01T13:00:00Z")),
            ("2026-06-01", &london, Some("2026-05-31T23:00:00Z")),
            ("2026-11-27", &utc, Some("2026-11-27T00:00:00Z")),
            // 01:30 on 29 March 2026 does not exist in London: read as 02:30 BST, after the change.
            ("2026-03-29 01:30", &london, Some("2026-03-29T01:30:00Z")),
            // 01:30 on 25 October 2026 happens twice: the first (still BST).
            ("2026-10-25 01:30", &london, Some("2026-10-25T00:30:00Z")),
            ("2pm", &london, None),
            ("2026-11-27 2pm", &london, None),
            ("2026-13-01 10:00", &london, None),
            ("27/11/2026 14:00", &london, None),
        ];
        for (text, zone, want) in cases {
            assert_eq!(parse_time(text, zone), want.and_then(at), "{text} in {}", zone_name(zone));
        }
    }

    #[test]
    fn mapping_options_are_read_and_bad_ones_named() {
        let m =
            Mapping::from_toml("m", "encoding = \"windows-1252\"\ndelimiter = \";\"\ntimezone = \"UTC\"\n").unwrap();
        assert_eq!((m.encoding, m.delimiter, m.timezone.clone()), (encoding_rs::WINDOWS_1252, b';', TimeZone::UTC));
        let d = Mapping::default();
        assert_eq!((d.encoding, d.delimiter, zone_name(&d.timezone)), (encoding_rs::UTF_8, b',', "Europe/London"));
        assert_eq!(Mapping::from_toml("m", "encoding = \"latin1\"\n").unwrap().encoding, encoding_rs::WINDOWS_1252);
        assert_eq!(Mapping::from_toml("m", "delimiter = \"tab\"\n").unwrap().delimiter, b'\t');
        assert_eq!(Mapping::from_toml("m", "delimiter = \"\\t\"\n").unwrap().delimiter, b'\t');
        let cases = [
            ("encoding = \"ebcdic\"\n", "encoding", "\"ebcdic\" is not a known text encoding (rule: encoding)"),
            ("encoding = \"iso-2022-kr\"\n", "encoding", "is not a known text encoding"),
            ("delimiter = \";;\"\n", "delimiter", "\";;\" is not a field separator (rule: delimiter)"),
            ("delimiter = \"a\"\n", "delimiter", "is not a field separator"),
            ("delimiter = \"\\\"\"\n", "delimiter", "is not a field separator"),
            ("timezone = \"Europe/Londres\"\n", "timezone", "\"Europe/Londres\" is not a time zone (rule: timezone)"),
            ("timezone = 1\n", "timezone", "invalid type: integer `1`, expected a string"),
        ];
        for (text, key, expected) in cases {
            let err = Mapping::from_toml("trust.toml", text).unwrap_err().to_string();
            assert!(err.starts_with("trust.toml:") && err.contains(key) && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn bytes_become_text_by_the_encoding_or_say_where_they_are_not() {
        let utf8 = encoding_rs::UTF_8;
        let cp1252 = encoding_rs::WINDOWS_1252;
        // "£" is 0xA3 in windows-1252 and C2 A3 in UTF-8.
        assert_eq!(decode("f", b"a,b\n\xA3,2\n", cp1252).unwrap(), "a,b\n£,2\n");
        assert_eq!(decode("f", "a,b\n£,2\n".as_bytes(), utf8).unwrap(), "a,b\n£,2\n");
        // A byte-order mark wins over the mapping.
        assert_eq!(decode("f", b"\xEF\xBB\xBFa\xC2\xA3", cp1252).unwrap(), "a£");
        assert_eq!(decode("f", b"\xFF\xFEa\x00", utf8).unwrap(), "a");
        let err = decode("beds.csv", b"provider,note\nRJ7,caf\xE9\n", utf8).unwrap_err().to_string();
        assert!(
            err.starts_with("beds.csv:2: byte 0xE9 at column 8 is not UTF-8 text (rule: utf8)")
                && err.contains("encoding = \"windows-1252\""),
            "{err}"
        );
        let err = decode("u.csv", b"a\nb\nc\x00\xD8", encoding_rs::UTF_16BE).unwrap_err().to_string();
        assert!(err.starts_with("u.csv:") && err.contains("is not valid UTF-16BE text (rule: encoding)"), "{err}");
    }

    #[test]
    fn files_over_the_size_cap_are_refused_naming_it() {
        let big = vec![b' '; MAX_INPUT_BYTES + 1];
        let err = read_bytes("big.csv", &big, None, &Mapping::default(), Timestamp::now()).unwrap_err().to_string();
        assert!(err.starts_with("big.csv: 33554433 bytes is larger than the 33554432 bytes (32 MiB)"), "{err}");
        assert!(err.contains("(rule: max_size)"), "{err}");
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
