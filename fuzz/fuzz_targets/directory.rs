//! cargo-fuzz target `directory`: see `sitrep_fuzz::directory` for what it feeds and which properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitrep_fuzz::directory(data));
