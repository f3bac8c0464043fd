//! `/websocket/attach` and `/websocket/exec` (reference §6.4): a websocket
//! from Portainer's console bridged to the engine's hijacked attach or exec
//! stream. The engine is asked first, so a container or exec that does not
//! exist is an HTTP error before any upgrade, not a silently dead socket.

use std::future::Future;
use std::time::Duration;

use berth_domain::browse::query_value;
use berth_domain::error::AgentError;
use berth_domain::routing::WebsocketKind;
use berth_ports::{empty_body, full_body, Body, DockerEngine};
use futures_util::{SinkExt, StreamExt};
use http::header::{
    HeaderValue, CONNECTION, CONTENT_TYPE, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE,
};
use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::proxy;

/// Engine output is sent in chunks of at most this many bytes.
const CHUNK: usize = 32 * 1024;

/// Opens the engine stream, then upgrades the client's connection and
/// bridges the two until either side ends.
pub async fn console<E: DockerEngine>(
    engine: &E,
    kind: WebsocketKind,
    mut request: Request<Body>,
) -> Result<Response<Body>, AgentError> {
    let id = query_value(request.uri().query(), "id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            AgentError::new(
                400,
                "Invalid query parameter: id",
                "Missing query parameter",
            )
        })?;
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AgentError::new(
            400,
            "Invalid query parameter: id (must be hexadecimal identifier)",
            "Invalid identifier",
        ));
    }
    let (key, client_upgrade) = client_websocket(&mut request)?;

    let mut engine_response = engine
        .forward(hijack_request(kind, &id)?)
        .await
        .map_err(proxy::engine_error)?;
    if engine_response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(engine_refusal(engine_response).await);
    }
    let engine_upgrade = hyper::upgrade::on(&mut engine_response);

    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, engine_upgrade) {
            Ok((client, engine)) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None)
                        .await;
                bridge(socket, TokioIo::new(engine)).await;
            }
            Err(error) => debug!(%error, "console upgrade did not complete"),
        }
    });
    Ok(switching_protocols(&key))
}

/// The client's websocket key and its connection's upgrade handle.
///
/// # Errors
/// 400 when the request is not a websocket upgrade.
pub(crate) fn client_websocket(
    request: &mut Request<Body>,
) -> Result<(HeaderValue, OnUpgrade), AgentError> {
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or_else(|| {
            AgentError::bad_request("A websocket upgrade (Sec-WebSocket-Key) is required")
        })?;
    let upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| AgentError::bad_request("This connection cannot be upgraded"))?;
    Ok((key, upgrade))
}

/// The answer that completes the client's websocket handshake.
pub(crate) fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    response
}

/// How a console tells its client it ended on its own.
pub(crate) fn session_ended() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "the session ended".into(),
    }))
}

/// The engine request that hijacks the container's or exec's streams.
fn hijack_request(kind: WebsocketKind, id: &str) -> Result<Request<Body>, AgentError> {
    let (uri, body) = match kind {
        WebsocketKind::Exec => (
            format!("/exec/{id}/start"),
            full_body("{\"Tty\":true,\"Detach\":false}\n"),
        ),
        _ => (
            format!("/containers/{id}/attach?stdin=1&stdout=1&stderr=1&stream=1"),
            empty_body(),
        ),
    };
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("host", "docker")
        .header(CONTENT_TYPE, "application/json")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "tcp")
        .body(body)
        .map_err(|error| AgentError::bad_request(&error.to_string()))
}

/// The engine's own error (404 for a missing container), as a Portainer error.
async fn engine_refusal(response: Response<Body>) -> AgentError {
    refusal(response, "Unable to open the console").await
}

/// A refusal instead of an upgrade (the engine's error, the Kubernetes API
/// server's `Status`), in Portainer's shape under `message`: its status,
/// and its own `message` (else its text) as the details.
pub(crate) async fn refusal(response: Response<Body>, message: &str) -> AgentError {
    let status = response.status().as_u16();
    let body = berth_ports::read_bounded(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let details = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    AgentError::new(status, message, details)
}

/// Both directions until either ends: websocket messages go to the engine
/// raw; engine output comes back as text frames (whole UTF-8 characters
/// only, a split character waiting for its rest).
async fn bridge<S, T>(socket: WebSocketStream<S>, engine: T)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = socket.split();
    let (mut from_engine, mut to_engine) = tokio::io::split(engine);
    let inbound = async {
        while let Some(message) = from_client.next().await {
            let payload = match message {
                Ok(Message::Text(text)) => text.as_bytes().to_vec(),
                Ok(Message::Binary(bytes)) => bytes.to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if to_engine.write_all(&payload).await.is_err() {
                break;
            }
        }
        let _ = to_engine.shutdown().await;
    };
    let outbound = async {
        let mut buffer = vec![0u8; CHUNK];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let read = match from_engine.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            pending.extend_from_slice(&buffer[..read]);
            let text = take_whole_characters(&mut pending);
            if !text.is_empty() && to_client.send(Message::text(text)).await.is_err() {
                return;
            }
        }
        let _ = to_client.send(session_ended()).await;
    };
    // The console ends when the engine's stream ends (the shell exited) or
    // the client leaves.
    until_output_ends(inbound, outbound).await;
}

/// How long a console whose input side ended waits for the rest of the
/// output and its end.
const LAST_OUTPUT: Duration = Duration::from_secs(5);

/// Runs a console's two directions until the output side ends (it sends
/// the close). When the input side ends first (the client left, or the
/// program stopped taking input as it exits), what the program still
/// writes and the normal close go on to the client for a few seconds,
/// rather than the connection being dropped under them.
pub(crate) async fn until_output_ends(
    inbound: impl Future<Output = ()>,
    outbound: impl Future<Output = ()>,
) {
    tokio::pin!(outbound);
    tokio::select! {
        () = &mut outbound => {}
        () = inbound => {
            let _ = tokio::time::timeout(LAST_OUTPUT, &mut outbound).await;
        }
    }
}

/// The longest prefix of `pending` that is whole UTF-8 (invalid bytes
/// replaced), leaving a character cut at the end for the next read.
pub(crate) fn take_whole_characters(pending: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(pending) {
        Ok(_) => 0,
        Err(error) if error.error_len().is_none() => pending.len() - error.valid_up_to(),
        Err(_) => 0,
    };
    let whole: Vec<u8> = pending.drain(..pending.len() - keep).collect();
    String::from_utf8_lossy(&whole).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_cut_between_reads_wait_for_their_rest() {
        let euro = "€".as_bytes();
        let mut pending = [b"price: ".as_slice(), &euro[..2]].concat();
        assert_eq!(take_whole_characters(&mut pending), "price: ");
        assert_eq!(pending, &euro[..2]);
        pending.extend_from_slice(&euro[2..]);
        assert_eq!(take_whole_characters(&mut pending), "€");
        assert!(pending.is_empty());
        let mut invalid = vec![b'a', 0xff, b'b'];
        assert_eq!(take_whole_characters(&mut invalid), "a\u{fffd}b");
    }
}
