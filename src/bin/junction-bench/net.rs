//! Opening many WebSocket connections from one machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Socket = WebSocketStream<TcpStream>;

/// Connects WebSockets to one server, spreading them over loopback source addresses and
/// bounding how many handshakes run at once.
pub struct Dialer {
    server: SocketAddr,
    host: String,
    sources: Vec<Ipv4Addr>,
    next_source: AtomicUsize,
    handshakes: Arc<Semaphore>,
}

impl Dialer {
    /// `base` is `ws://host:port`; `sources` is how many 127.0.0.x addresses to use.
    pub async fn new(base: &str, sources: u8, concurrency: usize) -> anyhow::Result<Dialer> {
        let authority = base
            .strip_prefix("ws://")
            .context("the URL must start with ws:// (TLS is not supported by the load generator)")?;
        let host = authority.split('/').next().unwrap_or(authority).to_owned();
        let server = tokio::net::lookup_host(&host)
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let sources = match server.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (1..=sources.max(1)).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect(),
            _ => Vec::new(),
        };
        Ok(Dialer {
            server,
            host,
            sources,
            next_source: AtomicUsize::new(0),
            handshakes: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    /// A place among the connections being opened; hold it until the connection is ready.
    pub async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.handshakes.acquire().await.expect("the semaphore is never closed")
    }

    /// Opens a WebSocket to `path_and_query` (which starts with `/`).
    pub async fn connect(&self, path_and_query: &str) -> anyhow::Result<Socket> {
        let socket = TcpSocket::new_v4()?;
        if !self.sources.is_empty() {
            let source = self.sources[self.next_source.fetch_add(1, Ordering::Relaxed) % self.sources.len()];
            socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).with_context(|| format!("binding {source}"))?;
        }
        let stream = socket.connect(self.server).await.with_context(|| format!("connecting to {}", self.server))?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{}{}", self.host, path_and_query);
        // Small client buffers: tens of thousands of sockets live in this process too.
        let config = WebSocketConfig::default().read_buffer_size(8 * 1024).write_buffer_size(0);
        let (socket, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {}{path_and_query}", self.host))?;
        Ok(socket)
    }
}

/// Microseconds since the Unix epoch: the clock marks are written and read with (writer and
/// subscribers share it, being in this process).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

pub fn now_millis() -> i64 {
    (now_micros() / 1000) as i64
}
