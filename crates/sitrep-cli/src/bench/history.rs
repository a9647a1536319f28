//! `sitrep bench --scenario history`: what an hour of a provider's history costs Redis.
//!
//! It writes `--hours` of hourly reports (one revision an hour, the simulator's 24 values, a narrative and a source)
//! for `--providers` providers through the store, and reads what Redis says it holds: `MEMORY USAGE` of every
//! provider's history hash (there is no index), and the growth of `used_memory`, each divided by
//! the provider-hours written.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_core::{Catalogue, Directory, Limits, Report, Timestamp, validate};
use sitrep_store::{RedisOptions, RedisStore, Store};

use super::{BenchArgs, bench_rules, directory_text};

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let n = args.providers;
    let hours_kept = args.hours.max(1);
    let (redis_process, url) = super::bench_redis(&args)?;
    let directory = Arc::new(Directory::from_toml("bench directory", &directory_text(n))?);
    let rules = bench_rules(directory.clone())?;
    let prefix = format!("bench-hist-{}", std::process::id());
    let store = Arc::new(
        RedisStore::connect(RedisOptions { url: url.clone(), key_prefix: prefix.clone(), rules, ..Default::default() })
            .await?,
    );
    let client = redis::Client::open(url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let codes: Arc<Vec<String>> = Arc::new(directory.providers().map(|p| p.code.clone()).collect());
    let writer = Writer { store, codes: codes.clone(), directory, now: Timestamp::now(), hours_kept };
    // Every provider's first report (its live state) before counting: an hour of history is what is measured.
    writer.write(0..1).await?;
    let before = used_memory(&mut conn).await?;
    eprintln!("bench: writing {hours_kept} hours of history for {n} providers");
    writer.write(1..hours_kept + 1).await?;
    let after = used_memory(&mut conn).await?;
    let keys_bytes = history_bytes(&mut conn, &prefix, &codes).await?;
    let provider_hours = (n as i64 * hours_kept) as f64;
    let written = (n as i64 * (hours_kept + 1)) as f64;
    println!("sitrep bench --scenario history: {n} providers, one report an hour for {hours_kept} hours");
    println!(
        "  history keys             {:.0} bytes per provider-hour (MEMORY USAGE of every provider's history hash, \
         over {written:.0} entries)",
        keys_bytes as f64 / written
    );
    println!(
        "  used_memory growth       {:.0} bytes per provider-hour (history, the event log's entries, live states)",
        after.saturating_sub(before) as f64 / provider_hours
    );
    drop(redis_process);
    Ok(())
}

/// `MEMORY USAGE` of every provider's history hash, summed.
async fn history_bytes(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    codes: &[String],
) -> anyhow::Result<u64> {
    let mut bytes = 0u64;
    for code in codes {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(format!("{{{prefix}}}:hist:{code}"))
            .arg("SAMPLES")
            .arg(0)
            .query_async(conn)
            .await?;
        bytes += usage.unwrap_or(0);
    }
    Ok(bytes)
}

/// Writes every provider's hourly reports through the store.
#[derive(Clone)]
struct Writer {
    store: Arc<RedisStore>,
    codes: Arc<Vec<String>>,
    directory: Arc<Directory>,
    now: Timestamp,
    /// Hour `h` of a write is the hour `hours_kept - h` before the current one.
    hours_kept: i64,
}

impl Writer {
    /// Writes the hours `hours` of every provider, 32 providers at a time.
    async fn write(&self, hours: Range<i64>) -> anyhow::Result<()> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (writer, next, hours) = (self.clone(), next.clone(), hours.clone());
            tasks.push(tokio::spawn(async move {
                let catalogue = sitrep_core::profile::nhs_england_catalogue();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= writer.codes.len() {
                        return Ok::<(), anyhow::Error>(());
                    }
                    writer.write_provider(i, hours.clone(), &catalogue).await?;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    }

    /// Writes the `i`th provider's reports for `hours`: one revision an hour, the simulator's values (seeded with
    /// `i`), a narrative and a source.
    async fn write_provider(&self, i: usize, hours: Range<i64>, catalogue: &Catalogue) -> anyhow::Result<()> {
        let mut sim = SimProvider::new(&self.codes[i], ProviderKind::Acute, i as u64);
        for h in hours {
            let (values, opel) = sim.step(1.0);
            let period = self.now.hour_start().add_hours(h - self.hours_kept);
            let report = Report {
                provider: self.codes[i].clone(),
                period: Some(period),
                revision: 1,
                observed_at: Some(period.add_millis(2_400_000).min(self.now)),
                values: values.into_iter().map(|(k, v)| (k, v.into())).collect(),
                opel_level: Some(opel),
                narrative: Some("Bed meeting at 14:00; two wards closed for norovirus".into()),
                source: Some("PAS export".into()),
                ..Default::default()
            };
            let valid = validate(&report, &self.directory, catalogue, &Limits::default(), self.now)
                .map_err(|v| anyhow::anyhow!("{}", v[0]))?;
            self.store.apply(&valid, self.now).await?;
        }
        Ok(())
    }
}
