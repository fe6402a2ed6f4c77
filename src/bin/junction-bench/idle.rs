//! `idle`: N subscribed connections spread over K stores, held open for a while. Reports how
//! many connected and stayed connected, and the server's resident memory per connection: the
//! growth from before the first connection to after the last one, divided by the connections.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::TargetArgs;
use crate::drivers::follow;
use crate::report::{Report, round};
use crate::server_memory::{ServerMemory, own_resident_bytes};

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Stores the connections are spread over (connection i follows store i mod K).
    #[arg(long, default_value_t = 100)]
    pub stores: usize,
    /// How long to hold the connections once all are open.
    #[arg(long, default_value_t = 10)]
    pub hold_seconds: u64,
    /// Pause before measuring memory, so the server settles after the last connection.
    #[arg(long, default_value_t = 2)]
    pub settle_seconds: u64,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.stores > 0, "stores must be positive");
    let target = Arc::new(args.target.target().await?);
    let memory = ServerMemory::new(args.target.server_pid, &args.target.url);
    let before = memory.resident_bytes().await;
    if let Err(error) = &before {
        eprintln!("server memory unavailable from {}: {error:#}", memory.source());
    }
    let run = junction::eventlog::new_backend_id();

    let opening = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let reporter = tokio::spawn({
        let progress = progress.clone();
        let total = args.connections;
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!(
                    "idle: {} of {total} connections opened",
                    progress.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        }
    });
    let opened = futures_util::future::join_all((0..args.connections).map(|i| {
        let target = target.clone();
        let store = format!("bench-idle-{run}-{}", i % args.stores);
        let progress = progress.clone();
        async move {
            let subscriber = target.subscribe(&store, i as u32).await;
            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            subscriber
        }
    }))
    .await;
    reporter.abort();
    let connect_secs = opening.elapsed().as_secs_f64();
    let stop = CancellationToken::new();
    let received = Arc::new(AtomicU64::new(0));
    let mut failed = Vec::new();
    let mut followers = Vec::new();
    for result in opened {
        match result {
            Ok(subscriber) => followers.push(follow(subscriber, stop.clone(), received.clone())),
            Err(error) => failed.push(format!("{error:#}")),
        }
    }
    if let Some(first) = failed.first() {
        eprintln!("{} of {} connections failed; first: {first}", failed.len(), args.connections);
    }
    let connected = followers.len() as u64;
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let after = memory.resident_bytes().await;
    tokio::time::sleep(Duration::from_secs(args.hold_seconds)).await;
    let held_to_end = followers.iter().filter(|f| !f.is_finished()).count() as u64;
    let at_end = memory.resident_bytes().await;
    let client_bytes = own_resident_bytes();
    stop.cancel();
    for follower in followers {
        follower.await?;
    }

    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let per_connection = match (&before, &after) {
        (Ok(before), Ok(after)) if connected > 0 => Some(after.saturating_sub(*before) as f64 / connected as f64),
        _ => None,
    };
    let mut report = Report::new("idle");
    report
        .field("protocol", format!("{:?}", args.target.protocol).to_lowercase(), json!(args.target.protocol))
        .field("label", &args.target.label, json!(args.target.label))
        .count("connections", args.connections as u64)
        .count("stores", args.stores as u64)
        .count("connected", connected)
        .count("failed", failed.len() as u64)
        .count("held", held_to_end)
        .field(
            "server_rss_before",
            before.as_ref().map_or("-".into(), |b| format!("{:.1}MiB", mib(*b))),
            json!(before.as_ref().ok()),
        )
        .field(
            "server_rss_after",
            after.as_ref().map_or("-".into(), |b| format!("{:.1}MiB", mib(*b))),
            json!(after.as_ref().ok()),
        )
        .field(
            "per_connection",
            per_connection.map_or("-".into(), |b| format!("{:.1}KiB", b / 1024.0)),
            json!(per_connection.map(|b| b.round())),
        )
        .extra("server_rss_at_end", json!(at_end.as_ref().ok()))
        .extra("memory_source", json!(memory.source()))
        .extra("connect_seconds", json!(round(connect_secs)))
        .extra("hold_seconds", json!(args.hold_seconds))
        .extra("loadgen_rss", json!(client_bytes))
        .extra("fd_limit", json!(junction::open_files::soft_limit().unwrap_or(0)));
    report.print();
    Ok(())
}
