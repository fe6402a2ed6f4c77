//! What every protocol's WebSocket loop shares: the socket's limits and buffers
//! ([`configure`]), and one writer task per socket fed by an outbox bounded in frames and in
//! bytes, so that replies and live deliveries from several tasks go out in the order they were
//! queued, and a socket that stops reading makes its producers wait instead of growing memory.
//! (One that never reads again is closed underneath by [`crate::stall`].)

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures_util::SinkExt;
use futures_util::stream::{SplitStream, StreamExt};
use tokio::sync::{Semaphore, TryAcquireError};
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
    /// The client broke one of the server's rules (flooding), or its access ended (its token
    /// expired).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// The client fell too far behind, or the store was reset: reconnect and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// When a socket authenticated by a token with expiry `exp` (seconds since the Unix epoch) must
/// close; `None` for access that does not expire (no `exp`, anonymous, a static token). A socket
/// keeps the access it was admitted with, so without this a token would outlive its `exp` for as
/// long as the socket stays open.
pub fn token_deadline(exp: Option<u64>) -> Option<tokio::time::Instant> {
    // An `exp` too far away to represent (a client chooses it) is as good as none.
    let exp = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(exp?))?;
    let left = exp.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    tokio::time::Instant::now().checked_add(left)
}

/// Resolves at `deadline`; never without one. For a socket loop's `select!`.
pub async fn expired(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
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
    queue: Sender,
    budget: Arc<SendBudget>,
}

/// The queue between an outbox and its writer: bounded in frames, and holding memory only while
/// frames wait. A tokio channel allocates its first block of 32 slots (1.5 KB of `Message`s) when
/// it is made, and every idle subscribed connection kept one; a `VecDeque` allocates on the first
/// frame and the writer gives the room back when the queue empties.
struct FrameQueue {
    frames: std::sync::Mutex<std::collections::VecDeque<Message>>,
    /// A permit per free slot: taken when a frame is queued, given back when the writer takes it.
    room: Semaphore,
    /// Wakes the writer: a frame was queued, or the last sender went away.
    ready: tokio::sync::Notify,
    senders: std::sync::atomic::AtomicUsize,
}

/// An outbox's handle on the queue; the writer sees the end when the last one is dropped.
struct Sender(Arc<FrameQueue>);

impl Clone for Sender {
    fn clone(&self) -> Sender {
        self.0.senders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Sender(self.0.clone())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.0.ready.notify_one();
        }
    }
}

impl Sender {
    fn push(&self, message: Message) {
        self.0.frames.lock().expect("frames lock").push_back(message);
        self.0.ready.notify_one();
    }

    /// Queues `message`, waiting for a free slot; `Err` when the writer is gone.
    async fn send(&self, message: Message) -> Result<(), ()> {
        let slot = self.0.room.acquire().await.map_err(|_| ())?;
        slot.forget();
        self.push(message);
        Ok(())
    }

    fn try_send(&self, message: Message) -> Result<(), TryAcquireError> {
        self.0.room.try_acquire()?.forget();
        self.push(message);
        Ok(())
    }
}

/// Frame slots an emptied queue keeps (a `Message` is 40 bytes).
const IDLE_FRAME_SLOTS: usize = 8;

/// The writer's end of the queue. Dropping it tells waiting senders that the socket is gone.
struct Receiver(Arc<FrameQueue>);

impl Drop for Receiver {
    fn drop(&mut self) {
        self.0.room.close();
    }
}

impl Receiver {
    fn try_recv(&mut self) -> Option<Message> {
        let mut frames = self.0.frames.lock().expect("frames lock");
        let message = frames.pop_front()?;
        if frames.is_empty() && frames.capacity() > IDLE_FRAME_SLOTS {
            // What a burst grew is given back; a few slots stay, so that a socket receiving one
            // frame at a time does not allocate for each.
            *frames = std::collections::VecDeque::with_capacity(IDLE_FRAME_SLOTS);
        }
        drop(frames);
        self.0.room.add_permits(1);
        Some(message)
    }

    /// The next frame; `None` once every sender is gone and the queue is empty.
    async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.try_recv() {
                return Some(message);
            }
            if self.0.senders.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return None;
            }
            // A notification sent since the check above is kept for this wait.
            self.0.ready.notified().await;
        }
    }
}

fn frame_queue(capacity: usize) -> (Sender, Receiver) {
    let queue = Arc::new(FrameQueue {
        frames: std::sync::Mutex::default(),
        room: Semaphore::new(capacity),
        ready: tokio::sync::Notify::new(),
        senders: std::sync::atomic::AtomicUsize::new(1),
    });
    (Sender(queue.clone()), Receiver(queue))
}

/// The bytes one socket may have waiting: a permit per byte, taken when a frame is queued and
/// given back once the writer has handed it to the network.
struct SendBudget {
    free: Semaphore,
    limit: u32,
}

impl SendBudget {
    fn new(limit: usize) -> SendBudget {
        // Semaphores count in u32; 4 GiB is past any sensible limit.
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        SendBudget { free: Semaphore::new(limit as usize), limit }
    }

    /// What `message` costs: its bytes, at most the whole budget (a larger frame goes alone).
    fn charge(&self, message: &Message) -> u32 {
        let bytes = match message {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
            Message::Close(frame) => frame.as_ref().map_or(0, |f| f.reason.len()),
        };
        u32::try_from(bytes).unwrap_or(u32::MAX).min(self.limit)
    }
}

impl Outbox {
    fn new(capacity: usize, send_queue_bytes: usize) -> (Outbox, Receiver) {
        let (queue, queued) = frame_queue(capacity);
        (Outbox { queue, budget: Arc::new(SendBudget::new(send_queue_bytes)) }, queued)
    }

    /// Queues a text frame; `false` when the socket is gone.
    pub async fn text(&self, text: impl Into<Utf8Bytes>) -> bool {
        self.send(Message::Text(text.into())).await
    }

    /// Queues any frame, waiting while the queue is full (in frames or in bytes); `false` when
    /// the socket is gone.
    pub async fn send(&self, message: Message) -> bool {
        let Ok(bytes) = self.budget.free.acquire_many(self.budget.charge(&message)).await else { return false };
        if self.queue.send(message).await.is_err() {
            return false;
        }
        // Given back by the writer once the frame is written.
        bytes.forget();
        true
    }

    /// Queues a frame without waiting, for producers that must never block on one socket
    /// (a broadcast to many): a full queue (in frames or in bytes) means the socket's reader has
    /// fallen behind.
    pub fn offer(&self, message: Message) -> Offered {
        let bytes = match self.budget.free.try_acquire_many(self.budget.charge(&message)) {
            Ok(bytes) => bytes,
            Err(TryAcquireError::NoPermits) => return Offered::Full,
            Err(TryAcquireError::Closed) => return Offered::Closed,
        };
        match self.queue.try_send(message) {
            Ok(()) => {
                bytes.forget();
                Offered::Queued
            }
            Err(TryAcquireError::NoPermits) => Offered::Full,
            Err(TryAcquireError::Closed) => Offered::Closed,
        }
    }

    /// Queues a close frame; the writer stops after sending it.
    pub async fn close(&self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: reason.into() };
        self.send(Message::Close(Some(frame))).await;
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

/// Splits a socket into its incoming stream, an outbox and the writer task that drains it. The
/// outbox holds at most `capacity` frames and `send_queue_bytes` bytes (`limits.ws_send_queue_bytes`).
pub fn split(
    socket: WebSocket,
    capacity: usize,
    send_queue_bytes: usize,
) -> (Outbox, SplitStream<WebSocket>, JoinHandle<()>) {
    let (mut sink, incoming) = socket.split();
    let (outbox, mut queued) = Outbox::new(capacity, send_queue_bytes);
    let budget = outbox.budget.clone();
    let writer = tokio::spawn(async move {
        // Whatever is queued goes into the write buffer before one flush: under load, many
        // frames per system call instead of one each.
        'writing: while let Some(message) = queued.recv().await {
            let mut next = Some(message);
            let mut written = 0;
            while let Some(message) = next.take() {
                let closing = matches!(message, Message::Close(_));
                written += budget.charge(&message) as usize;
                if sink.feed(message).await.is_err() || closing {
                    break 'writing;
                }
                next = queued.try_recv();
            }
            if sink.flush().await.is_err() {
                break;
            }
            budget.free.add_permits(written);
        }
        // Producers waiting for room learn that the socket is gone.
        budget.free.close();
        let _ = sink.close().await;
    });
    (outbox, incoming, writer)
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn frame(bytes: usize) -> Message {
        Message::Binary(vec![0; bytes].into())
    }

    /// What the writer does once a frame is on the network.
    fn written(outbox: &Outbox, queued: &mut Receiver) {
        let message = queued.try_recv().expect("a queued frame");
        outbox.budget.free.add_permits(outbox.budget.charge(&message) as usize);
    }

    #[test]
    fn unsent_bytes_fill_the_queue_though_few_frames_wait() {
        let (outbox, mut queued) = Outbox::new(1024, 1_000);
        assert_eq!(outbox.offer(frame(600)), Offered::Queued);
        assert_eq!(outbox.offer(frame(600)), Offered::Full, "1,200 bytes would wait");
        assert_eq!(outbox.offer(frame(400)), Offered::Queued, "exactly the budget");
        assert_eq!(outbox.offer(frame(1)), Offered::Full);
        written(&outbox, &mut queued);
        assert_eq!(outbox.offer(frame(600)), Offered::Queued, "the written frame's bytes are free again");
    }

    #[test]
    fn a_sender_waits_for_bytes_and_a_large_frame_goes_alone() {
        let (outbox, mut queued) = Outbox::new(1024, 1_000);
        assert!(outbox.send(frame(10)).now_or_never().unwrap());
        let mut large = Box::pin(outbox.send(frame(5_000)));
        assert!(large.as_mut().now_or_never().is_none(), "waits for the queue to empty");
        written(&outbox, &mut queued);
        assert!(large.now_or_never().unwrap(), "then takes the whole budget");
        assert_eq!(outbox.offer(frame(1)), Offered::Full);
        written(&outbox, &mut queued);
        assert_eq!(outbox.offer(frame(1)), Offered::Queued);
    }

    #[test]
    fn a_frame_count_still_bounds_small_frames() {
        let (outbox, _queued) = Outbox::new(2, 1_000_000);
        assert_eq!(outbox.offer(frame(1)), Offered::Queued);
        assert_eq!(outbox.offer(frame(1)), Offered::Queued);
        assert_eq!(outbox.offer(frame(1)), Offered::Full);
        assert_eq!(outbox.budget.free.available_permits(), 1_000_000 - 2, "a refused frame is not charged");
    }

    #[test]
    fn senders_learn_that_the_writer_is_gone() {
        let (outbox, queued) = Outbox::new(4, 100);
        assert!(outbox.send(frame(100)).now_or_never().unwrap());
        let mut waiting = Box::pin(outbox.send(frame(1)));
        assert!(waiting.as_mut().now_or_never().is_none());
        drop(queued);
        outbox.budget.free.close();
        assert!(!waiting.now_or_never().unwrap());
        assert_eq!(outbox.offer(frame(1)), Offered::Closed);
    }

    #[tokio::test]
    async fn the_writer_gets_every_frame_in_order_then_the_end() {
        let (outbox, mut queued) = Outbox::new(2, 1_000_000);
        let other = outbox.clone();
        // A waiting writer wakes for a frame queued later.
        let mut next = Box::pin(queued.recv());
        assert!(next.as_mut().now_or_never().is_none());
        assert_eq!(outbox.offer(Message::Text("1".into())), Offered::Queued);
        assert_eq!(next.await, Some(Message::Text("1".into())));
        // A sender waiting for a slot gets one when the writer takes a frame.
        assert_eq!(other.offer(Message::Text("2".into())), Offered::Queued);
        assert_eq!(other.offer(Message::Text("3".into())), Offered::Queued);
        let mut fourth = Box::pin(outbox.send(Message::Text("4".into())));
        assert!(fourth.as_mut().now_or_never().is_none(), "two frames wait: no slot");
        assert_eq!(queued.recv().await, Some(Message::Text("2".into())));
        assert!(fourth.await);
        // Once every outbox is gone, the writer drains what is left and then sees the end.
        drop((outbox, other));
        assert_eq!(queued.recv().await, Some(Message::Text("3".into())));
        assert_eq!(queued.recv().await, Some(Message::Text("4".into())));
        assert_eq!(queued.recv().await, None);
    }

    #[test]
    fn token_deadlines() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(token_deadline(None), None);
        // Past: at once.
        assert!(token_deadline(Some(now - 10)).unwrap() <= tokio::time::Instant::now());
        let in_an_hour = token_deadline(Some(now + 3600)).unwrap();
        assert!(in_an_hour > tokio::time::Instant::now() + std::time::Duration::from_secs(3590));
        // Too far to represent: no deadline rather than a panic.
        assert_eq!(token_deadline(Some(u64::MAX)), None);
    }
}
