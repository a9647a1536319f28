//! `sitrep simulate`: synthetic reports for the providers of the aggregator's own directory, read and sent by
//! `sitrep_client::sim` until stopped; this checks the arguments and prints a line of progress every ten seconds
//! and a summary at the end.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use sitrep_client::sim::{SimOptions, SimStats};
use tokio_util::sync::CancellationToken;

use crate::args::{ServerArg, connect};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep simulate                                # every provider, one simulated hour per 2 s\n  \
    sitrep simulate --providers 5 --seconds-per-hour 0.5 --backfill-hours 48\n\n\
    Simulated time starts --backfill-hours in the past and never runs ahead of real time; once caught up, each \
    tick sends a new revision of the current hour.")]
pub struct SimulateArgs {
    #[command(flatten)]
    server: ServerArg,
    /// How many providers to simulate, from the aggregator's directory in code order (0: all).
    #[arg(long, default_value_t = 0)]
    providers: usize,
    /// Real seconds per simulated hour.
    #[arg(long, default_value_t = 2.0)]
    seconds_per_hour: f64,
    /// Hours of history to fill in before reaching real time.
    #[arg(long, default_value_t = 24)]
    backfill_hours: i64,
    /// Seed of the synthetic values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub async fn simulate(args: SimulateArgs, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
    if args.seconds_per_hour.is_nan() || args.seconds_per_hour <= 0.0 {
        bail!("--seconds-per-hour must be positive, not {}", args.seconds_per_hour);
    }
    let channel = connect(&args.server)?;
    let providers = sitrep_client::sim::directory(channel.clone())
        .await
        .with_context(|| format!("cannot read the directory from {}", args.server.server))?;
    let options = SimOptions {
        providers: args.providers,
        seconds_per_hour: args.seconds_per_hour,
        backfill_hours: args.backfill_hours,
        seed: args.seed,
        ..Default::default()
    };
    let stats = Arc::new(SimStats::default());
    let progress = {
        let (stats, cancel) = (stats.clone(), cancel.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            every.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = every.tick() => tracing::info!("simulate: {}", stats.summary()),
                }
            }
        }
    };
    tokio::join!(sitrep_client::sim::run(channel, &providers, options, stats.clone(), cancel), progress);
    println!("simulate: {}", stats.summary());
    Ok(ExitCode::SUCCESS)
}
