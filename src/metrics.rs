//! Prometheus metrics, one registry per running server (so tests that run several servers in one
//! process see their own numbers), rendered at `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::eventlog::Protocol;

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    connections: Family<ProtocolLabel, Gauge>,
    http_connections: Gauge,
    connections_closed: Family<ClosedLabels, Counter>,
    events_appended: Counter,
    appends_rejected: Counter,
    append_latency: Histogram,
    commit_group_size: Histogram,
    deliveries: Counter,
    slow_consumer_disconnects: Family<ReasonLabel, Counter>,
    auth_expiries: Family<ProtocolLabel, Counter>,
    fanout: FanOutMetrics,
    resident_memory: Gauge,
    redis_up: Gauge,
    jwks_fetches: Family<ResultLabel, Counter>,
}

/// What the Redis fan-out did; all zero on a single instance.
#[derive(Default)]
struct FanOutMetrics {
    frames_published: Counter,
    messages_published: Counter,
    messages_dropped: Counter,
    messages_received: Counter,
    bad_frames: Counter,
    recovered_from_change_log: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a slow consumer was disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Its queue (of live batches, or of frames for its socket) passed its limit in messages or
    /// bytes: it fell too far behind.
    Lagged,
    /// Its socket accepted no bytes for `limits.write_stall_timeout_secs` while Junction had
    /// something to send: it stopped reading.
    Stalled,
}

impl SlowConsumer {
    const ALL: [SlowConsumer; 2] = [SlowConsumer::Lagged, SlowConsumer::Stalled];

    fn as_str(self) -> &'static str {
        match self {
            SlowConsumer::Lagged => "lagged",
            SlowConsumer::Stalled => "stalled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClosedLabels {
    /// `http` for plain-HTTP connections, else the WebSocket's protocol.
    protocol: &'static str,
    reason: &'static str,
}

/// Why Junction closed a connection it would otherwise have kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A request head did not arrive in time (`limits.http_header_timeout_secs`).
    HeaderTimeout,
    /// No byte moved for `limits.http_idle_timeout_secs`.
    IdleTimeout,
    /// Closed to make room for a new connection at `limits.max_http_connections`.
    Evicted,
    /// Not served: at `limits.max_http_connections` with none to close instead.
    Refused,
    /// Did not authenticate within `limits.auth_deadline_secs`.
    AuthDeadline,
    /// Kept sending over `limits.messages_per_second` past `limits.flood_grace_secs`.
    Flooding,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Evicted => "evicted",
            CloseReason::Refused => "refused",
            CloseReason::AuthDeadline => "auth_deadline",
            CloseReason::Flooding => "flooding",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("junction");
        let connections = Family::<ProtocolLabel, Gauge>::default();
        registry.register("connections", "Open client connections", connections.clone());
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "Open plain-HTTP connections (not upgraded to WebSocket)",
            http_connections.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections Junction closed by its limits, by protocol (http for plain HTTP) and reason",
            connections_closed.clone(),
        );
        let events_appended = Counter::default();
        registry.register("events_appended", "Events committed to the event log", events_appended.clone());
        let appends_rejected = Counter::default();
        registry.register(
            "appends_rejected",
            "Append requests refused because the store head had moved",
            appends_rejected.clone(),
        );
        // 100 µs to ~3.3 s: from an in-memory SQLite commit to a Postgres under load.
        let append_latency = Histogram::new([0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.3]);
        registry.register(
            "append_latency_seconds",
            "Time from an append request to its commit",
            append_latency.clone(),
        );
        let commit_group_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]);
        registry.register(
            "commit_group_size",
            "Append requests committed together in one transaction",
            commit_group_size.clone(),
        );
        let deliveries = Counter::default();
        registry.register("deliveries", "Events handed to subscribers", deliveries.clone());
        let slow_consumer_disconnects = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "slow_consumer_disconnects",
            "Consumers closed because they fell too far behind (lagged) or stopped reading (stalled)",
            slow_consumer_disconnects.clone(),
        );
        let auth_expiries = Family::<ProtocolLabel, Counter>::default();
        registry.register(
            "auth_expiries",
            "Sockets and event-API streams closed because their token expired",
            auth_expiries.clone(),
        );
        // Both reasons are shown from the start, at 0, so that alerts need no absent() clause.
        for reason in SlowConsumer::ALL {
            let _ = slow_consumer_disconnects.get_or_create(&ReasonLabel { reason: reason.as_str() });
        }
        let fanout = FanOutMetrics::default();
        for (name, help, counter) in [
            ("fanout_frames_published", "Frames published to Redis", &fanout.frames_published),
            ("fanout_messages_published", "Messages published to Redis", &fanout.messages_published),
            (
                "fanout_messages_dropped",
                "Messages not published because Redis was unreachable or the queue was full",
                &fanout.messages_dropped,
            ),
            ("fanout_messages_received", "Messages received from other instances", &fanout.messages_received),
            ("fanout_bad_frames", "Frames from Redis that could not be decoded", &fanout.bad_frames),
            (
                "fanout_recovered_from_change_log",
                "Batches of other instances found in the change log because Redis did not bring them",
                &fanout.recovered_from_change_log,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the Junction process (Linux; read when /metrics is scraped)",
            resident_memory.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "redis_up",
            "1 while Redis carries the fan-out, 0 while it is unreachable and the change log does \
             (only with Redis configured; read when /metrics is scraped)",
            redis_up.clone(),
        );
        let jwks_fetches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Fetches of the identity provider's key set (auth.jwks_url), by result (ok, error)",
            jwks_fetches.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                fanout,
                registry,
                connections,
                http_connections,
                connections_closed,
                events_appended,
                appends_rejected,
                append_latency,
                commit_group_size,
                deliveries,
                slow_consumer_disconnects,
                auth_expiries,
                resident_memory,
                redis_up,
                jwks_fetches,
            }),
        }
    }

    /// Counts a connection of `protocol` for as long as the returned guard lives.
    pub fn connection(&self, protocol: Protocol) -> ConnectionGuard {
        let gauge = self.inner.connections.get_or_create(&ProtocolLabel { protocol: protocol.as_str() }).clone();
        gauge.inc();
        ConnectionGuard { gauge }
    }

    pub fn set_http_connections(&self, open: usize) {
        self.inner.http_connections.set(open as i64);
    }

    /// Counts a connection closed by one of Junction's limits; `protocol` is `"http"` for plain
    /// HTTP, else a WebSocket protocol's name.
    pub fn connection_closed(&self, protocol: &'static str, reason: CloseReason) {
        self.inner.connections_closed.get_or_create(&ClosedLabels { protocol, reason: reason.as_str() }).inc();
    }

    pub fn appended(&self, events: usize, latency: Duration) {
        self.inner.events_appended.inc_by(events as u64);
        self.inner.append_latency.observe(latency.as_secs_f64());
    }

    pub fn append_rejected(&self) {
        self.inner.appends_rejected.inc();
    }

    pub fn commit_group(&self, requests: usize) {
        self.inner.commit_group_size.observe(requests as f64);
    }

    pub fn delivered(&self, events: usize) {
        self.inner.deliveries.inc_by(events as u64);
    }

    pub fn slow_consumer_disconnected(&self, reason: SlowConsumer) {
        self.inner.slow_consumer_disconnects.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc();
    }

    /// A socket (or an event-API stream: `"api"`) closed because its token expired.
    pub fn auth_expired(&self, surface: &'static str) {
        self.inner.auth_expiries.get_or_create(&ProtocolLabel { protocol: surface }).inc();
    }

    pub fn fanout_published(&self, frames: usize, messages: usize) {
        self.inner.fanout.frames_published.inc_by(frames as u64);
        self.inner.fanout.messages_published.inc_by(messages as u64);
    }

    pub fn fanout_dropped(&self, messages: usize) {
        self.inner.fanout.messages_dropped.inc_by(messages as u64);
    }

    pub fn fanout_received(&self, messages: usize) {
        self.inner.fanout.messages_received.inc_by(messages as u64);
    }

    pub fn fanout_bad_frame(&self) {
        self.inner.fanout.bad_frames.inc();
    }

    pub fn fanout_recovered(&self, batches: usize) {
        self.inner.fanout.recovered_from_change_log.inc_by(batches as u64);
    }

    /// A fetch of the identity provider's key set (`auth.jwks_url`) ended.
    pub fn jwks_fetched(&self, ok: bool) {
        self.inner.jwks_fetches.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    pub fn set_redis_up(&self, up: bool) {
        self.inner.redis_up.set(i64::from(up));
    }

    /// The registry in the Prometheus / OpenMetrics text format.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_bytes() {
            self.inner.resident_memory.set(bytes);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry).expect("writing to a String");
        out
    }
}

/// VmRSS from /proc/self/status: what load tests divide by connections held.
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Keeps a connection counted; decrements the gauge when dropped.
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
