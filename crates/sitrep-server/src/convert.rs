//! Conversions between the wire contract (`sitrep_proto::v1`) and the domain (`sitrep_core`).
//!
//! This is the one module where both vocabularies meet. Conversions from the wire never fail: anything odd (an
//! unspecified absent reason, a missing timestamp) is carried into the domain report so validation can name it.

use sitrep_core::catalogue::Catalogue;
use sitrep_core::{
    AbsentReason, Directory, Event, MetricChange, MetricInput, ProviderLive, Report, Timestamp, Value, Violation,
};
use sitrep_proto::v1 as pb;

pub fn timestamp_to_wire(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.millis();
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub fn timestamp_from_wire(t: &prost_types::Timestamp) -> Timestamp {
    Timestamp::from_millis(t.seconds.saturating_mul(1000).saturating_add(i64::from(t.nanos / 1_000_000)))
}

fn absent_to_wire(r: AbsentReason) -> pb::AbsentReason {
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

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

pub fn report_from_wire(r: &pb::StatusReport) -> Report {
    Report {
        provider: r.provider.clone(),
        site: non_empty(&r.site),
        period: r.period.as_ref().map(timestamp_from_wire),
        revision: r.revision,
        observed_at: r.observed_at.as_ref().map(timestamp_from_wire),
        values: r
            .values
            .iter()
            .map(|(code, v)| (code.clone(), MetricInput { value: value_from_wire(v), unit: non_empty(&v.unit) }))
            .collect(),
        opel_level: r.opel_level,
        narrative: non_empty(&r.narrative),
        source: non_empty(&r.source),
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
    }
}

pub fn violation_to_wire(v: &Violation) -> pb::Violation {
    pb::Violation { field: v.field.clone(), rule: v.rule.to_owned(), description: v.description.clone() }
}

fn change_to_wire(c: &MetricChange) -> pb::MetricChange {
    pb::MetricChange {
        metric: c.metric.clone(),
        before: c.before.map(value_to_wire),
        after: Some(value_to_wire(c.after)),
    }
}

pub fn event_to_wire(e: &Event) -> pb::Event {
    pb::Event {
        cursor: e.cursor.to_string(),
        provider: e.provider.clone(),
        site: e.site.clone().unwrap_or_default(),
        period: Some(timestamp_to_wire(e.period)),
        revision: e.revision,
        observed_at: Some(timestamp_to_wire(e.observed_at)),
        received_at: Some(timestamp_to_wire(e.received_at)),
        live: e.live,
        changes: e.changes.iter().map(change_to_wire).collect(),
        narrative: e.narrative.clone().unwrap_or_default(),
        source: e.source.clone().unwrap_or_default(),
    }
}

/// The wire form of a provider's live state, keeping only `metrics` when given.
pub fn live_to_wire(p: &ProviderLive, metrics: Option<&std::collections::BTreeSet<String>>) -> pb::ProviderState {
    pb::ProviderState {
        provider: p.provider.clone(),
        readings: p
            .readings
            .iter()
            .filter(|(code, _)| metrics.is_none_or(|m| m.contains(*code)))
            .map(|(code, r)| {
                let reading = pb::Reading {
                    value: Some(value_to_wire(r.value)),
                    period: Some(timestamp_to_wire(r.period)),
                    observed_at: Some(timestamp_to_wire(r.observed_at)),
                };
                (code.clone(), reading)
            })
            .collect(),
        period: Some(timestamp_to_wire(p.period)),
        revision: p.revision,
        observed_at: Some(timestamp_to_wire(p.observed_at)),
        received_at: Some(timestamp_to_wire(p.received_at)),
        narrative: p.narrative.clone().unwrap_or_default(),
        source: p.source.clone().unwrap_or_default(),
        site: p.site.clone().unwrap_or_default(),
    }
}

pub fn directory_to_wire(d: &Directory) -> pb::Directory {
    let org = |code: &str, name: &str| pb::Organisation { code: code.to_owned(), name: name.to_owned() };
    pb::Directory {
        nation: Some(org(&d.nation().code, &d.nation().name)),
        regions: d.regions().map(|r| pb::Region { code: r.code.clone(), name: r.name.clone() }).collect(),
        systems: d
            .systems()
            .map(|s| pb::System { code: s.code.clone(), name: s.name.clone(), region: s.region.clone() })
            .collect(),
        providers: d
            .providers()
            .map(|p| pb::Provider {
                code: p.code.clone(),
                name: p.name.clone(),
                system: p.system.clone(),
                kind: p.kind.as_str().to_owned(),
                sites: p.sites.iter().map(|s| org(&s.code, &s.name)).collect(),
            })
            .collect(),
    }
}

pub fn catalogue_to_wire(c: &Catalogue) -> pb::Catalogue {
    pb::Catalogue {
        profile: c.profile.clone(),
        metrics: c
            .metrics()
            .map(|m| pb::Metric {
                code: m.code.clone(),
                label: m.label.clone(),
                unit: m.unit.clone(),
                kind: m.kind.as_str().to_owned(),
                rollup: m.rollup.as_str().to_owned(),
                at_most: m.at_most.clone().unwrap_or_default(),
                min: m.min.unwrap_or(0),
                max: m.max.unwrap_or(0),
                description: m.description.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_through_the_wire() {
        let mut r = Report {
            provider: "RJ7".into(),
            site: Some("RJ701".into()),
            period: Some(Timestamp::from_secs(1_795_788_000)),
            revision: 2,
            observed_at: Some(Timestamp::from_millis(1_795_788_123_456)),
            opel_level: Some(3),
            narrative: Some("busy".into()),
            source: Some("test".into()),
            ..Default::default()
        };
        r.values.insert("a".into(), 1.5.into());
        r.values.insert(
            "b".into(),
            MetricInput { value: Some(Value::Absent(AbsentReason::Suppressed)), unit: Some("beds".into()) },
        );
        r.values.insert("c".into(), MetricInput { value: None, unit: None });
        assert_eq!(report_from_wire(&report_to_wire(&r)), r);
    }

    #[test]
    fn negative_timestamps_convert_exactly() {
        for ms in [-1_500, -1, 0, 1, 1_795_788_000_001] {
            let t = Timestamp::from_millis(ms);
            let w = timestamp_to_wire(t);
            assert!((0..1_000_000_000).contains(&w.nanos));
            assert_eq!(timestamp_from_wire(&w), t);
        }
    }
}
