//! Retrying: how long to wait before the next attempt. One policy for everything that retries a connection or a
//! call (the Hub reading the log, the simulator's and the feed agent's streams, `sitrep_client::follow` behind
//! `sitrep watch`), so that they back off alike and replicas do not retry in lockstep. It lives in the core, which
//! the aggregator and all its clients share, because it is plain arithmetic on `std`; reading the clock's nanos for
//! jitter is its one brush with the outside world, and nothing here sleeps.

use std::time::Duration;

/// Exponential backoff with jitter, 50 ms doubling to 5 s.
#[derive(Default)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let base = 50u64.saturating_mul(1 << self.attempt.min(7)).min(5_000);
        self.attempt += 1;
        // Jitter from the clock's sub-second nanos: good enough to keep replicas from retrying in lockstep.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        Duration::from_millis(base / 2 + u64::from(nanos) % (base / 2 + 1))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first <= Duration::from_millis(50));
        let late = (0..20).map(|_| b.next_delay()).last().unwrap();
        assert!(late >= Duration::from_millis(2_500) && late <= Duration::from_secs(5));
    }
}
