//! The JSON forms of the picture, for the HTTP API and the Server-Sent Events stream.
//!
//! They mirror the gRPC messages field for field (snake_case names), with two conventions a browser finds easy:
//! times are milliseconds since the Unix epoch (UTC), and a value is a number or `{"absent": "<reason>"}`.
//! Absent-from-the-object means unset. The shapes are documented in `docs/API.md`.
//!
//! Mutual aid's records are their storage serde form with one change: ids are written as people read them (`"R1"`,
//! `"O1"`), not as the numbers they are stored as ([`aid_request`], [`aid_offer`], [`hold`], [`aid_change`]).

use serde_json::{Map, Value as Json, json};
use sitrep_core::aid::{AidChange, AidEvent, Hold, Measures, Offer, OfferId, Ranking, Request, RequestId, Timers};
use sitrep_core::hourly::ScopeHour;
use sitrep_core::rollup::ScopeRollup;
use sitrep_core::{Cursor, Event, EventKind, HistoryRecord, ProviderLive, Rules, Timestamp, Value};

use crate::health::PictureState;
use crate::views::Hourly;

pub fn value(v: &Value) -> Json {
    match v {
        Value::Number(n) => json!(n),
        Value::Absent(r) => json!({ "absent": r.as_str() }),
    }
}

/// A figure for an event: whole numbers without a fraction, others to four decimal places (89.7399 for a ratio
/// computed as 89.73988439306359), which is more than any display needs and keeps events small.
fn number(v: f64) -> Json {
    let rounded = (v * 1e4).round() / 1e4;
    whole(if rounded.is_finite() { rounded } else { v })
}

/// A number as JSON, whole numbers without the `.0` (a reported value is sent exactly as it came).
fn whole(v: f64) -> Json {
    if v.fract() == 0.0 && v.abs() < 9e15 { json!(v as i64) } else { json!(v) }
}

/// A reported value in an event: a number, or why it is absent.
fn event_value(v: &Value) -> Json {
    match v {
        Value::Number(n) => whole(*n),
        Value::Absent(_) => value(v),
    }
}

fn opt_text(s: &Option<String>) -> Json {
    s.as_ref().map_or(Json::Null, |s| json!(s))
}

/// OPEL levels as an event carries them: the computed level with its score, without the explanation and the
/// per-parameter detail (which snapshots carry), to keep events small.
fn opel_change_json(o: &sitrep_core::state::Opel) -> Json {
    let computed = o
        .computed
        .as_ref()
        .map(|c| json!({ "level": c.level, "score": c.score, "max_score": c.max_score, "percent": c.percent }));
    json!({ "declared": o.declared, "computed": computed, "mismatch": o.mismatch() })
}

/// OPEL levels, the computed one with its explanation.
fn opel_json(o: &sitrep_core::state::Opel) -> Json {
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
        "critcon": r.critcon.as_ref().map(|c| critcon(rules, c)),
        "strain": r.strain.map(|s| json!({
            "open_requests": s.open_requests,
            "unfulfilled_rate": s.unfulfilled_rate.map(number),
        })),
    })
}

/// A derived CRITCON level with its explanation, and whether the rule is the shipped example.
pub fn critcon(rules: &Rules, c: &sitrep_core::critcon::Derived) -> Json {
    json!({
        "level": c.level,
        "rule": c.fired.as_ref().map(|f| &*f.rule),
        "explanation": c.explain(),
        "example_rule": rules.critcon.as_ref().is_some_and(|t| t.example),
    })
}

/// A provider's live state with every figure rated, its OPEL levels and open alerts.
pub fn provider(rules: &Rules, p: &ProviderLive) -> Json {
    let (figures, opel) = (&p.figures, &p.opel);
    let dir = rules.directory.provider(&p.provider);
    let readings: Map<String, Json> = p.readings.iter().map(|(code, r)| (code.to_string(), value(&r.value))).collect();
    // Readings from an earlier hour than the provider's latest say which hour, and whether they still count (see
    // `staleness.value_max_age`): every number shown can say its age.
    let oldest = sitrep_core::derive::oldest_counted(rules, p.period);
    let earlier: Map<String, Json> = p
        .readings
        .iter()
        .filter(|(_, r)| r.period < p.period)
        .map(|(code, r)| (code.to_string(), json!({ "period": r.period, "counted": r.period >= oldest })))
        .collect();
    // By site: each site's latest report and readings, named from the directory (the provider as a whole has
    // `site: null`). Empty while it reports only as a whole.
    let sites: Vec<Json> = p
        .sites
        .iter()
        .map(|(code, s)| {
            let site = (!code.is_empty()).then_some(code.as_str());
            let name = site.and_then(|c| dir?.sites.iter().find(|o| o.code == c)).map(|o| o.name.as_str());
            let readings: Map<String, Json> =
                s.readings.iter().map(|(code, r)| (code.to_string(), value(&r.value))).collect();
            json!({
                "site": site,
                "name": name,
                "period": s.period,
                "revision": s.revision,
                "observed_at": s.observed_at,
                "received_at": s.received_at,
                "narrative": opt_text(&s.narrative),
                "readings": readings,
            })
        })
        .collect();
    let mut out = json!({
        "provider": p.provider,
        "name": dir.map(|d| d.name.as_str()),
        "system": dir.map(|d| d.system.as_str()),
        "site": opt_text(&p.site),
        "sites": sites,
        "period": p.period,
        "revision": p.revision,
        "observed_at": p.observed_at,
        "received_at": p.received_at,
        "narrative": opt_text(&p.narrative),
        "source": opt_text(&p.source),
        "stale": p.stale,
        "readings": readings,
        "earlier": earlier,
        "figures": figures,
        "opel": opel_json(opel),
        "alerts": p.alerts,
    });
    // Beds it holds for accepted mutual aid offers, only when it holds any.
    if !p.holds.is_empty() {
        out["holds"] = Json::Array(p.holds.iter().map(hold).collect());
    }
    out
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

/// An event with everything it changed, in a compact form (a typical hourly report's event is under 2 KB):
/// `metrics` names every metric the event mentions once, in code order; `changes` and `figures` refer to it by
/// index, and each rollup's `value`, `n` and `rag` are arrays aligned with it.
pub fn event(e: &Event) -> Json {
    let metrics = event_metrics(e);
    let at = |code: &str| metrics.binary_search(&code).unwrap_or_default();
    let changes: Vec<Json> = e
        .changes
        .iter()
        .map(|c| json!([at(&c.metric), c.before.as_ref().map(event_value), event_value(&c.after)]))
        .collect();
    let figures: Vec<Json> =
        e.derived.figures.iter().map(|f| json!([at(&f.metric), f.value.map(number), f.rag])).collect();
    let rollups: Vec<Json> = e.rollups.iter().map(|r| event_rollup(r, &metrics)).collect();
    let mut out = json!({
        "cursor": e.cursor.to_string(),
        "kind": match e.kind { EventKind::Report => "report", EventKind::Stale => "stale", EventKind::Aid => "aid" },
        "provider": e.provider,
        "period": e.period,
        "revision": e.revision,
        "observed_at": e.observed_at,
        "received_at": e.received_at,
        "live": e.live,
        "metrics": metrics,
        "changes": changes,
        "figures": figures,
        "rollups": rollups,
    });
    add_event_extras(out.as_object_mut().expect("an object"), e);
    out
}

/// Every metric `e` mentions (changed, figured, or in a rollup), once each, in code order.
fn event_metrics(e: &Event) -> Vec<&str> {
    let mut metrics: Vec<&str> = e
        .changes
        .iter()
        .map(|c| c.metric.as_str())
        .chain(e.derived.figures.iter().map(|f| f.metric.as_str()))
        .chain(e.rollups.iter().flat_map(|r| r.metrics.iter().map(|m| m.metric.as_str())))
        .collect();
    metrics.sort_unstable();
    metrics.dedup();
    metrics
}

/// One of an event's rollups, its figures as arrays aligned with the event's `metrics`.
fn event_rollup(r: &ScopeRollup, metrics: &[&str]) -> Json {
    // Aligned with `metrics`; a metric the rollup does not have (never, unless filtered apart) is null.
    let mut values = Vec::with_capacity(metrics.len());
    let mut n = Vec::with_capacity(metrics.len());
    let mut inputs = Vec::with_capacity(metrics.len());
    let mut rag = Vec::with_capacity(metrics.len());
    for code in metrics {
        let v = r.metrics.iter().find(|m| m.metric == *code);
        values.push(json!(v.and_then(|v| v.value).map(number)));
        n.push(json!(v.map_or(0, |v| v.n)));
        rag.push(json!(v.and_then(|v| v.rag)));
        inputs.push(json!(v.and_then(|v| v.inputs).map(|[a, b]| [number(a), number(b)])));
    }
    let mut out = json!({
        "scope": { "level": r.scope.level.as_str(), "code": r.scope.code },
        "providers": r.providers,
        "reporting": r.reporting,
        "stale": r.stale,
        "value": values,
        "n": n,
        "rag": rag,
    });
    // Derived figures' summed inputs, only when the event has a derived figure.
    if inputs.iter().any(|i| !i.is_null()) {
        out["inputs"] = Json::Array(inputs);
    }
    // Whether the rule is the shipped example is in the snapshot's rollups: events are encoded once for all.
    if let Some(c) = &r.critcon {
        out["critcon"] = json!({
            "level": c.level,
            "rule": c.fired.as_ref().map(|f| &*f.rule),
            "explanation": c.explain(),
        });
    }
    out
}

/// Adds to an event's fields those it leaves out when unset: texts, the sender, alerts raised and cleared, an OPEL
/// level that changed, and a mutual aid change.
fn add_event_extras(fields: &mut Map<String, Json>, e: &Event) {
    // Unset texts, unchanged OPEL levels and empty lists of alerts are left out.
    for (name, text) in [("site", &e.site), ("narrative", &e.narrative), ("source", &e.source)] {
        if let Some(t) = text {
            fields.insert(name.into(), json!(t));
        }
    }
    if let Some(s) = &e.sender {
        fields.insert("sender".into(), sender(s));
    }
    // Raised alerts in full; cleared ones by key, which is all a subscriber needs to close them.
    if !e.derived.raised.is_empty() {
        fields.insert("raised".into(), json!(e.derived.raised));
    }
    if !e.derived.cleared.is_empty() {
        fields.insert("cleared".into(), json!(e.derived.cleared.iter().map(|a| &a.key).collect::<Vec<_>>()));
    }
    if let Some(o) = &e.derived.opel {
        fields.insert("opel".into(), opel_change_json(o));
    }
    if let Some(a) = &e.aid {
        fields.insert("aid".into(), aid_change(a));
    }
}

/// Replaces the number at `v[field]` with the id it stands for, as people read it (`R1`, `O1`).
fn id_text(v: &mut Json, field: &str, text: impl Fn(u64) -> String) {
    if let Some(n) = v.get(field).and_then(Json::as_u64) {
        v[field] = json!(text(n));
    }
}

fn request_id(n: u64) -> String {
    RequestId(n).to_string()
}

fn offer_id(n: u64) -> String {
    OfferId(n).to_string()
}

/// A request as stored, its id and its offers' ids written `R1` and `O1`.
pub fn aid_request(r: &Request) -> Json {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    id_text(&mut v, "id", request_id);
    v["offers"] = json!(r.offers.iter().map(ToString::to_string).collect::<Vec<_>>());
    v
}

/// An offer as stored, its id and its request's written `O1` and `R1`.
pub fn aid_offer(o: &Offer) -> Json {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    id_text(&mut v, "id", offer_id);
    id_text(&mut v, "request", request_id);
    v
}

/// A hold as a provider's JSON lists it: `{offer, pair, quantity, until}` (the provider is the one it is listed
/// under; the baseline is the store's business).
pub fn hold(h: &Hold) -> Json {
    json!({ "offer": h.offer.to_string(), "pair": h.pair, "quantity": h.quantity, "until": h.until })
}

fn aid_event(e: &AidEvent) -> Json {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    id_text(&mut v, "request", request_id);
    id_text(&mut v, "offer", offer_id);
    v
}

/// What an event changed in mutual aid: `happened` (for people), the changed `requests` and `offers` as they are
/// after it (the book's event), and `holds` (the holding provider's event: its holds after it). Empty parts are
/// left out.
pub fn aid_change(a: &AidChange) -> Json {
    let mut out = Map::new();
    out.insert("happened".into(), Json::Array(a.happened.iter().map(aid_event).collect()));
    if !a.requests.is_empty() {
        out.insert("requests".into(), Json::Array(a.requests.iter().map(aid_request).collect()));
    }
    if !a.offers.is_empty() {
        out.insert("offers".into(), Json::Array(a.offers.iter().map(aid_offer).collect()));
    }
    if let Some(h) = &a.holds {
        out.insert("holds".into(), Json::Array(h.iter().map(hold).collect()));
    }
    Json::Object(out)
}

/// A request with its offers (each with its decisions): what `/api/v1/aid/requests` lists.
pub fn aid_case(c: &crate::aid::Case) -> Json {
    json!({ "request": aid_request(&c.request), "offers": c.offers.iter().map(aid_offer).collect::<Vec<_>>() })
}

/// The escalation timers, in milliseconds after a request's creation.
pub fn aid_timers(t: &Timers) -> Json {
    json!({ "system_after_ms": t.system_after_ms, "region_after_ms": t.region_after_ms })
}

/// A request's candidates, best first, and the providers left out with why.
pub fn aid_ranking(r: &Ranking) -> Json {
    json!({
        "candidates": r.candidates.iter().map(|c| json!({
            "provider": c.provider,
            "scope": c.scope.as_str(),
            "headroom": c.headroom,
            "distance_km": c.distance_km,
            "reason": c.reason,
        })).collect::<Vec<_>>(),
        "excluded": r.excluded.iter().map(|e| json!({ "provider": e.provider, "why": e.why })).collect::<Vec<_>>(),
    })
}

/// A scope's mutual aid measures; durations in milliseconds.
pub fn aid_measures(scope: &str, m: &Measures) -> Json {
    let durations =
        |d: &sitrep_core::aid::Durations| json!({ "count": d.count, "median_ms": d.median_ms, "p90_ms": d.p90_ms });
    let balances: Map<String, Json> =
        m.balances.iter().map(|(p, b)| (p.clone(), json!({ "given": b.given, "received": b.received }))).collect();
    json!({
        "scope": scope,
        "requests": m.requests,
        "open_requests": m.open_requests,
        "oldest_open_ms": m.oldest_open_ms,
        "to_first_offer": durations(&m.to_first_offer),
        "to_acceptance": durations(&m.to_acceptance),
        "to_completion": durations(&m.to_completion),
        "unfulfilled_rate": m.unfulfilled_rate.map(number),
        "balances": balances,
    })
}

pub fn status(s: &PictureState) -> Json {
    json!({ "degraded": s.degraded, "message": s.message, "since": s.since })
}

/// Who sent a report: `{name, credential, address}`.
fn sender(s: &sitrep_core::Sender) -> Json {
    json!({ "name": s.name, "credential": s.credential, "address": s.address })
}

pub fn history(provider: &str, records: &[HistoryRecord]) -> Json {
    let entries: Vec<Json> = records
        .iter()
        .map(|h| {
            let values: Map<String, Json> = h.values.iter().map(|(k, v)| (k.to_string(), value(v))).collect();
            json!({
                "period": h.period,
                "revision": h.revision,
                "observed_at": h.observed_at,
                "received_at": h.received_at,
                "values": values,
                "narrative": opt_text(&h.narrative),
                "source": opt_text(&h.source),
                "site": opt_text(&h.site),
                "sender": h.sender.as_ref().map(sender),
            })
        })
        .collect();
    json!({ "provider": provider, "entries": entries })
}

/// An hour-by-hour view ([`crate::views::hourly`]) as `GetHourly` answers it: `{metric, provider | scope, points:
/// [{period, value, change, revision, corrections, reported, ...}]}`; a scope's points also say which providers
/// reported, how many were expected and the completeness.
pub fn hourly(metric: &str, view: &Hourly) -> Json {
    let scope_point = |h: &ScopeHour, with_providers: bool| {
        let mut point = json!({
            "period": h.period,
            "value": h.value.map(whole),
            "change": h.change.map(number),
            "corrections": h.corrections,
            "reported": !h.reported.is_empty(),
        });
        if with_providers {
            point["providers_reported"] = json!(h.reported);
            point["providers_expected"] = json!(h.expected);
            point["completeness"] = number(h.completeness);
        }
        point
    };
    match view {
        Hourly::Provider { provider, hours } => {
            let points: Vec<Json> = hours
                .iter()
                .map(|h| {
                    json!({
                        "period": h.period,
                        "value": h.value.as_ref().map(value),
                        "change": h.change.map(number),
                        "revision": h.revision,
                        "corrections": h.corrections,
                        "reported": h.reported,
                    })
                })
                .collect();
            json!({ "metric": metric, "provider": provider, "points": points })
        }
        Hourly::ProviderDerived { provider, hours } => {
            let points: Vec<Json> = hours.iter().map(|h| scope_point(h, false)).collect();
            json!({ "metric": metric, "provider": provider, "points": points })
        }
        Hourly::Scope { scope, hours } => {
            let points: Vec<Json> = hours.iter().map(|h| scope_point(h, true)).collect();
            json!({ "metric": metric, "scope": scope.to_string(), "points": points })
        }
    }
}

/// What one stored report changed: its values that differ from the provider's (and site's) report received
/// before it, as `(metric, before, after)`; `before` is `None` when that earlier report had no such value.
#[derive(Clone, Debug, PartialEq)]
pub struct Change<'a> {
    pub provider: &'a str,
    pub record: &'a HistoryRecord,
    pub changes: Vec<(&'a str, Option<&'a Value>, &'a Value)>,
}

impl Change<'_> {
    pub fn received_at(&self) -> Timestamp {
        self.record.received_at
    }
}

/// The reports of `records` (one provider's history) received at or after `since`, each with what it changed
/// from the report of the same site received before it (the earlier records are the baseline). A revision that
/// changed no value is still listed when it carries a narrative.
pub fn changes_since<'a>(provider: &'a str, records: &'a [HistoryRecord], since: Timestamp) -> Vec<Change<'a>> {
    let mut order: Vec<&HistoryRecord> = records.iter().collect();
    order.sort_by_key(|r| (r.received_at, r.period, r.revision));
    let mut last: std::collections::HashMap<(Option<&str>, &str), &Value> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for r in order {
        let site = r.site.as_deref();
        let changes: Vec<_> = r
            .values
            .iter()
            .filter_map(|(code, v)| {
                let before = last.insert((site, code.as_str()), v);
                (before != Some(v)).then_some((code.as_str(), before, v))
            })
            .collect();
        if r.received_at >= since && (!changes.is_empty() || r.narrative.is_some()) {
            out.push(Change { provider, record: r, changes });
        }
    }
    out
}

/// One change as `/api/v1/changes` lists it.
pub fn change(c: &Change<'_>) -> Json {
    let r = c.record;
    let changes: Vec<Json> =
        c.changes.iter().map(|(m, before, after)| json!([m, before.map(event_value), event_value(after)])).collect();
    let mut out = json!({
        "provider": c.provider,
        "period": r.period,
        "revision": r.revision,
        "received_at": r.received_at,
        "changes": changes,
    });
    let fields = out.as_object_mut().expect("an object");
    for (name, text) in [("site", &r.site), ("narrative", &r.narrative), ("source", &r.source)] {
        if let Some(t) = text {
            fields.insert(name.into(), json!(t));
        }
    }
    out
}

/// The part of the directory a caller may read (see [`sitrep_core::Directory::part`]).
pub fn directory(rules: &Rules, readable: &sitrep_core::Selection) -> Json {
    let part = rules.directory.part(readable);
    json!({
        "nation": { "code": part.nation.code, "name": part.nation.name },
        "regions": part.regions.iter().map(|r| json!({ "code": r.code, "name": r.name })).collect::<Vec<_>>(),
        "systems": part.systems.iter().map(|s| json!({ "code": s.code, "name": s.name, "region": s.region })).collect::<Vec<_>>(),
        "providers": part.providers.iter().map(|p| {
            let mut provider = json!({
                "code": p.code,
                "name": p.name,
                "system": p.system,
                "kind": p.kind.as_str(),
                "sites": p.sites.iter().map(|s| {
                    let mut site = json!({ "code": s.code, "name": s.name });
                    if let Some(l) = s.location() {
                        site["location"] = location(l);
                    }
                    site
                }).collect::<Vec<_>>(),
            });
            if let Some(l) = p.location() {
                provider["location"] = location(l);
            }
            provider
        }).collect::<Vec<_>>(),
    })
}

/// A place as JSON: `{latitude, longitude}` in decimal degrees.
fn location(l: sitrep_core::directory::Location) -> Json {
    json!({ "latitude": l.latitude, "longitude": l.longitude })
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

    /// The JSON a subscriber gets for a trust's hourly report of 24 metrics, over two simulated days (values
    /// drifting as the simulator's do), with the rollups each changed: sizes printed, and the median held to issue
    /// 7's goal of 2 KB. (Before the compact form: 5.3 KB, 3 KB of it the rollups of three scopes.)
    #[test]
    fn a_typical_event_is_under_two_kilobytes_of_json() {
        let rules = Rules::demo();
        let now = Timestamp::parse_rfc3339("2026-11-27T14:35:00Z").unwrap();
        let mut sim = SimProvider::new("RJ7", ProviderKind::Acute, 3);
        let mut picture = Picture::new(rules.clone(), sitrep_core::Cursor::none());
        let mut prior = None;
        let mut sizes = Vec::new();
        for hour in 0..48 {
            let (values, opel) = sim.step(1.0);
            let r = Report {
                provider: "RJ7".into(),
                period: Some(now.hour_start().add_hours(hour - 48)),
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
            let json = event_json(&event);
            if std::env::var("SITREP_SHOW_EVENT").is_ok() {
                println!("{json}");
            }
            // The first report sets every value: not a typical hour.
            if hour > 0 {
                let alerts = event.derived.raised.len() + event.derived.cleared.len();
                event.derived.raised.clear();
                event.derived.cleared.clear();
                sizes.push((event_json(&event).len(), json.len(), event.changes.len(), alerts));
            }
        }
        let median = |mut v: Vec<usize>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        let without = median(sizes.iter().map(|s| s.0).collect());
        let with = median(sizes.iter().map(|s| s.1).collect());
        let changes = median(sizes.iter().map(|s| s.2).collect());
        let alerts = median(sizes.iter().map(|s| s.3).collect());
        let max = sizes.iter().map(|s| s.1).max().unwrap();
        println!(
            "event JSON over {} hourly reports ({changes} values changed at the median): median {without} bytes \
             without alerts; {with} bytes as simulated ({alerts} alerts raised or cleared at the median: the \
             simulator's small bed counts jump often), max {max}",
            sizes.len()
        );
        assert!(without <= 2_000, "median event {without} bytes without alerts");
        assert!(with <= 3_000, "median event {with} bytes with its alerts");
    }

    fn event_json(e: &Event) -> String {
        event(e).to_string()
    }

    /// What a report changed is its values that differ from the same site's report received before it; the
    /// records before `since` are only the baseline, and a revision that changed nothing is left out unless it has
    /// a narrative.
    #[test]
    fn changes_are_differences_from_the_report_received_before() {
        let record =
            |received: i64, site: Option<&str>, values: &[(&str, f64)], narrative: Option<&str>| HistoryRecord {
                period: Timestamp::from_millis(0),
                revision: received as u32,
                observed_at: Timestamp::from_millis(received),
                received_at: Timestamp::from_millis(received),
                values: values.iter().map(|(k, v)| (sitrep_core::Code::from(*k), Value::Number(*v))).collect(),
                narrative: narrative.map(str::to_owned),
                source: None,
                site: site.map(str::to_owned),
                sender: None,
            };
        let records = [
            record(1, None, &[("a", 1.0), ("b", 2.0)], None),
            record(3, None, &[("a", 1.0), ("b", 5.0)], None),
            record(2, Some("S1"), &[("a", 7.0)], None),
            record(4, None, &[("a", 1.0), ("b", 5.0)], None),
            record(5, None, &[("a", 1.0), ("b", 5.0)], Some("all quiet")),
        ];
        let found = changes_since("P", &records, Timestamp::from_millis(2));
        type Seen<'a> = Vec<(i64, Vec<(&'a str, Option<f64>, f64)>)>;
        let seen: Seen<'_> = found
            .iter()
            .map(|c| {
                let num = |v: &Value| match v {
                    Value::Number(n) => *n,
                    Value::Absent(_) => f64::NAN,
                };
                (c.received_at().millis(), c.changes.iter().map(|(m, b, a)| (*m, b.map(num), num(a))).collect())
            })
            .collect();
        assert_eq!(seen, vec![(2, vec![("a", None, 7.0)]), (3, vec![("b", Some(2.0), 5.0)]), (5, vec![])]);
        assert_eq!(change(&found[1])["changes"], json!([["b", 2, 5]]));
        assert_eq!(change(&found[2])["narrative"], "all quiet");
    }
}
