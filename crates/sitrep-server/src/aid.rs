//! Mutual aid as every surface offers it (gRPC `AidService`, the JSON API, the `sitrep aid` commands through
//! gRPC): who may take which action, the action through the store's one atomic step, and the views read from the
//! Hub's picture. Transport-neutral: callers convert their wire types to [`Action`] and back.
//!
//! # Who may do what
//! A provider asks and offers only for itself; a coordinator of a scope (`coordinate = ["system:QWE"]` in the
//! principals file) may act for any provider in it ([`crate::auth::Action::Broker`]):
//! - create, progress, cancel, unfulfilled, accept and decline: for the *requesting* provider;
//! - offer and withdraw: for the *offering* provider;
//! - expiry and escalation: the clock only ([`tick`]), never a caller.
//!
//! A caller sees a request if it may read or act for the requesting provider or one of the offering providers.
//! Candidates are limited to providers the caller may read (how many others there were is said, not who): mutual
//! aid does not widen what a credential may see.
//!
//! Every action records its principal and the picture cursor it was decided on: the caller's, when it sends the
//! cursor of the picture it looked at, else this replica's at the moment of acting.
//!
//! An action is answered once this replica's picture shows it (read-your-writes): its last event, or, for a
//! retried create the store answered with its open request ([`Acted::Unchanged`]: no event to wait for), the
//! request itself.

use std::sync::Arc;

use sitrep_core::aid::{
    self, Action, Actor, AidBook, Measures, Offer, OfferId, ProviderStatus, Ranking, Refusal, Request, RequestId,
    Timers,
};
use sitrep_core::{Cursor, Event, Picture, Timestamp};
use sitrep_store::{Acted, Store};

use crate::auth::{Action as Grant, Principal};
use crate::context::Context;
use crate::error::{Error, Kind};
use crate::hub::Hub;

/// The principal the clock's actions are recorded under.
pub const CLOCK: &str = "sitrep (clock)";

/// A request with its offers, in offer order.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub request: Request,
    pub offers: Vec<Offer>,
}

/// What an action did: the events it stored (the book's first; none for a retried create, which changed nothing),
/// its request and offers as they are after it, and the cursor of a picture that shows them (the last event's, or
/// for a retried create this replica's picture once it shows the request; `None` if it did not within
/// [`CATCH_UP`]).
#[derive(Clone, Debug)]
pub struct Done {
    pub events: Vec<Event>,
    pub case: Case,
    pub cursor: Option<Cursor>,
}

/// The longest an action waits for this replica's picture to catch up with the store: to find a request or offer
/// made a moment ago (through another replica, or just before through this one), and to show the action itself
/// before answering.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes `action` for `who`, after checking its grants against the book, on the picture at `cursor` (the caller's,
/// if it sent one, else this replica's now). Answers once this replica's picture shows the action (or
/// [`CATCH_UP`] passed), so the caller's next request here sees what it did.
pub async fn act(ctx: &Context, who: &Principal, action: Action, cursor: Option<&str>) -> Result<Done, Error> {
    let look = || ctx.with_picture(|p| (acting_for(p.aid(), &action), p.cursor().clone()));
    let (mut on_behalf, mut hub_cursor) = look().await?;
    if on_behalf.as_ref().is_err_and(|e| e.kind == Kind::NotFound) {
        // The picture follows the log a moment behind: look again once it shows everything stored so far.
        let head = ctx.store.head().await.map_err(Error::store)?;
        if ctx.hub.shows(&head, CATCH_UP).await {
            (on_behalf, hub_cursor) = look().await?;
        }
    }
    let provider = on_behalf?;
    who.may(Grant::Broker(&provider))?;
    let cursor = match cursor.filter(|c| !c.is_empty()) {
        None => hub_cursor,
        Some(text) => Cursor::parse(text).ok_or_else(|| {
            Error::invalid_field("cursor", "cursor", format!("cursor {text:?} is not a cursor sitrep gave out"))
        })?,
    };
    let actor = Actor { principal: who.name.clone(), cursor };
    let name = action.name();
    let retry_safe = matches!(action, Action::Create(_));
    match ctx.store.act(&action, &actor, Timestamp::now()).await.map_err(|e| store_failed(e, retry_safe))? {
        Acted::Refused(refusal) => Err(refused(&refusal)),
        Acted::Unchanged { request, offers } => {
            // Nothing was appended, so there is no event to wait for; but the request may have been made through
            // another replica a moment ago: answer once this picture shows it, as the first answer did.
            let shown = |p: &Picture| p.aid().request(request.id).is_some().then(|| p.cursor().clone());
            let mut cursor = ctx.with_picture(shown).await?;
            if cursor.is_none() {
                let head = ctx.store.head().await.map_err(Error::store)?;
                if ctx.hub.shows(&head, CATCH_UP).await {
                    cursor = ctx.with_picture(shown).await?;
                }
            }
            tracing::info!(principal = %who.name, action = name, request = %request.id, state = %request.state, "mutual aid: a retry, answered with its request");
            Ok(Done { events: Vec::new(), case: Case { request, offers }, cursor })
        }
        Acted::Done(events) => {
            let change = events
                .first()
                .and_then(|e| e.aid.as_deref())
                .ok_or_else(|| Error::internal(format!("{name}: the store answered with no mutual aid change")))?;
            let request = change
                .requests
                .first()
                .cloned()
                .ok_or_else(|| Error::internal(format!("{name}: the store answered with no request")))?;
            let offers = change.offers.clone();
            let cursor = events.last().map(|e| e.cursor.clone());
            if let Some(last) = &cursor {
                ctx.hub.shows(last, CATCH_UP).await;
            }
            tracing::info!(principal = %who.name, action = name, request = %request.id, state = %request.state, "mutual aid");
            Ok(Done { events, case: Case { request, offers }, cursor })
        }
    }
}

/// A store failure while acting. Only a create (`retry_safe`) has a key that makes a retry safe (the requester's
/// reference: a retry is answered with the request it made); another action taken before its answer was lost is
/// refused when tried again, or (an offer after its first was withdrawn, say) taken twice. So the caller of any
/// other action is told to look first.
fn store_failed(e: sitrep_store::StoreError, retry_safe: bool) -> Error {
    match e {
        sitrep_store::StoreError::Unavailable { .. } if retry_safe => Error::unavailable(format!(
            "{e}; the request may or may not have been made: sending the same create again is safe (while the \
             request is open its reference names it, and the answer is that request)"
        )),
        sitrep_store::StoreError::Unavailable { .. } => Error::unavailable(format!(
            "{e}; the action may or may not have been stored: look at the request (list or get it) before trying again"
        )),
        other => Error::store(other),
    }
}

/// The provider an action is taken for (whose grant it needs), from the book; NOT_FOUND for an unknown request or
/// offer, PERMISSION_DENIED for the clock's actions.
fn acting_for(book: &AidBook, action: &Action) -> Result<String, Error> {
    let request = |id: RequestId| {
        book.request(id)
            .map(|r| r.ask.provider.clone())
            .ok_or_else(|| Error::not_found(format!("{} refused: unknown request {id}", action.name())))
    };
    let offer = |id: OfferId| {
        book.offer(id).ok_or_else(|| Error::not_found(format!("{} refused: unknown offer {id}", action.name())))
    };
    match action {
        Action::Create(ask) => Ok(ask.provider.clone()),
        Action::Offer { provider, request: id, .. } => request(*id).map(|_| provider.clone()),
        Action::Withdraw(id) => offer(*id).map(|o| o.provider.clone()),
        Action::Accept { offer: id, .. } | Action::Decline(id) => request(offer(*id)?.request),
        Action::Progress { request: id, .. }
        | Action::Cancel { request: id, .. }
        | Action::Unfulfilled { request: id, .. } => request(*id),
        Action::ExpireRequest(_) | Action::ExpireOffer(_) | Action::ExpireHold(_) | Action::Escalate { .. } => {
            Err(Error::permission_denied(format!("{} is the clock's to take, not a caller's", action.name())))
        }
    }
}

/// A refusal as an error: a field breaking a rule is invalid, naming it; an unknown record not found; a
/// record in the wrong state FAILED_PRECONDITION (the caller's picture was out of date: look again).
pub fn refused(refusal: &Refusal) -> Error {
    match refusal {
        Refusal::Invalid { field, code, .. } => Error::invalid_field(field, code, refusal.to_string()),
        Refusal::UnknownRequest(..) | Refusal::UnknownOffer(..) => Error::not_found(refusal.to_string()),
        Refusal::Request { .. } | Refusal::Offer { .. } => Error::conflict(refusal.to_string()),
    }
}

/// Whether `who` may see a case: it may read or act for the requester or one of the offerers.
fn visible(who: &Principal, case: &Case) -> bool {
    let may = |p: &str| who.may(Grant::ReadProvider(p)).is_ok() || who.may(Grant::Broker(p)).is_ok();
    may(&case.request.ask.provider) || case.offers.iter().any(|o| may(&o.provider))
}

fn case_of(book: &AidBook, request: &Request) -> Case {
    Case { request: request.clone(), offers: book.offers_of(request.id).cloned().collect() }
}

/// The requests `who` may see, newest first: only those still open to offers or under way with `open_only`, and
/// only those of providers in `scope` (`system:QWE`, `region:Y56`, `nation`) when given.
pub async fn cases(ctx: &Context, who: &Principal, open_only: bool, scope: Option<&str>) -> Result<Vec<Case>, Error> {
    let members = match scope.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(ctx.rules.directory.members(s).ok_or_else(|| {
            Error::invalid_field(
                "scope",
                "known_scope",
                format!("scope {s:?} is not system:CODE, region:CODE or nation"),
            )
        })?),
    };
    ctx.with_picture(|p| {
        let book = p.aid();
        let mut out: Vec<Case> = book
            .requests()
            .filter(|r| !open_only || !r.state.is_closed())
            .filter(|r| members.as_ref().is_none_or(|m| m.contains(&r.ask.provider)))
            .map(|r| case_of(book, r))
            .filter(|c| visible(who, c))
            .collect();
        out.reverse();
        out
    })
    .await
}

/// One request with its offers and full decision trail; NOT_FOUND if unknown or not visible to `who` (the same
/// answer, so ids cannot be probed).
pub async fn case(ctx: &Context, who: &Principal, id: RequestId) -> Result<Case, Error> {
    let found = ctx.with_picture(|p| p.aid().request(id).map(|r| case_of(p.aid(), r))).await?;
    found.filter(|c| visible(who, c)).ok_or_else(|| Error::not_found(format!("unknown request {id}")))
}

/// What the picture says of each provider for `pair`, for [`aid::candidates`]: open and occupied beds, OPEL level
/// (declared, else computed), place and isolation from the directory.
pub fn statuses(picture: &Picture, pair: &str) -> Vec<ProviderStatus> {
    let directory = &picture.rules().directory;
    let (open, occupied) = (format!("{pair}.open"), format!("{pair}.occupied"));
    picture
        .providers()
        .filter(|p| !p.stale)
        .filter_map(|p| {
            let count = |m: &str| p.number(m).map(|n| n.max(0.0) as u32);
            let entry = directory.provider(&p.provider);
            Some(ProviderStatus {
                provider: p.provider.clone(),
                open: count(&open)?,
                occupied: count(&occupied)?,
                opel: p.opel.declared.or(p.opel.computed.as_ref().map(|c| c.level)).map(|l| l.min(255) as u8),
                location: entry.and_then(|e| e.location()),
                isolation: entry.is_some_and(|e| e.isolation),
            })
        })
        .collect()
}

/// The providers request `id` could ask, ranked (see [`aid::candidates`]), among those `who` may read; the
/// others are summed up in one exclusion without their names.
pub async fn candidates(ctx: &Context, who: &Principal, id: RequestId) -> Result<(Case, Ranking), Error> {
    let case = case(ctx, who, id).await?;
    let mut ranking = ctx
        .with_picture(|p| {
            let mut statuses = statuses(p, &case.request.ask.pair);
            // The requester's own place is what distances are measured from, whatever the caller may read.
            statuses.retain(|s| {
                s.provider == case.request.ask.provider || who.may(Grant::ReadProvider(&s.provider)).is_ok()
            });
            aid::candidates(&case.request, &statuses, p.aid(), &p.rules().directory)
        })
        .await?;
    let unreadable = ctx
        .rules
        .directory
        .providers()
        .filter(|p| p.code != case.request.ask.provider && who.may(Grant::ReadProvider(&p.code)).is_err())
        .count();
    if unreadable > 0 {
        ranking.excluded.push(aid::Excluded {
            provider: "*".into(),
            why: format!("{unreadable} providers {} does not read are not considered", who.name),
        });
    }
    Ok((case, ranking))
}

/// The most days [`measures`] gives by day.
pub const MEASURE_DAYS_MAX: u32 = 92;

/// The measures of `scope` (`system:QWE`, `region:Y56`, `nation`), which `who` must be able to read: live, and for
/// each of the last `days` UTC days (today included; none with 0) the requests made that day.
pub async fn measures(
    ctx: &Context,
    who: &Principal,
    scope: &str,
    days: u32,
) -> Result<(Measures, Vec<(Timestamp, Measures)>), Error> {
    if days > MEASURE_DAYS_MAX {
        return Err(Error::invalid_field(
            "days",
            "at_most",
            format!("days = {days} is more than the {MEASURE_DAYS_MAX} days measures are given for"),
        ));
    }
    let parsed = match scope {
        "nation" => Some(sitrep_core::Scope::new(sitrep_core::Level::Nation, &ctx.rules.directory.nation().code)),
        s => sitrep_core::Scope::parse(s),
    };
    let parsed = parsed.filter(|s| ctx.rules.scopes().contains(s)).ok_or_else(|| {
        Error::invalid_field(
            "scope",
            "known_scope",
            format!("scope {scope:?} is not system:CODE, region:CODE or nation"),
        )
    })?;
    who.may(Grant::ReadScope(&parsed))?;
    let now = Timestamp::now();
    let measured = ctx
        .with_picture(|p| {
            let directory = &p.rules().directory;
            Some((
                aid::measures(scope, p.aid(), directory, now)?,
                aid::measures_by_day(scope, p.aid(), directory, now, days)?,
            ))
        })
        .await?;
    measured.ok_or_else(|| Error::not_found(format!("scope {scope:?} has no members")))
}

/// The clock's part: every action due at `now` by the picture's book (expiry, escalation), taken through the
/// store as [`CLOCK`]. Every replica runs it; the store takes each once (an action planned from a book that has
/// moved is planned again, and then refused as already done), so there is no leader.
pub async fn tick(store: &Arc<dyn Store>, hub: &Hub, timers: &Timers, now: Timestamp) {
    let Some((due, cursor)) = hub.read(|p| (p.aid().due(now, timers), p.cursor().clone())) else { return };
    let actor = Actor { principal: CLOCK.to_owned(), cursor };
    for action in due {
        match store.act(&action, &actor, now).await {
            Ok(Acted::Done(events)) => {
                for e in &events {
                    for what in e.aid.iter().flat_map(|a| &a.happened) {
                        tracing::warn!(cursor = %e.cursor, action = action.name(), "mutual aid: {what:?}");
                    }
                }
            }
            Ok(Acted::Refused(r)) => tracing::debug!(refusal = %r, "mutual aid: another replica took it first"),
            // The clock never creates a request, the only action that can change nothing.
            Ok(Acted::Unchanged { .. }) => {}
            // The Hub reports the store's health; the next tick tries again.
            Err(error) => {
                tracing::debug!(%error, "mutual aid: cannot take the clock's actions");
                return;
            }
        }
    }
}
