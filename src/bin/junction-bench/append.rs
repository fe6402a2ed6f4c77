//! `append`: the event log's append path in-process, against a store URL, without the network.
//! W writers, each on its own store, append `batch` events at a time as fast as
//! acknowledgements return. Isolates storage and group commit from the protocols.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use junction::config::StoreConfig;
use junction::eventlog::{AppendBatch, EventBody, EventLog, LogOptions, Protocol, StoreKey};
use junction::fanout::{Hub, LocalFanOut};
use junction::metrics::Metrics;
use junction::store::Backend;
use serde_json::json;

use crate::report::{Latency, Report, round};

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// `sqlite://…` or `postgres://…`; migrated if needed.
    #[arg(long)]
    pub store_url: String,
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Events per append.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Connections in the database pool (as `store.max_connections`).
    #[arg(long, default_value_t = 8)]
    pub pool: u32,
}

pub async fn run(args: AppendArgs) -> anyhow::Result<()> {
    let config = StoreConfig { url: args.store_url.clone(), max_connections: args.pool, ..StoreConfig::default() };
    let backend = Backend::connect(&config).await?;
    backend.migrate().await?;
    let kind = backend.kind();
    let metrics = Metrics::new();
    let hub = Hub::new(1024, usize::MAX, metrics.clone());
    let options = LogOptions { commit_max_requests: config.commit_max_requests, catch_up_page: 256 };
    let log = EventLog::start(backend, options, hub.clone(), Arc::new(LocalFanOut::new(hub)), metrics);
    let run = junction::eventlog::new_backend_id();
    let keys: Vec<StoreKey> = (0..args.writers)
        .map(|w| StoreKey::new(Protocol::Pocket, format!("bench-{run}-{w}")).expect("a valid store name"))
        .collect();
    for key in &keys {
        log.store_id(key).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let tasks: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(w, key)| {
            let log = log.clone();
            let batch = args.batch;
            tokio::spawn(async move {
                let mut latency = Latency::default();
                while Instant::now() < deadline {
                    let events = (0..batch)
                        .map(|i| EventBody {
                            name: "set".into(),
                            args: serde_json::value::RawValue::from_string(format!(
                                r#"{{"field":"f{i}","value":{i}}}"#
                            ))
                            .expect("valid JSON"),
                            client_id: format!("writer-{w}"),
                            session_id: "bench".into(),
                        })
                        .collect();
                    let sent = Instant::now();
                    log.append(&key, AppendBatch::AtHead { events }).await?;
                    latency.record(sent.elapsed().as_micros() as u64);
                }
                anyhow::Ok(latency)
            })
        })
        .collect();
    let mut latency = Latency::default();
    for task in tasks {
        latency.merge(&task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    log.shutdown().await;
    let appends = latency.count();
    let mut report = Report::new("append");
    report
        .field("store", kind, json!(kind))
        .count("writers", args.writers as u64)
        .count("batch", args.batch as u64)
        .count("appends", appends)
        .rate("events/s", (appends * args.batch as u64) as f64 / elapsed)
        .latency("ack", &latency)
        .extra("seconds", json!(round(elapsed)));
    report.print();
    Ok(())
}
