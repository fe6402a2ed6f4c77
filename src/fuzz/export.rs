//! The export reader (`junction import`'s NDJSON parser).

use serde_json::value::RawValue;

use super::{Verdict, run};
use crate::backup::{ExportReader, StoreDump, event_line, header_line, store_line};
use crate::eventlog::{ChangePos, Event, EventBody, Protocol, SeqNum, StoreKey};

fn write(stores: &[StoreDump]) -> String {
    let mut out = header_line();
    out.push('\n');
    for store in stores {
        let head = store.events.last().map_or(SeqNum::ROOT, |e| e.seq);
        out.push_str(&store_line(&store.key, &store.backend_id, head, store.events.len() as u64));
        out.push('\n');
        for event in &store.events {
            out.push_str(&event_line(event));
            out.push('\n');
        }
    }
    out
}

/// The stores of `tests/it/backup.rs`: odd names, sparse seqs, null and oddly spaced args, an
/// empty session id, a store without events.
fn seeds() -> Vec<Vec<u8>> {
    let event = |seq: u64, parent: u64, name: &str, args: &str| Event {
        seq: SeqNum(seq),
        parent_seq: SeqNum(parent),
        body: EventBody {
            name: name.into(),
            args: RawValue::from_string(args.into()).unwrap(),
            client_id: "ç".into(),
            session_id: String::new(),
        },
        created_at: "2025-01-01T00:00:00.000Z".into(),
        change_pos: ChangePos(0),
    };
    let todos = StoreDump {
        key: StoreKey::new(Protocol::LiveStore, "todos ünïcødé").expect("a valid name"),
        backend_id: "b-1".into(),
        events: vec![
            event(3, 0, "todoCreated", r#"{"id":"a","text":"x"}"#),
            event(20000, 3, "nullArgs", "null"),
            event(20001, 20000, "spaced", r#"{ "b" : [1, 2.50, "\u00e9"] ,"a":{}}"#),
        ],
    };
    let notes = StoreDump {
        key: StoreKey::new(Protocol::Pocket, "notes").expect("a valid name"),
        backend_id: "b-2".into(),
        events: (1..=3).map(|s| event(s, s - 1, "put", r#"{"_id":"n","v":1}"#)).collect(),
    };
    let doc = StoreDump {
        key: StoreKey::new(Protocol::SyncKit, "doc-1").expect("a valid name"),
        backend_id: String::new(),
        events: vec![],
    };
    vec![
        write(&[todos.clone(), notes.clone(), doc.clone()]).into_bytes(),
        write(&[notes]).into_bytes(),
        write(&[doc, todos]).into_bytes(),
        format!("{}\n", header_line()).into_bytes(),
    ]
}

fn read(input: &[u8]) -> (Vec<StoreDump>, bool) {
    let Ok(reader) = ExportReader::new(input) else {
        return (Vec::new(), false);
    };
    let mut stores = Vec::new();
    for store in reader {
        match store {
            Ok(store) => stores.push(store),
            Err(error) => {
                assert!(!error.to_string().is_empty());
                return (stores, false);
            }
        }
    }
    (stores, true)
}

fn target(input: &[u8]) -> Verdict {
    let (stores, complete) = read(input);
    for store in &stores {
        assert!(store.events.windows(2).all(|w| w[0].seq < w[1].seq), "events out of order in {}", store.key);
    }
    // What was read writes back to an export that reads the same.
    let again = write(&stores);
    let (reread, ok) = read(again.as_bytes());
    assert!(ok, "re-written export does not read: {again}");
    assert_eq!(reread, stores);
    if complete { Verdict::Accepted } else { Verdict::Rejected }
}

#[test]
fn export_reader() {
    let seeds = seeds();
    for seed in &seeds {
        assert_eq!(write(&read(seed).0).as_bytes(), &seed[..], "seeds re-write byte for byte");
    }
    run("export-reader", seeds, target);
}
