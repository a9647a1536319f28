//! The Hub: keeps this replica's [`Picture`], folded from the store's event log, and fans every event out to
//! subscribers through bounded queues.
//!
//! At start (and after the log resets) the Hub loads every provider's stored state and replays the log from the
//! cursor the load began at, until it has caught up; only then is it ready, and only then can anyone subscribe.
//! It then tails the log (on Redis, the stream every replica tails) and folds each event into the picture, which
//! adds the rollups the event changed, before handing it to every subscriber. Registering a subscriber, taking its
//! snapshot, and folding an event happen under one lock, so a snapshot at cursor C plus the queue (every event after
//! C) is exactly the log: nothing missed, nothing twice. Snapshots come from the picture in memory, never from the
//! store.
//!
//! Ingest never touches the Hub: a report is acknowledged once the store has it, so a slow or broken subscriber
//! cannot slow ingest. Each subscriber has its own bounded queue; the Hub only ever `try_send`s into it. When a queue
//! is full the subscriber is cut loose and flagged as lagged: its session then resyncs it with a reset and a fresh
//! snapshot, so it is never silently skipped past events. When the log itself resets (a new epoch), every
//! subscriber is flagged, with the [`Resync`] its session tells it.
//!
//! The Hub reports each read of the log to [`StoreHealth`], which alone decides what a failing store means for the
//! picture's status; ingest reports its writes there too, not here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use prost::bytes::Bytes;
use sitrep_core::rollup::ScopeRollup;
use sitrep_core::{Alert, Cursor, Event, Picture, PictureSnapshot, ProviderLive, Rules, Scope, Selection, Timestamp};
use sitrep_store::{Read, ResetReason, Store};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use sitrep_core::backoff::Backoff;

use crate::health::StoreHealth;
use crate::resync::Resync;

/// A subscriber's flag: not cut loose (its [`Resync::code`] otherwise).
const NOT_KICKED: u8 = 0;

/// An event as the Hub hands it to every subscriber, with room for its wire encoding, made once by the first
/// subscriber that needs it and shared by the rest (encoding per subscriber dominated fan-out).
pub struct HubEvent {
    pub event: Event,
    encoded: OnceLock<Bytes>,
    sse: OnceLock<Bytes>,
}

impl HubEvent {
    pub fn new(event: Event) -> Self {
        HubEvent { event, encoded: OnceLock::new(), sse: OnceLock::new() }
    }

    /// The event's shared Server-Sent Events message, made by `make` if nobody has made it yet.
    pub fn sse(&self, make: impl FnOnce(&Event) -> Bytes) -> Bytes {
        self.sse.get_or_init(|| make(&self.event)).clone()
    }

    /// The event's shared encoding, made by `encode` if nobody has made it yet.
    pub fn encoded(&self, encode: impl FnOnce(&Event) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(&self.event)).clone()
    }
}

struct Slot {
    tx: mpsc::Sender<Arc<HubEvent>>,
    kicked: Arc<AtomicU8>,
}

struct Inner {
    slots: HashMap<u64, Slot>,
    /// `None` until the Hub has loaded and caught up with the log (and again after the log reset).
    picture: Option<Picture>,
}

struct Shared {
    // A std mutex: held to register or unregister a subscriber, to take a snapshot (reference counts only), or to
    // fold one event and `try_send` it to each queue; never across an await.
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    queue_capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Events the Hub reads from the log at a time.
const TAIL_BATCH: usize = 1024;

/// A provider's encoding for snapshots: the epoch and version it was made for, and the bytes.
type Encoded = (String, u64, Bytes);

/// Handle to the Hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
    rules: Rules,
    /// Where the Hub reports whether it can read the log (the policy is [`crate::health`]'s).
    health: StoreHealth,
    /// Whether the Hub knows its position in the log (so a new subscriber's queue joins up with the store) and, when
    /// it warms snapshots, has every provider encoded.
    positioned: watch::Sender<bool>,
    /// Each provider's wire encoding at the version it was made for, shared by every snapshot until the provider
    /// changes (encoding ten thousand providers afresh for each new subscriber took most of a snapshot's time).
    /// Emptied when the Hub loads a picture or drops one (versions start again in a new epoch). A std mutex, held for a
    /// map operation.
    encoded: Arc<Mutex<HashMap<String, Encoded>>>,
    /// How a provider is encoded for snapshots, if the Hub should encode every provider once a picture is
    /// installed, so that the first subscriber's snapshot is as quick as the next one's.
    warm: Option<fn(&ProviderLive) -> Bytes>,
    /// How far behind the log's head the Hub is (for `sitrep_log_follow_lag_seconds`).
    follow: Arc<crate::metrics::Follow>,
    /// Bumped whenever the picture moves (events folded, a picture installed or dropped), for [`Hub::shows`].
    moved: watch::Sender<u64>,
}

/// Providers by staleness in the Hub's picture (for the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Census {
    /// Providers stale now.
    pub stale: u64,
    /// Providers of the directory that have never reported.
    pub not_reporting: u64,
}

/// A subscriber's end of its queue. Dropping it unregisters the subscriber.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Arc<HubEvent>>,
    kicked: Arc<AtomicU8>,
    shared: Arc<Shared>,
}

impl Subscription {
    /// The next event, or `None` when the Hub stopped feeding this subscriber; see [`Subscription::kicked`].
    pub async fn recv(&mut self) -> Option<Arc<HubEvent>> {
        if self.kicked().is_some() {
            return None;
        }
        self.rx.recv().await
    }

    /// Why the Hub cut this subscriber loose; `None` while it is still subscribed (or the Hub stopped: shutdown).
    pub fn kicked(&self) -> Option<Resync> {
        Resync::from_code(self.kicked.load(Ordering::Acquire))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.lock().slots.remove(&self.id);
    }
}

/// Where a resuming subscriber joins the Hub: its queue holds every event after `cursor`, and `rollups` are the
/// figures of the scopes it asked for as of `cursor`.
pub struct Joined {
    pub subscription: Subscription,
    pub cursor: Cursor,
    pub rollups: Vec<ScopeRollup>,
}

impl Hub {
    pub fn new(rules: Rules, queue_capacity: usize, health: StoreHealth) -> Self {
        Hub {
            rules,
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner { slots: HashMap::new(), picture: None }),
                next_id: AtomicU64::new(1),
                queue_capacity: queue_capacity.max(1),
            }),
            health,
            positioned: watch::channel(false).0,
            encoded: Default::default(),
            warm: None,
            follow: Default::default(),
            moved: watch::channel(0).0,
        }
    }

    /// Waits (up to `wait`) until the picture reflects the event at `cursor` (or has moved to another epoch, where
    /// the cursor means nothing): read-your-writes for a caller that acted through the store and reads next from
    /// this replica's picture. False if it did not within the wait.
    pub async fn shows(&self, cursor: &Cursor, wait: Duration) -> bool {
        let mut moved = self.moved.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let seen = self.read(|p| p.cursor().epoch != cursor.epoch || p.cursor().pos >= cursor.pos);
            if seen == Some(true) {
                return true;
            }
            if !matches!(tokio::time::timeout_at(deadline, moved.changed()).await, Ok(Ok(()))) {
                return false;
            }
        }
    }

    /// Waits (up to `timeout`) until the Hub knows its position in the event log (and, with [`Hub::warm_with`], has
    /// every provider encoded for snapshots). Sessions wait for this before registering, so that wallboards
    /// reconnecting to a freshly started aggregator are not reset for nothing; /readyz reports it.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut positioned = self.positioned.subscribe();
        matches!(tokio::time::timeout(timeout, positioned.wait_for(|p| *p)).await, Ok(Ok(_)))
    }

    /// Registers a subscriber under the lock the Hub folds under, so it gets every event after the picture's
    /// cursor.
    fn register(&self, inner: &mut Inner) -> Subscription {
        let (tx, rx) = mpsc::channel(self.shared.queue_capacity);
        let kicked = Arc::new(AtomicU8::new(NOT_KICKED));
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        inner.slots.insert(id, Slot { tx, kicked: kicked.clone() });
        Subscription { id, rx, kicked, shared: self.shared.clone() }
    }

    /// Registers a subscriber and takes its snapshot of `selection` at the same moment: the snapshot reflects
    /// every event up to its cursor and the queue gets every one after. `None` until the Hub is ready.
    pub fn subscribe(&self, selection: &Selection) -> Option<(Subscription, PictureSnapshot)> {
        let mut inner = self.shared.lock();
        let snapshot = inner.picture.as_ref()?.snapshot(selection);
        Some((self.register(&mut inner), snapshot))
    }

    /// Registers a subscriber that will catch up from the log by itself: its queue gets every event after the
    /// returned cursor, and the rollups of `scopes` come as of that cursor. `None` until the Hub is ready.
    pub fn join(&self, scopes: &[Scope]) -> Option<Joined> {
        let mut inner = self.shared.lock();
        let picture = inner.picture.as_ref()?;
        let (cursor, rollups) = (picture.cursor().clone(), picture.rollups(scopes, None));
        Some(Joined { subscription: self.register(&mut inner), cursor, rollups })
    }

    /// The selected part of the picture, as of the Hub's cursor; `None` until the Hub is ready.
    pub fn snapshot(&self, selection: &Selection) -> Option<PictureSnapshot> {
        self.shared.lock().picture.as_ref().map(|p| p.snapshot(selection))
    }

    /// What `read` makes of the picture as of the Hub's cursor (a moment under its lock: keep `read` short);
    /// `None` until the Hub is ready.
    pub fn read<T>(&self, read: impl FnOnce(&Picture) -> T) -> Option<T> {
        self.shared.lock().picture.as_ref().map(read)
    }

    /// The open alerts of the selected providers; `None` until the Hub is ready.
    pub fn alerts(&self, selection: &Selection) -> Option<Vec<Alert>> {
        self.shared.lock().picture.as_ref().map(|p| p.alerts(selection))
    }

    /// Providers that have gone quiet at `now` and are not marked stale yet (none until the Hub is ready).
    pub fn due_stale(&self, now: Timestamp) -> Vec<String> {
        self.shared.lock().picture.as_ref().map(|p| p.due_stale(now)).unwrap_or_default()
    }

    /// Has every provider of each picture the Hub loads encoded with `encode`, off the async threads, before the
    /// picture is installed and the Hub says it is ready (see [`Hub::ready`]).
    pub fn warm_with(mut self, encode: fn(&ProviderLive) -> Bytes) -> Self {
        self.warm = Some(encode);
        self
    }

    /// `provider`'s encoding for snapshots, made by `encode` unless one was made for its current version. Within one
    /// epoch of the log a provider's version names exactly one state, so (epoch, version) is the key: an encoding
    /// made for a dropped picture can never be taken for the state of a new one.
    pub fn encoded_provider(
        &self,
        epoch: &str,
        provider: &ProviderLive,
        encode: impl FnOnce(&ProviderLive) -> Bytes,
    ) -> Bytes {
        let cached = self.encoded.lock().unwrap_or_else(|e| e.into_inner()).get(&provider.provider).cloned();
        match cached {
            Some((e, version, bytes)) if e == epoch && version == provider.version => bytes,
            _ => {
                let bytes = encode(provider);
                let mut encoded = self.encoded.lock().unwrap_or_else(|e| e.into_inner());
                encoded.insert(provider.provider.clone(), (epoch.to_owned(), provider.version, bytes.clone()));
                bytes
            }
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.shared.lock().slots.len()
    }

    /// Events waiting in the deepest subscriber queue now.
    pub fn deepest_queue(&self) -> usize {
        let inner = self.shared.lock();
        inner.slots.values().map(|s| s.tx.max_capacity() - s.tx.capacity()).max().unwrap_or(0)
    }

    /// How many of the picture's providers are stale, and how many of the directory's `providers` have never
    /// reported; `None` until the Hub has a picture. One pass over the providers under the lock.
    pub fn census(&self, providers: u64) -> Option<Census> {
        let inner = self.shared.lock();
        let picture = inner.picture.as_ref()?;
        let (mut stale, mut reported) = (0u64, 0u64);
        for p in picture.providers().filter(|p| p.version > 0) {
            reported += 1;
            stale += u64::from(p.stale);
        }
        Some(Census { stale, not_reporting: providers.saturating_sub(reported) })
    }

    /// How far behind the log's head the Hub is: zero while it waits at the head for the next event, else the
    /// time since it last had read everything the log held (see [`crate::metrics::Follow`]).
    pub fn follow_lag(&self) -> Duration {
        self.follow.lag(std::time::Instant::now())
    }

    /// Folds `events` into the picture and hands each, with the rollups it changed, to every subscriber. An
    /// event the picture cannot fold (a provider's version jumps: something is missing) stops the folding.
    fn fold_and_fan_out(&self, events: Vec<Event>) -> Result<(), sitrep_core::picture::Gap> {
        let mut inner = self.shared.lock();
        let Inner { slots, picture } = &mut *inner;
        let Some(picture) = picture.as_mut() else { return Ok(()) };
        for mut event in events {
            // A traced report's event is folded under a span of its trace (none otherwise, or when tracing is off).
            let _folding = crate::telemetry::fold_span(&event, slots.len()).entered();
            // With nobody subscribed (a replica that only ingests, say), the rollups would go to nobody.
            if slots.is_empty() {
                picture.apply_quietly(&event)?;
                continue;
            }
            event.rollups = picture.apply(&event)?;
            let event = Arc::new(HubEvent::new(event));
            slots.retain(|id, slot| match slot.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(subscriber = id, "subscriber queue overflowed; it will be reset");
                    slot.kicked.store(Resync::SlowSubscriber.code(), Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        drop(inner);
        self.moved.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Installs a caught-up picture (or, with `None`, drops it after the log reset) and cuts every subscriber
    /// registered to the old one loose, flagged with `why`.
    fn install(&self, picture: Option<Picture>, why: Resync) {
        let ready = picture.is_some();
        if !ready {
            self.encoded.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let mut inner = self.shared.lock();
        inner.picture = picture;
        for (_, slot) in inner.slots.drain() {
            slot.kicked.store(why.code(), Ordering::Release);
        }
        drop(inner);
        self.positioned.send_replace(ready);
        self.moved.send_modify(|n| *n += 1);
    }

    /// Encodes every provider of a loaded `picture` for snapshots (with [`Hub::warm_with`]), before the picture is
    /// installed and the Hub says it is ready (sessions wait for that, and so does /readyz): a replica's first
    /// subscriber gets a snapshot as quick as the next one's, rather than one that encodes ten thousand providers
    /// while it is sent. Off the async threads: ten thousand providers take a good fraction of a second.
    async fn warm_up(&self, picture: &Picture) {
        self.encoded.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let Some(encode) = self.warm else { return };
        let providers: Vec<Arc<ProviderLive>> = picture.providers().cloned().collect();
        let epoch = picture.cursor().epoch.clone();
        let hub = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for p in &providers {
                hub.encoded_provider(&epoch, p, encode);
            }
        })
        .await;
    }

    /// Loads the stored states and replays the log onto them until caught up: the picture a replica starts with.
    async fn load(&self, store: &dyn Store) -> Result<Result<Picture, ResetReason>, sitrep_store::StoreError> {
        let started = std::time::Instant::now();
        self.follow.read(false, std::time::Instant::now());
        let loaded = store.load().await?;
        let providers = loaded.providers.len();
        let mut picture = Picture::with_aid(self.rules.clone(), loaded.cursor, loaded.providers, loaded.aid);
        let mut replayed = 0usize;
        loop {
            match store.read(picture.cursor(), 1024, Duration::ZERO).await? {
                Read::Reset(reason) => return Ok(Err(reason)),
                Read::Events(events) if events.is_empty() => break,
                Read::Events(events) => {
                    replayed += events.len();
                    for e in &events {
                        if let Err(gap) = picture.apply(e) {
                            tracing::warn!(%gap, "the log does not replay onto the stored states; loading again");
                            return Ok(Err(ResetReason::TooOld));
                        }
                    }
                }
            }
        }
        tracing::info!(providers, replayed, cursor = %picture.cursor(), took = ?started.elapsed(), "picture loaded");
        self.follow.read(true, std::time::Instant::now());
        Ok(Ok(picture))
    }

    /// Loads the picture, then tails the store's log, folding and fanning out every event, until `cancel` fires.
    /// Store errors are retried with backoff; a log that cannot continue from the picture's cursor (a new epoch,
    /// trimmed past it, or behind it) drops the picture, resets every subscriber, and loads afresh.
    pub async fn run(self, store: Arc<dyn Store>, cancel: CancellationToken) {
        let mut backoff = Backoff::default();
        let mut tail = Tail { position: None, why_lost: Resync::Resync, resets_in_a_row: 0 };
        // A log that keeps resetting the Hub (something is wrong with it) must not become a storm of resets for
        // every subscriber: after the first, each further reset in a row waits a backoff step first.
        let mut reset_backoff = Backoff::default();
        loop {
            if tail.position.is_none() && tail.resets_in_a_row > 1 {
                let delay = reset_backoff.next_delay();
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            } else if tail.resets_in_a_row == 0 {
                reset_backoff.reset();
            }
            // Each step's work after its store call is synchronous: cancelling can stop it only while it waits.
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.step(store.as_ref(), &mut tail) => r,
            };
            match result {
                Ok(()) => {
                    backoff.reset();
                    self.health.read_ok();
                }
                Err(e) => {
                    self.follow.read(false, std::time::Instant::now());
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "hub cannot read the event log");
                    self.health.read_failed(&e);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        // Dropping every queue's sender ends each session's stream (it sees `None` and not kicked).
        self.shared.lock().slots.clear();
        tracing::debug!("hub stopped");
    }

    /// One step of [`Hub::run`]: loads and installs a picture when there is none, or else folds and fans out the
    /// next batch of the log. A store error is returned for `run` to retry; a log that cannot go on resets.
    async fn step(&self, store: &dyn Store, tail: &mut Tail) -> Result<(), sitrep_store::StoreError> {
        match tail.position.clone() {
            None => self.load_and_install(store, tail).await,
            Some(after) => self.read_and_fold(store, &after, tail).await,
        }
    }

    /// Loads the picture, warms its snapshots up and installs it, telling its subscribers why the last was lost;
    /// a log that moved on while loading counts as a reset in a row.
    async fn load_and_install(&self, store: &dyn Store, tail: &mut Tail) -> Result<(), sitrep_store::StoreError> {
        match self.load(store).await? {
            Ok(picture) => {
                self.warm_up(&picture).await;
                tail.position = Some(picture.cursor().clone());
                self.install(Some(picture), tail.why_lost);
            }
            Err(reason) => {
                tracing::warn!(?reason, "the event log moved on while loading; loading again");
                tail.resets_in_a_row += 1;
            }
        }
        Ok(())
    }

    /// Reads the log's next batch after `after` (waiting a while for one) and folds and fans it out; a batch the
    /// picture cannot fold, or a log that cannot continue from `after`, drops the picture.
    async fn read_and_fold(
        &self,
        store: &dyn Store,
        after: &Cursor,
        tail: &mut Tail,
    ) -> Result<(), sitrep_store::StoreError> {
        match store.read(after, TAIL_BATCH, Duration::from_secs(5)).await? {
            Read::Events(events) => {
                // Fewer than asked for: the Hub has read everything the log holds.
                self.follow.read(events.len() < TAIL_BATCH, std::time::Instant::now());
                let Some(last) = events.last().map(|e| e.cursor.clone()) else { return Ok(()) };
                tail.resets_in_a_row = 0;
                match self.fold_and_fan_out(events) {
                    Ok(()) => tail.position = Some(last),
                    Err(gap) => {
                        tracing::warn!(%gap, "the picture cannot fold the log; loading it afresh");
                        self.lose_picture(tail, Resync::Resync);
                    }
                }
            }
            Read::Reset(reason) => {
                tracing::warn!(?reason, cursor = %after, "event log cannot continue from the hub's position; resetting subscribers");
                self.lose_picture(tail, Resync::from(reason));
            }
        }
        Ok(())
    }

    /// Drops the picture and resets every subscriber with `why`, to load afresh.
    fn lose_picture(&self, tail: &mut Tail, why: Resync) {
        tail.position = None;
        tail.why_lost = why;
        self.install(None, why);
        tail.resets_in_a_row += 1;
    }
}

/// Where [`Hub::run`] stands in the log between steps.
struct Tail {
    /// The cursor of the picture installed, or `None` while one is to be loaded.
    position: Option<Cursor>,
    /// Why the last picture was dropped: what the next one's subscribers are told.
    why_lost: Resync,
    /// Resets of the picture in a row, with no batch of the log folded between (see [`Hub::run`]).
    resets_in_a_row: u32,
}

/// A Hub a test steps through the log by hand, rather than [`Hub::run`] tailing it, so the test decides how far
/// behind the store the Hub is when a subscriber registers (as a busy replica's Hub may be).
#[cfg(test)]
impl Hub {
    /// Loads the picture from everything `store` holds and installs it, as [`Hub::run`] does at start.
    pub(crate) async fn load_by_hand(&self, store: &dyn Store) {
        let picture = self.load(store).await.expect("the store answers").expect("the log replays");
        self.install(Some(picture), Resync::Resync);
    }

    /// Folds and fans out the next `n` events of `store`'s log after the picture's cursor, as [`Hub::run`] does.
    pub(crate) async fn fold_by_hand(&self, store: &dyn Store, n: usize) {
        let after = self.shared.lock().picture.as_ref().expect("loaded by hand").cursor().clone();
        let Read::Events(events) = store.read(&after, n, Duration::ZERO).await.expect("the store answers") else {
            panic!("the log continues from the Hub's cursor");
        };
        assert_eq!(events.len(), n, "the log holds {n} more events");
        self.fold_and_fan_out(events).expect("the picture folds the log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitrep_core::Value;
    use sitrep_store::{MemoryStore, conformance::report};

    #[tokio::test]
    async fn fans_out_in_order_and_cuts_loose_a_full_queue() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::new(Rules::demo(), 4, StoreHealth::default());
        let cancel = CancellationToken::new();
        assert!(hub.subscribe(&Selection::All).is_none(), "nobody subscribes before the picture is loaded");
        let task = tokio::spawn(hub.clone().run(store.clone(), cancel.clone()));
        assert!(hub.ready(Duration::from_secs(10)).await);
        let (mut fast, snapshot) = hub.subscribe(&Selection::All).expect("ready");
        assert!(snapshot.providers.is_empty());
        let (slow, _) = hub.subscribe(&Selection::All).expect("ready");
        let mut cursors = Vec::new();
        for rev in 1..=10u32 {
            let r = report("RJ7", 0, rev, &[("flow.discharges", Value::Number(f64::from(rev)))]);
            let sitrep_store::Applied::Accepted(e) = store.apply(&r, sitrep_core::Timestamp::now()).await.unwrap()
            else {
                panic!()
            };
            cursors.push(e.cursor);
            let got = fast.recv().await.expect("fast subscriber keeps up");
            assert_eq!(got.event.cursor, *cursors.last().unwrap());
            assert_eq!(got.event.rollups.len(), 3, "the picture adds the rollups the event changed");
        }
        let (_, later) = hub.subscribe(&Selection::All).expect("ready");
        assert_eq!(later.cursor, *cursors.last().unwrap());
        assert_eq!(later.providers[0].revision, 10, "snapshots come from the folded picture");
        assert_eq!(slow.kicked(), Some(Resync::SlowSubscriber), "a queue of 4 overflowed after 10 events");
        assert_eq!(fast.kicked(), None);
        assert_eq!(hub.subscriber_count(), 1);
        cancel.cancel();
        task.await.unwrap();
        assert!(fast.recv().await.is_none(), "queues close when the hub stops");
        assert_eq!(fast.kicked(), None);
    }

    /// What the metrics read of the Hub: the deepest queue, and providers stale or never heard from.
    #[tokio::test]
    async fn the_deepest_queue_and_the_census() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::new(Rules::demo(), 8, StoreHealth::default());
        assert_eq!(hub.census(3), None, "no picture yet");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(hub.clone().run(store.clone(), cancel.clone()));
        assert!(hub.ready(Duration::from_secs(10)).await);
        assert_eq!(hub.follow_lag(), Duration::ZERO, "loaded: at the head");
        let (mut reader, _) = hub.subscribe(&Selection::All).expect("ready");
        let (_idle, _) = hub.subscribe(&Selection::All).expect("ready");
        assert_eq!(hub.deepest_queue(), 0);
        for rev in 1..=3u32 {
            let r = report("RJ7", 0, rev, &[("flow.discharges", Value::Number(f64::from(rev)))]);
            store.apply(&r, sitrep_core::Timestamp::now()).await.unwrap();
        }
        for _ in 0..3 {
            reader.recv().await.expect("an event");
        }
        assert_eq!(hub.deepest_queue(), 3, "the idle subscriber holds three events");
        let providers = Rules::demo().directory.providers().count() as u64;
        assert_eq!(hub.census(providers), Some(Census { stale: 0, not_reporting: providers - 1 }));
        cancel.cancel();
        task.await.unwrap();
    }

    #[test]
    fn encodings_are_kept_per_epoch_and_version() {
        let hub = Hub::new(Rules::demo(), 4, StoreHealth::default());
        let mut p = sitrep_core::ProviderLive::new("RJ7");
        p.version = 3;
        let made = std::sync::atomic::AtomicUsize::new(0);
        let encode = |_: &sitrep_core::ProviderLive| {
            made.fetch_add(1, Ordering::Relaxed);
            Bytes::from_static(b"x")
        };
        hub.encoded_provider("e1", &p, encode);
        hub.encoded_provider("e1", &p, encode);
        assert_eq!(made.load(Ordering::Relaxed), 1, "the same state is encoded once");
        hub.encoded_provider("e2", &p, encode);
        assert_eq!(made.load(Ordering::Relaxed), 2, "the same version in another epoch is another state");
        p.version = 4;
        hub.encoded_provider("e2", &p, encode);
        assert_eq!(made.load(Ordering::Relaxed), 3, "a new version is encoded afresh");
    }

    /// A Hub that warms snapshots says it is ready only once every provider is encoded: a first snapshot then makes
    /// no encoding of its own.
    #[tokio::test]
    async fn ready_means_every_provider_is_encoded() {
        // Slow enough that a Hub saying it is ready before the warm-up ends would be caught.
        fn encode(p: &ProviderLive) -> Bytes {
            std::thread::sleep(Duration::from_millis(50));
            Bytes::from(p.provider.clone())
        }
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        for p in ["RJ7", "RVR", "RAL"] {
            let r = report(p, 0, 1, &[("flow.discharges", Value::Number(3.0))]);
            store.apply(&r, sitrep_core::Timestamp::now()).await.unwrap();
        }
        let hub = Hub::new(Rules::demo(), 4, StoreHealth::default()).warm_with(encode);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(hub.clone().run(store.clone(), cancel.clone()));
        assert!(hub.ready(Duration::from_secs(10)).await);
        let (_, snapshot) = hub.subscribe(&Selection::All).expect("ready");
        assert_eq!(snapshot.providers.len(), 3);
        for p in &snapshot.providers {
            let bytes = hub.encoded_provider(&snapshot.cursor.epoch, p, |_| panic!("{} was not encoded", p.provider));
            assert_eq!(bytes, Bytes::from(p.provider.clone()));
        }
        cancel.cancel();
        task.await.unwrap();
    }
}
