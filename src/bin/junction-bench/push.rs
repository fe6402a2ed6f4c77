//! `push`: C clients, each on its own store, each writing `batch` events at a time as fast as
//! acknowledgements return. Every client makes one write before the clock starts, so that store
//! creation is not part of the measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::TargetArgs;
use crate::mark::Mark;
use crate::net::now_micros;
use crate::report::{Latency, Report, round};
use crate::server_memory::CpuMeter;

#[derive(Args, Debug)]
pub struct PushArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Concurrent clients, each on its own store.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Events per write.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0 && args.batch > 0, "clients and batch must be positive");
    let target = Arc::new(args.target.target().await?);
    let run = junction::eventlog::new_backend_id();
    let writers = futures_util::future::join_all((0..args.clients).map(|c| {
        let target = target.clone();
        let store = format!("bench-push-{run}-{c}");
        async move {
            let mut writer = target.writer(&store, 0).await?;
            let warm_up: Vec<Mark> = (0..args.batch as u64).map(|n| Mark { w: 0, n, t: now_micros() }).collect();
            writer.publish(&warm_up).await?;
            anyhow::Ok(writer)
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;

    let cpu = CpuMeter::start(args.target.server_pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let batch = args.batch as u64;
    let tasks: Vec<_> = writers
        .into_iter()
        .map(|mut writer| {
            tokio::spawn(async move {
                let mut ack = Latency::default();
                let (mut events, mut refused) = (0u64, 0u64);
                let mut n = batch;
                while Instant::now() < deadline {
                    let sent = now_micros();
                    let marks: Vec<Mark> = (0..batch).map(|i| Mark { w: 0, n: n + i, t: sent }).collect();
                    refused += writer.publish(&marks).await? as u64;
                    ack.record(now_micros() - sent);
                    events += batch;
                    n += batch;
                }
                anyhow::Ok((events, refused, ack))
            })
        })
        .collect();
    let mut ack = Latency::default();
    let (mut events, mut refused) = (0, 0);
    for task in tasks {
        let (e, r, a) = task.await??;
        events += e;
        refused += r;
        ack.merge(&a);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (server_cores, own_cores) = cpu.cores();

    let mut report = Report::new("push");
    report
        .field("protocol", format!("{:?}", args.target.protocol).to_lowercase(), json!(args.target.protocol))
        .field("label", &args.target.label, json!(args.target.label))
        .count("clients", args.clients as u64)
        .count("batch", batch)
        .count("acknowledged", events)
        .count("writes", ack.count())
        .rate("events_per_sec", events as f64 / elapsed)
        .rate("writes_per_sec", ack.count() as f64 / elapsed)
        .latency("ack", &ack)
        .extra("refused_writes", json!(refused))
        .extra("seconds", json!(round(elapsed)))
        .extra("server_cores", json!(server_cores.map(round)))
        .extra("loadgen_cores", json!(own_cores.map(round)));
    report.print();
    Ok(())
}
