//! `sitrep bench --scenario scale`: does a report cost more when there are more providers?
//!
//! The embedded memory store and the picture, in-process, exactly as the aggregator runs them: each report is
//! validated, planned and persisted by `MemoryStore::apply`, and its event folded into a `Picture` (which computes
//! the rollups it changed). First with 50 providers, then with 10,000, every provider live (one report each first),
//! then reports round-robin across all of them, one at a time, for the window. The rates' ratio says whether the
//! cost of a report grows with the number of providers (it should not: nothing in the path looks at other
//! providers).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sitrep_core::directory::ProviderKind;
use sitrep_core::sim::SimProvider;
use sitrep_core::{Directory, Limits, Picture, Timestamp, validate};
use sitrep_store::{Applied, MemoryOptions, MemoryStore, Store};

use super::{bench_rules, directory_text, next_report};

/// Reports per second with `n` live providers.
async fn rate(n: usize, seconds: u64) -> anyhow::Result<f64> {
    let directory = Arc::new(Directory::from_toml("bench directory", &directory_text(n))?);
    let rules = bench_rules(directory.clone())?;
    let store = MemoryStore::new(MemoryOptions { rules: rules.clone(), ..Default::default() });
    let mut picture = Picture::new(rules.clone(), store.head().await?);
    let codes: Vec<String> = directory.providers().map(|p| p.code.clone()).collect();
    let mut sims: Vec<SimProvider> =
        codes.iter().enumerate().map(|(i, c)| SimProvider::new(c, ProviderKind::Acute, i as u64)).collect();
    let mut revisions = vec![0u32; n];
    let limits = Limits::default();
    let mut one = async |i: usize, picture: &mut Picture| {
        revisions[i] += 1;
        let report = next_report(&codes[i], &mut sims[i], revisions[i], "scale".into());
        let now = Timestamp::now();
        let valid = validate(&report, &rules.directory, &rules.catalogue, &limits, now).map_err(|v| {
            anyhow::anyhow!("the bench's report is invalid: {}", v.first().map(|v| v.to_string()).unwrap_or_default())
        })?;
        let applied = store.apply(&valid, now).await?;
        let Applied::Accepted(event) = applied else { anyhow::bail!("a new revision was a duplicate") };
        picture.apply(&event).context("folding")?;
        Ok::<(), anyhow::Error>(())
    };
    for i in 0..n {
        one(i, &mut picture).await?;
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut count = 0u64;
    while Instant::now() < until {
        for _ in 0..64 {
            one(count as usize % n, &mut picture).await?;
            count += 1;
        }
    }
    Ok(count as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for n in [50usize, 10_000] {
        eprintln!("bench: memory store and picture with {n} live providers, {seconds} s");
        rates.push((n, rate(n, seconds).await?));
    }
    println!("sitrep bench --scenario scale: memory store + picture fold, one report at a time, {seconds} s each");
    for (n, r) in &rates {
        println!("    {n:>6} live providers   {r:>10.0} reports/s");
    }
    println!("  with 10,000 providers the rate is {:.2}x the rate with 50", rates[1].1 / rates[0].1.max(1e-9));
    Ok(())
}
