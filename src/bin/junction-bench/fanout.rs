//! `fanout`: M subscribers of one store, P writers publishing at a total rate R for S seconds.
//!
//! Subscribers connect and finish their initial sync first; then each writer's application
//! produces events at R/P per second, and the writer sends whatever is pending (up to
//! `max_batch` events) as one write as soon as the previous write is acknowledged — one write
//! in flight per writer, as the real clients push. An event's latency runs from when its write
//! is sent to when a subscriber has it. After the last write, subscribers get `drain` seconds
//! to receive everything acknowledged. Lost = acknowledged events a subscriber never got; duplicated = events it got
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
    /// Most events per write (LiveStore's client pushes up to 50 at a time); 1 sends every
    /// event as its own write.
    #[arg(long, default_value_t = 50)]
    pub max_batch: usize,
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
    /// Produced by the deadline but never sent: the writer could not keep up.
    unsent: u64,
    error: Option<String>,
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && args.writers > 0 && args.max_batch > 0,
        "rate, writers and max-batch must be positive"
    );
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
    let per_writer = args.rate / args.writers as f64;
    let started = Instant::now();
    let started_us = now_micros();
    let deadline = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, mut writer)| {
            let max_batch = args.max_batch as u64;
            // Writers start spread over one event interval rather than all at once.
            let offset = Duration::from_secs_f64(w as f64 / args.writers as f64 / per_writer);
            tokio::spawn(async move {
                let mut written =
                    Written { acknowledged: 0, writes: 0, refused: 0, ack: Latency::default(), unsent: 0, error: None };
                let first = started + offset;
                // Events the application has produced by `at`, the first one at `first`.
                let produced = |at: Instant| {
                    let at = at.min(deadline);
                    if at < first { 0 } else { ((at - first).as_secs_f64() * per_writer) as u64 + 1 }
                };
                let mut n = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= deadline {
                        written.unsent = produced(now) - n;
                        break;
                    }
                    let pending = produced(now) - n;
                    if pending == 0 {
                        let next_due = first + Duration::from_secs_f64(n as f64 / per_writer);
                        tokio::time::sleep_until(next_due.max(now).into()).await;
                        continue;
                    }
                    let count = pending.min(max_batch);
                    let sent = now_micros();
                    let marks: Vec<Mark> = (n..n + count).map(|n| Mark { w: w as u32, n, t: sent }).collect();
                    match writer.publish(&marks).await {
                        Ok(refused) => {
                            written.refused += refused as u64;
                            written.acknowledged += count;
                            written.writes += 1;
                            written.ack.record(now_micros() - sent);
                            n += count;
                        }
                        Err(error) => {
                            written.error = Some(format!("{error:#}"));
                            break;
                        }
                    }
                }
                (written, writer)
            })
        })
        .collect();
    let mut acknowledged_by_writer = Vec::new();
    let mut ack = Latency::default();
    let (mut writes, mut refused, mut unsent) = (0, 0, 0);
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
        unsent += written.unsent;
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
        .count("max_batch", args.max_batch as u64)
        .rate("rate", args.rate)
        .count("publishes", acknowledged)
        .count("writes", writes)
        .field(
            "events_per_write",
            format!("{:.1}", acknowledged as f64 / writes.max(1) as f64),
            json!(round(acknowledged as f64 / writes.max(1) as f64)),
        )
        .rate("publishes_per_sec", acknowledged as f64 / publish_secs)
        .count("deliveries", deliveries)
        .count("frames", frames)
        .rate("deliveries_per_sec", deliveries as f64 / delivery_secs)
        .rate("frames_per_sec", frames as f64 / delivery_secs)
        .count("lost", lost)
        .count("duplicated", duplicated)
        .latency("delivery", &latency)
        .latency("ack", &ack)
        .extra("refused_writes", json!(refused))
        .extra("unsent", json!(unsent))
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
