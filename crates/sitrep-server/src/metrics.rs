//! Prometheus metrics: what the aggregator counts and times, and `GET /metrics` (admin grant) that serves them.
//!
//! One [`Metrics`], made at start and held in the services' `Context`. The hot path only increments counters it
//! was handed when the `Metrics` was made (one per label value, in fixed arrays: no label lookup, no allocation
//! per report) and observes histograms (a short uncontended lock each). What the picture, the Hub and the store
//! know is read when scraped ([`crate::context::Context::scrape`]): the picture under the Hub's lock for a moment, the store with
//! a short timeout.
//!
//! # The metrics (names are a contract: alerting rules are written against them)
//! - `sitrep_build_info{version,revision}` gauge, 1: the binary's version and git revision (`unknown` if it was
//!   built outside a git checkout).
//! - `sitrep_reports_total{outcome}` counter: reports by outcome, `accepted`, `duplicate`, `conflict`, `rejected`
//!   (failed validation) and `refused` (before validation: unauthenticated, outside the write grant, over the
//!   rate limit, each a refused request to `ProviderService`; or over the size limit on the `Report` stream).
//! - `sitrep_report_rejections_total{rule}` counter: for each rejected report, one per distinct rule it violated,
//!   named as the validator names it (`at_most`, `known_metric`, ...).
//! - `sitrep_ack_duration_seconds` histogram: from a report's message being read to its ack being handed to the
//!   transport (every outcome but refusals and store failures).
//! - `sitrep_store_duration_seconds{operation}` histogram and `sitrep_store_errors_total{operation}` counter: each
//!   call of the `Store` trait (`apply`, `mark_stale`, `load`, `head`, `read`, `history`, `fullness`,
//!   `event_log_length`); `tail` is a read that may wait for the next event (the Hub's, up to 5 s), so its time
//!   includes that wait.
//! - `sitrep_store_up` gauge: 1 while the Hub can read the log and the store takes writes, else 0 (the same view
//!   as health and the subscribers' `status`).
//! - `sitrep_delivery_latency_seconds{transport}` histogram, `grpc` or `sse`: from the report's receipt at the
//!   aggregator (the event's `received_at`, in milliseconds) to the event being handed to the subscriber's
//!   transport. Catch-up events sent on resuming count too, with their age.
//! - `sitrep_subscribers{transport}` gauge: open subscriptions.
//! - `sitrep_subscriber_queue_depth_max` gauge: the deepest subscriber queue in the Hub now (events waiting).
//! - `sitrep_subscriber_resets_total{reason}` counter: resets sent to subscribers, by the reason they are told
//!   (`slow_subscriber`: its queue overflowed; `cursor_too_old`, `other_epoch`, `cursor_ahead`, `resync`).
//! - `sitrep_providers_stale` and `sitrep_providers_not_reporting` gauges: providers stale now, and providers of
//!   the directory that have never reported, in this replica's picture (absent until the picture is loaded).
//! - `sitrep_event_log_events` gauge: events the store's log holds (Redis: `XLEN`); left out when the store does
//!   not answer within a second, which counts as an `event_log_length` store error.
//! - `sitrep_log_follow_lag_seconds` gauge: how far this replica's Hub is behind the log's head, measured as the
//!   time since the Hub last had read everything the log held: 0 while it waits at the head for the next event,
//!   growing while it works through a backlog, loads, or cannot read the store.
//! - `sitrep_refusals_total{reason}` counter: refused requests of every kind, as the audit records them
//!   (`unauthenticated`, `permission_denied`, `resource_exhausted`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use sitrep_core::{Cursor, Event, Timestamp, ValidReport, Violation};
use sitrep_proto::v1::report_ack::Outcome;
use sitrep_store::{Applied, HistoryRecord, Loaded, Read, Store, StoreError};

use crate::resync::Resync;

/// A label set of one label; label values are fixed strings, so nothing is allocated to count.
type Label = [(&'static str, &'static str); 1];

/// Latency buckets, in seconds: 0.5 ms to 10 s, about three to a decade.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How long a scrape waits for the store's log length.
const STORE_SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// The outcomes `sitrep_reports_total` counts, in label order.
const OUTCOMES: [&str; 5] = ["accepted", "duplicate", "conflict", "rejected", "refused"];

/// A transport subscribers are served over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Sse,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Grpc, Transport::Sse];

    /// `grpc` or `sse`: the metrics' label and the delivery spans' destination.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Sse => "sse",
        }
    }
}

/// The `Store` calls timed, in label order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Apply,
    Act,
    MarkStale,
    Load,
    Head,
    Read,
    Tail,
    History,
    Fullness,
    EventLogLength,
}

impl Op {
    const ALL: [Op; 10] = [
        Op::Apply,
        Op::Act,
        Op::MarkStale,
        Op::Load,
        Op::Head,
        Op::Read,
        Op::Tail,
        Op::History,
        Op::Fullness,
        Op::EventLogLength,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Apply => "apply",
            Op::Act => "act",
            Op::MarkStale => "mark_stale",
            Op::Load => "load",
            Op::Head => "head",
            Op::Read => "read",
            Op::Tail => "tail",
            Op::History => "history",
            Op::Fullness => "fullness",
            Op::EventLogLength => "event_log_length",
        }
    }
}

/// What is read from the picture, the Hub and the store when scraped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scraped {
    pub store_up: bool,
    /// `None` until the Hub has a picture.
    pub providers_stale: Option<u64>,
    pub providers_not_reporting: Option<u64>,
    pub queue_depth_max: u64,
    pub event_log_events: Option<u64>,
    pub log_follow_lag: Duration,
    /// Refusals so far by kind, as the audit counts them ([`crate::audit::KINDS`] order).
    pub refusals: [u64; 3],
    /// Refused requests to `ProviderService` (refused reports).
    pub refused_reports: u64,
}

/// Every metric the aggregator keeps (see the module's header for what each means).
pub struct Metrics {
    registry: Registry,
    reports: [Counter; OUTCOMES.len()],
    /// Reports refused by the size limit on the `Report` stream; the other refusals come from the audit.
    oversize: Counter,
    rejections: Family<Label, Counter>,
    ack: Histogram,
    store_duration: [Histogram; Op::ALL.len()],
    store_errors: [Counter; Op::ALL.len()],
    delivery: [Histogram; Transport::ALL.len()],
    subscribers: [Gauge; Transport::ALL.len()],
    /// By reason, in [`Resync::ALL`] order, labelled as subscribers are told them ([`Resync::as_str`]).
    resets: [Counter; Resync::ALL.len()],
    scraped: ScrapedGauges,
}

/// The metrics set when scraped.
struct ScrapedGauges {
    store_up: Gauge,
    providers_stale: Gauge,
    providers_not_reporting: Gauge,
    queue_depth_max: Gauge,
    event_log_events: Gauge,
    log_follow_lag: Gauge<f64, AtomicU64>,
    refusals: [Counter; 3],
}

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Label sets of one label `name` over `values`, each with its metric made once.
fn labelled<M, C, const N: usize>(family: &Family<Label, M, C>, name: &'static str, values: [&'static str; N]) -> [M; N]
where
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    values.map(|v| family.get_or_create(&[(name, v)]).clone())
}

/// Registers `metric` and returns it, to count into (a metric's clones share its value).
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// Registers a family of one label, with a metric made for each of its values (`label`: its name and values), and
/// returns those metrics in the values' order.
fn by_label<M, const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    (label, values): (&'static str, [&'static str; N]),
) -> [M; N]
where
    M: Metric + Clone + Default,
    Family<Label, M>: Metric,
{
    let family = Family::<Label, M>::default();
    let metrics = labelled(&family, label, values);
    registry.register(name, help, family);
    metrics
}

/// As [`by_label`], for histograms (with the latency buckets).
fn histograms_by<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    (label, values): (&'static str, [&'static str; N]),
) -> [Histogram; N] {
    let family = Family::<Label, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
    let metrics = labelled(&family, label, values);
    registry.register(name, help, family);
    metrics
}

impl Metrics {
    /// Every metric, registered (in the order `/metrics` lists them), with `revision` the git revision the binary
    /// was built from.
    pub fn new(version: &'static str, revision: &'static str) -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let build = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        build.get_or_create(&[("version", version), ("revision", revision)]).set(1);
        r.register("sitrep_build_info", "The aggregator's version and git revision (value 1)", build);

        let outcomes = by_label(r, "sitrep_reports", "Reports received, by outcome", ("outcome", OUTCOMES));
        let rejections = Family::<Label, Counter>::default();
        let rejections = registered(
            r,
            "sitrep_report_rejections",
            "Rejected reports, by each distinct validation rule they violated",
            rejections,
        );
        let ack = registered(r, "sitrep_ack_duration_seconds", "From a report's receipt to its ack", histogram());

        let ops = ("operation", Op::ALL.map(Op::label));
        let store_duration =
            histograms_by(r, "sitrep_store_duration_seconds", "Store calls' durations, by operation", ops);
        let store_errors = by_label(r, "sitrep_store_errors", "Store calls that failed, by operation", ops);
        let store_up = "1 while the store can be read and takes reports, else 0";
        let store_up = registered(r, "sitrep_store_up", store_up, Gauge::default());

        let transports = ("transport", Transport::ALL.map(Transport::label));
        let delivery = histograms_by(
            r,
            "sitrep_delivery_latency_seconds",
            "From a report's receipt to its event being handed to a subscriber's transport",
            transports,
        );
        let subscribers = by_label(r, "sitrep_subscribers", "Open subscriptions, by transport", transports);
        let deepest = "Events waiting in the deepest subscriber queue";
        let queue_depth_max = registered(r, "sitrep_subscriber_queue_depth_max", deepest, Gauge::default());
        let reasons = ("reason", Resync::ALL.map(Resync::as_str));
        let resets = by_label(r, "sitrep_subscriber_resets", "Resets sent to subscribers, by reason", reasons);

        let providers_stale = registered(r, "sitrep_providers_stale", "Providers stale now", Gauge::default());
        let never = "Providers of the directory that have never reported";
        let providers_not_reporting = registered(r, "sitrep_providers_not_reporting", never, Gauge::default());
        let event_log_events =
            registered(r, "sitrep_event_log_events", "Events the store's log holds", Gauge::default());
        let lag = "Time since this replica's Hub last had read everything the log held (0 while it waits at the head)";
        let log_follow_lag = registered(r, "sitrep_log_follow_lag_seconds", lag, Gauge::<f64, AtomicU64>::default());
        let refusals = by_label(r, "sitrep_refusals", "Refused requests, by reason", ("reason", crate::audit::KINDS));

        Metrics {
            registry,
            reports: outcomes,
            oversize: Counter::default(),
            rejections,
            ack,
            store_duration,
            store_errors,
            delivery,
            subscribers,
            resets,
            scraped: ScrapedGauges {
                store_up,
                providers_stale,
                providers_not_reporting,
                queue_depth_max,
                event_log_events,
                log_follow_lag,
                refusals,
            },
        }
    }

    /// Counts a report's outcome (with the rules a rejected one violated) and times its ack. Refusals are counted
    /// from the audit when scraped, so nothing is counted here for them (or for a store failure).
    pub fn ingested(&self, outcome: Outcome, violations: &[Violation], took: Duration) {
        let index = match outcome {
            Outcome::Accepted => 0,
            Outcome::Duplicate => 1,
            Outcome::Conflict => 2,
            Outcome::Rejected => 3,
            Outcome::Unspecified => return,
        };
        self.reports[index].inc();
        let mut rules: Vec<&'static str> = violations.iter().map(|v| v.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        for rule in rules {
            self.rejections.get_or_create(&[("rule", rule)]).inc();
        }
        self.ack.observe(took.as_secs_f64());
    }

    /// Counts a report refused for its size on the `Report` stream (tonic refuses it before sitrep reads it).
    pub fn oversize(&self) {
        self.oversize.inc();
    }

    /// Times an event handed to a subscriber's transport, from its report's receipt.
    pub fn delivered(&self, transport: Transport, event: &Event) {
        let ms = (Timestamp::now().millis() - event.received_at.millis()).max(0);
        self.delivery[transport as usize].observe(ms as f64 / 1000.0);
    }

    /// Counts an open subscription until the returned guard is dropped.
    pub fn subscribed(&self, transport: Transport) -> Subscribed {
        let gauge = self.subscribers[transport as usize].clone();
        gauge.inc();
        Subscribed(gauge)
    }

    /// Counts a reset sent to a subscriber.
    pub fn reset(&self, reason: Resync) {
        self.resets[reason.index()].inc();
    }

    fn timed(&self, op: Op, took: Duration, ok: bool) {
        self.store_duration[op as usize].observe(took.as_secs_f64());
        if !ok {
            self.store_errors[op as usize].inc();
        }
    }

    /// The store's log length for a scrape: within a second, else left out and counted as a store error.
    pub async fn scrape_log_length(&self, store: &dyn Store) -> Option<u64> {
        match tokio::time::timeout(STORE_SCRAPE_TIMEOUT, store.event_log_length()).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => None,
            Err(_) => {
                self.timed(Op::EventLogLength, STORE_SCRAPE_TIMEOUT, false);
                None
            }
        }
    }

    /// The metrics in the OpenMetrics text format, after setting those read when scraped to `scraped`.
    pub fn encode(&self, scraped: &Scraped) -> String {
        let g = &self.scraped;
        g.store_up.set(i64::from(scraped.store_up));
        g.queue_depth_max.set(scraped.queue_depth_max as i64);
        g.log_follow_lag.set(scraped.log_follow_lag.as_secs_f64());
        let mut absent = Vec::new();
        match (scraped.providers_stale, scraped.providers_not_reporting) {
            (Some(stale), Some(not_reporting)) => {
                g.providers_stale.set(stale as i64);
                g.providers_not_reporting.set(not_reporting as i64);
            }
            _ => absent.extend(["sitrep_providers_stale", "sitrep_providers_not_reporting"]),
        }
        match scraped.event_log_events {
            Some(n) => drop(g.event_log_events.set(n as i64)),
            None => absent.push("sitrep_event_log_events"),
        }
        for (counter, total) in g.refusals.iter().zip(scraped.refusals) {
            catch_up(counter, total);
        }
        // Refused reports: those the audit saw refused at ProviderService, and those too large to read.
        catch_up(&self.reports[4], scraped.refused_reports + self.oversize.get());
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        without_families(&text, &absent)
    }
}

/// Moves `counter` up to `total` (a count kept elsewhere, which only grows).
/// One atomic step, so two scrapes at once cannot both add the same difference.
fn catch_up(counter: &Counter, total: u64) {
    counter.inner().fetch_max(total, std::sync::atomic::Ordering::Relaxed);
}

/// `text` (OpenMetrics) without the families named in `absent`: their descriptors and samples.
fn without_families(text: &str, absent: &[&str]) -> String {
    if absent.is_empty() {
        return text.to_owned();
    }
    let named = |line: &str, family: &str| {
        let name = match line.strip_prefix("# ") {
            Some(rest) => rest.split(' ').nth(1).unwrap_or_default(),
            None => line.split([' ', '{']).next().unwrap_or_default(),
        };
        name == family
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if !absent.iter().any(|f| named(line, f)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// An open subscription, counted in `sitrep_subscribers` until dropped.
pub struct Subscribed(Gauge);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The Content-Type of each format `GET /metrics` serves.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does; `curl` and `promtool` do not).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the Prometheus text format 0.0.4, which older tools (`promtool check metrics`) read: a
/// counter's family is named with its `_total`, and `# UNIT` and `# EOF` go. Enough for the metrics this crate
/// makes (counters, gauges, histograms; no info or state sets).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some(h) = help.take() {
                let text = h.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')).map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A store whose every call is timed and whose failures are counted (the cross-cutting concern as a wrapper,
/// not a flag inside each backend).
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics.timed(op, started.elapsed(), result.is_ok());
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn apply(&self, report: &ValidReport, received_at: Timestamp) -> Result<Applied, StoreError> {
        self.timed(Op::Apply, self.inner.apply(report, received_at)).await
    }

    async fn act(
        &self,
        action: &sitrep_core::aid::Action,
        actor: &sitrep_core::aid::Actor,
        now: Timestamp,
    ) -> Result<sitrep_store::Acted, StoreError> {
        self.timed(Op::Act, self.inner.act(action, actor, now)).await
    }

    async fn mark_stale(&self, provider: &str, now: Timestamp) -> Result<Option<Event>, StoreError> {
        self.timed(Op::MarkStale, self.inner.mark_stale(provider, now)).await
    }

    async fn load(&self) -> Result<Loaded, StoreError> {
        self.timed(Op::Load, self.inner.load()).await
    }

    async fn head(&self) -> Result<Cursor, StoreError> {
        self.timed(Op::Head, self.inner.head()).await
    }

    async fn read(&self, after: &Cursor, max: usize, wait: Duration) -> Result<Read, StoreError> {
        let op = if wait.is_zero() { Op::Read } else { Op::Tail };
        self.timed(op, self.inner.read(after, max, wait)).await
    }

    async fn history(&self, provider: &str, from: Timestamp, to: Timestamp) -> Result<Vec<HistoryRecord>, StoreError> {
        self.timed(Op::History, self.inner.history(provider, from, to)).await
    }

    // Counted as a history read: one call, however many providers it reads.
    async fn histories(
        &self,
        providers: &[String],
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, Vec<HistoryRecord>>, StoreError> {
        self.timed(Op::History, self.inner.histories(providers, from, to)).await
    }

    async fn fullness(&self) -> Result<Option<(u64, u64)>, StoreError> {
        self.timed(Op::Fullness, self.inner.fullness()).await
    }

    async fn event_log_length(&self) -> Result<Option<u64>, StoreError> {
        self.timed(Op::EventLogLength, self.inner.event_log_length()).await
    }
}

/// Where the Hub stands against the log's head, for `sitrep_log_follow_lag_seconds`.
#[derive(Debug)]
pub struct Follow {
    state: std::sync::Mutex<FollowState>,
}

#[derive(Debug)]
struct FollowState {
    /// When the Hub last had read everything the log held (or when it started).
    caught_up_at: Instant,
    /// Whether it still has: it is waiting at the head for the next event.
    at_head: bool,
}

impl Default for Follow {
    fn default() -> Self {
        Follow { state: std::sync::Mutex::new(FollowState { caught_up_at: Instant::now(), at_head: false }) }
    }
}

impl Follow {
    /// The Hub read everything the log held (`true`: a read returned less than it asked for), or not (a full batch,
    /// a failed read, a reload).
    pub fn read(&self, at_head: bool, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if at_head {
            s.caught_up_at = now;
        }
        s.at_head = at_head;
    }

    /// How far behind the head the Hub is at `now`: zero at the head, else the time since it last was.
    pub fn lag(&self, now: Instant) -> Duration {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.at_head { Duration::ZERO } else { now.saturating_duration_since(s.caught_up_at) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    }

    #[test]
    fn outcomes_and_rules_are_counted_under_their_labels() {
        let m = Metrics::new("0.1.0", "abc");
        let v = |rule: &'static str| Violation { field: "f".into(), rule, description: String::new() };
        m.ingested(Outcome::Accepted, &[], Duration::from_millis(2));
        m.ingested(Outcome::Accepted, &[], Duration::from_millis(2));
        m.ingested(Outcome::Duplicate, &[], Duration::from_millis(1));
        // Two violations of one rule count once for the report.
        m.ingested(Outcome::Rejected, &[v("at_most"), v("at_most"), v("known_metric")], Duration::ZERO);
        m.oversize();
        m.reset(Resync::SlowSubscriber);
        let text = m.encode(&Scraped { refusals: [1, 2, 3], refused_reports: 2, ..Default::default() });
        assert_eq!(sample(&text, r#"sitrep_reports_total{outcome="accepted"}"#), Some("2"));
        assert_eq!(sample(&text, r#"sitrep_reports_total{outcome="duplicate"}"#), Some("1"));
        assert_eq!(sample(&text, r#"sitrep_reports_total{outcome="conflict"}"#), Some("0"));
        assert_eq!(sample(&text, r#"sitrep_reports_total{outcome="rejected"}"#), Some("1"));
        assert_eq!(sample(&text, r#"sitrep_reports_total{outcome="refused"}"#), Some("3"), "audit's 2 + 1 oversize");
        assert_eq!(sample(&text, r#"sitrep_report_rejections_total{rule="at_most"}"#), Some("1"));
        assert_eq!(sample(&text, r#"sitrep_report_rejections_total{rule="known_metric"}"#), Some("1"));
        assert_eq!(sample(&text, r#"sitrep_refusals_total{reason="resource_exhausted"}"#), Some("3"));
        assert_eq!(sample(&text, r#"sitrep_subscriber_resets_total{reason="slow_subscriber"}"#), Some("1"));
        assert_eq!(sample(&text, "sitrep_ack_duration_seconds_count"), Some("4"));
        assert_eq!(sample(&text, r#"sitrep_build_info{version="0.1.0",revision="abc"}"#), Some("1"));
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        // Counts kept elsewhere only ever move the counters up, scrape after scrape.
        let again = m.encode(&Scraped { refusals: [1, 2, 3], refused_reports: 2, ..Default::default() });
        assert_eq!(sample(&again, r#"sitrep_reports_total{outcome="refused"}"#), Some("3"));
    }

    #[test]
    fn what_a_scrape_cannot_say_is_left_out() {
        let m = Metrics::new("0.1.0", "abc");
        let text = m.encode(&Scraped::default());
        for family in ["sitrep_providers_stale", "sitrep_providers_not_reporting", "sitrep_event_log_events"] {
            assert!(!text.contains(family), "{family} left out:\n{text}");
        }
        assert_eq!(sample(&text, "sitrep_store_up"), Some("0"));
        let full = Scraped {
            store_up: true,
            providers_stale: Some(2),
            providers_not_reporting: Some(7),
            event_log_events: Some(40),
            queue_depth_max: 3,
            ..Default::default()
        };
        let text = m.encode(&full);
        assert_eq!(sample(&text, "sitrep_providers_stale"), Some("2"));
        assert_eq!(sample(&text, "sitrep_providers_not_reporting"), Some("7"));
        assert_eq!(sample(&text, "sitrep_event_log_events"), Some("40"));
        assert_eq!(sample(&text, "sitrep_subscriber_queue_depth_max"), Some("3"));
        assert_eq!(sample(&text, "sitrep_store_up"), Some("1"));
    }

    #[test]
    fn subscribers_are_counted_while_open() {
        let m = Metrics::new("0.1.0", "abc");
        let a = m.subscribed(Transport::Sse);
        let _b = m.subscribed(Transport::Sse);
        let _c = m.subscribed(Transport::Grpc);
        drop(a);
        let text = m.encode(&Scraped::default());
        assert_eq!(sample(&text, r#"sitrep_subscribers{transport="sse"}"#), Some("1"));
        assert_eq!(sample(&text, r#"sitrep_subscribers{transport="grpc"}"#), Some("1"));
    }

    #[test]
    fn openmetrics_becomes_the_prometheus_text_format() {
        let om = "# HELP sitrep_reports Reports.\n# TYPE sitrep_reports counter\n\
                  sitrep_reports_total{outcome=\"accepted\"} 3\n# HELP sitrep_up Up.\n# TYPE sitrep_up gauge\n\
                  # UNIT sitrep_up seconds\nsitrep_up 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP sitrep_reports_total Reports.\n# TYPE sitrep_reports_total counter\n\
             sitrep_reports_total{outcome=\"accepted\"} 3\n# HELP sitrep_up Up.\n# TYPE sitrep_up gauge\nsitrep_up 1\n"
        );
        assert!(wants_openmetrics(Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")));
        assert!(!wants_openmetrics(Some("*/*")) && !wants_openmetrics(None));
    }

    #[test]
    fn the_lag_is_zero_at_the_head_and_grows_behind_it() {
        let follow = Follow::default();
        let t0 = Instant::now();
        follow.read(true, t0);
        assert_eq!(follow.lag(t0 + Duration::from_secs(60)), Duration::ZERO, "idle at the head is not behind");
        follow.read(false, t0 + Duration::from_secs(1));
        assert_eq!(follow.lag(t0 + Duration::from_secs(3)), Duration::from_secs(3), "behind since it last was there");
        follow.read(true, t0 + Duration::from_secs(4));
        assert_eq!(follow.lag(t0 + Duration::from_secs(5)), Duration::ZERO);
    }
}
