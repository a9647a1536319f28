//! `RedisStore`: the store of record. Live state, hourly history and the event log in Redis, shared by replicas.
//!
//! Every `apply` reads the provider's state (`prior.lua`), diffs and derives in Rust with `sitrep-core`, then
//! writes in one Lua script (`apply.lua`): the idempotency check, a check that the provider has not changed since
//! it was read (else read again and retry), live state, history, open alerts, rollup totals and the event all
//! happen atomically on the server. Rollup totals are kept per scope as running sums, which commute, so reports
//! from different providers never conflict. Scripts are invoked by SHA and re-loaded by
//! redis-rs when Redis answers `NOSCRIPT` (after a restart). Calls go over one multiplexed, auto-reconnecting
//! connection, so concurrent reports from many providers are pipelined rather than queued behind a lock.
//! Blocking reads of the event stream (`XREAD BLOCK`) use a second, dedicated connection with no response timeout.
//!
//! # Keys
//! Every key starts with `{<prefix>}:` (the braces are a hash tag, so all keys share one Redis Cluster slot and
//! one script may touch them all):
//! - `state:<provider>` hash: metric -> `value|period|observed_at`
//! - `meta:<provider>` hash: period, revision, observed, received, narrative, source, site of the live report
//! - `hist:<provider>` hash: `period:revision` -> JSON record; `histidx:<provider>` zset of those by period
//! - `providers` set of providers with live state; `events` stream (entry id = cursor position); `epoch` string;
//!   `head` string, the id of the latest event
//! - `alerts:<provider>` hash: alert key -> JSON of an open alert; `lastseen` zset: provider by the receipt time
//!   of its last live report; `stale` set of stale providers
//! - `agg:<scope>` hash: rollup totals of a scope (`<metric>|s` sum, `<metric>|n` providers with a number,
//!   `|reporting`, `|stale`); `aggmax:<scope>:<metric>` hash: value -> how many providers have it, for metrics
//!   that roll up by maximum
//!
//! Every event in the stream carries its epoch and the id of the event before it (`prev`). A reader resuming
//! after cursor C checks that the first event it gets names C as its predecessor: that proves nothing between was
//! trimmed, exactly, without asking the stream about its ends. It also lets the Hub tail the log with plain
//! `XREAD BLOCK` (one round trip per batch) and fall back to the checking script only when the link breaks.
//!
//! Values are encoded as the shortest text that round-trips the `f64` (so equal numbers encode equally and the
//! script can diff by string), or `~reason` when absent.

mod process;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, Script, ServerErrorKind, Value as RValue};
use sitrep_core::catalogue::Rollup;
use sitrep_core::cursor::Position;
use sitrep_core::derive::{self, Derived};
use sitrep_core::rollup::{Agg, ScopeRollup, Totals, inputs, rollup};
use sitrep_core::state::{diff, event};
use sitrep_core::{
    AbsentReason, Alert, Cursor, Event, EventKind, MetricChange, ProviderLive, Reading, Rules, Scope, Selection,
    Timestamp, ValidReport, Value,
};
use tokio::sync::Mutex;

pub use process::RedisProcess;

use crate::{Applied, HistoryRecord, Read, ResetReason, Snapshot, Store, StoreError};

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
        }
    }
}

struct Keys {
    prefix: String,
    events: String,
    epoch: String,
    head: String,
    providers: String,
    lastseen: String,
    stale: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        let prefix = format!("{{{prefix}}}:");
        Keys {
            events: format!("{prefix}events"),
            epoch: format!("{prefix}epoch"),
            head: format!("{prefix}head"),
            providers: format!("{prefix}providers"),
            lastseen: format!("{prefix}lastseen"),
            stale: format!("{prefix}stale"),
            prefix,
        }
    }

    fn of(&self, kind: &str, provider: &str) -> String {
        format!("{}{kind}:{provider}", self.prefix)
    }
}

struct Scripts {
    prior: Script,
    apply: Script,
    stale: Script,
    read: Script,
    snapshot: Script,
    history: Script,
}

const COMMON: &str = include_str!("common.lua");

impl Scripts {
    fn new() -> Self {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            prior: Script::new(include_str!("prior.lua")),
            apply: with_common(include_str!("apply.lua")),
            stale: with_common(include_str!("stale.lua")),
            read: with_common(include_str!("read.lua")),
            snapshot: with_common(include_str!("snapshot.lua")),
            history: Script::new(include_str!("history.lua")),
        }
    }
}

pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    /// For `XREAD BLOCK` only; `None` until first needed and after a failure.
    blocking: Mutex<Option<MultiplexedConnection>>,
    keys: Keys,
    scripts: Scripts,
    options: RedisOptions,
    /// What this store last wrote for each provider: enough to derive its next report without reading it back
    /// (one round trip instead of two). Only a hint: `apply.lua` checks the version, so if another replica or the
    /// clock changed the provider meanwhile, the write is refused and the provider is read afresh. A std mutex,
    /// held for a map operation, never across an await.
    known: std::sync::Mutex<std::collections::HashMap<String, Prior>>,
    /// Events this store appended, until its own tail reads them back: the Hub then takes them as they are
    /// instead of parsing them again (most events of a single-replica deployment). Bounded; oldest dropped.
    recent: std::sync::Mutex<BTreeMap<Position, Event>>,
}

/// Appended events kept for the tail to reuse.
const RECENT_KEPT: usize = 4096;

/// Conditions in which Redis refuses a command for now but may take it later. Scripts can report them wrapped in a
/// generic `ERR` (older Redis versions do), so they are recognised in the text too.
const TRANSIENT: [&str; 7] = ["READONLY", "NOREPLICAS", "OOM", "MASTERDOWN", "LOADING", "BUSY", "TRYAGAIN"];

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

/// Text for a value, as stored and diffed by the scripts.
pub fn encode_value(v: Value) -> String {
    match v {
        // -0.0 and 0.0 are the same count; give them one spelling so the script's string diff agrees with `==`.
        Value::Number(0.0) => "0".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Absent(r) => format!("~{}", r.as_str()),
    }
}

pub fn decode_value(text: &str) -> Result<Value, StoreError> {
    match text.strip_prefix('~') {
        Some(reason) => match reason {
            "unspecified" => Ok(Value::Absent(AbsentReason::Unspecified)),
            r => AbsentReason::parse(r).map(Value::Absent).ok_or_else(|| bad(&format!("absent reason {r:?}"))),
        },
        None => text.parse().map(Value::Number).map_err(|_| bad(&format!("value {text:?}"))),
    }
}

fn text(v: &RValue) -> Result<String, StoreError> {
    match v {
        RValue::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| bad("non-UTF-8 text")),
        RValue::SimpleString(s) => Ok(s.clone()),
        RValue::Int(i) => Ok(i.to_string()),
        RValue::Okay => Ok("OK".into()),
        other => Err(bad(&format!("expected text, got {other:?}"))),
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
    let (ms, seq) = id.split_once('-').ok_or_else(|| bad(&format!("stream id {id:?}")))?;
    Ok(Position(ms.parse().map_err(|_| bad("stream id"))?, seq.parse().map_err(|_| bad("stream id"))?))
}

/// A flat `[field, value, field, value, ...]` reply as a map.
fn pairs(v: &RValue) -> Result<BTreeMap<String, String>, StoreError> {
    let items = array(v)?;
    items.chunks(2).map(|kv| Ok((text(&kv[0])?, text(kv.get(1).ok_or_else(|| bad("odd pairs"))?)?))).collect()
}

fn ms(text: &str) -> Result<Timestamp, StoreError> {
    text.parse().map(Timestamp::from_millis).map_err(|_| bad(&format!("time {text:?}")))
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// `metric before after` triples joined by spaces, as `apply.lua` returns and stores them.
fn parse_changes(text: &str) -> Result<Vec<MetricChange>, StoreError> {
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    if !words.len().is_multiple_of(3) {
        return Err(bad("changes"));
    }
    words
        .chunks(3)
        .map(|c| {
            let before = if c[1] == "~" { None } else { Some(decode_value(c[1])?) };
            Ok(MetricChange { metric: c[0].to_owned(), before, after: decode_value(c[2])? })
        })
        .collect()
}

/// `metric before after` triples joined by spaces, as `apply.lua` stores them.
fn encode_changes(changes: &[MetricChange]) -> String {
    let mut out = String::new();
    for c in changes {
        if !out.is_empty() {
            out.push(' ');
        }
        let before = c.before.map_or_else(|| "~".to_owned(), encode_value);
        out.push_str(&format!("{} {before} {}", c.metric, encode_value(c.after)));
    }
    out
}

/// A scope's totals as the scripts return them: reporting, stale, and metric -> [sum, n, max?] as text.
#[derive(serde::Deserialize)]
struct TotalsJson {
    r: u32,
    s: u32,
    #[serde(default)]
    m: BTreeMap<String, Vec<String>>,
}

fn agg(entry: &[String]) -> Result<Agg, StoreError> {
    let num = |t: &String| t.parse::<f64>().map_err(|_| bad(&format!("rollup total {t:?}")));
    match entry {
        [sum, n, rest @ ..] => Ok(Agg {
            sum: num(sum)?,
            n: n.parse().map_err(|_| bad("rollup count"))?,
            max: rest.first().map(num).transpose()?,
        }),
        _ => Err(bad("rollup totals")),
    }
}

/// The rollups of `metrics` from the scripts' totals JSON ('' when none), in scope order.
fn rollups_from_json(rules: &Rules, json: &str, metrics: &BTreeSet<String>) -> Result<Vec<ScopeRollup>, StoreError> {
    if json.is_empty() {
        return Ok(Vec::new());
    }
    let parsed: BTreeMap<String, TotalsJson> =
        serde_json::from_str(json).map_err(|e| bad(&format!("rollup totals: {e}")))?;
    let mut out = Vec::new();
    for (scope, t) in parsed {
        let scope = Scope::parse(&scope).ok_or_else(|| bad(&format!("scope {scope:?}")))?;
        let metrics_totals =
            t.m.iter().map(|(code, e)| Ok((code.clone(), agg(e)?))).collect::<Result<_, StoreError>>()?;
        let totals = Totals { reporting: t.r, stale: t.s, metrics: metrics_totals };
        out.push(rollup(rules, &scope, &totals, Some(metrics)));
    }
    out.sort_by(|a, b| a.scope.cmp(&b.scope));
    Ok(out)
}

/// A stream entry: the event, the epoch it was written in, and the position of the event before it.
struct Entry {
    event: Event,
    epoch: String,
    prev: Position,
}

fn parse_entry(rules: &Rules, entry: &RValue) -> Result<Entry, StoreError> {
    let parts = array(entry)?;
    let (id, fields) = match parts {
        [id, fields] => (text(id)?, pairs(fields)?),
        _ => return Err(bad("stream entry")),
    };
    let get = |k: &str| fields.get(k).cloned().ok_or_else(|| bad(&format!("event field {k}")));
    let optional = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let epoch = get("e")?;
    let prev = position(&get("prev")?)?;
    let kind = match optional("k").as_str() {
        "stale" => EventKind::Stale,
        _ => EventKind::Report,
    };
    let changes = parse_changes(&get("ch")?)?;
    let derived: Derived = match optional("d").as_str() {
        "" => Derived::default(),
        json => serde_json::from_str(json).map_err(|e| bad(&format!("derived: {e}")))?,
    };
    let metrics = match kind {
        EventKind::Report => crate::rollup_metrics(rules, &changes),
        EventKind::Stale => BTreeSet::new(),
    };
    let event = Event {
        cursor: Cursor::new(epoch.clone(), position(&id)?),
        provider: get("p")?,
        site: opt(get("s")?),
        period: ms(&get("per")?)?,
        revision: get("rev")?.parse().map_err(|_| bad("revision"))?,
        observed_at: ms(&get("obs")?)?,
        received_at: ms(&get("rcv")?)?,
        live: get("live")? == "1",
        rollups: rollups_from_json(rules, &optional("agg"), &metrics)?,
        changes,
        narrative: opt(get("nar")?),
        source: opt(get("src")?),
        kind,
        derived,
    };
    Ok(Entry { event, epoch, prev })
}

/// A stream entry this store appended itself, taken from `recent` rather than parsed: only its epoch and
/// predecessor are read from the entry.
fn reuse_entry(entry: &RValue, recent: &std::sync::Mutex<BTreeMap<Position, Event>>) -> Option<Entry> {
    let [id, fields] = array(entry).ok()? else { return None };
    let pos = position(&text(id).ok()?).ok()?;
    let fields = array(fields).ok()?;
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| matches!(&kv[0], RValue::BulkString(b) if b == name.as_bytes()))
            .and_then(|kv| text(kv.get(1)?).ok())
    };
    let (epoch, prev) = (field("e")?, position(&field("prev")?).ok()?);
    let event = recent.lock().unwrap_or_else(|e| e.into_inner()).remove(&pos)?;
    (event.cursor.epoch == epoch).then_some(Entry { event, epoch, prev })
}

/// The entries sitrep can read, in order. Anything else in the stream (written by someone else, or damaged) is
/// skipped with a warning: the predecessor links between sitrep's own entries still prove nothing of sitrep's was
/// missed, and a stray entry must neither stall readers nor reset them over and over.
fn own_entries(rules: &Rules, raw: &[RValue], recent: &std::sync::Mutex<BTreeMap<Position, Event>>) -> Vec<Entry> {
    raw.iter()
        .filter_map(|e| match reuse_entry(e, recent).map_or_else(|| parse_entry(rules, e), Ok) {
            Ok(entry) => Some(entry),
            Err(error) => {
                tracing::warn!(%error, "skipping an entry of the event stream that sitrep did not write");
                None
            }
        })
        .collect()
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

#[derive(serde::Deserialize)]
struct RecordJson {
    v: BTreeMap<String, String>,
    o: String,
    r: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    s: String,
    #[serde(default)]
    t: String,
}

impl RedisStore {
    /// A store for `options`. Does not connect: the aggregator can start while Redis is down, and calls fail as
    /// unavailable until it is up.
    pub fn new(options: RedisOptions) -> Result<Self, StoreError> {
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| StoreError::Internal(format!("invalid redis url {:?}: {e}", options.url)))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(RedisStore {
            client,
            conn,
            blocking: Mutex::new(None),
            known: Default::default(),
            recent: Default::default(),
            keys: Keys::new(&options.key_prefix),
            scripts: Scripts::new(),
            options,
        })
    }

    /// A store for `options` that has answered a PING.
    pub async fn connect(options: RedisOptions) -> Result<Self, StoreError> {
        let store = Self::new(options)?;
        store.ping().await?;
        Ok(store)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(unavailable).map(|_| ())
    }

    fn new_epoch() -> String {
        crate::new_epoch('r')
    }

    /// `read.lua`: the log's epoch and head, and up to `max` raw entries after `after`.
    async fn read_script(&self, after: Position, max: usize) -> Result<(String, Position, RValue), StoreError> {
        let mut conn = self.conn.clone();
        let reply: RValue = self
            .scripts
            .read
            .key(&self.keys.events)
            .key(&self.keys.epoch)
            .key(&self.keys.head)
            .arg(Self::new_epoch())
            .arg(after.to_string())
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match <[RValue; 3]>::try_from(array(&reply)?.to_vec()) {
            Ok([epoch, head, entries]) => Ok((text(&epoch)?, position(&text(&head)?)?, entries)),
            Err(_) => Err(bad("read reply")),
        }
    }

    /// One read through the checking script: `Read` decided against the log's epoch, head and links.
    async fn read_once(&self, after: &Cursor, max: usize) -> Result<Read, StoreError> {
        let (epoch, head, entries) = self.read_script(after.pos, max).await?;
        if after.epoch != epoch {
            return Ok(Read::Reset(ResetReason::OtherEpoch));
        }
        if after.pos > head {
            return Ok(Read::Reset(ResetReason::Ahead));
        }
        let entries = own_entries(&self.options.rules, array(&entries)?, &self.recent);
        if entries.is_empty() && after.pos < head {
            // Everything after the cursor has been trimmed.
            return Ok(Read::Reset(ResetReason::TooOld));
        }
        if !entries.is_empty() && !linked(after, &entries) {
            return Ok(Read::Reset(ResetReason::TooOld));
        }
        Ok(Read::Events(entries.into_iter().map(|e| e.event).collect()))
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
            let own = own_entries(&self.options.rules, &raw, &self.recent);
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
        let mut guard = self.blocking.lock().await;
        if guard.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.options.response_timeout))
                // A blocking read answers only when an entry arrives or BLOCK expires: no response timeout.
                .set_response_timeout(None);
            let conn = self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(unavailable)?;
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("connected above");
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
                return Err(unavailable(e));
            }
            Err(_) => {
                *guard = None;
                return Err(StoreError::Unavailable { message: "redis: blocking read timed out".into(), source: None });
            }
        };
        drop(guard);
        // [[stream, [entry, ...]]], or nil when BLOCK expired.
        match array(&reply)?.first() {
            None => Ok(Vec::new()),
            Some(stream) => match array(stream)? {
                [_, entries] => Ok(array(entries)?.to_vec()),
                _ => Err(bad("XREAD reply")),
            },
        }
    }
}

/// Attempts at applying a report whose provider changed between read and write, before giving up.
const MAX_CONFLICTS: usize = 16;

/// A provider's stored state as `prior.lua` and `snapshot.lua` return it.
#[derive(Clone)]
struct Prior {
    /// The version `apply.lua` checks ('' before the provider's first report).
    version: String,
    live: Option<ProviderLive>,
}

impl Prior {
    fn parse(provider: &str, meta: &RValue, state: &RValue, alerts: &RValue) -> Result<Self, StoreError> {
        let meta = pairs(meta)?;
        let version = meta.get("ver").cloned().unwrap_or_default();
        if !meta.contains_key("period") {
            return Ok(Prior { version, live: None });
        }
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(&format!("meta field {k}")));
        let mut readings = BTreeMap::new();
        for (metric, encoded) in pairs(state)? {
            let mut parts = encoded.splitn(3, '|');
            let (Some(v), Some(period), Some(observed)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad("reading"));
            };
            readings
                .insert(metric, Reading { value: decode_value(v)?, period: ms(period)?, observed_at: ms(observed)? });
        }
        let mut open = array(alerts)?
            .iter()
            .map(|a| serde_json::from_str(&text(a)?).map_err(|e| bad(&format!("alert: {e}"))))
            .collect::<Result<Vec<Alert>, StoreError>>()?;
        open.sort_by(|a, b| a.key.cmp(&b.key));
        let live = ProviderLive {
            provider: provider.to_owned(),
            site: opt(get("site")?),
            readings,
            period: ms(&get("period")?)?,
            revision: get("revision")?.parse().map_err(|_| bad("revision"))?,
            observed_at: ms(&get("observed")?)?,
            received_at: ms(&get("received")?)?,
            narrative: opt(get("narrative")?),
            source: opt(get("source")?),
            stale: meta.get("stale").is_some_and(|s| s == "1"),
            alerts: open,
        };
        Ok(Prior { version, live: Some(live) })
    }
}

impl RedisStore {
    /// `prior.lua`: the provider's state, and the previous revision of the report's period (JSON, '' if none).
    async fn read_prior(&self, report: &ValidReport) -> Result<(Prior, String), StoreError> {
        let p = report.provider();
        let mut conn = self.conn.clone();
        let reply: RValue = self
            .scripts
            .prior
            .key(self.keys.of("meta", p))
            .key(self.keys.of("state", p))
            .key(self.keys.of("alerts", p))
            .key(self.keys.of("hist", p))
            .key(self.keys.of("histidx", p))
            .arg(report.period().millis())
            .arg(report.revision())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let [meta, state, alerts, previous] = array(&reply)? else { return Err(bad("prior reply")) };
        Ok((Prior::parse(p, meta, state, alerts)?, text(previous)?))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Prior>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, ev: &Event) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.insert(ev.cursor.pos, ev.clone());
        while recent.len() > RECENT_KEPT {
            recent.pop_first();
        }
    }

    fn forget(&self, provider: &str) {
        self.known().remove(provider);
    }

    /// What this store last wrote for `provider`, if `report` would be live on top of it (a late report needs the
    /// history that only a read brings).
    fn remembered(&self, report: &ValidReport) -> Option<Prior> {
        let known = self.known();
        let prior = known.get(report.provider())?;
        let live = prior.live.as_ref()?;
        sitrep_core::state::is_newer(report.period(), report.revision(), Some(live)).then(|| prior.clone())
    }

    /// One attempt: read the provider (or trust what this store last wrote, when `remembered`), derive, write if
    /// it has not changed meanwhile. `None` on a conflict.
    async fn try_apply(
        &self,
        report: &ValidReport,
        received_at: Timestamp,
        remembered: bool,
    ) -> Result<Option<Applied>, StoreError> {
        let rules = &self.options.rules;
        let p = report.provider();
        let mut conn = self.conn.clone();
        let (prior, previous) = match remembered.then(|| self.remembered(report)).flatten() {
            Some(prior) => (prior, String::new()),
            None => self.read_prior(report).await?,
        };
        let fresh = sitrep_core::state::is_newer(report.period(), report.revision(), prior.live.as_ref());
        // What the provider will be once the script has written: derived here, remembered if the write is taken.
        let mut next = prior.clone();
        let (changes, derived) = if fresh {
            derive::advance(rules, &mut next.live, report, received_at)
        } else {
            let previous = match previous.as_str() {
                "" => BTreeMap::new(),
                json => {
                    let r: RecordJson = serde_json::from_str(json).map_err(|e| bad(&format!("history record: {e}")))?;
                    r.v.iter().map(|(k, v)| Ok((k.clone(), decode_value(v)?))).collect::<Result<_, StoreError>>()?
                }
            };
            (diff(|code| previous.get(code), report), Derived::default())
        };
        let metrics = crate::rollup_metrics(rules, &changes);
        let want: Vec<String> = inputs(&rules.catalogue, &metrics).into_iter().collect();
        let max: Vec<&str> = changes
            .iter()
            .map(|c| c.metric.as_str())
            .chain(want.iter().map(String::as_str))
            .filter(|m| rules.catalogue.get(m).is_some_and(|m| m.rollup == Rollup::Max))
            .collect();
        let scopes: Vec<String> = rules.scopes_of(p).iter().map(Scope::to_string).collect();
        let roll = serde_json::json!({ "scopes": scopes, "max": max, "want": want });
        let raise: Vec<(String, String)> = derived
            .raised
            .iter()
            .map(|a| (a.key.clone(), serde_json::to_string(a).expect("alerts serialise")))
            .collect();
        let clear: Vec<&str> = derived.cleared.iter().map(|a| a.key.as_str()).collect();
        let alerts = serde_json::json!({ "clear": clear, "raise": raise });

        let mut invocation = self.scripts.apply.prepare_invoke();
        invocation
            .key(self.keys.of("state", p))
            .key(self.keys.of("meta", p))
            .key(self.keys.of("hist", p))
            .key(self.keys.of("histidx", p))
            .key(&self.keys.events)
            .key(&self.keys.epoch)
            .key(&self.keys.providers)
            .key(&self.keys.head)
            .key(self.keys.of("alerts", p))
            .key(&self.keys.lastseen)
            .key(&self.keys.stale)
            .arg(p)
            .arg(report.site().unwrap_or(""))
            .arg(report.period().millis())
            .arg(report.revision())
            .arg(report.observed_at().millis())
            .arg(received_at.millis())
            .arg(report.narrative().unwrap_or(""))
            .arg(report.source().unwrap_or(""))
            .arg(self.options.event_log_max_len)
            .arg(self.options.event_log_max_age.map(|age| age.as_millis().to_string()).unwrap_or_default())
            .arg(self.options.retention_hours * Timestamp::HOUR_MS)
            .arg(Self::new_epoch())
            .arg(&prior.version)
            .arg(if fresh { "1" } else { "0" })
            .arg(encode_changes(&changes))
            .arg(if derived.is_empty() { String::new() } else { serde_json::to_string(&derived).expect("serialises") })
            .arg(alerts.to_string())
            .arg(roll.to_string())
            .arg(&self.keys.prefix);
        for (code, value) in report.values() {
            invocation.arg(code).arg(encode_value(*value));
        }
        let reply: RValue = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        match array(&reply)? {
            [kind, epoch, id] if text(kind)? == "duplicate" => {
                let cursor = Cursor::new(text(epoch)?, position(&text(id)?)?);
                Ok(Some(Applied::Duplicate { cursor: Some(cursor) }))
            }
            [kind, _] if text(kind)? == "conflict" => {
                self.forget(p);
                Ok(None)
            }
            [kind, epoch, id, totals] if text(kind)? == "accepted" => {
                let cursor = Cursor::new(text(epoch)?, position(&text(id)?)?);
                let rollups = rollups_from_json(rules, &text(totals)?, &metrics)?;
                // Remember what the script wrote, exactly as a read would find it.
                next.version = (prior.version.parse::<u64>().unwrap_or(0) + 1).to_string();
                self.known().insert(p.to_owned(), next);
                let mut ev = event(report, received_at, fresh, changes, cursor);
                ev.derived = derived;
                ev.rollups = rollups;
                self.remember(&ev);
                Ok(Some(Applied::Accepted(ev)))
            }
            _ => Err(bad("apply reply")),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn apply(&self, report: &ValidReport, received_at: Timestamp) -> Result<Applied, StoreError> {
        // Conflicts need the same provider changed between our read and our write: another replica taking a
        // retry of the same feed, or the clock marking it stale. A few attempts settle it. The first attempt may
        // trust what this store last wrote; later ones read.
        for attempt in 0..MAX_CONFLICTS {
            match self.try_apply(report, received_at, attempt == 0).await {
                Ok(Some(applied)) => return Ok(applied),
                Ok(None) => {}
                Err(e) => {
                    self.forget(report.provider());
                    return Err(e);
                }
            }
        }
        Err(StoreError::Unavailable {
            message: format!("redis: provider {} kept changing while its report was applied", report.provider()),
            source: None,
        })
    }

    async fn snapshot(&self, selection: &Selection) -> Result<Snapshot, StoreError> {
        let rules = &self.options.rules;
        let scopes: Vec<String> = crate::snapshot_scopes(rules, selection).iter().map(Scope::to_string).collect();
        let max_metrics: Vec<&str> =
            rules.catalogue.metrics().filter(|m| m.rollup == Rollup::Max).map(|m| m.code.as_str()).collect();
        let mut invocation = self.scripts.snapshot.prepare_invoke();
        invocation
            .key(&self.keys.providers)
            .key(&self.keys.head)
            .key(&self.keys.epoch)
            .arg(Self::new_epoch())
            .arg(&self.keys.prefix)
            .arg(serde_json::to_string(&scopes).expect("strings serialise"))
            .arg(serde_json::to_string(&max_metrics).expect("strings serialise"));
        if let Selection::Only(set) = selection {
            if set.is_empty() {
                // No provider selected: still answer with the cursor, from an empty selection.
                invocation.arg("\u{0}");
            }
            for p in set {
                invocation.arg(p);
            }
        }
        let mut conn = self.conn.clone();
        let reply: RValue = invocation.invoke_async(&mut conn).await.map_err(unavailable)?;
        let [epoch, last, providers, totals] = array(&reply)? else { return Err(bad("snapshot reply")) };
        let cursor = Cursor::new(text(epoch)?, position(&text(last)?)?);
        let mut out = Vec::new();
        for p in array(providers)? {
            let [code, meta, state, alerts] = array(p)? else { return Err(bad("snapshot provider")) };
            let code = text(code)?;
            let prior = Prior::parse(&code, meta, state, alerts)?;
            out.push(prior.live.ok_or_else(|| bad("snapshot provider without state"))?);
        }
        out.sort_by(|a, b| a.provider.cmp(&b.provider));
        let mut rollups = Vec::new();
        for t in array(totals)? {
            let [scope, fields, maxes] = array(t)? else { return Err(bad("snapshot totals")) };
            let scope = text(scope)?;
            let scope = Scope::parse(&scope).ok_or_else(|| bad(&format!("scope {scope:?}")))?;
            let mut totals = Totals::default();
            for (field, value) in pairs(fields)? {
                let Some((metric, part)) = field.rsplit_once('|') else { continue };
                let count = || value.parse::<u32>().map_err(|_| bad(&format!("rollup count {value:?}")));
                match (metric, part) {
                    ("", "reporting") => totals.reporting = count()?,
                    ("", "stale") => totals.stale = count()?,
                    (m, "n") => totals.metrics.entry(m.to_owned()).or_default().n = count()?,
                    (m, "s") => {
                        totals.metrics.entry(m.to_owned()).or_default().sum =
                            value.parse().map_err(|_| bad(&format!("rollup sum {value:?}")))?
                    }
                    _ => {}
                }
            }
            for (metric, max) in pairs(maxes)? {
                totals.metrics.entry(metric).or_default().max =
                    Some(max.parse().map_err(|_| bad(&format!("rollup max {max:?}")))?);
            }
            rollups.push(rollup(rules, &scope, &totals, None));
        }
        Ok(Snapshot { cursor, providers: out, rollups })
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        let (epoch, head, _) = self.read_script(Position(0, 0), 0).await?;
        Ok(Cursor::new(epoch, head))
    }

    async fn read(&self, after: &Cursor, max: usize, wait: Duration) -> Result<Read, StoreError> {
        if wait.is_zero() {
            return self.read_once(after, max).await;
        }
        // The tail path: a plain blocking read, trusted only when its entries link onto the cursor. Anything else
        // (a timeout, a broken link, another epoch) is decided by the checking script.
        let entries = self.read_blocking(after, max, wait).await?;
        if linked(after, &entries) {
            return Ok(Read::Events(entries.into_iter().map(|e| e.event).collect()));
        }
        self.read_once(after, max).await
    }

    async fn history(&self, provider: &str, from: Timestamp, to: Timestamp) -> Result<Vec<HistoryRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: RValue = self
            .scripts
            .history
            .key(self.keys.of("hist", provider))
            .key(self.keys.of("histidx", provider))
            .arg(from.millis())
            .arg(to.millis())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for pair in array(&reply)?.chunks(2) {
            let field = text(&pair[0])?;
            let json = text(pair.get(1).ok_or_else(|| bad("history pairs"))?)?;
            let (period, revision) = field.split_once(':').ok_or_else(|| bad("history field"))?;
            let r: RecordJson = serde_json::from_str(&json).map_err(|e| bad(&format!("history record: {e}")))?;
            out.push(HistoryRecord {
                period: ms(period)?,
                revision: revision.parse().map_err(|_| bad("history revision"))?,
                observed_at: ms(&r.o)?,
                received_at: ms(&r.r)?,
                values: r
                    .v
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), decode_value(v)?)))
                    .collect::<Result<_, StoreError>>()?,
                narrative: opt(r.n),
                source: opt(r.s),
                site: opt(r.t),
            });
        }
        out.sort_by_key(|h| (h.period, h.revision));
        Ok(out)
    }

    async fn check_stale(&self, now: Timestamp) -> Result<Vec<Event>, StoreError> {
        let rules = &self.options.rules;
        let mut conn = self.conn.clone();
        let (seen, stale): (Vec<(String, f64)>, Vec<String>) = redis::pipe()
            .cmd("ZRANGE")
            .arg(&self.keys.lastseen)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("SMEMBERS")
            .arg(&self.keys.stale)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let stale: BTreeSet<String> = stale.into_iter().collect();
        let mut events = Vec::new();
        for (provider, last) in seen {
            let last = Timestamp::from_millis(last as i64);
            if stale.contains(&provider)
                || rules.directory.provider(&provider).is_none()
                || !derive::is_stale(rules, &provider, last, now)
            {
                continue;
            }
            let alert = derive::stale_alert(rules, &provider, last, now);
            let derived = Derived { raised: vec![alert.clone()], ..Default::default() };
            let scopes: Vec<String> = rules.scopes_of(&provider).iter().map(Scope::to_string).collect();
            let deadline = derive::stale_deadline(rules, &provider, now);
            let reply: RValue = self
                .scripts
                .stale
                .key(self.keys.of("meta", &provider))
                .key(self.keys.of("alerts", &provider))
                .key(&self.keys.events)
                .key(&self.keys.epoch)
                .key(&self.keys.head)
                .key(&self.keys.stale)
                .arg(&provider)
                .arg(deadline.millis())
                .arg(&alert.key)
                .arg(serde_json::to_string(&alert).expect("alerts serialise"))
                .arg(serde_json::to_string(&derived).expect("derived serialises"))
                .arg(serde_json::to_string(&scopes).expect("strings serialise"))
                .arg(Self::new_epoch())
                .arg(self.options.event_log_max_len)
                .arg(self.options.event_log_max_age.map(|age| age.as_millis().to_string()).unwrap_or_default())
                .arg(now.millis())
                .arg(&self.keys.prefix)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            match array(&reply)? {
                [kind, ..] if text(kind)? == "no" => {}
                [kind, epoch, id, totals, period, revision, observed] if text(kind)? == "stale" => {
                    let latest = (
                        ms(&text(period)?)?,
                        text(revision)?.parse().map_err(|_| bad("revision"))?,
                        ms(&text(observed)?)?,
                    );
                    let cursor = Cursor::new(text(epoch)?, position(&text(id)?)?);
                    let mut ev = sitrep_core::state::stale_event(&provider, latest, alert, now, cursor);
                    ev.rollups = rollups_from_json(rules, &text(totals)?, &BTreeSet::new())?;
                    events.push(ev);
                }
                _ => return Err(bad("stale reply")),
            }
        }
        Ok(events)
    }

    async fn alerts(&self, selection: &Selection) -> Result<Vec<Alert>, StoreError> {
        let providers: Vec<&str> = self
            .options
            .rules
            .directory
            .providers()
            .map(|p| p.code.as_str())
            .filter(|p| selection.contains(p))
            .collect();
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for p in &providers {
            pipe.cmd("HVALS").arg(self.keys.of("alerts", p));
        }
        let mut conn = self.conn.clone();
        let lists: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut out = Vec::new();
        for list in lists {
            let mut alerts = list
                .iter()
                .map(|json| serde_json::from_str(json).map_err(|e| bad(&format!("alert: {e}"))))
                .collect::<Result<Vec<Alert>, StoreError>>()?;
            alerts.sort_by(|a, b| a.key.cmp(&b.key));
            out.extend(alerts);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_encode_to_one_spelling_and_round_trip() {
        for v in [0.0, 1.0, 28.0, 41.5, 0.1, 1e21, 123456789.125] {
            let text = encode_value(Value::Number(v));
            assert!(!text.contains(' ') && !text.contains('|'));
            assert_eq!(decode_value(&text).unwrap(), Value::Number(v));
        }
        assert_eq!(encode_value(Value::Number(-0.0)), encode_value(Value::Number(0.0)));
        let absent = Value::Absent(AbsentReason::NotAvailable);
        assert_eq!(encode_value(absent), "~not_available");
        assert_eq!(decode_value("~not_available").unwrap(), absent);
    }

    #[test]
    fn changes_parse() {
        let c = parse_changes("a ~ 1 b 2 ~suppressed").unwrap();
        assert_eq!(c[0], MetricChange { metric: "a".into(), before: None, after: Value::Number(1.0) });
        assert_eq!(c[1].after, Value::Absent(AbsentReason::Suppressed));
        assert!(parse_changes("").unwrap().is_empty());
    }
}
