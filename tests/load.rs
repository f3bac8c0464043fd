//! Load and abuse at the front door, against the real berth binary (no
//! engine needed: only `/ping` is asked): a thousand keep-alive connections,
//! the connection limit's clear answer, clients that trickle their headers,
//! and oversized headers.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use support::berth_process::BerthProcess;
use support::client::tls_stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NO_ENGINE: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent/docker.sock");

fn ping() -> Request<Full<Bytes>> {
    Request::get("/ping")
        .header("host", "berth")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn connect(berth: &BerthProcess) -> SendRequest<Full<Bytes>> {
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls_stream(berth.addr).await))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

async fn status(sender: &mut SendRequest<Full<Bytes>>) -> (u16, Bytes) {
    let response = sender.send_request(ping()).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_keep_alive_connections_are_held_and_served() {
    let berth = BerthProcess::start(&[NO_ENGINE]);
    let addr = berth.addr;
    let mut connections = Vec::new();
    for batch in 0..10 {
        let opened: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn(async move {
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tls_stream(addr).await))
                            .await
                            .unwrap();
                    tokio::spawn(connection);
                    assert_eq!(status(&mut sender).await.0, 204);
                    sender
                })
            })
            .collect();
        for task in opened {
            connections.push(task.await.unwrap_or_else(|e| panic!("batch {batch}: {e}")));
        }
    }
    assert_eq!(connections.len(), 1000);
    // Every one of them is still open and answers again.
    for sender in &mut connections {
        assert_eq!(status(sender).await.0, 204);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_limit_the_answer_is_a_clear_503() {
    let berth = BerthProcess::start(&[NO_ENGINE, ("AGENT_MAX_CONNECTIONS", "3")]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut sender = connect(&berth).await;
        assert_eq!(status(&mut sender).await.0, 204);
        held.push(sender);
    }
    let mut extra = connect(&berth).await;
    let (code, body) = status(&mut extra).await;
    assert_eq!(code, 503);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["message"], "Too many connections");
    assert!(body["details"].as_str().unwrap().contains("at most 3"));

    // A freed place is taken by the next client.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = connect(&berth).await;
        if status(&mut next).await.0 == 204 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was never given");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn headers_trickled_slowly_are_cut_by_the_header_timeout() {
    let berth = BerthProcess::start(&[NO_ENGINE, ("AGENT_HEADER_TIMEOUT", "1s")]);
    let mut slow = tls_stream(berth.addr).await;
    slow.write_all(b"GET /ping HTTP/1.1\r\nhost: berth\r\nx-slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    // A byte every 100 ms keeps the connection busy but never finishes.
    let cut = loop {
        if slow.write_all(b"a").await.is_err() {
            break true;
        }
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buffer));
        if let Ok(Ok(0) | Err(_)) = read.await {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(cut, "a trickling client kept its connection");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `/ping` with one header `x-big` of `size` bytes; the status and body.
async fn ping_with_header(berth: &BerthProcess, size: usize) -> (u16, String) {
    let mut sender = connect(berth).await;
    let request = Request::get("/ping")
        .header("host", "berth")
        .header("x-big", "a".repeat(size))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn header_blocks_over_64_kib_get_a_431_in_portainers_shape() {
    let berth = BerthProcess::start(&[NO_ENGINE]);
    assert_eq!(ping_with_header(&berth, 60 * 1024).await.0, 204);
    let (status, body) = ping_with_header(&berth, 70 * 1024).await;
    assert_eq!(status, 431);
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(error["message"], "Request header fields too large");
    assert!(
        error["details"].as_str().unwrap().contains("65536"),
        "{error}"
    );
    // Far beyond, hyper's buffer overflows first: a 431 without a body.
    assert_eq!(ping_with_header(&berth, 512 * 1024).await.0, 431);

    let mut sender = connect(&berth).await;
    let mut request = ping();
    for n in 0..150 {
        request.headers_mut().insert(
            format!("x-many-{n}").parse::<http::HeaderName>().unwrap(),
            "v".parse().unwrap(),
        );
    }
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 431);
}

#[tokio::test]
async fn the_header_limit_is_an_option() {
    let berth = BerthProcess::start(&[NO_ENGINE, ("AGENT_MAX_HEADER_BYTES", "262144")]);
    assert_eq!(ping_with_header(&berth, 200 * 1024).await.0, 204);
    assert_eq!(ping_with_header(&berth, 270 * 1024).await.0, 431);
}

/// Sends a header block of `size` bytes, then reads the answer, as most
/// clients do (Python's http.client, curl): the status line berth
/// answered, or why none was read.
async fn oversized_request(addr: std::net::SocketAddr, size: usize) -> Result<String, String> {
    let mut stream = tls_stream(addr).await;
    let head = format!(
        "GET /ping HTTP/1.1\r\nhost: berth\r\nx-big: {}\r\n\r\n",
        "a".repeat(size)
    );
    let exchange = async {
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("the request could not be sent whole: {e}"))?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(e) => return Err(format!("the answer could not be read: {e}")),
            }
        }
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .map(str::to_string)
            .ok_or_else(|| "the connection closed without an answer".to_string())
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 20 s".into()))
}

/// A client still sending an oversized header block reads its 431: berth
/// keeps reading for a while after it answers (lingering close) instead of
/// closing on unread bytes, which resets the connection and discards the
/// answer before the client reads it. 32 connections at once, many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_sending_oversized_headers_reads_its_431() {
    let mut berth = BerthProcess::start(&[NO_ENGINE]);
    let addr = berth.addr;
    for round in 0..8 {
        let clients: Vec<_> = (0..32)
            .map(|n| {
                // Past hyper's buffer (its own 431) and past berth's limit
                // alike, with a tail that is still being sent.
                let size = if n % 2 == 0 { 1024 * 1024 } else { 100 * 1024 };
                tokio::spawn(oversized_request(addr, size))
            })
            .collect();
        for (n, client) in clients.into_iter().enumerate() {
            let status = client.await.unwrap();
            assert!(
                status
                    .as_deref()
                    .is_ok_and(|line| line.starts_with("HTTP/1.1 431")),
                "round {round}, client {n}: {status:?}"
            );
        }
    }
    assert!(berth.is_running(), "berth is still up");
}
