//! Conversions of the values both ends of the wire send: timestamps, metric values, reports, and the ids of mutual
//! aid requests and offers as people type them. The aggregator's own conversions (answers, snapshots, events, aid
//! views, filters) stay in `sitrep-server`'s `convert`, which re-exports these; a client (the feed agent, the
//! simulator, the CLI) needs only these and so does not depend on the aggregator.
//!
//! They live here rather than in `sitrep-core` because the core knows no wire types, and here rather than in a
//! third crate because Rust's orphan rule puts a conversion beside one of its two types anyway. Conversions from
//! the wire never fail: anything odd (an unspecified absent reason, a missing timestamp) is carried into the
//! domain report so validation can name it.

use sitrep_core::aid::{OfferId, RequestId};
use sitrep_core::{AbsentReason, MetricInput, Report, Timestamp, Value};

use crate::v1 as pb;

pub fn timestamp_to_wire(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.millis();
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn timestamp_from_wire(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_millis(t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000)))
}

pub fn absent_to_wire(r: AbsentReason) -> pb::AbsentReason {
    match r {
        AbsentReason::Unspecified => pb::AbsentReason::Unspecified,
        AbsentReason::NotApplicable => pb::AbsentReason::NotApplicable,
        AbsentReason::NotAvailable => pb::AbsentReason::NotAvailable,
        AbsentReason::Suppressed => pb::AbsentReason::Suppressed,
    }
}

fn absent_from_wire(code: i32) -> AbsentReason {
    match pb::AbsentReason::try_from(code) {
        Ok(pb::AbsentReason::NotApplicable) => AbsentReason::NotApplicable,
        Ok(pb::AbsentReason::NotAvailable) => AbsentReason::NotAvailable,
        Ok(pb::AbsentReason::Suppressed) => AbsentReason::Suppressed,
        Ok(pb::AbsentReason::Unspecified) | Err(_) => AbsentReason::Unspecified,
    }
}

pub fn value_to_wire(v: Value) -> pb::MetricValue {
    let kind = match v {
        Value::Number(n) => pb::metric_value::Kind::Number(n),
        Value::Absent(r) => pb::metric_value::Kind::Absent(absent_to_wire(r) as i32),
    };
    pb::MetricValue { kind: Some(kind), unit: String::new() }
}

pub fn value_from_wire(v: &pb::MetricValue) -> Option<Value> {
    match v.kind? {
        pb::metric_value::Kind::Number(n) => Some(Value::Number(n)),
        pb::metric_value::Kind::Absent(code) => Some(Value::Absent(absent_from_wire(code))),
    }
}

/// A report as received, its texts moved out of the wire message.
/// What the wire form of a report gets wrong that its domain form cannot show: timestamps outside the protobuf
/// range of nanos, and a period with any sub-second part (milliseconds would round it onto the hour).
pub fn wire_violations(r: &pb::StatusReport) -> Vec<sitrep_core::Violation> {
    let mut out = Vec::new();
    let who = if r.provider.is_empty() { "report".to_owned() } else { format!("report for {}", r.provider) };
    for (field, t) in [("period", &r.period), ("observed_at", &r.observed_at)] {
        let Some(t) = t else { continue };
        if !(0..1_000_000_000).contains(&t.nanos) {
            out.push(sitrep_core::Violation {
                field: field.into(),
                rule: "valid_timestamp",
                description: format!("{who}: {field}.nanos = {} is outside 0..=999999999", t.nanos),
            });
        } else if field == "period" && t.nanos != 0 {
            out.push(sitrep_core::Violation {
                field: field.into(),
                rule: "hour_aligned",
                description: format!(
                    "{who}: period has {} nanoseconds past the second; it must be the start of an hour exactly",
                    t.nanos
                ),
            });
        }
    }
    out
}

pub fn report_from_wire(r: pb::StatusReport) -> Report {
    let owned = |s: String| (!s.is_empty()).then_some(s);
    Report {
        site: owned(r.site),
        period: r.period.as_ref().map(timestamp_from_wire),
        revision: r.revision,
        observed_at: r.observed_at.as_ref().map(timestamp_from_wire),
        values: r
            .values
            .into_iter()
            .map(|(code, v)| {
                let value = value_from_wire(&v);
                (code, MetricInput { value, unit: owned(v.unit) })
            })
            .collect(),
        opel_level: r.opel_level,
        narrative: owned(r.narrative),
        source: owned(r.source),
        provider: r.provider,
    }
}

pub fn report_to_wire(r: &Report) -> pb::StatusReport {
    pb::StatusReport {
        provider: r.provider.clone(),
        site: r.site.clone().unwrap_or_default(),
        period: r.period.map(timestamp_to_wire),
        revision: r.revision,
        observed_at: r.observed_at.map(timestamp_to_wire),
        values: r
            .values
            .iter()
            .map(|(code, input)| {
                let mut v = input.value.map(value_to_wire).unwrap_or_default();
                v.unit = input.unit.clone().unwrap_or_default();
                (code.clone(), v)
            })
            .collect(),
        opel_level: r.opel_level,
        narrative: r.narrative.clone().unwrap_or_default(),
        source: r.source.clone().unwrap_or_default(),
        traceparent: String::new(),
        tracestate: String::new(),
    }
}

/// `R12`; `None` for anything else (`r12`, `R`, `R0`, `R+1`, `O12`).
pub fn parse_request_id(text: &str) -> Option<RequestId> {
    parse_id(text, 'R').map(RequestId)
}

/// `O3`; `None` for anything else.
pub fn parse_offer_id(text: &str) -> Option<OfferId> {
    parse_id(text, 'O').map(OfferId)
}

fn parse_id(text: &str, prefix: char) -> Option<u64> {
    let digits = text.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_as_people_type_them_and_nothing_else() {
        assert_eq!(parse_request_id("R12"), Some(RequestId(12)));
        assert_eq!(parse_offer_id("O3"), Some(OfferId(3)));
        for bad in ["r12", "R", "R0", "R+1", "O12", "R1x", ""] {
            assert_eq!(parse_request_id(bad), None, "{bad:?}");
        }
        assert_eq!(parse_offer_id("R3"), None);
    }

    #[test]
    fn timestamps_round_trip_to_the_millisecond() {
        for ms in [0, 1, 999, 1_000, -1, -1_001, 1_700_000_000_123] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(timestamp_from_wire(&timestamp_to_wire(t)), t, "{ms}");
        }
    }
}
