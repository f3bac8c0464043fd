//! Websocket consoles through berth, with a real websocket client, against
//! the real engine.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::berth_process::{engine_is_podman, BerthProcess};
use crate::support::client::{tls_stream, Target};
use crate::support::fixtures::portainer_identity;
use crate::{berth_for_engine, unique};

type Console =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn open(berth: &BerthProcess, path: &str) -> Result<Console, WsError> {
    open_on(berth, path, None).await
}

/// A console through `berth`, for the node `target` names (if any).
pub async fn open_on(
    berth: &BerthProcess,
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
    let stream = tls_stream(berth.addr).await;
    tokio_tungstenite::client_async(request, stream)
        .await
        .map(|(socket, _)| socket)
}

/// Reads text frames until `marker` has arrived; returns all the text.
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

/// A running container with a terminal and stdin open.
async fn running_container(target: &Target, name: &str, cmd: &[&str]) -> String {
    let spec = json!({"Cmd": cmd, "Tty": true, "OpenStdin": true, "AttachStdin": true});
    crate::api::run_container_from(target, name, spec).await
}

#[tokio::test]
async fn an_exec_console_carries_a_64_kib_paste() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let id = running_container(&target, &unique("console-exec"), &["sleep", "300"]).await;
    let exec = json!({"AttachStdin": true, "AttachStdout": true, "AttachStderr": true, "Tty": true, "Cmd": ["cat"]});
    let (status, created) = target
        .json(
            "POST",
            &format!("/v1.41/containers/{id}/exec"),
            &exec.to_string(),
        )
        .await;
    assert_eq!(status, 201);
    let exec_id = created["Id"].as_str().unwrap();

    let mut console = open(
        &berth,
        &format!("/websocket/exec?id={exec_id}&nodeName=x&endpointId=1"),
    )
    .await
    .unwrap();
    // One paste of 64 KiB: 1024 lines of 64 bytes (a terminal line holds 4
    // KiB). Podman's exec sessions (conmon) stop for good on a terminal
    // paste past about 16 KiB, asked directly or through berth; 8 KiB
    // there, still four times what the Go agent's console allows.
    let lines = if engine_is_podman() { 128 } else { 1024 };
    let paste: String = (0..lines)
        .map(|n| format!("line-{n:04}-{}\n", "x".repeat(53)))
        .collect();
    assert_eq!(paste.len(), lines * 64);
    console.send(Message::text(paste)).await.unwrap();
    let received = read_until(&mut console, &format!("line-{:04}-", lines - 1)).await;
    assert!(
        received.len() >= lines * 64,
        "{} bytes back",
        received.len()
    );
    // Resizing the terminal goes through the Docker proxy.
    let (response, _) = target
        .fetch(
            "POST",
            &format!("/v1.41/exec/{exec_id}/resize?h=40&w=120"),
            "",
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    console.close(None).await.unwrap();
    let (response, _) = target
        .fetch("DELETE", &format!("/v1.41/containers/{id}?force=1"), "")
        .await;
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn an_attach_console_reaches_the_containers_terminal() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let id = running_container(&target, &unique("console-attach"), &["cat"]).await;
    let mut console = open(&berth, &format!("/v2/websocket/attach?id={id}"))
        .await
        .unwrap();
    console.send(Message::text("hello-attach\n")).await.unwrap();
    read_until(&mut console, "hello-attach").await;
    drop(console);
    let (response, _) = target
        .fetch("DELETE", &format!("/v1.41/containers/{id}?force=1"), "")
        .await;
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn consoles_for_nothing_fail_before_the_upgrade() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let missing = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for (path, status) in [
        (format!("/websocket/exec?id={missing}"), 404),
        (format!("/websocket/attach?id={missing}"), 404),
        ("/websocket/exec?id=not-hex!".to_string(), 400),
        ("/websocket/exec".to_string(), 400),
    ] {
        match open(&berth, &path).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), status, "{path}"),
            other => panic!(
                "{path}: expected an HTTP error, got {:?}",
                other.map(|_| "a socket")
            ),
        }
    }
}
