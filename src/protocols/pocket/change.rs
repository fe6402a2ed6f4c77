//! `ChangeEvent`, the element of a push's `changes` and of a pull-response's
//! `changes[collection]`.

use serde::{Deserialize, Serialize};
use serde_json::Number;
use serde_json::value::RawValue;

use super::decode::{borrow_from_raw, expect_object, optional, present, required};
use super::document::DocumentMeta;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// `{operation, documentId, document, previousDocument?, isFromSync, timestamp, sequence}`,
/// serialized in that order (the real client's order).
///
/// - `document` is always written, as `null` when `None` (a real delete).
/// - `previous_document` is left out when `None` (an insert has none).
/// - `sequence`: on the way up, the client's own per-collection counter; on the way down it
///   must be the **server** sequence of the log entry: set it before encoding.
/// - Bodies are raw JSON, relayed byte for byte. Unknown fields of the change are dropped.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeEvent {
    pub operation: Operation,
    pub document_id: String,
    pub document: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_document: Option<Box<RawValue>>,
    #[serde(default)]
    pub is_from_sync: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Number>,
    #[serde(default)]
    pub sequence: u64,
}

impl PartialEq for ChangeEvent {
    fn eq(&self, other: &Self) -> bool {
        fn raw(v: &Option<Box<RawValue>>) -> Option<&str> {
            v.as_deref().map(RawValue::get)
        }
        self.operation == other.operation
            && self.document_id == other.document_id
            && raw(&self.document) == raw(&other.document)
            && raw(&self.previous_document) == raw(&other.previous_document)
            && self.is_from_sync == other.is_from_sync
            && self.timestamp == other.timestamp
            && self.sequence == other.sequence
    }
}

impl Eq for ChangeEvent {}

impl ChangeEvent {
    /// The system fields of `document` (`None` for a `document: null` delete). Cannot fail on a
    /// change that came out of [`decode_change`].
    pub fn document_meta(&self) -> Option<Result<DocumentMeta, String>> {
        self.document.as_deref().map(|d| DocumentMeta::parse(d, "document"))
    }

    /// A copy for the way down, with `sequence` set to the server's sequence.
    pub fn with_sequence(&self, sequence: u64) -> Self {
        Self { sequence, ..self.clone() }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ChangeEvent always serializes")
    }
}

#[derive(Deserialize)]
struct ChangeEnvelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    operation: Option<&'a RawValue>,
    #[serde(rename = "documentId", default, borrow, deserialize_with = "present")]
    document_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    document: Option<&'a RawValue>,
    #[serde(rename = "previousDocument", default, borrow, deserialize_with = "present")]
    previous_document: Option<&'a RawValue>,
    #[serde(rename = "isFromSync", default, borrow, deserialize_with = "present")]
    is_from_sync: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    timestamp: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    sequence: Option<&'a RawValue>,
}

/// Decodes and validates one change. `path` prefixes every error (`changes[3]`).
///
/// Required: `operation` (`insert|update|delete`), `documentId` (string). `insert` and `update`
/// need a `document`; a `delete` may carry `null` (the real client) or a tombstone document.
/// A non-null `document` must be an object whose `_id`, when present, equals `documentId`, and
/// whose system fields have their types (see [`DocumentMeta`]). `previousDocument`, when present
/// and not null, must be an object. `isFromSync` (default false), `timestamp` (any number) and
/// `sequence` (non-negative integer, default 0) are optional.
pub fn decode_change(raw: &RawValue, path: &str) -> Result<ChangeEvent, String> {
    expect_object(raw, path)?;
    let env: ChangeEnvelope<'_> = borrow_from_raw(raw, path)?;
    let field = |name: &str| format!("{path}.{name}");

    let operation: Operation = required(env.operation, &field("operation"))
        .map_err(|e| format!("{e} (expected \"insert\", \"update\" or \"delete\")"))?;
    let document_id: String = required(env.document_id, &field("documentId"))?;

    let document = match env.document {
        Some(d) if d.get() != "null" => {
            let meta = DocumentMeta::parse(d, &field("document"))?;
            if let Some(id) = meta.id.as_ref().filter(|id| **id != document_id) {
                return Err(format!("{}: `_id` {id:?} differs from documentId {document_id:?}", field("document")));
            }
            Some(d.to_owned())
        }
        _ => None,
    };
    if document.is_none() && operation != Operation::Delete {
        return Err(format!("{}: an {} needs a document", field("document"), operation.as_str()));
    }

    let previous_document = match env.previous_document {
        Some(p) if p.get() != "null" => {
            expect_object(p, &field("previousDocument"))?;
            Some(p.to_owned())
        }
        _ => None,
    };

    Ok(ChangeEvent {
        operation,
        document_id,
        document,
        previous_document,
        is_from_sync: optional(env.is_from_sync, &field("isFromSync"))?.unwrap_or(false),
        timestamp: optional(env.timestamp, &field("timestamp"))?,
        sequence: optional(env.sequence, &field("sequence"))?.unwrap_or(0),
    })
}
