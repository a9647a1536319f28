//! `sitrep watch`: subscribes to the aggregator's changes and prints each as a line (`sitrep_client::display`),
//! for as long as it runs. The subscription is `sitrep_client::follow`'s: outages are waited out with the shared
//! backoff and it resumes from the last cursor seen, so nothing is missed; a request the aggregator rejects, or an
//! address that is not a sitrep aggregator, is an error at once. This side connects (`crate::server`, which also
//! tells failures apart) and prints. `follow` is also the printer of `sitrep serve --demo`.

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;

use clap::Args;
use sitrep_client::display::update_line;
use sitrep_client::follow::{self, Upstream};
use sitrep_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

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

/// Subscribes and prints every update until cancelled (`sitrep_client::follow`: reconnects with backoff and
/// resumes from the last cursor). A request the server rejects (a bad filter) is an error, not something to retry.
pub async fn follow(
    channel: server::Conn,
    server_name: String,
    request: pb::SubscribeRequest,
    heartbeats: bool,
    cancel: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let upstream = Upstream {
        channel,
        answer_timeout: server::ANSWER_TIMEOUT,
        diagnose: Box::new(server::Classify { server: server_name }),
    };
    let print = |update: &pb::Update| {
        if heartbeats || !matches!(update.kind, Some(pb::update::Kind::Heartbeat(_))) {
            // A closed pipe (`sitrep watch | head`) means nobody is reading any more: stop quietly.
            if writeln!(std::io::stdout(), "{}", update_line(update)).is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    };
    match sitrep_client::follow::follow(upstream, request, print, cancel).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            if let follow::Error::Rejected { violations, .. } = &e {
                for v in violations {
                    eprintln!("  {}: {}", v.field, v.description);
                }
            }
            Err(e.into())
        }
    }
}
