//! Connects to the engine over a unix socket or TCP, with a timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_domain::options::DockerHost;
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

#[derive(Clone)]
pub(super) struct EngineConnector {
    host: DockerHost,
    timeout: Duration,
}

impl EngineConnector {
    pub(super) fn new(host: DockerHost, timeout: Duration) -> Self {
        EngineConnector { host, timeout }
    }
}

/// Marks a connect that ran out of time, so it maps to a 504, not a 502.
#[derive(Debug)]
struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl std::error::Error for ConnectTimedOut {}

pub(super) fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
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

impl tower_service::Service<Uri> for EngineConnector {
    type Response = EngineIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<EngineIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let host = self.host.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let connect = async {
                match &host {
                    DockerHost::Unix { path } => {
                        UnixStream::connect(path).await.map(EngineStream::Unix)
                    }
                    DockerHost::Tcp { host, port } => {
                        let stream = TcpStream::connect((host.as_str(), *port)).await?;
                        stream.set_nodelay(true)?;
                        Ok(EngineStream::Tcp(stream))
                    }
                }
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(stream) => stream.map(|s| EngineIo(TokioIo::new(s))),
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, ConnectTimedOut)),
            }
        })
    }
}

pub(super) enum EngineStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsyncRead for EngineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            EngineStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EngineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            EngineStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_flush(cx),
            EngineStream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// Shuts down only the write half, so a client's end of input reaches
    /// the engine while the engine's output keeps flowing back.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EngineStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            EngineStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The connection type hyper's client pool holds. A newtype, because hyper's
/// `Connection` trait cannot be implemented on `TokioIo` from here.
pub(super) struct EngineIo(TokioIo<EngineStream>);

impl Connection for EngineIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for EngineIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for EngineIo {
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
