//! Typed SyncKit messages on top of [`super::frame`].
//!
//! - Client → server: [`Incoming::decode`] turns one WebSocket message into an [`Incoming`]
//!   (framing, id, timestamps, [`ClientMessage`]), or a [`DecodeError`] whose
//!   [`DecodeError::to_error`] is the exact ERROR the reference would send.
//! - Server → client: [`ServerMessage`] with [`ServerMessage::encode`] producing the reference's
//!   payloads byte for byte (`{"id":…, …}` in the reference's key order), in either
//!   framing. Only codes SDK 0.3.0 knows can be produced (no `sync_step2`).
//! - [`ErrorMessage`] has one constructor per exact ERROR text of the reference
//!   (`protocols/synckit/WIRE.md`, "Errors").
//!
//! Values the server relays (field values, awareness state, batch ops, ids it echoes) are
//! kept as raw JSON ([`Json`], [`RawObject`]) and never re-formatted.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, Error as _};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use super::frame::{self, Encoded, Envelope, FrameError, Framing, MessageType};
use super::raw::{Json, RawObject, VectorClock, is_truthy, raw_as_i64, raw_as_str};

/// The `clientId` the server puts on every `delta` broadcast.
pub const SERVER_CLIENT_ID: &str = "server";

/// A server message id in the reference's format `"<ms>-<9 base36 chars>"`, e.g.
/// `1795311145207-hzkd3z86t`. `entropy` supplies the random part (only its value modulo
/// 36^9 is used), so the function stays pure.
pub fn server_message_id(now_ms: i64, entropy: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = entropy % 36u64.pow(9);
    let mut suffix = [b'0'; 9];
    for slot in suffix.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    format!("{now_ms}-{}", std::str::from_utf8(&suffix).expect("ascii"))
}

/// `{"id":<id>, …body}`: inserts `id` as the first member of an object's JSON text.
fn with_leading_member(key: &str, value: &str, body: &str) -> String {
    debug_assert!(body.starts_with('{') && body.ends_with('}'));
    let rest = &body[1..];
    let mut out = String::with_capacity(body.len() + key.len() + value.len() + 4);
    out.push('{');
    out.push_str(&serde_json::to_string(key).expect("string"));
    out.push(':');
    out.push_str(value);
    if rest != "}" {
        out.push(',');
    }
    out.push_str(rest);
    out
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("message types always serialize")
}

// =============================================================================================
// Client → server
// =============================================================================================

/// `auth` (0x01) — `{token?, apiKey?}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// What an [`Auth`] asks for, with the reference's truthiness rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCredential<'a> {
    /// A non-empty `token`: verify it as an HS256 JWT.
    Token(&'a str),
    /// No token but a non-empty `apiKey`: the reference answers
    /// [`ErrorMessage::api_key_not_implemented`].
    ApiKey(&'a str),
    /// Neither: anonymous if auth is disabled, else [`ErrorMessage::authentication_required`]
    /// and close 1008.
    None,
}

impl Auth {
    pub fn credential(&self) -> AuthCredential<'_> {
        match (&self.token, &self.api_key) {
            (Some(t), _) if !t.is_empty() => AuthCredential::Token(t),
            (_, Some(k)) if !k.is_empty() => AuthCredential::ApiKey(k),
            _ => AuthCredential::None,
        }
    }
}

/// `{documentId}` — the body of `subscribe` (0x10), `unsubscribe` (0x11) and
/// `awareness_subscribe` (0x41).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRef {
    pub document_id: String,
}

impl DocumentRef {
    pub fn new(document_id: impl Into<String>) -> Self {
        DocumentRef { document_id: document_id.into() }
    }
}

/// `sync_request` (0x12) — `{documentId, vectorClock?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRequest {
    pub document_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_clock: Option<VectorClock>,
}

/// `sync_step1` (0x14) — `{documentId, stateVector}`. Nobody sends it; the reference's
/// answer (`sync_step2`, 0x15) is unknown to the SDK, so this codec cannot produce it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStep1 {
    pub document_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_vector: Option<Json>,
}

/// Which key carried a delta's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockField {
    /// `clock` — SDK shape.
    #[default]
    Clock,
    /// `vectorClock` — server/test-client shape.
    VectorClock,
}

impl ClockField {
    pub const fn key(self) -> &'static str {
        match self {
            ClockField::Clock => "clock",
            ClockField::VectorClock => "vectorClock",
        }
    }
}

/// The changes a `delta` carries, in whichever shape it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaChanges {
    /// SDK 0.1.1 shape: one `field` and its `value` (any JSON, `null` included).
    Field { field: String, value: Json },
    /// Server/test-client shape: `delta: {field: value, …}` (non-empty, in order).
    Object(RawObject),
}

/// `delta` (0x20) from a client, normalised:
/// `delta` (if truthy) wins over `field`/`value`; `vectorClock` (if truthy) wins over `clock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// A payload-level `type` (SDK 0.1.1 sends `"set"`). Informational only — it is the
    /// operation kind, never the message type.
    pub op_type: Option<String>,
    pub document_id: String,
    pub changes: DeltaChanges,
    /// `None` when neither clock key was truthy. The reference then applies the fields but
    /// answers "Delta application failed"; tolerate it.
    pub clock: Option<VectorClock>,
    /// The key the clock came from (used when re-encoding).
    pub clock_field: ClockField,
    /// The sender's SyncKit clientId (informational; LWW uses the connection).
    pub client_id: Option<String>,
    /// Payload `timestamp` (client ms), if numeric.
    pub timestamp: Option<i64>,
    /// Truthy `messageId`, echoed in the ACK.
    pub message_id: Option<Json>,
}

impl Delta {
    /// SDK 0.1.1 shape (`{"type":"set",documentId,field,value,clock,clientId,timestamp,messageId}`).
    pub fn sdk_set(
        document_id: &str,
        field: &str,
        value: Json,
        clock: VectorClock,
        client_id: &str,
        timestamp: i64,
        message_id: &str,
    ) -> Delta {
        Delta {
            op_type: Some("set".to_owned()),
            document_id: document_id.to_owned(),
            changes: DeltaChanges::Field { field: field.to_owned(), value },
            clock: Some(clock),
            clock_field: ClockField::Clock,
            client_id: Some(client_id.to_owned()),
            timestamp: Some(timestamp),
            message_id: Some(Json::string(message_id)),
        }
    }

    /// Server/test-client shape (`{documentId, delta:{…}, vectorClock}`; pass the `id` to
    /// [`ClientMessage::encode`]).
    pub fn object(document_id: &str, delta: RawObject, vector_clock: Option<VectorClock>) -> Delta {
        Delta {
            op_type: None,
            document_id: document_id.to_owned(),
            changes: DeltaChanges::Object(delta),
            clock: vector_clock,
            clock_field: ClockField::VectorClock,
            client_id: None,
            timestamp: None,
            message_id: None,
        }
    }

    /// The `(field, value)` pairs to apply, in order. A value may be a tombstone
    /// (`{"__deleted":true}`, see [`Json::is_tombstone`]) or `null` (a real value).
    pub fn changes(&self) -> Vec<(&str, &RawValue)> {
        match &self.changes {
            DeltaChanges::Field { field, value } => vec![(field.as_str(), &**value)],
            DeltaChanges::Object(obj) => obj.iter().collect(),
        }
    }
}

impl Serialize for Delta {
    /// Field shape: `type?, documentId, field, value, clock?, clientId?, timestamp?, messageId?`.
    /// Object shape: `type?, documentId, delta, vectorClock?, clientId?, timestamp?, messageId?`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(t) = &self.op_type {
            map.serialize_entry("type", t)?;
        }
        map.serialize_entry("documentId", &self.document_id)?;
        match &self.changes {
            DeltaChanges::Field { field, value } => {
                map.serialize_entry("field", field)?;
                map.serialize_entry("value", value)?;
            }
            DeltaChanges::Object(obj) => map.serialize_entry("delta", obj)?,
        }
        if let Some(clock) = &self.clock {
            map.serialize_entry(self.clock_field.key(), clock)?;
        }
        if let Some(c) = &self.client_id {
            map.serialize_entry("clientId", c)?;
        }
        if let Some(t) = &self.timestamp {
            map.serialize_entry("timestamp", t)?;
        }
        if let Some(m) = &self.message_id {
            map.serialize_entry("messageId", m)?;
        }
        map.end()
    }
}

/// One element of `delta_batch.deltas[]`, kept exactly as sent (it may be relayed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Object(RawObject),
    /// Not a JSON object (skipped by the server; the reference would crash on `null`).
    Other(Json),
}

/// How the server treats a [`BatchOp`] (the op kinds SDK 0.3.0 sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOpKind {
    /// Has a string `field` and a `value`: a field write (value may be a tombstone or `null`).
    /// SDK `set` ops; also any other op type that carries `field`, as in the reference.
    Field { field: String, value: Json },
    /// `type:"text-state"` with a non-empty string `state` (FugueText JSON): merge, store,
    /// relay to the other subscribers.
    TextState { state: String },
    /// `type:"text"` (legacy): relay as-is to the other subscribers.
    LegacyText,
    /// Ignored: counter/SyncSet/richtext ops (no `field`), `text-state` without state,
    /// ops without `value`, non-objects.
    Skipped,
}

impl BatchOp {
    pub fn members(&self) -> Option<&RawObject> {
        match self {
            BatchOp::Object(o) => Some(o),
            BatchOp::Other(_) => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.members().and_then(|m| m.get(key))
    }

    fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(raw_as_str)
    }

    /// The op's `type` (`set`, `text-state`, `counter`, `richtext`, `text`, …).
    pub fn op_type(&self) -> Option<String> {
        self.get_str("type")
    }

    /// The op's own `documentId` (text ops are stored under it, falling back to the batch's).
    pub fn document_id(&self) -> Option<String> {
        self.get_str("documentId").filter(|s| !s.is_empty())
    }

    /// Truthy string `clientId`.
    pub fn client_id(&self) -> Option<String> {
        self.get_str("clientId").filter(|s| !s.is_empty())
    }

    /// Truthy numeric `timestamp` (client ms).
    pub fn timestamp(&self) -> Option<i64> {
        self.get("timestamp").filter(|v| is_truthy(v)).and_then(raw_as_i64)
    }

    /// The op's `clock`, if truthy and a valid clock (merged into the doc clock).
    pub fn clock(&self) -> Option<VectorClock> {
        let raw = self.get("clock").filter(|v| is_truthy(v))?;
        serde_json::from_str(raw.get()).ok()
    }

    pub fn kind(&self) -> BatchOpKind {
        if self.members().is_none() {
            return BatchOpKind::Skipped;
        }
        match self.op_type().as_deref() {
            Some("text-state") => match self.get_str("state") {
                Some(state) if !state.is_empty() => BatchOpKind::TextState { state },
                _ => BatchOpKind::Skipped,
            },
            Some("text") => BatchOpKind::LegacyText,
            _ => match (self.get_str("field"), self.get("value")) {
                (Some(field), Some(value)) => BatchOpKind::Field { field, value: Json::from_raw(value) },
                _ => BatchOpKind::Skipped,
            },
        }
    }

    /// The op as relayed in a text `delta_batch`: `{...op, state: merged, clientId}` —
    /// every member kept in place, `state` replaced by `merged_state` when given, and
    /// `clientId` set to `fallback_client_id` when the op has no truthy one (appended if absent).
    pub fn text_relay(&self, merged_state: Option<&str>, fallback_client_id: &str) -> RawObject {
        let mut out = self.members().cloned().unwrap_or_default();
        if let Some(state) = merged_state {
            out.insert("state", Json::string(state).0);
        }
        if self.client_id().is_none() {
            out.insert("clientId", Json::string(fallback_client_id).0);
        }
        out
    }
}

impl Serialize for BatchOp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchOp::Object(o) => o.serialize(serializer),
            BatchOp::Other(j) => j.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for BatchOp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Json::deserialize(deserializer)?;
        if raw.get().starts_with('{') {
            serde_json::from_str(raw.get()).map(BatchOp::Object).map_err(D::Error::custom)
        } else {
            Ok(BatchOp::Other(raw))
        }
    }
}

/// `delta_batch` (0x50) from SDK 0.3.0 — `{documentId, deltas:[op…], messageId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaBatch {
    pub document_id: String,
    pub deltas: Vec<BatchOp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Json>,
}

/// `delta_batch_chunk` (0x23) — `{chunkId, totalChunks, chunkIndex, data:<base64>}`; see
/// [`super::chunk`] for reassembly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaBatchChunk {
    pub chunk_id: String,
    pub total_chunks: u32,
    pub chunk_index: u32,
    pub data: String,
}

/// `ack` (0x21) from a client — `{messageId}`; the reference ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientAck {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Json>,
}

/// `awareness_update` (0x40), both directions — `{documentId, clientId, state, clock}`.
/// `state: None` is JSON `null`: the client left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwarenessUpdate {
    pub document_id: String,
    pub client_id: String,
    pub state: Option<Json>,
    pub clock: u64,
}

/// Every message a client may send (the type names the reference accepts, plus
/// `delta_batch_chunk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `connect` (JSON text framing only; accepted and ignored).
    Connect,
    Auth(Auth),
    Subscribe(DocumentRef),
    Unsubscribe(DocumentRef),
    SyncRequest(SyncRequest),
    SyncStep1(SyncStep1),
    Delta(Delta),
    DeltaBatch(DeltaBatch),
    DeltaBatchChunk(DeltaBatchChunk),
    Ack(ClientAck),
    Ping,
    Pong,
    AwarenessSubscribe(DocumentRef),
    AwarenessUpdate(AwarenessUpdate),
    /// `snapshot_request` (text only): whitelisted by the reference, no handler, no reply.
    SnapshotRequest,
    /// `snapshot_upload` (text only): whitelisted by the reference, no handler, no reply.
    SnapshotUpload,
}

/// The type names a client may send, plus `delta_batch_chunk` which the reference
/// handles before validation. Anything else → `Invalid message type: <t>`.
pub const CLIENT_TYPE_NAMES: [&str; 16] = [
    "connect",
    "auth",
    "subscribe",
    "unsubscribe",
    "sync_request",
    "sync_step1",
    "delta",
    "delta_batch",
    "delta_batch_chunk",
    "ack",
    "awareness_subscribe",
    "awareness_update",
    "snapshot_request",
    "snapshot_upload",
    "ping",
    "pong",
];

impl ClientMessage {
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Connect => "connect",
            ClientMessage::SnapshotRequest => "snapshot_request",
            ClientMessage::SnapshotUpload => "snapshot_upload",
            other => other.message_type().expect("has a code").name(),
        }
    }

    /// The binary code; `None` for `connect`/`snapshot_*`, which exist only as text names.
    pub fn message_type(&self) -> Option<MessageType> {
        Some(match self {
            ClientMessage::Connect | ClientMessage::SnapshotRequest | ClientMessage::SnapshotUpload => {
                return None;
            }
            ClientMessage::Auth(_) => MessageType::Auth,
            ClientMessage::Subscribe(_) => MessageType::Subscribe,
            ClientMessage::Unsubscribe(_) => MessageType::Unsubscribe,
            ClientMessage::SyncRequest(_) => MessageType::SyncRequest,
            ClientMessage::SyncStep1(_) => MessageType::SyncStep1,
            ClientMessage::Delta(_) => MessageType::Delta,
            ClientMessage::DeltaBatch(_) => MessageType::DeltaBatch,
            ClientMessage::DeltaBatchChunk(_) => MessageType::DeltaBatchChunk,
            ClientMessage::Ack(_) => MessageType::Ack,
            ClientMessage::Ping => MessageType::Ping,
            ClientMessage::Pong => MessageType::Pong,
            ClientMessage::AwarenessSubscribe(_) => MessageType::AwarenessSubscribe,
            ClientMessage::AwarenessUpdate(_) => MessageType::AwarenessUpdate,
        })
    }

    /// Whether the reference requires an authenticated connection for it: subscribe,
    /// sync_request, delta, delta_batch, sync_step1. Awareness, ping, ack, unsubscribe don't.
    pub fn requires_auth(&self) -> bool {
        matches!(
            self,
            ClientMessage::Subscribe(_)
                | ClientMessage::SyncRequest(_)
                | ClientMessage::Delta(_)
                | ClientMessage::DeltaBatch(_)
                | ClientMessage::SyncStep1(_)
        )
    }

    /// The payload as the SDK/test client writes it (no `id`).
    pub fn payload_json(&self) -> String {
        match self {
            ClientMessage::Connect
            | ClientMessage::SnapshotRequest
            | ClientMessage::SnapshotUpload
            | ClientMessage::Ping
            | ClientMessage::Pong => "{}".to_owned(),
            ClientMessage::Auth(m) => to_json(m),
            ClientMessage::Subscribe(m) | ClientMessage::Unsubscribe(m) | ClientMessage::AwarenessSubscribe(m) => {
                to_json(m)
            }
            ClientMessage::SyncRequest(m) => to_json(m),
            ClientMessage::SyncStep1(m) => to_json(m),
            ClientMessage::Delta(m) => to_json(m),
            ClientMessage::DeltaBatch(m) => to_json(m),
            ClientMessage::DeltaBatchChunk(m) => to_json(m),
            ClientMessage::Ack(m) => to_json(m),
            ClientMessage::AwarenessUpdate(m) => to_json(m),
        }
    }

    /// Encodes as a client would (for test clients). Binary: header + payload, with `id`
    /// (if given) as the payload's first member. Text: `{"type","id","timestamp",…}`.
    pub fn encode(&self, framing: Framing, timestamp_ms: i64, id: Option<&Json>) -> Result<Encoded, EncodeError> {
        let payload = self.payload_json();
        let payload = match id {
            Some(id) => with_leading_member("id", id.get(), &payload),
            None => payload,
        };
        match framing {
            Framing::Binary => {
                let t = self.message_type().ok_or(EncodeError::NoTypeCode(self.type_name()))?;
                Ok(Encoded::Binary(frame::encode_frame(t, timestamp_ms, &payload)))
            }
            Framing::Text => {
                if id.is_none() {
                    return Err(EncodeError::TextNeedsId);
                }
                let members: RawObject = serde_json::from_str(&payload).expect("payload is an object");
                Ok(Encoded::Text(frame::encode_text(self.type_name(), timestamp_ms, &members)))
            }
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("`{0}` has no binary type code")]
    NoTypeCode(&'static str),
    #[error("JSON text framing requires an id")]
    TextNeedsId,
}

/// One decoded client message with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's framing: reply in it.
    pub framing: Framing,
    /// The truthy `id` member (binary payload / text top level). `None` → the reference invents
    /// one; see [`Incoming::request_id`].
    pub id: Option<Json>,
    /// Binary: header timestamp. Text: top-level `timestamp`.
    pub header_timestamp: i64,
    /// The message's timestamp as the reference sees it: a numeric `timestamp` member wins
    /// over the header (payload keys are spread over the header).
    pub timestamp: i64,
    pub message: ClientMessage,
}

impl Incoming {
    /// Decodes one WebSocket message; `ws_text` = it arrived as a text frame.
    pub fn decode(data: &[u8], ws_text: bool) -> Result<Incoming, DecodeError> {
        let framing = frame::detect_framing(data, ws_text);
        let envelope = frame::decode(data, ws_text).map_err(|e| DecodeError {
            framing,
            type_name: None,
            kind: DecodeErrorKind::Frame(e),
        })?;
        Incoming::from_envelope(envelope)
    }

    /// Types an already framed message (e.g. a reassembled chunk set).
    pub fn from_envelope(envelope: Envelope) -> Result<Incoming, DecodeError> {
        let Envelope { framing, type_name, timestamp: header_timestamp, members, .. } = envelope;
        let message = decode_client_body(&type_name, &members).map_err(|kind| DecodeError {
            framing,
            type_name: Some(type_name.clone()),
            kind,
        })?;
        let id = members.get("id").filter(|v| is_truthy(v)).map(Json::from_raw);
        let timestamp = members.get("timestamp").and_then(raw_as_i64).unwrap_or(header_timestamp);
        Ok(Incoming { framing, id, header_timestamp, timestamp, message })
    }

    /// The `requestId` for a `sync_response`: the request's `id`, else `server_id`.
    pub fn request_id(&self, server_id: &str) -> Json {
        self.id.clone().unwrap_or_else(|| Json::string(server_id))
    }

    /// The `messageId` for an ACK: `messageId ?? id ?? server_id`.
    pub fn ack_message_id(&self, server_id: &str) -> Json {
        let message_id = match &self.message {
            ClientMessage::Delta(d) => d.message_id.as_ref(),
            ClientMessage::DeltaBatch(b) => b.message_id.as_ref(),
            _ => None,
        };
        message_id.cloned().unwrap_or_else(|| self.request_id(server_id))
    }
}

/// Why a client message was rejected; [`DecodeError::to_error`] gives the reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// The framing to reply in.
    pub framing: Framing,
    /// The message's type name, when framing succeeded.
    pub type_name: Option<String>,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeErrorKind {
    #[error(transparent)]
    Frame(FrameError),
    /// A type a client may not send (`sync_response`, `error`, unknown text names, …).
    #[error("invalid message type: {0}")]
    InvalidType(String),
    #[error("documentId missing or not a string")]
    InvalidDocumentId,
    #[error("delta missing, not an object, or empty")]
    InvalidDelta,
    #[error("deltas missing, not an array, or empty")]
    InvalidDeltaBatch,
    #[error("field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
}

impl DecodeError {
    /// The ERROR the reference sends for this input.
    pub fn to_error(&self) -> ErrorMessage {
        match &self.kind {
            DecodeErrorKind::Frame(_) | DecodeErrorKind::InvalidField { .. } => ErrorMessage::invalid_message_format(),
            DecodeErrorKind::InvalidType(t) => ErrorMessage::invalid_message_type(t),
            DecodeErrorKind::InvalidDocumentId => ErrorMessage::invalid_document_id(),
            DecodeErrorKind::InvalidDelta => ErrorMessage::invalid_delta(),
            DecodeErrorKind::InvalidDeltaBatch => ErrorMessage::invalid_delta_batch(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeErrorKind {
    DecodeErrorKind::InvalidField { field, reason: reason.into() }
}

fn document_id(m: &RawObject) -> Result<String, DecodeErrorKind> {
    m.get("documentId").and_then(raw_as_str).ok_or(DecodeErrorKind::InvalidDocumentId)
}

/// `key` if truthy, parsed as `T`; falsy or absent → `None`.
fn truthy_as<T: serde::de::DeserializeOwned>(m: &RawObject, key: &'static str) -> Result<Option<T>, DecodeErrorKind> {
    match m.get(key).filter(|v| is_truthy(v)) {
        None => Ok(None),
        Some(v) => serde_json::from_str(v.get()).map(Some).map_err(|e| invalid(key, e.to_string())),
    }
}

fn truthy_json(m: &RawObject, key: &str) -> Option<Json> {
    m.get(key).filter(|v| is_truthy(v)).map(Json::from_raw)
}

/// `key` must be present and parse as `T`.
fn required<T: serde::de::DeserializeOwned>(m: &RawObject, key: &'static str) -> Result<T, DecodeErrorKind> {
    let v = m.get(key).ok_or_else(|| invalid(key, "missing"))?;
    serde_json::from_str(v.get()).map_err(|e| invalid(key, e.to_string()))
}

fn decode_client_body(type_name: &str, m: &RawObject) -> Result<ClientMessage, DecodeErrorKind> {
    Ok(match type_name {
        "connect" => ClientMessage::Connect,
        "snapshot_request" => ClientMessage::SnapshotRequest,
        "snapshot_upload" => ClientMessage::SnapshotUpload,
        "ping" => ClientMessage::Ping,
        "pong" => ClientMessage::Pong,
        "auth" => ClientMessage::Auth(Auth { token: truthy_as(m, "token")?, api_key: truthy_as(m, "apiKey")? }),
        "subscribe" => ClientMessage::Subscribe(DocumentRef { document_id: document_id(m)? }),
        "unsubscribe" => ClientMessage::Unsubscribe(DocumentRef { document_id: document_id(m)? }),
        "awareness_subscribe" => ClientMessage::AwarenessSubscribe(DocumentRef { document_id: document_id(m)? }),
        "sync_request" => ClientMessage::SyncRequest(SyncRequest {
            document_id: document_id(m)?,
            vector_clock: truthy_as(m, "vectorClock")?,
        }),
        "sync_step1" => ClientMessage::SyncStep1(SyncStep1 {
            document_id: document_id(m)?,
            state_vector: m.get("stateVector").map(Json::from_raw),
        }),
        "delta" => ClientMessage::Delta(decode_delta(m)?),
        "delta_batch" => {
            let deltas: Vec<BatchOp> = match m.get("deltas") {
                Some(v) if v.get().starts_with('[') => {
                    serde_json::from_str(v.get()).map_err(|e| invalid("deltas", e.to_string()))?
                }
                _ => return Err(DecodeErrorKind::InvalidDeltaBatch),
            };
            if deltas.is_empty() {
                return Err(DecodeErrorKind::InvalidDeltaBatch);
            }
            ClientMessage::DeltaBatch(DeltaBatch {
                document_id: document_id(m)?,
                deltas,
                message_id: truthy_json(m, "messageId"),
            })
        }
        "delta_batch_chunk" => {
            let chunk = DeltaBatchChunk {
                chunk_id: required(m, "chunkId")?,
                total_chunks: required(m, "totalChunks")?,
                chunk_index: required(m, "chunkIndex")?,
                data: required(m, "data")?,
            };
            if chunk.total_chunks == 0 {
                return Err(invalid("totalChunks", "must be at least 1"));
            }
            if chunk.chunk_index >= chunk.total_chunks {
                return Err(invalid("chunkIndex", "must be below totalChunks"));
            }
            ClientMessage::DeltaBatchChunk(chunk)
        }
        "ack" => ClientMessage::Ack(ClientAck { message_id: truthy_json(m, "messageId") }),
        "awareness_update" => {
            let document_id = document_id(m)?;
            let client_id: String = required(m, "clientId")?;
            let state = m.get("state").ok_or_else(|| invalid("state", "missing"))?;
            let state = (state.get() != "null").then(|| Json::from_raw(state));
            let clock: u64 = required(m, "clock")?;
            ClientMessage::AwarenessUpdate(AwarenessUpdate { document_id, client_id, state, clock })
        }
        other => return Err(DecodeErrorKind::InvalidType(other.to_owned())),
    })
}

fn decode_delta(m: &RawObject) -> Result<Delta, DecodeErrorKind> {
    let changes = if let Some(d) = m.get("delta").filter(|v| is_truthy(v)) {
        if !d.get().starts_with('{') {
            return Err(DecodeErrorKind::InvalidDelta);
        }
        let obj: RawObject = serde_json::from_str(d.get()).map_err(|_| DecodeErrorKind::InvalidDelta)?;
        if obj.is_empty() {
            return Err(DecodeErrorKind::InvalidDelta);
        }
        DeltaChanges::Object(obj)
    } else if let Some(f) = m.get("field") {
        let field = raw_as_str(f).ok_or(DecodeErrorKind::InvalidDelta)?;
        let value = m.get("value").ok_or(DecodeErrorKind::InvalidDelta)?;
        DeltaChanges::Field { field, value: Json::from_raw(value) }
    } else {
        return Err(DecodeErrorKind::InvalidDelta);
    };
    let document_id = document_id(m)?;
    let (clock, clock_field) = match truthy_as::<VectorClock>(m, "vectorClock")? {
        Some(c) => (Some(c), ClockField::VectorClock),
        None => match truthy_as::<VectorClock>(m, "clock")? {
            Some(c) => (Some(c), ClockField::Clock),
            None if matches!(changes, DeltaChanges::Object(_)) => (None, ClockField::VectorClock),
            None => (None, ClockField::Clock),
        },
    };
    Ok(Delta {
        op_type: m.get("type").and_then(raw_as_str),
        document_id,
        changes,
        clock,
        clock_field,
        client_id: m.get("clientId").and_then(raw_as_str),
        timestamp: m.get("timestamp").and_then(raw_as_i64),
        message_id: truthy_json(m, "messageId"),
    })
}

// =============================================================================================
// Server → client
// =============================================================================================

/// `{canRead, canWrite, isAdmin}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    pub can_read: Vec<String>,
    pub can_write: Vec<String>,
    pub is_admin: bool,
}

impl Permissions {
    /// `{"canRead":["*"],"canWrite":["*"],"isAdmin":false}` — anonymous connections.
    pub fn all() -> Permissions {
        Permissions { can_read: vec!["*".into()], can_write: vec!["*".into()], is_admin: false }
    }
}

/// `auth_success` (0x02) — `{id, userId, permissions?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthSuccess {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub permissions: Option<Permissions>,
}

impl AuthSuccess {
    /// The reply to a token-less `auth` with auth disabled (Appendix A).
    pub fn anonymous() -> AuthSuccess {
        AuthSuccess { user_id: "anonymous".into(), permissions: Some(Permissions::all()) }
    }
}

/// `auth_error` (0x03) — `{id, error}`; then close 1008 "Authentication failed".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthError {
    pub error: String,
}

impl AuthError {
    pub const AUTHENTICATION_FAILED: &'static str = "Authentication failed";

    pub fn authentication_failed() -> AuthError {
        AuthError { error: Self::AUTHENTICATION_FAILED.into() }
    }
}

/// `sync_response` (0x13) —
/// `{id, requestId, documentId, state, deltas:[], clock?, textState?, textClock?}`.
///
/// The reference omits `clock` in replies to `sync_request`; send it whenever `state` is
/// non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResponse {
    pub request_id: Json,
    pub document_id: String,
    /// Flat `field → value` (deleted fields absent).
    pub state: RawObject,
    /// Always `[]` in the reference.
    #[serde(default)]
    pub deltas: Vec<Json>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub clock: Option<VectorClock>,
    /// FugueText JSON string, when a text CRDT state exists for this id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text_clock: Option<i64>,
}

impl SyncResponse {
    pub fn new(request_id: Json, document_id: impl Into<String>, state: RawObject, clock: Option<VectorClock>) -> Self {
        SyncResponse {
            request_id,
            document_id: document_id.into(),
            state,
            deltas: Vec::new(),
            clock,
            text_state: None,
            text_clock: None,
        }
    }
}

/// `delta` (0x20) broadcast — `{id, documentId, field, value, clock, clientId:"server"}`, one
/// per field per subscriber. `clock` must be non-empty for the SDK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaBroadcast {
    pub document_id: String,
    pub field: String,
    /// Authoritative value; `{"__deleted":true}` when a delete won.
    pub value: Json,
    pub clock: VectorClock,
    pub client_id: String,
}

impl DeltaBroadcast {
    /// A broadcast with `clientId:"server"`.
    pub fn new(document_id: impl Into<String>, field: impl Into<String>, value: Json, clock: VectorClock) -> Self {
        DeltaBroadcast {
            document_id: document_id.into(),
            field: field.into(),
            value,
            clock,
            client_id: SERVER_CLIENT_ID.into(),
        }
    }
}

/// `delta_batch` (0x50) text-op relay — `{id, documentId, deltas:[…], isTextOperation:true}`,
/// to every subscriber except the sender. Build ops with [`BatchOp::text_relay`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TextOpsRelay {
    pub document_id: String,
    pub deltas: Vec<RawObject>,
    pub is_text_operation: bool,
}

impl TextOpsRelay {
    pub fn new(document_id: impl Into<String>, deltas: Vec<RawObject>) -> Self {
        TextOpsRelay { document_id: document_id.into(), deltas, is_text_operation: true }
    }
}

/// `ack` (0x21) — `{id, messageId}`; see [`Incoming::ack_message_id`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub message_id: Json,
}

/// One entry of `awareness_state.states`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwarenessEntry {
    pub client_id: String,
    pub state: Json,
    pub clock: u64,
}

/// `awareness_state` (0x42) — `{id, documentId, states:[{clientId, state, clock}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwarenessState {
    pub document_id: String,
    pub states: Vec<AwarenessEntry>,
}

/// Machine-readable `details.code` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidMessage,
    RateLimitExceeded,
    AuthRequired,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        [ErrorCode::InvalidMessage, ErrorCode::RateLimitExceeded, ErrorCode::AuthRequired]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// `error.details`: `{code}` or `{documentId}`; anything else decodes as `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorDetails {
    Code(ErrorCode),
    DocumentId(String),
    Other(Json),
}

impl Serialize for ErrorDetails {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ErrorDetails::Code(c) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("code", c.as_str())?;
                map.end()
            }
            ErrorDetails::DocumentId(d) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("documentId", d)?;
                map.end()
            }
            ErrorDetails::Other(j) => j.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ErrorDetails {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Json::deserialize(deserializer)?;
        if let Ok(obj) = serde_json::from_str::<RawObject>(raw.get()) {
            if obj.len() == 1 {
                if let Some(code) = obj.get("code").and_then(raw_as_str).and_then(|c| ErrorCode::parse(&c)) {
                    return Ok(ErrorDetails::Code(code));
                }
                if let Some(doc) = obj.get("documentId").and_then(raw_as_str) {
                    return Ok(ErrorDetails::DocumentId(doc));
                }
            }
        }
        Ok(ErrorDetails::Other(raw))
    }
}

/// `error` (0xFF) — `{id, error, details?}` (`details` omitted when absent).
/// One constructor per exact ERROR text of the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub error: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub details: Option<ErrorDetails>,
}

/// The maximum message size in the `Message too large` text.
pub const MAX_MESSAGE_SIZE: usize = 2_000_000;

impl ErrorMessage {
    const fn plain(text: &'static str) -> ErrorMessage {
        ErrorMessage { error: Cow::Borrowed(text), details: None }
    }

    fn coded(text: impl Into<Cow<'static, str>>, code: ErrorCode) -> ErrorMessage {
        ErrorMessage { error: text.into(), details: Some(ErrorDetails::Code(code)) }
    }

    fn for_document(text: &'static str, document_id: &str) -> ErrorMessage {
        ErrorMessage { error: Cow::Borrowed(text), details: Some(ErrorDetails::DocumentId(document_id.to_owned())) }
    }

    /// `Invalid message format` — any framing failure.
    pub const fn invalid_message_format() -> Self {
        Self::plain("Invalid message format")
    }
    /// `Invalid message type: <t>` + `{code:"INVALID_MESSAGE"}`.
    pub fn invalid_message_type(type_name: &str) -> Self {
        Self::coded(format!("Invalid message type: {type_name}"), ErrorCode::InvalidMessage)
    }
    /// `Message too large (<n> bytes, max 2000000)` + `{code:"INVALID_MESSAGE"}`.
    pub fn message_too_large(size: usize, max: usize) -> Self {
        Self::coded(format!("Message too large ({size} bytes, max {max})"), ErrorCode::InvalidMessage)
    }
    /// `Too many messages. Please slow down.` + `{code:"RATE_LIMIT_EXCEEDED"}`.
    pub fn rate_limited() -> Self {
        Self::coded("Too many messages. Please slow down.", ErrorCode::RateLimitExceeded)
    }
    /// `Internal server error`.
    pub const fn internal_server_error() -> Self {
        Self::plain("Internal server error")
    }
    /// `Authentication required` + `{code:"AUTH_REQUIRED"}` (then close 1008).
    pub fn authentication_required() -> Self {
        Self::coded("Authentication required", ErrorCode::AuthRequired)
    }
    /// `API key authentication not yet implemented`.
    pub const fn api_key_not_implemented() -> Self {
        Self::plain("API key authentication not yet implemented")
    }
    /// `Not authenticated`.
    pub const fn not_authenticated() -> Self {
        Self::plain("Not authenticated")
    }
    /// `Invalid document ID`.
    pub const fn invalid_document_id() -> Self {
        Self::plain("Invalid document ID")
    }
    /// `Document ID too long`.
    pub const fn document_id_too_long() -> Self {
        Self::plain("Document ID too long")
    }
    /// `Document ID contains invalid characters`.
    pub const fn document_id_invalid_characters() -> Self {
        Self::plain("Document ID contains invalid characters")
    }
    /// `Access denied to this document` (demo whitelist).
    pub const fn access_denied() -> Self {
        Self::plain("Access denied to this document")
    }
    /// `Permission denied` + `{documentId}`.
    pub fn permission_denied(document_id: &str) -> Self {
        Self::for_document("Permission denied", document_id)
    }
    /// `Subscribe failed` + `{documentId}`.
    pub fn subscribe_failed(document_id: &str) -> Self {
        Self::for_document("Subscribe failed", document_id)
    }
    /// `Unsubscribe failed` + `{documentId}`.
    pub fn unsubscribe_failed(document_id: &str) -> Self {
        Self::for_document("Unsubscribe failed", document_id)
    }
    /// `Sync request failed` + `{documentId}`.
    pub fn sync_request_failed(document_id: &str) -> Self {
        Self::for_document("Sync request failed", document_id)
    }
    /// `SyncStep1 failed` + `{documentId}`.
    pub fn sync_step1_failed(document_id: &str) -> Self {
        Self::for_document("SyncStep1 failed", document_id)
    }
    /// `Invalid delta message: missing or empty delta`.
    pub const fn invalid_delta() -> Self {
        Self::plain("Invalid delta message: missing or empty delta")
    }
    /// `Delta application failed` + `{documentId}`.
    pub fn delta_application_failed(document_id: &str) -> Self {
        Self::for_document("Delta application failed", document_id)
    }
    /// `Invalid delta batch: missing or empty deltas array`.
    pub const fn invalid_delta_batch() -> Self {
        Self::plain("Invalid delta batch: missing or empty deltas array")
    }
    /// `Delta batch application failed` + `{documentId}`.
    pub fn delta_batch_application_failed(document_id: &str) -> Self {
        Self::for_document("Delta batch application failed", document_id)
    }
    /// `Failed to subscribe to awareness`.
    pub const fn awareness_subscribe_failed() -> Self {
        Self::plain("Failed to subscribe to awareness")
    }
    /// `Failed to update awareness`.
    pub const fn awareness_update_failed() -> Self {
        Self::plain("Failed to update awareness")
    }
}

impl fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)
    }
}

/// Every message the server sends. Only SDK-known codes: no `sync_step2`, no `ping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    AuthSuccess(AuthSuccess),
    AuthError(AuthError),
    SyncResponse(SyncResponse),
    Delta(DeltaBroadcast),
    DeltaBatch(TextOpsRelay),
    Ack(Ack),
    /// `pong` (0x31) — `{id}` with a fresh id.
    Pong,
    AwarenessState(AwarenessState),
    AwarenessUpdate(AwarenessUpdate),
    Error(ErrorMessage),
}

impl From<ErrorMessage> for ServerMessage {
    fn from(e: ErrorMessage) -> Self {
        ServerMessage::Error(e)
    }
}

impl ServerMessage {
    pub fn message_type(&self) -> MessageType {
        match self {
            ServerMessage::AuthSuccess(_) => MessageType::AuthSuccess,
            ServerMessage::AuthError(_) => MessageType::AuthError,
            ServerMessage::SyncResponse(_) => MessageType::SyncResponse,
            ServerMessage::Delta(_) => MessageType::Delta,
            ServerMessage::DeltaBatch(_) => MessageType::DeltaBatch,
            ServerMessage::Ack(_) => MessageType::Ack,
            ServerMessage::Pong => MessageType::Pong,
            ServerMessage::AwarenessState(_) => MessageType::AwarenessState,
            ServerMessage::AwarenessUpdate(_) => MessageType::AwarenessUpdate,
            ServerMessage::Error(_) => MessageType::Error,
        }
    }

    /// The body without `id`, e.g. `{"messageId":"m-1"}`.
    pub fn body_json(&self) -> String {
        match self {
            ServerMessage::AuthSuccess(m) => to_json(m),
            ServerMessage::AuthError(m) => to_json(m),
            ServerMessage::SyncResponse(m) => to_json(m),
            ServerMessage::Delta(m) => to_json(m),
            ServerMessage::DeltaBatch(m) => to_json(m),
            ServerMessage::Ack(m) => to_json(m),
            ServerMessage::Pong => "{}".to_owned(),
            ServerMessage::AwarenessState(m) => to_json(m),
            ServerMessage::AwarenessUpdate(m) => to_json(m),
            ServerMessage::Error(m) => to_json(m),
        }
    }

    /// The binary payload: `{"id":<id>, …body}`.
    pub fn payload_json(&self, id: &str) -> String {
        with_leading_member("id", &to_json(&id), &self.body_json())
    }

    /// Encodes in `framing`. Binary: 13-byte header + [`payload_json`](Self::payload_json).
    /// Text: `{"type":"<name>","id":<id>,"timestamp":<ms>, …body}` (the reference's
    /// `JSON.stringify` order).
    pub fn encode(&self, framing: Framing, id: &str, timestamp_ms: i64) -> Encoded {
        let payload = self.payload_json(id);
        match framing {
            Framing::Binary => Encoded::Binary(frame::encode_frame(self.message_type(), timestamp_ms, &payload)),
            Framing::Text => {
                let body = self.body_json();
                let mut out = format!(
                    "{{\"type\":{},\"id\":{},\"timestamp\":{}",
                    to_json(&self.message_type().name()),
                    to_json(&id),
                    timestamp_ms
                );
                if body == "{}" {
                    out.push('}');
                } else {
                    out.push(',');
                    out.push_str(&body[1..]);
                }
                Encoded::Text(out)
            }
        }
    }

    /// Decodes a server message (for Rust test clients): the id and the typed message.
    pub fn from_envelope(envelope: &Envelope) -> Result<(Option<Json>, ServerMessage), DecodeError> {
        let fail = |kind| DecodeError { framing: envelope.framing, type_name: Some(envelope.type_name.clone()), kind };
        let t = envelope
            .message_type
            .filter(|t| t.sdk_knows())
            .ok_or_else(|| fail(DecodeErrorKind::InvalidType(envelope.type_name.clone())))?;
        let json = envelope.members.to_json();
        let parse_err = |e: serde_json::Error| fail(invalid("payload", e.to_string()));
        let message = match t {
            MessageType::AuthSuccess => ServerMessage::AuthSuccess(serde_json::from_str(&json).map_err(parse_err)?),
            MessageType::AuthError => ServerMessage::AuthError(serde_json::from_str(&json).map_err(parse_err)?),
            MessageType::SyncResponse => ServerMessage::SyncResponse(serde_json::from_str(&json).map_err(parse_err)?),
            MessageType::Delta => ServerMessage::Delta(serde_json::from_str(&json).map_err(parse_err)?),
            MessageType::DeltaBatch => ServerMessage::DeltaBatch(serde_json::from_str(&json).map_err(parse_err)?),
            MessageType::Ack => ServerMessage::Ack(serde_json::from_str(&json).map_err(parse_err)?),
            MessageType::Pong => ServerMessage::Pong,
            MessageType::AwarenessState => {
                ServerMessage::AwarenessState(serde_json::from_str(&json).map_err(parse_err)?)
            }
            MessageType::AwarenessUpdate => {
                ServerMessage::AwarenessUpdate(serde_json::from_str(&json).map_err(parse_err)?)
            }
            MessageType::Error => ServerMessage::Error(serde_json::from_str(&json).map_err(parse_err)?),
            _ => return Err(fail(DecodeErrorKind::InvalidType(envelope.type_name.clone()))),
        };
        Ok((envelope.members.get("id").map(Json::from_raw), message))
    }

    /// Decodes one server message from the wire (for Rust test clients).
    pub fn decode(data: &[u8], ws_text: bool) -> Result<(Option<Json>, ServerMessage), DecodeError> {
        let framing = frame::detect_framing(data, ws_text);
        let envelope = frame::decode(data, ws_text).map_err(|e| DecodeError {
            framing,
            type_name: None,
            kind: DecodeErrorKind::Frame(e),
        })?;
        ServerMessage::from_envelope(&envelope)
    }
}
