//! cargo-fuzz target `mapping`: see `sitrep_fuzz::mapping` for what it feeds and which properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitrep_fuzz::mapping(data));
