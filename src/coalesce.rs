//! Joins body frames that are already waiting into one, before the server
//! writes them: the engine streams logs as many small frames, and writing
//! each on its own (its own TLS record, its own syscall) costs more than the
//! bytes. Nothing is ever waited for: a frame goes out as soon as the next
//! one is not ready, so followed logs and consoles stay live.

use std::pin::Pin;
use std::task::{Context, Poll};

use berth_ports::{Body, BoxError};
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

/// The most bytes joined into one frame.
const MAX_JOINED: usize = 64 * 1024;

pub struct Coalesced {
    inner: Body,
    /// A frame read while joining that must go out after the joined data
    /// (trailers, an error, or data past the cap).
    held: Option<Result<Frame<Bytes>, BoxError>>,
    ended: bool,
}

impl Coalesced {
    pub fn new(inner: Body) -> Self {
        Coalesced {
            inner,
            held: None,
            ended: false,
        }
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
        let first = match this.held.take() {
            Some(frame) => frame,
            None if this.ended => return Poll::Ready(None),
            None => match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(frame)) => frame,
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        let mut joined = match first.map(Frame::into_data) {
            Ok(Ok(data)) if data.len() < MAX_JOINED => BytesMut::from(&data[..]),
            Ok(Ok(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(Err(trailers)) => return Poll::Ready(Some(Ok(trailers))),
            Err(error) => return Poll::Ready(Some(Err(error))),
        };
        while joined.len() < MAX_JOINED && !this.ended {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if joined.len() + data.len() <= MAX_JOINED => {
                        joined.extend_from_slice(&data);
                    }
                    Ok(data) => {
                        this.held = Some(Ok(Frame::data(data)));
                        break;
                    }
                    Err(trailers) => {
                        this.held = Some(Ok(trailers));
                        break;
                    }
                },
                Poll::Ready(Some(Err(error))) => {
                    this.held = Some(Err(error));
                    break;
                }
                Poll::Ready(None) => this.ended = true,
                // The waker is registered; what we have goes out now.
                Poll::Pending => break,
            }
        }
        Poll::Ready(Some(Ok(Frame::data(joined.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.held.is_some() {
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

    #[tokio::test]
    async fn nothing_waits_for_a_frame_not_yet_there() {
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        let mut body = Coalesced::new(StreamBody::new(stream).boxed_unsync());
        sender.send(data("live")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "live", "sent at once, the next frame not awaited");
        sender.send(data("b")).await.unwrap();
        sender.send(data("c")).await.unwrap();
        drop(sender);
        let joined = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(joined, "bc");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn joined_frames_stop_at_the_cap() {
        let big = "x".repeat(40 * 1024);
        let mut body = Coalesced::new(body_of(vec![data(&big), data(&big), data("tail")]));
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first.len(), 40 * 1024, "a second 40 KiB would pass the cap");
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second.len(), 40 * 1024 + 4);
        assert!(body.frame().await.is_none());
    }
}
