//! cargo-fuzz target `json`: see `sitrep_fuzz::json` for what it feeds and which properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitrep_fuzz::json(data));
