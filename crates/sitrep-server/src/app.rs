//! Assembly and serving: the four services, health checking, reflection and the HTTP side (wallboard, JSON API,
//! Server-Sent Events, `/healthz` and `/readyz`) on one listener, until shutdown.
//!
//! The gRPC services are collected into `tonic::service::Routes`, which is also an axum router, and merged with
//! the HTTP routes. The listener takes HTTP/2 (gRPC) and HTTP/1.1 (browsers); sitrep's own services also answer
//! gRPC-Web, so a browser can call them directly. A connection whose first request is the Server-Sent Events
//! stream is served outside hyper (`http::serve_direct`), so an idle wallboard costs a few KiB. With `[tls]`, every
//! connection's TLS handshake is made in the accept loop first (`transport::route`, `tls`), and the same routing
//! and serving follow over the TLS stream.

use std::sync::Arc;
use std::time::Duration;

use sitrep_core::{Directory, Rules, Timestamp};
use sitrep_proto::v1 as pb;
use sitrep_store::{MemoryOptions, MemoryStore, RedisOptions, RedisStore, Store};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower_layer::Layer;

use crate::config::{Config, ConfigError};
use crate::context::Context;
use crate::http;
use crate::hub::Hub;
use crate::services::aid::AidApi;
use crate::services::provider::ProviderApi;
use crate::services::query::QueryApi;
use crate::services::subscriber::SubscriberApi;
use crate::tls::ServerTls;
use crate::transport::{Counted, PeerAddrLayer, Routed};

type ProviderServer = pb::provider_service_server::ProviderServiceServer<ProviderApi>;
use crate::services::subscriber_transport::SubscriberServer;
type QueryServer = pb::query_service_server::QueryServiceServer<QueryApi>;
type AidServer = pb::aid_service_server::AidServiceServer<AidApi>;

/// The names of sitrep's own services, as health checking and reflection know them.
pub const SERVICE_NAMES: [&str; 4] = [ProviderServer::NAME, SubscriberServer::NAME, QueryServer::NAME, AidServer::NAME];

/// A built aggregator: shared context and the routes that serve it.
pub struct App {
    pub(crate) ctx: Arc<Context>,
    grace: Duration,
    max_message_bytes: usize,
    max_connections: usize,
    /// How often the clock task looks for providers gone stale, and the store's fullness is looked at
    /// (`staleness.check_interval`).
    check_interval: Duration,
    tls: Option<Arc<ServerTls>>,
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot set up reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Store(#[from] sitrep_store::StoreError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The store the configuration asks for: Redis when `store.redis` or `store.redis_sentinels` is set, else the
/// embedded memory store. Does not connect to Redis (the aggregator serves, degraded, until Redis is reachable).
pub fn store_from_config(config: &Config, rules: &Rules) -> Result<Arc<dyn Store>, ServeError> {
    Ok(match redis_store_from_config(config, rules)? {
        Some(redis) => Arc::new(redis),
        None => {
            let s = &config.store;
            Arc::new(MemoryStore::new(MemoryOptions {
                event_log_capacity: s.event_log_capacity,
                retention_hours: config.limits.retention_hours,
                rules: rules.clone(),
            }))
        }
    })
}

/// The store an aggregator serves from, as [`store_from_config`] chooses it, made ready: a Redis store's data
/// version is checked (and older data upgraded) before serving, so data of a newer sitrep is refused here, with
/// its message. A Redis not reachable yet is only warned about: its version is checked on first contact, and the
/// aggregator serves, degraded, until then. Every embedder of the server gets the same set-up and log lines.
pub async fn open_store(config: &Config, rules: &Rules) -> Result<Arc<dyn Store>, ServeError> {
    let Some(redis) = redis_store_from_config(config, rules)? else {
        return store_from_config(config, rules);
    };
    let s = &config.store;
    let at = s.redis.as_ref().map(|u| u.redacted()).unwrap_or_default();
    tracing::info!(redis = %at, sentinels = ?s.redis_sentinels, master = ?s.redis_master, prefix = %s.key_prefix, "using redis");
    match redis.prepare().await {
        Err(e @ sitrep_store::StoreError::Unavailable { .. }) => {
            tracing::warn!(error = %e, "redis is not reachable yet; its data version is checked once it is");
        }
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    Ok(Arc::new(redis))
}

/// The Redis store the configuration asks for, if it asks for one. Does not connect.
pub(crate) fn redis_store_from_config(config: &Config, rules: &Rules) -> Result<Option<RedisStore>, ServeError> {
    let s = &config.store;
    if !s.uses_redis() {
        return Ok(None);
    }
    let sentinel = s.redis_master.as_ref().map(|master| sitrep_store::redis::SentinelOptions {
        addresses: s.sentinel_addresses(),
        master: master.clone(),
        password: s.redis_sentinel_password.as_ref().map(|p| p.expose().to_owned()),
    });
    // With Sentinel and no URL, the master is reached with no credentials, database 0, no TLS.
    let url = match (&s.redis, &sentinel) {
        (Some(url), _) => url.expose().to_owned(),
        (None, Some(sentinel)) => format!("redis://{}/", sentinel.master),
        (None, None) => unreachable!("uses_redis"),
    };
    Ok(Some(RedisStore::new(RedisOptions {
        url,
        key_prefix: s.key_prefix.clone(),
        event_log_max_len: s.event_log_capacity,
        event_log_max_age: (s.event_log_max_age_seconds > 0).then(|| Duration::from_secs(s.event_log_max_age_seconds)),
        retention_hours: config.limits.retention_hours,
        response_timeout: Duration::from_millis(s.redis_timeout_ms),
        rules: rules.clone(),
        tls_ca_pem: redis_ca(config)?,
        sentinel,
        ack_replicas: s.ack_replicas,
        ack_timeout: s.ack_timeout.get(),
    })?))
}

/// The CA `store.redis_ca` names, read, for a `rediss://` URL; an error naming the setting and the file otherwise.
fn redis_ca(config: &Config) -> Result<Option<Vec<u8>>, ServeError> {
    let Some(path) = &config.store.redis_ca else { return Ok(None) };
    let problem =
        |message: String| crate::tls::TlsError::File { setting: "store.redis_ca", path: path.clone(), message };
    if !config.store.redis.as_ref().is_some_and(|u| u.expose().starts_with("rediss://")) {
        return Err(problem("needs a rediss:// URL in store.redis (Redis over TLS)".into()).into());
    }
    let pem = std::fs::read(path).map_err(|e| problem(format!("cannot read the file: {e}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(problem("no certificate in the file (expected PEM blocks BEGIN CERTIFICATE)".into()).into());
    }
    Ok(Some(pem))
}

impl App {
    /// Builds the aggregator from configuration, the rules it loaded (see [`Config::load_rules`]) and a store
    /// built with the same rules.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        rules: Rules,
        auth: crate::auth::Authenticator,
        cancel: CancellationToken,
    ) -> Self {
        let health = crate::health::StoreHealth::default();
        let hub = Hub::new(rules.clone(), config.subscribers.queue_capacity, health.clone())
            .warm_with(crate::services::subscriber::encode_provider);
        let metrics = Arc::new(crate::metrics::Metrics::new(env!("CARGO_PKG_VERSION"), env!("SITREP_REVISION")));
        // Every store call is timed and its failures counted, whichever backend it is.
        let store: Arc<dyn Store> = Arc::new(crate::metrics::MeteredStore::new(store, metrics.clone()));
        let ctx = Context {
            auth,
            store,
            metrics,
            rules,
            limits: config.limits.to_limits(),
            report_limiter: crate::limit::ReportLimiter::new(config.limits.reports_per_provider_per_minute),
            subscriptions: crate::limit::Subscriptions::new(config.subscribers.per_principal),
            hub,
            health,
            subscribers: config.subscribers.clone(),
            page: crate::http::page(&config.wallboard),
            aid_timers: config.aid.timers(),
            hosts: crate::context::Hosts::new(config.listen, &config.http.allowed_hosts),
            cors_origins: config.http.cors_origins.clone(),
            cancel,
            tasks: TaskTracker::new(),
        };
        App {
            ctx: Arc::new(ctx),
            grace: Duration::from_secs(config.shutdown_grace_seconds),
            max_message_bytes: config.limits.max_message_bytes,
            max_connections: config.limits.max_connections,
            check_interval: config.staleness.check_interval.get(),
            tls: None,
        }
    }

    /// Serves over TLS (see [`ServerTls::from_config`]); `None` serves plaintext.
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls.map(Arc::new);
        self
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.ctx.rules.directory
    }

    fn routes(
        &self,
        health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) -> Result<Routes, ServeError> {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sitrep_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sitrep_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        // gRPC-Web only where it is asked for: the layer turns away plain HTTP/1.1, which the wallboard needs.
        let web = tonic_web::GrpcWebLayer::new();
        let mut routes = Routes::builder();
        routes
            .add_service(
                web.layer(
                    ProviderServer::new(ProviderApi::new(self.ctx.clone()))
                        .max_decoding_message_size(self.max_message_bytes),
                ),
            )
            .add_service(web.layer(SubscriberServer::new(SubscriberApi::new(self.ctx.clone()), self.max_message_bytes)))
            .add_service(web.layer(
                QueryServer::new(QueryApi::new(self.ctx.clone())).max_decoding_message_size(self.max_message_bytes),
            ))
            .add_service(
                web.layer(
                    AidServer::new(AidApi::new(self.ctx.clone())).max_decoding_message_size(self.max_message_bytes),
                ),
            )
            .add_service(health)
            .add_service(reflection.build_v1()?)
            .add_service(reflection_alpha.build_v1alpha()?);
        let mut router = routes
            .routes()
            .into_axum_router()
            .layer(axum::middleware::map_response(crate::services::refusals::name_refusals))
            .merge(crate::http::router(self.ctx.clone()))
            .fallback(crate::http::fallback)
            // Every request, gRPC and HTTP, is authenticated by this one layer.
            .layer(axum::middleware::from_fn_with_state(self.ctx.auth.clone(), crate::auth::layer));
        // Outermost, so a call's span covers its authentication too; not there at all when tracing is off (a
        // middleware costs a boxed service and future per request even when it passes straight through).
        if crate::telemetry::enabled() {
            router = router.layer(axum::middleware::from_fn(crate::telemetry::rpc_layer));
        }
        Ok(Routes::from(router))
    }
}

/// Watches how full the store is (Redis's `maxmemory`, which once reached makes it refuse every write, and sitrep
/// every report): a warning when it passes 80%, and again at every further 5%, and a note when it is back below.
async fn watch_fullness(store: Arc<dyn Store>, every: Duration, cancel: CancellationToken) {
    let mut warned: Option<u64> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Ok(Some((used, max))) = store.fullness().await else { continue };
        let percent = used.saturating_mul(100) / max;
        match (percent >= 80, warned) {
            (true, w) if w.is_none_or(|w| percent >= w + 5) => {
                tracing::warn!(
                    used,
                    maxmemory = max,
                    percent,
                    "the store is {percent}% full: at 100% it refuses every report; raise maxmemory, or shorten \
                     limits.retention_hours or the event log"
                );
                warned = Some(percent);
            }
            (false, Some(_)) => {
                tracing::info!(percent, "the store is below 80% full again");
                warned = None;
            }
            _ => {}
        }
    }
}

/// The clock: every `interval`, asks the store to mark providers that the picture shows have gone quiet as stale.
/// Every replica runs it; the store makes each transition happen once (a plan made from a provider's version
/// applies only while the provider is at it), so there is no leader to elect or lose.
///
/// It also takes mutual aid's due actions (expiry, escalation: [`crate::aid::tick`]) the same way.
async fn watch_staleness(
    store: Arc<dyn Store>,
    hub: Hub,
    interval: Duration,
    timers: sitrep_core::aid::Timers,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Timestamp::now();
        for provider in hub.due_stale(now) {
            match store.mark_stale(&provider, now).await {
                Ok(Some(e)) => {
                    let message = e.derived.raised.first().map(|a| a.message.as_str()).unwrap_or_default();
                    tracing::warn!(provider = %e.provider, cursor = %e.cursor, "{message}");
                }
                Ok(None) => {}
                // The Hub reports the store's health; here it is enough to try again at the next tick.
                Err(error) => {
                    tracing::debug!(%error, "cannot mark stale providers");
                    break;
                }
            }
        }
        crate::aid::tick(&store, &hub, &timers, now).await;
    }
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(name, status).await;
    }
}

/// Accepts connections on `listener` until `stop` fires. A connection whose first request is for the event stream
/// is served by [`http::serve_direct`] (an idle stream then costs a few KiB rather than hyper's HTTP/1 buffers);
/// every other connection is handed to the gRPC and HTTP server through the returned stream. With `tls`, each
/// connection's handshake is made first, in its own task ([`crate::transport::route`]).
fn accept(
    listener: TcpListener,
    ctx: Arc<Context>,
    tls: Option<Arc<ServerTls>>,
    max_connections: usize,
    stop: CancellationToken,
) -> ReceiverStream<Result<Counted, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    // Every open connection holds a permit; at the cap, new ones are closed at once (and said so, at most every
    // few seconds), so the aggregator keeps the descriptors and the CPU for the connections it has.
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    tokio::spawn(async move {
        let mut last_shed = None::<tokio::time::Instant>;
        let mut shed = 0u64;
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: say so, and give the system a moment rather than spin.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                shed += 1;
                if last_shed.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(
                        max_connections,
                        shed,
                        "at the connection limit ([limits] max_connections): closing new connections"
                    );
                    last_shed = Some(tokio::time::Instant::now());
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tx, ctx, tls) = (tx.clone(), ctx.clone(), tls.clone());
            ctx.tasks.clone().spawn(async move {
                let routed = tokio::select! {
                    _ = ctx.cancel.cancelled() => return,
                    routed = crate::transport::route(stream, tls.as_deref()) => routed,
                };
                match routed {
                    Routed::Hyper(connection) => {
                        let _ = tx.send(Ok(Counted::new(connection, permit))).await;
                    }
                    Routed::Events(connection) => http::serve_direct(ctx, connection).await,
                    Routed::Plaintext(stream) => crate::tls::refuse_plaintext(stream, &ctx.cancel).await,
                    Routed::Dropped => {}
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Serves `app` on `listener` until `cancel` fires, then drains: health turns NOT_SERVING, streams are told to
/// end (a report being stored is finished and acknowledged first), and the server waits up to the configured
/// grace period for them.
pub async fn serve(app: App, listener: TcpListener, cancel: CancellationToken) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::Serving).await;
    let routes = app.routes(health)?;
    let ctx = app.ctx.clone();
    let hub = ctx.tasks.spawn(ctx.hub.clone().run(ctx.store.clone(), cancel.clone()));
    let clock = watch_staleness(ctx.store.clone(), ctx.hub.clone(), app.check_interval, ctx.aid_timers, cancel.clone());
    ctx.tasks.spawn(clock);
    ctx.tasks.spawn(ctx.auth.clone().watch(ctx.rules.clone(), Duration::from_secs(2), cancel.clone()));
    ctx.tasks.spawn(watch_fullness(ctx.store.clone(), app.check_interval, cancel.clone()));
    if let Some(tls) = &app.tls {
        ctx.tasks.spawn(tls.clone().watch(cancel.clone()));
    }
    // Health follows the picture: NOT_SERVING while the store is unreachable.
    let (mut status, health_reporter, health_cancel) = (ctx.health.status(), reporter.clone(), cancel.clone());
    ctx.tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = health_cancel.cancelled() => break,
                changed = status.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let degraded = status.borrow_and_update().degraded;
                    let serving = if degraded { ServingStatus::NotServing } else { ServingStatus::Serving };
                    set_health(&health_reporter, serving).await;
                }
            }
        }
    });

    // Health turns NOT_SERVING before the server stops accepting, so a check during shutdown is answered truly.
    let stop_accepting = CancellationToken::new();
    let incoming = accept(listener, ctx.clone(), app.tls.clone(), app.max_connections, stop_accepting.clone());
    let server = tonic::transport::Server::builder()
        .layer(PeerAddrLayer)
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, stop_accepting.clone().cancelled_owned());
    let mut server = std::pin::pin!(server);
    let deadline = tokio::select! {
        result = &mut server => {
            // The server stopped by itself: that is an error unless shutdown was requested at the same moment.
            cancel.cancel();
            result?;
            tokio::time::Instant::now() + app.grace
        }
        _ = cancel.cancelled() => {
            tracing::info!(grace = ?app.grace, "shutting down: draining streams");
            set_health(&reporter, ServingStatus::NotServing).await;
            stop_accepting.cancel();
            // One grace period for everything: the server's connections and every stream task.
            let deadline = tokio::time::Instant::now() + app.grace;
            match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(result) => result?,
                Err(_) => tracing::warn!("streams did not drain within the grace period; closing them"),
            }
            deadline
        }
    };
    ctx.tasks.close();
    if tokio::time::timeout_at(deadline, ctx.tasks.wait()).await.is_err() {
        tracing::warn!("some stream tasks did not finish within the grace period");
    }
    let _ = hub.await;
    tracing::info!("stopped");
    Ok(())
}
