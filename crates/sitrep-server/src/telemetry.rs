//! The aggregator's side of tracing: the axum middleware that gives every gRPC call its server span, and the
//! delivery span named by the server's [`Transport`]. Everything else (the exporter, propagation, the report, store
//! and fold spans) is `sitrep-telemetry`'s, shared with the clients; what the server's modules use is re-exported
//! here so that they ask one place for their spans. Setting tracing up (`from_env`) is the binary's business.

use sitrep_core::Event;
pub use sitrep_telemetry::{
    enabled, fold_span, record_outcome, report_span, sampled_context_of, store_span, validate_span,
};
use tracing::Span;

use crate::metrics::Transport;

/// One subscriber's delivery of one traced event, kind consumer (see `sitrep_telemetry::deliver_span`).
pub fn deliver_span(event: &Event, transport: Transport) -> Span {
    sitrep_telemetry::deliver_span(event, transport.label())
}

/// An axum middleware that gives every gRPC call a server span ([`sitrep_telemetry::rpc_span`]). The span lasts
/// until the answer's body ends (a stream's trailers carry its status). Off: the request goes straight through.
pub async fn rpc_layer(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if !enabled() {
        return next.run(request).await;
    }
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let Some((service, method)) = request.uri().path().strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return next.run(request).await;
    };
    if !grpc {
        return next.run(request).await;
    }
    let span = sitrep_telemetry::rpc_span(service, method, request.headers());
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    if let Some(code) = response.headers().get("grpc-status") {
        sitrep_telemetry::record_grpc_status(&span, code);
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::map_frame(body, move |frame| {
        if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
            sitrep_telemetry::record_grpc_status(&span, code);
        }
        frame
    });
    axum::response::Response::from_parts(parts, axum::body::Body::new(body))
}
