//! The sender: the spool, in order, over one gRPC stream to the aggregator, report by report, each acknowledged
//! before the next. An entry leaves the spool only when every report in it is acknowledged (accepted, a duplicate,
//! or refused and set aside in `rejected/`); a report that cannot be set aside keeps its entry in the spool, and
//! is sent again later.
//!
//! **Retries.** An aggregator that refuses connections (it is down) or does not answer (the network) is retried
//! for ever with backoff, the reports waiting in the spool, and each retry says which it was. A configuration
//! error is not retried: an address where something that is not a sitrep aggregator answers (or that closes the
//! connection unanswered three times in a row, or whose TLS handshake fails) ends the agent with an error, unless
//! a sitrep aggregator answered there earlier in this run (then it is taken for a passing fault, a proxy during
//! a deploy, and retried). What a failed call means is the caller's to say ([`Diagnose`]): the connection, its
//! TLS and its credential are the caller's.
//!
//! **Files once.** Each entry is read from its file once, when it comes up, and kept in memory until it is
//! acknowledged (a retry sends it again from memory). File work runs on blocking threads.

use std::sync::Arc;
use std::time::Duration;

use sitrep_client::credentials::AuthedChannel;
use sitrep_client::diagnose::{Diagnose, Failure};
use sitrep_core::backoff::Backoff;
use sitrep_core::input::{Mapping, json};
use sitrep_core::{Report, Timestamp};
use sitrep_proto::convert;
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_telemetry as telemetry;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::agent::Agent;
use crate::error::{Error, joined};
use crate::rejected::Refused;
use crate::spool::{LastAck, Queued};

/// The aggregator as the agent reaches it: a client on a channel the caller made (with its TLS and credential).
pub struct Upstream {
    pub client: ProviderServiceClient<AuthedChannel>,
    /// The address as given (`--server`), for messages.
    pub server: String,
    /// How long a call may wait for an answer before it counts as unreachable.
    pub answer_timeout: Duration,
    pub diagnose: Box<dyn Diagnose>,
}

/// Why sending stopped: a call failed (its status tells why), or something else went wrong on the way.
enum SendFailure {
    Call(tonic::Status),
    Other(String),
}

type Stream = (mpsc::Sender<pb::StatusReport>, tonic::Streaming<pb::ReportAck>);

/// The aggregator's answer to one report: its acknowledgement, the end of the stream, or a failed call.
type Answer = Result<Option<pb::ReportAck>, tonic::Status>;

pub(crate) struct Sender {
    agent: Arc<Agent>,
    upstream: Upstream,
    /// Whether a sitrep aggregator has answered at this address in this run (see "Retries").
    answered: bool,
    /// The open stream, opened for the first report to send (under its span, so the call carries its trace).
    stream: Option<Stream>,
}

impl Sender {
    pub fn new(agent: Arc<Agent>, upstream: Upstream) -> Sender {
        Sender { agent, upstream, answered: false, stream: None }
    }

    /// Sends the spool in order, until `cancel`, reconnecting with backoff. With `until_empty`, returns once the
    /// spool is empty. Ends with an error only on a configuration error (see "Retries").
    pub async fn run(mut self, cancel: &CancellationToken, until_empty: bool) -> Result<(), Error> {
        let mut backoff = Backoff::default();
        // Connections closed unanswered, in a row: an aggregator going down is refused at the next try, so a
        // third in a row with no answer ever means something else is at the address (the race in the HTTP/2
        // client can show a protocol error as a closed connection).
        let mut closed = 0;
        let mut current: Option<Queued> = None;
        loop {
            if current.is_none() {
                let agent = self.agent.clone();
                current = joined(tokio::task::spawn_blocking(move || agent.spool.first()).await)?;
            }
            let Some(queued) = &current else {
                if until_empty {
                    return Ok(());
                }
                // Idle: the stream is let go rather than held open with nothing to say.
                self.stream = None;
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = self.agent.spooled.notified() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            };
            let failure = match self.send_entry(queued, cancel).await {
                Ok(last) => match self.acknowledge(queued.number, last).await {
                    Ok(()) => {
                        current = None;
                        backoff.reset();
                        closed = 0;
                        continue;
                    }
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            };
            self.stream = None;
            if cancel.is_cancelled() {
                return Ok(());
            }
            let why = self.explain(&failure, &mut closed)?;
            let delay = backoff.next_delay().max(Duration::from_millis(200));
            tracing::warn!(
                "{why}; {} report(s) queued in the spool; retrying in {:.1} s",
                self.agent.spool.waiting(),
                delay.as_secs_f64()
            );
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Takes a sent entry out of the spool (on a blocking thread), noting its last acknowledgement.
    async fn acknowledge(&self, number: u64, last: Option<LastAck>) -> Result<(), SendFailure> {
        let agent = self.agent.clone();
        match tokio::task::spawn_blocking(move || agent.spool.ack(number, last)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SendFailure::Other(e.to_string())),
            Err(e) => Err(SendFailure::Other(e.to_string())),
        }
    }

    /// What a failed send means, in a sentence for the log before the retry; a configuration error (see "Retries")
    /// when retrying cannot help. `closed` counts the connections closed unanswered in a row.
    fn explain(&self, failure: &SendFailure, closed: &mut u32) -> Result<String, Error> {
        let server = &self.upstream.server;
        Ok(match failure {
            // The credential is missing, revoked or expired: what to renew, and nothing lost meanwhile.
            SendFailure::Call(status) if status.code() == tonic::Code::Unauthenticated => format!(
                "{server} does not accept this agent's credential ({}); renew its key or token \
                 (--key-file or SITREP_KEY) and restart the agent; the spool is kept",
                status.message()
            ),
            SendFailure::Call(status) => {
                let diagnosis = self.upstream.diagnose.diagnose(status);
                *closed = if diagnosis.failure == Failure::Closed { *closed + 1 } else { 0 };
                if !self.answered && (diagnosis.failure == Failure::Configuration || *closed >= 3) {
                    return Err(Error::Configuration(format!(
                        "{}; not retrying ({} report(s) stay in the spool for when --server is right)",
                        diagnosis.message,
                        self.agent.spool.waiting()
                    )));
                }
                diagnosis.message
            }
            SendFailure::Other(why) => format!("sending to {server} failed: {why}"),
        })
    }

    /// Opens a stream to the aggregator.
    async fn open(&self) -> Result<Stream, SendFailure> {
        let wait = self.upstream.answer_timeout;
        let (tx, rx) = mpsc::channel(1);
        let mut client = self.upstream.client.clone();
        let acks = tokio::time::timeout(wait, client.report(ReceiverStream::new(rx)))
            .await
            .unwrap_or_else(|_| Err(self.upstream.diagnose.no_answer(wait)))
            .map_err(SendFailure::Call)?
            .into_inner();
        Ok((tx, acks))
    }

    /// Sends every report of one entry, each awaited before the next; returns the last accepted or duplicate
    /// acknowledgement, once each report is acknowledged or set aside.
    async fn send_entry(
        &mut self,
        queued: &Queued,
        cancel: &CancellationToken,
    ) -> Result<Option<LastAck>, SendFailure> {
        let entry = &queued.entry;
        let mut last = None;
        for text in &entry.reports {
            if cancel.is_cancelled() {
                return Err(SendFailure::Other("stopping".into()));
            }
            let report = match parse_spooled(text) {
                Ok(report) => report,
                // A damaged entry must not hold up everything behind it: set it aside and carry on.
                Err(why) => {
                    let (source, text_owned, reason) = (entry.source.clone(), text.clone(), format!("{why}\n"));
                    self.set_aside(move |agent| agent.rejected.damaged(&source, &text_owned, &reason)).await?;
                    tracing::warn!("rejected a damaged spool entry from {}: {why}", entry.source);
                    continue;
                }
            };
            let ack = match self.send_report(&report, &entry.source).await? {
                Ok(Some(ack)) => ack,
                Ok(None) => return Err(SendFailure::Other("the aggregator ended the stream".into())),
                // This agent's credential may not report for that provider: sending it again will not help.
                // Set it aside with the reason, and go on with the rest on a new stream.
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    self.answered = true;
                    self.stream = None;
                    let why = format!("permission denied: {}\n", status.message());
                    let period = report.period.unwrap_or_default();
                    self.refuse(&entry.source, &report.provider, period, report.revision, text, why).await?;
                    continue;
                }
                Err(status) => return Err(SendFailure::Call(status)),
            };
            self.answered = true;
            if let Some(acked) = self.settle(ack, &report, &entry.source, text).await? {
                last = Some(acked);
            }
        }
        Ok(last)
    }

    /// Sends one report on the open stream (opening one if there is none) and waits for its answer, under a span
    /// that records the outcome. The outer error is a failure to send; the inner result is the aggregator's answer
    /// (or the diagnosed lack of one), for the caller to judge.
    async fn send_report(&mut self, report: &Report, source: &str) -> Result<Answer, SendFailure> {
        let wait = self.upstream.answer_timeout;
        // A trace per report when tracing is on; the report carries its context (a stream carries many).
        let period = report.period.map(|p| p.to_string()).unwrap_or_default();
        let span = telemetry::send_span(&report.provider, report.site.as_deref(), &period, report.revision, source);
        if self.stream.is_none() {
            self.stream = Some(self.open().instrument(span.clone()).await?);
        }
        let (tx, acks) = self.stream.as_mut().expect("opened above");
        let mut wire = convert::report_to_wire(report);
        if let Some(trace) = telemetry::context_of(&span) {
            (wire.traceparent, wire.tracestate) = (trace.traceparent, trace.tracestate);
        }
        tx.send(wire).instrument(span.clone()).await.map_err(|_| {
            telemetry::record_outcome(&span, "failed");
            SendFailure::Other("the stream closed".to_owned())
        })?;
        let answer = tokio::time::timeout(wait, acks.message().instrument(span.clone()))
            .await
            .unwrap_or_else(|_| Err(self.upstream.diagnose.no_answer(wait)));
        telemetry::record_outcome(
            &span,
            &match &answer {
                Ok(Some(ack)) => ack.outcome().as_str_name().trim_start_matches("OUTCOME_").to_lowercase(),
                _ => "failed".to_owned(),
            },
        );
        Ok(answer)
    }

    /// Acts on the aggregator's acknowledgement of `report`: an acceptance or a duplicate is returned (the entry's
    /// latest), a rejection or a conflict is set aside with its reasons (`None`); an acknowledgement for another
    /// report, or without an outcome, fails the send.
    async fn settle(
        &self,
        ack: pb::ReportAck,
        report: &Report,
        source: &str,
        text: &str,
    ) -> Result<Option<LastAck>, SendFailure> {
        let period = ack.period.as_ref().map(convert::timestamp_from_wire).unwrap_or_default();
        if ack.provider != report.provider || ack.revision != report.revision {
            return Err(SendFailure::Other(format!(
                "the acknowledgement is for {} r{}, not the {} r{} just sent",
                ack.provider, ack.revision, report.provider, report.revision
            )));
        }
        match ack.outcome() {
            // A conflict will not go away by sending it again: set it aside with its reason, as a rejection.
            Outcome::Rejected | Outcome::Conflict => {
                let why: String =
                    ack.violations.iter().map(|v| format!("{} ({}): {}\n", v.field, v.rule, v.description)).collect();
                self.refuse(source, &ack.provider, period, ack.revision, text, why).await?;
                Ok(None)
            }
            Outcome::Unspecified => Err(SendFailure::Other("an acknowledgement with no outcome".into())),
            outcome => {
                let word = if outcome == Outcome::Duplicate { "duplicate" } else { "accepted" };
                tracing::info!("{word} {} {period} r{} from {source}: {}", ack.provider, ack.revision, ack.message);
                Ok(Some(LastAck {
                    at: Timestamp::now(),
                    outcome: word.into(),
                    provider: ack.provider,
                    period: period.to_string(),
                    revision: ack.revision,
                    cursor: ack.cursor,
                }))
            }
        }
    }

    /// Sets aside a report the aggregator refused (rejected, a conflict, or outside this agent's grant), and says
    /// so; if it cannot be written, the entry stays in the spool.
    async fn refuse(
        &self,
        source: &str,
        provider: &str,
        period: Timestamp,
        revision: u32,
        text: &str,
        why: String,
    ) -> Result<(), SendFailure> {
        let (src, prov, text_owned, reason) = (source.to_owned(), provider.to_owned(), text.to_owned(), why.clone());
        self.set_aside(move |agent| {
            let refused = Refused { source: &src, provider: &prov, period, revision };
            agent.rejected.report(&refused, &text_owned, &reason)
        })
        .await?;
        tracing::warn!(
            "rejected {provider} {period} r{revision} from {source}: {}",
            why.trim_end().replace('\n', "; ")
        );
        Ok(())
    }

    /// Runs `write` (a write into rejected/) on a blocking thread. A failure is logged with the folder and the
    /// error, and returned, so that the entry stays in the spool rather than be lost.
    async fn set_aside(
        &self,
        write: impl FnOnce(&Agent) -> std::io::Result<std::path::PathBuf> + Send + 'static,
    ) -> Result<(), SendFailure> {
        let agent = self.agent.clone();
        let written =
            tokio::task::spawn_blocking(move || write(&agent)).await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        written.map(drop).map_err(|e| {
            let dir = self.agent.rejected.dir().display();
            tracing::error!(path = %dir, error = %e, "cannot set a refused report aside; keeping it in the spool");
            SendFailure::Other(format!("cannot write a refused report into {dir}: {e}"))
        })
    }
}

/// The one report a spooled text holds, or why it is damaged (it does not parse, or holds other than one report).
fn parse_spooled(text: &str) -> Result<Report, String> {
    match json::parse("spool", text, &Mapping::default(), Timestamp::now()) {
        Ok(mut reports) if reports.len() == 1 => Ok(reports.remove(0)),
        Ok(_) => Err("not one report".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use sitrep_client::diagnose::Diagnosis;
    use sitrep_proto::v1::provider_service_server::{ProviderService, ProviderServiceServer};
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::rejected::Rejected;
    use crate::spool::{Appended, Spool};
    use crate::temp::temp_dir;

    /// An aggregator that accepts every report, except those of provider XXX, which it rejects.
    struct Fake;

    type AckStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReportAck, Status>> + Send>>;

    fn ack(report: pb::StatusReport) -> pb::ReportAck {
        let outcome = if report.provider == "XXX" { Outcome::Rejected } else { Outcome::Accepted };
        pb::ReportAck {
            outcome: outcome.into(),
            provider: report.provider,
            period: report.period,
            revision: report.revision,
            violations: vec![pb::Violation {
                field: "provider".into(),
                rule: "known_provider".into(),
                description: "not in the directory".into(),
            }],
            ..Default::default()
        }
    }

    #[tonic::async_trait]
    impl ProviderService for Fake {
        type ReportStream = AckStream;

        async fn report(&self, request: Request<Streaming<pb::StatusReport>>) -> Result<Response<AckStream>, Status> {
            let mut reports = request.into_inner();
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                while let Ok(Some(report)) = reports.message().await {
                    if tx.send(Ok(ack(report))).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }

        async fn submit(&self, request: Request<pb::StatusReport>) -> Result<Response<pb::ReportAck>, Status> {
            Ok(Response::new(ack(request.into_inner())))
        }
    }

    struct Plain;

    impl Diagnose for Plain {
        fn diagnose(&self, status: &tonic::Status) -> Diagnosis {
            Diagnosis { failure: Failure::Passing, message: status.message().to_owned() }
        }

        fn no_answer(&self, after: Duration) -> tonic::Status {
            tonic::Status::unavailable(format!("no answer within {after:?}"))
        }
    }

    async fn upstream() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ProviderServiceServer::new(Fake))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect_lazy();
        Upstream {
            client: ProviderServiceClient::new(sitrep_client::credentials::authed(channel, Default::default())),
            server: url,
            answer_timeout: Duration::from_secs(10),
            diagnose: Box::new(Plain),
        }
    }

    fn spooled(spool: &Spool, source: &str, providers: &[&str]) {
        let text: Vec<String> =
            providers.iter().map(|p| format!(r#"{{"provider":"{p}","revision":7,"values":{{}}}}"#)).collect();
        let reports =
            json::parse(source, &format!("[{}]", text.join(",")), &Mapping::default(), Timestamp::now()).unwrap();
        assert_eq!(spool.append(source, source, reports).unwrap(), Appended::Queued(providers.len()));
    }

    /// A refused report that cannot be written into rejected/ keeps its entry in the spool (nothing lost), and is
    /// set aside once it can be; the entry behind it waits its turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_report_that_cannot_be_set_aside_stays_in_the_spool() {
        let dir = temp_dir("sender-rejected");
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        spooled(&spool, "a.json", &["RJ7", "XXX"]);
        spooled(&spool, "b.json", &["RVR"]);
        // A file where the folder should be: nothing can be written into rejected/ yet.
        let blocked = dir.path().join("rejected");
        std::fs::write(&blocked, b"").unwrap();
        let agent = Arc::new(Agent::new(spool, Rejected::new(blocked.clone()), Mapping::default(), None));
        let cancel = CancellationToken::new();
        let sender = tokio::spawn({
            let (agent, cancel, upstream) = (agent.clone(), cancel.clone(), upstream().await);
            async move { Sender::new(agent, upstream).run(&cancel, true).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!sender.is_finished());
        assert_eq!(agent.spool.waiting(), 3, "a.json is kept whole, and b.json waits behind it");

        std::fs::remove_file(&blocked).unwrap();
        tokio::time::timeout(Duration::from_secs(20), sender).await.unwrap().unwrap().unwrap();
        assert_eq!(agent.spool.waiting(), 0);
        // Named by its file, provider, period (the hour it was read in) and revision.
        let mut names: Vec<String> = std::fs::read_dir(&blocked)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let stem = names[0].strip_suffix(".json").unwrap();
        assert!(stem.starts_with("a.json.XXX-") && stem.ends_with("-r7"), "{names:?}");
        assert_eq!(names, [format!("{stem}.json"), format!("{stem}.reason.txt")]);
        let reason = std::fs::read_to_string(blocked.join(format!("{stem}.reason.txt"))).unwrap();
        assert_eq!(reason, "provider (known_provider): not in the directory\n");
        let status = Spool::open(&dir.path().join("spool")).unwrap().status().unwrap();
        assert_eq!(status.last_ack.map(|a| a.provider), Some("RVR".to_owned()));
    }
}
