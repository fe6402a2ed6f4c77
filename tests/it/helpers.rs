//! The one place tests start things: a fresh database per test (SQLite in a temp dir, or a new
//! database on the Postgres server that scripts/test.sh started), and the real server on port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use junction::config::Config;
use junction::eventlog::{AppendBatch, EventBody, EventLog, NewEvent, Protocol, SeqNum, StoreKey};
use sqlx::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Set by scripts/test.sh: a Postgres server where tests may create databases.
pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test holds it.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A database the test made itself (e.g. SQLite on a filesystem of its own).
    pub fn at(url: String) -> TestDatabase {
        TestDatabase { url, _dir: None }
    }

    pub async fn new(kind: Kind) -> Arc<TestDatabase> {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/data/junction.db", dir.path().display());
                Arc::new(TestDatabase { url, _dir: Some(dir) })
            }
            Kind::Postgres => {
                let server = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
                    panic!("{POSTGRES_ENV} is not set: run the tests with scripts/test.sh, which starts Postgres")
                });
                let name = format!("junction_test_{}", junction::eventlog::new_backend_id().to_lowercase());
                let mut admin = sqlx::PgConnection::connect(&server).await.expect("connecting to the test Postgres");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("CREATE DATABASE");
                admin.close().await.ok();
                let (base, _) = server.rsplit_once('/').expect("a Postgres URL ends with /database");
                Arc::new(TestDatabase { url: format!("{base}/{name}"), _dir: None })
            }
        }
    }
}

/// Configuration for a test server: port 0, the given database, quiet defaults.
pub fn test_config(db: &TestDatabase) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.shutdown_grace_secs = 5;
    config.store.url = db.url.clone();
    config.store.max_connections = 4;
    config
}

/// A running Junction.
pub struct TestApp {
    pub addr: SocketAddr,
    pub log: EventLog,
    pub config: Config,
    pub db: Arc<TestDatabase>,
    stop: CancellationToken,
    serving: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app(kind: Kind) -> TestApp {
    let db = TestDatabase::new(kind).await;
    let config = test_config(&db);
    spawn_app_with(config, db).await
}

pub async fn spawn_app_with(config: Config, db: Arc<TestDatabase>) -> TestApp {
    junction::telemetry::init(&junction::config::LogConfig { level: "error".into(), ..Default::default() });
    let server = junction::server::Server::build(config.clone()).await.expect("building the server");
    let addr = server.local_addr();
    let log = server.state().log.clone();
    let stop = CancellationToken::new();
    let serving = tokio::spawn(server.run(stop.clone()));
    TestApp { addr, log, config, db, stop, serving }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Shuts the server down as SIGTERM would and waits until it has drained.
    pub async fn stop(self) -> (Config, Arc<TestDatabase>) {
        self.stop.cancel();
        self.serving.await.expect("server task").expect("server run");
        (self.config, self.db)
    }

    /// Stops the server and starts a new one on the same database and the same port, so that
    /// clients can reconnect to the address they know.
    pub async fn restart_on_same_port(self) -> TestApp {
        let addr = self.addr;
        let (mut config, db) = self.stop().await;
        config.server.listen = addr;
        spawn_app_with(config, db).await
    }

    /// Stops the server and starts a new one on the same database (on a new port).
    pub async fn restart(self) -> TestApp {
        let (config, db) = self.stop().await;
        spawn_app_with(config, db).await
    }
}

pub fn key(name: &str) -> StoreKey {
    StoreKey::new(Protocol::LiveStore, name).unwrap()
}

pub fn body(name: &str, args: &str) -> EventBody {
    EventBody {
        name: name.into(),
        args: serde_json::value::RawValue::from_string(args.into()).unwrap(),
        client_id: "client-a".into(),
        session_id: "session-1".into(),
    }
}

/// A checked batch continuing from `expected`, with the given seqs chained by parent.
pub fn checked(expected: u64, seqs: &[u64]) -> AppendBatch {
    let mut parent = SeqNum(expected);
    let events = seqs
        .iter()
        .map(|&seq| {
            let event = NewEvent { seq: SeqNum(seq), parent_seq: parent, body: body("todoCreated-v1", r#"{"id":1}"#) };
            parent = SeqNum(seq);
            event
        })
        .collect();
    AppendBatch::Checked { expected_head: SeqNum(expected), events }
}

pub fn at_head(count: usize) -> AppendBatch {
    AppendBatch::AtHead { events: (0..count).map(|i| body("set", &format!("{{\"i\":{i}}}"))).collect() }
}

/// Runs one async test body once per backend, as two separately reported tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Kind::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Kind::Postgres).await
                }
            }
        )*
    };
}

/// A raw WebSocket client for golden-frame tests.
pub struct WsClient {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        WsClient { socket }
    }

    /// The HTTP status the server answered the upgrade with (101 when it accepted).
    pub async fn upgrade_status(url: &str) -> u16 {
        match tokio_tungstenite::connect_async(url).await {
            Ok((_, response)) => response.status().as_u16(),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(other) => panic!("connect {url}: {other}"),
        }
    }

    pub async fn send(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.socket.send(tokio_tungstenite::tungstenite::Message::text(text)).await.expect("send");
    }

    /// The next text frame, or a panic after 10 s.
    pub async fn recv(&mut self) -> String {
        match self.next_message().await {
            Some(tokio_tungstenite::tungstenite::Message::Text(text)) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn recv_json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.recv().await).expect("a JSON frame")
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            match self.next_message().await {
                Some(tokio_tungstenite::tungstenite::Message::Close(frame)) => return frame.map(|f| f.code.into()),
                None => return None,
                Some(_) => continue,
            }
        }
    }

    /// Asserts that nothing arrives within `millis`.
    pub async fn silent_for(&mut self, millis: u64) {
        use futures_util::StreamExt;
        if let Ok(message) = tokio::time::timeout(std::time::Duration::from_millis(millis), self.socket.next()).await {
            panic!("expected silence, got {message:?}");
        }
    }

    async fn next_message(&mut self) -> Option<tokio_tungstenite::tungstenite::Message> {
        use futures_util::StreamExt;
        loop {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), self.socket.next())
                .await
                .expect("a frame within 10 s");
            match next {
                Some(Ok(
                    tokio_tungstenite::tungstenite::Message::Ping(_) | tokio_tungstenite::tungstenite::Message::Pong(_),
                )) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// A WebSocket connection whose TCP receive buffer is a few KiB: once its client stops reading,
/// the server's socket fills after little data. What a stalled client looks like, quickly.
pub async fn small_window_socket(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let address = url.split('/').nth(2).expect("ws://host:port/…").parse().expect("host:port");
    let tcp = small_window_tcp(address).await;
    let (socket, _) = tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    socket
}

/// A TCP connection to `address` with a receive buffer of a few KiB (see [`small_window_socket`]).
pub async fn small_window_tcp(address: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(address).await.expect("connect")
}

/// Limits under which a client that stops reading is noticed within seconds: 64 KiB of frames
/// per socket and a 1 s write stall timeout.
pub fn stall_limits(config: &mut Config) {
    config.limits.ws_send_queue_bytes = 64 * 1024;
    // Room for everything the stall tests append (10 MB): the live queue must not overflow
    // (lagged) before the socket's stall is noticed, which is what these tests are about.
    config.limits.subscriber_queue_bytes = 64 * 1024 * 1024;
    config.limits.write_stall_timeout_secs = 1;
}

/// An event whose args are about `bytes` bytes of JSON.
pub fn large_body(bytes: usize) -> EventBody {
    body("large", &format!(r#"{{"pad":"{}"}}"#, "x".repeat(bytes)))
}

/// A value of /metrics, e.g. `metric(&text, r#"junction_connections{protocol="pocket"}"#)`; 0 when
/// the series is absent.
pub fn metric(metrics: &str, series: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

/// Waits until /metrics says that one connection was closed for stalling and `open` connections
/// of `protocol` remain. Panics (with the metrics) if that has not happened within 60 s: a
/// stalled client is then held open.
pub async fn wait_for_one_stalled_close(app: &TestApp, protocol: &str, open: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let connections = format!(r#"junction_connections{{protocol="{protocol}"}}"#);
    loop {
        let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
        let stalled = metric(&text, r#"junction_slow_consumer_disconnects_total{reason="stalled"}"#);
        if stalled == 1 && metric(&text, &connections) == open {
            return;
        }
        assert!(stalled <= 1, "one stalled connection counted more than once:\n{text}");
        if tokio::time::Instant::now() > deadline {
            panic!("the stalled {protocol} connection is still open after 60 s:\n{text}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A port of 127.0.0.1 that was free a moment ago (for a server of the test's own: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `npm ci` a Node package of the repo (an interop suite, a client) if it has not been installed
/// yet. scripts/test.sh installs them all first; this covers running one test on its own.
pub async fn npm_installed(dir: &str) {
    // Tests of both backends start together: one `npm ci` at a time, and none sees a half-made
    // node_modules as installed.
    static INSTALLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _installing = INSTALLING.lock().await;
    if std::path::Path::new(dir).join("node_modules").exists() {
        return;
    }
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .await
        .expect("npm");
    assert!(status.success(), "npm ci in {dir}");
}

/// One `node --test` run's closing summary (TAP), and the tests it marked `# SKIP`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeTestSummary {
    pub tests: u32,
    pub suites: u32,
    pub pass: u32,
    pub fail: u32,
    pub cancelled: u32,
    pub skipped: u32,
    pub todo: u32,
    /// Names of tests and of `describe` blocks marked `# SKIP`. A skipped `describe` shows only
    /// here: Node 20 counts it in no summary line.
    pub skipped_names: Vec<String>,
}

/// The summaries of every `node --test` run in `stdout`, in order (one per package run).
pub fn node_test_summaries(stdout: &str) -> Vec<NodeTestSummary> {
    let mut summaries = Vec::new();
    let mut current = NodeTestSummary::default();
    for line in stdout.lines() {
        let line = line.trim_start();
        if line.starts_with("ok ") && line.contains(" # SKIP") {
            let name = line.split_once(" - ").map_or(line, |(_, name)| name);
            current.skipped_names.push(name.split(" # SKIP").next().unwrap_or(name).to_owned());
            continue;
        }
        let Some((what, count)) = line.strip_prefix("# ").and_then(|rest| rest.split_once(' ')) else { continue };
        let Ok(count) = count.trim().parse::<u32>() else { continue };
        match what {
            "tests" => current.tests = count,
            "suites" => current.suites = count,
            "pass" => current.pass = count,
            "fail" => current.fail = count,
            "cancelled" => current.cancelled = count,
            "skipped" => current.skipped = count,
            // The last line of a summary.
            "todo" => {
                current.todo = count;
                summaries.push(std::mem::take(&mut current));
            }
            _ => {}
        }
    }
    summaries
}

/// What one package run of a node suite must have done, exactly.
pub struct Expected<'a> {
    pub tests: u32,
    pub suites: u32,
    /// Tests that ran and passed (a skipped test counts in `tests`, a skipped describe's do not).
    pub pass: u32,
    /// Name prefixes of the tests (or describes) that skip themselves in this run, and only these.
    pub skipped: &'a [&'a str],
}

/// Asserts that the node suite's runs match `expected`, run by run: exactly the expected tests
/// passed and exactly the expected ones skipped; nothing failed, was cancelled or is todo.
pub fn assert_node_runs(stdout: &str, expected: &[Expected]) {
    let summaries = node_test_summaries(stdout);
    assert_eq!(summaries.len(), expected.len(), "node --test runs in the output\n{stdout}");
    for (run, (summary, expected)) in summaries.iter().zip(expected).enumerate() {
        let counts = (summary.tests, summary.suites, summary.pass, summary.fail + summary.cancelled + summary.todo);
        assert_eq!(counts, (expected.tests, expected.suites, expected.pass, 0), "run {run}: {summary:?}\n{stdout}");
        assert_eq!(summary.skipped_names.len(), expected.skipped.len(), "run {run}: skipped {summary:?}\n{stdout}");
        for (name, prefix) in summary.skipped_names.iter().zip(expected.skipped) {
            assert!(name.starts_with(prefix), "run {run}: skipped {name:?}, expected only {:?}", expected.skipped);
        }
    }
}

#[test]
fn a_skipped_describe_is_seen_though_node_counts_it_nowhere() {
    let tap = "TAP version 13\nok 1 - Pocket interop (WebSocket) # SKIP no server\nok 2 - other\n# tests 1\n\
               # suites 2\n# pass 1\n# fail 0\n# cancelled 0\n# skipped 0\n# todo 0\n";
    let summaries = node_test_summaries(tap);
    assert_eq!(summaries.len(), 1);
    assert_eq!((summaries[0].tests, summaries[0].suites, summaries[0].pass, summaries[0].skipped), (1, 2, 1, 0));
    assert_eq!(summaries[0].skipped_names, ["Pocket interop (WebSocket)"]);
    let result =
        std::panic::catch_unwind(|| assert_node_runs(tap, &[Expected { tests: 1, suites: 2, pass: 1, skipped: &[] }]));
    assert!(result.is_err(), "a skipped describe must fail the check");
}

/// Holds the committer inside its next transaction: a lock on the store row (Postgres) or on the
/// whole database (SQLite) that the commit of `store` has to wait for. Released when dropped.
pub enum CommitterHold {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl CommitterHold {
    pub async fn take(db: &TestDatabase, store: junction::eventlog::StoreId) -> CommitterHold {
        use sqlx::Connection;
        if db.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
            CommitterHold::Sqlite(conn)
        } else {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT id FROM stores WHERE id = $1 FOR UPDATE")
                .bind(store.0)
                .execute(&mut *tx)
                .await
                .unwrap();
            CommitterHold::Postgres(tx)
        }
    }

    pub async fn release(self) {
        match self {
            CommitterHold::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            CommitterHold::Postgres(tx) => tx.rollback().await.unwrap(),
        }
    }
}
