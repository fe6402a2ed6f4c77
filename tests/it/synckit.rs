//! SyncKit on the wire, over real sockets: what the SDK 0.3.0 sends (delta_batch, text-state,
//! awareness — shapes captured from the SDK and the reference server) and what the npm SDK 0.1.1 cannot produce,
//! error texts, auth and RBAC, persistence. Frames are built and parsed with the crate's codec;
//! payloads are checked as plain JSON. The real npm SDK runs in `synckit_interop`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use junction::config::Config;
use junction::eventlog::{Protocol, StoreKey};
use junction::protocols::synckit::frame::{MessageType, decode_frame, encode_frame};
use serde_json::{Value, json};
use synckit_core::crdt::FugueText;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Kind, TestApp, TestDatabase, spawn_app, spawn_app_with, test_config};

crate::on_both_backends!(
    subscribe_answers_with_state_and_a_nonempty_clock,
    test_client_delta_shape_null_values_and_tombstones,
    server_clock_stays_above_every_counter_and_grows_with_each_write,
    sync_request_subscribes_and_sync_step1_is_answered_like_it,
    a_sync_request_vector_clock_is_merged_into_the_document_clock,
    unsubscribe_stops_deltas_without_a_reply,
    a_burst_to_one_field_ends_with_the_last_value_everywhere,
    interleaved_bursts_to_many_fields_leave_every_subscriber_with_the_server_state,
    a_subscriber_joining_during_writes_misses_nothing,
    text_state_is_merged_relayed_to_the_others_and_served_on_subscribe,
    awareness_state_updates_reach_every_subscriber_including_the_sender,
    stale_presence_expires_with_a_leave_broadcast,
    presence_of_a_closed_connection_leaves_at_once,
    a_subscriber_that_never_reads_again_is_closed_and_counted,
    ping_gets_pong_at_once,
    json_text_frames_get_json_text_replies,
    delta_batch_chunks_are_reassembled_into_one_frame,
    chunk_sets_are_refused_once_they_pass_the_message_size_limit,
    malformed_frames_get_invalid_message_format_and_the_socket_stays_open,
    every_error_text_of_the_contract_and_the_socket_stays_open,
    oversized_messages_are_refused_with_the_configured_limit,
    over_the_rate_messages_are_dropped_with_rate_limit_exceeded,
    the_demo_whitelist_is_off_by_default_and_can_be_enabled,
    anonymous_sockets_work_at_once_and_auth_without_token_says_anonymous,
    without_anonymous_access_a_token_is_needed,
    a_socket_that_does_not_authenticate_in_time_is_closed_with_auth_required,
    bad_tokens_get_auth_error_and_close_1008,
    a_token_without_permissions_authenticates_but_may_do_nothing,
    writes_and_reads_are_checked_per_document,
    auth_verify_and_me,
);

const SECRET: &str = "synckit-test-secret-of-at-least-32-chars";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One message from the server: its type, its JSON object, and whether it came as a text frame.
#[derive(Debug, Clone)]
struct Received {
    kind: MessageType,
    payload: Value,
    text: bool,
}

/// A raw SyncKit connection that keeps what it received until a test takes it.
struct Client {
    socket: Socket,
    inbox: VecDeque<Received>,
    closed: Option<(u16, String)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn ws_url(app: &TestApp) -> String {
    format!("ws://{}/ws", app.addr)
}

impl Client {
    async fn connect(app: &TestApp) -> Client {
        Client::connect_url(&ws_url(app)).await
    }

    async fn connect_with_token(app: &TestApp, token: &str) -> Client {
        Client::connect_url(&format!("{}?token={token}", ws_url(app))).await
    }

    async fn connect_url(url: &str) -> Client {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { socket, inbox: VecDeque::new(), closed: None }
    }

    async fn send(&mut self, kind: MessageType, payload: Value) {
        self.send_bytes(encode_frame(kind, now_ms(), &payload.to_string())).await;
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.socket.send(Message::binary(bytes)).await.expect("send");
    }

    async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("send");
    }

    /// Reads one frame into the inbox; false when `deadline` passed or the socket closed.
    async fn pump(&mut self, deadline: Instant) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let next = match tokio::time::timeout_at(deadline.into(), self.socket.next()).await {
            Ok(next) => next,
            Err(_) => return false,
        };
        match next {
            Some(Ok(Message::Binary(bytes))) => {
                let frame = decode_frame(&bytes).unwrap_or_else(|e| panic!("undecodable frame from the server: {e}"));
                let payload = serde_json::from_str(&frame.payload).expect("JSON payload");
                self.inbox.push_back(Received { kind: frame.message_type, payload, text: false });
            }
            Some(Ok(Message::Text(text))) => {
                let payload: Value = serde_json::from_str(&text).expect("a JSON text frame");
                let name = payload["type"].as_str().unwrap_or_else(|| panic!("text frame without type: {text}"));
                let kind = MessageType::from_name(name).unwrap_or_else(|| panic!("unknown type in {text}"));
                self.inbox.push_back(Received { kind, payload, text: true });
            }
            Some(Ok(Message::Close(frame))) => {
                self.closed =
                    Some(frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((1005, String::new())));
                return false;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                self.closed.get_or_insert((1006, String::new()));
                return false;
            }
        }
        true
    }

    /// The first received message matching `pred` (waiting up to 10 s); earlier others stay queued.
    async fn take(&mut self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.inbox.iter().position(&pred) {
                return self.inbox.remove(i).unwrap();
            }
            if !self.pump(deadline).await {
                panic!("expected {what}; closed: {:?}; received meanwhile: {:?}", self.closed, self.inbox);
            }
        }
    }

    /// The payload of the first message of `kind`.
    async fn expect(&mut self, kind: MessageType) -> Value {
        self.take(kind.name(), |m| m.kind == kind).await.payload
    }

    /// The first ERROR (its payload).
    async fn error(&mut self) -> Value {
        self.expect(MessageType::Error).await
    }

    /// The first `delta` for `field` of `doc`.
    async fn delta(&mut self, doc: &str, field: &str) -> Value {
        let what = format!("a delta for {doc}.{field}");
        self.take(&what, |m| {
            m.kind == MessageType::Delta && m.payload["documentId"] == doc && m.payload["field"] == field
        })
        .await
        .payload
    }

    /// The ACK whose messageId is `id`.
    async fn ack(&mut self, id: &str) -> Value {
        self.take(&format!("the ack of {id}"), |m| m.kind == MessageType::Ack && m.payload["messageId"] == id)
            .await
            .payload
    }

    /// Asserts that no message matching `pred` arrives within `millis` (nor is already queued).
    async fn none_within(&mut self, millis: u64, what: &str, pred: impl Fn(&Received) -> bool) {
        let deadline = Instant::now() + Duration::from_millis(millis);
        loop {
            if let Some(m) = self.inbox.iter().find(|m| pred(m)) {
                panic!("expected no {what}, got {m:?}");
            }
            if !self.pump(deadline).await {
                return;
            }
        }
    }

    /// Asserts that nothing at all arrives within `millis`.
    async fn silent_for(&mut self, millis: u64) {
        self.none_within(millis, "message", |_| true).await;
    }

    /// Everything received until nothing more came for `quiet_ms`.
    async fn drain(&mut self, quiet_ms: u64) -> Vec<Received> {
        while self.pump(Instant::now() + Duration::from_millis(quiet_ms)).await {}
        self.inbox.drain(..).collect()
    }

    /// Waits for the server to close the socket; returns code and reason.
    async fn closed(&mut self) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.closed.is_none() {
            if !self.pump(deadline).await && self.closed.is_none() {
                panic!("the server did not close the socket; received {:?}", self.inbox);
            }
        }
        self.closed.clone().unwrap()
    }

    /// ping → pong: the socket is open and the connection loop is alive.
    async fn assert_open(&mut self) {
        self.send(MessageType::Ping, json!({})).await;
        self.expect(MessageType::Pong).await;
    }

    async fn subscribe(&mut self, doc: &str) -> Value {
        self.send(MessageType::Subscribe, json!({ "documentId": doc })).await;
        let what = format!("the sync_response for {doc}");
        self.take(&what, |m| m.kind == MessageType::SyncResponse && m.payload["documentId"] == doc).await.payload
    }

    /// An SDK 0.1.1 delta (captured shape); returns its messageId.
    async fn sdk_set(&mut self, doc: &str, field: &str, value: Value, clock: Value, message_id: &str) {
        let client = clock.as_object().and_then(|c| c.keys().next().cloned()).unwrap_or_else(|| "client-A".into());
        let payload = json!({
            "type": "set", "documentId": doc, "field": field, "value": value, "clock": clock,
            "clientId": client, "timestamp": now_ms(), "messageId": message_id,
        });
        self.send(MessageType::Delta, payload).await;
    }

    /// An SDK 0.3.0 delta_batch of `set` ops (captured shape).
    async fn batch_set(&mut self, doc: &str, client: &str, counter: u64, fields: &[(&str, Value)], message_id: &str) {
        let deltas: Vec<Value> = fields
            .iter()
            .enumerate()
            .map(|(i, (field, value))| {
                json!({
                    "type": "set", "documentId": doc, "field": field, "value": value,
                    "clock": { client: counter + i as u64 }, "clientId": client, "timestamp": now_ms(),
                })
            })
            .collect();
        self.send(MessageType::DeltaBatch, json!({ "documentId": doc, "deltas": deltas, "messageId": message_id }))
            .await;
    }
}

/// The largest counter of a clock, after checking it is a non-empty object of non-negative integers.
fn clock_max(clock: &Value) -> u64 {
    let entries = clock.as_object().unwrap_or_else(|| panic!("clock is not an object: {clock}"));
    assert!(!entries.is_empty(), "the clock must not be empty (the SDK throws on an empty one)");
    entries
        .values()
        .map(|v| v.as_u64().unwrap_or_else(|| panic!("clock entry is not a counter: {clock}")))
        .max()
        .unwrap()
}

fn key(doc: &str) -> StoreKey {
    StoreKey::new(Protocol::SyncKit, doc).unwrap()
}

/// How many events the event log holds for a document (0 if it has no store).
async fn stored_events(app: &TestApp, doc: &str) -> u64 {
    match app.log.find_info(&key(doc)).await.expect("find_info") {
        Some(_) => app.log.head(&key(doc)).await.expect("head").0,
        None => 0,
    }
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn in_one_hour() -> i64 {
    now_ms() / 1000 + 3600
}

fn user_token(user: &str, read: &[&str], write: &[&str]) -> String {
    token(json!({
        "userId": user, "email": format!("{user}@example.com"),
        "permissions": { "canRead": read, "canWrite": write, "isAdmin": false },
        "iat": now_ms() / 1000, "exp": in_one_hour(),
    }))
}

async fn app_with(kind: Kind, configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.auth.jwt_secret = SECRET.into();
    configure(&mut config);
    spawn_app_with(config, db).await
}

/// FugueText state JSON (what SDK 0.3.0's SyncText sends) of `text` typed by `client`.
fn fugue(client: &str, text: &str) -> FugueText {
    let mut fugue = FugueText::new(client.into());
    fugue.insert(0, text).unwrap();
    fugue
}

fn text_of(state: &Value) -> String {
    let json = state.as_str().unwrap_or_else(|| panic!("a text state is a JSON string, got {state}"));
    serde_json::from_str::<FugueText>(json)
        .unwrap_or_else(|e| panic!("not a FugueText state ({e}): {json}"))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Subscribe, sync_request, deltas

async fn subscribe_answers_with_state_and_a_nonempty_clock(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    // No message on connect: anonymous sockets are authenticated silently.
    a.silent_for(300).await;

    let response = a.subscribe("room:p1").await;
    assert_eq!(response["state"], json!({}));
    assert_eq!(response["deltas"], json!([]));
    assert!(response["requestId"].as_str().is_some_and(|r| !r.is_empty()), "a server-made requestId: {response}");
    assert!(response["id"].as_str().is_some_and(|r| !r.is_empty()), "{response}");
    clock_max(&response["clock"]);
    assert!(response.get("textState").is_none() && response.get("textClock").is_none(), "no text yet: {response}");

    // The request's id is echoed as requestId; a duplicate subscribe gets its own response.
    a.send(MessageType::Subscribe, json!({ "documentId": "room:p1", "id": "my-sub-1" })).await;
    a.send(MessageType::Subscribe, json!({ "documentId": "room:p1", "id": "my-sub-2" })).await;
    let first = a.expect(MessageType::SyncResponse).await;
    let second = a.expect(MessageType::SyncResponse).await;
    assert_eq!(first["requestId"], "my-sub-1");
    assert_eq!(second["requestId"], "my-sub-2");
    clock_max(&second["clock"]);
    app.stop().await;
}

async fn sdk_delta_is_acked_after_commit_and_echoed_to_everyone(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    let mut other_doc = Client::connect(&app).await;
    a.subscribe("room:p1").await;
    b.subscribe("room:p1").await;
    other_doc.subscribe("room:p2").await;

    a.sdk_set("room:p1", "title", json!("hi"), json!({ "client-A": 1 }), "m-1").await;
    let ack = a.ack("m-1").await;
    assert!(ack["id"].is_string(), "{ack}");
    // An ACK means committed: the event log already has the write.
    assert!(stored_events(&app, "room:p1").await > 0, "acked before the write was in the event log");

    for (name, client) in [("sender", &mut a), ("other subscriber", &mut b)] {
        let delta = client.delta("room:p1", "title").await;
        assert_eq!(delta["value"], "hi", "{name}: {delta}");
        assert_eq!(delta["clientId"], "server", "{name}: {delta}");
        assert!(delta["id"].is_string(), "{name}: {delta}");
        assert!(clock_max(&delta["clock"]) > 1, "{name}: the echo's clock must beat the writer's counter 1: {delta}");
        assert!(delta["clock"]["client-A"].as_u64() >= Some(1), "the writer's clock is merged in: {delta}");
        // One delta per field per subscriber.
        client.none_within(300, "second delta", |m| m.kind == MessageType::Delta).await;
    }
    other_doc.none_within(300, "delta of another document", |m| m.kind == MessageType::Delta).await;

    // The sender is subscribed by its write alone.
    let mut writer = Client::connect(&app).await;
    writer.sdk_set("room:p1", "n", json!(1), json!({ "client-W": 1 }), "m-2").await;
    writer.ack("m-2").await;
    writer.delta("room:p1", "n").await;
    a.delta("room:p1", "n").await;

    let mut fresh = Client::connect(&app).await;
    let state = fresh.subscribe("room:p1").await;
    assert_eq!(state["state"], json!({ "title": "hi", "n": 1 }));
    app.stop().await;
}

crate::on_both_backends!(sdk_delta_is_acked_after_commit_and_echoed_to_everyone);

async fn test_client_delta_shape_null_values_and_tombstones(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    a.subscribe("room:p1").await;
    b.subscribe("room:p1").await;

    // {id, delta:{...}, vectorClock:{}}: one ACK with messageId = id, one delta per field.
    let payload = json!({ "id": "d-9", "documentId": "room:p1", "delta": { "title": "t2", "z": null, "x": 1 }, "vectorClock": {} });
    a.send(MessageType::Delta, payload).await;
    assert_eq!(a.ack("d-9").await["messageId"], "d-9");
    for client in [&mut a, &mut b] {
        assert_eq!(client.delta("room:p1", "title").await["value"], "t2");
        let z = client.delta("room:p1", "z").await;
        assert_eq!(z["value"], Value::Null, "null is a value, not a delete: {z}");
        clock_max(&z["clock"]);
        assert_eq!(client.delta("room:p1", "x").await["value"], 1);
    }

    // Neither messageId nor id: the ACK carries a server-made id.
    a.send(MessageType::Delta, json!({ "documentId": "room:p1", "delta": { "w": 0 }, "vectorClock": { "t": 1 } }))
        .await;
    let ack = a.expect(MessageType::Ack).await;
    assert!(ack["messageId"].as_str().is_some_and(|m| !m.is_empty()), "{ack}");
    for client in [&mut a, &mut b] {
        assert_eq!(client.delta("room:p1", "w").await["value"], 0);
    }

    // A tombstone without any clock: applied and acked (Junction tolerates the missing clock).
    let payload = json!({ "documentId": "room:p1", "delta": { "x": { "__deleted": true } }, "messageId": "m-del" });
    a.send(MessageType::Delta, payload).await;
    a.ack("m-del").await;
    for client in [&mut a, &mut b] {
        let x = client.delta("room:p1", "x").await;
        assert_eq!(x["value"], json!({ "__deleted": true }));
        clock_max(&x["clock"]);
    }
    let mut fresh = Client::connect(&app).await;
    assert_eq!(fresh.subscribe("room:p1").await["state"], json!({ "title": "t2", "z": null, "w": 0 }), "x was deleted");
    app.stop().await;
}

async fn server_clock_stays_above_every_counter_and_grows_with_each_write(kind: Kind) {
    // The SDK applies a server delta only if max(clock) beats the counter it holds for the field
    // (its own counter after a local write, the previous echo's max otherwise): protocols/synckit/SDK-NOTES.md.
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    a.subscribe("doc-1").await;
    b.subscribe("doc-1").await;

    a.sdk_set("doc-1", "f", json!("from A"), json!({ "client-A": 50 }), "a-1").await;
    a.ack("a-1").await;
    let first = b.delta("doc-1", "f").await;
    let first_max = clock_max(&first["clock"]);
    assert!(first_max > 50, "{first}");
    let own = a.delta("doc-1", "f").await;
    assert_eq!((&own["value"], &own["clock"]), (&first["value"], &first["clock"]), "the sender's echo: {own}");

    b.sdk_set("doc-1", "f", json!("from B"), json!({ "user-B": 1 }), "b-1").await;
    b.ack("b-1").await;
    let second = a.delta("doc-1", "f").await;
    assert_eq!(second["value"], "from B");
    let second_max = clock_max(&second["clock"]);
    assert!(second_max > first_max, "each broadcast of a field must carry a bigger max: {first} then {second}");
    assert!(second["clock"]["client-A"].as_u64() >= Some(50), "client clocks are merged in: {second}");
    assert_eq!(b.delta("doc-1", "f").await["value"], "from B");

    // A write whose clock is far below the document's still wins (arrival order) and is echoed higher.
    a.sdk_set("doc-1", "f", json!("A again"), json!({ "client-A": 51 }), "a-2").await;
    a.ack("a-2").await;
    let third = b.delta("doc-1", "f").await;
    assert_eq!(third["value"], "A again");
    assert!(clock_max(&third["clock"]) > second_max, "{second} then {third}");

    // subscribe and sync_request report the same document clock.
    let mut fresh = Client::connect(&app).await;
    let response = fresh.subscribe("doc-1").await;
    assert!(clock_max(&response["clock"]) >= clock_max(&third["clock"]), "{response}");
    app.stop().await;
}

async fn sync_request_subscribes_and_sync_step1_is_answered_like_it(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    b.sdk_set("doc-7", "x", json!(1), json!({ "client-B": 1 }), "b-1").await;
    b.ack("b-1").await;

    a.send(MessageType::SyncRequest, json!({ "documentId": "doc-7", "id": "req-7" })).await;
    let response = a.expect(MessageType::SyncResponse).await;
    assert_eq!(response["requestId"], "req-7");
    assert_eq!(response["documentId"], "doc-7");
    assert_eq!(response["state"], json!({ "x": 1 }));
    assert_eq!(response["deltas"], json!([]));
    assert!(clock_max(&response["clock"]) > 1, "sync_response to sync_request carries the clock too: {response}");

    // sync_request subscribed A: it gets B's next write.
    b.sdk_set("doc-7", "x", json!(2), json!({ "client-B": 2 }), "b-2").await;
    let delta = a.delta("doc-7", "x").await;
    assert_eq!(delta["value"], 2);
    assert!(clock_max(&delta["clock"]) > 2, "{delta}");

    // sync_step1 is answered like sync_request, never with sync_step2 (0x15, unknown to SDKs).
    a.send(MessageType::SyncStep1, json!({ "documentId": "doc-7", "stateVector": {} })).await;
    let reply = a.take("the reply to sync_step1", |m| m.kind != MessageType::Delta).await;
    assert_eq!(reply.kind, MessageType::SyncResponse, "{reply:?}");
    assert_eq!(reply.payload["state"], json!({ "x": 2 }));
    app.stop().await;
}

async fn a_sync_request_vector_clock_is_merged_into_the_document_clock(kind: Kind) {
    // Contract: sync_request "merges a supplied vectorClock" (as the reference does): the
    // document clock keeps the client's counters, so later echoes beat them.
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    b.sdk_set("doc-8", "x", json!(1), json!({ "client-B": 1 }), "b-1").await;
    b.ack("b-1").await;

    let request = json!({ "documentId": "doc-8", "vectorClock": { "client-Z": 500 }, "id": "req-8" });
    a.send(MessageType::SyncRequest, request).await;
    let response = a.expect(MessageType::SyncResponse).await;
    assert!(response["clock"]["client-Z"].as_u64() >= Some(500), "the reply shows the merged clock: {response}");

    let mut fresh = Client::connect(&app).await;
    let later = fresh.subscribe("doc-8").await;
    assert!(later["clock"]["client-Z"].as_u64() >= Some(500), "the document clock kept it: {later}");
    b.sdk_set("doc-8", "x", json!(2), json!({ "client-B": 2 }), "b-2").await;
    let delta = a.delta("doc-8", "x").await;
    assert!(clock_max(&delta["clock"]) > 500, "the next echo beats the merged counter: {delta}");
    app.stop().await;
}

async fn unsubscribe_stops_deltas_without_a_reply(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    a.subscribe("room:q").await;
    b.subscribe("room:q").await;
    a.send(MessageType::Unsubscribe, json!({ "documentId": "room:q" })).await;
    a.silent_for(300).await;

    b.sdk_set("room:q", "q", json!(true), json!({ "client-B": 1 }), "q-1").await;
    b.ack("q-1").await;
    assert_eq!(b.delta("room:q", "q").await["value"], true, "the writer still gets its echo");
    a.none_within(500, "delta after unsubscribe", |m| m.kind == MessageType::Delta).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SDK 0.3.0: delta_batch

async fn delta_batch_set_ops_are_acked_after_commit_and_echoed_per_field(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    a.subscribe("room:test1").await;
    b.subscribe("room:test1").await;

    // The captured SDK 0.3.0 shape, plus the op kinds Junction ignores (no field: counter,
    // SyncSet add, richtext).
    let ts = now_ms();
    let batch = json!({
        "documentId": "room:test1",
        "deltas": [
            { "type": "set", "documentId": "room:test1", "field": "title", "value": "hello", "clock": { "client-A": 1 }, "clientId": "client-A", "timestamp": ts },
            { "type": "set", "documentId": "room:test1", "field": "y", "value": { "a": [1, 2] }, "clock": { "client-A": 2 }, "clientId": "client-A", "timestamp": ts },
            { "type": "counter", "operation": "increment", "value": 1, "documentId": "room:test1", "clientId": "client-A", "timestamp": ts, "clock": { "client-A": 3 } },
            { "type": "set", "operation": "add", "value": "tag", "documentId": "room:test1", "clientId": "client-A", "timestamp": ts, "clock": { "client-A": 4 } },
            { "type": "richtext", "operation": "format", "opId": "o1", "start": 0, "end": 1, "attributes": { "bold": true }, "documentId": "room:test1", "clientId": "client-A", "timestamp": ts, "clock": { "client-A": 5 } },
            { "type": "set", "documentId": "room:test1", "field": "title", "value": "hello again", "clock": { "client-A": 6 }, "clientId": "client-A", "timestamp": ts },
        ],
        "messageId": "mb-1",
    });
    a.send(MessageType::DeltaBatch, batch).await;
    a.ack("mb-1").await;
    assert!(stored_events(&app, "room:test1").await > 0, "acked before the batch was in the event log");

    for client in [&mut a, &mut b] {
        let title = client.delta("room:test1", "title").await;
        assert_eq!(title["value"], "hello again", "the later op of the batch wins: {title}");
        assert!(clock_max(&title["clock"]) > 6, "{title}");
        let y = client.delta("room:test1", "y").await;
        assert_eq!(y["value"], json!({ "a": [1, 2] }));
        assert!(clock_max(&y["clock"]) > 6, "{y}");
        client
            .none_within(300, "another delta (one per field; ignored ops send none)", |m| m.kind == MessageType::Delta)
            .await;
    }
    let mut fresh = Client::connect(&app).await;
    let response = fresh.subscribe("room:test1").await;
    assert_eq!(response["state"], json!({ "title": "hello again", "y": { "a": [1, 2] } }));
    assert!(clock_max(&response["clock"]) > 6);
    app.stop().await;
}

crate::on_both_backends!(delta_batch_set_ops_are_acked_after_commit_and_echoed_per_field);

async fn a_burst_to_one_field_ends_with_the_last_value_everywhere(kind: Kind) {
    let app = app_with(kind, |c| c.limits.messages_per_second = 100_000).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    a.subscribe("hot").await;
    b.subscribe("hot").await;
    let writes = 200;
    for i in 0..writes {
        a.sdk_set("hot", "f", json!(i), json!({ "client-A": i + 1 }), &format!("w-{i}")).await;
    }
    for i in 0..writes {
        a.ack(&format!("w-{i}")).await;
    }
    for (name, client) in [("writer", &mut a), ("subscriber", &mut b)] {
        let received = client.drain(500).await;
        let deltas: Vec<&Value> =
            received.iter().filter(|m| m.kind == MessageType::Delta).map(|m| &m.payload).collect();
        assert!(!deltas.is_empty(), "{name} got deltas");
        assert!(deltas.len() <= writes as usize, "{name}: at most one delta per write");
        let last = deltas.last().unwrap();
        assert_eq!(last["value"], writes - 1, "{name}: the last delta carries the last write: {last}");
        let maxima: Vec<u64> = deltas.iter().map(|d| clock_max(&d["clock"])).collect();
        assert!(maxima.windows(2).all(|w| w[0] < w[1]), "{name}: clocks grow with every broadcast: {maxima:?}");
        assert!(*maxima.last().unwrap() > writes as u64);
        println!("{name}: {} delta frames for {writes} writes", deltas.len());
    }
    let mut fresh = Client::connect(&app).await;
    assert_eq!(fresh.subscribe("hot").await["state"], json!({ "f": writes - 1 }));
    app.stop().await;
}

async fn interleaved_bursts_to_many_fields_leave_every_subscriber_with_the_server_state(kind: Kind) {
    // Two writers (one only ever sends delta_batch and never subscribes) hammer ten fields while
    // two readers watch: under load the server coalesces, but the last delta each subscriber gets
    // for a field must be the field's final value.
    let app = app_with(kind, |c| c.limits.messages_per_second = 100_000).await;
    let mut r1 = Client::connect(&app).await;
    let mut r2 = Client::connect(&app).await;
    r1.subscribe("busy").await;
    r2.subscribe("busy").await;
    let mut a = Client::connect(&app).await;
    let mut w = Client::connect(&app).await;
    a.subscribe("busy").await;
    for i in 0..100u64 {
        let field = format!("k{}", i % 10);
        a.sdk_set("busy", &field, json!(format!("a{i}")), json!({ "client-A": i + 1 }), &format!("a-{i}")).await;
        w.batch_set("busy", "client-W", i + 1, &[(field.as_str(), json!(format!("w{i}")))], &format!("w-{i}")).await;
    }
    for i in 0..100 {
        a.ack(&format!("a-{i}")).await;
        w.ack(&format!("w-{i}")).await;
    }
    let mut fresh = Client::connect(&app).await;
    let state = fresh.subscribe("busy").await["state"].clone();
    assert_eq!(state.as_object().unwrap().len(), 10, "{state}");
    for (name, client) in [("reader 1", &mut r1), ("reader 2", &mut r2), ("writer", &mut a), ("batch writer", &mut w)] {
        let mut last = serde_json::Map::new();
        let mut frames = 0;
        for m in client.drain(500).await {
            if m.kind == MessageType::Delta {
                frames += 1;
                last.insert(m.payload["field"].as_str().unwrap().to_owned(), m.payload["value"].clone());
            }
        }
        assert_eq!(Value::Object(last), state, "{name}: the last delta per field is the server's value");
        println!("{name}: {frames} delta frames for 200 writes to 10 fields");
    }
    app.stop().await;
}

async fn a_subscriber_joining_during_writes_misses_nothing(kind: Kind) {
    // The joiner's sync_response state plus the deltas after it must add up to the final state:
    // every write lands either in the state it was sent or in a later delta (gap-free), and no
    // delta takes a field back to an older value than the state showed.
    let app = app_with(kind, |c| c.limits.messages_per_second = 100_000).await;
    let mut writer = Client::connect(&app).await;
    writer.subscribe("join").await;
    let writes = 300u64;
    let mut joiner = Client::connect(&app).await;
    for i in 0..writes {
        let payload = json!({ "documentId": "join", "delta": { format!("f{i}"): i, "n": i }, "vectorClock": { "client-W": i + 1 }, "messageId": format!("j-{i}") });
        writer.send(MessageType::Delta, payload).await;
        if i == writes / 2 {
            // Join once a third is committed, while the rest is in flight or still to come.
            writer.ack(&format!("j-{}", writes / 3)).await;
            joiner.send(MessageType::Subscribe, json!({ "documentId": "join" })).await;
        }
    }
    for i in 0..writes {
        if i != writes / 3 {
            writer.ack(&format!("j-{i}")).await;
        }
    }
    let received = joiner.drain(700).await;
    let start = received.iter().position(|m| m.kind == MessageType::SyncResponse).expect("a sync_response");
    let mut state = received[start].payload["state"].as_object().unwrap().clone();
    let n_at_join = state.get("n").and_then(Value::as_u64);
    let mut n_seen = n_at_join;
    for m in &received[start + 1..] {
        if m.kind != MessageType::Delta {
            continue;
        }
        let field = m.payload["field"].as_str().unwrap().to_owned();
        if field == "n" {
            let n = m.payload["value"].as_u64().unwrap();
            assert!(n_seen.is_none_or(|seen| n > seen), "n went from {n_seen:?} back to {n}");
            n_seen = Some(n);
        }
        state.insert(field, m.payload["value"].clone());
    }
    let mut expected = serde_json::Map::new();
    for i in 0..writes {
        expected.insert(format!("f{i}"), json!(i));
    }
    expected.insert("n".into(), json!(writes - 1));
    println!("joined at n = {n_at_join:?}; {} messages after the sync_response", received.len() - start - 1);
    assert_eq!(Value::Object(state), Value::Object(expected), "joined at n = {n_at_join:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SDK 0.3.0: text-state (Fugue CRDT)

async fn text_state_is_merged_relayed_to_the_others_and_served_on_subscribe(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    a.subscribe("room:text").await;
    b.subscribe("room:text").await;

    let from_a = fugue("client-A", "hello");
    let ts_a = now_ms();
    let op_a = json!({
        "type": "text-state", "state": serde_json::to_string(&from_a).unwrap(),
        "documentId": "room:text", "clientId": "client-A", "timestamp": ts_a, "clock": { "client-A": 1 },
    });
    a.send(MessageType::DeltaBatch, json!({ "documentId": "room:text", "deltas": [op_a], "messageId": "t-1" })).await;

    let relay = b.expect(MessageType::DeltaBatch).await;
    assert_eq!(relay["documentId"], "room:text");
    assert_eq!(relay["isTextOperation"], true);
    let ops = relay["deltas"].as_array().expect("deltas");
    assert_eq!(ops.len(), 1, "{relay}");
    assert_eq!(ops[0]["type"], "text-state");
    assert_eq!(ops[0]["clientId"], "client-A");
    assert_eq!(ops[0]["timestamp"], ts_a);
    assert_eq!(text_of(&ops[0]["state"]), "hello");
    a.none_within(300, "a text relay to the sender", |m| m.kind == MessageType::DeltaBatch).await;

    // B edited concurrently (its own state never saw A's): the server merges both.
    let from_b = fugue("client-B", "world");
    let mut expected = from_a.clone();
    expected.merge(&from_b).unwrap();
    let ts_b = ts_a + 5;
    let op_b = json!({
        "type": "text-state", "state": serde_json::to_string(&from_b).unwrap(),
        "documentId": "room:text", "clientId": "client-B", "timestamp": ts_b, "clock": { "client-B": 1 },
    });
    b.send(MessageType::DeltaBatch, json!({ "documentId": "room:text", "deltas": [op_b], "messageId": "t-2" })).await;
    let relay = a.expect(MessageType::DeltaBatch).await;
    assert_eq!(relay["isTextOperation"], true);
    assert_eq!(relay["deltas"][0]["clientId"], "client-B");
    assert_eq!(text_of(&relay["deltas"][0]["state"]), expected.to_string(), "the relay carries the merged state");
    b.none_within(300, "a text relay to the sender", |m| m.kind == MessageType::DeltaBatch).await;

    let mut fresh = Client::connect(&app).await;
    let response = fresh.subscribe("room:text").await;
    assert_eq!(text_of(&response["textState"]), expected.to_string());
    assert_eq!(response["textClock"], ts_b, "textClock is the newest op timestamp");
    clock_max(&response["clock"]);

    // A legacy `text` op is relayed as-is to the others.
    let legacy = json!({ "type": "text", "documentId": "room:text", "clientId": "client-A", "position": 0, "insert": "x", "timestamp": now_ms() });
    a.send(
        MessageType::DeltaBatch,
        json!({ "documentId": "room:text", "deltas": [legacy.clone()], "messageId": "t-3" }),
    )
    .await;
    let relay = b.expect(MessageType::DeltaBatch).await;
    assert_eq!(relay["deltas"][0]["type"], "text");
    assert_eq!(relay["deltas"][0]["insert"], "x");
    assert_eq!(relay["isTextOperation"], true);
    a.none_within(300, "a legacy text relay to the sender", |m| m.kind == MessageType::DeltaBatch).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Awareness

async fn awareness_state_updates_reach_every_subscriber_including_the_sender(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    let mut bystander = Client::connect(&app).await;
    bystander.subscribe("room:p1").await; // a document subscriber, not an awareness subscriber

    a.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:p1" })).await;
    let state = a.expect(MessageType::AwarenessState).await;
    assert_eq!(state["documentId"], "room:p1");
    assert_eq!(state["states"], json!([]));
    b.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:p1" })).await;
    b.expect(MessageType::AwarenessState).await;

    let update =
        json!({ "documentId": "room:p1", "clientId": "client-A", "state": { "user": { "name": "A" } }, "clock": 1 });
    a.send(MessageType::AwarenessUpdate, update).await;
    let mut ids = Vec::new();
    for client in [&mut a, &mut b] {
        let got = client.expect(MessageType::AwarenessUpdate).await;
        assert_eq!(got["documentId"], "room:p1");
        assert_eq!(got["clientId"], "client-A");
        assert_eq!(got["state"], json!({ "user": { "name": "A" } }));
        assert_eq!(got["clock"], 1);
        ids.push(got["id"].clone());
    }
    assert_eq!(ids[0], ids[1], "one message, broadcast as is");
    bystander
        .none_within(300, "awareness without awareness_subscribe", |m| m.kind == MessageType::AwarenessUpdate)
        .await;

    let mut late = Client::connect(&app).await;
    late.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:p1" })).await;
    let state = late.expect(MessageType::AwarenessState).await;
    assert_eq!(state["states"], json!([{ "clientId": "client-A", "state": { "user": { "name": "A" } }, "clock": 1 }]));

    // state null: the client left.
    let leave = json!({ "documentId": "room:p1", "clientId": "client-A", "state": null, "clock": 2 });
    a.send(MessageType::AwarenessUpdate, leave).await;
    for client in [&mut a, &mut b, &mut late] {
        let got = client.expect(MessageType::AwarenessUpdate).await;
        assert_eq!(got["state"], Value::Null);
        assert_eq!(got["clientId"], "client-A");
    }
    let mut later = Client::connect(&app).await;
    later.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:p1" })).await;
    assert_eq!(later.expect(MessageType::AwarenessState).await["states"], json!([]));
    app.stop().await;
}

async fn stale_presence_expires_with_a_leave_broadcast(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.awareness_timeout_secs = 1).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    b.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:aw" })).await;
    b.expect(MessageType::AwarenessState).await;
    let update = json!({ "documentId": "room:aw", "clientId": "client-A", "state": { "cursor": 3 }, "clock": 1 });
    a.send(MessageType::AwarenessUpdate, update).await;
    b.expect(MessageType::AwarenessUpdate).await;

    // Updates every 400 ms keep the presence alive past the timeout (it counts from the last one).
    for clock in 2..=6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let update =
            json!({ "documentId": "room:aw", "clientId": "client-A", "state": { "cursor": clock }, "clock": clock });
        a.send(MessageType::AwarenessUpdate, update).await;
        let got = b.expect(MessageType::AwarenessUpdate).await;
        assert_eq!(got["state"], json!({ "cursor": clock }), "still present after {clock} updates: {got}");
    }
    let sent_at = now_ms();

    // A stays connected but silent: after the 1 s timeout its presence is dropped.
    let leave = b.expect(MessageType::AwarenessUpdate).await;
    let waited = now_ms() - sent_at;
    assert_eq!(leave["clientId"], "client-A");
    assert_eq!(leave["state"], Value::Null);
    assert_eq!(leave["documentId"], "room:aw");
    let clock = leave["clock"].as_i64().expect("clock is a ms timestamp");
    assert!((sent_at..=now_ms()).contains(&clock), "leave clock {clock} is the server's now in ms");
    assert!(waited >= 900, "not expired before the timeout ({waited} ms)");
    let mut later = Client::connect(&app).await;
    later.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:aw" })).await;
    assert_eq!(later.expect(MessageType::AwarenessState).await["states"], json!([]));
    a.assert_open().await;
    app.stop().await;
}

async fn presence_of_a_closed_connection_leaves_at_once(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    b.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:aw" })).await;
    b.expect(MessageType::AwarenessState).await;
    for client_id in ["tab-1", "tab-2"] {
        let update = json!({ "documentId": "room:aw", "clientId": client_id, "state": { "n": 1 }, "clock": 1 });
        a.send(MessageType::AwarenessUpdate, update).await;
        b.expect(MessageType::AwarenessUpdate).await;
    }
    let mut c = Client::connect(&app).await;
    let update = json!({ "documentId": "room:aw", "clientId": "tab-3", "state": { "n": 3 }, "clock": 1 });
    c.send(MessageType::AwarenessUpdate, update).await;
    b.expect(MessageType::AwarenessUpdate).await;
    a.socket.close(None).await.ok();
    drop(a);
    let started = Instant::now();
    let mut left = Vec::new();
    for _ in 0..2 {
        let leave = b.expect(MessageType::AwarenessUpdate).await;
        assert_eq!(leave["state"], Value::Null, "{leave}");
        left.push(leave["clientId"].as_str().unwrap().to_owned());
    }
    left.sort();
    assert_eq!(left, ["tab-1", "tab-2"]);
    // Well before the 30 s expiry.
    assert!(started.elapsed() < Duration::from_secs(5), "leave took {:?}", started.elapsed());
    b.none_within(300, "a leave of another connection's presence", |m| m.kind == MessageType::AwarenessUpdate).await;
    let mut later = Client::connect(&app).await;
    later.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:aw" })).await;
    let states = later.expect(MessageType::AwarenessState).await["states"].clone();
    assert_eq!(states, json!([{ "clientId": "tab-3", "state": { "n": 3 }, "clock": 1 }]));
    c.assert_open().await;
    app.stop().await;
}

/// A subscriber that stops reading and never reads again, its connection left open, is closed
/// once its socket has taken no bytes for `limits.write_stall_timeout_secs`, and counted. (Its
/// queue overflows first, which counts it as lagged; the close frame it is owed cannot reach it.)
async fn a_subscriber_that_never_reads_again_is_closed_and_counted(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    crate::helpers::stall_limits(&mut config);
    // Room for ten of the writer's own 100 KB deltas, which it reads as they come.
    config.limits.ws_send_queue_bytes = 1024 * 1024;
    let app = spawn_app_with(config, db).await;
    let socket = crate::helpers::small_window_socket(&ws_url(&app)).await;
    let mut stalled = Client { socket, inbox: VecDeque::new(), closed: None };
    stalled.subscribe("room:stalled").await;
    // From here on it reads nothing, while another client writes 10 MB.
    let mut writer = Client::connect(&app).await;
    let value = json!("x".repeat(100 * 1024));
    for i in 0..100u64 {
        let id = format!("m{i}");
        writer.sdk_set("room:stalled", &format!("f{i}"), value.clone(), json!({ "client-W": i + 1 }), &id).await;
        writer.ack(&id).await;
        writer.inbox.clear();
    }
    crate::helpers::wait_for_one_stalled_close(&app, "synckit", 1).await;
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let lagged = r#"junction_slow_consumer_disconnects_total{reason="lagged"}"#;
    assert_eq!(crate::helpers::metric(&metrics, lagged), 1, "{metrics}");
    writer.assert_open().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Heartbeat, JSON text framing, chunks

async fn ping_gets_pong_at_once(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    a.send(MessageType::Ping, json!({})).await;
    let pong = a.take("pong", |_| true).await;
    assert_eq!(pong.kind, MessageType::Pong);
    assert!(!pong.text);
    assert!(pong.payload["id"].is_string(), "{:?}", pong.payload);
    // A pong from the client is accepted silently.
    a.send(MessageType::Pong, json!({})).await;
    a.silent_for(300).await;
    app.stop().await;
}

async fn json_text_frames_get_json_text_replies(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let ts = now_ms();
    a.send_text(
        &json!({ "type": "sync_request", "id": "j-1", "timestamp": ts, "documentId": "room:json" }).to_string(),
    )
    .await;
    let reply = a.take("a reply", |_| true).await;
    assert!(reply.text, "a text frame answers a text frame: {reply:?}");
    assert_eq!(reply.kind, MessageType::SyncResponse);
    assert_eq!(reply.payload["type"], "sync_response");
    assert_eq!(reply.payload["requestId"], "j-1");
    assert!(reply.payload["id"].is_string() && reply.payload["timestamp"].is_i64(), "{:?}", reply.payload);
    clock_max(&reply.payload["clock"]);

    let delta = json!({ "type": "delta", "id": "d-1", "timestamp": now_ms(), "documentId": "room:json", "delta": { "a": 1 }, "vectorClock": { "t": 1 } });
    a.send_text(&delta.to_string()).await;
    let ack = a.take("the ack", |m| m.kind == MessageType::Ack).await;
    assert!(ack.text, "{ack:?}");
    assert_eq!(ack.payload["messageId"], "d-1");
    let echo = a.delta("room:json", "a").await;
    assert_eq!(echo["value"], 1);

    // The payload-object form is flattened.
    let ping = json!({ "type": "ping", "id": "p-1", "timestamp": now_ms(), "payload": {} });
    a.send_text(&ping.to_string()).await;
    let pong = a.take("pong", |m| m.kind == MessageType::Pong).await;
    assert!(pong.text);
    assert_eq!(pong.payload["type"], "pong");

    // A text message without timestamp: the error comes back as text too.
    a.send_text(&json!({ "type": "sync_request", "id": "j-2", "documentId": "room:json" }).to_string()).await;
    let error = a.take("the error", |m| m.kind == MessageType::Error).await;
    assert!(error.text);
    assert_eq!(error.payload["error"], "Invalid message format");

    // Binary still gets binary on another connection.
    let mut b = Client::connect(&app).await;
    let response = b.take_after_subscribe("room:json").await;
    assert!(!response.text);
    app.stop().await;
}

impl Client {
    async fn take_after_subscribe(&mut self, doc: &str) -> Received {
        self.send(MessageType::Subscribe, json!({ "documentId": doc })).await;
        self.take("sync_response", |m| m.kind == MessageType::SyncResponse).await
    }
}

/// Standard base64 with padding (what `Buffer.toString('base64')` writes).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn delta_batch_chunks_are_reassembled_into_one_frame(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    b.subscribe("room:chunks").await;
    let big = "x".repeat(3000);
    let whole = json!({
        "documentId": "room:chunks",
        "deltas": [{ "type": "set", "documentId": "room:chunks", "field": "big", "value": big, "clock": { "client-A": 1 }, "clientId": "client-A", "timestamp": now_ms() }],
        "messageId": "chunked-1",
    });
    let frame = encode_frame(MessageType::DeltaBatch, now_ms(), &whole.to_string());
    // Each chunk carries its own base64 piece of the frame; the server decodes and joins them.
    let parts: Vec<String> = frame.chunks(frame.len() / 3 + 1).map(base64).collect();
    assert_eq!(parts.len(), 3);
    // Out of order on purpose: the assembler places chunks by index.
    for index in [2usize, 0, 1] {
        let chunk = json!({ "chunkId": "c-1", "totalChunks": 3, "chunkIndex": index, "data": parts[index] });
        a.send(MessageType::DeltaBatchChunk, chunk).await;
        if index != 1 {
            a.none_within(200, "a reply before the last chunk", |m| m.kind == MessageType::Ack).await;
        }
    }
    a.ack("chunked-1").await;
    assert_eq!(b.delta("room:chunks", "big").await["value"], big);

    // A chunk that is not base64 breaks nothing.
    let bad = json!({ "chunkId": "c-2", "totalChunks": 1, "chunkIndex": 0, "data": "%%%not base64%%%" });
    a.send(MessageType::DeltaBatchChunk, bad).await;
    a.assert_open().await;
    app.stop().await;
}

/// Chunks are held until their set is complete: all of a connection's unfinished sets together
/// may hold no more than one message (`max_message_bytes`), so a set that never ends is refused
/// with `Message too large` instead of being buffered.
async fn chunk_sets_are_refused_once_they_pass_the_message_size_limit(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.max_message_bytes = 1000).await;
    let mut a = Client::connect(&app).await;
    let piece = base64(&[b'x'; 400]);
    for index in 0..2 {
        let chunk = json!({ "chunkId": "endless", "totalChunks": 1000, "chunkIndex": index, "data": piece });
        a.send(MessageType::DeltaBatchChunk, chunk).await;
    }
    a.silent_for(200).await;
    let chunk = json!({ "chunkId": "endless", "totalChunks": 1000, "chunkIndex": 2, "data": piece });
    a.send(MessageType::DeltaBatchChunk, chunk).await;
    let error = a.error().await;
    assert_eq!(error["error"], "Message too large (1200 bytes, max 1000)");
    assert_eq!(error["details"], json!({ "code": "INVALID_MESSAGE" }));

    // The limit is for all unfinished sets together: several small ones cannot add up past it.
    for (id, expect_refusal) in [("s-1", false), ("s-2", false), ("s-3", true)] {
        let chunk = json!({ "chunkId": id, "totalChunks": 2, "chunkIndex": 0, "data": piece });
        a.send(MessageType::DeltaBatchChunk, chunk).await;
        if expect_refusal {
            assert_eq!(a.error().await["error"], "Message too large (1200 bytes, max 1000)");
        } else {
            a.silent_for(200).await;
        }
    }
    a.assert_open().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Errors: exact texts, and the socket stays open

async fn malformed_frames_get_invalid_message_format_and_the_socket_stays_open(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    let bad_json = encode_frame(MessageType::Subscribe, now_ms(), "{\"documentId\":");
    let mut overrun = encode_frame(MessageType::Subscribe, now_ms(), r#"{"documentId":"x"}"#);
    overrun[12] = overrun[12].wrapping_add(40);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("3-byte frame", vec![0x10, 0, 0]),
        ("unknown type code 0x77", {
            let mut f = encode_frame(MessageType::Subscribe, now_ms(), r#"{"documentId":"x"}"#);
            f[0] = 0x77;
            f
        }),
        ("0x22 (the Python/Go DELTA_BATCH)", {
            let mut f = encode_frame(MessageType::Subscribe, now_ms(), r#"{"documentId":"x","deltas":[]}"#);
            f[0] = 0x22;
            f
        }),
        ("broken JSON", bad_json),
        ("a JSON array payload", encode_frame(MessageType::Subscribe, now_ms(), "[1,2]")),
        ("a length beyond the frame", overrun),
    ];
    for (case, bytes) in cases {
        a.send_bytes(bytes).await;
        let error = a.take(case, |_| true).await;
        assert_eq!(error.kind, MessageType::Error, "{case}: {error:?}");
        assert!(!error.text, "{case}: binary in, binary out");
        assert_eq!(error.payload["error"], "Invalid message format", "{case}");
        assert!(error.payload.get("details").is_none(), "{case}: {:?}", error.payload);
        a.assert_open().await;
    }
    // Found by the fuzz run: a lone surrogate as a key of a nested `payload` (valid JSON text,
    // no valid string) panicked the socket's task.
    a.send_text(&format!(r#"{{"type":"ping","id":"s-1","timestamp":{},"payload":{{"\ud800":1}}}}"#, now_ms())).await;
    let error = a.take("lone surrogate key", |_| true).await;
    assert_eq!((error.kind, error.text), (MessageType::Error, true), "{error:?}");
    assert_eq!(error.payload["error"], "Invalid message format");
    a.assert_open().await;
    app.stop().await;
}

async fn every_error_text_of_the_contract_and_the_socket_stays_open(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;

    // A server-only type from a client.
    a.send(MessageType::SyncResponse, json!({ "documentId": "x" })).await;
    let error = a.error().await;
    assert_eq!(error["error"], "Invalid message type: sync_response");
    assert_eq!(error["details"], json!({ "code": "INVALID_MESSAGE" }));
    a.assert_open().await;
    a.send_text(&json!({ "type": "bogus", "id": "b-1", "timestamp": now_ms() }).to_string()).await;
    let error = a.error().await;
    assert_eq!(error["error"], "Invalid message type: bogus");
    assert_eq!(error["details"], json!({ "code": "INVALID_MESSAGE" }));
    a.assert_open().await;

    // Document ids.
    for (doc, text) in [
        (json!(""), "Invalid document ID"),
        (json!("x".repeat(257)), "Document ID too long"),
        (json!("bad id!"), "Document ID contains invalid characters"),
        (json!("a/b"), "Document ID contains invalid characters"),
    ] {
        a.send(MessageType::Subscribe, json!({ "documentId": doc })).await;
        assert_eq!(a.error().await["error"], text, "documentId {doc}");
        a.assert_open().await;
    }
    let longest = "y".repeat(256);
    assert_eq!(a.subscribe(&longest).await["documentId"], longest.as_str(), "256 characters are fine");

    // Deltas without content.
    a.send(MessageType::Delta, json!({ "documentId": "room:p1" })).await;
    assert_eq!(a.error().await["error"], "Invalid delta message: missing or empty delta");
    a.send(MessageType::Delta, json!({ "documentId": "room:p1", "delta": {}, "messageId": "e-1" })).await;
    assert_eq!(a.error().await["error"], "Invalid delta message: missing or empty delta");
    a.send(MessageType::DeltaBatch, json!({ "documentId": "room:p1", "deltas": [] })).await;
    assert_eq!(a.error().await["error"], "Invalid delta batch: missing or empty deltas array");
    a.send(MessageType::DeltaBatch, json!({ "documentId": "room:p1" })).await;
    assert_eq!(a.error().await["error"], "Invalid delta batch: missing or empty deltas array");
    a.assert_open().await;
    a.none_within(300, "an ACK for a refused delta", |m| m.kind == MessageType::Ack).await;
    assert_eq!(stored_events(&app, "room:p1").await, 0, "nothing stored");
    app.stop().await;
}

async fn oversized_messages_are_refused_with_the_configured_limit(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.max_message_bytes = 1000).await;
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    b.subscribe("room:big").await;
    a.sdk_set("room:big", "f", json!("z".repeat(2000)), json!({ "client-A": 1 }), "big-1").await;
    let error = a.error().await;
    let text = error["error"].as_str().unwrap();
    let size: usize = text
        .strip_prefix("Message too large (")
        .and_then(|rest| rest.strip_suffix(" bytes, max 1000)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected error text: {text}"));
    assert!(size > 1000, "{text}");
    assert_eq!(error["details"], json!({ "code": "INVALID_MESSAGE" }));
    a.none_within(300, "an ACK", |m| m.kind == MessageType::Ack).await;
    b.none_within(300, "a broadcast", |m| m.kind == MessageType::Delta).await;
    assert_eq!(stored_events(&app, "room:big").await, 0);

    // Small messages still work on the same socket.
    a.sdk_set("room:big", "f", json!("small"), json!({ "client-A": 2 }), "small-1").await;
    a.ack("small-1").await;
    assert_eq!(b.delta("room:big", "f").await["value"], "small");
    app.stop().await;
}

async fn over_the_rate_messages_are_dropped_with_rate_limit_exceeded(kind: Kind) {
    let app = app_with(kind, |c| c.limits.messages_per_second = 5).await;
    let mut a = Client::connect(&app).await;
    let sent = 60;
    for i in 0..sent {
        a.send(MessageType::Subscribe, json!({ "documentId": format!("doc-{i}") })).await;
    }
    let received = a.drain(700).await;
    let answered = received.iter().filter(|m| m.kind == MessageType::SyncResponse).count();
    let limited: Vec<&Received> = received.iter().filter(|m| m.kind == MessageType::Error).collect();
    assert!(!limited.is_empty(), "60 messages at once exceed 5 per second");
    for error in &limited {
        assert_eq!(error.payload["error"], "Too many messages. Please slow down.");
        assert_eq!(error.payload["details"], json!({ "code": "RATE_LIMIT_EXCEEDED" }));
    }
    assert_eq!(answered + limited.len(), sent, "each message is either answered or refused");
    assert!(answered < sent, "refused messages are dropped");

    // The socket stays open and the budget comes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.subscribe("doc-after").await["documentId"], "doc-after");
    app.stop().await;
}

async fn the_demo_whitelist_is_off_by_default_and_can_be_enabled(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    assert_eq!(a.subscribe("doc-1").await["documentId"], "doc-1");
    app.stop().await;

    let app = app_with(kind, |c| c.protocols.synckit.document_whitelist = true).await;
    let mut a = Client::connect(&app).await;
    a.send(MessageType::Subscribe, json!({ "documentId": "doc-1" })).await;
    assert_eq!(a.error().await["error"], "Access denied to this document");
    for allowed in ["playground", "playground:x", "room:x", "wordwall:y", "1700000000000"] {
        assert_eq!(a.subscribe(allowed).await["documentId"], allowed);
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Auth

async fn anonymous_sockets_work_at_once_and_auth_without_token_says_anonymous(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.allow_anonymous = true).await;
    let mut a = Client::connect(&app).await;
    a.silent_for(300).await;
    a.send(MessageType::Auth, json!({})).await;
    let success = a.expect(MessageType::AuthSuccess).await;
    assert_eq!(success["userId"], "anonymous");
    assert_eq!(success["permissions"], json!({ "canRead": ["*"], "canWrite": ["*"], "isAdmin": false }));

    // A valid token on an anonymous socket narrows it to the token's permissions.
    a.send(MessageType::Auth, json!({ "token": user_token("u-1", &["doc-*"], &["doc-*"]) })).await;
    let success = a.expect(MessageType::AuthSuccess).await;
    assert_eq!(success["userId"], "u-1");
    assert_eq!(success["permissions"], json!({ "canRead": ["doc-*"], "canWrite": ["doc-*"], "isAdmin": false }));
    a.send(MessageType::Subscribe, json!({ "documentId": "room:x" })).await;
    let error = a.error().await;
    assert_eq!(error["error"], "Permission denied");
    assert_eq!(error["details"], json!({ "documentId": "room:x" }));

    // `sub` stands in for a missing userId.
    let by_sub = token(
        json!({ "sub": "s-1", "permissions": { "canRead": ["*"], "canWrite": [], "isAdmin": false }, "exp": in_one_hour() }),
    );
    a.send(MessageType::Auth, json!({ "token": by_sub })).await;
    assert_eq!(a.expect(MessageType::AuthSuccess).await["userId"], "s-1");

    // Anonymous access does not excuse a bad ?token=.
    let mut b = Client::connect_with_token(&app, "not.a.jwt").await;
    assert_eq!(b.expect(MessageType::AuthError).await["error"], "Authentication failed");
    assert_eq!(b.closed().await, (1008, "Authentication failed".to_owned()));
    app.stop().await;
}

async fn without_anonymous_access_a_token_is_needed(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.allow_anonymous = false).await;

    // No token: every document message is refused, the socket stays open.
    let mut a = Client::connect(&app).await;
    a.silent_for(200).await;
    let messages = [
        (MessageType::Subscribe, json!({ "documentId": "doc-1" })),
        (MessageType::SyncRequest, json!({ "documentId": "doc-1" })),
        (
            MessageType::Delta,
            json!({ "documentId": "doc-1", "field": "f", "value": 1, "clock": { "c": 1 }, "messageId": "n-1" }),
        ),
        (
            MessageType::DeltaBatch,
            json!({ "documentId": "doc-1", "deltas": [{ "type": "set", "field": "f", "value": 1, "clock": { "c": 1 } }] }),
        ),
        (MessageType::AwarenessSubscribe, json!({ "documentId": "doc-1" })),
        (MessageType::AwarenessUpdate, json!({ "documentId": "doc-1", "clientId": "c", "state": {}, "clock": 1 })),
    ];
    for (kind, payload) in messages {
        a.send(kind, payload).await;
        assert_eq!(a.error().await["error"], "Not authenticated", "{}", kind.name());
    }
    a.assert_open().await;
    assert_eq!(stored_events(&app, "doc-1").await, 0);

    // auth without a token: AUTH_REQUIRED, then close 1008.
    a.send(MessageType::Auth, json!({})).await;
    let error = a.error().await;
    assert_eq!(error["error"], "Authentication required");
    assert_eq!(error["details"], json!({ "code": "AUTH_REQUIRED" }));
    assert_eq!(a.closed().await, (1008, "Authentication required".to_owned()));

    // auth with a valid token.
    let mut b = Client::connect(&app).await;
    b.send(MessageType::Auth, json!({ "token": user_token("u-2", &["*"], &["*"]) })).await;
    let success = b.expect(MessageType::AuthSuccess).await;
    assert_eq!(success["userId"], "u-2");
    b.sdk_set("doc-1", "f", json!(1), json!({ "client-B": 1 }), "b-1").await;
    b.ack("b-1").await;

    // ?token= authenticates at connect, silently.
    let mut c = Client::connect_with_token(&app, &user_token("u-3", &["*"], &[])).await;
    c.silent_for(200).await;
    assert_eq!(c.subscribe("doc-1").await["state"], json!({ "f": 1 }));
    app.stop().await;
}

/// Without anonymous access, a socket that never sends `auth` is closed at the deadline with the
/// error and close of an `auth` without a token; sockets that authenticate stay.
async fn a_socket_that_does_not_authenticate_in_time_is_closed_with_auth_required(kind: Kind) {
    let app = app_with(kind, |c| {
        c.protocols.synckit.allow_anonymous = false;
        c.limits.auth_deadline_secs = 1;
    })
    .await;
    let mut by_message = Client::connect(&app).await;
    by_message.send(MessageType::Auth, json!({ "token": user_token("u-1", &["*"], &["*"]) })).await;
    by_message.expect(MessageType::AuthSuccess).await;
    let mut by_url = Client::connect_with_token(&app, &user_token("u-2", &["*"], &[])).await;

    let mut silent = Client::connect(&app).await;
    // Messages other than `auth` do not count: they are refused and the clock keeps running.
    silent.send(MessageType::Subscribe, json!({ "documentId": "doc-1" })).await;
    assert_eq!(silent.error().await["error"], "Not authenticated");
    let error = silent.error().await;
    assert_eq!(error["error"], "Authentication required");
    assert_eq!(error["details"], json!({ "code": "AUTH_REQUIRED" }));
    assert_eq!(silent.closed().await, (1008, "Authentication required".to_owned()));

    by_message.assert_open().await;
    by_url.assert_open().await;
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"junction_connections_closed_total{protocol="synckit",reason="auth_deadline"} 1"#),
        "{metrics}"
    );
    app.stop().await;
}

async fn bad_tokens_get_auth_error_and_close_1008(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.allow_anonymous = false).await;
    let expired = token(json!({
        "userId": "u", "permissions": { "canRead": ["*"], "canWrite": ["*"], "isAdmin": false }, "exp": now_ms() / 1000 - 3600,
    }));
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "userId": "u", "exp": in_one_hour() }),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-!!"),
    )
    .unwrap();
    for (case, bad) in [("garbage", "not.a.jwt".to_owned()), ("expired", expired), ("wrong key", wrong_key)] {
        let mut a = Client::connect(&app).await;
        a.send(MessageType::Auth, json!({ "token": bad })).await;
        let error = a.expect(MessageType::AuthError).await;
        assert_eq!(error["error"], "Authentication failed", "{case}");
        assert_eq!(a.closed().await, (1008, "Authentication failed".to_owned()), "{case}");

        let mut b = Client::connect_with_token(&app, &bad).await;
        let error = b.expect(MessageType::AuthError).await;
        assert_eq!(error["error"], "Authentication failed", "{case} via ?token=");
        assert_eq!(b.closed().await, (1008, "Authentication failed".to_owned()), "{case} via ?token=");
    }
    app.stop().await;
}

async fn a_token_without_permissions_authenticates_but_may_do_nothing(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.allow_anonymous = false).await;
    let bare = token(json!({ "userId": "refresh-only", "exp": in_one_hour() }));
    let mut a = Client::connect(&app).await;
    a.send(MessageType::Auth, json!({ "token": bare })).await;
    let success = a.expect(MessageType::AuthSuccess).await;
    assert_eq!(success["userId"], "refresh-only");
    a.send(MessageType::Subscribe, json!({ "documentId": "doc-1" })).await;
    let error = a.error().await;
    assert_eq!(error["error"], "Permission denied");
    assert_eq!(error["details"], json!({ "documentId": "doc-1" }));
    a.sdk_set("doc-1", "f", json!(1), json!({ "c": 1 }), "p-1").await;
    assert_eq!(a.error().await["error"], "Permission denied");
    a.assert_open().await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// RBAC

async fn writes_and_reads_are_checked_per_document(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.allow_anonymous = false).await;
    let admin = token(
        json!({ "userId": "root", "permissions": { "canRead": [], "canWrite": [], "isAdmin": true }, "exp": in_one_hour() }),
    );
    let mut watcher = Client::connect_with_token(&app, &admin).await;
    watcher.subscribe("doc-b").await;
    watcher.subscribe("doc-a").await;

    // May read doc-*, may write doc-a only.
    let mut a = Client::connect_with_token(&app, &user_token("u-1", &["doc-*"], &["doc-a"])).await;
    a.subscribe("doc-b").await;
    a.sdk_set("doc-b", "f", json!("nope"), json!({ "client-A": 1 }), "deny-1").await;
    let error = a.error().await;
    assert_eq!(error["error"], "Permission denied");
    assert_eq!(error["details"], json!({ "documentId": "doc-b" }));
    a.batch_set("doc-b", "client-A", 2, &[("g", json!("nope"))], "deny-2").await;
    let error = a.error().await;
    assert_eq!(error["error"], "Permission denied");
    assert_eq!(error["details"], json!({ "documentId": "doc-b" }));
    a.none_within(300, "an ACK of a denied write", |m| m.kind == MessageType::Ack).await;
    watcher.none_within(300, "a broadcast of a denied write", |m| m.kind == MessageType::Delta).await;
    let mut fresh = Client::connect_with_token(&app, &admin).await;
    assert_eq!(fresh.subscribe("doc-b").await["state"], json!({}), "nothing stored");
    assert_eq!(stored_events(&app, "doc-b").await, 0);

    // Write does not imply read; read outside the patterns is denied.
    a.send(MessageType::Subscribe, json!({ "documentId": "other" })).await;
    let error = a.error().await;
    assert_eq!(error["error"], "Permission denied");
    assert_eq!(error["details"], json!({ "documentId": "other" }));
    a.send(MessageType::AwarenessSubscribe, json!({ "documentId": "other" })).await;
    assert_eq!(a.error().await["error"], "Permission denied");
    a.send(MessageType::AwarenessUpdate, json!({ "documentId": "other", "clientId": "c", "state": {}, "clock": 1 }))
        .await;
    assert_eq!(a.error().await["error"], "Permission denied");

    let text_op = json!({ "type": "text-state", "state": serde_json::to_string(&fugue("client-A", "nope")).unwrap(), "documentId": "doc-b", "clientId": "client-A", "timestamp": now_ms(), "clock": { "client-A": 3 } });
    a.send(MessageType::DeltaBatch, json!({ "documentId": "doc-b", "deltas": [text_op], "messageId": "deny-3" })).await;
    assert_eq!(a.error().await["error"], "Permission denied");
    watcher.none_within(300, "a relay of a denied text op", |m| m.kind == MessageType::DeltaBatch).await;
    assert!(fresh.subscribe("doc-b").await.get("textState").is_none(), "no text stored");

    // The allowed write goes through.
    a.sdk_set("doc-a", "f", json!("yes"), json!({ "client-A": 3 }), "ok-1").await;
    a.ack("ok-1").await;
    assert_eq!(watcher.delta("doc-a", "f").await["value"], "yes");

    // An exact id in the patterns, and isAdmin granting everything.
    let mut exact = Client::connect_with_token(&app, &user_token("u-2", &["other"], &[])).await;
    exact.subscribe("other").await;
    watcher.sdk_set("anything", "f", json!(1), json!({ "root": 1 }), "admin-1").await;
    watcher.ack("admin-1").await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Persistence

async fn documents_clocks_and_text_survive_a_restart(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut a = Client::connect(&app).await;
    a.subscribe("doc-keep").await;
    a.sdk_set("doc-keep", "title", json!("kept"), json!({ "client-A": 40 }), "k-1").await;
    a.ack("k-1").await;
    a.batch_set("doc-keep", "client-A", 41, &[("obj", json!({ "a": [1, null] })), ("gone", json!(true))], "k-2").await;
    a.ack("k-2").await;
    a.send(MessageType::Delta, json!({ "documentId": "doc-keep", "delta": { "gone": { "__deleted": true } }, "vectorClock": { "client-A": 43 }, "messageId": "k-3" }))
        .await;
    a.ack("k-3").await;
    let text = fugue("client-A", "persistent text");
    let ts = now_ms();
    let op = json!({ "type": "text-state", "state": serde_json::to_string(&text).unwrap(), "documentId": "doc-keep", "clientId": "client-A", "timestamp": ts, "clock": { "client-A": 44 } });
    a.send(MessageType::DeltaBatch, json!({ "documentId": "doc-keep", "deltas": [op], "messageId": "k-4" })).await;
    // A text op has no echo to its sender; the subscribe below sees it once it is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let mut probe = Client::connect(&app).await;
        let response = probe.subscribe("doc-keep").await;
        if response.get("textState").is_some() {
            break response;
        }
        assert!(Instant::now() < deadline, "the text state was never served: {response}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(a);

    let app = app.restart().await;
    let mut b = Client::connect(&app).await;
    let after = b.subscribe("doc-keep").await;
    assert_eq!(after["state"], json!({ "title": "kept", "obj": { "a": [1, null] } }));
    assert_eq!(after["state"], before["state"]);
    assert_eq!(text_of(&after["textState"]), "persistent text");
    assert_eq!(after["textClock"], ts);
    assert!(clock_max(&after["clock"]) >= clock_max(&before["clock"]), "clock kept: {before} then {after}");
    assert!(after["clock"]["client-A"].as_u64() >= Some(43), "client clocks kept: {after}");

    // After the restart, writes are still echoed above everything the clients ever saw.
    let mut c = Client::connect(&app).await;
    c.subscribe("doc-keep").await;
    b.sdk_set("doc-keep", "title", json!("after restart"), json!({ "client-B": 1 }), "r-1").await;
    b.ack("r-1").await;
    let echo = c.delta("doc-keep", "title").await;
    assert_eq!(echo["value"], "after restart");
    assert!(clock_max(&echo["clock"]) > clock_max(&before["clock"]), "{before} then {echo}");
    app.stop().await;
}

crate::on_both_backends!(documents_clocks_and_text_survive_a_restart);

/// With a snapshot every few events, a restart loads snapshot + tail; twice in a row.
async fn a_document_loads_from_snapshot_and_tail_after_restarts(kind: Kind) {
    let app = app_with(kind, |c| c.protocols.synckit.snapshot_every = 3).await;
    let mut expected = serde_json::Map::new();
    let mut a = Client::connect(&app).await;
    let mut text = fugue("client-A", "");
    for i in 0..25u64 {
        let field = format!("f{}", i % 7);
        if i % 5 == 4 {
            let payload = json!({ "documentId": "doc-snap", "delta": { field.clone(): { "__deleted": true } }, "vectorClock": { "client-A": i + 1 }, "messageId": format!("s-{i}") });
            a.send(MessageType::Delta, payload).await;
            expected.remove(&field);
        } else {
            a.sdk_set("doc-snap", &field, json!({ "i": i }), json!({ "client-A": i + 1 }), &format!("s-{i}")).await;
            expected.insert(field, json!({ "i": i }));
        }
        a.ack(&format!("s-{i}")).await;
        if i % 6 == 0 {
            text.insert(text.len(), &format!("<{i}>")).unwrap();
            let op = json!({ "type": "text-state", "state": serde_json::to_string(&text).unwrap(), "documentId": "doc-snap", "clientId": "client-A", "timestamp": 1_000 + i, "clock": { "client-A": i + 1 } });
            a.send(
                MessageType::DeltaBatch,
                json!({ "documentId": "doc-snap", "deltas": [op], "messageId": format!("t-{i}") }),
            )
            .await;
        }
    }
    let expected = Value::Object(expected);
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let mut probe = Client::connect(&app).await;
        let response = probe.subscribe("doc-snap").await;
        if response.get("textState").is_some_and(|t| text_of(t) == text.to_string()) {
            break response;
        }
        assert!(Instant::now() < deadline, "the last text state was never served: {response}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(before["state"], expected);
    drop(a);

    let mut app = app;
    for round in 0..2 {
        app = app.restart().await;
        let mut b = Client::connect(&app).await;
        let after = b.subscribe("doc-snap").await;
        assert_eq!(after["state"], expected, "restart {round}");
        assert_eq!(text_of(&after["textState"]), text.to_string(), "restart {round}");
        assert_eq!(after["textClock"], 1_024, "the newest text op (i = 24) at restart {round}");
        assert!(clock_max(&after["clock"]) >= clock_max(&before["clock"]), "restart {round}: {after}");
    }
    app.stop().await;
}

crate::on_both_backends!(a_document_loads_from_snapshot_and_tail_after_restarts);

// ---------------------------------------------------------------------------------------------
// HTTP: /auth/verify and /auth/me

async fn auth_verify_and_me(kind: Kind) {
    let app = app_with(kind, |_| {}).await;
    let http = reqwest::Client::new();
    let good = user_token("u-7", &["doc-*"], &["doc-1"]);
    let exp = {
        let claims = jsonwebtoken::decode::<Value>(
            &good,
            &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
            &jsonwebtoken::Validation::default(),
        )
        .unwrap()
        .claims;
        claims["exp"].clone()
    };

    let verify = |body: Value| http.post(app.url("/auth/verify")).json(&body).send();
    let response = verify(json!({})).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "error": "Token required" }));
    let response = verify(json!({ "token": "garbage" })).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "valid": false }));
    let response = verify(json!({ "token": good })).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({ "valid": true, "userId": "u-7", "expiresAt": exp }));

    let me = |header: Option<String>| {
        let request = http.get(app.url("/auth/me"));
        match header {
            Some(h) => request.header("Authorization", h).send(),
            None => request.send(),
        }
    };
    let response = me(Some(format!("Bearer {good}"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "userId": "u-7", "email": "u-7@example.com", "permissions": { "canRead": ["doc-*"], "canWrite": ["doc-1"], "isAdmin": false } })
    );
    for (header, error) in [
        (None, "Missing Authorization header"),
        (Some(format!("Token {good}")), "Invalid Authorization header format"),
        (Some("Bearer garbage".to_owned()), "Invalid or expired token"),
    ] {
        let response = me(header.clone()).await.unwrap();
        assert_eq!(response.status(), 401, "{header:?}");
        assert_eq!(response.json::<Value>().await.unwrap(), json!({ "error": error }), "{header:?}");
    }
    // A page on another origin may call both (the reference server allows any origin).
    let preflight = http
        .request(reqwest::Method::OPTIONS, app.url("/auth/me"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    let response =
        http.get(app.url("/auth/me")).header("Origin", "https://app.example").bearer_auth(&good).send().await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let response = http.post(app.url("/auth/verify")).header("Origin", "https://app.example").json(&json!({})).send();
    assert_eq!(response.await.unwrap().headers()["access-control-allow-origin"], "*");
    // No demo login that accepts any password.
    let response =
        http.post(app.url("/auth/login")).json(&json!({ "email": "a@b.c", "password": "x" })).send().await.unwrap();
    assert!(response.status().is_client_error(), "no /auth/login: {}", response.status());
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Across instances: two servers on one Postgres, fanned out through one Redis.

async fn two_instances(redis: &crate::cluster::RedisServer) -> (TestApp, TestApp) {
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut config = test_config(&db);
    config.redis.url = redis.url();
    let a = spawn_app_with(config.clone(), db.clone()).await;
    let b = spawn_app_with(config, db).await;
    for app in [&a, &b] {
        crate::cluster::eventually(Duration::from_secs(30), "the fan-out to subscribe", || async {
            app.log.fanout().problem().is_none()
        })
        .await;
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_presence_reach_clients_of_another_instance() {
    let redis = crate::cluster::RedisServer::start().await;
    let (app_a, app_b) = two_instances(&redis).await;
    let mut on_a = Client::connect(&app_a).await;
    let mut on_b = Client::connect(&app_b).await;
    on_a.subscribe("doc-x").await;
    on_b.subscribe("doc-x").await;

    on_b.sdk_set("doc-x", "title", json!("from b"), json!({ "client-B": 1 }), "m-b1").await;
    on_b.ack("m-b1").await;
    let seen_on_a = on_a.delta("doc-x", "title").await;
    let echo_on_b = on_b.delta("doc-x", "title").await;
    assert_eq!(seen_on_a["value"], "from b");
    assert_eq!(seen_on_a["clock"], echo_on_b["clock"], "both instances fold the same log to the same clock");
    assert!(clock_max(&seen_on_a["clock"]) > 1);

    // Presence published on B before any room for the document exists on A reaches a client
    // that asks A later (B's owner announces it again), and then live updates flow both ways.
    let mut presence_b = Client::connect(&app_b).await;
    presence_b.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:cross" })).await;
    presence_b.expect(MessageType::AwarenessState).await;
    let here = json!({ "documentId": "room:cross", "clientId": "client-B", "state": { "user": "B" }, "clock": 1 });
    presence_b.send(MessageType::AwarenessUpdate, here).await;
    presence_b.expect(MessageType::AwarenessUpdate).await;

    let mut presence_a = Client::connect(&app_a).await;
    presence_a.send(MessageType::AwarenessSubscribe, json!({ "documentId": "room:cross" })).await;
    let state = presence_a.expect(MessageType::AwarenessState).await;
    let known = state["states"].as_array().unwrap().iter().any(|s| s["clientId"] == "client-B");
    if !known {
        let update = presence_a.expect(MessageType::AwarenessUpdate).await;
        assert_eq!(update["clientId"], "client-B");
        assert_eq!(update["state"], json!({ "user": "B" }));
    }
    let mine = json!({ "documentId": "room:cross", "clientId": "client-A", "state": { "user": "A" }, "clock": 1 });
    presence_a.send(MessageType::AwarenessUpdate, mine).await;
    let got = presence_b
        .take("client-A's presence", |m| m.kind == MessageType::AwarenessUpdate && m.payload["clientId"] == "client-A")
        .await;
    assert_eq!(got.payload["state"], json!({ "user": "A" }));

    // B's connection closes: its presence leaves on A too.
    drop(presence_b);
    let left = presence_a
        .take("client-B's leave", |m| m.kind == MessageType::AwarenessUpdate && m.payload["clientId"] == "client-B")
        .await;
    assert_eq!(left.payload["state"], Value::Null);
    app_a.stop().await;
    app_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_two_instances_converge() {
    let redis = crate::cluster::RedisServer::start().await;
    let (app_a, app_b) = two_instances(&redis).await;
    let mut on_a = Client::connect(&app_a).await;
    let mut on_b = Client::connect(&app_b).await;
    on_a.subscribe("doc-race").await;
    on_b.subscribe("doc-race").await;
    for i in 0..40u64 {
        on_a.sdk_set("doc-race", "f", json!(format!("a{i}")), json!({ "client-A": i + 1 }), &format!("a{i}")).await;
        on_b.sdk_set("doc-race", "f", json!(format!("b{i}")), json!({ "client-B": i + 1 }), &format!("b{i}")).await;
    }
    for i in 0..40u64 {
        on_a.ack(&format!("a{i}")).await;
        on_b.ack(&format!("b{i}")).await;
    }
    // What each client ends with: the value of the delta with the largest clock it received.
    let last = |received: Vec<Received>| {
        received
            .into_iter()
            .filter(|m| m.kind == MessageType::Delta && m.payload["field"] == "f")
            .max_by_key(|m| clock_max(&m.payload["clock"]))
            .map(|m| m.payload["value"].clone())
            .expect("deltas for f")
    };
    let (end_a, end_b) = (last(on_a.drain(500).await), last(on_b.drain(500).await));
    let mut fresh = Client::connect(&app_b).await;
    let server = fresh.subscribe("doc-race").await["state"]["f"].clone();
    assert_eq!(end_a, server, "the client on A ends with the server's value");
    assert_eq!(end_b, server, "the client on B ends with the server's value");
    app_a.stop().await;
    app_b.stop().await;
}
