//! Load generator. Prints a human table and one JSON line per run.
//!
//! - `append`: the event log in-process against a store URL: W concurrent writers, each on its
//!   own store, appending as fast as acknowledgements return.
//! - `livestore`: one LiveStore 0.4 client on the wire against a running Junction: pushes N events
//!   in batches (each push waits for its Exit), then pulls them all back.
//!
//!   cargo run --release --bin junction-bench -- append --store-url sqlite:///tmp/b.db --writers 16
//!   cargo run --release --bin junction-bench -- livestore --url ws://127.0.0.1:8787 --events 20000
//! - `pocket`: N Pocket WebSocket clients on one collection: push throughput, acknowledgement
//!   latency and broadcast latency to the other clients (`pocket.rs`).
//!
//!   cargo run --release --bin junction-bench -- pocket --url ws://127.0.0.1:8787 --clients 50

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use junction::config::StoreConfig;
use junction::eventlog::{AppendBatch, EventBody, EventLog, LogOptions, Protocol, StoreKey};
use junction::fanout::{Hub, LocalFanOut};
use junction::metrics::Metrics;
use junction::store::Backend;

#[derive(Parser)]
#[command(name = "junction-bench", about = "Measure Junction")]
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

#[path = "junction-bench/pocket.rs"]
mod pocket;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Append { store_url, writers, batch, seconds } => append(store_url, writers, batch, seconds).await,
        Mode::Livestore { url, events, batch } => livestore(url, events, batch).await,
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
