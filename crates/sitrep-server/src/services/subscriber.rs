//! `SubscriberService`: one session task per subscription, turning the Hub's events into a gap-free stream.
//!
//! A session registers with the Hub *before* it reads the store (snapshot, or catch-up from a resume cursor), then
//! forwards queued events whose cursor is past what it has already sent. Every event is therefore either in what
//! it read from the store or in its queue, and none is sent twice. If the Hub cuts the session loose (its queue
//! overflowed because the client was not reading, or the log started a new epoch), the session sends a `Reset`
//! and a fresh `Snapshot` and carries on: the subscriber is resynced, never silently skipped. Heartbeats carry the
//! cursor reached, including events the filter left out, so resuming from a heartbeat is cheap and exact.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sitrep_core::{Cursor, Event};
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::reset::Reason;
use sitrep_store::{Read, ResetReason};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::subscriber_transport::OutUpdate;
use super::{Context, ResolvedFilter};
use crate::convert::{event_to_wire, snapshot_to_wire, timestamp_to_wire};
use crate::error;
use crate::hub::{HubEvent, Kicked, PictureState, Subscription};

/// Updates buffered between a session and the gRPC transport.
const OUTBOUND_BUFFER: usize = 16;
/// Events read from the store per catch-up round trip.
const CATCH_UP_BATCH: usize = 512;
/// How long a new subscription waits for the Hub to know its place in the log.
const HUB_READY_WAIT: Duration = Duration::from_secs(10);
/// How long a stream's final status may wait for room in the outbound buffer.
const FINAL_SEND: Duration = Duration::from_secs(1);

pub struct SubscriberApi {
    ctx: Arc<Context>,
}

impl SubscriberApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        SubscriberApi { ctx }
    }
}

impl SubscriberApi {
    /// `SubscriberService.Subscribe` (served by [`super::subscriber_transport::SubscriberServer`]).
    pub async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<ReceiverStream<Result<OutUpdate, Status>>>, Status> {
        let peer = request.remote_addr();
        let req = request.into_inner();
        let filter = self.ctx.resolve(req.filter.as_ref())?;
        let heartbeat = match req.heartbeat_seconds {
            0 => self.ctx.subscribers.default_heartbeat_seconds,
            s @ 1..=300 => s,
            s => {
                return Err(error::invalid_field(
                    "heartbeat_seconds",
                    "range",
                    format!("heartbeat_seconds = {s} is outside 1..=300"),
                ));
            }
        };
        let resume = (!req.resume_from.is_empty()).then_some(req.resume_from);
        tracing::info!(?peer, resume = resume.as_deref(), "subscriber connected");
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let session = Session { ctx: self.ctx.clone(), filter, heartbeat: Duration::from_secs(heartbeat.into()), tx };
        self.ctx.tasks.spawn(async move {
            let end = session.run(resume).await;
            match end {
                End::ClientGone => tracing::info!(?peer, "subscriber disconnected"),
                End::Shutdown => {
                    // Say why the stream ends, so the client resumes elsewhere; a client that does not read within
                    // a second gets its stream cut (its transport error says as much).
                    let status = Status::unavailable("sitrep is shutting down; resume from your last cursor");
                    let _ = tokio::time::timeout(FINAL_SEND, session.tx.send(Err(status))).await;
                    tracing::debug!(?peer, "subscriber stream closed for shutdown");
                }
                End::Failed(status) => {
                    tracing::warn!(?peer, %status, "subscriber stream failed");
                    let _ = tokio::time::timeout(FINAL_SEND, session.tx.send(Err(status))).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Why a session ended.
enum End {
    ClientGone,
    Shutdown,
    Failed(Status),
}

struct Session {
    ctx: Arc<Context>,
    filter: ResolvedFilter,
    heartbeat: Duration,
    tx: mpsc::Sender<Result<OutUpdate, Status>>,
}

fn update(kind: pb::update::Kind) -> pb::Update {
    pb::Update { kind: Some(kind) }
}

fn status_update(state: &PictureState) -> pb::Update {
    update(pb::update::Kind::Status(pb::PictureStatus {
        degraded: state.degraded,
        message: state.message.clone(),
        since: Some(timestamp_to_wire(state.since)),
    }))
}

impl Session {
    async fn run(&self, resume: Option<String>) -> End {
        match self.serve(resume).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// Registers with the Hub once it knows its place in the log (waiting a little at start-up).
    async fn register(&self) -> Result<Subscription, End> {
        let ready = tokio::select! {
            _ = self.ctx.cancel.cancelled() => return Err(End::Shutdown),
            ready = self.ctx.hub.ready(HUB_READY_WAIT) => ready,
        };
        if !ready {
            let text = "sitrep has not caught up with its event log yet (is its store reachable?); retry shortly";
            return Err(End::Failed(Status::unavailable(text)));
        }
        Ok(self.ctx.hub.subscribe())
    }

    async fn serve(&self, resume: Option<String>) -> Result<std::convert::Infallible, End> {
        let mut sub = self.register().await?;
        let mut cursor = match resume.as_deref().map(Cursor::parse) {
            None => self.send_snapshot().await?,
            Some(None) => self.resync(Reason::OtherEpoch, "the resume cursor is not one sitrep issued").await?,
            Some(Some(from)) => match self.catch_up_fully(from, &mut sub).await? {
                Ok(reached) => reached,
                Err(reason) => {
                    let (reason, text) = match reason {
                        ResetReason::TooOld => {
                            (Reason::CursorTooOld, "the event log no longer holds the events after the resume cursor")
                        }
                        ResetReason::OtherEpoch => {
                            (Reason::OtherEpoch, "the resume cursor belongs to another epoch of the event log")
                        }
                        ResetReason::Ahead => (Reason::CursorAhead, "the resume cursor is ahead of the event log"),
                    };
                    self.resync(reason, text).await?
                }
            },
        };
        let mut status = self.ctx.hub.status();
        if status.borrow_and_update().degraded {
            let state = status.borrow().clone();
            self.send(status_update(&state)).await?;
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => return Err(End::Shutdown),
                event = sub.recv() => match event {
                    Some(event) if event.event.cursor.epoch != cursor.epoch => {
                        sub = self.register().await?;
                        cursor = self.resync(Reason::OtherEpoch, "the event log started a new epoch").await?;
                        heartbeat.reset();
                    }
                    Some(event) if event.event.cursor.pos <= cursor.pos => {}
                    Some(event) => {
                        cursor = event.event.cursor.clone();
                        if self.send_event(&event.event, Some(&event)).await? {
                            heartbeat.reset();
                        }
                    }
                    None => {
                        let (reason, text) = match sub.kicked() {
                            Kicked::No => return Err(End::Shutdown),
                            Kicked::Lagged => (Reason::SlowSubscriber, "this subscriber fell behind and its queue overflowed"),
                            Kicked::LogReset(ResetReason::OtherEpoch) => (Reason::OtherEpoch, "the event log started a new epoch"),
                            Kicked::LogReset(ResetReason::TooOld) => (Reason::CursorTooOld, "the event log was trimmed past the aggregator's position"),
                            Kicked::LogReset(ResetReason::Ahead) => (Reason::CursorAhead, "the event log is behind the aggregator's position (it was reset)"),
                            Kicked::Resync => (Reason::Resync, "the aggregator resynchronised with the event log"),
                        };
                        tracing::info!(?reason, "resyncing subscriber");
                        sub = self.register().await?;
                        cursor = self.resync(reason, text).await?;
                        heartbeat.reset();
                    }
                },
                Ok(()) = status.changed() => {
                    let state = status.borrow_and_update().clone();
                    self.send(status_update(&state)).await?;
                }
                _ = heartbeat.tick() => {
                    let beat = pb::Heartbeat { cursor: cursor.to_string(), server_time: Some(timestamp_to_wire(sitrep_core::Timestamp::now())) };
                    self.send(update(pb::update::Kind::Heartbeat(beat))).await?;
                }
            }
        }
    }

    async fn send(&self, update: pb::Update) -> Result<(), End> {
        self.send_out(OutUpdate::Message(update)).await
    }

    async fn send_out(&self, update: OutUpdate) -> Result<(), End> {
        tokio::select! {
            _ = self.ctx.cancel.cancelled() => Err(End::Shutdown),
            sent = self.tx.send(Ok(update)) => sent.map_err(|_| End::ClientGone),
        }
    }

    /// Sends the event if the filter selects it; returns whether it was sent. An event from the Hub is sent
    /// in its shared encoding when the subscriber takes every metric.
    async fn send_event(&self, event: &Event, shared: Option<&HubEvent>) -> Result<bool, End> {
        if !self.filter.providers.contains(&event.provider) {
            return Ok(false);
        }
        if let (None, Some(shared)) = (&self.filter.metrics, shared) {
            let bytes = shared
                .encoded(|e| update(pb::update::Kind::Event(event_to_wire(&self.ctx.rules, e))).encode_to_vec().into());
            self.send_out(OutUpdate::Encoded(bytes)).await?;
            return Ok(true);
        }
        let wire = match &self.filter.metrics {
            None => event_to_wire(&self.ctx.rules, event),
            Some(metrics) => {
                let mut kept = event.clone();
                if !kept.retain_metrics(Some(metrics)) {
                    return Ok(false);
                }
                event_to_wire(&self.ctx.rules, &kept)
            }
        };
        self.send(update(pb::update::Kind::Event(wire))).await?;
        Ok(true)
    }

    async fn send_snapshot(&self) -> Result<Cursor, End> {
        let snap = self.ctx.store.snapshot(&self.filter.providers).await.map_err(|e| End::Failed(error::store(e)))?;
        let wire = snapshot_to_wire(&self.ctx.rules, &snap, self.filter.metrics.as_ref());
        self.send(update(pb::update::Kind::Snapshot(wire))).await?;
        Ok(snap.cursor)
    }

    async fn resync(&self, reason: Reason, text: &str) -> Result<Cursor, End> {
        let reset = pb::Reset { reason: reason as i32, message: text.to_owned() };
        self.send(update(pb::update::Kind::Reset(reset))).await?;
        self.send_snapshot().await
    }

    /// Catches up from `from`. A long backlog can take long enough to send that the live queue overflows
    /// meanwhile; the log still holds what overflowed, so register afresh and catch up again (a few times) rather
    /// than resetting a subscriber that is doing exactly what it should.
    async fn catch_up_fully(&self, from: Cursor, sub: &mut Subscription) -> Result<Result<Cursor, ResetReason>, End> {
        let mut from = from;
        for _ in 0..3 {
            match self.catch_up(from).await? {
                Ok(reached) if sub.kicked() == Kicked::Lagged => {
                    *sub = self.register().await?;
                    from = reached;
                }
                other => return Ok(other),
            }
        }
        self.catch_up(from).await
    }

    /// Sends every stored event after `from`. `Ok(Err(reason))` if the log cannot serve that cursor.
    async fn catch_up(&self, from: Cursor) -> Result<Result<Cursor, ResetReason>, End> {
        let mut cursor = from;
        loop {
            let read = self.ctx.store.read(&cursor, CATCH_UP_BATCH, Duration::ZERO).await;
            match read.map_err(|e| End::Failed(error::store(e)))? {
                Read::Reset(reason) => return Ok(Err(reason)),
                Read::Events(events) if events.is_empty() => return Ok(Ok(cursor)),
                Read::Events(events) => {
                    for e in &events {
                        self.send_event(e, None).await?;
                    }
                    cursor = events.last().expect("non-empty").cursor.clone();
                }
            }
        }
    }
}
