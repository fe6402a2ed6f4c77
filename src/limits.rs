//! Limits shared by every protocol's connection loop.

use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// What the limiter says about one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: refuse it with the protocol's "slow down" answer.
    OverLimit,
    /// Over the rate for longer than the grace period: close the connection.
    Flooding,
}

/// A pause in refusals this long ends a flood: the client slowed down.
const QUIET_ENDS_A_FLOOD: Duration = Duration::from_secs(1);

/// Token bucket for one connection's incoming messages: `per_second` sustained, bursts up to
/// one second's worth. Cheap enough to consult on every frame.
///
/// A client told to slow down that does not, and keeps being refused without a quiet second
/// for longer than the grace period, is a flooder: answering each of its messages costs more
/// than it is worth, so the connection is closed.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    tokens: f64,
    last: Instant,
    grace: Duration,
    /// The current flood: when its first refusal was, and its latest.
    flood: Option<(Instant, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: u32, grace: Duration) -> RateLimiter {
        let per_second = f64::from(per_second);
        RateLimiter { per_second, tokens: per_second, last: Instant::now(), grace, flood: None }
    }

    /// `limits.messages_per_second` with `limits.flood_grace_secs`.
    pub fn from_limits(limits: &LimitsConfig) -> RateLimiter {
        RateLimiter::new(limits.messages_per_second, Duration::from_secs(limits.flood_grace_secs))
    }

    /// Takes one message's token, or says how far over the limit the connection is.
    pub fn check(&mut self) -> Verdict {
        self.check_at(Instant::now())
    }

    fn check_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        let since = match self.flood {
            Some((since, latest)) if now.saturating_duration_since(latest) < QUIET_ENDS_A_FLOOD => since,
            _ => now,
        };
        self.flood = Some((since, now));
        if now.saturating_duration_since(since) > self.grace { Verdict::Flooding } else { Verdict::OverLimit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses_then_refills() {
        let mut limiter = RateLimiter::new(10, Duration::from_secs(5));
        let start = limiter.last;
        assert_eq!((0..10).filter(|_| limiter.check_at(start) == Verdict::Allowed).count(), 10);
        assert_eq!(limiter.check_at(start), Verdict::OverLimit);
        assert_eq!(limiter.check_at(start + Duration::from_millis(100)), Verdict::Allowed);
        assert_eq!(limiter.check_at(start + Duration::from_millis(100)), Verdict::OverLimit);
        let later = start + Duration::from_secs(5);
        assert_eq!((0..20).filter(|_| limiter.check_at(later) == Verdict::Allowed).count(), 10);
    }

    #[test]
    fn refusals_without_a_quiet_second_past_the_grace_period_are_flooding() {
        let mut limiter = RateLimiter::new(10, Duration::from_secs(3));
        let start = limiter.last;
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Twenty messages every 100 ms: two allowed, the rest refused, the flood goes on.
        let mut verdicts = Vec::new();
        for tick in 0..=40 {
            verdicts.extend((0..20).map(|_| limiter.check_at(at(tick * 100))));
        }
        let first_flooding = verdicts.iter().position(|v| *v == Verdict::Flooding).expect("flooding");
        assert!(first_flooding > 30 * 20, "not before the 3 s grace: {first_flooding}");
        assert!(verdicts.contains(&Verdict::Allowed) && verdicts.contains(&Verdict::OverLimit));

        // Slowing down for a second ends the flood: the next refusal starts a new grace period.
        let mut limiter = RateLimiter::new(10, Duration::from_secs(3));
        for tick in 0..25 {
            for _ in 0..20 {
                limiter.check_at(at(tick * 100));
            }
        }
        let after_pause = at(2400 + 1500);
        assert_eq!((0..40).filter(|_| limiter.check_at(after_pause) == Verdict::Flooding).count(), 0);
        assert_eq!(limiter.check_at(at(2400 + 1500 + 3100)), Verdict::Allowed);
    }
}
