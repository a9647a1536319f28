//! The gRPC services, each a thin layer over the domain, the store and the Hub.
//!
//! # Layout
//! - [`Context`]: what every service shares (store, directory, catalogue, limits, Hub, shutdown token).
//! - [`provider`]: `ProviderService`: validate, store, acknowledge.
//! - [`subscriber`]: `SubscriberService`: one session task per stream: snapshot or catch-up, then live events.
//! - [`subscriber_transport`]: its server, whose codec sends events encoded once for all subscribers.
//! - [`query`]: `QueryService`: snapshot, directory, catalogue on request.

pub mod provider;
pub mod query;
pub mod subscriber;
pub mod subscriber_transport;

use std::collections::BTreeSet;
use std::sync::Arc;

use sitrep_core::{Catalogue, Directory, Limits, Rules, Selection};
use sitrep_proto::v1 as pb;
use sitrep_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;

use crate::config::SubscriberConfig;
use crate::error;
use crate::hub::Hub;

/// Everything the services share. Built once by [`crate::App`].
pub struct Context {
    pub store: Arc<dyn Store>,
    /// What derived figures are computed by; `directory` and `catalogue` are its parts, for brevity.
    pub rules: Rules,
    pub directory: Arc<Directory>,
    pub catalogue: Arc<Catalogue>,
    pub limits: Limits,
    pub hub: Hub,
    pub subscribers: SubscriberConfig,
    /// Fires at shutdown: every stream task selects on it.
    pub cancel: CancellationToken,
    /// Every task spawned for a stream, so shutdown can wait for them.
    pub tasks: TaskTracker,
}

/// A request's filter, resolved against the directory and the catalogue.
pub struct ResolvedFilter {
    pub providers: Selection,
    /// Metrics to keep; `None` keeps all.
    pub metrics: Option<BTreeSet<String>>,
}

impl Context {
    /// Resolves a filter, or `INVALID_ARGUMENT` naming the first unknown code (e.g. `filter.systems[1]`).
    pub fn resolve(&self, filter: Option<&pb::Filter>) -> Result<ResolvedFilter, Status> {
        let Some(f) = filter else {
            return Ok(ResolvedFilter { providers: Selection::All, metrics: None });
        };
        let providers = self
            .directory
            .select(&f.providers, &f.systems, &f.regions)
            .map_err(|e| error::invalid_field(&format!("filter.{}", e.field), "known_code", e.to_string()))?;
        for (i, m) in f.metrics.iter().enumerate() {
            if !self.catalogue.knows(m) {
                return Err(error::invalid_field(
                    &format!("filter.metrics[{i}]"),
                    "known_metric",
                    format!("filter.metrics[{i}]: metric {m:?} is not in the catalogue"),
                ));
            }
        }
        let metrics = (!f.metrics.is_empty()).then(|| f.metrics.iter().cloned().collect());
        Ok(ResolvedFilter { providers, metrics })
    }
}
