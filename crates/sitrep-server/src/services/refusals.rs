//! tonic's own refusals of a caller's gRPC message, reworded: the one place sitrep edits a status it did not make.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use tonic::Status;

/// tonic refuses some messages before sitrep's handlers see them, in its own words: one over the decoder's size
/// limit (OUT_OF_RANGE) and a frame that is not gRPC's (INTERNAL). Both are the caller's message at fault, so the
/// answer is INVALID_ARGUMENT, naming the setting the limit comes from, wherever the status travels (the headers
/// of a trailers-only answer, or the trailers). The Report stream says the same itself; gRPC-Web answers, whose
/// trailers travel in the body, keep tonic's words.
pub async fn name_refusals(response: Response) -> Response {
    let grpc = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == b"application/grpc");
    if !grpc {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    rename_refusal(&mut parts.headers);
    let body = http_body_util::BodyExt::map_frame(body, |frame| match frame.into_trailers() {
        Ok(mut trailers) => {
            rename_refusal(&mut trailers);
            http_body::Frame::trailers(trailers)
        }
        Err(frame) => frame,
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

fn rename_refusal(headers: &mut HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else { return };
    let message = status.message();
    let reason = match status.code() {
        tonic::Code::OutOfRange if message.contains("decoded message length too large") => {
            format!("{message} (the aggregator's limits.max_message_bytes)")
        }
        tonic::Code::Internal if message.starts_with("protocol error") => format!("not a gRPC message: {message}"),
        _ => return,
    };
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if Status::invalid_argument(reason).add_header(headers).is_err() {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tonic's own refusals of a caller's message become INVALID_ARGUMENT; other statuses are left alone.
    #[test]
    fn refusals_of_the_callers_message_are_invalid_argument() {
        let renamed = |status: Status| {
            let mut headers = HeaderMap::new();
            status.add_header(&mut headers).unwrap();
            rename_refusal(&mut headers);
            Status::from_header_map(&headers).unwrap()
        };
        let big = renamed(Status::out_of_range("Error, decoded message length too large: found 9 bytes"));
        assert_eq!(big.code(), tonic::Code::InvalidArgument);
        assert!(big.message().ends_with("(the aggregator's limits.max_message_bytes)"), "{}", big.message());
        let frame = renamed(Status::internal("protocol error: received message with invalid compression flag: 2"));
        assert_eq!(frame.code(), tonic::Code::InvalidArgument);
        assert!(frame.message().starts_with("not a gRPC message"), "{}", frame.message());
        let other = renamed(Status::internal("the store failed"));
        assert_eq!((other.code(), other.message()), (tonic::Code::Internal, "the store failed"));
    }
}
