//! The decode error shared by every decoder, plus the field-level helpers they are built from.
//!
//! A frame is decoded in two steps: first into an envelope whose fields are borrowed
//! `&RawValue`s (one pass, never fails on a field's type), then field by field. That gives error
//! messages that name the field (`changes[1].document._rev: …`), lets an error carry the request
//! `id` even when another field is broken, and avoids serde's internally tagged enums, which
//! cannot hold `RawValue`s.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A frame or body that could not be decoded.
///
/// `request_id` is the frame's `id` when it was a JSON string, so the error reply can echo it
/// (the client then gives up at once instead of after its 30 s timeout); without it the reply
/// falls back to the reference's `error_<ms>` id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    pub request_id: Option<String>,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// A binary frame or HTTP body that is not UTF-8 (the reference decodes every frame as UTF-8).
    #[error("frame is not valid UTF-8")]
    InvalidUtf8,
    #[error("{0}")]
    InvalidJson(String),
    #[error("expected a JSON object")]
    NotAnObject,
    #[error("message has no string `type`")]
    MissingType,
    /// A JSON object whose `type` is a string this side does not accept (for a server: anything
    /// but `push` and `pull`, `ack` included).
    #[error("Unknown message type: {0}")]
    UnknownType(String),
    /// The type is known, but a field is missing or has the wrong type or value.
    #[error("invalid {message_type}: {detail}")]
    InvalidMessage { message_type: String, detail: String },
}

impl DecodeError {
    pub(crate) fn new(request_id: Option<String>, kind: DecodeErrorKind) -> Self {
        Self { request_id, kind }
    }
}

/// Makes a present `null` distinguishable from an absent key: `Option<&RawValue>` alone would
/// turn `"key":null` into `None`. Use with `#[serde(default, borrow, deserialize_with = "present")]`.
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// serde_json appends " at line L column C"; those positions are relative to a sub-slice of the
/// frame, so they would only mislead.
pub(crate) fn json_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_owned(),
        None => text,
    }
}

/// The envelope every JSON message shares: `type` and `id` read leniently, the rest borrowed.
#[derive(Deserialize)]
pub(crate) struct Envelope<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    pub(crate) message_type: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub(crate) id: Option<&'a RawValue>,
}

/// Parses `frame` as a JSON object and reads its `type` and `id`.
/// Returns the envelope plus the `type` string, or an error carrying the `id` when it was readable.
pub(crate) fn parse_envelope(frame: &str) -> Result<(Option<String>, String), DecodeError> {
    // Checked up front: serde_json would read `null` or `[]` as an envelope of absent fields.
    if !frame.trim_start().starts_with('{') {
        let kind = match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
            Ok(_) => DecodeErrorKind::NotAnObject,
            Err(e) => DecodeErrorKind::InvalidJson(json_error_text(&e)),
        };
        return Err(DecodeError::new(None, kind));
    }
    // Validates the whole frame's syntax (RawValue fields are still checked), and rejects
    // duplicate `type`/`id` keys.
    let envelope: Envelope<'_> = serde_json::from_str(frame)
        .map_err(|e| DecodeError::new(None, DecodeErrorKind::InvalidJson(json_error_text(&e))))?;
    let id = string_if_present(envelope.id);
    match string_if_present(envelope.message_type) {
        Some(t) => Ok((id, t)),
        None => Err(DecodeError::new(id, DecodeErrorKind::MissingType)),
    }
}

/// A string field read leniently, for addressing only.
pub(crate) fn string_if_present(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

pub(crate) fn required<T: DeserializeOwned>(raw: Option<&RawValue>, field: &str) -> Result<T, String> {
    let raw = raw.ok_or_else(|| format!("missing field `{field}`"))?;
    from_raw(raw, field)
}

/// An optional field; a present `null` counts as absent.
pub(crate) fn optional<T: DeserializeOwned>(raw: Option<&RawValue>, field: &str) -> Result<Option<T>, String> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => from_raw(r, field).map(Some),
    }
}

pub(crate) fn from_raw<T: DeserializeOwned>(raw: &RawValue, field: &str) -> Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("{field}: {}", json_error_text(&e)))
}

/// What kind of JSON value `raw` is, for error messages.
pub(crate) fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

/// Fails unless `raw` is a JSON object. serde's derived structs would also accept an array of
/// the fields in order, which no JavaScript peer ever sends.
pub(crate) fn expect_object(raw: &RawValue, field: &str) -> Result<(), String> {
    if raw.get().starts_with('{') { Ok(()) } else { Err(format!("{field}: expected an object, got {}", kind_of(raw))) }
}

/// Decodes a JSON array item by item, so an error names the offending index.
pub(crate) fn items<'a>(raw: Option<&'a RawValue>, field: &str) -> Result<Vec<&'a RawValue>, String> {
    let raw = raw.ok_or_else(|| format!("missing field `{field}`"))?;
    if !raw.get().starts_with('[') {
        return Err(format!("{field}: expected an array, got {}", kind_of(raw)));
    }
    serde_json::from_str(raw.get()).map_err(|e| format!("{field}: {}", json_error_text(&e)))
}

/// [`from_raw`] for types that borrow from `raw` (the all-`RawValue` envelopes).
pub(crate) fn borrow_from_raw<'a, T: Deserialize<'a>>(raw: &'a RawValue, field: &str) -> Result<T, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("{field}: {}", json_error_text(&e)))
}
