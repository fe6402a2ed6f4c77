//! Server → client: `push-response`, `pull-response` as a reply and as a broadcast, `error`,
//! `ack` (part of the client's protocol, never sent by the reference) and the raw text `pong`.
//!
//! Every message serializes as `{"type":…,"id":…,"timestamp":…, …}` in the reference server's
//! key order. The client matches replies by `id` and `type` only; ids must echo the request.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::change::ChangeEvent;
use super::checkpoint::Checkpoint;
use super::decode::{DecodeError, DecodeErrorKind, json_error_text, parse_envelope};

/// The text reply to the text `ping`. Not JSON.
pub const PONG: &str = "pong";

/// The prefix of a broadcast's id; the reference tests check it.
pub const BROADCAST_ID_PREFIX: &str = "broadcast_";

/// The prefix of the reference's error ids (`error_<ms>`), used here only when the request had
/// no readable id.
pub const ERROR_ID_PREFIX: &str = "error_";

/// `{documentId, serverDocument}`: a pushed change the server rejected because its own copy won.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub document_id: String,
    pub server_document: Box<RawValue>,
}

impl PartialEq for Conflict {
    fn eq(&self, other: &Self) -> bool {
        self.document_id == other.document_id && self.server_document.get() == other.server_document.get()
    }
}

impl Eq for Conflict {}

/// `push-response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    pub id: String,
    pub timestamp: u64,
    /// `true` iff `conflicts` is empty; [`PushResponse::new`] keeps that so.
    pub success: bool,
    /// Left out of the JSON when empty (the reference's shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// Must be present (the client throws without it). Never move `sequences[c]` past
    /// what the client has seen.
    pub checkpoint: Checkpoint,
}

impl PushResponse {
    pub fn new(
        request_id: impl Into<String>,
        timestamp_ms: u64,
        conflicts: Vec<Conflict>,
        checkpoint: Checkpoint,
    ) -> Self {
        Self { id: request_id.into(), timestamp: timestamp_ms, success: conflicts.is_empty(), conflicts, checkpoint }
    }
}

/// `changes` of a pull-response: `{[collection]: ChangeEvent[]}` in wire order. Collections
/// without changes are left out: [`ChangesByCollection::push`] ignores empty lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangesByCollection(Vec<(String, Vec<ChangeEvent>)>);

impl ChangesByCollection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `changes` under `collection` (merging with an earlier entry for it); an empty
    /// list adds nothing.
    pub fn push(&mut self, collection: impl Into<String>, changes: Vec<ChangeEvent>) {
        if changes.is_empty() {
            return;
        }
        let collection = collection.into();
        match self.0.iter_mut().find(|(c, _)| *c == collection) {
            Some((_, existing)) => existing.extend(changes),
            None => self.0.push((collection, changes)),
        }
    }

    pub fn get(&self, collection: &str) -> Option<&[ChangeEvent]> {
        self.0.iter().find(|(c, _)| c == collection).map(|(_, v)| v.as_slice())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[ChangeEvent])> {
        self.0.iter().map(|(c, v)| (c.as_str(), v.as_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for ChangesByCollection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (collection, changes) in &self.0 {
            map.serialize_entry(collection, changes)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ChangesByCollection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChangesVisitor;

        impl<'de> Visitor<'de> for ChangesVisitor {
            type Value = ChangesByCollection;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of ChangeEvent arrays")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChangesByCollection, A::Error> {
                // Kept as sent, empty lists included, so that decoding round-trips.
                let mut out = Vec::<(String, Vec<ChangeEvent>)>::new();
                while let Some((collection, changes)) = map.next_entry::<String, Vec<ChangeEvent>>()? {
                    match out.iter_mut().find(|(c, _)| *c == collection) {
                        Some(entry) => entry.1 = changes,
                        None => out.push((collection, changes)),
                    }
                }
                Ok(ChangesByCollection(out))
            }
        }

        deserializer.deserialize_map(ChangesVisitor)
    }
}

/// `pull-response`: the reply to a `pull`, or a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullResponse {
    pub id: String,
    pub timestamp: u64,
    /// Each change's `sequence` must be its server sequence.
    pub changes: ChangesByCollection,
    /// `sequences[c]` = the server sequence of the last row returned for `c`, or the request's
    /// value when none came back.
    pub checkpoint: Checkpoint,
    /// `true` makes the client pull again at once, without a cap: only with a checkpoint that
    /// moved forward.
    pub has_more: bool,
}

impl PullResponse {
    /// A broadcast of other clients' committed changes: id `broadcast_<ms>`, the recipient's
    /// last-sent checkpoint (or `{}`), `hasMore:false`. The real engine ignores it; raw clients
    /// may not.
    pub fn broadcast(
        timestamp_ms: u64,
        collection: impl Into<String>,
        changes: Vec<ChangeEvent>,
        recipient_checkpoint: Option<Checkpoint>,
    ) -> Self {
        let mut by_collection = ChangesByCollection::new();
        by_collection.push(collection, changes);
        Self {
            id: format!("{BROADCAST_ID_PREFIX}{timestamp_ms}"),
            timestamp: timestamp_ms,
            changes: by_collection,
            checkpoint: recipient_checkpoint.unwrap_or_default(),
            has_more: false,
        }
    }

    pub fn is_broadcast(&self) -> bool {
        self.id.starts_with(BROADCAST_ID_PREFIX)
    }
}

/// `error.code`. The first three are the reference's; `INVALID_MESSAGE` and
/// `INTERNAL_ERROR` are Junction's (names from the error list of USP, Pocket's draft protocol).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, not an object, no string `type`, not UTF-8. Retryable (reference).
    ParseError,
    /// A `type` other than `push`/`pull`, `ack` included. Not retryable (reference).
    UnknownMessage,
    /// Over the per-connection message budget; the message was dropped. Retryable (reference).
    RateLimited,
    /// A `push`/`pull` with a missing or ill-typed field. Not retryable (Junction).
    InvalidMessage,
    /// The server failed while handling a valid message. Retryable (Junction).
    InternalError,
    /// Any other code, kept verbatim: Junction's `MESSAGE_TOO_LARGE`, `FORBIDDEN` and
    /// `AUTH_FAILED`, and unknown codes when decoding.
    Other(String),
}

impl ErrorCode {
    pub fn as_str(&self) -> &str {
        match self {
            Self::ParseError => "PARSE_ERROR",
            Self::UnknownMessage => "UNKNOWN_MESSAGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::InvalidMessage => "INVALID_MESSAGE",
            Self::InternalError => "INTERNAL_ERROR",
            Self::Other(code) => code,
        }
    }

    pub fn from_code(code: &str) -> Self {
        match code {
            "PARSE_ERROR" => Self::ParseError,
            "UNKNOWN_MESSAGE" => Self::UnknownMessage,
            "RATE_LIMITED" => Self::RateLimited,
            "INVALID_MESSAGE" => Self::InvalidMessage,
            "INTERNAL_ERROR" => Self::InternalError,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|code| Self::from_code(&code))
    }
}

/// `error`: `{type:'error', id, timestamp, code, message, retryable}`.
///
/// `id` echoes the request's id whenever it had one. The real engine then resolves the
/// request with this error and drops it (a push stays queued, a pull applies nothing) instead of
/// waiting 30 s for the timeout. Without a request id the id is `error_<ms>`, as in the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub id: String,
    pub timestamp: u64,
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl ErrorMessage {
    fn build(request_id: Option<&str>, timestamp_ms: u64, code: ErrorCode, message: String, retryable: bool) -> Self {
        let id = match request_id {
            Some(id) => id.to_owned(),
            None => format!("{ERROR_ID_PREFIX}{timestamp_ms}"),
        };
        Self { id, timestamp: timestamp_ms, code, message, retryable }
    }

    /// `PARSE_ERROR`, `"Invalid message format: <detail>"`, retryable.
    pub fn parse_error(request_id: Option<&str>, timestamp_ms: u64, detail: &str) -> Self {
        Self::build(request_id, timestamp_ms, ErrorCode::ParseError, format!("Invalid message format: {detail}"), true)
    }

    /// `UNKNOWN_MESSAGE`, `"Unknown message type: <t>"`, not retryable.
    pub fn unknown_message(request_id: Option<&str>, timestamp_ms: u64, message_type: &str) -> Self {
        let message = format!("Unknown message type: {message_type}");
        Self::build(request_id, timestamp_ms, ErrorCode::UnknownMessage, message, false)
    }

    /// `RATE_LIMITED`, `"Too many requests. Please slow down."`, retryable. Use
    /// [`super::client::peek_request_id`] to address it.
    pub fn rate_limited(request_id: Option<&str>, timestamp_ms: u64) -> Self {
        let message = "Too many requests. Please slow down.".to_owned();
        Self::build(request_id, timestamp_ms, ErrorCode::RateLimited, message, true)
    }

    /// `INVALID_MESSAGE`, `"Invalid <type>: <detail>"`, not retryable.
    pub fn invalid_message(request_id: Option<&str>, timestamp_ms: u64, message_type: &str, detail: &str) -> Self {
        let message = format!("Invalid {message_type}: {detail}");
        Self::build(request_id, timestamp_ms, ErrorCode::InvalidMessage, message, false)
    }

    /// `INTERNAL_ERROR`, retryable.
    pub fn internal_error(request_id: Option<&str>, timestamp_ms: u64, message: &str) -> Self {
        Self::build(request_id, timestamp_ms, ErrorCode::InternalError, message.to_owned(), true)
    }

    /// The reply to a frame that failed to decode, addressed to its id when it had one.
    pub fn from_decode_error(error: &DecodeError, timestamp_ms: u64) -> Self {
        let id = error.request_id.as_deref();
        match &error.kind {
            DecodeErrorKind::UnknownType(t) => Self::unknown_message(id, timestamp_ms, t),
            DecodeErrorKind::InvalidMessage { message_type, detail } => {
                Self::invalid_message(id, timestamp_ms, message_type, detail)
            }
            kind @ (DecodeErrorKind::InvalidUtf8
            | DecodeErrorKind::InvalidJson(_)
            | DecodeErrorKind::NotAnObject
            | DecodeErrorKind::MissingType) => Self::parse_error(id, timestamp_ms, &kind.to_string()),
        }
    }
}

/// `ack`: defined by the reference, sent by nobody. Decodable for completeness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub id: String,
    pub timestamp: u64,
    pub original_id: String,
}

/// A JSON message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    #[serde(rename = "push-response")]
    PushResponse(PushResponse),
    #[serde(rename = "pull-response")]
    PullResponse(PullResponse),
    #[serde(rename = "error")]
    Error(ErrorMessage),
    #[serde(rename = "ack")]
    Ack(Ack),
}

impl ServerMessage {
    pub fn id(&self) -> &str {
        match self {
            Self::PushResponse(m) => &m.id,
            Self::PullResponse(m) => &m.id,
            Self::Error(m) => &m.id,
            Self::Ack(m) => &m.id,
        }
    }

    /// One WebSocket text frame, or an HTTP response body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ServerMessage always serializes")
    }
}

impl From<PushResponse> for ServerMessage {
    fn from(m: PushResponse) -> Self {
        Self::PushResponse(m)
    }
}

impl From<PullResponse> for ServerMessage {
    fn from(m: PullResponse) -> Self {
        Self::PullResponse(m)
    }
}

impl From<ErrorMessage> for ServerMessage {
    fn from(m: ErrorMessage) -> Self {
        Self::Error(m)
    }
}

/// One WebSocket frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    Pong,
    Message(ServerMessage),
}

/// Decodes one server frame (for Rust test clients). Lenient like the real client: unknown
/// fields are ignored and changes are not validated.
pub fn decode_server_frame(frame: &str) -> Result<ServerFrame, DecodeError> {
    if frame == PONG {
        return Ok(ServerFrame::Pong);
    }
    let (request_id, message_type) = parse_envelope(frame)?;
    fn decode<T: serde::de::DeserializeOwned>(frame: &str) -> Result<T, String> {
        serde_json::from_str(frame).map_err(|e| json_error_text(&e))
    }
    let result = match message_type.as_str() {
        "push-response" => decode(frame).map(ServerMessage::PushResponse),
        "pull-response" => decode(frame).map(ServerMessage::PullResponse),
        "error" => decode(frame).map(ServerMessage::Error),
        "ack" => decode(frame).map(ServerMessage::Ack),
        _ => return Err(DecodeError::new(request_id, DecodeErrorKind::UnknownType(message_type))),
    };
    result
        .map(ServerFrame::Message)
        .map_err(|detail| DecodeError::new(request_id, DecodeErrorKind::InvalidMessage { message_type, detail }))
}
