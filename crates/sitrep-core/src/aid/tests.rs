//! Tests of the book: both state machines as tables, partial fulfilment, holds, timers.

use super::*;
use crate::cursor::Position;

const BASE: i64 = 1_800_000_000_000;

/// `minutes` after a fixed instant.
pub(crate) fn t(minutes: i64) -> Timestamp {
    Timestamp(BASE + minutes * MINUTE_MS)
}

pub(crate) fn actor(provider: &str) -> Actor {
    Actor { principal: format!("{provider}.coordinator"), cursor: Cursor::new("e1", Position(7, 0)) }
}

/// A request by `provider` for `quantity` adult critical care beds, needed within four hours of t(0), with a
/// reference of its own (`REF-<n>`, counting every call), so that tests may make several open requests.
pub(crate) fn ask(provider: &str, quantity: u32) -> NewRequest {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    NewRequest {
        provider: provider.into(),
        site: None,
        kind: Kind::PatientTransfer,
        pair: "beds.cc_adult".into(),
        quantity,
        urgency: Urgency::Urgent,
        needed_by: t(240),
        constraints: Constraints::default(),
        reference: format!("REF-{n:04}"),
        summary: "Adult needing level 3 care".into(),
    }
}

fn offer(request: RequestId, provider: &str, quantity: u32) -> Action {
    Action::Offer { request, provider: provider.into(), site: None, quantity, hold_until: t(120) }
}

fn accept(offer: OfferId) -> Action {
    Action::Accept { offer, baseline_occupied: 5 }
}

fn ok(book: &mut AidBook, action: Action, minute: i64) -> Vec<AidEvent> {
    let name = action.name();
    book.apply(action, &actor("RJ7"), t(minute)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A book with one request of two beds by RJ7, brought to `state` (accepted: one bed of two, from RVR's O1).
fn request_in(state: RequestState) -> (AidBook, RequestId) {
    let mut book = AidBook::new();
    ok(&mut book, Action::Create(ask("RJ7", 2)), 0);
    let r = RequestId(1);
    let o1 = OfferId(1);
    let steps: Vec<Action> = match state {
        RequestState::Open => vec![],
        RequestState::Offered => vec![offer(r, "RVR", 1)],
        RequestState::Accepted => vec![offer(r, "RVR", 1), accept(o1)],
        RequestState::InTransit => vec![offer(r, "RVR", 1), accept(o1), progress(r, Stage::InTransit)],
        RequestState::Completed => {
            vec![offer(r, "RVR", 1), accept(o1), progress(r, Stage::InTransit), progress(r, Stage::Completed)]
        }
        RequestState::Cancelled => vec![Action::Cancel { request: r, reason: "improved".into() }],
        RequestState::Unfulfilled => vec![Action::Unfulfilled { request: r, reason: "no beds".into() }],
        RequestState::Expired => vec![],
    };
    for (i, step) in steps.into_iter().enumerate() {
        ok(&mut book, step, 1 + i as i64);
    }
    if state == RequestState::Expired {
        ok(&mut book, Action::ExpireRequest(r), 240);
    }
    assert_eq!(book.request(r).unwrap().state, state);
    (book, r)
}

fn progress(request: RequestId, stage: Stage) -> Action {
    Action::Progress { request, stage }
}

#[test]
fn request_state_machine() {
    use RequestState::*;
    let r = RequestId(1);
    // (action, minute it is made at) and the state each starting state reaches, None where it is refused.
    let actions: Vec<(&str, Action, i64)> = vec![
        ("offer", offer(r, "RAX", 1), 10),
        ("in_transit", progress(r, Stage::InTransit), 10),
        ("complete", progress(r, Stage::Completed), 10),
        ("cancel", Action::Cancel { request: r, reason: "improved".into() }, 10),
        ("unfulfilled", Action::Unfulfilled { request: r, reason: "no beds".into() }, 10),
        ("expire_request", Action::ExpireRequest(r), 240),
        ("escalate", Action::Escalate { request: r, level: Level::System }, 30),
    ];
    #[rustfmt::skip]
    let table: &[(RequestState, [Option<RequestState>; 7])] = &[
        //            offer           in_transit       complete         cancel           unfulfilled        expire         escalate
        (Open,      [Some(Offered),  None,            None,            Some(Cancelled), Some(Unfulfilled), Some(Expired), Some(Open)]),
        (Offered,   [Some(Offered),  None,            None,            Some(Cancelled), Some(Unfulfilled), Some(Expired), None]),
        (Accepted,  [Some(Accepted), Some(InTransit), None,            Some(Cancelled), Some(Unfulfilled), None,          None]),
        (InTransit, [None,           None,            Some(Completed), None,            None,              None,          None]),
        (Completed,   [None, None, None, None, None, None, None]),
        (Cancelled,   [None, None, None, None, None, None, None]),
        (Expired,     [None, None, None, None, None, None, None]),
        (Unfulfilled, [None, None, None, None, None, None, None]),
    ];
    for (from, expected) in table {
        for ((name, action, minute), expected) in actions.iter().zip(expected) {
            let (mut book, _) = request_in(*from);
            let before = book.clone();
            let got = book.apply(action.clone(), &actor("RJ7"), t(*minute));
            match (expected, got) {
                (Some(to), Ok(_)) => assert_eq!(book.request(r).unwrap().state, *to, "{from} + {name}"),
                (None, Err(refusal)) => {
                    assert_eq!(book, before, "{from} + {name}: a refusal changes nothing");
                    let text = refusal.to_string();
                    assert!(text.starts_with(&format!("{name} refused: request R1 is {from}")), "{text}");
                }
                (expected, got) => panic!("{from} + {name}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}

/// A book with request R1 (two beds) and RVR's offer O1 of one bed, brought to `state`.
fn offer_in(state: OfferState) -> AidBook {
    let (mut book, r) = request_in(RequestState::Offered);
    let o1 = OfferId(1);
    match state {
        OfferState::Proposed => {}
        OfferState::Accepted => drop(ok(&mut book, accept(o1), 5)),
        OfferState::Declined => drop(ok(&mut book, Action::Decline(o1), 5)),
        OfferState::Withdrawn => drop(ok(&mut book, Action::Withdraw(o1), 5)),
        OfferState::Expired => drop(ok(&mut book, Action::ExpireOffer(o1), 120)),
    }
    assert_eq!(book.offer(o1).unwrap().state, state);
    assert_eq!(book.request(r).unwrap().offers, [o1]);
    book
}

#[test]
fn offer_state_machine() {
    use OfferState::*;
    let o1 = OfferId(1);
    let actions: [(&str, Action, i64); 5] = [
        ("accept", accept(o1), 10),
        ("decline", Action::Decline(o1), 10),
        ("withdraw", Action::Withdraw(o1), 10),
        ("expire_offer", Action::ExpireOffer(o1), 120),
        ("expire_offer", Action::ExpireOffer(o1), 119),
    ];
    #[rustfmt::skip]
    let table: &[(OfferState, [Option<OfferState>; 5])] = &[
        //          accept          decline         withdraw         expire at hold  expire before
        (Proposed,  [Some(Accepted), Some(Declined), Some(Withdrawn), Some(Expired), None]),
        (Accepted,  [None, None, None, None, None]),
        (Declined,  [None, None, None, None, None]),
        (Withdrawn, [None, None, None, None, None]),
        (Expired,   [None, None, None, None, None]),
    ];
    for (from, expected) in table {
        for ((name, action, minute), expected) in actions.iter().zip(expected) {
            let mut book = offer_in(*from);
            let before = book.clone();
            let got = book.apply(action.clone(), &actor("RJ7"), t(*minute));
            match (expected, got) {
                (Some(to), Ok(_)) => assert_eq!(book.offer(o1).unwrap().state, *to, "{from} + {name}"),
                (None, Err(refusal)) => {
                    assert_eq!(book, before, "{from} + {name}: a refusal changes nothing");
                    let text = refusal.to_string();
                    assert!(text.starts_with(&format!("{name} refused: offer O1 is {from}")), "{text}");
                }
                (expected, got) => panic!("{from} + {name} at minute {minute}: expected {expected:?}, got {got:?}"),
            }
        }
    }
}

#[test]
fn refusals_name_the_record_the_rule_and_the_value() {
    let (mut book, r) = request_in(RequestState::Open);
    ok(&mut book, Action::Escalate { request: r, level: Level::Region }, 5);
    let before = book.clone();
    let cases: Vec<(Action, &str)> = vec![
        (
            Action::Create(NewRequest { quantity: 0, ..ask("RJ7", 1) }),
            "create refused: quantity = 0 must be at least 1",
        ),
        (
            Action::Create(NewRequest { pair: "beds.cc_adult.open".into(), ..ask("RJ7", 1) }),
            "create refused: pair = \"beds.cc_adult.open\" must name a capacity pair such as beds.cc_adult",
        ),
        (
            Action::Create(NewRequest { summary: "x".repeat(201), ..ask("RJ7", 1) }),
            "create refused: summary = 201 characters exceeds 200",
        ),
        (
            Action::Create(NewRequest { reference: " ".into(), ..ask("RJ7", 1) }),
            "create refused: reference = \" \" must be 1 to 64 characters",
        ),
        (offer(r, "RJ7", 1), "offer refused: request R1 is open: RJ7 cannot offer to its own request"),
        (offer(r, "RVR", 3), "offer refused: request R1 is open: offer of 3 exceeds the 2 still needed"),
        (offer(r, "RVR", 0), "offer refused: quantity = 0 must be at least 1"),
        (offer(RequestId(9), "RVR", 1), "offer refused: unknown request R9"),
        (
            Action::Offer { request: r, provider: "RVR".into(), site: None, quantity: 1, hold_until: t(10) },
            "offer refused: hold_until = 2027-01-15T08:10:00Z must be after now",
        ),
        (
            Action::Escalate { request: r, level: Level::System },
            "escalate refused: request R1 is open: it is already escalated to the region",
        ),
        (accept(OfferId(4)), "accept refused: unknown offer O4"),
        (Action::Cancel { request: r, reason: "".into() }, "cancel refused: reason = \"\" must say why"),
        (Action::ExpireRequest(r), "expire_request refused: request R1 is open: it is needed by 2027-01-15T12:00:00Z"),
        (
            Action::Escalate { request: r, level: Level::Nation },
            "escalate refused: request R1 is open: escalation goes to a system's or a region's coordinators",
        ),
    ];
    for (action, expected) in cases {
        assert_eq!(book.apply(action, &actor("RJ7"), t(10)).unwrap_err().to_string(), expected);
        assert_eq!(book, before);
    }
}

#[test]
fn partial_fulfilment_from_two_offers() {
    let mut book = AidBook::new();
    ok(&mut book, Action::Create(ask("RJ7", 2)), 0);
    let r = RequestId(1);
    ok(&mut book, offer(r, "RVR", 1), 1);
    ok(&mut book, offer(r, "RAX", 1), 2);
    ok(&mut book, offer(r, "RRV", 1), 3);
    ok(&mut book, accept(OfferId(1)), 4);
    assert_eq!(book.request(r).unwrap().state, RequestState::Accepted);
    assert_eq!(book.outstanding(r), 1);
    assert_eq!(book.offer(OfferId(2)).unwrap().state, OfferState::Proposed);
    // More may be offered for the remainder, but not more than it.
    assert!(book.apply(offer(r, "RGT", 2), &actor("RGT"), t(5)).is_err());
    let events = ok(&mut book, accept(OfferId(2)), 6);
    assert_eq!(book.outstanding(r), 0);
    // Covered: RRV's pending offer is declined in the same step.
    assert!(events.contains(&AidEvent::OfferChanged {
        offer: OfferId(3),
        request: r,
        from: Some(OfferState::Proposed),
        to: OfferState::Declined
    }));
    assert_eq!((book.held("RVR", "beds.cc_adult"), book.held("RAX", "beds.cc_adult")), (1, 1));
    ok(&mut book, progress(r, Stage::InTransit), 7);
    ok(&mut book, progress(r, Stage::Completed), 8);
    let req = book.request(r).unwrap();
    assert_eq!(
        (req.state, req.first_offer_at, req.first_accepted_at, req.closed_at),
        (RequestState::Completed, Some(t(1)), Some(t(4)), Some(t(8)))
    );
    // Every decision is recorded with its principal and cursor.
    let names: Vec<&str> = req.decisions.iter().map(|d| d.action.as_str()).collect();
    assert_eq!(names, ["create", "offer", "offer", "offer", "accept", "accept", "in_transit", "complete"]);
    assert!(req.decisions.iter().all(|d| d.principal == "RJ7.coordinator" && d.cursor.to_string() == "e1:7-0"));
}

#[test]
fn an_offer_larger_than_what_remains_cannot_be_accepted() {
    let mut book = AidBook::new();
    ok(&mut book, Action::Create(ask("RJ7", 2)), 0);
    let r = RequestId(1);
    ok(&mut book, offer(r, "RVR", 2), 1);
    ok(&mut book, offer(r, "RAX", 1), 2);
    ok(&mut book, accept(OfferId(2)), 3);
    let err = book.apply(accept(OfferId(1)), &actor("RJ7"), t(4)).unwrap_err();
    assert_eq!(err.to_string(), "accept refused: offer O1 is proposed: it offers 2 but request R1 needs only 1 more");
    // Past its hold time, before the clock has expired it: still refused.
    ok(&mut book, offer(r, "RRV", 1), 5);
    let err = book.apply(accept(OfferId(3)), &actor("RJ7"), t(120)).unwrap_err();
    assert_eq!(err.to_string(), "accept refused: offer O3 is proposed: its hold ended at 2027-01-15T10:00:00Z");
}

/// A provider has one proposed offer per request: a retried offer (whose answer was lost) is refused rather than
/// made twice; once that offer is withdrawn, it may offer again.
#[test]
fn one_proposed_offer_per_provider_and_request() {
    let (mut book, r) = request_in(RequestState::Offered);
    let before = book.clone();
    let err = book.apply(offer(r, "RVR", 1), &actor("RVR"), t(2)).unwrap_err();
    assert_eq!(err.to_string(), "offer refused: request R1 is offered: RVR already has offer O1 proposed for it");
    assert_eq!(book, before);
    ok(&mut book, Action::Withdraw(OfferId(1)), 3);
    ok(&mut book, offer(r, "RVR", 2), 4);
}

#[test]
fn the_last_pending_offer_going_reopens_the_request() {
    let (mut book, r) = request_in(RequestState::Offered);
    ok(&mut book, offer(r, "RAX", 1), 2);
    ok(&mut book, Action::Decline(OfferId(1)), 3);
    assert_eq!(book.request(r).unwrap().state, RequestState::Offered);
    let events = ok(&mut book, Action::Withdraw(OfferId(2)), 4);
    assert_eq!(
        events.last(),
        Some(&AidEvent::RequestChanged { request: r, from: Some(RequestState::Offered), to: RequestState::Open })
    );
}

#[test]
fn cancelling_releases_the_holds_the_book_was_given() {
    let (mut book, r) = request_in(RequestState::Offered);
    let events = ok(&mut book, Action::Accept { offer: OfferId(1), baseline_occupied: 7 }, 5);
    assert!(events.contains(&AidEvent::HoldPlaced {
        offer: OfferId(1),
        provider: "RVR".into(),
        pair: "beds.cc_adult".into(),
        quantity: 1,
        until: t(120)
    }));
    assert_eq!(headroom(10, 7, book.held("RVR", "beds.cc_adult")), 2);
    assert_eq!(book.held("RVR", "beds.ga_adult"), 0);
    assert_eq!(book.needs(&Action::Cancel { request: r, reason: "x".into() }), ["RVR"]);
    let events = ok(&mut book, Action::Cancel { request: r, reason: "improved".into() }, 8);
    assert!(events.iter().any(|e| matches!(e, AidEvent::HoldEnded { end: HoldEnd::Released, .. })));
    assert_eq!(book.holds().count(), 0);
}

#[test]
fn an_expired_hold_ends_by_the_clock_once() {
    let (mut book, _) = request_in(RequestState::Accepted);
    let clock = Actor { principal: "sitrep".into(), cursor: Cursor::none() };
    let err = book.apply(Action::ExpireHold(OfferId(1)), &clock, t(100)).unwrap_err();
    assert_eq!(err.to_string(), "expire_hold refused: offer O1 is accepted: its hold lasts until 2027-01-15T10:00:00Z");
    assert!(book.due(t(119), &Timers::default()).iter().all(|a| !matches!(a, Action::ExpireHold(_))));
    let events = book.tick(t(120), &Timers::default(), &clock);
    assert!(events.iter().any(|e| matches!(e, AidEvent::HoldEnded { end: HoldEnd::Expired, .. })));
    let err = book.apply(Action::ExpireHold(OfferId(1)), &clock, t(121)).unwrap_err();
    assert_eq!(err.to_string(), "expire_hold refused: offer O1 is accepted: it holds nothing now");
}

fn escalations(events: &[AidEvent]) -> Vec<Level> {
    events.iter().filter_map(|e| if let AidEvent::Escalated { level, .. } = e { Some(*level) } else { None }).collect()
}

#[test]
fn timers_escalate_at_30_and_60_minutes_without_an_offer() {
    let clock = actor("sitrep");
    let timers = Timers::default();
    let mut book = AidBook::new();
    ok(&mut book, Action::Create(ask("RJ7", 1)), 0);
    let table: &[(i64, &[Level])] =
        &[(29, &[]), (30, &[Level::System]), (31, &[]), (59, &[]), (60, &[Level::Region]), (90, &[])];
    for &(minute, expected) in table {
        assert_eq!(escalations(&book.tick(t(minute), &timers, &clock)), expected, "minute {minute}");
    }
    assert_eq!(book.request(RequestId(1)).unwrap().escalated, Some(Level::Region));
    // A tick that first comes late escalates to both at once; a request with an offer is not escalated.
    let mut book = AidBook::new();
    ok(&mut book, Action::Create(ask("RJ7", 1)), 0);
    ok(&mut book, Action::Create(ask("RAX", 1)), 0);
    ok(&mut book, offer(RequestId(2), "RVR", 1), 10);
    let events = book.tick(t(61), &timers, &clock);
    assert_eq!(escalations(&events), [Level::System, Level::Region]);
    assert!(events.iter().all(|e| !matches!(e, AidEvent::Escalated { request: RequestId(2), .. })));
    // A configurable timer.
    let mut book = AidBook::new();
    ok(&mut book, Action::Create(ask("RJ7", 1)), 0);
    let quick = Timers { system_after_ms: 5 * MINUTE_MS, region_after_ms: 10 * MINUTE_MS };
    assert_eq!(escalations(&book.tick(t(5), &quick, &clock)), [Level::System]);
}

#[test]
fn coordinators_of_a_provider() {
    let d = crate::profile::demo_directory();
    assert_eq!(coordinators(&d, "RJ7", Level::System), "system:QWE");
    assert_eq!(coordinators(&d, "RJ7", Level::Region), "region:Y56");
    assert_eq!(coordinators(&d, "RGT", Level::Region), "region:Y61");
}

#[test]
fn timers_expire_offers_holds_and_requests() {
    let clock = actor("sitrep");
    let timers = Timers::default();
    let (mut book, r) = request_in(RequestState::Offered);
    // O1 is held until minute 120: it expires then and the request reopens.
    assert!(book.tick(t(119), &timers, &clock).is_empty());
    let events = book.tick(t(120), &timers, &clock);
    assert!(events.contains(&AidEvent::OfferChanged {
        offer: OfferId(1),
        request: r,
        from: Some(OfferState::Proposed),
        to: OfferState::Expired
    }));
    assert_eq!(book.request(r).unwrap().state, RequestState::Open);
    // An accepted offer's hold ends at its hold time if no report showed the bed occupied.
    ok(
        &mut book,
        Action::Offer { request: r, provider: "RAX".into(), site: None, quantity: 1, hold_until: t(200) },
        130,
    );
    ok(&mut book, accept(OfferId(2)), 131);
    ok(
        &mut book,
        Action::Offer { request: r, provider: "RRV".into(), site: None, quantity: 1, hold_until: t(300) },
        132,
    );
    let events = book.tick(t(200), &timers, &clock);
    assert_eq!(
        events,
        [AidEvent::HoldEnded {
            offer: OfferId(2),
            provider: "RAX".into(),
            pair: "beds.cc_adult".into(),
            quantity: 1,
            end: HoldEnd::Expired
        }]
    );
    // An accepted request does not expire at needed-by (minute 240): it is being met.
    assert!(book.tick(t(240), &timers, &clock).is_empty());
    // An open one does, and its pending offers with it.
    let (mut book, r) = request_in(RequestState::Offered);
    ok(&mut book, Action::Offer { request: r, provider: "RAX".into(), site: None, quantity: 1, hold_until: t(500) }, 3);
    let events = book.tick(t(240), &timers, &clock);
    assert_eq!(book.request(r).unwrap().state, RequestState::Expired);
    assert_eq!(book.offer(OfferId(2)).unwrap().state, OfferState::Expired);
    assert!(events.contains(&AidEvent::RequestChanged {
        request: r,
        from: Some(RequestState::Offered),
        to: RequestState::Expired
    }));
    assert_eq!(book.request(r).unwrap().decisions.last().unwrap().principal, "sitrep.coordinator");
}

#[test]
fn a_retried_create_is_its_open_request_again() {
    let mut book = AidBook::new();
    let first = ask("RJ7", 2);
    ok(&mut book, Action::Create(first.clone()), 0);
    let before = book.clone();
    // Same provider, reference and content: the same request, no event, nothing changed (the version neither).
    let again = Action::Create(first.clone());
    assert_eq!(book.request_of(&again), Some(RequestId(1)));
    assert_eq!(ok(&mut book, again.clone(), 5), vec![]);
    assert_eq!(book, before);
    // It stays so while the request is under way, in whatever state.
    ok(&mut book, offer(RequestId(1), "RVR", 1), 6);
    let offered = book.clone();
    assert_eq!(ok(&mut book, again, 7), vec![]);
    assert_eq!(book, offered);
    // Another provider may use the same reference: references are each provider's own.
    ok(&mut book, Action::Create(NewRequest { provider: "RAX".into(), ..first.clone() }), 8);
    assert_eq!(book.requests().count(), 2);
}

#[test]
fn a_reference_in_use_with_other_content_is_refused_naming_it() {
    let mut book = AidBook::new();
    let first = ask("RJ7", 2);
    ok(&mut book, Action::Create(first.clone()), 0);
    let before = book.clone();
    let other = Action::Create(NewRequest { quantity: 3, ..first.clone() });
    let refusal = book.apply(other, &actor("RJ7"), t(1)).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        format!(
            "create refused: request R1 is open: reference = {:?} is in use (reference_in_use) by this request of \
             RJ7, which asks for other content (its quantity differs): use another reference, or end R1 first",
            first.reference
        )
    );
    assert_eq!(book, before, "refusals change nothing");
    let later = Action::Create(NewRequest { needed_by: t(300), ..first });
    let refusal = book.apply(later, &actor("RJ7"), t(1)).unwrap_err();
    assert!(refusal.to_string().contains("its needed_by differs"), "{refusal}");
}

#[test]
fn once_its_request_has_ended_a_reference_is_free_again() {
    for end in [RequestState::Completed, RequestState::Cancelled, RequestState::Expired, RequestState::Unfulfilled] {
        let (mut book, r) = request_in(end);
        // Its needed-by moved on, as a new need's would: the expired request's has passed.
        let reused = NewRequest { needed_by: t(600), ..book.request(r).unwrap().ask.clone() };
        let events = book.apply(Action::Create(reused), &actor("RJ7"), t(300)).unwrap_or_else(|e| panic!("{end}: {e}"));
        let made = RequestId(r.0 + 1);
        assert_eq!(events, [AidEvent::RequestChanged { request: made, from: None, to: RequestState::Open }], "{end}");
    }
}
