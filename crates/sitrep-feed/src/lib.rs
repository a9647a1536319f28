//! The feed agent a trust runs next to its systems (`sitrep feed`): it turns exported files into reports and
//! streams them to the aggregator, losing nothing and sending nothing twice as a new report.
//!
//! **Store and forward.** A file is read and converted, its reports are given revisions (when the file has none),
//! and all of them are written to the spool as one entry, durably, before the file leaves the drop folder. An
//! entry is deleted only once the aggregator has acknowledged every report in it. After a crash or a power cut
//! the agent replays the spool in order; a report that was stored but not yet deleted is sent again with the same
//! revision and acknowledged as a duplicate, which changes nothing.
//!
//! **Revisions** are assigned when a report is spooled: the current Unix time in seconds, or one more than the
//! last revision given to the same provider and period if that is higher, so a later correction always wins.
//!
//! # Layout
//! - [`spool`]: the durable on-disk queue and the agent's state (revisions, files sent, the last acknowledgement),
//!   with an in-memory index so that nothing is read twice.
//! - `watcher`: the drop folder, looked at every poll interval; files move to `processed/` once spooled.
//! - [`sender`]: the spool over one gRPC stream, report by report, retried with backoff; what a failed call means
//!   is the caller's to say (`sitrep_client::diagnose::Diagnose`), as the connection (TLS, credential) is the caller's.
//! - `rejected`: what cannot be sent, set aside in `rejected/` beside its reason.
//! - `agent`: what the watcher and the sender share, and reading a file into the spool.
//!
//! **Invariant**: file work (reads, writes, fsyncs) runs on blocking threads, never on the async ones; the crate
//! knows nothing of TLS, keys or command-line flags (the `sitrep` binary parses them and passes a [`Config`] and a
//! connected [`Upstream`]).

mod agent;
mod error;
mod rejected;
pub mod sender;
pub mod spool;
#[cfg(test)]
mod temp;
mod watcher;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sitrep_core::input::{Format, Mapping};
use tokio_util::sync::CancellationToken;

pub use agent::Input;
pub use error::Error;
pub use sender::Upstream;

use crate::agent::Agent;
use crate::error::joined;
use crate::rejected::Rejected;
use crate::sender::Sender;
use crate::spool::Spool;
use crate::watcher::Watcher;

/// What the agent does, as the command line gave it.
pub struct Config {
    /// Where reports wait until acknowledged.
    pub spool: PathBuf,
    /// A drop folder to watch until stopped; None: send `inputs` and exit.
    pub watch: Option<PathBuf>,
    /// Files to send first (all spooled before anything is sent).
    pub inputs: Vec<Input>,
    /// The files' format; None: from each file's name and content.
    pub format: Option<Format>,
    pub mapping: Mapping,
    /// Time between looks at the drop folder.
    pub poll: Duration,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// Every input is acknowledged and nothing is in `rejected/`.
    Sent,
    /// Every input is acknowledged or set aside, and `rejected/` holds something a person should look at.
    SetAside,
    /// Watching stopped (cancelled); what was not sent waits in the spool.
    Stopped,
}

/// Runs the agent until its inputs are sent (no `watch`) or until `cancel`.
pub async fn run(config: Config, upstream: Upstream, cancel: CancellationToken) -> Result<Finished, Error> {
    if config.watch.is_none() && config.inputs.is_empty() {
        return Err(Error::Configuration(
            "give a folder to watch (--watch DIR), or files to send (or - for standard input); see --help".into(),
        ));
    }
    let rejected = Rejected::new(config.watch.as_ref().unwrap_or(&config.spool).join("rejected"));
    let agent = {
        let (dir, mapping, format) = (config.spool.clone(), config.mapping, config.format);
        joined(
            tokio::task::spawn_blocking(move || {
                Ok(Arc::new(Agent::new(Spool::open(&dir)?, rejected, mapping, format)))
            })
            .await,
        )?
    };
    let waiting = agent.spool.waiting();
    if waiting > 0 {
        tracing::info!("{waiting} report(s) waiting in the spool from before; sending them first");
    }
    let set_aside = {
        let (agent, inputs) = (agent.clone(), config.inputs);
        joined(tokio::task::spawn_blocking(move || agent.ingest_inputs(&inputs)).await)?
    };

    let Some(watch) = config.watch else {
        Sender::new(agent.clone(), upstream).run(&cancel, true).await?;
        let empty = {
            let agent = agent.clone();
            tokio::task::spawn_blocking(move || agent.rejected.is_empty()).await.unwrap_or(false)
        };
        return Ok(if set_aside || !empty { Finished::SetAside } else { Finished::Sent });
    };
    let shown = watch.display().to_string();
    let watcher = {
        let agent = agent.clone();
        joined(tokio::task::spawn_blocking(move || Watcher::new(watch, agent)).await)?
    };
    let sender = {
        let (agent, cancel) = (agent.clone(), cancel.clone());
        tokio::spawn(async move {
            let sent = Sender::new(agent, upstream).run(&cancel, false).await;
            // A configuration error ends the agent, not just the sender: stop watching too.
            if sent.is_err() {
                cancel.cancel();
            }
            sent
        })
    };
    tracing::info!("watching {shown} for files; spool {}", config.spool.display());
    watcher.run(config.poll.max(Duration::from_millis(10)), &cancel).await;
    // The watcher ends only when cancelled, so the sender is stopping too.
    cancel.cancel();
    let sent = sender.await;
    tracing::info!("stopped; {} report(s) left in the spool for next time", agent.spool.waiting());
    match sent {
        Ok(Err(e)) => Err(e),
        _ => Ok(Finished::Stopped),
    }
}

/// The spool's depth, its oldest entry and the last acknowledgement (`sitrep feed --status`).
pub fn status(spool: &Path) -> Result<spool::Status, Error> {
    Spool::open(spool)?.status()
}
