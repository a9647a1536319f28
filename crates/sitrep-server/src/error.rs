//! The server's one error type, [`Error`], and its two answers: a gRPC `Status` and an HTTP status with a JSON body.
//!
//! Everything below the transports (authorisation, mutual aid, the context's reads and filters, limits, sessions,
//! views, request conversions) fails with an `Error`: what went wrong, as a [`Kind`] a caller can act on, and a
//! sentence naming the field, rule and value. The transports each turn it into their own answer in exactly one
//! place: `impl From<Error> for Status` here (gRPC), and [`Error::http`] (HTTP), so a failure reads the same on
//! every surface and no module below them knows which transport it serves. The kinds carry gRPC's codes
//! ([`Error::code`]) because the audit records refusals by them, whichever transport refused.

use std::time::Duration;

use axum::http::StatusCode;
use sitrep_core::Violation;
use sitrep_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Most violations listed in one answer. Status details travel in an HTTP/2 header, which peers cap (16 KiB by
/// default); a report with hundreds of bad values must still get a readable answer rather than a protocol error.
pub const MAX_LISTED_VIOLATIONS: usize = 25;

/// What kind of failure an [`Error`] is: what the caller can do about it.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// The request breaks rules: every violation (field, rule, description), at most [`MAX_LISTED_VIOLATIONS`].
    Invalid(Vec<Violation>),
    /// No credential, or one that is no good.
    Unauthenticated,
    /// A credential whose grant does not cover the request.
    PermissionDenied,
    /// The request names something that is not there.
    NotFound,
    /// A record is in another state than the request needs (the caller's picture is out of date), or the store's
    /// data is of another layout.
    Conflict,
    /// The caller is over a limit; `retry_after`, where known, says when there is room again.
    ResourceExhausted { retry_after: Option<Duration> },
    /// Retryable: the picture is not loaded yet, the store is unreachable, or the server is shutting down.
    Unavailable,
    /// A concurrency conflict the caller should retry.
    Aborted,
    /// A failure that is not the caller's.
    Internal,
}

/// A failure: its kind, and the sentence that explains it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    /// The request breaks rules: the summary names the first violation and counts the rest.
    pub fn invalid(violations: &[Violation]) -> Self {
        let violations = listed(violations);
        let message = match &violations[..] {
            [one] => one.description.clone(),
            [first, rest @ ..] => format!("{} (and {} more)", first.description, rest.len()),
            [] => "invalid request".to_owned(),
        };
        Error { kind: Kind::Invalid(violations), message }
    }

    /// One field of a request breaks `rule` (e.g. a subscriber's filter).
    pub fn invalid_field(field: &str, rule: &'static str, description: String) -> Self {
        Self::invalid(&[Violation { field: field.to_owned(), rule, description }])
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Kind::Unauthenticated, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(Kind::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, message)
    }

    pub fn resource_exhausted(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::new(Kind::ResourceExhausted { retry_after }, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    /// The picture is not loaded yet (start-up, or reloading after the log reset): retryable.
    pub fn not_ready() -> Self {
        Self::unavailable("sitrep has not caught up with its event log yet (is its store reachable?); retry shortly")
    }

    /// Store failures: unavailable (retryable) or internal. Nothing is acknowledged; if the store did take the
    /// report before failing to answer, the retry is acknowledged as a duplicate, so retrying is always safe.
    pub fn store(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } => {
                Self::unavailable(format!("{e}; the report was not acknowledged: retry it (retrying is always safe)"))
            }
            // ABORTED: a concurrency conflict the client should retry (gRPC's own meaning), never "store down".
            StoreError::Contention(_) => {
                Self::new(Kind::Aborted, format!("{e}; the report was not stored: retry it (retrying is always safe)"))
            }
            StoreError::Internal(_) | StoreError::UnknownCode(_) => Self::internal(e.to_string()),
            StoreError::Incompatible(_) => Self::conflict(e.to_string()),
        }
    }

    /// The violations, if the request broke rules.
    pub fn violations(&self) -> &[Violation] {
        match &self.kind {
            Kind::Invalid(v) => v,
            _ => &[],
        }
    }

    /// The gRPC code of this kind of failure.
    pub fn code(&self) -> Code {
        match self.kind {
            Kind::Invalid(_) => Code::InvalidArgument,
            Kind::Unauthenticated => Code::Unauthenticated,
            Kind::PermissionDenied => Code::PermissionDenied,
            Kind::NotFound => Code::NotFound,
            Kind::Conflict => Code::FailedPrecondition,
            Kind::ResourceExhausted { .. } => Code::ResourceExhausted,
            Kind::Unavailable => Code::Unavailable,
            Kind::Aborted => Code::Aborted,
            Kind::Internal => Code::Internal,
        }
    }

    /// The HTTP answer: a status code for the kind, and the JSON body `{"error": message, "violations": [{field,
    /// rule, description}]}` (the violations empty unless the request broke rules).
    pub fn http(&self) -> (StatusCode, serde_json::Value) {
        let code = match self.kind {
            Kind::Invalid(_) => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            // A record in another state than the action needs (mutual aid): the caller's picture is out of date.
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::PermissionDenied => StatusCode::FORBIDDEN,
            Kind::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Aborted | Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let violations: Vec<serde_json::Value> = self
            .violations()
            .iter()
            .map(|v| serde_json::json!({ "field": v.field, "rule": v.rule.to_lowercase(), "description": v.description }))
            .collect();
        (code, serde_json::json!({ "error": self.message, "violations": violations }))
    }

    /// The kind of refusal this is for the audit, and why, if it is one (see [`crate::audit::refusal_of`]).
    pub fn refusal(&self) -> Option<(&'static str, String)> {
        crate::audit::refusal_of(self.code(), &self.message)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::store(e)
    }
}

/// The one mapping to gRPC: the kind's code and the message; violations as a `google.rpc.BadRequest` (field,
/// description, and the rule as the violation's reason in SCREAMING_SNAKE_CASE); a limit's retry delay as a
/// `google.rpc.RetryInfo`.
impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        match e.kind {
            Kind::Invalid(violations) if !violations.is_empty() => {
                let fields: Vec<FieldViolation> = violations
                    .iter()
                    .map(|v| FieldViolation {
                        reason: v.rule.to_uppercase(),
                        ..FieldViolation::new(&v.field, &v.description)
                    })
                    .collect();
                Status::with_error_details(code, e.message, ErrorDetails::with_bad_request(fields))
            }
            Kind::ResourceExhausted { retry_after: Some(wait) } => {
                Status::with_error_details(code, e.message, ErrorDetails::with_retry_info(Some(wait)))
            }
            _ => Status::new(code, e.message),
        }
    }
}

/// The violations to list, at most [`MAX_LISTED_VIOLATIONS`], the last one saying how many more there were.
pub fn listed(violations: &[Violation]) -> Vec<Violation> {
    if violations.len() <= MAX_LISTED_VIOLATIONS {
        return violations.to_vec();
    }
    let mut out = violations[..MAX_LISTED_VIOLATIONS - 1].to_vec();
    out.push(Violation {
        field: "report".into(),
        rule: "more_violations",
        description: format!(
            "{} more violations not listed; fix the ones above and resend",
            violations.len() - out.len()
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_read_alike_on_grpc_and_http() {
        let e = Error::invalid_field("filter.regions[0]", "known_code", "region \"X\" is not known".into());
        let (code, body) = e.http();
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(body["violations"][0]["rule"], "known_code");
        assert_eq!(body["violations"][0]["field"], "filter.regions[0]");
        let status = Status::from(e);
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("a BadRequest");
        assert_eq!(bad.field_violations[0].reason, "KNOWN_CODE");
        assert_eq!(status.message(), "region \"X\" is not known");
    }

    #[test]
    fn a_limit_says_when_to_retry() {
        let status = Status::from(Error::resource_exhausted("over", Some(Duration::from_secs(2))));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.get_details_retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(2)));
        let (code, _) = Error::resource_exhausted("over", None).http();
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
    }
}
