//! Conversions between the wire contract (`sitrep_proto::v1`) and the domain (`sitrep_core`).
//!
//! This is the one module of the aggregator where both vocabularies meet; the value-level conversions its clients
//! need too (timestamps, values, reports, aid ids) are `sitrep_proto::convert`'s, re-exported here. Conversions
//! from the wire never fail: anything odd (an unspecified absent reason, a missing timestamp) is carried into the
//! domain report so validation can name it.
//!
//! # Layout
//! - this file: events, live states, snapshots, the directory and the catalogue, history entries and hourly points,
//!   refusals, reset reasons (reports: `sitrep_proto::convert`).
//! - [`aid`]: mutual aid (`AidService`): its messages to the core's actions, which can be refused, and the core's
//!   requests, offers, changes, candidates and measures back to messages.

pub mod aid;

use sitrep_core::catalogue::{Catalogue, Formula, RagRule};
use sitrep_core::opel::Assessment;
use sitrep_core::rollup::ScopeRollup;
use sitrep_core::state::{Figure, Opel};
use sitrep_core::{
    Alert, AlertKind, Directory, Event, EventKind, HistoryRecord, ProviderLive, Rag, Rules, Scope, Severity, Timestamp,
    Value, Violation,
};
use sitrep_proto::v1 as pb;
use sitrep_store::write;

// The value-level conversions both ends of the wire need live in `sitrep-proto` (its `convert`), so that clients
// need not depend on the aggregator; they are re-exported here so that the server names every conversion in one
// place.
pub use sitrep_proto::convert::{
    absent_to_wire, report_from_wire, timestamp_from_wire, timestamp_to_wire, value_to_wire, wire_violations,
};

pub fn violation_to_wire(v: &Violation) -> pb::Violation {
    pb::Violation { field: v.field.clone(), rule: v.rule.to_owned(), description: v.description.clone() }
}

/// One hour of a provider's view on the wire.
pub fn provider_hour_to_wire(h: sitrep_core::hourly::ProviderHour) -> pb::HourlyPoint {
    pb::HourlyPoint {
        period: Some(timestamp_to_wire(h.period)),
        value: match h.value {
            Some(Value::Number(n)) => Some(n),
            _ => None,
        },
        absent: match h.value {
            Some(Value::Absent(r)) => absent_to_wire(r) as i32,
            _ => 0,
        },
        change: h.change,
        revision: h.revision,
        corrections: h.corrections,
        reported: h.reported,
        ..Default::default()
    }
}

/// One hour of a scope's view on the wire.
pub fn scope_hour_to_wire(h: sitrep_core::hourly::ScopeHour) -> pb::HourlyPoint {
    pb::HourlyPoint {
        period: Some(timestamp_to_wire(h.period)),
        value: h.value,
        change: h.change,
        corrections: h.corrections,
        reported: !h.reported.is_empty(),
        providers_reported: h.reported,
        providers_expected: h.expected,
        completeness: h.completeness,
        ..Default::default()
    }
}

/// A history record on the wire, with only `metrics` among its values (all of them when `metrics` is empty).
pub fn history_entry_to_wire(h: HistoryRecord, metrics: &[String]) -> pb::HistoryEntry {
    pb::HistoryEntry {
        period: Some(timestamp_to_wire(h.period)),
        revision: h.revision,
        observed_at: Some(timestamp_to_wire(h.observed_at)),
        received_at: Some(timestamp_to_wire(h.received_at)),
        values: h
            .values
            .into_iter()
            .filter(|(code, _)| metrics.is_empty() || metrics.iter().any(|m| m == code.as_str()))
            .map(|(code, v)| (code.to_string(), value_to_wire(v)))
            .collect(),
        narrative: h.narrative.unwrap_or_default(),
        source: h.source.unwrap_or_default(),
        site: h.site.unwrap_or_default(),
        sender: h.sender.as_ref().map(sender_to_wire),
    }
}

/// A refused attempt, as the audit keeps it, on the wire.
pub fn refusal_to_wire(r: crate::audit::Refusal) -> pb::Refusal {
    pb::Refusal {
        at: Some(timestamp_to_wire(r.at)),
        principal: r.principal,
        credential: r.credential,
        address: r.address,
        target: r.target,
        kind: r.kind.to_owned(),
        reason: r.reason,
    }
}

/// A provider's series of one metric on the wire: only the hours it reported, with their revision.
pub fn metric_series_to_wire(s: crate::views::MetricSeries) -> pb::MetricSeries {
    pb::MetricSeries {
        provider: s.provider,
        points: s
            .hours
            .into_iter()
            .filter_map(|h| {
                Some(pb::MetricPoint {
                    period: Some(timestamp_to_wire(h.period)),
                    revision: h.revision?,
                    value: Some(value_to_wire(h.value?)),
                })
            })
            .collect(),
    }
}

/// Why a subscriber is sent a fresh snapshot, as the wire's reset reason.
pub fn resync_to_wire(reason: crate::resync::Resync) -> pb::reset::Reason {
    use crate::resync::Resync;
    use pb::reset::Reason;
    match reason {
        Resync::CursorTooOld => Reason::CursorTooOld,
        Resync::OtherEpoch => Reason::OtherEpoch,
        Resync::CursorAhead => Reason::CursorAhead,
        Resync::SlowSubscriber => Reason::SlowSubscriber,
        Resync::Resync => Reason::Resync,
    }
}

#[cfg(test)]
fn change_to_wire(c: &sitrep_core::MetricChange) -> pb::MetricChange {
    pb::MetricChange {
        metric: c.metric.to_string(),
        before: c.before.map(value_to_wire),
        after: Some(value_to_wire(c.after)),
    }
}

pub fn rag_to_wire(r: Option<Rag>) -> pb::Rag {
    match r {
        None => pb::Rag::None,
        Some(Rag::Green) => pb::Rag::Green,
        Some(Rag::Amber) => pb::Rag::Amber,
        Some(Rag::Red) => pb::Rag::Red,
    }
}

fn figure_to_wire(f: &Figure) -> pb::Figure {
    pb::Figure { metric: f.metric.to_string(), value: f.value, rag: rag_to_wire(f.rag) as i32 }
}

fn assessment_to_wire(a: &Assessment) -> pb::OpelAssessment {
    pb::OpelAssessment {
        level: a.level,
        score: a.score,
        max_score: a.max_score,
        percent: a.percent,
        scored: a
            .scored
            .iter()
            .map(|s| pb::OpelScore {
                parameter: s.parameter.to_string(),
                label: s.label.to_string(),
                metric: s.metric.to_string(),
                value: s.value,
                points: s.points,
                max_points: s.max_points,
                weight: s.weight,
            })
            .collect(),
        missing: a.missing.iter().map(|m| m.to_string()).collect(),
        explanation: a.explain(),
    }
}

fn opel_to_wire(o: &Opel) -> pb::Opel {
    pb::Opel { declared: o.declared, computed: o.computed.as_ref().map(assessment_to_wire), mismatch: o.mismatch() }
}

fn alert_kind_severity(a: &Alert) -> (pb::alert::Kind, pb::alert::Severity) {
    use pb::alert::{Kind, Severity as S};
    let kind = match a.kind {
        AlertKind::Threshold => Kind::Threshold,
        AlertKind::Escalation => Kind::Escalation,
        AlertKind::Stale => Kind::Stale,
        AlertKind::Jump => Kind::Jump,
        AlertKind::OpelMismatch => Kind::OpelMismatch,
        AlertKind::Overcommitted => Kind::Overcommitted,
    };
    let severity = match a.severity {
        Severity::Warning => S::Warning,
        Severity::Critical => S::Critical,
    };
    (kind, severity)
}

pub fn alert_to_wire(a: &Alert) -> pb::Alert {
    let (kind, severity) = alert_kind_severity(a);
    pb::Alert {
        key: a.key.clone(),
        kind: kind as i32,
        severity: severity as i32,
        provider: a.provider.clone(),
        metric: a.metric.clone().unwrap_or_default(),
        value: a.value,
        message: a.message.clone(),
        raised_at: Some(timestamp_to_wire(a.raised_at)),
    }
}

pub fn scope_to_wire(rules: &Rules, s: &Scope) -> pb::Scope {
    pb::Scope { level: s.level.as_str().to_owned(), code: s.code.clone(), name: rules.scope_name(s).to_owned() }
}

pub fn rollup_to_wire(rules: &Rules, r: &ScopeRollup) -> pb::ScopeRollup {
    pb::ScopeRollup {
        scope: Some(scope_to_wire(rules, &r.scope)),
        providers: r.providers,
        reporting: r.reporting,
        stale: r.stale,
        metrics: r
            .metrics
            .iter()
            .map(|m| pb::RollupValue {
                metric: m.metric.to_string(),
                value: m.value,
                providers: m.n,
                rag: rag_to_wire(m.rag) as i32,
                inputs: m.inputs.map_or_else(Vec::new, |i| i.to_vec()),
            })
            .collect(),
        critcon: r.critcon.as_ref().map(|c| pb::Critcon {
            level: c.level,
            rule: c.fired.as_ref().map(|f| f.rule.to_string()).unwrap_or_default(),
            explanation: c.explain(),
            example_rule: rules.critcon.as_ref().is_some_and(|t| t.example),
        }),
        strain: r
            .strain
            .map(|s| pb::AidStrain { open_requests: s.open_requests, unfulfilled_rate: s.unfulfilled_rate }),
    }
}

/// `Update { event }` for `e`, written straight from the domain event: byte for byte what
/// `event_to_wire` and prost give (a test checks it), without building the wire event first (which copied every code,
/// text and alert, and took most of the time of sending an event to subscribers).
pub fn encode_event_update(rules: &Rules, e: &Event) -> Vec<u8> {
    let rollups: usize = e.rollups.iter().map(|r| 64 + 40 * r.metrics.len()).sum();
    let alerts = 200 * (e.derived.raised.len() + e.derived.cleared.len());
    let mut out = Vec::with_capacity(768 + 48 * (e.changes.len() + e.derived.figures.len()) + rollups + alerts);
    write::message(2, &mut out, |b| write_event(rules, e, b));
    out
}

fn write_timestamp(tag: u32, t: Timestamp, b: &mut Vec<u8>) {
    write::blob(tag, &timestamp_to_wire(t), b);
}

fn write_value(tag: u32, v: Value, b: &mut Vec<u8>) {
    write::blob(tag, &value_to_wire(v), b);
}

fn write_alert(a: &Alert, b: &mut Vec<u8>) {
    let (kind, severity) = alert_kind_severity(a);
    write::text(1, &a.key, b);
    write::int32(2, kind as i32, b);
    write::int32(3, severity as i32, b);
    write::text(4, &a.provider, b);
    write::text(5, a.metric.as_deref().unwrap_or(""), b);
    write::optional_double(6, a.value, b);
    write::text(7, &a.message, b);
    write_timestamp(8, a.raised_at, b);
}

fn write_event(rules: &Rules, e: &Event, b: &mut Vec<u8>) {
    write::text(1, &e.cursor.to_string(), b);
    write::text(2, &e.provider, b);
    write::text(3, e.site.as_deref().unwrap_or(""), b);
    write_timestamp(4, e.period, b);
    write::uint32(5, e.revision, b);
    write_timestamp(6, e.observed_at, b);
    write_timestamp(7, e.received_at, b);
    write::boolean(8, e.live, b);
    for c in &e.changes {
        write::message(9, b, |b| {
            write::text(1, &c.metric, b);
            if let Some(before) = c.before {
                write_value(2, before, b);
            }
            write_value(3, c.after, b);
        });
    }
    write::text(10, e.narrative.as_deref().unwrap_or(""), b);
    write::text(11, e.source.as_deref().unwrap_or(""), b);
    write::int32(12, kind_to_wire(e.kind) as i32, b);
    for f in &e.derived.figures {
        write::message(13, b, |b| {
            write::text(1, &f.metric, b);
            write::optional_double(2, f.value, b);
            write::int32(3, rag_to_wire(f.rag) as i32, b);
        });
    }
    if let Some(o) = &e.derived.opel {
        write::message(14, b, |b| write_opel(o, b));
    }
    for a in &e.derived.raised {
        write::message(15, b, |b| write_alert(a, b));
    }
    for a in &e.derived.cleared {
        write::message(16, b, |b| write_alert(a, b));
    }
    for r in &e.rollups {
        write::message(17, b, |b| write_rollup(rules, r, b));
    }
    if let Some(s) = &e.sender {
        write::message(18, b, |b| {
            write::text(1, &s.name, b);
            write::text(2, &s.credential, b);
            write::text(3, &s.address, b);
        });
    }
    // Mutual aid is rare next to reports: its messages are built and encoded by prost.
    if let Some(change) = &e.aid {
        write::blob(19, &aid::change_to_wire(&e.cursor, change, &rules.directory), b);
        if let Some(holds) = aid::holds_to_wire(change) {
            write::blob(20, &holds, b);
        }
    }
}

fn kind_to_wire(k: EventKind) -> pb::event::Kind {
    match k {
        EventKind::Report => pb::event::Kind::Report,
        EventKind::Stale => pb::event::Kind::Stale,
        EventKind::Aid => pb::event::Kind::Aid,
    }
}

pub fn sender_to_wire(s: &sitrep_core::Sender) -> pb::Sender {
    pb::Sender { name: s.name.clone(), credential: s.credential.clone(), address: s.address.clone() }
}

fn write_opel(o: &Opel, b: &mut Vec<u8>) {
    write::optional_uint32(1, o.declared, b);
    if let Some(a) = &o.computed {
        write::message(2, b, |b| write_assessment(a, b));
    }
    write::boolean(3, o.mismatch(), b);
}

fn write_assessment(a: &Assessment, b: &mut Vec<u8>) {
    write::uint32(1, a.level, b);
    write::double(2, a.score, b);
    write::double(3, a.max_score, b);
    write::double(4, a.percent, b);
    for s in &a.scored {
        write::message(5, b, |b| {
            write::text(1, &s.parameter, b);
            write::text(2, &s.label, b);
            write::text(3, &s.metric, b);
            write::double(4, s.value, b);
            write::uint32(5, s.points, b);
            write::uint32(6, s.max_points, b);
            write::double(7, s.weight, b);
        });
    }
    for m in &a.missing {
        write::repeated_text(6, m, b);
    }
    write::text(7, &a.explain(), b);
}

/// A `ScopeRollup` written straight from the domain rollup (see [`encode_event_update`]).
pub fn write_rollup(rules: &Rules, r: &ScopeRollup, b: &mut Vec<u8>) {
    write::message(1, b, |b| {
        write::text(1, r.scope.level.as_str(), b);
        write::text(2, &r.scope.code, b);
        write::text(3, rules.scope_name(&r.scope), b);
    });
    write::uint32(2, r.providers, b);
    write::uint32(3, r.reporting, b);
    write::uint32(4, r.stale, b);
    for m in &r.metrics {
        write::message(5, b, |b| {
            write::text(1, &m.metric, b);
            write::optional_double(2, m.value, b);
            write::uint32(3, m.n, b);
            write::int32(4, rag_to_wire(m.rag) as i32, b);
            if let Some(inputs) = m.inputs {
                write::packed_doubles(5, &inputs, b);
            }
        });
    }
}

/// The reference for [`encode_event_update`] (its test compares the two).
#[cfg(test)]
pub fn event_to_wire(rules: &Rules, e: &Event) -> pb::Event {
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
        kind: kind_to_wire(e.kind) as i32,
        figures: e.derived.figures.iter().map(figure_to_wire).collect(),
        opel: e.derived.opel.as_ref().map(opel_to_wire),
        raised: e.derived.raised.iter().map(alert_to_wire).collect(),
        cleared: e.derived.cleared.iter().map(alert_to_wire).collect(),
        rollups: e.rollups.iter().map(|r| rollup_to_wire(rules, r)).collect(),
        sender: e.sender.as_ref().map(sender_to_wire),
        aid: e.aid.as_deref().map(|c| aid::change_to_wire(&e.cursor, c, &rules.directory)),
        holds: e.aid.as_deref().and_then(aid::holds_to_wire),
    }
}

/// The wire form of a provider's live state, with its figures, ratings and OPEL levels, keeping only `metrics`
/// when given.
pub fn live_to_wire(p: &ProviderLive, metrics: Option<&std::collections::BTreeSet<String>>) -> pb::ProviderState {
    let keep = |code: &str| metrics.is_none_or(|m| m.contains(code));
    pb::ProviderState {
        figures: p.figures.iter().filter(|f| keep(&f.metric)).map(figure_to_wire).collect(),
        opel: Some(opel_to_wire(&p.opel)),
        stale: p.stale,
        alerts: p.alerts.iter().map(alert_to_wire).collect(),
        provider: p.provider.clone(),
        readings: readings_to_wire(&p.readings, metrics),
        sites: p
            .sites
            .iter()
            .map(|(code, s)| pb::SiteState {
                site: code.clone(),
                period: Some(timestamp_to_wire(s.period)),
                revision: s.revision,
                observed_at: Some(timestamp_to_wire(s.observed_at)),
                received_at: Some(timestamp_to_wire(s.received_at)),
                narrative: s.narrative.clone().unwrap_or_default(),
                readings: readings_to_wire(&s.readings, metrics),
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

/// Readings (of `metrics`, or all), keyed by metric code.
fn readings_to_wire(
    readings: &std::collections::BTreeMap<sitrep_core::Code, sitrep_core::Reading>,
    metrics: Option<&std::collections::BTreeSet<String>>,
) -> std::collections::HashMap<String, pb::Reading> {
    readings
        .iter()
        .filter(|(code, _)| metrics.is_none_or(|m| m.contains(code.as_str())))
        .map(|(code, r)| {
            let reading = pb::Reading {
                value: Some(value_to_wire(r.value)),
                period: Some(timestamp_to_wire(r.period)),
                observed_at: Some(timestamp_to_wire(r.observed_at)),
            };
            (code.to_string(), reading)
        })
        .collect()
}

/// The part of the directory a reader of `readable` providers may see (see [`Directory::part`]).
pub fn directory_to_wire(d: &Directory, readable: &sitrep_core::Selection) -> pb::Directory {
    let part = d.part(readable);
    let org =
        |code: &str, name: &str| pb::Organisation { code: code.to_owned(), name: name.to_owned(), location: None };
    let place = |l: sitrep_core::directory::Location| pb::Location { latitude: l.latitude, longitude: l.longitude };
    pb::Directory {
        nation: Some(org(&part.nation.code, &part.nation.name)),
        regions: part.regions.iter().map(|r| pb::Region { code: r.code.clone(), name: r.name.clone() }).collect(),
        systems: part
            .systems
            .iter()
            .map(|s| pb::System { code: s.code.clone(), name: s.name.clone(), region: s.region.clone() })
            .collect(),
        providers: part
            .providers
            .iter()
            .map(|p| pb::Provider {
                code: p.code.clone(),
                name: p.name.clone(),
                system: p.system.clone(),
                kind: p.kind.as_str().to_owned(),
                sites: p
                    .sites
                    .iter()
                    .map(|s| pb::Organisation { location: s.location().map(place), ..org(&s.code, &s.name) })
                    .collect(),
                location: p.location().map(place),
            })
            .collect(),
    }
}

fn rag_rule_to_wire(r: &RagRule) -> pb::RagThresholds {
    pb::RagThresholds {
        direction: r.direction.as_str().to_owned(),
        amber: r.amber,
        red: r.red,
        min_capacity: r.min_capacity.unwrap_or(0.0),
    }
}

pub fn catalogue_to_wire(c: &Catalogue) -> pb::Catalogue {
    pb::Catalogue {
        derived: c
            .derived_metrics()
            .map(|d| pb::DerivedMetric {
                code: d.code.clone(),
                label: d.label.clone(),
                unit: d.unit.clone(),
                kind: d.kind.as_str().to_owned(),
                formula: match d.formula {
                    Formula::Ratio { .. } => "ratio",
                    Formula::Difference { .. } => "difference",
                }
                .to_owned(),
                inputs: d.formula.inputs().iter().map(|s| s.to_string()).collect(),
                rag: d.rag.as_ref().map(rag_rule_to_wire),
                description: d.description.clone(),
            })
            .collect(),
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
                rag: m.rag.as_ref().map(rag_rule_to_wire),
                jump: m.jump.unwrap_or(0.0),
            })
            .collect(),
    }
}

/// The wire form of a snapshot (or one part of it: `more` says further parts follow), keeping only `metrics` (of
/// providers and rollups) when given.
pub fn snapshot_to_wire(
    rules: &Rules,
    cursor: &sitrep_core::Cursor,
    providers: &[std::sync::Arc<ProviderLive>],
    rollups: &[sitrep_core::rollup::ScopeRollup],
    more: bool,
    metrics: Option<&std::collections::BTreeSet<String>>,
) -> pb::Snapshot {
    let mut rollups: Vec<pb::ScopeRollup> = rollups.iter().map(|r| rollup_to_wire(rules, r)).collect();
    if let Some(m) = metrics {
        for r in &mut rollups {
            r.metrics.retain(|v| m.contains(&v.metric));
        }
    }
    pb::Snapshot {
        cursor: cursor.to_string(),
        providers: providers.iter().map(|p| live_to_wire(p, metrics)).collect(),
        rollups,
        more,
    }
}

/// A gRPC filter as every surface's filter ([`crate::context::FilterSpec`]).
pub fn filter_from_wire(f: &pb::Filter) -> crate::context::FilterSpec {
    crate::context::FilterSpec {
        providers: f.providers.clone(),
        systems: f.systems.clone(),
        regions: f.regions.clone(),
        metrics: f.metrics.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitrep_core::{AbsentReason, MetricInput, Report};

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
        assert_eq!(report_from_wire(sitrep_proto::convert::report_to_wire(&r)), r);
    }

    #[test]
    fn events_written_directly_are_what_prost_writes() {
        use prost::Message;
        use sitrep_core::cursor::Position;
        use sitrep_core::{Cursor, Limits, Picture, plan, validate};
        let rules = Rules::demo();
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:12.345Z").unwrap();
        let mut picture = Picture::new(rules.clone(), Cursor::new("e", Position(0, 0)));
        let mut sim = sitrep_core::sim::SimProvider::new("RJ7", sitrep_core::directory::ProviderKind::Acute, 3);
        let mut prior: Option<ProviderLive> = None;
        let mut events = Vec::new();
        for revision in 1..=4 {
            let (values, opel) = sim.step(0.5);
            let mut r = Report {
                provider: "RJ7".into(),
                period: Some(now.hour_start()),
                revision,
                observed_at: Some(now),
                values: values.into_iter().map(|(k, v)| (k, v.into())).collect(),
                opel_level: Some(opel),
                narrative: (revision % 2 == 0).then(|| "busy".into()),
                site: (revision > 1).then(|| "RJ701".into()),
                source: Some("PAS export".into()),
            };
            // Absent, then a number, then absent again: changes from and to an absent value.
            let dta = if revision % 2 == 1 { Value::Absent(AbsentReason::Suppressed) } else { Value::Number(4.0) };
            r.values.insert("ed.dta_waiting".into(), dta.into());
            let valid = validate(&r, &rules.directory, &rules.catalogue, &Limits::default(), now).unwrap();
            let p = plan::report(&rules, prior.as_ref(), None, &valid, now.add_millis(20), 48);
            prior = p.state.clone();
            events.push(p.event);
        }
        // A late report (an earlier hour): history only, no derived picture, no rollups.
        let late = Report {
            provider: "RJ7".into(),
            period: Some(now.hour_start().add_hours(-2)),
            revision: 1,
            observed_at: Some(now),
            values: [("beds.cc_adult.open".to_string(), 12.0.into())].into(),
            ..Default::default()
        };
        let valid = validate(&late, &rules.directory, &rules.catalogue, &Limits::default(), now).unwrap();
        let late = plan::report(&rules, prior.as_ref(), None, &valid, now.add_millis(30), 48).event;
        assert!(!late.live);
        events.push(late);
        // Quiet: the hour reported has ended, and a cadence and the grace have passed.
        let quiet = now.hour_start().add_hours(1).add_millis(rules.stale_after("RJ7").as_millis() as i64 + 1000);
        events.push(plan::stale(&rules, prior.as_ref().unwrap(), quiet).unwrap().event);
        // Mutual aid: RVR asks, RJ7 offers and is accepted: the book's events (RVR's), then RJ7's, whose hold is
        // placed; a report showing the bed occupied ends it (RJ7 then holds nothing, which is said too).
        {
            use sitrep_core::aid::{
                self, Action, Actor, AidBook, Constraints, Kind, NewRequest, OfferId, RequestId, Urgency,
            };
            let actor = Actor { principal: "RVR feed".into(), cursor: Cursor::new("e", Position(3, 0)) };
            let ask = NewRequest {
                provider: "RVR".into(),
                site: None,
                kind: Kind::PatientTransfer,
                pair: "beds.cc_adult".into(),
                quantity: 1,
                urgency: Urgency::Urgent,
                needed_by: now.add_hours(2),
                constraints: Constraints { within: sitrep_core::Level::Region, isolation: false },
                reference: "REF-1".into(),
                summary: "adult".into(),
            };
            let offer = Action::Offer {
                request: RequestId(1),
                provider: "RJ7".into(),
                site: None,
                quantity: 1,
                hold_until: now.add_hours(1),
            };
            let accept = Action::Accept { offer: OfferId(1), baseline_occupied: 0 };
            let mut book = AidBook::new();
            let mut states = std::collections::BTreeMap::new();
            states.insert("RJ7".to_owned(), prior.clone().unwrap());
            for action in [Action::Create(ask), offer, accept] {
                let planned =
                    sitrep_core::plan::aid::plan(&rules, book.clone(), &states, action.clone(), &actor, now).unwrap();
                let sitrep_core::plan::aid::AidOutcome::Plan(planned) = planned else { panic!("each action changes") };
                events.extend(planned.events().cloned());
                book.apply(action, &actor, now).unwrap();
            }
            let mut ended = events.last().unwrap().clone();
            let held = ended.aid.as_deref().and_then(|a| a.holds.clone()).unwrap();
            ended.aid = Some(Box::new(aid::AidChange::holds_ended(Vec::new(), held, aid::HoldEnd::Occupied)));
            events.push(ended);
        }
        assert!(events.iter().any(|e| e.aid.as_ref().is_some_and(|a| a.holds.as_ref().is_some_and(Vec::is_empty))));
        // Between them: alerts raised and cleared, OPEL levels, changes from and to absent values, a site, rollups.
        assert!(events.iter().any(|e| !e.derived.raised.is_empty()) && events.iter().any(|e| e.derived.opel.is_some()));
        let absent = |v: Option<Value>| matches!(v, Some(Value::Absent(_)));
        assert!(events.iter().flat_map(|e| &e.changes).any(|c| absent(c.before)));
        assert!(events.iter().flat_map(|e| &e.changes).any(|c| absent(Some(c.after)) && c.before.is_some()));
        let n = events.len();
        for (i, mut e) in events.into_iter().enumerate() {
            e.cursor = Cursor::new("e", Position(i as u64 + 1, 0));
            // The hand-made last event (a report's end of a hold) is not one the picture could fold.
            if i + 1 < n {
                e.rollups = picture.apply(&e).unwrap();
            }
            assert!(
                e.rollups.is_empty() != e.live || matches!(e.kind, EventKind::Stale | EventKind::Aid) || i + 1 == n,
                "rollups for live events"
            );
            let expected =
                pb::Update { kind: Some(pb::update::Kind::Event(event_to_wire(&rules, &e))) }.encode_to_vec();
            assert_eq!(encode_event_update(&rules, &e), expected, "event {i}");
        }
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
