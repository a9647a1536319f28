//! Readable renderings of subscription updates, for `sitrep watch` and the demo's log.
//!
//! An event is one line of what the report said, then indented lines for what it changed in the derived picture:
//! ```text
//! 2026-11-27T14:00:00Z RJ7 r3 beds.cc_adult.occupied 30→39  [r1x:1795-0]
//!     RJ7: beds.cc_adult.free 1 AMBER, beds.cc_adult.occupancy 97.5 RED
//!     RAISED critical: RJ7: Adult critical care occupancy is 97.5%, in red (red at 95% or more)
//!     system QWE (South West London ICB) 2/5 reporting: beds.cc_adult.occupancy 81.7 GREEN (2/5)
//! ```
//!
//! A mutual aid event is one line of what happened (the same words `sitrep aid` prints), then the same indented
//! lines; a report that showed held beds occupied says so on an indented line:
//! ```text
//! 2026-11-27T14:03:10Z RJ7 aid R1: open -> offered; O1: offered for R1 by RVR (1 beds.cc_adult), proposed  [r1x:1801-0]
//! 2026-11-27T14:04:00Z RVR aid O1: RVR holds 1 beds.cc_adult until 2026-11-27T16:04:00Z; holds 1 beds.cc_adult (O1)  [r1x:1803-0]
//!     RVR: beds.cc_adult.free 3
//!     system QWE (South West London ICB) 3/5 reporting: beds.cc_adult.free 9 (3/5)
//! ```

use std::fmt::Write;

use sitrep_proto::v1 as pb;

use sitrep_proto::convert::{timestamp_from_wire, value_from_wire};

/// A wire value as text: the number, `absent(reason)`, or `–` when there is none.
pub fn value_text(v: Option<&pb::MetricValue>) -> String {
    match v.and_then(value_from_wire) {
        None => "–".to_owned(),
        Some(v) => v.to_string(),
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| timestamp_from_wire(t).to_string()).unwrap_or_else(|| "?".into())
}

/// A number as people read it: whole numbers plainly, others to one decimal.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{n:.0}") } else { format!("{n:.1}") }
}

fn rag(r: pb::Rag) -> &'static str {
    match r {
        pb::Rag::None => "",
        pb::Rag::Green => " GREEN",
        pb::Rag::Amber => " AMBER",
        pb::Rag::Red => " RED",
    }
}

fn figure_text(metric: &str, value: Option<f64>, r: pb::Rag) -> String {
    format!("{metric} {}{}", value.map_or_else(|| "–".to_owned(), number), rag(r))
}

fn opel_text(o: &pb::Opel) -> String {
    let declared = o.declared.map_or_else(|| "none".to_owned(), |d| d.to_string());
    let mut text = format!("OPEL declared {declared}");
    match &o.computed {
        Some(c) => {
            let _ = write!(text, ", computed {}", c.level);
            if o.mismatch {
                text.push_str(" (MISMATCH)");
            }
            let _ = write!(text, ": {}", c.explanation);
        }
        None => text.push_str(", not computed (too few figures)"),
    }
    text
}

fn alert_text(a: &pb::Alert) -> String {
    let severity = match a.severity() {
        pb::alert::Severity::Critical => "critical",
        _ => "warning",
    };
    format!("{severity}: {}", a.message)
}

/// A scope's rollup as text: its counts and figures (red and amber ones first when `headline`).
pub fn rollup_text(r: &pb::ScopeRollup, headline: bool) -> String {
    let scope = r.scope.clone().unwrap_or_default();
    let mut text = format!("{} {} ({}) {}/{} reporting", scope.level, scope.code, scope.name, r.reporting, r.providers);
    if r.stale > 0 {
        let _ = write!(text, ", {} STALE", r.stale);
    }
    let mut metrics: Vec<&pb::RollupValue> = r.metrics.iter().collect();
    if headline {
        metrics.retain(|m| matches!(m.rag(), pb::Rag::Red | pb::Rag::Amber));
        metrics.sort_by_key(|m| std::cmp::Reverse(m.rag));
    }
    // Each figure says how many providers it counts; "partial" when that is fewer than report and are fresh (a
    // derived figure counts only those with both its inputs, a stale provider's numbers count nowhere).
    let fresh = r.reporting.saturating_sub(r.stale);
    for (i, m) in metrics.iter().enumerate() {
        let partial = if m.providers < fresh { ", partial" } else { "" };
        let _ = write!(
            text,
            "{} {} ({}/{}{partial})",
            if i == 0 { ":" } else { "," },
            figure_text(&m.metric, m.value, m.rag()),
            m.providers,
            r.providers
        );
    }
    text
}

/// An enum value's protobuf name as people read it: `STATE_IN_TRANSIT` less `STATE_` is `in_transit`.
pub fn enum_name(full: &str, prefix: &str) -> String {
    full.trim_start_matches(prefix).to_lowercase()
}

/// A request's state by its number, e.g. `offered`.
pub fn aid_request_state(code: i32) -> String {
    pb::aid_request::State::try_from(code).map_or_else(|_| code.to_string(), |s| enum_name(s.as_str_name(), "STATE_"))
}

/// An offer's state by its number, e.g. `proposed`.
pub fn aid_offer_state(code: i32) -> String {
    pb::aid_offer::State::try_from(code).map_or_else(|_| code.to_string(), |s| enum_name(s.as_str_name(), "STATE_"))
}

/// One thing that happened in mutual aid, e.g. `R1: open -> offered`. A new offer is described from the update
/// the change came in when it has the offer: `O1: offered for R1 by RVR (1 beds.cc_adult), proposed`.
pub fn aid_event_text(c: &pb::AidEvent, update: &pb::AidUpdate) -> String {
    use pb::aid_event::Kind as K;
    match &c.kind {
        Some(K::RequestChanged(r)) if r.from == 0 => format!("{}: created, {}", r.request, aid_request_state(r.to)),
        Some(K::RequestChanged(r)) => {
            format!("{}: {} -> {}", r.request, aid_request_state(r.from), aid_request_state(r.to))
        }
        Some(K::OfferChanged(o)) if o.from == 0 => {
            let by = update.offers.iter().find(|offer| offer.id == o.offer).map_or_else(String::new, |offer| {
                let request = update.requests.iter().find(|r| r.id == offer.request);
                let pair = request.map_or("beds", |r| r.pair.as_str());
                format!(" by {} ({} {pair})", who(&offer.provider, &offer.site), offer.quantity)
            });
            format!("{}: offered for {}{by}, {}", o.offer, o.request, aid_offer_state(o.to))
        }
        Some(K::OfferChanged(o)) => {
            format!("{} (for {}): {} -> {}", o.offer, o.request, aid_offer_state(o.from), aid_offer_state(o.to))
        }
        Some(K::HoldPlaced(h)) => {
            let until = h.until.as_ref().map_or_else(String::new, |t| format!(" until {}", timestamp_from_wire(t)));
            format!("{}: {} holds {} {}{until}", h.offer, h.provider, h.quantity, h.pair)
        }
        Some(K::HoldEnded(h)) => {
            let end = pb::aid_event::hold_ended::End::try_from(h.end)
                .map_or_else(|_| h.end.to_string(), |e| enum_name(e.as_str_name(), "END_"));
            format!("{}: {}'s hold of {} {} ended ({end})", h.offer, h.provider, h.quantity, h.pair)
        }
        Some(K::Escalated(e)) => format!("{}: escalated to {} coordinators ({})", e.request, e.level, e.coordinators),
        None => "(a change this version of sitrep does not know)".to_owned(),
    }
}

/// A provider, or one of its sites: `RVR`, `RVR/RVR05`.
pub fn who(provider: &str, site: &str) -> String {
    if site.is_empty() { provider.to_owned() } else { format!("{provider}/{site}") }
}

/// What an event says of mutual aid, `; `-separated: what happened, then the provider's holds when they changed.
fn aid_text(e: &pb::Event) -> String {
    let mut parts: Vec<String> =
        e.aid.iter().flat_map(|a| a.happened.iter().map(move |c| aid_event_text(c, a))).collect();
    if let Some(h) = &e.holds {
        let held: Vec<String> = h.holds.iter().map(|h| format!("{} {} ({})", h.quantity, h.pair, h.offer)).collect();
        parts.push(if held.is_empty() { "holds nothing now".to_owned() } else { format!("holds {}", held.join(", ")) });
    }
    parts.join("; ")
}

/// One event: period, provider, revision, each change, and the cursor; then, indented, the figures whose value or
/// rating changed, the OPEL levels, alerts raised and cleared, and the rollups it changed. A mutual aid event
/// (`KIND_AID`) opens with when it was stored, its provider and what happened instead.
pub fn event_line(e: &pb::Event) -> String {
    if e.kind() == pb::event::Kind::Aid {
        let mut line = format!("{} {} aid {}  [{}]", time(e.received_at.as_ref()), e.provider, aid_text(e), e.cursor);
        details(e, &mut line);
        return line;
    }
    if e.kind() == pb::event::Kind::Stale {
        let why = e.raised.first().map(|a| a.message.as_str()).unwrap_or("missed its expected report");
        let mut line = format!("{} {} STALE: {why}  [{}]", time(e.received_at.as_ref()), e.provider, e.cursor);
        for r in &e.rollups {
            let _ = write!(line, "\n    {}", rollup_text(r, false));
        }
        return line;
    }
    let mut line = format!("{} {}", time(e.period.as_ref()), e.provider);
    if !e.site.is_empty() {
        let _ = write!(line, "/{}", e.site);
    }
    let _ = write!(line, " r{}", e.revision);
    if !e.live {
        line.push_str(" (late, history only)");
    }
    if e.changes.is_empty() {
        line.push_str(" no change");
    }
    for (i, c) in e.changes.iter().enumerate() {
        let _ = write!(
            line,
            "{} {} {}→{}",
            if i == 0 { "" } else { "," },
            c.metric,
            value_text(c.before.as_ref()),
            value_text(c.after.as_ref())
        );
    }
    if !e.narrative.is_empty() {
        let _ = write!(line, " “{}”", e.narrative);
    }
    let _ = write!(line, "  [{}]", e.cursor);
    if e.aid.is_some() || e.holds.is_some() {
        let _ = write!(line, "\n    aid: {}", aid_text(e));
    }
    details(e, &mut line);
    line
}

/// The indented lines of an event: figures, OPEL, alerts raised and cleared, rollups.
fn details(e: &pb::Event, line: &mut String) {
    let rated: Vec<String> = e
        .figures
        .iter()
        .filter(|f| f.rag() != pb::Rag::None || e.changes.iter().all(|c| c.metric != f.metric))
        .map(|f| figure_text(&f.metric, f.value, f.rag()))
        .collect();
    if !rated.is_empty() {
        let _ = write!(line, "\n    {}: {}", e.provider, rated.join(", "));
    }
    if let Some(o) = &e.opel {
        let _ = write!(line, "\n    {}", opel_text(o));
    }
    for a in &e.raised {
        let _ = write!(line, "\n    RAISED {}", alert_text(a));
    }
    for a in &e.cleared {
        let _ = write!(line, "\n    cleared {}", a.key);
    }
    for r in &e.rollups {
        let _ = write!(line, "\n    {}", rollup_text(r, false));
    }
}

/// A snapshot: a summary line, each scope's headline (red and amber figures), and each provider's state.
pub fn snapshot_text(s: &pb::Snapshot) -> String {
    let readings: usize = s.providers.iter().map(|p| p.readings.len()).sum();
    let part = if s.more { " (part; more follow)" } else { "" };
    let mut text = format!("snapshot: {} providers, {} readings{part}  [{}]", s.providers.len(), readings, s.cursor);
    for r in &s.rollups {
        let _ = write!(text, "\n  {}", rollup_text(r, true));
    }
    for p in &s.providers {
        let _ = write!(text, "\n  {} r{} {}", p.provider, p.revision, time(p.period.as_ref()));
        if p.stale {
            text.push_str(" STALE");
        }
        let mut worst: Vec<&pb::Figure> =
            p.figures.iter().filter(|f| matches!(f.rag(), pb::Rag::Red | pb::Rag::Amber)).collect();
        worst.sort_by_key(|f| std::cmp::Reverse(f.rag));
        for (i, f) in worst.iter().enumerate() {
            let _ = write!(text, "{} {}", if i == 0 { ":" } else { "," }, figure_text(&f.metric, f.value, f.rag()));
        }
        if let Some(o) = &p.opel
            && (o.declared.is_some() || o.computed.is_some())
        {
            let _ = write!(text, "\n    {}", opel_text(o));
        }
        for a in &p.alerts {
            let _ = write!(text, "\n    OPEN {}", alert_text(a));
        }
    }
    text
}

/// Any update as a line.
pub fn update_line(u: &pb::Update) -> String {
    match &u.kind {
        Some(pb::update::Kind::Event(e)) => event_line(e),
        Some(pb::update::Kind::Snapshot(s)) => snapshot_text(s),
        Some(pb::update::Kind::Rollups(r)) => {
            let mut line = format!("totals moved by providers outside the filter  [{}]", r.cursor);
            for r in &r.rollups {
                let _ = write!(line, "\n    {}", rollup_text(r, false));
            }
            line
        }
        Some(pb::update::Kind::Heartbeat(h)) => format!("heartbeat {}  [{}]", time(h.server_time.as_ref()), h.cursor),
        Some(pb::update::Kind::Reset(r)) => format!("reset ({}): {}", r.reason().as_str_name(), r.message),
        Some(pb::update::Kind::Status(s)) => {
            format!(
                "{} since {}: {}",
                if s.degraded { "DEGRADED" } else { "restored" },
                time(s.since.as_ref()),
                s.message
            )
        }
        None => "empty update".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitrep_core::Value;
    use sitrep_proto::convert::value_to_wire;

    #[test]
    fn event_line_shows_each_change() {
        let e = pb::Event {
            cursor: "m1:7-0".into(),
            provider: "RJ7".into(),
            period: Some(prost_types::Timestamp { seconds: 1_795_788_000, nanos: 0 }),
            revision: 3,
            live: true,
            changes: vec![
                pb::MetricChange {
                    metric: "a".into(),
                    before: Some(value_to_wire(Value::Number(25.0))),
                    after: Some(value_to_wire(Value::Number(27.0))),
                },
                pb::MetricChange { metric: "b".into(), before: None, after: Some(value_to_wire(Value::Number(1.5))) },
            ],
            ..Default::default()
        };
        assert_eq!(event_line(&e), "2026-11-27T14:00:00Z RJ7 r3 a 25→27, b –→1.5  [m1:7-0]");
    }

    #[test]
    fn aid_events_say_what_happened_in_one_line() {
        use pb::aid_event::{Kind, OfferChanged, RequestChanged};
        let changed = |kind| pb::AidEvent { kind: Some(kind) };
        let update = pb::AidUpdate {
            happened: vec![
                changed(Kind::RequestChanged(RequestChanged { request: "R1".into(), from: 1, to: 2 })),
                changed(Kind::OfferChanged(OfferChanged { offer: "O1".into(), request: "R1".into(), from: 0, to: 1 })),
            ],
            requests: vec![pb::AidRequest { id: "R1".into(), pair: "beds.cc_adult".into(), ..Default::default() }],
            offers: vec![pb::AidOffer {
                id: "O1".into(),
                request: "R1".into(),
                provider: "RVR".into(),
                quantity: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = pb::Event {
            cursor: "m1:9-0".into(),
            provider: "RJ7".into(),
            received_at: Some(prost_types::Timestamp { seconds: 1_795_788_000, nanos: 0 }),
            kind: pb::event::Kind::Aid as i32,
            aid: Some(update),
            ..Default::default()
        };
        let expected = "2026-11-27T14:00:00Z RJ7 aid R1: open -> offered; \
            O1: offered for R1 by RVR (1 beds.cc_adult), proposed  [m1:9-0]";
        assert_eq!(event_line(&e), expected);
        // A holder's event says its holds, even when it holds nothing now.
        let e = pb::Event { aid: None, holds: Some(pb::AidHolds::default()), provider: "RVR".into(), ..e };
        assert_eq!(event_line(&e), "2026-11-27T14:00:00Z RVR aid holds nothing now  [m1:9-0]");
    }

    #[test]
    fn event_lines_show_the_derived_picture() {
        let alert = pb::Alert {
            key: "threshold:RJ7:occ".into(),
            severity: pb::alert::Severity::Critical as i32,
            message: "RJ7: occ is 97.5%, in red".into(),
            ..Default::default()
        };
        let e = pb::Event {
            cursor: "m1:8-0".into(),
            provider: "RJ7".into(),
            period: Some(prost_types::Timestamp { seconds: 1_795_788_000, nanos: 0 }),
            revision: 4,
            live: true,
            changes: vec![pb::MetricChange {
                metric: "occupied".into(),
                before: Some(value_to_wire(Value::Number(30.0))),
                after: Some(value_to_wire(Value::Number(39.0))),
            }],
            figures: vec![
                pb::Figure { metric: "occ".into(), value: Some(97.5), rag: pb::Rag::Red as i32 },
                pb::Figure { metric: "occupied".into(), value: Some(39.0), rag: 0 },
            ],
            opel: Some(pb::Opel {
                declared: Some(2),
                computed: Some(pb::OpelAssessment {
                    level: 3,
                    explanation: "OPEL 3 (score 9 of 12)".into(),
                    ..Default::default()
                }),
                mismatch: true,
            }),
            raised: vec![alert],
            cleared: vec![pb::Alert { key: "stale:RJ7".into(), ..Default::default() }],
            rollups: vec![pb::ScopeRollup {
                scope: Some(pb::Scope { level: "system".into(), code: "QWE".into(), name: "SWL".into() }),
                providers: 5,
                reporting: 3,
                stale: 1,
                metrics: vec![
                    pb::RollupValue {
                        metric: "occ".into(),
                        value: Some(81.66),
                        providers: 2,
                        rag: 1,
                        ..Default::default()
                    },
                    pb::RollupValue {
                        metric: "free".into(),
                        value: Some(4.0),
                        providers: 1,
                        rag: 1,
                        ..Default::default()
                    },
                ],
                critcon: None,
                strain: None,
            }],
            ..Default::default()
        };
        let expected = "2026-11-27T14:00:00Z RJ7 r4 occupied 30→39  [m1:8-0]\n    RJ7: occ 97.5 RED\n    \
            OPEL declared 2, computed 3 (MISMATCH): OPEL 3 (score 9 of 12)\n    \
            RAISED critical: RJ7: occ is 97.5%, in red\n    cleared stale:RJ7\n    \
            system QWE (SWL) 3/5 reporting, 1 STALE: occ 81.7 GREEN (2/5), free 4 GREEN (1/5, partial)";
        assert_eq!(event_line(&e), expected);
    }
}
