//! `sitrep bench --otlp R`: what it takes to measure the aggregator with tracing on. A throwaway OTLP/gRPC receiver
//! in the bench's process (it decodes each export, as a collector would, and counts the spans), the variables that
//! point the aggregator at it with a parent-based ratio sampler, and the `traceparent` each bench report carries,
//! sampled with probability R: a feed decides at the root of its trace and the aggregator follows, so R of the
//! reports are traced end to end and the rest cost only the check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::bail;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// The receiver, running until the bench ends.
pub struct Sink {
    endpoint: String,
    ratio: f64,
    spans: Arc<AtomicU64>,
}

impl Sink {
    /// The aggregator's environment: export to this sink, sample R of the traces that start there and follow the
    /// caller's decision for the others.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.clone()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()),
            ("OTEL_TRACES_SAMPLER_ARG", self.ratio.to_string()),
        ]
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Counter(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Counter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize =
            request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts a sink on a free loopback port for sampling ratio `ratio` (0 < R <= 1).
pub async fn start(ratio: f64) -> anyhow::Result<Sink> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        bail!("--otlp {ratio}: the sampling ratio must be above 0 and at most 1 (e.g. 1 or 0.01)");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let spans = Arc::new(AtomicU64::new(0));
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Counter(spans.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    // Ends with the bench's process (the runtime drops it).
    tokio::spawn(server);
    eprintln!("bench: tracing the aggregator to an OTLP sink at {endpoint}, sampling {ratio}");
    Ok(Sink { endpoint, ratio, spans })
}

/// A small xorshift generator: trace and span ids for the bench's reports without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A new root `traceparent` (version 00, random ids), flagged sampled with probability `ratio`.
pub fn traceparent(rng: &mut Rng, ratio: f64) -> String {
    let (hi, lo, span) = (rng.next(), rng.next(), rng.next() | 1);
    let sampled = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 <= ratio;
    format!("00-{hi:016x}{lo:016x}-{span:016x}-{:02x}", u8::from(sampled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_well_formed_and_sampled_at_the_ratio() {
        let mut rng = Rng::new(3);
        let all: Vec<String> = (0..10_000).map(|_| traceparent(&mut rng, 0.01)).collect();
        for t in &all {
            assert_eq!(t.len(), 55, "{t}");
            assert!(t.starts_with("00-") && (t.ends_with("-00") || t.ends_with("-01")), "{t}");
        }
        let sampled = all.iter().filter(|t| t.ends_with("-01")).count();
        assert!((50..=150).contains(&sampled), "{sampled} of 10000 sampled at 0.01");
        assert!(traceparent(&mut rng, 1.0).ends_with("-01"));
    }
}
