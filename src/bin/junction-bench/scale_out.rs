//! `scale-out`: live delivery through one or several running instances: S subscribers (LiveStore
//! 0.3 live pulls) spread over the instances and over `stores` stores, and writers appending to
//! those stores at a steady total rate, each store through one instance. Reports delivery
//! latency (push sent → event received) separately for subscribers on the writer's instance and
//! on another one (and relative to the writer's acknowledgement, which takes the commit out of
//! the number), and deliveries per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

/// One received event: its store, its seq, when it arrived (since the epoch), how long after
/// its push was sent, and whether it crossed instances.
struct Delivery {
    store: usize,
    seq: u64,
    at: Duration,
    latency: Duration,
    cross: bool,
}

pub async fn run(urls: Vec<String>, subscribers: usize, stores: usize, rate: u64, seconds: u64) -> anyhow::Result<()> {
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
        "mode       instances  subscribers  stores  events  deliveries  deliveries/s  ack p50/p99 ms  local p50/p99 ms  cross p50/p99 ms"
    );
    println!(
        "scale-out  {instances:>9}  {subscribers:>11}  {stores:>6}  {written:>6}  {:>10}  {rate_out:>12.0}  {:>6.2} / {:<6.2}  {:>7.2} / {:<7.2}  {:>7.2} / {:<7.2}",
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
            "mode": "scale-out", "instances": instances, "subscribers": subscribers, "stores": stores,
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

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn next_json(socket: &mut Socket) -> anyhow::Result<serde_json::Value> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(_)) => continue,
            other => anyhow::bail!("socket ended: {other:?}"),
        }
    }
}
