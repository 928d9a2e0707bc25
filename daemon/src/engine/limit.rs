//! Bandwidth limits: a token bucket that receivers pass every chunk through. One bucket is
//! global (shared by every download), one per job; both can change rate at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket; a rate of 0 means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    rate: AtomicU64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may pass now; negative means debt that callers wait out.
    tokens: f64,
    last: Instant,
}

/// The most a bucket saves up while idle: a tenth of a second at its rate.
const BURST: f64 = 0.1;

impl RateLimiter {
    /// A limiter with `bytes_per_second` (`None`: unlimited).
    pub fn new(bytes_per_second: Option<u64>) -> Self {
        RateLimiter {
            rate: AtomicU64::new(bytes_per_second.unwrap_or(0)),
            state: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// Change the rate (`None`: unlimited).
    pub fn set_rate(&self, bytes_per_second: Option<u64>) {
        self.rate
            .store(bytes_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    /// The rate, if limited.
    pub fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Ordering::Relaxed)).filter(|r| *r > 0)
    }

    /// How long the caller must wait before `bytes` more may pass (and account for them).
    fn reserve(&self, bytes: u64) -> Duration {
        let Some(rate) = self.rate() else {
            return Duration::ZERO;
        };
        let rate = rate as f64;
        let mut bucket = self.state.lock().expect("rate limiter lock");
        let now = Instant::now();
        let elapsed = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate * BURST);
        bucket.tokens -= bytes as f64;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }

    /// Wait until `bytes` may pass.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_rate_over_time() {
        let limiter = RateLimiter::new(Some(4_000_000));
        let start = Instant::now();
        for _ in 0..100 {
            limiter.acquire(20_000).await;
        }
        // 2 MB at 4 MB/s: 0.5 s, minus at most one burst (0.1 s).
        let elapsed = start.elapsed().as_secs_f64();
        assert!((0.38..0.7).contains(&elapsed), "{elapsed}");
    }

    #[tokio::test]
    async fn unlimited_never_waits_and_rate_can_change() {
        let limiter = RateLimiter::new(None);
        assert_eq!(limiter.reserve(u64::MAX / 2), Duration::ZERO);
        limiter.set_rate(Some(1000));
        assert!(limiter.reserve(2000) > Duration::from_millis(500));
        limiter.set_rate(None);
        assert_eq!(limiter.reserve(1 << 40), Duration::ZERO);
    }
}
