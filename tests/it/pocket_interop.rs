//! The faithful Pocket client (protocols/pocket/client, written from our reading of the real
//! engine's source because the real `@pocket/sync` is on no registry) runs its interop suite
//! against a Junction started here, over WebSocket and HTTP, with two users' JWTs, on SQLite and
//! on Postgres.

use std::process::Stdio;

use crate::helpers::{Expected, Kind, TestDatabase, assert_node_runs, spawn_app_with, test_config};

const SECRET: &str = "pocket-interop-secret";

pub fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn faithful_client_suite(kind: Kind) {
    let db = TestDatabase::new(kind).await;
    let mut config = test_config(&db);
    config.auth.jwt_secret = SECRET.into();
    config.protocols.pocket.allow_anonymous = false;
    let app = spawn_app_with(config, db).await;
    let everything = token(serde_json::json!({"userId": "u1", "permissions": {"canRead": ["*"], "canWrite": ["*"]}}));
    let only_u2 =
        token(serde_json::json!({"userId": "u2", "permissions": {"canRead": ["u2-*"], "canWrite": ["u2-*"]}}));

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/pocket/client");
    assert!(
        std::path::Path::new(dir).join("node_modules").exists(),
        "run `npm ci` in {dir} first (scripts/test.sh does)"
    );
    let command = tokio::process::Command::new("node")
        .args(["--test", "--test-concurrency=1", "test/interop.test.mjs"])
        .current_dir(dir)
        .env("POCKET_WS_URL", format!("ws://{}/sync", app.addr))
        .env("POCKET_HTTP_URL", app.url(""))
        .env("POCKET_TOKEN", &everything)
        .env("POCKET_TOKEN_2", &only_u2)
        .env("POCKET_BAD_TOKEN", token(serde_json::json!({"userId": "u1", "exp": 1_000_000_000})))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), command)
        .await
        .expect("the interop suite finishes within 10 minutes")
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Pocket interop suite failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Nothing may be skipped: every describe block (WebSocket, two users, HTTP) has what it needs.
    assert_node_runs(&stdout, &[Expected { tests: 15, suites: 3, pass: 15, skipped: &[] }]);
    app.stop().await;
}

crate::on_both_backends!(faithful_client_suite);

/// The faithful engine keeps working across a restart of Junction on the same port: it sees the
/// 1001 close, writes while offline, reconnects by itself, pushes what it queued and pulls what
/// another client wrote meanwhile, ending equal to the server (protocols/pocket/client/scripts/restart.mjs).
async fn faithful_client_survives_a_restart(kind: Kind) {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let db = TestDatabase::new(kind).await;
    let app = spawn_app_with(test_config(&db), db).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/pocket/client");
    let collection = format!("restart-{}", junction::eventlog::new_backend_id());
    let mut script = tokio::process::Command::new("node")
        .args(["scripts/restart.mjs", &format!("ws://{}/sync", app.addr), &collection])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await;
    assert_eq!(ready.ok().and_then(|l| l.ok()).flatten().as_deref(), Some("ready"), "the client got going");

    let app = app.restart_on_same_port().await;
    let other = serde_json::json!({"type": "push", "id": "other-1", "collection": collection, "changes": [{
        "operation": "insert", "documentId": "from-other", "document": {"_id": "from-other", "v": 3,
        "_rev": "1-other", "_updatedAt": 1, "_vclock": {"O": 1}}, "isFromSync": false, "timestamp": 1, "sequence": 1}],
        "checkpoint": {"sequences": {}, "nodeId": "O"}});
    let reply: serde_json::Value =
        reqwest::Client::new().post(app.url("/sync/push")).json(&other).send().await.unwrap().json().await.unwrap();
    assert_eq!(reply["success"], true);

    let output =
        tokio::time::timeout(std::time::Duration::from_secs(90), script.wait_with_output()).await.unwrap().unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(output.status.success(), "restart.mjs failed\n{rest}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        rest.contains(
            r#"recovered [{"_id":"before","v":"edited offline"},{"_id":"from-other","v":3},{"_id":"offline","v":2}]"#
        ),
        "{rest}"
    );
    app.stop().await;
}

crate::on_both_backends!(faithful_client_survives_a_restart);
