//! Storage encodings: how live states, events and history entries are written to Redis. These are storage types,
//! separate from the API's protobuf and JSON, and made to be small and quick to read and write.
//!
//! Each is a protobuf message (prost, defined here, not in the API's `.proto` files) in which metrics are named by
//! a number from the deployment's dictionary ([`Codes`], kept in Redis and only ever added to), values are packed
//! (whole numbers as zig-zag varints, others as doubles, absent ones as reasons), and times are small deltas: a
//! period in hours, an observation time in milliseconds after its period, a receipt time after the observation. A
//! report of two dozen counts is about a hundred bytes in history.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use prost::Message;
use sitrep_core::opel::{Assessment, Scored};
use sitrep_core::state::{Derived, Figure, Opel};
use sitrep_core::{
    AbsentReason, Alert, AlertKind, Code, Cursor, Event, EventKind, HistoryRecord, MetricChange, ProviderLive, Rag,
    Reading, Rules, Sender, Severity, SiteLive, Timestamp, TraceContext, Value,
};

use sitrep_core::aid::{AidBook, Offer, Request};

use crate::StoreError;

/// The deployment's dictionary of metric codes (see `codes.lua`).
#[derive(Debug, Default)]
pub struct Codes {
    /// By [`Code::id`]: the hot path's lookup, no hashing of text.
    by_code: HashMap<usize, u32>,
    /// By text, for the codes alerts and OPEL explanations name.
    by_text: HashMap<String, u32>,
    by_id: HashMap<u32, Code>,
}

impl Codes {
    pub fn new<S: AsRef<str>>(pairs: impl IntoIterator<Item = (S, u32)>) -> Self {
        let mut codes = Codes::default();
        for (text, id) in pairs {
            let code = Code::new(text.as_ref());
            codes.by_id.insert(id, code);
            codes.by_code.insert(code.id(), id);
            codes.by_text.insert(code.to_string(), id);
        }
        codes
    }

    pub fn contains(&self, code: &str) -> bool {
        self.by_text.contains_key(code)
    }

    fn id(&self, code: Code) -> Result<u32, StoreError> {
        self.by_code.get(&code.id()).copied().ok_or_else(|| no_number(&code))
    }

    fn id_of_text(&self, code: &str) -> Result<u32, StoreError> {
        self.by_text.get(code).copied().ok_or_else(|| no_number(code))
    }

    fn code(&self, id: u32) -> Result<Code, StoreError> {
        self.by_id.get(&id).copied().ok_or(StoreError::UnknownCode(id))
    }
}

fn no_number(code: &str) -> StoreError {
    StoreError::Internal(format!("metric {code:?} has no number"))
}

#[derive(Clone, PartialEq, Message)]
struct Values {
    #[prost(uint32, repeated, tag = "1")]
    int_ids: Vec<u32>,
    #[prost(sint64, repeated, tag = "2")]
    ints: Vec<i64>,
    #[prost(uint32, repeated, tag = "3")]
    num_ids: Vec<u32>,
    #[prost(double, repeated, tag = "4")]
    nums: Vec<f64>,
    #[prost(uint32, repeated, tag = "5")]
    absent_ids: Vec<u32>,
    #[prost(uint32, repeated, tag = "6")]
    absent: Vec<u32>,
}

/// Numbers that are whole and small enough to be exact as integers are stored as varints.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

impl Values {
    fn encode(codes: &Codes, values: impl IntoIterator<Item = (Code, Value)>) -> Result<Self, StoreError> {
        let values = values.into_iter();
        let (lo, hi) = values.size_hint();
        // Most values are whole numbers: room for all of them there saves growing the vectors one by one.
        let mut out = Values {
            int_ids: Vec::with_capacity(hi.unwrap_or(lo)),
            ints: Vec::with_capacity(hi.unwrap_or(lo)),
            ..Default::default()
        };
        for (code, value) in values {
            let id = codes.id(code)?;
            match value {
                Value::Number(n) if n.fract() == 0.0 && n.abs() < MAX_EXACT => {
                    out.int_ids.push(id);
                    out.ints.push(n as i64);
                }
                Value::Number(n) => {
                    out.num_ids.push(id);
                    out.nums.push(n);
                }
                Value::Absent(r) => {
                    out.absent_ids.push(id);
                    out.absent.push(absent_code(r));
                }
            }
        }
        Ok(out)
    }

    fn decode(&self, codes: &Codes) -> Result<Vec<(Code, Value)>, StoreError> {
        let mut out = Vec::with_capacity(self.int_ids.len() + self.num_ids.len() + self.absent_ids.len());
        for (id, n) in self.int_ids.iter().zip(&self.ints) {
            out.push((codes.code(*id)?, Value::Number(*n as f64)));
        }
        for (id, n) in self.num_ids.iter().zip(&self.nums) {
            out.push((codes.code(*id)?, Value::Number(*n)));
        }
        for (id, r) in self.absent_ids.iter().zip(&self.absent) {
            out.push((codes.code(*id)?, Value::Absent(absent_from(*r))));
        }
        Ok(out)
    }

    fn decode_map(&self, codes: &Codes) -> Result<BTreeMap<Code, Value>, StoreError> {
        Ok(self.decode(codes)?.into_iter().collect())
    }
}

fn absent_code(r: AbsentReason) -> u32 {
    match r {
        AbsentReason::Unspecified => 0,
        AbsentReason::NotApplicable => 1,
        AbsentReason::NotAvailable => 2,
        AbsentReason::Suppressed => 3,
    }
}

fn absent_from(code: u32) -> AbsentReason {
    match code {
        1 => AbsentReason::NotApplicable,
        2 => AbsentReason::NotAvailable,
        3 => AbsentReason::Suppressed,
        _ => AbsentReason::Unspecified,
    }
}

fn rag_code(r: Option<Rag>) -> u32 {
    match r {
        None => 0,
        Some(Rag::Green) => 1,
        Some(Rag::Amber) => 2,
        Some(Rag::Red) => 3,
    }
}

fn rag_from(code: u32) -> Option<Rag> {
    match code {
        1 => Some(Rag::Green),
        2 => Some(Rag::Amber),
        3 => Some(Rag::Red),
        _ => None,
    }
}

/// Figures: ids with a value and rating, and ids that no longer have a value.
#[derive(Clone, PartialEq, Message)]
struct Figures {
    #[prost(uint32, repeated, tag = "1")]
    ids: Vec<u32>,
    #[prost(double, repeated, tag = "2")]
    values: Vec<f64>,
    #[prost(uint32, repeated, tag = "3")]
    rags: Vec<u32>,
    #[prost(uint32, repeated, tag = "4")]
    gone: Vec<u32>,
}

impl Figures {
    fn encode(codes: &Codes, figures: &[Figure]) -> Result<Self, StoreError> {
        let n = figures.len();
        let mut out = Figures {
            ids: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            rags: Vec::with_capacity(n),
            gone: Vec::new(),
        };
        for f in figures {
            let id = codes.id(f.metric)?;
            match f.value {
                Some(v) => {
                    out.ids.push(id);
                    out.values.push(v);
                    out.rags.push(rag_code(f.rag));
                }
                None => out.gone.push(id),
            }
        }
        Ok(out)
    }

    fn decode(&self, codes: &Codes) -> Result<Vec<Figure>, StoreError> {
        let mut out = Vec::with_capacity(self.ids.len() + self.gone.len());
        for ((id, v), r) in self.ids.iter().zip(&self.values).zip(&self.rags) {
            out.push(Figure { metric: codes.code(*id)?, value: Some(*v), rag: rag_from(*r) });
        }
        for id in &self.gone {
            out.push(Figure { metric: codes.code(*id)?, value: None, rag: None });
        }
        out.sort_by_key(|f| f.metric);
        Ok(out)
    }
}

#[derive(Clone, PartialEq, Message)]
struct ScoredBlob {
    #[prost(string, tag = "1")]
    parameter: String,
    #[prost(string, tag = "2")]
    label: String,
    #[prost(uint32, tag = "3")]
    metric: u32,
    #[prost(double, tag = "4")]
    value: f64,
    #[prost(uint32, tag = "5")]
    points: u32,
    #[prost(uint32, tag = "6")]
    max_points: u32,
    #[prost(double, tag = "7")]
    weight: f64,
}

#[derive(Clone, PartialEq, Message)]
struct AssessmentBlob {
    #[prost(uint32, tag = "1")]
    level: u32,
    #[prost(double, tag = "2")]
    score: f64,
    #[prost(double, tag = "3")]
    max_score: f64,
    #[prost(double, tag = "4")]
    percent: f64,
    #[prost(message, repeated, tag = "5")]
    scored: Vec<ScoredBlob>,
    #[prost(string, repeated, tag = "6")]
    missing: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct OpelBlob {
    #[prost(uint32, optional, tag = "1")]
    declared: Option<u32>,
    #[prost(message, optional, tag = "2")]
    computed: Option<AssessmentBlob>,
}

impl OpelBlob {
    fn decode(self, codes: &Codes) -> Result<Opel, StoreError> {
        let computed = match self.computed {
            None => None,
            Some(a) => Some(Assessment {
                level: a.level,
                score: a.score,
                max_score: a.max_score,
                percent: a.percent,
                scored: a
                    .scored
                    .into_iter()
                    .map(|s| {
                        Ok(Scored {
                            parameter: s.parameter.into(),
                            label: s.label.into(),
                            metric: codes.code(s.metric)?.as_str().into(),
                            value: s.value,
                            points: s.points,
                            max_points: s.max_points,
                            weight: s.weight,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?,
                missing: a.missing.into_iter().map(Into::into).collect(),
            }),
        };
        Ok(Opel { declared: self.declared, computed })
    }
}

#[derive(Clone, PartialEq, Message)]
struct AlertBlob {
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(uint32, tag = "2")]
    severity: u32,
    /// 0: no metric.
    #[prost(uint32, tag = "3")]
    metric: u32,
    #[prost(double, optional, tag = "4")]
    value: Option<f64>,
    #[prost(string, tag = "5")]
    message: String,
    #[prost(sint64, tag = "6")]
    raised_at: i64,
}

const ALERT_KINDS: [AlertKind; 6] = [
    AlertKind::Threshold,
    AlertKind::Escalation,
    AlertKind::Stale,
    AlertKind::Jump,
    AlertKind::OpelMismatch,
    AlertKind::Overcommitted,
];

impl AlertBlob {
    fn decode(self, codes: &Codes, provider: &str) -> Result<Alert, StoreError> {
        let kind = *ALERT_KINDS.get(self.kind as usize).ok_or_else(|| bad("alert kind"))?;
        let severity = if self.severity == 1 { Severity::Critical } else { Severity::Warning };
        let metric = match self.metric {
            0 => None,
            id => Some(codes.code(id)?.as_str()),
        };
        Ok(Alert::new(
            kind,
            severity,
            provider,
            metric,
            self.value,
            self.message,
            Timestamp::from_millis(self.raised_at),
        ))
    }
}

fn alerts_decode(codes: &Codes, provider: &str, blobs: Vec<AlertBlob>) -> Result<Vec<Alert>, StoreError> {
    blobs.into_iter().map(|a| a.decode(codes, provider)).collect()
}

/// The blobs above are written straight from the domain types with [`crate::write`], borrowing their texts: building
/// a blob first copied every text (alert messages, OPEL explanations, narratives) and allocated a vector per list,
/// only to write them out. What is written is what the blob types read (a test checks the bytes are prost's own).
use crate::write;

fn write_alert(codes: &Codes, a: &Alert, b: &mut Vec<u8>) -> Result<(), StoreError> {
    write::uint32(1, ALERT_KINDS.iter().position(|k| *k == a.kind).expect("every kind listed") as u32, b);
    write::uint32(2, u32::from(a.severity == Severity::Critical), b);
    write::uint32(3, a.metric.as_deref().map(|m| codes.id_of_text(m)).transpose()?.unwrap_or(0), b);
    write::optional_double(4, a.value, b);
    write::text(5, &a.message, b);
    write::sint64(6, a.raised_at.millis(), b);
    Ok(())
}

fn write_alerts(tag: u32, codes: &Codes, alerts: &[Alert], b: &mut Vec<u8>) -> Result<(), StoreError> {
    for a in alerts {
        write::try_message(tag, b, |b| write_alert(codes, a, b))?;
    }
    Ok(())
}

fn write_opel(codes: &Codes, o: &Opel, b: &mut Vec<u8>) -> Result<(), StoreError> {
    write::optional_uint32(1, o.declared, b);
    let Some(a) = &o.computed else { return Ok(()) };
    write::try_message(2, b, |b| {
        write::uint32(1, a.level, b);
        write::double(2, a.score, b);
        write::double(3, a.max_score, b);
        write::double(4, a.percent, b);
        for s in &a.scored {
            write::try_message(5, b, |b| {
                write::text(1, &s.parameter, b);
                write::text(2, &s.label, b);
                write::uint32(3, codes.id_of_text(&s.metric)?, b);
                write::double(4, s.value, b);
                write::uint32(5, s.points, b);
                write::uint32(6, s.max_points, b);
                write::double(7, s.weight, b);
                Ok(())
            })?;
        }
        for m in &a.missing {
            write::repeated_text(6, m, b);
        }
        Ok(())
    })
}

fn bad(what: &str) -> StoreError {
    StoreError::Internal(format!("unreadable stored {what}"))
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn hours(t: Timestamp) -> i64 {
    t.millis().div_euclid(Timestamp::HOUR_MS)
}

fn from_hours(h: i64) -> Timestamp {
    Timestamp::from_millis(h.saturating_mul(Timestamp::HOUR_MS))
}

/// Readings that date from one report.
#[derive(Clone, PartialEq, Message)]
struct ReadingGroup {
    #[prost(sint64, tag = "1")]
    period_h: i64,
    #[prost(sint64, tag = "2")]
    observed_ms: i64,
    #[prost(message, optional, tag = "3")]
    values: Option<Values>,
}

#[derive(Clone, PartialEq, Message)]
struct StateBlob {
    #[prost(sint64, tag = "1")]
    period_h: i64,
    #[prost(uint32, tag = "2")]
    revision: u32,
    /// Milliseconds after the period.
    #[prost(sint64, tag = "3")]
    observed: i64,
    /// Milliseconds after the observation.
    #[prost(sint64, tag = "4")]
    received: i64,
    #[prost(string, tag = "5")]
    site: String,
    #[prost(string, tag = "6")]
    narrative: String,
    #[prost(string, tag = "7")]
    source: String,
    #[prost(bool, tag = "8")]
    stale: bool,
    #[prost(message, repeated, tag = "9")]
    readings: Vec<ReadingGroup>,
    #[prost(message, repeated, tag = "12")]
    alerts: Vec<AlertBlob>,
    /// Once it reports by site: each site's latest report and readings (the provider as a whole under '').
    #[prost(message, repeated, tag = "13")]
    sites: Vec<SiteBlob>,
    /// Its mutual aid holds, as JSON (few, rare, and read by people in audits): empty when it holds nothing.
    #[prost(bytes = "vec", tag = "14")]
    holds: Vec<u8>,
}

/// One site of a provider's live state (see [`sitrep_core::SiteLive`]).
#[derive(Clone, PartialEq, Message)]
struct SiteBlob {
    #[prost(string, tag = "1")]
    site: String,
    #[prost(sint64, tag = "2")]
    period_h: i64,
    #[prost(uint32, tag = "3")]
    revision: u32,
    /// Milliseconds after the period.
    #[prost(sint64, tag = "4")]
    observed: i64,
    /// Milliseconds after the observation.
    #[prost(sint64, tag = "5")]
    received: i64,
    #[prost(string, tag = "6")]
    narrative: String,
    #[prost(message, repeated, tag = "7")]
    readings: Vec<ReadingGroup>,
}

/// A provider's live state as stored: `<version>|<state>`, the version first so the script can check it. Its figures
/// and OPEL levels are not stored: they are derived from its readings again when it is read
/// ([`decode_state`]), which gives exactly what was derived when it was written (the property tests check that
/// deriving afresh equals what a state keeps).
pub fn encode_state(codes: &Codes, p: &ProviderLive) -> Result<Vec<u8>, StoreError> {
    let groups = reading_groups(&p.readings);
    let mut out = Vec::with_capacity(64 + 4 * p.readings.len() + 160 * p.alerts.len());
    out.extend_from_slice(itoa::Buffer::new().format(p.version).as_bytes());
    out.push(b'|');
    let b = &mut out;
    write::sint64(1, hours(p.period), b);
    write::uint32(2, p.revision, b);
    write::sint64(3, p.observed_at.millis() - p.period.millis(), b);
    write::sint64(4, p.received_at.millis() - p.observed_at.millis(), b);
    write::text(5, p.site.as_deref().unwrap_or(""), b);
    write::text(6, p.narrative.as_deref().unwrap_or(""), b);
    write::text(7, p.source.as_deref().unwrap_or(""), b);
    write::boolean(8, p.stale, b);
    write_reading_groups(9, codes, groups, b)?;
    write_alerts(12, codes, &p.alerts, b)?;
    for (code, site) in &p.sites {
        write::try_message(13, b, |b| {
            write::text(1, code, b);
            write::sint64(2, hours(site.period), b);
            write::uint32(3, site.revision, b);
            write::sint64(4, site.observed_at.millis() - site.period.millis(), b);
            write::sint64(5, site.received_at.millis() - site.observed_at.millis(), b);
            write::text(6, site.narrative.as_deref().unwrap_or(""), b);
            write_reading_groups(7, codes, reading_groups(&site.readings), b)
        })?;
    }
    if !p.holds.is_empty() {
        prost::encoding::bytes::encode(14, &json(&p.holds)?, b);
    }
    Ok(out)
}

/// The field of the `aid` hash that holds the book's version.
pub const AID_VERSION: &str = "version";
/// The `aid` hash's fields holding the highest request and offer ids given ([`AidBook::last_ids`]), so that an
/// action read with only its own records gives new records the ids the whole book would.
pub const AID_LAST_REQUEST: &str = "last_request";
pub const AID_LAST_OFFER: &str = "last_offer";
/// The prefix of the `aid` hash's index of open references: `ref:<provider>|<reference>` -> the id (`R<n>`) of the
/// provider's open request carrying that reference, so that a create reads only that request
/// ([`AidBook::open_with_reference`]) rather than the whole book. The directory refuses a provider code with a `|`,
/// so the field is unambiguous; and the core checks the request an entry names anyway (its provider, reference,
/// and that it is open), so a stale entry finds no request, never the wrong one.
pub const AID_REF_PREFIX: &str = "ref:";

/// The index field naming `provider`'s open request with `reference` (see [`AID_REF_PREFIX`]).
pub fn aid_ref_field(provider: &str, reference: &str) -> String {
    format!("{AID_REF_PREFIX}{provider}|{reference}")
}

/// How the records a plan writes change the index of open references: the `(field, request id)` pairs to set (a
/// request not ended), and those to remove (a request ended: its reference is free again). The store removes an
/// entry only while it still names that request, so rewriting an ended request never unindexes a later one.
pub fn aid_ref_changes(requests: &[Request]) -> RefChanges {
    let entry = |r: &Request| (aid_ref_field(&r.ask.provider, &r.ask.reference), r.id.to_string());
    let open = requests.iter().filter(|r| !r.state.is_closed()).map(entry).collect();
    let ended = requests.iter().filter(|r| r.state.is_closed()).map(entry).collect();
    RefChanges { open, ended }
}

/// The index entries ([`AID_REF_PREFIX`]) one plan changes, each `(field, request id)`.
pub struct RefChanges {
    /// To set: requests the plan writes that have not ended.
    pub open: Vec<(String, String)>,
    /// To remove while they still name the request: requests the plan writes that have ended.
    pub ended: Vec<(String, String)>,
}

/// One record of mutual aid's book as stored: a field of the `aid` hash (`R<n>` or `O<n>`, the record's id) and
/// the record as JSON. Records are few and read whole, so JSON (the core's serde) is small enough and keeps the
/// storage independent of the records' growth.
pub fn encode_aid_records(requests: &[Request], offers: &[Offer]) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let requests = requests.iter().map(|r| Ok((r.id.to_string(), json(r)?)));
    let offers = offers.iter().map(|o| Ok((o.id.to_string(), json(o)?)));
    requests.chain(offers).collect()
}

/// A book read from the `aid` hash's fields (its `version` field and its records), named `key` in errors.
pub fn decode_aid_book(key: &str, fields: Vec<(String, Vec<u8>)>) -> Result<AidBook, StoreError> {
    let (mut version, mut last, mut requests, mut offers) = (0, (0, 0), Vec::new(), Vec::new());
    for (field, value) in fields {
        let what = || format!("{key} field {field}");
        let number = || aid_number(&what(), &value);
        match field.as_bytes().first() {
            _ if field == AID_VERSION => version = number()?,
            _ if field == AID_LAST_REQUEST => last.0 = number()?,
            _ if field == AID_LAST_OFFER => last.1 = number()?,
            // The index of open references: derived from the records, which say the same.
            _ if field.starts_with(AID_REF_PREFIX) => {}
            Some(b'R') => requests.push(from_json::<Request>(&what(), &value)?),
            Some(b'O') => offers.push(from_json::<Offer>(&what(), &value)?),
            _ => {
                return Err(StoreError::Internal(format!(
                    "{}: not a field sitrep writes (R<n>, O<n>, version, last_request, last_offer, ref:<provider>|<reference>)",
                    what()
                )));
            }
        }
    }
    Ok(AidBook::from_excerpt(version, last, requests, offers))
}

/// The part of a book an action touches, as `aid_excerpt.lua` reads it: the version and last ids (each `None`
/// when the hash has none), its request and that request's offers.
pub fn decode_aid_excerpt(
    key: &str,
    version: Option<&[u8]>,
    last: [Option<&[u8]>; 2],
    request: Option<&[u8]>,
    offers: &[&[u8]],
) -> Result<AidBook, StoreError> {
    let field = |name: &str, value: Option<&[u8]>| {
        value.map(|v| aid_number(&format!("{key} field {name}"), v)).transpose().map(Option::unwrap_or_default)
    };
    let version = field(AID_VERSION, version)?;
    let last = (field(AID_LAST_REQUEST, last[0])?, field(AID_LAST_OFFER, last[1])?);
    let requests =
        request.map(|r| from_json::<Request>(&format!("{key} request"), r)).into_iter().collect::<Result<_, _>>()?;
    let offers = offers.iter().map(|o| from_json::<Offer>(&format!("{key} offer"), o)).collect::<Result<_, _>>()?;
    Ok(AidBook::from_excerpt(version, last, requests, offers))
}

fn aid_number(what: &str, value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).ok_or_else(|| {
        StoreError::Internal(format!("{what}: {:?} is not a whole number", String::from_utf8_lossy(value)))
    })
}

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Internal(format!("encoding mutual aid: {e}")))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Internal(format!("stored {what} unreadable: {e}")))
}

fn write_reading_groups(tag: u32, codes: &Codes, groups: Vec<ReadingsOf>, b: &mut Vec<u8>) -> Result<(), StoreError> {
    for ((period, observed), values) in groups {
        write::try_message(tag, b, |b| {
            write::sint64(1, hours(period), b);
            write::sint64(2, observed.millis() - period.millis(), b);
            write::blob(3, &Values::encode(codes, values)?, b);
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(())
}

fn read_reading_groups(codes: &Codes, groups: Vec<ReadingGroup>) -> Result<BTreeMap<Code, Reading>, StoreError> {
    let mut readings = BTreeMap::new();
    for g in groups {
        let gp = from_hours(g.period_h);
        let go = gp.add_millis(g.observed_ms);
        for (code, value) in g.values.unwrap_or_default().decode(codes)? {
            readings.insert(code, Reading { value, period: gp, observed_at: go });
        }
    }
    Ok(readings)
}

/// The readings one report set: its period and observation time, and each metric's value.
type ReadingsOf = ((Timestamp, Timestamp), Vec<(Code, Value)>);

/// A state's readings grouped by the report that set them (its period and observation time), in time order: a few
/// groups (most readings come from the latest report), found by a look along a short list.
fn reading_groups(readings: &BTreeMap<Code, Reading>) -> Vec<ReadingsOf> {
    let mut groups: Vec<ReadingsOf> = Vec::new();
    for (code, r) in readings {
        let key = (r.period, r.observed_at);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push((*code, r.value)),
            None => groups.push((key, vec![(*code, r.value)])),
        }
    }
    groups.sort_unstable_by_key(|(k, _)| *k);
    groups
}

/// The version a stored state starts with.
pub fn state_version(stored: &[u8]) -> Result<u64, StoreError> {
    let bar = stored.iter().position(|b| *b == b'|').ok_or_else(|| bad("state"))?;
    std::str::from_utf8(&stored[..bar]).ok().and_then(|v| v.parse().ok()).ok_or_else(|| bad("state version"))
}

pub fn decode_state(codes: &Codes, rules: &Rules, provider: &str, stored: &[u8]) -> Result<ProviderLive, StoreError> {
    let version = state_version(stored)?;
    let bar = stored.iter().position(|b| *b == b'|').expect("checked");
    let b = StateBlob::decode(&stored[bar + 1..]).map_err(|_| bad("state"))?;
    let period = from_hours(b.period_h);
    let observed_at = period.add_millis(b.observed);
    let readings = read_reading_groups(codes, b.readings)?;
    let sites = b
        .sites
        .into_iter()
        .map(|s| {
            let period = from_hours(s.period_h);
            let observed_at = period.add_millis(s.observed);
            let site = SiteLive {
                period,
                revision: s.revision,
                observed_at,
                received_at: observed_at.add_millis(s.received),
                narrative: opt(s.narrative),
                readings: read_reading_groups(codes, s.readings)?,
            };
            Ok((s.site, site))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut state = ProviderLive {
        provider: provider.to_owned(),
        version,
        site: opt(b.site),
        readings,
        period,
        revision: b.revision,
        observed_at,
        received_at: observed_at.add_millis(b.received),
        narrative: opt(b.narrative),
        source: opt(b.source),
        sites,
        stale: b.stale,
        alerts: alerts_decode(codes, provider, b.alerts)?,
        figures: Vec::new(),
        opel: Opel::default(),
        holds: if b.holds.is_empty() { Vec::new() } else { from_json("holds", &b.holds)? },
    };
    let held = sitrep_core::aid::hold::held_by_metric(rules, &state.holds);
    let values = sitrep_core::picture::counted_values(rules, &state);
    (state.figures, state.opel) = sitrep_core::derive::provider_view(rules, provider, &values, &held);
    Ok(state)
}

#[derive(Clone, PartialEq, Message)]
struct EventBlob {
    #[prost(uint64, tag = "1")]
    version: u64,
    /// 0: a report, 1: the clock (stale).
    #[prost(uint32, tag = "2")]
    kind: u32,
    #[prost(string, tag = "3")]
    provider: String,
    #[prost(string, tag = "4")]
    site: String,
    #[prost(sint64, tag = "5")]
    period_h: i64,
    #[prost(uint32, tag = "6")]
    revision: u32,
    #[prost(sint64, tag = "7")]
    observed: i64,
    #[prost(sint64, tag = "8")]
    received: i64,
    #[prost(bool, tag = "9")]
    live: bool,
    #[prost(string, tag = "10")]
    narrative: String,
    #[prost(string, tag = "11")]
    source: String,
    /// The changed metrics' new values.
    #[prost(message, optional, tag = "12")]
    after: Option<Values>,
    /// Their previous values, where they had one.
    #[prost(message, optional, tag = "13")]
    before: Option<Values>,
    #[prost(uint32, repeated, tag = "14")]
    unchanged: Vec<u32>,
    #[prost(message, optional, tag = "15")]
    figures: Option<Figures>,
    #[prost(message, optional, tag = "16")]
    opel: Option<OpelBlob>,
    #[prost(message, repeated, tag = "17")]
    raised: Vec<AlertBlob>,
    #[prost(message, repeated, tag = "18")]
    cleared: Vec<AlertBlob>,
    #[prost(message, optional, tag = "19")]
    sender: Option<SenderBlob>,
    /// The W3C trace context of the report's handling (`traceparent`, `tracestate`), when it was traced: so a
    /// subscriber of another replica joins the report's trace. Absent in entries written before tracing, and
    /// whenever tracing is off or did not sample the report (costing nothing then). Bytes, not strings, on the
    /// wire: a trace context that is not UTF-8 (a future writer's, a damaged one) is dropped, and the event, which
    /// matters, still reads.
    #[prost(bytes = "vec", tag = "20")]
    traceparent: Vec<u8>,
    #[prost(bytes = "vec", tag = "21")]
    tracestate: Vec<u8>,
    /// What changed in mutual aid ([`sitrep_core::aid::AidChange`]), as JSON: empty for most events.
    #[prost(bytes = "vec", tag = "22")]
    aid: Vec<u8>,
}

/// How an event's kind is stored (`EventBlob::kind`).
fn kind_number(kind: EventKind) -> u32 {
    match kind {
        EventKind::Report => 0,
        EventKind::Stale => 1,
        EventKind::Aid => 2,
    }
}

/// Who sent a report (see [`Sender`]).
#[derive(Clone, PartialEq, Message)]
struct SenderBlob {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    credential: String,
    #[prost(string, tag = "3")]
    address: String,
}

impl SenderBlob {
    #[cfg(test)]
    fn of(s: &Sender) -> Self {
        SenderBlob { name: s.name.clone(), credential: s.credential.clone(), address: s.address.clone() }
    }

    fn sender(self) -> Sender {
        Sender { name: self.name, credential: self.credential, address: self.address }
    }
}

fn write_sender(tag: u32, sender: Option<&Sender>, b: &mut Vec<u8>) {
    if let Some(s) = sender {
        write::message(tag, b, |b| {
            write::text(1, &s.name, b);
            write::text(2, &s.credential, b);
            write::text(3, &s.address, b);
        });
    }
}

/// An event as stored in the log (its cursor is the entry's id; its epoch is beside it).
pub fn encode_event(codes: &Codes, e: &Event) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256 + 16 * e.changes.len() + 12 * e.derived.figures.len());
    let b = &mut out;
    write::uint64(1, e.version, b);
    write::uint32(2, kind_number(e.kind), b);
    write::text(3, &e.provider, b);
    write::text(4, e.site.as_deref().unwrap_or(""), b);
    write::sint64(5, hours(e.period), b);
    write::uint32(6, e.revision, b);
    write::sint64(7, e.observed_at.millis() - e.period.millis(), b);
    write::sint64(8, e.received_at.millis() - e.observed_at.millis(), b);
    write::boolean(9, e.live, b);
    write::text(10, e.narrative.as_deref().unwrap_or(""), b);
    write::text(11, e.source.as_deref().unwrap_or(""), b);
    write::blob(12, &Values::encode(codes, e.changes.iter().map(|c| (c.metric, c.after)))?, b);
    write::blob(13, &Values::encode(codes, e.changes.iter().filter_map(|c| Some((c.metric, c.before?))))?, b);
    if !e.unchanged.is_empty() {
        let ids = e.unchanged.iter().map(|c| codes.id(*c)).collect::<Result<Vec<u32>, _>>()?;
        prost::encoding::uint32::encode_packed(14, &ids, b);
    }
    write::blob(15, &Figures::encode(codes, &e.derived.figures)?, b);
    if let Some(o) = &e.derived.opel {
        write::try_message(16, b, |b| write_opel(codes, o, b))?;
    }
    write_alerts(17, codes, &e.derived.raised, b)?;
    write_alerts(18, codes, &e.derived.cleared, b)?;
    write_sender(19, e.sender.as_ref(), b);
    if let Some(t) = &e.trace {
        write::text(20, &t.traceparent, b);
        write::text(21, &t.tracestate, b);
    }
    if let Some(aid) = &e.aid {
        prost::encoding::bytes::encode(22, &json(aid)?, b);
    }
    Ok(out)
}

pub fn decode_event(codes: &Codes, bytes: &[u8], cursor: Cursor) -> Result<Event, StoreError> {
    let b = EventBlob::decode(bytes).map_err(|_| bad("event"))?;
    let before: HashMap<Code, Value> = b.before.unwrap_or_default().decode(codes)?.into_iter().collect();
    let mut changes: Vec<MetricChange> = b
        .after
        .unwrap_or_default()
        .decode(codes)?
        .into_iter()
        .map(|(code, after)| MetricChange { metric: code, before: before.get(&code).copied(), after })
        .collect();
    changes.sort_by_key(|c| c.metric);
    let period = from_hours(b.period_h);
    let observed_at = period.add_millis(b.observed);
    let provider = b.provider;
    Ok(Event {
        cursor,
        version: b.version,
        site: opt(b.site),
        period,
        revision: b.revision,
        observed_at,
        received_at: observed_at.add_millis(b.received),
        live: b.live,
        changes,
        unchanged: b.unchanged.iter().map(|id| codes.code(*id)).collect::<Result<_, _>>()?,
        narrative: opt(b.narrative),
        source: opt(b.source),
        sender: b.sender.map(SenderBlob::sender),
        kind: match b.kind {
            0 => EventKind::Report,
            1 => EventKind::Stale,
            2 => EventKind::Aid,
            _ => return Err(bad("event kind")),
        },
        derived: Derived {
            figures: b.figures.unwrap_or_default().decode(codes)?,
            opel: b.opel.map(|o| o.decode(codes)).transpose()?,
            raised: alerts_decode(codes, &provider, b.raised)?,
            cleared: alerts_decode(codes, &provider, b.cleared)?,
        },
        rollups: Vec::new(),
        planned: Default::default(),
        trace: match (String::from_utf8(b.traceparent), String::from_utf8(b.tracestate)) {
            (Ok(traceparent), Ok(tracestate)) if !traceparent.is_empty() => {
                Some(TraceContext { traceparent, tracestate })
            }
            _ => None,
        },
        aid: if b.aid.is_empty() { None } else { Some(Box::new(from_json("mutual aid change", &b.aid)?)) },
        provider,
    })
}

#[derive(Clone, PartialEq, Message)]
struct HistoryBlob {
    #[prost(sint64, tag = "1")]
    observed: i64,
    #[prost(sint64, tag = "2")]
    received: i64,
    #[prost(message, optional, tag = "3")]
    values: Option<Values>,
    #[prost(string, tag = "4")]
    narrative: String,
    #[prost(string, tag = "5")]
    source: String,
    #[prost(string, tag = "6")]
    site: String,
    #[prost(message, optional, tag = "7")]
    sender: Option<SenderBlob>,
}

/// A history entry's field: `<period in hours>:<revision>`, and `:<site>` for a site's report (a report's key is
/// its provider, site, period and revision; the provider is the hash's).
pub fn history_field(period: Timestamp, revision: u32, site: Option<&str>) -> String {
    let (mut h, mut r) = (itoa::Buffer::new(), itoa::Buffer::new());
    match site {
        None => [h.format(hours(period)), ":", r.format(revision)].concat(),
        Some(site) => [h.format(hours(period)), ":", r.format(revision), ":", site].concat(),
    }
}

/// A period as history fields start with it: hours since the epoch.
pub fn history_score(t: Timestamp) -> i64 {
    hours(t)
}

pub fn encode_history(codes: &Codes, h: &HistoryRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(32 + 4 * h.values.len());
    let b = &mut out;
    write::sint64(1, h.observed_at.millis() - h.period.millis(), b);
    write::sint64(2, h.received_at.millis() - h.observed_at.millis(), b);
    write::blob(3, &Values::encode(codes, h.values.iter().map(|(c, v)| (*c, *v)))?, b);
    write::text(4, h.narrative.as_deref().unwrap_or(""), b);
    write::text(5, h.source.as_deref().unwrap_or(""), b);
    write::text(6, h.site.as_deref().unwrap_or(""), b);
    write_sender(7, h.sender.as_ref(), b);
    Ok(out)
}

/// A stored history entry (`<event id>|<entry>`) under `field`, with the id of its event.
pub fn decode_history(codes: &Codes, field: &str, stored: &[u8]) -> Result<(HistoryRecord, String), StoreError> {
    let mut parts = field.splitn(3, ':');
    let (Some(h), Some(revision)) = (parts.next(), parts.next()) else { return Err(bad("history field")) };
    let period = from_hours(h.parse().map_err(|_| bad("history field"))?);
    let revision = revision.parse().map_err(|_| bad("history field"))?;
    let bar = stored.iter().position(|b| *b == b'|').ok_or_else(|| bad("history entry"))?;
    let id = String::from_utf8(stored[..bar].to_vec()).map_err(|_| bad("history entry"))?;
    let b = HistoryBlob::decode(&stored[bar + 1..]).map_err(|_| bad("history entry"))?;
    let observed_at = period.add_millis(b.observed);
    let record = HistoryRecord {
        period,
        revision,
        observed_at,
        received_at: observed_at.add_millis(b.received),
        values: b.values.unwrap_or_default().decode_map(codes)?,
        narrative: opt(b.narrative),
        source: opt(b.source),
        site: opt(b.site),
        sender: b.sender.map(SenderBlob::sender),
    };
    Ok((record, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitrep_core::cursor::Position;
    use sitrep_core::plan;
    use sitrep_core::{Limits, Report, validate};

    // The blob types' own encoding (prost's), as the codec wrote before it wrote them straight from the domain
    // types: the hand-written encoders must write the same bytes.
    fn opel_blob(codes: &Codes, o: &Opel) -> Result<OpelBlob, StoreError> {
        let computed = match &o.computed {
            None => None,
            Some(a) => Some(AssessmentBlob {
                level: a.level,
                score: a.score,
                max_score: a.max_score,
                percent: a.percent,
                scored: a
                    .scored
                    .iter()
                    .map(|s| {
                        Ok(ScoredBlob {
                            parameter: s.parameter.to_string(),
                            label: s.label.to_string(),
                            metric: codes.id_of_text(&s.metric)?,
                            value: s.value,
                            points: s.points,
                            max_points: s.max_points,
                            weight: s.weight,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?,
                missing: a.missing.iter().map(|m| m.to_string()).collect(),
            }),
        };
        Ok(OpelBlob { declared: o.declared, computed })
    }

    fn alert_blob(codes: &Codes, a: &Alert) -> Result<AlertBlob, StoreError> {
        Ok(AlertBlob {
            kind: ALERT_KINDS.iter().position(|k| *k == a.kind).expect("every kind listed") as u32,
            severity: u32::from(a.severity == Severity::Critical),
            metric: a.metric.as_deref().map(|m| codes.id_of_text(m)).transpose()?.unwrap_or(0),
            value: a.value,
            message: a.message.clone(),
            raised_at: a.raised_at.millis(),
        })
    }

    fn alert_blobs(codes: &Codes, alerts: &[Alert]) -> Result<Vec<AlertBlob>, StoreError> {
        alerts.iter().map(|a| alert_blob(codes, a)).collect()
    }

    fn text(s: &Option<String>) -> String {
        s.clone().unwrap_or_default()
    }

    fn blob_groups(codes: &Codes, readings: &BTreeMap<Code, Reading>) -> Result<Vec<ReadingGroup>, StoreError> {
        reading_groups(readings)
            .into_iter()
            .map(|((period, observed), values)| {
                Ok(ReadingGroup {
                    period_h: hours(period),
                    observed_ms: observed.millis() - period.millis(),
                    values: Some(Values::encode(codes, values)?),
                })
            })
            .collect()
    }

    fn blob_state(codes: &Codes, p: &ProviderLive) -> Result<Vec<u8>, StoreError> {
        let readings = blob_groups(codes, &p.readings)?;
        let sites = p
            .sites
            .iter()
            .map(|(code, s)| {
                Ok(SiteBlob {
                    site: code.clone(),
                    period_h: hours(s.period),
                    revision: s.revision,
                    observed: s.observed_at.millis() - s.period.millis(),
                    received: s.received_at.millis() - s.observed_at.millis(),
                    narrative: text(&s.narrative),
                    readings: blob_groups(codes, &s.readings)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let blob = StateBlob {
            period_h: hours(p.period),
            revision: p.revision,
            observed: p.observed_at.millis() - p.period.millis(),
            received: p.received_at.millis() - p.observed_at.millis(),
            site: text(&p.site),
            narrative: text(&p.narrative),
            source: text(&p.source),
            stale: p.stale,
            readings,
            alerts: alert_blobs(codes, &p.alerts)?,
            sites,
            holds: if p.holds.is_empty() { Vec::new() } else { serde_json::to_vec(&p.holds).expect("serialisable") },
        };
        let mut out = format!("{}|", p.version).into_bytes();
        blob.encode(&mut out).expect("a Vec grows");
        Ok(out)
    }

    fn blob_event(codes: &Codes, e: &Event) -> Result<Vec<u8>, StoreError> {
        let blob = EventBlob {
            version: e.version,
            kind: kind_number(e.kind),
            provider: e.provider.clone(),
            site: text(&e.site),
            period_h: hours(e.period),
            revision: e.revision,
            observed: e.observed_at.millis() - e.period.millis(),
            received: e.received_at.millis() - e.observed_at.millis(),
            live: e.live,
            narrative: text(&e.narrative),
            source: text(&e.source),
            after: Some(Values::encode(codes, e.changes.iter().map(|c| (c.metric, c.after)))?),
            before: Some(Values::encode(codes, e.changes.iter().filter_map(|c| Some((c.metric, c.before?))))?),
            unchanged: e.unchanged.iter().map(|c| codes.id(*c)).collect::<Result<_, _>>()?,
            figures: Some(Figures::encode(codes, &e.derived.figures)?),
            opel: e.derived.opel.as_ref().map(|o| opel_blob(codes, o)).transpose()?,
            raised: alert_blobs(codes, &e.derived.raised)?,
            cleared: alert_blobs(codes, &e.derived.cleared)?,
            sender: e.sender.as_ref().map(SenderBlob::of),
            traceparent: e.trace.as_ref().map(|t| t.traceparent.clone().into_bytes()).unwrap_or_default(),
            tracestate: e.trace.as_ref().map(|t| t.tracestate.clone().into_bytes()).unwrap_or_default(),
            aid: e.aid.as_ref().map(|a| serde_json::to_vec(a).expect("serialisable")).unwrap_or_default(),
        };
        Ok(blob.encode_to_vec())
    }

    fn blob_history(codes: &Codes, h: &HistoryRecord) -> Result<Vec<u8>, StoreError> {
        let blob = HistoryBlob {
            observed: h.observed_at.millis() - h.period.millis(),
            received: h.received_at.millis() - h.observed_at.millis(),
            values: Some(Values::encode(codes, h.values.iter().map(|(c, v)| (*c, *v)))?),
            narrative: text(&h.narrative),
            source: text(&h.source),
            site: text(&h.site),
            sender: h.sender.as_ref().map(SenderBlob::of),
        };
        Ok(blob.encode_to_vec())
    }

    fn codes(rules: &Rules) -> Codes {
        let index = rules.index();
        Codes::new(index.metrics.iter().chain(&index.derived).map(|c| c.as_str()).zip(1..))
    }

    #[test]
    fn states_events_and_history_round_trip_and_are_small() {
        let rules = Rules::demo();
        let codes = codes(&rules);
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:12.345Z").unwrap();
        let mut sim = sitrep_core::sim::SimProvider::new("RJ7", sitrep_core::directory::ProviderKind::Acute, 7);
        let mut prior: Option<ProviderLive> = None;
        for revision in 1..=3 {
            let (values, opel) = sim.step(0.05);
            let mut values: BTreeMap<String, sitrep_core::MetricInput> =
                values.into_iter().map(|(k, v)| (k, v.into())).collect();
            values.insert("ed.dta_waiting".into(), Value::Absent(AbsentReason::Suppressed).into());
            values.insert("ambulance.handover_mean_minutes".into(), 17.25.into());
            let r = Report {
                provider: "RJ7".into(),
                period: Some(now.hour_start()),
                revision,
                observed_at: Some(now),
                values,
                opel_level: Some(opel),
                narrative: Some("busy".into()),
                source: Some("PAS export".into()),
                // The last by site: the state keeps the provider as a whole and the site apart.
                site: (revision == 3).then(|| "RJ701".into()),
            };
            let valid = validate(&r, &rules.directory, &rules.catalogue, &Limits::default(), now).unwrap();
            let sender = Sender { name: "RJ7 feed".into(), credential: "k1".into(), address: "10.0.0.7:5123".into() };
            // The second is traced (its trace context travels with its event), the others not.
            let trace = (revision == 2).then(|| TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: "congo=t61rcWkgMzE".into(),
            });
            let valid = valid.sent_by(sender).traced(trace.clone());
            let p = plan::report(&rules, prior.as_ref(), None, &valid, now.add_millis(20), 48);
            let state = p.state.clone().unwrap();
            let stored = encode_state(&codes, &state).unwrap();
            assert_eq!(stored, blob_state(&codes, &state).unwrap(), "the state as prost writes its blob");
            assert_eq!(decode_state(&codes, &rules, "RJ7", &stored).unwrap(), state);
            assert_eq!(state_version(&stored).unwrap(), u64::from(revision));
            let mut event = p.event.clone();
            event.cursor = Cursor::new("e", Position(5, 1));
            let bytes = encode_event(&codes, &event).unwrap();
            assert_eq!(bytes, blob_event(&codes, &event).unwrap(), "the event as prost writes its blob");
            assert_eq!(decode_event(&codes, &bytes, event.cursor.clone()).unwrap(), event);
            assert_eq!(event.trace, trace, "the event carries its report's trace context");
            if trace.is_some() {
                // A trace context that is not UTF-8 is dropped; the event still reads.
                let at = bytes.windows(3).position(|w| w == b"00-").expect("the traceparent");
                let mut damaged = bytes.clone();
                damaged[at] = 0xFF;
                let read = decode_event(&codes, &damaged, event.cursor.clone()).unwrap();
                assert_eq!((read.trace, read.changes), (None, event.changes.clone()));
            }
            let history = p.history.clone().unwrap();
            let mut entry = b"1-2|".to_vec();
            entry.extend(encode_history(&codes, &history).unwrap());
            assert_eq!(entry[4..], blob_history(&codes, &history).unwrap(), "the entry as prost writes its blob");
            let field = history_field(history.period, history.revision, history.site.as_deref());
            assert_eq!(decode_history(&codes, &field, &entry).unwrap(), (history, "1-2".to_owned()));
            if revision == 3 {
                assert_eq!(state.sites.len(), 2, "the whole and one site");
                assert!(field.ends_with(":3:RJ701"), "{field}");
                // About two dozen values with a narrative and a source: a small entry, a compact event.
                println!(
                    "history entry {} bytes, event {} bytes, state {} bytes",
                    entry.len(),
                    bytes.len(),
                    stored.len()
                );
                assert!(entry.len() < 150, "history entry of {} bytes", entry.len());
            }
            prior = Some(state);
        }
        // Going stale: an alert raised, in the event and in the state.
        let quiet = now.hour_start().add_hours(1).add_millis(rules.stale_after("RJ7").as_millis() as i64 + 1000);
        let stale = plan::stale(&rules, prior.as_ref().unwrap(), quiet).expect("quiet");
        let state = stale.state.unwrap();
        assert!(!state.alerts.is_empty() && state.opel.computed.is_some());
        let stored = encode_state(&codes, &state).unwrap();
        assert_eq!(stored, blob_state(&codes, &state).unwrap());
        assert_eq!(decode_state(&codes, &rules, "RJ7", &stored).unwrap(), state);
        let bytes = encode_event(&codes, &stale.event).unwrap();
        assert_eq!(bytes, blob_event(&codes, &stale.event).unwrap());
        assert_eq!(decode_event(&codes, &bytes, Cursor::none()).unwrap(), stale.event);
    }

    #[test]
    fn unknown_numbers_ask_for_the_dictionary_again() {
        let rules = Rules::demo();
        let small = Codes::new([("beds.cc_adult.open".to_string(), 1)]);
        let full = codes(&rules);
        let values = Values { int_ids: vec![20], ints: vec![3], ..Default::default() };
        assert!(matches!(values.decode(&small), Err(StoreError::UnknownCode(20))));
        assert!(values.decode(&full).is_ok());
    }
}
