//! Framing: the 13-byte-header binary frame, the type-code table and the JSON
//! text framing.
//!
//! Binary frame:
//! ```text
//! offset 0      u8        type code (MessageType)
//! offset 1..8   i64 BE    timestamp, ms since the Unix epoch (signed)
//! offset 9..12  u32 BE    payload length N in bytes
//! offset 13..   N bytes   UTF-8 JSON text of one object
//! ```
//! Bytes after `13 + N` are ignored (the reference and both SDKs do the same).
//!
//! Text framing: one JSON object `{"type":"<name>","id":…,"timestamp":…,…fields}`; a nested
//! object `payload` is flattened onto the top level.
//!
//! [`decode`] is the single entry point for anything a client sends; it picks the framing like
//! the reference does (a WebSocket text frame, or a binary frame whose first byte is `{`, is
//! JSON text) and reports it so the reply can use the sender's framing.

use thiserror::Error;

use super::raw::{RawObject, is_truthy, js_display, raw_as_i64, raw_as_str};

/// Size of the binary header.
pub const HEADER_LEN: usize = 13;

/// Every type code of the protocol (`protocols/synckit/WIRE.md`, "Type codes"), with its exact
/// value.
///
/// `DeltaBatch` is `0x50` (not `0x22`, the Python/Go servers' bug) and `DeltaBatchChunk` is
/// `0x23`. No other code exists on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageType {
    Auth = 0x01,
    AuthSuccess = 0x02,
    AuthError = 0x03,
    Subscribe = 0x10,
    Unsubscribe = 0x11,
    SyncRequest = 0x12,
    SyncResponse = 0x13,
    SyncStep1 = 0x14,
    SyncStep2 = 0x15,
    Delta = 0x20,
    Ack = 0x21,
    DeltaBatchChunk = 0x23,
    Ping = 0x30,
    Pong = 0x31,
    AwarenessUpdate = 0x40,
    AwarenessSubscribe = 0x41,
    AwarenessState = 0x42,
    DeltaBatch = 0x50,
    Error = 0xFF,
}

impl MessageType {
    /// All 19 codes in table order.
    pub const ALL: [MessageType; 19] = [
        MessageType::Auth,
        MessageType::AuthSuccess,
        MessageType::AuthError,
        MessageType::Subscribe,
        MessageType::Unsubscribe,
        MessageType::SyncRequest,
        MessageType::SyncResponse,
        MessageType::SyncStep1,
        MessageType::SyncStep2,
        MessageType::Delta,
        MessageType::Ack,
        MessageType::DeltaBatchChunk,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::AwarenessUpdate,
        MessageType::AwarenessSubscribe,
        MessageType::AwarenessState,
        MessageType::DeltaBatch,
        MessageType::Error,
    ];

    pub const fn code(self) -> u8 {
        self as u8
    }

    pub const fn from_code(code: u8) -> Option<MessageType> {
        Some(match code {
            0x01 => MessageType::Auth,
            0x02 => MessageType::AuthSuccess,
            0x03 => MessageType::AuthError,
            0x10 => MessageType::Subscribe,
            0x11 => MessageType::Unsubscribe,
            0x12 => MessageType::SyncRequest,
            0x13 => MessageType::SyncResponse,
            0x14 => MessageType::SyncStep1,
            0x15 => MessageType::SyncStep2,
            0x20 => MessageType::Delta,
            0x21 => MessageType::Ack,
            0x23 => MessageType::DeltaBatchChunk,
            0x30 => MessageType::Ping,
            0x31 => MessageType::Pong,
            0x40 => MessageType::AwarenessUpdate,
            0x41 => MessageType::AwarenessSubscribe,
            0x42 => MessageType::AwarenessState,
            0x50 => MessageType::DeltaBatch,
            0xFF => MessageType::Error,
            _ => return None,
        })
    }

    /// The string form used by the JSON text framing and in `Invalid message type: <t>`.
    pub const fn name(self) -> &'static str {
        match self {
            MessageType::Auth => "auth",
            MessageType::AuthSuccess => "auth_success",
            MessageType::AuthError => "auth_error",
            MessageType::Subscribe => "subscribe",
            MessageType::Unsubscribe => "unsubscribe",
            MessageType::SyncRequest => "sync_request",
            MessageType::SyncResponse => "sync_response",
            MessageType::SyncStep1 => "sync_step1",
            MessageType::SyncStep2 => "sync_step2",
            MessageType::Delta => "delta",
            MessageType::Ack => "ack",
            MessageType::DeltaBatchChunk => "delta_batch_chunk",
            MessageType::Ping => "ping",
            MessageType::Pong => "pong",
            MessageType::AwarenessUpdate => "awareness_update",
            MessageType::AwarenessSubscribe => "awareness_subscribe",
            MessageType::AwarenessState => "awareness_state",
            MessageType::DeltaBatch => "delta_batch",
            MessageType::Error => "error",
        }
    }

    pub fn from_name(name: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether SDK 0.3.0's code table has this code. `sync_step1`/`sync_step2` (0x14/0x15) are
    /// the only codes it lacks; it would decode them as `error`, so never send them.
    pub const fn sdk_knows(self) -> bool {
        !matches!(self, MessageType::SyncStep1 | MessageType::SyncStep2)
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which framing a message used; a reply uses the sender's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Framing {
    /// 13-byte header + JSON payload, sent as a WebSocket binary frame. What the SDKs use.
    #[default]
    Binary,
    /// One JSON object with `type`/`id`/`timestamp` at top level, sent as a WebSocket text frame.
    Text,
}

/// Why bytes could not be framed. Every variant is answered with ERROR
/// `"Invalid message format"` — see [`FrameError::WIRE_TEXT`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame too short: {len} bytes, the header alone is 13")]
    TooShort { len: usize },
    #[error("payload length {declared} exceeds the {available} bytes after the header")]
    LengthMismatch { declared: u32, available: usize },
    #[error("unknown type code 0x{0:02x}")]
    UnknownTypeCode(u8),
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("payload is not a JSON object")]
    NotAnObject,
    #[error("JSON text message has no truthy `type`")]
    MissingType,
    #[error("JSON text message has no truthy `id`")]
    MissingId,
    #[error("JSON text message has no truthy numeric `timestamp`")]
    MissingTimestamp,
}

impl FrameError {
    /// The ERROR text the reference sends for any framing failure.
    pub const WIRE_TEXT: &'static str = "Invalid message format";
}

/// One decoded binary frame; `payload` is the exact JSON text (validated to be one object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub message_type: MessageType,
    /// Header timestamp, ms since the epoch (signed).
    pub timestamp: i64,
    pub payload: String,
}

impl Frame {
    /// Re-encodes the frame; byte-identical to the input of [`decode_frame`] minus trailing bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self.message_type, self.timestamp, &self.payload)
    }

    /// The payload's members in order (`type` included; the message layer ignores it).
    pub fn members(&self) -> RawObject {
        serde_json::from_str(&self.payload).expect("decode_frame validated the payload")
    }
}

/// Decodes one binary frame. Checks: at least 13 bytes, declared length ≤ available
/// bytes (extra trailing bytes are ignored), known type code, UTF-8, JSON, one object.
pub fn decode_frame(data: &[u8]) -> Result<Frame, FrameError> {
    let (message_type, timestamp, body) = split_frame(data)?;
    let payload = std::str::from_utf8(body).map_err(|_| FrameError::InvalidUtf8)?;
    // Validate: exactly one JSON object.
    serde_json::from_str::<RawObject>(payload).map_err(classify_json_error)?;
    Ok(Frame { message_type, timestamp, payload: payload.to_owned() })
}

fn split_frame(data: &[u8]) -> Result<(MessageType, i64, &[u8]), FrameError> {
    if data.len() < HEADER_LEN {
        return Err(FrameError::TooShort { len: data.len() });
    }
    let code = data[0];
    let timestamp = i64::from_be_bytes(data[1..9].try_into().expect("8 bytes"));
    let declared = u32::from_be_bytes(data[9..13].try_into().expect("4 bytes"));
    let available = data.len() - HEADER_LEN;
    if declared as usize > available {
        return Err(FrameError::LengthMismatch { declared, available });
    }
    // The reference checks the length before the type code; keep that order.
    let message_type = MessageType::from_code(code).ok_or(FrameError::UnknownTypeCode(code))?;
    Ok((message_type, timestamp, &data[HEADER_LEN..HEADER_LEN + declared as usize]))
}

fn classify_json_error(e: serde_json::Error) -> FrameError {
    if e.is_data() { FrameError::NotAnObject } else { FrameError::InvalidJson(e.to_string()) }
}

/// Encodes one binary frame. `payload` must be the JSON text of one object (not checked).
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes (the protocol caps messages at 2,000,000).
pub fn encode_frame(message_type: MessageType, timestamp_ms: i64, payload: &str) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload longer than u32::MAX bytes");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(message_type.code());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload.as_bytes());
    out
}

// ---------------------------------------------------------------------------------------------

/// A framed message of either framing, before message-level typing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub framing: Framing,
    /// The type as a string. Binary: the code's name. Text: the `type` member as given
    /// (may be unknown, or a name without a code such as `connect`/`snapshot_request`).
    pub type_name: String,
    /// The code, when the name has one.
    pub message_type: Option<MessageType>,
    /// Binary: header timestamp. Text: the top-level `timestamp` (truncated to an integer).
    pub timestamp: i64,
    /// The message's fields in order.
    /// Binary: the payload members *including* a payload-level `type` (the reference drops it;
    /// the message layer ignores it except to remember SDK 0.1.1's `"type":"set"`).
    /// Text: the top-level members minus `type`, with an object `payload` flattened onto them
    /// (payload keys override, `payload.type` dropped), so `id`/`timestamp` are included.
    pub members: RawObject,
}

/// Decodes anything a client sends.
///
/// `ws_text` says whether the WebSocket frame was a text frame. Text frames, and binary frames
/// starting with `{` (0x7B), are JSON text framing; everything else is a binary frame.
/// On error, [`detect_framing`] tells which framing the error reply should use.
pub fn decode(data: &[u8], ws_text: bool) -> Result<Envelope, FrameError> {
    match detect_framing(data, ws_text) {
        Framing::Text => {
            let text = std::str::from_utf8(data).map_err(|_| FrameError::InvalidUtf8)?;
            decode_text(text)
        }
        Framing::Binary => {
            let (message_type, timestamp, body) = split_frame(data)?;
            let payload = std::str::from_utf8(body).map_err(|_| FrameError::InvalidUtf8)?;
            let members = serde_json::from_str::<RawObject>(payload).map_err(classify_json_error)?;
            Ok(Envelope {
                framing: Framing::Binary,
                type_name: message_type.name().to_owned(),
                message_type: Some(message_type),
                timestamp,
                members,
            })
        }
    }
}

/// The framing [`decode`] would use for `data` (and the framing for an error reply to it).
pub fn detect_framing(data: &[u8], ws_text: bool) -> Framing {
    if ws_text || data.first() == Some(&b'{') { Framing::Text } else { Framing::Binary }
}

/// Decodes one JSON text-framed message: an object with truthy `type`, `id` and
/// `timestamp` (this codec also requires `timestamp` to be a number); an object `payload` is
/// flattened onto the top level.
pub fn decode_text(text: &str) -> Result<Envelope, FrameError> {
    let mut members = serde_json::from_str::<RawObject>(text).map_err(classify_json_error)?;
    let type_raw = members.remove("type").filter(|t| is_truthy(t)).ok_or(FrameError::MissingType)?;
    if !members.get("id").is_some_and(is_truthy) {
        return Err(FrameError::MissingId);
    }
    let timestamp =
        members.get("timestamp").filter(|t| is_truthy(t)).and_then(raw_as_i64).ok_or(FrameError::MissingTimestamp)?;
    let is_object_payload = members.get("payload").is_some_and(|p| p.get().starts_with('{'));
    if is_object_payload {
        let payload = members.remove("payload").expect("checked above");
        // Can still fail: the outer parse left the payload raw, and a key in it may be a lone
        // surrogate (valid JSON text, no valid string).
        let payload: RawObject = serde_json::from_str(payload.get()).map_err(classify_json_error)?;
        for (k, v) in payload.into_members() {
            if k != "type" {
                members.insert(k, v);
            }
        }
    }
    let type_name = raw_as_str(&type_raw).unwrap_or_else(|| js_display(&type_raw));
    Ok(Envelope {
        framing: Framing::Text,
        message_type: MessageType::from_name(&type_name),
        type_name,
        timestamp,
        members,
    })
}

/// Encodes a text-framed message: `{"type":<name>,"id":…,"timestamp":…,…rest}` — the key order
/// of `JSON.stringify({type, id, timestamp, ...fields})` in the reference. `id` is written only
/// if `members` has one; a `timestamp` member (SDK 0.1.1 deltas carry one) overrides
/// `timestamp_ms` in place, as the JS spread would.
pub fn encode_text(type_name: &str, timestamp_ms: i64, members: &RawObject) -> String {
    let mut out = String::with_capacity(64 + members.len() * 16);
    out.push_str("{\"type\":");
    out.push_str(&serde_json::to_string(type_name).expect("string"));
    if let Some(id) = members.get("id") {
        out.push_str(",\"id\":");
        out.push_str(id.get());
    }
    out.push_str(",\"timestamp\":");
    match members.get("timestamp") {
        Some(ts) => out.push_str(ts.get()),
        None => out.push_str(&timestamp_ms.to_string()),
    }
    for (k, v) in members.iter() {
        if matches!(k, "type" | "id" | "timestamp") {
            continue;
        }
        out.push(',');
        out.push_str(&serde_json::to_string(k).expect("string"));
        out.push(':');
        out.push_str(v.get());
    }
    out.push('}');
    out
}

/// An encoded message ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// Send as a WebSocket binary frame.
    Binary(Vec<u8>),
    /// Send as a WebSocket text frame.
    Text(String),
}

impl Encoded {
    pub fn framing(&self) -> Framing {
        match self {
            Encoded::Binary(_) => Framing::Binary,
            Encoded::Text(_) => Framing::Text,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Encoded::Binary(b) => b,
            Encoded::Text(s) => s.as_bytes(),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Encoded::Binary(b) => b,
            Encoded::Text(s) => s.into_bytes(),
        }
    }
}

/// Encodes `payload` (the binary-framing JSON object text, e.g. `{"id":"…","messageId":"m-1"}`)
/// in the given framing.
pub fn encode(framing: Framing, message_type: MessageType, timestamp_ms: i64, payload: &str) -> Encoded {
    match framing {
        Framing::Binary => Encoded::Binary(encode_frame(message_type, timestamp_ms, payload)),
        Framing::Text => {
            let members: RawObject = serde_json::from_str(payload).expect("encode: payload must be a JSON object");
            Encoded::Text(encode_text(message_type.name(), timestamp_ms, &members))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_have_exact_values() {
        let expected: [(u8, &str); 19] = [
            (0x01, "auth"),
            (0x02, "auth_success"),
            (0x03, "auth_error"),
            (0x10, "subscribe"),
            (0x11, "unsubscribe"),
            (0x12, "sync_request"),
            (0x13, "sync_response"),
            (0x14, "sync_step1"),
            (0x15, "sync_step2"),
            (0x20, "delta"),
            (0x21, "ack"),
            (0x23, "delta_batch_chunk"),
            (0x30, "ping"),
            (0x31, "pong"),
            (0x40, "awareness_update"),
            (0x41, "awareness_subscribe"),
            (0x42, "awareness_state"),
            (0x50, "delta_batch"),
            (0xFF, "error"),
        ];
        for ((code, name), t) in expected.iter().zip(MessageType::ALL) {
            assert_eq!(t.code(), *code);
            assert_eq!(t.name(), *name);
            assert_eq!(MessageType::from_code(*code), Some(t));
            assert_eq!(MessageType::from_name(name), Some(t));
        }
        let known: Vec<u8> = expected.iter().map(|(c, _)| *c).collect();
        for code in 0..=255u8 {
            assert_eq!(MessageType::from_code(code).is_some(), known.contains(&code), "0x{code:02x}");
        }
        assert_eq!(MessageType::from_code(0x22), None, "0x22 is the Python/Go bug");
        assert_eq!(MessageType::DeltaBatch.code(), 0x50);
        assert!(!MessageType::SyncStep2.sdk_knows());
        assert!(MessageType::DeltaBatch.sdk_knows());
    }

    #[test]
    fn header_layout() {
        let bytes = encode_frame(MessageType::Ping, -2, "{}");
        assert_eq!(bytes, [0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 2, b'{', b'}']);
        let frame = decode_frame(&bytes).unwrap();
        assert_eq!(frame.timestamp, -2);
        assert_eq!(frame.message_type, MessageType::Ping);
    }

    #[test]
    fn payload_length_counts_bytes_not_chars() {
        let bytes = encode_frame(MessageType::Subscribe, 0, r#"{"documentId":"é"}"#);
        assert_eq!(u32::from_be_bytes(bytes[9..13].try_into().unwrap()), 19);
        assert_eq!(decode_frame(&bytes).unwrap().payload, r#"{"documentId":"é"}"#);
    }

    #[test]
    fn text_flattens_payload() {
        let env = decode_text(
            r#"{"type":"delta","id":"x","timestamp":5,"payload":{"type":"set","documentId":"d","id":"y"}}"#,
        )
        .unwrap();
        assert_eq!(env.type_name, "delta");
        assert_eq!(env.message_type, Some(MessageType::Delta));
        assert_eq!(env.timestamp, 5);
        assert_eq!(env.members.to_json(), r#"{"id":"y","timestamp":5,"documentId":"d"}"#);
    }

    #[test]
    fn text_keeps_unknown_and_codeless_names() {
        let env = decode_text(r#"{"type":"connect","id":"1","timestamp":1}"#).unwrap();
        assert_eq!(env.message_type, None);
        assert_eq!(env.type_name, "connect");
        let env = decode_text(r#"{"type":7,"id":"1","timestamp":1}"#).unwrap();
        assert_eq!(env.type_name, "7");
    }
}
