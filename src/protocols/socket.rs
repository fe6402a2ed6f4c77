//! What every protocol's WebSocket loop shares: the socket's limits and buffers
//! ([`configure`]), and one writer task per socket fed by a bounded outbox, so that replies and
//! live deliveries from several tasks go out in the order they were queued, and a socket that
//! stops reading makes its producers wait instead of growing memory.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures_util::SinkExt;
use futures_util::stream::{SplitStream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::LimitsConfig;
use crate::eventlog::Protocol;
use crate::metrics::{CloseReason, Metrics};

/// The close reason of a socket closed for flooding (code 1008).
pub const FLOODING: &str = "too many messages: kept sending over the rate limit";

/// Closes a socket whose rate limiter says it is flooding: logged, counted, then 1008 with
/// [`FLOODING`] once what is already queued has gone out.
pub async fn close_flooder(outbox: &Outbox, metrics: &Metrics, protocol: Protocol) {
    tracing::info!(protocol = protocol.as_str(), "closing a socket that kept sending over the rate limit");
    metrics.connection_closed(protocol.as_str(), CloseReason::Flooding);
    outbox.close(close_code::POLICY_VIOLATION, FLOODING).await;
}

/// Close codes Junction uses.
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the protocol in a way that needs a fresh connection.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The client broke one of the server's rules (flooding).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// The client fell too far behind, or the store was reset: reconnect and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Applies `[limits]` to an upgrade; every protocol's upgrade goes through here.
///
/// Buffers: the WebSocket library's defaults (128 KiB to read, 128 KiB to write) would cost
/// every idle connection a quarter of a megabyte; `ws_read_buffer_bytes` and
/// `ws_write_buffer_bytes` keep it to a few KiB, and a frame larger than the buffer is still
/// read and written whole. Message size: the transport refuses (and closes on) messages over
/// twice `max_frame_bytes`, a fragmented one by its reassembled size; between the two,
/// protocols answer with their own error and the socket stays open.
pub fn configure(upgrade: WebSocketUpgrade, limits: &LimitsConfig) -> WebSocketUpgrade {
    let message_limit = limits.max_frame_bytes * 2;
    upgrade
        .max_message_size(message_limit)
        .max_frame_size(message_limit)
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_write_buffer_size(limits.ws_max_write_buffer_bytes)
}

/// Frames waiting for one socket. Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Message>,
}

impl Outbox {
    /// Queues a text frame; `false` when the socket is gone.
    pub async fn text(&self, text: impl Into<Utf8Bytes>) -> bool {
        self.queue.send(Message::Text(text.into())).await.is_ok()
    }

    /// Queues any frame, waiting while the queue is full; `false` when the socket is gone.
    pub async fn send(&self, message: Message) -> bool {
        self.queue.send(message).await.is_ok()
    }

    /// Queues a frame without waiting, for producers that must never block on one socket
    /// (a broadcast to many): a full queue means the socket's reader has fallen behind.
    pub fn offer(&self, message: Message) -> Offered {
        match self.queue.try_send(message) {
            Ok(()) => Offered::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Offered::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Offered::Closed,
        }
    }

    /// Queues a close frame; the writer stops after sending it.
    pub async fn close(&self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = self.queue.send(Message::Close(Some(frame))).await;
    }
}

/// What [`Outbox::offer`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// The queue is full; the frame was dropped.
    Full,
    /// The socket is gone.
    Closed,
}

/// Splits a socket into its incoming stream, an outbox and the writer task that drains it.
pub fn split(socket: WebSocket, capacity: usize) -> (Outbox, SplitStream<WebSocket>, JoinHandle<()>) {
    let (mut sink, incoming) = socket.split();
    let (queue, mut queued) = mpsc::channel::<Message>(capacity);
    let writer = tokio::spawn(async move {
        // Whatever is queued goes into the write buffer before one flush: under load, many
        // frames per system call instead of one each.
        'writing: while let Some(message) = queued.recv().await {
            let mut next = Some(message);
            while let Some(message) = next.take() {
                let closing = matches!(message, Message::Close(_));
                if sink.feed(message).await.is_err() || closing {
                    break 'writing;
                }
                next = queued.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (Outbox { queue }, incoming, writer)
}
