//! A websocket console client (the real tungstenite client) for any agent
//! speaking Portainer's console protocol: berth, or the Go agent beside it.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::client::tls_stream;
use super::fixtures::portainer_identity;

pub type Console =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A console at `path` on the agent at `addr`, signed as Portainer signs,
/// for the node `target` names (if any).
pub async fn open_at(
    addr: SocketAddr,
    path: &str,
    target: Option<&str>,
) -> Result<Console, WsError> {
    let mut request = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    portainer_identity().apply(request.headers_mut());
    if let Some(node) = target {
        request
            .headers_mut()
            .insert("x-portaineragent-target", node.parse().unwrap());
    }
    let stream = tls_stream(addr).await;
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(socket, _)| socket)
}

/// A console at `path` on the agent at `addr`, signed as Portainer signs,
/// with `headers` added (a Kubernetes user's token, say).
pub async fn open_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Console, WsError> {
    let mut request = format!("wss://localhost{path}")
        .into_client_request()
        .unwrap();
    portainer_identity().apply(request.headers_mut());
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = tls_stream(addr).await;
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(socket, _)| socket)
}

/// Reads frames until `marker` has arrived; returns all the text.
pub async fn read_until(console: &mut Console, marker: &str) -> String {
    let mut received = String::new();
    let reading = async {
        while !received.contains(marker) {
            match console.next().await {
                Some(Ok(Message::Text(text))) => received.push_str(&text),
                Some(Ok(Message::Binary(bytes))) => {
                    received.push_str(&String::from_utf8_lossy(&bytes))
                }
                Some(Ok(_)) => {}
                other => panic!(
                    "the console ended early: {other:?}; got {} bytes",
                    received.len()
                ),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .unwrap_or_else(|_| panic!("no {marker:?} within 60s"));
    received
}
