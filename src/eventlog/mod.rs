//! The shared event log: the one model every protocol module translates its frames into.
//!
//! A *store* is an independent, totally ordered log named by a [`StoreKey`] (protocol + the
//! client's name). Appends are check-and-append ([`AppendBatch::Checked`]) or at-head
//! ([`AppendBatch::AtHead`]); every accepted batch also takes the next position of the
//! *sequenced change log*, global over all stores.
//!
//! Appends are group-committed: callers queue them to one committer task, which commits whatever
//! has queued while the previous transaction ran in a single transaction ([`committer`]). A
//! caller hears back only after the commit, and the committer publishes each committed batch to
//! the fan-out before it answers, so a subscriber never sees an event its writer has not had
//! acknowledged… and never misses one that was.

mod committer;
mod model;
mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use model::*;
pub use subscription::{Subscription, SubscriptionEnded};

use crate::fanout::{FanOut, Hub, LiveMessage};
use crate::metrics::Metrics;
pub use crate::store::Snapshot;
use crate::store::{AppendRequest, Backend, Restored};

/// Failures of the event log itself (as opposed to a refused append).
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("storage failure: {0}")]
    Storage(#[from] sqlx::Error),
    /// The commit of the append's group failed: nothing of it is stored.
    #[error("storage failure; nothing was stored: {0}")]
    CommitFailed(Arc<sqlx::Error>),
    /// The connection to the database broke during COMMIT: the append may or may not be stored.
    #[error("storage failure; the append may or may not be stored: {0}")]
    CommitUnknown(String),
    #[error("the event log is shutting down")]
    ShuttingDown,
    #[error("invalid history: {0}")]
    InvalidHistory(String),
}

impl EventLogError {
    /// Whether the database cannot be reached or cannot write now (rather than refusing this
    /// request): the client should retry later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            EventLogError::Storage(error) => crate::store::is_unavailable(error),
            EventLogError::CommitFailed(_) | EventLogError::CommitUnknown(_) | EventLogError::ShuttingDown => true,
            EventLogError::InvalidHistory(_) => false,
        }
    }
}

/// What [`EventLog::restore`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    Restored,
    /// The store already holds this history (same backend id, head and count): nothing written.
    Unchanged,
    /// The store holds another history and `replace` was not asked for: nothing written.
    Conflict,
}

/// Why an append was not committed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The check failed: the store's head is not the expected one. Nothing was written.
    #[error("the store's head is {head}")]
    HeadMismatch { head: SeqNum },
    /// The batch can never be committed (empty, seqs out of order, …). Nothing was written.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error(transparent)]
    Log(#[from] EventLogError),
}

/// Tuning of the event log, from `[store]` and `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    pub commit_max_requests: usize,
    pub catch_up_page: u32,
}

/// Handle to the event log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<Backend>,
    appends: mpsc::Sender<committer::Pending>,
    hub: Arc<Hub>,
    fanout: Arc<dyn FanOut>,
    ids: RwLock<HashMap<StoreKey, StoreId>>,
    metrics: Metrics,
    options: LogOptions,
    stop: CancellationToken,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl EventLog {
    /// Starts the event log on a connected (and migrated) backend. Committed batches go to
    /// `fanout`; live subscribers of this process register with `hub`.
    pub fn start(
        backend: Backend,
        options: LogOptions,
        hub: Arc<Hub>,
        fanout: Arc<dyn FanOut>,
        metrics: Metrics,
    ) -> EventLog {
        let backend = Arc::new(backend);
        // Enough room that callers rarely wait to enqueue; the committer drains it in groups.
        let (appends, queued) = mpsc::channel(options.commit_max_requests * 4);
        let stop = CancellationToken::new();
        let committer = tokio::spawn(committer::run(
            backend.clone(),
            queued,
            fanout.clone(),
            metrics.clone(),
            options.commit_max_requests,
            stop.clone(),
        ));
        EventLog {
            inner: Arc::new(Inner {
                backend,
                appends,
                hub,
                fanout,
                ids: RwLock::new(HashMap::new()),
                metrics,
                options,
                stop,
                committer: Mutex::new(Some(committer)),
            }),
        }
    }

    pub fn backend_kind(&self) -> &'static str {
        self.inner.backend.kind()
    }

    /// Where the store's data lives (see [`Backend::location`]).
    pub fn backend_location(&self) -> String {
        self.inner.backend.location()
    }

    pub fn fanout(&self) -> &Arc<dyn FanOut> {
        &self.inner.fanout
    }

    /// The registry id of a store, registering the store on first use.
    pub async fn store_id(&self, key: &StoreKey) -> Result<StoreId, EventLogError> {
        if let Some(id) = self.inner.ids.read().expect("id cache").get(key) {
            return Ok(*id);
        }
        let id = self.inner.backend.ensure_store(key).await?;
        self.inner.ids.write().expect("id cache").insert(key.clone(), id);
        Ok(id)
    }

    /// The id of a store that exists, without registering it.
    async fn existing_store_id(&self, key: &StoreKey) -> Result<Option<StoreId>, EventLogError> {
        if let Some(id) = self.inner.ids.read().expect("id cache").get(key) {
            return Ok(Some(*id));
        }
        let found = self.inner.backend.find_store(key).await?;
        if let Some(id) = found {
            self.inner.ids.write().expect("id cache").insert(key.clone(), id);
        }
        Ok(found)
    }

    /// Appends a batch atomically: all of it once committed, or nothing.
    pub async fn append(&self, key: &StoreKey, batch: AppendBatch) -> Result<Appended, AppendError> {
        batch.validate().map_err(AppendError::InvalidBatch)?;
        let store = self.store_id(key).await?;
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let pending = committer::Pending { request: AppendRequest { store, batch }, reply };
        self.inner.appends.send(pending).await.map_err(|_| EventLogError::ShuttingDown)?;
        match answer.await.map_err(|_| EventLogError::ShuttingDown)?? {
            Ok(batch) => {
                self.inner.metrics.appended(batch.events.len(), started.elapsed());
                Ok(Appended {
                    first_seq: batch.events[0].seq,
                    last_seq: batch.last_seq(),
                    change_pos: batch.change_pos(),
                    created_at: batch.events[0].created_at.clone(),
                })
            }
            Err(head) => {
                self.inner.metrics.append_rejected();
                Err(AppendError::HeadMismatch { head })
            }
        }
    }

    /// Saves a projection snapshot of the store (a cache of the log; see [`Snapshot`]).
    pub async fn save_snapshot(&self, key: &StoreKey, snapshot: &Snapshot) -> Result<(), EventLogError> {
        let id = self.store_id(key).await?;
        Ok(self.inner.backend.save_snapshot(id, snapshot).await?)
    }

    /// The store's snapshot, if it has one made for its current backend id.
    pub async fn load_snapshot(&self, key: &StoreKey) -> Result<Option<Snapshot>, EventLogError> {
        let Some(id) = self.existing_store_id(key).await? else { return Ok(None) };
        let Some(snapshot) = self.inner.backend.load_snapshot(id).await? else { return Ok(None) };
        let info = self.inner.backend.info(id).await?;
        Ok((snapshot.backend_id == info.backend_id && snapshot.seq <= info.head).then_some(snapshot))
    }

    /// Up to `limit` events with seq > `after`, in seq order. An unknown store reads as empty.
    pub async fn read(&self, key: &StoreKey, after: SeqNum, limit: u32) -> Result<Vec<Event>, EventLogError> {
        match self.existing_store_id(key).await? {
            Some(id) => Ok(self.inner.backend.read(id, after, limit).await?),
            None => Ok(Vec::new()),
        }
    }

    /// Number of events with `after` < seq ≤ `up_to` (0 for an unknown store).
    pub async fn count_between(&self, key: &StoreKey, after: SeqNum, up_to: SeqNum) -> Result<u64, EventLogError> {
        match self.existing_store_id(key).await? {
            Some(id) => Ok(self.inner.backend.count(id, after, up_to).await?),
            None => Ok(0),
        }
    }

    /// The store's last seq (ROOT for an empty or unknown store).
    pub async fn head(&self, key: &StoreKey) -> Result<SeqNum, EventLogError> {
        match self.existing_store_id(key).await? {
            Some(id) => Ok(self.inner.backend.info(id).await?.head),
            None => Ok(SeqNum::ROOT),
        }
    }

    /// The store's metadata, registering the store (and so fixing its backend id) on first use.
    pub async fn info(&self, key: &StoreKey) -> Result<StoreInfo, EventLogError> {
        let id = self.store_id(key).await?;
        Ok(self.inner.backend.info(id).await?)
    }

    /// The store's metadata, or `None` if no client ever used it (nothing is registered).
    pub async fn find_info(&self, key: &StoreKey) -> Result<Option<StoreInfo>, EventLogError> {
        match self.existing_store_id(key).await? {
            Some(id) => Ok(Some(self.inner.backend.info(id).await?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` stores registered after `after` (registry ids, in order; start at 0).
    pub async fn list_stores(&self, after: StoreId, limit: u32) -> Result<Vec<StoreInfo>, EventLogError> {
        Ok(self.inner.backend.list_stores(after, limit).await?)
    }

    /// Up to `limit` entries of the sequenced change log after `after` (start at 0).
    pub async fn read_changes(&self, after: ChangePos, limit: u32) -> Result<Vec<Change>, EventLogError> {
        Ok(self.inner.backend.read_changes(after, limit).await?)
    }

    /// The last change-log position handed out: every committed batch is at or before it.
    pub async fn change_log_head(&self) -> Result<ChangePos, EventLogError> {
        Ok(self.inner.backend.change_log_head().await?)
    }

    /// Up to `limit` change-log entries with `after` < position ≤ `up_to`, in order, with the
    /// store ids and backend ids that subscriptions work with (for the fan-out's gap filling).
    pub async fn read_change_marks(
        &self,
        after: ChangePos,
        up_to: ChangePos,
        limit: u32,
    ) -> Result<Vec<ChangeMark>, EventLogError> {
        Ok(self.inner.backend.read_change_marks(after, up_to, limit).await?)
    }

    /// Removes every event of the store and gives it a new backend id. Live subscribers of the
    /// store end with [`SubscriptionEnded::Reset`].
    pub async fn reset(&self, key: &StoreKey) -> Result<StoreInfo, EventLogError> {
        let id = self.store_id(key).await?;
        let backend_id = new_backend_id();
        self.inner.backend.reset(id, &backend_id).await?;
        self.inner.fanout.publish(Arc::new(LiveMessage::Reset { store: id, backend_id: backend_id.into() }));
        Ok(self.inner.backend.info(id).await?)
    }

    /// Writes a store's whole history as exported elsewhere: seqs, parents, args and times kept,
    /// and the given backend id (`None`: keep the store's, or make a new one). Into an empty
    /// store; over a different history only with `replace`. Live subscribers of the store end as
    /// after a reset.
    pub async fn restore(
        &self,
        key: &StoreKey,
        backend_id: Option<&str>,
        events: Vec<Event>,
        replace: bool,
    ) -> Result<RestoreOutcome, EventLogError> {
        let as_batch = AppendBatch::Checked {
            expected_head: SeqNum::ROOT,
            events: events
                .iter()
                .map(|e| NewEvent { seq: e.seq, parent_seq: e.parent_seq, body: e.body.clone() })
                .collect(),
        };
        if !events.is_empty() {
            as_batch.validate().map_err(EventLogError::InvalidHistory)?;
        }
        let id = self.store_id(key).await?;
        let info = self.inner.backend.info(id).await?;
        let head = events.last().map_or(SeqNum::ROOT, |e| e.seq);
        let empty = info.head == SeqNum::ROOT && info.event_count == 0;
        if empty && events.is_empty() && backend_id.is_none_or(|b| b == info.backend_id) {
            // An empty store imported again, or onto its own copy: nothing to write.
            return Ok(RestoreOutcome::Unchanged);
        }
        if !empty {
            let same_id = backend_id.is_none_or(|b| b == info.backend_id);
            let difference = if !same_id {
                Some(format!("backend id {} here, {} in the import", info.backend_id, backend_id.unwrap_or("")))
            } else if info.head != head || info.event_count != events.len() as u64 {
                Some(format!(
                    "{} events up to seq {} here, {} up to seq {head} in the import",
                    info.event_count,
                    info.head,
                    events.len()
                ))
            } else {
                self.first_difference(id, &events).await?
            };
            let Some(difference) = difference else { return Ok(RestoreOutcome::Unchanged) };
            tracing::warn!(store = %key.name, protocol = key.protocol.as_str(), %difference, "the store holds another history");
            if !replace {
                return Ok(RestoreOutcome::Conflict);
            }
            self.inner.backend.reset(id, &new_backend_id()).await?;
        }
        let backend_id = backend_id.map_or_else(new_backend_id, str::to_owned);
        match self.inner.backend.restore(id, &backend_id, &events).await? {
            Restored::Done => {
                self.inner.fanout.publish(Arc::new(LiveMessage::Reset { store: id, backend_id: backend_id.into() }));
                Ok(RestoreOutcome::Restored)
            }
            // Someone appended between the check and the restore.
            Restored::NotEmpty => Ok(RestoreOutcome::Conflict),
        }
    }

    /// Where the store's events first differ from `events` (same count and head), in words; `None`
    /// when every event is the same: seq, parent, name, args byte for byte, client and session
    /// ids, and time.
    async fn first_difference(&self, id: StoreId, events: &[Event]) -> Result<Option<String>, EventLogError> {
        let mut after = SeqNum::ROOT;
        let mut given = events.iter();
        loop {
            let page = self.inner.backend.read(id, after, self.inner.options.catch_up_page.max(256)).await?;
            let Some(last) = page.last() else { return Ok(None) };
            after = last.seq;
            for stored in &page {
                let Some(imported) = given.next() else { return Ok(Some("more events here".into())) };
                let field = if stored.seq != imported.seq {
                    "seq"
                } else if stored.parent_seq != imported.parent_seq {
                    "parent"
                } else if stored.body.name != imported.body.name {
                    "name"
                } else if stored.body.args.get() != imported.body.args.get() {
                    "args"
                } else if stored.body.client_id != imported.body.client_id
                    || stored.body.session_id != imported.body.session_id
                {
                    "client or session id"
                } else if stored.created_at != imported.created_at {
                    "time"
                } else {
                    continue;
                };
                return Ok(Some(format!("the event at seq {} differs in its {field}", stored.seq)));
            }
        }
    }

    /// Everything after `after`: first what storage holds, then live batches as they commit,
    /// in order, without gaps or duplicates.
    pub async fn subscribe(&self, key: &StoreKey, after: SeqNum) -> Result<Subscription, EventLogError> {
        let id = self.store_id(key).await?;
        // Register before reading anything, so every batch committed from here on is either in
        // storage when catch-up reads it or in the live feed (or both, and then deduplicated).
        let feed = self.inner.hub.register(id);
        let info = self.inner.backend.info(id).await?;
        Ok(Subscription::new(self.clone(), id, info.backend_id.into(), after, feed))
    }

    /// Whether the storage answers.
    pub async fn ping(&self) -> Result<(), EventLogError> {
        Ok(self.inner.backend.ping().await?)
    }

    /// Stops taking appends, commits every one already queued, then closes the storage.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        if let Some(committer) = self.inner.committer.lock().await.take() {
            if let Err(error) = committer.await {
                tracing::error!(%error, "the committer task failed");
            }
        }
        self.inner.backend.close().await;
    }
}
