//! Connects to the engine over a unix socket or TCP, with a timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_domain::options::DockerHost;
use http::Uri;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::io::{timed_out, PooledIo};

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

impl tower_service::Service<Uri> for EngineConnector {
    type Response = PooledIo<EngineStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PooledIo<EngineStream>>> + Send>>;

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
                Ok(stream) => stream.map(PooledIo::new),
                Err(_) => Err(timed_out()),
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
