//! Faults under load, against the real berth binary: an engine killed
//! (SIGKILL) in the middle of a followed log stream and of an upload. The
//! client gets an end or an error, not a hang; berth keeps serving; and the
//! engine, once back, is served again by the same berth process.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use support::berth_process::{engine_host, BerthProcess};
use support::client::{berth_sender, request};
use support::own_engine::OwnEngine;

/// One request on a fresh connection to berth; the answer's head and body.
async fn send(
    addr: std::net::SocketAddr,
    request: Request<http_body_util::Full<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    berth_sender(addr)
        .await
        .send_request(request)
        .await
        .unwrap()
}

/// A ustar header for one regular file of `size` bytes.
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_ends_streams_cleanly_and_is_served_again_when_back() {
    if engine_host().is_none() {
        return;
    }
    let engine = OwnEngine::start("kill");
    let ticker = engine.docker(&[
        "run",
        "-d",
        "berth-test/busybox:latest",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.1; done",
    ]);
    assert!(!ticker.is_empty());
    let berth = BerthProcess::start(&[("DOCKER_HOST", &engine.host())]);

    // A followed log stream, ticking.
    let response = send(
        berth.addr,
        request(
            "GET",
            &format!("/containers/{ticker}/logs?follow=1&stdout=1"),
            "",
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut log_body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), log_body.frame()).await;
    assert!(matches!(first, Ok(Some(Ok(_)))), "the log stream ticks");

    // An upload that stops halfway: a tar entry of 1 MiB with 64 KiB sent.
    let (chunks, body_stream) =
        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let upload_body = StreamBody::new(tokio_stream_from(body_stream));
    let mut upload_sender = berth_sender(berth.addr).await;
    let mut upload = Request::put(format!("/containers/{ticker}/archive?path=/tmp"))
        .header("host", "docker")
        .header("content-type", "application/x-tar")
        .body(upload_body)
        .unwrap();
    support::client::sign(upload.headers_mut());
    let upload_answer = tokio::spawn(async move { upload_sender.send_request(upload).await });
    chunks
        .send(Ok(Frame::data(Bytes::copy_from_slice(&tar_header(
            "big",
            1 << 20,
        )))))
        .await
        .unwrap();
    chunks
        .send(Ok(Frame::data(Bytes::from(vec![7u8; 64 * 1024]))))
        .await
        .unwrap();

    engine.kill();
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match log_body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the log stream ended when the engine died");
    let answer = tokio::time::timeout(Duration::from_secs(15), upload_answer)
        .await
        .expect("the upload was answered or cut, not left hanging")
        .unwrap();
    if let Ok(response) = answer {
        assert!(response.status().is_server_error(), "{}", response.status());
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(chunks);

    // berth itself is fine, and says the engine is gone.
    let down = send(berth.addr, request("GET", "/_ping", "")).await;
    assert_eq!(down.status(), 502);

    engine.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = send(berth.addr, request("GET", "/_ping", "")).await;
        if up.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the engine was not served again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An mpsc receiver as a stream, for a request body the test feeds.
fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn clustered(engine: &str, gossip: &str, seed: &str) -> BerthProcess {
    BerthProcess::start(&[
        ("DOCKER_HOST", engine),
        ("AGENT_CLUSTER_PORT", gossip),
        ("AGENT_CLUSTER_ADDR", seed),
        ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
        ("AGENT_CLUSTER_PROBE_INTERVAL", "200ms"),
        ("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms"),
        ("AGENT_FANOUT_TIMEOUT", "3s"),
    ])
}

/// A peer agent that stops (frozen, then killed) while a request is
/// forwarded to it and while a cluster-wide list asks it: the answers are
/// bounded, and the agent in front keeps no connection behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_bounds_forwarded_requests_and_lists_without_leaking() {
    let Some(engines) = support::berth_process::cluster_engine_hosts() else {
        return;
    };
    let (gossip_front, gossip_peer) = (
        support::berth_process::free_port().to_string(),
        support::berth_process::free_port().to_string(),
    );
    let front = clustered(
        &engines[1],
        &gossip_front,
        &format!("127.0.0.1:{gossip_peer}"),
    );
    let mut peer = clustered(
        &engines[2],
        &gossip_peer,
        &format!("127.0.0.1:{gossip_front}"),
    );
    let ticker = {
        let output = Command::new("docker")
            .args([
                "-H",
                &engines[2],
                "run",
                "-d",
                "--rm",
                "berth-test/busybox:latest",
            ])
            .args(["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let to_peer = |path: &str| {
        let mut request = request("GET", path, "");
        request
            .headers_mut()
            .insert("x-portaineragent-target", "berth-node-c".parse().unwrap());
        request
    };
    // Both agents see each other, and a list reaches both nodes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if send(front.addr, to_peer("/_ping")).await.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster never formed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = send(front.addr, request("GET", "/containers/json", "")).await;
    assert_eq!(list.status(), 200);
    let _ = list.into_body().collect().await;
    let baseline = open_files(front.pid());

    // A log stream from the peer's node, through the front agent.
    let response = send(
        front.addr,
        to_peer(&format!("/containers/{ticker}/logs?follow=1&stdout=1")),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), body.frame()).await,
        Ok(Some(Ok(_)))
    ));

    // Frozen: a cluster-wide list answers within the fan-out timeout and
    // names the missing node.
    let pid = peer.pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let list = send(front.addr, request("GET", "/containers/json", "")).await;
    assert_eq!(list.status(), 200);
    let unavailable = list
        .headers()
        .get("x-portaineragent-unavailable-nodes")
        .map(|v| v.to_str().unwrap().to_string());
    let _ = list.into_body().collect().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(unavailable.unwrap_or_default().contains("berth-node-c"));
    eprintln!(
        "list with a frozen peer: {:?} (fan-out timeout 3s)",
        started.elapsed()
    );

    // Killed: the forwarded stream ends.
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    peer.stop_with("KILL", Duration::from_secs(10));
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    assert!(ended.is_ok(), "the forwarded stream outlived the peer");
    drop(body);

    // Nothing stays open on the front agent for the dead peer.
    let deadline = Instant::now() + Duration::from_secs(15);
    while open_files(front.pid()) > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "open files: {} now, {baseline} before",
            open_files(front.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "open files on the front agent: {baseline} before, {} after",
        open_files(front.pid())
    );
    let _ = Command::new("docker")
        .args(["-H", &engines[2], "rm", "-f", &ticker])
        .output();
}
