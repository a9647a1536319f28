//! `sitrep watch`: subscribes to the aggregator's changes and prints each as a line (`sitrep_client::display`),
//! for as long as it runs. Outages are waited out with the shared backoff and the subscription resumes from the
//! last cursor seen, so nothing is missed; a request the aggregator rejects, or an address that is not a sitrep
//! aggregator, is an error at once. `follow` is also the printer of `sitrep serve --demo`.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use sitrep_client::display::update_line;
use sitrep_core::backoff::Backoff;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;
use tokio_util::sync::CancellationToken;
use tonic_types::StatusExt;

use crate::args::{ProvidersArg, ServerArg, connect};
use crate::server;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep watch                                   # everything\n  \
    sitrep watch --system QWE --metric beds.cc_adult.occupied\n  \
    sitrep watch --provider RJ7 --provider RGT --resume m1abc:42-0\n\n\
    The watch reconnects by itself and resumes from the last cursor it saw.")]
pub struct WatchArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    who: ProvidersArg,
    /// Show only this metric (repeatable).
    #[arg(long = "metric", value_name = "CODE")]
    metrics: Vec<String>,
    /// Resume after this cursor instead of starting with a snapshot.
    #[arg(long)]
    resume: Option<String>,
    /// Seconds between heartbeats (1..=300).
    #[arg(long, default_value_t = 15)]
    heartbeat: u32,
    /// Do not print heartbeats.
    #[arg(long)]
    quiet: bool,
}

pub async fn watch(args: WatchArgs, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
    let request = pb::SubscribeRequest {
        filter: Some(args.who.filter(args.metrics)),
        resume_from: args.resume.unwrap_or_default(),
        heartbeat_seconds: args.heartbeat,
    };
    follow(connect(&args.server)?, args.server.server.clone(), request, !args.quiet, cancel).await
}

/// Subscribes and prints every update until cancelled; reconnects with backoff and resumes from the last cursor.
/// A request the server rejects (a bad filter) is an error, not something to retry.
pub async fn follow(
    channel: server::Conn,
    server_name: String,
    mut request: pb::SubscribeRequest,
    heartbeats: bool,
    cancel: CancellationToken,
) -> anyhow::Result<ExitCode> {
    // Snapshots carry the whole (filtered) picture in one message: allow more than tonic's 4 MiB default.
    let mut client = SubscriberServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut backoff = Backoff::default();
    // Whether the aggregator has sent anything in this run: after that a failed handshake (a certificate being
    // rotated, say) is retried like any other outage.
    let mut answered = false;
    loop {
        let run = async {
            let mut stream = tokio::time::timeout(server::ANSWER_TIMEOUT, client.subscribe(request.clone()))
                .await
                .unwrap_or_else(|_| Err(server::no_answer(server::ANSWER_TIMEOUT)))?
                .into_inner();
            while let Some(update) = stream.message().await? {
                backoff.reset();
                answered = true;
                let cursor = match &update.kind {
                    Some(pb::update::Kind::Event(e)) => Some(&e.cursor),
                    Some(pb::update::Kind::Snapshot(s)) => Some(&s.cursor),
                    Some(pb::update::Kind::Heartbeat(h)) => Some(&h.cursor),
                    Some(pb::update::Kind::Rollups(r)) => Some(&r.cursor),
                    _ => None,
                };
                if let Some(c) = cursor {
                    request.resume_from = c.clone();
                }
                if heartbeats || !matches!(update.kind, Some(pb::update::Kind::Heartbeat(_))) {
                    use std::io::Write;
                    // A closed pipe (`sitrep watch | head`) means nobody is reading any more: stop quietly.
                    if writeln!(std::io::stdout(), "{}", update_line(&update)).is_err() {
                        return Ok(true);
                    }
                }
            }
            Ok::<_, tonic::Status>(false)
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return Ok(ExitCode::SUCCESS),
            r = run => r,
        };
        match result {
            Ok(true) => return Ok(ExitCode::SUCCESS),
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let details = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
                for v in &details {
                    eprintln!("  {}: {}", v.field, v.description);
                }
                bail!("the server rejected the subscription: {}", status.message());
            }
            // Something at that address that is not sitrep will not become sitrep by retrying, nor will a CA or a
            // host name that does not match.
            Err(status) if server::classify(&status).is_configuration() && !answered => {
                bail!("{}", server::describe(&server_name, &status));
            }
            other => {
                let delay = backoff.next_delay();
                match other {
                    Ok(_) => tracing::warn!(retry_in = ?delay, "subscription ended; reconnecting"),
                    Err(status) => {
                        tracing::warn!(retry_in = ?delay, "{}; reconnecting", server::describe(&server_name, &status))
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(ExitCode::SUCCESS),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
