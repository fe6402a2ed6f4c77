//! What both transports share: who the client is and what it may do, and the answers to `push`
//! and `pull` on the event log.

use super::change::ChangeEvent;
use super::checkpoint::{Checkpoint, Sequences};
use super::client::{DEFAULT_PULL_LIMIT, Pull, Push};
use super::server::{ChangesByCollection, ErrorCode, ErrorMessage, PullResponse, PushResponse, ServerMessage};
use super::writer::{PushFailed, PushRequest, now_ms, stored_change};
use crate::auth::Claims;
use crate::eventlog::{Event, Protocol, SeqNum, StoreKey, check_store_name};
use crate::server::AppState;

/// The largest page a pull may ask for; larger `limit`s are served in pages of this size.
pub const MAX_PULL_LIMIT: u64 = 1000;
/// Most collections one pull may name.
pub const MAX_PULL_COLLECTIONS: usize = 1000;
/// What a change adds to a response beyond its stored text (the new `sequence`, separators).
const CHANGE_OVERHEAD: usize = 32;

/// An authenticated client: what its token allows.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The token's `userId` (or `sub`); `None` for anonymous clients and tokens without one.
    pub user: Option<String>,
    grant: Grant,
}

#[derive(Debug, Clone)]
enum Grant {
    /// Anonymous access, when allowed: every collection.
    Anonymous,
    Token(Claims),
}

impl Identity {
    pub fn can_read(&self, collection: &str) -> bool {
        match &self.grant {
            Grant::Anonymous => true,
            Grant::Token(claims) => claims.can_read(collection),
        }
    }

    pub fn can_write(&self, collection: &str) -> bool {
        match &self.grant {
            Grant::Anonymous => true,
            Grant::Token(claims) => claims.can_write(collection),
        }
    }

    /// The token's `exp`: when a socket admitted with it must close.
    pub fn expires(&self) -> Option<u64> {
        match &self.grant {
            Grant::Anonymous => None,
            Grant::Token(claims) => claims.exp,
        }
    }
}

/// Checks a client's token (`?token=` on WebSocket, `Authorization: Bearer` on HTTP; an empty
/// one counts as none). A token that is sent must verify whenever a key is configured, even when
/// anonymous access is on: an expired token should say so rather than pass as anonymous.
pub async fn authenticate(state: &AppState, token: Option<&str>) -> Result<Identity, String> {
    let config = &state.config.protocols.pocket;
    let token = token.filter(|t| !t.is_empty());
    if let Some(token) = token
        && state.tokens.is_configured()
    {
        let claims = state.tokens.verify(token).await.map_err(|e| e.to_string())?;
        return Ok(Identity { user: claims.user_id.clone(), grant: Grant::Token(claims) });
    }
    if config.allow_anonymous {
        return Ok(Identity { user: None, grant: Grant::Anonymous });
    }
    Err(match token {
        Some(_) => {
            "no token verification key is configured (auth.jwt_secret, auth.jwt_public_key or auth.jwks_url)".into()
        }
        None => "a token is required".into(),
    })
}

/// A refused request, as the error reply to send (and, over HTTP, its status).
pub type Refusal = ErrorMessage;

/// `FORBIDDEN` (Junction's code): the token does not allow this.
pub fn forbidden(request_id: &str, detail: String) -> Refusal {
    ErrorMessage {
        id: request_id.to_owned(),
        timestamp: now_ms(),
        code: ErrorCode::Other("FORBIDDEN".into()),
        message: detail,
        retryable: false,
    }
}

/// `MESSAGE_TOO_LARGE` (Junction's code): over `limits.max_frame_bytes`; nothing was done.
pub fn too_large(request_id: Option<&str>, size: usize, limit: usize) -> Refusal {
    ErrorMessage {
        id: request_id.map_or_else(|| format!("{}{}", super::server::ERROR_ID_PREFIX, now_ms()), str::to_owned),
        timestamp: now_ms(),
        code: ErrorCode::Other("MESSAGE_TOO_LARGE".into()),
        message: format!("Message of {size} bytes is over the limit of {limit} bytes"),
        retryable: false,
    }
}

/// Collection names become store names, so they follow the store-name rule (not empty, at most
/// 512 bytes, no NUL or other control characters).
pub fn check_collection(message_type: &str, request_id: &str, name: &str) -> Result<(), Refusal> {
    check_store_name(name).map_err(|problem| {
        let detail = format!("collection name: {problem}");
        ErrorMessage::invalid_message(Some(request_id), now_ms(), message_type, &detail)
    })
}

/// The store of a collection whose name passed [`check_collection`].
pub fn store_key(collection: &str) -> StoreKey {
    StoreKey { protocol: Protocol::Pocket, name: collection.to_owned() }
}

/// Applies a push: every change the server accepts is stored (in one append) before the
/// push-response is returned; rejected changes are reported as conflicts and stored nowhere.
pub async fn push(state: &AppState, identity: &Identity, session: &str, push: Push) -> Result<ServerMessage, Refusal> {
    check_collection("push", &push.id, &push.collection)?;
    if !identity.can_write(&push.collection) {
        return Err(forbidden(&push.id, format!("Not allowed to write collection {:?}", push.collection)));
    }
    let checkpoint = push.checkpoint.unwrap_or_default();
    let node_id = checkpoint.node_id.clone().unwrap_or_default();
    if node_id.contains('\0') {
        return Err(ErrorMessage::invalid_message(Some(&push.id), now_ms(), "push", "checkpoint.nodeId contains NUL"));
    }
    let request = PushRequest {
        changes: push.changes,
        node_id,
        session: session.to_owned(),
        client_checkpoint: checkpoint.sequence(&push.collection),
        strategy: state.pocket.strategy_for(&push.collection),
    };
    let outcome = state
        .pocket
        .writers()
        .push(&state.log, &state.shutdown, &push.collection, request)
        .await
        .map_err(|failure| internal(&push.id, &failure))?;
    let sequences: Sequences = [(push.collection, outcome.checkpoint)].into_iter().collect();
    let now = now_ms();
    Ok(PushResponse::new(push.id, now, outcome.conflicts, Checkpoint::server(sequences, now)).into())
}

fn internal(request_id: &str, failure: &PushFailed) -> Refusal {
    let message = match failure {
        PushFailed::ShuttingDown => "The server is shutting down; nothing was stored",
        PushFailed::Contention => "The collection is too busy; nothing was stored",
        PushFailed::Log(_) => "Internal error; nothing was stored",
    };
    ErrorMessage::internal_error(Some(request_id), now_ms(), message)
}

/// The collections of a pull that the client may read, in order, without repeats. Refuses the
/// whole pull when a name is invalid or there are too many.
pub fn readable_collections<'a>(identity: &Identity, pull: &'a Pull) -> Result<Vec<&'a str>, Refusal> {
    if pull.collections.len() > MAX_PULL_COLLECTIONS {
        let detail = format!("at most {MAX_PULL_COLLECTIONS} collections per pull");
        return Err(ErrorMessage::invalid_message(Some(&pull.id), now_ms(), "pull", &detail));
    }
    let mut readable: Vec<&str> = Vec::new();
    for name in &pull.collections {
        check_collection("pull", &pull.id, name)?;
        if identity.can_read(name) && !readable.contains(&name.as_str()) {
            readable.push(name);
        }
    }
    Ok(readable)
}

/// Answers a pull: per readable collection, up to `limit` changes after the client's checkpoint,
/// each with its server sequence; the checkpoint of each is the last sequence returned (else the
/// client's own value); `hasMore` when some collection has more. Collections the client may not
/// read are answered as if empty, with its own checkpoint value.
///
/// A response also stops growing at about `limits.max_frame_bytes` of changes (always at least
/// one change, so a `hasMore` comes with progress); the client pulls the rest at once.
pub async fn pull(state: &AppState, identity: &Identity, pull: &Pull) -> Result<ServerMessage, Refusal> {
    let readable = readable_collections(identity, pull)?;
    let page = pull.page_size(DEFAULT_PULL_LIMIT, MAX_PULL_LIMIT);
    let budget = state.config.limits.max_frame_bytes;
    let mut used = 0;
    let mut changes = ChangesByCollection::new();
    let mut sequences = Sequences::new();
    let mut has_more = false;
    for name in &pull.collections {
        if sequences.get(name).is_some() {
            continue; // named twice
        }
        let after = pull.checkpoint.sequence(name);
        sequences.set(name.as_str(), after);
        if !readable.contains(&name.as_str()) {
            continue;
        }
        if used >= budget {
            has_more = true; // this one waits for the next pull
            continue;
        }
        let mut events = state.log.read(&store_key(name), SeqNum(after), page as u32 + 1).await.map_err(|error| {
            tracing::error!(collection = %name, %error, "pocket: pull failed");
            ErrorMessage::internal_error(Some(&pull.id), now_ms(), "Internal error")
        })?;
        if events.len() as u64 > page {
            events.truncate(page as usize);
            has_more = true;
        }
        let mut fits = 0;
        for event in &events {
            let size = event.body.args.get().len() + CHANGE_OVERHEAD;
            if used > 0 && used + size > budget {
                break;
            }
            used += size;
            fits += 1;
        }
        if fits < events.len() {
            events.truncate(fits);
            used = budget;
            has_more = true;
        }
        if let Some(last) = events.last() {
            sequences.set(name.as_str(), last.seq.0);
        }
        changes.push(name.as_str(), outgoing(&events));
    }
    let now = now_ms();
    Ok(PullResponse {
        id: pull.id.clone(),
        timestamp: now,
        changes,
        checkpoint: Checkpoint::server(sequences, now),
        has_more,
    }
    .into())
}

/// Stored changes as they go out: each with its server sequence. What is stored was
/// validated when it was pushed, so the plain decoder suffices here (it runs once per follower
/// for every broadcast); an event that is not a change is left out.
pub fn outgoing(events: &[Event]) -> Vec<ChangeEvent> {
    events
        .iter()
        .filter_map(|event| {
            let change =
                serde_json::from_str::<ChangeEvent>(event.body.args.get()).ok().or_else(|| stored_change(event))?;
            Some(ChangeEvent { sequence: event.seq.0, ..change })
        })
        .collect()
}
