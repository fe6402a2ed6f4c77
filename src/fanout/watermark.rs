//! Which positions of the sequenced change log an instance has already handed to its hub.
//!
//! Every committed batch takes the next change-log position, and positions become visible in
//! order (see `migrations/postgres`, `change_log_head`). So an instance can tell what the
//! fan-out failed to bring: a position that is committed but was never seen. This records what
//! was seen as "everything up to N" plus the positions seen beyond N, which arrive out of order
//! when several instances publish at once.

use std::collections::BTreeSet;

use crate::eventlog::ChangePos;

#[derive(Debug, Clone)]
pub struct ChangeWatermark {
    /// Every position up to here was delivered, or is known not to exist (a reset removed it).
    complete: u64,
    /// Positions beyond `complete` that were delivered.
    beyond: BTreeSet<u64>,
}

impl ChangeWatermark {
    /// Starts with everything up to `position` taken as delivered: an instance starting up has no
    /// subscriber that could have missed it.
    pub fn new(position: ChangePos) -> ChangeWatermark {
        ChangeWatermark { complete: position.0, beyond: BTreeSet::new() }
    }

    /// Records `position` as delivered. Returns false when it already was.
    pub fn saw(&mut self, position: ChangePos) -> bool {
        let position = position.0;
        if position <= self.complete || !self.beyond.insert(position) {
            return false;
        }
        self.absorb();
        true
    }

    #[cfg(test)]
    fn has_seen(&self, position: ChangePos) -> bool {
        position.0 <= self.complete || self.beyond.contains(&position.0)
    }

    /// Every position up to this one was delivered or does not exist.
    pub fn complete_up_to(&self) -> ChangePos {
        ChangePos(self.complete)
    }

    /// Declares every position up to `position` accounted for (after reading the change log up to
    /// there and delivering what it held).
    pub fn complete_to(&mut self, position: ChangePos) {
        if position.0 <= self.complete {
            return;
        }
        self.complete = position.0;
        self.beyond = self.beyond.split_off(&(position.0 + 1));
        self.absorb();
    }

    /// Positions seen beyond the complete prefix.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.beyond.len()
    }

    fn absorb(&mut self) {
        while self.beyond.first() == Some(&(self.complete + 1)) {
            self.beyond.pop_first();
            self.complete += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_positions_advance_the_complete_prefix() {
        let mut w = ChangeWatermark::new(ChangePos(10));
        assert!(!w.saw(ChangePos(9)), "before the start counts as seen");
        assert!(w.saw(ChangePos(11)));
        assert!(w.saw(ChangePos(12)));
        assert!(!w.saw(ChangePos(12)));
        assert_eq!(w.complete_up_to(), ChangePos(12));
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn a_hole_holds_the_prefix_until_it_is_filled() {
        let mut w = ChangeWatermark::new(ChangePos(0));
        assert!(w.saw(ChangePos(2)));
        assert!(w.saw(ChangePos(3)));
        assert_eq!(w.complete_up_to(), ChangePos(0));
        assert!(w.has_seen(ChangePos(3)) && !w.has_seen(ChangePos(1)));
        assert!(w.saw(ChangePos(1)));
        assert_eq!(w.complete_up_to(), ChangePos(3));
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn completing_skips_holes_and_keeps_what_lies_beyond() {
        let mut w = ChangeWatermark::new(ChangePos(0));
        for p in [2, 5, 7] {
            w.saw(ChangePos(p));
        }
        // The change log was read up to 4: 1, 3 and 4 were delivered from it or do not exist.
        w.complete_to(ChangePos(4));
        assert_eq!(w.complete_up_to(), ChangePos(5), "5 was seen already");
        assert_eq!(w.pending(), 1);
        assert!(w.has_seen(ChangePos(7)) && !w.has_seen(ChangePos(6)));
        w.complete_to(ChangePos(3));
        assert_eq!(w.complete_up_to(), ChangePos(5), "never goes back");
    }
}
