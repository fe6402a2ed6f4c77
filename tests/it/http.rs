//! Junction's own HTTP endpoints on a real server.

use junction::eventlog::Protocol;
use junction::server::AdmitError;
use serde_json::Value;

use crate::helpers::{Kind, TestDatabase, at_head, key, spawn_app, spawn_app_with, test_config};

#[tokio::test]
async fn index_names_the_enabled_protocols_and_their_paths() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.protocols.pocket.enabled = false;
    let app = spawn_app_with(config, db).await;
    let index: Value = reqwest::get(app.url("/")).await.unwrap().json().await.unwrap();
    assert_eq!(index["name"], "junction");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(index["store"], "sqlite");
    assert_eq!(index["protocols"]["synckit"], serde_json::json!({"enabled": true, "path": "/ws"}));
    assert_eq!(
        index["protocols"]["livestore"],
        serde_json::json!({"enabled": true, "path": "/websocket", "rpc_path": "/"})
    );
    assert_eq!(index["protocols"]["pocket"]["enabled"], false);
    app.stop().await;
}

#[tokio::test]
async fn liveness_and_readiness_on_sqlite() {
    let app = spawn_app(Kind::Sqlite).await;
    let live = reqwest::get(app.url("/health")).await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = reqwest::get(app.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "degraded": [], "checks": {"store": "ok", "redis": "not configured"}})
    );
    app.stop().await;
}

#[tokio::test]
async fn readiness_on_postgres() {
    let app = spawn_app(Kind::Postgres).await;
    let body: Value = reqwest::get(app.url("/health/ready")).await.unwrap().json().await.unwrap();
    assert_eq!(body["checks"]["store"], "ok");
    let index: Value = reqwest::get(app.url("/")).await.unwrap().json().await.unwrap();
    assert_eq!(index["store"], "postgres");
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_degraded_and_the_instance_stays_ready() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    config.redis.url = format!("redis://127.0.0.1:{port}");
    let app = spawn_app_with(config, db).await;
    // Still ready: the instance serves its clients through the change log; Redis is degraded.
    let ready = reqwest::get(app.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["degraded"], serde_json::json!(["redis"]));
    assert_eq!(body["checks"]["redis"], "degraded");
    assert_eq!(body["checks"]["store"], "ok");
    let metrics = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "junction_redis_up 0"), "{metrics}");
    // The liveness probe does not depend on Redis.
    assert_eq!(reqwest::get(app.url("/health")).await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_appends_and_rejections() {
    let app = spawn_app(Kind::Sqlite).await;
    app.log.append(&key("m"), at_head(3)).await.unwrap();
    app.log.append(&key("m"), crate::helpers::checked(0, &[1])).await.unwrap_err();
    let response = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for line in [
        "junction_events_appended_total 3",
        "junction_appends_rejected_total 1",
        "junction_append_latency_seconds_count 1",
        "junction_deliveries_total 0",
        r#"junction_slow_consumer_disconnects_total{reason="lagged"} 0"#,
        r#"junction_slow_consumer_disconnects_total{reason="stalled"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn connections_are_admitted_up_to_the_limit_and_counted() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.limits.max_connections = 2;
    let server = junction::server::Server::build(config).await.unwrap();
    let state = server.state().clone();
    let first = state.admit(Protocol::SyncKit).unwrap();
    let _second = state.admit(Protocol::Pocket).unwrap();
    assert_eq!(state.admit(Protocol::LiveStore).err(), Some(AdmitError::TooManyConnections(2)));
    let metrics = state.metrics.render();
    assert!(metrics.contains(r#"junction_connections{protocol="synckit"} 1"#), "{metrics}");
    drop(first);
    assert!(state.admit(Protocol::LiveStore).is_ok());
    assert!(state.metrics.render().contains(r#"junction_connections{protocol="synckit"} 0"#));
}

/// A client that posts a body over `limits.max_frame_bytes` gets the 413, every time. The server
/// answers before reading the body and ends the connection; closing a socket with the rest of
/// the body unread made the kernel send a reset, which often destroyed the 413 before the
/// client read it ("broken pipe"). The connection now reads on for a moment before it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_its_413_not_a_broken_pipe() {
    let db = TestDatabase::new(Kind::Sqlite).await;
    let mut config = test_config(&db);
    config.limits.max_frame_bytes = 64 * 1024;
    let app = spawn_app_with(config, db).await;
    let http = reqwest::Client::new();
    for attempt in 0..20 {
        let response = http.post(app.url("/sync/push")).body(vec![b' '; 4 * 1024 * 1024]).send().await;
        let response = response.unwrap_or_else(|e| panic!("attempt {attempt}: no answer but {e:?}"));
        assert_eq!(response.status(), 413, "attempt {attempt}");
    }
    app.stop().await;
}
