//! cargo-fuzz target `fhir`: see `sitrep_fuzz::fhir` for what it feeds and which properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sitrep_fuzz::fhir(data));
