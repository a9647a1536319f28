//! `sitrep bench`: a benchmark of the hot path, report in to subscriber out, against a real Redis.
//!
//! It starts its own `redis-server` (AOF, `appendfsync everysec`, as production is advised to run) unless given
//! one, and its own aggregator as a separate process (this same binary, `serve --redis`), so the aggregator's CPU
//! time and peak memory can be read from `/proc` without the load generator's. It then drives P provider streams,
//! each on its own connection, sending reports of about twenty metrics as fast as they are acknowledged, with S
//! subscribers attached, and measures for a fixed window. Each report's narrative carries its send time, so a
//! subscriber can tell how long the report took to reach it without any shared state.
//!
//! In the same run, with the same reports and the same concurrency P, it measures two baselines:
//! - **raw**: each report's irreducible Redis writes (its values into a state hash, a history entry, an event in a
//!   stream) as one minimal Lua script per report, over one multiplexed redis-rs connection: what a plain persisted
//!   log of these reports costs on this machine. The ratio of sitrep's rate to this one is the headline figure.
//! - **store**: the same reports through `RedisStore::apply` with the bench's own rules (planning, encodings and
//!   group commit, but no gRPC and no subscribers), which shows how the difference splits between store and server.
//!
//! Every phase makes its connections first and starts its clock after, so the window measures only steady work.
//! Redis's CPU and its commands (from `INFO commandstats`) are read at each phase's boundaries, so each phase's
//! Redis figures are its own.

mod floor;
mod history;
mod otlp_sink;
mod scale;
mod snapshot;
mod sse;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tls::TlsArgs;
use anyhow::{Context, bail};
use clap::Args;
use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_core::{Directory, Limits, Report, Rules, Timestamp, validate};
use sitrep_proto::convert::report_to_wire;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::redis::RedisProcess;
use sitrep_store::{RedisOptions, RedisStore, Store};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Args)]
#[command(
    after_help = "Starts its own redis-server (unless --redis) and its own aggregator process, drives P provider \
    streams with S subscribers attached, and prints throughput, latencies, the aggregator's CPU per report and \
    peak memory; then the same streams against a server that only makes the raw writes (the gRPC floor), and the same \
    Redis work done without gRPC or the aggregator.\n\n\
    Examples:\n  \
    sitrep bench\n  \
    sitrep bench --providers 200 --subscribers 50 --seconds 30"
)]
pub struct BenchArgs {
    /// Concurrent provider streams (P).
    #[arg(long, default_value_t = 50)]
    providers: usize,
    /// Subscribers attached, each following every event (S).
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Seconds measured (after a one-second warm-up), for the aggregator and again for the baseline.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Use this Redis instead of starting one (its data under the bench's key prefixes is left behind).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Run this `sitrep` binary as the aggregator instead of this one: to compare two builds under the same load
    /// and the same baselines (before and after a change, in one sitting).
    #[arg(long, value_name = "PATH")]
    server_binary: Option<std::path::PathBuf>,
    /// What to measure: `hot` (the hot path against the raw and store baselines), `scale` (the memory store and
    /// the picture with 50 and with 10,000 live providers), `snapshot` (a replica starting against a Redis holding
    /// --providers providers while another ingests, and snapshots of all of them), `sse` (--subscribers
    /// Server-Sent Events subscribers on the embedded store: memory per idle subscriber, and delivery at 10
    /// reports a second), `history` (a day of hourly reports for --providers providers: Redis's bytes per
    /// provider-hour).
    #[arg(long, value_enum, default_value_t = Scenario::Hot)]
    scenario: Scenario,
    /// With `--scenario history`: hours of history written per provider (840 is the default retention of 35 days).
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// With `--scenario hot`: serve the aggregator over TLS (a CA and a certificate for `localhost` made for the
    /// run) and connect every provider stream and subscriber over it. The gRPC floor and the baselines stay
    /// plaintext, so the difference from a run without `--tls` is what TLS costs.
    #[arg(long)]
    tls: bool,
    /// With `--scenario hot`: the aggregator authenticates every caller (a principals file with one API key that
    /// may write and read everything), and every provider stream and subscriber sends it, so the difference from
    /// a run without `--auth` is what authentication costs.
    #[arg(long)]
    auth: bool,
    /// With `--scenario hot`: trace the aggregator, as a deployment with OpenTelemetry on would, sampling this
    /// fraction of reports (0 < R <= 1; e.g. 1 or 0.01). The bench runs a throwaway OTLP receiver (it counts the
    /// spans) and starts the aggregator with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at it and a parent-based
    /// sampler; each bench report carries its own `traceparent`, sampled with this probability, as a feed's would.
    /// (Without it the aggregator traces nothing, unless `OTEL_*` variables in the bench's environment, which the
    /// aggregator inherits, say otherwise.)
    #[arg(long, value_name = "R")]
    otlp: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Hot,
    Scale,
    Snapshot,
    Sse,
    History,
}

/// An aggregator the bench started (`serve` on a free port, on Redis at `redis` if given, else the memory store),
/// killed when dropped.
pub(crate) struct Aggregator {
    pub child: tokio::process::Child,
    pub addr: String,
}

impl Aggregator {
    pub async fn start(
        binary: &std::path::Path,
        redis: Option<&str>,
        config: &std::path::Path,
    ) -> anyhow::Result<Aggregator> {
        Self::start_env(binary, redis, config, &[]).await
    }

    /// [`Aggregator::start`] with these environment variables besides the bench's own (which it inherits).
    pub async fn start_env(
        binary: &std::path::Path,
        redis: Option<&str>,
        config: &std::path::Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Aggregator> {
        let mut command = tokio::process::Command::new(binary);
        command.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(config);
        command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        if let Some(url) = redis {
            command.args(["--redis", url]);
        }
        Self::spawn(command).await
    }

    /// Runs `command`, which prints `sitrep listening on ADDR` first.
    async fn spawn(mut command: tokio::process::Command) -> anyhow::Result<Aggregator> {
        let mut child = command.env("RUST_LOG", "warn").stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = lines.next_line().await?.context("the aggregator printed nothing")?;
        let addr = first.strip_prefix("sitrep listening on ").context("unexpected aggregator output")?.to_owned();
        Ok(Aggregator { child, addr })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("aggregator pid")
    }
}

/// The Redis the bench uses: `--redis`, or its own `redis-server` (AOF, `appendfsync everysec`, as production is
/// advised to run), stopped when the returned process is dropped.
fn bench_redis(args: &BenchArgs) -> anyhow::Result<(Option<RedisProcess>, String)> {
    Ok(match &args.redis {
        Some(url) => (None, url.clone()),
        None => {
            eprintln!("bench: starting redis-server (AOF, appendfsync everysec)");
            let r = RedisProcess::start_with(&["--appendfsync", "everysec"]).context("starting redis-server")?;
            let url = r.url();
            (Some(r), url)
        }
    })
}

/// The binary the bench runs as the aggregator: `--server-binary`, or this one.
fn aggregator_binary(args: &BenchArgs) -> anyhow::Result<std::path::PathBuf> {
    Ok(match &args.server_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    })
}

/// The bench's rules: its directory, the shipped catalogue and the example OPEL framework.
fn bench_rules(directory: Arc<Directory>) -> anyhow::Result<Rules> {
    Ok(Rules::new(
        Arc::new(sitrep_core::profile::nhs_england_catalogue()),
        directory,
        Some(Arc::new(sitrep_core::opel::example_framework())),
        Default::default(),
    )?)
}

/// Latency samples in microseconds.
#[derive(Default)]
pub(crate) struct Samples(Vec<u64>);

impl Samples {
    fn summary(mut self) -> String {
        if self.0.is_empty() {
            return "no samples".into();
        }
        self.0.sort_unstable();
        let at = |q: f64| self.0[((self.0.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        format!("p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples)", at(0.5), at(0.99), at(1.0), self.0.len())
    }
}

/// A figure of `/proc/<pid>/status` given in kB (`VmRSS:`, `VmHWM:`).
pub(crate) fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) and peak resident memory (bytes) of a process, from /proc.
pub(crate) fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    static CLOCK_TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *CLOCK_TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    });
    let hwm_kb = status_kb(pid, "VmHWM:")?;
    Some((ticks / hz, hwm_kb * 1024))
}

pub(crate) fn directory_text(providers: usize) -> String {
    let mut t = String::from(
        "[nation]\ncode = \"BEN\"\nname = \"Bench\"\n[[region]]\ncode = \"R1\"\nname = \"Region\"\n\
         [[system]]\ncode = \"S1\"\nname = \"System\"\nregion = \"R1\"\n",
    );
    for i in 0..providers {
        t.push_str(&format!(
            "[[provider]]\ncode = \"B{i:04}\"\nname = \"Bench provider {i}\"\nsystem = \"S1\"\nkind = \"acute\"\n"
        ));
    }
    t
}

/// The i-th report of a provider: the current hour, revision i, values drifting like a real acute trust's.
pub(crate) fn next_report(code: &str, sim: &mut SimProvider, revision: u32, narrative: String) -> Report {
    let now = Timestamp::now();
    let (values, opel) = sim.step(0.05);
    Report {
        provider: code.to_owned(),
        period: Some(now.hour_start()),
        revision,
        observed_at: Some(now),
        values: values.into_iter().map(|(k, v)| (k, v.into())).collect(),
        opel_level: Some(opel),
        narrative: Some(narrative),
        source: Some("sitrep bench".into()),
        ..Default::default()
    }
}

struct Phase {
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
}

impl Phase {
    fn new(seconds: u64) -> Self {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs(1);
        Phase { start, measure_from, measure_until: measure_from + Duration::from_secs(seconds) }
    }

    fn measuring(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.measure_until
    }
}

/// The raw baseline's writes: a report's values into its state hash, its history entry, and its event, as one
/// minimal script over one multiplexed connection. The gRPC floor ([`floor`]) makes the same writes.
#[derive(Clone)]
struct RawWrites {
    conn: redis::aio::MultiplexedConnection,
    script: Arc<redis::Script>,
    prefix: Arc<str>,
}

impl RawWrites {
    const SCRIPT: &str = r"
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'd', ARGV[2])
return 1
";

    /// Connects; `tag` keeps each phase's keys apart (`{bench-<tag>-<pid>}:`).
    async fn connect(url: &str, tag: &str) -> anyhow::Result<RawWrites> {
        let conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        let prefix = format!("{{bench-{tag}-{}}}:", std::process::id()).into();
        Ok(RawWrites { conn, script: Arc::new(redis::Script::new(Self::SCRIPT)), prefix })
    }

    /// Writes one report of `provider` (its period in milliseconds, its revision, its numeric values); false if
    /// Redis refused.
    async fn write<'a>(
        &self,
        provider: &str,
        period_ms: i64,
        revision: u32,
        values: impl Iterator<Item = (&'a str, f64)>,
    ) -> bool {
        let prefix = &self.prefix;
        let values: Vec<(&str, f64)> = values.collect();
        let mut entry = String::new();
        for (metric, x) in &values {
            entry.push_str(&format!("{metric}={x};"));
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{prefix}state:{provider}"))
            .key(format!("{prefix}hist:{provider}"))
            .key(format!("{prefix}events"))
            .arg(format!("{period_ms}:{revision}"))
            .arg(&entry);
        for (metric, x) in &values {
            invocation.arg(*metric).arg(*x);
        }
        invocation.invoke_async::<i64>(&mut self.conn.clone()).await.is_ok()
    }
}

/// Redis's CPU seconds and its command count so far.
struct RedisMark {
    cpu: Option<f64>,
    calls: Option<u64>,
}

async fn redis_mark(url: &str, pid: Option<u32>) -> RedisMark {
    let calls = async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await.ok()?;
        Some(info.lines().filter_map(cmdstat_calls).sum::<u64>())
    };
    RedisMark { cpu: pid.and_then(process_usage).map(|(cpu, _)| cpu), calls: calls.await }
}

/// The `calls=` of one `cmdstat_` line of `INFO commandstats`.
fn cmdstat_calls(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("cmdstat_")?;
    rest.split([':', ',']).find_map(|kv| kv.strip_prefix("calls=")).and_then(|n| n.parse().ok())
}

/// Redis's CPU per report and commands per report between two marks (`-1` for the INFO call of the second mark).
fn redis_line(a: &RedisMark, b: &RedisMark, reports: u64) -> String {
    let reports = reports.max(1) as f64;
    let cpu = match (a.cpu, b.cpu) {
        (Some(x), Some(y)) => format!("{:.1} µs CPU", (y - x) * 1e6 / reports),
        _ => "CPU unavailable".into(),
    };
    let calls = match (a.calls, b.calls) {
        (Some(x), Some(y)) => format!("{:.1} commands", (y.saturating_sub(x + 1)) as f64 / reports),
        _ => "commands unavailable".into(),
    };
    format!("{cpu}, {calls} per report")
}

/// Runs `work` from P tasks for the phase's window (each task calls it in a loop until the window closes) and
/// returns (latency samples within the window, operations within the window, all operations). The clock starts
/// when every task is ready.
async fn run_phase<F, Fut>(p: usize, seconds: u64, work: F) -> (Phase, Samples, u64, u64)
where
    F: Fn(usize, u32) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let phase = Arc::new(std::sync::OnceLock::<Phase>::new());
    let barrier = Arc::new(tokio::sync::Barrier::new(p + 1));
    let mut tasks = Vec::new();
    for i in 0..p {
        let (phase, barrier, work) = (phase.clone(), barrier.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let phase = phase.get().expect("set before the barrier opens");
            let (mut samples, mut counted, mut all, mut n) = (Samples::default(), 0u64, 0u64, 0u32);
            while Instant::now() < phase.measure_until {
                n += 1;
                let t = Instant::now();
                if work(i, n).await {
                    all += 1;
                    if phase.measuring(t) {
                        counted += 1;
                        samples.0.push(t.elapsed().as_micros() as u64);
                    }
                }
            }
            (samples, counted, all)
        }));
    }
    let _ = phase.set(Phase::new(seconds));
    barrier.wait().await;
    let (mut samples, mut counted, mut all) = (Samples::default(), 0, 0);
    for t in tasks {
        if let Ok((s, c, a)) = t.await {
            samples.0.extend(s.0);
            counted += c;
            all += a;
        }
    }
    (Arc::into_inner(phase).and_then(|p| p.into_inner()).expect("set"), samples, counted, all)
}

/// The hidden `bench-floor` command: the gRPC floor's server (see [`floor`]).
pub async fn floor(redis_url: &str) -> anyhow::Result<()> {
    floor::serve(redis_url).await
}

/// One provider stream per code, each on its own connection to `url`: the report sender and the acks.
type Link = (mpsc::Sender<pb::StatusReport>, tonic::Streaming<pb::ReportAck>);

async fn connect_providers(url: &str, n: usize, tls: &TlsArgs) -> anyhow::Result<Vec<Link>> {
    let mut links = Vec::new();
    for _ in 0..n {
        let channel = crate::server::connect_now(url, tls).await?;
        let mut client = ProviderServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(4);
        let acks = client.report(ReceiverStream::new(rx)).await?.into_inner();
        links.push((tx, acks));
    }
    Ok(links)
}

/// Drives each link from its own task once `barrier` opens: the next report (the current hour, a new revision, its
/// send time in the narrative) when the previous one is acknowledged, until the phase's window closes. Each task
/// returns (ack latencies within the window, reports accepted within it, their values, all reports accepted).
fn spawn_providers(
    links: Vec<Link>,
    codes: &[String],
    start: &Arc<std::sync::OnceLock<Phase>>,
    barrier: &Arc<tokio::sync::Barrier>,
    traced: Option<f64>,
) -> Vec<tokio::task::JoinHandle<(Samples, u64, u64, u64)>> {
    let mut provider_tasks = Vec::new();
    for (i, (tx, mut acks)) in links.into_iter().enumerate() {
        let (code, start, barrier) = (codes[i].clone(), start.clone(), barrier.clone());
        provider_tasks.push(tokio::spawn(async move {
            let mut sim = SimProvider::new(&code, ProviderKind::Acute, i as u64);
            let mut rng = otlp_sink::Rng::new(i as u64);
            barrier.wait().await;
            let phase = start.get().expect("set before the barrier opens");
            let (mut samples, mut accepted, mut values, mut all) = (Samples::default(), 0u64, 0u64, 0u64);
            let mut revision = 0u32;
            while Instant::now() < phase.measure_until {
                revision += 1;
                let t = Instant::now();
                let narrative = t.duration_since(phase.start).as_micros().to_string();
                let report = next_report(&code, &mut sim, revision, narrative);
                let n = report.values.len() as u64 + 1;
                let mut wire = report_to_wire(&report);
                if let Some(ratio) = traced {
                    wire.traceparent = otlp_sink::traceparent(&mut rng, ratio);
                }
                if tx.send(wire).await.is_err() {
                    break;
                }
                let Ok(Some(ack)) = acks.message().await else { break };
                if ack.outcome() == Outcome::Accepted {
                    all += 1;
                    if phase.measuring(t) {
                        accepted += 1;
                        values += n;
                        samples.0.push(t.elapsed().as_micros() as u64);
                    }
                }
            }
            (samples, accepted, values, all)
        }));
    }
    provider_tasks
}

/// Sums what [`spawn_providers`]' tasks returned.
async fn join_providers(
    tasks: Vec<tokio::task::JoinHandle<(Samples, u64, u64, u64)>>,
) -> anyhow::Result<(Samples, u64, u64, u64)> {
    let (mut samples, mut accepted, mut values, mut all) = (Samples::default(), 0, 0, 0);
    for t in tasks {
        let (s, a, v, n) = t.await?;
        samples.0.extend(s.0);
        accepted += a;
        values += v;
        all += n;
    }
    Ok((samples, accepted, values, all))
}

/// What one measured window of provider streams gave: the streams' results (see [`spawn_providers`]), and the CPU
/// of the server and of this process, and Redis's marks, at its edges.
struct Window {
    acks: Samples,
    accepted: u64,
    values: u64,
    all: u64,
    /// CPU seconds within the window, and peak resident memory (bytes) at its end, of the server.
    server_cpu: Option<f64>,
    server_peak: Option<u64>,
    /// CPU seconds within the window of this process (the load generator).
    own_cpu: Option<f64>,
    redis: (RedisMark, RedisMark),
}

/// Opens `barrier` (the provider tasks, and any other tasks waiting on it, start) with a phase of `seconds`, reads
/// the server's (`server_pid`) and this process's CPU at the window's edges and Redis's marks around it, and
/// collects the provider tasks.
async fn measure(
    start: &std::sync::OnceLock<Phase>,
    barrier: &tokio::sync::Barrier,
    seconds: u64,
    server_pid: u32,
    tasks: Vec<tokio::task::JoinHandle<(Samples, u64, u64, u64)>>,
    url: &str,
    redis_pid: Option<u32>,
) -> anyhow::Result<Window> {
    let redis_before = redis_mark(url, redis_pid).await;
    let _ = start.set(Phase::new(seconds));
    barrier.wait().await;
    let phase = start.get().expect("just set");
    tokio::time::sleep_until(tokio::time::Instant::from_std(phase.measure_from)).await;
    let (server_start, own_start) = (process_usage(server_pid), process_usage(std::process::id()));
    tokio::time::sleep_until(tokio::time::Instant::from_std(phase.measure_until)).await;
    let (server_end, own_end) = (process_usage(server_pid), process_usage(std::process::id()));
    let (acks, accepted, values, all) = join_providers(tasks).await?;
    let redis_after = redis_mark(url, redis_pid).await;
    let cpu = |a: Option<(f64, u64)>, b: Option<(f64, u64)>| Some(b?.0 - a?.0);
    Ok(Window {
        acks,
        accepted,
        values,
        all,
        server_cpu: cpu(server_start, server_end),
        server_peak: server_end.map(|(_, hwm)| hwm),
        own_cpu: cpu(own_start, own_end),
        redis: (redis_before, redis_after),
    })
}

/// CPU per report, from the CPU seconds a process used over the reports.
fn cpu_per_report(cpu: Option<f64>, reports: u64) -> String {
    match cpu {
        Some(seconds) => format!("{:.1} µs", seconds * 1e6 / reports.max(1) as f64),
        None => "unavailable (no /proc)".into(),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.providers == 0 || args.seconds == 0 {
        bail!("--providers and --seconds must be at least 1");
    }
    if args.tls && args.scenario != Scenario::Hot {
        bail!("--tls applies to --scenario hot");
    }
    match args.scenario {
        Scenario::Hot => hot(args).await,
        Scenario::Scale => scale::run(args.seconds).await,
        Scenario::Snapshot => snapshot::run(args).await,
        Scenario::Sse => sse::run(args).await,
        Scenario::History => history::run(args).await,
    }
}

async fn hot(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("sitrep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _cleanup = scopeguard(tmp.clone());
    let (redis_process, url) = bench_redis(&args)?;
    let redis_pid = redis_process.as_ref().and_then(|r| r.pid());
    let (config_path, client_tls) = hot_config(&tmp, &args)?;
    let directory = Arc::new(Directory::from_toml("bench directory", &directory_text(args.providers))?);
    let catalogue = Arc::new(sitrep_core::profile::nhs_england_catalogue());
    let rules = bench_rules(directory.clone())?;
    let codes: Arc<Vec<String>> = Arc::new(directory.providers().map(|p| p.code.clone()).collect());

    eprintln!("bench: starting the aggregator (sitrep serve --redis)");
    let sink = match args.otlp {
        Some(r) => Some(otlp_sink::start(r).await?),
        None => None,
    };
    let env = sink.as_ref().map(otlp_sink::Sink::env).unwrap_or_default();
    let server = Aggregator::start_env(&aggregator_binary(&args)?, Some(&url), &config_path, &env).await?;
    let server_pid = server.pid()?;
    let url_grpc = match args.tls {
        // The certificate names localhost; the aggregator listens on 127.0.0.1.
        true => format!("https://localhost:{}", server.addr.rsplit(':').next().unwrap_or_default()),
        false => format!("http://{}", server.addr),
    };

    // Every connection first: subscribers, each on its own connection following everything, then one stream per
    // provider. The clock starts once all are open.
    eprintln!("bench: connecting {} subscribers and {} provider streams", args.subscribers, args.providers);
    let start = Arc::new(std::sync::OnceLock::<Phase>::new());
    let mut streams = Vec::new();
    for _ in 0..args.subscribers {
        let channel = crate::server::connect_now(&url_grpc, &client_tls).await?;
        streams.push(
            light::subscribe(channel, pb::SubscribeRequest { heartbeat_seconds: 1, ..Default::default() }).await?,
        );
    }
    let links = connect_providers(&url_grpc, codes.len(), &client_tls).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(args.providers + args.subscribers + 1));
    let subscriber_tasks: Vec<_> =
        streams.into_iter().map(|stream| spawn_subscriber(stream, start.clone(), barrier.clone())).collect();
    let provider_tasks = spawn_providers(links, &codes, &start, &barrier, args.otlp);
    eprintln!(
        "bench: {} provider streams, {} subscribers, 1 s warm-up then {} s measured",
        args.providers, args.subscribers, args.seconds
    );
    let sitrep = measure(&start, &barrier, args.seconds, server_pid, provider_tasks, &url, redis_pid).await?;
    let mut delivery = Delivery::default();
    for t in subscriber_tasks {
        delivery.add(t.await?);
    }
    drop(server);

    let sims = Arc::new(
        codes
            .iter()
            .enumerate()
            .map(|(i, c)| tokio::sync::Mutex::new(SimProvider::new(c, ProviderKind::Acute, i as u64)))
            .collect(),
    );
    let bench = HotBench { providers: args.providers, seconds: args.seconds, url, redis_pid, codes, sims };
    let floor = bench.floor().await?;
    let raw = bench.raw().await?;
    let store = bench.store(rules, directory, catalogue).await?;
    print_hot(HotResults {
        args: &args,
        redis_started: redis_process.is_some(),
        spans: sink.as_ref().map(otlp_sink::Sink::spans),
        sitrep,
        delivery,
        floor,
        raw,
        store,
    });
    drop(redis_process);
    Ok(())
}

/// Writes the aggregator's configuration for the hot bench into `tmp` (its directory, and with `--tls` or
/// `--auth` the certificates or the principals and the bench's key); returns its path and how clients connect.
fn hot_config(tmp: &std::path::Path, args: &BenchArgs) -> anyhow::Result<(std::path::PathBuf, TlsArgs)> {
    let directory_path = tmp.join("directory.toml");
    std::fs::write(&directory_path, directory_text(args.providers))?;
    let config_path = tmp.join("sitrep.toml");
    let (tls_section, mut client_tls) = if args.tls { bench_certificates(tmp)? } else { Default::default() };
    let auth_section = match args.auth {
        false => String::new(),
        true => {
            let (key, sha256) = sitrep_server::auth::new_key();
            let principals = format!(
                "[[principal]]\nname = \"bench\"\nwrite = [\"*\"]\nread = [\"*\"]\n[[principal.key]]\nid = \"bench\"\nsha256 = \"{sha256}\"\n"
            );
            std::fs::write(tmp.join("principals.toml"), principals)?;
            std::fs::write(tmp.join("bench.key"), key)?;
            client_tls.key_file = Some(tmp.join("bench.key"));
            format!("[auth]\nprincipals = {:?}\n", tmp.join("principals.toml"))
        }
    };
    std::fs::write(
        &config_path,
        format!(
            "directory = {:?}\n[store]\nkey_prefix = \"bench-{}\"\n[subscribers]\nqueue_capacity = 65536\n\
             {auth_section}[limits]\nreports_per_provider_per_minute = 0\nmax_connections = 1000000\n{tls_section}",
            directory_path,
            std::process::id()
        ),
    )?;
    Ok((config_path, client_tls))
}

/// What the hot bench's subscribers saw: send-to-subscriber and receipt-to-subscriber times of the events sent in
/// the measured window, events delivered, resets.
#[derive(Default)]
struct Delivery {
    from_send: Samples,
    from_receipt: Samples,
    delivered: u64,
    resets: u64,
}

impl Delivery {
    fn add(&mut self, other: Delivery) {
        self.from_send.0.extend(other.from_send.0);
        self.from_receipt.0.extend(other.from_receipt.0);
        self.delivered += other.delivered;
        self.resets += other.resets;
    }
}

/// One subscriber of the hot bench: waits at `barrier`, then times the events it receives until heartbeats come
/// after the measured window.
fn spawn_subscriber(
    mut stream: tonic::Streaming<light::Update>,
    start: Arc<std::sync::OnceLock<Phase>>,
    barrier: Arc<tokio::sync::Barrier>,
) -> tokio::task::JoinHandle<Delivery> {
    tokio::spawn(async move {
        barrier.wait().await;
        let phase = start.get().expect("set before the barrier opens");
        let mut seen = Delivery::default();
        while let Ok(Ok(Some(u))) = tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            match u.kind {
                Some(light::Kind::Event(e)) => {
                    seen.delivered += 1;
                    let now = Instant::now();
                    if let Ok(sent_us) = e.narrative.parse::<u64>() {
                        let sent_at = phase.start + Duration::from_micros(sent_us);
                        if phase.measuring(sent_at) {
                            seen.from_send.0.push(now.duration_since(sent_at).as_micros() as u64);
                            // The aggregator stamps received_at (ms) on receipt, before storing: from then to
                            // here is publication plus delivery, on the same host clock.
                            if let Some(rcv) = &e.received_at {
                                let rcv_ms = sitrep_proto::convert::timestamp_from_wire(rcv).millis();
                                let now_ms = Timestamp::now().millis();
                                seen.from_receipt.0.push((now_ms - rcv_ms).max(0) as u64 * 1000);
                            }
                        }
                    }
                }
                Some(light::Kind::Reset(_)) => seen.resets += 1,
                Some(light::Kind::Heartbeat(_)) if Instant::now() > phase.measure_until + Duration::from_secs(2) => {
                    break;
                }
                _ => {}
            }
        }
        seen
    })
}

/// A baseline's numbers: latencies, reports counted in the window, all reports, and Redis's marks around it.
struct Baseline {
    samples: Samples,
    counted: u64,
    all: u64,
    redis: (RedisMark, RedisMark),
}

/// What the hot bench's comparison phases share: the providers, the window, Redis, and the providers' codes.
struct HotBench {
    providers: usize,
    seconds: u64,
    url: String,
    redis_pid: Option<u32>,
    codes: Arc<Vec<String>>,
    /// A simulator per provider, for the baselines' reports (the store baseline's continue from the raw one's).
    sims: Arc<Vec<tokio::sync::Mutex<SimProvider>>>,
}

impl HotBench {
    /// The gRPC floor: the same provider streams against a server that only decodes, makes the raw baseline's
    /// writes and acknowledges (no subscribers: it has none to serve).
    async fn floor(&self) -> anyhow::Result<Window> {
        eprintln!("bench: gRPC floor, {} provider streams against a server making only the raw writes", self.providers);
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.args(["bench-floor", "--redis", &self.url]);
        let floor_server = Aggregator::spawn(command).await?;
        let floor_pid = floor_server.pid()?;
        let floor_links =
            connect_providers(&format!("http://{}", floor_server.addr), self.codes.len(), &TlsArgs::default()).await?;
        let (floor_start, floor_barrier) =
            (Arc::new(std::sync::OnceLock::<Phase>::new()), Arc::new(tokio::sync::Barrier::new(self.providers + 1)));
        let floor_tasks = spawn_providers(floor_links, &self.codes, &floor_start, &floor_barrier, None);
        let (url, pid) = (&self.url, self.redis_pid);
        let floor = measure(&floor_start, &floor_barrier, self.seconds, floor_pid, floor_tasks, url, pid).await?;
        drop(floor_server);
        Ok(floor)
    }

    /// The raw baseline: the irreducible writes of the same reports, one minimal script per report.
    async fn raw(&self) -> anyhow::Result<Baseline> {
        eprintln!("bench: raw baseline, one minimal script per report from {} concurrent tasks", self.providers);
        let raw = RawWrites::connect(&self.url, "raw").await?;
        let before = redis_mark(&self.url, self.redis_pid).await;
        let (_, samples, counted, all) = run_phase(self.providers, self.seconds, {
            let (codes, sims, raw) = (self.codes.clone(), self.sims.clone(), raw.clone());
            move |i, n| {
                let (codes, sims, raw) = (codes.clone(), sims.clone(), raw.clone());
                async move {
                    let code = &codes[i];
                    let report = next_report(code, &mut *sims[i].lock().await, n, "baseline".into());
                    let values = report.values.iter().filter_map(|(metric, v)| match v.value {
                        Some(sitrep_core::Value::Number(x)) => Some((metric.as_str(), x)),
                        _ => None,
                    });
                    raw.write(code, report.period.map_or(0, |p| p.millis()), n, values).await
                }
            }
        })
        .await;
        let after = redis_mark(&self.url, self.redis_pid).await;
        Ok(Baseline { samples, counted, all, redis: (before, after) })
    }

    /// The store baseline: `RedisStore::apply` with the bench's rules, no gRPC.
    async fn store(
        &self,
        rules: Rules,
        directory: Arc<Directory>,
        catalogue: Arc<sitrep_core::Catalogue>,
    ) -> anyhow::Result<Baseline> {
        eprintln!("bench: store baseline, RedisStore::apply from {} concurrent tasks", self.providers);
        let store = Arc::new(
            RedisStore::connect(RedisOptions {
                url: self.url.clone(),
                key_prefix: format!("bench-store-{}", std::process::id()),
                rules,
                ..Default::default()
            })
            .await?,
        );
        let before = redis_mark(&self.url, self.redis_pid).await;
        let (_, samples, counted, all) = run_phase(self.providers, self.seconds, {
            let (codes, sims) = (self.codes.clone(), self.sims.clone());
            move |i, n| {
                let (codes, sims, store, directory, catalogue) =
                    (codes.clone(), sims.clone(), store.clone(), directory.clone(), catalogue.clone());
                async move {
                    let report = next_report(&codes[i], &mut *sims[i].lock().await, n, "baseline".into());
                    let Ok(valid) = validate(&report, &directory, &catalogue, &Limits::default(), Timestamp::now())
                    else {
                        return false;
                    };
                    matches!(store.apply(&valid, Timestamp::now()).await, Ok(sitrep_store::Applied::Accepted(_)))
                }
            }
        })
        .await;
        let after = redis_mark(&self.url, self.redis_pid).await;
        Ok(Baseline { samples, counted, all, redis: (before, after) })
    }
}

/// Everything the hot bench measured, for [`print_hot`].
struct HotResults<'a> {
    args: &'a BenchArgs,
    redis_started: bool,
    /// Spans the bench's OTLP sink received, when tracing was on.
    spans: Option<u64>,
    sitrep: Window,
    delivery: Delivery,
    floor: Window,
    raw: Baseline,
    store: Baseline,
}

/// The machine's cores and CPU model, as /proc/cpuinfo names it.
fn machine_line() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{} cores; {model}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}

fn print_hot(r: HotResults<'_>) {
    let HotResults { args, redis_started, spans, sitrep, delivery, floor, raw, store } = r;
    let Window { acks: ack_samples, accepted, values, all, server_cpu, server_peak, own_cpu, redis } = sitrep;
    let window = args.seconds as f64;
    let server_cpu = cpu_per_report(server_cpu, accepted);
    let peak = server_peak.map_or("unavailable".into(), |hwm| format!("{:.1} MiB", hwm as f64 / 1048576.0));
    // The load generator (this process: its provider streams and subscribers) shares the machine with the aggregator
    // and Redis; its CPU per report says how much of the machine the measurement itself takes.
    let own_per_report = cpu_per_report(own_cpu, accepted);
    let rate = accepted as f64 / window;
    let raw_rate = raw.counted as f64 / window;
    let store_rate = store.counted as f64 / window;
    println!(
        "sitrep bench: {} provider streams, {} subscribers, {} s measured, Redis {}",
        args.providers,
        args.subscribers,
        args.seconds,
        if redis_started { "started by the bench (AOF everysec)" } else { "given" }
    );
    println!("  machine: {}", machine_line());
    println!(
        "  sitrep (gRPC stream -> validate -> plan -> Redis script -> ack; Hub folds -> subscribers){}",
        if args.tls { ", over TLS 1.3" } else { ", plaintext" }
    );
    if let Some(ratio) = args.otlp {
        println!("    traced: OpenTelemetry on, OTLP/gRPC to the bench's sink, sampling {ratio} of reports");
    }
    println!("    reports accepted     {rate:>10.0} /s");
    println!("    metric values        {:>10.0} /s", values as f64 / window);
    println!("    ack latency          {}", ack_samples.summary());
    println!("    send -> subscriber   {}", delivery.from_send.summary());
    println!("    receipt -> subscriber {} (ms clock)", delivery.from_receipt.summary());
    println!(
        "    events delivered     {} to {} subscribers ({} resets)",
        delivery.delivered, args.subscribers, delivery.resets
    );
    println!("    aggregator CPU       {server_cpu} per report");
    println!("    load generator CPU   {own_per_report} per report (this process: provider streams and subscribers)");
    println!("    aggregator peak RSS  {peak}");
    if let (Some(spans), Some(ratio)) = (spans, args.otlp) {
        println!(
            "    traces               {spans} spans exported to the bench's OTLP sink (sampling {ratio}, all phases)"
        );
    }
    println!("    redis                {}", redis_line(&redis.0, &redis.1, all));
    println!(
        "  gRPC floor (the same streams; a server that decodes, makes the raw writes and acknowledges; nothing else)"
    );
    println!("    reports acknowledged {:>10.0} /s", floor.accepted as f64 / window);
    println!("    server CPU           {} per report", cpu_per_report(floor.server_cpu, floor.accepted));
    println!("    load generator CPU   {} per report", cpu_per_report(floor.own_cpu, floor.accepted));
    println!("    redis                {}", redis_line(&floor.redis.0, &floor.redis.1, floor.all));
    let floor_rate = floor.accepted as f64 / window;
    println!("    ack latency          {}", floor.acks.summary());
    println!(
        "  raw baseline (one minimal script per report: state hash, history entry, stream entry; {} tasks)",
        args.providers
    );
    println!("    reports written      {raw_rate:>10.0} /s");
    println!("    write latency        {}", raw.samples.summary());
    println!("    redis                {}", redis_line(&raw.redis.0, &raw.redis.1, raw.all));
    println!("  store baseline (RedisStore::apply with the bench's rules, no gRPC; {} tasks)", args.providers);
    println!("    reports applied      {store_rate:>10.0} /s");
    println!("    apply latency        {}", store.samples.summary());
    println!("    redis                {}", redis_line(&store.redis.0, &store.redis.1, store.all));
    println!(
        "  sitrep sustains {:.2}x the raw baseline's rate ({:.2}x the gRPC floor's, {:.2}x the store baseline's); \
         the gRPC floor {:.2}x the raw baseline's",
        rate / raw_rate.max(1e-9),
        rate / floor_rate.max(1e-9),
        rate / store_rate.max(1e-9),
        floor_rate / raw_rate.max(1e-9)
    );
}

/// The bench's subscribers: real gRPC subscriptions that decode of each update only what the bench times (an event's
/// narrative, which carries the send time, and its receipt time) and skip the rest of it unread. The load generator
/// shares the machine with the aggregator; decoding every event in full took it more CPU than the aggregator took to
/// make and send them. A wallboard decodes everything, on its own machine.
mod light {
    use sitrep_proto::v1 as pb;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Update {
        #[prost(oneof = "Kind", tags = "2, 3, 4")]
        pub kind: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "2")]
        Event(Event),
        #[prost(message, tag = "3")]
        Heartbeat(Empty),
        #[prost(message, tag = "4")]
        Reset(Empty),
    }

    /// `sitrep.v1.Event`'s receipt time and narrative.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(message, optional, tag = "7")]
        pub received_at: Option<prost_types::Timestamp>,
        #[prost(string, tag = "10")]
        pub narrative: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}

    /// `SubscriberService/Subscribe`, decoded as [`Update`].
    pub async fn subscribe(
        channel: crate::server::Conn,
        request: pb::SubscribeRequest,
    ) -> anyhow::Result<tonic::Streaming<Update>> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/sitrep.v1.SubscriberService/Subscribe");
        let codec = tonic_prost::ProstCodec::<pb::SubscribeRequest, Update>::default();
        Ok(grpc.server_streaming(tonic::Request::new(request), path, codec).await?.into_inner())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use prost::Message;

        /// The light messages read what `sitrep.v1.Update` writes (their tags are copied from the contract).
        #[test]
        fn light_updates_read_the_contract() {
            let update = |kind| pb::Update { kind: Some(kind) }.encode_to_vec();
            let received_at = Some(prost_types::Timestamp { seconds: 1_795_788_000, nanos: 5_000_000 });
            let event =
                pb::Event { narrative: "12345".into(), received_at, provider: "RJ7".into(), ..Default::default() };
            let Some(Kind::Event(e)) = Update::decode(&update(pb::update::Kind::Event(event))[..]).unwrap().kind else {
                panic!("an event")
            };
            assert_eq!((e.narrative.as_str(), e.received_at), ("12345", received_at));
            let heartbeat = pb::update::Kind::Heartbeat(pb::Heartbeat { cursor: "c".into(), ..Default::default() });
            assert!(matches!(Update::decode(&update(heartbeat)[..]).unwrap().kind, Some(Kind::Heartbeat(_))));
            let reset = pb::update::Kind::Reset(pb::Reset { message: "m".into(), ..Default::default() });
            assert!(matches!(Update::decode(&update(reset)[..]).unwrap().kind, Some(Kind::Reset(_))));
        }
    }
}

/// A CA and a certificate for `localhost` in `dir`: the aggregator's `[tls]` section, and the clients' trust.
fn bench_certificates(dir: &std::path::Path) -> anyhow::Result<(String, TlsArgs)> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    std::fs::write(dir.join("ca.pem"), AsRef::<rcgen::Certificate>::as_ref(&ca).pem())?;
    let section = format!("[tls]\ncert = {:?}\nkey = {:?}\n", dir.join("cert.pem"), dir.join("key.pem"));
    Ok((section, TlsArgs { ca: Some(dir.join("ca.pem")), ..Default::default() }))
}

/// Removes a directory when dropped.
pub(crate) fn scopeguard(dir: std::path::PathBuf) -> impl Drop {
    struct Guard(std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    Guard(dir)
}
