//! The event-log side of LiveStore, shared by both protocol versions and all transports:
//! connection parameters and auth, pushes, and pull pages.

use std::collections::HashMap;

use super::v04::{MAX_PAGE_BYTES, MAX_PAGE_EVENTS};
use super::wire_event::{SyncMetadata, SyncedEvent, WireEvent};
use crate::auth::Claims;
use crate::eventlog::{
    AppendBatch, AppendError, Event, EventBody, EventLog, EventLogError, NewEvent, Protocol, SeqNum, StoreKey,
};
use crate::server::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    Http,
}

/// What a client says in its connection URL.
#[derive(Debug, Clone)]
pub struct SyncParams {
    pub store_id: String,
    key: StoreKey,
    /// The app's sync payload, decoded. The client encodes it twice, so it is form-decoded,
    /// then percent-decoded once more.
    pub payload: Option<serde_json::Value>,
    /// 0.4 only; 0.3 clients never send it.
    pub transport: Option<Transport>,
}

impl SyncParams {
    /// `query` is already form-decoded (`+` is a space); `payload` needs one more
    /// percent-decoding before it is JSON.
    pub fn parse(query: &HashMap<String, String>) -> Result<SyncParams, String> {
        let store_id = query.get("storeId").ok_or("storeId is missing")?.clone();
        let key = StoreKey::new(Protocol::LiveStore, store_id.clone()).map_err(|e| format!("storeId: {e}"))?;
        let payload = match query.get("payload") {
            None => None,
            Some(encoded) => {
                let text = percent_encoding::percent_decode_str(encoded)
                    .decode_utf8()
                    .map_err(|_| "payload is not UTF-8 after percent-decoding")?;
                Some(serde_json::from_str(&text).map_err(|e| format!("payload is not JSON: {e}"))?)
            }
        };
        let transport = match query.get("transport").map(String::as_str) {
            None => None,
            Some("ws") => Some(Transport::Ws),
            Some("http") => Some(Transport::Http),
            Some(other) => return Err(format!("transport must be ws or http, not {other:?}")),
        };
        Ok(SyncParams { store_id, key, payload, transport })
    }

    pub fn key(&self) -> StoreKey {
        self.key.clone()
    }

    fn auth_token(&self) -> Option<&str> {
        self.payload.as_ref()?.get("authToken")?.as_str()
    }
}

/// What an admitted connection may do with its store.
#[derive(Debug, Clone)]
pub enum Grant {
    /// Anonymous access (when allowed) or a static token: everything.
    Full,
    /// A verified JWT: what its permissions say.
    Token(Claims),
}

impl Grant {
    pub fn can_write(&self, store: &str) -> bool {
        match self {
            Grant::Full => true,
            Grant::Token(claims) => claims.can_write(store),
        }
    }

    /// The token's `exp`: when a socket admitted with it must close.
    pub fn expires(&self) -> Option<u64> {
        match self {
            Grant::Full => None,
            Grant::Token(claims) => claims.exp,
        }
    }
}

/// Checks `payload.authToken` once, at connection time (as `validatePayload` does on
/// Cloudflare). A connection needs read access to its store; each push needs write access.
pub async fn authorize(state: &AppState, params: &SyncParams) -> Result<Grant, String> {
    let config = &state.config.protocols.livestore;
    let token = params.auth_token();
    if let Some(token) = token {
        // Every token is compared, so the time does not tell which one (nearly) matched.
        if config.tokens.iter().fold(false, |found, t| found | crate::auth::secret_matches(token, t)) {
            return Ok(Grant::Full);
        }
        if state.tokens.is_configured() {
            match state.tokens.verify(token).await {
                Ok(claims) if claims.can_read(&params.store_id) => return Ok(Grant::Token(claims)),
                Ok(_) => return Err(format!("the token does not grant access to store {:?}", params.store_id)),
                // With anonymous access on, a bad token just means an anonymous client.
                Err(error) if !config.allow_anonymous => return Err(error.to_string()),
                Err(_) => {}
            }
        }
    }
    if config.allow_anonymous {
        Ok(Grant::Full)
    } else if token.is_some() {
        Err("invalid authToken".into())
    } else {
        Err("payload.authToken is required".into())
    }
}

/// Why a push was not accepted.
#[derive(Debug)]
pub enum PushRefused {
    /// `batch[0].parentSeqNum` is not the head.
    NotOnHead {
        head: SeqNum,
        provided: u64,
    },
    Forbidden,
    Invalid(String),
    Internal,
}

/// Appends a pushed batch: accepted only if its first parent is the store's head; empty
/// batches are accepted without touching the store.
pub async fn push(log: &EventLog, params: &SyncParams, grant: &Grant, batch: &[WireEvent]) -> Result<(), PushRefused> {
    if !grant.can_write(&params.store_id) {
        return Err(PushRefused::Forbidden);
    }
    let Some(first) = batch.first() else { return Ok(()) };
    let provided = first.parent_seq_num;
    let events = batch
        .iter()
        .map(|e| NewEvent {
            seq: SeqNum(e.seq_num),
            parent_seq: SeqNum(e.parent_seq_num),
            body: EventBody {
                name: e.name.clone(),
                // Cloudflare stores an absent `args` as NULL and reads it back as null.
                args: e.args.clone().unwrap_or_else(EventBody::null_args),
                client_id: e.client_id.clone(),
                session_id: e.session_id.clone(),
            },
        })
        .collect();
    match log.append(&params.key(), AppendBatch::Checked { expected_head: SeqNum(provided), events }).await {
        Ok(_) => Ok(()),
        Err(AppendError::HeadMismatch { head }) => Err(PushRefused::NotOnHead { head, provided }),
        Err(AppendError::InvalidBatch(reason)) => Err(PushRefused::Invalid(reason)),
        Err(AppendError::Log(error)) => {
            tracing::error!(store = %params.store_id, %error, "livestore: push failed");
            Err(PushRefused::Internal)
        }
    }
}

pub fn synced(event: &Event) -> SyncedEvent {
    SyncedEvent {
        event: WireEvent {
            name: event.body.name.clone(),
            args: Some(event.body.args.clone()),
            seq_num: event.seq.0,
            parent_seq_num: event.parent_seq.0,
            client_id: event.body.client_id.clone(),
            session_id: event.body.session_id.clone(),
        },
        metadata: Some(SyncMetadata { created_at: event.created_at.clone() }),
    }
}

/// Splits events into pages of at most 100 events and about 900,000 encoded bytes, Cloudflare's
/// page limits.
pub fn paginate(events: &[Event]) -> Vec<Vec<SyncedEvent>> {
    let mut pages = Vec::new();
    let mut page = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = encoded_size(event);
        if !page.is_empty() && (page.len() == MAX_PAGE_EVENTS || bytes + size > MAX_PAGE_BYTES) {
            pages.push(std::mem::take(&mut page));
            bytes = 0;
        }
        bytes += size;
        page.push(synced(event));
    }
    if !page.is_empty() {
        pages.push(page);
    }
    pages
}

/// An upper estimate of one event's share of an encoded page.
fn encoded_size(event: &Event) -> usize {
    const ENVELOPE: usize = 200; // keys, tags, punctuation
    event.body.name.len()
        + event.body.args.get().len()
        + event.body.client_id.len()
        + event.body.session_id.len()
        + event.created_at.len()
        + ENVELOPE
}

/// One page of the initial pull.
pub struct Page {
    pub events: Vec<SyncedEvent>,
    /// Events still to come after this page, up to the head the pull started at.
    pub remaining: u64,
}

/// The initial part of a pull: every event after the cursor up to the head when the pull began,
/// page by page. What comes after that head is the live part (an event-log subscription from
/// [`InitialPull::last_seq`]), so nothing is sent twice or skipped between the two.
pub struct InitialPull {
    key: StoreKey,
    after: SeqNum,
    up_to: SeqNum,
    remaining: u64,
    buffered: std::collections::VecDeque<Vec<SyncedEvent>>,
    pub backend_id: String,
    finished: bool,
}

impl InitialPull {
    pub async fn start(log: &EventLog, key: StoreKey, cursor: Option<u64>) -> Result<InitialPull, EventLogError> {
        let info = log.info(&key).await?;
        let after = SeqNum(cursor.unwrap_or(0));
        let remaining = if info.head > after { log.count_between(&key, after, info.head).await? } else { 0 };
        Ok(InitialPull {
            key,
            after,
            up_to: info.head,
            remaining,
            buffered: Default::default(),
            backend_id: info.backend_id,
            finished: false,
        })
    }

    /// The seq the live part continues from.
    pub fn last_seq(&self) -> SeqNum {
        self.after
    }

    /// The next page, or `None` when done. The first call always yields a page, empty if
    /// there is nothing to send, because both client versions wait for one.
    pub async fn next_page(&mut self, log: &EventLog) -> Result<Option<Page>, EventLogError> {
        if self.finished {
            return Ok(None);
        }
        if self.buffered.is_empty() && self.after < self.up_to {
            let mut events = log.read(&self.key, self.after, MAX_PAGE_EVENTS as u32).await?;
            events.retain(|e| e.seq <= self.up_to);
            self.buffered.extend(paginate(&events));
        }
        let events = self.buffered.pop_front().unwrap_or_default();
        if let Some(last) = events.last() {
            self.after = SeqNum(last.event.seq_num);
        }
        self.remaining = self.remaining.saturating_sub(events.len() as u64);
        if self.buffered.is_empty() && self.after >= self.up_to {
            self.finished = true;
            // Events can only be added above the head the pull started at, so this is exact.
            self.remaining = 0;
        }
        Ok(Some(Page { events, remaining: self.remaining }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn payload_is_decoded_twice() {
        // What the real client sends for payload={authToken:'insecure-token-change-me'},
        // after the form-decoding axum's Query did.
        let encoded = "%7B%22authToken%22%3A%22insecure-token-change-me%22%7D";
        let params = SyncParams::parse(&query(&[("storeId", "my store/1"), ("payload", encoded)])).unwrap();
        assert_eq!(params.store_id, "my store/1");
        assert_eq!(params.auth_token(), Some("insecure-token-change-me"));
        assert_eq!(params.transport, None);
    }

    #[test]
    fn bad_params_are_refused() {
        assert!(SyncParams::parse(&query(&[])).is_err());
        assert!(SyncParams::parse(&query(&[("storeId", "")])).is_err());
        assert!(SyncParams::parse(&query(&[("storeId", "s"), ("payload", "%7Bnot json")])).is_err());
        assert!(SyncParams::parse(&query(&[("storeId", "s"), ("transport", "smoke")])).is_err());
        let ws = SyncParams::parse(&query(&[("storeId", "s"), ("transport", "ws")])).unwrap();
        assert_eq!(ws.transport, Some(Transport::Ws));
    }

    fn event(seq: u64, args_len: usize) -> Event {
        Event {
            seq: SeqNum(seq),
            parent_seq: SeqNum(seq - 1),
            body: EventBody {
                name: "e".into(),
                args: RawValue::from_string(format!("\"{}\"", "x".repeat(args_len))).unwrap(),
                client_id: "c".into(),
                session_id: "s".into(),
            },
            created_at: "2025-01-01T00:00:00.000Z".into(),
            change_pos: crate::eventlog::ChangePos(1),
        }
    }

    #[test]
    fn pages_hold_at_most_100_events_and_900_kb() {
        let small: Vec<Event> = (1..=250).map(|s| event(s, 10)).collect();
        assert_eq!(paginate(&small).iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        let large: Vec<Event> = (1..=20).map(|s| event(s, 100_000)).collect();
        let pages = paginate(&large);
        assert!(pages.iter().all(|p| p.len() <= 8), "{:?}", pages.iter().map(Vec::len).collect::<Vec<_>>());
        assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), 20);
        // One event larger than the byte limit still travels, alone.
        assert_eq!(paginate(&[event(1, 1_000_000)]).len(), 1);
    }
}
