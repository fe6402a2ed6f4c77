//! The socket loop: decodes each message with the pure codec, checks limits, auth and
//! permissions, and hands document work to the document's room. Replies go out in the framing
//! the message came in (binary for the SDKs, JSON text for JSON clients).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::chunk::{ChunkAssembler, ChunkError, ChunkLimits};
use super::document::{FieldWrites, TextWrite, is_valid_text_state};
use super::frame::{self, Framing};
use super::message::{
    AuthCredential, AuthError, AuthSuccess, BatchOpKind, ClientMessage, DecodeErrorKind, DeltaBatch, ErrorMessage,
    Incoming, Permissions, ServerMessage,
};
use super::policy::{self, close};
use super::raw::{Json, RawObject, VectorClock};
use super::room::{Command, Peer, Rooms, Write, encode, fresh_id};
use crate::auth::Claims;
use crate::eventlog::Protocol;
use crate::limits::{RateLimiter, Verdict};
use crate::metrics::CloseReason;
use crate::protocols::socket::{self, Outbox, close_code};
use crate::server::AppState;

/// Who the socket is, once authenticated.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub claims: Claims,
}

impl Identity {
    /// The anonymous identity of `allow_anonymous`: every permission but admin.
    pub fn anonymous() -> Identity {
        let mut claims = Claims::default();
        claims.permissions.can_read = vec!["*".into()];
        claims.permissions.can_write = vec!["*".into()];
        Identity { user_id: "anonymous".into(), claims }
    }

    pub fn from_claims(claims: Claims) -> Identity {
        Identity { user_id: claims.user_id.clone().unwrap_or_default(), claims }
    }

    fn wire_permissions(&self) -> Permissions {
        let p = &self.claims.permissions;
        Permissions { can_read: p.can_read.clone(), can_write: p.can_write.clone(), is_admin: p.is_admin }
    }
}

/// How the socket starts: authenticated (token in the URL, or anonymous), refused (a bad
/// token in the URL), or waiting for an `auth` message.
pub enum Start {
    Authenticated(Identity),
    BadToken,
    Unauthenticated,
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

pub async fn serve(socket: WebSocket, state: AppState, rooms: Rooms, start: Start) {
    let limits = &state.config.limits;
    let (outbox, mut incoming, writer) =
        socket::split(socket, limits.subscriber_queue.max(16), limits.ws_send_queue_bytes);
    let conn = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let session = format!("{}-conn-{conn}", rooms.instance()).into();
    let mut connection = Connection {
        limiter: RateLimiter::from_limits(&state.config.limits),
        state,
        rooms,
        conn,
        session,
        outbox,
        kick: CancellationToken::new(),
        identity: None,
        auth_framing: Framing::Binary,
        touched: HashSet::new(),
        chunks: None,
    };
    match start {
        Start::Authenticated(identity) => connection.identity = Some(identity),
        Start::Unauthenticated => {}
        Start::BadToken => {
            connection.refuse(Framing::Binary, close::AUTHENTICATION_FAILED).await;
            drop(connection);
            let _ = writer.await;
            return;
        }
    }
    let kick = connection.kick.clone();
    // Only a socket that starts without an identity has to authenticate, and only for so long:
    // otherwise sockets that never send `auth` would hold connection slots forever.
    let mut auth_deadline = connection
        .identity
        .is_none()
        .then(|| Box::pin(tokio::time::sleep(Duration::from_secs(connection.state.config.limits.auth_deadline_secs))));
    loop {
        tokio::select! {
            message = incoming.next() => {
                let keep_open = match message {
                    Some(Ok(Message::Binary(data))) => connection.handle(&data, false).await,
                    Some(Ok(Message::Text(text))) => connection.handle(text.as_bytes(), true).await,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => false,
                    Some(Ok(_)) => true,
                };
                if !keep_open {
                    break;
                }
            }
            _ = socket::expired(connection.token_expires()) => {
                connection.state.metrics.auth_expired(Protocol::SyncKit.as_str());
                connection.refuse(connection.auth_framing, close::AUTHENTICATION_FAILED).await;
                break;
            }
            _ = expired(&mut auth_deadline), if connection.identity.is_none() => {
                connection.auth_deadline_passed().await;
                break;
            }
            _ = kick.cancelled() => {
                connection.outbox.close(close_code::TRY_AGAIN_LATER, "fell behind or the document closed; reconnect").await;
                break;
            }
            _ = connection.state.shutdown.cancelled() => {
                connection.outbox.close(close::GOING_AWAY, close::SERVER_SHUTDOWN).await;
                break;
            }
        }
    }
    connection.leave_rooms().await;
    drop(connection);
    let _ = writer.await;
}

/// Waits for `deadline`, forever if there is none.
async fn expired(deadline: &mut Option<std::pin::Pin<Box<Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

struct Connection {
    state: AppState,
    rooms: Rooms,
    conn: u64,
    session: Arc<str>,
    outbox: Outbox,
    kick: CancellationToken,
    limiter: RateLimiter,
    identity: Option<Identity>,
    /// How the identity's `auth` came (a token in the URL counts as binary): its expiry is
    /// answered the same way.
    auth_framing: Framing,
    /// Documents whose rooms know this connection (told when it closes).
    touched: HashSet<String>,
    /// Created on the first chunk (no SDK sends chunks; most sockets never need one).
    chunks: Option<Box<ChunkAssembler>>,
}

impl Connection {
    fn peer(&self, framing: Framing) -> Peer {
        Peer {
            conn: self.conn,
            session: self.session.clone(),
            outbox: self.outbox.clone(),
            framing,
            kick: self.kick.clone(),
            metrics: self.state.metrics.clone(),
        }
    }

    /// When the identity's token expires (an expired token gets `auth_error` and a close, as a
    /// bad one does).
    fn token_expires(&self) -> Option<tokio::time::Instant> {
        socket::token_deadline(self.identity.as_ref().and_then(|identity| identity.claims.exp))
    }

    /// Sends `message` to this socket (waiting if its queue is full); `false` if it is gone.
    async fn reply(&self, framing: Framing, message: ServerMessage) -> bool {
        self.outbox.send(encode(&message, framing, &fresh_id())).await
    }

    async fn error(&self, framing: Framing, error: ErrorMessage) -> bool {
        self.reply(framing, ServerMessage::Error(error)).await
    }

    /// `auth_error`, then close 1008.
    async fn refuse(&self, framing: Framing, reason: &str) {
        if reason == close::AUTHENTICATION_FAILED {
            self.reply(framing, ServerMessage::AuthError(AuthError::authentication_failed())).await;
        }
        self.outbox.close(close::POLICY_VIOLATION, reason).await;
    }

    /// No `auth` in time: the error and close of an `auth` without a token.
    async fn auth_deadline_passed(&self) {
        tracing::info!(conn = self.conn, "synckit: closing a socket that did not authenticate in time");
        self.state.metrics.connection_closed(Protocol::SyncKit.as_str(), CloseReason::AuthDeadline);
        self.error(Framing::Binary, ErrorMessage::authentication_required()).await;
        self.refuse(Framing::Binary, close::AUTHENTICATION_REQUIRED).await;
    }

    /// Handles one WebSocket message; `false` closes the socket.
    async fn handle(&mut self, data: &[u8], ws_text: bool) -> bool {
        // Every message counts, whatever it holds: a flood of malformed or oversized frames too.
        let verdict = self.limiter.check();
        if verdict != Verdict::Allowed {
            let framing = frame::detect_framing(data, ws_text);
            let open = self.error(framing, ErrorMessage::rate_limited()).await;
            if verdict == Verdict::Flooding {
                socket::close_flooder(&self.outbox, &self.state.metrics, Protocol::SyncKit).await;
                return false;
            }
            return open;
        }
        let max = self.state.config.protocols.synckit.max_message_bytes;
        if data.len() > max {
            let framing = frame::detect_framing(data, ws_text);
            return self.error(framing, ErrorMessage::message_too_large(data.len(), max)).await;
        }
        let decoded = Incoming::decode(data, ws_text);
        if let Err(error) = &decoded
            && matches!(error.kind, DecodeErrorKind::Frame(_))
        {
            return self.error(error.framing, error.to_error()).await;
        }
        // Chunks are reassembled before anything else (the reference does the same).
        let decoded = match decoded {
            Ok(Incoming { message: ClientMessage::DeltaBatchChunk(chunk), framing, .. }) => {
                let limits = ChunkLimits { max_pending_bytes: max, ..ChunkLimits::default() };
                let assembler = self.chunks.get_or_insert_with(|| Box::new(ChunkAssembler::new(limits)));
                let now = super::room::now_ms();
                assembler.expire(now);
                match assembler.accept(&chunk, now) {
                    Ok(None) => return true,
                    Ok(Some(whole)) => {
                        let decoded = Incoming::decode(&whole, false);
                        if matches!(decoded, Ok(Incoming { message: ClientMessage::DeltaBatchChunk(_), .. })) {
                            tracing::debug!("synckit: a chunk set held another chunk; dropped");
                            return true;
                        }
                        if let Err(error) = &decoded
                            && matches!(error.kind, DecodeErrorKind::Frame(_))
                        {
                            return self.error(error.framing, error.to_error()).await;
                        }
                        decoded
                    }
                    Err(ChunkError::TooLarge { size, max }) => {
                        // Reassembled, it would be over the message-size limit: refused as such.
                        return self.error(framing, ErrorMessage::message_too_large(size, max)).await;
                    }
                    Err(error) => {
                        // The reference never answers chunk problems.
                        tracing::debug!(%error, "synckit: chunk refused");
                        return true;
                    }
                }
            }
            other => other,
        };
        let framing = match &decoded {
            Ok(incoming) => incoming.framing,
            Err(error) => error.framing,
        };
        let incoming = match decoded {
            Ok(incoming) => incoming,
            Err(error) => return self.error(framing, error.to_error()).await,
        };
        self.dispatch(incoming).await
    }

    async fn dispatch(&mut self, incoming: Incoming) -> bool {
        let framing = incoming.framing;
        let message = &incoming.message;
        match message {
            ClientMessage::Ping => return self.reply(framing, ServerMessage::Pong).await,
            ClientMessage::Auth(auth) => return self.authenticate(framing, auth.credential()).await,
            ClientMessage::Pong
            | ClientMessage::Ack(_)
            | ClientMessage::Connect
            | ClientMessage::SnapshotRequest
            | ClientMessage::SnapshotUpload
            | ClientMessage::DeltaBatchChunk(_) => return true,
            _ => {}
        }
        let Some(identity) = self.identity.clone() else {
            return self.error(framing, ErrorMessage::not_authenticated()).await;
        };
        let settings = &self.state.config.protocols.synckit;
        let ack = incoming.ack_message_id(&fresh_id());
        match incoming.message {
            ClientMessage::Subscribe(doc) => {
                if policy::validate_document_id(&doc.document_id).is_ok()
                    && settings.document_whitelist
                    && !policy::demo_whitelist_allows(&doc.document_id)
                {
                    return self.error(framing, ErrorMessage::access_denied()).await;
                }
                return self.subscribe(framing, &identity, &doc.document_id, incoming.id, None).await;
            }
            ClientMessage::SyncRequest(request) => {
                return self
                    .subscribe(framing, &identity, &request.document_id, incoming.id, request.vector_clock)
                    .await;
            }
            ClientMessage::SyncStep1(step) => {
                // Nobody sends it, and sync_step2 would reach an SDK as `error`: answer
                // with what a sync_request gets.
                return self.subscribe(framing, &identity, &step.document_id, incoming.id, None).await;
            }
            ClientMessage::Unsubscribe(doc) if self.touched.contains(&doc.document_id) => {
                self.rooms.send_if_open(&doc.document_id, Command::Unsubscribe { conn: self.conn }).await;
            }
            ClientMessage::Delta(delta) => {
                if let Err(error) = policy::validate_document_id(&delta.document_id) {
                    return self.error(framing, error).await;
                }
                if !identity.claims.can_write(&delta.document_id) {
                    return self.error(framing, ErrorMessage::permission_denied(&delta.document_id)).await;
                }
                let mut fields = RawObject::new();
                for (field, value) in delta.changes() {
                    fields.insert(field, value.to_owned());
                }
                let write = Write {
                    peer: self.peer(framing),
                    ack: ack.clone(),
                    subscribe: identity.claims.can_read(&delta.document_id),
                    batch: false,
                    client_id: delta.client_id.clone().unwrap_or_else(|| identity.user_id.clone()),
                    fields: Some(FieldWrites { fields, clock: delta.clock.clone() }),
                    text: None,
                    relays: Vec::new(),
                };
                self.send_to_room(&delta.document_id, Command::Write(Box::new(write))).await;
            }
            ClientMessage::DeltaBatch(ref batch) => {
                let document_id = batch.document_id.clone();
                if let Err(error) = policy::validate_document_id(&document_id) {
                    return self.error(framing, error).await;
                }
                if !identity.claims.can_write(&document_id) {
                    return self.error(framing, ErrorMessage::permission_denied(&document_id)).await;
                }
                let Some((fields, text, relays)) = batch_writes(batch) else {
                    return self.error(framing, ErrorMessage::delta_batch_application_failed(&document_id)).await;
                };
                let write = Write {
                    peer: self.peer(framing),
                    ack: ack.clone(),
                    subscribe: identity.claims.can_read(&document_id),
                    batch: true,
                    client_id: batch_client_id(batch).unwrap_or_else(|| identity.user_id.clone()),
                    fields,
                    text,
                    relays,
                };
                self.send_to_room(&document_id, Command::Write(Box::new(write))).await;
            }
            ClientMessage::AwarenessSubscribe(doc) => {
                if let Err(error) = policy::validate_document_id(&doc.document_id) {
                    return self.error(framing, error).await;
                }
                if !identity.claims.can_read(&doc.document_id) {
                    return self.error(framing, ErrorMessage::permission_denied(&doc.document_id)).await;
                }
                self.send_to_room(&doc.document_id, Command::AwarenessSubscribe { peer: self.peer(framing) }).await;
            }
            ClientMessage::AwarenessUpdate(update) => {
                if let Err(error) = policy::validate_document_id(&update.document_id) {
                    return self.error(framing, error).await;
                }
                if !identity.claims.can_read(&update.document_id) {
                    return self.error(framing, ErrorMessage::permission_denied(&update.document_id)).await;
                }
                let document_id = update.document_id.clone();
                self.send_to_room(&document_id, Command::AwarenessUpdate { peer: self.peer(framing), update }).await;
            }
            _ => {}
        }
        true
    }

    /// subscribe / sync_request / sync_step1: checks, then the room answers with a `sync_response`.
    async fn subscribe(
        &mut self,
        framing: Framing,
        identity: &Identity,
        document_id: &str,
        id: Option<Json>,
        client_clock: Option<VectorClock>,
    ) -> bool {
        if let Err(error) = policy::validate_document_id(document_id) {
            return self.error(framing, error).await;
        }
        if !identity.claims.can_read(document_id) {
            return self.error(framing, ErrorMessage::permission_denied(document_id)).await;
        }
        let request_id = id.unwrap_or_else(|| Json::string(&fresh_id()));
        self.send_to_room(document_id, Command::Subscribe { peer: self.peer(framing), request_id, client_clock }).await;
        true
    }

    async fn send_to_room(&mut self, document_id: &str, command: Command) {
        if !self.touched.contains(document_id) {
            self.touched.insert(document_id.to_owned());
        }
        self.rooms.send(document_id, command).await;
    }

    /// `auth`: a token replaces the socket's identity; no token is anonymous when
    /// allowed; failures close the socket.
    async fn authenticate(&mut self, framing: Framing, credential: AuthCredential<'_>) -> bool {
        let allow_anonymous = self.state.config.protocols.synckit.allow_anonymous;
        match credential {
            AuthCredential::Token(token) => match self.state.tokens.verify(token).await {
                Ok(claims) => {
                    let identity = Identity::from_claims(claims);
                    let success = AuthSuccess {
                        user_id: identity.user_id.clone(),
                        permissions: Some(identity.wire_permissions()),
                    };
                    self.identity = Some(identity);
                    self.auth_framing = framing;
                    self.reply(framing, ServerMessage::AuthSuccess(success)).await
                }
                Err(error) => {
                    tracing::info!(%error, "synckit: refused a token");
                    self.refuse(framing, close::AUTHENTICATION_FAILED).await;
                    false
                }
            },
            AuthCredential::ApiKey(_) => self.error(framing, ErrorMessage::api_key_not_implemented()).await,
            AuthCredential::None if allow_anonymous => {
                let identity = Identity::anonymous();
                let success = AuthSuccess::anonymous();
                self.identity = Some(identity);
                self.reply(framing, ServerMessage::AuthSuccess(success)).await
            }
            AuthCredential::None => {
                self.error(framing, ErrorMessage::authentication_required()).await;
                self.refuse(framing, close::AUTHENTICATION_REQUIRED).await;
                false
            }
        }
    }

    async fn leave_rooms(&mut self) {
        for document_id in std::mem::take(&mut self.touched) {
            self.rooms
                .send_if_open(&document_id, Command::Leave { conn: self.conn, session: self.session.clone() })
                .await;
        }
    }
}

/// Splits a `delta_batch` into what is stored and what is only relayed; `None` when a text
/// state cannot be merged (then nothing of the batch is written).
fn batch_writes(batch: &DeltaBatch) -> Option<(Option<FieldWrites>, Option<TextWrite>, Vec<RawObject>)> {
    let mut fields = RawObject::new();
    let mut clock: Option<VectorClock> = None;
    let mut text = None;
    let mut relays = Vec::new();
    for op in &batch.deltas {
        match op.kind() {
            BatchOpKind::Field { field, value } => {
                fields.insert(field, value.0);
                if let Some(op_clock) = op.clock() {
                    clock.get_or_insert_with(VectorClock::new).merge(&op_clock);
                }
            }
            BatchOpKind::TextState { state } => {
                if !is_valid_text_state(&state) {
                    return None;
                }
                // At most one per batch from the SDK; the newest replaces older ones.
                text = Some(TextWrite { state, clock: op.timestamp().unwrap_or_else(super::room::now_ms) });
            }
            BatchOpKind::LegacyText => relays.push(op.text_relay(None, "server")),
            BatchOpKind::Skipped => {}
        }
    }
    let fields = (!fields.is_empty()).then_some(FieldWrites { fields, clock });
    Some((fields, text, relays))
}

fn batch_client_id(batch: &DeltaBatch) -> Option<String> {
    batch.deltas.iter().find_map(|op| op.client_id())
}
