//! `sitrep bench --scenario snapshot`: a picture of many providers (10,000 by default with `--providers 10000`).
//!
//! It fills a Redis with every provider's live state, starts replica A on it and keeps A ingesting from 20 provider
//! streams, then starts replica B and measures how long B takes to load and replay the log before it is ready, then
//! ten gRPC subscriptions to B: the time to the first part of the snapshot and to its last part, and B's memory
//! after them. Redis's slow log is read at the end: the longest command Redis ran while all this happened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_core::{Directory, Limits, Timestamp, validate};
use sitrep_proto::convert::report_to_wire;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;
use sitrep_store::{RedisOptions, RedisStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::{
    Aggregator, BenchArgs, Samples, aggregator_binary, bench_rules, directory_text, next_report, process_usage,
    scopeguard,
};

/// The HTTP status of `GET path` (0 if the request failed).
async fn http_status(addr: &str, path: &str) -> u16 {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return 0 };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).await.is_err() {
        return 0;
    }
    std::str::from_utf8(&head[9..12]).ok().and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Waits until the replica answers `/readyz` with 200, and says how long that took.
async fn until_ready(addr: &str, since: Instant) -> anyhow::Result<Duration> {
    let deadline = since + Duration::from_secs(120);
    while http_status(addr, "/readyz").await != 200 {
        if Instant::now() > deadline {
            bail!("the replica at {addr} was not ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(since.elapsed())
}

async fn redis_cmd<T: redis::FromRedisValue>(url: &str, args: &[&str]) -> anyhow::Result<T> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query_async(&mut conn).await?)
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let n = args.providers;
    let tmp = std::env::temp_dir().join(format!("sitrep-bench-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _cleanup = scopeguard(tmp.clone());
    let (redis_process, url) = super::bench_redis(&args)?;
    let prefix = format!("bench-snap-{}", std::process::id());
    let directory_path = tmp.join("directory.toml");
    std::fs::write(&directory_path, directory_text(n))?;
    let config_path = tmp.join("sitrep.toml");
    std::fs::write(
        &config_path,
        format!(
            "directory = {directory_path:?}\n[store]\nkey_prefix = \"{prefix}\"\n[subscribers]\nqueue_capacity = 65536\n\
             [limits]\nreports_per_provider_per_minute = 0\nmax_connections = 1000000\n"
        ),
    )?;
    let directory = Arc::new(Directory::from_toml("bench directory", &directory_text(n))?);
    let rules = bench_rules(directory.clone())?;
    let codes: Arc<Vec<String>> = Arc::new(directory.providers().map(|p| p.code.clone()).collect());

    // Every provider live: one report each, through the store (group-committed).
    eprintln!("bench: filling Redis with {n} live providers");
    let store = Arc::new(
        RedisStore::connect(RedisOptions { url: url.clone(), key_prefix: prefix.clone(), rules, ..Default::default() })
            .await?,
    );
    let started = Instant::now();
    fill(store, &codes, &directory).await?;
    let fill = started.elapsed();

    let binary = aggregator_binary(&args)?;
    let since = Instant::now();
    let a = Aggregator::start(&binary, Some(&url), &config_path).await?;
    let a_ready = until_ready(&a.addr, since).await?;

    let ingest = Ingest::start(&a.addr, &codes).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _: String = redis_cmd(&url, &["CONFIG", "SET", "slowlog-log-slower-than", "1000"]).await?;
    let _: String = redis_cmd(&url, &["SLOWLOG", "RESET"]).await?;
    let ingested_before = ingest.ingested.load(Ordering::Relaxed);
    let ingest_started = Instant::now();

    eprintln!("bench: starting replica B while A ingests");
    let since = Instant::now();
    let b = Aggregator::start(&binary, Some(&url), &config_path).await?;
    let b_listening = since.elapsed();
    let b_ready = until_ready(&b.addr, since).await?;
    let b_pid = b.pid()?;

    let snapshots = Snapshots::take(&b.addr, 10).await?;
    let b_memory = process_usage(b_pid);
    let ingest_rate =
        (ingest.ingested.load(Ordering::Relaxed) - ingested_before) as f64 / ingest_started.elapsed().as_secs_f64();
    ingest.stop().await;
    let slow = SlowLog::read(&url).await?;
    let rss =
        |m: Option<(f64, u64)>| m.map_or("unavailable".into(), |(_, hwm)| format!("{:.1} MiB", hwm as f64 / 1048576.0));
    let current_rss =
        super::status_kb(b_pid, "VmRSS:").map_or("unavailable".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0));
    drop(a);
    drop(b);

    println!(
        "sitrep bench --scenario snapshot: {n} providers, Redis {}",
        if redis_process.is_some() { "started by the bench (AOF everysec)" } else { "given" }
    );
    println!("  filling Redis            {n} live providers in {:.1} s", fill.as_secs_f64());
    println!("  replica A ready          {:.0} ms after it started (load and replay)", a_ready.as_secs_f64() * 1e3);
    println!("  while A ingests          {ingest_rate:.0} reports/s from 20 streams");
    println!(
        "  replica B                listening after {:.0} ms, ready after {:.0} ms",
        b_listening.as_secs_f64() * 1e3,
        b_ready.as_secs_f64() * 1e3
    );
    let Snapshots { first, all, providers_seen, parts } = snapshots;
    println!("  ten snapshots from B     {providers_seen} providers in {parts} parts each");
    println!("    first part             {}", first.summary());
    println!("    whole snapshot         {}", all.summary());
    println!("  replica B memory         peak {} (now {current_rss})", rss(b_memory));
    slow.print();
    drop(redis_process);
    Ok(())
}

/// Makes every provider live: one report each, applied through `store` (group-committed) from 50 tasks.
async fn fill(store: Arc<RedisStore>, codes: &Arc<Vec<String>>, directory: &Arc<Directory>) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut fillers = Vec::new();
    for _ in 0..50 {
        let (store, codes, next, directory) = (store.clone(), codes.clone(), next.clone(), directory.clone());
        fillers.push(tokio::spawn(async move {
            let catalogue = sitrep_core::profile::nhs_england_catalogue();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= codes.len() {
                    return Ok::<(), anyhow::Error>(());
                }
                let mut sim = SimProvider::new(&codes[i], ProviderKind::Acute, i as u64);
                let report = next_report(&codes[i], &mut sim, 1, "fill".into());
                let valid = validate(&report, &directory, &catalogue, &Limits::default(), Timestamp::now())
                    .map_err(|v| anyhow::anyhow!("{}", v[0]))?;
                store.apply(&valid, Timestamp::now()).await?;
            }
        }));
    }
    for f in fillers {
        f.await??;
    }
    Ok(())
}

/// Replica A kept ingesting: 20 streams of new revisions for random providers, counting the accepted ones.
struct Ingest {
    stop: Arc<AtomicBool>,
    ingested: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Ingest {
    async fn start(addr: &str, codes: &Arc<Vec<String>>) -> anyhow::Result<Ingest> {
        let stop = Arc::new(AtomicBool::new(false));
        let ingested = Arc::new(AtomicU64::new(0));
        // One counter for every stream, so each report is a later revision than any before it and moves live state
        // (per-stream counters made many reports late or duplicates, which the rate then counted).
        let revisions = Arc::new(AtomicU32::new(1));
        let mut tasks = Vec::new();
        for s in 0..20usize {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
            let (tx, rx) = mpsc::channel(4);
            let mut acks = ProviderServiceClient::new(channel).report(ReceiverStream::new(rx)).await?.into_inner();
            let (codes, stop, ingested, revisions) = (codes.clone(), stop.clone(), ingested.clone(), revisions.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = s;
                while !stop.load(Ordering::Relaxed) {
                    let revision = revisions.fetch_add(1, Ordering::Relaxed) + 1;
                    i = (i * 7919 + 13) % codes.len();
                    let mut sim = SimProvider::new(&codes[i], ProviderKind::Acute, u64::from(revision));
                    let report = next_report(&codes[i], &mut sim, revision, "ingest".into());
                    if tx.send(report_to_wire(&report)).await.is_err() {
                        break;
                    }
                    let Ok(Some(ack)) = acks.message().await else { break };
                    if ack.outcome() == Outcome::Accepted {
                        ingested.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Ingest { stop, ingested, tasks })
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Times of whole snapshots taken from a replica: to the first part, to the last, and their size.
struct Snapshots {
    first: Samples,
    all: Samples,
    providers_seen: usize,
    parts: usize,
}

impl Snapshots {
    /// Subscribes to the replica at `addr` `times` times, each on a new connection, reading the snapshot through.
    async fn take(addr: &str, times: usize) -> anyhow::Result<Snapshots> {
        let (mut first, mut all) = (Samples::default(), Samples::default());
        let mut providers_seen = 0usize;
        let mut parts = 0usize;
        for _ in 0..times {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
            let t = Instant::now();
            let mut stream = SubscriberServiceClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .subscribe(pb::SubscribeRequest::default())
                .await?
                .into_inner();
            let (mut seen, mut got_first) = (0usize, false);
            parts = 0;
            while let Some(u) = stream.message().await? {
                if let Some(pb::update::Kind::Snapshot(s)) = u.kind {
                    if !got_first {
                        first.0.push(t.elapsed().as_micros() as u64);
                        got_first = true;
                    }
                    seen += s.providers.len();
                    parts += 1;
                    if !s.more {
                        all.0.push(t.elapsed().as_micros() as u64);
                        break;
                    }
                }
            }
            providers_seen = seen;
        }
        Ok(Snapshots { first, all, providers_seen, parts })
    }
}

/// What Redis's slow log (commands over 1 ms) recorded: the longest command, and how many took over 1 and 10 ms.
struct SlowLog {
    longest: Option<(u64, String)>,
    over_1ms: usize,
    over_10ms: usize,
}

impl SlowLog {
    async fn read(url: &str) -> anyhow::Result<SlowLog> {
        let slowlog: redis::Value = redis_cmd(url, &["SLOWLOG", "GET", "1000"]).await?;
        let mut longest: Option<(u64, String)> = None;
        let (mut over_1ms, mut over_10ms) = (0, 0);
        // The slow log's entries are written out here: each is [id, time, µs, [command, args...], ...], and only
        // the third and the command's first two words are wanted.
        if let redis::Value::Array(entries) = slowlog {
            for e in entries {
                let redis::Value::Array(fields) = e else { continue };
                let Some(redis::Value::Int(us)) = fields.get(2) else { continue };
                let name = match fields.get(3) {
                    Some(redis::Value::Array(a)) => a
                        .iter()
                        .take(2)
                        .filter_map(|v| match v {
                            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).chars().take(40).collect()),
                            _ => None,
                        })
                        .collect::<Vec<String>>()
                        .join(" "),
                    _ => String::new(),
                };
                over_1ms += 1;
                over_10ms += usize::from(*us >= 10_000);
                if longest.as_ref().is_none_or(|(l, _)| *us as u64 > *l) {
                    longest = Some((*us as u64, name));
                }
            }
        }
        Ok(SlowLog { longest, over_1ms, over_10ms })
    }

    fn print(&self) {
        let SlowLog { longest, over_1ms, over_10ms } = self;
        match longest {
            Some((us, name)) => {
                println!(
                    "  longest Redis command    {:.2} ms ({name}); {over_1ms} commands took over 1 ms, {over_10ms} over 10 ms (the slow log)",
                    *us as f64 / 1e3
                )
            }
            None => {
                println!(
                    "  longest Redis command    under 1 ms (the slow log, which records commands over 1 ms, is empty)"
                )
            }
        }
    }
}
