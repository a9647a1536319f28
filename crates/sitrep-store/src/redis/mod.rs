//! `RedisStore`: the store of record. Live state, hourly history and the event log in Redis, shared by replicas.
//!
//! It persists what [`sitrep_core::plan`] and [`sitrep_core::plan::aid::plan`] plan and serves the log; it decides
//! nothing. An apply plans the report against the provider's state as this store last wrote or saw it, then
//! persists the plan with one script (`persist.lua`) that writes only if the provider is still at the version the
//! plan was made from and the report is not in history yet. If another replica (or the clock) moved the provider meanwhile, the script answers with
//! the provider's current state and the report is planned again from it: one round trip normally, two on a
//! conflict, never a read before a write. Reports of one provider are planned and persisted one at a time within
//! a replica (a lock per provider), so a replica never conflicts with itself.
//!
//! **Group commit.** Plans from concurrent applies are queued to one committer task, which sends whatever has
//! gathered as one script call while the previous call is in flight, so under load a call carries many plans and
//! Redis pays its per-call overhead once for all of them.
//!
//! **Mutual aid** (`aid.rs`). An action reads the book and the states of the providers it needs, is planned by
//! [`sitrep_core::plan::aid::plan`], and is persisted by `act.lua` only if the book and each of those providers are
//! still at the versions it was planned from (else it is read and planned again): the records, the book's version,
//! the holders' states and the events (the book's, then each holder's) in one script call of its own, with the
//! same `WAIT` and master following as reports. `log.lua`, the steps of appending to the log, is prefixed to both
//! `persist.lua` and `act.lua`, so every entry is written by one definition.
//!
//! **Loading.** [`Store::load`] reads the log's head, then every provider's state with `HSCAN` in bounded pieces
//! (no command holds Redis for long however many providers there are), then mutual aid's book the same way; the
//! picture replays the log from that head.
//!
//! # Keys
//! Every key starts with `{<prefix>}:` (the braces are a hash tag, so all keys share one Redis Cluster slot and
//! one script may touch them all):
//! - `log` hash: `epoch`, the log's generation id, and `head`, the id of the latest event
//! - `events` stream: entry id = cursor position; fields `p` (the previous event's id), `e` (the epoch), `w` (the
//!   writing store's token for it, `<store id>.<n>`) and `d` (the event, see [`codec`])
//! - `states` hash: provider -> `<version>|<state>` (a state carries its provider's mutual aid holds)
//! - `aid` hash: mutual aid's book: `R<n>` / `O<n>` -> the request or offer as JSON, `version` -> the book's
//!   version, which every action advances, `last_request` / `last_offer` -> the highest ids given, and (since
//!   layout version 3) `ref:<provider>|<reference>` -> `R<n>`, the index of open requests by reference that a
//!   create reads instead of the whole book, kept by `act.lua` with the records
//! - `hist:<provider>` hash: `<period in hours>:<revision>[:<site>]` -> `<event id>|<entry>` (no index: range queries and
//!   trimming read the fields, which start with their period)
//! - `codes` hash: the dictionary of metric numbers used by the encodings
//! - `schema` string: the version of this layout, an integer (see `schema.rs`); `schema:lock` while a starting store
//!   upgrades older data
//!
//! Every event in the stream carries its epoch and the id of the event before it (`p`). A reader resuming after
//! cursor C checks that the first event it gets names C as its predecessor: that proves nothing between was
//! trimmed, exactly, without asking the stream about its ends. It also lets the Hub tail the log with plain
//! `XREAD BLOCK` (one round trip per batch) and fall back to the checking script only when the link breaks. And it
//! lets a store's tail skip the stream for its own events: the script answers each append with the event's id and
//! its predecessor's, so when the next events of the log are ones this store just wrote (each naming the one before
//! as its predecessor, the first naming the tail's cursor), the tail takes them as they are, with no read at all.
//! The appending scripts take their arguments as named records (`args.rs`), and the scripts' answers are parsed
//! into types by redis-rs's `FromRedisValue` (`reply.rs`); stream entries are read by hand (`entry`: why in
//! `reply.rs`).
//! Scripts are invoked by SHA and re-loaded by redis-rs when Redis answers `NOSCRIPT` (after a restart). Blocking
//! reads of the stream (`XREAD BLOCK`) use a second, dedicated connection with no response timeout, and the
//! committer a third (its `WAIT`s block the connection they are sent on).
//!
//! **High availability.** All three connections go to the current master, found at the URL or through Redis
//! Sentinel and followed across failovers (see `master.rs`). With `ack_replicas`, each script call is followed by
//! `WAIT` on the committer's connection, and a call that falls short is answered unavailable as a whole (its
//! writes stay on the master: a retry is a duplicate, or accepted anew if a failover lost them). A failover to a
//! replica that lacked the log's tail is caught by the `p` links: a cursor whose event the log does not hold is
//! answered [`ResetReason::Ahead`]; a replica with no log at all starts a new epoch.

mod aid;
mod args;
pub mod codec;
mod master;
#[cfg(any(test, feature = "redis-process"))]
mod process;
mod reply;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ErrorKind, FromRedisValue, RedisError, Script, ServerErrorKind, Value as RValue};
use reply::Outcome;
use sitrep_core::cursor::Position;
use sitrep_core::plan::{self, Plan};
use sitrep_core::{Code, Cursor, Event, HistoryRecord, ProviderLive, Rules, Timestamp, ValidReport, Value};
use tokio::sync::{Mutex, mpsc, oneshot};

#[cfg(any(test, feature = "redis-process"))]
pub use process::{RedisProcess, SentinelWatch};
pub use schema::VERSION as SCHEMA_VERSION;

use crate::{Applied, Loaded, Read, ResetReason, Store, StoreError};
use codec::Codes;

/// How to reach Redis and how much to keep there.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db` (or `rediss://` for TLS).
    pub url: String,
    /// Keys are `{prefix}:...`; deployments sharing a Redis use different prefixes.
    pub key_prefix: String,
    /// Approximate most events kept in the stream (`XADD MAXLEN ~`).
    pub event_log_max_len: usize,
    /// If set, events older than this are trimmed too (`XTRIM MINID ~`).
    pub event_log_max_age: Option<Duration>,
    /// Hours of history kept per provider, counted back from its latest period.
    pub retention_hours: i64,
    /// How long a command may take before the call fails as unavailable.
    pub response_timeout: Duration,
    /// What derived figures, ratings, alerts and staleness are computed by.
    pub rules: Rules,
    /// With a `rediss://` URL: the CA certificates (PEM) that Redis's certificate must be signed by, instead of the
    /// system's roots.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Find the master through Redis Sentinel instead of at the URL's host (whose credentials, database and scheme
    /// still apply), and follow it when it fails over.
    pub sentinel: Option<SentinelOptions>,
    /// Replicas that must have each script call's writes (`WAIT`) before its reports are acknowledged; 0: none.
    pub ack_replicas: u32,
    /// How long to wait for them before answering the reports unavailable.
    pub ack_timeout: Duration,
}

/// Where Redis Sentinel is, and which master to ask it for.
#[derive(Clone, Debug)]
pub struct SentinelOptions {
    /// Each Sentinel's host and port.
    pub addresses: Vec<(String, u16)>,
    /// The name the Sentinels monitor the master under (`sentinel monitor <name> ...`).
    pub master: String,
    /// The Sentinels' own password (`requirepass` in sentinel.conf), if any.
    pub password: Option<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            url: "redis://127.0.0.1:6379/".into(),
            key_prefix: "sitrep".into(),
            event_log_max_len: 100_000,
            event_log_max_age: None,
            retention_hours: 35 * 24,
            response_timeout: Duration::from_secs(2),
            rules: Rules::demo(),
            tls_ca_pem: None,
            sentinel: None,
            ack_replicas: 0,
            ack_timeout: Duration::from_secs(1),
        }
    }
}

struct Keys {
    prefix: String,
    log: String,
    events: String,
    states: String,
    aid: String,
    codes: String,
    schema: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let prefix = format!("{{{prefix}}}:");
        Keys {
            log: format!("{prefix}log"),
            events: format!("{prefix}events"),
            states: format!("{prefix}states"),
            aid: format!("{prefix}aid"),
            codes: format!("{prefix}codes"),
            schema: format!("{prefix}schema"),
            prefix,
        }
    }

    fn of(&self, kind: &str, provider: &str) -> String {
        format!("{}{kind}:{provider}", self.prefix)
    }
}

struct Scripts {
    persist: Script,
    act: Script,
    aid_excerpt: Script,
    read: Script,
    history: Script,
    previous: Script,
    codes: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            // The log's shared steps are prefixed to the scripts that append to it (see `log.lua`).
            persist: Script::new(concat!(include_str!("log.lua"), include_str!("persist.lua"))),
            act: Script::new(concat!(include_str!("log.lua"), include_str!("act.lua"))),
            aid_excerpt: Script::new(include_str!("aid_excerpt.lua")),
            read: Script::new(include_str!("read.lua")),
            history: Script::new(include_str!("history.lua")),
            previous: Script::new(include_str!("previous.lua")),
            codes: Script::new(include_str!("codes.lua")),
        }
    }
}

pub struct RedisStore {
    /// Where the master is, and the connections to it.
    masters: Arc<master::Masters>,
    /// For `XREAD BLOCK` only, with the generation of the master it was made to; `None` until first needed and
    /// after a failure.
    blocking: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// Set once the stored data's version has been checked (and upgraded) on first contact: see `schema.rs`.
    prepared: tokio::sync::OnceCell<()>,
    keys: Arc<Keys>,
    scripts: Arc<Scripts>,
    options: RedisOptions,
    /// The dictionary of metric numbers, once read (and again when a number is not in it).
    /// The dictionary as read from the master of the generation it is kept with: a new master (after a failover)
    /// may lack numbers the old one gave out unreplicated, so the dictionary is read again from it.
    codes: std::sync::RwLock<Option<(u64, Arc<Codes>)>>,
    /// Each provider's state as this store last wrote or saw it: what its next report is planned from. Only a
    /// hint: the script checks the version, and a stale hint costs a second round trip. A std mutex, held for a
    /// map operation, never across an await.
    known: std::sync::Mutex<HashMap<String, Arc<ProviderLive>>>,
    /// One lock per provider, so this replica plans and persists a provider's reports one at a time.
    locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Events this store is appending, by token, until its own tail reads them back: the Hub then takes them as they
    /// are instead of decoding them again (most events of a single-replica deployment). An event is put here before
    /// it is persisted, because the tail may read it back before the writer has its answer. Bounded; oldest
    /// dropped.
    recent: Arc<std::sync::Mutex<BTreeMap<u64, Event>>>,
    /// This store's id in the tokens it writes (`w`), and the next token's number.
    writer: String,
    next_token: std::sync::atomic::AtomicU64,
    /// The committer's queue (group commit), started on first use.
    committer: OnceLock<mpsc::Sender<Pending>>,
    /// Where this store's events landed, for its own tail.
    appended: Arc<Appended>,
}

/// How long the tail waits for this store's own script call to answer before reading the stream instead.
const LANDING_WAIT: Duration = Duration::from_millis(200);

/// Appended events kept for the tail to reuse.
const RECENT_KEPT: usize = 4096;
/// Most plans one script call carries.
const MAX_BATCH: usize = 64;
/// Script calls the committer has under way at once (see `commit_loop`).
const COMMITS_IN_FLIGHT: usize = 2;
/// Plans waiting that justify a call while another is under way.
const PIPELINED_BACKLOG: usize = 8;
/// Attempts at applying a plan whose provider another writer keeps changing, before giving up.
const MAX_CONFLICTS: usize = 16;
/// States read per `HSCAN` while loading.
const LOAD_BATCH: usize = 256;
/// Most events one read takes from the stream, whatever the caller asks for: a read of a thousand events of a
/// few hundred bytes each held Redis for over 20 ms (measured: `sitrep bench --scenario snapshot`).
const READ_MAX: usize = 200;

/// Conditions in which Redis refuses a command for now but may take it later. Scripts can report them wrapped in a
/// generic `ERR` (older Redis versions do), so they are recognised in the text too.
/// Errors that pass: a master being demoted or promoted (`READONLY`, `UNBLOCKED` for a blocked call, "WAIT cannot
/// be used with replica instances"), one without its replicas, full, loading or busy.
const TRANSIENT: [&str; 9] =
    ["READONLY", "NOREPLICAS", "OOM", "MASTERDOWN", "LOADING", "BUSY", "TRYAGAIN", "UNBLOCKED", "replica instances"];

fn unavailable(e: RedisError) -> StoreError {
    let transient = || {
        let text = e.to_string();
        TRANSIENT.iter().any(|code| text.contains(code))
    };
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError) | ErrorKind::Parse | ErrorKind::UnexpectedReturnType
            if !transient() =>
        {
            StoreError::Internal(format!("redis: {e}"))
        }
        _ => StoreError::Unavailable { message: format!("redis: {e}"), source: Some(Box::new(e)) },
    }
}

fn bad(what: &str) -> StoreError {
    StoreError::Internal(format!("unexpected reply from redis: {what}"))
}

fn bytes(v: &RValue) -> Result<&[u8], StoreError> {
    match v {
        RValue::BulkString(b) => Ok(b),
        RValue::SimpleString(s) => Ok(s.as_bytes()),
        other => Err(bad(&format!("expected text, got {other:?}"))),
    }
}

fn text(v: &RValue) -> Result<String, StoreError> {
    match v {
        RValue::Int(i) => Ok(i.to_string()),
        RValue::Okay => Ok("OK".into()),
        other => String::from_utf8(bytes(other)?.to_vec()).map_err(|_| bad("non-UTF-8 text")),
    }
}

fn array(v: &RValue) -> Result<&[RValue], StoreError> {
    match v {
        RValue::Array(items) => Ok(items),
        RValue::Nil => Ok(&[]),
        other => Err(bad(&format!("expected an array, got {other:?}"))),
    }
}

fn position(id: &str) -> Result<Position, StoreError> {
    reply::stream_id(id).map_err(|e| bad(&e.to_string()))
}

/// A stream entry: the event, the epoch it was written in, and the position of the event before it.
struct Entry {
    event: Event,
    epoch: String,
    prev: Position,
}

/// sitrep's fields of a stream entry, `p`, `e`, `w` and `d`, or `None` for an entry sitrep did not write.
/// Read by hand, not through `redis::streams::StreamReadReply`: that would allocate a map per entry on the tail's
/// path and lose the fields' order, which is how sitrep's entries are told from others (see `reply.rs`).
fn fields(entry: &RValue) -> Option<(Position, &[RValue])> {
    let [id, fields] = array(entry).ok()? else { return None };
    let pos = position(&text(id).ok()?).ok()?;
    let fields = array(fields).ok()?;
    let named = |i: usize, name: &[u8]| bytes(&fields[i]).is_ok_and(|f| f == name);
    (fields.len() == 8 && named(0, b"p") && named(2, b"e") && named(4, b"w") && named(6, b"d")).then_some((pos, fields))
}

/// An entry decoded, or taken from what this store appended (`recent`, by its token) when it is one of its own.
fn entry(
    codes: &Codes,
    raw: &RValue,
    writer: &str,
    recent: &std::sync::Mutex<BTreeMap<u64, Event>>,
) -> Result<Entry, StoreError> {
    let (pos, f) = fields(raw).ok_or_else(|| bad("an entry sitrep did not write"))?;
    let prev = position(&text(&f[1])?)?;
    let epoch = text(&f[3])?;
    let token = bytes(&f[5])?
        .strip_prefix(writer.as_bytes())
        .and_then(|rest| rest.strip_prefix(b"."))
        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
    let mine = token.and_then(|t| recent.lock().unwrap_or_else(|e| e.into_inner()).remove(&t));
    let cursor = Cursor::new(epoch.clone(), pos);
    let event = match mine {
        Some(mut e) => {
            e.cursor = cursor;
            e
        }
        None => codec::decode_event(codes, bytes(&f[7])?, cursor)?,
    };
    Ok(Entry { event, epoch, prev })
}

/// Whether `entries` continue the log right after `after`, in the same epoch, with nothing missing in between.
fn linked(after: &Cursor, entries: &[Entry]) -> bool {
    let mut pos = after.pos;
    for e in entries {
        if e.epoch != after.epoch || e.prev != pos {
            return false;
        }
        pos = e.event.cursor.pos;
    }
    !entries.is_empty()
}

/// One plan's arguments to `persist.lua`, its writer's token, and where its outcome goes.
struct Pending {
    args: args::PlanArgs,
    token: u64,
    reply: oneshot::Sender<Result<(String, Outcome), StoreError>>,
}

/// Where one of this store's events landed in the log: what its own tail needs to take it without reading it back.
struct Link {
    token: u64,
    epoch: Arc<str>,
    pos: Position,
    prev: Position,
}

/// The events this store appended, in log order, as the committer learns where they landed. The Hub's tail takes a
/// run of them that continues its cursor (each names the one before as its predecessor) straight from here, with
/// no `XREAD` and no reply to parse; anything else (another replica's events in between, a gap) is read from the
/// stream as before.
#[derive(Default)]
struct Appended {
    links: std::sync::Mutex<std::collections::VecDeque<Link>>,
    /// Script calls under way; while there are any, the tail waits for them rather than for the stream.
    in_flight: std::sync::atomic::AtomicUsize,
    landed: tokio::sync::Notify,
}

/// What [`RedisStore::plan_and_persist`] did.
// One per report, moved once: boxing the event would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Persisted {
    Accepted(Event),
    /// The plan's report key is in history already, with this stored entry (`<event id>|<entry>`); `prior` is the
    /// provider's state the plan was made from.
    Seen {
        epoch: String,
        revision: u32,
        stored: Vec<u8>,
        prior: Option<Arc<ProviderLive>>,
    },
}

/// The committer: sends what has gathered in its queue as one script call, hands each plan its outcome when the
/// answer comes, and goes round again. With a backlog, up to [`COMMITS_IN_FLIGHT`] calls are under way at once on
/// the multiplexed connection (Redis runs them in the order sent, and their answers come back in that order), so
/// Redis is not idle while the aggregator reads one answer and gathers the next batch. Plans in different calls are
/// of different providers (a provider has one plan under way at a time), so no call depends on another's outcome.
/// It stops when the store (the queue's sender) is dropped, once the calls under way have answered.
async fn commit_loop(
    mut rx: mpsc::Receiver<Pending>,
    masters: Arc<master::Masters>,
    scripts: Arc<Scripts>,
    keys: Arc<Keys>,
    head: [String; 3],
    appended: Arc<Appended>,
    ack: Ack,
) {
    use futures_util::StreamExt;
    use std::sync::atomic::Ordering::SeqCst;
    let mut under_way = futures_util::stream::FuturesOrdered::new();
    // Plans taken from the queue and not sent yet.
    let mut gathered: Vec<Pending> = Vec::new();
    let mut open = true;
    loop {
        // What has gathered goes out when nothing is under way, or, while one call is, once a backlog has gathered
        // behind it: a handful of plans sent on their own would cost Redis and the aggregator a script call each
        // for no gain in latency.
        let backlog = under_way.is_empty() || gathered.len() >= PIPELINED_BACKLOG;
        if !gathered.is_empty() && backlog && under_way.len() < COMMITS_IN_FLIGHT {
            while gathered.len() < MAX_BATCH
                && let Ok(next) = rx.try_recv()
            {
                gathered.push(next);
            }
            let batch = std::mem::take(&mut gathered);
            let mut invocation = scripts.persist.prepare_invoke();
            invocation.key(&keys.log).key(&keys.events).key(&keys.states);
            let epoch_candidate = crate::new_epoch('r');
            let [max_len, max_age_ms, prefix] = &head;
            let header = args::PersistHeader { epoch_candidate: &epoch_candidate, max_len, max_age_ms, prefix };
            args::push(&mut invocation, &header.named());
            for p in &batch {
                args::push(&mut invocation, &p.args.named());
            }
            appended.in_flight.fetch_add(1, SeqCst);
            let masters = masters.clone();
            under_way.push_back(async move {
                let reply = async {
                    let mut conn = masters.get().await?.commit.clone();
                    ack.persist(&invocation, &mut conn, &masters).await
                };
                (batch, reply.await)
            });
        }
        if !open && gathered.is_empty() && under_way.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            Some((batch, reply)) = under_way.next(), if !under_way.is_empty() => answered(&appended, batch, reply),
            next = rx.recv(), if open && gathered.len() < MAX_BATCH => match next {
                Some(p) => gathered.push(p),
                None => open = false,
            },
        }
    }
}

/// How many replicas must have a script call's writes before its reports are acknowledged (`store.ack_replicas`).
#[derive(Clone, Copy)]
struct Ack {
    replicas: u32,
    timeout: Duration,
}

impl Ack {
    /// Runs the script call and, when `store.ack_replicas` asks for replicas, `WAIT`s for them. The two go out as
    /// one pipeline, in one write on one socket: `WAIT` counts the writes of the connection it is sent on, so sent
    /// on its own it could land on a socket the manager had just reconnected (perhaps to a new master) and count
    /// nothing, acknowledging writes no replica has. Falling short answers the whole call unavailable: its writes
    /// are on the master, but a failover now could lose them, so none of its reports is acknowledged (a retry is
    /// then a duplicate, or accepted anew).
    async fn persist(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        conn: &mut ConnectionManager,
        masters: &master::Masters,
    ) -> Result<RValue, StoreError> {
        if self.replicas == 0 {
            return invocation.invoke_async(conn).await.map_err(|e| masters.failed(e));
        }
        let ms = self.timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation).cmd("WAIT").arg(self.replicas).arg(ms);
        let answer: Result<(RValue, u32), RedisError> = match pipe.query_async(conn).await {
            // A pipeline does not load the script by itself (after a restart or a failover to a master that never
            // ran it): load it, and send the pipeline again.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                invocation.load_async(conn).await.map_err(|e| masters.failed(e))?;
                pipe.query_async(conn).await
            }
            other => other,
        };
        let (reply, reached) = answer.map_err(|e| masters.failed(e))?;
        if reached >= self.replicas {
            return Ok(reply);
        }
        Err(StoreError::Unavailable {
            message: format!(
                "redis: {reached} of the {} replicas store.ack_replicas asks for acknowledged the write within \
                 store.ack_timeout ({ms} ms); not acknowledged (retry: it is then a duplicate, or stored anew)",
                self.replicas
            ),
            source: None,
        })
    }
}

/// Hands each plan of an answered call its outcome, noting where accepted events landed for the tail first.
fn answered(appended: &Appended, batch: Vec<Pending>, reply: Result<RValue, StoreError>) {
    use std::sync::atomic::Ordering::SeqCst;
    let outcomes = reply.and_then(|r| outcomes(r, batch.len()));
    if let Ok((epoch, outcomes)) = &outcomes {
        let epoch: Arc<str> = Arc::from(epoch.as_str());
        let mut links = appended.links.lock().unwrap_or_else(|e| e.into_inner());
        for (p, o) in batch.iter().zip(outcomes) {
            if let Outcome::Accepted { pos, prev } = o {
                links.push_back(Link { token: p.token, epoch: epoch.clone(), pos: *pos, prev: *prev });
            }
        }
        while links.len() > RECENT_KEPT {
            links.pop_front();
        }
    }
    appended.in_flight.fetch_sub(1, SeqCst);
    appended.landed.notify_waiters();
    match outcomes {
        Ok((epoch, outcomes)) => {
            for (p, o) in batch.into_iter().zip(outcomes) {
                let _ = p.reply.send(Ok((epoch.clone(), o)));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for p in batch {
                let _ = p.reply.send(Err(match &e {
                    StoreError::Unavailable { .. } => {
                        StoreError::Unavailable { message: message.clone(), source: None }
                    }
                    _ => StoreError::Internal(message.clone()),
                }));
            }
        }
    }
}

/// A script's answer to `n` plans (or events): the epoch and their outcomes, in order.
fn outcomes(reply: RValue, n: usize) -> Result<(String, Vec<Outcome>), StoreError> {
    let reply::Committed { epoch, outcomes } =
        reply::Committed::from_redis_value(reply).map_err(|e| bad(&format!("persist reply: {e}")))?;
    if outcomes.len() != n {
        return Err(bad(&format!("persist reply: {} outcomes for {n} plans", outcomes.len())));
    }
    Ok((epoch, outcomes))
}

impl RedisStore {
    /// A store for `options`. Does not connect: the aggregator can start while Redis is down, and calls fail as
    /// unavailable until it is up.
    pub fn new(options: RedisOptions) -> Result<Self, StoreError> {
        let client = match &options.tls_ca_pem {
            None => redis::Client::open(options.url.as_str()),
            Some(pem) => {
                if !options.url.starts_with("rediss://") {
                    return Err(StoreError::Internal("a CA for Redis is given, but the URL is not rediss://".into()));
                }
                let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                redis::Client::build_with_tls(options.url.as_str(), certificates)
            }
        }
        .map_err(|e| StoreError::Internal(format!("invalid redis url {:?}: {e}", options.url)))?;
        Ok(RedisStore {
            masters: Arc::new(master::Masters::new(&options, client)?),
            blocking: Mutex::new(None),
            prepared: tokio::sync::OnceCell::new(),
            keys: Arc::new(Keys::new(&options.key_prefix)),
            scripts: Arc::new(Scripts::new()),
            options,
            codes: Default::default(),
            known: Default::default(),
            locks: Default::default(),
            recent: Default::default(),
            writer: crate::new_epoch('w'),
            next_token: Default::default(),
            committer: OnceLock::new(),
            appended: Default::default(),
        })
    }

    /// A store for `options` that has answered a PING.
    pub async fn connect(options: RedisOptions) -> Result<Self, StoreError> {
        let store = Self::new(options)?;
        store.ping().await?;
        Ok(store)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| self.masters.failed(e)).map(|_| ())
    }

    /// The command connection to the current master, once the stored data's version has been checked (and the
    /// data upgraded) on first contact; data newer than this build knows is refused, every time (see `schema.rs`).
    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        Ok(self.master().await?.conn.clone())
    }

    /// Every field of the hash `key`, read in bounded pieces ([`scan_hash`] with `LOAD_BATCH`), each piece handed
    /// to `each` as it comes.
    async fn scan_hash(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        each: impl FnMut(Vec<(String, Vec<u8>)>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        scan_hash(conn, key, LOAD_BATCH, |e| self.masters.failed(e), each).await
    }

    /// The current master (see [`RedisStore::conn`]).
    async fn master(&self) -> Result<Arc<master::Master>, StoreError> {
        let master = self.masters.get().await?;
        if self.prepared.initialized() {
            return Ok(master);
        }
        self.prepared
            .get_or_try_init(|| async {
                let version = schema::prepare(&master.conn, &self.keys, schema::MIGRATIONS).await?;
                tracing::debug!(version, prefix = %self.options.key_prefix, "redis: data version checked");
                Ok::<(), StoreError>(())
            })
            .await
            .map_err(|e| match e {
                StoreError::Unavailable { .. } => {
                    self.masters.unreachable();
                    e
                }
                e => e,
            })?;
        Ok(master)
    }

    /// Checks the stored data's version, upgrading older data (see `schema.rs`): what an aggregator does before it
    /// serves. Fails with [`StoreError::Incompatible`] for data newer than this build knows.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        self.conn().await.map(|_| ())
    }

    /// The dictionary of metric numbers, with a number for every metric of the rules.
    async fn codes(&self) -> Result<Arc<Codes>, StoreError> {
        let generation = self.masters.generation();
        if let Some((of, c)) = self.codes.read().unwrap_or_else(|e| e.into_inner()).clone()
            && of == generation
        {
            return Ok(c);
        }
        self.refresh_codes().await
    }

    /// Reads the dictionary again, adding numbers for any of the rules' metrics it lacks.
    async fn refresh_codes(&self) -> Result<Arc<Codes>, StoreError> {
        let index = self.options.rules.index();
        let mut invocation = self.scripts.codes.prepare_invoke();
        invocation.key(&self.keys.codes);
        for code in index.metrics.iter().chain(&index.derived) {
            invocation.arg(code.as_str());
        }
        let master = self.master().await?;
        let mut conn = master.conn.clone();
        let reply: RValue = invocation.invoke_async(&mut conn).await.map_err(|e| self.masters.failed(e))?;
        let pairs: Vec<(String, u32)> =
            FromRedisValue::from_redis_value(reply).map_err(|e| bad(&format!("codes: {e}")))?;
        let codes = Arc::new(Codes::new(pairs));
        *self.codes.write().unwrap_or_else(|e| e.into_inner()) = Some((master.generation, codes.clone()));
        Ok(codes)
    }

    /// Runs `decode` with the dictionary, reading the dictionary again once if it meets a number it lacks
    /// (another replica, with a larger catalogue, added it).
    async fn decoding<T>(&self, decode: impl Fn(&Codes) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let codes = self.codes().await?;
        match decode(&codes) {
            Err(StoreError::UnknownCode(_)) => decode(&*self.refresh_codes().await?),
            other => other,
        }
    }

    /// The stream's bounds as the scripts that append take them: the most events kept, and their greatest age in
    /// milliseconds ('' for none).
    fn log_limits(&self) -> [String; 2] {
        [
            self.options.event_log_max_len.to_string(),
            self.options.event_log_max_age.map(|age| age.as_millis().to_string()).unwrap_or_default(),
        ]
    }

    /// The replicas a script call's writes must reach before it is acknowledged (`store.ack_replicas`).
    fn ack(&self) -> Ack {
        Ack { replicas: self.options.ack_replicas, timeout: self.options.ack_timeout }
    }

    fn committer(&self) -> &mpsc::Sender<Pending> {
        self.committer.get_or_init(|| {
            let (tx, rx) = mpsc::channel(1024);
            let [max_len, max_age] = self.log_limits();
            let head = [max_len, max_age, self.keys.prefix.clone()];
            let (masters, scripts, keys, appended) =
                (self.masters.clone(), self.scripts.clone(), self.keys.clone(), self.appended.clone());
            tokio::spawn(commit_loop(rx, masters, scripts, keys, head, appended, self.ack()));
            tx
        })
    }

    /// Persists `plan` (group-committed with whatever else is being persisted) and says what became of it.
    async fn persist(
        &self,
        codes: &Codes,
        plan: &Plan,
        state: Option<&Arc<ProviderLive>>,
    ) -> Result<(String, Outcome), StoreError> {
        let (field, trim, entry) = match &plan.history {
            Some(h) => {
                let field = codec::history_field(h.period, h.revision, h.site.as_deref());
                let trim = plan.trim_before.map(|t| codec::history_score(t).to_string()).unwrap_or_default();
                (field, trim, codec::encode_history(codes, h)?)
            }
            None => Default::default(),
        };
        let encoded = state.map(|s| codec::encode_state(codes, s)).transpose()?.unwrap_or_default();
        let (token, written) = self.token();
        let args = args::PlanArgs {
            provider: plan.provider.clone(),
            expected_version: itoa::Buffer::new().format(plan.expected_version).to_owned(),
            history_field: field,
            trim_hours: trim,
            state: encoded,
            event: codec::encode_event(codes, &plan.event)?,
            entry,
            token: written,
        };
        self.remember(token, &plan.event, state);
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable { message: "redis: the committer stopped".into(), source: None };
        let outcome = match self.committer().send(Pending { args, token, reply }).await {
            Ok(()) => answer.await.map_err(|_| closed()).and_then(|o| o),
            Err(_) => Err(closed()),
        };
        if !matches!(outcome, Ok((_, Outcome::Accepted { .. }))) {
            self.recent.lock().unwrap_or_else(|e| e.into_inner()).remove(&token);
        }
        outcome
    }

    /// A new token for an event this store appends: its number, and the token as written with the event (`w`,
    /// `<store id>.<n>`), by which this store's tail recognises its own events.
    fn token(&self) -> (u64, Vec<u8>) {
        let token = self.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (token, [self.writer.as_bytes(), b".", itoa::Buffer::new().format(token).as_bytes()].concat())
    }

    fn provider_lock(&self, provider: &str) -> Arc<Mutex<()>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).entry(provider.to_owned()).or_default().clone()
    }

    fn known(&self, provider: &str) -> Option<Arc<ProviderLive>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).get(provider).cloned()
    }

    fn set_known(&self, provider: &str, state: Option<Arc<ProviderLive>>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match state {
            Some(s) => known.insert(provider.to_owned(), s),
            None => known.remove(provider),
        };
    }

    /// Keeps a copy of an event being appended, with the state its plan left, for this store's own tail.
    fn remember(&self, token: u64, ev: &Event, state: Option<&Arc<ProviderLive>>) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut ev = ev.clone();
        ev.planned = sitrep_core::state::Planned(state.cloned());
        recent.insert(token, ev);
        while recent.len() > RECENT_KEPT {
            recent.pop_first();
        }
    }

    /// The provider's state as stored now (`None`: it has none).
    async fn read_state(&self, provider: &str) -> Result<Option<ProviderLive>, StoreError> {
        let mut conn = self.conn().await?;
        let stored: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(&self.keys.states)
            .arg(provider)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.masters.failed(e))?;
        match stored {
            None => Ok(None),
            Some(s) => {
                self.decoding(|codes| codec::decode_state(codes, &self.options.rules, provider, &s)).await.map(Some)
            }
        }
    }

    /// What the revision of `report`'s period (and site) just before it said, for a late report's diff.
    async fn previous_revision(&self, report: &ValidReport) -> Result<Option<BTreeMap<Code, Value>>, StoreError> {
        let p = report.provider();
        let mut conn = self.conn().await?;
        let stored: Vec<u8> = self
            .scripts
            .previous
            .key(self.keys.of("hist", p))
            .arg(codec::history_score(report.period()))
            .arg(report.revision())
            .arg(report.site().unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.masters.failed(e))?;
        if stored.is_empty() {
            return Ok(None);
        }
        let field = codec::history_field(report.period(), 0, report.site());
        let record = self.decoding(|codes| codec::decode_history(codes, &field, &stored)).await?;
        Ok(Some(record.0.values))
    }

    /// The highest revision history holds for `report`'s period and site, if any.
    async fn highest_revision(&self, report: &ValidReport) -> Result<Option<u32>, StoreError> {
        let period = self.history(report.provider(), report.period(), report.period()).await?;
        Ok(period.iter().filter(|h| h.site.as_deref() == report.site()).map(|h| h.revision).max())
    }

    /// Plans with `make` against the provider's state as known (or, after a conflict, as stored) and persists
    /// the plan, until it is persisted, its report's key is found in history, or `make` finds nothing to do.
    async fn plan_and_persist(
        &self,
        provider: &str,
        mut prior: Option<Arc<ProviderLive>>,
        make: &impl AsyncPlanner,
    ) -> Result<Option<Persisted>, StoreError> {
        let codes = self.codes().await?;
        for _ in 0..MAX_CONFLICTS {
            let Some(mut plan) = make.plan(self, prior.as_deref()).await? else { return Ok(None) };
            let state = plan.state.take().map(Arc::new);
            let outcome = self.persist(&codes, &plan, state.as_ref()).await;
            let (epoch, outcome) = match outcome {
                Ok(o) => o,
                Err(e) => {
                    // The write may or may not have happened: plan the next report from what is stored.
                    self.set_known(provider, None);
                    return Err(e);
                }
            };
            match outcome {
                Outcome::Accepted { pos, .. } => {
                    let mut event = plan.event;
                    event.cursor = Cursor::new(epoch, pos);
                    if let Some(state) = state {
                        self.set_known(provider, Some(state));
                    }
                    return Ok(Some(Persisted::Accepted(event)));
                }
                Outcome::Seen(stored) => {
                    let revision = plan.event.revision;
                    return Ok(Some(Persisted::Seen { epoch, revision, stored, prior }));
                }
                Outcome::Conflict(current) => {
                    prior = match current.is_empty() {
                        true => None,
                        false => Some(Arc::new(
                            self.decoding(|codes| codec::decode_state(codes, &self.options.rules, provider, &current))
                                .await?,
                        )),
                    };
                    self.set_known(provider, prior.clone());
                }
            }
        }
        Err(StoreError::Contention(format!("provider {provider} kept changing while its change was being stored")))
    }

    /// `read.lua`: the log's epoch and head, and up to `max` raw entries after `after`.
    async fn read_script(&self, after: Position, max: usize) -> Result<reply::ReadReply, StoreError> {
        let mut conn = self.conn().await?;
        let reply: RValue = self
            .scripts
            .read
            .key(&self.keys.log)
            .key(&self.keys.events)
            .arg(crate::new_epoch('r'))
            .arg(after.to_string())
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.masters.failed(e))?;
        reply::ReadReply::from_redis_value(reply).map_err(|e| bad(&format!("read reply: {e}")))
    }

    /// The entries sitrep can read, in order. Anything else in the stream (written by someone else, or damaged) is
    /// skipped with a warning: the predecessor links between sitrep's own entries still prove nothing of sitrep's
    /// was missed, and a stray entry must neither stall readers nor reset them over and over.
    async fn own_entries(&self, raw: &[RValue]) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::with_capacity(raw.len());
        for e in raw {
            match self.decoding(|codes| entry(codes, e, &self.writer, &self.recent)).await {
                Ok(entry) => out.push(entry),
                Err(error) => tracing::warn!(%error, "skipping an entry of the event stream that sitrep cannot read"),
            }
        }
        Ok(out)
    }

    /// One read through the checking script: `Read` decided against the log's epoch, head and links.
    async fn read_once(&self, after: &Cursor, max: usize) -> Result<Read, StoreError> {
        let reply::ReadReply { epoch, head, entries } = self.read_script(after.pos, max).await?;
        if after.epoch != epoch {
            return Ok(Read::Reset(ResetReason::OtherEpoch));
        }
        if after.pos > head {
            return Ok(Read::Reset(ResetReason::Ahead));
        }
        let entries = self.own_entries(&entries).await?;
        if entries.is_empty() && after.pos < head {
            // Everything after the cursor has been trimmed.
            return Ok(Read::Reset(ResetReason::TooOld));
        }
        if let Some(first) = entries.first()
            && !linked(after, &entries)
        {
            // The event after the cursor names an earlier one as its predecessor: the cursor's own event is not in
            // this log (a failover to a replica that lacked the tail, then new writes): the cursor is ahead of it.
            if first.epoch == after.epoch && first.prev < after.pos {
                return Ok(Read::Reset(ResetReason::Ahead));
            }
            return Ok(Read::Reset(ResetReason::TooOld));
        }
        Ok(Read::Events(entries.into_iter().map(|e| e.event).collect()))
    }

    /// The run of this store's own events that continues `after` (at most `max`), from where the committer noted
    /// them, or `None` if the next event of the log is not known to be one of them. Links the cursor has passed
    /// are dropped.
    fn own_linked(&self, after: &Cursor, max: usize) -> Option<Vec<Event>> {
        let mut links = self.appended.links.lock().unwrap_or_else(|e| e.into_inner());
        while links.front().is_some_and(|l| *l.epoch != *after.epoch || l.pos <= after.pos) {
            links.pop_front();
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = Vec::new();
        let mut pos = after.pos;
        while events.len() < max {
            let Some(link) = links.front() else { break };
            if link.prev != pos {
                break;
            }
            // Its event went to a blocking read that got there first: the stream has the rest.
            let Some(mut event) = recent.remove(&link.token) else { break };
            event.cursor = Cursor::new(link.epoch.to_string(), link.pos);
            pos = link.pos;
            events.push(event);
            links.pop_front();
        }
        (!events.is_empty()).then_some(events)
    }

    /// `XREAD BLOCK` on the dedicated connection: sitrep's entries after `after` as soon as there are any, or
    /// none after `wait`. Entries sitrep did not write are read past, not returned.
    async fn read_blocking(&self, after: &Cursor, max: usize, wait: Duration) -> Result<Vec<Entry>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut from = after.pos;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let raw = self.xread(from, max, left).await?;
            let Some(last) = raw.last() else { return Ok(Vec::new()) };
            let own = self.own_entries(&raw).await?;
            if !own.is_empty() {
                return Ok(own);
            }
            // Only entries that are not sitrep's: move past them and keep waiting.
            let [id, _] = array(last)? else { return Err(bad("stream entry")) };
            from = position(&text(id)?)?;
        }
    }

    /// One `XREAD BLOCK` from `from`, raw entries (none if BLOCK expired).
    async fn xread(&self, from: Position, max: usize, wait: Duration) -> Result<Vec<RValue>, StoreError> {
        let master = self.master().await?;
        let mut guard = self.blocking.lock().await;
        // A connection to a master this store has since moved away from is dropped.
        if guard.as_ref().is_none_or(|(generation, _)| *generation != master.generation) {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.options.response_timeout))
                // A blocking read answers only when an entry arrives or BLOCK expires: no response timeout.
                .set_response_timeout(None);
            let conn = master
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| self.masters.failed(e))?;
            *guard = Some((master.generation, conn));
        }
        let (_, conn) = guard.as_mut().expect("connected above");
        let block_ms = wait.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("BLOCK").arg(block_ms).arg("COUNT").arg(max.max(1)).arg("STREAMS");
        cmd.arg(&self.keys.events).arg(from.to_string());
        let xread = cmd.query_async::<RValue>(conn);
        // The connection has no response timeout, so guard against a peer that vanished silently.
        let reply = match tokio::time::timeout(wait + self.options.response_timeout, xread).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                *guard = None;
                return Err(self.masters.failed(e));
            }
            Err(_) => {
                *guard = None;
                self.masters.unreachable();
                return Err(StoreError::Unavailable { message: "redis: blocking read timed out".into(), source: None });
            }
        };
        drop(guard);
        // [[stream, [entry, ...]]], or nil when BLOCK expired. The entries stay raw: `entry` reads them (see
        // reply.rs for why not `StreamReadReply`).
        let streams: Option<Vec<(RValue, Vec<RValue>)>> =
            FromRedisValue::from_redis_value(reply).map_err(|e| bad(&format!("XREAD reply: {e}")))?;
        Ok(streams.and_then(|s| s.into_iter().next()).map(|(_, entries)| entries).unwrap_or_default())
    }
}

/// Makes a plan against a provider's prior state (with whatever else it needs from the store), or finds there is
/// nothing to do.
#[async_trait]
trait AsyncPlanner: Send + Sync {
    async fn plan(&self, store: &RedisStore, prior: Option<&ProviderLive>) -> Result<Option<Plan>, StoreError>;
}

struct ReportPlanner<'a> {
    report: &'a ValidReport,
    received_at: Timestamp,
}

#[async_trait]
impl AsyncPlanner for ReportPlanner<'_> {
    async fn plan(&self, store: &RedisStore, prior: Option<&ProviderLive>) -> Result<Option<Plan>, StoreError> {
        let assigned;
        let report = match self.report.needs_revision() {
            true => {
                let highest = match plan::needs_history_for_revision(prior, self.report) {
                    true => store.highest_revision(self.report).await?,
                    false => None,
                };
                assigned = self.report.with_revision(plan::next_revision(prior, self.report, highest));
                &assigned
            }
            false => self.report,
        };
        let previous = match plan::is_late(prior, report) {
            true => store.previous_revision(report).await?,
            false => None,
        };
        let o = &store.options;
        Ok(Some(plan::report(&o.rules, prior, previous.as_ref(), report, self.received_at, o.retention_hours)))
    }
}

struct StalePlanner {
    now: Timestamp,
}

#[async_trait]
impl AsyncPlanner for StalePlanner {
    async fn plan(&self, store: &RedisStore, prior: Option<&ProviderLive>) -> Result<Option<Plan>, StoreError> {
        Ok(prior.and_then(|p| plan::stale(&store.options.rules, p, self.now)))
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn act(
        &self,
        action: &sitrep_core::aid::Action,
        actor: &sitrep_core::aid::Actor,
        now: Timestamp,
    ) -> Result<crate::Acted, StoreError> {
        self.act_in_one_step(action, actor, now).await
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn apply(&self, report: &ValidReport, received_at: Timestamp) -> Result<Applied, StoreError> {
        let p = report.provider();
        let lock = self.provider_lock(p);
        let _one_at_a_time = lock.lock().await;
        // A provider this store has not seen is planned as new: right for a new provider, and for one another
        // replica wrote, the script's answer brings its state.
        let mut prior = self.known(p);
        let planner = ReportPlanner { report, received_at };
        for _ in 0..MAX_CONFLICTS {
            let persisted = self.plan_and_persist(p, prior, &planner).await?;
            let (epoch, revision, stored, seen_prior) = match persisted {
                Some(Persisted::Accepted(event)) => return Ok(Applied::Accepted(event)),
                Some(Persisted::Seen { epoch, revision, stored, prior }) => (epoch, revision, stored, prior),
                None => return Err(StoreError::Internal("a report always has a plan".into())),
            };
            let field = codec::history_field(report.period(), revision, report.site());
            let (record, id) = self.decoding(|codes| codec::decode_history(codes, &field, &stored)).await?;
            let cursor = Some(Cursor::new(epoch, position(&id)?));
            if plan::same_content(&record, report) {
                return Ok(Applied::Duplicate { cursor });
            }
            if report.needs_revision() {
                // The revision given was taken meanwhile (by another replica): choose again from what is stored.
                prior = self.read_state(p).await?.map(Arc::new);
                self.set_known(p, prior.clone());
                continue;
            }
            let highest = self.highest_revision(report).await?;
            return Ok(Applied::Conflict {
                cursor,
                next_revision: plan::next_revision(seen_prior.as_deref(), report, highest),
            });
        }
        Err(StoreError::Contention(format!(
            "provider {p} kept changing while a revision was being chosen for its report"
        )))
    }

    async fn mark_stale(&self, provider: &str, now: Timestamp) -> Result<Option<Event>, StoreError> {
        let lock = self.provider_lock(provider);
        let _one_at_a_time = lock.lock().await;
        let prior = match self.known(provider) {
            Some(p) => Some(p),
            None => self.read_state(provider).await?.map(Arc::new),
        };
        match self.plan_and_persist(provider, prior, &StalePlanner { now }).await? {
            Some(Persisted::Accepted(e)) => Ok(Some(e)),
            _ => Ok(None),
        }
    }

    async fn load(&self) -> Result<Loaded, StoreError> {
        let cursor = self.head().await?;
        let mut stored = Vec::new();
        let mut conn = self.conn().await?;
        self.scan_hash(&mut conn, &self.keys.states, |pairs| {
            stored.extend(pairs);
            Ok(())
        })
        .await?;
        let mut providers = Vec::with_capacity(stored.len());
        for (provider, state) in stored {
            providers
                .push(self.decoding(|codes| codec::decode_state(codes, &self.options.rules, &provider, &state)).await?);
        }
        // After the states, so the book is at least as new as the cursor (the picture passes over aid events it
        // already reflects, by the book's version).
        let aid = self.read_book().await?;
        Ok(Loaded { cursor, providers, aid })
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        let reply::ReadReply { epoch, head, .. } = self.read_script(Position(0, 0), 0).await?;
        Ok(Cursor::new(epoch, head))
    }

    async fn read(&self, after: &Cursor, max: usize, wait: Duration) -> Result<Read, StoreError> {
        let max = max.min(READ_MAX);
        if wait.is_zero() {
            return self.read_once(after, max).await;
        }
        // The tail path. This store's own events, when they continue the cursor, come from where the committer
        // noted them (waiting a moment for a script call under way); otherwise a plain blocking read, trusted
        // only when its entries link onto the cursor. Anything else (a timeout, a broken link, another epoch) is
        // decided by the checking script.
        // Registered for the committer's next answer before looking, so one that lands in between is not missed
        // (and no answer from long ago counts: the committer wakes only who is waiting).
        let landed = self.appended.landed.notified();
        tokio::pin!(landed);
        landed.as_mut().enable();
        if let Some(events) = self.own_linked(after, max) {
            return Ok(Read::Events(events));
        }
        if self.appended.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            let _ = tokio::time::timeout(LANDING_WAIT.min(wait), landed).await;
        }
        // Again: the call may have answered meanwhile, or just before the count was read.
        if let Some(events) = self.own_linked(after, max) {
            return Ok(Read::Events(events));
        }
        let entries = self.read_blocking(after, max, wait).await?;
        if linked(after, &entries) {
            return Ok(Read::Events(entries.into_iter().map(|e| e.event).collect()));
        }
        self.read_once(after, max).await
    }

    async fn fullness(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let mut conn = self.conn().await?;
        let info: String =
            redis::cmd("INFO").arg("memory").query_async(&mut conn).await.map_err(|e| self.masters.failed(e))?;
        let field =
            |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<u64>().ok());
        Ok(match (field("used_memory"), field("maxmemory")) {
            (Some(used), Some(max)) if max > 0 => Some((used, max)),
            _ => None,
        })
    }

    async fn event_log_length(&self) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn().await?;
        let len: u64 = redis::cmd("XLEN")
            .arg(&self.keys.events)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.masters.failed(e))?;
        Ok(Some(len))
    }

    async fn history(&self, provider: &str, from: Timestamp, to: Timestamp) -> Result<Vec<HistoryRecord>, StoreError> {
        let mut found = self.histories(&[provider.to_owned()], from, to).await?;
        Ok(found.remove(provider).unwrap_or_default())
    }

    async fn histories(
        &self,
        providers: &[String],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, Vec<HistoryRecord>>, StoreError> {
        let mut out = BTreeMap::new();
        if from > to {
            return Ok(out);
        }
        let mut conn = self.conn().await?;
        // One script call per piece of providers: a round trip each, and no call that holds Redis for long.
        for piece in providers.chunks(crate::HISTORY_PIECE) {
            let mut invocation = self.scripts.history.prepare_invoke();
            for provider in piece {
                invocation.key(self.keys.of("hist", provider));
            }
            invocation.arg(codec::history_score(from)).arg(codec::history_score(to));
            let reply: RValue = invocation.invoke_async(&mut conn).await.map_err(|e| self.masters.failed(e))?;
            // One list of (field, stored entry) pairs per provider, in the order of the keys.
            let per_provider: Vec<Vec<(String, Vec<u8>)>> =
                FromRedisValue::from_redis_value(reply).map_err(|e| bad(&format!("history pairs: {e}")))?;
            if per_provider.len() != piece.len() {
                return Err(bad("history: one list per provider"));
            }
            for (provider, pairs) in piece.iter().zip(per_provider) {
                let mut records = self
                    .decoding(|codes| {
                        pairs
                            .iter()
                            .map(|(field, stored)| Ok(codec::decode_history(codes, field, stored)?.0))
                            .collect::<Result<Vec<_>, StoreError>>()
                    })
                    .await?;
                records.retain(|h| h.period >= from && h.period <= to);
                records.sort_by_key(|h| (h.period, h.revision));
                if !records.is_empty() {
                    out.insert(provider.clone(), records);
                }
            }
        }
        Ok(out)
    }
}

/// Every field of the hash `key`, read in pieces of about `count` (`HSCAN ... COUNT`, so a large hash never blocks
/// Redis), each piece handed to `each` as it comes; a failed command becomes a store error through `fail`. The
/// store's loads and the schema's migrations read hashes this one way.
pub(super) async fn scan_hash(
    conn: &mut ConnectionManager,
    key: &str,
    count: usize,
    fail: impl Fn(redis::RedisError) -> StoreError,
    mut each: impl FnMut(Vec<(String, Vec<u8>)>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut scan = 0u64;
    loop {
        let (next, pairs): (u64, Vec<(String, Vec<u8>)>) =
            redis::cmd("HSCAN").arg(key).arg(scan).arg("COUNT").arg(count).query_async(conn).await.map_err(&fail)?;
        each(pairs)?;
        if next == 0 {
            return Ok(());
        }
        scan = next;
    }
}
