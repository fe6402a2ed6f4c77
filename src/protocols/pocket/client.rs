//! Client → server: `push`, `pull` and the raw text `ping`, over a
//! WebSocket text or binary frame, or as an HTTP POST body.

use serde::{Deserialize, Serialize};
use serde_json::Number;
use serde_json::value::RawValue;

use super::change::{ChangeEvent, decode_change};
use super::checkpoint::{Checkpoint, decode_checkpoint};
use super::decode::{
    DecodeError, DecodeErrorKind, items, optional, parse_envelope, present, required, string_if_present,
};

/// The exact text of the keepalive frame. Not JSON; nothing else counts.
pub const PING: &str = "ping";

/// The reference server's default and the real client's `batchSize` default.
pub const DEFAULT_PULL_LIMIT: u64 = 100;

/// `push`: every queued change of one collection, plus the client's full checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Push {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Number>,
    pub collection: String,
    pub changes: Vec<ChangeEvent>,
    /// The real client always sends one; the server only records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// `pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pull {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Number>,
    /// May be empty (a client with no `collections` setting and nothing queued).
    pub collections: Vec<String>,
    /// Required: the reference crashes without it; a missing `sequences` inside
    /// it reads as all zeros.
    pub checkpoint: Checkpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl Pull {
    /// The page size to serve: `limit`, or `default` when absent or 0, capped at `max`.
    /// Never 0 (a 0-row page with `hasMore` would loop the client forever).
    pub fn page_size(&self, default: u64, max: u64) -> u64 {
        match self.limit {
            None | Some(0) => default,
            Some(n) => n,
        }
        .min(max)
        .max(1)
    }
}

/// A decoded JSON message from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    Push(Push),
    Pull(Pull),
}

impl ClientMessage {
    pub fn id(&self) -> &str {
        match self {
            Self::Push(p) => &p.id,
            Self::Pull(p) => &p.id,
        }
    }

    /// One text frame / HTTP body, keys in the real client's order.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ClientMessage always serializes")
    }
}

/// One WebSocket frame from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The text `ping`: answer with the text `pong` ([`super::server::PONG`]).
    Ping,
    Message(ClientMessage),
}

/// Decodes one WebSocket text frame.
pub fn decode_client_frame(frame: &str) -> Result<ClientFrame, DecodeError> {
    if frame == PING {
        return Ok(ClientFrame::Ping);
    }
    decode_client_message(frame).map(ClientFrame::Message)
}

/// Decodes one WebSocket binary frame: the reference reads every frame as UTF-8 text.
pub fn decode_client_frame_bytes(frame: &[u8]) -> Result<ClientFrame, DecodeError> {
    decode_client_frame(utf8(frame)?)
}

/// The routes of the client's HTTP transport. Every route lives at the server root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRoute {
    /// `POST /sync/push`: only a `push`.
    Push,
    /// `POST /sync/pull`: only a `pull`.
    Pull,
    /// `POST /sync`: where the client sends any other message type; accepts either.
    Any,
}

impl HttpRoute {
    /// `/sync/push`, `/sync/pull`, `/sync`; `None` for any other path (including `/health`,
    /// which is a GET with no body).
    pub fn from_path(path: &str) -> Option<Self> {
        match path {
            "/sync/push" => Some(Self::Push),
            "/sync/pull" => Some(Self::Pull),
            "/sync" => Some(Self::Any),
            _ => None,
        }
    }
}

/// Decodes an HTTP POST body: the same JSON as a frame, but no text `ping`, and the type
/// must suit the route (a `pull` posted to `/sync/push` is an invalid message).
pub fn decode_http_body(route: HttpRoute, body: &[u8]) -> Result<ClientMessage, DecodeError> {
    let message = decode_client_message(utf8(body)?)?;
    let (wanted, fits) = match (route, &message) {
        (HttpRoute::Push, ClientMessage::Pull(_)) => ("push", false),
        (HttpRoute::Pull, ClientMessage::Push(_)) => ("pull", false),
        _ => ("", true),
    };
    if fits {
        return Ok(message);
    }
    let got = if wanted == "push" { "pull" } else { "push" };
    Err(DecodeError::new(
        Some(message.id().to_owned()),
        DecodeErrorKind::InvalidMessage {
            message_type: got.to_owned(),
            detail: format!("a {got} was posted to /sync/{wanted}"),
        },
    ))
}

/// The `id` of a frame when it is a JSON object with a string `id`, without decoding the rest.
/// For replies to frames that are dropped undecoded (rate limiting).
pub fn peek_request_id(frame: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(default, borrow, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    if !frame.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str::<IdOnly<'_>>(frame).ok().and_then(|e| string_if_present(e.id))
}

fn utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError::new(None, DecodeErrorKind::InvalidUtf8))
}

#[derive(Deserialize)]
struct MessageFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    timestamp: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    collection: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    collections: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    changes: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    checkpoint: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
}

/// Decodes one JSON message (a text frame other than `ping`, or an HTTP body).
pub fn decode_client_message(frame: &str) -> Result<ClientMessage, DecodeError> {
    let (request_id, message_type) = parse_envelope(frame)?;
    if message_type != "push" && message_type != "pull" {
        return Err(DecodeError::new(request_id, DecodeErrorKind::UnknownType(message_type)));
    }
    let invalid = |detail: String| {
        DecodeError::new(
            request_id.clone(),
            DecodeErrorKind::InvalidMessage { message_type: message_type.clone(), detail },
        )
    };
    // parse_envelope already checked the syntax, so this cannot fail on anything but a
    // duplicated key.
    let fields: MessageFields<'_> = serde_json::from_str(frame).map_err(|e| invalid(e.to_string()))?;
    let id: String = required(fields.id, "id").map_err(invalid)?;
    let timestamp: Option<Number> = optional(fields.timestamp, "timestamp").map_err(invalid)?;

    if message_type == "push" {
        let collection: String = required(fields.collection, "collection").map_err(invalid)?;
        let changes = items(fields.changes, "changes")
            .and_then(|raw| {
                raw.into_iter().enumerate().map(|(i, c)| decode_change(c, &format!("changes[{i}]"))).collect()
            })
            .map_err(invalid)?;
        let checkpoint = optional_checkpoint(fields.checkpoint).map_err(invalid)?;
        Ok(ClientMessage::Push(Push { id, timestamp, collection, changes, checkpoint }))
    } else {
        let collections: Vec<String> = required(fields.collections, "collections").map_err(invalid)?;
        let checkpoint = optional_checkpoint(fields.checkpoint)
            .and_then(|c| c.ok_or_else(|| "missing field `checkpoint`".to_owned()))
            .map_err(invalid)?;
        let limit: Option<u64> = optional(fields.limit, "limit").map_err(invalid)?;
        Ok(ClientMessage::Pull(Pull { id, timestamp, collections, checkpoint, limit }))
    }
}

fn optional_checkpoint(raw: Option<&RawValue>) -> Result<Option<Checkpoint>, String> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => decode_checkpoint(r, "checkpoint").map(Some),
    }
}
