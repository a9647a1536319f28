//! `sitrep aid ...`: mutual aid from the command line, a client of `AidService` (`proto/sitrep/v1/aid.proto`).
//!
//! Each subcommand makes one call and prints the answer for people: a mutating one prints what changed, one line a
//! change, then the request as it now stands; a list is a table with ages such as "12 min". Times given as
//! durations (`--needed-by 2h`, `--hold 30m`) are counted from now, here, and sent as times. Ids are checked before
//! anything is sent (`R1` for a request, `O1` for an offer) by the same parser the aggregator uses.
//!
//! Exit status: 0 done, 2 the aggregator refused (a malformed field, a record in the wrong state, an unknown id:
//! each reason is printed), 1 any other failure.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use sitrep_client::display::{aid_event_text, aid_offer_state, aid_request_state, enum_name, who};
use sitrep_core::Timestamp;
use sitrep_proto::convert::{parse_offer_id, parse_request_id};
use sitrep_proto::convert::{timestamp_from_wire, timestamp_to_wire};
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::aid_service_client::AidServiceClient;
use tonic_types::StatusExt;

use crate::args::{ServerArg, connect};
use crate::server;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep aid request --provider RJ7 --pair beds.cc_adult --quantity 2 --needed-by 2h --reference REF1\n  \
    sitrep aid candidates R1\n  \
    sitrep aid offer R1 --provider RXH --quantity 1 --hold 2h\n  \
    sitrep aid accept O1\n  \
    sitrep aid progress R1 in-transit\n  \
    sitrep aid list --scope system:QWE\n  \
    sitrep aid measures --scope system:QWE\n\n\
    Every decision is recorded with who made it and the picture cursor it was made on (--cursor, default the \
    aggregator's current one). Never put patient-identifiable data in a reference, summary or reason.")]
pub struct AidArgs {
    #[command(subcommand)]
    command: AidCommand,
}

#[derive(Subcommand)]
enum AidCommand {
    /// Ask for capacity for a provider (or one of its units).
    #[command(after_help = "Example:\n  \
        sitrep aid request --provider RJ7 --pair beds.cc_adult --quantity 2 --kind patient-transfer \\\n    \
        --urgency urgent --needed-by 2h --within region --reference REF1 --summary \"Two adults, level 3\"\n\n\
        Never put patient-identifiable data in --reference or --summary.")]
    Request(RequestArgs),
    /// Offer capacity for a request, held for a time.
    #[command(after_help = "Example:\n  sitrep aid offer R1 --provider RXH --quantity 1 --hold 2h")]
    Offer(OfferArgs),
    /// Accept an offer (as the requester): the offering provider's beds are held.
    Accept(OfferIdArgs),
    /// Decline an offer (as the requester).
    Decline(OfferIdArgs),
    /// Withdraw an offer (as the offering provider).
    Withdraw(OfferIdArgs),
    /// Move an accepted request on: in-transit, then completed.
    #[command(after_help = "Examples:\n  sitrep aid progress R1 in-transit\n  sitrep aid progress R1 completed")]
    Progress(ProgressArgs),
    /// Cancel a request that is no longer needed; its holds are released.
    Cancel(ReasonArgs),
    /// Declare that a request cannot be met; its holds are released.
    Unfulfilled(ReasonArgs),
    /// List requests, newest first: those not yet closed, or all.
    #[command(after_help = "Examples:\n  sitrep aid list\n  sitrep aid list --all --scope system:QWE")]
    List(ListArgs),
    /// Show one request with its offers and the full decision trail.
    Show(RequestIdArgs),
    /// The providers a request could ask, in the order to ask them, and those left out with why.
    Candidates(RequestIdArgs),
    /// How well mutual aid works in a scope: open requests, times to offer, acceptance and completion, unmet rate,
    /// and each provider's balance of beds given and received.
    #[command(after_help = "Example:\n  sitrep aid measures --scope system:QWE")]
    Measures(MeasuresArgs),
}

/// The picture cursor a decision is made on, for the audit trail.
#[derive(Args)]
struct CursorArg {
    /// The picture cursor you decided on (from `sitrep watch`); default: the aggregator's current one.
    #[arg(long)]
    cursor: Option<String>,
}

impl CursorArg {
    fn text(self) -> String {
        self.cursor.unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KindArg {
    PatientTransfer,
    Cohort,
    Staff,
    Equipment,
}

impl KindArg {
    fn wire(self) -> pb::aid_request::Kind {
        use pb::aid_request::Kind as W;
        match self {
            KindArg::PatientTransfer => W::PatientTransfer,
            KindArg::Cohort => W::Cohort,
            KindArg::Staff => W::Staff,
            KindArg::Equipment => W::Equipment,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum UrgencyArg {
    Routine,
    Urgent,
    Immediate,
}

impl UrgencyArg {
    fn wire(self) -> pb::aid_request::Urgency {
        use pb::aid_request::Urgency as W;
        match self {
            UrgencyArg::Routine => W::Routine,
            UrgencyArg::Urgent => W::Urgent,
            UrgencyArg::Immediate => W::Immediate,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WithinArg {
    System,
    Region,
    Nation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StageArg {
    InTransit,
    Completed,
}

#[derive(Args)]
struct RequestArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The requesting provider's code, e.g. RJ7.
    #[arg(long)]
    provider: String,
    /// The unit (site) that needs the capacity, e.g. RJ701; default the provider as a whole.
    #[arg(long)]
    site: Option<String>,
    /// The capacity pair needed, e.g. beds.cc_adult (its metrics are beds.cc_adult.open and .occupied).
    #[arg(long)]
    pair: String,
    /// How many (beds, staff, items), at least 1.
    #[arg(long, default_value_t = 1)]
    quantity: u32,
    /// What is asked for.
    #[arg(long, value_enum, default_value = "patient-transfer")]
    kind: KindArg,
    /// How urgent it is.
    #[arg(long, value_enum, default_value = "urgent")]
    urgency: UrgencyArg,
    /// When it is needed by: a duration from now (2h, 30m, 1h30m) or an RFC 3339 time. It expires then if not
    /// accepted. Re-running the command while the request is open answers with it; give a time, not a duration,
    /// for a re-run to ask for the same.
    #[arg(long, value_parser = when)]
    needed_by: When,
    /// The widest scope to look in (the nearest is always preferred).
    #[arg(long, value_enum, default_value = "nation")]
    within: WithinArg,
    /// The receiving provider must be able to isolate.
    #[arg(long)]
    isolation: bool,
    /// Your own reference id, 1 to 64 characters; never a patient identifier. While the request is open it names
    /// it: the same command again is answered with that request, other content under it is refused.
    #[arg(long)]
    reference: String,
    /// A short non-identifying description of the need, at most 200 characters.
    #[arg(long, default_value = "")]
    summary: String,
    #[command(flatten)]
    cursor: CursorArg,
}

#[derive(Args)]
struct OfferArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The request to offer to, e.g. R1.
    #[arg(value_parser = request_id)]
    request: String,
    /// The offering provider's code, e.g. RXH.
    #[arg(long)]
    provider: String,
    /// The offering unit (site); default the provider as a whole.
    #[arg(long)]
    site: Option<String>,
    /// How many, at least 1 and at most what the request still needs.
    #[arg(long, default_value_t = 1)]
    quantity: u32,
    /// How long the capacity is held, from now (2h, 45m) or until an RFC 3339 time: the offer expires then if
    /// not accepted, and an accepted offer's hold ends then unless a report shows the beds occupied.
    #[arg(long, value_parser = when)]
    hold: When,
    #[command(flatten)]
    cursor: CursorArg,
}

#[derive(Args)]
struct OfferIdArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The offer, e.g. O1.
    #[arg(value_parser = offer_id)]
    offer: String,
    #[command(flatten)]
    cursor: CursorArg,
}

#[derive(Args)]
struct ProgressArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The request, e.g. R1.
    #[arg(value_parser = request_id)]
    request: String,
    /// in-transit (from accepted) or completed (from in transit).
    #[arg(value_enum)]
    stage: StageArg,
    #[command(flatten)]
    cursor: CursorArg,
}

#[derive(Args)]
struct ReasonArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The request, e.g. R1.
    #[arg(value_parser = request_id)]
    request: String,
    /// Why, in a few non-identifying words (recorded with the request).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    cursor: CursorArg,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Closed requests too (completed, cancelled, expired, unfulfilled).
    #[arg(long)]
    all: bool,
    /// Only requests of providers in this scope: system:CODE, region:CODE, provider:CODE or nation.
    #[arg(long)]
    scope: Option<String>,
}

#[derive(Args)]
struct RequestIdArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The request, e.g. R1.
    #[arg(value_parser = request_id)]
    request: String,
}

#[derive(Args)]
struct MeasuresArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The scope: system:CODE, region:CODE or nation.
    #[arg(long)]
    scope: String,
    /// Also show each of the last DAYS days (UTC, today included): the requests made that day and how they fared.
    #[arg(long, default_value_t = 0, value_name = "DAYS")]
    days: u32,
}

/// A time given on the command line: a duration from now, or an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    In(Duration),
    At(Timestamp),
}

impl When {
    fn at(self, now: Timestamp) -> Timestamp {
        match self {
            When::In(d) => now.add_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            When::At(t) => t,
        }
    }
}

/// `2h`, `30m`, `1h30m` (humantime's durations), or an RFC 3339 time; a duration must be more than nothing.
fn when(text: &str) -> Result<When, String> {
    if let Some(t) = Timestamp::parse_rfc3339(text) {
        return Ok(When::At(t));
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{text:?} is no time at all; give a duration such as 2h or 30m")),
        Ok(d) => Ok(When::In(d)),
        Err(e) => Err(format!(
            "{text:?} is neither a duration such as 2h, 30m or 1h30m ({e}) nor an RFC 3339 time like 2026-12-05T14:00:00Z"
        )),
    }
}

fn request_id(text: &str) -> Result<String, String> {
    match parse_request_id(text) {
        Some(id) => Ok(id.to_string()),
        None => Err(format!("{text:?} is not a request id like R1")),
    }
}

fn offer_id(text: &str) -> Result<String, String> {
    match parse_offer_id(text) {
        Some(id) => Ok(id.to_string()),
        None => Err(format!("{text:?} is not an offer id like O1")),
    }
}

pub async fn run(args: AidArgs) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    match args.command {
        AidCommand::Request(a) => request(a, now).await,
        AidCommand::Offer(a) => offer(a, now).await,
        AidCommand::Accept(a) => {
            let mut c = client(&a.server)?;
            mutate(&a.server, c.accept(pb::AcceptOffer { offer: a.offer, cursor: a.cursor.text() }).await)
        }
        AidCommand::Decline(a) => {
            let mut c = client(&a.server)?;
            mutate(&a.server, c.decline(pb::DeclineOffer { offer: a.offer, cursor: a.cursor.text() }).await)
        }
        AidCommand::Withdraw(a) => {
            let mut c = client(&a.server)?;
            mutate(&a.server, c.withdraw(pb::WithdrawOffer { offer: a.offer, cursor: a.cursor.text() }).await)
        }
        AidCommand::Progress(a) => {
            let stage = match a.stage {
                StageArg::InTransit => pb::progress_request::Stage::InTransit,
                StageArg::Completed => pb::progress_request::Stage::Completed,
            };
            let m = pb::ProgressRequest { request: a.request, stage: stage as i32, cursor: a.cursor.text() };
            let mut c = client(&a.server)?;
            mutate(&a.server, c.progress(m).await)
        }
        AidCommand::Cancel(a) => {
            let m = pb::CancelRequest { request: a.request, reason: a.reason, cursor: a.cursor.text() };
            let mut c = client(&a.server)?;
            mutate(&a.server, c.cancel(m).await)
        }
        AidCommand::Unfulfilled(a) => {
            let m = pb::UnfulfilledRequest { request: a.request, reason: a.reason, cursor: a.cursor.text() };
            let mut c = client(&a.server)?;
            mutate(&a.server, c.unfulfilled(m).await)
        }
        AidCommand::List(a) => {
            let m = pb::ListAidRequests { all: a.all, scope: a.scope.unwrap_or_default() };
            let mut c = client(&a.server)?;
            answer(&a.server, c.list_requests(m).await, |list| print!("{}", requests_table(&list.requests, now)))
        }
        AidCommand::Show(a) => {
            let mut c = client(&a.server)?;
            let m = pb::GetAidRequest { request: a.request };
            answer(&a.server, c.get_request(m).await, |r| print!("{}", request_text(&r, now)))
        }
        AidCommand::Candidates(a) => {
            let mut c = client(&a.server)?;
            let m = pb::GetAidCandidates { request: a.request };
            answer(&a.server, c.candidates(m).await, |r| print!("{}", candidates_text(&r)))
        }
        AidCommand::Measures(a) => {
            let mut c = client(&a.server)?;
            answer(&a.server, c.measures(pb::GetAidMeasures { scope: a.scope, days: a.days }).await, |m| {
                print!("{}", measures_text(&m))
            })
        }
    }
}

/// `sitrep aid request`: asks for capacity, needed by `--needed-by` from `now`.
async fn request(a: RequestArgs, now: Timestamp) -> anyhow::Result<ExitCode> {
    let m = pb::NewAidRequest {
        provider: a.provider,
        site: a.site.unwrap_or_default(),
        kind: a.kind.wire() as i32,
        pair: a.pair,
        quantity: a.quantity,
        urgency: a.urgency.wire() as i32,
        needed_by: Some(timestamp_to_wire(a.needed_by.at(now))),
        constraints: Some(pb::AidConstraints {
            within: a.within.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default(),
            isolation: a.isolation,
        }),
        reference: a.reference,
        summary: a.summary,
        cursor: a.cursor.text(),
    };
    let mut c = client(&a.server)?;
    mutate(&a.server, c.create_request(m).await)
}

/// `sitrep aid offer`: offers capacity for a request, held for `--hold` from `now`.
async fn offer(a: OfferArgs, now: Timestamp) -> anyhow::Result<ExitCode> {
    let m = pb::NewAidOffer {
        request: a.request,
        provider: a.provider,
        site: a.site.unwrap_or_default(),
        quantity: a.quantity,
        hold_until: Some(timestamp_to_wire(a.hold.at(now))),
        cursor: a.cursor.text(),
    };
    let mut c = client(&a.server)?;
    mutate(&a.server, c.offer(m).await)
}

fn client(server: &ServerArg) -> anyhow::Result<AidServiceClient<server::Conn>> {
    Ok(AidServiceClient::new(connect(server)?))
}

/// Prints what a mutating call changed, then the request it concerns as it now stands.
fn mutate(
    server: &ServerArg,
    result: Result<tonic::Response<pb::AidUpdate>, tonic::Status>,
) -> anyhow::Result<ExitCode> {
    answer(server, result, |update| {
        let now = Timestamp::now();
        if update.happened.is_empty() {
            // Only a retried create changes nothing: the aggregator answered with the request it made before.
            println!("nothing changed: this request was made before (its reference names it while it is open)");
        }
        for change in &update.happened {
            println!("{}", aid_event_text(change, &update));
        }
        for r in &update.requests {
            println!();
            print!("{}", request_text(r, now));
        }
    })
}

/// Prints an answer, or the aggregator's refusal (exit status 2), or fails with what went wrong on the way.
fn answer<T>(
    server: &ServerArg,
    result: Result<tonic::Response<T>, tonic::Status>,
    print: impl FnOnce(T),
) -> anyhow::Result<ExitCode> {
    use tonic::Code;
    match result {
        Ok(answer) => {
            print(answer.into_inner());
            Ok(ExitCode::SUCCESS)
        }
        Err(status) if matches!(status.code(), Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound) => {
            println!("refused: {}", status.message());
            for v in status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default() {
                println!("  {} ({}): {}", v.field, v.reason.to_lowercase(), v.description);
            }
            Ok(ExitCode::from(2))
        }
        Err(status) if status.code() == Code::PermissionDenied => {
            bail!("not allowed: {} (a provider acts only for itself; a coordinator for its scope)", status.message())
        }
        // The aggregator answered, but without mutual aid: an older version, or one not yet serving it.
        Err(status) if status.code() == Code::Unimplemented => {
            let said = if status.message().is_empty() { String::new() } else { format!(": {}", status.message()) };
            bail!("{} answered, but does not serve mutual aid (sitrep.v1.AidService) yet{said}", server.server)
        }
        Err(status) => bail!("{}", server::describe(&server.server, &status)),
    }
}

/// An age or a wait for people: "0 min", "12 min", "2 h 05 min", "3 d 4 h".
fn age(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    match minutes {
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h {:02} min", m / 60, m % 60),
        m => format!("{} d {} h", m / (24 * 60), m % (24 * 60) / 60),
    }
}

/// How far `at` is from `now`: "in 2 h 05 min" or "12 min ago".
fn relative(at: Timestamp, now: Timestamp) -> String {
    let ms = at.0 - now.0;
    if ms >= 0 { format!("in {}", age(ms)) } else { format!("{} ago", age(-ms)) }
}

fn time(t: &Option<prost_types::Timestamp>) -> Option<Timestamp> {
    t.as_ref().map(timestamp_from_wire)
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells.zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// An enum's name without its prefix, lower case: `STATE_IN_TRANSIT` -> `in_transit`.
fn kind(code: i32) -> String {
    pb::aid_request::Kind::try_from(code).map_or_else(|_| code.to_string(), |k| enum_name(k.as_str_name(), "KIND_"))
}

fn urgency(code: i32) -> String {
    pb::aid_request::Urgency::try_from(code)
        .map_or_else(|_| code.to_string(), |u| enum_name(u.as_str_name(), "URGENCY_"))
}

fn requests_table(requests: &[pb::AidRequest], now: Timestamp) -> String {
    if requests.is_empty() {
        return "no requests\n".to_owned();
    }
    let rows: Vec<Vec<String>> = requests
        .iter()
        .map(|r| {
            let waiting = time(&r.created_at).map_or_else(String::new, |t| age(now.0 - t.0));
            let needed = time(&r.needed_by).map_or_else(String::new, |t| relative(t, now));
            vec![
                r.id.clone(),
                who(&r.provider, &r.site),
                r.pair.clone(),
                format!("{}/{}", r.quantity - r.outstanding.min(r.quantity), r.quantity),
                urgency(r.urgency),
                aid_request_state(r.state),
                waiting,
                needed,
                r.offers.len().to_string(),
                r.escalated.clone(),
            ]
        })
        .collect();
    table(&["ID", "PROVIDER", "PAIR", "COVERED", "URGENCY", "STATE", "AGE", "NEEDED BY", "OFFERS", "ESCALATED"], &rows)
}

fn request_text(r: &pb::AidRequest, now: Timestamp) -> String {
    let mut out = format!(
        "{} {} asks for {} {} ({}, {}): {}\n",
        r.id,
        who(&r.provider, &r.site),
        r.quantity,
        r.pair,
        kind(r.kind),
        urgency(r.urgency),
        aid_request_state(r.state)
    );
    if let Some(t) = time(&r.created_at) {
        out.push_str(&format!("  made {}, {} ago\n", t, age(now.0 - t.0)));
    }
    if let Some(t) = time(&r.needed_by) {
        out.push_str(&format!("  needed by {t} ({})\n", relative(t, now)));
    }
    if let Some(c) = &r.constraints {
        let isolation = if c.isolation { ", isolation needed" } else { "" };
        out.push_str(&format!("  within the {}{isolation}\n", if c.within.is_empty() { "nation" } else { &c.within }));
    }
    out.push_str(&format!("  reference {}", r.reference));
    if !r.summary.is_empty() {
        out.push_str(&format!(": {}", r.summary));
    }
    out.push('\n');
    out.push_str(&format!("  {} still needed\n", r.outstanding));
    if !r.reason.is_empty() {
        out.push_str(&format!("  reason: {}\n", r.reason));
    }
    if !r.escalated.is_empty() {
        out.push_str(&format!("  escalated to the {}'s coordinators\n", r.escalated));
    }
    if let Some(created) = time(&r.created_at) {
        for (label, t) in
            [("first offer", &r.first_offer_at), ("accepted", &r.first_accepted_at), ("closed", &r.closed_at)]
        {
            if let Some(t) = time(t) {
                out.push_str(&format!("  {label} after {}\n", age(t.0 - created.0)));
            }
        }
    }
    out.push_str(&offers_text(r, now));
    out.push_str(&decisions_text(r));
    out
}

/// A request's offers as a table under a heading, or nothing when it has none.
fn offers_text(r: &pb::AidRequest, now: Timestamp) -> String {
    if r.offers.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = r
        .offers
        .iter()
        .map(|o| {
            let until = time(&o.hold_until).map_or_else(String::new, |t| relative(t, now));
            let hold = o.hold.as_ref().map_or_else(String::new, |h| format!("{} held", h.quantity));
            vec![o.id.clone(), who(&o.provider, &o.site), o.quantity.to_string(), aid_offer_state(o.state), until, hold]
        })
        .collect();
    format!("\nOffers:\n{}", table(&["ID", "PROVIDER", "QTY", "STATE", "HOLD UNTIL", "HOLD"], &rows))
}

/// A request's decision trail, its own and its offers', in time order, as a table under a heading (or nothing).
fn decisions_text(r: &pb::AidRequest) -> String {
    // A decision on an offer is recorded on its request too: show it once, under the offer. One decision can touch
    // several offers (an acceptance that covers the request declines the others), so each offer keeps its own.
    let on_offers: Vec<(String, &pb::AidDecision)> =
        r.offers.iter().flat_map(|o| o.decisions.iter().map(|d| (o.id.clone(), d))).collect();
    let mut trail: Vec<(String, &pb::AidDecision)> = r
        .decisions
        .iter()
        .filter(|d| !on_offers.iter().any(|(_, o)| o == d))
        .map(|d| (r.id.clone(), d))
        .chain(on_offers.iter().cloned())
        .collect();
    trail.sort_by_key(|(record, d)| (time(&d.at).unwrap_or_default(), record.starts_with('O'), record.clone()));
    if trail.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = trail
        .iter()
        .map(|(record, d)| {
            let at = time(&d.at).map(|t| t.to_string()).unwrap_or_default();
            vec![at, record.clone(), d.action.clone(), d.principal.clone(), d.cursor.clone()]
        })
        .collect();
    format!("\nDecisions:\n{}", table(&["AT", "ON", "ACTION", "BY", "PICTURE"], &rows))
}

fn candidates_text(c: &pb::AidCandidates) -> String {
    let mut out = format!("Candidates for {} (picture {}):\n", c.request, c.cursor);
    if c.candidates.is_empty() {
        out.push_str("none\n");
    } else {
        let rows: Vec<Vec<String>> = c
            .candidates
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let distance = k.distance_km.map_or_else(|| "–".to_owned(), |d| format!("{d:.1} km"));
                vec![
                    (i + 1).to_string(),
                    k.provider.clone(),
                    k.scope.clone(),
                    k.headroom.to_string(),
                    distance,
                    k.reason.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&["#", "PROVIDER", "SCOPE", "HEADROOM", "DISTANCE", "WHY HERE"], &rows));
    }
    if !c.excluded.is_empty() {
        let rows: Vec<Vec<String>> = c.excluded.iter().map(|e| vec![e.provider.clone(), e.why.clone()]).collect();
        out.push_str("\nLeft out:\n");
        out.push_str(&table(&["PROVIDER", "WHY"], &rows));
    }
    out
}

fn minutes_text(m: Option<f64>) -> String {
    m.map_or_else(|| "–".to_owned(), |m| age((m * 60_000.0).round() as i64))
}

fn measures_text(m: &pb::AidMeasures) -> String {
    let mut out = format!("Mutual aid in {}", m.scope);
    if let Some(t) = time(&m.at) {
        out.push_str(&format!(" at {t}"));
    }
    out.push('\n');
    out.push_str(&format!("  open requests: {}", m.open_requests));
    if let Some(oldest) = m.oldest_open_minutes {
        out.push_str(&format!(" (oldest {})", minutes_text(Some(oldest))));
    }
    out.push('\n');
    let rate = m.unfulfilled_rate.map_or_else(|| "– (none closed)".to_owned(), |r| format!("{:.0}%", r * 100.0));
    out.push_str(&format!("  unfulfilled rate: {rate}\n"));
    let rows: Vec<Vec<String>> =
        [("first offer", &m.to_first_offer), ("acceptance", &m.to_acceptance), ("completion", &m.to_completion)]
            .into_iter()
            .map(|(label, d)| {
                let d = d.unwrap_or_default();
                vec![label.to_owned(), d.count.to_string(), minutes_text(d.median_minutes), minutes_text(d.p90_minutes)]
            })
            .collect();
    out.push_str("\nTime from request to:\n");
    out.push_str(&table(&["MILESTONE", "REQUESTS", "MEDIAN", "P90"], &rows));
    if !m.balances.is_empty() {
        let rows: Vec<Vec<String>> = m
            .balances
            .iter()
            .map(|b| {
                let net = i64::from(b.given) - i64::from(b.received);
                vec![b.provider.clone(), b.given.to_string(), b.received.to_string(), format!("{net:+}")]
            })
            .collect();
        out.push_str("\nBalances:\n");
        out.push_str(&table(&["PROVIDER", "GIVEN", "RECEIVED", "NET"], &rows));
    }
    if !m.by_day.is_empty() {
        let median = |d: &Option<pb::AidDurations>| minutes_text(d.unwrap_or_default().median_minutes);
        let rows: Vec<Vec<String>> = m
            .by_day
            .iter()
            .filter_map(|d| Some((time(&d.day)?, d.measures.as_ref()?)))
            .map(|(day, m)| {
                vec![
                    day.to_string()[..10].to_owned(),
                    m.requests.to_string(),
                    m.open_requests.to_string(),
                    median(&m.to_first_offer),
                    median(&m.to_completion),
                    m.unfulfilled_rate.map_or_else(|| "–".to_owned(), |r| format!("{:.0}%", r * 100.0)),
                ]
            })
            .collect();
        out.push_str("\nBy day (requests made that day):\n");
        out.push_str(&table(&["DAY", "REQUESTS", "OPEN", "TO OFFER", "TO COMPLETE", "UNFULFILLED"], &rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `sitrep aid ...` alone, to parse its arguments.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AidCommand,
    }

    fn parse(args: &[&str]) -> Result<AidCommand, String> {
        Cli::try_parse_from(std::iter::once("aid").chain(args.iter().copied()))
            .map(|c| c.command)
            .map_err(|e| e.to_string())
    }

    /// The error for arguments that must be refused.
    fn refused(args: &[&str]) -> String {
        match parse(args) {
            Ok(_) => panic!("{args:?} accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn durations_and_times() {
        let minutes = |m: u64| Ok(When::In(Duration::from_secs(m * 60)));
        assert_eq!(when("2h"), minutes(120));
        assert_eq!(when("30m"), minutes(30));
        assert_eq!(when("30min"), minutes(30));
        assert_eq!(when("1h30m"), minutes(90));
        assert_eq!(when("1h 30m"), minutes(90));
        assert_eq!(
            when("2026-12-05T14:00:00Z"),
            Ok(When::At(Timestamp::parse_rfc3339("2026-12-05T14:00:00Z").unwrap()))
        );
        for bad in ["", "0h", "0", "2", "2x", "-1h", "soon", "2026-13-05T14:00:00Z"] {
            assert!(when(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(when("0m").unwrap_err(), "\"0m\" is no time at all; give a duration such as 2h or 30m");
        assert!(when("2x").unwrap_err().starts_with("\"2x\" is neither a duration such as 2h, 30m or 1h30m ("));
        let now = Timestamp::from_millis(1_800_000_000_000);
        assert_eq!(when("2h").unwrap().at(now), now.add_hours(2));
        assert_eq!(When::At(now).at(Timestamp::from_millis(0)), now);
    }

    #[test]
    fn ids() {
        assert_eq!(request_id("R1"), Ok("R1".to_owned()));
        assert_eq!(request_id("R007"), Ok("R7".to_owned()));
        assert_eq!(offer_id("O12"), Ok("O12".to_owned()));
        assert_eq!(request_id("O1"), Err("\"O1\" is not a request id like R1".to_owned()));
        assert_eq!(offer_id("R1"), Err("\"R1\" is not an offer id like O1".to_owned()));
        for bad in ["", "1", "R", "R0", "r1", "X7", "R1x"] {
            assert!(request_id(bad).is_err() && offer_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_subcommand_parses() {
        let Ok(AidCommand::Request(r)) = parse(&[
            "request",
            "--provider",
            "RJ7",
            "--pair",
            "beds.cc_adult",
            "--quantity",
            "2",
            "--kind",
            "patient-transfer",
            "--urgency",
            "urgent",
            "--needed-by",
            "2h",
            "--within",
            "region",
            "--reference",
            "REF1",
            "--summary",
            "Two adults",
            "--isolation",
        ]) else {
            panic!("request")
        };
        assert_eq!((r.provider.as_str(), r.pair.as_str(), r.quantity), ("RJ7", "beds.cc_adult", 2));
        assert_eq!(
            (r.kind, r.urgency, r.within, r.isolation),
            (KindArg::PatientTransfer, UrgencyArg::Urgent, WithinArg::Region, true)
        );
        assert_eq!(r.needed_by, When::In(Duration::from_secs(7200)));
        assert_eq!(r.server.server, "http://127.0.0.1:50051");
        assert!(r.cursor.cursor.is_none());
        let Ok(AidCommand::Offer(o)) =
            parse(&["offer", "R1", "--provider", "RXH", "--quantity", "1", "--hold", "2h", "--cursor", "e1:3-0"])
        else {
            panic!("offer")
        };
        assert_eq!(
            (o.request.as_str(), o.provider.as_str(), o.hold),
            ("R1", "RXH", When::In(Duration::from_secs(7200)))
        );
        assert_eq!(o.cursor.text(), "e1:3-0");
        for verb in ["accept", "decline", "withdraw"] {
            let parsed = parse(&[verb, "O1"]).unwrap();
            let offer = match parsed {
                AidCommand::Accept(a) | AidCommand::Decline(a) | AidCommand::Withdraw(a) => a.offer,
                _ => panic!("{verb}"),
            };
            assert_eq!(offer, "O1");
            assert!(refused(&[verb, "R1"]).contains("\"R1\" is not an offer id like O1"));
        }
        for (stage, expected) in [("in-transit", StageArg::InTransit), ("completed", StageArg::Completed)] {
            let Ok(AidCommand::Progress(p)) = parse(&["progress", "R1", stage]) else { panic!("{stage}") };
            assert_eq!((p.request.as_str(), p.stage), ("R1", expected));
        }
        assert!(parse(&["progress", "R1", "arrived"]).is_err());
        let Ok(AidCommand::Cancel(c)) = parse(&["cancel", "R1", "--reason", "patient improved"]) else {
            panic!("cancel")
        };
        assert_eq!(c.reason, "patient improved");
        assert!(refused(&["unfulfilled", "R1"]).contains("--reason"));
        let Ok(AidCommand::List(l)) = parse(&["list", "--all", "--scope", "system:QWE"]) else { panic!("list") };
        assert_eq!((l.all, l.scope.as_deref()), (true, Some("system:QWE")));
        assert!(matches!(parse(&["show", "R1"]), Ok(AidCommand::Show(_))));
        assert!(matches!(parse(&["candidates", "R1"]), Ok(AidCommand::Candidates(_))));
        let Ok(AidCommand::Measures(m)) = parse(&["measures", "--scope", "system:QWE"]) else { panic!("measures") };
        assert_eq!(m.scope, "system:QWE");
        // Errors name the argument and the value.
        let e = refused(&["request", "--provider", "RJ7", "--pair", "p", "--needed-by", "soon", "--reference", "x"]);
        assert!(e.contains("--needed-by") && e.contains("\"soon\" is neither a duration"), "{e}");
        assert!(
            parse(&[
                "request",
                "--provider",
                "RJ7",
                "--pair",
                "p",
                "--needed-by",
                "2h",
                "--reference",
                "x",
                "--kind",
                "bed"
            ])
            .is_err()
        );
    }

    #[test]
    fn ages_and_tables_for_people() {
        let table_of_ages: &[(i64, &str)] = &[
            (-5_000, "0 min"),
            (59_999, "0 min"),
            (12 * 60_000, "12 min"),
            (59 * 60_000, "59 min"),
            (125 * 60_000, "2 h 05 min"),
            (47 * 60 * 60_000, "47 h 00 min"),
            ((3 * 24 + 4) * 60 * 60_000, "3 d 4 h"),
        ];
        for &(ms, text) in table_of_ages {
            assert_eq!(age(ms), text, "{ms} ms");
        }
        let now = Timestamp::from_millis(1_800_000_000_000);
        assert_eq!(relative(now.add_millis(30 * 60_000), now), "in 30 min");
        assert_eq!(relative(now.add_millis(-12 * 60_000), now), "12 min ago");
        let rows = vec![
            vec!["R1".to_owned(), "RJ7".to_owned(), "x".to_owned()],
            vec!["R10".to_owned(), "RJ".to_owned(), String::new()],
        ];
        assert_eq!(table(&["ID", "PROVIDER", "LAST"], &rows), "ID   PROVIDER  LAST\nR1   RJ7       x\nR10  RJ\n");
    }

    #[test]
    fn a_request_for_people() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        let at = |minutes: i64| Some(timestamp_to_wire(now.add_millis(minutes * 60_000)));
        let r = pb::AidRequest {
            id: "R1".into(),
            provider: "RJ7".into(),
            kind: pb::aid_request::Kind::PatientTransfer as i32,
            pair: "beds.cc_adult".into(),
            quantity: 2,
            outstanding: 1,
            urgency: pb::aid_request::Urgency::Urgent as i32,
            state: pb::aid_request::State::Accepted as i32,
            created_at: at(-12),
            needed_by: at(108),
            first_offer_at: at(-7),
            offers: vec![pb::AidOffer {
                id: "O1".into(),
                request: "R1".into(),
                provider: "RXH".into(),
                quantity: 1,
                state: pb::aid_offer::State::Accepted as i32,
                hold_until: at(60),
                ..Default::default()
            }],
            ..Default::default()
        };
        let list = requests_table(std::slice::from_ref(&r), now);
        assert_eq!(
            list,
            "ID  PROVIDER  PAIR           COVERED  URGENCY  STATE     AGE     NEEDED BY      OFFERS  ESCALATED\n\
             R1  RJ7       beds.cc_adult  1/2      urgent   accepted  12 min  in 1 h 48 min  1\n"
        );
        let text = request_text(&r, now);
        assert!(text.starts_with("R1 RJ7 asks for 2 beds.cc_adult (patient_transfer, urgent): accepted\n"), "{text}");
        assert!(text.contains("  1 still needed\n  first offer after 5 min\n"), "{text}");
        assert!(text.contains("O1  RXH       1    accepted  in 1 h 00 min"), "{text}");

        // The trail: a decision on offers shows under each offer it touched, not again under the request.
        let decision = |action: &str, principal: &str, minutes: i64| pb::AidDecision {
            action: action.into(),
            principal: principal.into(),
            cursor: "e1:1-0".into(),
            at: at(minutes),
        };
        let (create, offer, accept) =
            (decision("create", "rj7", -12), decision("offer", "rxh", -7), decision("accept", "rj7", -2));
        let mut r = r;
        r.decisions = vec![create, offer.clone(), accept.clone()];
        r.offers[0].decisions = vec![offer, accept.clone()];
        r.offers.push(pb::AidOffer { id: "O2".into(), decisions: vec![accept], ..Default::default() });
        let text = request_text(&r, now);
        let trail: Vec<(&str, &str)> = text
            .split("\nDecisions:\n")
            .nth(1)
            .unwrap()
            .lines()
            .skip(1)
            .map(|line| {
                let cells: Vec<&str> = line.split_whitespace().collect();
                (cells[1], cells[2])
            })
            .collect();
        assert_eq!(trail, [("R1", "create"), ("O1", "offer"), ("O1", "accept"), ("O2", "accept")]);
        let change = pb::AidEvent {
            kind: Some(pb::aid_event::Kind::RequestChanged(pb::aid_event::RequestChanged {
                request: "R1".into(),
                from: pb::aid_request::State::Offered as i32,
                to: pb::aid_request::State::Accepted as i32,
            })),
        };
        assert_eq!(aid_event_text(&change, &pb::AidUpdate::default()), "R1: offered -> accepted");
    }
}
