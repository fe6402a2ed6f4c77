//! Several real `junction` processes on one Postgres and one Redis, for the scale-out tests: a
//! Redis server each test owns (its own port and directory, so it can stop and restart it), the
//! `junction` binary started on port 0, a TCP relay that plays the load balancer, and a raw
//! LiveStore 0.3 client that survives its server dying.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestDatabase, free_port};

/// Polls `check` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `redis-server` of the test's own, without persistence.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut dir = tempfile::tempdir().unwrap();
        // Another process may take the free port before redis-server binds it: try a few.
        for _ in 0..5 {
            let mut server = RedisServer { port: free_port(), dir, child: None };
            if server.spawn().await {
                return server;
            }
            dir = server.dir;
        }
        panic!("redis-server did not start (see its log in the test's temp dir)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: nothing is flushed, connections drop at once).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts the server again on the same port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        assert!(self.spawn().await, "redis-server did not start again on port {}", self.port);
    }

    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: scripts/test.sh installs it (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            // It exited: most likely the port was taken meanwhile.
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// A `junction` process.
pub struct Instance {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// Starts `junction` on port 0 with the test's database and (optionally) Redis; returns once
    /// it listens. `env` adds `JUNCTION_*` settings.
    pub async fn start(db: &TestDatabase, redis: Option<&RedisServer>, env: &[(&str, &str)]) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_junction"));
        for (name, _) in std::env::vars() {
            if name.starts_with("JUNCTION_") || name == "DATABASE_URL" || name == "REDIS_URL" || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command
            .current_dir(dir.path())
            .env("JUNCTION_SERVER__LISTEN", "127.0.0.1:0")
            .env("JUNCTION_SERVER__SHUTDOWN_GRACE_SECS", "5")
            .env("JUNCTION_STORE__URL", &db.url)
            .env("JUNCTION_STORE__MAX_CONNECTIONS", "6")
            .env("JUNCTION_LOG__FORMAT", "json")
            .env("JUNCTION_LOG__LEVEL", "info")
            .env("JUNCTION_AUTH__ADMIN_SECRET", ADMIN_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(redis) = redis {
            command.env("JUNCTION_REDIS__URL", redis.url());
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("starting junction");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                log.lock().unwrap().push(line.clone());
                let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
                if entry["fields"]["message"] == "junction is listening" {
                    return entry["fields"]["address"].as_str().unwrap().parse::<SocketAddr>().unwrap();
                }
            }
            panic!("junction exited before listening:\n{}", log.lock().unwrap().join("\n"));
        })
        .await
        .expect("junction listens within 30 s");
        let collected = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().unwrap().push(line);
            }
        });
        Instance { addr, child, log, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `/health/ready`: the status code and the body.
    pub async fn readiness(&self) -> (u16, Value) {
        let response = reqwest::get(self.url("/health/ready")).await.expect("readiness answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Waits until `/health/ready` answers `ready` (200) or not (503).
    /// Waits until the instance is ready with Redis `ok` (`redis_up`) or `degraded`. It stays
    /// ready (200) either way: without Redis it serves through the change log.
    pub async fn await_redis(&self, redis_up: bool) {
        let expected = if redis_up { "ok" } else { "degraded" };
        let what = format!("{} to report redis {expected}", self.addr);
        eventually(Duration::from_secs(20), &what, || async {
            let (status, body) = self.readiness().await;
            status == 200 && body["checks"]["redis"] == expected
        })
        .await;
    }

    /// A counter from `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> u64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        let prefix = format!("junction_{name}_total ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
    }

    /// `kill -9`: no drain, no flush, sockets reset by the kernel.
    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running");
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "junction exited with {status}:\n{}", self.log_text());
    }
}

pub const ADMIN_SECRET: &str = "scale-out-admin";

/// A TCP relay in front of the instances, as a load balancer would be: every new connection goes
/// to the current target.
pub struct Relay {
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let current = target.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let upstream = *current.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { addr, target, task }
    }

    /// New connections go to `target` from now on.
    pub fn route_to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A LiveStore 0.3 client on raw frames that, unlike `WsClient`, reports a dead connection
/// instead of failing the test, so that it can reconnect elsewhere and resume from its cursor.
pub struct V03Client {
    socket: Socket,
    requests: u64,
}

/// One event of a 0.3 frame.
pub fn v03_event(seq: u64, parent: u64, client: &str) -> String {
    format!(
        r#"{{"name":"todoCreated","args":{{"id":"t{seq}","by":"{client}"}},"seqNum":{seq},"parentSeqNum":{parent},"clientId":"{client}","sessionId":"s1"}}"#
    )
}

impl V03Client {
    pub async fn connect(addr: SocketAddr, store: &str) -> V03Client {
        let url = format!("ws://{addr}/websocket?storeId={store}");
        let (socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        V03Client { socket, requests: 0 }
    }

    /// Starts the live pull after `cursor` (0: from the beginning).
    pub async fn pull(&mut self, cursor: u64) {
        self.requests += 1;
        let frame = format!(r#"{{"_tag":"WSMessage.PullReq","requestId":"pull-{}","cursor":{cursor}}}"#, self.requests);
        self.socket.send(Message::text(frame)).await.unwrap();
    }

    /// Pushes `seqs` (chained, the first on `parent`) and waits for the answer: `true` when
    /// acknowledged, `false` when refused. Pull pages that arrive meanwhile are skipped (a writer
    /// has no pull). `None` when the connection died.
    pub async fn push(&mut self, parent: u64, seqs: &[u64], client: &str) -> Option<bool> {
        self.requests += 1;
        let request = format!("push-{}", self.requests);
        let mut previous = parent;
        let events: Vec<String> = seqs
            .iter()
            .map(|&seq| {
                let event = v03_event(seq, previous, client);
                previous = seq;
                event
            })
            .collect();
        let frame = format!(r#"{{"_tag":"WSMessage.PushReq","requestId":"{request}","batch":[{}]}}"#, events.join(","));
        self.socket.send(Message::text(frame)).await.ok()?;
        loop {
            let reply = self.next_frame().await?;
            match reply["_tag"].as_str() {
                Some("WSMessage.PushAck") if reply["requestId"] == request.as_str() => return Some(true),
                Some("WSMessage.Error") if reply["requestId"] == request.as_str() => return Some(false),
                _ => continue,
            }
        }
    }

    /// The seqs of the next pull page (initial or live); `None` when the connection died.
    pub async fn next_seqs(&mut self) -> Option<Vec<u64>> {
        loop {
            let frame = self.next_frame().await?;
            if frame["_tag"] == "WSMessage.PullRes" {
                let batch = frame["batch"].as_array().unwrap();
                return Some(batch.iter().map(|e| e["eventEncoded"]["seqNum"].as_u64().unwrap()).collect());
            }
        }
    }

    /// The next JSON frame; `None` once the connection is gone. Panics after 60 s of silence.
    async fn next_frame(&mut self) -> Option<Value> {
        loop {
            let next =
                tokio::time::timeout(Duration::from_secs(60), self.socket.next()).await.expect("a frame within 60 s");
            match next {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }
}
