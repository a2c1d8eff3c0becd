//! What to retry, and how long to wait before the next attempt.

use std::time::Duration;

/// How a call retries what is worth retrying: `429` (after the `retry_after_ms` the
/// homeserver asks for, at least [`Retry::first`]), `5xx` and network errors (after
/// [`Retry::first`], doubling up to [`Retry::max`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The first wait after a `5xx` or a network error.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// How many attempts in all before `Error::GaveUp`; `None`: no
    /// limit (a long-running source keeps trying until the homeserver is back).
    pub attempts: Option<u32>,
}

impl Default for Retry {
    /// 1 s doubling up to 60 s, without a limit.
    fn default() -> Self {
        Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            attempts: None,
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt + 1` after a failure that asked for none (`attempt`
    /// counts from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
        doubled.min(self.max)
    }

    /// The wait after a `429` that asked for `retry_after` (if it said), bounded by
    /// [`Retry::max`].
    pub fn after_rate_limit(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after
            .unwrap_or_else(|| self.backoff(attempt))
            .min(self.max)
    }

    /// Whether another attempt is allowed after `attempt` attempts.
    pub fn allows(&self, attempt: u32) -> bool {
        self.attempts.is_none_or(|max| attempt < max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let r = Retry {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: Some(5),
        };
        let waits: Vec<u128> = (1..=6).map(|a| r.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.backoff(u32::MAX), Duration::from_secs(1));
        assert_eq!(
            r.after_rate_limit(1, Some(Duration::from_millis(250))),
            Duration::from_millis(250)
        );
        assert_eq!(
            r.after_rate_limit(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(1)
        );
        assert!(r.allows(4) && !r.allows(5));
        assert!(Retry::default().allows(u32::MAX - 1));
    }
}
