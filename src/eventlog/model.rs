//! The types of the shared event log: what a store, an event and an append are.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Position of an event inside one store. Clients may choose sparse values; ROOT (0) is the
/// parent of a store's first event and the head of an empty store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeqNum(pub u64);

impl SeqNum {
    pub const ROOT: SeqNum = SeqNum(0);
    /// Largest value both backends store exactly (they keep seqs in signed 64-bit columns).
    pub const MAX: SeqNum = SeqNum(i64::MAX as u64);

    pub fn next(self) -> SeqNum {
        SeqNum(self.0 + 1)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Position of an appended batch in the sequenced change log, global over all stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChangePos(pub u64);

/// Registry id of a store: the key of its row in `stores`, and the first half of its events' key
/// in `events`. Never derived from the client's name for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoreId(pub i64);

/// Which wire protocol a store belongs to. Each protocol has its own namespace of store names,
/// so a LiveStore `storeId` "a" and a SyncKit document "a" are different stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    SyncKit,
    LiveStore,
    Pocket,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::SyncKit => "synckit",
            Protocol::LiveStore => "livestore",
            Protocol::Pocket => "pocket",
        }
    }

    pub fn parse(text: &str) -> Option<Protocol> {
        [Protocol::SyncKit, Protocol::LiveStore, Protocol::Pocket].into_iter().find(|p| p.as_str() == text)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store as clients name it: the protocol plus the client's UTF-8 name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreKey {
    pub protocol: Protocol,
    pub name: String,
}

impl StoreKey {
    /// The key of a store named by a client (or an operator): refused unless `name` passes
    /// [`check_store_name`]. Names read back from storage passed it when their store was created.
    pub fn new(protocol: Protocol, name: impl Into<String>) -> Result<StoreKey, InvalidStoreName> {
        let name = name.into();
        check_store_name(&name)?;
        Ok(StoreKey { protocol, name })
    }
}

/// Longest store name, in bytes (every protocol's names are short ids; Pocket's reference caps
/// collection names here too).
pub const MAX_STORE_NAME_BYTES: usize = 512;

/// Why a name cannot name a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStoreName {
    #[error("a store name must not be empty")]
    Empty,
    #[error("a store name is {0} bytes long; the limit is {MAX_STORE_NAME_BYTES}")]
    TooLong(usize),
    #[error("a store name must not contain NUL or other control characters")]
    ControlCharacter,
}

/// The one rule for store names, whatever protocol or API brings them: not empty, at most
/// [`MAX_STORE_NAME_BYTES`], and no control characters. Names land in text columns of both
/// backends (Postgres text cannot hold NUL, so SQLite must refuse it too for the two to agree),
/// in log lines and in the event API's URLs, where control characters only cause harm.
pub fn check_store_name(name: &str) -> Result<(), InvalidStoreName> {
    if name.is_empty() {
        Err(InvalidStoreName::Empty)
    } else if name.len() > MAX_STORE_NAME_BYTES {
        Err(InvalidStoreName::TooLong(name.len()))
    } else if name.chars().any(char::is_control) {
        Err(InvalidStoreName::ControlCharacter)
    } else {
        Ok(())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.name)
    }
}

/// What a client contributes to an event; the server adds the sequence, time and position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventBody {
    pub name: String,
    /// Any JSON (may be `null`), kept as the client's exact text so it round-trips byte for byte.
    pub args: Box<RawValue>,
    pub client_id: String,
    pub session_id: String,
}

/// Equal when every field is equal, `args` compared as the exact JSON text.
impl PartialEq for EventBody {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.args.get() == other.args.get()
            && self.client_id == other.client_id
            && self.session_id == other.session_id
    }
}

impl EventBody {
    pub fn null_args() -> Box<RawValue> {
        RawValue::from_string("null".into()).expect("null is valid JSON")
    }

    /// Postgres text cannot hold NUL; refusing it on both backends keeps them alike, and refusing
    /// it before the commit keeps one bad request from failing the others of its group.
    pub fn check_text(&self) -> Result<(), String> {
        if [&self.name, &self.client_id, &self.session_id].iter().any(|s| s.contains('\0')) {
            return Err("event names and client or session ids must not contain NUL".into());
        }
        Ok(())
    }
}

/// An event whose sequence numbers the client chose (checked append).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub seq: SeqNum,
    pub parent_seq: SeqNum,
    pub body: EventBody,
}

/// A committed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: SeqNum,
    pub parent_seq: SeqNum,
    #[serde(flatten)]
    pub body: EventBody,
    /// Server time of the append, RFC 3339 with milliseconds (`2025-01-01T00:00:00.000Z`); the
    /// same for every event of one batch. Kept as text so that imported timestamps stay exact.
    pub created_at: String,
    pub change_pos: ChangePos,
}

/// How an append decides where its events go.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendBatch {
    /// Accepted only if the store's head equals `expected_head`; seqs are the client's.
    Checked { expected_head: SeqNum, events: Vec<NewEvent> },
    /// Appended after whatever the head is; the server assigns head+1, head+2, …
    AtHead { events: Vec<EventBody> },
}

impl AppendBatch {
    pub fn len(&self) -> usize {
        match self {
            AppendBatch::Checked { events, .. } => events.len(),
            AppendBatch::AtHead { events } => events.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks what can be checked without the store: not empty, seqs strictly increasing, the
    /// first beyond the expected head, all within range.
    pub fn validate(&self) -> Result<(), String> {
        if self.is_empty() {
            return Err("a batch needs at least one event".into());
        }
        let bodies: Vec<&EventBody> = match self {
            AppendBatch::Checked { events, .. } => events.iter().map(|e| &e.body).collect(),
            AppendBatch::AtHead { events } => events.iter().collect(),
        };
        for body in bodies {
            body.check_text()?;
        }
        if let AppendBatch::Checked { expected_head, events } = self {
            let mut previous = *expected_head;
            for event in events {
                if event.seq <= previous {
                    return Err(format!("seq {} does not follow {previous}", event.seq));
                }
                if event.seq > SeqNum::MAX {
                    return Err(format!("seq {} is larger than {}", event.seq, SeqNum::MAX));
                }
                previous = event.seq;
            }
        }
        Ok(())
    }

    /// The events this batch becomes on a store whose head is `head`, or `Err(head)` when a
    /// checked batch expected another head. Pure, so both backends decide identically.
    pub(crate) fn place(&self, head: SeqNum) -> Result<Vec<(SeqNum, SeqNum, &EventBody)>, SeqNum> {
        match self {
            AppendBatch::Checked { expected_head, events } => {
                if *expected_head != head {
                    return Err(head);
                }
                Ok(events.iter().map(|e| (e.seq, e.parent_seq, &e.body)).collect())
            }
            AppendBatch::AtHead { events } => {
                let mut previous = head;
                Ok(events
                    .iter()
                    .map(|body| {
                        let seq = previous.next();
                        let placed = (seq, previous, body);
                        previous = seq;
                        placed
                    })
                    .collect())
            }
        }
    }
}

/// A batch as committed: what the fan-out carries to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedBatch {
    pub store: StoreId,
    /// The store's backend id when the batch was committed; a subscriber that sees another id
    /// knows the store was reset under it.
    pub backend_id: Arc<str>,
    /// Head before this batch: a subscriber whose cursor is here can take the batch as is.
    pub prev_head: SeqNum,
    pub events: Arc<[Event]>,
}

impl CommittedBatch {
    pub fn last_seq(&self) -> SeqNum {
        self.events.last().map_or(self.prev_head, |e| e.seq)
    }

    pub fn change_pos(&self) -> ChangePos {
        self.events.first().map_or(ChangePos(0), |e| e.change_pos)
    }

    /// About how many bytes the batch holds in memory: what a subscriber's queue is charged for
    /// it. Counts the variable parts (args, names, ids, time) plus each event's fixed size;
    /// ignores allocator slack, so it errs low by a few percent on small events only.
    pub fn approx_bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| {
                std::mem::size_of::<Event>()
                    + e.body.args.get().len()
                    + e.body.name.len()
                    + e.body.client_id.len()
                    + e.body.session_id.len()
                    + e.created_at.len()
            })
            .sum()
    }
}

/// Result of an accepted append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub first_seq: SeqNum,
    pub last_seq: SeqNum,
    pub change_pos: ChangePos,
    pub created_at: String,
}

/// One entry of the sequenced change log: a committed batch, wherever it went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub position: ChangePos,
    pub store: StoreKey,
    pub first_seq: SeqNum,
    pub last_seq: SeqNum,
    pub event_count: u64,
    pub created_at: String,
}

/// Where a change-log entry left its store: enough for a subscriber to know whether it is behind.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeMark {
    pub position: ChangePos,
    pub store: StoreId,
    /// The store's backend id now (a reset deletes the store's change-log entries, so an entry
    /// that is still there belongs to the current history).
    pub backend_id: Arc<str>,
    pub last_seq: SeqNum,
}

/// Metadata of one store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreInfo {
    pub id: StoreId,
    pub key: StoreKey,
    pub head: SeqNum,
    /// Random id created with the store and replaced only by a reset; LiveStore 0.4 clients
    /// compare it to detect a backend that lost their history.
    pub backend_id: String,
    pub event_count: u64,
}

/// Server time as the event log records it.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A fresh backend id: 21 random alphanumerics, the length LiveStore's nanoid ids have.
pub fn new_backend_id() -> String {
    use rand::Rng;
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(21).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str) -> EventBody {
        EventBody { name: name.into(), args: EventBody::null_args(), client_id: "c".into(), session_id: "s".into() }
    }

    fn checked(expected: u64, seqs: &[u64]) -> AppendBatch {
        let mut parent = SeqNum(expected);
        let events = seqs
            .iter()
            .map(|&s| {
                let e = NewEvent { seq: SeqNum(s), parent_seq: parent, body: body("e") };
                parent = SeqNum(s);
                e
            })
            .collect();
        AppendBatch::Checked { expected_head: SeqNum(expected), events }
    }

    #[test]
    fn checked_batch_needs_increasing_seqs_beyond_the_head() {
        assert!(checked(0, &[1, 2, 3]).validate().is_ok());
        assert!(checked(0, &[20000]).validate().is_ok());
        assert!(checked(5, &[5]).validate().is_err());
        assert!(checked(0, &[2, 2]).validate().is_err());
        assert!(checked(0, &[]).validate().is_err());
        assert!(checked(0, &[u64::MAX]).validate().is_err());
    }

    #[test]
    fn checked_batch_is_placed_only_on_the_expected_head() {
        assert_eq!(checked(3, &[4]).place(SeqNum(4)).unwrap_err(), SeqNum(4));
        let batch = checked(3, &[7, 9]);
        let placed = batch.place(SeqNum(3)).unwrap();
        assert_eq!(placed.iter().map(|p| (p.0.0, p.1.0)).collect::<Vec<_>>(), vec![(7, 3), (9, 7)]);
    }

    #[test]
    fn at_head_batch_continues_from_any_head() {
        let batch = AppendBatch::AtHead { events: vec![body("a"), body("b")] };
        let placed = batch.place(SeqNum(41)).unwrap();
        assert_eq!(
            placed.iter().map(|p| (p.0.0, p.1.0, p.2.name.as_str())).collect::<Vec<_>>(),
            vec![(42, 41, "a"), (43, 42, "b")]
        );
    }

    #[test]
    fn store_names_follow_one_rule() {
        for good in ["a", "todos-1", "ünïcødé 🚀", "a b", "'; DROP TABLE stores; --", &"x".repeat(MAX_STORE_NAME_BYTES)]
        {
            assert_eq!(StoreKey::new(Protocol::LiveStore, good).map(|k| k.name), Ok(good.to_owned()));
        }
        assert_eq!(check_store_name(""), Err(InvalidStoreName::Empty));
        assert_eq!(check_store_name(&"x".repeat(10_000)), Err(InvalidStoreName::TooLong(10_000)));
        // Bytes, not characters: 256 two-byte letters are 512 bytes, 257 are 514.
        assert!(check_store_name(&"é".repeat(256)).is_ok());
        assert_eq!(check_store_name(&"é".repeat(257)), Err(InvalidStoreName::TooLong(514)));
        for bad in ["a\0b", "\0", "line\nbreak", "tab\t", "esc\u{1b}[0m", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(check_store_name(bad), Err(InvalidStoreName::ControlCharacter), "{bad:?}");
        }
    }

    #[test]
    fn backend_ids_are_fresh() {
        let a = new_backend_id();
        assert_eq!(a.len(), 21);
        assert_ne!(a, new_backend_id());
    }
}
