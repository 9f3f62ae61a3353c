//! When to ask the broker again: only after a 429 (rate limited) or a 503 (failing closed for
//! a while), never after any other answer or a network error. The wait honours the broker's
//! `Retry-After` (seconds or an HTTP date) plus full jitter over an exponential backoff, so a
//! CI matrix told to come back in one second does not come back in the same millisecond;
//! bounded in tries and in total time, so git never hangs on a busy broker. The approval
//! answers (`approval_required`, `authorization_pending`, `slow_down`, `expired_token`,
//! `access_denied`) come as 400 or 403 and so are never retried here: waiting for a person
//! is `git jit request`'s business, not the credential helper's.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// How often and how long the helper retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most requests in all (the first one included).
    pub max_tries: u32,
    /// Most time from the first request until the last retry is sent.
    pub budget: Duration,
    /// The jitter window after the first refusal; it doubles after each.
    pub backoff: Duration,
    /// The largest jitter window.
    pub backoff_cap: Duration,
}

impl Default for RetryPolicy {
    /// Four tries within 30 s; jitter windows of 1, 2 and 4 s.
    fn default() -> Self {
        Self {
            max_tries: 4,
            budget: Duration::from_secs(30),
            backoff: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(8),
        }
    }
}

/// Whether an answer may be retried at all.
pub fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// The wait a `Retry-After` value asks for at `now`: delay-seconds or an HTTP date (RFC 9110
/// §10.2.3). A date in the past is no wait; anything unparsable is ignored.
pub fn retry_after(value: Option<&str>, now: SystemTime) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_tries: 1,
            ..Self::default()
        }
    }

    /// How long to wait before try `tries + 1`, after `tries` refused ones, `elapsed` since the
    /// first, the broker asking for `asked`; `None` when the policy gives up (out of tries, or
    /// the wait would end past the budget).
    pub fn wait(&self, tries: u32, elapsed: Duration, asked: Option<Duration>) -> Option<Duration> {
        if tries >= self.max_tries {
            return None;
        }
        let window = self
            .backoff
            .saturating_mul(1u32 << tries.saturating_sub(1).min(16))
            .min(self.backoff_cap);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(fastrand::u64(0..=window_ms));
        let wait = asked.unwrap_or(Duration::ZERO).saturating_add(jitter);
        (elapsed.saturating_add(wait) <= self.budget).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_and_503_are_retried() {
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        for s in [400, 401, 403, 404, 500, 502, 504] {
            assert!(!retryable(StatusCode::from_u16(s).expect("status")), "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(Some("7"), now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some(" 0 "), now), Some(Duration::ZERO));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        assert_eq!(
            retry_after(Some("Sun, 06 Nov 1994 08:49:49 GMT"), now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            retry_after(Some("Sun, 06 Nov 1994 08:00:00 GMT"), now),
            Some(Duration::ZERO),
            "a date past is no wait"
        );
        assert_eq!(retry_after(Some("soon"), now), None);
        assert_eq!(retry_after(Some("-3"), now), None);
        assert_eq!(retry_after(None, now), None);
    }

    #[test]
    fn waits_honour_retry_after_with_jitter_within_the_window() {
        let p = RetryPolicy::default();
        for _ in 0..200 {
            let w = p
                .wait(1, Duration::ZERO, Some(Duration::from_secs(2)))
                .expect("retry");
            assert!(
                w >= Duration::from_secs(2) && w <= Duration::from_secs(3),
                "{w:?}"
            );
            let w = p.wait(3, Duration::ZERO, None).expect("retry");
            assert!(w <= Duration::from_secs(4), "{w:?}");
        }
    }

    #[test]
    fn bounded_in_tries_and_time() {
        let p = RetryPolicy::default();
        assert_eq!(p.wait(4, Duration::ZERO, None), None, "four tries at most");
        assert_eq!(
            p.wait(1, Duration::ZERO, Some(Duration::from_secs(31))),
            None,
            "a wait past the budget is not made"
        );
        assert_eq!(
            p.wait(2, Duration::from_secs(29), Some(Duration::from_secs(2))),
            None
        );
        assert_eq!(RetryPolicy::none().wait(1, Duration::ZERO, None), None);
    }
}
