//! Real LiveStore 0.4.0 apps (store, schema with materializers, Node adapter with wasm SQLite,
//! `makeWsSync`) syncing through Junction, each app in its own Node process
//! (protocols/livestore/interop/apps04/app.mjs). Unlike `livestore_interop`, which drives the
//! sync client's interface, these are whole apps: their leader interrupts pushes on every
//! rebase, retries and backs off as it does for users.
//!
//! Every app reaches Junction through its own [`Relay`], which counts the sockets the server
//! closed: a real app must never be disconnected by Junction while it behaves (issue #13).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use junction::eventlog::{Protocol, SeqNum, StoreKey};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Kind, npm_installed, spawn_app};

const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/livestore/interop/apps04");

/// A WebSocket relay between one app and Junction. It forwards frames both ways and records every
/// socket that Junction closed (or dropped) before the app closed it. Offline, it drops new
/// connections before their handshake, as an unreachable network would.
struct Relay {
    addr: SocketAddr,
    online: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    accepting: tokio::task::JoinHandle<()>,
}

/// What a relay saw go by.
#[derive(Default, Debug, Clone)]
struct Seen {
    /// Why each socket Junction ended was ended: close code and reason, or how it dropped.
    server_closes: Vec<String>,
    /// Pushes refused with ServerAheadError: each one makes the app's leader rebase.
    server_ahead: usize,
    /// Interrupt frames the app sent.
    interrupts: usize,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let online = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accepting = tokio::spawn({
            let (online, seen) = (online.clone(), seen.clone());
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    if online.load(Ordering::SeqCst) {
                        tokio::spawn(relay_one(tcp, upstream, seen.clone()));
                    }
                }
            }
        });
        Relay { addr, online, seen, accepting }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

// The handshake callback must return tungstenite's own (large) error response type.
#[allow(clippy::result_large_err)]
async fn relay_one(tcp: TcpStream, upstream: SocketAddr, seen: Arc<Mutex<Seen>>) {
    let server_ended = |why: String| seen.lock().unwrap().server_closes.push(why);
    let path = Arc::new(Mutex::new(String::new()));
    let remember_path = {
        let path = path.clone();
        move |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
            *path.lock().unwrap() = request.uri().to_string();
            Ok(response)
        }
    };
    let Ok(app) = tokio_tungstenite::accept_hdr_async(tcp, remember_path).await else { return };
    let url = format!("ws://{upstream}{}", path.lock().unwrap());
    let server = match tokio_tungstenite::connect_async(&url).await {
        Ok((server, _)) => server,
        Err(error) => {
            server_ended(format!("upgrade refused: {error}"));
            return;
        }
    };
    let (mut to_app, mut from_app) = app.split();
    let (mut to_server, mut from_server) = server.split();
    loop {
        tokio::select! {
            message = from_app.next() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if message.to_text().is_ok_and(|text| text.contains(r#""_tag":"Interrupt""#)) {
                        seen.lock().unwrap().interrupts += 1;
                    }
                    if to_server.send(message).await.is_err() {
                        server_ended("the server went away".into());
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = to_server.send(Message::Close(frame)).await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = to_server.close().await;
                    break;
                }
            },
            message = from_server.next() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if message.to_text().is_ok_and(|text| text.contains(r#""_tag":"ServerAheadError""#)) {
                        seen.lock().unwrap().server_ahead += 1;
                    }
                    if to_app.send(message).await.is_err() {
                        let _ = to_server.close().await;
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.as_ref().map(|f| format!("{} {}", u16::from(f.code), f.reason));
                    server_ended(why.unwrap_or_else(|| "close without a code".into()));
                    let _ = to_app.send(Message::Close(frame)).await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    server_ended(format!("dropped: {error}"));
                    let _ = to_app.close().await;
                    break;
                }
                None => {
                    server_ended("dropped".into());
                    let _ = to_app.close().await;
                    break;
                }
            },
        }
    }
}

/// One app process, driven over stdin/stdout (see app.mjs for the commands).
struct App {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    next_id: u64,
}

impl App {
    async fn start(name: &'static str, store: &str, data: &Path, relay: &Relay) -> App {
        let stderr = data.join(format!("{name}.stderr"));
        let mut child = tokio::process::Command::new("node")
            .arg("app.mjs")
            .args([store, name])
            .arg(data.join(name))
            .current_dir(PACKAGE)
            .env("JUNCTION_URL", relay.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut app = App { name, child, stdin, stdout, stderr, next_id: 0 };
        let ready = app.answer(None, Duration::from_secs(60)).await;
        assert_eq!(ready, json!({"ready": true}), "{name} started");
        app
    }

    /// Sends one command and waits for its answer; panics with the app's stderr when it fails.
    async fn call(&mut self, command: Value, timeout: Duration) -> Value {
        self.try_call(command, timeout).await.unwrap_or_else(|failure| panic!("{failure}"))
    }

    async fn try_call(&mut self, mut command: Value, timeout: Duration) -> Result<Value, String> {
        self.next_id += 1;
        command["id"] = json!(self.next_id);
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = self.answer(Some(self.next_id), timeout).await;
        if answer["ok"] != json!(true) {
            return Err(format!("{}: {command} failed: {}\n{}", self.name, answer["error"], self.stderr_text()));
        }
        Ok(answer)
    }

    async fn answer(&mut self, id: Option<u64>, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(_) => panic!("{}: the process ended\n{}", self.name, self.stderr_text()),
                Err(_) => panic!("{}: no answer within {timeout:?}\n{}", self.name, self.stderr_text()),
            };
            let Some(json) = line.strip_prefix("@@ ") else { continue };
            let answer: Value = serde_json::from_str(json).unwrap();
            if id.is_none_or(|id| answer["id"] == json!(id)) {
                return answer;
            }
        }
    }

    async fn create(&mut self, ids: &[String], batch: usize, pace_ms: u64) {
        self.call(json!({"cmd": "create", "ids": ids, "batch": batch, "paceMs": pace_ms}), Duration::from_secs(60))
            .await;
    }

    async fn rename(&mut self, ids: &[String], text: &str, pace_ms: u64) {
        self.call(json!({"cmd": "rename", "ids": ids, "text": text, "paceMs": pace_ms}), Duration::from_secs(60)).await;
    }

    /// Waits until the app's leader holds exactly `head` events, all confirmed by the server.
    async fn synced(&mut self, head: u64) -> Result<(), String> {
        let timeout_ms = 45_000;
        let command = json!({"cmd": "synced", "head": head, "timeoutMs": timeout_ms});
        self.try_call(command, Duration::from_millis(timeout_ms + 5000)).await.map(drop)
    }

    /// What the app's leader persisted: its `todos` table and its eventlog.
    async fn persisted(&mut self, dir: &Path) -> (Todos, Vec<LoggedEvent>) {
        let dir = dir.join(format!("{}-dump-{}", self.name, self.next_id + 1));
        self.call(json!({"cmd": "dump", "dir": dir}), Duration::from_secs(30)).await;
        (read_todos(&dir.join("state.db")).await, read_eventlog(&dir.join("eventlog.db")).await)
    }

    /// Shuts the store down (its leader flushes) and waits for the process to end.
    async fn exit(mut self) {
        self.call(json!({"cmd": "exit"}), Duration::from_secs(30)).await;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    fn stderr_text(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        format!("--- {} stderr (last lines)\n{}", self.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

/// `todos` rows by id: (text, number of renames).
type Todos = BTreeMap<String, (String, i64)>;

/// The part of an event both sides keep: seq, parent, name, args (parsed), client and session.
type LoggedEvent = (u64, u64, String, Value, String, String);

async fn open(file: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file).read_only(true);
    sqlx::SqliteConnection::connect_with(&options).await.unwrap()
}

async fn read_todos(file: &Path) -> Todos {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, text, renames FROM todos").fetch_all(&mut open(file).await).await.unwrap();
    rows.into_iter().map(|(id, text, renames)| (id, (text, renames))).collect()
}

async fn read_eventlog(file: &Path) -> Vec<LoggedEvent> {
    let rows: Vec<(i64, i64, i64, String, String, String, String)> = sqlx::query_as(
        "SELECT seqNumGlobal, seqNumClient, parentSeqNumGlobal, name, argsJson, clientId, sessionId \
         FROM eventlog ORDER BY seqNumGlobal, seqNumClient",
    )
    .fetch_all(&mut open(file).await)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(seq, client_seq, parent, name, args, client, session)| {
            assert_eq!(client_seq, 0, "a converged leader holds only global events");
            (seq as u64, parent as u64, name, serde_json::from_str(&args).unwrap(), client, session)
        })
        .collect()
}

/// The app's materializers, in Rust: what replaying Junction's log must give.
fn replay(log: &[LoggedEvent]) -> Todos {
    let mut todos = Todos::new();
    for (seq, _, name, args, _, _) in log {
        let id = args["id"].as_str().unwrap().to_owned();
        let text = args["text"].as_str().unwrap().to_owned();
        match name.as_str() {
            "v1.TodoCreated" => assert!(todos.insert(id, (text, 0)).is_none(), "event {seq} creates a todo twice"),
            "v1.TodoRenamed" => {
                if let Some(todo) = todos.get_mut(&id) {
                    *todo = (text, todo.1 + 1);
                }
            }
            other => panic!("event {seq}: unknown event {other}"),
        }
    }
    todos
}

/// Waits until every app's leader holds exactly `head` events, all confirmed by Junction, and
/// checks that Junction closed no socket on the way. A failure tells what the relays saw.
async fn converged(relays: &[Relay], apps: &mut [&mut App], head: u64) {
    let results = futures_util::future::join_all(apps.iter_mut().map(|app| app.synced(head))).await;
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    let seen: Vec<Seen> = relays.iter().map(Relay::seen).collect();
    assert!(failures.is_empty(), "not converged at {head}; what the relays saw: {seen:?}\n{}", failures.join("\n"));
    assert!(seen.iter().all(|s| s.server_closes.is_empty()), "Junction closed sockets of real apps: {seen:?}");
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i:03}")).collect()
}

async fn real_apps_converge_and_are_never_disconnected(kind: Kind) {
    npm_installed(PACKAGE).await;
    let server = spawn_app(kind).await;
    let store = format!("apps-{}", junction::eventlog::new_backend_id());
    let key = StoreKey::new(Protocol::LiveStore, store.clone()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let relays = [Relay::start(server.addr).await, Relay::start(server.addr).await, Relay::start(server.addr).await];
    let (mut a, mut b) = tokio::join!(
        App::start("app-a", &store, data.path(), &relays[0]),
        App::start("app-b", &store, data.path(), &relays[1])
    );

    // Hundreds of events from one app reach the other.
    let todos = ids("t", 0..300);
    a.create(&todos, 20, 100).await;
    let mut head = 300;
    converged(&relays, &mut [&mut a, &mut b], head).await;

    // Both edit the same rows at the same moments: one push of each pair is refused
    // (ServerAheadError), that leader rebases and pushes again, interrupting the push it
    // abandoned. Commits come half a second apart, as from a person: commits issued back-to-back
    // while a rebase runs can be pushed twice by the 0.4.0 client (its bug, not Junction's).
    let contested = &todos[..6];
    for round in ["first", "second"] {
        let (text_a, text_b) = (format!("{round} from a"), format!("{round} from b"));
        tokio::join!(a.rename(contested, &text_a, 500), b.rename(contested, &text_b, 500));
    }
    head += 24;
    converged(&relays, &mut [&mut a, &mut b], head).await;

    // A new app boots with the whole state.
    let mut c = App::start("app-c", &store, data.path(), &relays[2]).await;
    converged(&relays, &mut [&mut c], head).await;

    // B restarts without a network and edits rows A edits meanwhile; once back, its pushes are
    // refused until it has rebased onto A's.
    b.exit().await;
    relays[1].set_online(false);
    let mut b = App::start("app-b", &store, data.path(), &relays[1]).await;
    let offline = &todos[10..15];
    tokio::join!(
        async {
            b.rename(offline, "offline b", 500).await;
            b.create(&ids("b-offline-", 0..3), 1, 500).await;
        },
        a.rename(offline, "online a", 500),
    );
    relays[1].set_online(true);
    head += 13;
    converged(&relays, &mut [&mut a, &mut b, &mut c], head).await;

    // Junction's log, every leader's eventlog and state, and a replay of the log all agree.
    let log: Vec<LoggedEvent> = server
        .log
        .read(&key, SeqNum::ROOT, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let args = serde_json::from_str(e.body.args.get()).unwrap();
            (e.seq.0, e.parent_seq.0, e.body.name, args, e.body.client_id, e.body.session_id)
        })
        .collect();
    assert_eq!(log.len() as u64, head, "every commit once in Junction's log");
    assert!(log.iter().zip(1..).all(|(e, seq)| e.0 == seq && e.1 == seq - 1), "one chain, no gap");
    let expected = replay(&log);
    assert_eq!(expected.len(), 303);
    assert_eq!(expected.values().map(|t| t.1).sum::<i64>(), 34, "every rename applied once");
    for app in [&mut a, &mut b, &mut c] {
        let (todos, eventlog) = app.persisted(data.path()).await;
        assert!(eventlog == log, "{}: its eventlog differs from Junction's log", app.name);
        assert!(todos == expected, "{}: its todos differ from a replay of the log", app.name);
    }

    let seen: Vec<Seen> = relays.iter().map(Relay::seen).collect();
    println!("what the relays saw (apps a, b, c): {seen:?}");
    assert!(seen[1].server_ahead > 0, "B's pushes after its offline edits were refused, so it rebased: {seen:?}");
    tokio::join!(a.exit(), b.exit(), c.exit());
    server.stop().await;
}

crate::on_both_backends!(real_apps_converge_and_are_never_disconnected);
