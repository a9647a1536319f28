//! cargo-fuzz target `server_config`: see `sitrep_fuzz::server_config` for what it feeds and which properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitrep_fuzz::server_config(data));
