//! cargo-fuzz target `csv`: see `sitrep_fuzz::csv` for what it feeds and which properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitrep_fuzz::csv(data));
