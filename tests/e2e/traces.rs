//! End-to-end tests of OpenTelemetry traces: a small OTLP/gRPC receiver runs inside the test, the aggregator and
//! `sitrep feed` run as real processes exporting to it, and a report's whole journey (the feed's send, the
//! aggregator's call, validation, the store, the Hub's fold, each subscriber's delivery, over gRPC and SSE, and on
//! another replica through Redis) must arrive as one trace with the right parents, links and attributes, and with
//! no report text in it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use sitrep_store::redis::RedisProcess;
use tokio::process::Command;

use crate::http::Sse;
use crate::support::*;

/// Text only the report's narrative contains: no span may carry it.
const NARRATIVE: &str = "NARRATIVE-Ward-9-closed-norovirus";

/// A span as the receiver got it, with its resource's service name and instance.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    instance: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }
}

fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

/// An OTLP/gRPC trace receiver (the collector's `TraceService`) that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attr(&resource, "service.name").unwrap_or_default();
            let instance = attr(&resource, "service.instance.id").unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.push(Received { service: service.clone(), instance: instance.clone(), span });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    /// Starts one on a free port: it and its endpoint URL.
    async fn start() -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Receiver::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (receiver, url)
    }

    /// The spans received once `done` holds for them, failing the test if it does not within the deadline.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let spans = self.0.lock().unwrap().clone();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                let names: Vec<_> = spans.iter().map(|s| format!("{}: {}", s.service, s.span.name)).collect();
                panic!("{what} did not arrive within {DEADLINE:?}; received {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The environment that turns tracing on, towards `endpoint`, every span sampled, batches sent every 100 ms.
fn otel_env<'a>(endpoint: &'a str, instance: &'a str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_TRACES_SAMPLER", "always_on".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("OTEL_RESOURCE_ATTRIBUTES", format!("service.instance.id={instance}")),
    ]
}

async fn aggregator(extra: &[&str], endpoint: &str, instance: &str) -> Server {
    let env = otel_env(endpoint, instance);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_env("", extra, "127.0.0.1:0", &[], &env).await
}

/// Sends one report (provider RJ7, this hour, revision 7, with the narrative) with `sitrep feed FILE`, tracing
/// to `endpoint`; returns the period sent.
async fn feed_one(server: &Server, endpoint: &str) -> String {
    let dir = temp_dir("traces");
    let hour = sitrep_core::Timestamp::now().hour_start().to_string();
    let file = dir.path().join("beds.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"provider":"RJ7","period":"{hour}","revision":7,"values":{{"beds.cc_adult.open":28,"beds.cc_adult.occupied":25}},"narrative":"{NARRATIVE}"}}"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--server", &server.url, "--spool"])
        .arg(dir.path().join("spool"))
        .arg(&file)
        .env("RUST_LOG", "warn")
        .envs(otel_env(endpoint, "feed"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "sitrep feed failed: {}", String::from_utf8_lossy(&out.stderr));
    hour
}

fn named<'a>(spans: &'a [Received], name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.span.name == name).collect()
}

fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one span named {name:?}: {found:#?}");
    found[0]
}

/// The feed's send span, the aggregator's call, report, validation and store spans: checked against each other;
/// returns the send span and the report span.
fn check_ingest<'a>(spans: &'a [Received], hour: &str, store: &str) -> (&'a Received, &'a Received) {
    let send = one(spans, "send report");
    assert_eq!(send.service, "sitrep-feed", "the feed's default service name");
    assert!(send.span.parent_span_id.is_empty(), "the feed's send span is the root");
    assert_eq!(send.kind(), SpanKind::Producer);
    assert_eq!(send.attr("sitrep.provider").as_deref(), Some("RJ7"));
    assert_eq!(send.attr("sitrep.period").as_deref(), Some(hour));
    assert_eq!(send.attr("sitrep.revision").as_deref(), Some("7"));
    assert_eq!(send.attr("sitrep.file").as_deref(), Some("beds.json"));
    assert_eq!(send.attr("sitrep.outcome").as_deref(), Some("accepted"));
    let trace = &send.span.trace_id;

    let rpc = one(spans, "sitrep.v1.ProviderService/Report");
    assert_eq!(rpc.service, "sitrep-aggregator");
    assert_eq!(&rpc.span.trace_id, trace, "the call continues the feed's trace (traceparent in its metadata)");
    assert_eq!(rpc.span.parent_span_id, send.span.span_id, "the call's parent is the feed's send span");
    assert_eq!(rpc.kind(), SpanKind::Server);
    assert_eq!(rpc.attr("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(rpc.attr("rpc.service").as_deref(), Some("sitrep.v1.ProviderService"));
    assert_eq!(rpc.attr("rpc.method").as_deref(), Some("Report"));
    if let Some(code) = rpc.attr("rpc.grpc.status_code") {
        assert_eq!(code, "0", "the stream ended OK");
    }

    let report = one(spans, "ingest report");
    assert_eq!(&report.span.trace_id, trace);
    assert_eq!(report.span.parent_span_id, rpc.span.span_id, "the report is handled within the call");
    assert_eq!(report.attr("sitrep.provider").as_deref(), Some("RJ7"));
    assert_eq!(report.attr("sitrep.period").as_deref(), Some(hour));
    assert_eq!(report.attr("sitrep.revision").as_deref(), Some("7"));
    assert_eq!(report.attr("sitrep.outcome").as_deref(), Some("accepted"));

    let validate = one(spans, "validate report");
    assert_eq!(&validate.span.trace_id, trace);
    assert_eq!(validate.span.parent_span_id, report.span.span_id, "validation inside the report's span");

    let stored = one(spans, &format!("apply {store}"));
    assert_eq!(&stored.span.trace_id, trace);
    assert_eq!(stored.span.parent_span_id, report.span.span_id, "the store call inside the report's span");
    assert_eq!(stored.kind(), SpanKind::Client);
    assert_eq!(stored.attr("db.system").as_deref(), Some(store));
    assert_eq!(stored.attr("db.operation").as_deref(), Some("apply"));
    (send, report)
}

/// A delivery span: of the report's trace, a consumer, parented to the report's span and linked to it.
fn check_delivery(delivery: &Received, report: &Received) {
    assert_eq!(delivery.span.trace_id, report.span.trace_id, "the delivery joins the report's trace");
    assert_eq!(delivery.span.parent_span_id, report.span.span_id, "parented to the report's span");
    assert!(
        delivery.span.links.iter().any(|l| l.span_id == report.span.span_id && l.trace_id == report.span.trace_id),
        "linked to the report's span: {:?}",
        delivery.span.links
    );
    assert_eq!(delivery.kind(), SpanKind::Consumer);
    assert_eq!(delivery.attr("messaging.system").as_deref(), Some("sitrep"));
    assert_eq!(delivery.attr("sitrep.provider").as_deref(), Some("RJ7"));
}

/// No span, anywhere, carries the report's narrative (in its name, an attribute, an event or a link).
fn check_no_narrative(spans: &[Received]) {
    for s in spans {
        let text = format!("{:?}", s.span);
        assert!(!text.contains(NARRATIVE), "span {:?} carries the narrative: {text}", s.span.name);
    }
}

/// One aggregator (memory store), a gRPC subscriber and an SSE subscriber, one report through `sitrep feed`: one
/// trace from the feed's send to both deliveries.
#[tokio::test]
async fn a_report_is_one_trace_from_the_feed_to_every_subscriber() {
    let (receiver, endpoint) = Receiver::start().await;
    let server = aggregator(&[], &endpoint, "a").await;
    let mut grpc = server.updates(15).await;
    expect_snapshot(next(&mut grpc).await);
    let mut sse = Sse::open(&server.url, "/api/v1/events?heartbeat=15", &[]).await;
    assert_eq!(sse.next().await.event, "snapshot");

    let hour = feed_one(&server, &endpoint).await;
    let event = expect_event(next_non_heartbeat(&mut grpc).await);
    assert_eq!((event.provider.as_str(), event.narrative.as_str()), ("RJ7", NARRATIVE), "the event itself is whole");
    assert_eq!(sse.next_non_heartbeat().await.event, "event");

    let spans = receiver
        .wait_for("the report's spans and two deliveries", |spans| {
            [
                "send report",
                "sitrep.v1.ProviderService/Report",
                "ingest report",
                "validate report",
                "apply memory",
                "fold and fan out",
            ]
            .iter()
            .all(|n| !named(spans, n).is_empty())
                && named(spans, "deliver event").len() >= 2
        })
        .await;
    let (send, report) = check_ingest(&spans, &hour, "memory");
    let fold = one(&spans, "fold and fan out");
    assert_eq!(fold.span.parent_span_id, report.span.span_id, "the Hub folds under the report's span");
    let deliveries = named(&spans, "deliver event");
    let mut transports: Vec<_> = deliveries.iter().filter_map(|d| d.attr("sitrep.transport")).collect();
    transports.sort();
    assert_eq!(transports, ["grpc", "sse"], "one delivery per subscriber");
    for d in &deliveries {
        check_delivery(d, report);
    }
    // One trace: every span of the report's journey has the feed's trace id.
    for s in spans.iter().filter(|s| s.span.name != "sitrep.v1.SubscriberService/Subscribe") {
        assert_eq!(s.span.trace_id, send.span.trace_id, "{} ({}) is in the report's trace", s.span.name, s.service);
    }
    check_no_narrative(&spans);
}

/// Two replicas on one Redis: the report goes to one, the subscriber is on the other, whose delivery still joins
/// the report's trace (the context travels in the stream entry).
#[tokio::test]
async fn a_subscriber_of_another_replica_joins_the_reports_trace() {
    let redis = RedisProcess::start().expect("redis-server");
    let (receiver, endpoint) = Receiver::start().await;
    let a = aggregator(&["--redis", &redis.url()], &endpoint, "a").await;
    let b = aggregator(&["--redis", &redis.url()], &endpoint, "b").await;
    let mut on_b = b.updates(15).await;
    expect_snapshot(next(&mut on_b).await);

    let hour = feed_one(&a, &endpoint).await;
    let event = expect_event(next_non_heartbeat(&mut on_b).await);
    assert_eq!(event.provider, "RJ7");

    let spans = receiver
        .wait_for("the report's spans and replica b's delivery", |spans| {
            ["send report", "sitrep.v1.ProviderService/Report", "ingest report", "validate report", "apply redis"]
                .iter()
                .all(|n| !named(spans, n).is_empty())
                && spans.iter().any(|s| s.span.name == "deliver event" && s.instance == "b")
                && spans.iter().any(|s| s.span.name == "fold and fan out" && s.instance == "b")
        })
        .await;
    let (_, report) = check_ingest(&spans, &hour, "redis");
    assert_eq!(report.instance, "a", "replica a took the report");
    let on_b: Vec<_> = spans.iter().filter(|s| s.instance == "b").collect();
    let delivery = on_b.iter().find(|s| s.span.name == "deliver event").expect("b delivered");
    check_delivery(delivery, report);
    assert_eq!(delivery.attr("sitrep.transport").as_deref(), Some("grpc"));
    let fold = on_b.iter().find(|s| s.span.name == "fold and fan out").expect("b folded");
    assert_eq!(fold.span.parent_span_id, report.span.span_id, "b's Hub folds under the report's span");
    assert!(
        !spans.iter().any(|s| s.span.name == "deliver event" && s.instance == "a"),
        "nobody subscribed to a, so a delivers nothing"
    );
    check_no_narrative(&spans);
}

/// A feed that samples nothing (`OTEL_TRACES_SAMPLER=always_off` at the root) leaves the aggregator, which follows
/// its parent (the default sampler), with nothing to export: no span of the report, its call, its fold or its
/// delivery.
#[tokio::test]
async fn a_report_its_feed_did_not_sample_makes_no_spans() {
    let (receiver, endpoint) = Receiver::start().await;
    // The aggregator with the default sampler, parent-based (`always_on` would trace whatever its parent said).
    let mut env = otel_env(&endpoint, "a");
    env.retain(|(k, _)| *k != "OTEL_TRACES_SAMPLER");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = Server::start_env("", &[], "127.0.0.1:0", &[], &env).await;
    let mut grpc = server.updates(15).await;
    expect_snapshot(next(&mut grpc).await);
    let dir = temp_dir("traces-off");
    let file = dir.path().join("beds.json");
    let hour = sitrep_core::Timestamp::now().hour_start().to_string();
    std::fs::write(&file, format!(r#"{{"provider":"RJ7","period":"{hour}","values":{{"beds.cc_adult.open":28}}}}"#))
        .unwrap();
    let mut env = otel_env(&endpoint, "feed");
    env.retain(|(k, _)| *k != "OTEL_TRACES_SAMPLER");
    env.push(("OTEL_TRACES_SAMPLER", "always_off".into()));
    let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
        .args(["feed", "--server", &server.url, "--spool"])
        .arg(dir.path().join("spool"))
        .arg(&file)
        .env("RUST_LOG", "warn")
        .envs(env)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "sitrep feed failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(expect_event(next_non_heartbeat(&mut grpc).await).provider, "RJ7");
    // Ten batch delays: anything made would have been sent by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = receiver.0.lock().unwrap().clone();
    let names: Vec<_> = spans.iter().map(|s| s.span.name.as_str()).collect();
    assert!(names.iter().all(|n| *n == "sitrep.v1.SubscriberService/Subscribe"), "unexpected spans {names:?}");
}

/// A malformed endpoint stops the process at start with a message naming the variable and the value.
#[tokio::test]
async fn a_malformed_endpoint_is_named_at_start() {
    for command in [&["serve", "--listen", "127.0.0.1:0"][..], &["feed", "--status"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_sitrep"))
            .args(command)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?} started with a malformed endpoint");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT = \"collector:4317\"") && stderr.contains("http://"),
            "{command:?}: {stderr}"
        );
    }
}
