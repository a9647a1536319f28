//! Limits per caller: how many reports a provider may send a minute, so one flooding feed is refused quickly
//! (`RESOURCE_EXHAUSTED` with when to retry) rather than filling history or slowing everyone else; and how many
//! subscriptions one principal may hold open at once ([`Subscriptions`]).
//!
//! A token bucket per provider: it holds up to a minute's allowance, so a feed catching up after an outage may
//! send a burst of that many at once, and refills steadily. The check is one short lock and a little arithmetic,
//! taken before the store is touched, so a provider over its limit costs the others nothing. Each replica counts
//! its own reports: behind a load balancer of N replicas a provider may send up to N times the limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

pub struct ReportLimiter {
    /// Reports a provider may send a minute; 0: no limit.
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ReportLimiter {
    pub fn new(per_minute: u32) -> Self {
        ReportLimiter { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one report's allowance for `provider` (a code the directory knows, so the buckets stay as few as the
    /// providers), or says how long until there is one: RESOURCE_EXHAUSTED with a retry delay.
    pub fn take(&self, provider: &str, now: Instant) -> Result<(), Error> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match buckets.get_mut(provider) {
            Some(b) => b,
            None => buckets.entry(provider.to_owned()).or_insert(Bucket { tokens: capacity, at: now }),
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
        let message = format!(
            "provider {provider} sent more than {} reports a minute (limits.reports_per_provider_per_minute); retry in \
             {:.1} s",
            self.per_minute,
            wait.as_secs_f64()
        );
        Err(Error::resource_exhausted(message, Some(wait)))
    }
}

/// How many subscriptions each principal holds open, against a limit.
pub struct Subscriptions {
    /// Open subscriptions one principal may hold; 0: no limit.
    per_principal: u32,
    open: std::sync::Arc<Mutex<HashMap<String, u32>>>,
}

/// One open subscription, counted until it is dropped (when its session ends).
pub struct Ticket {
    principal: String,
    open: std::sync::Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

impl Subscriptions {
    pub fn new(per_principal: u32) -> Self {
        Subscriptions { per_principal, open: Default::default() }
    }

    /// Counts one more subscription of `principal`, or RESOURCE_EXHAUSTED when it holds its limit already.
    pub fn open(&self, principal: &str) -> Result<Ticket, Error> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(principal.to_owned()).or_default();
        if self.per_principal > 0 && *n >= self.per_principal {
            return Err(Error::resource_exhausted(
                format!(
                    "{principal} holds {n} subscriptions open already (subscribers.per_principal); close one first"
                ),
                None,
            ));
        }
        *n += 1;
        Ok(Ticket { principal: principal.to_owned(), open: self.open.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minutes_allowance_at_once_then_steadily_and_providers_apart() {
        let limiter = ReportLimiter::new(60);
        let t = Instant::now();
        for _ in 0..60 {
            limiter.take("RJ7", t).unwrap();
        }
        let refused = tonic::Status::from(limiter.take("RJ7", t).unwrap_err());
        use tonic_types::StatusExt;
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let retry = refused.get_details_retry_info().and_then(|r| r.retry_delay).unwrap();
        assert!((retry.as_secs_f64() - 1.0).abs() < 0.01, "{retry:?}");
        assert!(refused.message().contains("limits.reports_per_provider_per_minute"), "{}", refused.message());
        limiter.take("RGT", t).expect("another provider is not held back");
        limiter.take("RJ7", t + Duration::from_secs(1)).expect("a second later, one more");
        assert!(ReportLimiter::new(0).take("RJ7", t).is_ok(), "0: no limit");
    }

    #[test]
    fn subscriptions_are_counted_until_they_end() {
        let subs = Subscriptions::new(2);
        let a = subs.open("wall").unwrap();
        let _b = subs.open("wall").unwrap();
        assert_eq!(subs.open("wall").err().map(|s| s.code()), Some(tonic::Code::ResourceExhausted));
        let _other = subs.open("feed").expect("another principal's count is its own");
        drop(a);
        let _c = subs.open("wall").expect("one ended: room for one more");
    }
}
