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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::eventlog::{CommittedBatch, SeqNum, StoreId};
use crate::metrics::Metrics;

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
    topics: Arc<ephemeral::Topics>,
    metrics: Metrics,
}

struct Slot {
    id: u64,
    queue: mpsc::Sender<Arc<LiveMessage>>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    /// `queue_len` bounds how many messages one subscriber may have waiting.
    pub fn new(queue_len: usize, metrics: Metrics) -> Arc<Hub> {
        Arc::new(Hub {
            stores: Mutex::new(HashMap::new()),
            next_slot: AtomicU64::new(0),
            queue_len,
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
    /// until it falls `queue_len` messages behind.
    pub fn register(self: &Arc<Self>, store: StoreId) -> LiveFeed {
        let (queue, receiver) = mpsc::channel(self.queue_len);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let slot = Slot { id, queue, lagged: lagged.clone() };
        self.stores.lock().expect("hub lock").entry(store).or_default().push(slot);
        LiveFeed { hub: self.clone(), store, id, receiver, lagged }
    }

    /// Queues `message` for every subscriber of its store. A subscriber whose queue is full is
    /// dropped and told so when it next reads: it is never skipped silently.
    pub fn deliver(&self, message: &Arc<LiveMessage>) {
        let store = message.store();
        let mut stores = self.stores.lock().expect("hub lock");
        let Some(slots) = stores.get_mut(&store) else { return };
        slots.retain(|slot| match slot.queue.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                slot.lagged.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
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
    receiver: mpsc::Receiver<Arc<LiveMessage>>,
    lagged: Arc<AtomicBool>,
}

impl LiveFeed {
    /// The next message; after a lag, the queued messages first, then [`FeedEnded::Lagged`].
    pub async fn recv(&mut self) -> Result<Arc<LiveMessage>, FeedEnded> {
        match self.receiver.recv().await {
            Some(message) => Ok(message),
            None => {
                debug_assert!(self.lagged.load(Ordering::Acquire), "only a lag drops a registered slot");
                self.hub.metrics.slow_consumer_disconnected();
                Err(FeedEnded::Lagged)
            }
        }
    }

    /// Whether the hub has dropped this feed for lagging (messages may still be queued).
    pub fn has_lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
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

    #[tokio::test]
    async fn delivers_only_to_the_store_subscribers() {
        let hub = Hub::new(8, Metrics::new());
        let mut a = hub.register(StoreId(1));
        let mut b = hub.register(StoreId(2));
        hub.deliver(&reset(1));
        assert_eq!(a.recv().await.unwrap().store(), StoreId(1));
        assert!(b.receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn full_queue_ends_the_feed_after_what_was_queued() {
        let hub = Hub::new(2, Metrics::new());
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
        let hub = Hub::new(2, Metrics::new());
        let feed = hub.register(StoreId(1));
        let _other = hub.register(StoreId(1));
        assert_eq!(hub.subscriber_count(StoreId(1)), 2);
        drop(feed);
        assert_eq!(hub.subscriber_count(StoreId(1)), 1);
    }
}
