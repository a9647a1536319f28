//! The sitrep domain: what a report is, what makes it valid, and what changes when it is accepted.
//!
//! This crate is pure: no I/O, no async, no wire types. Everything that touches a network or a disk lives in the
//! other crates (store, server, client, feed, telemetry, cli) and calls in here with plain values (the current time
//! is a parameter, configuration arrives as text); [`backoff`] reads the clock's nanos for jitter, its one brush
//! with the outside world.
//!
//! # Layout
//! - [`aid`]: mutual aid: requests and offers with their state machines, holds, candidates, timers, measures.
//! - [`backoff`]: how long to wait before retrying, one policy for every retrier (the Hub, the simulator, the
//!   feed agent, `sitrep_client::follow`); plain `std` arithmetic with clock jitter, no sleeping here.
//! - [`time`]: [`Timestamp`], millisecond UTC instants, and hour arithmetic for periods.
//! - [`catalogue`]: the metrics a deployment accepts ([`Catalogue`], [`Metric`]), parsed from TOML.
//! - [`code`]: [`Code`], a metric's code, interned: copied, compared and hashed as a pointer.
//! - [`directory`]: nation, regions, systems, providers and sites ([`Directory`]), parsed from TOML, and filters.
//! - [`profile`]: the data that ships with sitrep: the NHS England catalogue and a small demo directory.
//! - [`report`]: a provider's report and its values ([`Report`], [`Value`]).
//! - [`validate`]: the rules a report must satisfy ([`validate()`], [`Limits`], [`Violation`]).
//! - [`state`]: live state of a provider, the diff of a report against it into an [`Event`], history records.
//! - [`plan`]: the one pipeline: what a report or the clock changes, planned from the provider's prior state, for
//!   a store to persist atomically.
//! - [`picture`]: the [`Picture`], the live state, scope totals with coverage, alerts and staleness as a fold over
//!   the event log.
//! - [`rules`]: [`Rules`], catalogue, directory, OPEL framework and staleness checked together; [`Scope`]s.
//! - [`rag`]: red, amber or green from thresholds with a direction, and the small-denominator rule.
//! - [`rollup`]: system, region and nation figures from per-scope totals, by each metric's rollup rule.
//! - [`opel`]: the table-driven OPEL framework: a computed level with its explanation.
//! - [`critcon`]: the table-driven CRITCON rule: a system's, region's or the nation's critical care level derived
//!   from its members' levels, with its explanation.
//! - [`alert`]: [`Alert`]s, raised and cleared as events.
//! - [`derive`]: what a report changes in a provider's derived picture: figures, ratings, OPEL, alerts.
//! - [`hourly`]: the hour-by-hour view of a provider or a scope from stored revisions, with changes and completeness.
//! - [`cursor`]: [`Cursor`], the position of an event in the event log, with its epoch.
//! - [`sim`]: plausible, slowly drifting synthetic values for the simulator.
//! - [`input`]: what feeds export (sitrep JSON, CSV, FHIR MeasureReports) read into reports, with a mapping.

pub mod aid;
pub mod alert;
pub mod backoff;
pub mod catalogue;
pub mod code;
pub mod critcon;
pub mod cursor;
pub mod derive;
pub mod directory;
pub mod hourly;
pub mod input;
pub mod opel;
pub mod picture;
pub mod plan;
pub mod profile;
pub mod rag;
pub mod report;
pub mod rollup;
pub mod rules;
pub mod sim;
pub mod state;
pub mod time;
pub mod validate;

pub use alert::{Alert, AlertKind, Severity};
pub use catalogue::{Catalogue, Kind, Metric};
pub use code::Code;
pub use cursor::Cursor;
pub use directory::{Directory, Level, Scope, Selection};
pub use picture::{Picture, PictureSnapshot};
pub use rag::Rag;
pub use report::{AbsentReason, MetricInput, Report, Value};
pub use rules::Rules;
pub use state::{Event, EventKind, HistoryRecord, MetricChange, ProviderLive, Reading, SiteLive};
pub use time::Timestamp;
pub use validate::{Limits, Sender, TraceContext, ValidReport, Violation, validate};

/// Configuration text that could not be understood, with the key or item at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid TOML or does not have the expected shape.
    #[error("{what}: {cause}")]
    Parse { what: String, cause: toml::de::Error },
    /// The text parsed but says something inconsistent (a dangling reference, a duplicate code, ...).
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}
