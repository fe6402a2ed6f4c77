//! Closing connections whose client stopped reading.
//!
//! A client that keeps its TCP connection open but reads nothing makes every write to its socket
//! wait forever once the kernel's buffers are full: a WebSocket's writer, a live event stream, a
//! large HTTP response. Queues bound what piles up behind it, but the connection would live on.
//! Only the socket knows whether the client still takes bytes, so `accept::serve` wraps every
//! accepted connection in a [`StallGuard`]: when a write has found the socket full and the
//! socket then accepts no byte for `limits.write_stall_timeout_secs`, the write (and any read)
//! fails, the connection closes, and it is counted as a slow consumer (`reason="stalled"`).
//!
//! Progress, not duration, is what counts: a slow client that takes a large frame bit by bit
//! keeps resetting the deadline. The timer runs only while a write waits, so an idle connection
//! holds no timer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep_until};

use crate::metrics::{Metrics, SlowConsumer};

/// An accepted connection whose writes fail once its socket has accepted nothing for `timeout`.
pub struct StallGuard<Io> {
    io: Io,
    timeout: Duration,
    /// Boxed, and made on the first write that waits: most connections never need it.
    deadline: Option<Pin<Box<Sleep>>>,
    /// A write is waiting for room and `deadline` runs.
    waiting: bool,
    stalled: bool,
    /// The task waiting to read, woken when the connection stalls so that it learns at once.
    reader: Option<Waker>,
    metrics: Metrics,
}

impl<Io> StallGuard<Io> {
    pub fn new(io: Io, timeout: Duration, metrics: Metrics) -> StallGuard<Io> {
        StallGuard { io, timeout, deadline: None, waiting: false, stalled: false, reader: None, metrics }
    }

    fn stalled_error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "the client accepted no bytes for the write stall timeout")
    }

    /// Called when a write found the socket full: starts the deadline, or says it has passed.
    fn wait_for_room<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.waiting {
            self.waiting = true;
            let deadline = Instant::now() + self.timeout;
            match &mut self.deadline {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.deadline = Some(Box::pin(sleep_until(deadline))),
            }
        }
        let sleep = self.deadline.as_mut().expect("armed above");
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled = true;
        self.metrics.slow_consumer_disconnected(SlowConsumer::Stalled);
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Err(Self::stalled_error()))
    }

    fn wrote<T>(&mut self, result: Poll<io::Result<T>>, progress: impl FnOnce(&T) -> bool) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(value)) = &result
            && progress(value)
        {
            self.waiting = false;
        }
        result
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for StallGuard<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.stalled {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if read.is_pending() && !self.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.reader = Some(cx.waker().clone());
        }
        read
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for StallGuard<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.stalled {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Pending => self.wait_for_room(cx),
            done => self.wrote(done, |written| *written > 0),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.stalled {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        match Pin::new(&mut self.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.wait_for_room(cx),
            done => self.wrote(done, |written| *written > 0),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stalled {
            return Poll::Ready(Err(Self::stalled_error()));
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.wait_for_room(cx),
            done => self.wrote(done, |_| true),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(300);

    fn stalled_count(metrics: &Metrics) -> String {
        let text = metrics.render();
        text.lines().find(|l| l.contains(r#"reason="stalled""#)).unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_write_that_finds_no_room_for_the_timeout_fails_and_is_counted() {
        let (server, mut client) = tokio::io::duplex(1024);
        let metrics = Metrics::new();
        let mut guarded = StallGuard::new(server, TIMEOUT, metrics.clone());
        guarded.write_all(&[1; 1024]).await.unwrap();
        let started = Instant::now();
        let error = guarded.write_all(&[2; 10]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= TIMEOUT);
        assert_eq!(stalled_count(&metrics), r#"junction_slow_consumer_disconnects_total{reason="stalled"} 1"#);
        // Reads fail too, so a loop waiting on the client ends.
        assert_eq!(guarded.read(&mut [0; 8]).await.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let mut got = vec![0; 1024];
        client.read_exact(&mut got).await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_taking_bytes_is_never_stalled() {
        let (server, mut client) = tokio::io::duplex(16);
        let metrics = Metrics::new();
        let mut guarded = StallGuard::new(server, TIMEOUT, metrics.clone());
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut byte = [0; 1];
            // Far slower than the writer, but never silent for anywhere near the timeout.
            while client.read(&mut byte).await.unwrap() == 1 {
                total += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            total
        });
        guarded.write_all(&[7; 64]).await.unwrap();
        guarded.shutdown().await.unwrap();
        drop(guarded);
        assert_eq!(reader.await.unwrap(), 64);
        assert_eq!(stalled_count(&metrics), r#"junction_slow_consumer_disconnects_total{reason="stalled"} 0"#);
    }

    #[tokio::test]
    async fn a_reader_waiting_on_a_stalled_connection_is_woken() {
        let (server, _client) = tokio::io::duplex(8);
        let (mut read_half, mut write_half) = tokio::io::split(StallGuard::new(server, TIMEOUT, Metrics::new()));
        let reading = tokio::spawn(async move { read_half.read(&mut [0; 8]).await });
        tokio::task::yield_now().await;
        assert!(write_half.write_all(&[0; 64]).await.is_err());
        assert_eq!(reading.await.unwrap().unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
