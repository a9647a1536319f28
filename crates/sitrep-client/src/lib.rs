//! A client of the sitrep aggregator: what the CLI, the feed agent and the tests need to talk to it, without
//! depending on the aggregator itself (`sitrep-server`). The wire types and their value conversions are
//! `sitrep-proto`'s; tracing is `sitrep-telemetry`'s.
//!
//! # Layout
//! - [`credentials`]: [`credentials::Bearer`], the key every call on a channel carries (with the caller's trace
//!   context), and [`credentials::AuthedChannel`], a channel that carries it.
//! - [`diagnose`]: what a failed call means ([`diagnose::Failure`]: give up, closed unanswered, passing), as the
//!   caller's transport tells it ([`diagnose::Diagnose`]); the feed agent's sender and [`follow`] retry by it.
//! - [`follow`]: a subscription that outlives outages: reconnects with backoff, resumes from its last cursor, and
//!   hands each update to the caller (`sitrep watch` prints them).
//! - [`sim`]: synthetic providers that stream plausible reports to an aggregator over gRPC, and `sim::directory`,
//!   the providers its directory lists.
//! - [`display`]: readable one-line renderings of updates and mutual aid, for terminals and logs.

pub mod credentials;
pub mod diagnose;
pub mod display;
pub mod follow;
pub mod sim;
