//! JSON building blocks shared by the frame and message layers.
//!
//! - [`RawObject`]: a JSON object kept as an *ordered* list of `(key, raw value)` members, so
//!   values the server only relays (field values, awareness state, batch ops) are never
//!   re-formatted and key order survives a round trip (the reference relays them as they came).
//! - [`VectorClock`]: an insertion-ordered `clientId → counter` map (the reference's clocks mix
//!   `conn-N` keys and SDK client ids in first-write order, and Junction's keep that order).
//! - JavaScript helpers: [`is_truthy`] (the reference uses `a || b` / `!a` checks everywhere),
//!   [`js_len`] (UTF-16 length, what `String.length` counts), tombstones.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The delete tombstone the repo's test client sends and the server broadcasts.
pub const TOMBSTONE_JSON: &str = r#"{"__deleted":true}"#;

/// Parses JSON text into an owned raw value. Returns `None` if `json` is not valid JSON.
pub fn raw(json: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(json.to_owned()).ok()
}

/// A JSON string literal as a raw value (e.g. a server-made id used as `requestId`/`messageId`).
pub fn raw_string(s: &str) -> Box<RawValue> {
    let text = serde_json::to_string(s).expect("serializing a &str cannot fail");
    RawValue::from_string(text).expect("a serialized string is valid JSON")
}

/// A JSON number as a raw value.
pub fn raw_i64(n: i64) -> Box<RawValue> {
    RawValue::from_string(n.to_string()).expect("an integer is valid JSON")
}

/// `{"__deleted":true}` as a raw value.
pub fn tombstone() -> Box<RawValue> {
    RawValue::from_string(TOMBSTONE_JSON.to_owned()).expect("constant is valid JSON")
}

/// Whether a value is a delete tombstone: an object whose `__deleted` member is `true`
/// (the reference checks `value !== null && typeof value === 'object' && value.__deleted === true`).
pub fn is_tombstone(value: &RawValue) -> bool {
    if !value.get().starts_with('{') {
        return false;
    }
    match serde_json::from_str::<RawObject>(value.get()) {
        Ok(obj) => obj.get("__deleted").is_some_and(|v| v.get() == "true"),
        Err(_) => false,
    }
}

/// JavaScript truthiness of a JSON value: `false`, `null`, `0` (any spelling, incl. `-0`,
/// `0.0`, `0e5`) and `""` are falsy; everything else (incl. `{}` and `[]`) is truthy.
pub fn is_truthy(value: &RawValue) -> bool {
    let text = value.get();
    match text.as_bytes().first() {
        Some(b'n') | Some(b'f') | None => false,
        Some(b't') | Some(b'{') | Some(b'[') => true,
        Some(b'"') => text != "\"\"",
        Some(_) => text.parse::<f64>().map(|n| n != 0.0).unwrap_or(true),
    }
}

/// Parses a raw value as a JSON string; `None` for any other JSON type.
pub fn raw_as_str(value: &RawValue) -> Option<String> {
    if value.get().starts_with('"') { serde_json::from_str::<String>(value.get()).ok() } else { None }
}

/// Parses a raw value as a JSON number and converts it to `i64` like `Number(x)` then
/// truncation would (floats are truncated toward zero). `None` for non-numbers / out of range.
pub fn raw_as_i64(value: &RawValue) -> Option<i64> {
    let n: serde_json::Number = serde_json::from_str(value.get()).ok()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    if f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64 { Some(f.trunc() as i64) } else { None }
}

/// Length of `s` as JavaScript's `String.prototype.length` counts it (UTF-16 code units).
/// The reference measures document-id length and message size this way.
pub fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `String(x)` for a JSON value as a template literal would render it — used for
/// `Invalid message type: <t>` when a JSON-text client sends a non-string `type`.
pub fn js_display(value: &RawValue) -> String {
    if let Some(s) = raw_as_str(value) {
        return s;
    }
    let text = value.get();
    if text.starts_with('{') {
        return "[object Object]".to_owned();
    }
    if text.starts_with('[') {
        // Arrays render as their elements joined by ','; good enough for diagnostics.
        if let Ok(items) = serde_json::from_str::<Vec<Box<RawValue>>>(text) {
            return items.iter().map(|v| js_display(v)).collect::<Vec<_>>().join(",");
        }
    }
    if let Ok(n) = serde_json::from_str::<serde_json::Number>(text) {
        // JS prints integral floats without exponent below 1e21 (`1e3` → "1000").
        if n.as_i64().is_none() && n.as_u64().is_none() {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    return format!("{}", f as i128);
                }
            }
        }
    }
    text.to_owned()
}

// ---------------------------------------------------------------------------------------------

/// An owned JSON value kept as its exact text: relayed untouched, compared by text.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json(pub Box<RawValue>);

impl Json {
    /// Parses JSON text; `None` if invalid. Surrounding whitespace is dropped.
    pub fn parse(text: &str) -> Option<Json> {
        raw(text).map(Json)
    }

    /// A JSON string.
    pub fn string(s: &str) -> Json {
        Json(raw_string(s))
    }

    /// A JSON integer.
    pub fn i64(n: i64) -> Json {
        Json(raw_i64(n))
    }

    /// `null`.
    pub fn null() -> Json {
        Json(raw("null").expect("null"))
    }

    /// `{"__deleted":true}`.
    pub fn tombstone() -> Json {
        Json(tombstone())
    }

    pub fn from_raw(value: &RawValue) -> Json {
        Json(value.to_owned())
    }

    /// The exact JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn is_null(&self) -> bool {
        self.get() == "null"
    }

    pub fn is_truthy(&self) -> bool {
        is_truthy(&self.0)
    }

    pub fn is_tombstone(&self) -> bool {
        is_tombstone(&self.0)
    }

    /// The value if it is a JSON string.
    pub fn as_string(&self) -> Option<String> {
        raw_as_str(&self.0)
    }
}

impl std::ops::Deref for Json {
    type Target = RawValue;
    fn deref(&self) -> &RawValue {
        &self.0
    }
}

impl From<Box<RawValue>> for Json {
    fn from(value: Box<RawValue>) -> Json {
        Json(value)
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.get() == other.get()
    }
}
impl Eq for Json {}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

// ---------------------------------------------------------------------------------------------

/// A JSON object as an ordered list of members whose values stay raw JSON text.
///
/// Deserializing follows `JSON.parse`: a duplicated key keeps the position of its first
/// occurrence and the value of its last. Serializing writes the members in order, values
/// byte for byte.
#[derive(Debug, Clone, Default)]
pub struct RawObject {
    members: Vec<(String, Box<RawValue>)>,
}

impl RawObject {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    /// Sets `key`. An existing member keeps its position (like assigning a property in JS);
    /// a new one is appended.
    pub fn insert(&mut self, key: impl Into<String>, value: Box<RawValue>) {
        let key = key.into();
        match self.members.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.members.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Box<RawValue>> {
        let pos = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(pos).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.members.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|(k, _)| k.as_str())
    }

    pub fn into_members(self) -> Vec<(String, Box<RawValue>)> {
        self.members
    }

    /// Compact JSON text of the object (members in order, raw values verbatim).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a RawObject always serializes")
    }
}

impl From<Vec<(String, Box<RawValue>)>> for RawObject {
    /// Builds an object from members; later duplicates replace earlier ones in place.
    fn from(members: Vec<(String, Box<RawValue>)>) -> Self {
        let mut obj = RawObject::new();
        for (k, v) in members {
            obj.insert(k, v);
        }
        obj
    }
}

impl PartialEq for RawObject {
    /// Exact comparison: same keys in the same order with byte-identical values.
    fn eq(&self, other: &Self) -> bool {
        self.members.len() == other.members.len()
            && self.members.iter().zip(&other.members).all(|((ka, va), (kb, vb))| ka == kb && va.get() == vb.get())
    }
}
impl Eq for RawObject {}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.members.len()))?;
        for (k, v) in &self.members {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawObject, A::Error> {
                let mut obj = RawObject::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: Box<RawValue> = map.next_value()?;
                    obj.insert(key, value);
                }
                Ok(obj)
            }
        }
        deserializer.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------------------

/// A vector clock: `clientId → counter`, kept in insertion order (new keys are appended,
/// updated keys keep their place), serialized as a JSON object of numbers.
///
/// Counters are non-negative integers; a JSON float or negative number fails to deserialize.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorClock {
    entries: Vec<(String, u64)>,
}

impl VectorClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, client: &str) -> Option<u64> {
        self.entries.iter().find(|(k, _)| k == client).map(|(_, v)| *v)
    }

    /// Sets `client`'s counter (in place if present, appended otherwise).
    pub fn set(&mut self, client: impl Into<String>, value: u64) {
        let client = client.into();
        match self.entries.iter_mut().find(|(k, _)| *k == client) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((client, value)),
        }
    }

    /// Adds one to `client`'s counter (starting from 0) and returns the new value.
    pub fn increment(&mut self, client: &str) -> u64 {
        let next = self.get(client).unwrap_or(0).saturating_add(1);
        self.set(client, next);
        next
    }

    /// Per-key maximum merge: keys new to `self` are appended in `other`'s order.
    pub fn merge(&mut self, other: &VectorClock) {
        for (k, v) in &other.entries {
            match self.entries.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = slot.1.max(*v),
                None => self.entries.push((k.clone(), *v)),
            }
        }
    }

    /// The largest counter (the SDK uses `max(clock values)` as its LWW counter).
    pub fn max_value(&self) -> Option<u64> {
        self.entries.iter().map(|(_, v)| *v).max()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl<K: Into<String>> FromIterator<(K, u64)> for VectorClock {
    fn from_iter<I: IntoIterator<Item = (K, u64)>>(iter: I) -> Self {
        let mut clock = VectorClock::new();
        for (k, v) in iter {
            clock.set(k, v);
        }
        clock
    }
}

impl Serialize for VectorClock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for VectorClock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VectorClock;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of non-negative integer counters")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<VectorClock, A::Error> {
                let mut clock = VectorClock::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: u64 = map
                        .next_value()
                        .map_err(|_| de::Error::custom(format!("clock entry {key:?} is not a non-negative integer")))?;
                    clock.set(key, value);
                }
                Ok(clock)
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Box<RawValue> {
        raw(s).unwrap()
    }

    #[test]
    fn truthiness_matches_javascript() {
        for falsy in ["false", "null", "0", "-0", "0.0", "0e5", "\"\""] {
            assert!(!is_truthy(&r(falsy)), "{falsy}");
        }
        for truthy in ["true", "1", "-1", "0.5", "\"0\"", "\" \"", "{}", "[]"] {
            assert!(is_truthy(&r(truthy)), "{truthy}");
        }
    }

    #[test]
    fn raw_object_keeps_order_and_js_duplicate_semantics() {
        let obj: RawObject = serde_json::from_str(r#"{"b":1,"a":[1, 2],"b":{"x" : 3}}"#).unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(obj.to_json(), r#"{"b":{"x" : 3},"a":[1, 2]}"#);
    }

    #[test]
    fn raw_object_insert_in_place_and_append() {
        let mut obj: RawObject = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        obj.insert("a", r("3"));
        obj.insert("c", r("4"));
        assert_eq!(obj.to_json(), r#"{"a":3,"b":2,"c":4}"#);
        assert_eq!(obj.remove("b").unwrap().get(), "2");
        assert_eq!(obj.to_json(), r#"{"a":3,"c":4}"#);
    }

    #[test]
    fn vector_clock_merge_keeps_insertion_order() {
        let mut c: VectorClock = serde_json::from_str(r#"{"conn-1":1,"client-A":1}"#).unwrap();
        c.merge(&serde_json::from_str(r#"{"client-B":2,"client-A":0,"conn-2":2}"#).unwrap());
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"conn-1":1,"client-A":1,"client-B":2,"conn-2":2}"#);
        assert_eq!(c.increment("conn-1"), 2);
        assert_eq!(c.increment("conn-9"), 1);
        assert_eq!(c.max_value(), Some(2));
    }

    #[test]
    fn vector_clock_rejects_non_integers() {
        assert!(serde_json::from_str::<VectorClock>(r#"{"a":1.5}"#).is_err());
        assert!(serde_json::from_str::<VectorClock>(r#"{"a":-1}"#).is_err());
        assert!(serde_json::from_str::<VectorClock>(r#"{"a":"1"}"#).is_err());
        assert!(serde_json::from_str::<VectorClock>(r#"[1]"#).is_err());
    }

    #[test]
    fn tombstones() {
        assert!(is_tombstone(&r(r#"{"__deleted":true}"#)));
        assert!(is_tombstone(&r(r#"{"a":1,"__deleted":true}"#)));
        assert!(!is_tombstone(&r(r#"{"__deleted":1}"#)));
        assert!(!is_tombstone(&r("null")));
        assert!(!is_tombstone(&r(r#""__deleted""#)));
    }

    #[test]
    fn js_helpers() {
        assert_eq!(js_len("aé😀"), 4);
        assert_eq!(raw_as_i64(&r("1795311055903")), Some(1_795_311_055_903));
        assert_eq!(raw_as_i64(&r("12.9")), Some(12));
        assert_eq!(raw_as_i64(&r("\"12\"")), None);
        assert_eq!(js_display(&r("\"delta\"")), "delta");
        assert_eq!(js_display(&r("5")), "5");
        assert_eq!(js_display(&r("1e3")), "1000");
        assert_eq!(js_display(&r("{}")), "[object Object]");
        assert_eq!(js_display(&r("[1,\"a\"]")), "1,a");
        assert_eq!(raw_string("a\"b").get(), r#""a\"b""#);
    }
}
