//! Token-bucket rate limiting with time passed in.
//!
//! A dozen lines of arithmetic with `now` as an argument keeps the room core
//! deterministic under a simulated clock, which a limiter that reads its own
//! clock would not.

use std::time::{Duration, Instant};

/// Allows `burst` events at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        Self {
            capacity: f64::from(burst.max(1)),
            per_second: per_second.max(f64::MIN_POSITIVE),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token, or returns how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 2.0, start);
        for _ in 0..3 {
            assert!(bucket.try_take(start).is_ok());
        }
        let wait = bucket.try_take(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.try_take(start + Duration::from_millis(499)).is_err());
        assert!(bucket.try_take(start + Duration::from_secs(1)).is_ok());
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        let allowed = (0..10).filter(|_| bucket.try_take(later).is_ok()).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(1, 1.0, start);
        assert!(bucket.try_take(start).is_ok());
        assert!(
            bucket
                .try_take(start.checked_sub(Duration::from_secs(5)).unwrap())
                .is_err()
        );
        assert!(bucket.try_take(start + Duration::from_secs(1)).is_ok());
    }
}
