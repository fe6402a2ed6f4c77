//! The checkpoint: one object type for the client's full checkpoint
//! (`{id, sequences, timestamp, nodeId}`), the server's reply checkpoint (`{sequences, timestamp}`)
//! and the empty `{}` a broadcast may carry.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Number;
use serde_json::value::RawValue;

use super::decode::{borrow_from_raw, expect_object, from_raw, optional, present};

/// `{[collection]: sequence}` in wire order.
///
/// The order of keys does not matter to the client (it merges key by key, taking the max),
/// but it is kept so that re-encoding is byte-for-byte. A duplicated key keeps its first position
/// and its last value, as `JSON.parse` does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sequences(Vec<(String, u64)>);

impl Sequences {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `collection`; the server treats a missing one as 0.
    pub fn get(&self, collection: &str) -> Option<u64> {
        self.0.iter().find(|(c, _)| c == collection).map(|(_, s)| *s)
    }

    /// Sets `collection` to `sequence`, replacing the value in place or appending a new key.
    pub fn set(&mut self, collection: impl Into<String>, sequence: u64) {
        let collection = collection.into();
        match self.0.iter_mut().find(|(c, _)| *c == collection) {
            Some(entry) => entry.1 = sequence,
            None => self.0.push((collection, sequence)),
        }
    }

    /// The client's merge rule: per collection, the max of both sides.
    pub fn merge_max(&mut self, other: &Sequences) {
        for (collection, sequence) in other.iter() {
            let merged = self.get(collection).map_or(sequence, |mine| mine.max(sequence));
            self.set(collection, merged);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(c, s)| (c.as_str(), *s))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: Into<String>> FromIterator<(S, u64)> for Sequences {
    fn from_iter<I: IntoIterator<Item = (S, u64)>>(iter: I) -> Self {
        let mut sequences = Sequences::new();
        for (collection, sequence) in iter {
            sequences.set(collection, sequence);
        }
        sequences
    }
}

impl Serialize for Sequences {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (collection, sequence) in &self.0 {
            map.serialize_entry(collection, sequence)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Sequences {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SequencesVisitor;

        impl<'de> Visitor<'de> for SequencesVisitor {
            type Value = Sequences;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of non-negative integer sequences")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sequences, A::Error> {
                let mut sequences = Sequences::new();
                while let Some((collection, sequence)) = map.next_entry::<String, u64>()? {
                    sequences.set(collection, sequence);
                }
                Ok(sequences)
            }
        }

        deserializer.deserialize_map(SequencesVisitor)
    }
}

/// A checkpoint as it travels in either direction. Every field is optional on the wire:
///
/// | who | shape |
/// |---|---|
/// | client (push, pull) | `{id:"<nodeId>_<ms>", sequences, timestamp (0 at first), nodeId}` |
/// | server reply | `{sequences, timestamp}`; the client reads only `sequences` |
/// | broadcast | the recipient's own last-sent checkpoint, or `{}` |
///
/// Serialized in that key order, absent fields left out. Unknown fields are dropped.
/// `timestamp` is a [`Number`] so that whatever the client sent re-encodes unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequences: Option<Sequences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl Checkpoint {
    /// The checkpoint a server puts in a `push-response` or `pull-response`.
    pub fn server(sequences: Sequences, timestamp_ms: u64) -> Self {
        Self { id: None, sequences: Some(sequences), timestamp: Some(timestamp_ms.into()), node_id: None }
    }

    /// A fresh client checkpoint: `{id:"<nodeId>_<created>", sequences:{}, timestamp:0, nodeId}`.
    pub fn new_client(node_id: &str, created_ms: u64) -> Self {
        Self {
            id: Some(format!("{node_id}_{created_ms}")),
            sequences: Some(Sequences::new()),
            timestamp: Some(0u64.into()),
            node_id: Some(node_id.to_owned()),
        }
    }

    /// The sequence for `collection`, 0 when missing (the server's reading).
    pub fn sequence(&self, collection: &str) -> u64 {
        self.sequences.as_ref().and_then(|s| s.get(collection)).unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct CheckpointFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    sequences: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "nodeId", default, borrow, deserialize_with = "present")]
    node_id: Option<&'a RawValue>,
}

/// Decodes a checkpoint object field by field, so errors name the field (`checkpoint.sequences`).
/// A present `null` reads as absent.
pub fn decode_checkpoint(raw: &RawValue, path: &str) -> Result<Checkpoint, String> {
    expect_object(raw, path)?;
    let fields: CheckpointFields<'_> = borrow_from_raw(raw, path)?;
    let sequences = match fields.sequences {
        Some(s) if s.get() != "null" => {
            let field = format!("{path}.sequences");
            expect_object(s, &field)?;
            Some(from_raw(s, &field)?)
        }
        _ => None,
    };
    Ok(Checkpoint {
        id: optional(fields.id, &format!("{path}.id"))?,
        sequences,
        timestamp: optional(fields.timestamp, &format!("{path}.timestamp"))?,
        node_id: optional(fields.node_id, &format!("{path}.nodeId"))?,
    })
}
