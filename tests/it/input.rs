//! Input and identity: one store-name rule on every protocol and the event API, NUL in the text
//! of events, SyncKit presence ownership, secrets, and sockets whose token expires.

use junction::eventlog::StoreId;
use serde_json::{Value, json};

use crate::helpers::{Kind, TestApp, TestDatabase, WsClient, spawn_app_with, test_config};

const ADMIN: &str = "admin-secret";

async fn app(kind: Kind) -> TestApp {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.auth.admin_secret = ADMIN.into();
    spawn_app_with(config, db).await
}

/// Names every protocol must refuse, percent-encoded for a URL, and as JSON strings.
fn bad_names() -> Vec<(&'static str, String)> {
    vec![
        ("NUL", "a\u{0}b".to_owned()),
        ("a control character", "a\u{1}b".to_owned()),
        ("a line break", "a\nb".to_owned()),
        ("DEL", "a\u{7f}b".to_owned()),
        ("10,000 bytes", "x".repeat(10_000)),
        ("513 bytes", "x".repeat(513)),
    ]
}

fn url_encoded(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn no_store_was_created(app: &TestApp) {
    let stores = app.log.list_stores(StoreId(0), 100).await.unwrap();
    assert!(stores.is_empty(), "stores were created: {:?}", stores.iter().map(|s| &s.key).collect::<Vec<_>>());
}

async fn livestore_refuses_bad_store_names(kind: Kind) {
    let app = app(kind).await;
    let http = reqwest::Client::new();
    for (what, name) in bad_names() {
        let store = url_encoded(&name);
        let v03 = format!("ws://{}/websocket?storeId={store}", app.addr);
        assert_eq!(WsClient::upgrade_status(&v03).await, 400, "0.3 with {what}");
        let v04 = format!("ws://{}/?storeId={store}&transport=ws", app.addr);
        assert_eq!(WsClient::upgrade_status(&v04).await, 400, "0.4 WebSocket with {what}");
        let pull = json!({"_tag": "Request", "id": "1", "tag": "SyncHttpRpc.Pull",
            "payload": {"storeId": name, "live": false, "cursor": {"_tag": "None"}}, "headers": []});
        let response =
            http.post(app.url(&format!("/?storeId={store}&transport=http"))).json(&pull).send().await.unwrap();
        assert_eq!(response.status(), 400, "0.4 HTTP with {what}");
        let reason = response.text().await.unwrap();
        assert!(reason.starts_with("Invalid search params: storeId: a store name"), "{what}: {reason}");
    }
    // The limit counts bytes: 512 of them is a good name.
    let longest = "x".repeat(512);
    let mut client = WsClient::connect(&format!("ws://{}/websocket?storeId={longest}", app.addr)).await;
    client.send(r#"{"_tag":"WSMessage.PullReq","requestId":"r1"}"#).await;
    assert_eq!(client.recv_json().await["_tag"], "WSMessage.PullRes");
    let stores = app.log.list_stores(StoreId(0), 100).await.unwrap();
    assert!(stores.iter().all(|s| s.key.name == longest), "only the good name is a store");
    app.stop().await;
}

async fn pocket_refuses_bad_collection_names(kind: Kind) {
    let app = app(kind).await;
    let mut ws = WsClient::connect(&format!("ws://{}/sync", app.addr)).await;
    let http = reqwest::Client::new();
    let change = json!({"operation": "insert", "documentId": "d", "document": {"_id": "d", "_rev": "1-a"},
        "isFromSync": false, "timestamp": 1, "sequence": 1});
    for (i, (what, name)) in bad_names().into_iter().enumerate() {
        let push = json!({"type": "push", "id": format!("p{i}"), "timestamp": 1, "collection": name,
            "changes": [change], "checkpoint": {"sequences": {}}});
        ws.send(&push.to_string()).await;
        let reply = ws.recv_json().await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("INVALID_MESSAGE")),
            "{what}"
        );
        assert_eq!(reply["id"], format!("p{i}"));
        let pull = json!({"type": "pull", "id": format!("q{i}"), "timestamp": 1, "collections": [name],
            "checkpoint": {"sequences": {}}});
        ws.send(&pull.to_string()).await;
        let reply = ws.recv_json().await;
        assert_eq!(reply["code"], "INVALID_MESSAGE", "pull with {what}");

        let response = http.post(app.url("/sync/push")).json(&push).send().await.unwrap();
        assert_eq!(response.status(), 400, "HTTP push with {what}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "INVALID_MESSAGE");
    }
    no_store_was_created(&app).await;
    app.stop().await;
}

async fn synckit_refuses_bad_document_ids(kind: Kind) {
    let app = app(kind).await;
    let mut ws = WsClient::connect(&format!("ws://{}/ws", app.addr)).await;
    for (what, name) in bad_names() {
        for kind in ["subscribe", "sync_request", "awareness_subscribe"] {
            let message = json!({"type": kind, "id": "s", "timestamp": 1, "documentId": name});
            ws.send(&message.to_string()).await;
            let reply = ws.recv_json().await;
            assert_eq!(reply["type"], "error", "{kind} with {what}: {reply}");
        }
        let delta = json!({"type": "delta", "id": "d", "timestamp": 1, "documentId": name, "delta": {"a": 1},
            "vectorClock": {"c": 1}});
        ws.send(&delta.to_string()).await;
        assert_eq!(ws.recv_json().await["type"], "error", "delta with {what}");
    }
    no_store_was_created(&app).await;
    app.stop().await;
}

async fn the_event_api_refuses_bad_store_names(kind: Kind) {
    let app = app(kind).await;
    let http = reqwest::Client::new();
    for (what, name) in bad_names() {
        let store = url_encoded(&format!("livestore:{name}"));
        for path in [format!("/v1/stores/{store}/events"), format!("/v1/stores/{store}/events/live")] {
            let response = http.get(app.url(&path)).bearer_auth(ADMIN).send().await.unwrap();
            assert_eq!(response.status(), 400, "GET with {what}");
            let error = response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
            assert!(error.starts_with("a store name"), "{what}: {error}");
        }
        let reset = http.post(app.url(&format!("/v1/stores/{store}/reset"))).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(reset.status(), 400, "reset with {what}");
    }
    no_store_was_created(&app).await;
    app.stop().await;
}

crate::on_both_backends!(
    livestore_refuses_bad_store_names,
    pocket_refuses_bad_collection_names,
    synckit_refuses_bad_document_ids,
    the_event_api_refuses_bad_store_names,
);

fn livestore_event(seq: u64, name: &str, client: &str) -> Value {
    json!({"name": name, "args": {"seq": seq}, "seqNum": seq, "parentSeqNum": seq - 1, "clientId": client,
        "sessionId": "s1"})
}

/// NUL in an event's text is refused before the commit, on both backends (Postgres text cannot
/// hold it), and the pushes committed alongside it are not affected.
async fn nul_in_event_text_is_refused_and_its_neighbours_commit(kind: Kind) {
    let app = app(kind).await;
    let bad_events = [livestore_event(1, "todo\u{0}Created", "c1"), livestore_event(1, "todoCreated", "c\u{0}1")];
    let mut tasks = Vec::new();
    for n in 0..8 {
        let addr = app.addr;
        let bad = bad_events.get(n % 4).cloned();
        tasks.push(tokio::spawn(async move {
            let mut client = WsClient::connect(&format!("ws://{addr}/websocket?storeId=s{n}")).await;
            let event = bad.clone().unwrap_or_else(|| livestore_event(1, "todoCreated", "c1"));
            let push = json!({"_tag": "WSMessage.PushReq", "requestId": "p", "batch": [event]});
            client.send(&push.to_string()).await;
            (bad.is_some(), client.recv_json().await)
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let (bad, reply) = task.await.unwrap();
        let head = app.log.head(&crate::helpers::key(&format!("s{n}"))).await.unwrap();
        if bad {
            assert_eq!(reply["_tag"], "WSMessage.Error", "store s{n}: {reply}");
            let message = reply["message"].as_str().unwrap();
            assert!(message.starts_with("Invalid batch:") && message.contains("NUL"), "{message}");
            assert_eq!(head.0, 0, "store s{n}");
        } else {
            assert_eq!(reply["_tag"], "WSMessage.PushAck", "store s{n}: {reply}");
            assert_eq!(head.0, 1, "store s{n}");
        }
    }
    app.stop().await;
}

/// A SyncKit room appends the writes that queued while it was busy as one batch: a write with a
/// NUL clientId is refused alone, and the writes around it are acknowledged and stored.
async fn a_synckit_write_with_nul_is_refused_alone(kind: Kind) {
    let app = app(kind).await;
    let url = format!("ws://{}/ws", app.addr);
    let (mut a, mut b) = (WsClient::connect(&url).await, WsClient::connect(&url).await);
    let delta = |id: &str, client: &str, field: &str| {
        json!({"type": "delta", "id": id, "timestamp": 1, "documentId": "room:nul", "clientId": client,
            "delta": {field: 1}, "vectorClock": {"t": 1}})
        .to_string()
    };
    // Sent back to back, so that most of them queue behind the first append.
    for i in 0..20 {
        a.send(&delta(&format!("a{i}"), "client-a", &format!("a{i}"))).await;
        b.send(&delta(&format!("b{i}"), "client-b", &format!("b{i}"))).await;
        if i == 3 {
            a.send(&delta("bad", "client\u{0}a", "bad")).await;
        }
    }
    for (client, prefix) in [(&mut a, "a"), (&mut b, "b")] {
        let mut acked = 0;
        let mut refused = Vec::new();
        while acked < 20 {
            let reply = client.recv_json().await;
            match reply["type"].as_str() {
                Some("ack") => {
                    assert!(reply["messageId"].as_str().unwrap().starts_with(prefix), "{reply}");
                    acked += 1;
                }
                Some("error") => refused.push(reply),
                _ => {}
            }
        }
        if prefix == "a" {
            while refused.is_empty() {
                let reply = client.recv_json().await;
                if reply["type"] == "error" {
                    refused.push(reply);
                }
            }
        }
        let expected: Vec<Value> = if prefix == "a" { vec![json!({"documentId": "room:nul"})] } else { Vec::new() };
        assert_eq!(refused.iter().map(|r| r["details"].clone()).collect::<Vec<_>>(), expected, "{refused:?}");
        assert!(refused.iter().all(|r| r["error"] == "Delta application failed"), "{refused:?}");
    }
    let store = junction::eventlog::StoreKey::new(junction::eventlog::Protocol::SyncKit, "room:nul").unwrap();
    let stored = app.log.read(&store, junction::eventlog::SeqNum::ROOT, 1000).await.unwrap();
    for field in (0..20).flat_map(|i| [format!("a{i}"), format!("b{i}")]) {
        let pattern = format!("\"{field}\":");
        assert!(stored.iter().any(|e| e.body.args.get().contains(&pattern)), "{field} is stored");
    }
    assert!(stored.iter().all(|e| !e.body.args.get().contains("\"bad\":")));
    app.stop().await;
}

crate::on_both_backends!(
    nul_in_event_text_is_refused_and_its_neighbours_commit,
    a_synckit_write_with_nul_is_refused_alone
);

fn awareness(kind: &str, client: &str, state: Value, clock: u64) -> String {
    json!({"type": kind, "id": format!("{kind}-{clock}"), "timestamp": 1, "documentId": "room:presence",
        "clientId": client, "state": state, "clock": clock})
    .to_string()
}

/// The next `awareness_update` or `error` a SyncKit JSON client receives.
async fn next_awareness_or_error(client: &mut WsClient) -> Value {
    loop {
        let message = client.recv_json().await;
        if message["type"] == "awareness_update" || message["type"] == "error" {
            return message;
        }
    }
}

/// A presence `clientId` belongs to the connection that set it: another connection can neither
/// overwrite nor clear it, until its owner clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synckit_presence_cannot_be_set_or_cleared_under_another_connections_client_id() {
    let app = app(Kind::Sqlite).await;
    let url = format!("ws://{}/ws", app.addr);
    let subscribe =
        json!({"type": "awareness_subscribe", "id": "as", "timestamp": 1, "documentId": "room:presence"}).to_string();
    let (mut owner, mut intruder) = (WsClient::connect(&url).await, WsClient::connect(&url).await);
    for client in [&mut owner, &mut intruder] {
        client.send(&subscribe).await;
        assert_eq!(client.recv_json().await["type"], "awareness_state");
    }
    owner.send(&awareness("awareness_update", "alice", json!({"name": "Alice"}), 1)).await;
    for client in [&mut owner, &mut intruder] {
        let update = next_awareness_or_error(client).await;
        assert_eq!((update["clientId"].clone(), update["state"].clone()), (json!("alice"), json!({"name": "Alice"})));
    }

    for (state, clock) in [(json!({"name": "Mallory"}), 2), (Value::Null, 3)] {
        intruder.send(&awareness("awareness_update", "alice", state, clock)).await;
        let refused = next_awareness_or_error(&mut intruder).await;
        assert_eq!(
            (refused["type"].as_str(), refused["error"].as_str()),
            (Some("error"), Some("Failed to update awareness"))
        );
    }
    // What the owner hears next is its own update: the intruder's never went out.
    owner.send(&awareness("awareness_update", "alice", json!({"name": "Alice 2"}), 4)).await;
    let next = next_awareness_or_error(&mut owner).await;
    assert_eq!((next["state"].clone(), next["clock"].clone()), (json!({"name": "Alice 2"}), json!(4)));
    let mut newcomer = WsClient::connect(&url).await;
    newcomer.send(&subscribe).await;
    let state = newcomer.recv_json().await;
    assert_eq!(state["states"], json!([{"clientId": "alice", "state": {"name": "Alice 2"}, "clock": 4}]));

    // Once its owner clears it, the clientId is free.
    owner.send(&awareness("awareness_update", "alice", Value::Null, 5)).await;
    assert_eq!(next_awareness_or_error(&mut intruder).await["clock"], 4);
    assert_eq!(next_awareness_or_error(&mut intruder).await["state"], Value::Null);
    intruder.send(&awareness("awareness_update", "alice", json!({"name": "Bob"}), 6)).await;
    let taken = next_awareness_or_error(&mut intruder).await;
    assert_eq!((taken["type"].clone(), taken["state"].clone()), (json!("awareness_update"), json!({"name": "Bob"})));
    app.stop().await;
}

const JWT_SECRET: &str = "input-test-secret";

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A token for everything that expires in two to three seconds, and its `exp`.
fn expiring_token() -> (String, u64) {
    let exp = unix_now() + 3;
    let claims = json!({"userId": "u1", "exp": exp,
        "permissions": {"canRead": ["*"], "canWrite": ["*"], "isAdmin": false}});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    (token, exp)
}

async fn app_with_tokens() -> TestApp {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.auth.jwt_secret = JWT_SECRET.into();
    config.protocols.livestore.allow_anonymous = false;
    config.protocols.pocket.allow_anonymous = false;
    config.protocols.synckit.allow_anonymous = false;
    spawn_app_with(config, db).await
}

async fn auth_expiries(app: &TestApp, protocol: &str) -> String {
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    let prefix = format!("junction_auth_expiries_total{{protocol=\"{protocol}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("none").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_livestore_socket_closes_when_its_token_expires() {
    let app = app_with_tokens().await;
    let (token, exp) = expiring_token();
    let once = url_encoded(&json!({"authToken": token}).to_string());
    let payload = url_encoded(&once);
    let mut v03 = WsClient::connect(&format!("ws://{}/websocket?storeId=s&payload={payload}", app.addr)).await;
    let mut v04 = WsClient::connect(&format!("ws://{}/?storeId=s&transport=ws&payload={payload}", app.addr)).await;
    let push = json!({"_tag": "WSMessage.PushReq", "requestId": "p", "batch": [livestore_event(1, "e", "c")]});
    v03.send(&push.to_string()).await;
    assert_eq!(v03.recv_json().await["_tag"], "WSMessage.PushAck", "the token works until it expires");
    for client in [&mut v03, &mut v04] {
        assert_eq!(client.closed().await, Some(1008));
        assert!(unix_now() >= exp);
    }
    let again = format!("ws://{}/websocket?storeId=s&payload={payload}", app.addr);
    assert_eq!(WsClient::upgrade_status(&again).await, 400, "the expired token opens nothing");
    assert_eq!(auth_expiries(&app, "livestore").await, "2");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pocket_socket_closes_with_its_auth_error_when_its_token_expires() {
    let app = app_with_tokens().await;
    let (token, exp) = expiring_token();
    let mut client = WsClient::connect(&format!("ws://{}/sync?token={token}", app.addr)).await;
    let pull =
        json!({"type": "pull", "id": "q", "timestamp": 1, "collections": ["c"], "checkpoint": {"sequences": {}}});
    client.send(&pull.to_string()).await;
    assert_eq!(client.recv_json().await["type"], "pull-response", "the token works until it expires");
    assert_eq!(client.closed().await, Some(4001));
    assert!(unix_now() >= exp);
    assert_eq!(auth_expiries(&app, "pocket").await, "1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synckit_socket_gets_auth_error_when_its_token_expires() {
    let app = app_with_tokens().await;
    let url = format!("ws://{}/ws", app.addr);
    let (token, exp) = expiring_token();
    // By `auth` message (the answer comes as JSON text) and by the URL.
    let mut by_url = WsClient::connect(&format!("{url}?token={token}")).await;
    let mut by_message = WsClient::connect(&url).await;
    by_message.send(&json!({"type": "auth", "id": "a", "timestamp": 1, "token": token}).to_string()).await;
    assert_eq!(by_message.recv_json().await["type"], "auth_success");
    let subscribe = json!({"type": "subscribe", "id": "s", "timestamp": 1, "documentId": "room:exp"}).to_string();
    by_message.send(&subscribe).await;
    assert_eq!(by_message.recv_json().await["type"], "sync_response", "the token works until it expires");
    let auth_error = by_message.recv_json().await;
    assert_eq!(
        (auth_error["type"].as_str(), auth_error["error"].as_str()),
        (Some("auth_error"), Some("Authentication failed"))
    );
    assert!(unix_now() >= exp);
    assert_eq!(by_message.closed().await, Some(1008));
    assert_eq!(by_url.closed().await, Some(1008));
    assert_eq!(auth_expiries(&app, "synckit").await, "2");
    app.stop().await;
}

/// The event API's live stream, opened with an admin JWT, ends when the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_api_stream_ends_when_its_admin_token_expires() {
    let app = app_with_tokens().await;
    app.log.append(&crate::helpers::key("live"), crate::helpers::at_head(1)).await.unwrap();
    let exp = unix_now() + 3;
    let claims = json!({"userId": "ops", "exp": exp, "permissions": {"isAdmin": true}});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let url = app.url("/v1/stores/livestore:live/events/live");
    let mut stream = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut received = String::new();
    loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
            .await
            .expect("the stream ends within 10 s")
            .expect("a clean end");
        match chunk {
            Some(bytes) => received.push_str(&String::from_utf8_lossy(&bytes)),
            None => break,
        }
    }
    assert!(received.contains("event: event"), "the stream worked until then: {received}");
    assert!(unix_now() >= exp);
    assert_eq!(http.get(&url).bearer_auth(&token).send().await.unwrap().status(), 401);
    assert_eq!(auth_expiries(&app, "api").await, "1");
    app.stop().await;
}
