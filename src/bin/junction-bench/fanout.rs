//! `fanout`: M subscribers of one store, P writers publishing at a total rate R for S seconds.
//!
//! Subscribers connect and finish their initial sync first; then writers publish on a fixed
//! schedule (one write of `batch` events every `batch·P/R` seconds each, one write in flight per
//! writer). After the last write, subscribers get `drain` seconds to receive everything
//! acknowledged. Lost = acknowledged events a subscriber never got; duplicated = events it got
//! twice; both must be 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::TargetArgs;
use crate::drivers::{Followed, follow};
use crate::mark::Mark;
use crate::net::now_micros;
use crate::report::{Latency, Report, round};
use crate::server_memory::CpuMeter;

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Subscribers of the one store.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Writers to the store.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Events per second over all writers.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Events per write.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// How long subscribers may take, after the last write, to receive everything.
    #[arg(long, default_value_t = 10)]
    pub drain_seconds: u64,
    /// Store name (default: a fresh one per run).
    #[arg(long)]
    pub store: Option<String>,
}

struct Written {
    acknowledged: u64,
    writes: u64,
    refused: u64,
    ack: Latency,
    error: Option<String>,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0 && args.writers > 0 && args.batch > 0, "rate, writers and batch must be positive");
    let target = Arc::new(args.target.target().await?);
    let store = args.store.clone().unwrap_or_else(|| format!("bench-fanout-{}", junction::eventlog::new_backend_id()));

    let opening = Instant::now();
    let opened = futures_util::future::join_all((0..args.subscribers).map(|i| {
        let target = target.clone();
        let store = store.clone();
        async move { target.subscribe(&store, i as u32).await }
    }))
    .await;
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
        eprintln!("{} of {} subscribers failed to connect; first: {first}", failed.len(), args.subscribers);
    }
    let mut writers = Vec::new();
    for w in 0..args.writers {
        writers.push(target.writer(&store, w as u32).await?);
    }

    let cpu = CpuMeter::start(args.target.server_pid);
    let interval = Duration::from_secs_f64(args.batch as f64 * args.writers as f64 / args.rate);
    let started = Instant::now();
    let started_us = now_micros();
    let deadline = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, mut writer)| {
            let batch = args.batch;
            // Writers start spread over one interval rather than all at once.
            let offset = interval.mul_f64(w as f64 / args.writers as f64);
            tokio::spawn(async move {
                let mut written =
                    Written { acknowledged: 0, writes: 0, refused: 0, ack: Latency::default(), error: None };
                let mut due = started + offset;
                let mut n = 0u64;
                while due < deadline && Instant::now() < deadline {
                    tokio::time::sleep_until(due.into()).await;
                    let sent = now_micros();
                    let marks: Vec<Mark> = (0..batch as u64).map(|i| Mark { w: w as u32, n: n + i, t: sent }).collect();
                    match writer.publish(&marks).await {
                        Ok(refused) => {
                            written.refused += refused as u64;
                            written.acknowledged += batch as u64;
                            written.writes += 1;
                            written.ack.record(now_micros() - sent);
                            n += batch as u64;
                        }
                        Err(error) => {
                            written.error = Some(format!("{error:#}"));
                            break;
                        }
                    }
                    due += interval;
                }
                (written, writer)
            })
        })
        .collect();
    let mut acknowledged_by_writer = Vec::new();
    let mut ack = Latency::default();
    let (mut writes, mut refused) = (0, 0);
    let mut writers_alive = Vec::new();
    for task in tasks {
        let (written, writer) = task.await?;
        if let Some(error) = &written.error {
            eprintln!("a writer stopped: {error}");
        }
        acknowledged_by_writer.push(written.acknowledged);
        ack.merge(&written.ack);
        writes += written.writes;
        refused += written.refused;
        writers_alive.push(writer);
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let acknowledged: u64 = acknowledged_by_writer.iter().sum();

    let expected = acknowledged * followers.len() as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_seconds);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (server_cores, own_cores) = cpu.cores();
    stop.cancel();
    drop(writers_alive);

    let mut latency = Latency::default();
    let (mut deliveries, mut frames, mut duplicated, mut lost, mut last_arrival) = (0, 0, 0, 0, started_us);
    let mut ended_early = Vec::new();
    let subscribers = followers.len();
    for follower in followers {
        let Followed { tally, ended_early: ended } = follower.await?;
        if let Some(reason) = ended {
            ended_early.push(reason);
        }
        latency.merge(&tally.latency);
        deliveries += tally.deliveries;
        frames += tally.frames;
        duplicated += tally.duplicated;
        lost += tally.lost(&acknowledged_by_writer);
        last_arrival = last_arrival.max(tally.last_arrival);
    }
    if let Some(first) = ended_early.first() {
        eprintln!("{} subscribers ended early; first: {first}", ended_early.len());
    }
    let delivery_secs = ((last_arrival - started_us) as f64 / 1e6).max(1e-9);

    let mut report = Report::new("fanout");
    report
        .field("protocol", format!("{:?}", args.target.protocol).to_lowercase(), json!(args.target.protocol))
        .field("label", &args.target.label, json!(args.target.label))
        .count("subscribers", subscribers as u64)
        .count("writers", args.writers as u64)
        .count("batch", args.batch as u64)
        .rate("rate", args.rate)
        .count("publishes", acknowledged)
        .count("writes", writes)
        .rate("publishes/s", acknowledged as f64 / publish_secs)
        .count("deliveries", deliveries)
        .count("frames", frames)
        .rate("deliveries/s", deliveries as f64 / delivery_secs)
        .rate("frames/s", frames as f64 / delivery_secs)
        .count("lost", lost)
        .count("duplicated", duplicated)
        .latency("delivery", &latency)
        .latency("ack", &ack)
        .extra("refused_writes", json!(refused))
        .extra("failed_subscribers", json!(failed.len()))
        .extra("ended_early", json!(ended_early.len()))
        .extra("connect_seconds", json!(round(connect_secs)))
        .extra("publish_seconds", json!(round(publish_secs)))
        .extra("delivery_seconds", json!(round(delivery_secs)))
        .extra("server_cores", json!(server_cores.map(round)))
        .extra("loadgen_cores", json!(own_cores.map(round)))
        .extra("store", json!(store));
    report.print();
    Ok(())
}
