//! `ProviderService`: where reports come in. Validate with the core, apply to the store, acknowledge.
//!
//! An ack is sent only after the store has answered, so an acknowledged report is stored. On the streaming call
//! each report is handled to completion before the next is read, which keeps acks in the order of the reports; a
//! rejected report is answered with its violations and the stream goes on. If the store fails, the stream ends with
//! `UNAVAILABLE`, so the feed knows exactly which reports (the unacknowledged ones) to send again.

use std::sync::Arc;

use sitrep_core::validate::validate_owned;
use sitrep_core::{Sender, Timestamp, ValidReport, Violation};
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::Applied;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span};

use crate::auth::{Action, Principal, principal_of};
use crate::context::Context;
use crate::convert::{report_from_wire, violation_to_wire, wire_violations};
use crate::error::{self, Error};
use crate::telemetry;

pub struct ProviderApi {
    ctx: Arc<Context>,
}

impl ProviderApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        ProviderApi { ctx }
    }
}

/// Handles one report: `Ok` with the ack (accepted, duplicate, conflict or rejected, plus the violations when rejected),
/// `Err` when it was refused or the store could not be reached. Counted and timed for the metrics.
pub async fn ingest(
    ctx: &Context,
    who: &Principal,
    peer: Option<std::net::SocketAddr>,
    wire: pb::StatusReport,
    call: &Span,
) -> Result<(pb::ReportAck, Vec<Violation>), Status> {
    let received = std::time::Instant::now();
    let answer = if !telemetry::enabled() {
        decide(ctx, who, peer, wire, &Span::none()).await
    } else {
        let span = telemetry::report_span(
            call,
            &wire.provider,
            &wire.site,
            wire.period.as_ref().map(crate::convert::timestamp_from_wire),
            wire.revision,
            &wire.traceparent,
            &wire.tracestate,
        );
        let answer = decide(ctx, who, peer, wire, &span).instrument(span.clone()).await;
        let outcome = match &answer {
            Ok((ack, _)) => ack.outcome().as_str_name().strip_prefix("OUTCOME_").unwrap_or("UNSPECIFIED"),
            Err(_) => "FAILED",
        };
        telemetry::record_outcome(&span, &outcome.to_ascii_lowercase());
        answer
    };
    if let Ok((ack, violations)) = &answer {
        ctx.metrics.ingested(ack.outcome(), violations, received.elapsed());
    }
    answer
}

/// What becomes of one report (see [`ingest`]), under its span.
async fn decide(
    ctx: &Context,
    who: &Principal,
    peer: Option<std::net::SocketAddr>,
    wire: pb::StatusReport,
    span: &Span,
) -> Result<(pb::ReportAck, Vec<Violation>), Status> {
    // Before anything else: a caller learns nothing about a provider it may not write for, and nothing is stored.
    // (Refusals are logged and kept by the authentication layer, for the audit.)
    who.may(Action::Write(&wire.provider))?;
    let mut ack = pb::ReportAck {
        provider: wire.provider.clone(),
        period: wire.period,
        revision: wire.revision,
        ..Default::default()
    };
    let now = Timestamp::now();
    let checked = check(ctx, wire, now, span);
    if checked.is_ok() {
        ctx.report_limiter.take(&ack.provider, std::time::Instant::now())?;
    }
    let report = match checked {
        // Kept with the report in history and its event: who changed the picture, with which credential, from where.
        Ok(r) => r
            .sent_by(Sender {
                name: who.name.clone(),
                credential: who.credential.clone(),
                address: peer.map(|p| p.to_string()).unwrap_or_default(),
            })
            // Its event carries the report's trace context to every replica's subscribers (none when not traced).
            .traced(telemetry::sampled_context_of(span)),
        Err(violations) => {
            reject(&mut ack, &violations);
            return Ok((ack, violations));
        }
    };
    let applied =
        ctx.store.apply(&report, now).instrument(telemetry::store_span(span, ctx.store.name(), "apply")).await;
    match &applied {
        // A duplicate or a conflict writes nothing, so it says nothing about whether the store takes writes.
        Ok(Applied::Accepted(_)) => ctx.health.write_stored(),
        Ok(Applied::Duplicate { .. } | Applied::Conflict { .. }) => {}
        Err(e @ sitrep_store::StoreError::Unavailable { .. }) => ctx.health.write_refused(e),
        Err(_) => {}
    }
    acknowledge(&mut ack, &applied.map_err(Error::store)?, &report);
    Ok((ack, Vec::new()))
}

/// Validates the report against the rules (its wire form first: a malformed report is not converted), under a
/// span that records how many violations it has.
fn check(ctx: &Context, wire: pb::StatusReport, now: Timestamp, span: &Span) -> Result<ValidReport, Vec<Violation>> {
    let wire_problems = wire_violations(&wire);
    let validating = telemetry::validate_span(span);
    let checked = validating.in_scope(|| match wire_problems.is_empty() {
        true => validate_owned(report_from_wire(wire), &ctx.rules.directory, &ctx.rules.catalogue, &ctx.limits, now),
        false => Err(wire_problems),
    });
    if let Err(violations) = &checked {
        validating.record("sitrep.violations", violations.len());
    }
    checked
}

/// Makes `ack` a rejection that lists `violations` (at least one), and logs it.
fn reject(ack: &mut pb::ReportAck, violations: &[Violation]) {
    tracing::info!(provider = ?ack.provider, revision = ack.revision, violations = violations.len(), first = ?violations[0].to_string(), "report rejected");
    ack.set_outcome(Outcome::Rejected);
    let listed = error::listed(violations);
    ack.violations = listed.iter().map(violation_to_wire).collect();
    ack.message = format!("rejected: {}", listed.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "));
}

/// Makes `ack` say what the store did with `report`: accepted it (live or into history only), had it already, or
/// had other content under its revision (and which revision to send it as).
fn acknowledge(ack: &mut pb::ReportAck, applied: &Applied, report: &ValidReport) {
    match applied {
        Applied::Accepted(event) => {
            tracing::debug!(provider = %event.provider, period = %event.period, revision = event.revision, cursor = %event.cursor, changes = event.changes.len(), live = event.live, "report accepted");
            ack.set_outcome(Outcome::Accepted);
            ack.message = match (event.live, event.changes.len()) {
                (true, n) => format!("accepted: {n} metric(s) changed"),
                (false, n) => format!(
                    "accepted into history only (a later report is live): {n} metric(s) differ from the previous revision"
                ),
            };
            ack.cursor = event.cursor.to_string();
            ack.revision = event.revision;
        }
        Applied::Duplicate { cursor } => {
            tracing::debug!(provider = %report.provider(), period = %report.period(), revision = report.revision(), "duplicate report");
            ack.set_outcome(Outcome::Duplicate);
            ack.message = "duplicate: this provider, period and revision were stored before with the same content; nothing changed".into();
            ack.cursor = cursor.as_ref().map(|c| c.to_string()).unwrap_or_default();
        }
        Applied::Conflict { cursor, next_revision } => {
            tracing::info!(provider = %report.provider(), period = %report.period(), revision = report.revision(), next_revision, "conflicting report");
            ack.set_outcome(Outcome::Conflict);
            ack.message = format!(
                "conflict: report for {} period {} revision {} was stored before with other content; nothing \
                 changed. Send it as revision {next_revision}",
                report.provider(),
                report.period(),
                report.revision()
            );
            ack.cursor = cursor.as_ref().map(|c| c.to_string()).unwrap_or_default();
            ack.next_revision = *next_revision;
        }
    }
}

#[tonic::async_trait]
impl pb::provider_service_server::ProviderService for ProviderApi {
    type ReportStream = ReceiverStream<Result<pb::ReportAck, Status>>;

    async fn report(
        &self,
        request: Request<Streaming<pb::StatusReport>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let peer = request.remote_addr();
        let who = principal_of(request.extensions())?.clone();
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(32);
        let ctx = self.ctx.clone();
        tracing::debug!(?peer, "provider stream opened");
        // The call's span (when tracing), the parent of its reports' spans unless they carry their own context.
        let call = if telemetry::enabled() { Span::current() } else { Span::none() };
        self.ctx.tasks.spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = ctx.cancel.cancelled() => {
                        let status = Status::unavailable("sitrep is shutting down; reconnect and resend unacknowledged reports");
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), tx.send(Err(status))).await;
                        break;
                    }
                    next = inbound.message() => next,
                };
                match next {
                    Ok(Some(report)) => {
                        // Not raced against shutdown: a report being stored is finished and acknowledged first.
                        let reply = ingest(&ctx, &who, peer, report, &call).await.map(|(ack, _)| ack);
                        let failed = reply.is_err();
                        if tx.send(reply).await.is_err() || failed {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        // A message that could not be read (malformed, or over the size limit): the stream cannot
                        // go on past it, so it ends with an error that says why, never with OK and reports
                        // unanswered. (If the client has gone, the send fails and nobody is told.)
                        tracing::info!(?peer, status = ?status.message(), "provider stream failed");
                        // tonic refuses a message over the decoder's limit before sitrep sees it: name the
                        // setting that limit comes from.
                        let limit = match status.code() {
                            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => {
                                ctx.metrics.oversize();
                                " (the aggregator's limits.max_message_bytes)"
                            }
                            _ => "",
                        };
                        let reason = format!(
                            "{}{limit}; reports after the last acknowledged one were not read: send them again",
                            status.message()
                        );
                        let _ = tx.send(Err(Status::invalid_argument(reason))).await;
                        break;
                    }
                }
            }
            tracing::debug!(?peer, "provider stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn submit(&self, request: Request<pb::StatusReport>) -> Result<Response<pb::ReportAck>, Status> {
        let who = principal_of(request.extensions())?.clone();
        let peer = request.remote_addr();
        let call = if telemetry::enabled() { Span::current() } else { Span::none() };
        let (ack, violations) = ingest(&self.ctx, &who, peer, request.into_inner(), &call).await?;
        if !violations.is_empty() {
            return Err(Error::invalid(&violations).into());
        }
        Ok(Response::new(ack))
    }
}
