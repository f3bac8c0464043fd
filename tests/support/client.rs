//! Minimal HTTP/1.1 clients for tests: over TLS to berth (certificate not
//! verified, as Portainer does not), or straight to the engine's socket.

use std::net::SocketAddr;

use berth_adapters::http::tls::{peer_client_config, TlsIdentity};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// `GET path` in plain HTTP on a fresh connection (the metrics endpoint):
/// the whole answer, head and body.
pub async fn plain_get(addr: impl tokio::net::ToSocketAddrs, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nhost: berth\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// A client as Portainer's: the certificate is not verified.
pub fn tls_connector() -> TlsConnector {
    tls_connector_with(None)
}

/// The same, presenting `identity` for mutual TLS.
pub fn tls_connector_with(identity: Option<&TlsIdentity>) -> TlsConnector {
    TlsConnector::from(peer_client_config(identity).expect("a client configuration"))
}

/// A TLS connection to berth.
pub async fn tls_stream(addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect to berth");
    tls_connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with berth")
}

/// Where a request goes: berth over TLS, or the engine's socket directly.
#[derive(Debug, Clone)]
pub enum Target {
    Berth(SocketAddr),
    Socket(String),
}

impl Target {
    /// A new HTTP/1.1 connection; the connection task runs with upgrades.
    pub async fn connect(&self) -> SendRequest<Full<Bytes>> {
        match self {
            Target::Berth(addr) => handshake(tls_stream(*addr).await).await,
            Target::Socket(path) => {
                handshake(
                    UnixStream::connect(path)
                        .await
                        .expect("connect to the engine"),
                )
                .await
            }
        }
    }

    /// Sends one request on a fresh connection.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        let mut sender = self.connect().await;
        sender.send_request(request).await.expect("an answer")
    }

    /// Sends a request and collects the whole answer.
    pub async fn fetch(&self, method: &str, path: &str, body: &str) -> (Response<()>, Bytes) {
        self.fetch_request(request(method, path, body)).await
    }

    /// Sends a prepared request and collects the whole answer.
    pub async fn fetch_request(&self, request: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
        let response = self.send(request).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("a whole body").to_bytes();
        (Response::from_parts(parts, ()), bytes)
    }

    /// `fetch`, then the body as JSON.
    pub async fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (response, bytes) = self.fetch(method, path, body).await;
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&bytes))
        });
        (response.status().as_u16(), value)
    }
}

/// A connection to berth whose requests carry any body type (streamed ones).
pub async fn berth_sender<B>(addr: SocketAddr) -> SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    handshake(tls_stream(addr).await).await
}

async fn handshake<S, B>(stream: S) -> SendRequest<B>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection.with_upgrades());
    sender
}

/// A request signed as Portainer signs (the engine ignores the headers).
pub fn request(method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    let mut request = unsigned_request(method, path, body);
    sign(request.headers_mut());
    request
}

/// Adds the signature headers of the tests' Portainer identity.
pub fn sign(headers: &mut http::HeaderMap) {
    super::fixtures::portainer_identity().apply(headers);
}

pub fn unsigned_request(method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "docker");
    if !body.is_empty() {
        builder = builder.header("content-type", "application/json");
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// `GET path` on a kept-alive connection, which must succeed: how long
/// the whole answer took (the benchmarks' unit of latency).
pub async fn timed_get(sender: &mut SendRequest<Full<Bytes>>, path: &str) -> std::time::Duration {
    sender.ready().await.expect("the connection is open");
    let started = std::time::Instant::now();
    let response = sender
        .send_request(request("GET", path, ""))
        .await
        .expect("an answer");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.into_body().collect().await.expect("a body");
    started.elapsed()
}
