//! Shapes shared by both protocol versions: the "global encoded event", the server-generated
//! sync metadata and Effect's `Option` JSON encoding (`protocols/livestore/WIRE.md`, "The event").

use std::fmt;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Sequence numbers are Effect `Schema.Int`, which is `Number.isSafeInteger`: the client
/// rejects anything larger, so the server must never accept (and later echo) it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// An event with a global sequence number, exactly as clients push it and pulls return it.
///
/// Serializes with the clients' key order: `name, args, seqNum, parentSeqNum, clientId,
/// sessionId`. Extra keys are ignored when decoding, as the client's schema does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireEvent {
    pub name: String,
    /// The client's bytes, verbatim. `None` = key absent (re-encoded absent);
    /// `Some("null")` = an explicit `null` (re-encoded as `null`).
    #[serde(default, deserialize_with = "deserialize_args", skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    #[serde(deserialize_with = "deserialize_seq_num_field")]
    pub seq_num: u64,
    #[serde(deserialize_with = "deserialize_parent_seq_num_field")]
    pub parent_seq_num: u64,
    pub client_id: String,
    pub session_id: String,
}

impl PartialEq for WireEvent {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && same_raw(&self.args, &other.args)
            && self.seq_num == other.seq_num
            && self.parent_seq_num == other.parent_seq_num
            && self.client_id == other.client_id
            && self.session_id == other.session_id
    }
}

impl Eq for WireEvent {}

/// `RawValue` has no `PartialEq`; two raw values are equal when their bytes are.
pub(crate) fn same_raw(a: &Option<Box<RawValue>>, b: &Option<Box<RawValue>>) -> bool {
    a.as_deref().map(RawValue::get) == b.as_deref().map(RawValue::get)
}

fn deserialize_args<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

fn deserialize_seq_num_field<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    deserialize_seq_num(d, "seqNum")
}

fn deserialize_parent_seq_num_field<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    deserialize_seq_num(d, "parentSeqNum")
}

/// Accepts what `Schema.Int` accepts after `JSON.parse`, restricted to ≥ 0: `1`, and also
/// `1.0`/`1e2` (JS cannot tell them apart from `1`/`100`); rejects `1.5`, `"1"`, `-1`, `2^53`.
pub(crate) fn deserialize_seq_num<'de, D: Deserializer<'de>>(d: D, field: &'static str) -> Result<u64, D::Error> {
    d.deserialize_any(SeqNumVisitor { field })
}

struct SeqNumVisitor {
    field: &'static str,
}

impl<'de> Visitor<'de> for SeqNumVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "`{}` to be a non-negative JSON integer no larger than 2^53-1", self.field)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= MAX_SAFE_INTEGER { Ok(v) } else { Err(E::invalid_value(Unexpected::Unsigned(v), &self)) }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..=MAX_SAFE_INTEGER as f64).contains(&v) {
            // Exact: v is integral and within 2^53.
            Ok(v as u64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

/// Per-event metadata the server attaches when it accepts a push.
/// `created_at` is an opaque ISO-8601 string; one value per accepted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMetadata {
    pub created_at: String,
}

/// One element of a pull batch: `{"eventEncoded":…,"metadata":<Option<SyncMetadata>>}`.
/// The metadata encoding differs per version (0.4 adds a mandatory `_tag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedEvent {
    pub event: WireEvent,
    pub metadata: Option<SyncMetadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetadataFormat {
    /// `{"createdAt":…}`
    V03,
    /// `{"_tag":"SyncMessage.SyncMetadata","createdAt":…}`; the tag is mandatory in 0.4.
    V04,
}

/// Effect `Schema.Option` encoding: `{"_tag":"None"}` / `{"_tag":"Some","value":…}`.
pub(crate) struct EffectOption<T>(pub Option<T>);

impl<T: Serialize> Serialize for EffectOption<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("_tag", "None")?;
                map.end()
            }
            Some(value) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("_tag", "Some")?;
                map.serialize_entry("value", value)?;
                map.end()
            }
        }
    }
}

struct EncodeMetadata<'a> {
    metadata: &'a SyncMetadata,
    format: MetadataFormat,
}

impl Serialize for EncodeMetadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if self.format == MetadataFormat::V04 {
            map.serialize_entry("_tag", "SyncMessage.SyncMetadata")?;
        }
        map.serialize_entry("createdAt", &self.metadata.created_at)?;
        map.end()
    }
}

struct EncodeSyncedEvent<'a> {
    item: &'a SyncedEvent,
    format: MetadataFormat,
}

impl Serialize for EncodeSyncedEvent<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let metadata = self.item.metadata.as_ref().map(|metadata| EncodeMetadata { metadata, format: self.format });
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("eventEncoded", &self.item.event)?;
        map.serialize_entry("metadata", &EffectOption(metadata))?;
        map.end()
    }
}

/// A pull batch (`[{"eventEncoded":…,"metadata":…},…]`) in one version's metadata format.
pub(crate) struct EncodeBatch<'a> {
    pub items: &'a [SyncedEvent],
    pub format: MetadataFormat,
}

impl Serialize for EncodeBatch<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for item in self.items {
            seq.serialize_element(&EncodeSyncedEvent { item, format: self.format })?;
        }
        seq.end()
    }
}

/// Every type serialized here is string-keyed and holds only valid JSON, so serde_json
/// cannot fail on it.
pub(crate) fn to_json_string<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types always serialize to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example event of `WIRE.md`, verbatim.
    const SPEC_EVENT: &str = r#"{"name":"todoCreated-v1","args":{"id":"a","text":"x"},"seqNum":1,"parentSeqNum":0,"clientId":"c1","sessionId":"s1"}"#;

    fn decode(json: &str) -> Result<WireEvent, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    fn event_with(field: &str, value: &str) -> String {
        let (seq, parent) = match field {
            "seqNum" => (value, "0"),
            _ => ("1", value),
        };
        format!(r#"{{"name":"n","args":null,"seqNum":{seq},"parentSeqNum":{parent},"clientId":"c","sessionId":"s"}}"#)
    }

    #[test]
    fn spec_event_round_trips_byte_for_byte() {
        let event = decode(SPEC_EVENT).unwrap();
        assert_eq!(event.name, "todoCreated-v1");
        assert_eq!(event.args.as_deref().map(RawValue::get), Some(r#"{"id":"a","text":"x"}"#));
        assert_eq!((event.seq_num, event.parent_seq_num), (1, 0));
        assert_eq!((event.client_id.as_str(), event.session_id.as_str()), ("c1", "s1"));
        assert_eq!(to_json_string(&event), SPEC_EVENT);
    }

    #[test]
    fn constructed_event_uses_spec_key_order() {
        let event = WireEvent {
            name: "todoCreated-v1".into(),
            args: Some(RawValue::from_string(r#"{"id":"a","text":"x"}"#.into()).unwrap()),
            seq_num: 1,
            parent_seq_num: 0,
            client_id: "c1".into(),
            session_id: "s1".into(),
        };
        assert_eq!(to_json_string(&event), SPEC_EVENT);
    }

    #[test]
    fn args_bytes_are_kept_verbatim() {
        let json = r#"{"name":"n","args":{ "b" : [1, 2.50, "\u00e9"], "a":1 },"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
        assert_eq!(to_json_string(&decode(json).unwrap()), json);
    }

    #[test]
    fn args_null_and_absent_are_distinct() {
        let null = r#"{"name":"n","args":null,"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
        let event = decode(null).unwrap();
        assert_eq!(event.args.as_deref().map(RawValue::get), Some("null"));
        assert_eq!(to_json_string(&event), null);

        let absent = r#"{"name":"n","seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
        let event = decode(absent).unwrap();
        assert!(event.args.is_none());
        assert_eq!(to_json_string(&event), absent);
    }

    #[test]
    fn extra_keys_are_ignored() {
        let json = r#"{"x":{"deep":[1]},"name":"n","args":1,"seqNum":2,"parentSeqNum":1,"clientId":"c","sessionId":"s","extra":true}"#;
        let event = decode(json).unwrap();
        assert_eq!(
            to_json_string(&event),
            r#"{"name":"n","args":1,"seqNum":2,"parentSeqNum":1,"clientId":"c","sessionId":"s"}"#
        );
    }

    #[test]
    fn seq_nums_accept_integers_only() {
        for (value, expected) in
            [("0", 0), ("7", 7), ("9007199254740991", MAX_SAFE_INTEGER), ("3.0", 3), ("1e2", 100), ("-0", 0)]
        {
            let event = decode(&event_with("seqNum", value)).unwrap();
            assert_eq!(event.seq_num, expected, "seqNum {value}");
        }
        for value in
            ["1.5", "\"1\"", "-1", "9007199254740992", "18446744073709551616", "1e300", "null", "true", "[1]", "{}"]
        {
            let err = decode(&event_with("seqNum", value)).unwrap_err();
            assert!(err.contains("`seqNum` to be a non-negative JSON integer"), "seqNum {value}: {err}");
        }
        let err = decode(&event_with("parentSeqNum", "1.5")).unwrap_err();
        assert!(err.contains("floating point `1.5`"), "{err}");
        assert!(err.contains("`parentSeqNum`"), "{err}");
    }

    #[test]
    fn required_fields_and_types_are_enforced() {
        let missing_name = r#"{"args":1,"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
        assert!(decode(missing_name).unwrap_err().contains("missing field `name`"));
        let missing_seq = r#"{"name":"n","parentSeqNum":0,"clientId":"c","sessionId":"s"}"#;
        assert!(decode(missing_seq).unwrap_err().contains("missing field `seqNum`"));
        let numeric_client = r#"{"name":"n","seqNum":1,"parentSeqNum":0,"clientId":5,"sessionId":"s"}"#;
        assert!(decode(numeric_client).unwrap_err().contains("invalid type: integer `5`"));
    }

    #[test]
    fn metadata_encodings_match_spec() {
        let event = decode(SPEC_EVENT).unwrap();
        let some = SyncedEvent {
            event: event.clone(),
            metadata: Some(SyncMetadata { created_at: "2025-01-01T00:00:00.000Z".into() }),
        };
        let none = SyncedEvent { event, metadata: None };
        let items = [some, none];
        let encode = |format| to_json_string(&EncodeBatch { items: &items, format });

        assert_eq!(
            encode(MetadataFormat::V03),
            format!(
                r#"[{{"eventEncoded":{SPEC_EVENT},"metadata":{{"_tag":"Some","value":{{"createdAt":"2025-01-01T00:00:00.000Z"}}}}}},{{"eventEncoded":{SPEC_EVENT},"metadata":{{"_tag":"None"}}}}]"#
            )
        );
        assert_eq!(
            encode(MetadataFormat::V04),
            format!(
                r#"[{{"eventEncoded":{SPEC_EVENT},"metadata":{{"_tag":"Some","value":{{"_tag":"SyncMessage.SyncMetadata","createdAt":"2025-01-01T00:00:00.000Z"}}}}}},{{"eventEncoded":{SPEC_EVENT},"metadata":{{"_tag":"None"}}}}]"#
            )
        );
    }
}
