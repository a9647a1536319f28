//! Following the aggregator's changes for as long as the caller wants them: one subscription that outlives
//! outages. When the stream fails or ends, it waits with the shared backoff (`sitrep_core::backoff`) and
//! subscribes again from the last cursor it saw, so nothing is missed and nothing is seen twice (the aggregator
//! answers a cursor it can no longer continue from with a reset and a fresh snapshot). Two failures end it
//! instead, because retrying cannot help: a request the aggregator rejects (a bad filter), and a configuration
//! error ([`Failure::Configuration`]: something there that is not sitrep, a TLS handshake that fails) before the
//! aggregator has answered once in this run (after that it is taken for a passing fault, a certificate being
//! rotated, and retried). The caller says what a failure is ([`Diagnose`]) and what to do with each update;
//! `sitrep watch` prints them.

use std::ops::ControlFlow;
use std::time::Duration;

use sitrep_core::backoff::Backoff;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;
use tokio_util::sync::CancellationToken;
use tonic_types::StatusExt;

use crate::credentials::AuthedChannel;
use crate::diagnose::{Diagnose, Failure};

/// The aggregator as a follower reaches it: a channel the caller made (with its TLS and credential), and how the
/// caller reads its failures.
pub struct Upstream {
    pub channel: AuthedChannel,
    /// How long subscribing may wait for an answer before the attempt counts as unreachable.
    pub answer_timeout: Duration,
    pub diagnose: Box<dyn Diagnose>,
}

/// Why following stopped other than by cancellation or the caller's choice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The aggregator refused the request itself, naming each field at fault: the same request would be refused
    /// again.
    #[error("the server rejected the subscription: {message}")]
    Rejected { message: String, violations: Vec<Violation> },
    /// Retrying cannot help until someone changes the settings; the message names the address and what to check.
    #[error("{0}")]
    Configuration(String),
}

/// A field of the request the aggregator refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

/// Subscribes with `request` and hands every update to `each` until `cancel` fires or `each` breaks (both
/// `Ok`); reconnects with backoff and resumes from the last cursor seen. See the module's header for what ends
/// it with an error.
pub async fn follow(
    upstream: Upstream,
    mut request: pb::SubscribeRequest,
    mut each: impl FnMut(&pb::Update) -> ControlFlow<()>,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let Upstream { channel, answer_timeout, diagnose } = upstream;
    // Snapshots carry the whole (filtered) picture in one message: allow more than tonic's 4 MiB default.
    let mut client = SubscriberServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut backoff = Backoff::default();
    // Whether the aggregator has sent anything in this run (see the module's header).
    let mut answered = false;
    loop {
        let run = async {
            let mut stream = tokio::time::timeout(answer_timeout, client.subscribe(request.clone()))
                .await
                .unwrap_or_else(|_| Err(diagnose.no_answer(answer_timeout)))?
                .into_inner();
            while let Some(update) = stream.message().await? {
                backoff.reset();
                answered = true;
                if let Some(cursor) = cursor(&update) {
                    request.resume_from = cursor.to_owned();
                }
                if each(&update).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok::<_, tonic::Status>(ControlFlow::Continue(()))
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = run => r,
        };
        let delay = match result {
            Ok(ControlFlow::Break(())) => return Ok(()),
            Err(status) if status.code() == tonic::Code::InvalidArgument => return Err(rejected(&status)),
            Ok(ControlFlow::Continue(())) => {
                let delay = backoff.next_delay();
                tracing::warn!(retry_in = ?delay, "subscription ended; reconnecting");
                delay
            }
            Err(status) => {
                let diagnosis = diagnose.diagnose(&status);
                if diagnosis.failure == Failure::Configuration && !answered {
                    return Err(Error::Configuration(diagnosis.message));
                }
                let delay = backoff.next_delay();
                tracing::warn!(retry_in = ?delay, "{}; reconnecting", diagnosis.message);
                delay
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The cursor an update leaves the subscription at, if it names one.
fn cursor(update: &pb::Update) -> Option<&str> {
    match &update.kind {
        Some(pb::update::Kind::Event(e)) => Some(&e.cursor),
        Some(pb::update::Kind::Snapshot(s)) => Some(&s.cursor),
        Some(pb::update::Kind::Heartbeat(h)) => Some(&h.cursor),
        Some(pb::update::Kind::Rollups(r)) => Some(&r.cursor),
        _ => None,
    }
}

fn rejected(status: &tonic::Status) -> Error {
    let violations = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
    Error::Rejected {
        message: status.message().to_owned(),
        violations: violations.into_iter().map(|v| Violation { field: v.field, description: v.description }).collect(),
    }
}
