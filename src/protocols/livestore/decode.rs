//! The decode error shared by both protocol versions, plus the field-level helpers the
//! decoders are built from.
//!
//! Frames are decoded in two steps: first into an "envelope" whose fields are all borrowed
//! `&RawValue`s (one pass over the bytes, never fails on a field's type), then each field is
//! decoded on its own. That gives error messages that name the field, lets a decode error
//! carry the request id even when another field is broken, and avoids serde's internally
//! tagged enums, which cannot hold `RawValue`s.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::wire_event::{WireEvent, deserialize_seq_num};

/// A client frame that could not be decoded.
///
/// `request_id` is the id of the request the frame belongs to, when it could be read
/// (0.3: the frame's `requestId`; 0.4: a `Request`'s `id`). The server uses it to address its
/// error reply; without it there is no request to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    pub request_id: Option<String>,
    pub kind: DecodeErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("frame is not a JSON object")]
    NotAnObject,
    #[error("frame has no string `_tag`")]
    MissingTag,
    #[error("unknown message tag {0:?}")]
    UnknownTag(String),
    /// 0.4 only: a `Request` whose RPC `tag` this transport does not serve.
    #[error("unknown RPC {0:?}")]
    UnknownRpc(String),
    /// The tag is known, but a field is missing or has the wrong type or value.
    #[error("invalid {tag}: {detail}")]
    InvalidMessage { tag: String, detail: String },
    /// A known message that is not allowed where it arrived (e.g. a `Ping` as an HTTP body).
    #[error("{0} is not accepted here")]
    UnexpectedMessage(String),
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

/// serde_json appends " at line L column C"; those positions are relative to a sub-slice of
/// the frame, so they would only mislead.
pub(crate) fn json_error_text(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_owned(),
        None => text,
    }
}

/// Parses the top level of a frame into an all-`RawValue` envelope.
pub(crate) fn parse_envelope<'a, E: Deserialize<'a>>(frame: &'a str) -> Result<E, DecodeErrorKind> {
    // Checked up front: serde_json would happily read `null` as an envelope of absent fields.
    if !frame.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
            Ok(_) => DecodeErrorKind::NotAnObject,
            Err(e) => DecodeErrorKind::InvalidJson(json_error_text(&e)),
        });
    }
    // Syntax/EOF errors, and duplicate keys.
    serde_json::from_str(frame).map_err(|e| DecodeErrorKind::InvalidJson(json_error_text(&e)))
}

/// Reads `_tag` as a string; anything else counts as "no tag".
pub(crate) fn tag_of(raw: Option<&RawValue>) -> Result<String, DecodeErrorKind> {
    string_if_present(raw).ok_or(DecodeErrorKind::MissingTag)
}

/// A string field read leniently, for error addressing only.
pub(crate) fn string_if_present(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

pub(crate) fn required<T: DeserializeOwned>(raw: Option<&RawValue>, field: &str) -> Result<T, String> {
    let raw = raw.ok_or_else(|| format!("missing field `{field}`"))?;
    serde_json::from_str(raw.get()).map_err(|e| format!("field `{field}`: {}", json_error_text(&e)))
}

pub(crate) fn required_seq_num(raw: Option<&RawValue>, field: &'static str) -> Result<u64, String> {
    let raw = raw.ok_or_else(|| format!("missing field `{field}`"))?;
    seq_num_from_raw(raw, field)
}

pub(crate) fn optional_seq_num(raw: Option<&RawValue>, field: &'static str) -> Result<Option<u64>, String> {
    raw.map(|r| seq_num_from_raw(r, field)).transpose()
}

fn seq_num_from_raw(raw: &RawValue, field: &'static str) -> Result<u64, String> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    deserialize_seq_num(&mut de, field).map_err(|e| json_error_text(&e))
}

/// Kept raw (verbatim bytes) because the server only passes it on to auth hooks.
pub(crate) fn optional_raw(raw: Option<&RawValue>) -> Option<Box<RawValue>> {
    raw.map(RawValue::to_owned)
}

/// An Effect `Option` field (`{"_tag":"None"}` or `{"_tag":"Some","value":…}`): the key is
/// required, `None` → `Ok(None)`, `Some` → the raw `value`, which the caller decodes.
pub(crate) fn required_effect_option<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
) -> Result<Option<&'a RawValue>, String> {
    #[derive(Deserialize)]
    struct OptionEnvelope<'a> {
        #[serde(rename = "_tag", default, borrow, deserialize_with = "present")]
        tag: Option<&'a RawValue>,
        #[serde(default, borrow, deserialize_with = "present")]
        value: Option<&'a RawValue>,
    }

    let raw = raw
        .ok_or_else(|| format!("missing field `{field}` (an Option field is required; send {{\"_tag\":\"None\"}})"))?;
    let envelope: OptionEnvelope<'a> =
        object_from_raw(raw).map_err(|detail| format!("field `{field}`: expected an Option object: {detail}"))?;
    let tag = envelope
        .tag
        .and_then(|t| serde_json::from_str::<String>(t.get()).ok())
        .ok_or_else(|| format!("field `{field}`: Option has no string `_tag`"))?;
    match tag.as_str() {
        "None" => Ok(None),
        "Some" => envelope.value.map(Some).ok_or_else(|| format!("field `{field}`: Option `Some` has no `value`")),
        other => Err(format!("field `{field}`: Option `_tag` must be \"None\" or \"Some\", got {other:?}")),
    }
}

/// Decodes a struct from a JSON object only: serde's derived structs would also accept an
/// array of the fields in order, which no Effect schema does.
pub(crate) fn object_from_raw<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, String> {
    if !raw.get().starts_with('{') {
        let found = match raw.get().as_bytes().first() {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b'n') => "null",
            Some(b't' | b'f') => "a boolean",
            _ => "a number",
        };
        return Err(format!("expected a JSON object, got {found}"));
    }
    serde_json::from_str(raw.get()).map_err(|e| json_error_text(&e))
}

/// A push batch, decoded item by item so an error names the offending index.
pub(crate) fn required_batch(raw: Option<&RawValue>) -> Result<Vec<WireEvent>, String> {
    let items: Vec<&RawValue> = match raw {
        None => return Err("missing field `batch`".to_owned()),
        Some(r) => serde_json::from_str(r.get()).map_err(|e| format!("field `batch`: {}", json_error_text(&e)))?,
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| object_from_raw(item).map_err(|detail| format!("batch[{i}]: {detail}")))
        .collect()
}
