//! `junction-bench pocket`: N raw Pocket WebSocket clients on one collection against a running
//! Junction. Every client pulls the collection once (so it follows it), then `pushers` of them
//! push one new document per push, each waiting for its push-response, for `seconds` (as fast as
//! they can, or paced to `rate` pushes/s in total). Every other client should get each change as
//! a broadcast. Reported: pushes/s, push-response (ack) latency, and broadcast latency from the
//! push being sent to each follower receiving it, over every (push, follower) pair.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

use super::ms;

pub struct Options {
    pub url: String,
    pub token: Option<String>,
    pub clients: usize,
    pub pushers: usize,
    pub seconds: u64,
    /// Total pushes per second over all pushers; `None`: as fast as acks return.
    pub rate: Option<f64>,
}

/// Broadcast arrivals of one follower: (document id, when).
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

pub async fn run(options: Options) -> anyhow::Result<()> {
    let collection = format!("bench-{}", junction::eventlog::new_backend_id());
    let url = match &options.token {
        Some(token) => format!("{}/sync?token={token}", options.url),
        None => format!("{}/sync", options.url),
    };
    let mut clients = Vec::new();
    for n in 0..options.clients {
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await?;
        let (mut sink, mut stream) = socket.split();
        let (replies, reply) = mpsc::unbounded_channel::<String>();
        let arrivals: Arrivals = Arc::default();
        let recorded = arrivals.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                if text.starts_with(r#"{"type":"pull-response","id":"broadcast_"#) {
                    let now = Instant::now();
                    let mut recorded = recorded.lock().await;
                    for part in text.split(r#""documentId":""#).skip(1) {
                        let id = part.split('"').next().unwrap_or_default();
                        recorded.push((id.to_owned(), now));
                    }
                } else if replies.send(text.to_string()).is_err() {
                    return;
                }
            }
        });
        let pull = serde_json::json!({"type": "pull", "id": format!("pull-{n}"), "timestamp": 0,
            "collections": [collection], "checkpoint": {"id": format!("n{n}_0"), "sequences": {}, "timestamp": 0,
            "nodeId": format!("n{n}")}, "limit": 1});
        sink.send(Message::text(pull.to_string())).await?;
        let mut client = Client { sink, reply, arrivals, node: format!("n{n}") };
        let answer = client.reply().await?;
        anyhow::ensure!(answer.contains(r#""type":"pull-response""#), "pull refused: {answer}");
        clients.push(client);
    }

    let pushers = options.pushers.min(options.clients).max(1);
    let interval = options.rate.map(|rate| Duration::from_secs_f64(pushers as f64 / rate));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.seconds);
    let mut followers = Vec::new();
    // Clients that only follow; kept open until the end.
    let mut open = Vec::new();
    let mut tasks = Vec::new();
    for (n, mut client) in clients.into_iter().enumerate() {
        followers.push(client.arrivals.clone());
        if n >= pushers {
            open.push(client);
            continue;
        }
        let collection = collection.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            // Paced pushers are spread evenly over the interval, not fired together.
            let mut next = started + interval.map_or(Duration::ZERO, |i| i.mul_f64(n as f64 / pushers as f64));
            let mut i = 0u64;
            while Instant::now() < deadline {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let id = format!("{}-{i}", client.node);
                let at = Instant::now();
                let push = serde_json::json!({"type": "push", "id": id, "timestamp": 0, "collection": collection,
                    "changes": [{"operation": "insert", "documentId": id, "document": {"_id": id, "title": "a benchmark document",
                    "done": false, "_rev": "1-bench", "_createdAt": 0, "_updatedAt": 0, "_vclock": {&client.node: 1}},
                    "isFromSync": false, "timestamp": 0, "sequence": i + 1}],
                    "checkpoint": {"id": format!("{}_0", client.node), "sequences": {}, "timestamp": 0, "nodeId": client.node}});
                client.sink.send(Message::text(push.to_string())).await?;
                let answer = client.reply().await?;
                anyhow::ensure!(answer.contains(r#""success":true"#), "push refused: {answer}");
                sent.push((id, at, at.elapsed()));
                i += 1;
            }
            Ok::<_, anyhow::Error>((sent, client))
        }));
    }
    let mut sent: Vec<(String, Instant, Duration, usize)> = Vec::new();
    for (n, task) in tasks.into_iter().enumerate() {
        let (pushed, client) = task.await??;
        open.push(client);
        sent.extend(pushed.into_iter().map(|(id, at, ack)| (id, at, ack, n)));
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the last broadcasts arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let sent_at: HashMap<&str, (Instant, usize)> = sent.iter().map(|(id, at, _, n)| (id.as_str(), (*at, *n))).collect();
    let mut broadcast = Vec::new();
    for (n, arrivals) in followers.iter().enumerate() {
        for (id, at) in arrivals.lock().await.iter() {
            if let Some((sent, from)) = sent_at.get(id.as_str()) {
                if *from != n {
                    broadcast.push(at.saturating_duration_since(*sent));
                }
            }
        }
    }
    let mut acks: Vec<Duration> = sent.iter().map(|(_, _, ack, _)| *ack).collect();
    acks.sort();
    broadcast.sort();
    let expected = sent.len() * (options.clients - 1);
    let pct = |v: &[Duration], p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).map_or(0.0, |d| ms(*d))
    };
    let pushes_per_sec = sent.len() as f64 / elapsed;
    println!("mode    clients  pushers  pushes  pushes/s  p50 ack   p99 ack   broadcasts  p50 bcast  p99 bcast");
    println!(
        "pocket  {:>7}  {pushers:>7}  {:>6}  {pushes_per_sec:>8.0}  {:>6.2}ms  {:>6.2}ms  {:>5}/{:<5}  {:>7.2}ms  {:>7.2}ms",
        options.clients,
        sent.len(),
        pct(&acks, 0.5),
        pct(&acks, 0.99),
        broadcast.len(),
        expected,
        pct(&broadcast, 0.5),
        pct(&broadcast, 0.99),
    );
    println!(
        "{}",
        serde_json::json!({"mode": "pocket", "clients": options.clients, "pushers": pushers, "rate": options.rate,
            "seconds": elapsed, "pushes": sent.len(), "pushes_per_sec": pushes_per_sec,
            "ack_ms": {"p50": pct(&acks, 0.5), "p99": pct(&acks, 0.99)},
            "broadcasts": broadcast.len(), "broadcasts_expected": expected,
            "broadcast_ms": {"p50": pct(&broadcast, 0.5), "p99": pct(&broadcast, 0.99)}})
    );
    drop(open);
    Ok(())
}

struct Client {
    sink: futures_util::stream::SplitSink<super::Socket, Message>,
    reply: mpsc::UnboundedReceiver<String>,
    arrivals: Arrivals,
    node: String,
}

impl Client {
    async fn reply(&mut self) -> anyhow::Result<String> {
        self.reply.recv().await.ok_or_else(|| anyhow::anyhow!("the socket closed"))
    }
}
