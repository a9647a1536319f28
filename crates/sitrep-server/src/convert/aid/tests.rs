//! Tests of the mutual aid conversions: every refusal a message can meet, as a table, and the records, changes,
//! candidates and measures the core's results become.

use sitrep_core::aid::{Actor, AidBook, Candidate, Excluded, Timers, measures};

use crate::aid::Case;
use sitrep_core::cursor::Position;
use sitrep_core::profile::demo_directory;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::*;

const BASE: i64 = 1_800_000_000_000;
const MINUTE_MS: i64 = 60_000;

fn t(minutes: i64) -> Timestamp {
    Timestamp(BASE + minutes * MINUTE_MS)
}

fn wire_t(minutes: i64) -> Option<prost_types::Timestamp> {
    Some(timestamp_to_wire(t(minutes)))
}

fn current() -> Cursor {
    Cursor::new("e1", Position(7, 0))
}

fn new_request() -> pb::NewAidRequest {
    pb::NewAidRequest {
        provider: "RJ7".into(),
        site: "RJ701".into(),
        kind: pb::aid_request::Kind::PatientTransfer as i32,
        pair: "beds.cc_adult".into(),
        quantity: 2,
        urgency: pb::aid_request::Urgency::Urgent as i32,
        needed_by: wire_t(240),
        constraints: Some(pb::AidConstraints { within: "region".into(), isolation: true }),
        reference: "REF1".into(),
        summary: "Two adults needing level 3 care".into(),
        cursor: String::new(),
    }
}

/// A field violation as a client sees it: the field, the rule as sent (upper case), the description.
type Said = (String, String, String);

/// Each violation in an INVALID_ARGUMENT status.
fn violations(status: &Status) -> Vec<Said> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status.get_details_bad_request().expect("a BadRequest detail");
    bad.field_violations.into_iter().map(|v| (v.field, v.reason, v.description)).collect()
}

fn refused<T: std::fmt::Debug>(result: Result<T, crate::error::Error>) -> Vec<Said> {
    violations(&Status::from(result.expect_err("refused")))
}

fn v(field: &str, rule: &str, description: &str) -> Said {
    (field.to_owned(), rule.to_owned(), description.to_owned())
}

#[test]
fn ids_are_r_or_o_and_a_positive_number() {
    let table: &[(&str, Option<u64>, Option<u64>)] = &[
        ("R1", Some(1), None),
        ("R12", Some(12), None),
        ("O3", None, Some(3)),
        ("R0", None, None),
        ("O0", None, None),
        ("r1", None, None),
        ("R", None, None),
        ("R+1", None, None),
        ("R-1", None, None),
        ("R 1", None, None),
        ("X7", None, None),
        ("7", None, None),
        ("", None, None),
        ("R99999999999999999999999", None, None),
    ];
    for &(text, request, offer) in table {
        assert_eq!(parse_request_id(text).map(|r| r.0), request, "{text:?} as a request id");
        assert_eq!(parse_offer_id(text).map(|o| o.0), offer, "{text:?} as an offer id");
    }
    // The text form the core writes reads back.
    assert_eq!(parse_request_id(&RequestId(42).to_string()), Some(RequestId(42)));
    assert_eq!(parse_offer_id(&OfferId(42).to_string()), Some(OfferId(42)));
}

#[test]
fn a_new_request_becomes_a_create_action() {
    let expected = NewRequest {
        provider: "RJ7".into(),
        site: Some("RJ701".into()),
        kind: Kind::PatientTransfer,
        pair: "beds.cc_adult".into(),
        quantity: 2,
        urgency: Urgency::Urgent,
        needed_by: t(240),
        constraints: Constraints { within: Level::Region, isolation: true },
        reference: "REF1".into(),
        summary: "Two adults needing level 3 care".into(),
    };
    assert_eq!(create_from_wire(&new_request()).unwrap(), Action::Create(expected));
    // No constraints and an empty site mean the nation and the whole provider.
    let mut m = new_request();
    m.constraints = None;
    m.site = String::new();
    let Action::Create(ask) = create_from_wire(&m).unwrap() else { panic!("create") };
    assert_eq!((ask.constraints, ask.site), (Constraints { within: Level::Nation, isolation: false }, None));
}

#[test]
fn every_other_action_decodes() {
    let offer = pb::NewAidOffer {
        request: "R4".into(),
        provider: "RXH".into(),
        site: String::new(),
        quantity: 1,
        hold_until: wire_t(120),
        cursor: String::new(),
    };
    let expected =
        Action::Offer { request: RequestId(4), provider: "RXH".into(), site: None, quantity: 1, hold_until: t(120) };
    assert_eq!(offer_from_wire(&offer).unwrap(), expected);
    // The baseline is the store's to read: the action carries 0 until then.
    let accept = accept_from_wire(&pb::AcceptOffer { offer: "O2".into(), cursor: "e1:3-0".into() });
    assert_eq!(accept.unwrap(), Action::Accept { offer: OfferId(2), baseline_occupied: 0 });
    let decline = decline_from_wire(&pb::DeclineOffer { offer: "O2".into(), cursor: String::new() });
    assert_eq!(decline.unwrap(), Action::Decline(OfferId(2)));
    let withdraw = withdraw_from_wire(&pb::WithdrawOffer { offer: "O5".into(), cursor: String::new() });
    assert_eq!(withdraw.unwrap(), Action::Withdraw(OfferId(5)));
    for (wire, stage) in [
        (pb::progress_request::Stage::InTransit, Stage::InTransit),
        (pb::progress_request::Stage::Completed, Stage::Completed),
    ] {
        let m = pb::ProgressRequest { request: "R4".into(), stage: wire as i32, cursor: String::new() };
        assert_eq!(progress_from_wire(&m).unwrap(), Action::Progress { request: RequestId(4), stage });
    }
    let m = pb::CancelRequest { request: "R4".into(), reason: "patient improved".into(), cursor: String::new() };
    assert_eq!(
        cancel_from_wire(&m).unwrap(),
        Action::Cancel { request: RequestId(4), reason: "patient improved".into() }
    );
    let m = pb::UnfulfilledRequest { request: "R4".into(), reason: "no transport".into(), cursor: String::new() };
    assert_eq!(
        unfulfilled_from_wire(&m).unwrap(),
        Action::Unfulfilled { request: RequestId(4), reason: "no transport".into() }
    );
    assert_eq!(get_from_wire(&pb::GetAidRequest { request: "R4".into() }).unwrap(), RequestId(4));
    assert_eq!(candidates_from_wire(&pb::GetAidCandidates { request: "R4".into() }).unwrap(), RequestId(4));
}

#[test]
fn an_empty_new_request_names_every_missing_field_at_once() {
    let status = Status::from(create_from_wire(&pb::NewAidRequest::default()).unwrap_err());
    assert_eq!(status.message(), "create_request: provider = \"\" must name the requesting provider (and 6 more)");
    assert_eq!(
        violations(&status),
        [
            v("provider", "REQUIRED", "create_request: provider = \"\" must name the requesting provider"),
            v(
                "kind",
                "KNOWN_VALUE",
                "create_request: kind = \"KIND_UNSPECIFIED\" is not a kind: patient_transfer, cohort, staff or equipment"
            ),
            v("pair", "REQUIRED", "create_request: pair = \"\" must name a capacity pair such as beds.cc_adult"),
            v("quantity", "AT_LEAST", "create_request: quantity = 0 must be at least 1"),
            v(
                "urgency",
                "KNOWN_VALUE",
                "create_request: urgency = \"URGENCY_UNSPECIFIED\" is not an urgency: routine, urgent or immediate"
            ),
            v("needed_by", "REQUIRED", "create_request: needed_by is required"),
            v("reference", "REQUIRED", "create_request: reference = \"\" must be the requester's own reference id"),
        ]
    );
}

/// One refusal per row: the message, changed in one way, and the one violation it must give.
#[test]
fn every_refusal_names_field_rule_and_value() {
    let create = |change: fn(&mut pb::NewAidRequest)| {
        let mut m = new_request();
        change(&mut m);
        refused(create_from_wire(&m))
    };
    let offer = |change: fn(&mut pb::NewAidOffer)| {
        let mut m = pb::NewAidOffer {
            request: "R1".into(),
            provider: "RXH".into(),
            site: String::new(),
            quantity: 1,
            hold_until: wire_t(60),
            cursor: String::new(),
        };
        change(&mut m);
        refused(offer_from_wire(&m))
    };
    let progress = |request: &str, stage: i32| {
        refused(progress_from_wire(&pb::ProgressRequest { request: request.into(), stage, cursor: String::new() }))
    };
    let table = vec![
        (
            create(|m| m.kind = 9),
            (
                "kind",
                "KNOWN_VALUE",
                "create_request: kind = \"9\" is not a kind: patient_transfer, cohort, staff or equipment",
            ),
        ),
        (
            create(|m| m.urgency = -1),
            (
                "urgency",
                "KNOWN_VALUE",
                "create_request: urgency = \"-1\" is not an urgency: routine, urgent or immediate",
            ),
        ),
        (create(|m| m.quantity = 0), ("quantity", "AT_LEAST", "create_request: quantity = 0 must be at least 1")),
        (
            create(|m| m.provider = " ".into()),
            ("provider", "REQUIRED", "create_request: provider = \" \" must name the requesting provider"),
        ),
        (
            create(|m| m.pair = String::new()),
            ("pair", "REQUIRED", "create_request: pair = \"\" must name a capacity pair such as beds.cc_adult"),
        ),
        (
            create(|m| m.reference = String::new()),
            ("reference", "REQUIRED", "create_request: reference = \"\" must be the requester's own reference id"),
        ),
        (create(|m| m.needed_by = None), ("needed_by", "REQUIRED", "create_request: needed_by is required")),
        (
            create(|m| m.needed_by = Some(prost_types::Timestamp { seconds: 1_800_000_000, nanos: -1 })),
            ("needed_by.nanos", "VALID_TIMESTAMP", "create_request: needed_by.nanos = -1 is outside 0..=999999999"),
        ),
        (
            create(|m| m.constraints = Some(pb::AidConstraints { within: "county".into(), isolation: false })),
            (
                "constraints.within",
                "KNOWN_VALUE",
                "create_request: constraints.within = \"county\" is not a scope level: system, region or nation",
            ),
        ),
        (
            offer(|m| m.request = "X7".into()),
            ("request", "REQUEST_ID", "offer: request = \"X7\" is not a request id like R12"),
        ),
        (
            offer(|m| m.request = "O1".into()),
            ("request", "REQUEST_ID", "offer: request = \"O1\" is not a request id like R12"),
        ),
        (
            offer(|m| m.provider = String::new()),
            ("provider", "REQUIRED", "offer: provider = \"\" must name the offering provider"),
        ),
        (offer(|m| m.quantity = 0), ("quantity", "AT_LEAST", "offer: quantity = 0 must be at least 1")),
        (offer(|m| m.hold_until = None), ("hold_until", "REQUIRED", "offer: hold_until is required")),
        (
            refused(accept_from_wire(&pb::AcceptOffer { offer: "R1".into(), cursor: String::new() })),
            ("offer", "OFFER_ID", "accept: offer = \"R1\" is not an offer id like O3"),
        ),
        (
            refused(decline_from_wire(&pb::DeclineOffer { offer: String::new(), cursor: String::new() })),
            ("offer", "OFFER_ID", "decline: offer = \"\" is not an offer id like O3"),
        ),
        (
            refused(withdraw_from_wire(&pb::WithdrawOffer { offer: "O0".into(), cursor: String::new() })),
            ("offer", "OFFER_ID", "withdraw: offer = \"O0\" is not an offer id like O3"),
        ),
        (progress("R0", 1), ("request", "REQUEST_ID", "progress: request = \"R0\" is not a request id like R12")),
        (
            progress("R1", 0),
            ("stage", "KNOWN_VALUE", "progress: stage = \"STAGE_UNSPECIFIED\" is not a stage: in_transit or completed"),
        ),
        (
            progress("R1", 7),
            ("stage", "KNOWN_VALUE", "progress: stage = \"7\" is not a stage: in_transit or completed"),
        ),
        (
            refused(cancel_from_wire(&pb::CancelRequest {
                request: "R1".into(),
                reason: "  ".into(),
                cursor: String::new(),
            })),
            ("reason", "REQUIRED", "cancel: reason = \"  \" must say why the capacity is no longer needed"),
        ),
        (
            refused(unfulfilled_from_wire(&pb::UnfulfilledRequest {
                request: "R1".into(),
                reason: String::new(),
                cursor: String::new(),
            })),
            ("reason", "REQUIRED", "unfulfilled: reason = \"\" must say why the need could not be met"),
        ),
        (
            refused(get_from_wire(&pb::GetAidRequest { request: "7".into() })),
            ("request", "REQUEST_ID", "get_request: request = \"7\" is not a request id like R12"),
        ),
        (
            refused(candidates_from_wire(&pb::GetAidCandidates { request: "R".into() })),
            ("request", "REQUEST_ID", "candidates: request = \"R\" is not a request id like R12"),
        ),
    ];
    for (i, (got, (field, rule, description))) in table.into_iter().enumerate() {
        assert_eq!(got, [v(field, rule, description)], "row {i}");
    }
}

fn ask(provider: &str, quantity: u32) -> NewRequest {
    NewRequest {
        provider: provider.into(),
        site: None,
        kind: Kind::PatientTransfer,
        pair: "beds.cc_adult".into(),
        quantity,
        urgency: Urgency::Immediate,
        needed_by: t(240),
        constraints: Constraints { within: Level::System, isolation: false },
        reference: "REF1".into(),
        summary: "Adult needing level 3 care".into(),
    }
}

fn actor(principal: &str, position: u64) -> Actor {
    Actor { principal: principal.into(), cursor: Cursor::new("e1", Position(position, 0)) }
}

fn at(minutes: i64) -> Option<prost_types::Timestamp> {
    wire_t(minutes)
}

/// The request `id` as `crate::aid` gives it: with its offers.
fn case_of(book: &AidBook, id: RequestId) -> Case {
    Case { request: book.request(id).unwrap().clone(), offers: book.offers_of(id).cloned().collect() }
}

/// What the requester's event of an action carries: what happened, and the offers it changed as they are now.
fn change_of(book: &AidBook, happened: Vec<AidEvent>) -> AidChange {
    let mut offers: Vec<Offer> = happened
        .iter()
        .filter_map(|e| match e {
            AidEvent::OfferChanged { offer, .. }
            | AidEvent::HoldPlaced { offer, .. }
            | AidEvent::HoldEnded { offer, .. } => book.offer(*offer).cloned(),
            _ => None,
        })
        .collect();
    offers.dedup_by_key(|o| o.id);
    AidChange { happened, offers, ..Default::default() }
}

/// What the holding provider's event of an action carries: its holds after it.
fn holds_change(book: &AidBook, provider: &str) -> AidChange {
    AidChange { holds: Some(book.holds_of(provider)), ..Default::default() }
}

#[test]
fn an_acceptance_on_the_wire_names_changes_records_and_the_hold() {
    let directory = demo_directory();
    let mut book = AidBook::new();
    book.apply(Action::Create(ask("RJ7", 2)), &actor("rj7", 1), t(0)).unwrap();
    let offer =
        Action::Offer { request: RequestId(1), provider: "RVR".into(), site: None, quantity: 1, hold_until: t(120) };
    book.apply(offer, &actor("rvr", 2), t(5)).unwrap();
    let events =
        book.apply(Action::Accept { offer: OfferId(1), baseline_occupied: 6 }, &actor("rj7", 3), t(10)).unwrap();
    let (requester, holder) = (change_of(&book, events), holds_change(&book, "RVR"));
    let parts = [Part { provider: "RJ7", change: &requester }, Part { provider: "RVR", change: &holder }];
    let case = case_of(&book, RequestId(1));
    let update = update_to_wire(Some(&Cursor::new("e1", Position(4, 0))), &parts, &case, &directory);

    use pb::aid_event::{Kind as K, *};
    let changes: Vec<K> = update.happened.into_iter().map(|c| c.kind.unwrap()).collect();
    assert_eq!(
        changes,
        [
            K::OfferChanged(OfferChanged {
                offer: "O1".into(),
                request: "R1".into(),
                from: pb::aid_offer::State::Proposed as i32,
                to: pb::aid_offer::State::Accepted as i32,
            }),
            K::HoldPlaced(HoldPlaced {
                offer: "O1".into(),
                provider: "RVR".into(),
                pair: "beds.cc_adult".into(),
                quantity: 1,
                until: at(120),
            }),
            K::RequestChanged(RequestChanged {
                request: "R1".into(),
                from: pb::aid_request::State::Offered as i32,
                to: pb::aid_request::State::Accepted as i32,
            }),
        ]
    );
    assert_eq!(update.cursor, "e1:4-0");
    let decision = |action: &str, principal: &str, position: u64, minutes: i64| pb::AidDecision {
        action: action.into(),
        principal: principal.into(),
        cursor: format!("e1:{position}-0"),
        at: at(minutes),
    };
    let hold = pb::AidHold {
        offer: "O1".into(),
        provider: "RVR".into(),
        pair: "beds.cc_adult".into(),
        quantity: 1,
        baseline_occupied: 6,
        since: at(10),
        until: at(120),
    };
    let offer = pb::AidOffer {
        id: "O1".into(),
        request: "R1".into(),
        provider: "RVR".into(),
        site: String::new(),
        quantity: 1,
        hold_until: at(120),
        state: pb::aid_offer::State::Accepted as i32,
        decisions: vec![decision("offer", "rvr", 2, 5), decision("accept", "rj7", 3, 10)],
        hold: Some(hold),
    };
    let request = pb::AidRequest {
        id: "R1".into(),
        provider: "RJ7".into(),
        site: String::new(),
        kind: pb::aid_request::Kind::PatientTransfer as i32,
        pair: "beds.cc_adult".into(),
        quantity: 2,
        urgency: pb::aid_request::Urgency::Immediate as i32,
        needed_by: at(240),
        constraints: Some(pb::AidConstraints { within: "system".into(), isolation: false }),
        reference: "REF1".into(),
        summary: "Adult needing level 3 care".into(),
        state: pb::aid_request::State::Accepted as i32,
        reason: String::new(),
        escalated: String::new(),
        created_at: at(0),
        first_offer_at: at(5),
        first_accepted_at: at(10),
        closed_at: None,
        offers: vec![offer.clone()],
        decisions: vec![
            decision("create", "rj7", 1, 0),
            decision("offer", "rvr", 2, 5),
            decision("accept", "rj7", 3, 10),
        ],
        outstanding: 1,
    };
    assert_eq!(update.requests, std::slice::from_ref(&request));
    assert_eq!(update.offers, [offer]);
    // A list leaves the trails out, of the request and of its offers.
    let listed = case_to_wire(&case, &[], Trail::Omitted);
    assert!(listed.decisions.is_empty() && listed.offers[0].decisions.is_empty());
    // Holds are shown where the caller knows them.
    assert_eq!(listed.offers[0].hold, None);
    let held = case_to_wire(&case, &book.holds_of("RVR"), Trail::Omitted);
    assert_eq!(held.offers[0].hold, request.offers[0].hold);

    // Both directions: the request's own fields, sent back as a new request, ask for the same thing.
    let again = pb::NewAidRequest {
        provider: request.provider,
        site: request.site,
        kind: request.kind,
        pair: request.pair,
        quantity: request.quantity,
        urgency: request.urgency,
        needed_by: request.needed_by,
        constraints: request.constraints,
        reference: request.reference,
        summary: request.summary,
        cursor: String::new(),
    };
    assert_eq!(create_from_wire(&again).unwrap(), Action::Create(ask("RJ7", 2)));
}

#[test]
fn hold_ends_and_escalations_on_the_wire() {
    let directory = demo_directory();
    let mut book = AidBook::new();
    book.apply(Action::Create(ask("RJ7", 1)), &actor("rj7", 1), t(0)).unwrap();
    // Unanswered for an hour: the system's, then the region's coordinators are alerted.
    let events = book.tick(t(61), &Timers::default(), &actor("sitrep", 2));
    let requester = change_of(&book, events);
    let parts = [Part { provider: "RJ7", change: &requester }];
    let update = update_to_wire(None, &parts, &case_of(&book, RequestId(1)), &directory);
    use pb::aid_event::{Kind as K, *};
    let escalated: Vec<K> = update.happened.into_iter().map(|c| c.kind.unwrap()).collect();
    assert_eq!(
        escalated,
        [
            K::Escalated(Escalated {
                request: "R1".into(),
                level: "system".into(),
                provider: "RJ7".into(),
                coordinators: "system:QWE".into(),
            }),
            K::Escalated(Escalated {
                request: "R1".into(),
                level: "region".into(),
                provider: "RJ7".into(),
                coordinators: "region:Y56".into(),
            }),
        ]
    );
    assert_eq!(update.cursor, "");
    assert_eq!(update.requests.len(), 1);
    assert_eq!(update.requests[0].escalated, "region");

    let offer =
        Action::Offer { request: RequestId(1), provider: "RVR".into(), site: None, quantity: 1, hold_until: t(120) };
    book.apply(offer, &actor("rvr", 3), t(62)).unwrap();
    book.apply(Action::Accept { offer: OfferId(1), baseline_occupied: 6 }, &actor("rj7", 4), t(63)).unwrap();
    let events = book
        .apply(Action::Cancel { request: RequestId(1), reason: "improved".into() }, &actor("rj7", 5), t(64))
        .unwrap();
    // The holder's event says its holds after: none.
    let (requester, holder) = (change_of(&book, events), holds_change(&book, "RVR"));
    let parts = [Part { provider: "RJ7", change: &requester }, Part { provider: "RVR", change: &holder }];
    let update = update_to_wire(None, &parts, &case_of(&book, RequestId(1)), &directory);
    let kinds: Vec<K> = update.happened.into_iter().map(|c| c.kind.unwrap()).collect();
    assert_eq!(
        kinds[0],
        K::HoldEnded(HoldEnded {
            offer: "O1".into(),
            provider: "RVR".into(),
            pair: "beds.cc_adult".into(),
            quantity: 1,
            end: hold_ended::End::Released as i32,
        })
    );
    let r = &update.requests[0];
    assert_eq!((r.state, r.reason.as_str()), (pb::aid_request::State::Cancelled as i32, "improved"));
    assert_eq!(r.closed_at, at(64));
    // The hold has ended: the offer carries none any more.
    assert_eq!(update.offers.len(), 1);
    assert_eq!(update.offers[0].hold, None);
}

#[test]
fn candidates_and_measures_on_the_wire() {
    let ranking = Ranking {
        candidates: vec![
            Candidate {
                provider: "RVR".into(),
                scope: Level::System,
                headroom: 3,
                distance_km: Some(4.2),
                reason: "same system QWE; headroom 3; 4.2 km".into(),
            },
            Candidate {
                provider: "RAL".into(),
                scope: Level::Region,
                headroom: 5,
                distance_km: None,
                reason: "same region Y56; headroom 5; no distance".into(),
            },
        ],
        excluded: vec![Excluded { provider: "RAX".into(), why: "cannot isolate".into() }],
    };
    let wire = candidates_to_wire(RequestId(2), &current(), &ranking);
    assert_eq!(
        wire,
        pb::AidCandidates {
            request: "R2".into(),
            cursor: "e1:7-0".into(),
            candidates: vec![
                pb::AidCandidate {
                    provider: "RVR".into(),
                    scope: "system".into(),
                    headroom: 3,
                    distance_km: Some(4.2),
                    reason: "same system QWE; headroom 3; 4.2 km".into(),
                },
                pb::AidCandidate {
                    provider: "RAL".into(),
                    scope: "region".into(),
                    headroom: 5,
                    distance_km: None,
                    reason: "same region Y56; headroom 5; no distance".into(),
                },
            ],
            excluded: vec![pb::AidExcluded { provider: "RAX".into(), why: "cannot isolate".into() }],
        }
    );

    // One request completed 90 minutes after it was made (offered after 6, accepted after 12), one still open.
    let directory = demo_directory();
    let mut book = AidBook::new();
    book.apply(Action::Create(ask("RJ7", 1)), &actor("rj7", 1), t(0)).unwrap();
    let offer =
        Action::Offer { request: RequestId(1), provider: "RVR".into(), site: None, quantity: 1, hold_until: t(120) };
    book.apply(offer, &actor("rvr", 2), t(6)).unwrap();
    book.apply(Action::Accept { offer: OfferId(1), baseline_occupied: 6 }, &actor("rj7", 3), t(12)).unwrap();
    for (stage, minute) in [(Stage::InTransit, 30), (Stage::Completed, 90)] {
        book.apply(Action::Progress { request: RequestId(1), stage }, &actor("rj7", 4), t(minute)).unwrap();
    }
    book.apply(Action::Create(ask("RJ7", 1)), &actor("rj7", 5), t(100)).unwrap();
    let m = measures("system:QWE", &book, &directory, t(130)).unwrap();
    let durations =
        |minutes: f64| Some(pb::AidDurations { count: 1, median_minutes: Some(minutes), p90_minutes: Some(minutes) });
    let days = sitrep_core::aid::measures_by_day("system:QWE", &book, &directory, t(130), 1).unwrap();
    let wire = measures_to_wire("system:QWE", &m, &days, t(130));
    assert_eq!(wire.by_day.len(), 1);
    let day = &wire.by_day[0];
    assert_eq!(day.measures.as_ref().map(|d| (d.requests, d.open_requests)), Some((2, 1)), "both made that day");
    assert_eq!(day.day, Some(timestamp_to_wire(Timestamp(t(0).0.div_euclid(86_400_000) * 86_400_000))));
    assert_eq!(
        pb::AidMeasures { by_day: Vec::new(), ..wire },
        pb::AidMeasures {
            scope: "system:QWE".into(),
            requests: 2,
            by_day: Vec::new(),
            open_requests: 1,
            oldest_open_minutes: Some(30.0),
            to_first_offer: durations(6.0),
            to_acceptance: durations(12.0),
            to_completion: durations(90.0),
            unfulfilled_rate: Some(0.0),
            balances: vec![
                pb::AidBalance { provider: "RJ7".into(), given: 0, received: 1 },
                pb::AidBalance { provider: "RVR".into(), given: 1, received: 0 },
            ],
            at: at(130),
        }
    );
    // Nothing reached: the durations say so rather than 0.
    let empty = measures_to_wire("nation", &Measures::default(), &[], t(0));
    assert_eq!(empty.to_completion, Some(pb::AidDurations { count: 0, median_minutes: None, p90_minutes: None }));
    assert_eq!((empty.oldest_open_minutes, empty.unfulfilled_rate), (None, None));
}
