//! What a failed call means, told apart by whoever made the connection: only the caller knows its transport (the
//! TLS errors it can meet, the address as the person gave it), so this crate asks it through [`Diagnose`] rather
//! than guessing from a `tonic::Status`. Every client that retries (the feed agent's sender, [`crate::follow`])
//! decides with the same three answers: give up, a connection closed unanswered, or a passing fault.

use std::time::Duration;

/// What a failed call means for a client that retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Retrying cannot help until someone changes the settings (not sitrep there, a TLS handshake that fails).
    Configuration,
    /// The connection closed before any answer: an aggregator going down, or something that is not sitrep.
    Closed,
    /// Down, unreachable, or the aggregator's own answer: retried.
    Passing,
}

/// A failed call, told apart: what it means, and a sentence saying so (naming the address).
pub struct Diagnosis {
    pub failure: Failure,
    pub message: String,
}

/// How the caller's transport tells failed calls apart (it knows its TLS errors and its addresses).
pub trait Diagnose: Send + Sync {
    fn diagnose(&self, status: &tonic::Status) -> Diagnosis;
    /// The status given to a call that did not answer within `after`.
    fn no_answer(&self, after: Duration) -> tonic::Status;
}
