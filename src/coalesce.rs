//! Joins the engine's small body frames before the server writes them: the
//! engine streams logs and exec output as many small frames (a log line
//! each), and writing each on its own (its own TLS record, its own
//! syscall) cost more than the bytes: a followed log came at 0.45 of the
//! engine's own speed.
//!
//! Joining only frames "already waiting" does not help: the engine client
//! hands its body over one frame at a time, asking for the next only when
//! this one is taken, from its own task (often on the other worker thread).
//! So joined data waits for the next frame at most `MAX_DELAY` (1 ms, the
//! timer's granularity) and at most `MAX_JOINED` bytes; a stream that
//! pauses is written within that millisecond. Large frames pass untouched,
//! and the proxy wraps only answers of unknown length (streams).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use berth_ports::{Body, BoxError};
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

/// The most bytes joined into one frame.
const MAX_JOINED: usize = 64 * 1024;
/// The longest joined data waits for more.
const MAX_DELAY: std::time::Duration = std::time::Duration::from_millis(1);
/// A frame this large goes out as it is, without a copy.
const PASS_THROUGH: usize = 16 * 1024;

pub struct Coalesced {
    inner: Body,
    joined: BytesMut,
    /// A frame read while joining that must go out after the joined data
    /// (trailers, an error, or data past the cap).
    held: Option<Result<Frame<Bytes>, BoxError>>,
    ended: bool,
    /// Whether the deadline is set for the data joined so far.
    armed: bool,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Coalesced {
    pub fn new(inner: Body) -> Self {
        Coalesced {
            inner,
            joined: BytesMut::new(),
            held: None,
            ended: false,
            armed: false,
            deadline: None,
        }
    }

    fn take_joined(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.armed = false;
        Poll::Ready(Some(Ok(Frame::data(self.joined.split().freeze()))))
    }
}

impl http_body::Body for Coalesced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.joined.is_empty() {
                match this.held.take() {
                    // Data held back by the cap starts the next join.
                    Some(Ok(frame)) if frame.data_ref().is_some_and(|d| d.len() < PASS_THROUGH) => {
                        if let Ok(data) = frame.into_data() {
                            this.joined.extend_from_slice(&data);
                        }
                        continue;
                    }
                    Some(frame) => return Poll::Ready(Some(frame)),
                    None => {}
                }
                if this.ended {
                    return Poll::Ready(None);
                }
            } else if this.held.is_some() || this.ended || this.joined.len() >= MAX_JOINED {
                return this.take_joined();
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if this.joined.is_empty() && data.len() >= PASS_THROUGH => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(data) if this.joined.len() + data.len() <= MAX_JOINED => {
                        this.joined.extend_from_slice(&data);
                    }
                    Ok(data) => this.held = Some(Ok(Frame::data(data))),
                    Err(trailers) => this.held = Some(Ok(trailers)),
                },
                Poll::Ready(Some(Err(error))) => this.held = Some(Err(error)),
                Poll::Ready(None) => this.ended = true,
                Poll::Pending if this.joined.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    let deadline = this
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(MAX_DELAY)));
                    if !this.armed {
                        this.armed = true;
                        deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + MAX_DELAY);
                    }
                    if deadline.as_mut().poll(cx).is_ready() {
                        return this.take_joined();
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.joined.is_empty() && self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.held.is_some() || !self.joined.is_empty() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body_of(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> Body {
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    fn data(text: &str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from(text.to_string())))
    }

    #[tokio::test]
    async fn ready_frames_are_joined_and_trailers_kept() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-end", "1".parse().unwrap());
        let frames = vec![
            data("a"),
            data("b"),
            data("c"),
            Ok(Frame::trailers(trailers)),
        ];
        let mut body = Coalesced::new(body_of(frames));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "abc");
        let last = body.frame().await.unwrap().unwrap();
        assert!(last.is_trailers());
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_sends_what_was_joined_within_the_delay() {
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let mut body = Coalesced::new(StreamBody::new(stream).boxed_unsync());
        sender.send(data("live")).await.unwrap();
        let started = tokio::time::Instant::now();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "live");
        let waited = started.elapsed();
        assert!(waited >= MAX_DELAY && waited < MAX_DELAY * 3, "{waited:?}");
        // Frames that come within the delay go out together.
        sender.send(data("b")).await.unwrap();
        let late = tokio::spawn(async move {
            // Later than "b", sooner than the delay (the timer counts
            // whole milliseconds).
            tokio::task::yield_now().await;
            sender.send(data("c")).await.unwrap();
        });
        let joined = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(joined, "bc");
        late.await.unwrap();
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn joined_frames_stop_at_the_cap() {
        let big = "x".repeat(12 * 1024);
        let frames = (0..6).map(|_| data(&big)).chain([data("tail")]).collect();
        let mut body = Coalesced::new(body_of(frames));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            first.len(),
            5 * 12 * 1024,
            "a sixth 12 KiB would pass the cap"
        );
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second.len(), 12 * 1024 + 4);
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn large_frames_pass_through_whole() {
        let big = "x".repeat(PASS_THROUGH);
        let mut body = Coalesced::new(body_of(vec![data(&big), data("a")]));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), PASS_THROUGH);
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "a");
    }
}
