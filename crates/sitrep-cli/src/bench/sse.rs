//! `sitrep bench --scenario sse`: many wallboards on Server-Sent Events.
//!
//! It starts an aggregator on the embedded store with the bench's directory, opens S (`--subscribers`) SSE
//! connections and waits for each to get its snapshot, and reads the aggregator's memory before and after: the
//! memory per idle subscriber. Then one provider stream sends 10 reports a second for the window; every
//! connection notes when each event arrives (the report's send time travels in its narrative), which gives the
//! delivery latency across all subscribers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_proto::convert::report_to_wire;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::{
    Aggregator, BenchArgs, Samples, aggregator_binary, directory_text, next_report, process_usage, scopeguard,
    status_kb,
};

/// Resident memory (VmRSS) of a process, in bytes.
fn rss(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// One SSE connection: waits for the snapshot (signalled on `ready`), then records, for each event whose
/// narrative is a send time, how long after `start` plus that time it arrived.
async fn subscriber(
    addr: String,
    start: Instant,
    ready: mpsc::Sender<()>,
    until: Arc<std::sync::OnceLock<Instant>>,
) -> anyhow::Result<Samples> {
    let mut s = tokio::net::TcpStream::connect(&addr).await?;
    let request = format!("GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut samples = Samples::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = Vec::new();
    let mut signalled = false;
    loop {
        let read = match until.get() {
            Some(end) => match tokio::time::timeout_at((*end).into(), s.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(samples),
            },
            None => s.read(&mut buf).await?,
        };
        if read == 0 {
            return Ok(samples);
        }
        let now = Instant::now();
        pending.extend_from_slice(&buf[..read]);
        if !signalled && pending.windows(15).any(|w| w == b"event: snapshot") {
            signalled = true;
            let _ = ready.send(()).await;
        }
        // Whole messages end with a blank line. An `event` message's JSON has "narrative":"<µs since start>"
        // (snapshots carry narratives too, of reports sent long before: they are not deliveries).
        let Some(end) = pending.windows(2).rposition(|w| w == b"\n\n") else { continue };
        let text = String::from_utf8_lossy(&pending[..end]);
        for message in text.split("\n\n").filter(|m| m.lines().any(|l| l == "event: event")) {
            let us = message.split("\"narrative\":\"").nth(1).and_then(|p| p.split('"').next()?.parse::<u64>().ok());
            if let Some(us) = us {
                let sent = start + Duration::from_micros(us);
                samples.0.push(now.saturating_duration_since(sent).as_micros() as u64);
            }
        }
        pending.drain(..end + 2);
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = std::env::temp_dir().join(format!("sitrep-bench-sse-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _cleanup = scopeguard(tmp.clone());
    let config_path = write_config(&tmp, args.providers)?;
    let server = Aggregator::start(&aggregator_binary(&args)?, None, &config_path).await?;
    let pid = server.pid()?;
    let addr = server.addr.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(pid);

    let s = args.subscribers.max(1);
    eprintln!("bench: opening {s} SSE subscribers");
    let start = Instant::now();
    let until = Arc::new(std::sync::OnceLock::new());
    let tasks = open_subscribers(&addr, s, start, &until).await?;
    let opened = start.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss(pid);

    let sent = send_reports(&addr, start, Duration::from_secs(args.seconds), pid).await?;
    let _ = until.set(Instant::now() + Duration::from_secs(3));
    let mut delivery = Samples::default();
    let mut finished = 0;
    for t in tasks {
        if let Ok(Ok(samples)) = t.await {
            finished += 1;
            delivery.0.extend(samples.0);
        }
    }
    let deliveries = delivery.0.len();
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("sitrep bench --scenario sse: {s} Server-Sent Events subscribers, memory store");
    println!("  opened                   {s} subscribers with their snapshots in {:.1} s", opened.as_secs_f64());
    if let (Some(b), Some(i)) = (before, idle) {
        println!(
            "  aggregator memory        {:.1} MiB before, {:.1} MiB with them idle: {:.1} KiB per idle subscriber",
            mib(b),
            mib(i),
            (i.saturating_sub(b)) as f64 / 1024.0 / s as f64
        );
    }
    println!(
        "  sent                     {} reports at 10/s; {deliveries} deliveries to {finished} subscribers",
        sent.reports
    );
    println!("  send -> subscriber       {}", delivery.summary());
    if let Some(cores) = sent.cores {
        println!(
            "  aggregator CPU           {cores:.2} cores while sending (the rest of the machine runs the subscribers)"
        );
    }
    drop(server);
    Ok(())
}

/// Writes the bench's directory of `providers` and an aggregator configuration using it into `tmp`, without rate
/// or connection limits; returns the configuration's path.
fn write_config(tmp: &std::path::Path, providers: usize) -> anyhow::Result<std::path::PathBuf> {
    let directory_path = tmp.join("directory.toml");
    std::fs::write(&directory_path, directory_text(providers))?;
    let config_path = tmp.join("sitrep.toml");
    std::fs::write(
        &config_path,
        format!(
            "directory = {directory_path:?}\n[limits]\nreports_per_provider_per_minute = 0\nmax_connections = 1000000\n"
        ),
    )?;
    Ok(config_path)
}

/// Opens `s` SSE subscribers to `addr` and waits until each has its snapshot; each runs until `until` is set
/// (and passed), returning its delivery latencies.
async fn open_subscribers(
    addr: &str,
    s: usize,
    start: Instant,
    until: &Arc<std::sync::OnceLock<Instant>>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<Samples>>>> {
    let (ready_tx, mut ready_rx) = mpsc::channel(s);
    let mut tasks = Vec::new();
    for _ in 0..s {
        let (addr, ready, until) = (addr.to_owned(), ready_tx.clone(), until.clone());
        tasks.push(tokio::spawn(subscriber(addr, start, ready, until)));
    }
    drop(ready_tx);
    for _ in 0..s {
        ready_rx.recv().await.context("a subscriber never got its snapshot")?;
    }
    Ok(tasks)
}

/// What one provider stream sent, and the aggregator's CPU (in cores) meanwhile, if it could be read.
struct Sent {
    reports: u32,
    cores: Option<f64>,
}

/// One provider stream to `addr`, 10 reports a second for `window`, each report's narrative its send time in
/// microseconds since `start` (the subscribers read it), each acknowledged before the next.
async fn send_reports(addr: &str, start: Instant, window: Duration, pid: u32) -> anyhow::Result<Sent> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let (tx, rx) = mpsc::channel(4);
    let mut acks = ProviderServiceClient::new(channel).report(ReceiverStream::new(rx)).await?.into_inner();
    let code = "B0000".to_owned();
    let mut sim = SimProvider::new(&code, ProviderKind::Acute, 1);
    let sending = Instant::now();
    let cpu_before = process_usage(pid);
    let mut sent = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while sending.elapsed() < window {
        tick.tick().await;
        sent += 1;
        let narrative = start.elapsed().as_micros().to_string();
        tx.send(report_to_wire(&next_report(&code, &mut sim, sent, narrative))).await?;
        acks.message().await?.context("no ack")?;
    }
    let cores = process_usage(pid)
        .zip(cpu_before)
        .map(|((after, _), (before, _))| (after - before) / sending.elapsed().as_secs_f64());
    Ok(Sent { reports: sent, cores })
}
