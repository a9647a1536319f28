//! The feed agent's error: what stops it, told apart so that the caller can say what to do. A report the
//! aggregator refuses is not an error here (it is set aside, see `rejected`), nor is an aggregator that is down
//! (the sender retries it).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder the agent needs cannot be read or written (a full disk, permissions): `what` it was doing.
    #[error("{what} {}: {error}", path.display())]
    Io { what: &'static str, path: PathBuf, error: std::io::Error },
    /// A file in the spool is not what the agent wrote there.
    #[error("{} is damaged: {error}", path.display())]
    Damaged { path: PathBuf, error: serde_json::Error },
    /// The settings cannot work: nothing to do, or an address where no sitrep aggregator answers. Retrying will
    /// not help until someone changes them.
    #[error("{0}")]
    Configuration(String),
    /// A blocking task doing the agent's file work panicked or was cancelled (the runtime is going away).
    #[error("the agent's file work stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |error| Error::Io { what, path, error }
    }
}

/// The result of a blocking task that returns the agent's own result.
pub(crate) fn joined<T>(r: Result<Result<T, Error>, tokio::task::JoinError>) -> Result<T, Error> {
    r?
}
