//! The real `@livestore/sync-cf` clients (0.3.1 and 0.4.0 from npm) against a Junction started
//! here, on SQLite and on Postgres. The Node side lives in protocols/livestore/interop/.

use std::process::Stdio;

use crate::helpers::{
    Expected, Kind, TestApp, TestDatabase, assert_node_runs, npm_installed, spawn_app, spawn_app_with, test_config,
};

/// Tests per package (`node --test` run): v03, then v04. The auth tests ("14…") skip themselves
/// unless the server requires a token.
const V03_TESTS: u32 = 12;
const V04_TESTS: u32 = 19;

/// Runs the interop suite against `app`; panics with the suite's output when it fails or when
/// it did not run exactly the expected tests.
async fn run_interop(app: &TestApp, extra_env: &[(&str, &str)], expected: &[Expected<'_>]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/livestore/interop/run.sh");
    let mut command = tokio::process::Command::new("bash");
    command.arg(script).env("JUNCTION_URL", app.url("")).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(600), command.output())
        .await
        .expect("the interop suite finishes within 10 minutes")
        .expect("running protocols/livestore/interop/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop suite failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert_node_runs(&stdout, expected);
    println!("{stdout}");
}

async fn real_clients(kind: Kind) {
    let app = spawn_app(kind).await;
    let v03 = Expected { tests: V03_TESTS, suites: 0, pass: V03_TESTS - 1, skipped: &["14. "] };
    let v04 = Expected { tests: V04_TESTS, suites: 0, pass: V04_TESTS - 2, skipped: &["14. WS:", "14b. HTTP:"] };
    run_interop(&app, &[], &[v03, v04]).await;
    app.stop().await;
}

crate::on_both_backends!(real_clients);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_are_refused_without_a_valid_token() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.protocols.livestore.allow_anonymous = false;
    config.protocols.livestore.tokens = vec!["interop-token".into()];
    let app = spawn_app_with(config, db).await;
    // Everything runs, the auth tests included.
    let expected = [
        Expected { tests: V03_TESTS, suites: 0, pass: V03_TESTS, skipped: &[] },
        Expected { tests: V04_TESTS, suites: 0, pass: V04_TESTS, skipped: &[] },
    ];
    run_interop(&app, &[("JUNCTION_EXPECT_AUTH", "1"), ("JUNCTION_AUTH_TOKEN", "interop-token")], &expected).await;
    app.stop().await;
}

/// Junction closes the socket under a live pull (a restart on the same port); the unmodified 0.4
/// client must notice (IsOfflineError), reconnect on its own and pull what came meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v04_client_recovers_from_a_server_side_close() {
    use junction::eventlog::{AppendBatch, NewEvent, Protocol, SeqNum, StoreKey};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = spawn_app(Kind::Sqlite).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/livestore/interop/v04");
    npm_installed(dir).await;
    let store = format!("recovery-{}", junction::eventlog::new_backend_id());
    let mut script = tokio::process::Command::new("node")
        .arg("recovery.mjs")
        .arg(&store)
        .current_dir(dir)
        .env("JUNCTION_URL", app.url(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await;
    assert_eq!(ready.ok().and_then(|l| l.ok()).flatten().as_deref(), Some("ready"), "the client got going");

    let app = app.restart_on_same_port().await;
    let event = NewEvent {
        seq: SeqNum(2),
        parent_seq: SeqNum(1),
        body: crate::helpers::body("todoCreated-v1", r#"{"id":"t2"}"#),
    };
    let key = StoreKey::new(Protocol::LiveStore, store).unwrap();
    app.log.append(&key, AppendBatch::Checked { expected_head: SeqNum(1), events: vec![event] }).await.unwrap();

    let output =
        tokio::time::timeout(std::time::Duration::from_secs(90), script.wait_with_output()).await.unwrap().unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(output.status.success(), "recovery.mjs failed\n{rest}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(rest.contains("live pull failed with IsOfflineError"), "{rest}");
    assert!(rest.contains("recovered"), "{rest}");
    app.stop().await;
}

/// The backendId the real 0.4 client learns for a store, over `transport`.
async fn backend_id_seen_by_the_client(app: &TestApp, store: &str, push: u32, transport: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/livestore/interop/v04");
    npm_installed(dir).await;
    let output = tokio::process::Command::new("node")
        .args(["backend-id.mjs", store, "--push", &push.to_string(), "--transport", transport])
        .current_dir(dir)
        .env("JUNCTION_URL", app.url(""))
        .output()
        .await
        .expect("node");
    assert!(output.status.success(), "backend-id.mjs: {}", String::from_utf8_lossy(&output.stderr));
    let id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(!id.is_empty());
    id
}

/// A restart must not change a store's backendId: a 0.4 client that saw another one would wipe
/// its local data (`onBackendIdMismatch` defaults to 'reset').
async fn backend_id_is_stable_across_a_restart_for_the_real_client(kind: Kind) {
    let app = spawn_app(kind).await;
    let store = format!("stable-{}", junction::eventlog::new_backend_id());
    let before = backend_id_seen_by_the_client(&app, &store, 3, "ws").await;
    let app = app.restart().await;
    assert_eq!(backend_id_seen_by_the_client(&app, &store, 0, "ws").await, before);
    assert_eq!(backend_id_seen_by_the_client(&app, &store, 0, "http").await, before);
    let info =
        app.log.info(&junction::eventlog::StoreKey::new(junction::eventlog::Protocol::LiveStore, store).unwrap()).await;
    assert_eq!(info.unwrap().backend_id, before);
    app.stop().await;
}

crate::on_both_backends!(backend_id_is_stable_across_a_restart_for_the_real_client);
