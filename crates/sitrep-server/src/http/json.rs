//! The JSON forms of the picture, for the HTTP API and the Server-Sent Events stream.
//!
//! They mirror the gRPC messages field for field (snake_case names), with two conventions a browser finds easy:
//! times are milliseconds since the Unix epoch (UTC), and a value is a number or `{"absent": "<reason>"}`.
//! Absent-from-the-object means unset. The shapes are documented in `docs/API.md`.

use serde_json::{Map, Value as Json, json};
use sitrep_core::rollup::ScopeRollup;
use sitrep_core::{Cursor, Event, EventKind, HistoryRecord, ProviderLive, Rules, Timestamp, Value};

use crate::hub::PictureState;

pub fn value(v: &Value) -> Json {
    match v {
        Value::Number(n) => json!(n),
        Value::Absent(r) => json!({ "absent": r.as_str() }),
    }
}

fn opt_text(s: &Option<String>) -> Json {
    s.as_ref().map_or(Json::Null, |s| json!(s))
}

/// OPEL levels as an event carries them: the computed level with its score and explanation, without the
/// per-parameter detail (which snapshots carry), to keep events small.
fn opel_change_json(o: &sitrep_core::derive::Opel) -> Json {
    let computed = o.computed.as_ref().map(|c| {
        json!({
            "level": c.level,
            "score": c.score,
            "max_score": c.max_score,
            "percent": c.percent,
            "explanation": c.explain(),
        })
    });
    json!({ "declared": o.declared, "computed": computed, "mismatch": o.mismatch() })
}

/// OPEL levels, the computed one with its explanation.
fn opel_json(o: &sitrep_core::derive::Opel) -> Json {
    let computed = o.computed.as_ref().map(|c| {
        let mut v = serde_json::to_value(c).unwrap_or_default();
        v["explanation"] = json!(c.explain());
        v
    });
    json!({ "declared": o.declared, "computed": computed, "mismatch": o.mismatch() })
}

/// A scope's rollup, with its name.
pub fn rollup(rules: &Rules, r: &ScopeRollup) -> Json {
    json!({
        "scope": { "level": r.scope.level.as_str(), "code": r.scope.code, "name": rules.scope_name(&r.scope) },
        "providers": r.providers,
        "reporting": r.reporting,
        "stale": r.stale,
        "metrics": r.metrics,
    })
}

/// A provider's live state with every figure rated, its OPEL levels and open alerts.
pub fn provider(rules: &Rules, p: &ProviderLive) -> Json {
    let (figures, opel) = (&p.figures, &p.opel);
    let dir = rules.directory.provider(&p.provider);
    let readings: Map<String, Json> = p.readings.iter().map(|(code, r)| (code.clone(), value(&r.value))).collect();
    json!({
        "provider": p.provider,
        "name": dir.map(|d| d.name.as_str()),
        "system": dir.map(|d| d.system.as_str()),
        "site": opt_text(&p.site),
        "period": p.period,
        "revision": p.revision,
        "observed_at": p.observed_at,
        "received_at": p.received_at,
        "narrative": opt_text(&p.narrative),
        "source": opt_text(&p.source),
        "stale": p.stale,
        "readings": readings,
        "figures": figures,
        "opel": opel_json(opel),
        "alerts": p.alerts,
    })
}

/// A snapshot (or one part of it: `more` says further parts follow): providers in code order, then every scope's
/// rollups (in the first part).
pub fn snapshot(
    rules: &Rules,
    cursor: &Cursor,
    providers: &[std::sync::Arc<ProviderLive>],
    rollups: &[ScopeRollup],
    more: bool,
) -> Json {
    let rollups: Vec<Json> = rollups.iter().map(|r| rollup(rules, r)).collect();
    json!({
        "cursor": cursor.to_string(),
        "providers": providers.iter().map(|p| provider(rules, p)).collect::<Vec<_>>(),
        "rollups": rollups,
        "more": more,
        "server_time": Timestamp::now(),
    })
}

/// An event with everything it changed.
pub fn event(rules: &Rules, e: &Event) -> Json {
    let changes: Vec<Json> = e
        .changes
        .iter()
        .map(|c| json!({ "metric": c.metric, "before": c.before.as_ref().map(value), "after": value(&c.after) }))
        .collect();
    json!({
        "cursor": e.cursor.to_string(),
        "kind": match e.kind { EventKind::Report => "report", EventKind::Stale => "stale" },
        "provider": e.provider,
        "site": opt_text(&e.site),
        "period": e.period,
        "revision": e.revision,
        "observed_at": e.observed_at,
        "received_at": e.received_at,
        "live": e.live,
        "changes": changes,
        "narrative": opt_text(&e.narrative),
        "source": opt_text(&e.source),
        "figures": e.derived.figures,
        "opel": e.derived.opel.as_ref().map(opel_change_json),
        "raised": e.derived.raised,
        "cleared": e.derived.cleared,
        "rollups": e.rollups.iter().map(|r| rollup(rules, r)).collect::<Vec<_>>(),
    })
}

pub fn status(s: &PictureState) -> Json {
    json!({ "degraded": s.degraded, "message": s.message, "since": s.since })
}

pub fn history(provider: &str, records: &[HistoryRecord]) -> Json {
    let entries: Vec<Json> = records
        .iter()
        .map(|h| {
            let values: Map<String, Json> = h.values.iter().map(|(k, v)| (k.clone(), value(v))).collect();
            json!({
                "period": h.period,
                "revision": h.revision,
                "observed_at": h.observed_at,
                "received_at": h.received_at,
                "values": values,
                "narrative": opt_text(&h.narrative),
                "source": opt_text(&h.source),
                "site": opt_text(&h.site),
            })
        })
        .collect();
    json!({ "provider": provider, "entries": entries })
}

pub fn directory(rules: &Rules) -> Json {
    let d = &rules.directory;
    json!({
        "nation": { "code": d.nation().code, "name": d.nation().name },
        "regions": d.regions().map(|r| json!({ "code": r.code, "name": r.name })).collect::<Vec<_>>(),
        "systems": d.systems().map(|s| json!({ "code": s.code, "name": s.name, "region": s.region })).collect::<Vec<_>>(),
        "providers": d.providers().map(|p| json!({
            "code": p.code,
            "name": p.name,
            "system": p.system,
            "kind": p.kind.as_str(),
            "sites": p.sites.iter().map(|s| json!({ "code": s.code, "name": s.name })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn catalogue(rules: &Rules) -> Json {
    let c = &rules.catalogue;
    json!({
        "profile": c.profile,
        "metrics": c.metrics().map(|m| json!({
            "code": m.code,
            "label": m.label,
            "unit": m.unit,
            "kind": m.kind.as_str(),
            "rollup": m.rollup.as_str(),
            "at_most": m.at_most,
            "min": m.min,
            "max": m.max,
            "rag": m.rag,
            "jump": m.jump,
            "description": m.description,
        })).collect::<Vec<_>>(),
        "derived": c.derived_metrics().map(|d| json!({
            "code": d.code,
            "label": d.label,
            "unit": d.unit,
            "kind": d.kind.as_str(),
            "inputs": d.formula.inputs(),
            "formula": match d.formula {
                sitrep_core::catalogue::Formula::Ratio { .. } => "ratio",
                sitrep_core::catalogue::Formula::Difference { .. } => "difference",
            },
            "rag": d.rag,
            "description": d.description,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitrep_core::directory::ProviderKind;
    use sitrep_core::sim::SimProvider;
    use sitrep_core::{Limits, Picture, Report, plan, validate};

    /// The JSON a subscriber gets for a typical hourly report of a trust's 24 metrics (values drifting as the
    /// simulator's do over an hour), with the rollups it changed: printed, and held to a bound that catches growth.
    /// (Measured 5.3 KB with 9 of 24 values changed, about 3 KB of it the rollups of three scopes; issue 7's goal of
    /// 2 KB needs a more compact JSON form.)
    #[test]
    fn a_typical_event_is_a_few_kilobytes_of_json() {
        let rules = Rules::demo();
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let mut sim = SimProvider::new("RJ7", ProviderKind::Acute, 3);
        let mut picture = Picture::new(rules.clone(), sitrep_core::Cursor::none());
        let mut prior = None;
        let mut size = 0;
        for hour in 0..2 {
            let (values, opel) = sim.step(1.0);
            let r = Report {
                provider: "RJ7".into(),
                period: Some(now.hour_start().add_hours(hour - 1)),
                revision: 1,
                observed_at: Some(now),
                values: values.into_iter().map(|(k, v)| (k, v.into())).collect(),
                opel_level: Some(opel),
                narrative: Some("Escalation meeting at 15:00".into()),
                source: Some("PAS export".into()),
                ..Default::default()
            };
            let valid = validate(&r, &rules.directory, &rules.catalogue, &Limits::default(), now).unwrap();
            let p = plan::report(&rules, prior.as_ref(), None, &valid, now, 24);
            prior = p.state.clone();
            let mut event = p.event;
            event.rollups = picture.apply(&event).unwrap();
            size = event_json(&rules, &event).len();
            if std::env::var("SITREP_SHOW_EVENT").is_ok() {
                println!("{}", event_json(&rules, &event));
            }
            println!(
                "hour {hour}: {} values, {} changes, event JSON {size} bytes",
                valid.values().len(),
                event.changes.len()
            );
        }
        assert!(size < 8_000, "{size} bytes");
    }

    fn event_json(rules: &Rules, e: &Event) -> String {
        event(rules, e).to_string()
    }
}
