//! The gRPC floor: a stand-in aggregator that does only what no design of sitrep can avoid (decode each report
//! from its gRPC stream, write the raw baseline's irreducible writes, acknowledge it) and nothing else: no
//! validation, no picture, no events for subscribers. `sitrep bench` runs it as a separate process (this binary,
//! the hidden `bench-floor` command) under the same provider streams as sitrep, so the rate it reaches is the
//! ceiling of any aggregator that ingests over gRPC into Redis on this machine, and its ratio to the raw baseline
//! says how much of the gap is the transport rather than sitrep.

use std::pin::Pin;

use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_server::{ProviderService, ProviderServiceServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::RawWrites;

struct Floor {
    writes: RawWrites,
}

impl Floor {
    async fn apply(&self, report: pb::StatusReport) -> pb::ReportAck {
        let values = report.values.iter().filter_map(|(metric, v)| match v.kind {
            Some(pb::metric_value::Kind::Number(x)) => Some((metric.as_str(), x)),
            _ => None,
        });
        let period = report.period.as_ref().map_or(0, |p| p.seconds * 1000);
        let outcome = match self.writes.write(&report.provider, period, report.revision, values).await {
            true => pb::report_ack::Outcome::Accepted,
            false => pb::report_ack::Outcome::Rejected,
        };
        pb::ReportAck {
            outcome: outcome.into(),
            provider: report.provider,
            period: report.period,
            revision: report.revision,
            ..Default::default()
        }
    }
}

type AckStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReportAck, Status>> + Send>>;

#[tonic::async_trait]
impl ProviderService for Floor {
    type ReportStream = AckStream;

    async fn report(&self, request: Request<Streaming<pb::StatusReport>>) -> Result<Response<AckStream>, Status> {
        let mut reports = request.into_inner();
        let floor = Floor { writes: self.writes.clone() };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(report)) = reports.message().await {
                if tx.send(Ok(floor.apply(report).await)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn submit(&self, request: Request<pb::StatusReport>) -> Result<Response<pb::ReportAck>, Status> {
        Ok(Response::new(self.apply(request.into_inner()).await))
    }
}

/// Serves the floor on a free loopback port (printed as `sitrep listening on ADDR`, as `serve` does) until killed.
pub async fn serve(redis_url: &str) -> anyhow::Result<()> {
    let writes = RawWrites::connect(redis_url, "floor").await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("sitrep listening on {}", listener.local_addr()?);
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(s) = &stream {
            let _ = s.set_nodelay(true);
        }
        stream
    });
    tonic::transport::Server::builder()
        .add_service(ProviderServiceServer::new(Floor { writes }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
