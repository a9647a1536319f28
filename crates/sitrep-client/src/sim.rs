//! The simulator: synthetic providers from the directory streaming plausible reports to an aggregator over gRPC.
//!
//! Each provider is a task with its own `Report` stream on one shared HTTP/2 connection. Time runs on an
//! accelerated clock: it starts `backfill_hours` in the past and advances one simulated hour every
//! `seconds_per_hour` real seconds, so a fresh aggregator fills with a day of history within a minute. The clock
//! never runs ahead of real time (the aggregator rejects future periods); once caught up, each tick sends a new
//! revision of the current hour, so values keep drifting. A provider whose stream fails reconnects with backoff
//! and resends its unacknowledged report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_core::{Report, Timestamp};
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::query_service_client::QueryServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use sitrep_core::backoff::Backoff;
use sitrep_proto::convert::report_to_wire;

/// How the simulator behaves.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// How many providers to simulate, taken from the directory in code order; 0 means all.
    pub providers: usize,
    /// Real seconds per simulated hour.
    pub seconds_per_hour: f64,
    /// Hours of history to fill in before reaching real time.
    pub backfill_hours: i64,
    /// Seed for the synthetic values.
    pub seed: u64,
    /// The `source` every report names.
    pub source: String,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            providers: 0,
            seconds_per_hour: 2.0,
            backfill_hours: 24,
            seed: 1,
            source: "sitrep-simulate".into(),
        }
    }
}

/// Running totals, shared by every simulated provider.
#[derive(Debug, Default)]
pub struct SimStats {
    pub accepted: AtomicU64,
    pub duplicate: AtomicU64,
    pub rejected: AtomicU64,
    pub reconnects: AtomicU64,
}

impl SimStats {
    pub fn summary(&self) -> String {
        format!(
            "{} accepted, {} duplicate, {} rejected, {} reconnects",
            self.accepted.load(Ordering::Relaxed),
            self.duplicate.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed)
        )
    }
}

/// A provider to simulate: its code, and its kind, which decides which metrics it reports and at what size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedProvider {
    pub code: String,
    pub kind: ProviderKind,
}

/// The providers to simulate, in code order, as the aggregator's directory lists them
/// (`QueryService.GetDirectory`). A kind this client does not know is simulated as acute, so a newer aggregator's
/// directory can still be simulated.
pub async fn directory(channel: crate::credentials::AuthedChannel) -> Result<Vec<SimulatedProvider>, tonic::Status> {
    let directory = QueryServiceClient::new(channel).get_directory(pb::GetDirectoryRequest {}).await?.into_inner();
    let kind = |text: &str| ProviderKind::parse(text).unwrap_or(ProviderKind::Acute);
    Ok(directory.providers.iter().map(|p| SimulatedProvider { code: p.code.clone(), kind: kind(&p.kind) }).collect())
}

/// Runs simulated providers (usually the directory's, in code order) against `channel` until `cancel` fires.
pub async fn run(
    channel: crate::credentials::AuthedChannel,
    directory: &[SimulatedProvider],
    options: SimOptions,
    stats: Arc<SimStats>,
    cancel: CancellationToken,
) {
    let count = if options.providers == 0 { usize::MAX } else { options.providers };
    let providers: Vec<_> = directory.iter().take(count).collect();
    if options.providers > providers.len() {
        tracing::warn!(
            asked = options.providers,
            available = providers.len(),
            "the directory has fewer providers than asked for"
        );
    }
    tracing::info!(
        providers = providers.len(),
        seconds_per_hour = options.seconds_per_hour,
        backfill_hours = options.backfill_hours,
        "simulating"
    );
    let start_real = tokio::time::Instant::now();
    let start_sim = Timestamp::now().hour_start().add_hours(-options.backfill_hours);
    let speed = 3600.0 / options.seconds_per_hour.max(0.001);
    let tick = Duration::from_secs_f64(options.seconds_per_hour.max(0.001));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, SimulatedProvider { code, kind }) in providers.iter().enumerate() {
        let mut sim = SimProvider::new(code, *kind, options.seed);
        let client = ProviderServiceClient::new(channel.clone());
        let (code, source, stats, cancel) = (code.clone(), options.source.clone(), stats.clone(), cancel.clone());
        // Spread providers across the tick so reports arrive steadily rather than in bursts.
        let phase = tick.mul_f64(i as f64 / providers.len().max(1) as f64);
        tasks.spawn(async move {
            let mut feed = Feed { client, stream: None, stats: stats.clone() };
            let mut interval = tokio::time::interval_at(start_real + phase, tick);
            let (mut last_period, mut revision, mut last_sim) = (None, 0u32, start_sim);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = interval.tick() => {}
                }
                let elapsed = start_real.elapsed().as_secs_f64() * speed;
                let sim_now =
                    Timestamp::from_millis(start_sim.millis() + (elapsed * 1000.0) as i64).min(Timestamp::now());
                let period = sim_now.hour_start();
                revision = if last_period == Some(period) { revision + 1 } else { 1 };
                last_period = Some(period);
                let hours = ((sim_now.millis() - last_sim.millis()) as f64 / 3_600_000.0).max(0.05);
                last_sim = sim_now;
                let (values, opel) = sim.step(hours);
                let report = Report {
                    provider: code.clone(),
                    period: Some(period),
                    revision,
                    observed_at: Some(sim_now),
                    values: values.into_iter().map(|(k, v)| (k, v.into())).collect(),
                    opel_level: Some(opel),
                    source: Some(source.clone()),
                    ..Default::default()
                };
                if !feed.send(report_to_wire(&report), &cancel).await {
                    break;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One provider's feed: a Report stream that is reopened when it fails.
struct Feed {
    client: ProviderServiceClient<crate::credentials::AuthedChannel>,
    stream: Option<(mpsc::Sender<pb::StatusReport>, tonic::Streaming<pb::ReportAck>)>,
    stats: Arc<SimStats>,
}

impl Feed {
    /// Sends a report and waits for its ack, reconnecting (and resending) until it is acked or `cancel` fires.
    /// Returns false if cancelled.
    async fn send(&mut self, report: pb::StatusReport, cancel: &CancellationToken) -> bool {
        let mut backoff = Backoff::default();
        loop {
            let attempt = async {
                if self.stream.is_none() {
                    let (tx, rx) = mpsc::channel(4);
                    let acks = self.client.report(ReceiverStream::new(rx)).await?.into_inner();
                    self.stream = Some((tx, acks));
                }
                let (tx, acks) = self.stream.as_mut().expect("just opened");
                tx.send(report.clone()).await.map_err(|_| tonic::Status::unavailable("stream closed"))?;
                acks.message().await?.ok_or_else(|| tonic::Status::unavailable("stream ended"))
            };
            let result = tokio::select! {
                _ = cancel.cancelled() => return false,
                r = attempt => r,
            };
            match result {
                Ok(ack) => {
                    match ack.outcome() {
                        Outcome::Accepted => self.stats.accepted.fetch_add(1, Ordering::Relaxed),
                        Outcome::Duplicate => self.stats.duplicate.fetch_add(1, Ordering::Relaxed),
                        _ => {
                            tracing::warn!(provider = %report.provider, message = %ack.message, "simulated report rejected");
                            self.stats.rejected.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    return true;
                }
                Err(status) => {
                    self.stream = None;
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    tracing::warn!(provider = %report.provider, %status, retry_in = ?delay, "report stream failed; reconnecting");
                    tokio::select! {
                        _ = cancel.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
