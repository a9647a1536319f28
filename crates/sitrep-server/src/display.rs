//! Readable one-line renderings of subscription updates, for `sitrep watch` and the demo's log.
//!
//! Example: `14:00Z RJ7 r3 beds.cc_adult.occupied 25→27, ed.in_department 60→64  [m1x:42-0]`.

use std::fmt::Write;

use sitrep_proto::v1 as pb;

use crate::convert::{timestamp_from_wire, value_from_wire};

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

/// One event as a line: period, provider, revision, each change, and the cursor.
pub fn event_line(e: &pb::Event) -> String {
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
    line
}

/// Any update as a line.
pub fn update_line(u: &pb::Update) -> String {
    match &u.kind {
        Some(pb::update::Kind::Event(e)) => event_line(e),
        Some(pb::update::Kind::Snapshot(s)) => {
            let readings: usize = s.providers.iter().map(|p| p.readings.len()).sum();
            format!("snapshot: {} providers, {} readings  [{}]", s.providers.len(), readings, s.cursor)
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
    use crate::convert::value_to_wire;
    use sitrep_core::Value;

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
}
