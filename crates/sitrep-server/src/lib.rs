//! The sitrep aggregator: validates what providers send, stores it, and streams every change to subscribers.
//!
//! # Layout
//! - [`aid`]: mutual aid for every surface: who may take which action, the action through the store, the views
//!   (requests, candidates, measures) from the Hub's picture, and the clock's expiry and escalation.
//! - [`audit`]: refused attempts, kept for a while and queryable by admins.
//! - [`auth`]: principals, their credentials and grants, the layer that authenticates every request and the one
//!   function that authorises.
//! - [`config`]: the one typed configuration struct, parsed from TOML, and the directory and catalogue it names.
//! - [`context`]: what every surface shares ([`context::Context`]), below the services, HTTP, sessions and aid.
//! - [`convert`]: every conversion of a domain value (`sitrep-core`) to or from the wire (`sitrep-proto`), one
//!   function each (the values both ends send come from `sitrep_proto::convert`); the services assemble answers
//!   from them.
//! - [`error`]: the one error type below the transports ([`error::Error`]: a kind and a sentence naming field,
//!   rule and value), with its one mapping to a gRPC status and its one mapping to an HTTP answer.
//! - [`limit`]: limits per caller (reports per provider per minute).
//! - [`metrics`]: the Prometheus metrics (`GET /metrics`, admin grant), and the store wrapper that times every call.
//! - [`health`]: the store's health (the Hub reports its reads, ingest its writes) and the rules that make the picture
//!   degraded, with the status every surface shows.
//! - [`hub`]: the Hub, which tails the store's event log and fans events out to bounded per-subscriber queues.
//! - [`resync`]: why a subscriber is sent a fresh snapshot, told by both transports and counted by the metrics.
//! - [`views`]: the views over history every transport serves (hour by hour, a metric's series, the previous
//!   hour): domain inputs to domain answers, history read in one batch.
//! - [`session`]: one subscription's gap-free sequence of snapshot, events, heartbeats, resets and status, shared
//!   by gRPC `Subscribe` and the browser's Server-Sent Events.
//! - [`services`]: the gRPC services: `ProviderService` (ingest), `SubscriberService`, `QueryService`,
//!   `AidService` (mutual aid).
//! - [`http`]: the wallboard page, the JSON API, Server-Sent Events and health endpoints, on the same port.
//! - [`app`]: builds the services, health and reflection into one router and serves it until shutdown.
//! - [`transport`]: a connection plaintext or TLS, where the accept loop sends it, and who is at the other end
//!   ([`transport::Peer`], in every request's extensions: the client certificate for the identity layer).
//! - [`tls`]: TLS on the one port: the rustls configuration from `[tls]`, reloaded when the files change, and the
//!   answer a plaintext client gets on a TLS port.
//! - [`telemetry`]: the aggregator's side of OpenTelemetry tracing (`sitrep-telemetry` has the exporter,
//!   propagation and the spans): the middleware giving every gRPC call its server span, the delivery span.

pub mod aid;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod context;
pub mod convert;
pub mod error;
pub mod health;
pub mod http;
pub mod hub;
pub mod limit;
pub mod metrics;
pub mod resync;
pub mod services;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod views;

pub use app::{App, open_store, serve, store_from_config};
pub use config::Config;
