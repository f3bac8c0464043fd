//! The `PeerAgents` port: one pooled HTTPS (plain HTTP between Edge agents)
//! client for every peer agent,
//! built once, so forwarding never opens a connection pool per request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_ports::{Body, PeerAgents, PeerError};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::io::{is_timeout, root_cause, timed_out, EitherStream, PooledIo};

#[derive(Clone)]
pub struct HttpsPeers {
    client: Client<PeerConnector, Body>,
    connect_timeout: Duration,
    scheme: Scheme,
}

impl HttpsPeers {
    /// `tls` is [`crate::http::tls::peer_client_config`]'s answer.
    pub fn new(tls: Arc<ClientConfig>, connect_timeout: Duration) -> Self {
        Self::build(Some(TlsConnector::from(tls)), connect_timeout)
    }

    /// Edge agents serve plain HTTP (they are reached through the tunnel),
    /// so their peers call them without TLS.
    pub fn plain(connect_timeout: Duration) -> Self {
        Self::build(None, connect_timeout)
    }

    fn build(tls: Option<TlsConnector>, connect_timeout: Duration) -> Self {
        let scheme = if tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let connector = PeerConnector {
            tls,
            timeout: connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .set_host(false)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(connector);
        HttpsPeers {
            client,
            connect_timeout,
            scheme,
        }
    }
}

impl PeerAgents for HttpsPeers {
    async fn forward(
        &self,
        peer: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, PeerError> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(peer.to_string())
            .path_and_query(path)
            .build()
            .map_err(|error| PeerError::Unreachable {
                peer,
                cause: error.to_string(),
            })?;
        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|error| {
                if is_timeout(&error) {
                    PeerError::Timeout {
                        peer,
                        after_seconds: self.connect_timeout.as_secs(),
                    }
                } else {
                    PeerError::Unreachable {
                        peer,
                        cause: root_cause(&error),
                    }
                }
            })?;
        Ok(response.map(|incoming| incoming.map_err(Into::into).boxed_unsync()))
    }
}

#[derive(Clone)]
struct PeerConnector {
    tls: Option<TlsConnector>,
    timeout: Duration,
}

/// A connection to a peer: TLS for standard agents, plain for Edge ones.
type PeerStream = EitherStream<Box<TlsStream<TcpStream>>, TcpStream>;

impl tower_service::Service<Uri> for PeerConnector {
    type Response = PooledIo<PeerStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let address: SocketAddr = uri
                .authority()
                .and_then(|authority| authority.as_str().parse().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "a peer is an IP and a port")
                })?;
            let connect = async {
                let tcp = TcpStream::connect(address).await?;
                tcp.set_nodelay(true)?;
                match tls {
                    Some(tls) => tls
                        .connect(ServerName::IpAddress(address.ip().into()), tcp)
                        .await
                        .map(|stream| EitherStream::Left(Box::new(stream))),
                    None => Ok(EitherStream::Right(tcp)),
                }
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(stream) => stream.map(PooledIo::new),
                Err(_) => Err(timed_out()),
            }
        })
    }
}
