//! Encode once, send to many. Every live subscriber of a store receives the same committed
//! batch — the very same `Arc<[Event]>` from the fan-out — and, within one protocol, mostly the
//! same frames for it. [`SharedFrames`] remembers the frames encoded for recent batches so that
//! the first subscriber encodes them and the others reuse the bytes (a reference count, not a
//! copy).
//!
//! A batch is identified by its allocation, held by a `Weak` so that the address cannot be
//! reused while the entry lives; the frames also depend on whatever differs per subscriber (a
//! request id, the backend id), which the caller passes as the `variant`. Entries are dropped
//! oldest first past a fixed number: a subscriber that lags that far behind just encodes again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use axum::extract::ws::Utf8Bytes;

use crate::eventlog::Event;

/// Batches remembered at once. Subscribers of a busy store are at most a few batches apart;
/// a lagging one re-encodes, which is correct, only slower.
const REMEMBERED_BATCHES: usize = 1024;

/// Frames already encoded for recent batches. Cheap to share; one per server.
#[derive(Default)]
pub struct SharedFrames {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<(usize, Box<str>), Entry>,
    order: VecDeque<(usize, Box<str>)>,
}

struct Entry {
    batch: Weak<[Event]>,
    frames: Arc<[Utf8Bytes]>,
}

impl SharedFrames {
    /// The frames for `events` in `variant`, encoding them with `encode` only if no subscriber
    /// did already.
    pub fn get_or_encode(
        &self,
        events: &Arc<[Event]>,
        variant: &str,
        encode: impl FnOnce(&[Event]) -> Vec<String>,
    ) -> Arc<[Utf8Bytes]> {
        let key = (Arc::as_ptr(events) as *const Event as usize, Box::<str>::from(variant));
        if let Some(entry) = self.entries.lock().expect("shared frames lock").by_key.get(&key)
            && entry.batch.upgrade().is_some_and(|batch| Arc::ptr_eq(&batch, events))
        {
            return entry.frames.clone();
        }
        // Encoded outside the lock: two subscribers may race to encode the same batch, and then
        // both results are equal.
        let frames: Arc<[Utf8Bytes]> = encode(events).into_iter().map(Utf8Bytes::from).collect();
        let mut entries = self.entries.lock().expect("shared frames lock");
        let Entries { by_key, order } = &mut *entries;
        let entry = Entry { batch: Arc::downgrade(events), frames: frames.clone() };
        if by_key.insert(key.clone(), entry).is_none() {
            order.push_back(key);
            if order.len() > REMEMBERED_BATCHES
                && let Some(oldest) = order.pop_front()
            {
                by_key.remove(&oldest);
            }
        }
        // A batch nobody holds any more is never asked for again: its frames (megabytes, for
        // large events) go now, not REMEMBERED_BATCHES batches later. Batches are let go of
        // roughly in commit order, so looking at the oldest entries is enough.
        while let Some(oldest) = order.front()
            && by_key.get(oldest).is_none_or(|entry| entry.batch.strong_count() == 0)
        {
            let oldest = order.pop_front().expect("looked at above");
            by_key.remove(&oldest);
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{ChangePos, EventBody, SeqNum};

    fn batch(seq: u64) -> Arc<[Event]> {
        let body = EventBody {
            name: "e".into(),
            args: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            client_id: "c".into(),
            session_id: "s".into(),
        };
        Arc::from(vec![Event {
            seq: SeqNum(seq),
            parent_seq: SeqNum(seq - 1),
            body,
            created_at: "t".into(),
            change_pos: ChangePos(seq),
        }])
    }

    #[test]
    fn encodes_each_batch_once_per_variant() {
        let shared = SharedFrames::default();
        let events = batch(1);
        let mut encoded = 0;
        let mut encode = |variant: &str| {
            shared.get_or_encode(&events, variant, |e| {
                encoded += 1;
                vec![format!("{variant}:{}", e[0].seq.0)]
            })
        };
        let first = encode("a");
        let again = encode("a");
        let other = encode("b");
        assert_eq!(encoded, 2);
        assert_eq!(first[0].as_str(), "a:1");
        assert!(std::ptr::eq(first[0].as_str(), again[0].as_str()), "the bytes are shared, not copied");
        assert_eq!(other[0].as_str(), "b:1");
    }

    #[test]
    fn a_new_batch_at_a_freed_address_is_encoded_anew() {
        let shared = SharedFrames::default();
        for seq in 1..=3 {
            // Each batch is dropped before the next is made, so the allocator may reuse the
            // address; the entry's Weak keeps that from returning stale frames.
            let events = batch(seq);
            let frames = shared.get_or_encode(&events, "v", |e| vec![e[0].seq.0.to_string()]);
            assert_eq!(frames[0].as_str(), seq.to_string());
        }
    }

    #[test]
    fn forgets_the_frames_of_batches_nobody_holds() {
        let shared = SharedFrames::default();
        let first = batch(1);
        shared.get_or_encode(&first, "v", |_| vec!["x".repeat(1000)]);
        drop(first);
        let second = batch(2);
        shared.get_or_encode(&second, "v", |_| vec![String::new()]);
        let entries = shared.entries.lock().unwrap();
        assert_eq!(entries.by_key.len(), 1, "only the live batch's frames are kept");
        assert_eq!(entries.order.len(), 1);
    }

    #[test]
    fn forgets_the_oldest_batches() {
        let shared = SharedFrames::default();
        let kept: Vec<_> = (1..=REMEMBERED_BATCHES as u64 + 10).map(batch).collect();
        for events in &kept {
            shared.get_or_encode(events, "v", |_| vec![String::new()]);
        }
        assert_eq!(shared.entries.lock().unwrap().by_key.len(), REMEMBERED_BATCHES);
    }
}
