//! Accepting TCP connections and serving HTTP/1.1 on them, with limits that a client holding
//! connections open without finishing its requests (slowloris) cannot get around:
//!
//! - a request's head must arrive within `limits.http_header_timeout_secs` of when the server
//!   starts waiting for it, on a new connection and between requests on a kept-alive one;
//! - a connection that moves no byte either way for `limits.http_idle_timeout_secs` is closed
//!   (a stalled upload, a client that stopped reading its response);
//! - at most `limits.max_http_connections` plain-HTTP connections are open at once. At the
//!   limit, the connection that has waited longest for a request is closed to make room, so a
//!   flood of half-open connections pushes out its own oldest members rather than health checks
//!   and WebSocket upgrades, which send their request at once. The same happens when the process
//!   runs out of file descriptors.
//!
//! A connection upgraded to WebSocket leaves these limits when the upgrade completes; from then
//! on it holds one of `limits.max_connections` ([`crate::server::AppState::admit`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::LimitsConfig;
use crate::metrics::{CloseReason, Metrics};
use crate::stall::StallGuard;

const HTTP: &str = "http";

/// Accepts connections until `stop` is cancelled, serving each on a task of `tracker`. Once
/// `shutdown` is cancelled, every connection finishes the request it is serving and closes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &LimitsConfig,
    metrics: Metrics,
    stop: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let connections = Arc::new(HttpConnections::new(limits.max_http_connections, metrics.clone()));
    let timeouts = Timeouts {
        header: Duration::from_secs(limits.http_header_timeout_secs),
        idle: Duration::from_secs(limits.http_idle_timeout_secs),
    };
    let stall_timeout = Duration::from_secs(limits.write_stall_timeout_secs);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors (EMFILE/ENFILE), most likely: closing the connection
                // that has waited longest for a request gives one back.
                let freed = connections.evict_oldest_waiting();
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(%error, closed_a_waiting_connection = freed, "accept failed");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(if freed { 5 } else { 100 })).await;
                continue;
            }
        };
        let Some(connection) = connections.admit() else {
            // At the limit and nobody waiting for a request: every connection is serving one.
            drop(tcp);
            continue;
        };
        // Replies are small frames sent between live deliveries on the same socket: with Nagle's
        // algorithm a reply waits for the client's delayed ACK (up to 40 ms).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        // Whatever this connection becomes (a request, an SSE stream, a WebSocket), it is closed
        // once its client stops reading while Junction has bytes for it.
        let tcp = StallGuard::new(tcp, stall_timeout, metrics.clone());
        tracker.spawn(serve_connection(tcp, app.clone(), connection, timeouts, shutdown.clone()));
    }
    shutdown.cancel();
}

#[derive(Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
}

async fn serve_connection(
    tcp: StallGuard<TcpStream>,
    app: Router,
    connection: HttpConnection,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) {
    let connection = Arc::new(connection);
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        inner: Some(tcp),
        activity: activity.clone(),
        finished: false,
        connection: connection.clone(),
    });
    let service = {
        let connection = connection.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let serving = RequestInFlight::start(connection.clone());
            let app = app.clone();
            async move {
                let mut response = app.oneshot(request.map(Body::new)).await.unwrap_or_else(|never| match never {});
                if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    // The body was refused unread, so this connection cannot carry another
                    // request: say so, or the client's pool sends its next one into the close.
                    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                // The connection stays busy until the body is sent (an SSE stream for hours).
                Ok::<Response, Infallible>(response.map(|body| Body::new(BusyUntilSent { body, _serving: serving })))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header);
    let mut served = pin!(builder.serve_connection(io, service).with_upgrades());
    let mut shutting_down = false;
    let evicted = connection.slot.evicted.clone();
    loop {
        let idle_deadline = activity.last() + timeouts.idle;
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    if error.is_timeout() {
                        connection.metrics().connection_closed(HTTP, CloseReason::HeaderTimeout);
                    } else {
                        tracing::trace!(%error, "HTTP connection ended with an error");
                    }
                }
                return;
            }
            _ = evicted.cancelled() => return,
            _ = tokio::time::sleep_until(idle_deadline.into()) => {
                if activity.last() + timeouts.idle <= Instant::now() {
                    connection.metrics().connection_closed(HTTP, CloseReason::IdleTimeout);
                    return;
                }
            }
            _ = shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last moved a byte (in either direction).
#[derive(Clone)]
struct Activity {
    since: Instant,
    /// Milliseconds after `since`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity { since: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        self.last_ms.store(self.since.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that records when bytes move through it.
struct Watched {
    /// Taken by `Drop` to linger; always there before.
    inner: Option<StallGuard<TcpStream>>,
    activity: Activity,
    /// Hyper shut the write side down: the last response is out and the connection ends.
    finished: bool,
    /// Keeps the connection counted while it lingers.
    connection: Arc<HttpConnection>,
}

impl Watched {
    fn inner(&mut self) -> Pin<&mut StallGuard<TcpStream>> {
        Pin::new(self.inner.as_mut().expect("taken only on drop"))
    }
}

/// How long, and for how many bytes, a finished connection keeps reading what the client still
/// sends. Closing a socket with unread bytes makes the kernel send a reset, which can destroy
/// the response before the client reads it: a client posting a body over the limit got "broken
/// pipe" instead of the 413. Reading on for a moment lets the response arrive, as nginx's
/// lingering close does.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024 * 1024;

impl Drop for Watched {
    fn drop(&mut self) {
        let (Some(stream), true) = (self.inner.take(), self.finished) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let connection = self.connection.clone();
        runtime.spawn(async move {
            let _counted = connection;
            let mut stream = stream;
            let deadline = tokio::time::Instant::now() + LINGER_TIME;
            let mut buffer = vec![0u8; 64 * 1024];
            let mut discarded = 0;
            while discarded < LINGER_BYTES {
                match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                    Ok(Ok(read)) if read > 0 => discarded += read,
                    _ => break,
                }
            }
        });
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = this.inner().poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = this.inner().poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = this.inner().poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().inner().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = this.inner().poll_shutdown(cx);
        if result.is_ready() {
            this.finished = true;
        }
        result
    }
}

/// A response body that keeps its connection marked busy until it is sent or dropped.
struct BusyUntilSent {
    body: Body,
    _serving: RequestInFlight,
}

impl HttpBody for BusyUntilSent {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The open plain-HTTP connections: how many, and which are waiting for a request (in the
/// order they started waiting).
struct HttpConnections {
    limit: usize,
    metrics: Metrics,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    open: usize,
    next_turn: u64,
    /// Connections waiting for a request head, by when they started waiting.
    waiting: BTreeMap<u64, Arc<Slot>>,
}

struct Slot {
    /// Its key in `waiting`; 0 while it serves a request. Changed only under the registry lock.
    turn: AtomicU64,
    /// Cancelled when the connection is closed to make room; its place then went to another.
    evicted: CancellationToken,
}

impl HttpConnections {
    fn new(limit: usize, metrics: Metrics) -> HttpConnections {
        HttpConnections { limit, metrics, registry: Mutex::new(Registry::default()) }
    }

    /// A place for a new connection, made by closing the longest-waiting one at the limit.
    fn admit(self: &Arc<Self>) -> Option<HttpConnection> {
        let mut registry = self.registry.lock().expect("connection registry");
        if registry.open >= self.limit {
            if !self.evict_locked(&mut registry) {
                self.metrics.connection_closed(HTTP, CloseReason::Refused);
                return None;
            }
        } else {
            registry.open += 1;
        }
        let slot = Arc::new(Slot { turn: AtomicU64::new(0), evicted: CancellationToken::new() });
        registry.wait(&slot);
        self.metrics.set_http_connections(registry.open);
        Some(HttpConnection { connections: self.clone(), slot })
    }

    /// Closes the connection that has waited longest for a request; `false` if none waits.
    fn evict_oldest_waiting(&self) -> bool {
        let mut registry = self.registry.lock().expect("connection registry");
        if self.evict_locked(&mut registry) {
            registry.open -= 1;
            self.metrics.set_http_connections(registry.open);
            true
        } else {
            false
        }
    }

    /// Evicts the longest-waiting connection, whose place the caller takes over.
    fn evict_locked(&self, registry: &mut Registry) -> bool {
        let Some((_, oldest)) = registry.waiting.pop_first() else {
            return false;
        };
        oldest.turn.store(0, Ordering::Relaxed);
        oldest.evicted.cancel();
        self.metrics.connection_closed(HTTP, CloseReason::Evicted);
        true
    }
}

impl Registry {
    fn wait(&mut self, slot: &Arc<Slot>) {
        self.next_turn += 1;
        slot.turn.store(self.next_turn, Ordering::Relaxed);
        self.waiting.insert(self.next_turn, slot.clone());
    }

    fn stop_waiting(&mut self, slot: &Slot) {
        let turn = slot.turn.swap(0, Ordering::Relaxed);
        if turn != 0 {
            self.waiting.remove(&turn);
        }
    }
}

/// One admitted connection's place; given back when dropped.
struct HttpConnection {
    connections: Arc<HttpConnections>,
    slot: Arc<Slot>,
}

impl HttpConnection {
    fn metrics(&self) -> &Metrics {
        &self.connections.metrics
    }
}

impl Drop for HttpConnection {
    fn drop(&mut self) {
        let mut registry = self.connections.registry.lock().expect("connection registry");
        registry.stop_waiting(&self.slot);
        if !self.slot.evicted.is_cancelled() {
            registry.open -= 1;
            self.connections.metrics.set_http_connections(registry.open);
        }
    }
}

/// Marks a connection busy from a request's head until its response is sent.
struct RequestInFlight {
    connection: Arc<HttpConnection>,
}

impl RequestInFlight {
    fn start(connection: Arc<HttpConnection>) -> RequestInFlight {
        let mut registry = connection.connections.registry.lock().expect("connection registry");
        registry.stop_waiting(&connection.slot);
        drop(registry);
        RequestInFlight { connection }
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let connection = &self.connection;
        let mut registry = connection.connections.registry.lock().expect("connection registry");
        if !connection.slot.evicted.is_cancelled() {
            registry.wait(&connection.slot);
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_the_longest_waiting_connection_makes_room() {
        let connections = Arc::new(HttpConnections::new(2, Metrics::new()));
        let first = Arc::new(connections.admit().unwrap());
        let second = Arc::new(connections.admit().unwrap());
        // The first is serving a request, so the second is the one to go.
        let serving = RequestInFlight::start(first.clone());
        let third = connections.admit().unwrap();
        assert!(second.slot.evicted.is_cancelled());
        assert!(!first.slot.evicted.is_cancelled());
        // Both remaining connections busy: nobody to evict, the newcomer is refused.
        let _also_serving = RequestInFlight::start(Arc::new(third));
        assert!(connections.admit().is_none());
        // A finished request puts its connection back in line, last.
        drop(serving);
        assert!(connections.admit().is_some());
        assert!(first.slot.evicted.is_cancelled());
        let metrics = connections.metrics.render();
        assert!(
            metrics.contains(r#"junction_connections_closed_total{protocol="http",reason="evicted"} 2"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"junction_connections_closed_total{protocol="http",reason="refused"} 1"#),
            "{metrics}"
        );
    }

    #[test]
    fn an_evicted_connection_gives_its_place_to_the_newcomer_only_once() {
        let connections = Arc::new(HttpConnections::new(1, Metrics::new()));
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        drop(first);
        assert_eq!(connections.registry.lock().unwrap().open, 1);
        drop(second);
        assert_eq!(connections.registry.lock().unwrap().open, 0);
        assert!(connections.admit().is_some());
    }
}
