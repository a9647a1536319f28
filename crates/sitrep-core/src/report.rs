//! A provider's report as sitrep receives it, before validation.
//!
//! Everything a feed can get wrong is representable here (a missing period, an unknown metric, a NaN), so that
//! [`crate::validate()`] can name each mistake instead of a conversion layer failing half-way.

use std::collections::BTreeMap;
use std::fmt;

use crate::Timestamp;

/// Why a metric carries no number. Absent is not zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbsentReason {
    /// Not stated by the sender; always rejected by validation.
    Unspecified,
    NotApplicable,
    NotAvailable,
    Suppressed,
}

impl AbsentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AbsentReason::Unspecified => "unspecified",
            AbsentReason::NotApplicable => "not_applicable",
            AbsentReason::NotAvailable => "not_available",
            AbsentReason::Suppressed => "suppressed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "not_applicable" => AbsentReason::NotApplicable,
            "not_available" => AbsentReason::NotAvailable,
            "suppressed" => AbsentReason::Suppressed,
            _ => return None,
        })
    }
}

/// A metric's value: a number in the metric's unit, or absent with a reason.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Absent(AbsentReason),
}

impl Value {
    /// The number, if it is one.
    pub fn number(self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(n),
            Value::Absent(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Absent(r) => write!(f, "absent({})", r.as_str()),
        }
    }
}

/// One entry of a report's values as sent: the value (missing if the sender set neither a number nor a reason)
/// and the unit the sender believes it is using, if it said.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricInput {
    pub value: Option<Value>,
    pub unit: Option<String>,
}

impl From<Value> for MetricInput {
    fn from(value: Value) -> Self {
        MetricInput { value: Some(value), unit: None }
    }
}

impl From<f64> for MetricInput {
    fn from(n: f64) -> Self {
        Value::Number(n).into()
    }
}

/// One provider's status for one period, as received.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub provider: String,
    pub site: Option<String>,
    pub period: Option<Timestamp>,
    pub revision: u32,
    pub observed_at: Option<Timestamp>,
    pub values: BTreeMap<String, MetricInput>,
    pub opel_level: Option<u32>,
    pub narrative: Option<String>,
    pub source: Option<String>,
}
