//! Group commit: one task turns a queue of append requests into as few transactions as possible.
//!
//! While a transaction runs, new requests queue up; the next transaction takes all of them (up to
//! `max_requests`). Under light load every request gets its own transaction at once; under heavy
//! load the cost of a commit (an fsync) is shared by hundreds of requests.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{CommittedBatch, EventLogError, SeqNum};
use crate::fanout::{FanOut, LiveMessage};
use crate::metrics::Metrics;
use crate::store::{AppendRequest, Backend, GroupFailed};

/// What the committer answers: the committed batch, or the head that failed the check.
pub(super) type Reply = Result<Result<CommittedBatch, SeqNum>, EventLogError>;

pub(super) struct Pending {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Reply>,
}

pub(super) async fn run(
    backend: Arc<Backend>,
    mut queue: mpsc::Receiver<Pending>,
    fanout: Arc<dyn FanOut>,
    metrics: Metrics,
    max_requests: usize,
    stop: CancellationToken,
) {
    let mut group = Vec::with_capacity(max_requests);
    loop {
        // Once stopping, refuse new appends but keep looping: what is already queued still
        // commits. Checked on every turn, since a busy queue may never let the select wait.
        if stop.is_cancelled() && !queue.is_closed() {
            queue.close();
        }
        tokio::select! {
            received = queue.recv_many(&mut group, max_requests) => {
                if received == 0 {
                    break;
                }
            }
            _ = stop.cancelled(), if !queue.is_closed() => continue,
        }
        metrics.commit_group(group.len());
        commit(&backend, &mut group, fanout.as_ref()).await;
    }
}

/// Commits one group and answers every request in it.
async fn commit(backend: &Backend, group: &mut Vec<Pending>, fanout: &dyn FanOut) {
    let requests: Vec<&AppendRequest> = group.iter().map(|p| &p.request).collect();
    match backend.commit_group(&requests).await {
        Ok(outcomes) => {
            for (pending, outcome) in group.drain(..).zip(outcomes) {
                answer(pending, Ok(outcome), fanout);
            }
        }
        // The group may be stored: committing its requests again could store them twice, so every
        // writer hears of the failure (a client retrying a checked append then finds it there).
        Err(GroupFailed::OutcomeUnknown(error)) => {
            tracing::error!(%error, requests = group.len(), "group commit outcome unknown");
            let error = Arc::new(error);
            for pending in group.drain(..) {
                answer(pending, Err(EventLogError::CommitUnknown(error.to_string())), fanout);
            }
        }
        // One bad request must not fail its neighbours: when the database refused a statement,
        // retry each in a transaction of its own. Not when it is unreachable or out of space:
        // every retry would fail the same way, each after the connection timeout.
        Err(GroupFailed::RolledBack(error @ sqlx::Error::Database(_)))
            if group.len() > 1 && !crate::store::is_unavailable(&error) =>
        {
            tracing::warn!(%error, requests = group.len(), "group commit failed; committing its requests one by one");
            for pending in group.drain(..) {
                let outcome = backend.commit_group(&[&pending.request]).await;
                let reply = outcome.map(|mut o| o.remove(0)).map_err(|failed| match failed {
                    GroupFailed::RolledBack(error) => EventLogError::from(error),
                    GroupFailed::OutcomeUnknown(error) => EventLogError::CommitUnknown(error.to_string()),
                });
                answer(pending, reply, fanout);
            }
        }
        Err(GroupFailed::RolledBack(error)) => {
            tracing::error!(%error, requests = group.len(), "group commit failed; nothing of it is stored");
            let error = Arc::new(error);
            for pending in group.drain(..) {
                answer(pending, Err(EventLogError::CommitFailed(error.clone())), fanout);
            }
        }
    }
}

/// Publishes a committed batch, then tells its writer: a writer that hears of its commit can rely
/// on every subscriber getting the batch.
fn answer(pending: Pending, reply: Reply, fanout: &dyn FanOut) {
    if let Ok(Ok(batch)) = &reply {
        fanout.publish(Arc::new(LiveMessage::Batch(batch.clone())));
    }
    // The writer may have given up waiting (its connection closed); the commit stands regardless.
    let _ = pending.reply.send(reply);
}
