//! A temporary directory for the unit tests (`sitrep-feed-{name}-...`), removed with everything in it when dropped.

pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("sitrep-feed-{name}-")).tempdir().unwrap()
}
