//! What the watcher and the sender share: the spool, the rejected folder, how files are read (the mapping and
//! format), and the signal that something was spooled. Reading a file into the spool (`ingest`) lives here, used
//! by the watcher and by the one-shot files given on the command line.
//!
//! Everything here does blocking file work: async callers run it on a blocking thread.

use std::io::Read as _;
use std::path::PathBuf;

use sitrep_core::Timestamp;
use sitrep_core::input::{self, Format, Mapping};
use tokio::sync::Notify;

use crate::error::Error;
use crate::rejected::{Original, Rejected};
use crate::spool::{Appended, Spool, file_key};

/// A file given on the command line, or standard input (`-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

pub(crate) struct Agent {
    pub spool: Spool,
    pub rejected: Rejected,
    mapping: Mapping,
    format: Option<Format>,
    /// Notified when an entry is spooled, so that an idle sender wakes.
    pub spooled: Notify,
}

/// Why a file was not spooled: it cannot be read as reports (set it aside), or the spool cannot take it (leave
/// it where it is and try again).
pub(crate) enum IngestError {
    Invalid(String),
    Spool(Error),
}

impl Agent {
    pub fn new(spool: Spool, rejected: Rejected, mapping: Mapping, format: Option<Format>) -> Agent {
        Agent { spool, rejected, mapping, format, spooled: Notify::new() }
    }

    /// Reads one file into the spool, durably; returns how many reports it queued (0 for this very file, spooled
    /// before). `identity` tells this file from another with the same content (its name and modification time),
    /// so that an identical export an hour later is sent, while the same file found again after a crash is not.
    pub fn ingest(&self, name: &str, identity: &str, bytes: &[u8]) -> Result<usize, IngestError> {
        let key = file_key(bytes, identity);
        if self.spool.knows(&key) {
            tracing::info!("{name}: already spooled; not sending it twice");
            return Ok(0);
        }
        // Decoded by the mapping's encoding, size-capped, every error naming the line.
        let read = input::read_bytes(name, bytes, self.format, &self.mapping, Timestamp::now())
            .map_err(|e| IngestError::Invalid(e.to_string()))?;
        for note in &read.notes {
            tracing::info!("note: {note}");
        }
        match self.spool.append(name, &key, read.reports).map_err(IngestError::Spool)? {
            Appended::AlreadySpooled => {
                tracing::info!("{name}: already spooled; not sending it twice");
                Ok(0)
            }
            Appended::Queued(n) => {
                self.spooled.notify_one();
                Ok(n)
            }
        }
    }

    /// Spools the files given on the command line, all before anything is sent, so a crash loses none of them.
    /// Returns whether any was set aside as unreadable.
    pub fn ingest_inputs(&self, inputs: &[Input]) -> Result<bool, Error> {
        let mut set_aside = false;
        for input in inputs {
            // What tells this file from the same content sent another time: its modification time (standard
            // input is always new).
            let (name, identity, bytes) = match input {
                Input::Stdin => {
                    let mut buf = Vec::new();
                    std::io::stdin().read_to_end(&mut buf).map_err(Error::io("cannot read", "standard input"))?;
                    ("stdin".to_owned(), format!("stdin/{}", Timestamp::now().millis()), buf)
                }
                Input::File(file) => {
                    let bytes = std::fs::read(file).map_err(Error::io("cannot read", file))?;
                    let modified = std::fs::metadata(file)
                        .and_then(|m| m.modified())
                        .map(|m| m.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos())
                        .unwrap_or_default();
                    let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    (name.clone(), format!("{name}/{modified}"), bytes)
                }
            };
            match self.ingest(&name, &identity, &bytes) {
                Ok(n) => tracing::info!("{name}: {n} report(s) spooled"),
                Err(IngestError::Invalid(why)) => {
                    // The file stays where it is (it was given, not dropped): a copy is set aside with its reason.
                    let target = self
                        .rejected
                        .file(&name, Original::Read(&bytes), &why)
                        .map_err(Error::io("cannot set aside", self.rejected.dir().join(&name)))?;
                    tracing::warn!("rejected {name}: {why} (moved to {})", target.display());
                    set_aside = true;
                }
                Err(IngestError::Spool(e)) => return Err(e),
            }
        }
        Ok(set_aside)
    }
}
