//! Refused attempts, kept for a while: every request refused as unauthenticated, outside its grant, or over a
//! limit is logged and counted here with who, what and why, so an operator can ask "who has been knocking"
//! (`QueryService/GetRefusals`, `GET /api/v1/refusals`, `sitrep refusals`; the admin grant). Each replica keeps
//! its own, in memory, the newest [`KEPT`] for at most [`KEPT_FOR`]; accepted reports are audited in history.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderMap;
use sitrep_core::Timestamp;
use tonic::Status;

/// How many refusals are kept, newest first out.
pub const KEPT: usize = 10_000;
/// How long a refusal is kept.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// The kinds of refusal, as [`Refusal::kind`] names them.
pub const KINDS: [&str; 3] = ["unauthenticated", "permission_denied", "resource_exhausted"];

/// Where providers' reports come in: a refusal of a request to it is a refused report.
const PROVIDER_SERVICE: &str = "/sitrep.v1.ProviderService/";

/// Why an HTTP answer refused its request, for the audit (its body says so too).
#[derive(Clone, Debug)]
pub struct Reason(pub String);

/// One refused attempt.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Refusal {
    pub at: Timestamp,
    /// The principal's name, or `unauthenticated`.
    pub principal: String,
    pub credential: String,
    /// Where it came from (`ip:port`), when known.
    pub address: String,
    /// What it asked for: the gRPC method or HTTP path.
    pub target: String,
    /// `unauthenticated`, `permission_denied` or `resource_exhausted`.
    pub kind: &'static str,
    pub reason: String,
}

#[derive(Default)]
pub struct Refusals {
    kept: Mutex<VecDeque<Refusal>>,
    counted: std::sync::atomic::AtomicU64,
    /// Counted by kind, in [`KINDS`] order (for `sitrep_refusals_total`).
    by_kind: [std::sync::atomic::AtomicU64; KINDS.len()],
    /// Refused requests to `ProviderService` (for `sitrep_reports_total{outcome="refused"}`).
    reports: std::sync::atomic::AtomicU64,
}

impl Refusals {
    pub fn record(&self, refusal: Refusal) {
        tracing::info!(
            principal = %refusal.principal, credential = %refusal.credential, address = %refusal.address,
            target = ?refusal.target, kind = refusal.kind, reason = ?refusal.reason, "refused"
        );
        self.counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(i) = KINDS.iter().position(|k| *k == refusal.kind) {
            self.by_kind[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if refusal.target.starts_with(PROVIDER_SERVICE) {
            self.reports.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_back(refusal);
        while kept.len() > KEPT {
            kept.pop_front();
        }
    }

    /// The refusals since `since` (and within the last day), newest first, at most `limit`.
    pub fn since(&self, since: Timestamp, limit: usize) -> Vec<Refusal> {
        let oldest = Timestamp::now().add_millis(-(KEPT_FOR.as_millis() as i64)).max(since);
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().rev().take_while(|r| r.at >= oldest).take(limit).cloned().collect()
    }

    /// How many have been refused since the process started.
    pub fn counted(&self) -> u64 {
        self.counted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many have been refused since the process started, by kind ([`KINDS`] order).
    pub fn by_kind(&self) -> [u64; KINDS.len()] {
        std::array::from_fn(|i| self.by_kind[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// How many requests to `ProviderService` (reports, or a stream of them) have been refused.
    pub fn reports(&self) -> u64 {
        self.reports.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The kind of refusal a status code is (`unauthenticated`, `permission_denied`, `resource_exhausted`) and its reason;
/// `None` for any other status. The one mapping every path records by.
pub fn refusal_of(code: tonic::Code, message: &str) -> Option<(&'static str, String)> {
    let kind = match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission_denied",
        tonic::Code::ResourceExhausted => "resource_exhausted",
        _ => return None,
    };
    Some((kind, message.to_owned()))
}

/// The refusal a gRPC status in `headers` (a trailers-only answer's, or trailers) is, if any.
pub fn refusal_in(headers: &HeaderMap) -> Option<(&'static str, String)> {
    let status = Status::from_header_map(headers)?;
    refusal_of(status.code(), status.message())
}

/// Who asked for what, from where: what a refusal of it is recorded with.
#[derive(Clone, Debug, Default)]
pub struct Attempt {
    pub principal: String,
    pub credential: String,
    pub address: String,
    pub target: String,
}

impl Refusals {
    /// Records that `attempt` was refused (`kind` and `reason` as [`refusal_of`] gives them).
    pub fn refuse(&self, attempt: &Attempt, (kind, reason): (&'static str, String)) {
        self.record(Refusal {
            at: Timestamp::now(),
            principal: attempt.principal.clone(),
            credential: attempt.credential.clone(),
            address: attempt.address.clone(),
            target: attempt.target.clone(),
            kind,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_kept_newest_first_and_bounded() {
        let r = Refusals::default();
        let refusal = |n: usize| Refusal {
            at: Timestamp::now(),
            principal: format!("p{n}"),
            credential: String::new(),
            address: String::new(),
            target: "/x".into(),
            kind: "permission_denied",
            reason: String::new(),
        };
        for n in 0..KEPT + 5 {
            r.record(refusal(n));
        }
        let got = r.since(Timestamp(0), 3);
        assert_eq!(got.iter().map(|r| r.principal.as_str()).collect::<Vec<_>>(), ["p10004", "p10003", "p10002"]);
        assert_eq!(r.counted(), (KEPT + 5) as u64);
        assert_eq!(r.by_kind(), [0, (KEPT + 5) as u64, 0]);
        assert_eq!(r.reports(), 0, "none was a report");
        r.record(Refusal { target: "/sitrep.v1.ProviderService/Submit".into(), ..refusal(0) });
        assert_eq!(r.reports(), 1);
        assert_eq!(r.since(Timestamp(0), usize::MAX).len(), KEPT);
    }
}
