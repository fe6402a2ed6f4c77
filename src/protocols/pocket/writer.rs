//! Pushes to one collection go through one task, its *writer*, which owns the collection's
//! [`Projection`] and is the only one in this process that appends to the collection's store.
//!
//! Why a task per collection: deciding a change needs the document's current state, and that
//! state must not move between the decision and the append. The writer takes every push queued
//! meanwhile (from any number of connections), decides them in arrival order against the
//! projection plus the group's own earlier changes, and appends all accepted changes as **one**
//! check-and-append batch at the projection's head. So concurrent pushes to one collection are
//! serialized, and still share a commit (group commit at the collection level).
//!
//! The check is what keeps it right with other instances on the same database: if another
//! process appended meanwhile, the append is refused, the writer reads the new events into the
//! projection and decides the group again. Nothing is acknowledged before the append returns,
//! i.e. before the commit.
//!
//! The projection is loaded from the log when the writer starts and dropped when it retires
//! (after [`IDLE`] without pushes, or at shutdown): memory is spent only on collections in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::change::ChangeEvent;
use super::projection::{Body, ConflictStrategy, Projection, Tentative, Verdict, merge_documents};
use super::server::Conflict;
use crate::eventlog::{
    AppendBatch, AppendError, Event, EventBody, EventLog, EventLogError, NewEvent, SeqNum, StoreKey,
};

/// A writer with nothing to do for this long retires (and frees its projection).
const IDLE: Duration = Duration::from_secs(300);
/// Most pushes decided and appended together.
const MAX_GROUP: usize = 64;
/// Events read per page when loading or catching up the projection.
const LOAD_PAGE: u32 = 1000;
/// Appends refused because another instance appended first, before the group is given up.
const MAX_ATTEMPTS: usize = 16;

/// One push, as the writer needs it.
pub struct PushRequest {
    pub changes: Vec<ChangeEvent>,
    /// The pushing client's `nodeId` (from its checkpoint; empty if it sent none): a delete's
    /// tombstone clock gets this entry incremented, as on the client.
    pub node_id: String,
    /// The connection that pushed, stored as each event's session id so that broadcasts skip it.
    pub session: String,
    /// `checkpoint.sequences[collection]` of the push.
    pub client_checkpoint: u64,
    pub strategy: ConflictStrategy,
}

/// What a push achieved.
#[derive(Debug)]
pub struct PushOutcome {
    /// Changes refused because the server's copy won (one per document).
    pub conflicts: Vec<Conflict>,
    /// The collection's checkpoint for the push-response: past this push's own changes only if
    /// the client had seen everything before them, else the client's own value.
    pub checkpoint: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PushFailed {
    #[error("the event log failed: {0}")]
    Log(#[from] EventLogError),
    #[error("the collection is too busy: another instance kept appending first")]
    Contention,
    #[error("the server is shutting down")]
    ShuttingDown,
}

struct Job {
    request: PushRequest,
    reply: oneshot::Sender<Result<PushOutcome, Arc<PushFailed>>>,
}

/// Running writers by collection: an id (so a retiring writer removes only itself) and its queue.
type Registry = Arc<Mutex<HashMap<String, (u64, mpsc::Sender<Job>)>>>;

/// The writers of this process, by collection.
#[derive(Default)]
pub struct Writers {
    running: Registry,
    next_id: std::sync::atomic::AtomicU64,
}

impl Writers {
    /// Decides and appends one push to `collection`; returns after the commit.
    pub async fn push(
        &self,
        log: &EventLog,
        shutdown: &CancellationToken,
        collection: &str,
        request: PushRequest,
    ) -> Result<PushOutcome, Arc<PushFailed>> {
        let (reply, answer) = oneshot::channel();
        let mut job = Job { request, reply };
        // A writer may retire between our lookup and our send; then its queue is closed and the
        // job comes back, and the next lookup starts a fresh writer.
        loop {
            let queue = self.queue(log, shutdown, collection);
            match queue.send(job).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(returned)) => job = returned,
            }
        }
        answer.await.map_err(|_| Arc::new(PushFailed::ShuttingDown))?
    }

    fn queue(&self, log: &EventLog, shutdown: &CancellationToken, collection: &str) -> mpsc::Sender<Job> {
        let mut running = self.running.lock().expect("writers lock");
        if let Some((_, queue)) = running.get(collection).filter(|(_, q)| !q.is_closed()) {
            return queue.clone();
        }
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (queue, jobs) = mpsc::channel(MAX_GROUP * 4);
        running.insert(collection.to_owned(), (id, queue.clone()));
        let writer = Writer {
            key: super::session::store_key(collection),
            log: log.clone(),
            loaded: None,
            registry: self.running.clone(),
            id,
        };
        tokio::spawn(writer.run(jobs, shutdown.clone()));
        queue
    }
}

struct Writer {
    key: StoreKey,
    log: EventLog,
    loaded: Option<Loaded>,
    registry: Registry,
    id: u64,
}

struct Loaded {
    projection: Projection,
    backend_id: String,
}

impl Writer {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>, shutdown: CancellationToken) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        let mut retiring = false;
        loop {
            tokio::select! {
                biased;
                received = jobs.recv_many(&mut group, MAX_GROUP) => {
                    if received == 0 {
                        return; // retired, and every queued job is done
                    }
                    self.process(std::mem::take(&mut group)).await;
                }
                _ = tokio::time::sleep(IDLE), if !retiring => retiring = true,
                _ = shutdown.cancelled(), if !retiring => retiring = true,
            }
            if retiring && jobs.is_empty() {
                // Leave the registry first, so no new job can find this queue; jobs sent in the
                // meantime are still in it and are done before `recv_many` reports the end.
                let mut running = self.registry.lock().expect("writers lock");
                if running.get(&self.key.name).is_some_and(|(id, _)| *id == self.id) {
                    running.remove(&self.key.name);
                }
                drop(running);
                jobs.close();
            }
        }
    }

    async fn process(&mut self, jobs: Vec<Job>) {
        let requests: Vec<&PushRequest> = jobs.iter().map(|j| &j.request).collect();
        let outcome = self.decide_and_append(&requests).await;
        drop(requests);
        match outcome {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(failure) => {
                tracing::error!(collection = %self.key.name, error = %failure, "pocket: push failed");
                let failure = Arc::new(failure);
                for job in jobs {
                    let _ = job.reply.send(Err(failure.clone()));
                }
            }
        }
    }

    async fn decide_and_append(&mut self, requests: &[&PushRequest]) -> Result<Vec<PushOutcome>, PushFailed> {
        if self.loaded.is_none() {
            self.loaded = Some(load(&self.log, &self.key).await?);
        }
        for _ in 0..MAX_ATTEMPTS {
            let loaded = self.loaded.as_mut().expect("loaded above");
            let plan = plan(&self.log, &self.key, &loaded.projection, requests).await?;
            if plan.events.is_empty() {
                return Ok(plan.outcomes);
            }
            let expected_head = SeqNum(loaded.projection.head());
            match self.log.append(&self.key, AppendBatch::Checked { expected_head, events: plan.events }).await {
                Ok(_) => {
                    let (docs, stored, head) = plan.tentative;
                    loaded.projection.commit(docs, stored, head);
                    return Ok(plan.outcomes);
                }
                Err(AppendError::HeadMismatch { .. }) => {
                    // Another instance appended: take its events in and decide again.
                    catch_up(&self.log, &self.key, &mut self.loaded).await?;
                }
                Err(AppendError::InvalidBatch(reason)) => {
                    return Err(PushFailed::Log(EventLogError::InvalidHistory(reason)));
                }
                Err(AppendError::Log(error)) => {
                    // The append may or may not have committed: start from the log next time.
                    self.loaded = None;
                    return Err(match error {
                        EventLogError::ShuttingDown => PushFailed::ShuttingDown,
                        other => PushFailed::Log(other),
                    });
                }
            }
        }
        Err(PushFailed::Contention)
    }
}

/// The decisions for a group of pushes, before their append.
struct Plan {
    events: Vec<NewEvent>,
    outcomes: Vec<PushOutcome>,
    tentative: (HashMap<String, super::projection::DocState>, std::collections::HashSet<u64>, u64),
}

async fn plan(
    log: &EventLog,
    key: &StoreKey,
    projection: &Projection,
    requests: &[&PushRequest],
) -> Result<Plan, EventLogError> {
    let mut tentative = projection.tentative();
    // Bodies of this group's own changes, by seq (they are not in the log yet).
    let mut bodies: HashMap<u64, Box<RawValue>> = HashMap::new();
    let mut events = Vec::new();
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        let head_before = tentative.head();
        let mut conflicts: Vec<Conflict> = Vec::new();
        for change in &request.changes {
            let stored = match tentative.decide(change, &request.node_id, request.strategy) {
                Verdict::Skip => None,
                Verdict::Apply => Some(change.clone()),
                Verdict::Merge => {
                    let server = server_document(log, key, &tentative, &bodies, &change.document_id).await?;
                    let local = change.document.as_deref().expect("only documents are merged");
                    let suffix = super::random_base36(8);
                    let merged =
                        merge_documents(local, &server, change.previous_document.as_deref(), now_ms(), &suffix);
                    Some(ChangeEvent { document: merged.or_else(|| change.document.clone()), ..change.clone() })
                }
                Verdict::Reject => {
                    let server = server_document(log, key, &tentative, &bodies, &change.document_id).await?;
                    conflicts.retain(|c| c.document_id != change.document_id);
                    conflicts.push(Conflict { document_id: change.document_id.clone(), server_document: server });
                    None
                }
            };
            if let Some(stored) = stored {
                let seq = tentative.apply(&stored, &request.node_id);
                if let Some(document) = &stored.document {
                    bodies.insert(seq, document.clone());
                }
                let args = RawValue::from_string(stored.to_json()).expect("a change encodes as JSON");
                let body = EventBody {
                    name: stored.operation.as_str().to_owned(),
                    args,
                    client_id: request.node_id.clone(),
                    session_id: request.session.clone(),
                };
                events.push(NewEvent { seq: SeqNum(seq), parent_seq: SeqNum(seq - 1), body });
            }
        }
        let head_after = tentative.head();
        // Only this push's changes lie between a client checkpoint equal to `head_before` and
        // `head_after`, so moving it there skips nothing the client has not got.
        let checkpoint = if request.client_checkpoint == head_before { head_after } else { request.client_checkpoint };
        outcomes.push(PushOutcome { conflicts, checkpoint });
    }
    Ok(Plan { events, outcomes, tentative: tentative.into_parts() })
}

/// The server's copy of a document, for a conflict report or a merge.
async fn server_document(
    log: &EventLog,
    key: &StoreKey,
    tentative: &Tentative<'_>,
    bodies: &HashMap<u64, Box<RawValue>>,
    document_id: &str,
) -> Result<Box<RawValue>, EventLogError> {
    let Some(state) = tentative.get(document_id) else {
        unreachable!("only documents the server has can conflict or merge")
    };
    let seq = match state.body {
        Body::Tombstone => return Ok(state.tombstone_body(document_id)),
        Body::InLog(seq) => seq,
    };
    if let Some(body) = bodies.get(&seq) {
        return Ok(body.clone());
    }
    let events = log.read(key, SeqNum(seq - 1), 1).await?;
    let document = events.first().filter(|e| e.seq.0 == seq).and_then(stored_change).and_then(|c| c.document);
    Ok(document.unwrap_or_else(|| state.tombstone_body(document_id)))
}

/// The change an event of a Pocket store holds (`None` for an event that is not one, e.g. one
/// imported from elsewhere).
pub fn stored_change(event: &Event) -> Option<ChangeEvent> {
    super::change::decode_change(&event.body.args, "change").ok()
}

/// Reads a collection's whole log into a projection.
async fn load(log: &EventLog, key: &StoreKey) -> Result<Loaded, EventLogError> {
    let info = log.info(key).await?;
    let mut loaded = Loaded { projection: Projection::default(), backend_id: info.backend_id };
    read_into(log, key, &mut loaded.projection).await?;
    tracing::debug!(collection = %key.name, documents = loaded.projection.len(), head = loaded.projection.head(), "pocket: projection loaded");
    Ok(loaded)
}

/// Brings the projection up to the log's head; starts over if the store was reset under it.
async fn catch_up(log: &EventLog, key: &StoreKey, loaded: &mut Option<Loaded>) -> Result<(), EventLogError> {
    let info = log.info(key).await?;
    match loaded {
        Some(current) if current.backend_id == info.backend_id && current.projection.head() <= info.head.0 => {
            read_into(log, key, &mut current.projection).await
        }
        _ => {
            *loaded = Some(load(log, key).await?);
            Ok(())
        }
    }
}

async fn read_into(log: &EventLog, key: &StoreKey, projection: &mut Projection) -> Result<(), EventLogError> {
    loop {
        let page = log.read(key, SeqNum(projection.head()), LOAD_PAGE).await?;
        for event in &page {
            match stored_change(event) {
                Some(change) => projection.apply(event.seq.0, &change, &event.body.client_id),
                None => {
                    tracing::warn!(collection = %key.name, seq = event.seq.0, "pocket: an event that is not a change was skipped");
                    projection.skip(event.seq.0);
                }
            }
        }
        if page.len() < LOAD_PAGE as usize {
            return Ok(());
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
