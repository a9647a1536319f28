//! `sitrep bench`: a benchmark of the hot path, report in to subscriber out, against a real Redis.
//!
//! It starts its own `redis-server` (AOF, `appendfsync everysec`, as production is advised to run) unless given
//! one, and its own aggregator as a separate process (this same binary, `serve --redis`), so the aggregator's CPU
//! time and peak memory can be read from `/proc` without the load generator's. It then drives P provider streams,
//! each on its own connection, sending reports of about twenty metrics as fast as they are acknowledged, with S
//! subscribers attached, and measures for a fixed window. Each report's narrative carries its send time, so a
//! subscriber can tell how long the report took to reach it without any shared state.
//!
//! In the same run it measures a baseline: the same reports applied with `RedisStore::apply` (one `EVALSHA` of the
//! same Lua script per report, over one multiplexed redis-rs connection) from P concurrent tasks, with no gRPC and
//! no aggregator. The ratio of the two is sitrep's overhead over the Redis work it cannot avoid.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_core::{Directory, Limits, Report, Timestamp, validate};
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;
use sitrep_server::convert::report_to_wire;
use sitrep_store::redis::RedisProcess;
use sitrep_store::{RedisOptions, RedisStore, Store};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

#[derive(Args)]
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
}

/// Latency samples in microseconds.
#[derive(Default)]
struct Samples(Vec<u64>);

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

/// CPU seconds (user + system) and peak resident memory (bytes) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / hz, hwm_kb * 1024))
}

fn directory_text(providers: usize) -> String {
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
fn next_report(code: &str, sim: &mut SimProvider, revision: u32, narrative: String) -> Report {
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

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.providers == 0 || args.seconds == 0 {
        bail!("--providers and --seconds must be at least 1");
    }
    let tmp = std::env::temp_dir().join(format!("sitrep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _cleanup = scopeguard(tmp.clone());
    let (redis_process, url) = match &args.redis {
        Some(url) => (None, url.clone()),
        None => {
            eprintln!("bench: starting redis-server (AOF, appendfsync everysec)");
            let r = RedisProcess::start_with(&["--appendfsync", "everysec"]).context("starting redis-server")?;
            let url = r.url();
            (Some(r), url)
        }
    };
    let directory_path = tmp.join("directory.toml");
    std::fs::write(&directory_path, directory_text(args.providers))?;
    let config_path = tmp.join("sitrep.toml");
    std::fs::write(
        &config_path,
        format!(
            "directory = {:?}\n[store]\nkey_prefix = \"bench-{}\"\n[subscribers]\nqueue_capacity = 65536\n",
            directory_path,
            std::process::id()
        ),
    )?;
    let directory = Directory::from_toml("bench directory", &directory_text(args.providers))?;
    let codes: Vec<String> = directory.providers().map(|p| p.code.clone()).collect();

    eprintln!("bench: starting the aggregator (sitrep serve --redis)");
    let mut server = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &url, "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let server_pid = server.id().context("aggregator pid")?;
    let mut lines = tokio::io::BufReader::new(server.stdout.take().context("stdout")?).lines();
    let first = lines.next_line().await?.context("the aggregator printed nothing")?;
    let addr = first.strip_prefix("sitrep listening on ").context("unexpected aggregator output")?.to_owned();
    let url_grpc = format!("http://{addr}");

    // Subscribers, each on its own connection, each following everything.
    let phase = Arc::new(Phase::new(args.seconds));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut subscriber_tasks = Vec::new();
    for _ in 0..args.subscribers {
        let channel = Endpoint::from_shared(url_grpc.clone())?.connect().await?;
        let mut stream = SubscriberServiceClient::new(channel)
            .subscribe(pb::SubscribeRequest { heartbeat_seconds: 1, ..Default::default() })
            .await?
            .into_inner();
        let phase = phase.clone();
        subscriber_tasks.push(tokio::spawn(async move {
            let (mut samples, mut events, mut resets) = (Samples::default(), 0u64, 0u64);
            let mut from_receipt = Samples::default();
            while let Ok(Ok(Some(u))) = tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                match u.kind {
                    Some(pb::update::Kind::Event(e)) => {
                        events += 1;
                        let now = Instant::now();
                        if let Ok(sent_us) = e.narrative.parse::<u64>() {
                            let sent_at = phase.start + Duration::from_micros(sent_us);
                            if phase.measuring(sent_at) {
                                samples.0.push(now.duration_since(sent_at).as_micros() as u64);
                                // The aggregator stamps received_at (ms) on receipt, before storing: from then to
                                // here is publication plus delivery, on the same host clock.
                                if let Some(rcv) = &e.received_at {
                                    let rcv_ms = sitrep_server::convert::timestamp_from_wire(rcv).millis();
                                    let now_ms = Timestamp::now().millis();
                                    from_receipt.0.push((now_ms - rcv_ms).max(0) as u64 * 1000);
                                }
                            }
                        }
                    }
                    Some(pb::update::Kind::Reset(_)) => resets += 1,
                    Some(pb::update::Kind::Heartbeat(_))
                        if Instant::now() > phase.measure_until + Duration::from_secs(2) =>
                    {
                        break;
                    }
                    _ => {}
                }
            }
            (samples, from_receipt, events, resets)
        }));
    }

    eprintln!(
        "bench: {} provider streams, {} subscribers, 1 s warm-up then {} s measured",
        args.providers, args.subscribers, args.seconds
    );
    let mut cpu_start = None;
    let mut provider_tasks = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        let channel = Endpoint::from_shared(url_grpc.clone())?.connect().await?;
        let mut client = ProviderServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(4);
        let mut acks = client.report(ReceiverStream::new(rx)).await?.into_inner();
        let (code, phase, sent, stop) = (code.clone(), phase.clone(), sent.clone(), stop.clone());
        provider_tasks.push(tokio::spawn(async move {
            let mut sim = SimProvider::new(&code, ProviderKind::Acute, i as u64);
            let (mut samples, mut accepted, mut values) = (Samples::default(), 0u64, 0u64);
            let mut revision = 0u32;
            while Instant::now() < phase.measure_until && !stop.load(Ordering::Relaxed) {
                revision += 1;
                let t = Instant::now();
                let narrative = t.duration_since(phase.start).as_micros().to_string();
                let report = next_report(&code, &mut sim, revision, narrative);
                let n = report.values.len() as u64 + 1;
                if tx.send(report_to_wire(&report)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                let Ok(Some(ack)) = acks.message().await else { break };
                if ack.outcome() == Outcome::Accepted && phase.measuring(t) {
                    accepted += 1;
                    values += n;
                    samples.0.push(t.elapsed().as_micros() as u64);
                }
            }
            (samples, accepted, values)
        }));
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(phase.measure_from)).await;
    cpu_start = cpu_start.or(process_usage(server_pid));
    tokio::time::sleep_until(tokio::time::Instant::from_std(phase.measure_until)).await;
    let cpu_end = process_usage(server_pid);
    let redis_cpu = redis_process.as_ref().and_then(|r| r.pid()).and_then(process_usage);
    let (mut ack_samples, mut accepted, mut values) = (Samples::default(), 0, 0);
    for t in provider_tasks {
        let (s, a, v) = t.await?;
        ack_samples.0.extend(s.0);
        accepted += a;
        values += v;
    }
    let (mut delivery, mut publish, mut delivered, mut resets) = (Samples::default(), Samples::default(), 0, 0);
    for t in subscriber_tasks {
        let (s, p, e, r) = t.await?;
        delivery.0.extend(s.0);
        publish.0.extend(p.0);
        delivered += e;
        resets += r;
    }
    let window = args.seconds as f64;
    let (cpu_per_report, peak) = match (cpu_start, cpu_end) {
        (Some((c0, _)), Some((c1, hwm))) => (
            format!("{:.1} µs", (c1 - c0) * 1e6 / accepted.max(1) as f64),
            format!("{:.1} MiB", hwm as f64 / 1048576.0),
        ),
        _ => ("unavailable (no /proc)".into(), "unavailable".into()),
    };
    drop(server);

    // Baseline: the same Redis work without gRPC or the aggregator.
    eprintln!("bench: baseline, RedisStore::apply from {} concurrent tasks", args.providers);
    let store = Arc::new(
        RedisStore::connect(RedisOptions {
            url: url.clone(),
            key_prefix: format!("bench-baseline-{}", std::process::id()),
            ..Default::default()
        })
        .await?,
    );
    let catalogue = sitrep_core::profile::nhs_england_catalogue();
    let directory = Arc::new(directory);
    let catalogue = Arc::new(catalogue);
    let base_phase = Arc::new(Phase::new(args.seconds));
    let mut base_tasks = Vec::new();
    for (i, code) in codes.iter().enumerate() {
        let (store, code, phase, directory, catalogue) =
            (store.clone(), code.clone(), base_phase.clone(), directory.clone(), catalogue.clone());
        base_tasks.push(tokio::spawn(async move {
            let mut sim = SimProvider::new(&code, ProviderKind::Acute, i as u64);
            let (mut samples, mut accepted) = (Samples::default(), 0u64);
            let mut revision = 0u32;
            while Instant::now() < phase.measure_until {
                revision += 1;
                let t = Instant::now();
                let report = next_report(&code, &mut sim, revision, "baseline".into());
                let valid =
                    validate(&report, &directory, &catalogue, &Limits::default(), Timestamp::now()).expect("valid");
                if store.apply(&valid, Timestamp::now()).await.is_ok() && phase.measuring(t) {
                    accepted += 1;
                    samples.0.push(t.elapsed().as_micros() as u64);
                }
            }
            (samples, accepted)
        }));
    }
    let (mut base_samples, mut base_accepted) = (Samples::default(), 0);
    for t in base_tasks {
        let (s, a) = t.await?;
        base_samples.0.extend(s.0);
        base_accepted += a;
    }
    let redis_cpu_after = redis_process.as_ref().and_then(|r| r.pid()).and_then(process_usage);

    let rate = accepted as f64 / window;
    let base_rate = base_accepted as f64 / window;
    println!(
        "sitrep bench: {} provider streams, {} subscribers, {} s measured, Redis {}",
        args.providers,
        args.subscribers,
        args.seconds,
        if redis_process.is_some() { "started by the bench (AOF everysec)" } else { "given" }
    );
    println!(
        "  machine: {} cores; {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_owned()))
            .unwrap_or_default()
    );
    println!("  aggregator (gRPC stream -> validate -> Redis script -> ack; Hub -> subscribers)");
    println!("    reports accepted     {rate:>10.0} /s");
    println!("    metric values        {:>10.0} /s", values as f64 / window);
    println!("    ack latency          {}", ack_samples.summary());
    println!("    send -> subscriber   {}", delivery.summary());
    println!("    receipt -> subscriber {} (ms clock)", publish.summary());
    println!("    events delivered     {delivered} to {} subscribers ({} resets)", args.subscribers, resets);
    println!("    aggregator CPU       {cpu_per_report} per report");
    println!("    aggregator peak RSS  {peak}");
    if let (Some((r0, _)), Some((r1, _))) = (redis_cpu, redis_cpu_after) {
        println!("    (redis CPU over both phases: {:.1} s)", r1 - r0);
    }
    println!(
        "  baseline (RedisStore::apply: one EVALSHA per report, {} concurrent tasks, no gRPC, no aggregator)",
        args.providers
    );
    println!("    reports applied      {base_rate:>10.0} /s");
    println!("    apply latency        {}", base_samples.summary());
    println!("  overhead: the aggregator sustains {:.2}x the baseline's throughput", rate / base_rate.max(1e-9));
    drop(redis_process);
    Ok(())
}

/// Removes a directory when dropped.
fn scopeguard(dir: std::path::PathBuf) -> impl Drop {
    struct Guard(std::path::PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    Guard(dir)
}
