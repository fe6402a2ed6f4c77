//! Limits shared by every protocol's connection loop.

use std::time::Instant;

/// Token bucket for one connection's incoming messages: `per_second` sustained, bursts up to
/// one second's worth. Cheap enough to consult on every frame.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        let per_second = f64::from(per_second);
        RateLimiter { per_second, tokens: per_second, last: Instant::now() }
    }

    /// Takes one message's token; `false` means the message is over the limit.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_a_burst_then_refuses_then_refills() {
        let mut limiter = RateLimiter::new(10);
        let start = limiter.last;
        assert_eq!((0..10).filter(|_| limiter.allow_at(start)).count(), 10);
        assert!(!limiter.allow_at(start));
        assert!(limiter.allow_at(start + Duration::from_millis(100)));
        assert!(!limiter.allow_at(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(5);
        assert_eq!((0..20).filter(|_| limiter.allow_at(later)).count(), 10);
    }
}
