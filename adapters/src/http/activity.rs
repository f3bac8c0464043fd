//! Per-connection activity, so a connection can be closed when it idles
//! between requests or dawdles over a request's headers, while a request in
//! flight (a silent `logs -f`, a slow upload) is never cut off.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_ports::{Body, BoxError};
use bytes::Bytes;
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Shared between the connection's I/O, its service and its watchdog.
pub(super) struct Activity {
    epoch: Instant,
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// When the first byte of a request arrived (ms + 1), or 0 when no
    /// request is being read.
    head_started_ms: AtomicU64,
    /// Wakes the watchdog when a deadline may have moved earlier.
    changed: Notify,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    Idle,
    Header,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started_ms: AtomicU64::new(0),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let started = self.head_started_ms.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if started.is_ok() {
                self.changed.notify_one();
            }
        }
    }

    fn on_write(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request's headers were read; it is in flight until the guard drops.
    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(0, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// Resolves when the connection has idled for `idle` with nothing in
    /// flight, or a request's headers took longer than `header`.
    pub(super) async fn expired(&self, idle: Duration, header: Duration) -> Expiry {
        let (idle_ms, header_ms) = (idle.as_millis() as u64, header.as_millis() as u64);
        loop {
            let now = self.now_ms();
            let wait_ms = if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Only the end of the request (a notification) can start a deadline.
                24 * 3600 * 1000
            } else {
                let head_started = self.head_started_ms.load(Ordering::Relaxed);
                if head_started > 0 {
                    let reading_for = now.saturating_sub(head_started - 1);
                    if reading_for >= header_ms {
                        return Expiry::Header;
                    }
                    header_ms - reading_for
                } else {
                    let idle_for = now.saturating_sub(self.last_io_ms.load(Ordering::Relaxed));
                    if idle_for >= idle_ms {
                        return Expiry::Idle;
                    }
                    idle_ms - idle_for
                }
            };
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait_ms.max(1))) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// Held by a request's response body; dropping it ends the request.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.on_write();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_one();
    }
}

/// A response body that ends its request's time in flight when the body
/// is done, fails, or is dropped. An empty body is done at once: hyper may
/// hold it, unpolled, until the next request.
pub(super) struct TrackedBody {
    inner: Body,
    in_flight: Option<InFlight>,
}

impl TrackedBody {
    pub(super) fn new(inner: Body, in_flight: InFlight) -> Self {
        let in_flight = (!inner.is_end_stream()).then_some(in_flight);
        TrackedBody { inner, in_flight }
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream that reports its reads and writes to an [`Activity`].
pub(super) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_connection_expires_after_idle_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        let expiry = activity
            .expired(Duration::from_secs(120), Duration::from_secs(30))
            .await;
        assert_eq!(expiry, Expiry::Idle);
        assert_eq!(started.elapsed().as_secs(), 120);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_headers_expire_after_header_timeout() {
        let activity = Activity::new();
        activity.on_read();
        let started = Instant::now();
        let expiry = activity
            .expired(Duration::from_secs(120), Duration::from_secs(30))
            .await;
        assert_eq!(expiry, Expiry::Header);
        assert_eq!(started.elapsed().as_secs(), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn request_in_flight_never_expires() {
        let activity = Activity::new();
        activity.on_read();
        let guard = activity.request_started();
        let watchdog = activity.expired(Duration::from_secs(2), Duration::from_secs(1));
        tokio::pin!(watchdog);
        let outcome = tokio::time::timeout(Duration::from_secs(3600), &mut watchdog).await;
        assert!(
            outcome.is_err(),
            "a request in flight must keep its connection"
        );
        drop(guard);
        let started = Instant::now();
        assert_eq!(watchdog.await, Expiry::Idle);
        assert!(started.elapsed() <= Duration::from_secs(3));
    }
}
