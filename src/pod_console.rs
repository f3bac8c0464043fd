//! `/websocket/pod`: a console into a container of a pod (reference §6.5),
//! as Portainer's pod console and its "kubectl shell" open one.
//!
//! berth asks the API server for an exec over Kubernetes' own websocket
//! protocol (`v5.channel.k8s.io`, else `v4`), through the `KubernetesApi`
//! port, and only then answers the client's websocket handshake, so a
//! refusal (no such pod, RBAC) reaches the client as an error it can show.
//! The bridge: client messages become stdin frames (channel 0); stdout and
//! stderr (channels 1 and 2) become text frames of whole UTF-8 characters,
//! only the bytes the container wrote (the Go agent pads each frame to 2048
//! bytes with NULs); the status channel (3) or the API server's close ends
//! the console with a normal close.

use berth_domain::error::AgentError;
use berth_domain::kubernetes::{Credential, PodExec};
use berth_ports::{empty_body, Body, KubernetesApi};
use futures_util::{SinkExt, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::console::{
    client_websocket, refusal, session_ended, switching_protocols, take_whole_characters,
    until_output_ends,
};

/// The exec protocols berth speaks, the newest first: v5 adds a way to
/// close stdin alone.
const EXEC_PROTOCOLS: &str = "v5.channel.k8s.io, v4.channel.k8s.io";
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
/// v5: the channel-close message's channel.
const CLOSE: u8 = 255;

/// Opens the exec on the API server, then upgrades the client's connection
/// and bridges the two until either side ends.
pub async fn open<K: KubernetesApi>(
    api: &K,
    credential: Credential,
    mut request: Request<Body>,
) -> Result<Response<Body>, AgentError> {
    let exec = PodExec::from_query(request.uri().query())?;
    let (key, client_upgrade) = client_websocket(&mut request)?;
    let exec_request = Request::builder()
        .method(Method::GET)
        .uri(exec.api_server_path())
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(SEC_WEBSOCKET_KEY, generate_key())
        .header(SEC_WEBSOCKET_PROTOCOL, EXEC_PROTOCOLS)
        .body(empty_body())
        .map_err(|error| AgentError::bad_request(&error.to_string()))?;
    let mut answer = api
        .forward(exec_request, credential)
        .await
        .map_err(crate::kubernetes::api_error)?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(refusal(answer, "Unable to start exec process inside container").await);
    }
    let v5 = answer
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .is_some_and(|protocol| protocol.as_bytes() == b"v5.channel.k8s.io");
    let exec_upgrade = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, exec_upgrade) {
            Ok((client, exec)) => {
                let client =
                    WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None)
                        .await;
                let exec =
                    WebSocketStream::from_raw_socket(TokioIo::new(exec), Role::Client, None).await;
                bridge(client, exec, v5).await;
            }
            Err(error) => debug!(%error, "pod console upgrade did not complete"),
        }
    });
    Ok(switching_protocols(&key))
}

async fn bridge<C, E>(client: WebSocketStream<C>, exec: WebSocketStream<E>, v5: bool)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    E: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut to_client, mut from_client) = client.split();
    let (mut to_exec, mut from_exec) = exec.split();
    let inbound = async {
        while let Some(message) = from_client.next().await {
            let bytes = match message {
                Ok(Message::Text(text)) => text.as_bytes().to_vec(),
                Ok(Message::Binary(bytes)) => bytes.to_vec(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let mut frame = Vec::with_capacity(bytes.len() + 1);
            frame.push(STDIN);
            frame.extend_from_slice(&bytes);
            if to_exec.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
        if v5 {
            let _ = to_exec.send(Message::binary(vec![CLOSE, STDIN])).await;
        }
        let _ = to_exec.close().await;
    };
    let outbound = async {
        let mut pending = Vec::new();
        while let Some(Ok(message)) = from_exec.next().await {
            let Message::Binary(frame) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match frame.first() {
                Some(&STDOUT | &STDERR) => {
                    pending.extend_from_slice(&frame[1..]);
                    let text = take_whole_characters(&mut pending);
                    if !text.is_empty() && to_client.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Some(&STATUS) => {
                    debug!(status = %String::from_utf8_lossy(&frame[1..]), "pod console ended");
                    break;
                }
                _ => {}
            }
        }
        let _ = to_client.send(session_ended()).await;
    };
    until_output_ends(inbound, outbound).await;
}
