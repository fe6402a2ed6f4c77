//! Scale-out: several Junction instances on one Postgres, fanned out through one Redis.
//!
//! Most tests run real `junction` processes (see `cluster`): the real LiveStore clients across
//! instances, a race of appends through two instances, a Redis restart in the middle of a stream
//! of appends, and `kill -9` of an instance while clients write through the other. A few run two
//! servers inside the test process, where the event log and the fan-out can be reached directly.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use junction::eventlog::{AppendBatch, SeqNum};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ADMIN_SECRET, Instance, RedisServer, Relay, V03Client, eventually};
use crate::helpers::{Kind, TestApp, TestDatabase, body, checked, key, npm_installed, spawn_app_with, test_config};

const PATIENCE: Duration = Duration::from_secs(30);

async fn two_instances(redis: &RedisServer) -> (Arc<TestDatabase>, Instance, Instance) {
    let db = TestDatabase::new(Kind::Postgres).await;
    let a = Instance::start(&db, Some(redis), &[]).await;
    let b = Instance::start(&db, Some(redis), &[]).await;
    a.await_redis(true).await;
    b.await_redis(true).await;
    (db, a, b)
}

/// Everything a live subscriber received, in arrival order, and how often it had to reconnect.
#[derive(Default)]
struct Received {
    seqs: Vec<u64>,
    reconnects: usize,
}

type Shared = Arc<Mutex<Received>>;

/// A raw 0.3 live pull of `store` on `first`. When its connection dies it reconnects to
/// `fallback` (if any) and pulls again from its cursor, as a client behind a load balancer would.
fn subscribe(store: &str, first: SocketAddr, fallback: Option<SocketAddr>) -> (Shared, JoinHandle<()>) {
    let received = Shared::default();
    let store = store.to_owned();
    let task = tokio::spawn({
        let received = received.clone();
        async move {
            let mut client = V03Client::connect(first, &store).await;
            client.pull(0).await;
            let mut fallback = fallback;
            loop {
                match client.next_seqs().await {
                    Some(seqs) => received.lock().unwrap().seqs.extend(seqs),
                    None => {
                        let Some(next) = fallback.take() else { return };
                        let cursor = received.lock().unwrap().seqs.last().copied().unwrap_or(0);
                        received.lock().unwrap().reconnects += 1;
                        client = V03Client::connect(next, &store).await;
                        client.pull(cursor).await;
                    }
                }
            }
        }
    });
    (received, task)
}

fn last_seq(received: &Shared) -> u64 {
    received.lock().unwrap().seqs.last().copied().unwrap_or(0)
}

/// A live subscriber the test watches: which store, a name for messages, what it got.
struct Watched {
    store: String,
    name: String,
    received: Shared,
}

impl Watched {
    fn new(store: &str, name: impl Into<String>, received: Shared) -> Watched {
        Watched { store: store.to_owned(), name: name.into(), received }
    }
}

/// Waits until every watched subscriber got up to `seq_of(its store)`.
async fn all_reached(watched: &[Watched], seq_of: impl Fn(&str) -> u64) {
    for w in watched {
        let seq = seq_of(&w.store);
        eventually(PATIENCE, &format!("{} to receive up to {seq}", w.name), || async { last_seq(&w.received) >= seq })
            .await;
    }
}

/// Asserts that every watched subscriber got exactly 1..=`last_of(its store)`, in order.
async fn all_exactly(watched: &[Watched], last_of: impl Fn(&str) -> u64) {
    all_reached(watched, &last_of).await;
    // Anything arriving late would be a duplicate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in watched {
        let last = last_of(&w.store);
        let seqs = &w.received.lock().unwrap().seqs;
        assert_eq!(seqs.len() as u64, last, "{}: {} events for 1..={last}", w.name, seqs.len());
        assert!(seqs.iter().copied().eq(1..=last), "{}: not exactly 1..={last} in order: {seqs:?}", w.name);
    }
}

/// A writer of one store: pushes one event at a time through `instances` in turn (each its own
/// connection), every `pace`, until stopped, `total` is reached, or its connection dies.
/// `acked` follows the last acknowledged seq; the task returns it.
struct Writer {
    acked: watch::Receiver<u64>,
    stop: CancellationToken,
    task: JoinHandle<u64>,
}

impl Writer {
    fn start(store: &str, instances: &[SocketAddr], total: Option<u64>) -> Writer {
        let (report, acked) = watch::channel(0);
        let stop = CancellationToken::new();
        let store = store.to_owned();
        let instances = instances.to_vec();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut clients = Vec::new();
                for addr in &instances {
                    clients.push(V03Client::connect(*addr, &store).await);
                }
                let mut head = 0;
                while !stop.is_cancelled() && total.is_none_or(|t| head < t) {
                    let turn = head as usize % clients.len();
                    match clients[turn].push(head, &[head + 1], &format!("writer-{turn}")).await {
                        Some(true) => {
                            head += 1;
                            report.send_replace(head);
                        }
                        Some(false) => panic!("the only writer of {store} was refused at {head}"),
                        // Its instance died: what it had acknowledged is all it can vouch for.
                        None => return head,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                head
            }
        });
        Writer { acked, stop, task }
    }

    fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    async fn reach(&mut self, seq: u64) {
        tokio::time::timeout(PATIENCE, self.acked.wait_for(|acked| *acked >= seq))
            .await
            .unwrap_or_else(|_| panic!("the writer did not reach {seq} within {PATIENCE:?}"))
            .expect("the writer is running");
    }

    async fn finish(self) -> u64 {
        self.stop.cancel();
        tokio::time::timeout(PATIENCE, self.task).await.expect("the writer stops").expect("the writer task")
    }
}

/// A store's events as the event API of `instance` returns them (seq, clientId).
async fn stored(instance: &Instance, store: &str) -> Vec<(u64, String)> {
    let url = instance.url(&format!("/v1/stores/livestore:{store}/events?after=0&limit=1000"));
    let response = reqwest::Client::new().get(url).bearer_auth(ADMIN_SECRET).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["seq"].as_u64().unwrap(), e["client_id"].as_str().unwrap().to_owned()))
        .collect()
}

/// The real @livestore/sync-cf clients (0.3.1, and 0.4.0 over WebSocket and HTTP) on two
/// instances see each other's pushes exactly once and in order, and a race of pushes through the
/// two instances lets exactly one in (see the scripts' headers for every check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_see_each_other_across_instances() {
    let redis = RedisServer::start().await;
    let (_db, a, b) = two_instances(&redis).await;
    for version in ["v03", "v04"] {
        let dir = format!("{}/protocols/livestore/interop/{version}", env!("CARGO_MANIFEST_DIR"));
        npm_installed(&dir).await;
        let run = tokio::process::Command::new("node")
            .arg("scale-out.mjs")
            .current_dir(&dir)
            .env("JUNCTION_URL_A", a.url(""))
            .env("JUNCTION_URL_B", b.url(""))
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(90), run).await.expect("scale-out.mjs ends").unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{version}/scale-out.mjs failed\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("races: exactly one push accepted per round"), "{stdout}");
    }
    // The events crossed through Redis, not through the change-log safety net.
    for instance in [&a, &b] {
        assert!(instance.metric("fanout_messages_received").await > 0, "{}", instance.log_text());
    }
    a.stop().await;
    b.stop().await;
}

/// Four writers, two on each instance, push the same next batch at once, thirty times: exactly
/// one is acknowledged each time, the others get the protocol's error, and the store holds
/// exactly the winners' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_through_two_instances_accept_exactly_one() {
    let redis = RedisServer::start().await;
    let (_db, a, b) = two_instances(&redis).await;
    let store = format!("race-{}", junction::eventlog::new_backend_id());
    let mut clients = Vec::new();
    for addr in [a.addr, b.addr, a.addr, b.addr] {
        clients.push(V03Client::connect(addr, &store).await);
    }
    let mut winners = Vec::new();
    for round in 0..30u64 {
        let head = round * 2;
        let seqs = [head + 1, head + 2];
        let pushes = clients.iter_mut().enumerate().map(|(i, client)| async move {
            let name = format!("racer-{i}");
            let accepted = client.push(head, &seqs, &name).await.expect("the connection lives");
            (accepted, name)
        });
        let results = futures_util::future::join_all(pushes).await;
        let accepted: Vec<&String> = results.iter().filter(|(ok, _)| *ok).map(|(_, name)| name).collect();
        assert_eq!(accepted.len(), 1, "round {round}: {results:?}");
        winners.extend([accepted[0].clone(), accepted[0].clone()]);
    }
    let expected: Vec<(u64, String)> = (1..=60).zip(winners).collect();
    assert_eq!(stored(&a, &store).await, expected);
    assert_eq!(stored(&b, &store).await, expected);
    a.stop().await;
    b.stop().await;
}

/// Redis dies in the middle of two streams of appends, one through each instance, and comes
/// back. Throughout, every subscriber on either instance (0.3 live pulls and the SSE event API)
/// gets every event exactly once and in order; during the outage the instances report not ready
/// and deliver each other's writes from the change log; afterwards they are ready and back on
/// Redis. Each store is written through one instance only, so that a subscriber on the other one
/// cannot learn of a write from a local one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_in_the_middle_of_a_stream_loses_and_repeats_nothing() {
    let mut redis = RedisServer::start().await;
    let (_db, a, b) = two_instances(&redis).await;
    let run = junction::eventlog::new_backend_id();
    let (via_a, via_b) = (format!("via-a-{run}"), format!("via-b-{run}"));
    let mut watched = Vec::new();
    for (store, instance, name) in [(&via_a, &a, "A"), (&via_a, &b, "B"), (&via_b, &a, "A"), (&via_b, &b, "B")] {
        let (received, _) = subscribe(store, instance.addr, None);
        watched.push(Watched::new(store, format!("0.3 pull of {store} on {name}"), received));
    }
    let mut writers = [Writer::start(&via_a, &[a.addr], None), Writer::start(&via_b, &[b.addr], None)];
    for writer in &mut writers {
        writer.reach(1).await;
    }
    for (store, instance) in [(&via_a, &b), (&via_b, &a)] {
        let (received, _) = follow_sse(instance, store);
        watched.push(Watched::new(store, format!("SSE of {store} on the other instance"), received));
    }
    // Per store: the seq its writer has reached (plus `more`), once it has.
    let advance = async |writers: &mut [Writer; 2], more: u64| {
        let targets = [writers[0].acked() + more, writers[1].acked() + more];
        for (writer, seq) in writers.iter_mut().zip(targets) {
            writer.reach(seq).await;
        }
        targets
    };
    let of = |targets: [u64; 2]| {
        let via_a = via_a.clone();
        move |store: &str| if store == via_a { targets[0] } else { targets[1] }
    };

    let before = advance(&mut writers, 40).await;
    all_reached(&watched, of(before)).await;
    let received_before = b.metric("fanout_messages_received").await;
    assert!(received_before > 0, "before the outage the events cross through Redis");

    redis.kill().await;
    a.await_redis(false).await;
    b.await_redis(false).await;
    let (_, body) = b.readiness().await;
    assert_eq!(body["degraded"], serde_json::json!(["redis"]), "{body}");
    // Writes go on, and reach the other instance's subscribers while Redis is still down.
    let during = advance(&mut writers, 40).await;
    all_reached(&watched, of(during)).await;
    let (status, body) = b.readiness().await;
    assert_eq!((status, body["checks"]["redis"].as_str()), (200, Some("degraded")), "redis is still down: {body}");

    redis.restart().await;
    a.await_redis(true).await;
    b.await_redis(true).await;
    advance(&mut writers, 40).await;
    let [writer_a, writer_b] = writers;
    let last = [writer_a.finish().await, writer_b.finish().await];
    all_exactly(&watched, of(last)).await;
    for instance in [&a, &b] {
        assert!(
            instance.metric("fanout_recovered_from_change_log").await > 0,
            "the outage was covered by the change log"
        );
        let log = instance.log_text();
        assert!(log.contains("polling the change log"), "the outage is logged:\n{log}");
        assert!(log.contains("subscribed again"), "the recovery is logged:\n{log}");
    }
    assert!(b.metric("fanout_messages_received").await > received_before, "back on Redis after the outage");
    a.stop().await;
    b.stop().await;
}

/// Follows a store through the SSE event API of `instance` from the start.
fn follow_sse(instance: &Instance, store: &str) -> (Shared, JoinHandle<()>) {
    let received = Shared::default();
    let url = instance.url(&format!("/v1/stores/livestore:{store}/events/live?after=0"));
    let task = tokio::spawn({
        let received = received.clone();
        async move {
            let mut response = reqwest::Client::new().get(url).bearer_auth(ADMIN_SECRET).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let mut text = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(std::str::from_utf8(&chunk).unwrap());
                while let Some(end) = text.find("\n\n") {
                    let frame: String = text.drain(..end + 2).collect();
                    if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id:")) {
                        received.lock().unwrap().seqs.push(id.trim().parse().unwrap());
                    }
                }
            }
        }
    });
    (received, task)
}

/// `kill -9` of instance A while clients write through B (and one through A). Nothing
/// acknowledged is lost; A's subscribers (raw 0.3 pulls that reconnect to B, and the real 0.4
/// client behind a relay that then routes to B) resume from their cursors and end with every
/// event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_instance_while_clients_write_through_the_other() {
    const TOTAL: u64 = 300;
    let redis = RedisServer::start().await;
    let (_db, mut a, b) = two_instances(&redis).await;
    let relay = Relay::start(a.addr).await;
    let store = format!("survive-{}", junction::eventlog::new_backend_id());
    let side_store = format!("acked-{}", junction::eventlog::new_backend_id());

    // The real 0.4 client, through the relay, live before anything is written.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/protocols/livestore/interop/v04");
    npm_installed(dir).await;
    let mut follower = tokio::process::Command::new("node")
        .args(["follow.mjs", &store, &TOTAL.to_string()])
        .current_dir(dir)
        .env("JUNCTION_URL", relay.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut follower_lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let follower_seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let first = tokio::time::timeout(PATIENCE, follower_lines.next_line()).await.expect("the follower starts");
    assert_eq!(first.unwrap().as_deref(), Some("seen 0"), "the follower's live pull is going");
    let follower_out = tokio::spawn({
        let seen = follower_seen.clone();
        async move {
            while let Ok(Some(line)) = follower_lines.next_line().await {
                seen.lock().unwrap().push(line);
            }
        }
    });

    let mut watched = Vec::new();
    for i in 0..3 {
        let (received, _) = subscribe(&store, a.addr, Some(b.addr));
        watched.push(Watched::new(&store, format!("0.3 pull {i} on A"), received));
    }
    let (on_b, _) = subscribe(&store, b.addr, None);
    watched.push(Watched::new(&store, "0.3 pull on B", on_b));
    let mut writer = Writer::start(&store, &[b.addr], Some(TOTAL));
    let side_writer = Writer::start(&side_store, &[a.addr], None);

    writer.reach(60).await;
    all_reached(&watched, |_| 60).await;
    a.kill9().await;
    relay.route_to(b.addr);

    // The writer through A stops at its dead connection.
    let side_acked = tokio::time::timeout(PATIENCE, side_writer.task).await.expect("the side writer ends").unwrap();
    assert!(side_acked > 0);
    writer.reach(TOTAL).await;
    all_exactly(&watched, |_| TOTAL).await;
    for w in &watched[..3] {
        assert_eq!(w.received.lock().unwrap().reconnects, 1, "{} moved to B once", w.name);
    }
    let status =
        tokio::time::timeout(Duration::from_secs(90), follower.wait()).await.expect("the follower ends").unwrap();
    follower_out.await.unwrap();
    let follower_log = follower_seen.lock().unwrap().join("\n");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut follower.stderr.take().unwrap(), &mut stderr).await.unwrap();
    assert!(status.success(), "follow.mjs failed:\n{follower_log}\n{stderr}");
    assert!(
        follower_log.contains("pulling again from the cursor"),
        "the 0.4 client lost A and came back:\n{follower_log}"
    );
    assert!(follower_log.contains(&format!("done: 1..{TOTAL} exactly once and in order")), "{follower_log}");

    // Every acknowledged push through A is stored; at most the one in flight when A died is more.
    let side: Vec<u64> = stored(&b, &side_store).await.into_iter().map(|(seq, _)| seq).collect();
    assert!(side.len() as u64 >= side_acked && side.len() as u64 <= side_acked + 1, "{side_acked} acked, {side:?}");
    assert!(side.iter().copied().eq(1..=side.len() as u64), "{side:?}");
    assert_eq!(b.readiness().await.0, 200, "the survivor stays ready");
    b.stop().await;
}

/// Two servers in this process, on one Postgres and one Redis.
async fn two_apps(redis: &RedisServer, tune: impl Fn(&mut junction::config::Config)) -> (TestApp, TestApp) {
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut config = test_config(&db);
    config.redis.url = redis.url();
    tune(&mut config);
    let a = spawn_app_with(config.clone(), db.clone()).await;
    let b = spawn_app_with(config, db).await;
    for app in [&a, &b] {
        eventually(PATIENCE, "the fan-out to subscribe", || async { app.log.fanout().problem().is_none() }).await;
    }
    (a, b)
}

/// Ephemeral messages reach the topic's subscribers on every instance, the publisher's own
/// included, exactly once each; other topics hear nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_reach_every_instance_once() {
    let redis = RedisServer::start().await;
    let (a, b) = two_apps(&redis, |_| {}).await;
    let topic = "synckit:awareness:doc-1";
    let mut on_a = a.log.fanout().subscribe_ephemeral(topic);
    let mut on_b = b.log.fanout().subscribe_ephemeral(topic);
    let mut elsewhere = b.log.fanout().subscribe_ephemeral("synckit:awareness:doc-2");
    a.log.fanout().publish_ephemeral(topic, Bytes::from_static(b"from-a"));
    assert_eq!(recv(&mut on_a).await, "from-a");
    assert_eq!(recv(&mut on_b).await, "from-a");
    // Redis hands A its own frame before B's next one: a duplicate would arrive first.
    b.log.fanout().publish_ephemeral(topic, Bytes::from_static(b"from-b"));
    assert_eq!(recv(&mut on_a).await, "from-b");
    assert_eq!(recv(&mut on_b).await, "from-b");
    a.log.fanout().publish_ephemeral("synckit:awareness:doc-2", Bytes::from_static(b"other"));
    assert_eq!(recv(&mut elsewhere).await, "other");
    assert!(tokio::time::timeout(Duration::from_millis(200), on_b.recv()).await.is_err(), "nothing else on doc-1");
    a.stop().await;
    b.stop().await;
}

async fn recv(feed: &mut junction::fanout::EphemeralFeed) -> Bytes {
    tokio::time::timeout(Duration::from_secs(10), feed.recv()).await.expect("a message within 10 s").unwrap()
}

/// Batches larger than `redis.inline_max_bytes` cross as a notice; the other instance's
/// subscriber reads them from the database, in order with the small ones around them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_too_large_to_inline_arrive_through_storage() {
    let redis = RedisServer::start().await;
    let (a, b) = two_apps(&redis, |config| config.redis.inline_max_bytes = 1024).await;
    let store = key("large");
    a.log.append(&store, checked(0, &[1])).await.unwrap();
    let mut subscription = b.log.subscribe(&store, SeqNum::ROOT).await.unwrap();
    let mut seqs = next_seqs(&mut subscription).await;
    assert_eq!(seqs, [1], "from storage; the subscription is live from here on");
    let big = format!("\"{}\"", "x".repeat(5000));
    a.log.append(&store, AppendBatch::AtHead { events: vec![body("big", &big), body("big", &big)] }).await.unwrap();
    a.log.append(&store, checked(3, &[4])).await.unwrap();
    while seqs.len() < 4 {
        let events = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.unwrap().unwrap();
        for event in events.iter() {
            if event.seq.0 == 2 || event.seq.0 == 3 {
                assert_eq!(event.body.args.get(), big);
            }
            seqs.push(event.seq.0);
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    a.stop().await;
    b.stop().await;
}

/// An instance whose publishes never reach the others (here: it publishes to another Redis; in
/// life: it died between its commit and its publish) still has its writes delivered everywhere:
/// the healthy instances find them in the change log at their next check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_whose_publish_was_lost_are_found_in_the_change_log() {
    let redis = RedisServer::start().await;
    let elsewhere = RedisServer::start().await;
    let db = TestDatabase::new(Kind::Postgres).await;
    let mut config = test_config(&db);
    config.redis.url = redis.url();
    config.redis.check_interval_ms = 200;
    let b = spawn_app_with(config.clone(), db.clone()).await;
    config.redis.url = elsewhere.url();
    let a = spawn_app_with(config, db).await;
    for app in [&a, &b] {
        eventually(PATIENCE, "the fan-out to subscribe", || async { app.log.fanout().problem().is_none() }).await;
    }
    let store = key("lost");
    a.log.append(&store, checked(0, &[1])).await.unwrap();
    let mut subscription = b.log.subscribe(&store, SeqNum::ROOT).await.unwrap();
    let mut seqs = next_seqs(&mut subscription).await;
    assert_eq!(seqs, [1], "from storage; the subscription is live from here on");
    for seq in 2..=5 {
        a.log.append(&store, checked(seq - 1, &[seq])).await.unwrap();
    }
    while seqs.len() < 5 {
        seqs.extend(next_seqs(&mut subscription).await);
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    a.stop().await;
    b.stop().await;
}

async fn next_seqs(subscription: &mut junction::eventlog::Subscription) -> Vec<u64> {
    let events = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.expect("events").unwrap();
    events.iter().map(|e| e.seq.0).collect()
}

/// A reset made while Redis is down is held back and published when Redis returns: the other
/// instance's subscribers of the store end with `Reset` even though nothing is appended after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_made_while_redis_is_down_reaches_the_other_instance_when_it_is_back() {
    let mut redis = RedisServer::start().await;
    let (a, b) = two_apps(&redis, |_| {}).await;
    let store = key("reset-in-outage");
    a.log.append(&store, checked(0, &[1])).await.unwrap();
    let mut subscription = b.log.subscribe(&store, SeqNum::ROOT).await.unwrap();
    assert_eq!(next_seqs(&mut subscription).await, [1]);

    redis.kill().await;
    eventually(PATIENCE, "A to notice that Redis is gone", || async { a.log.fanout().problem().is_some() }).await;
    a.log.reset(&store).await.unwrap();
    redis.restart().await;
    let ended = tokio::time::timeout(PATIENCE, subscription.next()).await.expect("the subscription ends");
    assert!(matches!(ended, Err(junction::eventlog::SubscriptionEnded::Reset)), "{ended:?}");
    a.stop().await;
    b.stop().await;
}
