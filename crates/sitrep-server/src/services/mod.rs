//! The gRPC services, each a thin layer over the domain, the store and the Hub, sharing a [`crate::context::Context`].
//!
//! # Layout
//! - [`provider`]: `ProviderService`: validate, store, acknowledge.
//! - [`subscriber`]: `SubscriberService`: one session task per stream: snapshot or catch-up, then live events.
//! - [`subscriber_transport`]: its server, whose codec sends events encoded once for all subscribers.
//! - [`query`]: `QueryService`: snapshot, directory, catalogue, history and the views of [`crate::views`], on request.
//! - [`aid`]: `AidService`: mutual aid, a thin layer over [`crate::aid`].
//! - [`refusals`]: tonic's own refusals of a caller's message (too large, not gRPC) as INVALID_ARGUMENT.

pub mod aid;
pub mod provider;
pub mod query;
pub mod refusals;
pub mod subscriber;
pub mod subscriber_transport;
