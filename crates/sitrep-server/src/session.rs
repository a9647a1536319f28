//! A subscription session: one task per subscriber, turning the Hub's events into a gap-free sequence of
//! [`Out`] items. gRPC `Subscribe` and the browser's Server-Sent Events both run it and only encode differently.
//!
//! A fresh subscription registers with the Hub and takes its snapshot from the Hub's picture in the same moment,
//! so the snapshot (at cursor C) and the queue (every event after C) are exactly the log. The snapshot is sent in
//! parts of [`SNAPSHOT_PART`] providers, the first with the rollups, so the first byte leaves at once however large
//! the picture is. A resuming subscription registers (learning the Hub's cursor H and the rollups as of H), sends
//! the events after its cursor up to H from the store, the last of them carrying the rollups as of H, then forwards
//! queued events past what it has sent. Every event is therefore sent once. If the Hub cuts the session loose (its
//! queue overflowed because the client was not reading, or the log started a new epoch), the session sends a reset
//! and a fresh snapshot and carries on: the subscriber is resynced, never silently skipped. Heartbeats carry the
//! cursor reached, including events the filter left out, so resuming from a heartbeat is cheap and exact. An event
//! the filter leaves out still moves the totals of scopes the subscriber shares with its provider (a region, the
//! nation): those go out as [`Out::Rollups`].

use std::sync::Arc;
use std::time::Duration;

use sitrep_core::Scope;
use sitrep_core::rollup::ScopeRollup;
use sitrep_core::{Cursor, Event, PictureSnapshot, ProviderLive};
use sitrep_store::{Read, ResetReason};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::context::{Context, ResolvedFilter};
use crate::error::Error;
use crate::health::PictureState;
use crate::hub::{HubEvent, Joined, Subscription};
use crate::resync::Resync;

/// Items buffered between a session and its transport.
const OUTBOUND_BUFFER: usize = 16;
/// Events read from the store per catch-up round trip.
const CATCH_UP_BATCH: usize = 512;
/// How long a new subscription waits for the Hub to know its place in the log.
const HUB_READY_WAIT: Duration = Duration::from_secs(10);
/// How long a stream's final status may wait for room in the outbound buffer.
const FINAL_SEND: Duration = Duration::from_secs(1);
/// Providers per part of a snapshot.
pub const SNAPSHOT_PART: usize = 250;

/// An event for one subscriber: the Hub's, shared by everyone who takes every metric, or its own filtered copy.
pub enum OutEvent {
    Shared(Arc<HubEvent>),
    Own(Box<Event>),
}

impl OutEvent {
    pub fn event(&self) -> &Event {
        match self {
            OutEvent::Shared(e) => &e.event,
            OutEvent::Own(e) => e,
        }
    }
}

/// One part of a snapshot: the first part carries the rollups; `more` says further parts (with the same cursor)
/// follow.
pub struct SnapshotPart {
    pub cursor: Cursor,
    pub providers: Vec<Arc<ProviderLive>>,
    pub rollups: Vec<ScopeRollup>,
    pub more: bool,
}

/// What a session sends, in order.
pub enum Out {
    Snapshot(Box<SnapshotPart>),
    Event(OutEvent),
    Heartbeat(Cursor),
    /// Always followed by a snapshot.
    Reset(Resync, &'static str),
    /// Rollups of scopes the subscriber follows, moved by an event of a provider outside its filter, with the
    /// cursor that event reached.
    Rollups(Cursor, Vec<ScopeRollup>),
    Status(PictureState),
}

/// The sending end a session writes to: items, then possibly one final error (shutdown, or a failure).
pub type Outbound = mpsc::Sender<Result<Out, Error>>;

/// Starts a session for `filter`, resuming after `resume` if given (a cursor text, which may be malformed: that
/// is answered with a reset). Returns the receiving end; the session ends when it is dropped.
pub fn start(
    ctx: Arc<Context>,
    filter: ResolvedFilter,
    heartbeat: Duration,
    resume: Option<String>,
    who: String,
    transport: crate::metrics::Transport,
    ticket: crate::limit::Ticket,
) -> mpsc::Receiver<Result<Out, Error>> {
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    let tasks = ctx.tasks.clone();
    let followed = filter.scopes(&ctx.rules);
    let stall = Duration::from_secs(ctx.subscribers.stall_seconds);
    let session = Session { ctx, filter, followed, heartbeat, stall, tx, transport };
    tasks.spawn(async move {
        // Counted as one of its principal's open subscriptions until it ends.
        let _ticket = ticket;
        match session.run(resume).await {
            End::ClientGone => tracing::info!(%who, "subscriber disconnected"),
            End::Stalled => tracing::warn!(%who, stall = ?session.stall, "subscriber disconnected: it stopped reading"),
            End::Shutdown => {
                // Say why the stream ends, so the client resumes elsewhere; a client that does not read within
                // a second gets its stream cut (its transport error says as much).
                let status = Error::unavailable("sitrep is shutting down; resume from your last cursor");
                let _ = tokio::time::timeout(FINAL_SEND, session.tx.send(Err(status))).await;
                tracing::debug!(%who, "subscriber stream closed for shutdown");
            }
            End::Failed(status) => {
                tracing::warn!(%who, %status, "subscriber stream failed");
                let _ = tokio::time::timeout(FINAL_SEND, session.tx.send(Err(status))).await;
            }
        }
    });
    rx
}

/// Why a session ended.
enum End {
    ClientGone,
    Shutdown,
    Failed(Error),
    /// Its stream stayed full for the stall time: the subscriber stopped reading.
    Stalled,
}

struct Session {
    ctx: Arc<Context>,
    filter: ResolvedFilter,
    /// The scopes of the filter's providers (every scope without a filter).
    followed: Vec<Scope>,
    heartbeat: Duration,
    /// How long a send may wait on a full stream before the subscriber counts as gone.
    stall: Duration,
    tx: Outbound,
    /// What it is served over: named on delivery spans.
    transport: crate::metrics::Transport,
}

impl Session {
    async fn run(&self, resume: Option<String>) -> End {
        match self.serve(resume).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    /// Waits (a little, at start-up) until the Hub has its picture, then registers with `how`.
    async fn register<T>(&self, how: impl Fn() -> Option<T>) -> Result<T, End> {
        loop {
            let ready = tokio::select! {
                _ = self.ctx.cancel.cancelled() => return Err(End::Shutdown),
                ready = self.ctx.hub.ready(HUB_READY_WAIT) => ready,
            };
            if !ready {
                let text = "sitrep has not caught up with its event log yet (is its store reachable?); retry shortly";
                return Err(End::Failed(Error::unavailable(text)));
            }
            // The picture may have been dropped (the log reset) between being ready and registering: wait again.
            if let Some(registered) = how() {
                return Ok(registered);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Registers and sends a fresh snapshot of the filter's providers; returns the subscription and its cursor.
    async fn subscribe_with_snapshot(&self) -> Result<(Subscription, Cursor), End> {
        let (sub, mut snap) = self.register(|| self.ctx.hub.subscribe(&self.filter.providers)).await?;
        self.filter.retain_readable(&mut snap.rollups);
        let cursor = snap.cursor.clone();
        self.send_snapshot(snap).await?;
        Ok((sub, cursor))
    }

    /// Subscribes (or resumes), then forwards the Hub's events. Snapshots, catch-ups and resyncs run boxed: they
    /// are rare, and inline they would make every idle session's state as large as their largest step.
    async fn serve(&self, resume: Option<String>) -> Result<std::convert::Infallible, End> {
        let (mut sub, mut cursor) = match resume.as_deref().map(Cursor::parse) {
            None => Box::pin(self.subscribe_with_snapshot()).await?,
            Some(None) => {
                Box::pin(self.resync(Resync::OtherEpoch, "the resume cursor is not one sitrep issued")).await?
            }
            Some(Some(from)) => match Box::pin(self.catch_up_fully(from)).await? {
                Ok(joined) => joined,
                Err(reason) => {
                    let text = match reason {
                        ResetReason::TooOld => "the event log no longer holds the events after the resume cursor",
                        ResetReason::OtherEpoch => "the resume cursor belongs to another epoch of the event log",
                        ResetReason::Ahead => "the resume cursor is ahead of the event log",
                    };
                    Box::pin(self.resync(reason.into(), text)).await?
                }
            },
        };
        let mut status = self.ctx.health.status();
        if status.borrow_and_update().degraded {
            let state = status.borrow().clone();
            self.send(Out::Status(state)).await?;
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => return Err(End::Shutdown),
                // A client that left is noticed now, not at the next send.
                _ = self.tx.closed() => return Err(End::ClientGone),
                event = sub.recv() => match event {
                    Some(event) if event.event.cursor.epoch != cursor.epoch => {
                        (sub, cursor) = Box::pin(self.resync(Resync::OtherEpoch, "the event log started a new epoch")).await?;
                        heartbeat.reset();
                    }
                    Some(event) if event.event.cursor.pos <= cursor.pos => {}
                    Some(event) => {
                        cursor = event.event.cursor.clone();
                        if self.send_event(OutEvent::Shared(event)).await? {
                            heartbeat.reset();
                        }
                    }
                    None => {
                        let Some(reason) = sub.kicked() else { return Err(End::Shutdown) };
                        let text = match reason {
                            Resync::SlowSubscriber => "this subscriber fell behind and its queue overflowed",
                            Resync::OtherEpoch => "the event log started a new epoch",
                            Resync::CursorTooOld => "the event log was trimmed past the aggregator's position",
                            Resync::CursorAhead => "the event log is behind the aggregator's position (it was reset)",
                            Resync::Resync => "the aggregator resynchronised with the event log",
                        };
                        tracing::info!(?reason, "resyncing subscriber");
                        (sub, cursor) = Box::pin(self.resync(reason, text)).await?;
                        heartbeat.reset();
                    }
                },
                Ok(()) = status.changed() => {
                    let state = status.borrow_and_update().clone();
                    self.send(Out::Status(state)).await?;
                }
                _ = heartbeat.tick() => self.send(Out::Heartbeat(cursor.clone())).await?,
            }
        }
    }

    async fn send(&self, out: Out) -> Result<(), End> {
        tokio::select! {
            _ = self.ctx.cancel.cancelled() => Err(End::Shutdown),
            sent = tokio::time::timeout(self.stall, self.tx.send(Ok(out))) => match sent {
                Ok(sent) => sent.map_err(|_| End::ClientGone),
                Err(_) => Err(End::Stalled),
            },
        }
    }

    /// Sends the event if the filter selects it (trimmed to the filter's metrics), or else the rollups it moved of
    /// scopes the subscriber follows (a region or the nation it shares with providers outside its filter); returns
    /// whether anything was sent.
    async fn send_event(&self, event: OutEvent) -> Result<bool, End> {
        let e = event.event();
        if !self.filter.providers.contains(&e.provider) {
            let counts = e.moves_counts();
            let rollups: Vec<ScopeRollup> = e
                .rollups
                .iter()
                .filter(|r| self.followed.contains(&r.scope))
                .filter_map(|r| {
                    let mut r = r.clone();
                    r.retain_metrics(self.filter.metrics.as_ref());
                    (counts || !r.metrics.is_empty()).then_some(r)
                })
                .collect();
            if rollups.is_empty() {
                return Ok(false);
            }
            self.send(Out::Rollups(e.cursor.clone(), rollups)).await?;
            return Ok(true);
        }
        // A traced report's event is delivered under a span of its trace (none otherwise, or when tracing is off).
        let delivering = crate::telemetry::deliver_span(e, self.transport);
        // An event carries the totals of every scope its provider rolls up into; a caller that may not read some
        // of them gets its own copy without them.
        let unreadable = e.rollups.iter().any(|r| !self.followed.contains(&r.scope));
        let out = match (&self.filter.metrics, unreadable) {
            (None, false) => event,
            (metrics, _) => {
                let mut kept = event.event().clone();
                kept.rollups.retain(|r| self.followed.contains(&r.scope));
                if !kept.retain_metrics(metrics.as_ref()) {
                    return Ok(false);
                }
                OutEvent::Own(Box::new(kept))
            }
        };
        tracing::Instrument::instrument(self.send(Out::Event(out)), delivering).await?;
        Ok(true)
    }

    /// Sends `snap` in parts of [`SNAPSHOT_PART`] providers, the rollups with the first.
    async fn send_snapshot(&self, snap: PictureSnapshot) -> Result<(), End> {
        let PictureSnapshot { cursor, providers, mut rollups } = snap;
        let mut parts = providers.chunks(SNAPSHOT_PART).peekable();
        if parts.peek().is_none() {
            let part = SnapshotPart { cursor, providers: Vec::new(), rollups, more: false };
            return self.send(Out::Snapshot(Box::new(part))).await;
        }
        while let Some(chunk) = parts.next() {
            let more = parts.peek().is_some();
            let part = SnapshotPart {
                cursor: cursor.clone(),
                providers: chunk.to_vec(),
                rollups: std::mem::take(&mut rollups),
                more,
            };
            self.send(Out::Snapshot(Box::new(part))).await?;
        }
        Ok(())
    }

    async fn resync(&self, reason: Resync, text: &'static str) -> Result<(Subscription, Cursor), End> {
        self.ctx.metrics.reset(reason);
        self.send(Out::Reset(reason, text)).await?;
        self.subscribe_with_snapshot().await
    }

    /// Catches up from `from` and joins the Hub's queue. A long backlog can take long enough to send that the
    /// live queue overflows meanwhile; the log still holds what overflowed, so join afresh and catch up again (a
    /// few times) rather than resetting a subscriber that is doing exactly what it should.
    async fn catch_up_fully(&self, from: Cursor) -> Result<Result<(Subscription, Cursor), ResetReason>, End> {
        let mut from = from;
        for attempt in 0..4 {
            let joined = self.register(|| self.ctx.hub.join(&self.followed)).await?;
            match self.catch_up(from, joined).await? {
                Ok((sub, reached)) if sub.kicked() == Some(Resync::SlowSubscriber) && attempt < 3 => from = reached,
                other => return Ok(other),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Sends every stored event after `from` up to the Hub's cursor when it joined, the last of them carrying the
    /// rollups as of that cursor (or, when the filter leaves that event out, those rollups on their own).
    /// `Ok(Err(reason))` if the log cannot serve `from`.
    async fn catch_up(&self, from: Cursor, joined: Joined) -> Result<Result<(Subscription, Cursor), ResetReason>, End> {
        let Joined { subscription, cursor: until, rollups } = joined;
        if from.epoch != until.epoch {
            return Ok(Err(ResetReason::OtherEpoch));
        }
        let mut cursor = from;
        let mut rollups = Some(rollups);
        loop {
            let read = self.ctx.store.read(&cursor, CATCH_UP_BATCH, Duration::ZERO).await;
            match read.map_err(|e| End::Failed(Error::store(e)))? {
                Read::Reset(reason) => return Ok(Err(reason)),
                // The end of the log, or the Hub's cursor reached: the queue has the rest.
                Read::Events(events) if events.is_empty() => return Ok(Ok((subscription, cursor))),
                Read::Events(events) => {
                    for mut e in events {
                        if e.cursor.pos > until.pos {
                            return Ok(Ok((subscription, cursor)));
                        }
                        cursor = e.cursor.clone();
                        let last = e.cursor.pos == until.pos;
                        if last {
                            e.rollups = rollups.take().unwrap_or_default();
                        }
                        let kept = last.then(|| e.rollups.clone());
                        if !self.send_event(OutEvent::Own(Box::new(e))).await?
                            && let Some(mut rollups) = kept
                        {
                            for r in &mut rollups {
                                r.retain_metrics(self.filter.metrics.as_ref());
                            }
                            self.send(Out::Rollups(cursor.clone(), rollups)).await?;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use sitrep_core::rollup::RollupValue;
    use sitrep_core::{Timestamp, Value};
    use sitrep_store::{Applied, conformance::report};

    /// What a resumed session sent, each item named by its event's place in the log (1 for the first event).
    #[derive(Debug, PartialEq)]
    enum Got {
        Event(usize),
        /// The scopes' codes.
        Rollups(usize, Vec<String>),
    }

    /// A scope's totals as a subscriber keeps them (as the wallboard does): the counts, and each figure that has
    /// a value. A message's rollup lists the figures it changed; one with no value has none now.
    #[derive(Debug, PartialEq, Default)]
    struct Kept {
        counts: (u32, u32, u32),
        figures: BTreeMap<String, RollupValue>,
    }

    fn keep(totals: &mut BTreeMap<Scope, Kept>, rollups: &[ScopeRollup]) {
        for r in rollups {
            let kept = totals.entry(r.scope.clone()).or_default();
            kept.counts = (r.providers, r.reporting, r.stale);
            for f in &r.metrics {
                match f.value {
                    Some(_) => kept.figures.insert(f.metric.to_string(), f.clone()),
                    None => kept.figures.remove(f.metric.as_str()),
                };
            }
        }
    }

    /// The log a subscriber filtered to system QWE resumes into: RJ7, RVR and RAX are in QWE; RGT is not, and
    /// shares only the nation with them.
    const LOG: [&str; 7] = ["RJ7", "RVR", "RGT", "RJ7", "RVR", "RGT", "RAX"];

    fn qwe(ctx: &Context) -> ResolvedFilter {
        let who = crate::auth::Principal::anonymous();
        let qwe = crate::context::FilterSpec { systems: vec!["QWE".into()], ..Default::default() };
        ctx.resolve(Some(&qwe), &who).unwrap()
    }

    /// A subscriber filtered to system QWE resumes after the `resume`th event of [`LOG`] while the Hub, which
    /// tails the store and may lag it (on a busy machine, by several events), has folded `hub_at` of them; the
    /// Hub folds the rest once the subscriber has registered. Returns what the session sent, having checked what
    /// holds however far behind the Hub is: each missed event of the filter's providers once and in order, the
    /// others' only as rollups of scopes it follows, cursors in log order, nothing more, and the subscriber's
    /// totals (those it had at `resume`, updated by what it was sent) those of the whole log.
    async fn resume_with_hub_at(resume: usize, hub_at: usize) -> Vec<Got> {
        assert!(resume >= 4 && hub_at >= 4, "the Hub starts four events in");
        let config = crate::config::Config::default();
        let rules = sitrep_core::Rules::demo();
        let store = crate::app::store_from_config(&config, &rules).unwrap();
        let auth = crate::auth::Authenticator::open();
        let app =
            crate::App::new(&config, store.clone(), rules.clone(), auth, tokio_util::sync::CancellationToken::new());
        let ctx = app.ctx.clone();
        let selection = qwe(&ctx).providers;
        let followed = rules.scopes_for(&selection);
        let mut cursors = Vec::new();
        let mut totals = BTreeMap::new();
        for (i, provider) in LOG.iter().enumerate() {
            let revision = LOG[..i].iter().filter(|p| *p == provider).count() as u32 + 1;
            let r = report(provider, 0, revision, &[("ed.in_department", Value::Number(10.0 + i as f64))]);
            let Applied::Accepted(e) = store.apply(&r, Timestamp::now()).await.unwrap() else { panic!("accepted") };
            cursors.push(e.cursor);
            if i + 1 == 4 {
                ctx.hub.load_by_hand(store.as_ref()).await;
            }
            if i + 1 == resume {
                // The totals the subscriber had when it left.
                let then = crate::hub::Hub::new(rules.clone(), 1, Default::default());
                then.load_by_hand(store.as_ref()).await;
                keep(&mut totals, &then.snapshot(&selection).unwrap().rollups);
            }
        }
        ctx.hub.fold_by_hand(store.as_ref(), hub_at - 4).await;

        let resume_at = Some(cursors[resume - 1].to_string());
        let ticket = ctx.subscriptions.open("test").unwrap();
        let mut rx = start(
            ctx.clone(),
            qwe(&ctx),
            Duration::from_secs(3600),
            resume_at,
            "test".into(),
            crate::metrics::Transport::Grpc,
            ticket,
        );
        while ctx.hub.subscriber_count() == 0 {
            tokio::task::yield_now().await;
        }
        ctx.hub.fold_by_hand(store.as_ref(), LOG.len() - hub_at).await;

        let place = |c: &Cursor| 1 + cursors.iter().position(|k| k == c).expect("a cursor of the log");
        let mut got = Vec::new();
        let mut reached = resume;
        while reached < LOG.len() {
            let out = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            let out = out.unwrap_or_else(|_| panic!("the session went quiet after sending {got:?}"));
            let (at, rollups) = match out.expect("the session runs").expect("no error") {
                Out::Event(e) => {
                    let e = e.event();
                    let at = place(&e.cursor);
                    assert!(selection.contains(&e.provider), "{} is not in the filter", e.provider);
                    got.push(Got::Event(at));
                    (at, e.rollups.clone())
                }
                Out::Rollups(cursor, rollups) => {
                    let at = place(&cursor);
                    assert!(!selection.contains(LOG[at - 1]), "{}'s event came as rollups", LOG[at - 1]);
                    assert!(rollups.iter().all(|r| followed.contains(&r.scope)), "{rollups:?}");
                    got.push(Got::Rollups(at, rollups.iter().map(|r| r.scope.code.clone()).collect()));
                    (at, rollups)
                }
                _ => panic!("only events and rollups, after {got:?}"),
            };
            assert!(at > reached, "{got:?}: out of log order, or twice");
            reached = at;
            keep(&mut totals, &rollups);
        }
        let quiet = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
        assert!(quiet.is_err(), "nothing more after the log's end");
        let missed: Vec<Got> =
            (resume + 1..=LOG.len()).filter(|n| selection.contains(LOG[n - 1])).map(Got::Event).collect();
        let events: Vec<&Got> = got.iter().filter(|g| matches!(g, Got::Event(_))).collect();
        assert_eq!(events, missed.iter().collect::<Vec<_>>(), "every missed event of the filter's providers once");
        let mut now = BTreeMap::new();
        keep(&mut now, &ctx.hub.snapshot(&selection).unwrap().rollups);
        assert_eq!(totals, now, "the subscriber's totals are the log's after {got:?}");
        got
    }

    /// However far the Hub is behind the store when a filtered subscriber resumes, it gets every event it missed
    /// once and in order, and its totals end current; whether another provider's report in between reaches it as
    /// rollups depends on where the Hub was, and each way is by design.
    #[tokio::test]
    async fn a_resumed_filtered_subscriber_misses_nothing_however_far_behind_the_hub_is() {
        use Got::{Event, Rollups};
        let eng = || vec!["ENG".to_owned()];
        let all = || vec!["QWE".to_owned(), "Y56".to_owned(), "ENG".to_owned()];
        // The Hub has folded the whole log: all from the store, the last event carrying the totals as of the end;
        // RGT's event, whose rollups the log does not keep, is passed over (the last event's cover it).
        assert_eq!(resume_with_hub_at(4, 7).await, [Event(5), Event(7)]);
        // The catch-up ends on RGT's event, which the filter leaves out: every followed scope's totals as of it.
        assert_eq!(resume_with_hub_at(4, 6).await, [Event(5), Rollups(6, all()), Event(7)]);
        // RGT's event comes from the queue, as it would live: the totals it moved that the subscriber follows.
        assert_eq!(resume_with_hub_at(4, 5).await, [Event(5), Rollups(6, eng()), Event(7)]);
        assert_eq!(resume_with_hub_at(4, 4).await, [Event(5), Rollups(6, eng()), Event(7)]);
        // The Hub behind the resume cursor: the queue's events up to it are not sent again.
        assert_eq!(resume_with_hub_at(5, 4).await, [Rollups(6, eng()), Event(7)]);
    }

    /// An idle subscriber's memory is mostly the state of its session's task and of its stream's: both stay
    /// small because the rare, large steps (snapshots, catch-ups, resyncs) run boxed. (Inline, the session's state
    /// was 2,072 bytes; `sitrep bench --scenario sse` measures the whole cost per subscriber.)
    #[tokio::test]
    async fn an_idle_subscriber_task_state_stays_small() {
        let config = crate::config::Config::default();
        let rules = sitrep_core::Rules::demo();
        let store = crate::app::store_from_config(&config, &rules).unwrap();
        let auth = crate::auth::Authenticator::open();
        let app = crate::App::new(&config, store, rules, auth, tokio_util::sync::CancellationToken::new());
        let ctx = app.ctx.clone();
        let (tx, _rx) = mpsc::channel(1);
        let filter = ctx.resolve(None, &crate::auth::Principal::anonymous()).unwrap();
        let session = Session {
            ctx: ctx.clone(),
            filter,
            followed: Vec::new(),
            heartbeat: Duration::from_secs(1),
            stall: Duration::from_secs(60),
            tx,
            transport: crate::metrics::Transport::Grpc,
        };
        let run = std::mem::size_of_val(&session.run(None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let direct =
            std::mem::size_of_val(&crate::http::serve_direct(ctx, crate::transport::Connection::Plain(stream)));
        println!("session task state {run} bytes, direct stream task state {direct} bytes");
        assert!(run <= 1024, "session state {run} bytes");
        assert!(direct <= 1024, "direct stream state {direct} bytes");
    }

    /// The algorithm step by step, on a real [`MemoryStore`](sitrep_store::MemoryStore) and a Hub the test folds
    /// by hand (rather than letting it tail the store), so each test decides where the Hub is when the session
    /// registers: a snapshot joining the live queue, a resume whose queue overlaps what it read, a queue that
    /// overflows, cursors the log cannot serve, heartbeats (on tokio's paused clock), status and shutdown.
    mod algorithm {
        use super::*;
        use sitrep_core::cursor::Position;
        use sitrep_core::{Timestamp, Value};
        use sitrep_store::{Applied, MemoryOptions, MemoryStore, Store, conformance::report};

        /// An aggregator's context over a memory store, and the cursor of each event the test applied.
        struct Rig {
            app: crate::App,
            store: Arc<dyn Store>,
            cursors: Vec<Cursor>,
            applied: Vec<&'static str>,
        }

        /// An item a session sent, as the tests compare them.
        #[derive(Debug, PartialEq)]
        enum Seen {
            Snapshot { cursor: Cursor, rollups: bool, more: bool },
            Event(Cursor),
            Heartbeat(Cursor),
            Reset(Resync, &'static str),
            Rollups(Cursor),
            Status { degraded: bool },
        }

        fn seen(out: Out) -> Seen {
            match out {
                Out::Snapshot(part) => {
                    Seen::Snapshot { cursor: part.cursor, rollups: !part.rollups.is_empty(), more: part.more }
                }
                Out::Event(e) => Seen::Event(e.event().cursor.clone()),
                Out::Heartbeat(c) => Seen::Heartbeat(c),
                Out::Reset(reason, text) => Seen::Reset(reason, text),
                Out::Rollups(c, _) => Seen::Rollups(c),
                Out::Status(state) => Seen::Status { degraded: state.degraded },
            }
        }

        impl Rig {
            fn new(queue_capacity: usize, store: MemoryStore) -> Self {
                let mut config = crate::config::Config::default();
                config.subscribers.queue_capacity = queue_capacity;
                let store: Arc<dyn Store> = Arc::new(store);
                let rules = sitrep_core::Rules::demo();
                let auth = crate::auth::Authenticator::open();
                let cancel = tokio_util::sync::CancellationToken::new();
                let app = crate::App::new(&config, store.clone(), rules, auth, cancel);
                Rig { app, store, cursors: Vec::new(), applied: Vec::new() }
            }

            fn ctx(&self) -> &Arc<Context> {
                &self.app.ctx
            }

            /// Stores a report of `provider` (its next revision) and returns its event's cursor.
            async fn apply(&mut self, provider: &'static str) -> Cursor {
                let revision = self.applied.iter().filter(|p| **p == provider).count() as u32 + 1;
                let value = Value::Number(10.0 + self.applied.len() as f64);
                let r = report(provider, 0, revision, &[("ed.in_department", value)]);
                let Applied::Accepted(e) = self.store.apply(&r, Timestamp::now()).await.unwrap() else {
                    panic!("accepted")
                };
                self.applied.push(provider);
                self.cursors.push(e.cursor.clone());
                e.cursor
            }

            /// Four reports stored (RJ7, RVR, RGT, RJ7 again), and the Hub's picture loaded from them: where most
            /// of these tests start.
            async fn start_with_four_events(&mut self) {
                for p in ["RJ7", "RVR", "RGT", "RJ7"] {
                    self.apply(p).await;
                }
                self.ctx().hub.load_by_hand(self.store.as_ref()).await;
            }

            /// The `n`th event's cursor (1 for the first).
            fn at(&self, n: usize) -> Cursor {
                self.cursors[n - 1].clone()
            }

            /// Starts a session taking every provider (or system QWE's), and waits until it has registered.
            async fn open(&self, qwe_only: bool, heartbeat: Duration, resume: Option<String>) -> Rx {
                let ctx = self.ctx().clone();
                let filter = match qwe_only {
                    true => qwe(&ctx),
                    false => ctx.resolve(None, &crate::auth::Principal::anonymous()).unwrap(),
                };
                let ticket = ctx.subscriptions.open("test").unwrap();
                let rx = start(
                    ctx.clone(),
                    filter,
                    heartbeat,
                    resume,
                    "test".into(),
                    crate::metrics::Transport::Grpc,
                    ticket,
                );
                while ctx.hub.subscriber_count() == 0 {
                    tokio::task::yield_now().await;
                }
                rx
            }
        }

        type Rx = mpsc::Receiver<Result<Out, Error>>;

        /// The next item the session sends, within `wait` (on the paused clock, time only the session's own timers
        /// move).
        async fn next(rx: &mut Rx, wait: Duration) -> Seen {
            let out = tokio::time::timeout(wait, rx.recv()).await.expect("the session sends within the wait");
            seen(out.expect("the session runs").expect("no error"))
        }

        async fn take(rx: &mut Rx, n: usize) -> Vec<Seen> {
            let mut got = Vec::new();
            for _ in 0..n {
                got.push(next(rx, Duration::from_secs(5)).await);
            }
            got
        }

        async fn assert_quiet(rx: &mut Rx) {
            let more = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
            assert!(more.is_err(), "nothing more, got {:?}", more.map(|o| o.map(|o| o.map(seen))));
        }

        const HOUR: Duration = Duration::from_secs(3600);

        fn snapshot_at(cursor: Cursor) -> Seen {
            Seen::Snapshot { cursor, rollups: true, more: false }
        }

        /// A fresh subscriber registers while the Hub is two events behind the store: its snapshot is the Hub's
        /// picture (not the store's head), and the queue then brings exactly the events after it, in order, none
        /// twice, none missed at the join, and later ones as they come.
        #[tokio::test]
        async fn a_snapshot_joins_the_live_queue_without_a_gap_or_a_repeat() {
            let mut rig = Rig::new(64, MemoryStore::default());
            rig.start_with_four_events().await;
            rig.apply("RVR").await;
            rig.apply("RAX").await;
            let mut rx = rig.open(false, HOUR, None).await;
            assert_eq!(take(&mut rx, 1).await, [snapshot_at(rig.at(4))]);
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 2).await;
            rig.apply("RGT").await;
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 1).await;
            let events = (5..=7).map(|n| Seen::Event(rig.at(n))).collect::<Vec<_>>();
            assert_eq!(take(&mut rx, 3).await, events);
            assert_quiet(&mut rx).await;
        }

        /// A subscriber resumes at the log's head while the Hub is two events behind: its queue then brings those
        /// two again, at or below its cursor, and they are dropped; the next event is sent once.
        #[tokio::test]
        async fn queued_events_at_or_below_the_cursor_are_not_sent_again() {
            let mut rig = Rig::new(64, MemoryStore::default());
            rig.start_with_four_events().await;
            rig.apply("RVR").await;
            rig.apply("RAX").await;
            let mut rx = rig.open(false, HOUR, Some(rig.at(6).to_string())).await;
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 2).await;
            assert_quiet(&mut rx).await;
            rig.apply("RGT").await;
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 1).await;
            assert_eq!(take(&mut rx, 1).await, [Seen::Event(rig.at(7))]);
            assert_quiet(&mut rx).await;
        }

        /// The Hub cuts loose a subscriber whose queue overflowed (three events folded at once into a queue of
        /// one): whatever it was sent continues its snapshot in order, then it gets a reset saying why and a fresh
        /// snapshot at the Hub's cursor, and goes on live from there.
        #[tokio::test]
        async fn a_queue_overflow_is_a_reset_and_a_fresh_snapshot_never_a_gap() {
            let mut rig = Rig::new(1, MemoryStore::default());
            rig.start_with_four_events().await;
            let mut rx = rig.open(false, HOUR, None).await;
            assert_eq!(take(&mut rx, 1).await, [snapshot_at(rig.at(4))]);
            for p in ["RVR", "RAX", "RGT"] {
                rig.apply(p).await;
            }
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 3).await;
            // The one event the queue held may have reached the session before it saw it was cut loose.
            let mut got = take(&mut rx, 1).await;
            if got == [Seen::Event(rig.at(5))] {
                got = take(&mut rx, 1).await;
            }
            let text = "this subscriber fell behind and its queue overflowed";
            assert_eq!(got, [Seen::Reset(Resync::SlowSubscriber, text)]);
            assert_eq!(take(&mut rx, 1).await, [snapshot_at(rig.at(7))]);
            rig.apply("RJ7").await;
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 1).await;
            assert_eq!(take(&mut rx, 1).await, [Seen::Event(rig.at(8))]);
            assert_quiet(&mut rx).await;
        }

        /// A resume cursor the log cannot serve is answered with a reset naming why, then a snapshot at the Hub's
        /// cursor: never silence, never events that do not join up.
        #[tokio::test]
        async fn a_resume_the_log_cannot_serve_is_a_reset_then_a_snapshot() {
            // The log keeps three events, so the first of seven is gone.
            let mut rig = Rig::new(64, MemoryStore::new(MemoryOptions { event_log_capacity: 3, ..Default::default() }));
            for p in ["RJ7", "RVR", "RGT", "RJ7", "RVR", "RAX", "RGT"] {
                rig.apply(p).await;
            }
            rig.ctx().hub.load_by_hand(rig.store.as_ref()).await;
            let head = rig.at(7);
            let cases = [
                ("garbage".to_owned(), Resync::OtherEpoch, "the resume cursor is not one sitrep issued"),
                (
                    Cursor::new("elsewhere1", head.pos).to_string(),
                    Resync::OtherEpoch,
                    "the resume cursor belongs to another epoch of the event log",
                ),
                (
                    Cursor::new(head.epoch.clone(), Position(head.pos.0 + 1000, 0)).to_string(),
                    Resync::CursorAhead,
                    "the resume cursor is ahead of the event log",
                ),
                (
                    rig.at(1).to_string(),
                    Resync::CursorTooOld,
                    "the event log no longer holds the events after the resume cursor",
                ),
            ];
            for (resume, reason, text) in cases {
                let mut rx = rig.open(false, HOUR, Some(resume.clone())).await;
                let got = take(&mut rx, 2).await;
                assert_eq!(got, [Seen::Reset(reason, text), snapshot_at(head.clone())], "resuming from {resume}");
                drop(rx);
                while rig.ctx().hub.subscriber_count() > 0 {
                    tokio::task::yield_now().await;
                }
            }
        }

        /// Heartbeats come a full period after the last thing sent (a send resets the clock) and carry the cursor
        /// reached, so resuming from one is exact. On tokio's paused clock: no sleeping.
        #[tokio::test(start_paused = true)]
        async fn heartbeats_follow_a_period_of_silence_and_carry_the_cursor_reached() {
            let period = Duration::from_secs(30);
            let mut rig = Rig::new(64, MemoryStore::default());
            rig.start_with_four_events().await;
            let mut rx = rig.open(false, period, None).await;
            let start = tokio::time::Instant::now();
            assert_eq!(next(&mut rx, HOUR).await, snapshot_at(rig.at(4)));
            assert_eq!(next(&mut rx, HOUR).await, Seen::Heartbeat(rig.at(4)));
            assert_eq!(start.elapsed(), period, "one period after the snapshot");
            tokio::time::advance(Duration::from_secs(10)).await;
            rig.apply("RVR").await;
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 1).await;
            assert_eq!(next(&mut rx, HOUR).await, Seen::Event(rig.at(5)));
            assert_eq!(next(&mut rx, HOUR).await, Seen::Heartbeat(rig.at(5)));
            assert_eq!(start.elapsed(), period + Duration::from_secs(10) + period, "one period after the event");
        }

        /// A subscriber filtered to system QWE is sent nothing for an event that moves none of its figures, yet
        /// its next heartbeat carries that event's cursor: resuming from it does not read the event again.
        #[tokio::test(start_paused = true)]
        async fn a_heartbeat_carries_the_cursor_past_events_the_filter_left_out() {
            let period = Duration::from_secs(30);
            let mut rig = Rig::new(64, MemoryStore::default());
            rig.start_with_four_events().await;
            let mut rx = rig.open(true, period, None).await;
            assert!(matches!(next(&mut rx, HOUR).await, Seen::Snapshot { .. }));
            // RGT's report again with the same figures: its event moves no figure the subscriber follows.
            let r = report("RGT", 0, 2, &[("ed.in_department", Value::Number(12.0))]);
            let Applied::Accepted(e) = rig.store.apply(&r, Timestamp::now()).await.unwrap() else { panic!() };
            rig.ctx().hub.fold_by_hand(rig.store.as_ref(), 1).await;
            assert_eq!(next(&mut rx, HOUR).await, Seen::Heartbeat(e.cursor));
        }

        /// The picture's state goes out after the snapshot when it is degraded, and again whenever it changes.
        #[tokio::test]
        async fn a_degraded_picture_is_said_at_once_and_its_recovery_too() {
            let mut rig = Rig::new(64, MemoryStore::default());
            rig.apply("RJ7").await;
            rig.ctx().hub.load_by_hand(rig.store.as_ref()).await;
            let health = rig.ctx().health.clone();
            for _ in 0..3 {
                health.write_refused(&"out of memory");
            }
            let mut rx = rig.open(false, HOUR, None).await;
            assert_eq!(take(&mut rx, 2).await, [snapshot_at(rig.at(1)), Seen::Status { degraded: true }]);
            health.write_stored();
            assert_eq!(take(&mut rx, 1).await, [Seen::Status { degraded: false }]);
            assert_quiet(&mut rx).await;
        }

        /// At shutdown the stream ends with `unavailable`, telling the client to resume elsewhere; a client that
        /// leaves ends its session and frees its place at the Hub.
        #[tokio::test]
        async fn shutdown_says_why_and_a_client_that_leaves_is_let_go() {
            let mut rig = Rig::new(64, MemoryStore::default());
            rig.apply("RJ7").await;
            rig.ctx().hub.load_by_hand(rig.store.as_ref()).await;
            let mut rx = rig.open(false, HOUR, None).await;
            assert_eq!(take(&mut rx, 1).await, [snapshot_at(rig.at(1))]);
            drop(rx);
            while rig.ctx().hub.subscriber_count() > 0 {
                tokio::task::yield_now().await;
            }
            let mut rx = rig.open(false, HOUR, None).await;
            assert_eq!(take(&mut rx, 1).await, [snapshot_at(rig.at(1))]);
            rig.ctx().cancel.cancel();
            let end = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("the stream ends");
            let status = match end {
                Some(Err(status)) => status,
                other => panic!("expected a final status, got {:?}", other.map(|o| o.map(seen))),
            };
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert!(rx.recv().await.is_none(), "nothing after the final status");
        }

        /// A large snapshot goes in parts of [`SNAPSHOT_PART`] providers at one cursor, the rollups with the first
        /// part only and `more` on all but the last; an empty one is still one part, with the rollups.
        #[tokio::test]
        async fn snapshots_go_in_parts_with_the_rollups_first() {
            let mut rig = Rig::new(64, MemoryStore::default());
            rig.apply("RJ7").await;
            let ctx = rig.ctx().clone();
            ctx.hub.load_by_hand(rig.store.as_ref()).await;
            let filter = ctx.resolve(None, &crate::auth::Principal::anonymous()).unwrap();
            let full = ctx.hub.snapshot(&filter.providers).unwrap();
            let (tx, mut rx) = mpsc::channel(8);
            let session = Session {
                ctx: ctx.clone(),
                filter,
                followed: Vec::new(),
                heartbeat: HOUR,
                stall: HOUR,
                tx,
                transport: crate::metrics::Transport::Grpc,
            };
            let one = full.providers[0].clone();
            let big = PictureSnapshot { providers: vec![one; 2 * SNAPSHOT_PART + 1], ..full.clone() };
            assert!(session.send_snapshot(big).await.is_ok());
            let empty = PictureSnapshot { providers: Vec::new(), ..full.clone() };
            assert!(session.send_snapshot(empty).await.is_ok());
            let mut parts = Vec::new();
            while let Ok(Ok(Out::Snapshot(part))) = rx.try_recv() {
                assert_eq!(part.cursor, full.cursor);
                parts.push((part.providers.len(), !part.rollups.is_empty(), part.more));
            }
            let expected =
                [(SNAPSHOT_PART, true, true), (SNAPSHOT_PART, false, true), (1, false, false), (0, true, false)];
            assert_eq!(parts, expected);
        }
    }
}
