//! The connection type hyper's client pools hold: any tokio stream. A
//! newtype, because hyper's `Connection` trait cannot be implemented on
//! `TokioIo` outside hyper-util.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) struct PooledIo<S>(TokioIo<S>);

impl<S> PooledIo<S> {
    pub(crate) fn new(stream: S) -> Self {
        PooledIo(TokioIo::new(stream))
    }
}

impl<S> Connection for PooledIo<S> {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Read for PooledIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Write for PooledIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Marks a connect that ran out of time, so it maps to a 504, not a 502.
#[derive(Debug)]
pub(crate) struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl std::error::Error for ConnectTimedOut {}

pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, ConnectTimedOut)
}

/// Whether a client error was a connect timeout.
pub(crate) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<ConnectTimedOut>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<ConnectTimedOut>())
            {
                return true;
            }
        }
        current = error.source();
    }
    false
}

/// The innermost cause of an error, which says what actually went wrong.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = error;
    while let Some(source) = deepest.source() {
        deepest = source;
    }
    deepest.to_string()
}

/// One of two stream types (a unix or a TCP engine socket, a TLS or a plain
/// peer connection), read and written as whichever it is. Shutting down
/// closes only the write half, so a client's end of input reaches the far
/// side while its output keeps flowing back.
pub(crate) enum EitherStream<A, B> {
    Left(A),
    Right(B),
}

impl<A: AsyncRead + Unpin, B: AsyncRead + Unpin> AsyncRead for EitherStream<A, B> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherStream::Left(s) => Pin::new(s).poll_read(cx, buf),
            EitherStream::Right(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<A: AsyncWrite + Unpin, B: AsyncWrite + Unpin> AsyncWrite for EitherStream<A, B> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EitherStream::Left(s) => Pin::new(s).poll_write(cx, buf),
            EitherStream::Right(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherStream::Left(s) => Pin::new(s).poll_flush(cx),
            EitherStream::Right(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherStream::Left(s) => Pin::new(s).poll_shutdown(cx),
            EitherStream::Right(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
