//! Smoke runs of the load generator at a tiny scale: it connects, speaks the protocol and
//! counts correctly. Timings are printed by the tool and never asserted here.

use serde_json::Value;

use crate::helpers::{Kind, TestApp, spawn_app};

/// Runs `junction-bench <args>` against `app` and returns its JSON line.
async fn bench(app: &TestApp, args: &[&str]) -> Value {
    let url = format!("ws://{}", app.addr);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_junction-bench"))
        .args(args)
        .args(["--url", &url])
        .output()
        .await
        .expect("running junction-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "junction-bench {args:?} failed:\n{stdout}\n{stderr}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("the last line is not JSON ({e}):\n{stdout}\n{stderr}"))
}

fn count(report: &Value, key: &str) -> u64 {
    report[key].as_u64().unwrap_or_else(|| panic!("no count {key} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_event_to_every_subscriber_once() {
    let app = spawn_app(Kind::Sqlite).await;
    let args = ["fanout", "--protocol", "livestore", "--subscribers", "3", "--writers", "2", "--rate", "40"];
    let report =
        bench(&app, &[&args[..], &["--max-batch", "3", "--seconds", "1", "--drain-seconds", "10"]].concat()).await;
    let publishes = count(&report, "publishes");
    assert!(publishes > 0, "{report}");
    assert_eq!(count(&report, "subscribers"), 3, "{report}");
    assert_eq!(count(&report, "deliveries"), 3 * publishes, "{report}");
    assert_eq!(count(&report, "lost"), 0, "{report}");
    assert_eq!(count(&report, "duplicated"), 0, "{report}");
    // Every write reaches each subscriber as at least one frame; a frame holds a write at most.
    assert!(count(&report, "frames") >= 3 * count(&report, "writes"), "{report}");
    // What the tool counted is what the server stored.
    let store = report["store"].as_str().expect("the store name");
    let head =
        app.log.head(&junction::eventlog::StoreKey::new(junction::eventlog::Protocol::LiveStore, store).unwrap()).await;
    assert_eq!(head.unwrap().0, publishes, "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_counts_acknowledged_events() {
    let app = spawn_app(Kind::Sqlite).await;
    let report =
        bench(&app, &["push", "--protocol", "livestore", "--clients", "2", "--batch", "2", "--seconds", "1"]).await;
    let acknowledged = count(&report, "acknowledged");
    assert!(acknowledged > 0, "{report}");
    assert_eq!(acknowledged, 2 * count(&report, "writes"), "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_connections_and_reads_memory_from_metrics() {
    let app = spawn_app(Kind::Sqlite).await;
    let args = ["idle", "--protocol", "livestore", "--connections", "5", "--stores", "2"];
    let report = bench(&app, &[&args[..], &["--hold-seconds", "0", "--settle-seconds", "0"]].concat()).await;
    assert_eq!(count(&report, "connected"), 5, "{report}");
    assert_eq!(count(&report, "failed"), 0, "{report}");
    assert_eq!(count(&report, "held"), 5, "{report}");
    // Without --server-pid the tool reads the server's memory from /metrics.
    assert!(count(&report, "server_rss_after") > 0, "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synckit_fanout_and_push_count_correctly() {
    let app = spawn_app(Kind::Sqlite).await;
    let args = ["fanout", "--protocol", "synckit", "--subscribers", "3", "--writers", "2", "--rate", "40"];
    let report =
        bench(&app, &[&args[..], &["--max-batch", "3", "--seconds", "1", "--drain-seconds", "10"]].concat()).await;
    let publishes = count(&report, "publishes");
    assert!(publishes > 0, "{report}");
    // SyncKit sends one delta per field, and every event is its own field.
    assert_eq!(count(&report, "deliveries"), 3 * publishes, "{report}");
    assert_eq!(count(&report, "frames"), 3 * publishes, "{report}");
    assert_eq!(count(&report, "lost"), 0, "{report}");
    assert_eq!(count(&report, "duplicated"), 0, "{report}");

    let report =
        bench(&app, &["push", "--protocol", "synckit", "--clients", "2", "--batch", "2", "--seconds", "1"]).await;
    assert!(count(&report, "acknowledged") > 0, "{report}");
    assert_eq!(count(&report, "acknowledged"), 2 * count(&report, "writes"), "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocket_fanout_and_push_count_correctly() {
    let app = spawn_app(Kind::Sqlite).await;
    let args = ["fanout", "--protocol", "pocket", "--subscribers", "3", "--writers", "2", "--rate", "40"];
    let report =
        bench(&app, &[&args[..], &["--max-batch", "3", "--seconds", "1", "--drain-seconds", "10"]].concat()).await;
    let publishes = count(&report, "publishes");
    assert!(publishes > 0, "{report}");
    assert_eq!(count(&report, "deliveries"), 3 * publishes, "{report}");
    assert_eq!(count(&report, "lost"), 0, "{report}");
    assert_eq!(count(&report, "duplicated"), 0, "{report}");

    let report =
        bench(&app, &["push", "--protocol", "pocket", "--clients", "2", "--batch", "2", "--seconds", "1"]).await;
    assert!(count(&report, "acknowledged") > 0, "{report}");
    assert_eq!(count(&report, "acknowledged"), 2 * count(&report, "writes"), "{report}");
    app.stop().await;
}
