//! How failures become gRPC statuses: one function per kind of failure, so every service answers alike.

use sitrep_core::Violation;
use sitrep_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Most violations listed in one answer. Status details travel in an HTTP/2 header, which peers cap (16 KiB by
/// default); a report with hundreds of bad values must still get a readable answer rather than a protocol error.
pub const MAX_LISTED_VIOLATIONS: usize = 25;

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

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` listing the violations (field, description, and the rule as
/// the violation's reason in SCREAMING_SNAKE_CASE), at most [`MAX_LISTED_VIOLATIONS`] of them.
pub fn invalid(violations: &[Violation]) -> Status {
    let violations = &listed(violations)[..];
    let summary = match violations {
        [one] => one.description.clone(),
        [first, rest @ ..] => format!("{} (and {} more)", first.description, rest.len()),
        [] => "invalid request".to_owned(),
    };
    let fields: Vec<FieldViolation> = violations
        .iter()
        .map(|v| FieldViolation { reason: v.rule.to_uppercase(), ..FieldViolation::new(&v.field, &v.description) })
        .collect();
    Status::with_error_details(Code::InvalidArgument, summary, ErrorDetails::with_bad_request(fields))
}

/// `INVALID_ARGUMENT` for one field of a request (e.g. a subscriber's filter).
pub fn invalid_field(field: &str, rule: &'static str, description: String) -> Status {
    invalid(&[Violation { field: field.to_owned(), rule, description }])
}

/// The picture is not loaded yet (start-up, or reloading after the log reset): `UNAVAILABLE`, retryable.
pub fn not_ready() -> Status {
    Status::unavailable("sitrep has not caught up with its event log yet (is its store reachable?); retry shortly")
}

/// Store failures: `UNAVAILABLE` (retryable) or `INTERNAL`. Nothing is acknowledged; if the store did take the
/// report before failing to answer, the retry is acknowledged as a duplicate, so retrying is always safe.
pub fn store(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable { .. } => {
            Status::unavailable(format!("{e}; the report was not acknowledged: retry it (retrying is always safe)"))
        }
        // ABORTED: a concurrency conflict the client should retry (gRPC's own meaning), never "store down".
        StoreError::Contention(_) => {
            Status::aborted(format!("{e}; the report was not stored: retry it (retrying is always safe)"))
        }
        StoreError::Internal(_) | StoreError::UnknownCode(_) => Status::internal(e.to_string()),
        StoreError::Incompatible(_) => Status::failed_precondition(e.to_string()),
    }
}
