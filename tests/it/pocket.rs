//! Pocket on the wire: raw WebSocket and HTTP clients against a real Junction, checking frames,
//! checkpoints, conflicts, duplicates, broadcasts, authorization, bad input, restarts and
//! concurrency, with the event log as the witness. The faithful client runs in `pocket_interop`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use junction::config::Config;
use junction::eventlog::{Event, Protocol, SeqNum, StoreKey};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Kind, TestApp, TestDatabase, WsClient, spawn_app, spawn_app_with, test_config};
use crate::pocket_interop::token;

fn key(collection: &str) -> StoreKey {
    StoreKey::new(Protocol::Pocket, collection).unwrap()
}

async fn stored(app: &TestApp, collection: &str) -> Vec<Event> {
    app.log.read(&key(collection), SeqNum::ROOT, 100_000).await.unwrap()
}

fn stored_change(event: &Event) -> Value {
    serde_json::from_str(event.body.args.get()).unwrap()
}

async fn app_with(kind: Kind, configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    configure(&mut config);
    spawn_app_with(config, db).await
}

/// Tokens signed with the interop suite's secret; `with_auth` makes a server require them.
fn with_auth(config: &mut Config) {
    config.auth.jwt_secret = "pocket-interop-secret".into();
    config.protocols.pocket.allow_anonymous = false;
}

fn user_token(user: &str, read: &[&str], write: &[&str]) -> String {
    token(json!({"userId": user, "permissions": {"canRead": read, "canWrite": write}}))
}

fn ws_url(app: &TestApp, token: Option<&str>) -> String {
    match token {
        Some(token) => format!("ws://{}/sync?token={token}", app.addr),
        None => format!("ws://{}/sync", app.addr),
    }
}

/// A document the way the real client builds one.
fn doc(id: &str, rev: &str, clock: Value, updated: u64, fields: Value) -> Value {
    let mut doc = json!({"_id": id});
    doc.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    doc.as_object_mut().unwrap().extend(
        json!({"_rev": rev, "_createdAt": 1, "_updatedAt": updated, "_vclock": clock}).as_object().unwrap().clone(),
    );
    doc
}

fn insert(document: &Value) -> Value {
    json!({"operation": "insert", "documentId": document["_id"], "document": document,
        "isFromSync": false, "timestamp": document["_updatedAt"], "sequence": 1})
}

fn update(previous: &Value, document: &Value) -> Value {
    json!({"operation": "update", "documentId": document["_id"], "document": document,
        "previousDocument": previous, "isFromSync": false, "timestamp": document["_updatedAt"], "sequence": 2})
}

fn delete(previous: &Value, at: u64) -> Value {
    json!({"operation": "delete", "documentId": previous["_id"], "document": null,
        "previousDocument": previous, "isFromSync": false, "timestamp": at, "sequence": 3})
}

/// A raw client: sends JSON requests, matches replies by id, keeps broadcasts aside.
struct Client {
    ws: WsClient,
    node: String,
    next_id: u32,
    broadcasts: Vec<Value>,
}

impl Client {
    async fn connect(app: &TestApp, token: Option<&str>, node: &str) -> Client {
        Client {
            ws: WsClient::connect(&ws_url(app, token)).await,
            node: node.into(),
            next_id: 0,
            broadcasts: Vec::new(),
        }
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.node, self.next_id)
    }

    /// Sends `text` and returns the next frame that is not a broadcast.
    async fn raw(&mut self, text: &str) -> String {
        self.ws.send(text).await;
        self.reply().await
    }

    async fn reply(&mut self) -> String {
        loop {
            let frame = self.ws.recv().await;
            if frame.starts_with(r#"{"type":"pull-response","id":"broadcast_"#) {
                self.broadcasts.push(serde_json::from_str(&frame).unwrap());
                continue;
            }
            return frame;
        }
    }

    async fn call(&mut self, message: Value) -> Value {
        let reply: Value = serde_json::from_str(&self.raw(&message.to_string()).await).unwrap();
        assert_eq!(reply["id"], message["id"], "replies answer in order, echoing the id: {reply}");
        reply
    }

    async fn push(&mut self, collection: &str, changes: Vec<Value>, seen: u64) -> Value {
        let id = self.id();
        let message = json!({"type": "push", "id": id, "timestamp": 1, "collection": collection, "changes": changes,
            "checkpoint": {"id": format!("{}_1", self.node), "sequences": {collection: seen}, "timestamp": 0, "nodeId": self.node}});
        self.call(message).await
    }

    async fn pull(&mut self, collections: &[&str], sequences: Value, limit: u64) -> Value {
        let id = self.id();
        let message = json!({"type": "pull", "id": id, "timestamp": 1, "collections": collections,
            "checkpoint": {"id": format!("{}_1", self.node), "sequences": sequences, "timestamp": 0, "nodeId": self.node},
            "limit": limit});
        self.call(message).await
    }

    async fn ping(&mut self) {
        assert_eq!(self.raw("ping").await, "pong");
    }

    async fn next_broadcast(&mut self) -> Value {
        if !self.broadcasts.is_empty() {
            return self.broadcasts.remove(0);
        }
        let frame: Value = serde_json::from_str(&self.ws.recv().await).unwrap();
        assert!(frame["id"].as_str().unwrap().starts_with("broadcast_"), "{frame}");
        frame
    }

    async fn no_broadcast(&mut self) {
        assert!(self.broadcasts.is_empty(), "{:?}", self.broadcasts);
        self.ws.silent_for(300).await;
    }
}

fn seqs(reply: &Value, collection: &str) -> Vec<u64> {
    reply["changes"][collection]
        .as_array()
        .map_or(Vec::new(), |c| c.iter().map(|x| x["sequence"].as_u64().unwrap()).collect())
}

fn without_timestamps(mut value: Value) -> Value {
    value["timestamp"] = json!(0);
    if value["checkpoint"].get("timestamp").is_some() {
        value["checkpoint"]["timestamp"] = json!(0);
    }
    value
}

async fn first_exchange_has_the_reference_shapes(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app, None, "nodeA").await;
    a.ping().await;
    let reply = a.pull(&["todos"], json!({}), 100).await;
    assert_eq!(
        without_timestamps(reply),
        json!({"type": "pull-response", "id": "nodeA-1", "timestamp": 0, "changes": {},
            "checkpoint": {"sequences": {"todos": 0}, "timestamp": 0}, "hasMore": false})
    );
    // A document is relayed byte for byte; its change goes out with the server sequence.
    let push = r#"{"type":"push","id":"p1","timestamp":5,"collection":"todos","changes":[{"operation":"insert","documentId":"t1","document":{"_id":"t1", "title":"h\u00e9llo","n":1.50,"_rev":"1-2tswmozt","_createdAt":5,"_updatedAt":5,"_vclock":{"nodeA":1}},"isFromSync":false,"timestamp":5,"sequence":7}],"checkpoint":{"id":"nodeA_1","sequences":{"todos":0},"timestamp":0,"nodeId":"nodeA"}}"#;
    let reply: Value = serde_json::from_str(&a.raw(push).await).unwrap();
    assert_eq!(
        without_timestamps(reply),
        json!({"type": "push-response", "id": "p1", "timestamp": 0, "success": true,
            "checkpoint": {"sequences": {"todos": 1}, "timestamp": 0}})
    );
    let mut b = Client::connect(&app, None, "nodeB").await;
    let frame = b.raw(r#"{"type":"pull","id":"q1","timestamp":6,"collections":["todos"],"checkpoint":{"id":"nodeB_1","sequences":{},"timestamp":0,"nodeId":"nodeB"},"limit":100}"#).await;
    assert!(
        frame.contains(r#""changes":{"todos":[{"operation":"insert","documentId":"t1","document":{"_id":"t1", "title":"h\u00e9llo","n":1.50,"_rev":"1-2tswmozt","_createdAt":5,"_updatedAt":5,"_vclock":{"nodeA":1}},"isFromSync":false,"timestamp":5,"sequence":1}]}"#),
        "{frame}"
    );
    assert!(frame.ends_with(r#""hasMore":false}"#) && frame.contains(r#""sequences":{"todos":1}"#), "{frame}");
    let events = stored(&app, "todos").await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].body.name.as_str(), events[0].body.client_id.as_str()), ("insert", "nodeA"));
    app.stop().await;
}

async fn insert_update_delete_are_seen_by_another_client(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app, None, "A").await;
    let mut b = Client::connect(&app, None, "B").await;
    let v1 = doc("d", "1-a", json!({"A": 1}), 10, json!({"title": "one"}));
    let v2 = doc("d", "2-a", json!({"A": 2}), 20, json!({"title": "two"}));
    let mut seen = 0;
    for (change, expected) in [(insert(&v1), Some(&v1)), (update(&v1, &v2), Some(&v2)), (delete(&v2, 30), None)] {
        let reply = a.push("notes", vec![change.clone()], seen).await;
        assert_eq!(reply["success"], true);
        seen = reply["checkpoint"]["sequences"]["notes"].as_u64().unwrap();
        let pulled = b.pull(&["notes"], json!({"notes": seen - 1}), 100).await;
        let got = &pulled["changes"]["notes"][0];
        assert_eq!(got["operation"], change["operation"]);
        assert_eq!(got["sequence"], seen);
        match expected {
            Some(document) => assert_eq!(&got["document"], document),
            None => {
                assert_eq!(got["document"], Value::Null, "a delete goes out as document:null");
                assert_eq!(got["previousDocument"], v2);
            }
        }
    }
    assert_eq!(seen, 3);
    app.stop().await;
}

async fn paging_with_limit_10_over_95_changes(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app, None, "A").await;
    let changes: Vec<Value> = (0..95)
        .map(|i| insert(&doc(&format!("d{i:02}"), &format!("1-r{i}"), json!({"A": 1}), i, json!({"i": i}))))
        .collect();
    assert_eq!(a.push("many", changes, 0).await["checkpoint"]["sequences"]["many"], 95);
    let mut b = Client::connect(&app, None, "B").await;
    let (mut checkpoint, mut pages, mut delivered) = (0, 0, Vec::new());
    loop {
        let reply = b.pull(&["many"], json!({"many": checkpoint}), 10).await;
        let page = seqs(&reply, "many");
        pages += 1;
        let next = reply["checkpoint"]["sequences"]["many"].as_u64().unwrap();
        assert_eq!(next, *page.last().unwrap(), "the checkpoint is the last sequence returned");
        delivered.extend(page);
        checkpoint = next;
        if reply["hasMore"] == false {
            break;
        }
        assert_eq!(reply["changes"]["many"].as_array().unwrap().len(), 10);
    }
    assert_eq!(pages, 10);
    assert_eq!(delivered, (1..=95).collect::<Vec<_>>(), "every change once, in order");
    let after = b.pull(&["many"], json!({"many": 95}), 10).await;
    assert_eq!((after["changes"].clone(), after["hasMore"].clone()), (json!({}), json!(false)));
    assert_eq!(after["checkpoint"]["sequences"]["many"], 95);
    // A limit over the maximum is served in pages of at most 1000; 0 means the default 100.
    assert_eq!(seqs(&b.pull(&["many"], json!({}), 0).await, "many").len(), 95);
    app.stop().await;
}

async fn conflicts_follow_each_collections_strategy(kind: Kind) {
    let app = app_with(kind, |config| {
        config.protocols.pocket.conflict_strategies = [
            ("sw-*".to_owned(), "server-wins".to_owned()),
            ("cw-*".to_owned(), "client-wins".to_owned()),
            ("mg-*".to_owned(), "merge".to_owned()),
        ]
        .into();
    })
    .await;
    let mut a = Client::connect(&app, None, "A").await;
    let mut b = Client::connect(&app, None, "B").await;
    let base = doc("x", "1-a", json!({"A": 1}), 100, json!({"v": 0, "other": "a"}));
    let by_a = doc("x", "2-a", json!({"A": 2}), 200, json!({"v": 0, "other": "changed"}));
    let by_b_newer = doc("x", "2-b", json!({"A": 1, "B": 1}), 300, json!({"v": "b", "other": "a"}));
    let by_b_older = doc("x", "2-c", json!({"A": 1, "B": 1}), 150, json!({"v": "b", "other": "a"}));
    async fn setup(a: &mut Client, collection: &str, base: &Value, by_a: &Value) {
        assert_eq!(a.push(collection, vec![insert(base)], 0).await["success"], true);
        assert_eq!(a.push(collection, vec![update(base, by_a)], 1).await["success"], true);
    }
    let fresh = doc("z", "1-z", json!({"B": 1}), 1, json!({}));

    // server-wins: the server's copy is reported; the push's other change still applies.
    setup(&mut a, "sw-1", &base, &by_a).await;
    let reply = b.push("sw-1", vec![update(&base, &by_b_newer), insert(&fresh)], 0).await;
    assert_eq!(reply["success"], false);
    assert_eq!(reply["conflicts"], json!([{"documentId": "x", "serverDocument": by_a}]));
    assert_eq!(reply["checkpoint"]["sequences"]["sw-1"], 0, "B has not seen seqs 1 and 2");
    let events = stored(&app, "sw-1").await;
    assert_eq!(events.iter().map(|e| stored_change(e)["documentId"].clone()).collect::<Vec<_>>(), ["x", "x", "z"]);

    // client-wins: the pushed copy is stored, silently.
    setup(&mut a, "cw-1", &base, &by_a).await;
    let reply = b.push("cw-1", vec![update(&base, &by_b_older)], 0).await;
    assert_eq!((reply["success"].clone(), reply.get("conflicts")), (json!(true), None));
    assert_eq!(stored_change(stored(&app, "cw-1").await.last().unwrap())["document"], by_b_older);

    // last-write-wins (the default): the newer one wins, whichever side it is on.
    setup(&mut a, "lww-1", &base, &by_a).await;
    let reply = b.push("lww-1", vec![update(&base, &by_b_older)], 0).await;
    assert_eq!(reply["conflicts"][0]["serverDocument"], by_a);
    let reply = b.push("lww-1", vec![update(&base, &by_b_newer)], 0).await;
    assert_eq!(reply["success"], true);
    assert_eq!(stored(&app, "lww-1").await.len(), 3);

    // merge: each field from the side that changed it since the base, a new rev past both.
    setup(&mut a, "mg-1", &base, &by_a).await;
    let reply = b.push("mg-1", vec![update(&base, &by_b_newer)], 0).await;
    assert_eq!(reply["success"], true);
    let merged = &a.pull(&["mg-1"], json!({"mg-1": 2}), 100).await["changes"]["mg-1"][0]["document"];
    assert_eq!((&merged["v"], &merged["other"]), (&json!("b"), &json!("changed")));
    assert_eq!(merged["_vclock"], json!({"A": 2, "B": 1}));
    assert!(merged["_rev"].as_str().unwrap().starts_with("3-"), "{merged}");
    // Both writers' copies are older than the merge: pushing either again changes nothing.
    assert_eq!(a.push("mg-1", vec![update(&base, &by_a)], 3).await["success"], true);
    assert_eq!(b.push("mg-1", vec![update(&base, &by_b_newer)], 3).await["success"], true);
    assert_eq!(stored(&app, "mg-1").await.len(), 3);

    // Deletes keep a tombstone: a later update of the deleted version is a conflict.
    let doomed = doc("y", "1-y", json!({"A": 1}), 100, json!({}));
    a.push("sw-2", vec![insert(&doomed), delete(&doomed, 500)], 0).await;
    let late = doc("y", "2-b", json!({"A": 1, "B": 1}), 900, json!({"v": "late"}));
    let reply = b.push("sw-2", vec![update(&doomed, &late)], 0).await;
    assert_eq!(
        reply["conflicts"][0]["serverDocument"],
        json!({"_id": "y", "_deleted": true, "_updatedAt": 500.0, "_vclock": {"A": 2}})
    );
    let reply = b.push("lww-2", vec![insert(&doomed)], 0).await;
    assert_eq!(reply["success"], true);
    a.push("lww-2", vec![delete(&doomed, 500)], 1).await;
    assert_eq!(b.push("lww-2", vec![update(&doomed, &late)], 0).await["success"], true, "a newer edit resurrects");
    assert_eq!(stored(&app, "lww-2").await.len(), 3);
    app.stop().await;
}

async fn duplicates_and_overlapping_pushes_add_nothing(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app, None, "A").await;
    let [x, y, z] = ["a", "b", "c"].map(|id| insert(&doc(id, &format!("1-{id}"), json!({"A": 1}), 1, json!({}))));
    // The real engine's pattern: [a], [a,b], [a,b,c], all sent with the checkpoint it had.
    let replies = [
        a.push("dup", vec![x.clone()], 0).await,
        a.push("dup", vec![x.clone(), y.clone()], 0).await,
        a.push("dup", vec![x.clone(), y.clone(), z.clone()], 0).await,
    ];
    assert!(replies.iter().all(|r| r["success"] == true));
    // Only the first may move the checkpoint: the others' clients had not seen seq 1.
    assert_eq!(replies.map(|r| r["checkpoint"]["sequences"]["dup"].as_u64().unwrap()), [1, 0, 0]);
    assert_eq!(stored(&app, "dup").await.len(), 3);
    // Everything again, and an update then the original insert once more: no new visible change.
    let mut b = Client::connect(&app, None, "B").await;
    b.pull(&["dup"], json!({"dup": 3}), 100).await;
    assert_eq!(a.push("dup", vec![x.clone(), y.clone(), z.clone()], 3).await["checkpoint"]["sequences"]["dup"], 3);
    let a1 = doc("a", "1-a", json!({"A": 1}), 1, json!({}));
    let a2 = doc("a", "2-a", json!({"A": 2}), 2, json!({"v": 2}));
    a.push("dup", vec![update(&a1, &a2)], 3).await;
    assert_eq!(a.push("dup", vec![x, update(&a1, &a2)], 4).await["success"], true);
    assert_eq!(stored(&app, "dup").await.len(), 4);
    // B, following since seq 3, was told of the one real change only.
    assert_eq!(seqs(&b.next_broadcast().await, "dup"), [4]);
    b.no_broadcast().await;
    app.stop().await;
}

async fn push_checkpoints_never_skip_unseen_changes(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app, None, "A").await;
    let mut b = Client::connect(&app, None, "B").await;
    assert_eq!(a.pull(&["c"], json!({}), 100).await["checkpoint"]["sequences"]["c"], 0);
    b.push("c", vec![insert(&doc("b1", "1-b", json!({"B": 1}), 1, json!({})))], 0).await;
    // A pushes without having seen b1: its checkpoint must stay where it was.
    let reply = a.push("c", vec![insert(&doc("a1", "1-a", json!({"A": 1}), 1, json!({})))], 0).await;
    assert_eq!(reply["checkpoint"]["sequences"]["c"], 0);
    let pulled = a.pull(&["c"], json!({"c": 0}), 100).await;
    assert_eq!(seqs(&pulled, "c"), [1, 2], "b1 reaches A, and A's own change comes back once");
    // Up to date, A's next push moves it past its own change.
    let reply = a.push("c", vec![insert(&doc("a2", "1-a2", json!({"A": 1}), 1, json!({})))], 2).await;
    assert_eq!(reply["checkpoint"]["sequences"]["c"], 3);
    app.stop().await;
}

async fn accepted_changes_are_broadcast_to_followers_only(kind: Kind) {
    let app = app_with(kind, |config| {
        config.protocols.pocket.conflict_strategies = [("sw".to_owned(), "server-wins".to_owned())].into();
    })
    .await;
    let mut a = Client::connect(&app, None, "A").await;
    let mut b = Client::connect(&app, None, "B").await;
    let mut c = Client::connect(&app, None, "C").await;
    b.pull(&["sw"], json!({}), 100).await;
    c.pull(&["elsewhere"], json!({}), 100).await;
    let x = doc("x", "1-x", json!({"A": 1}), 1, json!({"v": 1}));
    a.push("sw", vec![insert(&x)], 0).await;
    let broadcast = b.next_broadcast().await;
    assert_eq!(broadcast["type"], "pull-response");
    assert_eq!(broadcast["changes"]["sw"][0]["document"], x);
    assert_eq!(broadcast["changes"]["sw"][0]["sequence"], 1, "with the server sequence");
    assert_eq!(broadcast["hasMore"], false);
    assert_eq!(broadcast["checkpoint"]["nodeId"], "B", "B's own last checkpoint, as the reference does");
    a.no_broadcast().await; // not to the sender
    c.no_broadcast().await; // nor to a client that never named the collection
    // A duplicate and a rejected change are neither stored nor broadcast; the rest of the push is.
    let rival = doc("x", "2-r", json!({"R": 1}), 5, json!({"v": "rival"}));
    let z = doc("z", "1-z", json!({"A": 1}), 1, json!({}));
    let reply = a.push("sw", vec![insert(&x), update(&x, &rival), insert(&z)], 1).await;
    assert_eq!(reply["conflicts"][0]["documentId"], "x");
    let broadcast = b.next_broadcast().await;
    assert_eq!(seqs(&broadcast, "sw"), [2]);
    assert_eq!(broadcast["changes"]["sw"][0]["documentId"], "z");
    b.no_broadcast().await;
    // A pusher follows what it pushed; HTTP pushes reach WebSocket followers too.
    let http = reqwest::Client::new();
    let body = json!({"type": "push", "id": "h1", "collection": "sw",
        "changes": [insert(&doc("h", "1-h", json!({"H": 1}), 1, json!({})))], "checkpoint": {"sequences": {}}});
    let reply: Value = http.post(app.url("/sync/push")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(reply["success"], true);
    assert_eq!(seqs(&a.next_broadcast().await, "sw"), [3]);
    assert_eq!(seqs(&b.next_broadcast().await, "sw"), [3]);
    app.stop().await;
}

async fn many_connections_pushing_to_one_collection_stay_exact(kind: Kind) {
    let app = spawn_app(kind).await;
    const CLIENTS: usize = 6;
    const PUSHES: usize = 40;
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let mut client = Client::connect(&app, None, &format!("n{n}")).await;
        tasks.push(tokio::spawn(async move {
            let (mut checkpoint, mut answers) = (0u64, Vec::new());
            let mut previous: Option<Value> = None;
            for i in 0..PUSHES {
                let node = client.node.clone();
                let current =
                    doc(&node, &format!("{}-{node}", i + 1), json!({&node: i + 1}), i as u64, json!({"i": i}));
                let change = match &previous {
                    None => insert(&current),
                    Some(previous) => update(previous, &current),
                };
                let reply = client.push("hot", vec![change], checkpoint).await;
                assert_eq!(reply["success"], true, "{reply}");
                let answered = reply["checkpoint"]["sequences"]["hot"].as_u64().unwrap();
                answers.push((node.clone(), checkpoint, answered));
                checkpoint = checkpoint.max(answered);
                previous = Some(current);
                if i % 5 == 4 {
                    let pulled = client.pull(&["hot"], json!({"hot": checkpoint}), 1000).await;
                    checkpoint = pulled["checkpoint"]["sequences"]["hot"].as_u64().unwrap();
                }
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.unwrap());
    }
    let events = stored(&app, "hot").await;
    assert_eq!(events.len(), CLIENTS * PUSHES, "every push stored exactly once");
    assert_eq!(events.iter().map(|e| e.seq.0).collect::<Vec<_>>(), (1..=(CLIENTS * PUSHES) as u64).collect::<Vec<_>>());
    // A push-response moved a checkpoint only over the pusher's own changes.
    let mut moved = 0;
    for (node, sent, answered) in answers {
        assert!(answered >= sent, "never backwards");
        if answered > sent {
            moved += 1;
            for event in &events[sent as usize..answered as usize] {
                assert_eq!(event.body.client_id, node, "{node}'s checkpoint skipped another client's change");
            }
        }
    }
    assert!(moved > 0);
    // The final state, pulled from nothing, is every client's last version.
    let mut reader = Client::connect(&app, None, "reader").await;
    let pulled = reader.pull(&["hot"], json!({}), 1000).await;
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    for change in pulled["changes"]["hot"].as_array().unwrap() {
        last.insert(change["documentId"].as_str().unwrap().into(), change["document"]["i"].clone());
    }
    assert_eq!(last.len(), CLIENTS);
    assert!(last.values().all(|i| *i == json!(PUSHES - 1)));
    app.stop().await;
}

async fn document_state_survives_a_restart(kind: Kind) {
    let app = app_with(kind, |config| {
        config.protocols.pocket.conflict_strategies = [("sw".to_owned(), "server-wins".to_owned())].into();
    })
    .await;
    let mut a = Client::connect(&app, None, "A").await;
    let x1 = doc("x", "1-x", json!({"A": 1}), 1, json!({"v": 1}));
    let x2 = doc("x", "2-x", json!({"A": 2}), 2, json!({"v": 2}));
    let y = doc("y", "1-y", json!({"A": 1}), 1, json!({}));
    a.push("sw", vec![insert(&x1), update(&x1, &x2), insert(&y), delete(&y, 3)], 0).await;
    let app = app.restart_on_same_port().await;
    assert_eq!(a.ws.closed().await, Some(1001), "a shutdown says going away");

    let mut a = Client::connect(&app, None, "A").await;
    let mut b = Client::connect(&app, None, "B").await;
    // Repeats from before the restart are still recognized...
    let reply = a.push("sw", vec![insert(&x1), update(&x1, &x2), insert(&y), delete(&y, 3)], 4).await;
    assert_eq!((reply["success"].clone(), reply["checkpoint"]["sequences"]["sw"].clone()), (json!(true), json!(4)));
    assert_eq!(stored(&app, "sw").await.len(), 4);
    // ...conflicts are found against the stored versions and tombstones...
    let from_x1 = doc("x", "2-b", json!({"A": 1, "B": 1}), 9, json!({"v": "b"}));
    let from_y = doc("y", "2-b", json!({"A": 1, "B": 1}), 9, json!({"v": "b"}));
    let reply = b.push("sw", vec![update(&x1, &from_x1), update(&y, &from_y)], 0).await;
    assert_eq!(reply["conflicts"][0], json!({"documentId": "x", "serverDocument": x2}));
    assert_eq!(reply["conflicts"][1]["serverDocument"]["_deleted"], true);
    // ...and checkpoints continue where they were.
    let pulled = b.pull(&["sw"], json!({"sw": 2}), 100).await;
    assert_eq!(seqs(&pulled, "sw"), [3, 4]);
    assert_eq!(stored(&app, "sw").await.len(), 4);
    app.stop().await;
}

/// Two servers on one Postgres (the multi-instance deployment; SQLite is one process's). Each
/// server's writer decides against its own projection; the collection's check-and-append makes
/// the one whose projection is behind read the other's changes and decide again, so every
/// conflict is decided once, under server-wins, whichever server the clients are on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_decide_each_conflict_once() {
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut config = test_config(&db);
    config.protocols.pocket.conflict_strategy = "server-wins".into();
    let first = spawn_app_with(config.clone(), db.clone()).await;
    let second = spawn_app_with(config, db).await;
    let mut on_first = Client::connect(&first, None, "F").await;
    let mut on_second = Client::connect(&second, None, "G").await;

    // Both writers load the collection; then each appends while the other's projection is behind.
    let base = doc("x", "1-s", json!({"S": 1}), 1, json!({"v": 0}));
    assert_eq!(on_first.push("race", vec![insert(&base)], 0).await["success"], true);
    let other = doc("o", "1-o", json!({"G": 1}), 1, json!({}));
    assert_eq!(on_second.push("race", vec![insert(&other)], 0).await["success"], true);
    let by_first = doc("x", "2-f", json!({"S": 1, "F": 1}), 5, json!({"v": "f"}));
    assert_eq!(on_first.push("race", vec![update(&base, &by_first)], 0).await["success"], true);
    let by_second = doc("x", "2-g", json!({"S": 1, "G": 1}), 9, json!({"v": "g"}));
    let reply = on_second.push("race", vec![update(&base, &by_second)], 0).await;
    assert_eq!(reply["conflicts"], json!([{"documentId": "x", "serverDocument": by_first}]));
    assert_eq!(stored(&first, "race").await.len(), 3);

    // Then eight clients on both servers edit one document at once: exactly one wins.
    let base = doc("y", "1-s", json!({"S": 1}), 1, json!({"v": 0}));
    assert_eq!(on_first.push("race", vec![insert(&base)], 0).await["success"], true);
    let mut tasks = Vec::new();
    for n in 0..8 {
        let mut client = Client::connect(if n % 2 == 0 { &first } else { &second }, None, &format!("w{n}")).await;
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let node = client.node.clone();
            let mine = doc("y", &format!("2-{node}"), json!({"S": 1, &node: 1}), 5, json!({"v": node}));
            client.push("race", vec![update(&base, &mine)], 0).await
        }));
    }
    let mut accepted = 0;
    let mut reported = Vec::new();
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply["type"], "push-response", "{reply}");
        if reply["success"] == true {
            accepted += 1;
        } else {
            reported.push(reply["conflicts"][0]["serverDocument"].clone());
        }
    }
    let events = stored(&first, "race").await;
    assert_eq!(accepted, 1, "exactly one concurrent edit wins");
    assert_eq!(events.len(), 5);
    let winner = stored_change(&events[4])["document"].clone();
    assert!(reported.iter().all(|d| *d == winner), "every loser is shown the winner: {winner} {reported:?}");

    let mut refused = 0;
    for app in [&first, &second] {
        let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        let line = metrics.lines().find(|l| l.starts_with("junction_appends_rejected_total")).unwrap();
        refused += line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    }
    assert!(refused >= 2, "the stale writers' appends were refused and decided again ({refused})");
    second.stop().await;
    first.stop().await;
}

crate::on_both_backends!(
    first_exchange_has_the_reference_shapes,
    insert_update_delete_are_seen_by_another_client,
    paging_with_limit_10_over_95_changes,
    conflicts_follow_each_collections_strategy,
    duplicates_and_overlapping_pushes_add_nothing,
    push_checkpoints_never_skip_unseen_changes,
    accepted_changes_are_broadcast_to_followers_only,
    many_connections_pushing_to_one_collection_stay_exact,
    document_state_survives_a_restart,
    http_mode_speaks_the_same_messages,
);

async fn http_mode_speaks_the_same_messages(kind: Kind) {
    let app = spawn_app(kind).await;
    let http = reqwest::Client::new();
    let health = http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["access-control-allow-origin"], "*");
    let x = doc("x", "1-x", json!({"H": 1}), 1, json!({}));
    let push = json!({"type": "push", "id": "h1", "timestamp": 1, "collection": "web", "changes": [insert(&x)],
        "checkpoint": {"id": "H_1", "sequences": {}, "timestamp": 0, "nodeId": "H"}});
    let response = http.post(app.url("/sync/push")).json(&push).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(
        (reply["type"].clone(), reply["id"].clone(), reply["success"].clone()),
        (json!("push-response"), json!("h1"), json!(true))
    );
    let pull =
        json!({"type": "pull", "id": "h2", "collections": ["web"], "checkpoint": {"sequences": {}}, "limit": 100});
    for path in ["/sync/pull", "/sync"] {
        let reply: Value = http.post(app.url(path)).json(&pull).send().await.unwrap().json().await.unwrap();
        assert_eq!(reply["id"], "h2");
        assert_eq!(reply["changes"]["web"][0]["document"], x);
        assert_eq!(reply["checkpoint"]["sequences"]["web"], 1);
    }
    // Errors are Pocket error bodies with a non-2xx status; nothing is written.
    let status_and_code = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_owned())
    };
    let wrong_route = http.post(app.url("/sync/push")).json(&pull).send().await.unwrap();
    assert_eq!(status_and_code(wrong_route).await, (400, "INVALID_MESSAGE".into()));
    let garbage = http.post(app.url("/sync/push")).body("{nope").send().await.unwrap();
    assert_eq!(status_and_code(garbage).await, (400, "PARSE_ERROR".into()));
    let huge = http.post(app.url("/sync/push")).body(vec![b' '; 17 * 1024 * 1024]).send().await.unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(stored(&app, "web").await.len(), 1);
    let preflight = http.request(reqwest::Method::OPTIONS, app.url("/sync/push")).send().await.unwrap();
    assert_eq!(preflight.status(), 204);
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_read_and_write_only_what_their_tokens_allow() {
    let app = app_with(Kind::Sqlite, |config| {
        with_auth(config);
        config.protocols.pocket.max_connections_per_user = 2;
    })
    .await;
    let one = user_token("u1", &["u1-*", "shared"], &["u1-*"]);
    let two = user_token("u2", &["u2-*", "shared"], &["u2-*", "shared"]);
    let mut u1 = Client::connect(&app, Some(&one), "N1").await;
    let mut u2 = Client::connect(&app, Some(&two), "N2").await;
    let d = |id: &str| insert(&doc(id, &format!("1-{id}"), json!({"N": 1}), 1, json!({})));
    assert_eq!(u2.push("u2-a", vec![d("secret")], 0).await["success"], true);
    // Pulls leave out what the user may not read, keeping its own checkpoint value.
    let pulled = u1.pull(&["u1-a", "u2-a", "shared"], json!({"u2-a": 0}), 100).await;
    assert_eq!(pulled["changes"], json!({}));
    assert_eq!(pulled["checkpoint"]["sequences"], json!({"u1-a": 0, "u2-a": 0, "shared": 0}));
    // Writes need canWrite; a refusal answers the push and writes nothing.
    for collection in ["u2-a", "shared", "elsewhere"] {
        let reply = u1.push(collection, vec![d("intruder")], 0).await;
        assert_eq!(
            (reply["type"].clone(), reply["code"].clone()),
            (json!("error"), json!("FORBIDDEN")),
            "{collection}"
        );
    }
    assert_eq!(stored(&app, "u2-a").await.len(), 1);
    assert!(app.log.find_info(&key("elsewhere")).await.unwrap().is_none(), "not even created");
    // Broadcasts go only where the user may read.
    assert_eq!(u2.push("shared", vec![d("s")], 0).await["success"], true);
    assert_eq!(u1.next_broadcast().await["changes"]["shared"][0]["documentId"], "s");
    assert_eq!(u2.push("u2-a", vec![d("more")], 1).await["success"], true);
    u1.no_broadcast().await;
    // Per-user connection limit: u1 has one, may open one more; the third is closed with 4002.
    let _second = Client::connect(&app, Some(&one), "N1b").await;
    let mut third = WsClient::connect(&ws_url(&app, Some(&one))).await;
    assert_eq!(third.closed().await, Some(4002));
    drop(u1);
    // Bad, expired and missing tokens: 4001 after the upgrade, as the reference does.
    let expired = token(json!({"userId": "u1", "exp": 1_000_000_000, "permissions": {"isAdmin": true}}));
    for bad in [Some("garbage"), Some(expired.as_str()), None] {
        let mut refused = WsClient::connect(&ws_url(&app, bad)).await;
        assert_eq!(refused.closed().await, Some(4001), "{bad:?}");
    }
    // The freed place can be taken again.
    let mut again = Client::connect(&app, Some(&one), "N1c").await;
    again.ping().await;
    // HTTP: Authorization: Bearer, 401 without a valid one, 403 where the token does not reach.
    let http = reqwest::Client::new();
    let pull = json!({"type": "pull", "id": "h", "collections": ["u2-a"], "checkpoint": {"sequences": {}}});
    assert_eq!(http.post(app.url("/sync/pull")).json(&pull).send().await.unwrap().status(), 401);
    let bad = http.post(app.url("/sync/pull")).bearer_auth("garbage").json(&pull).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let good: Value =
        http.post(app.url("/sync/pull")).bearer_auth(&two).json(&pull).send().await.unwrap().json().await.unwrap();
    assert_eq!(seqs(&good, "u2-a"), [1, 2]);
    let push = json!({"type": "push", "id": "h", "collection": "u2-a", "changes": [d("x")]});
    assert_eq!(http.post(app.url("/sync/push")).bearer_auth(&one).json(&push).send().await.unwrap().status(), 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_reply_writes_nothing_and_the_socket_survives() {
    let app = app_with(Kind::Sqlite, |config| config.limits.max_frame_bytes = 4096).await;
    let mut client = Client::connect(&app, None, "A").await;
    let good = insert(&doc("g", "1-g", json!({"A": 1}), 1, json!({})));
    let push = |id: &str, collection: &str, changes: Value| {
        json!({"type": "push", "id": id, "collection": collection, "changes": changes, "checkpoint": {"sequences": {}}})
            .to_string()
    };
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("not-json".into(), "PARSE_ERROR", None),
        ("[1,2]".into(), "PARSE_ERROR", None),
        (r#"{"id":"m1","collection":"c"}"#.into(), "PARSE_ERROR", Some("m1")),
        (r#"{"type":"ack","id":"m2","timestamp":1,"originalId":"x"}"#.into(), "UNKNOWN_MESSAGE", Some("m2")),
        (r#"{"type":"subscribe","id":"m3","collection":"c"}"#.into(), "UNKNOWN_MESSAGE", Some("m3")),
        (r#"{"type":"pull","id":"m4","collections":["c"]}"#.into(), "INVALID_MESSAGE", Some("m4")),
        (r#"{"type":"pull","id":"m5","collections":"c","checkpoint":{}}"#.into(), "INVALID_MESSAGE", Some("m5")),
        (
            r#"{"type":"pull","id":"m6","collections":["c"],"checkpoint":{"sequences":{"c":-1}}}"#.into(),
            "INVALID_MESSAGE",
            Some("m6"),
        ),
        (
            r#"{"type":"pull","id":"m7","collections":["c"],"checkpoint":{},"limit":"all"}"#.into(),
            "INVALID_MESSAGE",
            Some("m7"),
        ),
        (r#"{"type":"push","id":"m8","collection":"c","changes":{}}"#.into(), "INVALID_MESSAGE", Some("m8")),
        (
            push("m9", "c", json!([{"operation": "insert", "documentId": "d", "document": 2}])),
            "INVALID_MESSAGE",
            Some("m9"),
        ),
        (
            push("m10", "c", json!([{"operation": "upsert", "documentId": "d", "document": {}}])),
            "INVALID_MESSAGE",
            Some("m10"),
        ),
        (
            push("m11", "c", json!([good, {"operation": "insert", "documentId": "d", "document": {"_id": "other"}}])),
            "INVALID_MESSAGE",
            Some("m11"),
        ),
        (
            push("m12", "c", json!([good, {"operation": "update", "documentId": "d", "document": {"_rev": 7}}])),
            "INVALID_MESSAGE",
            Some("m12"),
        ),
        (push("m13", "", json!([good])), "INVALID_MESSAGE", Some("m13")),
        (push("m14", "c\u{0}x", json!([good])), "INVALID_MESSAGE", Some("m14")),
        (
            r#"{"type":"push","id":"m15","collection":"c","changes":[],"checkpoint":{"nodeId":"a\u0000b"}}"#.into(),
            "INVALID_MESSAGE",
            Some("m15"),
        ),
        (
            push(
                "m16",
                "c",
                json!([good, {"operation": "insert", "documentId": "big", "document": {"pad": "x".repeat(5000)}}]),
            ),
            "MESSAGE_TOO_LARGE",
            Some("m16"),
        ),
    ];
    for (frame, code, id) in &cases {
        let reply: Value = serde_json::from_str(&client.raw(frame).await).unwrap();
        assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(*code)), "{frame}");
        match id {
            Some(id) => assert_eq!(reply["id"], *id, "{frame}"),
            None => assert!(reply["id"].as_str().unwrap().starts_with("error_"), "{frame}"),
        }
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()) && reply["retryable"].is_boolean());
        client.ping().await;
    }
    // A broadcast follower started by mistake would register its store a moment later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ("" and "c\0x" cannot even name a store.)
    assert!(app.log.find_info(&key("c")).await.unwrap().is_none(), "nothing was written, not even a store");
    // Binary frames are read as UTF-8 text, as the reference does.
    let (mut raw, _) = tokio_tungstenite::connect_async(ws_url(&app, None)).await.unwrap();
    raw.send(Message::binary(b"ping".to_vec())).await.unwrap();
    assert_eq!(raw.next().await.unwrap().unwrap(), Message::text("pong"));
    raw.send(Message::binary(vec![0xff, 0xfe, b'{'])).await.unwrap();
    let reply: Value = serde_json::from_str(raw.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(reply["code"], "PARSE_ERROR");
    // A frame over twice the limit is refused by the transport itself; the server carries on.
    raw.send(Message::text("x".repeat(9000))).await.unwrap();
    assert!(matches!(raw.next().await, Some(Ok(Message::Close(_))) | Some(Err(_)) | None));
    let reply = client.push("c", vec![good], 0).await;
    assert_eq!(reply["success"], true, "the same socket still works");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_message_rate_is_told_to_slow_down() {
    let app = app_with(Kind::Sqlite, |config| config.limits.messages_per_second = 5).await;
    let mut client = Client::connect(&app, None, "A").await;
    for _ in 0..5 {
        client.ws.send("ping").await;
    }
    let doc = insert(&doc("r", "1-r", json!({"A": 1}), 1, json!({})));
    let over = json!({"type": "push", "id": "over", "collection": "rl", "changes": [doc], "checkpoint": {}});
    client.ws.send("ping").await;
    client.ws.send(&over.to_string()).await;
    let mut frames = Vec::new();
    for _ in 0..7 {
        frames.push(client.ws.recv().await);
    }
    assert_eq!(&frames[..5], ["pong"; 5]);
    let limited: Vec<Value> = frames[5..].iter().map(|f| serde_json::from_str(f).unwrap()).collect();
    assert!(limited.iter().all(|r| r["code"] == "RATE_LIMITED" && r["retryable"] == true), "{limited:?}");
    assert_eq!(limited[1]["id"], "over", "the refusal names the dropped request");
    assert!(app.log.find_info(&key("rl")).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.ping().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocket_at_the_root_when_configured_beside_livestore_and_the_index() {
    let app = app_with(Kind::Sqlite, |config| config.protocols.pocket.also_at_root = true).await;
    let mut pocket = Client {
        ws: WsClient::connect(&format!("ws://{}/", app.addr)).await,
        node: "R".into(),
        next_id: 0,
        broadcasts: Vec::new(),
    };
    pocket.ping().await;
    assert_eq!(pocket.pull(&["root"], json!({}), 10).await["type"], "pull-response");
    // LiveStore 0.4 still owns `/?storeId=…&transport=ws`.
    let mut livestore = WsClient::connect(&format!("ws://{}/?storeId=s&transport=ws", app.addr)).await;
    livestore.send(r#"{"_tag":"Ping"}"#).await;
    assert_eq!(livestore.recv_json().await, json!({"_tag": "Pong"}));
    let index: Value = reqwest::get(app.url("/")).await.unwrap().json().await.unwrap();
    assert_eq!(index["protocols"]["pocket"]["also_at_root"], true);
    app.stop().await;

    let app = spawn_app(Kind::Sqlite).await;
    assert_eq!(
        WsClient::upgrade_status(&format!("ws://{}/", app.addr)).await,
        200,
        "off by default: the index answers"
    );
    app.stop().await;
}

/// Two servers on one Postgres, fanned out through Redis: a change pushed through one instance
/// is broadcast to a follower on the other, with its server sequence, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_followers_on_another_instance() {
    let redis = crate::cluster::RedisServer::start().await;
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut config = test_config(&db);
    config.redis.url = redis.url();
    let one = spawn_app_with(config.clone(), db.clone()).await;
    let two = spawn_app_with(config, db).await;
    for app in [&one, &two] {
        crate::cluster::eventually(std::time::Duration::from_secs(30), "the fan-out to subscribe", || async {
            app.log.fanout().problem().is_none()
        })
        .await;
    }
    let mut a = Client::connect(&one, None, "A").await;
    let mut b = Client::connect(&two, None, "B").await;
    b.pull(&["todos"], json!({}), 100).await;
    a.pull(&["todos"], json!({}), 100).await;
    for i in 1..=5u64 {
        let d = doc(&format!("d{i}"), &format!("1-{i}"), json!({"A": i}), i, json!({"n": i}));
        let reply = a.push("todos", vec![insert(&d)], i - 1).await;
        assert_eq!(reply["success"], true, "{reply}");
        let broadcast = b.next_broadcast().await;
        assert_eq!(seqs(&broadcast, "todos"), [i], "in order, with the server sequence");
        assert_eq!(broadcast["changes"]["todos"][0]["document"], d);
    }
    let back = doc("from-b", "1-b", json!({"B": 1}), 9, json!({}));
    b.push("todos", vec![insert(&back)], 5).await;
    assert_eq!(seqs(&a.next_broadcast().await, "todos"), [6]);
    a.no_broadcast().await;
    b.no_broadcast().await;
    one.stop().await;
    two.stop().await;
}

/// A follower that stops reading is disconnected (1013) once its queues are full; what it got
/// before is a gap-free prefix: it is never skipped ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_stops_reading_is_closed_not_skipped() {
    let app = app_with(Kind::Sqlite, |config| config.limits.subscriber_queue = 2).await;
    let (mut follower, _) = tokio_tungstenite::connect_async(ws_url(&app, None)).await.unwrap();
    let pull = json!({"type": "pull", "id": "f", "collections": ["slow"], "checkpoint": {"sequences": {}}});
    follower.send(Message::text(pull.to_string())).await.unwrap();
    assert!(follower.next().await.unwrap().unwrap().to_text().unwrap().contains(r#""id":"f""#));
    // Now it reads nothing while a writer pushes ~12 MB of changes.
    let mut writer = Client::connect(&app, None, "W").await;
    let padding = "x".repeat(10_000);
    const PUSHES: u64 = 1200;
    for i in 0..PUSHES {
        let document = doc(&format!("d{i}"), "1-a", json!({"W": 1}), i, json!({"pad": padding}));
        assert_eq!(writer.push("slow", vec![insert(&document)], 0).await["success"], true);
    }
    let mut seqs = Vec::new();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), follower.next()).await.expect("a frame within 10 s") {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                seqs.extend(
                    frame["changes"]["slow"].as_array().unwrap().iter().map(|c| c["sequence"].as_u64().unwrap()),
                );
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close, Some(1013), "closed as too slow");
    assert!((seqs.len() as u64) < PUSHES, "it was closed before everything reached it");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "what it got has no gap");
    writer.ping().await;
    app.stop().await;
}

/// A follower that stops reading and never reads again, its connection left open, is closed once
/// its socket has taken no bytes for `limits.write_stall_timeout_secs`, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_never_reads_again_is_closed_and_counted() {
    let app = app_with(Kind::Sqlite, crate::helpers::stall_limits).await;
    let mut follower = crate::helpers::small_window_socket(&ws_url(&app, None)).await;
    let pull = json!({"type": "pull", "id": "f", "collections": ["stalled"], "checkpoint": {"sequences": {}}});
    follower.send(Message::text(pull.to_string())).await.unwrap();
    assert!(follower.next().await.unwrap().unwrap().to_text().unwrap().contains(r#""id":"f""#));
    // From here on it reads nothing, while another client pushes 10 MB of changes.
    let mut writer = Client::connect(&app, None, "W").await;
    let padding = "x".repeat(256 * 1024);
    for i in 0..40 {
        let document = doc(&format!("d{i}"), "1-a", json!({"W": 1}), i, json!({"pad": padding}));
        assert_eq!(writer.push("stalled", vec![insert(&document)], 0).await["success"], true);
    }
    crate::helpers::wait_for_one_stalled_close(&app, "pocket", 1).await;
    writer.ping().await;
    app.stop().await;
}

/// A pull-response stays near `limits.max_frame_bytes`: large changes come a few per response,
/// with `hasMore` and a checkpoint that moves, until all have come, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_responses_are_bounded_in_bytes() {
    let app = app_with(Kind::Sqlite, |config| config.limits.max_frame_bytes = 4096).await;
    let mut a = Client::connect(&app, None, "A").await;
    for i in 0..10 {
        let document = doc(&format!("d{i}"), "1-a", json!({"A": 1}), i, json!({"pad": "x".repeat(1000)}));
        assert_eq!(a.push("big", vec![insert(&document)], 0).await["success"], true);
    }
    a.push("small", vec![insert(&doc("s", "1-s", json!({"A": 1}), 1, json!({})))], 0).await;
    let (mut sequences, mut delivered, mut responses) = (json!({}), Vec::new(), 0);
    loop {
        let reply = a.pull(&["big", "small"], sequences.clone(), 100).await;
        responses += 1;
        assert!(reply.to_string().len() < 2 * 4096, "a response stays near the limit");
        for collection in ["big", "small"] {
            delivered.extend(seqs(&reply, collection).into_iter().map(|s| (collection, s)));
        }
        let moved = reply["checkpoint"]["sequences"] != sequences;
        sequences = reply["checkpoint"]["sequences"].clone();
        if reply["hasMore"] == false {
            break;
        }
        assert!(moved, "hasMore comes with progress");
    }
    assert!(responses >= 4, "{responses} responses");
    let mut expected: Vec<(&str, u64)> = (1..=10).map(|s| ("big", s)).collect();
    expected.push(("small", 1));
    delivered.sort();
    assert_eq!(delivered, expected, "everything once");
    app.stop().await;
}
