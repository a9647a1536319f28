//! Helpers for the end-to-end tests: start the real `sitrep` binary on a free port, connect real gRPC clients,
//! build reports, and read streams with a deadline (a deadline that passes is a failure, never a measurement).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::query_service_client::QueryServiceClient;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// How long any single expected message may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `sitrep serve` process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    dir: TempDir,
    /// What it has written to standard error so far (also passed on to the test's).
    logs: std::sync::Arc<std::sync::Mutex<String>>,
}

pub use tempfile::TempDir;

/// A directory of the test's own (`sitrep-e2e-{tag}-...` in the system's temporary directory), removed with
/// everything in it when dropped.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("sitrep-e2e-{tag}-")).tempdir().unwrap()
}

impl Server {
    /// Starts `sitrep serve` on port 0 with the given configuration file text (may be empty).
    pub async fn start(config: &str) -> Server {
        Self::start_with(config, &[]).await
    }

    /// Starts `sitrep serve` on port 0 with the given configuration, keeping state in the Redis at `url`.
    pub async fn start_redis(url: &str) -> Server {
        Self::start_with("", &["--redis", url]).await
    }

    /// Starts `sitrep serve` on port 0 with the given configuration file text and extra arguments.
    pub async fn start_with(config: &str, extra: &[&str]) -> Server {
        Self::start_full(config, extra, "127.0.0.1:0", &[]).await
    }

    /// Starts `sitrep serve` on port 0 with this directory (TOML text) instead of the demo's.
    pub async fn start_with_directory(directory: &str) -> Server {
        Self::start_full("directory = \"directory.toml\"\n", &[], "127.0.0.1:0", &[("directory.toml", directory)]).await
    }

    /// Starts `sitrep serve` listening on `listen`, with the configuration text, extra arguments, and other files
    /// (name, content) written beside the configuration (a directory, say).
    pub async fn start_full(config: &str, extra: &[&str], listen: &str, files: &[(&str, &str)]) -> Server {
        Self::start_env(config, extra, listen, files, &[]).await
    }

    /// [`Server::start_full`] with these environment variables set (the `OTEL_*` ones, say).
    pub async fn start_env(
        config: &str,
        extra: &[&str],
        listen: &str,
        files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Server {
        let dir = temp_dir("server");
        let config_path = dir.path().join("sitrep.toml");
        std::fs::write(&config_path, config).unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_sitrep"))
            .args(["serve", "--listen", listen, "--config"])
            .arg(&config_path)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start sitrep");
        let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let kept = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                eprintln!("{line}");
                let mut logs = kept.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let url = format!("http://{}", listening(&mut child).await);
        Server { child, url, dir, logs }
    }

    /// The directory its configuration (and the files written beside it) is in.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// What it has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port")
    }

    /// A new HTTP/2 connection to the server.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url.clone()).unwrap().connect().await.expect("connect")
    }

    pub async fn provider(&self) -> ProviderServiceClient<Channel> {
        ProviderServiceClient::new(self.channel().await)
    }

    pub async fn subscriber(&self) -> SubscriberServiceClient<Channel> {
        SubscriberServiceClient::new(self.channel().await)
    }

    pub async fn query(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(self.channel().await)
    }

    /// The live picture once `ok` holds of it. An ack means the report is stored; the Hub folds it from the log a
    /// moment later, so a snapshot read right after an ack may not show it yet. Polls for up to 10 s, then fails
    /// naming `what` it waited for.
    pub async fn snapshot_when(&self, what: &str, ok: impl Fn(&pb::Snapshot) -> bool) -> pb::Snapshot {
        let mut query = self.query().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let snap = query.get_snapshot(pb::GetSnapshotRequest::default()).await.unwrap().into_inner();
            if ok(&snap) {
                return snap;
            }
            assert!(tokio::time::Instant::now() < deadline, "the picture never showed {what}: {snap:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The live picture once it has folded the event at `cursor` (an ack's), or a later one of the same log.
    pub async fn snapshot_at(&self, cursor: &str) -> pb::Snapshot {
        let at = sitrep_core::Cursor::parse(cursor).unwrap_or_else(|| panic!("{cursor:?} is not a cursor"));
        self.snapshot_when(&format!("the event at {cursor}"), |snap| {
            sitrep_core::Cursor::parse(&snap.cursor).is_some_and(|c| c.epoch == at.epoch && c.pos >= at.pos)
        })
        .await
    }

    /// A subscription to everything, with heartbeats every `heartbeat` seconds: its stream of updates (the first
    /// is the snapshot).
    pub async fn updates(&self, heartbeat: u32) -> tonic::Streaming<pb::Update> {
        self.subscriber().await.subscribe(subscribe_all(heartbeat)).await.unwrap().into_inner()
    }
}

/// The address a started `sitrep serve` (its stdout piped) prints first (`sitrep listening on ADDR`); its stdout is
/// drained from then on, so the child never blocks on a full pipe.
pub async fn listening(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("sitrep prints its address")
        .unwrap()
        .expect("sitrep printed nothing");
    let addr = first.strip_prefix("sitrep listening on ").unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let addr = addr.split_whitespace().next().unwrap_or_default().to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

/// A request for everything, with heartbeats every `heartbeat` seconds.
pub fn subscribe_all(heartbeat: u32) -> pb::SubscribeRequest {
    pb::SubscribeRequest { heartbeat_seconds: heartbeat, ..Default::default() }
}

pub fn ts(t: sitrep_core::Timestamp) -> prost_types::Timestamp {
    sitrep_proto::convert::timestamp_to_wire(t)
}

pub fn number(n: f64) -> pb::MetricValue {
    pb::MetricValue { kind: Some(pb::metric_value::Kind::Number(n)), unit: String::new() }
}

/// A report for `provider`, `hours_ago` hours before the current hour, with numeric values.
pub fn report(provider: &str, hours_ago: i64, revision: u32, values: &[(&str, f64)]) -> pb::StatusReport {
    let now = sitrep_core::Timestamp::now();
    pb::StatusReport {
        provider: provider.into(),
        period: Some(ts(now.hour_start().add_hours(-hours_ago))),
        revision,
        observed_at: Some(ts(now)),
        values: values.iter().map(|(k, v)| (k.to_string(), number(*v))).collect(),
        source: "e2e".into(),
        ..Default::default()
    }
}

/// A `[staleness]` configuration under which a provider whose latest report is for the previous hour (a report
/// made with `hours_ago = 1`) goes stale `seconds` from now, checked ten times a second. Freshness goes by the
/// period reported (stale once the hour reported has ended and a cadence and the grace have passed), so a short
/// wait needs a report for an hour that has already ended and a cadence that ends just after now.
pub fn stale_after_previous_hour(seconds: u64) -> String {
    let now = sitrep_core::Timestamp::now();
    let cadence_ms = now.millis() - now.hour_start().millis() + seconds as i64 * 1000;
    format!("[staleness]\ncadence = \"{cadence_ms}ms\"\ngrace = \"0s\"\ncheck_interval = \"100ms\"\n")
}

/// A provider's open Report stream: send a report, await its ack.
pub struct Feed {
    tx: mpsc::Sender<pb::StatusReport>,
    acks: Streaming<pb::ReportAck>,
}

impl Feed {
    pub async fn open(client: &mut ProviderServiceClient<Channel>) -> Feed {
        let (tx, rx) = mpsc::channel(16);
        let acks = client.report(ReceiverStream::new(rx)).await.expect("open report stream").into_inner();
        Feed { tx, acks }
    }

    pub async fn send(&mut self, report: pb::StatusReport) -> pb::ReportAck {
        self.try_send(report).await.expect("ack").expect("stream open")
    }

    /// Sends a report and returns what came back: an ack, the end of the stream, or the status it ended with.
    pub async fn try_send(&mut self, report: pb::StatusReport) -> Result<Option<pb::ReportAck>, tonic::Status> {
        if self.tx.send(report).await.is_err() {
            return Ok(None);
        }
        tokio::time::timeout(DEADLINE, self.acks.message()).await.expect("an answer in time")
    }
}

/// The next update of a subscription, failing the test if none comes in time.
pub async fn next(stream: &mut Streaming<pb::Update>) -> pb::update::Kind {
    let u = tokio::time::timeout(DEADLINE, stream.message()).await.expect("update in time").expect("stream ok");
    u.expect("stream still open").kind.expect("update has a kind")
}

/// The next update that is not a heartbeat.
pub async fn next_non_heartbeat(stream: &mut Streaming<pb::Update>) -> pb::update::Kind {
    loop {
        match next(stream).await {
            pb::update::Kind::Heartbeat(_) => continue,
            other => return other,
        }
    }
}

pub fn expect_event(kind: pb::update::Kind) -> pb::Event {
    match kind {
        pb::update::Kind::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

pub fn expect_snapshot(kind: pb::update::Kind) -> pb::Snapshot {
    match kind {
        pb::update::Kind::Snapshot(s) => s,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// The number a wire value carries (panics if absent).
pub fn num(v: &Option<pb::MetricValue>) -> Option<f64> {
    match v.as_ref()?.kind? {
        pb::metric_value::Kind::Number(n) => Some(n),
        pb::metric_value::Kind::Absent(_) => panic!("value is absent"),
    }
}

/// The changes of an event as (metric, before, after) triples.
pub fn changes(e: &pb::Event) -> Vec<(String, Option<f64>, f64)> {
    e.changes.iter().map(|c| (c.metric.clone(), num(&c.before), num(&c.after).unwrap())).collect()
}

/// Tracks what the live state should be, to predict each report's diff.
#[derive(Default)]
pub struct Model {
    live: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Model {
    /// The changes a live report should produce, updating the model.
    pub fn apply(&mut self, provider: &str, values: &[(&str, f64)]) -> Vec<(String, Option<f64>, f64)> {
        let state = self.live.entry(provider.to_owned()).or_default();
        let mut sorted: Vec<_> = values.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        sorted
            .into_iter()
            .filter_map(|(k, v)| {
                let before = state.insert(k.to_owned(), v);
                (before != Some(v)).then(|| (k.to_owned(), before, v))
            })
            .collect()
    }
}

/// A local address with a port that was free a moment ago, for a server that must come back on the same port.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
