//! Load generator. Prints a human table and one JSON line per run.
//!
//! - `append`: the event log in-process against a store URL: W concurrent writers, each on its
//!   own store, appending as fast as acknowledgements return.
//! - `livestore`: one LiveStore 0.4 client on the wire against a running Junction: pushes N events
//!   in batches (each push waits for its Exit), then pulls them all back.
//!
//! - `fanout`: live delivery through one or several running instances: S subscribers (LiveStore
//!   0.3 live pulls) spread over the instances and over `stores` stores, and writers appending to
//!   those stores at a steady total rate, each store through one instance. Reports delivery
//!   latency (push sent → event received) separately for subscribers on the writer's instance
//!   and on another one (and relative to the writer's acknowledgement, which takes the commit
//!   out of the number), and deliveries per second.
//!
//!   cargo run --release --bin junction-cluster-bench -- append --store-url sqlite:///tmp/b.db --writers 16
//!   cargo run --release --bin junction-cluster-bench -- livestore --url ws://127.0.0.1:8787 --events 20000
//!   cargo run --release --bin junction-cluster-bench -- fanout --url ws://127.0.0.1:8787 --url ws://127.0.0.1:8788
//! - `pocket`: N Pocket WebSocket clients on one collection: push throughput, acknowledgement
//!   latency and broadcast latency to the other clients (`pocket.rs`).
//!
//!   cargo run --release --bin junction-cluster-bench -- pocket --url ws://127.0.0.1:8787 --clients 50

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use junction::config::StoreConfig;
use junction::eventlog::{AppendBatch, EventBody, EventLog, LogOptions, Protocol, StoreKey};
use junction::fanout::{Hub, LocalFanOut};
use junction::metrics::Metrics;
use junction::store::Backend;

#[derive(Parser)]
#[command(name = "junction-cluster-bench", about = "Measure Junction")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Append throughput and acknowledgement latency of the event log (no network).
    Append {
        #[arg(long)]
        store_url: String,
        #[arg(long, default_value_t = 1)]
        writers: usize,
        /// Events per append.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Push then pull throughput of one LiveStore 0.4 WebSocket client on one store.
    Livestore {
        /// Base URL of a running Junction, e.g. ws://127.0.0.1:8787
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 20_000)]
        events: u64,
        /// Events per push (the real client's leader pushes at most 50).
        #[arg(long, default_value_t = 50)]
        batch: u64,
    },
    /// Live delivery latency and rate through one or several instances.
    Fanout {
        /// Base URL of an instance, e.g. ws://127.0.0.1:8787 (repeat for each instance).
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        stores: usize,
        /// Events appended per second, over all stores.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Pocket: push throughput and broadcast latency with N clients on one collection.
    Pocket {
        /// Base URL of a running Junction, e.g. ws://127.0.0.1:8787
        #[arg(long)]
        url: String,
        /// A token for `?token=`, when the server requires one.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// How many of the clients push (all of them by default); the others only follow.
        #[arg(long)]
        pushers: Option<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Total pushes per second (paced); unset: as fast as acknowledgements return.
        #[arg(long)]
        rate: Option<f64>,
    },
}

#[path = "junction-cluster-bench/pocket.rs"]
mod pocket;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Append { store_url, writers, batch, seconds } => append(store_url, writers, batch, seconds).await,
        Mode::Livestore { url, events, batch } => livestore(url, events, batch).await,
        Mode::Fanout { urls, subscribers, stores, rate, seconds } => {
            fanout::run(urls, subscribers, stores, rate, seconds).await
        }
        Mode::Pocket { url, token, clients, pushers, seconds, rate } => {
            let pushers = pushers.unwrap_or(clients);
            pocket::run(pocket::Options { url, token, clients, pushers, seconds, rate }).await
        }
    }
}

async fn append(store_url: String, writers: usize, batch: usize, seconds: u64) -> anyhow::Result<()> {
    let config = StoreConfig { url: store_url.clone(), max_connections: 8, ..StoreConfig::default() };
    let backend = Backend::connect(&config).await?;
    backend.migrate().await?;
    let kind = backend.kind();
    let metrics = Metrics::new();
    let hub = Hub::new(1024, metrics.clone());
    let options = LogOptions { commit_max_requests: config.commit_max_requests, catch_up_page: 256 };
    let log = EventLog::start(backend, options, hub.clone(), Arc::new(LocalFanOut::new(hub)), metrics);
    let run = junction::eventlog::new_backend_id();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let log = log.clone();
            let key = StoreKey::new(Protocol::Pocket, format!("bench-{run}-{w}"));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let events = (0..batch)
                        .map(|i| EventBody {
                            name: "set".into(),
                            args: serde_json::value::RawValue::from_string(format!(
                                r#"{{"field":"f{i}","value":{i}}}"#
                            ))
                            .unwrap(),
                            client_id: format!("writer-{w}"),
                            session_id: "bench".into(),
                        })
                        .collect();
                    let sent = Instant::now();
                    log.append(&key, AppendBatch::AtHead { events }).await.expect("append");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    log.shutdown().await;
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let appends = latencies.len();
    let events_per_sec = (appends * batch) as f64 / elapsed;
    let (p50, p99, max) = (percentile(0.50), percentile(0.99), latencies[appends - 1]);
    println!("mode    store     writers  batch  appends   events/s   p50 ack   p99 ack   max ack");
    println!(
        "append  {kind:<8}  {writers:>7}  {batch:>5}  {appends:>7}  {events_per_sec:>9.0}  {:>7.2}ms {:>7.2}ms {:>7.2}ms",
        ms(p50),
        ms(p99),
        ms(max)
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": "append", "store": kind, "writers": writers, "batch": batch, "seconds": elapsed,
            "appends": appends, "events_per_sec": events_per_sec,
            "ack_ms": {"p50": ms(p50), "p99": ms(p99), "max": ms(max)},
        })
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn livestore(url: String, events: u64, batch: u64) -> anyhow::Result<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let store = format!("bench-{}", junction::eventlog::new_backend_id());
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{url}/?storeId={store}&transport=ws")).await?;
    let started = Instant::now();
    let mut request = 0u64;
    let mut seq = 0u64;
    while seq < events {
        let count = batch.min(events - seq);
        let batch_json: Vec<String> = (seq + 1..=seq + count)
            .map(|n| {
                format!(
                    r#"{{"name":"todoCreated-v1","args":{{"id":"t{n}","text":"todo number {n}"}},"seqNum":{n},"parentSeqNum":{},"clientId":"bench","sessionId":"s1"}}"#,
                    n - 1
                )
            })
            .collect();
        let frame = format!(
            r#"{{"_tag":"Request","id":"{request}","tag":"SyncWsRpc.Push","payload":{{"storeId":"{store}","batch":[{}],"backendId":{{"_tag":"None"}}}},"headers":[]}}"#,
            batch_json.join(",")
        );
        socket.send(Message::text(frame)).await?;
        let reply = next_json(&mut socket).await?;
        anyhow::ensure!(reply["exit"]["_tag"] == "Success", "push refused: {reply}");
        request += 1;
        seq += count;
    }
    let push_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let pull = format!(
        r#"{{"_tag":"Request","id":"{request}","tag":"SyncWsRpc.Pull","payload":{{"storeId":"{store}","live":false,"cursor":{{"_tag":"None"}}}},"headers":[]}}"#
    );
    socket.send(Message::text(pull)).await?;
    let mut pulled = 0u64;
    loop {
        let message = next_json(&mut socket).await?;
        if message["_tag"] == "Exit" {
            break;
        }
        pulled += message["values"][0]["batch"].as_array().map_or(0, |b| b.len() as u64);
    }
    let pull_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(pulled == events, "pulled {pulled} of {events} events");
    let (push_rate, pull_rate) = (events as f64 / push_secs, events as f64 / pull_secs);
    println!("mode       events  batch   push events/s   pull events/s");
    println!("livestore  {events:>6}  {batch:>5}  {push_rate:>14.0}  {pull_rate:>14.0}");
    println!(
        "{}",
        serde_json::json!({"mode": "livestore", "events": events, "batch": batch,
            "push_events_per_sec": push_rate, "pull_events_per_sec": pull_rate})
    );
    Ok(())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> anyhow::Result<serde_json::Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(_)) => continue,
            other => anyhow::bail!("socket ended: {other:?}"),
        }
    }
}

mod fanout {
    //! `junction-cluster-bench fanout` (see the crate docs).

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use futures_util::{SinkExt, StreamExt};
    use tokio::sync::Barrier;
    use tokio_tungstenite::tungstenite::Message;

    use super::{Socket, ms, next_json};

    /// One received event: its store, its seq, when it arrived (since the epoch), how long after
    /// its push was sent, and whether it crossed instances.
    struct Delivery {
        store: usize,
        seq: u64,
        at: Duration,
        latency: Duration,
        cross: bool,
    }

    pub async fn run(
        urls: Vec<String>,
        subscribers: usize,
        stores: usize,
        rate: u64,
        seconds: u64,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(stores > 0 && subscribers > 0 && rate > 0, "stores, subscribers and rate must be positive");
        let instances = urls.len();
        let run = junction::eventlog::new_backend_id();
        let store_name = |s: usize| format!("fanout-{run}-{s}");
        // Store s is written through instance s % n; subscriber i follows store i % S on instance
        // (i / S) % n, so every store has subscribers on every instance.
        let writer_instance = |s: usize| s % instances;
        let epoch = Instant::now();
        let stop_subscribers = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Barrier::new(subscribers + 1));
        let mut subscriber_tasks = Vec::new();
        for i in 0..subscribers {
            let (store, instance) = (i % stores, (i / stores) % instances);
            let url = format!("{}/websocket?storeId={}", urls[instance], store_name(store));
            let cross = instance != writer_instance(store);
            let (live, stop) = (live.clone(), stop_subscribers.clone());
            subscriber_tasks.push(tokio::spawn(async move { subscribe(url, store, cross, epoch, live, stop).await }));
        }
        tokio::time::timeout(Duration::from_secs(120), live.wait())
            .await
            .map_err(|_| anyhow::anyhow!("subscribers not live within 120 s"))?;

        // One writer per store, each at rate / stores, started at staggered times.
        let per_store = Duration::from_secs_f64(stores as f64 / rate as f64);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut writer_tasks = Vec::new();
        for s in 0..stores {
            let url = format!("{}/websocket?storeId={}", urls[writer_instance(s)], store_name(s));
            let offset = per_store.mul_f64(s as f64 / stores as f64);
            writer_tasks.push(tokio::spawn(write(url, offset, per_store, deadline, epoch)));
        }
        let (mut written, mut expected) = (0u64, 0u64);
        let mut acks = Vec::new();
        let mut acked_at = Vec::new();
        for (s, task) in writer_tasks.into_iter().enumerate() {
            let (count, latencies, at) = task.await??;
            let followers = (0..subscribers).filter(|i| i % stores == s).count() as u64;
            written += count;
            expected += count * followers;
            acks.extend(latencies);
            acked_at.push(at);
        }
        let write_secs = started.elapsed().as_secs_f64();
        // In-flight deliveries land; then the subscribers stop.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop_subscribers.store(true, Ordering::Release);
        let mut deliveries: Vec<Delivery> = Vec::new();
        for task in subscriber_tasks {
            deliveries.extend(task.await??);
        }
        let mut local: Vec<Duration> = deliveries.iter().filter(|d| !d.cross).map(|d| d.latency).collect();
        let mut cross: Vec<Duration> = deliveries.iter().filter(|d| d.cross).map(|d| d.latency).collect();
        local.sort();
        cross.sort();
        acks.sort();
        let pct = |v: &[Duration], p: f64| {
            v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).map_or(f64::NAN, |d| ms(*d))
        };
        // Delivery relative to the writer's acknowledgement (negative: delivered before the ack
        // reached the writer), which leaves the commit itself out.
        let after_ack = |cross: bool| {
            let mut v: Vec<f64> = deliveries
                .iter()
                .filter(|d| d.cross == cross)
                .filter_map(|d| acked_at[d.store].get((d.seq as usize).wrapping_sub(1)).map(|a| ms(d.at) - ms(*a)))
                .collect();
            v.sort_by(f64::total_cmp);
            let at = |p: f64| v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied();
            (at(0.5).unwrap_or(f64::NAN), at(0.99).unwrap_or(f64::NAN))
        };
        let (local_ack, cross_ack) = (after_ack(false), after_ack(true));
        let rate_out = deliveries.len() as f64 / write_secs;
        println!(
            "mode    instances  subscribers  stores  events  deliveries  deliveries/s  ack p50/p99 ms  local p50/p99 ms  cross p50/p99 ms"
        );
        println!(
            "fanout  {instances:>9}  {subscribers:>11}  {stores:>6}  {written:>6}  {:>10}  {rate_out:>12.0}  {:>6.2} / {:<6.2}  {:>7.2} / {:<7.2}  {:>7.2} / {:<7.2}",
            deliveries.len(),
            pct(&acks, 0.5),
            pct(&acks, 0.99),
            pct(&local, 0.5),
            pct(&local, 0.99),
            pct(&cross, 0.5),
            pct(&cross, 0.99),
        );
        println!(
            "        after the ack: local p50/p99 {:.2} / {:.2} ms, cross p50/p99 {:.2} / {:.2} ms",
            local_ack.0, local_ack.1, cross_ack.0, cross_ack.1
        );
        println!(
            "{}",
            serde_json::json!({
                "mode": "fanout", "instances": instances, "subscribers": subscribers, "stores": stores,
                "rate": rate, "seconds": write_secs, "events": written, "deliveries": deliveries.len(),
                "expected_deliveries": expected, "deliveries_per_sec": rate_out,
                "ack_ms": {"p50": pct(&acks, 0.5), "p99": pct(&acks, 0.99)},
                "local_ms": {"count": local.len(), "p50": pct(&local, 0.5), "p99": pct(&local, 0.99)},
                "cross_ms": {"count": cross.len(), "p50": pct(&cross, 0.5), "p99": pct(&cross, 0.99)},
                "after_ack_ms": {"local": {"p50": local_ack.0, "p99": local_ack.1},
                                 "cross": {"p50": cross_ack.0, "p99": cross_ack.1}},
            })
        );
        anyhow::ensure!(deliveries.len() as u64 == expected, "{} deliveries, expected {expected}", deliveries.len());
        Ok(())
    }

    /// A live pull: waits for the end of the initial pull, then records every event's latency
    /// (from the send time its writer put in the args) until told to stop.
    async fn subscribe(
        url: String,
        store: usize,
        cross: bool,
        epoch: Instant,
        live: Arc<Barrier>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Vec<Delivery>> {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await?;
        socket.send(Message::text(r#"{"_tag":"WSMessage.PullReq","requestId":"bench"}"#)).await?;
        loop {
            let page = next_json(&mut socket).await?;
            if page["_tag"] == "WSMessage.PullRes" && page["remaining"] == 0 {
                break;
            }
        }
        live.wait().await;
        let mut deliveries = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let frame = match tokio::time::timeout(Duration::from_millis(200), socket.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<serde_json::Value>(&text)?,
                Ok(Some(Ok(_))) => continue,
                Ok(other) => anyhow::bail!("subscriber socket ended: {other:?}"),
            };
            let at = epoch.elapsed();
            for event in frame["batch"].as_array().into_iter().flatten() {
                let event = &event["eventEncoded"];
                let sent = Duration::from_micros(event["args"]["t"].as_u64().unwrap_or(0));
                let seq = event["seqNum"].as_u64().unwrap_or(0);
                deliveries.push(Delivery { store, seq, at, latency: at.saturating_sub(sent), cross });
            }
        }
        Ok(deliveries)
    }

    /// Appends one event every `period` (after `offset`) until `deadline`; returns how many, the
    /// acknowledgement latencies, and when each seq was acknowledged (since the epoch).
    async fn write(
        url: String,
        offset: Duration,
        period: Duration,
        deadline: Instant,
        epoch: Instant,
    ) -> anyhow::Result<(u64, Vec<Duration>, Vec<Duration>)> {
        let (mut socket, _): (Socket, _) = tokio_tungstenite::connect_async(&url).await?;
        tokio::time::sleep(offset).await;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut head = 0u64;
        let (mut acks, mut acked_at) = (Vec::new(), Vec::new());
        loop {
            ticks.tick().await;
            if Instant::now() >= deadline {
                return Ok((head, acks, acked_at));
            }
            let seq = head + 1;
            let sent = epoch.elapsed();
            let frame = format!(
                r#"{{"_tag":"WSMessage.PushReq","requestId":"w{seq}","batch":[{{"name":"tick","args":{{"t":{}}},"seqNum":{seq},"parentSeqNum":{head},"clientId":"bench","sessionId":"s"}}]}}"#,
                sent.as_micros()
            );
            socket.send(Message::text(frame)).await?;
            loop {
                let reply = next_json(&mut socket).await?;
                match reply["_tag"].as_str() {
                    Some("WSMessage.PushAck") => break,
                    Some("WSMessage.Error") => anyhow::bail!("push refused: {reply}"),
                    _ => continue,
                }
            }
            let acked = epoch.elapsed();
            acks.push(acked - sent);
            acked_at.push(acked);
            head = seq;
        }
    }
}
