//! `sitrep bench --scenario history`: what an hour of a provider's history costs Redis.
//!
//! It writes `--hours` of hourly reports (one revision an hour, the simulator's 24 values, a narrative and a source)
//! for `--providers` providers through the store, and reads what Redis says it holds: `MEMORY USAGE` of every
//! provider's history hash (there is no index), and the growth of `used_memory`, each divided by
//! the provider-hours written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_core::{Directory, Limits, Report, Timestamp, validate};
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
    let now = Timestamp::now();
    // Every provider's first report (its live state) before counting: an hour of history is what is measured.
    let write = |hours: std::ops::Range<i64>| {
        let (store, codes, directory) = (store.clone(), codes.clone(), directory.clone());
        async move {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let (store, codes, directory, next, hours) =
                    (store.clone(), codes.clone(), directory.clone(), next.clone(), hours.clone());
                tasks.push(tokio::spawn(async move {
                    let catalogue = sitrep_core::profile::nhs_england_catalogue();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= codes.len() {
                            return Ok::<(), anyhow::Error>(());
                        }
                        let mut sim = SimProvider::new(&codes[i], ProviderKind::Acute, i as u64);
                        for h in hours.clone() {
                            let (values, opel) = sim.step(1.0);
                            let report = Report {
                                provider: codes[i].clone(),
                                period: Some(now.hour_start().add_hours(h - hours_kept)),
                                revision: 1,
                                observed_at: Some(
                                    now.hour_start().add_hours(h - hours_kept).add_millis(2_400_000).min(now),
                                ),
                                values: values.into_iter().map(|(k, v)| (k, v.into())).collect(),
                                opel_level: Some(opel),
                                narrative: Some("Bed meeting at 14:00; two wards closed for norovirus".into()),
                                source: Some("PAS export".into()),
                                ..Default::default()
                            };
                            let valid = validate(&report, &directory, &catalogue, &Limits::default(), now)
                                .map_err(|v| anyhow::anyhow!("{}", v[0]))?;
                            store.apply(&valid, now).await?;
                        }
                    }
                }));
            }
            for t in tasks {
                t.await??;
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    write(0..1).await?;
    let before = used_memory(&mut conn).await?;
    eprintln!("bench: writing {hours_kept} hours of history for {n} providers");
    write(1..hours_kept + 1).await?;
    let after = used_memory(&mut conn).await?;
    let mut keys_bytes = 0u64;
    for code in codes.iter() {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(format!("{{{prefix}}}:hist:{code}"))
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await?;
        keys_bytes += usage.unwrap_or(0);
    }
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
