//! Fan-out: how committed batches reach live subscribers.
//!
//! Two halves. The [`Hub`] is this process's registry of live subscribers, keyed by store, each
//! with its own bounded queue. A [`FanOut`] carries every committed batch to the hubs of all
//! instances: [`LocalFanOut`] hands it straight to the local hub (one instance);
//! [`RedisFanOut`] also publishes it through Redis so that every instance's hub receives it.
//!
//! The fan-out is only the fast path. Subscribers never trust it for completeness: they detect a
//! gap (a batch whose previous head is beyond their cursor) and fill it from storage, and they
//! drop what they already have. That is what makes delivery exact even when a transport loses,
//! repeats or reorders messages. What a lossy transport cannot do by itself is tell a subscriber
//! that *something* happened when the message that would have said so is lost: the Redis fan-out
//! covers that with the sequenced change log (see [`RedisFanOut`]).
//!
//! # Ephemeral messages
//!
//! Some things are broadcast but never stored: presence (SyncKit awareness), cursors, "typing…".
//! [`FanOut::publish_ephemeral`] sends bytes on a *topic* to the subscribers of that topic on
//! every instance, this one included; [`FanOut::subscribe_ephemeral`] subscribes to a topic on
//! this instance. Delivery is best effort and at most once: a message published while Redis is
//! unreachable reaches only this instance's subscribers, and a subscriber that falls behind is
//! told how many it missed ([`Missed`]). Protocols name their topics `<protocol>:<…>` (for
//! example `synckit:awareness:<document>`) so they never collide, and put whatever they need to
//! recognise their own messages (a connection id) in the payload.

mod ephemeral;
mod redis;
mod watermark;
mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::eventlog::{CommittedBatch, SeqNum, StoreId};
use crate::metrics::{Metrics, SlowConsumer};

pub use ephemeral::{EphemeralFeed, Missed};
pub use redis::{RedisFanOut, RedisOptions};

/// What travels from a committing instance to the subscribers of a store.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveMessage {
    Batch(CommittedBatch),
    /// The store was reset: its events are gone and it has a new backend id.
    Reset {
        store: StoreId,
        backend_id: Arc<str>,
    },
    /// The store's events up to `head` are committed, but they travel separately: a subscriber
    /// behind `head` reads them from storage. Stands for a batch too large to carry through
    /// Redis, or one that the transport lost and the change log revealed.
    Advanced {
        store: StoreId,
        backend_id: Arc<str>,
        head: SeqNum,
    },
}

impl LiveMessage {
    pub fn store(&self) -> StoreId {
        match self {
            LiveMessage::Batch(batch) => batch.store,
            LiveMessage::Reset { store, .. } | LiveMessage::Advanced { store, .. } => *store,
        }
    }
}

/// Carries committed batches (and ephemeral messages) to the hubs of every instance.
pub trait FanOut: Send + Sync + 'static {
    /// Called after a batch is committed, in commit order per store. Must not block.
    fn publish(&self, message: Arc<LiveMessage>);

    /// Sends `payload` to the subscribers of `topic` on every instance, this one included. Never
    /// stored; best effort (see the module docs). Must not block.
    fn publish_ephemeral(&self, topic: &str, payload: Bytes);

    /// Subscribes to `topic` on this instance: every ephemeral message published on it from now
    /// on, by any instance. Dropping the feed unsubscribes.
    fn subscribe_ephemeral(&self, topic: &str) -> EphemeralFeed;

    /// Why the fan-out is degraded, for `/health/ready`; `None` when healthy.
    fn problem(&self) -> Option<String> {
        None
    }
}

/// Single-instance fan-out: straight into this process's hub.
pub struct LocalFanOut {
    hub: Arc<Hub>,
}

impl LocalFanOut {
    pub fn new(hub: Arc<Hub>) -> LocalFanOut {
        LocalFanOut { hub }
    }
}

impl FanOut for LocalFanOut {
    fn publish(&self, message: Arc<LiveMessage>) {
        self.hub.deliver(&message);
    }

    fn publish_ephemeral(&self, topic: &str, payload: Bytes) {
        self.hub.deliver_ephemeral(topic, payload);
    }

    fn subscribe_ephemeral(&self, topic: &str) -> EphemeralFeed {
        self.hub.subscribe_ephemeral(topic)
    }
}

/// The live subscribers of this process: of stores, and of ephemeral topics.
pub struct Hub {
    stores: Mutex<HashMap<StoreId, Vec<Slot>>>,
    next_slot: AtomicU64,
    queue_len: usize,
    queue_bytes: usize,
    topics: Arc<ephemeral::Topics>,
    metrics: Metrics,
}

struct Slot {
    id: u64,
    queue: mpsc::Sender<Queued>,
    state: Arc<SlotState>,
}

/// What a slot and its feed share.
#[derive(Default)]
struct SlotState {
    lagged: AtomicBool,
    /// Bytes of the batches in the queue, by [`CommittedBatch::approx_bytes`].
    queued_bytes: AtomicUsize,
}

/// A message in a subscriber's queue, with what it weighs there.
struct Queued {
    message: Arc<LiveMessage>,
    bytes: usize,
}

impl LiveMessage {
    /// What the message costs a subscriber's queue: a batch its events' bytes, a notice nothing
    /// worth counting (it holds no events).
    fn queued_bytes(&self) -> usize {
        match self {
            LiveMessage::Batch(batch) => batch.approx_bytes(),
            LiveMessage::Reset { .. } | LiveMessage::Advanced { .. } => 0,
        }
    }
}

impl Hub {
    /// `queue_len` bounds how many messages one subscriber may have waiting, `queue_bytes` how
    /// many bytes of events.
    pub fn new(queue_len: usize, queue_bytes: usize, metrics: Metrics) -> Arc<Hub> {
        Arc::new(Hub {
            stores: Mutex::new(HashMap::new()),
            next_slot: AtomicU64::new(0),
            queue_len,
            queue_bytes,
            topics: ephemeral::Topics::new(queue_len),
            metrics,
        })
    }

    /// Subscribes to an ephemeral topic in this process (see [`FanOut::subscribe_ephemeral`]).
    pub fn subscribe_ephemeral(&self, topic: &str) -> EphemeralFeed {
        self.topics.subscribe(topic)
    }

    /// Hands an ephemeral message to this process's subscribers of `topic`.
    pub fn deliver_ephemeral(&self, topic: &str, payload: Bytes) {
        self.topics.deliver(topic, payload);
    }

    /// Registers a live subscriber of `store`. It receives every message delivered from now on,
    /// until it falls `queue_len` messages or `queue_bytes` bytes behind.
    pub fn register(self: &Arc<Self>, store: StoreId) -> LiveFeed {
        let (queue, receiver) = mpsc::channel(self.queue_len);
        let state = Arc::new(SlotState::default());
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let slot = Slot { id, queue, state: state.clone() };
        self.stores.lock().expect("hub lock").entry(store).or_default().push(slot);
        LiveFeed { hub: self.clone(), store, id, receiver, state }
    }

    /// Queues `message` for every subscriber of its store. A subscriber whose queue is full (in
    /// messages or in bytes) is dropped and told so when it next reads: it is never skipped
    /// silently. One batch larger than the byte limit still reaches a subscriber that has
    /// nothing else queued, so that no batch is too large to deliver.
    pub fn deliver(&self, message: &Arc<LiveMessage>) {
        let store = message.store();
        let mut stores = self.stores.lock().expect("hub lock");
        let Some(slots) = stores.get_mut(&store) else { return };
        // Weighed once, here, for every subscriber.
        let bytes = message.queued_bytes();
        slots.retain(|slot| {
            let queued = slot.state.queued_bytes.load(Ordering::Acquire);
            if queued != 0 && queued.saturating_add(bytes) > self.queue_bytes {
                slot.state.lagged.store(true, Ordering::Release);
                return false;
            }
            // Counted before it is queued, so that the feed never takes away more than was added.
            slot.state.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
            match slot.queue.try_send(Queued { message: message.clone(), bytes }) {
                Ok(()) => true,
                Err(error) => {
                    slot.state.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                    if matches!(error, mpsc::error::TrySendError::Full(_)) {
                        slot.state.lagged.store(true, Ordering::Release);
                    }
                    false
                }
            }
        });
        if slots.is_empty() {
            stores.remove(&store);
        }
    }

    /// Live subscribers of `store` in this process.
    pub fn subscriber_count(&self, store: StoreId) -> usize {
        self.stores.lock().expect("hub lock").get(&store).map_or(0, Vec::len)
    }

    fn unregister(&self, store: StoreId, id: u64) {
        let mut stores = self.stores.lock().expect("hub lock");
        if let Some(slots) = stores.get_mut(&store) {
            slots.retain(|slot| slot.id != id);
            if slots.is_empty() {
                stores.remove(&store);
            }
        }
    }
}

/// Why a live feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedEnded {
    #[error("the subscriber fell too far behind the live stream")]
    Lagged,
}

/// One subscriber's queue of live messages. Dropping it unregisters the subscriber.
pub struct LiveFeed {
    hub: Arc<Hub>,
    store: StoreId,
    id: u64,
    receiver: mpsc::Receiver<Queued>,
    state: Arc<SlotState>,
}

impl LiveFeed {
    /// The next message; after a lag, the queued messages first, then [`FeedEnded::Lagged`].
    pub async fn recv(&mut self) -> Result<Arc<LiveMessage>, FeedEnded> {
        match self.receiver.recv().await {
            Some(Queued { message, bytes }) => {
                self.state.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                Ok(message)
            }
            None => {
                debug_assert!(self.has_lagged(), "only a lag drops a registered slot");
                self.hub.metrics.slow_consumer_disconnected(SlowConsumer::Lagged);
                Err(FeedEnded::Lagged)
            }
        }
    }

    /// Whether the hub has dropped this feed for lagging (messages may still be queued).
    pub fn has_lagged(&self) -> bool {
        self.state.lagged.load(Ordering::Acquire)
    }

    /// Bytes of the batches waiting in this feed.
    pub fn queued_bytes(&self) -> usize {
        self.state.queued_bytes.load(Ordering::Acquire)
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.hub.unregister(self.store, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset(store: i64) -> Arc<LiveMessage> {
        Arc::new(LiveMessage::Reset { store: StoreId(store), backend_id: "b".into() })
    }

    /// A one-event batch of store 1 whose args are `args_len` bytes.
    fn batch(seq: u64, args_len: usize) -> Arc<LiveMessage> {
        use crate::eventlog::{ChangePos, Event, EventBody};
        let args = serde_json::value::RawValue::from_string(format!("\"{}\"", "x".repeat(args_len - 2))).unwrap();
        let event = Event {
            seq: SeqNum(seq),
            parent_seq: SeqNum(seq - 1),
            body: EventBody { name: "e".into(), args, client_id: "c".into(), session_id: "s".into() },
            created_at: "2025-01-01T00:00:00.000Z".into(),
            change_pos: ChangePos(seq),
        };
        let batch = CommittedBatch {
            store: StoreId(1),
            backend_id: "b".into(),
            prev_head: SeqNum(seq - 1),
            events: Arc::from(vec![event]),
        };
        Arc::new(LiveMessage::Batch(batch))
    }

    fn weight(message: &LiveMessage) -> usize {
        match message {
            LiveMessage::Batch(batch) => batch.approx_bytes(),
            _ => 0,
        }
    }

    #[tokio::test]
    async fn delivers_only_to_the_store_subscribers() {
        let hub = Hub::new(8, usize::MAX, Metrics::new());
        let mut a = hub.register(StoreId(1));
        let mut b = hub.register(StoreId(2));
        hub.deliver(&reset(1));
        assert_eq!(a.recv().await.unwrap().store(), StoreId(1));
        assert!(b.receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn full_queue_ends_the_feed_after_what_was_queued() {
        let hub = Hub::new(2, usize::MAX, Metrics::new());
        let mut feed = hub.register(StoreId(1));
        for _ in 0..3 {
            hub.deliver(&reset(1));
        }
        assert!(feed.has_lagged());
        assert_eq!(hub.subscriber_count(StoreId(1)), 0);
        assert!(feed.recv().await.is_ok());
        assert!(feed.recv().await.is_ok());
        assert_eq!(feed.recv().await.unwrap_err(), FeedEnded::Lagged);
    }

    #[tokio::test]
    async fn dropping_a_feed_unregisters_it() {
        let hub = Hub::new(2, usize::MAX, Metrics::new());
        let feed = hub.register(StoreId(1));
        let _other = hub.register(StoreId(1));
        assert_eq!(hub.subscriber_count(StoreId(1)), 2);
        drop(feed);
        assert_eq!(hub.subscriber_count(StoreId(1)), 1);
    }

    #[test]
    fn a_batch_weighs_its_events_bytes() {
        let small = weight(&batch(1, 10));
        let large = weight(&batch(1, 100_010));
        assert_eq!(large - small, 100_000, "args count byte for byte");
        assert!(small > 10 + "e".len() + "c".len() + "s".len(), "each event also costs its fixed size");
    }

    #[tokio::test]
    async fn queued_bytes_past_the_limit_end_the_feed_though_few_batches_wait() {
        let one = weight(&batch(1, 100_000));
        // Room for 1,024 batches, but only for two of these in bytes.
        let hub = Hub::new(1024, 2 * one + one / 2, Metrics::new());
        let mut feed = hub.register(StoreId(1));
        hub.deliver(&batch(1, 100_000));
        hub.deliver(&batch(2, 100_000));
        assert_eq!(feed.queued_bytes(), 2 * one);
        assert!(!feed.has_lagged());
        hub.deliver(&batch(3, 100_000));
        assert!(feed.has_lagged(), "the third batch passes the byte limit");
        assert_eq!(hub.subscriber_count(StoreId(1)), 0);
        assert_eq!(feed.queued_bytes(), 2 * one, "the refused batch is not charged");
        for seq in [1, 2] {
            let LiveMessage::Batch(batch) = &*feed.recv().await.unwrap() else { panic!("a batch") };
            assert_eq!(batch.last_seq(), SeqNum(seq));
        }
        assert_eq!(feed.queued_bytes(), 0);
        assert_eq!(feed.recv().await.unwrap_err(), FeedEnded::Lagged);
        let metrics = hub.metrics.render();
        assert!(metrics.contains(r#"junction_slow_consumer_disconnects_total{reason="lagged"} 1"#), "{metrics}");
    }

    #[tokio::test]
    async fn a_subscriber_that_keeps_reading_is_never_charged_twice() {
        let one = weight(&batch(1, 100_000));
        let hub = Hub::new(1024, 2 * one, Metrics::new());
        let mut feed = hub.register(StoreId(1));
        for seq in 1..=100 {
            hub.deliver(&batch(seq, 100_000));
            hub.deliver(&reset(1));
            assert!(feed.recv().await.is_ok());
            assert!(feed.recv().await.is_ok());
        }
        assert!(!feed.has_lagged());
        assert_eq!(feed.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn one_batch_over_the_byte_limit_reaches_an_empty_queue() {
        let hub = Hub::new(1024, 1_000, Metrics::new());
        let mut feed = hub.register(StoreId(1));
        hub.deliver(&batch(1, 50_000));
        assert!(!feed.has_lagged(), "nothing else was waiting");
        hub.deliver(&batch(2, 10));
        assert!(feed.has_lagged(), "but nothing may join it");
        assert!(feed.recv().await.is_ok());
        assert_eq!(feed.recv().await.unwrap_err(), FeedEnded::Lagged);
    }
}
