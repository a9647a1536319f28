//! The fuzz targets on the stable toolchain, without libFuzzer: for a bounded time per target, inputs made by
//! mutating seeds (the files under `fuzz/seeds/<target>/`, and any corpus `cargo fuzz` has grown under
//! `fuzz/corpus/<target>/`) and by splicing in tokens of the formats, each fed to the target. A panic (a failed
//! property or a crash in sitrep's code) is caught, its input written to `fuzz/artifacts/<target>/smoke-<hash>`,
//! and the run exits non-zero naming it. It is blind (no coverage feedback), so it finds less than libFuzzer in
//! the same time; it runs wherever the project builds.
//!
//! ```sh
//! cargo run --release --manifest-path fuzz/Cargo.toml --bin smoke -- --seconds 30          # every target
//! cargo run --release --manifest-path fuzz/Cargo.toml --bin smoke -- --seconds 60 csv json # some
//! cargo run --release --manifest-path fuzz/Cargo.toml --bin smoke -- --replay csv fuzz/artifacts/csv/smoke-...
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Tokens spliced into inputs: pieces of the formats the targets read, and awkward values.
const TOKENS: &[&str] = &[
    ",",
    ";",
    "\t",
    "\"",
    "\"\"",
    "\n",
    "\r\n",
    "\u{feff}",
    "provider",
    "period",
    "metric",
    "value",
    "narrative",
    "observed_at",
    "revision",
    "opel_level",
    "site",
    "unit",
    "not_applicable",
    "suppressed",
    "N/A",
    "RJ7",
    "RGT",
    "beds.cc_adult.open",
    "beds.cc_adult.occupied",
    "2026-11-27T14:00:00Z",
    "2026-03-29 01:30",
    "2026-10-25 01:30",
    "9999-12-31T23:59:59Z",
    "0000-01-01",
    "1e308",
    "-0",
    "NaN",
    "inf",
    "4294967296",
    "18446744073709551615",
    "{",
    "}",
    "[",
    "]",
    ":",
    "null",
    "true",
    "\"values\":{",
    "{\"absent\":\"masked\"}",
    "\"resourceType\":\"MeasureReport\"",
    "\"resourceType\":\"Bundle\",\"entry\":[{\"resource\":",
    "\"population\":[",
    "\"count\":",
    "\"_count\":",
    "\"group\":[",
    "\"period\":{\"start\":",
    "[[provider]]",
    "[[system]]",
    "[[region]]",
    "[nation]",
    "code = \"P\"",
    "cadence = \"",
    "grace = \"",
    "18446744073709551615s",
    "1000000years",
    "0s",
    "[staleness]",
    "[limits]",
    "[store]",
    "retention_hours = ",
    "encoding = \"",
    "windows-1252",
    "delimiter = \"",
    "timezone = \"",
    "Europe/London",
    "[columns]",
    "[absent]",
    "[fhir.populations]",
    "\0",
    "\u{0}",
    "\u{FFFD}",
    "£",
    "é",
];

/// A small, fast, seedable generator (xorshift64*), so a run is repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut data = match seeds.is_empty() {
        true => Vec::new(),
        false => seeds[rng.below(seeds.len())].clone(),
    };
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 if !data.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            3 | 4 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                data.splice(at..at, token.iter().copied());
            }
            5 if !seeds.is_empty() => {
                // Splice a piece of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let start = rng.below(other.len() + 1);
                let end = (start + rng.below(64)).min(other.len());
                data.splice(at..at, other[start..end].iter().copied());
            }
            _ => {
                // Repeat a piece (long fields, deep nesting, many rows).
                let start = rng.below(data.len() + 1);
                let end = (start + rng.below(32)).min(data.len());
                let piece = data[start..end].to_vec();
                for _ in 0..rng.below(64) {
                    data.splice(at..at, piece.iter().copied());
                }
            }
        }
    }
    data.truncate(max_len);
    data
}

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter(|e| e.path().is_file()).filter_map(|e| std::fs::read(e.path()).ok()).collect()
}

fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn main() -> std::process::ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let (mut seconds, mut seed, mut names, mut replay) = (10u64, 1u64, Vec::new(), None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds N"),
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()).expect("--seed N"),
            "--replay" => {
                let target = args.next().expect("--replay TARGET FILE");
                replay = Some((target, PathBuf::from(args.next().expect("--replay TARGET FILE"))));
            }
            name => names.push(name.to_owned()),
        }
    }
    let find = |name: &str| sitrep_fuzz::TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
    if let Some((target, file)) = replay {
        let f = find(&target).unwrap_or_else(|| panic!("no target {target}"));
        f(&std::fs::read(&file).expect("read the input"));
        println!("{target}: {} ran without a failure", file.display());
        return std::process::ExitCode::SUCCESS;
    }
    // Panics are reported once, by the driver, with the input saved.
    std::panic::set_hook(Box::new(|_| {}));
    let targets: Vec<_> = sitrep_fuzz::TARGETS
        .iter()
        .filter(|(n, _)| names.is_empty() || names.iter().any(|m| m == n))
        .copied()
        .collect();
    let mut failed = 0;
    for (name, target) in targets {
        let mut seeds = files(&root.join("seeds").join(name));
        seeds.extend(files(&root.join("corpus").join(name)));
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut runs = 0u64;
        let mut failure = None;
        while Instant::now() < deadline && failure.is_none() {
            let data = if runs < seeds.len() as u64 {
                seeds[runs as usize].clone()
            } else {
                mutate(&mut rng, &seeds, 64 << 10)
            };
            let outcome = std::panic::catch_unwind(|| target(&data));
            if let Err(panic) = outcome {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failure = Some((data, why));
            }
            runs += 1;
        }
        match failure {
            None => println!("{name:<14} {runs:>9} inputs in {seconds} s ({} seeds): no failure", seeds.len()),
            Some((data, why)) => {
                failed += 1;
                let dir = root.join("artifacts").join(name);
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("smoke-{:016x}", hash(&data)));
                let _ = std::fs::write(&path, &data);
                println!("{name:<14} FAILED after {runs} inputs: {why}\n    input saved to {}", path.display());
            }
        }
    }
    if failed > 0 { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
}
