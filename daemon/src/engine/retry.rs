//! Retry policy: which failures are worth retrying, how long to wait (exponential backoff with
//! full jitter, or the server's `Retry-After`), and how HTTP statuses map to error kinds.

use std::time::{Duration, SystemTime};

use mdl_protocol::ErrorKind;
use rand::Rng;

/// How an HTTP status should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// Worth retrying (5xx, 408, 425).
    Transient,
    /// Rate limited (429): retry after the server's delay.
    RateLimited,
    /// Will not succeed by retrying.
    Permanent(ErrorKind),
}

/// Classify a non-success HTTP status.
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        401 | 403 | 407 => StatusClass::Permanent(ErrorKind::Auth),
        404 | 410 => StatusClass::Permanent(ErrorKind::NotFound),
        429 => StatusClass::RateLimited,
        408 | 425 | 500..=599 => StatusClass::Transient,
        _ => StatusClass::Permanent(ErrorKind::Fatal),
    }
}

/// Parse `Retry-After`: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The backoff before attempt `attempt` (1-based count of consecutive failures): exponential
/// from `base`, capped at `max`, with full jitter in its upper half so that many clients do
/// not retry in lock step.
pub fn backoff_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX),
    );
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// The one retry loop's bookkeeping, shared by downloads and metadata requests: it counts
/// consecutive failures, picks each delay (the server's `Retry-After`, capped, else
/// exponential backoff with full jitter) and says when to give up.
#[derive(Debug, Clone)]
pub struct Retries {
    failures: u32,
    limit: u32,
    base: Duration,
    max: Duration,
    retry_after_max: Duration,
}

impl Retries {
    /// Give up after `limit` consecutive failures (at least one attempt is always made).
    pub fn new(settings: &crate::settings::EngineSettings, limit: u32) -> Self {
        Retries {
            failures: 0,
            limit: limit.max(1),
            base: settings.backoff_base,
            max: settings.backoff_max,
            retry_after_max: settings.retry_after_max,
        }
    }

    /// The attempt made progress: the next failure counts as the first again.
    pub fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Count a failure. Returns the delay before the next attempt, or `None` when the limit
    /// is reached and the caller should give up.
    pub fn failed(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        self.failures += 1;
        if self.failures >= self.limit {
            return None;
        }
        Some(match retry_after {
            Some(delay) => delay.min(self.retry_after_max),
            None => backoff_delay(self.failures, self.base, self.max),
        })
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_give_up_after_the_limit_and_cap_retry_after() {
        let settings = crate::settings::EngineSettings::default();
        let mut retries = Retries::new(&settings, 3);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            retries.failed(Some(hour)),
            Some(settings.retry_after_max.min(hour))
        );
        assert!(retries.failed(None).is_some());
        assert_eq!(retries.failed(None), None);
        assert_eq!(retries.failures(), 3);
        retries.progressed();
        assert_eq!(retries.failed(Some(Duration::ZERO)), Some(Duration::ZERO));
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(503), StatusClass::Transient);
        assert_eq!(classify_status(429), StatusClass::RateLimited);
        assert_eq!(
            classify_status(401),
            StatusClass::Permanent(ErrorKind::Auth)
        );
        assert_eq!(
            classify_status(404),
            StatusClass::Permanent(ErrorKind::NotFound)
        );
        assert_eq!(
            classify_status(400),
            StatusClass::Permanent(ErrorKind::Fatal)
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..50 {
            let first = backoff_delay(1, base, max);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let late = backoff_delay(30, base, max);
            assert!(late >= Duration::from_secs(1) && late <= max, "{late:?}");
        }
    }
}
