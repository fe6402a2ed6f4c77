//! When a document's pending broadcast goes out (pure).
//!
//! The reference holds every write for a fixed 50 ms window, which costs every write
//! 50 ms of latency even on a quiet document. Here a document may flush at once up to
//! [`IMMEDIATE_FLUSHES`] times per window; only past that, under load, are writes coalesced
//! until the window ends. A quiet document's writes go out immediately, a busy one's at most a
//! few frames per field per window, and nothing is held longer than the window.

use std::time::{Duration, Instant};

/// Flushes a document may make at once within one window before writes are coalesced.
pub const IMMEDIATE_FLUSHES: u32 = 4;

#[derive(Debug, Clone)]
pub struct FlushPolicy {
    window: Duration,
    window_start: Option<Instant>,
    flushes: u32,
}

impl FlushPolicy {
    pub fn new(window: Duration) -> Self {
        FlushPolicy { window, window_start: None, flushes: 0 }
    }

    /// When to flush a broadcast that became pending at `now` (when none was scheduled).
    pub fn due(&self, now: Instant) -> Instant {
        match self.window_start {
            Some(start) if now < start + self.window && self.flushes >= IMMEDIATE_FLUSHES => start + self.window,
            _ => now,
        }
    }

    /// Records a flush made at `now`.
    pub fn flushed(&mut self, now: Instant) {
        match self.window_start {
            Some(start) if now < start + self.window => self.flushes += 1,
            _ => {
                self.window_start = Some(now);
                self.flushes = 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(50);

    #[test]
    fn a_quiet_document_flushes_at_once() {
        let mut policy = FlushPolicy::new(WINDOW);
        let t0 = Instant::now();
        assert_eq!(policy.due(t0), t0);
        policy.flushed(t0);
        let later = t0 + Duration::from_millis(200);
        assert_eq!(policy.due(later), later);
    }

    #[test]
    fn a_busy_document_coalesces_until_the_window_ends() {
        let mut policy = FlushPolicy::new(WINDOW);
        let t0 = Instant::now();
        for i in 0..IMMEDIATE_FLUSHES {
            let now = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(policy.due(now), now, "flush {i} goes out at once");
            policy.flushed(now);
        }
        let now = t0 + Duration::from_millis(10);
        assert_eq!(policy.due(now), t0 + WINDOW, "held, but never past the window");
        policy.flushed(t0 + WINDOW);
        // A new window begins with the held flush.
        let next = t0 + WINDOW + Duration::from_millis(1);
        assert_eq!(policy.due(next), next);
    }
}
