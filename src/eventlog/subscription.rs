//! A subscriber's view of one store: catch-up from storage, then live batches, merged so that
//! every event after the cursor comes exactly once and in order.
//!
//! The live feed is registered before the first storage read. From then on a batch is in
//! storage, in the feed, or both; the cursor drops what was already delivered, and a batch that
//! does not continue from the cursor (its previous head is beyond it: the feed lost something,
//! or the fan-out came from another instance out of order) sends the subscriber back to storage.

use std::sync::Arc;

use super::{Event, EventLog, EventLogError, SeqNum, StoreId};
use crate::fanout::{FeedEnded, LiveFeed, LiveMessage};

/// Why a subscription ended. The caller should tell its client and close.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionEnded {
    #[error("the subscriber fell too far behind and was disconnected")]
    SlowConsumer,
    #[error("the store was reset")]
    Reset,
    #[error(transparent)]
    Log(#[from] EventLogError),
}

pub struct Subscription {
    log: EventLog,
    store: StoreId,
    backend_id: Arc<str>,
    cursor: SeqNum,
    feed: LiveFeed,
    catching_up: bool,
}

impl Subscription {
    pub(super) fn new(log: EventLog, store: StoreId, backend_id: Arc<str>, after: SeqNum, feed: LiveFeed) -> Self {
        Subscription { log, store, backend_id, cursor: after, feed, catching_up: true }
    }

    /// The seq of the last event delivered (or the starting point).
    pub fn cursor(&self) -> SeqNum {
        self.cursor
    }

    /// The store's backend id when the subscription started.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// Whether everything stored when the subscription started has been delivered.
    pub fn is_live(&self) -> bool {
        !self.catching_up
    }

    /// The next events after the cursor, in seq order: storage pages while catching up, then
    /// each live batch as it commits. Never empty.
    pub async fn next(&mut self) -> Result<Arc<[Event]>, SubscriptionEnded> {
        let events = self.next_unmetered().await?;
        self.log.inner.metrics.delivered(events.len());
        Ok(events)
    }

    async fn next_unmetered(&mut self) -> Result<Arc<[Event]>, SubscriptionEnded> {
        loop {
            if self.catching_up {
                if let Some(page) = self.catch_up_page().await? {
                    return Ok(page);
                }
                continue;
            }
            let message = self.feed.recv().await.map_err(|FeedEnded::Lagged| SubscriptionEnded::SlowConsumer)?;
            match &*message {
                LiveMessage::Reset { backend_id, .. } => {
                    // A reset older than this subscription has the backend id we started with.
                    if **backend_id != *self.backend_id {
                        return Err(SubscriptionEnded::Reset);
                    }
                }
                LiveMessage::Advanced { backend_id, head, .. } => {
                    if !self.same_history(backend_id).await? || *head <= self.cursor {
                        continue;
                    }
                    // The events are in storage only.
                    self.catching_up = true;
                }
                LiveMessage::Batch(batch) => {
                    if !self.same_history(&batch.backend_id).await? || batch.last_seq() <= self.cursor {
                        continue;
                    }
                    if batch.prev_head > self.cursor {
                        self.catching_up = true;
                        continue;
                    }
                    let events: Arc<[Event]> = if batch.prev_head == self.cursor {
                        batch.events.clone()
                    } else {
                        batch.events.iter().filter(|e| e.seq > self.cursor).cloned().collect()
                    };
                    self.cursor = batch.last_seq();
                    return Ok(events);
                }
            }
        }
    }

    /// Whether a live message with `backend_id` belongs to the history this subscription follows.
    /// Another id is either a late message from before a reset we already saw (skip it), or the
    /// store was reset under us (the subscription ends); storage tells which.
    async fn same_history(&self, backend_id: &Arc<str>) -> Result<bool, SubscriptionEnded> {
        if *backend_id == self.backend_id {
            return Ok(true);
        }
        // Boxed for the same reason as the catch-up read in `next_unmetered`.
        let info = Box::pin(self.log.inner.backend.info(self.store)).await.map_err(EventLogError::from)?;
        if *info.backend_id != *self.backend_id {
            return Err(SubscriptionEnded::Reset);
        }
        Ok(false)
    }

    /// One page from storage, or `None` when storage has nothing more (catch-up is over).
    async fn catch_up_page(&mut self) -> Result<Option<Arc<[Event]>>, SubscriptionEnded> {
        if self.feed.has_lagged() {
            // Falling behind the live stream while reading storage is not the consumer's fault:
            // start a fresh feed (before the next read) and let storage cover the difference.
            // A reset may have been among the dropped messages, so ask storage about that.
            self.feed = self.log.inner.hub.register(self.store);
            let info = self.log.inner.backend.info(self.store).await.map_err(EventLogError::from)?;
            if *info.backend_id != *self.backend_id {
                return Err(SubscriptionEnded::Reset);
            }
        }
        let limit = self.log.inner.options.catch_up_page;
        let page = self.log.inner.backend.read(self.store, self.cursor, limit).await.map_err(EventLogError::from)?;
        if page.len() < limit as usize {
            self.catching_up = false;
        }
        let Some(last) = page.last() else { return Ok(None) };
        self.cursor = last.seq;
        Ok(Some(page.into()))
    }
}
