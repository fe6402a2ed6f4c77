//! Load generator. For now one mode, `append`: the event log in-process against a store URL, W
//! concurrent writers, each on its own store, appending as fast as acknowledgements return.
//! Prints a human table and one JSON line.
//!
//!   cargo run --release --bin junction-bench -- append --store-url sqlite:///tmp/b.db --writers 16

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Append { store_url, writers, batch, seconds } => append(store_url, writers, batch, seconds).await,
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
