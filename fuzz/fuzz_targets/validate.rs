//! cargo-fuzz target `validate`: see `sitrep_fuzz::validate` for what it feeds and which properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitrep_fuzz::validate(data));
