//! Accepts connections (TLS, or plain for the metrics endpoint and, later,
//! the Edge API) and serves HTTP/1.1 on them, handing every request to a
//! [`RequestHandler`].
//!
//! Connections are capped by a semaphore whose permit each connection task
//! owns; a watch channel says stop, and dropped senders of an mpsc channel
//! confirm that every connection has finished (mini-redis's pattern).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_ports::{full_body, Body, ConnectionStanding, RequestHandler, VerifiedClientCertificate};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::activity::{Activity, TrackedBody, Watched};
use super::lingering::{Lingering, LingeringStream};

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
    /// The largest request header block (request line and headers).
    pub max_header_bytes: usize,
}

/// hyper's read buffer holds a little more than the header limit, so a
/// block just over it is read whole and answered in Portainer's shape;
/// one that overflows even this gets hyper's own bodiless 431.
const HEADER_SLACK: usize = 16 * 1024;

/// A request's header block as it came on the wire, give or take the
/// version and line ends hyper does not keep.
fn header_block_len<B>(request: &Request<B>) -> usize {
    // Measured without formatting the URI: this runs for every request.
    let uri = request.uri();
    let target = uri
        .path_and_query()
        .map_or(1, |target| target.as_str().len())
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len());
    let line = request.method().as_str().len() + target + "  HTTP/1.1\r\n".len();
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    line + fields + "\r\n".len()
}

fn headers_too_large(limit: usize) -> Response<Body> {
    let body = format!(
        r#"{{"message":"Request header fields too large","details":"The request's headers exceed {limit} bytes (AGENT_MAX_HEADER_BYTES)"}}"#
    );
    let mut response = Response::new(full_body(body));
    *response.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

pub struct HttpServer {
    listener: TcpListener,
    /// `None` serves plain HTTP.
    acceptor: Option<TlsAcceptor>,
    limits: ServerLimits,
    open: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Binds the listening socket; nothing is served until [`run`](Self::run).
    /// With `tls`, connections are TLS; without, plain HTTP.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(
        address: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
        limits: ServerLimits,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        Ok(HttpServer {
            listener,
            acceptor: tls.map(TlsAcceptor::from),
            limits,
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How many connections are open now (upgraded ones excepted).
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open)
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish within the shutdown timeout.
    pub async fn run<H: RequestHandler>(self, handler: H, shutdown: impl Future<Output = ()>) {
        let HttpServer {
            listener,
            acceptor,
            limits,
            open,
        } = self;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
        let lingering = Lingering::default();
        let (stop_sender, stop) = watch::channel(false);
        let (finished_sender, mut all_finished) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        // Over the limit: say so, rather than leave the
                        // client waiting in the accept queue.
                        if let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() {
                            let acceptor = acceptor.clone();
                            let max = limits.max_connections;
                            let timeout = limits.header_timeout;
                            let stream = lingering.wrap(stream);
                            tokio::spawn(async move {
                                refuse(stream, acceptor, max, timeout).await;
                                drop(refusal);
                            });
                        }
                        continue;
                    };
                    let connection = Connection {
                        acceptor: acceptor.clone(),
                        lingering: lingering.clone(),
                        limits,
                        stop: stop.clone(),
                        _open: OpenGuard::new(&open),
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
                open = open.load(Ordering::Relaxed),
                "gave up waiting for connections after the shutdown timeout"
            );
        }
    }
}

/// Refusals answered at once; beyond that, extra connections are closed.
const MAX_REFUSALS: usize = 64;

/// Answers a connection over the limit with a 503 in the Portainer shape,
/// then closes it gently (the request is read and discarded first, so the
/// client sees the answer rather than a reset).
async fn refuse(
    stream: LingeringStream,
    acceptor: Option<TlsAcceptor>,
    max: usize,
    timeout: Duration,
) {
    let body = format!(
        r#"{{"message":"Too many connections","details":"The agent serves at most {max} connections at once; retry later"}}"#
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        match acceptor {
            Some(acceptor) => {
                answer_and_close(acceptor.accept(stream).await?, answer.as_bytes()).await
            }
            None => answer_and_close(stream, answer.as_bytes()).await,
        }
    };
    let _ = tokio::time::timeout(timeout, exchange).await;
}

async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: &[u8],
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = [0u8; 4096];
    // The request head, if it comes soon, so closing does not reset.
    let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut request)).await;
    stream.write_all(answer).await?;
    stream.shutdown().await
}

/// Counts a connection as open while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(Arc::clone(open))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Connection {
    acceptor: Option<TlsAcceptor>,
    /// The socket is read a while after berth is done with it, so that
    /// its last answer is not lost to a reset.
    lingering: Lingering,
    limits: ServerLimits,
    stop: watch::Receiver<bool>,
    _open: OpenGuard,
    _permit: OwnedSemaphorePermit,
    /// Dropped when the connection ends, which is how `run` knows.
    _finished: mpsc::Sender<()>,
}

impl Connection {
    async fn serve<H: RequestHandler>(self, stream: TcpStream, peer: SocketAddr, handler: H) {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let watched = Watched::new(self.lingering.wrap(stream), Arc::clone(&activity));
        let Some(acceptor) = self.acceptor.clone() else {
            return self
                .serve_http(watched, peer, handler, activity, false)
                .await;
        };
        let handshake = acceptor.accept(watched);
        match tokio::time::timeout(self.limits.header_timeout, handshake).await {
            Ok(Ok(tls)) => {
                // rustls keeps a client's certificates only once they verified.
                let certified = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|chain| !chain.is_empty());
                self.serve_http(tls, peer, handler, activity, certified)
                    .await;
            }
            // Probes and port scanners end handshakes all the time: not worth a warning.
            Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => debug!(%peer, "TLS handshake timed out"),
        }
    }

    async fn serve_http<I, H>(
        self,
        io: I,
        peer: SocketAddr,
        handler: H,
        activity: Arc<Activity>,
        certified: bool,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: RequestHandler,
    {
        let service_activity = Arc::clone(&activity);
        let limit = self.limits.max_header_bytes;
        let standing = ConnectionStanding::default();
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            let standing = standing.clone();
            let in_flight = service_activity.request_started();
            async move {
                if header_block_len(&request) > limit {
                    let response = headers_too_large(limit);
                    return Ok::<_, Infallible>(
                        response.map(|body| TrackedBody::new(body, in_flight)),
                    );
                }
                let mut request = request.map(|body| body.map_err(Into::into).boxed_unsync());
                if certified {
                    request.extensions_mut().insert(VerifiedClientCertificate);
                }
                request.extensions_mut().insert(standing);
                let response = handler.handle(request, peer).await;
                let response = response.map(|body| TrackedBody::new(body, in_flight));
                Ok::<_, Infallible>(response)
            }
        });
        let connection = http1::Builder::new()
            .max_buf_size(self.limits.max_header_bytes + HEADER_SLACK)
            .keep_alive(true)
            .half_close(true)
            .serve_connection(TokioIo::new(io), service)
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
