//! The event API on a real server: auth, stores, events, the change log, reset, and live events
//! over Server-Sent Events.

use std::time::Duration;

use junction::eventlog::{Protocol, SeqNum, StoreKey};
use serde_json::{Value, json};

use crate::helpers::{Kind, TestApp, TestDatabase, at_head, checked, spawn_app_with, test_config};

const ADMIN: &str = "admin-secret";

async fn spawn_api_app(kind: Kind) -> TestApp {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.auth.admin_secret = ADMIN.into();
    config.auth.jwt_secret = "jwt-secret".into();
    spawn_app_with(config, db).await
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(app.url(path)).bearer_auth(ADMIN).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"jwt-secret"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_needs_credentials_and_client_tokens_read_only_their_stores() {
    let app = spawn_api_app(Kind::Sqlite).await;
    let http = reqwest::Client::new();
    for path in ["/v1/stores", "/v1/changes", "/v1/stores/livestore:a/events", "/v1/stores/livestore:a/events/live"] {
        let none = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{path}");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        assert_eq!(none.json::<Value>().await.unwrap(), json!({"error": "missing or invalid credentials"}));
        let wrong = http.get(app.url(path)).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401, "{path}");
    }
    // A client token: exactly the stores its canRead grants, and no change log, no reset.
    for name in ["team-a-notes", "team-a-todos", "team-b-notes"] {
        app.log.append(&StoreKey::new(Protocol::LiveStore, name).unwrap(), at_head(1)).await.unwrap();
    }
    let user = jwt(json!({"sub": "u1", "permissions": {"canRead": ["team-a-*"], "canWrite": ["*"]}}));
    let as_user = |path: &str| http.get(app.url(path)).bearer_auth(&user).send();
    let listed: Value = as_user("/v1/stores").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = listed["stores"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["team-a-notes", "team-a-todos"]);
    assert_eq!(as_user("/v1/stores/livestore:team-a-notes/events").await.unwrap().status(), 200);
    let live = as_user("/v1/stores/livestore:team-a-todos/events/live").await.unwrap();
    assert_eq!(live.status(), 200);
    // nginx passes each event on as it comes without being told to in its own configuration.
    assert_eq!(live.headers()["x-accel-buffering"], "no");
    drop(live);
    for path in
        ["/v1/stores/livestore:team-b-notes/events", "/v1/stores/livestore:team-b-notes/events/live", "/v1/changes"]
    {
        assert_eq!(as_user(path).await.unwrap().status(), 403, "{path}");
    }
    let reset = http.post(app.url("/v1/stores/livestore:team-a-notes/reset")).bearer_auth(&user).send().await.unwrap();
    assert_eq!(reset.status(), 403, "reset is for operators");
    let admin = jwt(json!({"userId": "ops", "permissions": {"isAdmin": true}}));
    assert_eq!(http.get(app.url("/v1/stores")).bearer_auth(admin).send().await.unwrap().status(), 200);
    let reset = http.post(app.url("/v1/stores/livestore:a/reset")).send().await.unwrap();
    assert_eq!(reset.status(), 401);
    app.stop().await;
}

async fn stores_events_changes_and_reset(kind: Kind) {
    let app = spawn_api_app(kind).await;
    let todos = StoreKey::new(Protocol::LiveStore, "todos").unwrap();
    let notes = StoreKey::new(Protocol::Pocket, "notes/with slash").unwrap();
    app.log.append(&todos, checked(0, &[1, 2, 3])).await.unwrap();
    app.log.append(&notes, at_head(2)).await.unwrap();
    app.log.append(&todos, checked(3, &[4])).await.unwrap();

    let (status, body) = get(&app, "/v1/stores?limit=1").await;
    assert_eq!(status, 200);
    let first = &body["stores"][0];
    assert_eq!((first["protocol"].as_str(), first["name"].as_str()), (Some("livestore"), Some("todos")));
    assert_eq!((first["head"].as_u64(), first["event_count"].as_u64()), (Some(4), Some(4)));
    let (_, next) = get(&app, &format!("/v1/stores?after={}", body["next_after"])).await;
    assert_eq!(next["stores"].as_array().unwrap().len(), 1);
    assert_eq!(next["stores"][0]["name"], "notes/with slash");
    assert!(next["next_after"].is_null(), "the last page has no next_after: {next}");

    let (status, events) = get(&app, "/v1/stores/livestore:todos/events?after=1&limit=2").await;
    assert_eq!(status, 200);
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(events[0]["args"], json!({"id": 1}));
    assert_eq!(events[0]["name"], "todoCreated-v1");
    let (status, _) = get(&app, "/v1/stores/pocket:notes%2Fwith%20slash/events").await;
    assert_eq!(status, 200, "names are URL-decoded");

    let (_, changes) = get(&app, "/v1/changes").await;
    let changes = changes["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0]["store"], json!({"protocol": "livestore", "name": "todos"}));
    assert_eq!((changes[0]["first_seq"].as_u64(), changes[0]["last_seq"].as_u64()), (Some(1), Some(3)));
    assert_eq!(changes[1]["store"]["protocol"], "pocket");
    assert_eq!(changes[1]["event_count"], 2);
    let positions: Vec<u64> = changes.iter().map(|c| c["position"].as_u64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let (_, tail) = get(&app, &format!("/v1/changes?after={}", positions[1])).await;
    assert_eq!(tail["changes"].as_array().unwrap().len(), 1);

    for (path, status) in [
        ("/v1/stores/livestore:missing/events", 404),
        ("/v1/stores/nocolon/events", 400),
        ("/v1/stores/mqtt:x/events", 400),
        ("/v1/stores?limit=0", 400),
    ] {
        assert_eq!(get(&app, path).await.0, status, "{path}");
    }

    let before = app.log.info(&todos).await.unwrap();
    let reset = reqwest::Client::new()
        .post(app.url("/v1/stores/livestore:todos/reset"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    let reset: Value = reset.json().await.unwrap();
    assert_eq!((reset["head"].as_u64(), reset["event_count"].as_u64()), (Some(0), Some(0)));
    assert_ne!(reset["backend_id"], before.backend_id.as_str());
    assert!(app.log.read(&todos, SeqNum::ROOT, 10).await.unwrap().is_empty());
    app.stop().await;
}

async fn live_events_catch_up_then_follow_without_gap_or_duplicate(kind: Kind) {
    let app = spawn_api_app(kind).await;
    let store = StoreKey::new(Protocol::SyncKit, "doc-1").unwrap();
    for _ in 0..10 {
        app.log.append(&store, at_head(3)).await.unwrap();
    }
    let response = reqwest::Client::new()
        .get(app.url("/v1/stores/synckit:doc-1/events/live?after=4"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let writer = {
        let log = app.log.clone();
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                log.append(&store, at_head(2)).await.unwrap();
            }
        })
    };
    let seqs = read_sse_ids(response, 130).await;
    writer.await.unwrap();
    assert_eq!(seqs, (5..=130).collect::<Vec<_>>());

    // Resuming with Last-Event-ID continues right after it.
    let resumed = reqwest::Client::new()
        .get(app.url("/v1/stores/synckit:doc-1/events/live"))
        .bearer_auth(ADMIN)
        .header("Last-Event-ID", "128")
        .send()
        .await
        .unwrap();
    assert_eq!(read_sse_ids(resumed, 130).await, [129, 130]);

    // A store nobody wrote yet: the stream waits for it (registering nothing), then follows it.
    let later = StoreKey::new(Protocol::SyncKit, "doc-later").unwrap();
    let waiting = reqwest::Client::new()
        .get(app.url("/v1/stores/synckit:doc-later/events/live"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(waiting.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.log.find_info(&later).await.unwrap().is_none(), "reading registered the store");
    app.log.append(&later, at_head(2)).await.unwrap();
    assert_eq!(read_sse_ids(waiting, 2).await, [1, 2]);
    app.stop().await;
}

/// Keys in the client's order (not sorted), insignificant whitespace, a number as written, escapes.
const ARGS_AS_WRITTEN: &str = "{\"z\":1, \"a\" : {\"y\":[1.50,\"\\u00e9\"],\"b\":null},\n \"m\":true}";

/// What a client wrote is what every reader of the event API sees, byte for byte: the events
/// page, the live stream, and an export.
async fn event_args_are_served_as_written(kind: Kind) {
    let app = spawn_api_app(kind).await;
    let store = StoreKey::new(Protocol::LiveStore, "as-written").unwrap();
    let written = junction::eventlog::AppendBatch::AtHead { events: vec![crate::helpers::body("e", ARGS_AS_WRITTEN)] };
    app.log.append(&store, written).await.unwrap();
    let expected = format!(r#""args":{ARGS_AS_WRITTEN},"#);

    let page = reqwest::Client::new()
        .get(app.url("/v1/stores/livestore:as-written/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "application/json");
    let page = page.text().await.unwrap();
    assert!(page.contains(&expected), "{page}");

    let live = reqwest::Client::new()
        .get(app.url("/v1/stores/livestore:as-written/events/live"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let data = read_sse_data(live).await;
    assert!(data.contains(&expected), "{data}");

    let mut export = Vec::new();
    junction::backup::export(&app.log, std::slice::from_ref(&store), &mut export).await.unwrap();
    let export = String::from_utf8(export).unwrap();
    assert!(export.contains(&expected), "{export}");
    app.stop().await;
}

crate::on_both_backends!(
    stores_events_changes_and_reset,
    live_events_catch_up_then_follow_without_gap_or_duplicate,
    event_args_are_served_as_written
);

/// The data of the first event of an SSE response, its `data:` lines joined as EventSource does.
async fn read_sse_data(mut response: reqwest::Response) -> String {
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.expect("an event").unwrap();
        text.push_str(std::str::from_utf8(&chunk.expect("the stream goes on")).unwrap());
        if let Some(end) = text.find("\n\n") {
            let lines = text[..end].lines().filter_map(|l| l.strip_prefix("data:"));
            return lines.map(|l| l.strip_prefix(' ').unwrap_or(l)).collect::<Vec<_>>().join("\n");
        }
    }
}

/// A live event stream whose client stops reading and never reads again, its connection left
/// open, is closed once its socket has taken no bytes for `limits.write_stall_timeout_secs`, and
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_that_is_never_read_again_is_closed_and_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.auth.admin_secret = ADMIN.into();
    crate::helpers::stall_limits(&mut config);
    let app = spawn_app_with(config, db).await;
    let store = StoreKey::new(Protocol::LiveStore, "stalled").unwrap();
    app.log.append(&store, at_head(1)).await.unwrap();
    let mut stream = crate::helpers::small_window_tcp(app.addr).await;
    let request = format!(
        "GET /v1/stores/livestore:stalled/events/live HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\n\r\n",
        app.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("event: event") {
        let mut chunk = [0; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(read > 0, "the stream ended: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..read]);
    }
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    // The first event came: the stream is live. From here on it reads nothing, while 10 MB are
    // appended.
    for _ in 0..40 {
        let batch = junction::eventlog::AppendBatch::AtHead { events: vec![crate::helpers::large_body(256 * 1024)] };
        app.log.append(&store, batch).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        if crate::helpers::metric(&text, r#"junction_slow_consumer_disconnects_total{reason="stalled"}"#) == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the stalled stream is still open after 60 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server has let go of the connection: reading again finds what was in flight, then the end.
    let mut rest = vec![0; 64 * 1024];
    while let Ok(read) = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut rest)).await.expect("the end")
        && read > 0
    {}
    app.stop().await;
}

/// Reads `id:` lines of an SSE response until `last` arrives (10 s at most).
async fn read_sse_ids(mut response: reqwest::Response, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut text = String::new();
    while seqs.last() != Some(&last) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await.expect("an event").unwrap();
        text.push_str(std::str::from_utf8(&chunk.expect("the stream goes on")).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:"))) {
                seqs.push(id.trim().parse().unwrap());
            }
        }
    }
    seqs
}

/// The committed `src/api/openapi.json` is what the server serves (regenerate it with
/// `UPDATE_OPENAPI=1 cargo test openapi`), and its paths are exactly the API's routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_committed_and_matches_the_routes() {
    let app = spawn_api_app(Kind::Sqlite).await;
    let served: Value = reqwest::get(app.url("/v1/openapi.json")).await.unwrap().json().await.unwrap();
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, serde_json::to_string_pretty(&served).unwrap() + "\n").unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(committed_path).unwrap()).unwrap();
    assert_eq!(served, committed, "src/api/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test openapi");

    let documented: Vec<(String, String)> = served["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, methods)| methods.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    let mut expected: Vec<(String, String)> =
        junction::api::openapi::PATHS.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    expected.sort();
    assert_eq!(documented_sorted, expected);
    // Each documented operation is routed: without credentials it is refused (401), not missing (404).
    let http = reqwest::Client::new();
    for (method, path) in documented {
        let url = app.url(&path.replace("{store}", "livestore:x"));
        let request = if method == "post" { http.post(url) } else { http.get(url) };
        assert_eq!(request.send().await.unwrap().status(), 401, "{method} {path}");
    }
    app.stop().await;
}

/// With no admin secret and no JWT key, nothing can get in: the reply (and the log) say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_credentials_configured_the_reply_says_so() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let app = spawn_app_with(test_config(&db), db).await;
    let response = reqwest::Client::new().get(app.url("/v1/stores")).bearer_auth("anything").send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("auth.admin_secret"), "{body}");
    app.stop().await;
}

/// The change log live, for admins: what is there, then each batch as it commits, by position;
/// Last-Event-ID resumes. Not for client tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_live_for_admins() {
    let app = spawn_api_app(Kind::Sqlite).await;
    let (a, b) = (StoreKey::new(Protocol::LiveStore, "a").unwrap(), StoreKey::new(Protocol::Pocket, "b").unwrap());
    app.log.append(&a, at_head(1)).await.unwrap();
    let http = reqwest::Client::new();
    let live = http.get(app.url("/v1/changes/live")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    for key in [&b, &a, &b] {
        app.log.append(key, at_head(2)).await.unwrap();
    }
    assert_eq!(read_sse_ids(live, 4).await, [1, 2, 3, 4]);
    let resumed =
        http.get(app.url("/v1/changes/live")).bearer_auth(ADMIN).header("Last-Event-ID", "2").send().await.unwrap();
    assert_eq!(read_sse_ids(resumed, 4).await, [3, 4]);
    let user = jwt(json!({"permissions": {"canRead": ["*"]}}));
    assert_eq!(http.get(app.url("/v1/changes/live")).bearer_auth(user).send().await.unwrap().status(), 403);
    app.stop().await;
}
