//! OpenTelemetry traces for the aggregator and its clients, off unless an OTLP endpoint is configured: the one
//! place that reads the standard `OTEL_*` variables, builds the exporter, and makes the spans every other module
//! asks for. A crate of its own because both ends trace (the feed agent's send span, the aggregator's report,
//! fold and deliver spans are one trace) and a client must not depend on the aggregator for it. It knows
//! `sitrep-core`'s [`Event`] and [`TraceContext`] and tonic's metadata, nothing of the server: the aggregator's
//! axum middleware around [`rpc_span`] stays in `sitrep-server`'s `telemetry`.
//!
//! **Off costs nothing measurable.** [`enabled`] is one relaxed atomic load; every span below is made only behind
//! it (otherwise [`tracing::Span::none`]), no trace context is extracted, formatted or stored, and the spans'
//! target ([`TARGET`]) is switched off for the log output, so the text and JSON logs never see them either.
//!
//! **On.** `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over gRPC, plaintext `http://`)
//! turns tracing on, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The SDK reads the rest itself:
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service is `sitrep-aggregator`, `sitrep-feed` or
//! `sitrep-cli` when neither names one), `OTEL_TRACES_SAMPLER` and `_ARG` (default: parent-based, always on), and
//! the batch processor's `OTEL_BSP_*`. Spans are batched on the SDK's own thread; [`Telemetry::shutdown`] flushes
//! them before the process exits, so a short run (`sitrep feed FILE`, `sitrep push`) loses none.
//!
//! **What a trace shows.** The feed agent (or `sitrep push`) starts a trace per report ([`send_span`], kind
//! producer) and sends its W3C `traceparent` in the call's metadata ([`inject`], from the client's `Bearer`
//! interceptor) and in the report itself (`StatusReport.traceparent`: a stream carries many reports, and metadata
//! is per call). The aggregator's RPC span ([`rpc_span`], kind server) continues the caller's trace; the report's
//! span ([`report_span`]) continues the report's own context, with `validate` and the store call ([`store_span`],
//! kind client, `db.system` = `redis` or `memory`) inside it. The report's trace context then travels with its
//! event (`Event::trace`; in Redis a field of the stream entry's event) to every replica, whose Hub folds it under
//! [`fold_span`] and whose sessions deliver it under [`deliver_span`] (kind consumer). A delivery is the processing
//! of one message with no context of its own (a subscription lives for days: no span to hang it under), so, as the
//! messaging conventions say for that case, the report's context is its **parent**, and also a **link**: the whole
//! journey is one trace, and tools that follow links find the report from the delivery too. Nothing a span
//! records is free text from a report: never the narrative, the source or a value.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sitrep_core::{Event, TraceContext};
use tonic::codegen::http::{HeaderMap, HeaderValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of every span made for OpenTelemetry: exported by the OpenTelemetry layer, switched off for
/// the log output.
pub const TARGET: &str = "sitrep_trace";

/// How long exiting waits for the last spans to be sent (a collector that is down must not hold a short
/// `sitrep feed FILE` run for the exporter's whole timeout).
pub const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether the sampler follows the parent's decision (the default, and every `parentbased_*` sampler): then a
/// report whose context says "not sampled" gets no spans at all, rather than spans the SDK would only drop.
static FOLLOWS_PARENT: AtomicBool = AtomicBool::new(true);

/// Whether traces are being exported: the check every span and every propagation step makes first.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Which program is tracing: its default `service.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Aggregator,
    Feed,
    Client,
}

impl Role {
    fn service_name(self) -> &'static str {
        match self {
            Role::Aggregator => "sitrep-aggregator",
            Role::Feed => "sitrep-feed",
            Role::Client => "sitrep-cli",
        }
    }
}

/// The tracer provider while tracing is on: shut it down (which flushes) before the process exits.
#[must_use = "shut it down before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends every span still batched and stops the exporter. Blocks (at most [`SHUTDOWN_WAIT`]) while the batch
    /// processor's thread exports, so it must not run on a current-thread runtime's only thread; the exporter's
    /// connection is driven by the runtime's worker threads, so call it before the runtime is dropped.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_WAIT) {
            eprintln!("warning: could not send the last trace spans: {e}");
        }
    }
}

/// The configuration read from the environment, when tracing is on.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    /// The variable that named the endpoint, and its value.
    endpoint: (&'static str, String),
}

/// Reads the `OTEL_*` switches from `var`: `Ok(None)` when tracing is off, an error naming the variable and value
/// when they are malformed.
fn settings(var: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, String> {
    let set = |name: &'static str| var(name).filter(|v| !v.trim().is_empty()).map(|v| (name, v.trim().to_owned()));
    if let Some((name, v)) = set("OTEL_SDK_DISABLED") {
        match v.to_ascii_lowercase().as_str() {
            "true" => return Ok(None),
            "false" => {}
            _ => return Err(format!("{name} = {v:?}: must be true or false")),
        }
    }
    if let Some((name, v)) = set("OTEL_TRACES_EXPORTER") {
        match v.as_str() {
            "none" => return Ok(None),
            "otlp" => {}
            _ => return Err(format!("{name} = {v:?}: sitrep exports traces with otlp (or none for no traces)")),
        }
    }
    let Some(endpoint) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    if let Some((name, v)) = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        && v != "grpc"
    {
        return Err(format!("{name} = {v:?}: sitrep exports OTLP over gRPC only (grpc)"));
    }
    let (name, url) = &endpoint;
    let uri: tonic::transport::Uri =
        url.parse().map_err(|e| format!("{name} = {url:?} is not a URL: {e} (e.g. http://otel-collector:4317)"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => {}
        Some("https") => {
            return Err(format!(
                "{name} = {url:?}: sitrep's OTLP exporter speaks plaintext gRPC only; send to a collector on the \
                 host or in the pod (http://...:4317) and let it forward over TLS"
            ));
        }
        _ => return Err(format!("{name} = {url:?}: must be http://host:port (e.g. http://otel-collector:4317)")),
    }
    Ok(Some(Settings { endpoint }))
}

/// The OpenTelemetry layer for `role` if the environment configures an OTLP endpoint (see the module's header),
/// with the provider to shut down on exit; `Ok(None)` when tracing is off. Must run inside a Tokio runtime (the
/// exporter's channel is made there). An error names the variable and value at fault.
pub fn from_env<S>(role: Role) -> Result<Option<(impl Layer<S> + Send + Sync + 'static, Telemetry)>, String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(settings) = settings(|name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| format!("{} = {:?}: {e}", settings.endpoint.0, settings.endpoint.1))?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES first; sitrep's own name only where they give none.
    let mut resource = opentelemetry_sdk::Resource::builder().build();
    let named = resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    if !named {
        resource = opentelemetry_sdk::Resource::builder().with_service_name(role.service_name()).build();
    }
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    let tracer = provider.tracer("sitrep");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        // No busy/idle times: they cost two clock reads on every enter and exit of every span.
        .with_tracked_inactivity(false)
        // INFO, the level of sitrep's spans: a TRACE here would raise the process's maximum level, and every
        // `debug!` and `trace!` on the hot path (h2's, hyper's) would get past its cheap level check.
        .with_filter(tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO));
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    FOLLOWS_PARENT.store(sampler.trim().is_empty() || sampler.starts_with("parentbased_"), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((layer, Telemetry { provider })))
}

/// The directive that keeps sitrep's trace spans out of the log output (add it to the log filter).
pub fn log_directive() -> tracing_subscriber::filter::Directive {
    format!("{TARGET}=off").parse().expect("a valid directive")
}

// ---- Propagation -------------------------------------------------------------------------------------------

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(value))
        {
            self.0.insert(key, value);
        }
    }
}

impl Extractor for TraceFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.0).filter(|v| !v.is_empty()),
            "tracestate" => Some(self.1).filter(|v| !v.is_empty()),
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// A `traceparent` and `tracestate` pair, as a report or an event carries them.
struct TraceFields<'a>(&'a str, &'a str);

/// Collects a context's `traceparent` and `tracestate`.
struct Collect(TraceContext);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.0.traceparent = value,
            "tracestate" => self.0.tracestate = value,
            _ => {}
        }
    }
}

/// Puts the current span's trace context into a call's metadata (`traceparent`, `tracestate`). Called by every
/// client call's interceptor; does nothing when tracing is off or there is no current span.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if !enabled() {
        return;
    }
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Metadata(metadata));
    }
}

/// The trace context of `span` in W3C form, if it has one: what a sender puts in a report, sampled or not (a
/// report its sender did not sample is not sampled by the aggregator either).
pub fn context_of(span: &Span) -> Option<TraceContext> {
    if !enabled() {
        return None;
    }
    w3c(&span.context())
}

/// The trace context of `span` if it is sampled: what an event carries (an unsampled report's event carries
/// nothing, so its fold and deliveries make no spans and the store writes no extra bytes).
pub fn sampled_context_of(span: &Span) -> Option<TraceContext> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_sampled() {
        return None;
    }
    w3c(&cx)
}

fn w3c(cx: &opentelemetry::Context) -> Option<TraceContext> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = Collect(TraceContext::default());
    TraceContextPropagator::new().inject_context(cx, &mut out);
    // However it came in (a report's field, a call's header), a long tracestate is not carried into the event.
    if out.0.tracestate.len() > MAX_TRACESTATE {
        out.0.tracestate.clear();
    }
    (!out.0.traceparent.is_empty()).then_some(out.0)
}

/// A code a client sent, as a span attribute: as sent when it is short and made of code characters (what the
/// directory's codes are), else `"invalid"`, so a caller cannot put a megabyte or arbitrary text into spans before
/// the report is even checked.
fn code_attribute(code: &str) -> &str {
    let plain = code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain { code } else { "invalid" }
}

/// A gRPC path's service and method as span name and attributes: only this aggregator's services (and the
/// standard health and reflection services) by name, anything else `unknown`, so a caller cannot mint span names.
fn rpc_names<'a>(service: &'a str, method: &'a str) -> (&'a str, &'a str) {
    let known = ["sitrep.v1.", "grpc.health.v1.", "grpc.reflection."].iter().any(|p| service.starts_with(p));
    if known && service.len() <= 64 && method.len() <= 64 && method.bytes().all(|b| b.is_ascii_alphanumeric()) {
        (service, method)
    } else {
        ("unknown", "unknown")
    }
}

/// The longest `tracestate` taken from a report (the W3C's 32 members of moderate length fit): a longer one is
/// dropped, not carried into every event and stream entry of the report.
const MAX_TRACESTATE: usize = 512;

fn extract(traceparent: &str, tracestate: &str) -> opentelemetry::Context {
    let tracestate = if tracestate.len() <= MAX_TRACESTATE { tracestate } else { "" };
    TraceContextPropagator::new().extract(&TraceFields(traceparent, tracestate))
}

// ---- Spans -------------------------------------------------------------------------------------------------

/// The feed agent's (or `sitrep push`'s) span for sending one report: a new trace, kind producer. Only the key of
/// the report and the file it came from; never its content.
pub fn send_span(
    provider: &str,
    site: Option<&str>,
    period: &dyn std::fmt::Display,
    revision: u32,
    file: &str,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: None, "sitrep.feed.send",
        otel.name = "send report", otel.kind = "producer",
        messaging.system = "sitrep", messaging.operation.type = "send",
        sitrep.provider = provider, sitrep.site = site.unwrap_or(""), sitrep.period = %period,
        sitrep.revision = revision, sitrep.file = file, sitrep.outcome = tracing::field::Empty)
}

/// Records how a report came back (accepted, duplicate, rejected, conflict, or a failure) on its span.
pub fn record_outcome(span: &Span, outcome: &str) {
    if !span.is_none() {
        span.record("sitrep.outcome", outcome);
    }
}

/// The server span of one gRPC call (`rpc.system`, `rpc.service`, `rpc.method`, and `rpc.grpc.status_code` once
/// [`record_grpc_status`] is given it), continuing the caller's trace from its `traceparent` header. Only known
/// services and plain method names are named (see `rpc_names`). The aggregator's `rpc_layer` makes it for every
/// gRPC request while [`enabled`].
pub fn rpc_span(service: &str, method: &str, headers: &HeaderMap) -> Span {
    let (service, method) = rpc_names(service, method);
    let span = tracing::info_span!(target: TARGET, "sitrep.rpc",
        otel.name = format_args!("{service}/{method}"), otel.kind = "server",
        rpc.system = "grpc", rpc.service = service, rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty, otel.status_code = tracing::field::Empty);
    let _ = span.set_parent(TraceContextPropagator::new().extract(&Headers(headers)));
    span
}

/// Records a call's `grpc-status` (from the answer's headers or its trailers) on its [`rpc_span`].
pub fn record_grpc_status(span: &Span, code: &HeaderValue) {
    let code = code.to_str().ok().and_then(|c| c.parse::<i64>().ok()).unwrap_or(2);
    span.record("rpc.grpc.status_code", code);
    // The conventions: a server span is an error for these codes only (the caller's mistakes are not).
    if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
        span.record("otel.status_code", "error");
    }
}

/// The span of one report's handling, around validation and the store. Its parent is the report's own trace
/// context (`StatusReport.traceparent`) when it has one in another trace than the call's (a later report on a
/// long stream: then it links to the call's span), otherwise the call's span. A report its parent did not sample
/// (under a parent-based sampler) gets `Span::none()`: at 1% sampling, 99% of reports cost a flag check, not
/// spans made and dropped.
pub fn report_span(
    call: &Span,
    provider: &str,
    site: &str,
    period: Option<sitrep_core::Timestamp>,
    revision: u32,
    traceparent: &str,
    tracestate: &str,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let own = sampled_flag(traceparent);
    if FOLLOWS_PARENT.load(Ordering::Relaxed) {
        let sampled = match own {
            Some(flag) => flag,
            None => {
                let cx = call.context();
                let parent = cx.span();
                let parent = parent.span_context();
                !parent.is_valid() || parent.is_sampled()
            }
        };
        if !sampled {
            return Span::none();
        }
    }
    let span = tracing::info_span!(target: TARGET, parent: call, "sitrep.report",
        otel.name = "ingest report", otel.kind = "internal",
        sitrep.provider = code_attribute(provider), sitrep.site = code_attribute(site),
        sitrep.period = %period.unwrap_or_default(),
        sitrep.revision = revision, sitrep.outcome = tracing::field::Empty);
    if own.is_some() {
        let own = extract(traceparent, tracestate);
        let call_cx = call.context();
        let call_context = call_cx.span().span_context().clone();
        let own_context = own.span().span_context().clone();
        if own_context.is_valid() && own_context.trace_id() != call_context.trace_id() {
            let _ = span.set_parent(own);
            span.add_link(call_context);
        }
    }
    span
}

/// The sampled flag of a well-formed version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), `None` for an
/// empty or malformed one (which the propagator ignores too).
fn sampled_flag(traceparent: &str) -> Option<bool> {
    let b = traceparent.as_bytes();
    if b.len() != 55 || !traceparent.starts_with("00-") || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    u8::from_str_radix(&traceparent[53..], 16).ok().map(|flags| flags & 1 == 1)
}

/// Validation of one report, inside its span (`report`: none when the report is not traced).
pub fn validate_span(report: &Span) -> Span {
    if report.is_none() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: report, "sitrep.validate",
        otel.name = "validate report", otel.kind = "internal", sitrep.violations = tracing::field::Empty)
}

/// The store's part of a report (`report`: its span, none when not traced): one call to the store (kind client),
/// named by the database conventions.
pub fn store_span(report: &Span, system: &'static str, operation: &'static str) -> Span {
    if report.is_none() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, parent: report, "sitrep.store",
        otel.name = format_args!("{operation} {system}"), otel.kind = "client",
        db.system = system, db.system.name = system, db.operation = operation, db.operation.name = operation)
}

/// The Hub folding one traced event into the picture and queueing it for every subscriber, as a child of the
/// report's span (on whichever replica folds it).
pub fn fold_span(event: &Event, subscribers: usize) -> Span {
    let Some(trace) = event.trace.as_ref().filter(|_| enabled()) else {
        return Span::none();
    };
    let span = tracing::info_span!(target: TARGET, "sitrep.hub.fold",
        otel.name = "fold and fan out", otel.kind = "internal",
        sitrep.provider = %event.provider, sitrep.cursor = %event.cursor, sitrep.subscribers = subscribers);
    let _ = span.set_parent(extract(&trace.traceparent, &trace.tracestate));
    span
}

/// One subscriber's delivery of one traced event (`transport`: its label, `grpc` or `sse`), kind consumer: parented to the
/// report's span and linked to it (see the module's header for why both).
pub fn deliver_span(event: &Event, transport: &'static str) -> Span {
    let Some(trace) = event.trace.as_ref().filter(|_| enabled()) else {
        return Span::none();
    };
    let span = tracing::info_span!(target: TARGET, "sitrep.deliver",
        otel.name = "deliver event", otel.kind = "consumer",
        messaging.system = "sitrep", messaging.operation.type = "process", messaging.operation.name = "deliver",
        messaging.destination.name = transport, sitrep.transport = transport,
        sitrep.provider = %event.provider, sitrep.cursor = %event.cursor);
    let cx = extract(&trace.traceparent, &trace.tracestate);
    let link = cx.span().span_context().clone();
    let _ = span.set_parent(cx);
    span.add_link(link);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(vars: &[(&str, &str)]) -> Result<Option<Settings>, String> {
        settings(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn off_unless_an_endpoint_is_set_and_not_disabled() {
        assert_eq!(settings_of(&[]), Ok(None));
        assert_eq!(settings_of(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        let on = settings_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]).unwrap().unwrap();
        assert_eq!(on.endpoint, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317".into()));
        let traces = settings_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
        ]);
        assert_eq!(traces.unwrap().unwrap().endpoint.1, "http://b:4317", "the signal's own variable wins");
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            assert_eq!(settings_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"), off]), Ok(None), "{off:?}");
        }
    }

    #[test]
    fn malformed_settings_name_the_variable_and_value() {
        for (vars, expect) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"collector:4317\"",
            ),
            (vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://[bad")], "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")], "plaintext gRPC only"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_SDK_DISABLED", "yes")], "OTEL_SDK_DISABLED"),
            (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_TRACES_EXPORTER", "zipkin")], "zipkin"),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ],
                "gRPC only",
            ),
        ] {
            let err = settings_of(&vars).unwrap_err();
            assert!(err.contains(expect), "{err}");
        }
    }

    #[test]
    fn sampled_flags_are_read_from_well_formed_traceparents_only() {
        assert_eq!(sampled_flag("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), Some(true));
        assert_eq!(sampled_flag("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), Some(false));
        assert_eq!(sampled_flag("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"), Some(true));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf9-00f0-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert_eq!(sampled_flag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn off_makes_no_spans_and_no_context() {
        assert!(!enabled());
        assert!(send_span("RJ7", None, &"2026-11-27T14:00:00Z", 1, "beds.csv").is_none());
        assert!(
            report_span(
                &Span::none(),
                "RJ7",
                "",
                None,
                1,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ""
            )
            .is_none()
        );
        assert!(store_span(&Span::none(), "memory", "apply").is_none());
        assert!(validate_span(&Span::none()).is_none());
        assert_eq!(context_of(&Span::current()), None);
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
    }

    #[test]
    fn what_a_caller_sends_is_bounded_in_spans() {
        assert_eq!(code_attribute("RJ7"), "RJ7");
        assert_eq!(code_attribute("RJ7_01-a"), "RJ7_01-a");
        assert_eq!(code_attribute(&"X".repeat(65)), "invalid");
        assert_eq!(code_attribute("RJ7 <script>"), "invalid");
        assert_eq!(rpc_names("sitrep.v1.ProviderService", "Report"), ("sitrep.v1.ProviderService", "Report"));
        assert_eq!(rpc_names("grpc.health.v1.Health", "Check"), ("grpc.health.v1.Health", "Check"));
        assert_eq!(rpc_names("x93jd", "y12"), ("unknown", "unknown"));
        assert_eq!(rpc_names("sitrep.v1.ProviderService", &"m".repeat(100)), ("unknown", "unknown"));
    }
}
