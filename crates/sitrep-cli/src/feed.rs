//! `sitrep feed`: the agent a trust runs next to its systems. It turns exported files into reports and streams
//! them to the aggregator, losing nothing and sending nothing twice as a new report.
//!
//! **Store and forward.** A file is read and converted, its reports are given revisions (when the file has none),
//! and all of them are written to the spool as one entry (written to a temporary file, fsync'd, renamed into
//! `queue/`, and the directory fsync'd) before the file leaves the drop folder. An entry is deleted only once the
//! aggregator has acknowledged every report in it. After a crash or a power cut the agent replays the queue in
//! order; a report that was stored but not yet deleted is sent again with the same revision and acknowledged as a
//! duplicate, which changes nothing.
//!
//! **Revisions** are assigned when a report is spooled: the current Unix time in seconds, or one more than the
//! last revision given to the same provider and period if that is higher (kept in `state.json`, saved before the
//! entry is written), so a later correction always wins and no two reports share a key.
//!
//! **Files once.** Each entry records the content hash of its file; so does `state.json` for entries already
//! sent. A file found again (the agent stopped between spooling it and moving it away) is recognised and not
//! spooled twice.
//!
//! **Retries.** An aggregator that refuses connections (it is down) or does not answer (the network) is retried
//! for ever with backoff, the reports waiting in the spool, and each retry says which it was. A configuration
//! error is not retried: a malformed `--server` is refused at start, and an address where something that is not a
//! sitrep aggregator answers (or that closes the connection unanswered three times in a row, or whose TLS
//! handshake fails: an unknown CA, a hostname mismatch, a client certificate refused) ends the agent with
//! an error, unless a sitrep aggregator answered there earlier in this run (then it is taken for a passing fault, a
//! proxy during a deploy, and retried).
//!
//! Drop folder: `<watch>/` takes files (names starting with `.` or ending in `.tmp` or `.part` are left alone, so
//! writers can write then rename); read files move to `<watch>/processed/`; files that cannot be read, and reports
//! the aggregator rejects, go to `<watch>/rejected/` beside a `.reason.txt` saying why.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sitrep_core::Timestamp;
use sitrep_core::input::{self, Format, Mapping, json};

use crate::server;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_server::hub::Backoff;
use sitrep_server::telemetry;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(clap::Args)]
pub struct FeedArgs {
    /// The aggregator's address: https://host:port (TLS), http://host:port or host:port (plaintext).
    #[arg(long, short, env = "SITREP_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    /// A drop folder to watch: every file that appears in it is read, spooled and sent (runs until stopped).
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Files to send once (- for standard input); the agent exits when all are acknowledged.
    files: Vec<PathBuf>,
    /// The spool: where reports wait until the aggregator has acknowledged them.
    #[arg(long, default_value = "sitrep-spool")]
    spool: PathBuf,
    /// The files' format: json, csv or fhir. Default: from each file's name and content.
    #[arg(long, value_parser = ["json", "csv", "fhir"])]
    format: Option<String>,
    /// A mapping file (TOML) from the trust's own names and codes to sitrep's (see docs/FEEDS.md).
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Milliseconds between looks at the watched folder.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Print the spool's depth and the last acknowledgement, then exit.
    #[arg(long)]
    status: bool,
}

/// One spooled file: its reports (in sitrep's JSON form, revisions assigned) and where they came from.
#[derive(Serialize, Deserialize)]
struct Entry {
    source: String,
    hash: String,
    spooled_at: Timestamp,
    reports: Vec<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct State {
    /// The last revision given to each `provider|period`.
    #[serde(default)]
    revisions: BTreeMap<String, u32>,
    /// Content hashes of files whose entries were sent (the most recent ones).
    #[serde(default)]
    sent: Vec<String>,
    #[serde(default)]
    last_ack: Option<LastAck>,
}

#[derive(Serialize, Deserialize, Clone)]
struct LastAck {
    at: Timestamp,
    outcome: String,
    provider: String,
    period: String,
    revision: u32,
    cursor: String,
}

const SENT_KEPT: usize = 10_000;

/// FNV-1a, 64 bits: a stable content hash with no dependency (not for security; to recognise a file seen before).
fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}-{}", bytes.len())
}

struct Spool {
    dir: PathBuf,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` so that after a crash it is either there whole or not at all.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("spool paths have a parent");
    let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

impl Spool {
    fn open(dir: &Path) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(dir.join("queue"))
            .with_context(|| format!("cannot create the spool {}", dir.display()))?;
        Ok(Spool { dir: dir.to_owned() })
    }

    fn state(&self) -> anyhow::Result<State> {
        match std::fs::read_to_string(self.dir.join("state.json")) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| format!("{}/state.json is damaged", self.dir.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}/state.json", self.dir.display())),
        }
    }

    fn save_state(&self, state: &State) -> anyhow::Result<()> {
        write_durably(&self.dir.join("state.json"), &serde_json::to_vec(state)?)
            .context("cannot save the spool's state")
    }

    /// Queued entries in order: (path, entry).
    fn queue(&self) -> anyhow::Result<Vec<(PathBuf, Entry)>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.join("queue"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json") && !p.file_name().unwrap().to_string_lossy().starts_with('.')
            })
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p)?;
                let entry: Entry =
                    serde_json::from_str(&text).with_context(|| format!("{} is damaged", p.display()))?;
                Ok((p, entry))
            })
            .collect()
    }

    /// The next entry's path after `last` (the number of the newest entry), which it advances. Never reuses a
    /// number, even across restarts: the time in microseconds is a floor.
    fn next_name(&self, last: &mut u64) -> PathBuf {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() as u64;
        *last = (*last + 1).max(now);
        self.dir.join("queue").join(format!("{:020}.json", *last))
    }
}

/// What the watcher and the sender share.
struct Agent {
    spool: Spool,
    mapping: Mapping,
    format: Option<Format>,
    /// Rejected reports and unreadable files go here (the drop folder's `rejected/`, or the spool's).
    rejected: PathBuf,
    spooled: Notify,
    state: std::sync::Mutex<State>,
    /// What is in the queue, kept in memory so that spooling a file does not read the whole queue: the content
    /// hashes of its entries, how many reports wait, and the number of the newest entry.
    queued: std::sync::Mutex<Queued>,
}

/// Why a file was not spooled: it cannot be read as reports (set it aside), or the spool cannot take it (leave
/// it where it is and try again).
enum IngestError {
    Invalid(String),
    Spool(String),
}

#[derive(Default)]
struct Queued {
    hashes: BTreeSet<String>,
    reports: usize,
    last: u64,
}

fn log(line: &str) {
    let now = Timestamp::now().to_string();
    println!("{} {line}", now.get(11..19).unwrap_or(&now));
}

impl Agent {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads one file into the spool; returns how many reports it queued (0 for this very file, spooled before).
    /// `identity` tells this file from another with the same content (its name and modification time), so that
    /// an identical export an hour later is sent, while the same file found again after a crash is not.
    fn ingest(&self, name: &str, identity: &str, bytes: &[u8]) -> Result<usize, IngestError> {
        let h = format!("{}/{identity}", hash(bytes));
        if self.queued().hashes.contains(&h) || self.state().sent.contains(&h) {
            log(&format!("{name}: already spooled; not sending it twice"));
            return Ok(0);
        }
        // Decoded by the mapping's encoding, size-capped, every error naming the line.
        let read = input::read_bytes(name, bytes, self.format, &self.mapping, Timestamp::now())
            .map_err(|e| IngestError::Invalid(e.to_string()))?;
        for note in &read.notes {
            log(&format!("note: {note}"));
        }
        let mut reports = read.reports;
        {
            let mut state = self.state();
            let now = Timestamp::now().millis() / 1000;
            for r in &mut reports {
                let key = format!("{}|{}", r.provider, r.period.map(|p| p.millis()).unwrap_or_default());
                let last = state.revisions.get(&key).copied().unwrap_or(0);
                if r.revision == 0 {
                    r.revision = (now.clamp(1, i64::from(u32::MAX)) as u32).max(last.saturating_add(1));
                }
                // Revisions a file gives count too, so one assigned later still comes after them.
                state.revisions.insert(key, last.max(r.revision));
            }
            // Keep the map small: periods older than the history the aggregator keeps no longer matter.
            let horizon = Timestamp::now().add_hours(-24 * 40).millis();
            state
                .revisions
                .retain(|k, _| k.rsplit('|').next().and_then(|p| p.parse::<i64>().ok()).is_none_or(|p| p >= horizon));
            self.spool.save_state(&state).map_err(|e| IngestError::Spool(format!("{e:#}")))?;
        }
        let entry = Entry {
            source: name.to_owned(),
            hash: h,
            spooled_at: Timestamp::now(),
            reports: reports.iter().map(json::write).collect(),
        };
        let mut queued = self.queued();
        let path = self.spool.next_name(&mut queued.last);
        write_durably(&path, &serde_json::to_vec(&entry).expect("entries serialise"))
            .map_err(|e| IngestError::Spool(format!("cannot write to the spool {}: {e}", self.spool.dir.display())))?;
        queued.hashes.insert(entry.hash);
        queued.reports += reports.len();
        drop(queued);
        self.spooled.notify_one();
        Ok(reports.len())
    }

    /// Moves a file that cannot be read into `rejected/` (under a new name if one is taken), beside its reason,
    /// durably; `source` is where it was (None: it came from standard input, `bytes` are all there is).
    fn reject_file(&self, name: &str, source: Option<&Path>, bytes: &[u8], why: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.rejected)?;
        let mut target = self.rejected.join(name);
        let mut n = 1;
        while target.exists() {
            target = self.rejected.join(format!("{name}.{n}"));
            n += 1;
        }
        let target_name = target.file_name().unwrap_or_default().to_string_lossy().into_owned();
        write_durably(&self.rejected.join(format!("{target_name}.reason.txt")), format!("{why}\n").as_bytes())?;
        match source {
            Some(path) => {
                std::fs::rename(path, &target)?;
                fsync_dir(&self.rejected)?;
                if let Some(dir) = path.parent() {
                    fsync_dir(dir)?;
                }
            }
            None => write_durably(&target, bytes)?,
        }
        log(&format!("rejected {name}: {why} (moved to {})", target.display()));
        Ok(())
    }

    /// Sets aside a report the aggregator rejected, or answered with a conflict, with its violations.
    fn reject_report(&self, source: &str, report: &str, ack: &pb::ReportAck) {
        let period = ack.period.as_ref().map(sitrep_server::convert::timestamp_from_wire).unwrap_or_default();
        let mut why = String::new();
        for v in &ack.violations {
            why.push_str(&format!("{} ({}): {}\n", v.field, v.rule, v.description));
        }
        self.set_aside(source, &ack.provider, period, ack.revision, report, &why);
    }

    /// Sets aside a report the aggregator refused for this agent's grant, with the aggregator's reason.
    fn reject_denied(&self, source: &str, text: &str, report: &sitrep_core::Report, why: &str) {
        let period = report.period.unwrap_or_default();
        self.set_aside(source, &report.provider, period, report.revision, text, &format!("permission denied: {why}\n"));
    }

    /// Writes a refused report and why into rejected/, named by its source, provider, period and revision, and
    /// says so.
    fn set_aside(&self, source: &str, provider: &str, period: Timestamp, revision: u32, text: &str, why: &str) {
        // The provider code comes from the file: keep it from naming a path outside rejected/.
        let stem = safe_name(&format!("{source}.{provider}-{}-r{revision}", period.millis()));
        self.write_aside(&stem, text, why);
        log(&format!("rejected {provider} {period} r{revision} from {source}: {}", why.trim_end().replace('\n', "; ")));
    }

    /// `rejected/<stem>.json` and `rejected/<stem>.reason.txt`.
    fn write_aside(&self, stem: &str, text: &str, why: &str) {
        let _ = std::fs::create_dir_all(&self.rejected);
        let _ = std::fs::write(self.rejected.join(format!("{stem}.json")), text);
        let _ = std::fs::write(self.rejected.join(format!("{stem}.reason.txt")), why);
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued_reports(&self) -> usize {
        self.queued().reports
    }

    /// Sends the queue in order over one stream, forever (until `cancel`), reconnecting with backoff. With
    /// `until_empty`, returns once the queue is empty.
    async fn send(
        &self,
        channel: crate::server::Conn,
        server_name: &str,
        cancel: &CancellationToken,
        until_empty: bool,
    ) -> anyhow::Result<()> {
        let mut client = ProviderServiceClient::new(channel);
        let mut backoff = Backoff::default();
        // Whether a sitrep aggregator has answered at this address in this run (see the module's "Retries").
        let mut answered = false;
        // Connections closed unanswered, in a row: an aggregator going down is refused at the next try, so a
        // third in a row with no answer ever means something else is at the address (the race in the HTTP/2
        // client can show a protocol error as a closed connection).
        let mut closed = 0;
        loop {
            let queue = self.spool.queue()?;
            if queue.is_empty() {
                if until_empty {
                    return Ok(());
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = self.spooled.notified() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
            match self.send_queue(&mut client, queue, cancel, &mut answered).await {
                Ok(()) => backoff.reset(),
                Err(failure) => {
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                    let why = match &failure {
                        // The credential is missing, revoked or expired: what to renew, and nothing lost meanwhile.
                        SendFailure::Call(status) if status.code() == tonic::Code::Unauthenticated => format!(
                            "{server_name} does not accept this agent's credential ({}); renew its key or token \
                             (--key-file or SITREP_KEY) and restart the agent; the spool is kept",
                            status.message()
                        ),
                        SendFailure::Call(status) => {
                            let failure = server::classify(status);
                            closed = if failure == server::Failure::Closed { closed + 1 } else { 0 };
                            if !answered && (failure.is_configuration() || closed >= 3) {
                                bail!(
                                    "{}; not retrying ({} report(s) stay in the spool for when --server is right)",
                                    server::describe(server_name, status),
                                    self.queued_reports()
                                );
                            }
                            server::describe(server_name, status)
                        }
                        SendFailure::Other(why) => format!("sending to {server_name} failed: {why}"),
                    };
                    let delay = backoff.next_delay().max(Duration::from_millis(200));
                    log(&format!(
                        "{why}; {} report(s) queued in the spool; retrying in {:.1} s",
                        self.queued_reports(),
                        delay.as_secs_f64()
                    ));
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One stream: every queued entry, report by report, each awaited before the next.
    async fn send_queue(
        &self,
        client: &mut ProviderServiceClient<crate::server::Conn>,
        queue: Vec<(PathBuf, Entry)>,
        cancel: &CancellationToken,
        answered: &mut bool,
    ) -> Result<(), SendFailure> {
        let wait = server::ANSWER_TIMEOUT;
        let open = |client: &mut ProviderServiceClient<crate::server::Conn>| {
            let (tx, rx) = mpsc::channel(1);
            let mut client = client.clone();
            async move {
                let acks = tokio::time::timeout(wait, client.report(ReceiverStream::new(rx)))
                    .await
                    .unwrap_or_else(|_| Err(server::no_answer(wait)))
                    .map_err(SendFailure::Call)?
                    .into_inner();
                Ok::<_, SendFailure>((tx, acks))
            }
        };
        // Opened for the first report, under its span, so the call's metadata carries that report's trace.
        let mut stream = None;
        for (path, entry) in queue {
            for text in &entry.reports {
                if cancel.is_cancelled() {
                    return Err(SendFailure::Other("stopping".into()));
                }
                let report = match json::parse("spool", text, &Mapping::default(), Timestamp::now()) {
                    Ok(mut r) if r.len() == 1 => r.remove(0),
                    // A damaged entry must not hold up everything behind it: set it aside and carry on.
                    other => {
                        let why = match other {
                            Err(e) => e.to_string(),
                            Ok(_) => "not one report".into(),
                        };
                        let stem = safe_name(&format!("{}.damaged-spool-entry", entry.source));
                        self.write_aside(&stem, text, &format!("{why}\n"));
                        log(&format!("rejected a damaged spool entry from {}: {why}", entry.source));
                        continue;
                    }
                };
                // A trace per report when tracing is on; the report carries its context (a stream carries many).
                let period = report.period.map(|p| p.to_string()).unwrap_or_default();
                let span = telemetry::send_span(
                    &report.provider,
                    report.site.as_deref(),
                    &period,
                    report.revision,
                    &entry.source,
                );
                let (tx, acks) = match &mut stream {
                    Some(open) => open,
                    None => stream.insert(open(client).instrument(span.clone()).await?),
                };
                let mut wire = sitrep_server::convert::report_to_wire(&report);
                if let Some(trace) = telemetry::context_of(&span) {
                    (wire.traceparent, wire.tracestate) = (trace.traceparent, trace.tracestate);
                }
                tx.send(wire).instrument(span.clone()).await.map_err(|_| {
                    telemetry::record_outcome(&span, "failed");
                    SendFailure::Other("the stream closed".to_owned())
                })?;
                let answer = tokio::time::timeout(wait, acks.message().instrument(span.clone()))
                    .await
                    .unwrap_or_else(|_| Err(server::no_answer(wait)));
                telemetry::record_outcome(
                    &span,
                    &match &answer {
                        Ok(Some(ack)) => ack.outcome().as_str_name().trim_start_matches("OUTCOME_").to_lowercase(),
                        _ => "failed".to_owned(),
                    },
                );
                drop(span);
                let ack = match answer {
                    Ok(Some(ack)) => ack,
                    Ok(None) => return Err(SendFailure::Other("the aggregator ended the stream".into())),
                    // This agent's credential may not report for that provider: sending it again will not help.
                    // Set it aside with the reason, and go on with the rest on a new stream.
                    Err(status) if status.code() == tonic::Code::PermissionDenied => {
                        *answered = true;
                        self.reject_denied(&entry.source, text, &report, status.message());
                        stream = None;
                        continue;
                    }
                    Err(status) => return Err(SendFailure::Call(status)),
                };
                *answered = true;
                let period = ack.period.as_ref().map(sitrep_server::convert::timestamp_from_wire).unwrap_or_default();
                if ack.provider != report.provider || ack.revision != report.revision {
                    return Err(SendFailure::Other(format!(
                        "the acknowledgement is for {} r{}, not the {} r{} just sent",
                        ack.provider, ack.revision, report.provider, report.revision
                    )));
                }
                match ack.outcome() {
                    // A conflict will not go away by sending it again: set it aside with its reason, as a rejection.
                    Outcome::Rejected | Outcome::Conflict => self.reject_report(&entry.source, text, &ack),
                    Outcome::Unspecified => {
                        return Err(SendFailure::Other("an acknowledgement with no outcome".into()));
                    }
                    outcome => {
                        let word = if outcome == Outcome::Duplicate { "duplicate" } else { "accepted" };
                        log(&format!(
                            "{word} {} {period} r{} from {}: {}",
                            ack.provider, ack.revision, entry.source, ack.message
                        ));
                        let mut state = self.state();
                        state.last_ack = Some(LastAck {
                            at: Timestamp::now(),
                            outcome: word.into(),
                            provider: ack.provider.clone(),
                            period: period.to_string(),
                            revision: ack.revision,
                            cursor: ack.cursor.clone(),
                        });
                    }
                }
            }
            // Everything in the entry is acknowledged: remember its file, then let it go.
            {
                let mut state = self.state();
                state.sent.push(entry.hash.clone());
                let excess = state.sent.len().saturating_sub(SENT_KEPT);
                state.sent.drain(..excess);
                self.spool.save_state(&state).map_err(|e| SendFailure::Other(format!("{e:#}")))?;
            }
            std::fs::remove_file(&path)
                .map_err(|e| SendFailure::Other(format!("cannot remove {}: {e}", path.display())))?;
            let _ = fsync_dir(path.parent().expect("queue"));
            let mut queued = self.queued();
            queued.hashes.remove(&entry.hash);
            queued.reports = queued.reports.saturating_sub(entry.reports.len());
        }
        Ok(())
    }
}

/// Why sending the spool stopped: a call failed (its status tells refused, not sitrep, unreachable, or the
/// aggregator's own answer), or something else went wrong on the way.
enum SendFailure {
    Call(tonic::Status),
    Other(String),
}

/// A file name made only of letters, digits, `.`, `-` and `_` (anything else becomes `_`), never `.` or `..`.
fn safe_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    if cleaned.chars().all(|c| c == '.') { format!("_{cleaned}") } else { cleaned }
}

/// Files in the drop folder ready to read, oldest first (then by name), with their modification times in
/// nanoseconds. A file modified within the last second may still be being written, so it waits for a later look.
fn ready_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u128)>> {
    let settled = std::time::SystemTime::now() - Duration::from_secs(1);
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && !name.ends_with(".tmp") && !name.ends_with(".part")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(modified, _)| *modified <= settled)
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|(m, p)| (p, m.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()))
        .collect())
}

fn status(spool: &Path) -> anyhow::Result<ExitCode> {
    let s = Spool::open(spool)?;
    let queue = s.queue()?;
    let reports: usize = queue.iter().map(|(_, e)| e.reports.len()).sum();
    println!("spool {}: {} report(s) waiting in {} file(s)", spool.display(), reports, queue.len());
    if let Some((_, oldest)) = queue.first() {
        println!("  oldest waiting since {} (from {})", oldest.spooled_at, oldest.source);
    }
    let state = s.state()?;
    match state.last_ack {
        Some(a) => println!(
            "  last acknowledged: {} {} {} r{} at {} (cursor {})",
            a.outcome,
            a.provider,
            a.period,
            a.revision,
            a.at,
            if a.cursor.is_empty() { "-" } else { &a.cursor }
        ),
        None => println!("  nothing acknowledged yet"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: FeedArgs, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
    if args.status {
        return status(&args.spool);
    }
    if args.watch.is_none() && args.files.is_empty() {
        bail!("give a folder to watch (--watch DIR), or files to send (or - for standard input); see --help");
    }
    // Connects lazily, but checks the address now rather than spooling for ever towards a bad one.
    let channel = crate::server::connect(&args.server, &args.tls)?;
    let mapping = crate::load_mapping(args.mapping.as_deref())?;
    let spool = Spool::open(&args.spool)?;
    let state = spool.state()?;
    let mut queued = Queued::default();
    for (path, entry) in spool.queue()? {
        queued.hashes.insert(entry.hash);
        queued.reports += entry.reports.len();
        let n = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        queued.last = queued.last.max(n);
    }
    let rejected = match &args.watch {
        Some(w) => w.join("rejected"),
        None => args.spool.join("rejected"),
    };
    let agent = std::sync::Arc::new(Agent {
        spool,
        mapping,
        format: args.format.as_deref().and_then(Format::parse),
        rejected,
        spooled: Notify::new(),
        state: std::sync::Mutex::new(state),
        queued: std::sync::Mutex::new(queued),
    });
    let waiting = agent.queued_reports();
    if waiting > 0 {
        log(&format!("{waiting} report(s) waiting in the spool from before; sending them first"));
    }

    // One-shot files first: spooled before anything is sent, so a crash loses none of them.
    let mut failed = false;
    for file in &args.files {
        // What tells this file from the same content sent another time: its modification time (standard input
        // is always new).
        let (name, identity, bytes) = if file.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read standard input")?;
            ("stdin".to_owned(), format!("stdin/{}", Timestamp::now().millis()), buf)
        } else {
            let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let modified = std::fs::metadata(file)
                .and_then(|m| m.modified())
                .map(|m| m.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos())
                .unwrap_or_default();
            let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
            (name.clone(), format!("{name}/{modified}"), bytes)
        };
        match agent.ingest(&name, &identity, &bytes) {
            Ok(n) => log(&format!("{name}: {n} report(s) spooled")),
            Err(IngestError::Invalid(why)) => {
                agent.reject_file(&name, None, &bytes, &why).with_context(|| format!("cannot set {name} aside"))?;
                failed = true;
            }
            Err(IngestError::Spool(why)) => bail!("{why}"),
        }
    }

    let Some(watch) = args.watch.clone() else {
        agent.send(channel, &args.server, &cancel, true).await?;
        return Ok(if failed || agent.rejected.exists() && std::fs::read_dir(&agent.rejected)?.next().is_some() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    };
    std::fs::create_dir_all(watch.join("processed")).with_context(|| format!("cannot use {}", watch.display()))?;
    let sender = {
        let (agent, cancel, server) = (agent.clone(), cancel.clone(), args.server.clone());
        tokio::spawn(async move {
            let sent = agent.send(channel, &server, &cancel, false).await;
            // A configuration error ends the agent, not just the sender: stop watching too.
            if sent.is_err() {
                cancel.cancel();
            }
            sent
        })
    };
    log(&format!("watching {} for files; spool {}", watch.display(), args.spool.display()));
    let mut seen_errors = BTreeSet::new();
    loop {
        match ready_files(&watch) {
            Ok(files) => {
                for (path, modified) in files {
                    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    // Too large to read: set aside unread, the cap named.
                    if let Ok(meta) = std::fs::metadata(&path)
                        && let Err(e) = input::check_size(&name, usize::try_from(meta.len()).unwrap_or(usize::MAX))
                    {
                        if let Err(err) = agent.reject_file(&name, Some(&path), &[], &e.to_string())
                            && seen_errors.insert(format!("reject {name}"))
                        {
                            log(&format!("cannot set {name} aside ({err}); leaving it in place"));
                        }
                        continue;
                    }
                    let bytes = match std::fs::read(&path) {
                        Ok(b) => b,
                        Err(e) => {
                            if seen_errors.insert(name.clone()) {
                                log(&format!("cannot read {name} yet: {e}"));
                            }
                            continue;
                        }
                    };
                    match agent.ingest(&name, &format!("{name}/{modified}"), &bytes) {
                        Ok(n) => {
                            if n > 0 {
                                log(&format!("{name}: {n} report(s) spooled; {} waiting", agent.queued_reports()));
                            }
                            let mut to = watch.join("processed").join(&name);
                            let mut k = 1;
                            while to.exists() {
                                to = watch.join("processed").join(format!("{name}.{k}"));
                                k += 1;
                            }
                            if let Err(e) = std::fs::rename(&path, &to)
                                && seen_errors.insert(format!("move {name}"))
                            {
                                log(&format!("cannot move {name} to processed/: {e}"));
                            }
                        }
                        Err(IngestError::Invalid(why)) => {
                            if let Err(e) = agent.reject_file(&name, Some(&path), &bytes, &why)
                                && seen_errors.insert(format!("reject {name}"))
                            {
                                log(&format!("cannot set {name} aside ({e}); leaving it in place"));
                            }
                        }
                        // The spool cannot take it now: the file stays, and is tried again.
                        Err(IngestError::Spool(why)) => {
                            if seen_errors.insert(format!("spool {name}")) {
                                log(&format!("cannot spool {name} ({why}); leaving it in place and retrying"));
                            }
                        }
                    }
                }
            }
            Err(e) => log(&format!("cannot list {}: {e}", watch.display())),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(args.poll_ms.max(10))) => {}
        }
    }
    let sent = sender.await;
    log(&format!("stopped; {} report(s) left in the spool for next time", agent.queued_reports()));
    match sent {
        Ok(Err(e)) => Err(e),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_names_stay_in_their_folder() {
        assert_eq!(safe_name("beds.csv.../../etc/x-1-r2"), "beds.csv..._.._etc_x-1-r2");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name("a b/c"), "a_b_c");
    }

    #[test]
    fn hashes_are_stable_and_tell_content_apart() {
        assert_eq!(hash(b"provider,period\n"), hash(b"provider,period\n"));
        assert_ne!(hash(b"a"), hash(b"b"));
        assert_eq!(hash(b""), "cbf29ce484222325-0");
    }
}
