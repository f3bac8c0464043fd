//! Connects to the engine over a unix socket or TCP, with a timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_domain::options::DockerHost;
use http::Uri;
use tokio::net::{TcpStream, UnixStream};

use crate::io::{timed_out, EitherStream, PooledIo};

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
                        UnixStream::connect(path).await.map(EitherStream::Left)
                    }
                    DockerHost::Tcp { host, port } => {
                        let stream = crate::dial::tcp((host.as_str(), *port)).await?;
                        Ok(EitherStream::Right(stream))
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

/// The engine's socket: unix or TCP.
pub(super) type EngineStream = EitherStream<UnixStream, TcpStream>;
