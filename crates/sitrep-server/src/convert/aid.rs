//! Mutual aid on the wire: `AidService`'s messages (`proto/sitrep/v1/aid.proto`) to the core's actions, and the
//! core's requests, offers, holds, events, candidates and measures back to messages.
//!
//! From the wire, this checks only what the wire form can get wrong and the core cannot see: a missing or
//! malformed field (an id that is not `R<n>` or `O<n>`, an enum value that is unspecified or unknown, a timestamp
//! with impossible nanos), and a quantity of 0, which proto3 cannot tell from a field left
//! out. Every such fault of a message is listed in one `INVALID_ARGUMENT` with `google.rpc.BadRequest` field
//! violations, each naming the action, the field, the rule and the value (`offer: request = "X7" is not a request
//! id like R12`). The rest is said once, elsewhere: the domain's rules (needed-by in the future, a pair rather than a
//! metric, the lengths of reference and summary) in the core, whose refusals [`crate::aid::refused`] turns into
//! errors; the message's `cursor` and who may act in [`crate::aid::act`], which takes the action made here; scopes
//! in [`crate::aid`]'s views, which know the directory (so `ListAidRequests` and `GetAidMeasures` need no decoding).
//!
//! To the wire, nothing can fail. A request goes out with its offers ([`crate::aid::Case`]) and, for accepted ones,
//! the holds in force that the caller knows (holds live in the holding providers' state). The escalation event names
//! the coordinators' scope, which needs the directory. An overcommitted provider is not an aid event on the wire but
//! an alert (`KIND_OVERCOMMITTED`) on its own event.

use sitrep_core::aid::{
    Action, AidChange, AidEvent, Constraints, Decision, Hold, HoldEnd, Kind, Measures, NewRequest, Offer, OfferId,
    OfferState, Ranking, Request, RequestId, RequestState, Stage, Urgency, coordinators,
};
use sitrep_core::{Cursor, Directory, Level, Timestamp, Violation};
use sitrep_proto::v1 as pb;

use super::{timestamp_from_wire, timestamp_to_wire};
use crate::aid::{Case, Done};
use crate::error::Error;
// Clients parse the ids people type too (`sitrep aid accept O3`): the parsing lives beside the wire types.
pub use sitrep_proto::convert::{parse_offer_id, parse_request_id};

/// How much of a request's record goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trail {
    /// Without the decision trails (lists).
    Omitted,
    /// With the decision trails of the request and its offers.
    Full,
}

/// The violations found in one message, reported together.
struct Check {
    action: &'static str,
    violations: Vec<Violation>,
}

impl Check {
    fn new(action: &'static str) -> Self {
        Check { action, violations: Vec::new() }
    }

    fn fail(&mut self, field: &str, rule: &'static str, value: impl std::fmt::Debug, why: &str) {
        let description = format!("{}: {field} = {value:?} {why}", self.action);
        self.violations.push(Violation { field: field.to_owned(), rule, description });
    }

    fn required_text(&mut self, field: &str, value: &str, why: &str) {
        if value.trim().is_empty() {
            self.fail(field, "required", value, why);
        }
    }

    fn request_id(&mut self, field: &str, text: &str) -> Option<RequestId> {
        let id = parse_request_id(text);
        if id.is_none() {
            self.fail(field, "request_id", text, "is not a request id like R12");
        }
        id
    }

    fn offer_id(&mut self, field: &str, text: &str) -> Option<OfferId> {
        let id = parse_offer_id(text);
        if id.is_none() {
            self.fail(field, "offer_id", text, "is not an offer id like O3");
        }
        id
    }

    fn quantity(&mut self, value: u32) {
        if value == 0 {
            self.fail("quantity", "at_least", value, "must be at least 1");
        }
    }

    fn timestamp(&mut self, field: &str, t: Option<&prost_types::Timestamp>) -> Option<Timestamp> {
        match t {
            None => {
                self.violations.push(Violation {
                    field: field.to_owned(),
                    rule: "required",
                    description: format!("{}: {field} is required", self.action),
                });
                None
            }
            Some(t) if !(0..1_000_000_000).contains(&t.nanos) => {
                self.fail(&format!("{field}.nanos"), "valid_timestamp", t.nanos, "is outside 0..=999999999");
                None
            }
            Some(t) => Some(timestamp_from_wire(t)),
        }
    }

    /// Either the value built from the checked fields, or every violation found.
    fn done<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Error> {
        if !self.violations.is_empty() {
            return Err(Error::invalid(&self.violations));
        }
        // Every `None` the builder can meet was recorded as a violation above.
        build().ok_or_else(|| Error::internal(format!("{}: a field was refused without a violation", self.action)))
    }
}

fn kind_from_wire(code: i32) -> Option<Kind> {
    use pb::aid_request::Kind as W;
    match W::try_from(code).ok()? {
        W::Unspecified => None,
        W::PatientTransfer => Some(Kind::PatientTransfer),
        W::Cohort => Some(Kind::Cohort),
        W::Staff => Some(Kind::Staff),
        W::Equipment => Some(Kind::Equipment),
    }
}

fn urgency_from_wire(code: i32) -> Option<Urgency> {
    use pb::aid_request::Urgency as W;
    match W::try_from(code).ok()? {
        W::Unspecified => None,
        W::Routine => Some(Urgency::Routine),
        W::Urgent => Some(Urgency::Urgent),
        W::Immediate => Some(Urgency::Immediate),
    }
}

fn stage_from_wire(code: i32) -> Option<Stage> {
    use pb::progress_request::Stage as W;
    match W::try_from(code).ok()? {
        W::Unspecified => None,
        W::InTransit => Some(Stage::InTransit),
        W::Completed => Some(Stage::Completed),
    }
}

/// An enum field's value for a message: its name when known, else its number.
fn enum_text(name: Option<&str>, code: i32) -> String {
    name.map_or_else(|| code.to_string(), str::to_owned)
}

fn owned(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

pub fn create_from_wire(m: &pb::NewAidRequest) -> Result<Action, Error> {
    let mut c = Check::new("create_request");
    c.required_text("provider", &m.provider, "must name the requesting provider");
    let kind = kind_from_wire(m.kind);
    if kind.is_none() {
        let name = pb::aid_request::Kind::try_from(m.kind).ok().map(|k| k.as_str_name());
        c.fail(
            "kind",
            "known_value",
            enum_text(name, m.kind),
            "is not a kind: patient_transfer, cohort, staff or equipment",
        );
    }
    c.required_text("pair", &m.pair, "must name a capacity pair such as beds.cc_adult");
    c.quantity(m.quantity);
    let urgency = urgency_from_wire(m.urgency);
    if urgency.is_none() {
        let name = pb::aid_request::Urgency::try_from(m.urgency).ok().map(|k| k.as_str_name());
        c.fail("urgency", "known_value", enum_text(name, m.urgency), "is not an urgency: routine, urgent or immediate");
    }
    let needed_by = c.timestamp("needed_by", m.needed_by.as_ref());
    let wire = m.constraints.clone().unwrap_or_default();
    let within = match wire.within.as_str() {
        "" => Some(Level::Nation),
        text => Level::parse(text),
    };
    if within.is_none() {
        c.fail("constraints.within", "known_value", &wire.within, "is not a scope level: system, region or nation");
    }
    c.required_text("reference", &m.reference, "must be the requester's own reference id");
    c.done(|| {
        let ask = NewRequest {
            provider: m.provider.clone(),
            site: owned(&m.site),
            kind: kind?,
            pair: m.pair.clone(),
            quantity: m.quantity,
            urgency: urgency?,
            needed_by: needed_by?,
            constraints: Constraints { within: within?, isolation: wire.isolation },
            reference: m.reference.clone(),
            summary: m.summary.clone(),
        };
        Some(Action::Create(ask))
    })
}

pub fn offer_from_wire(m: &pb::NewAidOffer) -> Result<Action, Error> {
    let mut c = Check::new("offer");
    let request = c.request_id("request", &m.request);
    c.required_text("provider", &m.provider, "must name the offering provider");
    c.quantity(m.quantity);
    let hold_until = c.timestamp("hold_until", m.hold_until.as_ref());
    c.done(|| {
        let action = Action::Offer {
            request: request?,
            provider: m.provider.clone(),
            site: owned(&m.site),
            quantity: m.quantity,
            hold_until: hold_until?,
        };
        Some(action)
    })
}

/// The offering provider's occupied count, from which the hold's release is judged, is not the caller's to say:
/// the store's plan reads it from the provider's stored state, so the action carries 0 until then.
pub fn accept_from_wire(m: &pb::AcceptOffer) -> Result<Action, Error> {
    let mut c = Check::new("accept");
    let offer = c.offer_id("offer", &m.offer);
    c.done(|| Some(Action::Accept { offer: offer?, baseline_occupied: 0 }))
}

pub fn decline_from_wire(m: &pb::DeclineOffer) -> Result<Action, Error> {
    let mut c = Check::new("decline");
    let offer = c.offer_id("offer", &m.offer);
    c.done(|| Some(Action::Decline(offer?)))
}

pub fn withdraw_from_wire(m: &pb::WithdrawOffer) -> Result<Action, Error> {
    let mut c = Check::new("withdraw");
    let offer = c.offer_id("offer", &m.offer);
    c.done(|| Some(Action::Withdraw(offer?)))
}

pub fn progress_from_wire(m: &pb::ProgressRequest) -> Result<Action, Error> {
    let mut c = Check::new("progress");
    let request = c.request_id("request", &m.request);
    let stage = stage_from_wire(m.stage);
    if stage.is_none() {
        let name = pb::progress_request::Stage::try_from(m.stage).ok().map(|s| s.as_str_name());
        c.fail("stage", "known_value", enum_text(name, m.stage), "is not a stage: in_transit or completed");
    }
    c.done(|| Some(Action::Progress { request: request?, stage: stage? }))
}

pub fn cancel_from_wire(m: &pb::CancelRequest) -> Result<Action, Error> {
    let mut c = Check::new("cancel");
    let request = c.request_id("request", &m.request);
    c.required_text("reason", &m.reason, "must say why the capacity is no longer needed");
    c.done(|| Some(Action::Cancel { request: request?, reason: m.reason.clone() }))
}

pub fn unfulfilled_from_wire(m: &pb::UnfulfilledRequest) -> Result<Action, Error> {
    let mut c = Check::new("unfulfilled");
    let request = c.request_id("request", &m.request);
    c.required_text("reason", &m.reason, "must say why the need could not be met");
    c.done(|| Some(Action::Unfulfilled { request: request?, reason: m.reason.clone() }))
}

pub fn get_from_wire(m: &pb::GetAidRequest) -> Result<RequestId, Error> {
    let mut c = Check::new("get_request");
    let id = c.request_id("request", &m.request);
    c.done(|| id)
}

pub fn candidates_from_wire(m: &pb::GetAidCandidates) -> Result<RequestId, Error> {
    let mut c = Check::new("candidates");
    let id = c.request_id("request", &m.request);
    c.done(|| id)
}

fn kind_to_wire(k: Kind) -> pb::aid_request::Kind {
    use pb::aid_request::Kind as W;
    match k {
        Kind::PatientTransfer => W::PatientTransfer,
        Kind::Cohort => W::Cohort,
        Kind::Staff => W::Staff,
        Kind::Equipment => W::Equipment,
    }
}

fn urgency_to_wire(u: Urgency) -> pb::aid_request::Urgency {
    use pb::aid_request::Urgency as W;
    match u {
        Urgency::Routine => W::Routine,
        Urgency::Urgent => W::Urgent,
        Urgency::Immediate => W::Immediate,
    }
}

pub fn request_state_to_wire(s: RequestState) -> pb::aid_request::State {
    use pb::aid_request::State as W;
    match s {
        RequestState::Open => W::Open,
        RequestState::Offered => W::Offered,
        RequestState::Accepted => W::Accepted,
        RequestState::InTransit => W::InTransit,
        RequestState::Completed => W::Completed,
        RequestState::Cancelled => W::Cancelled,
        RequestState::Expired => W::Expired,
        RequestState::Unfulfilled => W::Unfulfilled,
    }
}

pub fn offer_state_to_wire(s: OfferState) -> pb::aid_offer::State {
    use pb::aid_offer::State as W;
    match s {
        OfferState::Proposed => W::Proposed,
        OfferState::Accepted => W::Accepted,
        OfferState::Declined => W::Declined,
        OfferState::Withdrawn => W::Withdrawn,
        OfferState::Expired => W::Expired,
    }
}

fn hold_end_to_wire(e: HoldEnd) -> pb::aid_event::hold_ended::End {
    use pb::aid_event::hold_ended::End as W;
    match e {
        HoldEnd::Occupied => W::Occupied,
        HoldEnd::Released => W::Released,
        HoldEnd::Expired => W::Expired,
    }
}

fn decision_to_wire(d: &Decision) -> pb::AidDecision {
    pb::AidDecision {
        action: d.action.to_owned(),
        principal: d.principal.clone(),
        cursor: d.cursor.to_string(),
        at: Some(timestamp_to_wire(d.at)),
    }
}

pub fn hold_to_wire(h: &Hold) -> pb::AidHold {
    pb::AidHold {
        offer: h.offer.to_string(),
        provider: h.provider.clone(),
        pair: h.pair.clone(),
        quantity: h.quantity,
        baseline_occupied: h.baseline_occupied,
        since: Some(timestamp_to_wire(h.since)),
        until: Some(timestamp_to_wire(h.until)),
    }
}

pub fn offer_to_wire(o: &Offer, hold: Option<&Hold>, trail: Trail) -> pb::AidOffer {
    pb::AidOffer {
        id: o.id.to_string(),
        request: o.request.to_string(),
        provider: o.provider.clone(),
        site: o.site.clone().unwrap_or_default(),
        quantity: o.quantity,
        hold_until: Some(timestamp_to_wire(o.hold_until)),
        state: offer_state_to_wire(o.state) as i32,
        decisions: match trail {
            Trail::Full => o.decisions.iter().map(decision_to_wire).collect(),
            Trail::Omitted => Vec::new(),
        },
        hold: hold.map(hold_to_wire),
    }
}

/// A request with its offers (those of `offers` that answer it, in the order given), each with its hold when
/// `holds` has one for it: holds live in the holding providers' state, so the caller passes those it knows.
pub fn request_to_wire(r: &Request, offers: &[Offer], holds: &[Hold], trail: Trail) -> pb::AidRequest {
    let ask = &r.ask;
    let offers: Vec<&Offer> = offers.iter().filter(|o| o.request == r.id).collect();
    let accepted: u32 = offers.iter().filter(|o| o.state == OfferState::Accepted).map(|o| o.quantity).sum();
    pb::AidRequest {
        id: r.id.to_string(),
        provider: ask.provider.clone(),
        site: ask.site.clone().unwrap_or_default(),
        kind: kind_to_wire(ask.kind) as i32,
        pair: ask.pair.clone(),
        quantity: ask.quantity,
        urgency: urgency_to_wire(ask.urgency) as i32,
        needed_by: Some(timestamp_to_wire(ask.needed_by)),
        constraints: Some(pb::AidConstraints {
            within: ask.constraints.within.as_str().to_owned(),
            isolation: ask.constraints.isolation,
        }),
        reference: ask.reference.clone(),
        summary: ask.summary.clone(),
        state: request_state_to_wire(r.state) as i32,
        reason: r.reason.clone().unwrap_or_default(),
        escalated: r.escalated.map(|l| l.as_str().to_owned()).unwrap_or_default(),
        created_at: Some(timestamp_to_wire(r.created_at)),
        first_offer_at: r.first_offer_at.map(timestamp_to_wire),
        first_accepted_at: r.first_accepted_at.map(timestamp_to_wire),
        closed_at: r.closed_at.map(timestamp_to_wire),
        offers: offers.iter().map(|o| offer_to_wire(o, hold_for(holds, o.id), trail)).collect(),
        decisions: match trail {
            Trail::Full => r.decisions.iter().map(decision_to_wire).collect(),
            Trail::Omitted => Vec::new(),
        },
        outstanding: ask.quantity.saturating_sub(accepted),
    }
}

/// A request as [`crate::aid`] gives it (lists, `GetRequest`), with the holds the caller knows.
pub fn case_to_wire(case: &Case, holds: &[Hold], trail: Trail) -> pb::AidRequest {
    request_to_wire(&case.request, &case.offers, holds, trail)
}

fn hold_for(holds: &[Hold], offer: OfferId) -> Option<&Hold> {
    holds.iter().find(|h| h.offer == offer)
}

pub fn aid_event_to_wire(e: &AidEvent, directory: &Directory) -> pb::AidEvent {
    use pb::aid_event::{self as c, Kind as K};
    let kind = match e {
        AidEvent::RequestChanged { request, from, to } => K::RequestChanged(c::RequestChanged {
            request: request.to_string(),
            from: from.map_or(0, |s| request_state_to_wire(s) as i32),
            to: request_state_to_wire(*to) as i32,
        }),
        AidEvent::OfferChanged { offer, request, from, to } => K::OfferChanged(c::OfferChanged {
            offer: offer.to_string(),
            request: request.to_string(),
            from: from.map_or(0, |s| offer_state_to_wire(s) as i32),
            to: offer_state_to_wire(*to) as i32,
        }),
        AidEvent::HoldPlaced { offer, provider, pair, quantity, until } => K::HoldPlaced(c::HoldPlaced {
            offer: offer.to_string(),
            provider: provider.clone(),
            pair: pair.clone(),
            quantity: *quantity,
            until: Some(timestamp_to_wire(*until)),
        }),
        AidEvent::HoldEnded { offer, provider, pair, quantity, end } => K::HoldEnded(c::HoldEnded {
            offer: offer.to_string(),
            provider: provider.clone(),
            pair: pair.clone(),
            quantity: *quantity,
            end: hold_end_to_wire(*end) as i32,
        }),
        AidEvent::Escalated { request, level, provider } => K::Escalated(c::Escalated {
            request: request.to_string(),
            level: level.as_str().to_owned(),
            provider: provider.clone(),
            coordinators: coordinators(directory, provider, *level),
        }),
    };
    pb::AidEvent { kind: Some(kind) }
}

/// One stored event's share of an aid action: the provider whose event it is, and what it changed (its holds, when
/// given, are that provider's after the event).
#[derive(Clone, Copy, Debug)]
pub struct Part<'a> {
    pub provider: &'a str,
    pub change: &'a AidChange,
}

/// What an action did, from the parts its stored events carry (in order): everything that happened, the request as
/// it is after (`case`), and each offer the action changed, with the holds the parts leave in force. `cursor` is
/// the last event's position, `None` until stored.
pub fn update_to_wire(
    cursor: Option<&Cursor>,
    parts: &[Part<'_>],
    case: &Case,
    directory: &Directory,
) -> pb::AidUpdate {
    // Each provider's holds as its latest part that carries them leaves them.
    let mut by_provider: Vec<(&str, &[Hold])> = Vec::new();
    for part in parts {
        if let Some(holds) = &part.change.holds {
            by_provider.retain(|(p, _)| *p != part.provider);
            by_provider.push((part.provider, holds));
        }
    }
    let holds: Vec<Hold> = by_provider.into_iter().flat_map(|(_, h)| h.iter().cloned()).collect();
    let mut offers: Vec<&Offer> = Vec::new();
    for o in parts.iter().flat_map(|p| &p.change.offers) {
        offers.retain(|seen| seen.id != o.id);
        offers.push(o);
    }
    offers.sort_by_key(|o| o.id);
    pb::AidUpdate {
        cursor: cursor.map(Cursor::to_string).unwrap_or_default(),
        happened: parts.iter().flat_map(|p| &p.change.happened).map(|e| aid_event_to_wire(e, directory)).collect(),
        requests: vec![case_to_wire(case, &holds, Trail::Full)],
        offers: offers.into_iter().map(|o| offer_to_wire(o, hold_for(&holds, o.id), Trail::Full)).collect(),
    }
}

/// What one stored event says of mutual aid (its `aid`, at `cursor`), as `Event.aid` carries it: what happened,
/// and each request and offer it changed as it is now. The event's provider's holds (`change.holds`, when they
/// changed) go on the offers they belong to; the holds themselves go out beside it ([`holds_to_wire`]).
pub fn change_to_wire(cursor: &Cursor, change: &AidChange, directory: &Directory) -> pb::AidUpdate {
    let holds = change.holds.as_deref().unwrap_or_default();
    pb::AidUpdate {
        cursor: cursor.to_string(),
        happened: change.happened.iter().map(|e| aid_event_to_wire(e, directory)).collect(),
        requests: change.requests.iter().map(|r| request_to_wire(r, &change.offers, holds, Trail::Full)).collect(),
        offers: change.offers.iter().map(|o| offer_to_wire(o, hold_for(holds, o.id), Trail::Full)).collect(),
    }
}

/// A provider's holds as `Event.holds` carries them: `None` when the event left them as they were.
pub fn holds_to_wire(change: &AidChange) -> Option<pb::AidHolds> {
    change.holds.as_ref().map(|holds| pb::AidHolds { holds: holds.iter().map(hold_to_wire).collect() })
}

/// What [`crate::aid::act`] did, on the wire.
pub fn done_to_wire(done: &Done, directory: &Directory) -> pb::AidUpdate {
    let parts: Vec<Part<'_>> = done
        .events
        .iter()
        .filter_map(|e| e.aid.as_deref().map(|change| Part { provider: &e.provider, change }))
        .collect();
    update_to_wire(done.cursor.as_ref(), &parts, &done.case, directory)
}

pub fn candidates_to_wire(request: RequestId, cursor: &Cursor, ranking: &Ranking) -> pb::AidCandidates {
    pb::AidCandidates {
        request: request.to_string(),
        cursor: cursor.to_string(),
        candidates: ranking
            .candidates
            .iter()
            .map(|c| pb::AidCandidate {
                provider: c.provider.clone(),
                scope: c.scope.as_str().to_owned(),
                headroom: c.headroom,
                distance_km: c.distance_km,
                reason: c.reason.clone(),
            })
            .collect(),
        excluded: ranking
            .excluded
            .iter()
            .map(|e| pb::AidExcluded { provider: e.provider.clone(), why: e.why.clone() })
            .collect(),
    }
}

fn minutes(ms: i64) -> f64 {
    ms as f64 / 60_000.0
}

fn durations_to_wire(d: &sitrep_core::aid::Durations) -> pb::AidDurations {
    pb::AidDurations {
        count: u32::try_from(d.count).unwrap_or(u32::MAX),
        median_minutes: d.median_ms.map(minutes),
        p90_minutes: d.p90_ms.map(minutes),
    }
}

/// Live measures and, by day, those of each day's requests.
pub fn measures_to_wire(scope: &str, m: &Measures, by_day: &[(Timestamp, Measures)], at: Timestamp) -> pb::AidMeasures {
    let mut out = one_measures_to_wire(scope, m, at);
    out.by_day = by_day
        .iter()
        .map(|(day, m)| pb::AidDayMeasures {
            day: Some(timestamp_to_wire(*day)),
            measures: Some(one_measures_to_wire(scope, m, at)),
        })
        .collect();
    out
}

fn one_measures_to_wire(scope: &str, m: &Measures, at: Timestamp) -> pb::AidMeasures {
    pb::AidMeasures {
        scope: scope.to_owned(),
        requests: u32::try_from(m.requests).unwrap_or(u32::MAX),
        by_day: Vec::new(),
        open_requests: u32::try_from(m.open_requests).unwrap_or(u32::MAX),
        oldest_open_minutes: m.oldest_open_ms.map(minutes),
        to_first_offer: Some(durations_to_wire(&m.to_first_offer)),
        to_acceptance: Some(durations_to_wire(&m.to_acceptance)),
        to_completion: Some(durations_to_wire(&m.to_completion)),
        unfulfilled_rate: m.unfulfilled_rate,
        balances: m
            .balances
            .iter()
            .map(|(provider, b)| pb::AidBalance { provider: provider.clone(), given: b.given, received: b.received })
            .collect(),
        at: Some(timestamp_to_wire(at)),
    }
}

#[cfg(test)]
mod tests;
