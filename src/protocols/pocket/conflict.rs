//! The conflict rules of `@pocket/sync`, which the reference server runs on every push of a
//! document it already holds, and the client runs on `conflicts` and during pulls.

use super::document::{DocumentMeta, VClock, parse_rev};

/// The result of comparing two vector clocks. As in the reference, **equal clocks compare as
/// `Concurrent`** (rule 2 of [`detect_conflict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VClockOrder {
    /// `a` happened before `b` (b dominates).
    Before,
    /// `a` happened after `b` (a strictly dominates).
    After,
    /// Neither dominates, or the clocks are equal.
    Concurrent,
}

/// Compares two clocks entry by entry; a missing entry counts as 0.
pub fn compare_vclocks(a: &VClock, b: &VClock) -> VClockOrder {
    let mut a_ahead = false;
    let mut b_ahead = false;
    for node in a.keys().chain(b.keys()) {
        let (x, y) = (a.get(node).copied().unwrap_or(0), b.get(node).copied().unwrap_or(0));
        a_ahead |= x > y;
        b_ahead |= y > x;
    }
    match (a_ahead, b_ahead) {
        (true, false) => VClockOrder::After,
        (false, true) => VClockOrder::Before,
        _ => VClockOrder::Concurrent,
    }
}

/// `detectConflict(a, b)`, symmetric:
/// 1. same `_rev` (both missing included): no conflict;
/// 2. both have `_vclock`: conflict iff the clocks are concurrent (equal clocks included);
/// 3. only one has a `_rev`: conflict;
/// 4. both revs must parse as `n-suffix`, else no conflict; conflict iff the generations are equal.
pub fn detect_conflict(a: &DocumentMeta, b: &DocumentMeta) -> bool {
    if a.rev == b.rev {
        return false;
    }
    if let (Some(va), Some(vb)) = (&a.vclock, &b.vclock) {
        return compare_vclocks(va, vb) == VClockOrder::Concurrent;
    }
    let (Some(ra), Some(rb)) = (&a.rev, &b.rev) else {
        return true;
    };
    match (parse_rev(ra), parse_rev(rb)) {
        (Some((na, _)), Some((nb, _))) => na == nb,
        _ => false,
    }
}

/// `ConflictStrategy` minus `merge`, which needs the document bodies and is left to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    ServerWins,
    ClientWins,
    #[default]
    LastWriteWins,
}

impl Strategy {
    /// The reference's configuration names: `server-wins`, `client-wins`, `last-write-wins`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "server-wins" => Some(Self::ServerWins),
            "client-wins" => Some(Self::ClientWins),
            "last-write-wins" => Some(Self::LastWriteWins),
            _ => None,
        }
    }
}

/// Who wins. On the server, `Local` is the pushed (client) document and `Remote` the server's
/// copy; on the client it is the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winner {
    Local,
    Remote,
}

/// `ConflictResolver(strategy).resolve({localDocument, remoteDocument})` for the three
/// non-merging strategies. `server-wins` always answers `Remote`, whichever side runs it.
///
/// Last-write-wins: the larger `_updatedAt` wins (missing = 0); on a tie, local wins only if
/// both have a `_vclock` and local's strictly dominates.
pub fn resolve(strategy: Strategy, local: &DocumentMeta, remote: &DocumentMeta) -> Winner {
    match strategy {
        Strategy::ServerWins => Winner::Remote,
        Strategy::ClientWins => Winner::Local,
        Strategy::LastWriteWins => {
            let (l, r) = (local.updated_at.unwrap_or(0.0), remote.updated_at.unwrap_or(0.0));
            if l > r {
                Winner::Local
            } else if r > l {
                Winner::Remote
            } else {
                match (&local.vclock, &remote.vclock) {
                    (Some(lv), Some(rv)) if compare_vclocks(lv, rv) == VClockOrder::After => Winner::Local,
                    _ => Winner::Remote,
                }
            }
        }
    }
}
