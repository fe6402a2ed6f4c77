//! LiveStore sync-cf on the wire: golden frames over raw sockets and HTTP, bad input, auth, and
//! the event-log guarantees as a client sees them. The real npm clients run in `livestore_interop`.

use junction::eventlog::{AppendBatch, Protocol, SeqNum, StoreKey};
use serde_json::{Value, json};

use crate::helpers::{Kind, TestApp, TestDatabase, WsClient, spawn_app, spawn_app_with, test_config};

crate::on_both_backends!(
    v04_pulls_per_connection_are_bounded,
    v03_ping_pull_push_and_echo_byte_for_byte,
    v03_stale_parent_gets_the_exact_error_and_writes_nothing,
    v03_pages_hold_100_events_and_count_what_remains,
    v03_bad_frames_get_errors_and_the_socket_survives,
    v03_admin_requests_need_the_secret_and_reset_really_empties,
    v04_pull_push_and_live_delivery_byte_for_byte,
    v04_cursor_pull_pages_with_more_known,
    v04_bad_input_gets_unknown_error_and_the_socket_survives,
    v04_ack_for_an_unknown_stream_closes_the_socket,
    v04_interrupt_is_ignored_unless_it_stops_a_live_pull,
    v04_http_transport_and_cors,
    auth_by_static_token_and_jwt,
    shutdown_closes_sockets_with_going_away,
    paths_come_from_config_and_the_protocol_can_be_switched_off,
    a_live_puller_that_stops_reading_is_closed_not_skipped,
    a_live_puller_that_never_reads_again_is_closed_and_counted,
    an_http_response_that_is_never_read_is_cut_off_and_counted,
);

fn key(store: &str) -> StoreKey {
    StoreKey::new(Protocol::LiveStore, store).unwrap()
}

fn v03_url(app: &TestApp, store: &str) -> String {
    format!("ws://{}/websocket?storeId={store}", app.addr)
}

fn v04_url(app: &TestApp, store: &str) -> String {
    format!("ws://{}/?storeId={store}&transport=ws", app.addr)
}

fn event(seq: u64, parent: u64) -> String {
    format!(
        r#"{{"name":"todoCreated","args":{{"id":"t{seq}","text":"todo {seq}"}},"seqNum":{seq},"parentSeqNum":{parent},"clientId":"node-client","sessionId":"s1"}}"#
    )
}

fn push03(request_id: &str, events: &[String]) -> String {
    format!(r#"{{"_tag":"WSMessage.PushReq","requestId":"{request_id}","batch":[{}]}}"#, events.join(","))
}

fn push04(id: &str, store: &str, events: &[String], backend_id: Option<&str>) -> String {
    let backend_id = match backend_id {
        Some(b) => format!(r#"{{"_tag":"Some","value":"{b}"}}"#),
        None => r#"{"_tag":"None"}"#.to_owned(),
    };
    format!(
        r#"{{"_tag":"Request","id":"{id}","tag":"SyncWsRpc.Push","payload":{{"storeId":"{store}","batch":[{}],"backendId":{backend_id}}},"headers":[]}}"#,
        events.join(",")
    )
}

fn pull04(id: &str, store: &str, live: bool, cursor: Option<(&str, u64)>) -> String {
    let cursor = match cursor {
        Some((b, n)) => format!(r#"{{"_tag":"Some","value":{{"backendId":"{b}","eventSequenceNumber":{n}}}}}"#),
        None => r#"{"_tag":"None"}"#.to_owned(),
    };
    format!(
        r#"{{"_tag":"Request","id":"{id}","tag":"SyncWsRpc.Pull","payload":{{"storeId":"{store}","live":{live},"cursor":{cursor}}},"headers":[]}}"#
    )
}

async fn v03_ping_pull_push_and_echo_byte_for_byte(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut client = WsClient::connect(&v03_url(&app, "golden")).await;
    client.send(r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#).await;
    assert_eq!(client.recv().await, r#"{"_tag":"WSMessage.Pong","requestId":"ping"}"#);

    client.send(r#"{"_tag":"WSMessage.PullReq","requestId":"r1"}"#).await;
    assert_eq!(
        client.recv().await,
        r#"{"_tag":"WSMessage.PullRes","batch":[],"requestId":{"context":"pull","requestId":"r1"},"remaining":0}"#
    );

    client.send(&push03("p1", &[event(1, 0)])).await;
    // The ack and the echo of the push, in either order.
    let mut frames = [client.recv_json().await, client.recv_json().await];
    frames.sort_by_key(|f| f["_tag"].as_str().unwrap().to_owned());
    assert_eq!(
        frames[0],
        json!({"_tag": "WSMessage.PullRes", "requestId": {"context": "push", "requestId": "r1"},
        "remaining": 0, "batch": [{"eventEncoded": serde_json::from_str::<Value>(&event(1, 0)).unwrap(),
        "metadata": {"_tag": "Some", "value": {"createdAt": frames[0]["batch"][0]["metadata"]["value"]["createdAt"]}}}]})
    );
    assert_eq!(frames[1], json!({"_tag": "WSMessage.PushAck", "requestId": "p1"}));
    let stored = app.log.read(&key("golden"), SeqNum::ROOT, 10).await.unwrap();
    assert_eq!(stored[0].created_at, frames[0]["batch"][0]["metadata"]["value"]["createdAt"].as_str().unwrap());
    app.stop().await;
}

async fn v03_stale_parent_gets_the_exact_error_and_writes_nothing(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut client = WsClient::connect(&v03_url(&app, "stale")).await;
    client.send(&push03("p1", &[event(1, 0), event(2, 1), event(3, 2)])).await;
    assert_eq!(client.recv_json().await["_tag"], "WSMessage.PushAck");
    client.send(&push03("p2", &[event(2, 1)])).await;
    assert_eq!(
        client.recv().await,
        r#"{"_tag":"WSMessage.Error","requestId":"p2","message":"Invalid parent event number. Received e1 but expected e3"}"#
    );
    // seq 20000 with parent 0 goes into an empty store (the official suite does this).
    let mut other = WsClient::connect(&v03_url(&app, "sparse")).await;
    other.send(&push03("p3", &[event(20000, 0)])).await;
    assert_eq!(other.recv_json().await, json!({"_tag": "WSMessage.PushAck", "requestId": "p3"}));
    assert_eq!(app.log.head(&key("sparse")).await.unwrap(), SeqNum(20000));
    assert_eq!(app.log.head(&key("stale")).await.unwrap(), SeqNum(3));
    app.stop().await;
}

async fn v03_pages_hold_100_events_and_count_what_remains(kind: Kind) {
    let app = spawn_app(kind).await;
    let bodies = (0..250).map(|i| crate::helpers::body("e", &i.to_string())).collect();
    app.log.append(&key("paged"), AppendBatch::AtHead { events: bodies }).await.unwrap();
    let mut client = WsClient::connect(&v03_url(&app, "paged")).await;
    client.send(r#"{"_tag":"WSMessage.PullReq","requestId":"r1","cursor":20}"#).await;
    let mut seqs = Vec::new();
    for remaining in [130, 30, 0] {
        let page = client.recv_json().await;
        assert_eq!(page["remaining"], remaining);
        assert_eq!(page["requestId"], json!({"context": "pull", "requestId": "r1"}));
        seqs.extend(page["batch"].as_array().unwrap().iter().map(|e| e["eventEncoded"]["seqNum"].as_u64().unwrap()));
    }
    assert_eq!(seqs, (21..=250).collect::<Vec<_>>());
    client.silent_for(200).await;
    app.stop().await;
}

async fn v03_bad_frames_get_errors_and_the_socket_survives(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.limits.max_frame_bytes = 4096;
    let app = spawn_app_with(config, db).await;
    let mut client = WsClient::connect(&v03_url(&app, "bad")).await;
    let bad = [
        ("not json".to_owned(), ""),
        (r#"{"_tag":"WSMessage.Nope","requestId":"x1"}"#.to_owned(), "x1"),
        (r#"{"_tag":"WSMessage.PushReq","requestId":"x2","batch":[{"name":"a","seqNum":1.5,"parentSeqNum":0,"clientId":"c","sessionId":"s"}]}"#.to_owned(), "x2"),
        (r#"{"_tag":"WSMessage.PushReq","requestId":"x3","batch":[{"name":"a","seqNum":"1","parentSeqNum":0,"clientId":"c","sessionId":"s"}]}"#.to_owned(), "x3"),
        (push03("x4", &[event(2, 0), event(1, 2)]), "x4"),
        (push03("x5", &[format!(r#"{{"name":"big","args":"{}","seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}}"#, "x".repeat(5000))]), "x5"),
    ];
    for (frame, request_id) in bad {
        client.send(&frame).await;
        let reply = client.recv_json().await;
        assert_eq!(reply["_tag"], "WSMessage.Error", "{frame:.80}");
        assert_eq!(reply["requestId"], request_id, "{frame:.80}");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    client.send(r#"{"_tag":"WSMessage.Ping","requestId":"ping"}"#).await;
    assert_eq!(client.recv_json().await["_tag"], "WSMessage.Pong");
    assert_eq!(app.log.head(&key("bad")).await.unwrap(), SeqNum::ROOT, "nothing was written");
    app.stop().await;
}

async fn v03_admin_requests_need_the_secret_and_reset_really_empties(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.auth.admin_secret = "admin-pw".into();
    let app = spawn_app_with(config, db).await;
    let mut client = WsClient::connect(&v03_url(&app, "admin")).await;
    client.send(&push03("p1", &[event(1, 0), event(2, 1)])).await;
    client.recv_json().await;
    let before = app.log.info(&key("admin")).await.unwrap();

    client.send(r#"{"_tag":"WSMessage.AdminResetRoomReq","requestId":"a1","adminSecret":"wrong"}"#).await;
    assert_eq!(client.recv().await, r#"{"_tag":"WSMessage.Error","requestId":"a1","message":"Invalid admin secret"}"#);
    client.send(r#"{"_tag":"WSMessage.AdminInfoReq","requestId":"a2","adminSecret":"admin-pw"}"#).await;
    assert_eq!(
        client.recv_json().await,
        json!({"_tag": "WSMessage.AdminInfoRes", "requestId": "a2", "info": {"durableObjectId": before.backend_id}})
    );
    client.send(r#"{"_tag":"WSMessage.AdminResetRoomReq","requestId":"a3","adminSecret":"admin-pw"}"#).await;
    assert_eq!(client.recv_json().await, json!({"_tag": "WSMessage.AdminResetRoomRes", "requestId": "a3"}));
    let after = app.log.info(&key("admin")).await.unwrap();
    assert_eq!((after.head, after.event_count), (SeqNum::ROOT, 0));
    assert_ne!(after.backend_id, before.backend_id);
    // The store takes seq 1 again.
    client.send(&push03("p2", &[event(1, 0)])).await;
    assert_eq!(client.recv_json().await["_tag"], "WSMessage.PushAck");
    app.stop().await;
}

async fn v04_pull_push_and_live_delivery_byte_for_byte(kind: Kind) {
    let app = spawn_app(kind).await;
    let backend_id = app.log.info(&key("rpc")).await.unwrap().backend_id;
    let mut client = WsClient::connect(&v04_url(&app, "rpc")).await;
    client.send(r#"{"_tag":"Ping"}"#).await;
    assert_eq!(client.recv().await, r#"{"_tag":"Pong"}"#);

    client.send(&pull04("0", "rpc", false, None)).await;
    assert_eq!(
        client.recv().await,
        format!(
            r#"{{"_tag":"Chunk","requestId":"0","values":[{{"batch":[],"pageInfo":{{"_tag":"NoMore"}},"backendId":"{backend_id}"}}]}}"#
        )
    );
    assert_eq!(client.recv().await, r#"{"_tag":"Exit","requestId":"0","exit":{"_tag":"Success"}}"#);
    client.send(r#"{"_tag":"Ack","requestId":"0"}"#).await;

    client.send(&pull04("1", "rpc", true, None)).await;
    let first = client.recv_json().await;
    assert_eq!(first["values"][0]["pageInfo"], json!({"_tag": "NoMore"}));

    // A push through another connection, and one through the event log itself.
    let mut pusher = WsClient::connect(&v04_url(&app, "rpc")).await;
    pusher.send(&push04("0", "rpc", &[event(1, 0), event(2, 1)], Some(&backend_id))).await;
    assert_eq!(pusher.recv().await, r#"{"_tag":"Exit","requestId":"0","exit":{"_tag":"Success","value":{}}}"#);
    let live = client.recv_json().await;
    assert_eq!(live["requestId"], "1");
    let page = &live["values"][0];
    assert_eq!(page["pageInfo"], json!({"_tag": "NoMore"}));
    assert_eq!(page["backendId"], backend_id.as_str());
    assert_eq!(page["batch"][1]["eventEncoded"], serde_json::from_str::<Value>(&event(2, 1)).unwrap());
    assert_eq!(page["batch"][0]["metadata"]["value"]["_tag"], "SyncMessage.SyncMetadata");
    app.log
        .append(&key("rpc"), AppendBatch::AtHead { events: vec![crate::helpers::body("fromApi", "null")] })
        .await
        .unwrap();
    let from_api = client.recv_json().await;
    assert_eq!(from_api["values"][0]["batch"][0]["eventEncoded"]["seqNum"], 3);
    assert_eq!(from_api["values"][0]["batch"][0]["eventEncoded"]["parentSeqNum"], 2);
    // A live pull never gets an Exit.
    client.silent_for(200).await;

    pusher.send(&push04("1", "rpc", &[event(3, 1)], None)).await;
    assert_eq!(
        pusher.recv().await,
        r#"{"_tag":"Exit","requestId":"1","exit":{"_tag":"Failure","cause":{"_tag":"Fail","error":{"_tag":"ServerAheadError","minimumExpectedNum":3,"providedNum":1}}}}"#
    );
    pusher.send(&push04("2", "rpc", &[event(4, 3)], Some("another-backend"))).await;
    assert_eq!(
        pusher.recv_json().await["exit"]["cause"]["error"],
        json!({"_tag": "BackendIdMismatchError", "expected": backend_id, "received": "another-backend"})
    );
    app.stop().await;
}

async fn v04_cursor_pull_pages_with_more_known(kind: Kind) {
    let app = spawn_app(kind).await;
    let bodies = (0..250).map(|i| crate::helpers::body("e", &i.to_string())).collect();
    app.log.append(&key("pages"), AppendBatch::AtHead { events: bodies }).await.unwrap();
    let backend_id = app.log.info(&key("pages")).await.unwrap().backend_id;
    let mut client = WsClient::connect(&v04_url(&app, "pages")).await;
    client.send(&pull04("7", "pages", false, Some((&backend_id, 100)))).await;
    let mut seqs = Vec::new();
    for page_info in [json!({"_tag": "MoreKnown", "remaining": 50}), json!({"_tag": "NoMore"})] {
        let chunk = client.recv_json().await;
        assert_eq!(chunk["values"][0]["pageInfo"], page_info);
        let batch = chunk["values"][0]["batch"].as_array().unwrap();
        seqs.extend(batch.iter().map(|e| e["eventEncoded"]["seqNum"].as_u64().unwrap()));
    }
    assert_eq!(seqs, (101..=250).collect::<Vec<_>>());
    assert_eq!(client.recv_json().await["_tag"], "Exit");

    client.send(&pull04("8", "pages", false, Some(("stale-backend", 3)))).await;
    assert_eq!(
        client.recv_json().await["exit"]["cause"]["error"],
        json!({"_tag": "BackendIdMismatchError", "expected": backend_id, "received": "stale-backend"})
    );
    app.stop().await;
}

async fn v04_bad_input_gets_unknown_error_and_the_socket_survives(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.limits.max_frame_bytes = 4096;
    let app = spawn_app_with(config, db).await;
    let mut client = WsClient::connect(&v04_url(&app, "bad")).await;
    let bad = [
        r#"{"_tag":"Request","id":"1","tag":"SyncWsRpc.Nope","payload":{}}"#.to_owned(),
        r#"{"_tag":"Request","id":"2","tag":"SyncWsRpc.Push","payload":{"storeId":"bad","batch":[{"name":"a","seqNum":1.5,"parentSeqNum":0,"clientId":"c","sessionId":"s"}],"backendId":{"_tag":"None"}}}"#.to_owned(),
        r#"{"_tag":"Request","id":"3","tag":"SyncHttpRpc.Ping","payload":{"storeId":"bad"}}"#.to_owned(),
        push04("4", "another-store", &[event(1, 0)], None),
        push04("5", "bad", &[format!(r#"{{"name":"big","args":"{}","seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}}"#, "x".repeat(5000))], None),
    ];
    for (i, frame) in bad.iter().enumerate() {
        client.send(frame).await;
        let reply = client.recv_json().await;
        assert_eq!(reply["_tag"], "Exit", "{frame:.80}");
        assert_eq!(reply["requestId"], (i + 1).to_string());
        assert_eq!(reply["exit"]["cause"]["_tag"], "Fail", "never a Defect or Die");
        assert_eq!(reply["exit"]["cause"]["error"]["_tag"], "UnknownError", "{frame:.80}");
    }
    client.send("garbage").await;
    client.send(r#"{"_tag":"Ping"}"#).await;
    assert_eq!(client.recv().await, r#"{"_tag":"Pong"}"#, "garbage without an id is dropped, the socket lives");
    assert_eq!(app.log.head(&key("bad")).await.unwrap(), SeqNum::ROOT);
    assert_eq!(app.log.head(&key("another-store")).await.unwrap(), SeqNum::ROOT);
    app.stop().await;
}

/// The #1365 mitigation: a client whose first frame acks a stream this socket never had is out of
/// step (a stale Ack after a reconnect), and only a fresh socket gets it going again.
async fn v04_ack_for_an_unknown_stream_closes_the_socket(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut client = WsClient::connect(&v04_url(&app, "stale-ack")).await;
    client.send(r#"{"_tag":"Ack","requestId":"0"}"#).await;
    assert_eq!(client.closed().await, Some(1002));
    app.stop().await;
}

/// What a real 0.4 app does on every rebase: it interrupts its push, often after the push's Exit
/// went out. An Interrupt for a finished request, or for an id the socket never saw, changes
/// nothing; one for a live pull ends that pull's deliveries.
async fn v04_interrupt_is_ignored_unless_it_stops_a_live_pull(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = "interrupts";
    let mut client = WsClient::connect(&v04_url(&app, store)).await;
    client.send(&push04("1", store, &[event(1, 0)], None)).await;
    assert_eq!(client.recv().await, r#"{"_tag":"Exit","requestId":"1","exit":{"_tag":"Success","value":{}}}"#);
    client.send(r#"{"_tag":"Interrupt","requestId":"1"}"#).await;
    assert_still_open(&mut client).await;

    // A push refused with ServerAheadError: the conflict that makes the app rebase.
    client.send(&push04("2", store, &[event(1, 0)], None)).await;
    assert_eq!(client.recv_json().await["exit"]["cause"]["error"]["_tag"], "ServerAheadError");
    client.send(r#"{"_tag":"Interrupt","requestId":"2","interruptors":[]}"#).await;
    assert_still_open(&mut client).await;

    // A finished non-live pull, and ids this socket never saw.
    client.send(&pull04("3", store, false, None)).await;
    assert_eq!(client.recv_json().await["_tag"], "Chunk");
    assert_eq!(client.recv_json().await["_tag"], "Exit");
    for id in ["3", "9", "not-a-number"] {
        client.send(&format!(r#"{{"_tag":"Interrupt","requestId":"{id}"}}"#)).await;
    }
    assert_still_open(&mut client).await;

    // The socket keeps working: pushes are accepted, a live pull delivers them...
    client.send(&pull04("4", store, true, None)).await;
    let first = client.recv_json().await;
    assert_eq!(first["values"][0]["batch"].as_array().unwrap().len(), 1);
    client.send(&push04("5", store, &[event(2, 1)], None)).await;
    let mut got = [client.recv_json().await, client.recv_json().await];
    got.sort_by_key(|frame| frame["_tag"].as_str().unwrap().to_owned());
    assert_eq!(got[0]["_tag"], "Chunk");
    assert_eq!(got[0]["requestId"], "4");
    assert_eq!(got[0]["values"][0]["batch"][0]["eventEncoded"]["seqNum"], 2);
    assert_eq!(got[1], json!({"_tag": "Exit", "requestId": "5", "exit": {"_tag": "Success", "value": {}}}));

    // ...until it is interrupted: then nothing more reaches it, and the socket stays.
    client.send(r#"{"_tag":"Interrupt","requestId":"4"}"#).await;
    assert_still_open(&mut client).await;
    app.log.append(&key(store), AppendBatch::AtHead { events: vec![crate::helpers::body("e", "3")] }).await.unwrap();
    client.silent_for(300).await;
    assert_still_open(&mut client).await;
    assert_eq!(app.log.head(&key(store)).await.unwrap(), SeqNum(3));
    app.stop().await;
}

/// Frames are handled in order: a Pong means every frame sent before the Ping left it open.
async fn assert_still_open(client: &mut WsClient) {
    client.send(r#"{"_tag":"Ping"}"#).await;
    assert_eq!(client.recv().await, r#"{"_tag":"Pong"}"#, "the socket is still open");
}

async fn v04_http_transport_and_cors(kind: Kind) {
    let app = spawn_app(kind).await;
    let url = format!("http://{}/?storeId=web&transport=http", app.addr);
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,x-livestore-store-id")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert_eq!(preflight.headers()["access-control-allow-headers"], "content-type,x-livestore-store-id");

    let post = async |body: String| -> (reqwest::header::HeaderMap, String) {
        let response = http.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        (response.headers().clone(), response.text().await.unwrap())
    };
    let (headers, ping) =
        post(r#"{"_tag":"Request","id":"0","tag":"SyncHttpRpc.Ping","payload":{"storeId":"web"}}"#.into()).await;
    assert_eq!(
        ping,
        r#"[{"_tag":"Exit","requestId":"0","exit":{"_tag":"Success","value":{"_tag":"SyncMessage.Pong"}}}]"#
    );
    assert_eq!(headers["access-control-allow-origin"], "*");
    let push = push04("1", "web", &[event(1, 0)], None).replace("SyncWsRpc.Push", "SyncHttpRpc.Push");
    assert_eq!(post(push).await.1, r#"[{"_tag":"Exit","requestId":"1","exit":{"_tag":"Success","value":{}}}]"#);
    let pull =
        r#"{"_tag":"Request","id":"2","tag":"SyncHttpRpc.Pull","payload":{"storeId":"web","cursor":{"_tag":"None"}}}"#;
    let messages: Vec<Value> = serde_json::from_str(&post(pull.into()).await.1).unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["values"][0]["batch"][0]["eventEncoded"]["seqNum"], 1);
    assert_eq!(messages[1], json!({"_tag": "Exit", "requestId": "2", "exit": {"_tag": "Success"}}));
    // A WebSocket RPC over HTTP is an unknown RPC there.
    let wrong = post(pull04("3", "web", false, None)).await.1;
    assert!(wrong.contains("UnknownError"), "{wrong}");
    // Effect's HTTP client never posts stream control, but one that arrives is harmless: there is
    // no stream to stop over HTTP.
    assert_eq!(post(r#"{"_tag":"Interrupt","requestId":"1"}"#.into()).await.1, "[]");
    app.stop().await;
}

async fn auth_by_static_token_and_jwt(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.protocols.livestore.allow_anonymous = false;
    config.protocols.livestore.tokens = vec!["static-1".into()];
    config.auth.jwt_secret = "jwt-secret".into();
    let app = spawn_app_with(config, db).await;
    let payload = |token: &str| {
        let json = format!(r#"{{"authToken":"{token}"}}"#);
        // Double encoding, as the client does.
        let once: String = percent_encode(&json);
        percent_encode(&once)
    };
    let jwt = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"jwt-secret"),
        )
        .unwrap()
    };
    let base = format!("ws://{}/websocket", app.addr);
    assert_eq!(WsClient::upgrade_status(&format!("{base}?storeId=s1")).await, 400);
    assert_eq!(WsClient::upgrade_status(&format!("{base}?storeId=s1&payload={}", payload("wrong"))).await, 400);
    assert_eq!(WsClient::upgrade_status(&format!("{base}?storeId=s1&payload={}", payload("static-1"))).await, 101);
    let reader = jwt(json!({"userId": "u", "permissions": {"canRead": ["s*"]}}));
    assert_eq!(WsClient::upgrade_status(&format!("{base}?storeId=x1&payload={}", payload(&reader))).await, 400);
    let rpc = format!("ws://{}/?storeId=s1&transport=ws&payload={}", app.addr, payload(&reader));
    let mut client = WsClient::connect(&rpc).await;
    client.send(&push04("0", "s1", &[event(1, 0)], None)).await;
    let refused = client.recv_json().await;
    assert_eq!(refused["exit"]["cause"]["error"]["_tag"], "UnknownError", "a read-only token cannot push");
    let writer = jwt(json!({"permissions": {"canRead": ["s1"], "canWrite": ["s1"]}}));
    let mut client = WsClient::connect(&format!("{base}?storeId=s1&payload={}", payload(&writer))).await;
    client.send(&push03("p1", &[event(1, 0)])).await;
    assert_eq!(client.recv_json().await["_tag"], "WSMessage.PushAck");
    // HTTP transport refuses the same way.
    let refused = reqwest::Client::new()
        .post(format!("http://{}/?storeId=s1&transport=http", app.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    app.stop().await;
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn backend_id_survives_a_restart(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut client = WsClient::connect(&v04_url(&app, "durable")).await;
    client.send(&pull04("0", "durable", false, None)).await;
    let before = client.recv_json().await["values"][0]["backendId"].as_str().unwrap().to_owned();
    client.send(&push04("1", "durable", &[event(1, 0)], Some(&before))).await;
    client.recv_json().await;
    client.recv_json().await;
    drop(client);
    let app = app.restart().await;
    let mut client = WsClient::connect(&v04_url(&app, "durable")).await;
    client.send(&pull04("0", "durable", false, Some((&before, 0)))).await;
    let page = client.recv_json().await;
    assert_eq!(page["values"][0]["backendId"], before.as_str());
    assert_eq!(page["values"][0]["batch"][0]["eventEncoded"]["seqNum"], 1);
    app.stop().await;
}

crate::on_both_backends!(backend_id_survives_a_restart);

async fn shutdown_closes_sockets_with_going_away(kind: Kind) {
    let app = spawn_app(kind).await;
    let mut v03 = WsClient::connect(&v03_url(&app, "bye")).await;
    let mut v04 = WsClient::connect(&v04_url(&app, "bye")).await;
    v04.send(&pull04("0", "bye", true, None)).await;
    v04.recv_json().await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(v03.closed().await, Some(1001));
    assert_eq!(v04.closed().await, Some(1001));
    stopping.await.unwrap();
}

async fn paths_come_from_config_and_the_protocol_can_be_switched_off(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.protocols.livestore.path = "/ls/websocket".into();
    config.protocols.livestore.rpc_path = "/ls".into();
    let app = spawn_app_with(config, db).await;
    assert_eq!(WsClient::upgrade_status(&format!("ws://{}/ls/websocket?storeId=a", app.addr)).await, 101);
    assert_eq!(WsClient::upgrade_status(&format!("ws://{}/ls?storeId=a&transport=ws", app.addr)).await, 101);
    assert_eq!(WsClient::upgrade_status(&format!("ws://{}/websocket?storeId=a", app.addr)).await, 404);
    // `/` is only the index now, whatever the query says.
    let index = reqwest::get(format!("http://{}/?storeId=a&transport=http", app.addr)).await.unwrap();
    assert_eq!(index.json::<Value>().await.unwrap()["name"], "junction");
    let (config, db) = app.stop().await;

    let mut config = config;
    config.protocols.livestore.enabled = false;
    let app = spawn_app_with(config, db).await;
    assert_eq!(WsClient::upgrade_status(&format!("ws://{}/ls/websocket?storeId=a", app.addr)).await, 404);
    assert_eq!(WsClient::upgrade_status(&format!("ws://{}/ls?storeId=a&transport=ws", app.addr)).await, 404);
    app.stop().await;
}

/// A live puller that stops reading is closed with 1013 and a reason, never skipped: what it got
/// before the close has no gap. Both socket transports (0.3 `PullReq`, 0.4 live `SyncWsRpc.Pull`).
async fn a_live_puller_that_stops_reading_is_closed_not_skipped(kind: Kind) {
    use futures_util::{SinkExt, StreamExt};
    use junction::eventlog::{AppendBatch, EventBody};
    use tokio_tungstenite::tungstenite::Message;

    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.limits.subscriber_queue = 2;
    let app = spawn_app_with(config, db).await;
    for (store, url, pull) in [
        ("slow03", v03_url(&app, "slow03"), r#"{"_tag":"WSMessage.PullReq","requestId":"r1"}"#.to_owned()),
        ("slow04", v04_url(&app, "slow04"), pull04("1", "slow04", true, None)),
    ] {
        let (mut follower, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        follower.send(Message::text(pull)).await.unwrap();
        follower.next().await.unwrap().unwrap(); // the (empty) first page: the pull is live
        // Now it reads nothing while ~12 MB are appended.
        let padding = format!(r#"{{"pad":"{}"}}"#, "x".repeat(10_000));
        const EVENTS: usize = 1200;
        for _ in 0..EVENTS {
            let body = EventBody {
                name: "padded".into(),
                args: serde_json::value::RawValue::from_string(padding.clone()).unwrap(),
                client_id: "writer".into(),
                session_id: "w".into(),
            };
            app.log.append(&key(store), AppendBatch::AtHead { events: vec![body] }).await.unwrap();
        }
        let mut seqs = Vec::new();
        let close = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), follower.next())
                .await
                .expect("a frame within 10 s")
            {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    // 0.3: PullRes.batch[]; 0.4: Chunk.values[].batch[].
                    let batches: Vec<&Value> = match frame["values"].as_array() {
                        Some(values) => values.iter().flat_map(|v| v["batch"].as_array().unwrap()).collect(),
                        None => frame["batch"].as_array().unwrap().iter().collect(),
                    };
                    seqs.extend(batches.iter().map(|b| b["eventEncoded"]["seqNum"].as_u64().unwrap()));
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                other => panic!("{store}: unexpected {other:?}"),
            }
        };
        assert_eq!(close, Some((1013, "too slow: reconnect and pull again".to_owned())), "{store}");
        assert!(seqs.len() < EVENTS, "{store}: closed before everything reached it");
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{store}: no gap");
    }
    app.stop().await;
}

/// A live puller that stops reading and never reads again, its connection left open, is closed
/// once its socket has taken no bytes for `limits.write_stall_timeout_secs`, and counted. Both
/// socket transports, each on its own server so that each count is its own.
async fn a_live_puller_that_never_reads_again_is_closed_and_counted(kind: Kind) {
    use crate::helpers::{large_body, small_window_socket, stall_limits, wait_for_one_stalled_close};

    for transport in ["0.3", "0.4"] {
        let db = TestDatabase::new(kind).await;
        let mut config = test_config(&db);
        stall_limits(&mut config);
        let app = spawn_app_with(config, db).await;
        let (url, pull) = match transport {
            "0.3" => (v03_url(&app, "stalled"), r#"{"_tag":"WSMessage.PullReq","requestId":"r1"}"#.to_owned()),
            _ => (v04_url(&app, "stalled"), pull04("1", "stalled", true, None)),
        };
        let mut puller = small_window_socket(&url).await;
        {
            use futures_util::{SinkExt, StreamExt};
            puller.send(tokio_tungstenite::tungstenite::Message::text(pull)).await.unwrap();
            puller.next().await.unwrap().unwrap(); // the (empty) first page: the pull is live
        }
        // From here on it reads nothing, while 10 MB are appended.
        for _ in 0..40 {
            let batch = AppendBatch::AtHead { events: vec![large_body(256 * 1024)] };
            app.log.append(&key("stalled"), batch).await.unwrap();
        }
        wait_for_one_stalled_close(&app, "livestore", 0).await;
        app.stop().await;
        drop(puller);
    }
}

/// Plain HTTP too: a client that asks for a large response (a 0.4 HTTP pull of 10 MB) and never
/// reads it is cut off once its socket has taken no bytes for the stall timeout, and counted.
async fn an_http_response_that_is_never_read_is_cut_off_and_counted(kind: Kind) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    crate::helpers::stall_limits(&mut config);
    let app = spawn_app_with(config, db).await;
    for _ in 0..40 {
        let batch = AppendBatch::AtHead { events: vec![crate::helpers::large_body(256 * 1024)] };
        app.log.append(&key("big"), batch).await.unwrap();
    }
    let pull =
        r#"{"_tag":"Request","id":"1","tag":"SyncHttpRpc.Pull","payload":{"storeId":"big","cursor":{"_tag":"None"}}}"#;
    let request = format!(
        "POST /?storeId=big&transport=http HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{pull}",
        app.addr,
        pull.len()
    );
    let mut client = crate::helpers::small_window_tcp(app.addr).await;
    client.write_all(request.as_bytes()).await.unwrap();
    // It reads nothing of the answer.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        if crate::helpers::metric(&text, r#"junction_slow_consumer_disconnects_total{reason="stalled"}"#) == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the stalled response is still being sent after 60 s:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The server has let go of the connection: reading now finds what was in flight, then the end.
    let (mut received, mut buffer) = (0, vec![0; 64 * 1024]);
    while let Ok(read) =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut buffer)).await.expect("the end")
        && read > 0
    {
        received += read;
    }
    assert!(received < 10 * 1024 * 1024, "cut off before the whole answer ({received} bytes)");
    app.stop().await;
}

/// A 0.4 socket runs at most `limits.max_pulls_per_connection` pulls at once: the next gets an
/// error, finished and interrupted pulls make room, and the socket stays usable.
async fn v04_pulls_per_connection_are_bounded(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.limits.max_pulls_per_connection = 2;
    let app = spawn_app_with(config, db).await;
    let store = "bounded-pulls";
    let mut client = WsClient::connect(&v04_url(&app, store)).await;
    // A finished (non-live) pull holds nothing.
    client.send(&pull04("0", store, false, None)).await;
    assert_eq!(client.recv_json().await["_tag"], "Chunk");
    assert_eq!(client.recv_json().await["_tag"], "Exit");
    for id in ["1", "2"] {
        client.send(&pull04(id, store, true, None)).await;
        let first = client.recv_json().await;
        assert_eq!((first["_tag"].as_str(), first["requestId"].as_str()), (Some("Chunk"), Some(id)));
    }
    client.send(&pull04("3", store, true, None)).await;
    let refused = client.recv_json().await;
    assert_eq!((refused["_tag"].as_str(), refused["requestId"].as_str()), (Some("Exit"), Some("3")), "{refused}");
    assert_eq!(refused["exit"]["_tag"], "Failure", "{refused}");
    assert!(refused.to_string().contains("too many pulls"), "{refused}");
    client.send(r#"{"_tag":"Interrupt","requestId":"1"}"#).await;
    client.send(&pull04("4", store, true, None)).await;
    let first = client.recv_json().await;
    assert_eq!((first["_tag"].as_str(), first["requestId"].as_str()), (Some("Chunk"), Some("4")), "{first}");
    app.stop().await;
}
