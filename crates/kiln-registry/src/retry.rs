//! When and how long to wait before trying a request again: bounded
//! exponential backoff with full jitter, and `Retry-After` from the server
//! when it gives one. It decides; the client's request loop does the waiting.
//!
//! Retried: connection errors (refused, reset, timeout, truncated body),
//! 408, 429 and 5xx except 501/505 (which will not change). Not retried:
//! other 4xx, which are the caller's mistake or a permission problem.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Retry limits. The defaults give up after about 10 s of waiting in total.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1` (so `attempt` >= 1).
    /// A server's `Retry-After` wins, capped at a minute so that a confused
    /// server cannot park us for hours.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(Duration::from_secs(60));
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        // Full jitter spreads out the retries of parallel blob transfers that
        // failed together (a registry restart) so they do not stampede back.
        let ms = exp.as_millis() as u64;
        let jittered = ms / 2 + rand::random_range(0..=ms / 2);
        Duration::from_millis(jittered)
    }
}

pub fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT
        || s == StatusCode::TOO_MANY_REQUESTS
        || (s.is_server_error()
            && s != StatusCode::NOT_IMPLEMENTED
            && s != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

/// `Retry-After` in seconds; the HTTP-date form is rare from registries and
/// is treated as absent (we fall back to our own backoff).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether a transport-level error is worth another try.
pub fn retryable_error(e: &reqwest::Error) -> bool {
    // Builder errors (bad URL) and redirect-policy errors will not heal;
    // anything that happened on the wire might.
    !e.is_builder() && !e.is_redirect() && !e.is_status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy::default();
        for attempt in 1..10 {
            let d = p.delay(attempt, None);
            assert!(d <= p.max_delay, "{d:?}");
        }
        assert!(p.delay(1, None) <= Duration::from_millis(250));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert!(retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::NOT_FOUND));
        assert!(!retryable_status(StatusCode::NOT_IMPLEMENTED));
    }
}
