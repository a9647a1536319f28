//! Mutual aid (issue 15) over gRPC, against the real binary: two replicas sharing one real `redis-server`, the
//! `sitrep aid` CLI, a subscriber on the other replica seeing every step in order, the clock's escalations taken
//! once although both replicas run it; and who may act for whom with a principals file.

use std::time::{Duration, Instant};

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::aid_service_client::AidServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;
use tokio::process::Command;
use tonic_types::StatusExt;

use crate::auth::{Credential, ed25519, ed25519_jwks, make_key, signed_token};
use crate::support::*;

/// The demo directory with places for the providers of system QWE that the test reports for, so candidates are
/// ordered by distance from RJ7 (St George's, Tooting): RVR 5 km, RJ6 6 km, RAX 8 km.
fn directory_with_places() -> String {
    let mut text = include_str!("../../crates/sitrep-core/data/demo.directory.toml").to_owned();
    for (code, lat, lon) in
        [("RJ7", 51.4270, -0.1745), ("RVR", 51.3816, -0.1804), ("RJ6", 51.3897, -0.1072), ("RAX", 51.4145, -0.2834)]
    {
        let line = format!("code = \"{code}\"\n");
        assert!(text.contains(&line), "{code} is in the demo directory");
        text = text.replacen(&line, &format!("{line}latitude = {lat}\nlongitude = {lon}\n"), 1);
    }
    text
}

/// Timers short enough to watch: the clock looks every second.
const CONFIG: &str = "directory = \"directory.toml\"\n\
    [staleness]\ncheck_interval = \"1s\"\n\
    [aid]\nescalate_to_system_after = \"2s\"\nescalate_to_region_after = \"4s\"\n";

/// The next event of a subscription, past heartbeats and totals moved by others.
async fn next_event(stream: &mut tonic::Streaming<pb::Update>) -> pb::Event {
    loop {
        match next(stream).await {
            pb::update::Kind::Heartbeat(_) | pb::update::Kind::Rollups(_) => continue,
            pb::update::Kind::Event(e) => return e,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// What an event says happened in mutual aid, as `sitrep aid` prints it.
fn happened(e: &pb::Event) -> Vec<String> {
    let aid = e.aid.as_ref().unwrap_or_else(|| panic!("no aid on {}", sitrep_client::display::event_line(e)));
    aid.happened.iter().map(|c| sitrep_client::display::aid_event_text(c, aid)).collect()
}

fn figure(e: &pb::Event, metric: &str) -> Option<f64> {
    e.figures.iter().find(|f| f.metric == metric).and_then(|f| f.value)
}

fn rollup(e: &pb::Event, scope: &str, metric: &str) -> Option<f64> {
    scope_figure(&e.rollups, scope, metric)
}

fn scope_figure(rollups: &[pb::ScopeRollup], scope: &str, metric: &str) -> Option<f64> {
    let r = rollups.iter().find(|r| r.scope.as_ref().is_some_and(|s| format!("{}:{}", s.level, s.code) == scope))?;
    r.metrics.iter().find(|m| m.metric == metric).and_then(|m| m.value)
}

fn in_hours(hours: i64) -> Option<prost_types::Timestamp> {
    Some(ts(sitrep_core::Timestamp::now().add_hours(hours)))
}

fn ask(provider: &str, quantity: u32, reference: &str) -> pb::NewAidRequest {
    pb::NewAidRequest {
        provider: provider.into(),
        site: String::new(),
        kind: pb::aid_request::Kind::PatientTransfer as i32,
        pair: "beds.cc_adult".into(),
        quantity,
        urgency: pb::aid_request::Urgency::Urgent as i32,
        needed_by: in_hours(2),
        constraints: Some(pb::AidConstraints { within: "region".into(), isolation: false }),
        reference: reference.into(),
        summary: "adult, level 3".into(),
        cursor: String::new(),
    }
}

fn offer(request: &str, provider: &str, quantity: u32) -> pb::NewAidOffer {
    pb::NewAidOffer {
        request: request.into(),
        provider: provider.into(),
        quantity,
        hold_until: in_hours(1),
        ..Default::default()
    }
}

/// The issue's end-to-end: RJ7, full and in red, asks replica A for two adult critical care beds; candidates
/// rank by headroom, then distance; RVR offers on A and RAX through the CLI on B; RJ7 accepts RVR's bed, which
/// RVR then holds (its free beds and QWE's drop by one in RVR's next event) until RVR's report shows it
/// occupied; the request goes in transit and completes; the measures show the times. A second request, left
/// unanswered, is escalated to the system and then the region once each, though both replicas run the clock. A
/// subscriber on replica B sees every step, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_aid_across_two_replicas() {
    let started = Instant::now();
    let redis = RedisProcess::start().expect("redis-server");
    let directory = directory_with_places();
    let files = [("directory.toml", directory.as_str())];
    let a = Server::start_full(CONFIG, &["--redis", &redis.url()], "127.0.0.1:0", &files).await;
    let b = Server::start_full(CONFIG, &["--redis", &redis.url()], "127.0.0.1:0", &files).await;
    let mut on_b = b.updates(1).await;
    expect_snapshot(next(&mut on_b).await);

    let free = "beds.cc_adult.free";
    let mut feed = a.provider().await;
    for (provider, open, occupied) in [("RJ7", 10.0, 10.0), ("RVR", 10.0, 6.0), ("RJ6", 8.0, 6.0), ("RAX", 8.0, 6.0)] {
        let values = [("beds.cc_adult.open", open), ("beds.cc_adult.occupied", occupied)];
        let ack = feed.submit(report(provider, 0, 1, &values)).await.unwrap().into_inner();
        assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
        let e = next_event(&mut on_b).await;
        assert_eq!(e.provider, provider);
    }
    let snap = b.snapshot_when("the four reports", |_| true).await;
    let qwe_free = scope_figure(&snap.rollups, "system:QWE", free);
    assert_eq!(qwe_free, Some(8.0), "QWE's free adult critical care beds: 0 + 4 + 2 + 2");
    let rj7 = snap.providers.iter().find(|p| p.provider == "RJ7").unwrap();
    let occupancy = rj7.figures.iter().find(|f| f.metric == "beds.cc_adult.occupancy").unwrap();
    assert_eq!(occupancy.rag(), pb::Rag::Red, "RJ7 is full and in red");

    // RJ7 asks replica A; RVR offers at once (on A), before the 2 s escalation could reach the request.
    let mut on_a = AidServiceClient::new(a.channel().await);
    let created = on_a.create_request(ask("RJ7", 2, "REF-1")).await.unwrap().into_inner();
    let r1 = created.requests[0].id.clone();
    assert_eq!((r1.as_str(), created.requests[0].state()), ("R1", pb::aid_request::State::Open));
    let offered = on_a.offer(offer(&r1, "RVR", 1)).await.unwrap().into_inner();
    let o1 = offered.offers[0].id.clone();

    let ranked = on_a.candidates(pb::GetAidCandidates { request: r1.clone() }).await.unwrap().into_inner();
    let order: Vec<(&str, i64)> = ranked.candidates.iter().map(|c| (c.provider.as_str(), c.headroom)).collect();
    assert_eq!(order, [("RVR", 4), ("RJ6", 2), ("RAX", 2)], "most headroom first, then the nearest: {ranked:?}");
    let km: Vec<f64> = ranked.candidates.iter().map(|c| c.distance_km.expect("both have places")).collect();
    assert!(km[1] < km[2], "RJ6 ({} km) is nearer RJ7 than RAX ({} km)", km[1], km[2]);

    // RAX offers through the CLI, against replica B.
    let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["aid", "offer", &r1, "--provider", "RAX", "--quantity", "1", "--hold", "1h", "--server", &b.url])
        .env_remove("SITREP_KEY")
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("O2: offered for R1 by RAX (1 beds.cc_adult), proposed"), "{printed}");

    let accepted = on_a.accept(pb::AcceptOffer { offer: o1.clone(), cursor: String::new() }).await.unwrap();
    assert_eq!(accepted.into_inner().requests[0].state(), pb::aid_request::State::Accepted);

    // Replica B's subscriber: the request, the two offers, the acceptance, then RVR's hold.
    let e = next_event(&mut on_b).await;
    assert_eq!((e.kind(), e.provider.as_str()), (pb::event::Kind::Aid, "RJ7"));
    assert_eq!(happened(&e), ["R1: created, open"]);
    let e = next_event(&mut on_b).await;
    assert!(happened(&e).contains(&"O1: offered for R1 by RVR (1 beds.cc_adult), proposed".to_owned()), "{e:?}");
    assert!(happened(&e).contains(&"R1: open -> offered".to_owned()), "{e:?}");
    let e = next_event(&mut on_b).await;
    assert_eq!(happened(&e), ["O2: offered for R1 by RAX (1 beds.cc_adult), proposed"]);
    let e = next_event(&mut on_b).await;
    assert!(happened(&e).contains(&"O1 (for R1): proposed -> accepted".to_owned()), "{e:?}");
    assert!(happened(&e).contains(&"R1: offered -> accepted".to_owned()), "{e:?}");
    let held = next_event(&mut on_b).await;
    assert_eq!((held.kind(), held.provider.as_str()), (pb::event::Kind::Aid, "RVR"), "{held:?}");
    let holds = held.holds.as_ref().expect("RVR's holds changed").holds.clone();
    assert_eq!(holds.iter().map(|h| (h.offer.as_str(), h.quantity)).collect::<Vec<_>>(), [("O1", 1)]);
    assert_eq!(figure(&held, free), Some(3.0), "RVR: 10 open - 6 occupied - 1 held");
    assert_eq!(rollup(&held, "system:QWE", free), Some(7.0), "QWE's free beds drop by the held bed");
    let line = sitrep_client::display::event_line(&held);
    assert!(line.contains("RVR aid") && line.contains("holds 1 beds.cc_adult (O1)"), "{line}");

    // RVR's next report shows the bed occupied: the hold ends in that report's own event.
    let values = [("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", 7.0)];
    let ack = feed.submit(report("RVR", 0, 2, &values)).await.unwrap().into_inner();
    assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");
    let e = next_event(&mut on_b).await;
    assert_eq!(
        (e.kind(), e.provider.as_str(), e.cursor.as_str()),
        (pb::event::Kind::Report, "RVR", ack.cursor.as_str())
    );
    assert_eq!(happened(&e), ["O1: RVR's hold of 1 beds.cc_adult ended (occupied)"]);
    assert_eq!(e.holds.as_ref().map(|h| h.holds.len()), Some(0), "set and empty: RVR holds nothing now");

    for (stage, to) in [
        (pb::progress_request::Stage::InTransit, "R1: accepted -> in_transit"),
        (pb::progress_request::Stage::Completed, "R1: in_transit -> completed"),
    ] {
        let m = pb::ProgressRequest { request: r1.clone(), stage: stage as i32, cursor: String::new() };
        on_a.progress(m).await.unwrap();
        let e = next_event(&mut on_b).await;
        assert!(happened(&e).contains(&to.to_owned()), "{to}: {e:?}");
    }
    let m = on_a.measures(pb::GetAidMeasures { scope: "system:QWE".into(), days: 1 }).await.unwrap().into_inner();
    assert_eq!(m.by_day.len(), 1, "today");
    for (what, d) in
        [("first offer", &m.to_first_offer), ("acceptance", &m.to_acceptance), ("completion", &m.to_completion)]
    {
        let d = d.as_ref().unwrap();
        assert_eq!(d.count, 1, "time to {what}: {m:?}");
        assert!(d.median_minutes.is_some_and(|t| (0.0..1.0).contains(&t)), "time to {what}: {m:?}");
    }
    assert_eq!(m.open_requests, 0);

    // A second request, left unanswered: escalated to QWE's coordinators after 2 s, to Y56's after 4 s.
    let asked = Instant::now();
    let created = on_a.create_request(ask("RJ7", 1, "REF-2")).await.unwrap().into_inner();
    let r2 = created.requests[0].id.clone();
    assert_eq!(happened(&next_event(&mut on_b).await), [format!("{r2}: created, open")]);
    for (level, after) in [("system:QWE", 2.0), ("region:Y56", 4.0)] {
        let e = next_event(&mut on_b).await;
        let waited = asked.elapsed().as_secs_f64();
        let words = format!("{r2}: escalated to {} coordinators ({level})", level.split(':').next().unwrap());
        assert_eq!(happened(&e), [words]);
        assert!(waited >= after - 0.1 && waited < after + 3.0, "escalated to {level} after {waited:.1} s");
    }
    // Both replicas tick every second: two more ticks each bring nothing more for R2 (heartbeats only).
    let quiet = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Ok(u) = tokio::time::timeout_at(quiet, on_b.message()).await {
        if let Some(pb::update::Kind::Event(e)) = u.unwrap().unwrap().kind {
            panic!("nothing more was due, but: {}", sitrep_client::display::event_line(&e));
        }
    }
    let trail = on_a.get_request(pb::GetAidRequest { request: r2 }).await.unwrap().into_inner().decisions;
    let escalations = trail.iter().filter(|d| d.action == "escalate").count();
    assert_eq!(escalations, 2, "{trail:?}");
    eprintln!("mutual aid end to end took {:.1} s", started.elapsed().as_secs_f64());
}

/// Who may act for whom, over gRPC, with a principals file: a provider's key acts only for its provider; a
/// coordinator of system QWE acts for its providers and no others; refusals are FAILED_PRECONDITION (wrong
/// state), NOT_FOUND (unknown id) and INVALID_ARGUMENT (with a field violation per field).
#[tokio::test]
async fn who_may_act_for_whom_over_grpc() {
    let (rj7_key, rj7) = make_key("RJ7 feed", &["--write", "RJ7", "--read", "provider:RJ7"]).await;
    let (coord_key, coord) = make_key("QWE coordinator", &["--read", "system:QWE", "--coordinate", "system:QWE"]).await;
    assert!(coord.contains("coordinate = [\"system:QWE\"]\n"), "sitrep key prints the grant: {coord}");
    let (admin_key, admin) = make_key("admin", &["--read", "*", "--write", "*", "--admin"]).await;
    let principals = format!("{rj7}\n{coord}\n{admin}\n");
    let config = "[auth]\nprincipals = \"p.toml\"\n";
    let server = Server::start_full(config, &[], "127.0.0.1:0", &[("p.toml", &principals)]).await;
    let channel = server.channel().await;
    let aid =
        |key: &str| AidServiceClient::with_interceptor(channel.clone(), Credential(Some(format!("Bearer {key}"))));
    let (mut as_rj7, mut as_coord) = (aid(&rj7_key), aid(&coord_key));

    let mut feed = sitrep_proto::v1::provider_service_client::ProviderServiceClient::with_interceptor(
        channel.clone(),
        Credential(Some(format!("Bearer {admin_key}"))),
    );
    for (provider, occupied) in [("RJ7", 10.0), ("RVR", 6.0)] {
        let values = [("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", occupied)];
        let ack = feed.submit(report(provider, 0, 1, &values)).await.unwrap().into_inner();
        assert_eq!(ack.outcome(), Outcome::Accepted);
    }

    // A provider's key asks only for itself.
    let denied = as_rj7.create_request(ask("RVR", 1, "REF-X")).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("RJ7 feed") && denied.message().contains("provider RVR"), "{denied:?}");
    let r1 = as_rj7.create_request(ask("RJ7", 1, "REF-1")).await.unwrap().into_inner().requests[0].id.clone();
    // It may not offer for RVR either; QWE's coordinator may, and its principal is recorded.
    let denied = as_rj7.offer(offer(&r1, "RVR", 1)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    let offered = as_coord.offer(offer(&r1, "RVR", 1)).await.unwrap().into_inner();
    let o1 = offered.offers[0].clone();
    assert_eq!(o1.decisions.last().map(|d| d.principal.as_str()), Some("QWE coordinator"));
    // Nor for a provider outside QWE.
    let denied = as_coord.create_request(ask("RGT", 1, "REF-G")).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("QWE coordinator") && denied.message().contains("provider RGT"), "{denied:?}");

    // Refusals.
    as_rj7.accept(pb::AcceptOffer { offer: o1.id.clone(), cursor: String::new() }).await.unwrap();
    let again = as_rj7.decline(pb::DeclineOffer { offer: o1.id.clone(), cursor: String::new() }).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains(&o1.id), "{again:?}");
    let unknown = as_rj7.accept(pb::AcceptOffer { offer: "O99".into(), cursor: String::new() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    let bad = pb::NewAidRequest { quantity: 0, kind: 0, ..ask("RJ7", 1, "REF-2") };
    let bad = as_rj7.create_request(bad).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let fields: Vec<String> =
        bad.get_details_bad_request().unwrap().field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["kind", "quantity"], "{bad:?}");
    let past = pb::NewAidRequest { needed_by: in_hours(-1), ..ask("RJ7", 1, "REF-3") };
    let past = as_rj7.create_request(past).await.unwrap_err();
    assert_eq!(past.code(), tonic::Code::InvalidArgument, "{past:?}");
    let violations = past.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), ["needed_by"], "{past:?}");
    // Nothing was changed by any refusal: R1 alone, accepted.
    let list = as_coord.list_requests(pb::ListAidRequests { all: true, scope: String::new() }).await.unwrap();
    let list = list.into_inner().requests;
    assert_eq!(
        list.iter().map(|r| (r.id.as_str(), r.state())).collect::<Vec<_>>(),
        [("R1", pb::aid_request::State::Accepted)]
    );
    // The open request is a strain signal on its system's rollup in a snapshot.
    let mut query = sitrep_proto::v1::query_service_client::QueryServiceClient::with_interceptor(
        channel.clone(),
        Credential(Some(format!("Bearer {admin_key}"))),
    );
    let snapshot = query.get_snapshot(pb::GetSnapshotRequest { filter: None }).await.unwrap().into_inner();
    let qwe = snapshot.rollups.iter().find(|r| r.scope.as_ref().is_some_and(|s| s.code == "QWE")).unwrap();
    assert_eq!(qwe.strain, Some(pb::AidStrain { open_requests: 1, unfulfilled_rate: None }), "{qwe:?}");
    let quiet = snapshot.rollups.iter().find(|r| r.scope.as_ref().is_some_and(|s| s.code == "QUE")).unwrap();
    assert_eq!(quiet.strain, None, "no request there");
}

/// A signed token may carry the coordinate grant in its `sitrep` claim, as a principals file does: the holder acts
/// for providers of its system, and only those, and is named on the decision.
#[tokio::test]
async fn a_signed_token_may_carry_the_coordinate_grant() {
    let pair = ed25519();
    let jwks = ed25519_jwks(&pair, Some("idp-1"));
    let config = "[auth]\njwks = \"jwks.json\"\naudience = \"sitrep-test\"\n";
    let server = Server::start_full(config, &[], "127.0.0.1:0", &[("jwks.json", &jwks)]).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = serde_json::json!({ "sub": "QWE coordinator (token)", "exp": now + 600, "aud": "sitrep-test",
        "sitrep": { "read": ["system:QWE"], "coordinate": ["system:QWE"] } });
    let token = signed_token(&pair, r#"{"alg":"EdDSA","kid":"idp-1","typ":"JWT"}"#, &claims);
    let mut aid = AidServiceClient::with_interceptor(server.channel().await, Credential(Some(token)));
    let made = aid.create_request(ask("RVR", 1, "TOK-1")).await.unwrap().into_inner();
    let trail = &made.requests[0].decisions;
    assert_eq!(trail.iter().map(|d| d.principal.as_str()).collect::<Vec<_>>(), ["QWE coordinator (token)"]);
    let denied = aid.create_request(ask("RGT", 1, "TOK-2")).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("coordinates"), "{}", denied.message());
}

/// A create whose answer was lost is simply sent again: the same message, even through the other replica, is
/// answered with the request the first made (same id, still one request listed, nothing new on the log), and the
/// same reference with other content is refused, naming it and the open request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_makes_no_second_request() {
    let redis = RedisProcess::start().expect("redis-server");
    let a = Server::start_redis(&redis.url()).await;
    let b = Server::start_redis(&redis.url()).await;
    let mut feed = a.provider().await;
    let values = [("beds.cc_adult.open", 10.0), ("beds.cc_adult.occupied", 10.0)];
    let ack = feed.submit(report("RJ7", 0, 1, &values)).await.unwrap().into_inner();
    assert_eq!(ack.outcome(), Outcome::Accepted, "{ack:?}");

    let (mut on_a, mut on_b) = (AidServiceClient::new(a.channel().await), AidServiceClient::new(b.channel().await));
    let message = ask("RJ7", 2, "ICU-0042");
    let first = on_a.create_request(message.clone()).await.unwrap().into_inner();
    let again = on_a.create_request(message.clone()).await.unwrap().into_inner();
    let elsewhere = on_b.create_request(message.clone()).await.unwrap().into_inner();
    for answer in [&again, &elsewhere] {
        assert_eq!(answer.requests.len(), 1, "{answer:?}");
        let (r, made) = (&answer.requests[0], &first.requests[0]);
        assert_eq!((r.id.as_str(), r.state(), r.reference.as_str()), ("R1", pb::aid_request::State::Open, "ICU-0042"));
        assert_eq!(r.decisions, made.decisions, "the first create's trail: no second decision");
        assert!(answer.happened.is_empty(), "nothing happened again: {answer:?}");
        assert!(!answer.cursor.is_empty(), "the cursor of a picture that shows it: {answer:?}");
    }
    for on in [&mut on_a, &mut on_b] {
        let listed = on.list_requests(pb::ListAidRequests { all: true, scope: String::new() }).await.unwrap();
        let ids: Vec<String> = listed.into_inner().requests.into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["R1"], "one request");
    }

    let other = pb::NewAidRequest { quantity: 3, ..message.clone() };
    let refused = on_b.create_request(other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    for part in ["reference = \"ICU-0042\"", "reference_in_use", "its quantity differs", "end R1 first"] {
        assert!(refused.message().contains(part), "{part}: {}", refused.message());
    }
    // Ended, the reference makes a new request.
    let cancel = pb::CancelRequest { request: "R1".into(), reason: "patient improved".into(), ..Default::default() };
    on_a.cancel(cancel).await.unwrap();
    let new = on_a.create_request(message).await.unwrap().into_inner();
    assert_eq!(new.requests[0].id, "R2");

    // `sitrep aid request` run again (its answer lost, say) with a time, not a duration: the same request.
    let needed_by = sitrep_core::Timestamp::now().add_hours(3).to_string();
    let mut printed = Vec::new();
    for server in [&a.url, &b.url] {
        let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
            .args(["aid", "request", "--provider", "RJ7", "--pair", "beds.cc_adult", "--quantity", "1"])
            .args(["--needed-by", &needed_by, "--reference", "CLI-1", "--server", server])
            .env_remove("SITREP_KEY")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        printed.push(text);
    }
    assert!(printed[0].contains("R3") && !printed[0].contains("nothing changed"), "{}", printed[0]);
    assert!(printed[1].contains("nothing changed: this request was made before"), "{}", printed[1]);
    assert!(printed[1].contains("R3") && !printed[1].contains("R4"), "{}", printed[1]);
}
