//! What every published event carries, and how a subscriber counts what it received.

use serde::{Deserialize, Serialize};

use crate::report::Latency;

/// An event's identity and send time: writer `w`'s `n`-th event (from 0), sent at `t` µs since
/// the Unix epoch. Travels as the JSON object `{"w":…,"n":…,"t":…}` inside the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub w: u32,
    pub n: u64,
    pub t: u64,
}

impl Mark {
    pub fn to_json(self) -> String {
        format!(r#"{{"w":{},"n":{},"t":{}}}"#, self.w, self.n, self.t)
    }
}

/// One subscriber's account of what it received. Each writer's events reach a subscriber in
/// the writer's order (one store is one ordered log, and a writer has one push in flight), so a
/// number below the next expected one is a duplicate and a number above it skips a loss.
#[derive(Default)]
pub struct Tally {
    next: Vec<u64>,
    pub deliveries: u64,
    pub frames: u64,
    pub duplicated: u64,
    pub skipped: u64,
    pub latency: Latency,
    /// When the last mark arrived (µs since the epoch).
    pub last_arrival: u64,
}

impl Tally {
    pub fn frame(&mut self) {
        self.frames += 1;
    }

    pub fn receive(&mut self, mark: Mark, now: u64) {
        self.deliveries += 1;
        self.last_arrival = now;
        let w = mark.w as usize;
        if self.next.len() <= w {
            self.next.resize(w + 1, 0);
        }
        let next = &mut self.next[w];
        if mark.n < *next {
            self.duplicated += 1;
            return;
        }
        self.skipped += mark.n - *next;
        *next = mark.n + 1;
        self.latency.record(now.saturating_sub(mark.t));
    }

    /// Events of writer `w` received so far, counting each once (assuming no skips).
    pub fn received_from(&self, w: u32) -> u64 {
        self.next.get(w as usize).copied().unwrap_or(0)
    }

    /// Acknowledged events this subscriber never got: skipped ones plus each writer's tail.
    pub fn lost(&self, acknowledged: &[u64]) -> u64 {
        self.skipped
            + acknowledged
                .iter()
                .enumerate()
                .map(|(w, &acked)| acked.saturating_sub(self.received_from(w as u32)))
                .sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(w: u32, n: u64) -> Mark {
        Mark { w, n, t: 0 }
    }

    #[test]
    fn counts_duplicates_skips_and_missing_tails() {
        let mut tally = Tally::default();
        for m in [mark(0, 0), mark(0, 1), mark(0, 1), mark(1, 0), mark(0, 3)] {
            tally.receive(m, 10);
        }
        assert_eq!(tally.deliveries, 5);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.skipped, 1);
        // Writer 0 had 5 acknowledged (4 missing: #2 skipped, #4 never came); writer 1 had 2.
        assert_eq!(tally.lost(&[5, 2]), 3);
    }
}
