//! Faults of the storage under the write path: a disk that fills up (SQLite on a small tmpfs) and
//! a commit that fails (Postgres, with a deferred trigger). Whatever happens, a write is
//! acknowledged only if it committed, every write of a failed commit gets the protocol's error,
//! nothing cached runs ahead of the database, and writes go on from the true head once the fault
//! is gone, without a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use junction::eventlog::{AppendBatch, Protocol, SeqNum, StoreKey};
use serde_json::{Value, json};

use crate::helpers::{CommitterHold, Kind, TestApp, TestDatabase, WsClient, body, spawn_app_with, test_config};

/// A tmpfs of a few megabytes mounted for one test, with a ballast file that the test deletes to
/// give space back. Needs root (scripts/test.sh and CI run as root).
struct SmallDisk {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32, ballast_megabytes: u32) -> SmallDisk {
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("disk");
        std::fs::create_dir(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "the disk-full tests mount a small tmpfs and need root (scripts/test.sh and CI run as root)"
        );
        let disk = SmallDisk { dir, _parent: parent };
        std::fs::write(disk.ballast(), vec![7u8; ballast_megabytes as usize * 1024 * 1024]).unwrap();
        disk
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join("ballast")
    }

    fn free_space(&self) {
        std::fs::remove_file(self.ballast()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a server still closing its files must not make the unmount fail.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

async fn app_on_disk(disk: &SmallDisk) -> TestApp {
    let db = Arc::new(TestDatabase::at(format!("sqlite://{}", Path::new(&disk.dir).join("junction.db").display())));
    spawn_app_with(test_config(&db), db).await
}

/// About 24 KB of event arguments: a few hundred writes fill the disk.
fn filler(tag: &str) -> String {
    format!("{tag}:{}", "x".repeat(24 * 1024))
}

/// One protocol's write path, driven over its real wire by one client.
enum Writer {
    LiveStore03 { ws: WsClient, head: u64 },
    LiveStore04 { ws: WsClient, head: u64, store: String },
    SyncKit { ws: WsClient },
    PocketHttp { http: reqwest::Client, app_url: String },
}

impl Writer {
    async fn connect(app: &TestApp, protocol: &str) -> Writer {
        let addr = app.addr;
        match protocol {
            "livestore-0.3" => Writer::LiveStore03 {
                ws: WsClient::connect(&format!("ws://{addr}/websocket?storeId=full03")).await,
                head: 0,
            },
            "livestore-0.4" => Writer::LiveStore04 {
                ws: WsClient::connect(&format!("ws://{addr}/?storeId=full04&transport=ws")).await,
                head: 0,
                store: "full04".into(),
            },
            "synckit" => Writer::SyncKit { ws: WsClient::connect(&format!("ws://{addr}/ws")).await },
            "pocket" => Writer::PocketHttp { http: reqwest::Client::new(), app_url: app.url("") },
            other => panic!("unknown protocol {other}"),
        }
    }

    /// The store this writer writes to.
    fn key(protocol: &str) -> StoreKey {
        match protocol {
            "livestore-0.3" => StoreKey::new(Protocol::LiveStore, "full03").unwrap(),
            "livestore-0.4" => StoreKey::new(Protocol::LiveStore, "full04").unwrap(),
            "synckit" => StoreKey::new(Protocol::SyncKit, "full").unwrap(),
            "pocket" => StoreKey::new(Protocol::Pocket, "full").unwrap(),
            other => panic!("unknown protocol {other}"),
        }
    }

    /// Writes one event tagged `tag`; true if the server acknowledged it, false if it answered
    /// with its error for a write that was not stored.
    async fn write(&mut self, tag: &str) -> bool {
        match self {
            Writer::LiveStore03 { ws, head } => {
                let seq = *head + 1;
                let event = json!({"name": "filled", "args": {"tag": filler(tag)}, "seqNum": seq,
                    "parentSeqNum": *head, "clientId": "c", "sessionId": "s"});
                ws.send(&json!({"_tag": "WSMessage.PushReq", "requestId": tag, "batch": [event]}).to_string()).await;
                loop {
                    let reply = ws.recv_json().await;
                    match reply["_tag"].as_str() {
                        Some("WSMessage.PushAck") if reply["requestId"] == tag => {
                            *head = seq;
                            return true;
                        }
                        Some("WSMessage.Error") if reply["requestId"] == tag => {
                            let message = reply["message"].as_str().unwrap_or_default();
                            assert!(!message.contains("parent"), "the server's head ran ahead of the client: {reply}");
                            return false;
                        }
                        _ => continue, // the echo of a push
                    }
                }
            }
            Writer::LiveStore04 { ws, head, store } => {
                let seq = *head + 1;
                let event = json!({"name": "filled", "args": {"tag": filler(tag)}, "seqNum": seq,
                    "parentSeqNum": *head, "clientId": "c", "sessionId": "s"});
                let request = json!({"_tag": "Request", "id": tag, "tag": "SyncWsRpc.Push",
                    "payload": {"storeId": store, "batch": [event], "backendId": {"_tag": "None"}}, "headers": []});
                ws.send(&request.to_string()).await;
                loop {
                    let reply = ws.recv_json().await;
                    if reply["_tag"] != "Exit" || reply["requestId"] != *tag {
                        continue;
                    }
                    if reply["exit"]["_tag"] == "Success" {
                        *head = seq;
                        return true;
                    }
                    assert!(
                        !reply.to_string().contains("ServerAhead"),
                        "the server's head ran ahead of the client: {reply}"
                    );
                    return false;
                }
            }
            Writer::SyncKit { ws } => {
                let delta = json!({"type": "delta", "id": tag, "timestamp": 1, "documentId": "full",
                    "delta": {tag: filler(tag)}, "vectorClock": {"c": 1}});
                ws.send(&delta.to_string()).await;
                loop {
                    let reply = ws.recv_json().await;
                    match reply["type"].as_str() {
                        Some("ack") if reply["messageId"] == tag => return true,
                        Some("error") => return false,
                        _ => continue, // echoes of earlier writes
                    }
                }
            }
            Writer::PocketHttp { http, app_url } => {
                let document = json!({"_id": tag, "fill": filler(tag), "_rev": "1-a", "_createdAt": 1,
                    "_updatedAt": 1, "_vclock": {"W": 1}});
                let push = json!({"type": "push", "id": tag, "collection": "full",
                    "changes": [{"operation": "insert", "documentId": tag, "document": document,
                        "isFromSync": false, "timestamp": 1, "sequence": 1}],
                    "checkpoint": {"sequences": {}}});
                let response = http.post(format!("{app_url}/sync/push")).json(&push).send().await.unwrap();
                let status = response.status();
                let reply: Value = response.json().await.unwrap();
                if status.is_success() && reply["success"] == true {
                    return true;
                }
                assert!(status.is_server_error(), "a storage failure is a 5xx, got {status}: {reply}");
                false
            }
        }
    }
}

/// The tags of the events stored for a protocol's writer, as the database has them: every
/// filler starts with `<tag>:xxx`, wherever the protocol puts it in the event's arguments.
async fn stored_tags(app: &TestApp, protocol: &str) -> BTreeSet<String> {
    let events = app.log.read(&Writer::key(protocol), SeqNum::ROOT, 1_000_000).await.unwrap();
    events.iter().flat_map(|event| tags_in(event.body.args.get())).collect()
}

fn tags_in(text: &str) -> Vec<String> {
    text.match_indices(":xxxx")
        .map(|(at, _)| {
            let before = &text[..at];
            let start = before.rfind(|c: char| !c.is_ascii_alphanumeric() && c != '-').map_or(0, |i| i + 1);
            before[start..].to_owned()
        })
        .collect()
}

/// Writes until the disk is full and then some, gives space back, writes on, restarts: what was
/// acknowledged is exactly what is stored, before and after the restart.
async fn disk_full_acknowledges_only_what_is_stored(protocol: &str) {
    let disk = SmallDisk::mount(8, 4);
    let app = app_on_disk(&disk).await;
    let mut writer = Writer::connect(&app, protocol).await;
    let mut acknowledged = BTreeSet::new();
    let (mut failures, mut written) = (0, 0);
    // Keep writing well past the first failure: that is where acknowledgements used to go astray.
    while failures < 40 {
        written += 1;
        assert!(written < 2_000, "the disk never filled");
        let tag = format!("w{written}");
        if writer.write(&tag).await {
            acknowledged.insert(tag);
        } else {
            failures += 1;
        }
    }
    assert_eq!(stored_tags(&app, protocol).await, acknowledged, "{protocol}: acknowledged vs stored on a full disk");

    // Space comes back: writes go on from the true head, without a restart.
    disk.free_space();
    for _ in 0..5 {
        written += 1;
        let tag = format!("w{written}");
        assert!(writer.write(&tag).await, "{protocol}: a write after space came back was refused");
        acknowledged.insert(tag);
    }
    assert_eq!(stored_tags(&app, protocol).await, acknowledged);
    drop(writer);
    let app = app.restart().await;
    assert_eq!(stored_tags(&app, protocol).await, acknowledged, "{protocol}: after a restart");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_livestore_03() {
    disk_full_acknowledges_only_what_is_stored("livestore-0.3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_livestore_04() {
    disk_full_acknowledges_only_what_is_stored("livestore-0.4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_synckit() {
    disk_full_acknowledges_only_what_is_stored("synckit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_pocket_http() {
    disk_full_acknowledges_only_what_is_stored("pocket").await;
}

/// Many writers at once, so that the disk fills in the middle of commit groups: every writer's
/// acknowledged events are stored, in the order acknowledged, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_mid_group_with_concurrent_writers() {
    let disk = SmallDisk::mount(8, 4);
    let app = app_on_disk(&disk).await;
    const WRITERS: usize = 8;
    let run = |app_log: junction::eventlog::EventLog, round: &'static str| async move {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let log = app_log.clone();
                tokio::spawn(async move {
                    // Half the writers share one store, half have their own.
                    let key = StoreKey::new(
                        Protocol::LiveStore,
                        if w % 2 == 0 { "shared".into() } else { format!("own{w}") },
                    )
                    .unwrap();
                    let (mut acknowledged, mut failures) = (Vec::new(), 0);
                    for i in 0..400 {
                        if failures >= 10 && round == "fill" {
                            break;
                        }
                        if round == "after" && i == 5 {
                            break;
                        }
                        let tag = format!("{round}-{w}-{i}");
                        let batch = AppendBatch::AtHead {
                            events: vec![body("filled", &json!({"tag": filler(&tag)}).to_string())],
                        };
                        match log.append(&key, batch).await {
                            Ok(appended) => acknowledged.push((key.name.clone(), appended.first_seq, tag)),
                            Err(junction::eventlog::AppendError::Log(_)) => failures += 1,
                            Err(other) => panic!("unexpected refusal: {other}"),
                        }
                    }
                    (acknowledged, failures)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut failed = 0;
        for task in tasks {
            let (acknowledged, failures) = task.await.unwrap();
            all.extend(acknowledged);
            failed += failures;
        }
        (all, failed)
    };
    let (mut acknowledged, failed) = run(app.log.clone(), "fill").await;
    assert!(failed > 0, "the disk never filled");
    let check = |app: &TestApp, acknowledged: &Vec<(String, SeqNum, String)>| {
        let log = app.log.clone();
        let acknowledged = acknowledged.clone();
        async move {
            let mut expected: Vec<(String, SeqNum, String)> = acknowledged;
            expected.sort();
            let mut stored = Vec::new();
            let mut names: Vec<String> = expected.iter().map(|e| e.0.clone()).collect();
            names.sort();
            names.dedup();
            for name in names {
                for event in log
                    .read(&StoreKey::new(Protocol::LiveStore, name.clone()).unwrap(), SeqNum::ROOT, 100_000)
                    .await
                    .unwrap()
                {
                    for tag in tags_in(event.body.args.get()) {
                        stored.push((name.clone(), event.seq, tag));
                    }
                }
            }
            stored.sort();
            assert_eq!(stored, expected, "acknowledged vs stored (store, seq, tag)");
        }
    };
    check(&app, &acknowledged).await;
    disk.free_space();
    let (after, failed) = run(app.log.clone(), "after").await;
    assert_eq!(failed, 0, "writes fail after space came back");
    acknowledged.extend(after);
    check(&app, &acknowledged).await;
    let app = app.restart().await;
    check(&app, &acknowledged).await;
    app.stop().await;
}

/// Makes every Postgres commit that inserted events fail while `fault_switch` is on, as a full
/// disk or a failing server would: a deferred constraint trigger runs at COMMIT.
async fn install_commit_fault(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for statement in [
        "CREATE TABLE fault_switch (failing BOOLEAN NOT NULL)",
        "INSERT INTO fault_switch VALUES (false)",
        "CREATE FUNCTION fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF (SELECT failing FROM fault_switch) THEN RAISE EXCEPTION 'injected: could not extend file' \
         USING ERRCODE = 'disk_full'; END IF; RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW EXECUTE FUNCTION fail_commit()",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn
}

async fn set_commit_fault(conn: &mut sqlx::PgConnection, failing: bool) {
    sqlx::query("UPDATE fault_switch SET failing = $1").bind(failing).execute(conn).await.unwrap();
}

/// On Postgres, a commit that fails (at COMMIT, after every statement succeeded) fails every
/// write of its group with the protocol's error, and writes go on from the true head afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failed_commits_acknowledge_nothing() {
    let db = TestDatabase::new(Kind::Postgres).await;
    let app = spawn_app_with(test_config(&db), db.clone()).await;
    let mut fault = install_commit_fault(&db.url).await;
    let protocols = ["livestore-0.3", "livestore-0.4", "synckit", "pocket"];
    let mut acknowledged = vec![BTreeSet::new(); protocols.len()];
    for (i, protocol) in protocols.iter().enumerate() {
        let mut writer = Writer::connect(&app, protocol).await;
        let mut written = 0;
        for phase in ["before", "failing", "after"] {
            set_commit_fault(&mut fault, phase == "failing").await;
            for _ in 0..5 {
                written += 1;
                let tag = format!("w{written}");
                let acked = writer.write(&tag).await;
                assert_eq!(acked, phase != "failing", "{protocol}: write {tag} while {phase}");
                if acked {
                    acknowledged[i].insert(tag);
                }
            }
        }
        assert_eq!(stored_tags(&app, protocol).await, acknowledged[i], "{protocol}");
    }
    // Concurrent writers whose group fails at COMMIT: none of them is acknowledged.
    set_commit_fault(&mut fault, true).await;
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let log = app.log.clone();
            tokio::spawn(async move {
                let key =
                    StoreKey::new(Protocol::LiveStore, if w % 2 == 0 { "shared".into() } else { format!("own{w}") })
                        .unwrap();
                log.append(&key, AppendBatch::AtHead { events: vec![body("x", "{}")] }).await.is_ok()
            })
        })
        .collect();
    for task in tasks {
        assert!(!task.await.unwrap(), "a write of a failed commit was acknowledged");
    }
    set_commit_fault(&mut fault, false).await;
    assert_eq!(app.log.head(&StoreKey::new(Protocol::LiveStore, "shared").unwrap()).await.unwrap(), SeqNum::ROOT);
    let app = app.restart().await;
    for (i, protocol) in protocols.iter().enumerate() {
        assert_eq!(stored_tags(&app, protocol).await, acknowledged[i], "{protocol} after a restart");
    }
    app.stop().await;
}

/// A TCP proxy in front of the test Postgres that a test takes down and brings back, as a
/// database server that stops and restarts would be (the test server itself keeps running for
/// the other tests).
struct DatabaseProxy {
    port: u16,
    upstream: String,
    serving: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// COMMITs still to pass before the one whose connection is cut once the server had it
    /// (0: none is cut).
    cut_at_commit: Arc<std::sync::atomic::AtomicU32>,
}

/// Forwards one client connection; cuts it right after passing on the COMMIT that
/// `cut_at_commit` counts down to, so that the server commits and the client never hears.
async fn forward(
    mut client: tokio::net::TcpStream,
    upstream: String,
    cut_at_commit: Arc<std::sync::atomic::AtomicU32>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
    let (mut from_server, mut to_server) = server.into_split();
    let (mut from_client, mut to_client) = client.split();
    let upward = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if to_server.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            // sqlx sends COMMIT as a simple query: 'Q', its length, "COMMIT\0".
            let commit = buffer[..n].windows(7).any(|w| w == b"COMMIT\0");
            if commit && cut_at_commit.load(Ordering::SeqCst) > 0 && cut_at_commit.fetch_sub(1, Ordering::SeqCst) == 1 {
                // Stop forwarding at once, both ways: the server has the COMMIT (it commits on its
                // own), its reply never reaches the client.
                return;
            }
        }
    };
    let downward = tokio::io::copy(&mut from_server, &mut to_client);
    // Whichever direction ends first ends the connection (both halves are dropped).
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
    }
}

impl DatabaseProxy {
    async fn start(upstream: &str) -> DatabaseProxy {
        let mut proxy = DatabaseProxy {
            port: 0,
            upstream: upstream.to_owned(),
            serving: None,
            connections: Arc::default(),
            cut_at_commit: Arc::default(),
        };
        proxy.up().await;
        proxy
    }

    /// Listens (again, on the same port) and forwards every connection.
    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("proxy port");
        self.port = listener.local_addr().unwrap().port();
        let (upstream, connections, cut) =
            (self.upstream.clone(), self.connections.clone(), self.cut_at_commit.clone());
        self.serving = Some(tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let forwarding = tokio::spawn(forward(client, upstream.clone(), cut.clone()));
                connections.lock().unwrap().push(forwarding.abort_handle());
            }
        }));
    }

    /// Stops listening and cuts every connection: connects are refused, open ones are reset.
    async fn down(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
            let _ = serving.await; // the listener is closed once the task is gone
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// The database URL `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let (scheme_and_user, rest) = url.split_once('@').expect("user@host in the test URL");
        let (_, database) = rest.split_once('/').expect("/database in the test URL");
        format!("{scheme_and_user}@127.0.0.1:{}/{database}", self.port)
    }
}

fn host_and_port(url: &str) -> String {
    let rest = url.split_once('@').expect("user@host in the test URL").1;
    rest.split_once('/').unwrap().0.to_owned()
}

/// Postgres goes away: writes and event-API requests fail within the configured timeout with a
/// retryable error, readiness says 503; when it comes back, everything resumes without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_fails_fast_and_recovers() {
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut proxy = DatabaseProxy::start(&host_and_port(&db.url)).await;
    let mut config = test_config(&db);
    config.store.url = proxy.url(&db.url);
    config.store.timeout_ms = 1000;
    config.auth.admin_secret = "admin".into();
    let app = spawn_app_with(config, db.clone()).await;
    let http = reqwest::Client::new();
    let ready = |http: &reqwest::Client| {
        let request = http.get(app.url("/health/ready"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mut writer = Writer::connect(&app, "livestore-0.3").await;
    assert!(writer.write("w1").await);
    assert_eq!(ready(&http).await, 200);

    proxy.down().await;
    let started = std::time::Instant::now();
    // The wire client waits at most 10 s for an answer: a failure to answer fails the test.
    assert!(!writer.write("w2").await, "a write while the database is down");
    eprintln!("push answered with an error after {:?} with the database down", started.elapsed());
    let started = std::time::Instant::now();
    let response = http.get(app.url("/v1/stores")).bearer_auth("admin").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    eprintln!("event API answered 503 after {:?}", started.elapsed());
    assert_eq!(ready(&http).await, 503);

    proxy.up().await;
    let started = std::time::Instant::now();
    let mut attempts = 0;
    while ready(&http).await != 200 {
        attempts += 1;
        assert!(attempts < 100, "not ready again after the database came back");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    eprintln!("ready again {:?} after the database came back", started.elapsed());
    assert!(writer.write("w3").await, "a write once the database is back");
    assert_eq!(stored_tags(&app, "livestore-0.3").await, BTreeSet::from(["w1".into(), "w3".into()]));
    app.stop().await;
}

/// A database that cannot be reached at start is named, with the reason, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_at_start_is_named_with_the_reason() {
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut proxy = DatabaseProxy::start(&host_and_port(&db.url)).await;
    proxy.down().await;
    let mut config = test_config(&db);
    config.store.url = proxy.url(&db.url);
    let started = std::time::Instant::now();
    let error = match junction::server::Server::build(config).await {
        Ok(_) => panic!("started without a database"),
        Err(error) => format!("{error:#}"),
    };
    eprintln!("start failed after {:?}: {error}", started.elapsed());
    assert!(error.contains(&format!("127.0.0.1:{}", proxy.port)), "{error}");
    assert!(error.to_lowercase().contains("connection refused"), "{error}");
}

/// The reply to a COMMIT is lost (the connection breaks once the server has it): the group may
/// be stored, so its requests are not committed again one by one, which stored at-head appends
/// twice. Each write is stored at most once, and every acknowledged one exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_reply_stores_nothing_twice() {
    let db = TestDatabase::new(Kind::Postgres).await;
    let proxy = DatabaseProxy::start(&host_and_port(&db.url)).await;
    let mut config = test_config(&db);
    config.store.url = proxy.url(&db.url);
    let app = spawn_app_with(config, db.clone()).await;
    let (blocker, contended) =
        (StoreKey::new(Protocol::LiveStore, "blocker").unwrap(), StoreKey::new(Protocol::LiveStore, "lost").unwrap());
    let blocker_id = app.log.store_id(&blocker).await.unwrap();
    app.log.store_id(&contended).await.unwrap();
    // Hold the committer on the blocker's row so that the writes below queue into one group.
    let hold = CommitterHold::take(&db, blocker_id).await;
    // The blocker's group commits first (1st COMMIT); the second group's reply is lost.
    proxy.cut_at_commit.store(2, std::sync::atomic::Ordering::SeqCst);
    let append = |key: StoreKey, tag: String| {
        let log = app.log.clone();
        tokio::spawn(async move {
            let batch =
                AppendBatch::AtHead { events: vec![body("x", &json!({ "tag": format!("{tag}:xxxx") }).to_string())] };
            (tag, log.append(&key, batch).await.is_ok())
        })
    };
    let first = append(blocker.clone(), "blocker".into());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let writes: Vec<_> = (0..6).map(|i| append(contended.clone(), format!("w{i}"))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    hold.release().await;
    assert!(first.await.unwrap().1);
    let mut acknowledged = BTreeSet::new();
    for write in writes {
        let (tag, acked) = write.await.unwrap();
        if acked {
            acknowledged.insert(tag);
        }
    }
    let stored: Vec<String> = app
        .log
        .read(&contended, SeqNum::ROOT, 100)
        .await
        .unwrap()
        .iter()
        .flat_map(|e| tags_in(e.body.args.get()))
        .collect();
    let distinct: BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), distinct.len(), "a write was stored twice: {stored:?}");
    assert!(acknowledged.is_subset(&distinct), "acknowledged {acknowledged:?}, stored {stored:?}");
    assert_eq!(proxy.cut_at_commit.load(std::sync::atomic::Ordering::SeqCst), 0, "no COMMIT reply was lost");
    app.stop().await;
}

crate::on_both_backends!(kill_9_under_process_durability_loses_nothing_acknowledged);

/// `store.durability = "process"` takes the fsync off the write path (SQLite `synchronous =
/// NORMAL`, Postgres `synchronous_commit = off`: the start log shows what the database itself
/// reports). What it promises still holds: `kill -9` of Junction in the middle of four
/// writers pushing back to back loses nothing acknowledged, and stores nothing out of order.
async fn kill_9_under_process_durability_loses_nothing_acknowledged(kind: Kind) {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::cluster::{ADMIN_SECRET, Instance, V03Client};

    const WRITERS: usize = 4;
    let db = TestDatabase::new(kind).await;
    let env = [("JUNCTION_STORE__DURABILITY", "process")];
    let mut instance = Instance::start(&db, None, &env).await;
    let setting = match kind {
        Kind::Sqlite => "synchronous=NORMAL",
        Kind::Postgres => "synchronous_commit=off",
    };
    assert!(instance.log_text().contains(setting), "{}", instance.log_text());

    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (addr, acked) = (instance.addr, acked.clone());
        writers.push(tokio::spawn(async move {
            let mut client = V03Client::connect(addr, &format!("durable-{writer}")).await;
            let mut head = 0;
            // Until the connection dies with the server.
            while let Some(ok) = client.push(head, &[head + 1], &format!("writer-{writer}")).await {
                assert!(ok, "the only writer of its store was refused at {head}");
                head += 1;
                acked[writer].store(head, Ordering::SeqCst);
            }
        }));
    }
    let total = || acked.iter().map(|a| a.load(Ordering::SeqCst)).sum::<u64>();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while total() < 400 {
        assert!(tokio::time::Instant::now() < deadline, "the writers acknowledged only {} in 60 s", total());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    instance.kill9().await;
    for writer in writers {
        writer.await.unwrap();
    }

    let again = Instance::start(&db, None, &env).await;
    let http = reqwest::Client::new();
    for (writer, acked) in acked.iter().enumerate() {
        let acked = acked.load(Ordering::SeqCst);
        let url = again.url(&format!("/v1/stores/livestore:durable-{writer}/events?after=0&limit=1000"));
        let page: Value = http.get(url).bearer_auth(ADMIN_SECRET).send().await.unwrap().json().await.unwrap();
        let seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        let stored = seqs.len() as u64;
        assert_eq!(seqs, (1..=stored).collect::<Vec<_>>(), "writer {writer}: stored out of order");
        // One more than acknowledged is the push whose commit the kill beat to the reply.
        assert!(stored == acked || stored == acked + 1, "writer {writer}: {acked} acknowledged, {stored} stored");
    }
    again.stop().await;
}

/// The committer keeps a connection of its own (a pooled one costs a ping per group). When
/// that connection dies while idle (Postgres restarted, a proxy or a firewall dropped it), the
/// next write must not fail for it: nothing was begun on the dead connection, so the group is
/// tried once more on a new one, as the pool's ping would have done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_connection_that_died_while_idle_costs_no_write() {
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut proxy = DatabaseProxy::start(&host_and_port(&db.url)).await;
    let mut config = test_config(&db);
    config.store.url = proxy.url(&db.url);
    let app = spawn_app_with(config, db.clone()).await;
    let mut writer = Writer::connect(&app, "livestore-0.3").await;
    assert!(writer.write("w1").await);
    // Every connection to Postgres is reset; Postgres is reachable again at once.
    proxy.down().await;
    proxy.up().await;
    assert!(writer.write("w2").await, "the first write after the connections died");
    assert_eq!(stored_tags(&app, "livestore-0.3").await, BTreeSet::from(["w1".into(), "w2".into()]));
    app.stop().await;
}
