//! A SyncKit document as a projection of its event log (pure).
//!
//! Each `documentId` is one store of the shared event log. What a client wrote is stored as it
//! arrived, and the document is a fold over the events in sequence order:
//!
//! - `synckit.fields` `{"fields":{f:v,…},"clock":{…}}`: field writes in arrival order (the last
//!   one committed wins, as in the reference); a `{"__deleted":true}` value removes the
//!   field. The client's clock is merged into the document clock by per-key max, then the
//!   server's own entry becomes `max + 1`, so every clock the server sends is strictly above any
//!   counter a client has sent and SDK clients take the server's value
//!   (`protocols/synckit/SDK-NOTES.md`).
//! - `synckit.text` `{"state":"<FugueText JSON>","clock":ms}`: merged into the stored text with
//!   `synckit-core`'s Fugue CRDT, the algorithm and serde format of the SDK's WASM build.
//!
//! Events hold inputs, not results, so appending needs no check against the head: the order the
//! log gives them is the order every instance folds them in, and every instance computes the
//! same document.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use synckit_core::crdt::FugueText;

use super::raw::{Json, RawObject, VectorClock, is_tombstone};
use crate::eventlog::{Event, EventBody};

/// The server's own entry in every document clock.
pub const SERVER_CLOCK_KEY: &str = "junction";
/// Event name of field writes.
pub const FIELDS_EVENT: &str = "synckit.fields";
/// Event name of text-state merges.
pub const TEXT_EVENT: &str = "synckit.text";

/// Field writes as a client sent them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldWrites {
    pub fields: RawObject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<VectorClock>,
}

/// A text state as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextWrite {
    pub state: String,
    pub clock: i64,
}

/// One stored SyncKit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocEvent {
    Fields(FieldWrites),
    Text(TextWrite),
}

impl DocEvent {
    pub fn to_body(&self, client_id: &str, session_id: &str) -> EventBody {
        let (name, args) = match self {
            DocEvent::Fields(w) => (FIELDS_EVENT, serde_json::to_string(w)),
            DocEvent::Text(w) => (TEXT_EVENT, serde_json::to_string(w)),
        };
        let args = RawValue::from_string(args.expect("events serialize")).expect("serde_json writes valid JSON");
        EventBody { name: name.into(), args, client_id: client_id.into(), session_id: session_id.into() }
    }

    /// `None` for events that are not SyncKit's (a store written through the event API):
    /// they are skipped, as they carry nothing a SyncKit client could show.
    pub fn from_body(body: &EventBody) -> Option<DocEvent> {
        match body.name.as_str() {
            FIELDS_EVENT => serde_json::from_str(body.args.get()).ok().map(DocEvent::Fields),
            TEXT_EVENT => serde_json::from_str(body.args.get()).ok().map(DocEvent::Text),
            _ => None,
        }
    }
}

/// The current text of a document: the merged Fugue state and the newest op timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextState {
    pub state: String,
    pub clock: i64,
}

/// What applying one event changed, for the broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The written fields with the values to broadcast (tombstones for deletes).
    Fields(Vec<(String, Json)>),
    /// The merged text state.
    Text(String),
    Nothing,
}

/// A document's state (the snapshot format, too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Field → value; deleted fields are absent.
    pub fields: RawObject,
    pub clock: VectorClock,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextState>,
}

impl Document {
    /// The clock to send: never empty, so SDKs always find a counter in it (an empty one makes
    /// the SDK's handler throw, and the value is lost).
    pub fn wire_clock(&self) -> VectorClock {
        let mut clock = self.clock.clone();
        if clock.is_empty() {
            clock.set(SERVER_CLOCK_KEY, 0);
        }
        clock
    }

    pub fn apply_event(&mut self, event: &Event) -> Applied {
        match DocEvent::from_body(&event.body) {
            Some(e) => self.apply(&e),
            None => Applied::Nothing,
        }
    }

    pub fn apply(&mut self, event: &DocEvent) -> Applied {
        match event {
            DocEvent::Fields(writes) => {
                let mut changed = Vec::with_capacity(writes.fields.len());
                for (field, value) in writes.fields.iter() {
                    if is_tombstone(value) {
                        self.fields.remove(field);
                    } else {
                        self.fields.insert(field, value.to_owned());
                    }
                    changed.push((field.to_owned(), Json::from_raw(value)));
                }
                if let Some(clock) = &writes.clock {
                    self.clock.merge(clock);
                }
                let next = self.clock.max_value().unwrap_or(0).saturating_add(1);
                self.clock.set(SERVER_CLOCK_KEY, next);
                Applied::Fields(changed)
            }
            DocEvent::Text(write) => {
                let merged = match &self.text {
                    Some(stored) => merge_text(&stored.state, &write.state).unwrap_or_else(|| write.state.clone()),
                    None => write.state.clone(),
                };
                let clock = self.text.as_ref().map_or(write.clock, |t| t.clock.max(write.clock));
                self.text = Some(TextState { state: merged.clone(), clock });
                Applied::Text(merged)
            }
        }
    }
}

/// Whether `state` is a Fugue text state the server can merge.
pub fn is_valid_text_state(state: &str) -> bool {
    serde_json::from_str::<FugueText>(state).is_ok()
}

/// `stored ⊔ incoming` as Fugue JSON; `None` when either side is not a valid state (the
/// reference then keeps the incoming one, and so does [`Document::apply`]).
pub fn merge_text(stored: &str, incoming: &str) -> Option<String> {
    let mut merged: FugueText = serde_json::from_str(stored).ok()?;
    let remote: FugueText = serde_json::from_str(incoming).ok()?;
    merged.merge(&remote).ok()?;
    serde_json::to_string(&merged).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventlog::{ChangePos, SeqNum};

    fn writes(fields: &str, clock: Option<&str>) -> DocEvent {
        DocEvent::Fields(FieldWrites {
            fields: serde_json::from_str(fields).unwrap(),
            clock: clock.map(|c| serde_json::from_str(c).unwrap()),
        })
    }

    fn text(content: &str, client: &str) -> String {
        let mut t = FugueText::new(client.into());
        t.insert(0, content).unwrap();
        serde_json::to_string(&t).unwrap()
    }

    #[test]
    fn later_writes_win_and_tombstones_remove() {
        let mut doc = Document::default();
        doc.apply(&writes(r#"{"title":"a","n":1}"#, Some(r#"{"client-A":1}"#)));
        doc.apply(&writes(r#"{"title":"b","z":null}"#, Some(r#"{"client-B":2}"#)));
        let applied = doc.apply(&writes(r#"{"n":{"__deleted":true}}"#, None));
        assert_eq!(doc.fields.to_json(), r#"{"title":"b","z":null}"#);
        assert_eq!(applied, Applied::Fields(vec![("n".into(), Json::tombstone())]));
    }

    #[test]
    fn the_server_counter_stays_above_every_client_counter() {
        let mut doc = Document::default();
        assert_eq!(serde_json::to_string(&doc.wire_clock()).unwrap(), r#"{"junction":0}"#);
        doc.apply(&writes(r#"{"a":1}"#, Some(r#"{"client-A":7}"#)));
        assert_eq!(serde_json::to_string(&doc.clock).unwrap(), r#"{"client-A":7,"junction":8}"#);
        doc.apply(&writes(r#"{"a":2}"#, Some(r#"{"client-B":3}"#)));
        assert_eq!(serde_json::to_string(&doc.clock).unwrap(), r#"{"client-A":7,"junction":9,"client-B":3}"#);
    }

    #[test]
    fn events_round_trip_through_the_log_format() {
        for event in [writes(r#"{"a":[1,{"b":"é"}]}"#, Some(r#"{"c":1}"#)), writes(r#"{"a":1}"#, None)] {
            let body = event.to_body("client-A", "conn-1");
            assert_eq!(DocEvent::from_body(&body), Some(event));
        }
        let event = DocEvent::Text(TextWrite { state: text("hi", "A"), clock: 5 });
        assert_eq!(DocEvent::from_body(&event.to_body("A", "conn-1")), Some(event));
        let foreign = EventBody {
            name: "other".into(),
            args: EventBody::null_args(),
            client_id: "x".into(),
            session_id: "y".into(),
        };
        assert_eq!(DocEvent::from_body(&foreign), None);
    }

    #[test]
    fn text_states_merge_with_fugue() {
        let mut doc = Document::default();
        doc.apply(&DocEvent::Text(TextWrite { state: text("hello", "A"), clock: 10 }));
        let applied = doc.apply(&DocEvent::Text(TextWrite { state: text("world", "B"), clock: 5 }));
        let Applied::Text(merged) = applied else { panic!("text applied") };
        let merged: FugueText = serde_json::from_str(&merged).unwrap();
        let content = merged.to_string();
        assert_eq!(content.len(), 10, "both inserts survive the merge: {content}");
        assert!(content.contains("hello") && content.contains("world"), "{content}");
        assert_eq!(doc.text.as_ref().unwrap().clock, 10);
        assert!(is_valid_text_state(&doc.text.as_ref().unwrap().state));
        assert!(!is_valid_text_state("{\"not\":\"fugue\"}"));
    }

    #[test]
    fn merging_is_order_independent() {
        let (a, b) = (text("abc", "A"), text("xyz", "B"));
        let ab = merge_text(&a, &b).unwrap();
        let ba = merge_text(&b, &a).unwrap();
        let show = |s: &str| serde_json::from_str::<FugueText>(s).unwrap().to_string();
        assert_eq!(show(&ab), show(&ba));
    }

    #[test]
    fn snapshot_round_trips() {
        let mut doc = Document::default();
        doc.apply(&writes(r#"{"title":"t","nested":{"a":[1,2]}}"#, Some(r#"{"c":2}"#)));
        doc.apply(&DocEvent::Text(TextWrite { state: text("x", "A"), clock: 3 }));
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(serde_json::from_str::<Document>(&json).unwrap(), doc);
        let event = Event {
            seq: SeqNum(1),
            parent_seq: SeqNum(0),
            body: writes(r#"{"k":true}"#, None).to_body("c", "s"),
            created_at: String::new(),
            change_pos: ChangePos(1),
        };
        let mut restored: Document = serde_json::from_str(&json).unwrap();
        restored.apply_event(&event);
        assert_eq!(restored.fields.get("k").map(|v| v.get()), Some("true"));
    }
}
