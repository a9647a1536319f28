//! Alerts: conditions someone must act on, raised and cleared as events and kept as a list of open alerts.
//!
//! Every alert belongs to one provider and has a key unique among that provider's open alerts
//! (`threshold:RJ7:beds.cc_adult.occupancy`), so raising is idempotent and clearing names exactly what it closes.
//! Which alerts a report raises or clears is decided by [`crate::derive`]; staleness by the clock, through the
//! store, so that several replicas raise it once.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A figure entered red; cleared when it leaves red.
    Threshold,
    /// The declared OPEL level went up; cleared when it comes down.
    Escalation,
    /// The provider missed its expected report; cleared by its next report.
    Stale,
    /// A figure moved implausibly far since the previous report (accepted, but worth a look); cleared by the
    /// provider's next report unless that jumps again.
    Jump,
    /// The declared OPEL level differs from the one computed from the provider's figures.
    OpelMismatch,
    /// A report left fewer free beds of a capacity pair (`open - occupied`) than the provider holds for accepted
    /// mutual aid offers: it has promised beds it no longer has. Cleared when the free beds cover the holds again
    /// (or the holds end).
    Overcommitted,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Threshold => "threshold",
            AlertKind::Escalation => "escalation",
            AlertKind::Stale => "stale",
            AlertKind::Jump => "jump",
            AlertKind::OpelMismatch => "opel_mismatch",
            AlertKind::Overcommitted => "overcommitted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `kind:provider[:metric]`, unique among open alerts.
    pub key: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The figure that raised it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// A sentence for people naming the provider, the figure and the rule.
    pub message: String,
    /// When it was raised (the report's receipt time, or the clock's time for staleness).
    pub raised_at: Timestamp,
}

impl Alert {
    pub fn key_for(kind: AlertKind, provider: &str, metric: Option<&str>) -> String {
        match metric {
            Some(m) => format!("{}:{provider}:{m}", kind.as_str()),
            None => format!("{}:{provider}", kind.as_str()),
        }
    }

    pub fn new(
        kind: AlertKind,
        severity: Severity,
        provider: &str,
        metric: Option<&str>,
        value: Option<f64>,
        message: String,
        raised_at: Timestamp,
    ) -> Self {
        Alert {
            key: Self::key_for(kind, provider, metric),
            kind,
            severity,
            provider: provider.to_owned(),
            metric: metric.map(str::to_owned),
            value,
            message,
            raised_at,
        }
    }
}
