//! The real `@synckit-js/sdk` 0.1.1 client (from npm) against a Junction started here, on SQLite
//! and on Postgres. The Node side lives in protocols/synckit/interop/; what the SDK does on the
//! wire is written down in protocols/synckit/SDK-NOTES.md.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Expected, Kind, TestApp, TestDatabase, assert_node_runs, npm_installed, spawn_app, spawn_app_with, test_config,
};

const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/synckit/interop");
const SECRET: &str = "synckit-interop-secret-of-32-chars!!";

fn ws_url(app: &TestApp) -> String {
    format!("ws://{}/ws", app.addr)
}

/// Runs `run.sh [tests…]` against `app`; panics with the suite's output when it fails or did
/// not run exactly what `expected` says.
async fn run_suite(app: &TestApp, tests: &[&str], extra_env: &[(&str, &str)], expected: Expected<'_>) {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(format!("{INTEROP}/run.sh"))
        .args(tests)
        .env("SYNCKIT_URL", ws_url(app))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(600), command.output())
        .await
        .expect("the interop suite finishes within 10 minutes")
        .expect("running protocols/synckit/interop/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop suite failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    println!("{stdout}\n{stderr}");
    assert_node_runs(&stdout, &[expected]);
}

async fn real_sdk_clients(kind: Kind) {
    let app = spawn_app(kind).await;
    // Every file; the token tests skip their describe here (no tokens): they run in
    // real_sdk_clients_with_tokens.
    let expected = Expected { tests: 13, suites: 1, pass: 13, skipped: &["token auth through ?token="] };
    run_suite(&app, &[], &[], expected).await;
    app.stop().await;
}

crate::on_both_backends!(real_sdk_clients);

fn token(user: &str, read: &[&str], write: &[&str]) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({
        "userId": user,
        "permissions": { "canRead": read, "canWrite": write, "isAdmin": false },
        "exp": exp,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `allow_anonymous = false`: the SDK authenticates with `?token=` in its serverUrl; without a
/// token (or with a read-only one) it cannot write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdk_clients_with_tokens() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.auth.jwt_secret = SECRET.into();
    config.protocols.synckit.allow_anonymous = false;
    // The unauthenticated client's refusals take the SDK's own 10 s timeouts; the server's
    // auth deadline (also 10 s by default, tested in synckit.rs) must not race them and turn
    // the last "Not authenticated" into "Authentication required".
    config.limits.auth_deadline_secs = 120;
    let app = spawn_app_with(config, db).await;
    let all = token("interop-writer", &["*"], &["*"]);
    let read_only = token("interop-reader", &["*"], &[]);
    let env =
        [("SYNCKIT_EXPECT_AUTH", "1"), ("SYNCKIT_TOKEN", all.as_str()), ("SYNCKIT_READONLY_TOKEN", read_only.as_str())];
    let expected = Expected { tests: 11, suites: 1, pass: 11, skipped: &[] };
    run_suite(&app, &["auth", "convergence", "late-joiner"], &env, expected).await;
    app.stop().await;
}

async fn node_script(app: &TestApp, script: &str, env: &[(&str, &str)]) -> String {
    npm_installed(INTEROP).await;
    let mut command = tokio::process::Command::new("node");
    command.arg(script).current_dir(INTEROP).env("SYNCKIT_URL", ws_url(app)).kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within 2 minutes"))
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} {env:?} failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// What real clients wrote is there for a new client after a restart, with a clock that still
/// beats every counter the clients saw.
async fn real_sdk_data_survives_a_restart(kind: Kind) {
    let app = spawn_app(kind).await;
    let doc = format!("restart-{}", junction::eventlog::new_backend_id().to_lowercase());
    let written = node_script(&app, "restart.mjs", &[("SYNCKIT_PHASE", "write"), ("SYNCKIT_DOC", &doc)]).await;
    let line = written.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON line in {written}"));
    let before: Value = serde_json::from_str(line).unwrap();
    assert!(before["maxClock"].as_u64().is_some_and(|m| m > 12), "{line}");

    let app = app.restart().await;
    let read =
        node_script(&app, "restart.mjs", &[("SYNCKIT_PHASE", "read"), ("SYNCKIT_DOC", &doc), ("SYNCKIT_EXPECT", line)])
            .await;
    assert!(read.contains("read ok"), "{read}");
    app.stop().await;
}

crate::on_both_backends!(real_sdk_data_survives_a_restart);

/// Junction restarts on the same port under connected clients: they reconnect on their own
/// (SDK backoff), replay the write queued meanwhile, and keep converging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdk_clients_reconnect_after_a_restart_on_the_same_port() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = spawn_app(Kind::Sqlite).await;
    npm_installed(INTEROP).await;
    let doc = format!("reconnect-{}", junction::eventlog::new_backend_id().to_lowercase());
    let mut script = tokio::process::Command::new("node")
        .arg("reconnect.mjs")
        .current_dir(INTEROP)
        .env("SYNCKIT_URL", ws_url(&app))
        .env("SYNCKIT_DOC", &doc)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    let ready = ready.ok().and_then(|l| l.ok()).flatten();
    if ready.as_deref() != Some("ready") {
        let output = script.wait_with_output().await.unwrap();
        panic!("the clients did not get going: {ready:?}\n{}", String::from_utf8_lossy(&output.stderr));
    }

    let app = app.restart_on_same_port().await;
    let output = tokio::time::timeout(Duration::from_secs(120), script.wait_with_output()).await.unwrap().unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(output.status.success(), "reconnect.mjs failed\n{rest}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(rest.contains("recovered"), "{rest}");
    app.stop().await;
}
