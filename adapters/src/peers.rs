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
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::io::{is_timeout, root_cause, timed_out, EitherStream, PooledIo};

/// Idle connections kept to each peer: enough for the lists Portainer
/// sends at once for one page (containers, images, volumes, networks...).
pub const MAX_IDLE_PER_PEER: usize = 8;

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
        // A cluster-wide list opens a connection to every peer, so a burst
        // of N lists leaves N connections to each peer: about 50 KiB each
        // (TLS and read buffers), 50 MiB after 32 lists in a 32-node
        // cluster. Only a few stay pooled, and those are let go after a
        // minute idle, which needs the timer: without it hyper evicts idle
        // connections only when it next looks for one.
        let client = Client::builder(TokioExecutor::new())
            .set_host(false)
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_IDLE_PER_PEER)
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
                let tcp = crate::dial::tcp(address).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::Barrier;

    use super::*;

    /// A plain HTTP peer that answers only once `burst` requests are in
    /// flight at once, and counts its open connections.
    async fn peer(burst: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let all_in = Arc::new(Barrier::new(burst));
        let counter = open.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let (counter, all_in) = (counter.clone(), all_in.clone());
                tokio::spawn(async move {
                    let answer = service_fn(move |_| {
                        let all_in = all_in.clone();
                        async move {
                            all_in.wait().await;
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(
                                bytes::Bytes::from_static(b"[]"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), answer)
                        .await;
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (address, open)
    }

    #[tokio::test]
    async fn a_burst_leaves_only_a_few_idle_connections_to_a_peer() {
        let burst = MAX_IDLE_PER_PEER * 3;
        let (address, open) = peer(burst).await;
        let peers = HttpsPeers::plain(Duration::from_secs(5));
        let lists = (0..burst).map(|_| {
            let peers = peers.clone();
            async move {
                let request = Request::get("/containers/json")
                    .body(berth_ports::empty_body())
                    .unwrap();
                let response = peers.forward(address, request).await.unwrap();
                response.into_body().collect().await.unwrap();
            }
        });
        tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::future::join_all(lists),
        )
        .await
        .expect("the burst's requests were not all answered");
        // Connections beyond the pool's cap are closed as they come back.
        let settled = tokio::time::timeout(Duration::from_secs(10), async {
            while open.load(Ordering::SeqCst) > MAX_IDLE_PER_PEER {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            settled.is_ok(),
            "{} connections to the peer stay open after a burst of {burst}; at most {MAX_IDLE_PER_PEER} should",
            open.load(Ordering::SeqCst)
        );
        assert_eq!(open.load(Ordering::SeqCst), MAX_IDLE_PER_PEER);
    }
}
