//! Accepts TLS connections and serves HTTP/1.1 on them, handing every
//! request to a [`RequestHandler`].
//!
//! Connections are capped by a semaphore whose permit each connection task
//! owns; a watch channel says stop, and dropped senders of an mpsc channel
//! confirm that every connection has finished (mini-redis's pattern).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_ports::RequestHandler;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::activity::{Activity, TrackedBody, Watched};

/// Bounds on what a client may hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// TLS handshake plus a request's headers.
    pub header_timeout: Duration,
    /// A keep-alive connection with nothing in flight.
    pub idle_timeout: Duration,
    /// How long in-flight requests may finish after the stop signal.
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
}

pub struct HttpsServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ServerLimits,
}

impl HttpsServer {
    /// Binds the listening socket; nothing is served until [`run`](Self::run).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(
        address: SocketAddr,
        tls: Arc<ServerConfig>,
        limits: ServerLimits,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        Ok(HttpsServer {
            listener,
            acceptor: TlsAcceptor::from(tls),
            limits,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish within the shutdown timeout.
    pub async fn run<H: RequestHandler>(self, handler: H, shutdown: impl Future<Output = ()>) {
        let HttpsServer {
            listener,
            acceptor,
            limits,
        } = self;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let (stop_sender, stop) = watch::channel(false);
        let (finished_sender, mut all_finished) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(10);
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    let connection = Connection {
                        acceptor: acceptor.clone(),
                        limits,
                        stop: stop.clone(),
                        _permit: permit,
                        _finished: finished_sender.clone(),
                    };
                    tokio::spawn(connection.serve(stream, peer, handler.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait, then retry.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(listener);
        info!("stopped accepting connections; finishing requests in flight");
        let _ = stop_sender.send(true);
        drop(finished_sender);
        if tokio::time::timeout(limits.shutdown_timeout, all_finished.recv())
            .await
            .is_err()
        {
            warn!(
                open = limits.max_connections - permits.available_permits(),
                "gave up waiting for connections after the shutdown timeout"
            );
        }
    }
}

struct Connection {
    acceptor: TlsAcceptor,
    limits: ServerLimits,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    /// Dropped when the connection ends, which is how `run` knows.
    _finished: mpsc::Sender<()>,
}

impl Connection {
    async fn serve<H: RequestHandler>(self, stream: TcpStream, peer: SocketAddr, handler: H) {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let handshake = self
            .acceptor
            .accept(Watched::new(stream, Arc::clone(&activity)));
        let tls = match tokio::time::timeout(self.limits.header_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            // Probes and port scanners end handshakes all the time: not worth a warning.
            Ok(Err(error)) => return debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => return debug!(%peer, "TLS handshake timed out"),
        };
        let service_activity = Arc::clone(&activity);
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            let in_flight = service_activity.request_started();
            async move {
                let request = request.map(|body| body.map_err(Into::into).boxed_unsync());
                let response = handler.handle(request, peer).await;
                let response = response.map(|body| TrackedBody::new(body, in_flight));
                Ok::<_, Infallible>(response)
            }
        });
        let connection = http1::Builder::new()
            .keep_alive(true)
            .half_close(true)
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades();
        tokio::pin!(connection);
        let limits = self.limits;
        let mut stop = self.stop.clone();
        let stopped = async move { stop.wait_for(|stop| *stop).await.is_ok() };
        tokio::select! {
            result = connection.as_mut() => log_end(peer, result),
            expiry = activity.expired(limits.idle_timeout, limits.header_timeout) => {
                debug!(%peer, ?expiry, "closing connection");
            }
            _ = stopped => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = connection.as_mut() => log_end(peer, result),
                    expiry = activity.expired(limits.idle_timeout, limits.header_timeout) => {
                        debug!(%peer, ?expiry, "closing connection during shutdown");
                    }
                }
            }
        }
    }
}

fn log_end(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        debug!(%peer, %error, "connection ended with an error");
    }
}
