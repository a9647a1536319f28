//! Mutual aid (issue 15): requests for capacity and offers of it, as audited records with state machines, the
//! holds accepted offers place, the candidates a request could ask, timers, and measures.
//!
//! This is the pure core: no store, no wire types, no clock (the time is a parameter). An [`AidBook`] holds every
//! request and offer; [`AidBook::apply`] makes one [`Action`] on behalf of an [`Actor`] at an instant, all or
//! nothing: it either returns the [`AidEvent`]s it caused, or a [`Refusal`] naming the record, its state and the
//! action refused, and changes nothing. Every decision records who made it and the picture [`Cursor`] it was made
//! on, so the audit trail says what the decider saw.
//!
//! No patient-identifiable data is ever held: a request carries a caller's reference id and a short
//! non-identifying summary, and nothing else about a patient. `docs/MUTUAL-AID.md` states the model.
//!
//! The reference also makes a create safe to retry: while a provider's request is open, a create with its
//! reference is that request again (same content: nothing changes, no event) or refused (other content,
//! `reference_in_use`); see [`AidBook::apply`]. Every other action is refused when repeated, by its state machine.
//!
//! # State machines
//! Request: `open -> offered -> accepted -> in_transit -> completed`, or `cancelled` (from open, offered or
//! accepted), `expired` (needed-by passed while open or offered), `unfulfilled` with a reason (from open, offered
//! or accepted). A request stays `accepted` while more offers are made and accepted for its remainder (partial
//! fulfilment); it goes back to `open` when its last pending offer is declined, withdrawn or expires and none was
//! accepted. Offer: `proposed -> accepted | declined | withdrawn | expired`.
//!
//! # Layout
//! - [`hold`]: [`Hold`], [`headroom()`] and the rule that releases a hold on a report.
//! - [`mod@candidates`]: the providers a request could ask, nearest scope first, with the reason for each rank.
//! - [`mod@measures`]: per-scope counts and durations (median, p90), unfulfilled rate, given/received balances.
//!
//! An action planned against the book and the holding providers' live states, for a store to persist in one atomic
//! step, is [`crate::plan::aid`]: it changes live state too, so it sits above this module and [`crate::state`].

pub mod candidates;
pub mod hold;
pub mod measures;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use candidates::{Candidate, Excluded, Location, ProviderStatus, Ranking, candidates};
pub use hold::{Hold, HoldEnd, headroom};
pub use measures::{Balance, Durations, Measures, measures, measures_by_day};

use crate::directory::Level;
use crate::{Cursor, Directory, Timestamp};

/// The longest non-identifying summary a request may carry: enough to describe the need, too short for notes.
pub const SUMMARY_MAX: usize = 200;
/// The longest reference id.
pub const REFERENCE_MAX: usize = 64;
const MINUTE_MS: i64 = 60_000;

/// A request's id, written `R<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// An offer's id, written `O<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OfferId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R{}", self.0)
    }
}

impl fmt::Display for OfferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "O{}", self.0)
    }
}

/// What is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    PatientTransfer,
    Cohort,
    Staff,
    Equipment,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Routine,
    Urgent,
    Immediate,
}

/// Where a request may be met: the widest scope to look in (nearest scope is always preferred), and whether the
/// receiving provider must be able to isolate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraints {
    pub within: Level,
    pub isolation: bool,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints { within: Level::Nation, isolation: false }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Open,
    Offered,
    Accepted,
    InTransit,
    Completed,
    Cancelled,
    Expired,
    Unfulfilled,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Open => "open",
            RequestState::Offered => "offered",
            RequestState::Accepted => "accepted",
            RequestState::InTransit => "in_transit",
            RequestState::Completed => "completed",
            RequestState::Cancelled => "cancelled",
            RequestState::Expired => "expired",
            RequestState::Unfulfilled => "unfulfilled",
        }
    }

    pub fn is_closed(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::Expired | Self::Unfulfilled)
    }

    /// Whether offers may still be made and accepted (and the request cancelled or declared unfulfilled).
    fn is_seeking(self) -> bool {
        matches!(self, Self::Open | Self::Offered | Self::Accepted)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferState {
    Proposed,
    Accepted,
    Declined,
    Withdrawn,
    Expired,
}

impl OfferState {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferState::Proposed => "proposed",
            OfferState::Accepted => "accepted",
            OfferState::Declined => "declined",
            OfferState::Withdrawn => "withdrawn",
            OfferState::Expired => "expired",
        }
    }
}

impl fmt::Display for OfferState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who acts, and on which picture: every decision is recorded with both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The authenticated principal's name (a person or a system), never a shared account.
    pub principal: String,
    /// The picture cursor the actor saw when deciding.
    pub cursor: Cursor,
}

/// One recorded decision on a request or offer: the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The action's name (`create`, `offer`, `accept`, ...).
    pub action: String,
    pub principal: String,
    pub cursor: Cursor,
    pub at: Timestamp,
}

/// An action being made: its name (for refusals), the decision it records, and when.
struct Making {
    name: &'static str,
    decision: Decision,
    now: Timestamp,
}

/// What a new request says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRequest {
    pub provider: String,
    /// The unit (site) that needs the capacity, if not the whole provider.
    pub site: Option<String>,
    pub kind: Kind,
    /// The capacity pair needed, e.g. `beds.cc_adult` (metrics `beds.cc_adult.open` and `.occupied`).
    pub pair: String,
    pub quantity: u32,
    pub urgency: Urgency,
    pub needed_by: Timestamp,
    pub constraints: Constraints,
    /// The requester's own reference id (not a patient identifier).
    pub reference: String,
    /// A short, non-identifying description of the need.
    pub summary: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub ask: NewRequest,
    pub state: RequestState,
    /// Why a request was declared unfulfilled or cancelled.
    pub reason: Option<String>,
    /// The widest level its coordinators have been alerted at, by the timers.
    pub escalated: Option<Level>,
    pub offers: Vec<OfferId>,
    pub created_at: Timestamp,
    pub first_offer_at: Option<Timestamp>,
    pub first_accepted_at: Option<Timestamp>,
    pub closed_at: Option<Timestamp>,
    pub decisions: Vec<Decision>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub request: RequestId,
    pub provider: String,
    pub site: Option<String>,
    pub quantity: u32,
    /// Until when the offering provider holds the capacity: the offer expires then if not accepted, and the hold
    /// of an accepted offer ends then if no report has shown the beds occupied.
    pub hold_until: Timestamp,
    pub state: OfferState,
    pub decisions: Vec<Decision>,
}

/// A request's onward stage once accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    InTransit,
    Completed,
}

/// Everything that changes an [`AidBook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Create(NewRequest),
    Offer {
        request: RequestId,
        provider: String,
        site: Option<String>,
        quantity: u32,
        hold_until: Timestamp,
    },
    /// The requester accepts an offer; `baseline_occupied` is the offering provider's occupied count for the pair,
    /// from which the hold's release is judged ([`plan`] reads it from the provider's stored state).
    Accept {
        offer: OfferId,
        baseline_occupied: u32,
    },
    Decline(OfferId),
    Withdraw(OfferId),
    Progress {
        request: RequestId,
        stage: Stage,
    },
    Cancel {
        request: RequestId,
        reason: String,
    },
    Unfulfilled {
        request: RequestId,
        reason: String,
    },
    ExpireRequest(RequestId),
    ExpireOffer(OfferId),
    /// The clock: an accepted offer's hold time passed before a report showed its beds occupied.
    ExpireHold(OfferId),
    Escalate {
        request: RequestId,
        level: Level,
    },
}

/// The record an action names: its request, an offer, or none (a request being created).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    New,
    Request(RequestId),
    Offer(OfferId),
}

impl Action {
    /// The record the action names (for a store to read only that part of the book, see [`AidBook::excerpt`]).
    pub fn subject(&self) -> Subject {
        match self {
            Action::Create(_) => Subject::New,
            Action::Offer { request, .. }
            | Action::Progress { request, .. }
            | Action::Cancel { request, .. }
            | Action::Unfulfilled { request, .. }
            | Action::ExpireRequest(request)
            | Action::Escalate { request, .. } => Subject::Request(*request),
            Action::Accept { offer, .. }
            | Action::Decline(offer)
            | Action::Withdraw(offer)
            | Action::ExpireOffer(offer)
            | Action::ExpireHold(offer) => Subject::Offer(*offer),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Create(_) => "create",
            Action::Offer { .. } => "offer",
            Action::Accept { .. } => "accept",
            Action::Decline(_) => "decline",
            Action::Withdraw(_) => "withdraw",
            Action::Progress { stage: Stage::InTransit, .. } => "in_transit",
            Action::Progress { stage: Stage::Completed, .. } => "complete",
            Action::Cancel { .. } => "cancel",
            Action::Unfulfilled { .. } => "unfulfilled",
            Action::ExpireRequest(_) => "expire_request",
            Action::ExpireOffer(_) => "expire_offer",
            Action::ExpireHold(_) => "expire_hold",
            Action::Escalate { .. } => "escalate",
        }
    }
}

/// What an action or the clock changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum AidEvent {
    RequestChanged {
        request: RequestId,
        from: Option<RequestState>,
        to: RequestState,
    },
    OfferChanged {
        offer: OfferId,
        request: RequestId,
        from: Option<OfferState>,
        to: OfferState,
    },
    HoldPlaced {
        offer: OfferId,
        provider: String,
        pair: String,
        quantity: u32,
        until: Timestamp,
    },
    HoldEnded {
        offer: OfferId,
        provider: String,
        pair: String,
        quantity: u32,
        end: HoldEnd,
    },
    /// No offer in time: the coordinators of the requesting provider's system or region are alerted
    /// ([`coordinators`] names the scope).
    Escalated {
        request: RequestId,
        level: Level,
        provider: String,
    },
}

/// What one event changed in mutual aid (see [`crate::Event::aid`]): the records an action changed, as they are
/// after it, and the holds of the event's provider when they changed. Folding it into a book
/// ([`AidBook::fold`]) gives the book the action left.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AidChange {
    /// The book's version after the action; `None` when only holds changed (a report showed held beds occupied,
    /// or the holds part of an action, which travels on the holding provider's own event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<Request>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<Offer>,
    /// The event's provider's holds after it, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<Vec<Hold>>,
    /// What happened, for people: state changes, holds placed and ended, escalations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub happened: Vec<AidEvent>,
}

impl AidChange {
    /// A report's ending of `ended` holds of a provider, which keeps `kept`, for `end`.
    pub fn holds_ended(kept: Vec<Hold>, ended: Vec<Hold>, end: HoldEnd) -> Self {
        let happened = ended
            .into_iter()
            .map(|h| AidEvent::HoldEnded {
                offer: h.offer,
                provider: h.provider,
                pair: h.pair,
                quantity: h.quantity,
                end,
            })
            .collect();
        AidChange { holds: Some(kept), happened, ..Default::default() }
    }
}

/// An action the book will not take, and why. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{action} refused: request {id} is {state}: {why}")]
    Request { id: RequestId, state: RequestState, action: &'static str, why: String },
    #[error("{action} refused: offer {id} is {state}: {why}")]
    Offer { id: OfferId, state: OfferState, action: &'static str, why: String },
    #[error("{action} refused: unknown request {0}", action = .1)]
    UnknownRequest(RequestId, &'static str),
    #[error("{action} refused: unknown offer {0}", action = .1)]
    UnknownOffer(OfferId, &'static str),
    /// A field of the action breaks a rule, e.g. `create refused: quantity = 0 must be at least 1`; `code` names the
    /// rule for machines (`at_least_one`).
    #[error("{action} refused: {field} = {value} {rule}")]
    Invalid { action: &'static str, field: &'static str, value: String, rule: &'static str, code: &'static str },
}

/// The escalation timers: minutes without any offer before the system's, then the region's coordinators are
/// alerted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub system_after_ms: i64,
    pub region_after_ms: i64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { system_after_ms: 30 * MINUTE_MS, region_after_ms: 60 * MINUTE_MS }
    }
}

/// Every request and offer, and the holds of accepted offers that it has been given.
///
/// Holds belong to the holding providers' live state ([`crate::ProviderLive::holds`]), where a report can end
/// them in the same atomic step that stores it; a book is given the holds of the providers an action needs
/// ([`AidBook::needs`], [`AidBook::set_holds`]) before it acts, and a picture keeps every provider's in its book.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AidBook {
    requests: BTreeMap<RequestId, Request>,
    offers: BTreeMap<OfferId, Offer>,
    holds: BTreeMap<OfferId, Hold>,
    next_request: u64,
    next_offer: u64,
    version: u64,
}

impl AidBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// A book of stored records at `version` (with no holds yet).
    pub fn from_records(version: u64, requests: Vec<Request>, offers: Vec<Offer>) -> Self {
        let mut book = AidBook { version, ..Default::default() };
        book.take_records(requests, offers);
        book
    }

    /// How many actions the book has taken: every action advances it by one, and a store takes an action only
    /// if the book is still at the version it was planned from.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn take_records(&mut self, requests: Vec<Request>, offers: Vec<Offer>) {
        for r in requests {
            self.next_request = self.next_request.max(r.id.0);
            self.requests.insert(r.id, r);
        }
        for o in offers {
            self.next_offer = self.next_offer.max(o.id.0);
            self.offers.insert(o.id, o);
        }
    }

    /// Folds in what an event of `provider` changed: its records (if the book has not seen its version yet) and,
    /// with `holds_too`, the provider's holds (the caller folds those only when it folds the provider's state).
    pub fn fold(&mut self, provider: &str, change: &AidChange, holds_too: bool) {
        if let Some(version) = change.version.filter(|v| *v > self.version) {
            self.take_records(change.requests.clone(), change.offers.clone());
            self.version = version;
        }
        if let (true, Some(holds)) = (holds_too, &change.holds) {
            self.set_holds(provider, holds);
        }
    }

    /// Replaces what the book knows of `provider`'s holds.
    pub fn set_holds(&mut self, provider: &str, holds: &[Hold]) {
        self.holds.retain(|_, h| h.provider != provider);
        self.holds.extend(holds.iter().map(|h| (h.offer, h.clone())));
    }

    /// Takes every hold `other` knows in place of its own.
    pub(crate) fn take_holds(&mut self, other: AidBook) {
        self.holds = other.holds;
    }

    /// The holds the book knows of `provider`, in offer order.
    pub fn holds_of(&self, provider: &str) -> Vec<Hold> {
        self.holds.values().filter(|h| h.provider == provider).cloned().collect()
    }

    /// The providers whose live state `action` needs (their holds, an offering provider's occupied count).
    pub fn needs(&self, action: &Action) -> Vec<String> {
        let offer_provider = |o: &OfferId| self.offers.get(o).map(|o| o.provider.clone());
        let mut out: Vec<String> = match action {
            Action::Accept { offer, .. } | Action::ExpireHold(offer) => offer_provider(offer).into_iter().collect(),
            Action::Cancel { request, .. } | Action::Unfulfilled { request, .. } => self
                .offers_of(*request)
                .filter(|o| o.state == OfferState::Accepted)
                .map(|o| o.provider.clone())
                .collect(),
            _ => Vec::new(),
        };
        out.sort();
        out.dedup();
        out
    }

    /// A book of the records an excerpt read from a store holds (see [`AidBook::excerpt`]), with the book's version
    /// and id counters (the highest request and offer ids given so far).
    pub fn from_excerpt(
        version: u64,
        (last_request, last_offer): (u64, u64),
        requests: Vec<Request>,
        offers: Vec<Offer>,
    ) -> Self {
        let mut book = AidBook::from_records(version, requests, offers);
        book.next_request = book.next_request.max(last_request);
        book.next_offer = book.next_offer.max(last_offer);
        book
    }

    /// The highest request and offer ids given so far: what a store keeps beside the records, so that an excerpt
    /// ([`AidBook::from_excerpt`]) gives new records the ids the whole book would.
    pub fn last_ids(&self) -> (u64, u64) {
        (self.next_request, self.next_offer)
    }

    /// The part of the book `action` can touch: its request and that request's offers (none for a new request),
    /// with the book's version and id counters. Every action concerns one request, so planning it on the excerpt
    /// gives what planning it on the whole book gives, at a cost that does not grow with the book.
    pub fn excerpt(&self, action: &Action) -> AidBook {
        let mut out = AidBook {
            next_request: self.next_request,
            next_offer: self.next_offer,
            version: self.version,
            ..AidBook::default()
        };
        if let Some(r) = self.request_of(action).and_then(|id| self.requests.get(&id)) {
            out.offers.extend(r.offers.iter().filter_map(|o| Some((*o, self.offers.get(o)?.clone()))));
            out.requests.insert(r.id, r.clone());
        }
        out
    }

    /// The request an action is about: for a create, the requesting provider's open request with the same
    /// reference, if it has one (see [`AidBook::open_with_reference`]); otherwise `None` for a request not yet
    /// created.
    pub fn request_of(&self, action: &Action) -> Option<RequestId> {
        match action.subject() {
            Subject::New => match action {
                Action::Create(ask) => self.open_with_reference(&ask.provider, &ask.reference).map(|r| r.id),
                _ => None,
            },
            Subject::Request(request) => Some(request),
            Subject::Offer(offer) => self.offers.get(&offer).map(|o| o.request),
        }
    }

    /// `provider`'s request carrying `reference` that has not ended (not completed, cancelled, expired or
    /// unfulfilled), if any. While it is open the reference names it: a create with the same reference is a retry
    /// of it, or refused (see [`AidBook::apply`]); once it has ended the reference is free again.
    pub fn open_with_reference(&self, provider: &str, reference: &str) -> Option<&Request> {
        self.requests
            .values()
            .find(|r| !r.state.is_closed() && r.ask.provider == provider && r.ask.reference == reference)
    }

    pub fn request(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(&id)
    }

    pub fn offer(&self, id: OfferId) -> Option<&Offer> {
        self.offers.get(&id)
    }

    pub fn requests(&self) -> impl Iterator<Item = &Request> {
        self.requests.values()
    }

    pub fn offers_of(&self, request: RequestId) -> impl Iterator<Item = &Offer> {
        self.requests.get(&request).into_iter().flat_map(|r| r.offers.iter().filter_map(|o| self.offers.get(o)))
    }

    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// Beds held at a provider for a capacity pair.
    pub fn held(&self, provider: &str, pair: &str) -> u32 {
        self.holds.values().filter(|h| h.provider == provider && h.pair == pair).map(|h| h.quantity).sum()
    }

    /// What of a request is not yet covered by accepted offers.
    pub fn outstanding(&self, request: RequestId) -> u32 {
        let Some(r) = self.requests.get(&request) else { return 0 };
        r.ask.quantity.saturating_sub(self.accepted_quantity(r))
    }

    fn accepted_quantity(&self, r: &Request) -> u32 {
        self.offers_of_request(r).filter(|o| o.state == OfferState::Accepted).map(|o| o.quantity).sum()
    }

    fn pending_quantity(&self, r: &Request) -> u32 {
        self.offers_of_request(r).filter(|o| o.state == OfferState::Proposed).map(|o| o.quantity).sum()
    }

    fn offers_of_request<'a>(&'a self, r: &'a Request) -> impl Iterator<Item = &'a Offer> + 'a {
        r.offers.iter().filter_map(|o| self.offers.get(o))
    }

    /// Makes one action, all or nothing, and advances the book's version. The new id of a created request or
    /// offer is in the first event. Every refusal is found before anything changes (the tests check the book is
    /// untouched), so no copy of the book is made.
    ///
    /// **A retried create changes nothing.** A create by a provider whose open request carries the same reference
    /// and asks for the same (every field of [`NewRequest`] equal) is that request again: no events, and the book
    /// (its version too) as it was; [`AidBook::request_of`] names the request. The same reference with other
    /// content is refused (`reference_in_use`). So a caller whose answer was lost may simply send it again.
    pub fn apply(&mut self, action: Action, actor: &Actor, now: Timestamp) -> Result<Vec<AidEvent>, Refusal> {
        let name = action.name();
        let decision = Decision {
            action: name.to_owned(),
            principal: actor.principal.clone(),
            cursor: actor.cursor.clone(),
            at: now,
        };
        let events = self.make(action, name, decision, now)?;
        // Every action that changes the book says what it changed; only a retried create says nothing.
        if !events.is_empty() {
            self.version += 1;
        }
        Ok(events)
    }

    fn make(
        &mut self,
        action: Action,
        name: &'static str,
        decision: Decision,
        now: Timestamp,
    ) -> Result<Vec<AidEvent>, Refusal> {
        let m = Making { name, decision, now };
        match action {
            Action::Create(ask) => self.create_request(m, ask),
            Action::Offer { request, provider, site, quantity, hold_until } => {
                self.make_offer(m, request, provider, site, quantity, hold_until)
            }
            Action::Accept { offer, baseline_occupied } => self.accept_offer(m, offer, baseline_occupied),
            Action::Decline(offer) => self.close_offer(m, offer, OfferState::Declined),
            Action::Withdraw(offer) => self.close_offer(m, offer, OfferState::Withdrawn),
            Action::ExpireOffer(offer) => self.close_offer(m, offer, OfferState::Expired),
            Action::Progress { request, stage } => self.progress(m, request, stage),
            Action::Cancel { request, reason } => self.end_request(m, request, reason, RequestState::Cancelled),
            Action::Unfulfilled { request, reason } => self.end_request(m, request, reason, RequestState::Unfulfilled),
            Action::ExpireRequest(request) => self.expire_request(m, request),
            Action::ExpireHold(offer) => self.expire_hold(m, offer),
            Action::Escalate { request, level } => self.escalate(m, request, level),
        }
    }

    /// Creates a request, unless the provider's open request with the same reference is this one again (then
    /// nothing changes) or asks for something else (then it is refused).
    fn create_request(&mut self, m: Making, ask: NewRequest) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        if let Some(r) = self.open_with_reference(&ask.provider, &ask.reference) {
            // Checked before the ask itself: a retry whose needed-by has passed meanwhile is still the same request.
            return match differing_field(&r.ask, &ask) {
                None => Ok(events),
                Some(field) => Err(Refusal::Request {
                    id: r.id,
                    state: r.state,
                    action: name,
                    why: format!(
                        "reference = {:?} is in use (reference_in_use) by this request of {}, which asks for \
                         other content (its {field} differs): use another reference, or end {} first",
                        ask.reference, ask.provider, r.id
                    ),
                }),
            };
        }
        check_ask(&ask, now)?;
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.requests.insert(
            id,
            Request {
                id,
                ask,
                state: RequestState::Open,
                reason: None,
                escalated: None,
                offers: Vec::new(),
                created_at: now,
                first_offer_at: None,
                first_accepted_at: None,
                closed_at: None,
                decisions: vec![decision],
            },
        );
        events.push(AidEvent::RequestChanged { request: id, from: None, to: RequestState::Open });
        Ok(events)
    }

    /// Proposes an offer to a seeking request.
    fn make_offer(
        &mut self,
        m: Making,
        request: RequestId,
        provider: String,
        site: Option<String>,
        quantity: u32,
        hold_until: Timestamp,
    ) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        let r = self.seeking(request, name)?;
        let refuse = |why: String| Refusal::Request { id: request, state: r.state, action: name, why };
        if provider == r.ask.provider {
            return Err(refuse(format!("{provider} cannot offer to its own request")));
        }
        if quantity == 0 {
            return Err(invalid(name, "quantity", quantity, "must be at least 1", "at_least_one"));
        }
        if hold_until <= now {
            return Err(invalid(name, "hold_until", hold_until, "must be after now", "after_now"));
        }
        let outstanding = r.ask.quantity.saturating_sub(self.accepted_quantity(r));
        if quantity > outstanding {
            return Err(refuse(format!("offer of {quantity} exceeds the {outstanding} still needed")));
        }
        // One proposed offer per provider and request: a retried offer (its answer lost) is refused, not
        // made twice; to change it, withdraw it first.
        if let Some(o) = self.offers_of_request(r).find(|o| o.provider == provider && o.state == OfferState::Proposed) {
            return Err(refuse(format!("{provider} already has offer {} proposed for it", o.id)));
        }
        self.next_offer += 1;
        let id = OfferId(self.next_offer);
        self.offers.insert(
            id,
            Offer {
                id,
                request,
                provider,
                site,
                quantity,
                hold_until,
                state: OfferState::Proposed,
                decisions: vec![decision.clone()],
            },
        );
        events.push(AidEvent::OfferChanged { offer: id, request, from: None, to: OfferState::Proposed });
        let r = self.requests.get_mut(&request).expect("checked above");
        r.offers.push(id);
        r.first_offer_at.get_or_insert(now);
        r.decisions.push(decision);
        if r.state == RequestState::Open {
            set_request(r, RequestState::Offered, now, &mut events);
        }
        Ok(events)
    }

    /// Accepts a proposed offer: places its hold, and declines what is still pending once the request is covered.
    fn accept_offer(&mut self, m: Making, offer: OfferId, baseline_occupied: u32) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        let o = self.proposed(offer, name)?;
        let request = o.request;
        let r = self.seeking(request, name)?;
        if o.hold_until <= now {
            // Not yet expired by the clock, but no longer held: accepting it would hold nothing.
            return Err(Refusal::Offer {
                id: offer,
                state: o.state,
                action: name,
                why: format!("its hold ended at {}", o.hold_until),
            });
        }
        let outstanding = r.ask.quantity.saturating_sub(self.accepted_quantity(r));
        if o.quantity > outstanding {
            return Err(Refusal::Offer {
                id: offer,
                state: o.state,
                action: name,
                why: format!("it offers {} but request {request} needs only {outstanding} more", o.quantity),
            });
        }
        let hold = Hold {
            offer,
            provider: o.provider.clone(),
            pair: r.ask.pair.clone(),
            quantity: o.quantity,
            baseline_occupied,
            since: now,
            until: o.hold_until,
        };
        self.set_offer(offer, OfferState::Accepted, &decision, &mut events);
        events.push(AidEvent::HoldPlaced {
            offer,
            provider: hold.provider.clone(),
            pair: hold.pair.clone(),
            quantity: hold.quantity,
            until: hold.until,
        });
        self.holds.insert(offer, hold);
        let covered = self.outstanding(request) == 0;
        let r = self.requests.get_mut(&request).expect("checked above");
        r.first_accepted_at.get_or_insert(now);
        r.decisions.push(decision.clone());
        if r.state != RequestState::Accepted {
            set_request(r, RequestState::Accepted, now, &mut events);
        }
        if covered {
            // Fully covered: the offers still pending are no longer needed.
            self.close_pending(request, OfferState::Declined, &decision, &mut events);
        }
        Ok(events)
    }

    /// Closes a proposed offer (declined, withdrawn, or expired once its hold has ended), reopening its request if nothing is left.
    fn close_offer(&mut self, m: Making, offer: OfferId, to: OfferState) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        let o = self.proposed(offer, name)?;
        let request = o.request;
        if to == OfferState::Expired && o.hold_until > now {
            return Err(Refusal::Offer {
                id: offer,
                state: o.state,
                action: name,
                why: format!("it is held until {}", o.hold_until),
            });
        }
        self.set_offer(offer, to, &decision, &mut events);
        self.reopen_if_nothing_left(request, &decision, now, &mut events);
        Ok(events)
    }

    /// Moves an accepted request on: in transit, then completed.
    fn progress(&mut self, m: Making, request: RequestId, stage: Stage) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        let r = self.known(request, name)?;
        let (from, to) = match stage {
            Stage::InTransit => (RequestState::Accepted, RequestState::InTransit),
            Stage::Completed => (RequestState::InTransit, RequestState::Completed),
        };
        if r.state != from {
            return Err(Refusal::Request {
                id: request,
                state: r.state,
                action: name,
                why: format!("only a request {from} can become {to}"),
            });
        }
        if to == RequestState::InTransit {
            // Capacity still pending on other offers is not waited for once patients move.
            self.close_pending(request, OfferState::Declined, &decision, &mut events);
        }
        let r = self.requests.get_mut(&request).expect("checked above");
        r.decisions.push(decision);
        set_request(r, to, now, &mut events);
        Ok(events)
    }

    /// Ends a seeking request, cancelled or unfulfilled (`to`), with the reason given: its holds released, pending offers declined.
    fn end_request(
        &mut self,
        m: Making,
        request: RequestId,
        reason: String,
        to: RequestState,
    ) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        let r = self.seeking(request, name)?;
        if reason.trim().is_empty() {
            return Err(invalid(name, "reason", "\"\"", "must say why", "reason_required"));
        }
        let accepted: Vec<OfferId> =
            self.offers_of_request(r).filter(|o| o.state == OfferState::Accepted).map(|o| o.id).collect();
        for offer in accepted {
            self.end_hold(offer, HoldEnd::Released, &mut events);
        }
        self.close_pending(request, OfferState::Declined, &decision, &mut events);
        let r = self.requests.get_mut(&request).expect("checked above");
        r.reason = Some(reason);
        r.decisions.push(decision);
        set_request(r, to, now, &mut events);
        Ok(events)
    }

    /// Expires an open or offered request past its needed-by time.
    fn expire_request(&mut self, m: Making, request: RequestId) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        let r = self.known(request, name)?;
        if !matches!(r.state, RequestState::Open | RequestState::Offered) {
            return Err(Refusal::Request {
                id: request,
                state: r.state,
                action: name,
                why: "only an open or offered request expires".to_owned(),
            });
        }
        if r.ask.needed_by > now {
            return Err(Refusal::Request {
                id: request,
                state: r.state,
                action: name,
                why: format!("it is needed by {}", r.ask.needed_by),
            });
        }
        self.close_pending(request, OfferState::Expired, &decision, &mut events);
        let r = self.requests.get_mut(&request).expect("checked above");
        r.decisions.push(decision);
        set_request(r, RequestState::Expired, now, &mut events);
        Ok(events)
    }

    /// Ends an accepted offer's hold that has run out.
    fn expire_hold(&mut self, m: Making, offer: OfferId) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, now } = m;
        let mut events = Vec::new();
        let o = self.offers.get(&offer).ok_or(Refusal::UnknownOffer(offer, name))?;
        let refuse = |why: String| Refusal::Offer { id: offer, state: o.state, action: name, why };
        let Some(hold) = self.holds.get(&offer) else {
            return Err(refuse("it holds nothing now".to_owned()));
        };
        if hold.until > now {
            return Err(refuse(format!("its hold lasts until {}", hold.until)));
        }
        let request = o.request;
        self.end_hold(offer, HoldEnd::Expired, &mut events);
        self.requests.get_mut(&request).expect("an offer's request exists").decisions.push(decision);
        Ok(events)
    }

    /// Escalates an open request to a system's or a region's coordinators.
    fn escalate(&mut self, m: Making, request: RequestId, level: Level) -> Result<Vec<AidEvent>, Refusal> {
        let Making { name, decision, .. } = m;
        let mut events = Vec::new();
        let r = self.known(request, name)?;
        let refuse = |why: String| Refusal::Request { id: request, state: r.state, action: name, why };
        if r.state != RequestState::Open {
            return Err(refuse("only a request with no offer pending is escalated".to_owned()));
        }
        if level == Level::Nation {
            return Err(refuse("escalation goes to a system's or a region's coordinators".to_owned()));
        }
        if let Some(current) = r.escalated.filter(|&e| e >= level) {
            return Err(refuse(format!("it is already escalated to the {}", current.as_str())));
        }
        let provider = r.ask.provider.clone();
        let r = self.requests.get_mut(&request).expect("checked above");
        r.escalated = Some(level);
        r.decisions.push(decision);
        events.push(AidEvent::Escalated { request, level, provider });
        Ok(events)
    }

    fn known(&self, id: RequestId, action: &'static str) -> Result<&Request, Refusal> {
        self.requests.get(&id).ok_or(Refusal::UnknownRequest(id, action))
    }

    fn seeking(&self, id: RequestId, action: &'static str) -> Result<&Request, Refusal> {
        let r = self.known(id, action)?;
        if !r.state.is_seeking() {
            return Err(Refusal::Request {
                id,
                state: r.state,
                action,
                why: "only an open, offered or accepted request can".to_owned(),
            });
        }
        Ok(r)
    }

    fn proposed(&self, id: OfferId, action: &'static str) -> Result<&Offer, Refusal> {
        let o = self.offers.get(&id).ok_or(Refusal::UnknownOffer(id, action))?;
        if o.state != OfferState::Proposed {
            return Err(Refusal::Offer { id, state: o.state, action, why: "only a proposed offer can".to_owned() });
        }
        Ok(o)
    }

    fn set_offer(&mut self, id: OfferId, to: OfferState, decision: &Decision, events: &mut Vec<AidEvent>) {
        let o = self.offers.get_mut(&id).expect("offer checked by the caller");
        events.push(AidEvent::OfferChanged { offer: id, request: o.request, from: Some(o.state), to });
        o.state = to;
        o.decisions.push(decision.clone());
    }

    fn close_pending(&mut self, request: RequestId, to: OfferState, decision: &Decision, events: &mut Vec<AidEvent>) {
        let pending: Vec<OfferId> =
            self.offers_of(request).filter(|o| o.state == OfferState::Proposed).map(|o| o.id).collect();
        for offer in pending {
            self.set_offer(offer, to, decision, events);
        }
    }

    fn reopen_if_nothing_left(
        &mut self,
        request: RequestId,
        decision: &Decision,
        now: Timestamp,
        events: &mut Vec<AidEvent>,
    ) {
        let r = &self.requests[&request];
        let reopen = r.state == RequestState::Offered && self.pending_quantity(r) == 0;
        let r = self.requests.get_mut(&request).expect("offer's request exists");
        r.decisions.push(decision.clone());
        if reopen {
            set_request(r, RequestState::Open, now, events);
        }
    }

    fn end_hold(&mut self, offer: OfferId, end: HoldEnd, events: &mut Vec<AidEvent>) {
        if let Some(h) = self.holds.remove(&offer) {
            events.push(AidEvent::HoldEnded { offer, provider: h.provider, pair: h.pair, quantity: h.quantity, end });
        }
    }

    /// What the clock should do at `now`: requests past needed-by expire, offers past their hold time expire,
    /// holds past their hold time end, and open requests with no offer are escalated to their system's
    /// coordinators after `timers.system_after_ms` and their region's after `timers.region_after_ms` (from
    /// creation). Each is an action like any other, made by the server's own principal; one may make a later one
    /// moot (an expired request's offers), and its refusal is then the right outcome.
    pub fn due(&self, now: Timestamp, timers: &Timers) -> Vec<Action> {
        let mut actions = Vec::new();
        for r in self.requests.values() {
            if matches!(r.state, RequestState::Open | RequestState::Offered) && r.ask.needed_by <= now {
                actions.push(Action::ExpireRequest(r.id));
                continue;
            }
            if r.state != RequestState::Open {
                continue;
            }
            let waited = now.0 - r.created_at.0;
            for (level, after) in [(Level::System, timers.system_after_ms), (Level::Region, timers.region_after_ms)] {
                if waited >= after && r.escalated.is_none_or(|e| e < level) {
                    actions.push(Action::Escalate { request: r.id, level });
                }
            }
        }
        for o in self.offers.values() {
            if o.state == OfferState::Proposed && o.hold_until <= now {
                actions.push(Action::ExpireOffer(o.id));
            }
        }
        actions.extend(self.holds.values().filter(|h| h.until <= now).map(|h| Action::ExpireHold(h.offer)));
        actions
    }

    /// Takes every action [`due`](Self::due) at `now` in turn, as `actor`, and returns what they changed.
    pub fn tick(&mut self, now: Timestamp, timers: &Timers, actor: &Actor) -> Vec<AidEvent> {
        let mut events = Vec::new();
        for action in self.due(now, timers) {
            if let Ok(mut more) = self.apply(action, actor, now) {
                events.append(&mut more);
            }
        }
        events
    }
}

/// The scope whose coordinators a provider's request escalates to at `level` (`system:QWE`, `region:Y56`).
pub fn coordinators(directory: &Directory, provider: &str, level: Level) -> String {
    let system = directory.provider(provider).map(|p| p.system.as_str());
    match level {
        Level::System => format!("system:{}", system.unwrap_or("?")),
        Level::Region => {
            let region = system.and_then(|s| directory.system(s)).map(|s| s.region.as_str());
            format!("region:{}", region.unwrap_or("?"))
        }
        Level::Nation => "nation".to_owned(),
    }
}

fn set_request(r: &mut Request, to: RequestState, now: Timestamp, events: &mut Vec<AidEvent>) {
    events.push(AidEvent::RequestChanged { request: r.id, from: Some(r.state), to });
    r.state = to;
    if to.is_closed() {
        r.closed_at = Some(now);
    }
}

fn invalid(
    action: &'static str,
    field: &'static str,
    value: impl fmt::Display,
    rule: &'static str,
    code: &'static str,
) -> Refusal {
    Refusal::Invalid { action, field, value: value.to_string(), rule, code }
}

/// The first field in which two asks differ, `None` when they ask for the same.
fn differing_field(held: &NewRequest, asked: &NewRequest) -> Option<&'static str> {
    // Destructured so that a field added to `NewRequest` cannot be forgotten here.
    let NewRequest { provider, site, kind, pair, quantity, urgency, needed_by, constraints, reference, summary } =
        asked;
    [
        ("provider", held.provider == *provider),
        ("site", held.site == *site),
        ("kind", held.kind == *kind),
        ("pair", held.pair == *pair),
        ("quantity", held.quantity == *quantity),
        ("urgency", held.urgency == *urgency),
        ("needed_by", held.needed_by == *needed_by),
        ("constraints", held.constraints == *constraints),
        ("reference", held.reference == *reference),
        ("summary", held.summary == *summary),
    ]
    .into_iter()
    .find_map(|(field, same)| (!same).then_some(field))
}

fn check_ask(ask: &NewRequest, now: Timestamp) -> Result<(), Refusal> {
    const A: &str = "create";
    if ask.provider.is_empty() {
        return Err(invalid(A, "provider", "\"\"", "must name the requesting provider", "required"));
    }
    if ask.quantity == 0 {
        return Err(invalid(A, "quantity", 0, "must be at least 1", "at_least_one"));
    }
    if ask.needed_by <= now {
        return Err(invalid(A, "needed_by", ask.needed_by, "must be after now", "after_now"));
    }
    if ask.pair.is_empty() || ask.pair.ends_with(".open") || ask.pair.ends_with(".occupied") {
        return Err(invalid(
            A,
            "pair",
            format!("{:?}", ask.pair),
            "must name a capacity pair such as beds.cc_adult",
            "capacity_pair",
        ));
    }
    if ask.reference.trim().is_empty() || ask.reference.chars().count() > REFERENCE_MAX {
        return Err(invalid(A, "reference", format!("{:?}", ask.reference), "must be 1 to 64 characters", "length"));
    }
    if ask.summary.chars().count() > SUMMARY_MAX {
        return Err(invalid(
            A,
            "summary",
            format!("{} characters", ask.summary.chars().count()),
            "exceeds 200",
            "length",
        ));
    }
    Ok(())
}

// The test helpers (`t`, `actor`, `ask`) are shared with `crate::plan::aid`'s tests.
#[cfg(test)]
pub(crate) mod tests;
