//! How failures become gRPC statuses: one function per kind of failure, so every service answers alike.

use sitrep_core::Violation;
use sitrep_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `INVALID_ARGUMENT` with a `google.rpc.BadRequest` listing every violation (field, description, and the rule as
/// the violation's reason in SCREAMING_SNAKE_CASE).
pub fn invalid(violations: &[Violation]) -> Status {
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

/// Store failures: `UNAVAILABLE` (retryable; nothing was stored) or `INTERNAL`.
pub fn store(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable { .. } => Status::unavailable(format!("{e}; nothing was stored, retry later")),
        StoreError::Internal(_) => Status::internal(e.to_string()),
    }
}
