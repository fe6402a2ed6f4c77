//! The WebSocket loop. Frames are handled one at a time, in order: a push is answered
//! after its commit before the next frame is read, so overlapping pushes from one client are
//! applied in the order it sent them. Broadcasts run beside the loop, one task per
//! collection the client pulled or pushed (and may read), each following the collection's
//! event-log subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoint;
use super::client::{self, ClientFrame, ClientMessage};
use super::server::{ErrorMessage, PONG, PullResponse, ServerMessage};
use super::session::{self, Identity, store_key};
use super::writer::now_ms;
use super::{Refused, UserSlot};
use crate::eventlog::{EventLog, EventLogError, Protocol, SeqNum, StoreKey, Subscription, SubscriptionEnded};
use crate::limits::{RateLimiter, Verdict};
use crate::protocols::socket::{self, Outbox, close_code};
use crate::server::AppState;

pub async fn serve(socket: WebSocket, state: AppState, admitted: Result<(Identity, Option<UserSlot>), Refused>) {
    let (outbox, mut incoming, writer) = socket::split(socket, 256, state.config.limits.ws_send_queue_bytes);
    let config = &state.config.protocols.pocket;
    let (identity, slot) = match admitted {
        Ok(admitted) => admitted,
        Err(Refused::Auth(reason)) => {
            tracing::info!(%reason, "pocket: refused a connection");
            outbox.close(config.auth_failed_close_code, "Authentication failed").await;
            let _ = writer.await;
            return;
        }
        Err(Refused::TooManyConnections) => {
            tracing::info!("pocket: refused a connection over the per-user limit");
            outbox.close(config.too_many_connections_close_code, "Too many connections").await;
            let _ = writer.await;
            return;
        }
    };
    // Cancelled by a follower too slow to keep up (a token, not a channel: an idle connection
    // should not hold a channel's first block of slots for a signal sent at most once).
    let too_slow = CancellationToken::new();
    let mut connection = Connection {
        limiter: RateLimiter::from_limits(&state.config.limits),
        state,
        identity,
        session: super::connection_id(),
        outbox,
        last_checkpoint: Arc::new(Mutex::new(None)),
        broadcasts: HashMap::new(),
        too_slow: too_slow.clone(),
    };
    // Handling a frame (its storage calls) is boxed: the future of this loop is what an idle
    // connection holds, and it would otherwise be as large as the largest request's.
    let token_expires = socket::token_deadline(connection.identity.expires());
    loop {
        tokio::select! {
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => if !Box::pin(connection.handle(text.as_bytes())).await {
                    break;
                },
                // The reference reads every frame as UTF-8 text.
                Some(Ok(Message::Binary(bytes))) => if !Box::pin(connection.handle(&bytes)).await {
                    break;
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = socket::expired(token_expires) => {
                connection.state.metrics.auth_expired(Protocol::Pocket.as_str());
                let code = connection.state.config.protocols.pocket.auth_failed_close_code;
                connection.outbox.close(code, "Authentication failed: the token expired").await;
                break;
            }
            _ = too_slow.cancelled() => {
                connection.outbox.close(close_code::TRY_AGAIN_LATER, "too slow: reconnect and pull again").await;
                break;
            }
            _ = connection.state.shutdown.cancelled() => {
                connection.outbox.close(close_code::GOING_AWAY, "Server shutting down").await;
                break;
            }
        }
    }
    for (_, broadcast) in connection.broadcasts.drain() {
        broadcast.abort();
    }
    drop(connection);
    drop(slot);
    let _ = writer.await;
}

struct Connection {
    state: AppState,
    identity: Identity,
    /// This connection's id: the session id of the events it appends.
    session: String,
    outbox: Outbox,
    limiter: RateLimiter,
    /// The checkpoint of the client's last push or pull, echoed in its broadcasts.
    last_checkpoint: Arc<Mutex<Option<Checkpoint>>>,
    /// Broadcast tasks by collection.
    broadcasts: HashMap<String, JoinHandle<()>>,
    /// Cancelled when a broadcast falls too far behind: the connection then closes.
    too_slow: CancellationToken,
}

impl Connection {
    /// Handles one frame; `false` closes the socket.
    async fn handle(&mut self, frame: &[u8]) -> bool {
        let text = String::from_utf8_lossy(frame);
        // Counted before the ping check, as in the reference: a rate-limited ping gets an error.
        let verdict = self.limiter.check();
        if verdict != Verdict::Allowed {
            let id = client::peek_request_id(&text);
            self.send(ErrorMessage::rate_limited(id.as_deref(), now_ms()).into()).await;
            if verdict == Verdict::Flooding {
                socket::close_flooder(&self.outbox, &self.state.metrics, Protocol::Pocket).await;
                return false;
            }
            return true;
        }
        let limit = self.state.config.limits.max_frame_bytes;
        if frame.len() > limit {
            let id = client::peek_request_id(&text);
            self.send(session::too_large(id.as_deref(), frame.len(), limit).into()).await;
            return true;
        }
        let reply = match client::decode_client_frame_bytes(frame) {
            Ok(ClientFrame::Ping) => {
                self.outbox.text(PONG).await;
                return true;
            }
            Ok(ClientFrame::Message(ClientMessage::Push(push))) => {
                self.remember(push.checkpoint.clone());
                // Follow only what was pushed successfully, from before the push.
                let collection = push.collection.clone();
                let valid = session::check_collection("push", &push.id, &collection).is_ok();
                let start = if valid && self.identity.can_read(&collection) && !self.follows(&collection) {
                    self.head_of(&collection).await
                } else {
                    None
                };
                let reply = session::push(&self.state, &self.identity, &self.session, push).await;
                if let (Ok(_), Some(start)) = (&reply, start) {
                    self.follow(&collection, start);
                }
                reply
            }
            Ok(ClientFrame::Message(ClientMessage::Pull(pull))) => {
                self.remember(Some(pull.checkpoint.clone()));
                if let Ok(readable) = session::readable_collections(&self.identity, &pull) {
                    for collection in readable {
                        if !self.follows(collection)
                            && let Some(start) = self.head_of(collection).await
                        {
                            self.follow(collection, start);
                        }
                    }
                }
                session::pull(&self.state, &self.identity, &pull).await
            }
            Err(error) => {
                tracing::debug!(%error, "pocket: undecodable frame");
                Err(ErrorMessage::from_decode_error(&error, now_ms()))
            }
        };
        self.send(reply.unwrap_or_else(ServerMessage::from)).await;
        true
    }

    async fn send(&self, message: ServerMessage) {
        self.outbox.text(message.to_json()).await;
    }

    fn remember(&self, checkpoint: Option<Checkpoint>) {
        if let Some(checkpoint) = checkpoint {
            *self.last_checkpoint.lock().expect("checkpoint lock") = Some(checkpoint);
        }
    }

    fn follows(&self, collection: &str) -> bool {
        self.broadcasts.contains_key(collection)
    }

    /// The collection's head now: where following it starts, read before the request that
    /// starts it is answered.
    async fn head_of(&self, collection: &str) -> Option<SeqNum> {
        match self.state.log.head(&store_key(collection)).await {
            Ok(head) => Some(head),
            Err(error) => {
                tracing::warn!(%collection, %error, "pocket: cannot follow a collection");
                None
            }
        }
    }

    /// Starts broadcasting `collection`'s changes committed after `start` to this client.
    /// Following a collection registers its store (an empty one, as a first push would), so
    /// that its first change reaches readers who were waiting for it.
    fn follow(&mut self, collection: &str, start: SeqNum) {
        let task = broadcast(
            self.state.log.clone(),
            collection.to_owned(),
            start,
            self.session.clone(),
            self.outbox.clone(),
            self.last_checkpoint.clone(),
            self.too_slow.clone(),
        );
        self.broadcasts.insert(collection.to_owned(), tokio::spawn(task));
    }
}

/// Sends every change committed to `collection` from now on, except this connection's own, as
/// `pull-response` broadcasts. The real engine drops them; raw clients may use them.
/// A client too slow to take them is disconnected (it resumes from its checkpoint), never
/// skipped.
async fn broadcast(
    log: EventLog,
    collection: String,
    after: SeqNum,
    session: String,
    outbox: Outbox,
    last_checkpoint: Arc<Mutex<Option<Checkpoint>>>,
    too_slow: CancellationToken,
) {
    let key = store_key(&collection);
    // Storage calls boxed, as in `serve`: what a follower holds while it waits stays small.
    let mut subscription = match Box::pin(log.subscribe(&key, after)).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%collection, %error, "pocket: cannot follow a collection");
            return;
        }
    };
    loop {
        match subscription.next().await {
            Ok(events) => {
                let others: Vec<_> = events.iter().filter(|e| e.body.session_id != session).cloned().collect();
                let changes = session::outgoing(&others);
                if changes.is_empty() {
                    continue;
                }
                let checkpoint = last_checkpoint.lock().expect("checkpoint lock").clone();
                let message = PullResponse::broadcast(now_ms(), collection.clone(), changes, checkpoint);
                if !outbox.text(ServerMessage::from(message).to_json()).await {
                    return;
                }
            }
            Err(SubscriptionEnded::Reset) => {
                // The store was emptied (event API): follow it afresh.
                match Box::pin(subscribe_at_head(&log, &key)).await {
                    Ok(fresh) => subscription = fresh,
                    Err(_) => return,
                }
            }
            Err(end) => {
                tracing::info!(%collection, reason = %end, "pocket: closing a socket whose broadcasts ended");
                too_slow.cancel();
                return;
            }
        }
    }
}

async fn subscribe_at_head(log: &EventLog, key: &StoreKey) -> Result<Subscription, EventLogError> {
    let head = log.head(key).await?;
    log.subscribe(key, head).await
}
