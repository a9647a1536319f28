//! One mutual aid action planned for a store to persist in one atomic step, like a report's [`super::Plan`]. It
//! sits with the report's plan, above [`crate::aid`] (the book, pure) and [`crate::state`] (live state, which holds
//! aid's holds), because it changes both.
//!
//! An action changes the book (its request and that request's offers) and perhaps the holds of providers (an
//! accepted offer places one; a cancelled request or the clock ends them). Holds live in the holding provider's
//! live state, so that a report can end them in its own atomic step; an action that changes them plans a change of
//! each such provider (its figures derived again, its version advanced) with the same functions a report uses. A
//! store persists the plan only if the book is still at [`AidPlan::expected_version`] and every provider at its
//! plan's expected version; otherwise it reads them again and plans again. That is what makes two replicas racing
//! on one request take exactly one of two accepts.

use std::collections::BTreeMap;

use super::Plan;
use crate::aid::{Action, Actor, AidBook, AidChange, AidEvent, Offer, Refusal, Request};
use crate::{Event, EventKind, ProviderLive, Rules, Timestamp};

/// An action's changes, for a store to persist all or nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct AidPlan {
    /// The book's version the plan was made from.
    pub expected_version: u64,
    /// The book's version after it.
    pub version: u64,
    /// The highest request and offer ids given after it ([`AidBook::last_ids`]), for a store to keep.
    pub last_ids: (u64, u64),
    /// The request the action concerned and its offers, as they are after it: the records to store.
    pub requests: Vec<Request>,
    pub offers: Vec<Offer>,
    /// The book's event (kind [`EventKind::Aid`], of the requesting provider, which it does not change): first in
    /// the log.
    pub event: Event,
    /// Each holding provider whose holds changed: its new state and event, after the book's.
    pub providers: Vec<Plan>,
}

/// What planning an action gives a store: changes to persist, or nothing to do.
// One per action, moved once: boxing the plan would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum AidOutcome {
    /// The action changes the book: persist the plan.
    Plan(AidPlan),
    /// The action was taken before: a retried create whose request is still open with the same content
    /// ([`AidBook::apply`]). Nothing is persisted and no event appended; the request and its offers, as the book
    /// holds them, are the answer.
    Unchanged { request: Request, offers: Vec<Offer> },
}

impl AidPlan {
    /// Every event, in log order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        std::iter::once(&self.event).chain(self.providers.iter().map(|p| &p.event))
    }
}

/// Plans `action` by `actor` at `now` against `book` and the live states of the providers it needs
/// ([`AidBook::needs`]; a provider missing from `states` has no live state). Refuses what the book refuses, and
/// what the rules do not know: a pair that is not a capacity pair of the catalogue, a provider not in the directory,
/// an accepted offer from a provider that has not reported the pair's occupied count (its hold could never end by
/// a report). `book` needs only the action's part ([`AidBook::excerpt`]).
pub fn plan(
    rules: &Rules,
    mut book: AidBook,
    states: &BTreeMap<String, ProviderLive>,
    mut action: Action,
    actor: &Actor,
    now: Timestamp,
) -> Result<AidOutcome, Refusal> {
    check_known(rules, &book, states, &mut action)?;
    for state in states.values() {
        book.set_holds(&state.provider, &state.holds);
    }
    let expected_version = book.version();
    let before = book.request_of(&action);
    let happened = book.apply(action, actor, now)?;
    if happened.is_empty() {
        let id = before.expect("only a retried create changes nothing, and it names its open request");
        let request = book.request(id).expect("the action's request exists").clone();
        let offers = book.offers_of(id).cloned().collect();
        return Ok(AidOutcome::Unchanged { request, offers });
    }
    let request_id = before.or_else(|| book.requests().map(|r| r.id).max()).expect("an action concerns a request");
    let request = book.request(request_id).expect("the action's request exists").clone();
    let offers: Vec<Offer> = book.offers_of(request_id).cloned().collect();

    let (hold_events, book_events): (Vec<AidEvent>, Vec<AidEvent>) =
        happened.into_iter().partition(|e| matches!(e, AidEvent::HoldPlaced { .. } | AidEvent::HoldEnded { .. }));
    let change = AidChange {
        version: Some(book.version()),
        requests: vec![request.clone()],
        offers: offers.clone(),
        holds: None,
        happened: book_events,
    };
    let event = book_event(&request, change, now);
    let providers = holders(rules, &book, states, &hold_events, now);
    Ok(AidOutcome::Plan(AidPlan {
        expected_version,
        version: book.version(),
        last_ids: book.last_ids(),
        requests: vec![request],
        offers,
        event,
        providers,
    }))
}

/// What the rules, rather than the book, refuse: an unknown provider or capacity pair; for an accept, an offer
/// whose provider has not reported the pair's occupied count (which is then taken as the hold's baseline).
fn check_known(
    rules: &Rules,
    book: &AidBook,
    states: &BTreeMap<String, ProviderLive>,
    action: &mut Action,
) -> Result<(), Refusal> {
    let name = action.name();
    let invalid = |field: &'static str, value: String, rule: &'static str, code: &'static str| Refusal::Invalid {
        action: name,
        field,
        value,
        rule,
        code,
    };
    match action {
        Action::Create(ask) => {
            if rules.directory.provider(&ask.provider).is_none() {
                return Err(invalid(
                    "provider",
                    format!("{:?}", ask.provider),
                    "is not in the directory",
                    "known_provider",
                ));
            }
            let catalogue = &rules.catalogue;
            let pair_known = |suffix: &str| catalogue.get(&format!("{}.{suffix}", ask.pair)).is_some();
            if !ask.pair.is_empty() && (!pair_known("open") || !pair_known("occupied")) {
                return Err(invalid(
                    "pair",
                    format!("{:?}", ask.pair),
                    "is not a capacity pair of the catalogue (it needs <pair>.open and <pair>.occupied)",
                    "capacity_pair",
                ));
            }
        }
        Action::Offer { provider, .. } if rules.directory.provider(provider).is_none() => {
            return Err(invalid("provider", format!("{provider:?}"), "is not in the directory", "known_provider"));
        }
        Action::Accept { offer, baseline_occupied } => {
            if let Some(o) = book.offer(*offer) {
                let pair = book.request(o.request).map(|r| r.ask.pair.clone()).unwrap_or_default();
                let occupied = states.get(&o.provider).and_then(|s| s.number(&format!("{pair}.occupied")));
                let Some(occupied) = occupied else {
                    return Err(Refusal::Offer {
                        id: o.id,
                        state: o.state,
                        action: name,
                        why: format!("{} has not reported {pair}.occupied, by which its hold would end", o.provider),
                    });
                };
                *baseline_occupied = occupied.max(0.0) as u32;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The book's event: of the requesting provider (whose state it does not change), carrying `change`.
fn book_event(request: &Request, change: AidChange, now: Timestamp) -> Event {
    let mut event = crate::state::provider_event(
        &ProviderLive::new(&request.ask.provider),
        EventKind::Aid,
        Default::default(),
        now,
    );
    event.site = request.ask.site.clone();
    event.aid = Some(Box::new(change));
    event
}

/// A plan for each provider in `states` whose holds the action changed, with the hold events that are its own.
fn holders(
    rules: &Rules,
    book: &AidBook,
    states: &BTreeMap<String, ProviderLive>,
    hold_events: &[AidEvent],
    now: Timestamp,
) -> Vec<Plan> {
    let mut providers = Vec::new();
    for state in states.values() {
        let holds = book.holds_of(&state.provider);
        if holds == state.holds {
            continue;
        }
        let happened = hold_events
            .iter()
            .filter(|e| match e {
                AidEvent::HoldPlaced { provider, .. } | AidEvent::HoldEnded { provider, .. } => {
                    *provider == state.provider
                }
                _ => false,
            })
            .cloned()
            .collect();
        let change = AidChange { happened, ..Default::default() };
        providers.push(super::holds(rules, state, holds, change, now));
    }
    providers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aid::tests::{actor, ask, t};
    use crate::aid::{HoldEnd, OfferId, RequestId, RequestState};
    use crate::cursor::Position;
    use crate::directory::Level;
    use crate::{AlertKind, Cursor, Picture, Report, validate};

    /// A log: every event planned is folded into a picture, as a replica's Hub does.
    struct World {
        rules: Rules,
        picture: Picture,
        n: u64,
    }

    impl World {
        fn new() -> Self {
            let rules = Rules::demo();
            World { picture: Picture::new(rules.clone(), Cursor::new("t", Position(0, 0))), rules, n: 0 }
        }

        fn fold(&mut self, mut event: Event) -> Vec<crate::rollup::ScopeRollup> {
            self.n += 1;
            event.cursor = Cursor::new("t", Position(self.n, 0));
            self.picture.apply(&event).expect("no gap")
        }

        /// `provider` reports adult critical care beds at minute `minute`.
        fn report(&mut self, provider: &str, minute: i64, open: f64, occupied: f64) -> Event {
            let now = t(minute);
            let prior = self.picture.provider(provider).map(|p| (**p).clone());
            let r = Report {
                provider: provider.into(),
                period: Some(now.hour_start()),
                observed_at: Some(now),
                values: [("beds.cc_adult.open", open), ("beds.cc_adult.occupied", occupied)]
                    .iter()
                    .map(|(c, v)| (c.to_string(), (*v).into()))
                    .collect(),
                ..Default::default()
            };
            let valid =
                validate(&r, &self.rules.directory, &self.rules.catalogue, &crate::Limits::default(), now).unwrap();
            let valid = valid.with_revision(crate::plan::next_revision(prior.as_ref(), &valid, None));
            let plan = crate::plan::report(&self.rules, prior.as_ref(), None, &valid, now, 24);
            self.fold(plan.event.clone());
            plan.event
        }

        fn act(&mut self, action: Action, minute: i64) -> Result<AidPlan, Refusal> {
            match self.outcome(action, minute)? {
                AidOutcome::Plan(plan) => Ok(plan),
                unchanged => panic!("the action changed nothing: {unchanged:?}"),
            }
        }

        fn outcome(&mut self, action: Action, minute: i64) -> Result<AidOutcome, Refusal> {
            let book = self.picture.aid().clone();
            let states = book
                .needs(&action)
                .into_iter()
                .filter_map(|p| Some((p.clone(), (**self.picture.provider(&p)?).clone())))
                .collect();
            let excerpt = book.excerpt(&action);
            let planned = plan(&self.rules, book, &states, action.clone(), &actor("RJ7"), t(minute));
            // Planning on the excerpt (what the memory store does) gives what planning on the whole book gives.
            assert_eq!(plan(&self.rules, excerpt, &states, action, &actor("RJ7"), t(minute)), planned);
            if let Ok(AidOutcome::Plan(plan)) = &planned {
                for e in plan.events() {
                    self.fold(e.clone());
                }
            }
            planned
        }

        fn free(&self, provider: &str) -> Option<f64> {
            let p = self.picture.provider(provider)?;
            p.figures.iter().find(|f| f.metric.as_str() == "beds.cc_adult.free").and_then(|f| f.value)
        }

        fn system_free(&self) -> Option<f64> {
            let scope = crate::Scope { level: Level::System, code: "QWE".into() };
            let rollup = self.picture.rollups(&[scope], None).remove(0);
            rollup.metrics.iter().find(|f| f.metric.as_str() == "beds.cc_adult.free").and_then(|f| f.value)
        }

        fn alert(&self, provider: &str) -> bool {
            self.picture.provider(provider).is_some_and(|p| p.alerts.iter().any(|a| a.kind == AlertKind::Overcommitted))
        }
    }

    #[test]
    fn holds_lower_headroom_and_totals_until_a_report_shows_them_occupied() {
        let mut w = World::new();
        w.report("RJ7", 0, 10.0, 10.0);
        w.report("RVR", 0, 10.0, 7.0);
        w.report("RAX", 0, 6.0, 4.0);
        assert_eq!((w.free("RVR"), w.system_free()), (Some(3.0), Some(5.0)));

        w.act(Action::Create(ask("RJ7", 2)), 1).unwrap();
        let r = RequestId(1);
        for (provider, minute) in [("RVR", 2), ("RAX", 3)] {
            let offer =
                Action::Offer { request: r, provider: provider.into(), site: None, quantity: 1, hold_until: t(120) };
            let p = w.act(offer, minute).unwrap();
            assert!(p.providers.is_empty(), "an offer holds nothing yet");
        }
        // The caller's baseline is replaced by the provider's stored occupied count.
        let p = w.act(Action::Accept { offer: OfferId(1), baseline_occupied: 99 }, 4).unwrap();
        assert_eq!(p.providers.len(), 1);
        let hold_event = &p.providers[0].event;
        assert_eq!((hold_event.provider.as_str(), hold_event.version), ("RVR", 2));
        let holds = hold_event.aid.as_ref().unwrap().holds.as_ref().unwrap();
        assert_eq!((holds.len(), holds[0].baseline_occupied), (1, 7));
        assert_eq!((w.free("RVR"), w.system_free()), (Some(2.0), Some(4.0)), "one held bed off RVR and QWE");
        assert_eq!(w.picture.aid().request(r).unwrap().state, RequestState::Accepted);

        // A report with the bed still free keeps the hold; one that shows it occupied ends it.
        let e = w.report("RVR", 30, 10.0, 7.0);
        assert!(e.aid.is_none());
        assert_eq!(w.free("RVR"), Some(2.0));
        let e = w.report("RVR", 40, 10.0, 8.0);
        let change = e.aid.as_ref().expect("the report ended the hold");
        assert_eq!(change.holds.as_deref(), Some(&[][..]));
        assert!(matches!(change.happened[..], [AidEvent::HoldEnded { end: HoldEnd::Occupied, quantity: 1, .. }]));
        assert_eq!((w.free("RVR"), w.system_free()), (Some(2.0), Some(4.0)), "now occupied, not held");
        assert!(w.picture.aid().holds().next().is_none());

        // RAX's offer covers the rest; then RAX fills up without the patient: overcommitted until beds come back.
        w.act(Action::Accept { offer: OfferId(2), baseline_occupied: 0 }, 41).unwrap();
        assert_eq!(w.free("RAX"), Some(1.0));
        w.report("RAX", 50, 6.0, 4.0);
        assert!(!w.alert("RAX"), "2 free still cover 1 held");
        w.report("RAX", 55, 4.0, 4.0);
        assert!(w.alert("RAX"), "beds closed: no free bed for one held");
        assert_eq!(w.free("RAX"), Some(-1.0), "headroom goes negative");
        w.report("RAX", 58, 7.0, 4.0);
        assert!(!w.alert("RAX"));
        assert_eq!(w.free("RAX"), Some(2.0));

        // Cancelling releases RAX's hold in the same step, as RAX's own event.
        let p = w.act(Action::Cancel { request: r, reason: "patient improved".into() }, 59).unwrap();
        assert_eq!(p.providers.iter().map(|p| p.provider.as_str()).collect::<Vec<_>>(), ["RAX"]);
        assert_eq!(w.free("RAX"), Some(3.0));
        assert_eq!(w.picture.aid().request(r).unwrap().state, RequestState::Cancelled);
        // The folded picture equals one built afresh from the states and the book.
        let fresh = Picture::with_aid(
            w.rules.clone(),
            w.picture.cursor().clone(),
            w.picture.providers().map(|p| (**p).clone()),
            crate::aid::AidBook::from_records(
                w.picture.aid().version(),
                w.picture.aid().requests().cloned().collect(),
                w.picture.aid().requests().flat_map(|r| w.picture.aid().offers_of(r.id).cloned()).collect(),
            ),
        );
        assert_eq!(fresh, w.picture);
    }

    /// A retried create is answered with its open request and plans nothing: no record, no event, the book's version
    /// as it was, on the excerpt as on the whole book (which `act` checks).
    #[test]
    fn a_retried_create_plans_nothing_and_names_its_request() {
        let mut w = World::new();
        let first = ask("RJ7", 2);
        w.act(Action::Create(first.clone()), 1).unwrap();
        let head = w.n;
        let AidOutcome::Unchanged { request, offers } = w.outcome(Action::Create(first.clone()), 2).unwrap() else {
            panic!("a retry is not a new request");
        };
        assert_eq!((request.id, request.state, offers.len()), (RequestId(1), RequestState::Open, 0));
        assert_eq!((w.n, w.picture.aid().version(), w.picture.aid().requests().count()), (head, 1, 1));
        let other = crate::aid::NewRequest { quantity: 3, ..first };
        let refused = w.act(Action::Create(other), 3).unwrap_err();
        assert!(matches!(refused, Refusal::Request { id: RequestId(1), .. }), "{refused}");
    }

    #[test]
    fn the_rules_refuse_what_the_book_cannot_know() {
        let mut w = World::new();
        let unknown = crate::aid::NewRequest { provider: "XXX".into(), ..ask("RJ7", 1) };
        assert_eq!(
            w.act(Action::Create(unknown), 1).unwrap_err().to_string(),
            "create refused: provider = \"XXX\" is not in the directory"
        );
        let bad_pair = crate::aid::NewRequest { pair: "beds.nothing".into(), ..ask("RJ7", 1) };
        assert_eq!(
            w.act(Action::Create(bad_pair), 1).unwrap_err().to_string(),
            "create refused: pair = \"beds.nothing\" is not a capacity pair of the catalogue (it needs <pair>.open and <pair>.occupied)"
        );
        w.act(Action::Create(ask("RJ7", 1)), 1).unwrap();
        let offer =
            Action::Offer { request: RequestId(1), provider: "RVR".into(), site: None, quantity: 1, hold_until: t(60) };
        w.act(offer, 2).unwrap();
        assert_eq!(
            w.act(Action::Accept { offer: OfferId(1), baseline_occupied: 0 }, 3).unwrap_err().to_string(),
            "accept refused: offer O1 is proposed: RVR has not reported beds.cc_adult.occupied, by which its hold would end"
        );
        assert_eq!(w.picture.aid().version(), 2, "refusals change nothing");
    }
}
