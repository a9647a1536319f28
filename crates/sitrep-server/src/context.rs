//! [`Context`]: what every surface shares (store, rules, limits, Hub, store health, metrics, shutdown token), built
//! once by [`crate::App`]; [`ResolvedFilter`], a request's filter within what its caller may read; and [`Hosts`],
//! the Host names HTTP requests may name.
//!
//! It sits below the gRPC services, the HTTP layer, the sessions and mutual aid, which all take it, so that none
//! of them reaches into another for it.

use std::collections::BTreeSet;
use std::sync::Arc;

use sitrep_core::{Limits, Rules, Selection, Timestamp};
use sitrep_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Action, Principal};
use crate::config::SubscriberConfig;
use crate::error::Error;
use crate::health::StoreHealth;
use crate::hub::Hub;

/// How long a query waits for the Hub's picture (at start-up, or while it reloads) before answering `UNAVAILABLE`.
const PICTURE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Everything the services share. Built once by [`crate::App`].
pub struct Context {
    /// Who callers are (see [`crate::auth`]).
    pub auth: crate::auth::Authenticator,
    pub store: Arc<dyn Store>,
    /// What derived figures are computed by, with the directory and the catalogue (`rules.directory`,
    /// `rules.catalogue`): one copy of each, here.
    pub rules: Rules,
    pub limits: Limits,
    /// Reports per provider per minute.
    pub report_limiter: crate::limit::ReportLimiter,
    /// Open subscriptions per principal.
    pub subscriptions: crate::limit::Subscriptions,
    pub hub: Hub,
    /// Whether the store is well (the Hub reports its reads, ingest its writes) and the picture's status that
    /// follows (see [`crate::health`]).
    pub health: StoreHealth,
    /// What is counted and timed, for `GET /metrics` (see [`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    pub subscribers: SubscriberConfig,
    /// Origins whose pages may read the JSON API across origins (`[http] cors_origins`); none by default.
    pub cors_origins: Vec<String>,
    /// The Host names HTTP requests may name.
    pub hosts: Hosts,
    /// The wallboard page, with this deployment's settings in it (see [`crate::http::page`]).
    pub page: String,
    /// Mutual aid's escalation timers (`[aid]`): the clock escalates by them, and the API says them.
    pub aid_timers: sitrep_core::aid::Timers,
    /// Fires at shutdown: every stream task selects on it.
    pub cancel: CancellationToken,
    /// Every task spawned for a stream, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

/// The Host names this deployment answers to (over HTTP; gRPC clients are not browsers and are not checked).
#[derive(Clone, Debug)]
pub struct Hosts(Option<BTreeSet<String>>);

impl Hosts {
    /// Loopback names (which no other site can make a browser send) and the configured ones, and on a listener of
    /// one address, that address; with none configured on an all-interfaces listener, any name.
    pub fn new(listen: std::net::SocketAddr, configured: &[String]) -> Self {
        if configured.is_empty() && listen.ip().is_unspecified() {
            return Hosts(None);
        }
        let mut names: BTreeSet<String> = ["localhost", "127.0.0.1", "::1"].into_iter().map(str::to_owned).collect();
        names.extend(configured.iter().map(|n| n.to_ascii_lowercase()));
        if !listen.ip().is_unspecified() {
            names.insert(listen.ip().to_string());
        }
        Hosts(Some(names))
    }

    /// Whether a request with this Host (`name`, `name:port`, `[v6]:port`) is answered; none is (HTTP/1.0).
    pub fn allows(&self, host: Option<&str>) -> bool {
        let (Some(names), Some(host)) = (&self.0, host) else { return true };
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => host.rsplit_once(':').map_or(host, |(n, port)| if port.parse::<u16>().is_ok() { n } else { host }),
        };
        names.contains(&name.to_ascii_lowercase())
    }
}

/// Which part of the picture a caller asks for, as every surface says it (gRPC's `Filter`, the JSON API's query
/// parameters): providers listed, or in the listed systems or regions (all when the three are empty), and the
/// metrics to keep (all when empty). [`Context::resolve`] checks it against the directory and the caller's grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSpec {
    pub providers: Vec<String>,
    pub systems: Vec<String>,
    pub regions: Vec<String>,
    pub metrics: Vec<String>,
}

/// A request's filter, resolved against the directory and the catalogue, within what its caller may read.
pub struct ResolvedFilter {
    pub providers: Selection,
    /// Metrics to keep; `None` keeps all.
    pub metrics: Option<BTreeSet<String>>,
    /// The scopes whose totals the caller may read; `None`: all.
    pub readable_scopes: Option<BTreeSet<sitrep_core::Scope>>,
}

impl ResolvedFilter {
    /// The scopes whose totals go with the selected providers: those they roll up into that the caller may read.
    pub fn scopes(&self, rules: &sitrep_core::Rules) -> Vec<sitrep_core::Scope> {
        let mut scopes = rules.scopes_for(&self.providers);
        if let Some(readable) = &self.readable_scopes {
            scopes.retain(|s| readable.contains(s));
        }
        scopes
    }

    /// Keeps only the rollups of scopes the caller may read.
    pub fn retain_readable(&self, rollups: &mut Vec<sitrep_core::rollup::ScopeRollup>) {
        if let Some(readable) = &self.readable_scopes {
            rollups.retain(|r| readable.contains(&r.scope));
        }
    }
}

impl Context {
    /// What is read when scraped: the Hub's picture and queues, the store's log length (within a second, else left
    /// out and counted as a store error), and the audit's refusals.
    pub async fn scrape(&self) -> crate::metrics::Scraped {
        let picture = self.hub.census(self.rules.directory.providers().count() as u64);
        let event_log_events = self.metrics.scrape_log_length(self.store.as_ref()).await;
        let refusals = self.auth.refusals();
        crate::metrics::Scraped {
            store_up: !self.health.status().borrow().degraded,
            providers_stale: picture.map(|p| p.stale),
            providers_not_reporting: picture.map(|p| p.not_reporting),
            queue_depth_max: self.hub.deepest_queue() as u64,
            event_log_events,
            log_follow_lag: self.hub.follow_lag(),
            refusals: refusals.by_kind(),
            refused_reports: refusals.reports(),
        }
    }

    /// The periods a history request covers: `from` and `to` (inclusive), defaulting to the 24 hours up to the
    /// current hour, in order and within the history kept; else `INVALID_ARGUMENT` naming the field.
    pub fn history_range(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<(Timestamp, Timestamp), Error> {
        let to = to.unwrap_or_else(|| Timestamp::now().hour_start());
        let from = from.unwrap_or_else(|| to.add_hours(-23));
        if from > to {
            return Err(Error::invalid_field("from", "before_to", format!("from {from} is later than to {to}")));
        }
        let hours = to.millis().checked_sub(from.millis()).map_or(i64::MAX, |ms| ms / Timestamp::HOUR_MS);
        if hours > self.limits.retention_hours {
            return Err(Error::invalid_field(
                "to",
                "within_retention",
                format!(
                    "{hours} hours from {from} to {to} exceed the {} hours of history kept",
                    self.limits.retention_hours
                ),
            ));
        }
        Ok((from, to))
    }

    /// `Ok` if the directory knows the provider, else `INVALID_ARGUMENT` on the field `provider`.
    pub fn known_provider(&self, code: &str) -> Result<(), Error> {
        match self.rules.directory.provider(code) {
            Some(_) => Ok(()),
            None => Err(Error::invalid_field(
                "provider",
                "known_provider",
                format!("provider {code:?} is not in the directory"),
            )),
        }
    }

    /// The selected part of the Hub's picture, waiting a little (at start-up, or while it reloads after the log
    /// reset) for the picture to be there; `UNAVAILABLE` if it does not come.
    pub async fn snapshot(&self, selection: &sitrep_core::Selection) -> Result<sitrep_core::PictureSnapshot, Error> {
        self.read_picture(|| self.hub.snapshot(selection)).await
    }

    /// The open alerts of the selected providers, from the Hub's picture (waiting for it as [`Context::snapshot`]).
    pub async fn alerts(&self, selection: &sitrep_core::Selection) -> Result<Vec<sitrep_core::Alert>, Error> {
        self.read_picture(|| self.hub.alerts(selection)).await
    }

    /// What `read` makes of the Hub's picture, waiting for it as [`Context::snapshot`].
    pub async fn with_picture<T>(&self, read: impl Fn(&sitrep_core::Picture) -> T) -> Result<T, Error> {
        self.read_picture(|| self.hub.read(&read)).await
    }

    async fn read_picture<T>(&self, read: impl Fn() -> Option<T>) -> Result<T, Error> {
        let deadline = tokio::time::Instant::now() + PICTURE_WAIT;
        loop {
            if let Some(value) = read() {
                return Ok(value);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.hub.ready(left).await {
                return Err(Error::not_ready());
            }
            // Ready, but the picture may have been dropped again before it was read: look once more.
            tokio::task::yield_now().await;
        }
    }

    /// Resolves a filter within what `who` may read: `INVALID_ARGUMENT` naming the first unknown code (e.g.
    /// `filter.systems[1]`), PERMISSION_DENIED for a provider outside its read grant; no filter is everything it
    /// may read.
    pub fn resolve(&self, filter: Option<&FilterSpec>, who: &Principal) -> Result<ResolvedFilter, Error> {
        let readable_scopes = who.grants.read.clone();
        let Some(f) = filter else {
            return Ok(ResolvedFilter { providers: who.grants.readable.clone(), metrics: None, readable_scopes });
        };
        let providers = self
            .rules
            .directory
            .select(&f.providers, &f.systems, &f.regions)
            .map_err(|e| Error::invalid_field(&format!("filter.{}", e.field), "known_code", e.to_string()))?;
        for (i, m) in f.metrics.iter().enumerate() {
            if !self.rules.catalogue.knows(m) {
                return Err(Error::invalid_field(
                    &format!("filter.metrics[{i}]"),
                    "known_metric",
                    format!("filter.metrics[{i}]: metric {m:?} is not in the catalogue"),
                ));
            }
        }
        let providers = match providers {
            Selection::All => who.grants.readable.clone(),
            Selection::Only(set) => {
                for p in &set {
                    who.may(Action::ReadProvider(p))?;
                }
                Selection::Only(set)
            }
        };
        let metrics = (!f.metrics.is_empty()).then(|| f.metrics.iter().cloned().collect());
        Ok(ResolvedFilter { providers, metrics, readable_scopes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_loopback_names_the_listener_and_the_configured_ones() {
        let local = Hosts::new("127.0.0.1:50051".parse().unwrap(), &[]);
        for ok in ["127.0.0.1:50051", "localhost", "LOCALHOST:80", "[::1]:50051"] {
            assert!(local.allows(Some(ok)), "{ok}");
        }
        assert!(!local.allows(Some("attacker.example:50051")), "a rebinding page's name is refused");
        let named = Hosts::new("10.1.2.3:443".parse().unwrap(), &["sitrep.nhs.example".into()]);
        assert!(named.allows(Some("sitrep.nhs.example")) && named.allows(Some("10.1.2.3:443")));
        assert!(!named.allows(Some("other.example")));
        assert!(Hosts::new("0.0.0.0:80".parse().unwrap(), &[]).allows(Some("anything")), "unconfigured: any");
    }
}
