//! Fan-out across instances: Redis pub/sub for speed, the sequenced change log for certainty.
//!
//! # Fast path
//!
//! [`FanOut::publish`] hands a committed batch to this instance's hub at once and queues it for
//! the publisher task, which drains the queue and sends whatever accumulated as one frame (or a
//! few) in one pipelined round trip: while a round trip is in flight the next frame fills up, so
//! Redis latency does not bound throughput. Every instance holds one subscription to one channel,
//! `<channel_prefix>:fanout`, and hands each message to its hub, which drops it at once for a
//! store with no local subscriber. Frames carry the sender's [`InstanceId`]; an instance skips
//! its own (its hub already has them). Batches travel with their events up to
//! `redis.inline_max_bytes`; larger ones travel as a notice and receivers read storage.
//!
//! # Certainty
//!
//! Redis may lose a message: it restarts, a connection drops, the publish queue overflows, or an
//! instance dies between its commit and its publish. Subscriptions already repair gaps they can
//! see (a batch continuing from beyond their cursor sends them to storage), but nothing tells a
//! subscriber about a lost message that nothing follows. So each instance tracks which
//! change-log positions it has delivered ([`ChangeWatermark`]) and reads the change log for the
//! rest, handing its hub a [`LiveMessage::Advanced`] per store that moved:
//!
//! - while subscribed, every `redis.check_interval_ms` it reads the change-log head (one row) and
//!   fills whatever committed before the *previous* check has still not arrived;
//! - while Redis is unreachable, every `redis.poll_interval_ms` it fills everything up to the
//!   current head: local clients keep being served, remote writes arrive with poll latency, and
//!   `/health/ready` reports Redis as degraded (the instance stays ready);
//! - right after (re)subscribing it fills up to the head read *after* the subscription took
//!   effect: anything committed later is published later, so reaches the subscription.
//!
//! Delivery stays exact because subscriptions drop what they already have and read storage for
//! what they lack; a message both filled and received is delivered to the hub once.
//!
//! Why poll rather than Postgres `LISTEN/NOTIFY`: notifications are lost while the listening
//! connection is down, so a poll is needed anyway to cover reconnects; `NOTIFY` serializes every
//! committing transaction on one global queue lock; and the change log already says exactly what
//! is missing, on SQLite as well. The check while healthy costs one single-row read per second.
//!
//! Resets leave no trace in the change log, so the publisher holds back the resets it could not
//! publish and sends them first once Redis answers again. Only if the resetting instance dies
//! before that do the other instances' subscribers learn of the reset later, at the next append
//! to that store (whose backend id differs from theirs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::watermark::ChangeWatermark;
use super::wire::{self, Incoming, InstanceId, Outgoing};
use super::{EphemeralFeed, FanOut, Hub, LiveMessage};
use crate::config::RedisConfig;
use crate::eventlog::{ChangePos, EventLog, EventLogError, SeqNum, StoreId};
use crate::metrics::Metrics;

/// Most queued messages one publish round trip takes.
const PUBLISH_BATCH: usize = 4096;
/// A frame is closed at this size; several frames go in one pipelined round trip.
const FRAME_MAX_BYTES: usize = 512 * 1024;
/// Change-log entries read per query when filling.
const FILL_PAGE: u32 = 1000;
/// Bound on connecting, and on each Redis command.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Most resets held back while Redis is unreachable.
const HELD_RESETS_MAX: usize = 10_000;
/// How long shutdown waits for the publisher to send what is queued.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// The `[redis]` settings the fan-out works with.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub client: redis::Client,
    /// The one channel every instance publishes to and subscribes to.
    pub channel: String,
    pub inline_max_bytes: usize,
    pub publish_queue: usize,
    pub poll_interval: Duration,
    pub check_interval: Duration,
}

impl RedisOptions {
    pub fn from_config(config: &RedisConfig) -> redis::RedisResult<RedisOptions> {
        Ok(RedisOptions {
            client: client(config)?,
            channel: format!("{}:fanout", config.channel_prefix),
            inline_max_bytes: config.inline_max_bytes,
            publish_queue: config.publish_queue,
            poll_interval: Duration::from_millis(config.poll_interval_ms),
            check_interval: Duration::from_millis(config.check_interval_ms),
        })
    }
}

/// A client for `redis.url`. `rediss://` URLs use TLS, trusting the system's certificate
/// authorities, or only the one in `redis.ca_file` when it is set (a private CA).
fn client(config: &RedisConfig) -> redis::RedisResult<redis::Client> {
    if config.ca_file.is_empty() {
        return redis::Client::open(config.url.as_str());
    }
    let root_cert = std::fs::read(&config.ca_file).map_err(|error| {
        let detail = format!("{}: {error}", config.ca_file);
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "cannot read redis.ca_file", detail))
    })?;
    let certificates = redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) };
    redis::Client::build_with_tls(config.url.as_str(), certificates)
}

/// Fan-out through Redis (see the module docs). Created before the event log, whose committer
/// publishes to it, and [started](RedisFanOut::start) with the log once that exists.
pub struct RedisFanOut {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Outgoing>,
    queued: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    receiving: CancellationToken,
    publishing: CancellationToken,
    receivers: Mutex<Vec<JoinHandle<()>>>,
    publisher: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    instance: InstanceId,
    hub: Arc<Hub>,
    metrics: Metrics,
    options: RedisOptions,
    seen: Mutex<ChangeWatermark>,
    health: Mutex<Health>,
    /// One fill at a time: the subscriber's after (re)subscribing and the watcher's.
    filling: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Health {
    subscribed: bool,
    /// Why the subscription is down, once it failed.
    subscription_error: Option<String>,
    /// Why the last publish failed, until one succeeds again.
    publish_error: Option<String>,
}

impl RedisFanOut {
    pub fn new(options: RedisOptions, hub: Arc<Hub>, metrics: Metrics) -> Arc<RedisFanOut> {
        let (queue, queued) = mpsc::channel(options.publish_queue);
        let shared = Arc::new(Shared {
            instance: InstanceId::random(),
            hub,
            metrics,
            options,
            seen: Mutex::new(ChangeWatermark::new(ChangePos(0))),
            health: Mutex::new(Health::default()),
            filling: tokio::sync::Mutex::new(()),
        });
        Arc::new(RedisFanOut {
            shared,
            queue,
            queued: Mutex::new(Some(queued)),
            receiving: CancellationToken::new(),
            publishing: CancellationToken::new(),
            receivers: Mutex::new(Vec::new()),
            publisher: Mutex::new(None),
        })
    }

    /// Starts publishing, subscribing and watching the change log of `log`. Returns once the
    /// change-log head is read; Redis need not be reachable (the instance then starts degraded).
    pub async fn start(&self, log: EventLog) -> Result<(), EventLogError> {
        let head = log.change_log_head().await?;
        *self.shared.seen.lock().expect("seen lock") = ChangeWatermark::new(head);
        let queued = self.queued.lock().expect("queue lock").take().expect("started once");
        let publisher = tokio::spawn(publish(self.shared.clone(), queued, self.publishing.clone()));
        *self.publisher.lock().expect("publisher lock") = Some(publisher);
        let subscriber = tokio::spawn(subscribe(self.shared.clone(), log.clone(), self.receiving.clone()));
        let watcher = tokio::spawn(watch_change_log(self.shared.clone(), log, self.receiving.clone()));
        self.receivers.lock().expect("receivers lock").extend([subscriber, watcher]);
        Ok(())
    }

    /// Stops the subscription and the change-log watch (before the event log closes its storage).
    pub async fn stop_receiving(&self) {
        self.receiving.cancel();
        let receivers: Vec<_> = self.receivers.lock().expect("receivers lock").drain(..).collect();
        for task in receivers {
            let _ = task.await;
        }
    }

    /// Publishes what is still queued (the last commits of a draining event log), then stops.
    pub async fn shutdown(&self) {
        self.stop_receiving().await;
        self.publishing.cancel();
        let publisher = self.publisher.lock().expect("publisher lock").take();
        if let Some(mut publisher) = publisher {
            if tokio::time::timeout(FLUSH_GRACE, &mut publisher).await.is_err() {
                tracing::warn!("redis fan-out: queued messages not published within the shutdown grace");
                publisher.abort();
            }
        }
    }

    fn enqueue(&self, message: Outgoing) {
        match self.queue.try_send(message) {
            Ok(()) => {}
            // The change log covers lost batches (see the module docs).
            Err(mpsc::error::TrySendError::Full(_)) => self.shared.metrics.fanout_dropped(1),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl FanOut for RedisFanOut {
    fn publish(&self, message: Arc<LiveMessage>) {
        if let LiveMessage::Batch(batch) = &*message {
            self.shared.seen.lock().expect("seen lock").saw(batch.change_pos());
        }
        self.shared.hub.deliver(&message);
        self.enqueue(Outgoing::Live(message));
    }

    fn publish_ephemeral(&self, topic: &str, payload: Bytes) {
        self.shared.hub.deliver_ephemeral(topic, payload.clone());
        self.enqueue(Outgoing::Ephemeral { topic: topic.into(), payload });
    }

    fn subscribe_ephemeral(&self, topic: &str) -> EphemeralFeed {
        self.shared.hub.subscribe_ephemeral(topic)
    }

    fn problem(&self) -> Option<String> {
        let health = self.shared.health.lock().expect("health lock");
        if let Some(error) = &health.publish_error {
            return Some(format!("publishing to redis fails: {error}"));
        }
        if !health.subscribed {
            return Some(match &health.subscription_error {
                Some(error) => format!("not subscribed to redis: {error}"),
                None => "connecting to redis".to_owned(),
            });
        }
        None
    }
}

impl Shared {
    /// Hands the messages of a frame from another instance to the hub.
    fn receive(&self, payload: &[u8]) {
        let wanted = |store| self.hub.subscriber_count(store) > 0;
        let frame = match wire::decode_for(payload, &wanted) {
            Ok(frame) => frame,
            Err(error) => {
                // What it carried is recovered from the change log.
                self.metrics.fanout_bad_frame();
                tracing::warn!(%error, "redis fan-out: skipping a frame");
                return;
            }
        };
        if frame.origin == self.instance {
            return;
        }
        self.metrics.fanout_received(frame.messages.len());
        for message in frame.messages {
            match message {
                Incoming::Live { position, message } => {
                    // Already filled from the change log: the hub has had it.
                    if let Some(position) = position
                        && !self.seen.lock().expect("seen lock").saw(position)
                    {
                        continue;
                    }
                    self.hub.deliver(&Arc::new(message));
                }
                // Nobody here follows the store: a subscriber arriving later reads storage.
                Incoming::Unwanted { position } => {
                    self.seen.lock().expect("seen lock").saw(position);
                }
                Incoming::Ephemeral { topic, payload } => self.hub.deliver_ephemeral(&topic, payload),
            }
        }
    }

    /// Reads the change log from the first position not yet delivered up to `target` (the current
    /// head when `None`) and tells the hub about every store that moved there.
    async fn fill(&self, log: &EventLog, target: Option<ChangePos>) -> Result<(), EventLogError> {
        let _one_at_a_time = self.filling.lock().await;
        let target = match target {
            Some(target) => target,
            None => log.change_log_head().await?,
        };
        loop {
            let after = self.seen.lock().expect("seen lock").complete_up_to();
            if after >= target {
                return Ok(());
            }
            let marks = log.read_change_marks(after, target, FILL_PAGE).await?;
            let full_page = marks.len() == FILL_PAGE as usize;
            let reached = match marks.last() {
                Some(last) if full_page => last.position,
                _ => target,
            };
            // One notice per store, with its highest head: a subscriber reads storage once.
            let mut moved: Vec<(StoreId, Arc<str>, SeqNum)> = Vec::new();
            let mut index: HashMap<StoreId, usize> = HashMap::new();
            let mut seen = self.seen.lock().expect("seen lock");
            let mut recovered = 0;
            for mark in marks {
                if !seen.saw(mark.position) {
                    continue;
                }
                recovered += 1;
                match index.get(&mark.store) {
                    Some(&i) => moved[i] = (mark.store, mark.backend_id, mark.last_seq),
                    None => {
                        index.insert(mark.store, moved.len());
                        moved.push((mark.store, mark.backend_id, mark.last_seq));
                    }
                }
            }
            seen.complete_to(reached);
            drop(seen);
            if recovered > 0 {
                self.metrics.fanout_recovered(recovered);
                tracing::debug!(batches = recovered, stores = moved.len(), "redis fan-out: filled from the change log");
            }
            for (store, backend_id, head) in moved {
                self.hub.deliver(&Arc::new(LiveMessage::Advanced { store, backend_id, head }));
            }
            if !full_page {
                return Ok(());
            }
        }
    }

    fn is_subscribed(&self) -> bool {
        self.health.lock().expect("health lock").subscribed
    }

    fn subscribed(&self) {
        let mut health = self.health.lock().expect("health lock");
        if health.subscription_error.take().is_some() {
            tracing::info!(channel = %self.options.channel, "redis fan-out: subscribed again; back on redis");
        } else {
            tracing::info!(channel = %self.options.channel, "redis fan-out: subscribed");
        }
        health.subscribed = true;
    }

    fn subscription_failed(&self, error: String) {
        let mut health = self.health.lock().expect("health lock");
        if health.subscribed || health.subscription_error.is_none() {
            tracing::warn!(
                %error,
                poll_ms = self.options.poll_interval.as_millis() as u64,
                "redis fan-out: not subscribed; serving local clients and polling the change log for \
                 other instances' writes until redis is back"
            );
        } else {
            tracing::debug!(%error, "redis fan-out: still not subscribed");
        }
        health.subscribed = false;
        health.subscription_error = Some(error);
    }

    fn publish_succeeded(&self) {
        let mut health = self.health.lock().expect("health lock");
        if health.publish_error.take().is_some() {
            tracing::info!("redis fan-out: publishing again");
        }
    }

    fn publish_failed(&self, error: String) {
        let mut health = self.health.lock().expect("health lock");
        if health.publish_error.is_none() {
            tracing::warn!(%error, "redis fan-out: cannot publish; other instances will find this instance's writes in the change log");
        }
        health.publish_error = Some(error);
    }

    fn publisher_failing(&self) -> bool {
        self.health.lock().expect("health lock").publish_error.is_some()
    }
}

/// Exponential retry delays between `RETRY_MIN` and `RETRY_MAX`.
struct Retry {
    delay: Duration,
    next: Instant,
}

impl Retry {
    fn new() -> Retry {
        Retry { delay: RETRY_MIN, next: Instant::now() }
    }

    fn failed(&mut self) {
        self.next = Instant::now() + self.delay;
        self.delay = (self.delay * 2).min(RETRY_MAX);
    }

    fn succeeded(&mut self) {
        self.delay = RETRY_MIN;
    }
}

/// The publisher task: drains the queue, one pipelined round trip per drain.
async fn publish(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>, stop: CancellationToken) {
    let limits = wire::Limits { inline_max_bytes: shared.options.inline_max_bytes, frame_max_bytes: FRAME_MAX_BYTES };
    let mut connection: Option<MultiplexedConnection> = None;
    let mut retry = Retry::new();
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    // Resets not published yet: unlike batches, nothing else would tell the other instances.
    let mut held_resets: Vec<Outgoing> = Vec::new();
    loop {
        // Once stopping, take nothing new but publish what is queued.
        if stop.is_cancelled() && !queue.is_closed() {
            queue.close();
        }
        tokio::select! {
            received = queue.recv_many(&mut batch, PUBLISH_BATCH) => {
                if received == 0 {
                    return;
                }
            }
            _ = stop.cancelled(), if !queue.is_closed() => continue,
            // Reconnect while idle too, so that readiness recovers (and held resets go out)
            // without waiting for a write.
            _ = tokio::time::sleep_until(retry.next), if connection.is_none() && shared.publisher_failing() => {}
        }
        if connection.is_none() && Instant::now() >= retry.next {
            connection = connect_publisher(&shared, &mut retry).await;
        }
        let Some(redis) = connection.as_mut() else {
            hold_resets(&mut held_resets, &batch);
            shared.metrics.fanout_dropped(batch.len());
            batch.clear();
            continue;
        };
        batch.splice(0..0, held_resets.drain(..));
        if batch.is_empty() {
            continue;
        }
        let frames = wire::encode(shared.instance, &batch, limits);
        let mut pipeline = redis::pipe();
        for frame in &frames {
            pipeline.cmd("PUBLISH").arg(&shared.options.channel).arg(frame.as_ref()).ignore();
        }
        match pipeline.query_async::<()>(redis).await {
            Ok(()) => {
                shared.metrics.fanout_published(frames.len(), batch.len());
                shared.publish_succeeded();
            }
            Err(error) => {
                hold_resets(&mut held_resets, &batch);
                shared.metrics.fanout_dropped(batch.len());
                shared.publish_failed(error.to_string());
                connection = None;
                retry.failed();
            }
        }
        batch.clear();
    }
}

/// Keeps the resets of an unpublished batch (up to `HELD_RESETS_MAX`) for the next publish.
fn hold_resets(held: &mut Vec<Outgoing>, unpublished: &[Outgoing]) {
    for message in unpublished {
        if let Outgoing::Live(live) = message
            && matches!(**live, LiveMessage::Reset { .. })
        {
            if held.len() >= HELD_RESETS_MAX {
                tracing::warn!("redis fan-out: too many unpublished resets; dropping one");
                continue;
            }
            held.push(message.clone());
        }
    }
}

async fn connect_publisher(shared: &Shared, retry: &mut Retry) -> Option<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let attempt = async {
        let mut connection = shared.options.client.get_multiplexed_async_connection_with_config(&config).await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await?;
        Ok::<_, redis::RedisError>(connection)
    };
    match tokio::time::timeout(REDIS_TIMEOUT * 2, attempt).await {
        Ok(Ok(connection)) => {
            retry.succeeded();
            shared.publish_succeeded();
            Some(connection)
        }
        Ok(Err(error)) => {
            shared.publish_failed(error.to_string());
            retry.failed();
            None
        }
        Err(_) => {
            shared.publish_failed("no connection within the timeout".into());
            retry.failed();
            None
        }
    }
}

/// The subscriber task: one subscription, kept alive, re-made (and caught up) after every loss.
async fn subscribe(shared: Arc<Shared>, log: EventLog, stop: CancellationToken) {
    let mut retry = Retry::new();
    loop {
        let attempt = async {
            let mut pubsub = shared.options.client.get_async_pubsub().await?;
            pubsub.subscribe(&shared.options.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let connected = tokio::select! {
            connected = tokio::time::timeout(REDIS_TIMEOUT, attempt) => connected,
            _ = stop.cancelled() => return,
        };
        let error = match connected {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut messages) = pubsub.split();
                // Published from now on: arrives here. Committed before: in the change log.
                match shared.fill(&log, None).await {
                    Err(error) => format!("catching up from the change log failed: {error}"),
                    Ok(()) => {
                        shared.subscribed();
                        retry.succeeded();
                        let mut ping = tokio::time::interval(shared.options.check_interval);
                        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tokio::select! {
                                message = messages.next() => match message {
                                    Some(message) => shared.receive(message.get_payload_bytes()),
                                    None => break "the connection closed".to_owned(),
                                },
                                // A silent connection may be a dead one. (In subscribed mode PING
                                // answers ["pong", ""].)
                                _ = ping.tick() => {
                                    match tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await {
                                        Ok(Ok(_)) => {}
                                        Ok(Err(error)) => break error.to_string(),
                                        Err(_) => break "no answer to PING".to_owned(),
                                    }
                                }
                                _ = stop.cancelled() => return,
                            }
                        }
                    }
                }
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no connection within the timeout".to_owned(),
        };
        shared.subscription_failed(error);
        retry.failed();
        tokio::select! {
            _ = tokio::time::sleep_until(retry.next) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The change-log watch: a check while subscribed, a poll while not (see the module docs).
async fn watch_change_log(shared: Arc<Shared>, log: EventLog, stop: CancellationToken) {
    let mut previous_head: Option<ChangePos> = None;
    loop {
        let interval =
            if shared.is_subscribed() { shared.options.check_interval } else { shared.options.poll_interval };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let head = match log.change_log_head().await {
            Ok(head) => head,
            Err(error) => {
                tracing::warn!(%error, "redis fan-out: cannot read the change-log head");
                continue;
            }
        };
        // Subscribed: what committed before the last check should have arrived by now.
        let target = if shared.is_subscribed() { previous_head } else { Some(head) };
        previous_head = Some(head);
        if let Some(target) = target
            && let Err(error) = shared.fill(&log, Some(target)).await
        {
            tracing::warn!(%error, "redis fan-out: cannot read the change log");
        }
    }
}
