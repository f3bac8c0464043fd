//! The Docker API through berth, against the real engine.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{berth_sender, request, sign, Target};
use crate::support::temp_dir::temp_dir;
use crate::{berth_for_engine, unique, IMAGE};

/// Splits Docker's multiplexed stream (8-byte frame headers) into stdout text.
pub fn demultiplex(mut bytes: &[u8]) -> String {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let size = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let end = (8 + size).min(bytes.len());
        out.extend_from_slice(&bytes[8..end]);
        bytes = &bytes[end..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// On a 101 answer to an exec or attach: sends `input`, ends it (half
/// close), and returns all the output that comes back, demultiplexed.
pub async fn exchange(response: http::Response<hyper::body::Incoming>, input: &[u8]) -> String {
    let upgraded = hyper::upgrade::on(response)
        .await
        .expect("an upgraded connection");
    let mut stream = hyper_util::rt::TokioIo::new(upgraded);
    stream.write_all(input).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut output = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut output))
        .await
        .expect("the process ends when its input ends")
        .unwrap();
    demultiplex(&output)
}

async fn create_container(target: &Target, name: &str, cmd: &[&str]) -> String {
    create_container_from(target, name, json!({"Cmd": cmd, "OpenStdin": true})).await
}

/// Creates a container of the test image from `spec`; returns its ID.
async fn create_container_from(target: &Target, name: &str, mut spec: serde_json::Value) -> String {
    spec["Image"] = json!(IMAGE);
    let (status, created) = target
        .json(
            "POST",
            &format!("/v1.41/containers/create?name={name}"),
            &spec.to_string(),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["Id"].as_str().unwrap().to_string()
}

/// Creates and starts a container.
async fn run_container(target: &Target, name: &str, cmd: &[&str]) -> String {
    run_container_from(target, name, json!({"Cmd": cmd, "OpenStdin": true})).await
}

/// Creates and starts a container from `spec` (the image is added).
pub async fn run_container_from(target: &Target, name: &str, spec: serde_json::Value) -> String {
    let id = create_container_from(target, name, spec).await;
    let (response, body) = target
        .fetch("POST", &format!("/v1.41/containers/{id}/start"), "")
        .await;
    // The engine's own words when it fails to start one (Podman 5.4 once
    // answered 500 here in CI).
    assert_eq!(response.status(), 204, "{}", String::from_utf8_lossy(&body));
    id
}

/// Creates a volume named `name`.
pub async fn create_volume(target: &Target, name: &str) -> serde_json::Value {
    let (status, created) = target
        .json(
            "POST",
            "/v1.41/volumes/create",
            &json!({"Name": name}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// `GET /containers/{id}/logs?follow=1`, its body left streaming.
async fn follow_logs(target: &Target, id: &str) -> hyper::body::Incoming {
    let response = target
        .send(request(
            "GET",
            &format!("/v1.41/containers/{id}/logs?follow=1&stdout=1"),
            "",
        ))
        .await;
    assert_eq!(response.status(), 200);
    response.into_body()
}

async fn remove_container(target: &Target, id: &str) {
    let (response, _) = target
        .fetch("DELETE", &format!("/v1.41/containers/{id}?force=1"), "")
        .await;
    assert!(response.status() == 204 || response.status() == 404);
}

#[tokio::test]
async fn version_and_info_come_from_the_engine() {
    let Some((berth, host)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let (response, body) = target.fetch("GET", "/v1.41/version", "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["portainer-agent"], "2.23.0");
    // Whatever engine answers (1.41 for Docker 20.10, 1.45 for 26.1).
    let direct = Target::Socket(crate::support::berth_process::engine_socket(&host));
    let (engine_response, engine_body) = direct.fetch("GET", "/v1.41/version", "").await;
    assert_eq!(
        response.headers()["api-version"],
        engine_response.headers()["api-version"]
    );
    let version: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let engine_version: serde_json::Value = serde_json::from_slice(&engine_body).unwrap();
    assert_eq!(version["ApiVersion"], engine_version["ApiVersion"]);
    assert!(version["ApiVersion"].is_string(), "{version}");
    let (status, info) = target.json("GET", "/info", "").await;
    assert_eq!(status, 200);
    assert!(info["Name"].as_str().is_some_and(|name| !name.is_empty()));
}

#[tokio::test]
async fn container_lifecycle() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let name = unique("lifecycle");
    let id = create_container(
        &target,
        &name,
        &["sh", "-c", "echo hello-lifecycle; sleep 300"],
    )
    .await;

    let (response, _) = target
        .fetch("POST", &format!("/v1.41/containers/{id}/start"), "")
        .await;
    assert_eq!(response.status(), 204);
    let (status, inspected) = target
        .json("GET", &format!("/v1.41/containers/{name}/json"), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(inspected["State"]["Running"], true);
    assert_eq!(inspected["Id"], id.as_str());

    let (response, _) = target
        .fetch("POST", &format!("/v1.41/containers/{id}/stop?t=0"), "")
        .await;
    assert_eq!(response.status(), 204);
    let (response, logs) = target
        .fetch("GET", &format!("/v1.41/containers/{id}/logs?stdout=1"), "")
        .await;
    assert_eq!(response.status(), 200);
    assert!(demultiplex(&logs).contains("hello-lifecycle"));

    let (response, _) = target
        .fetch("DELETE", &format!("/v1.41/containers/{id}"), "")
        .await;
    assert_eq!(response.status(), 204);
    let (status, _) = target
        .json("GET", &format!("/v1.41/containers/{id}/json"), "")
        .await;
    assert_eq!(status, 404);
}

/// The first line of a followed log arrives while the container still runs:
/// nothing waits for the stream to end.
#[tokio::test]
async fn followed_log_streams_before_the_container_exits() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let id = run_container(
        &target,
        &unique("follow"),
        &["sh", "-c", "echo first-line; sleep 300"],
    )
    .await;
    let mut body = follow_logs(&target, &id).await;
    let mut received = Vec::new();
    while !demultiplex(&received).contains("first-line") {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("the first log line within 30s")
            .expect("the stream is open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
    }
    let (_, inspected) = target
        .json("GET", &format!("/v1.41/containers/{id}/json"), "")
        .await;
    assert_eq!(
        inspected["State"]["Running"], true,
        "the line came before the container ended"
    );
    remove_container(&target, &id).await;
}

/// `docker exec -i` with stdin: the upgraded connection carries input to
/// the process, and closing our write side ends its input while its output
/// still comes back.
#[tokio::test]
async fn exec_with_stdin_over_an_upgraded_connection() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let id = run_container(&target, &unique("exec"), &["sleep", "300"]).await;
    let exec_body =
        json!({"AttachStdin": true, "AttachStdout": true, "AttachStderr": true, "Cmd": ["cat"]});
    let (status, exec) = target
        .json(
            "POST",
            &format!("/v1.41/containers/{id}/exec"),
            &exec_body.to_string(),
        )
        .await;
    assert_eq!(status, 201);
    let exec_id = exec["Id"].as_str().unwrap();

    let mut start = Request::post(format!("/v1.41/exec/{exec_id}/start"))
        .header("host", "docker")
        .header("content-type", "application/json")
        .header("connection", "Upgrade")
        .header("upgrade", "tcp")
        .body(Full::new(Bytes::from(r#"{"Detach":false,"Tty":false}"#)))
        .unwrap();
    sign(start.headers_mut());
    let mut sender = target.connect().await;
    let response = sender.send_request(start).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["portainer-agent"], "2.23.0");
    assert_eq!(
        exchange(response, b"through-the-splice\n").await,
        "through-the-splice\n"
    );
    remove_container(&target, &id).await;
}

#[tokio::test]
async fn volume_created_and_listed() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let name = unique("volume");
    let created = create_volume(&target, &name).await;
    assert_eq!(created["Name"], name.as_str());
    let (status, listed) = target.json("GET", "/v1.41/volumes", "").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["Name"].as_str())
        .collect();
    assert!(names.contains(&name.as_str()), "{names:?}");
    let (response, _) = target
        .fetch("DELETE", &format!("/v1.41/volumes/{name}"), "")
        .await;
    assert_eq!(response.status(), 204);
}

/// A network created through berth is in its network list, in Docker's
/// shape (Podman's too).
#[tokio::test]
async fn network_created_and_listed() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let target = Target::Berth(berth.addr);
    let name = unique("network");
    let (status, created) = target
        .json(
            "POST",
            "/v1.41/networks/create",
            &json!({"Name": name, "Internal": true}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, listed) = target.json("GET", "/v1.41/networks", "").await;
    assert_eq!(status, 200);
    let network = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} is not listed: {listed}"));
    assert!(
        network["Id"].is_string() && network["Driver"].is_string(),
        "{network}"
    );
    let (response, _) = target
        .fetch("DELETE", &format!("/v1.41/networks/{name}"), "")
        .await;
    assert_eq!(response.status(), 204);
}

/// An image imported from a tarball sent in chunks, with no length known in
/// advance: berth streams the body to the engine.
#[tokio::test]
async fn image_import_with_a_streamed_body() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let dir = temp_dir("import");
    std::fs::write(dir.join("hello.txt"), "imported through berth\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-C", dir.to_str().unwrap(), "-c", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    let tag = unique("import").replace("berth-test-", "");
    let (chunks, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let body = StreamBody::new(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|frame| (frame, receiver)) },
    ));
    let mut sender = berth_sender(berth.addr).await;
    // The tag rides in `repo`: Podman 4.3 ignores a separate `tag` on import.
    let mut request = Request::post(format!(
        "/v1.41/images/create?fromSrc=-&repo=berth-test/imported:{tag}"
    ))
    .header("host", "docker")
    .header("content-type", "application/x-tar")
    .body(body)
    .unwrap();
    sign(request.headers_mut());
    let feeder = tokio::spawn(async move {
        for piece in tar.stdout.chunks(1024) {
            chunks
                .send(Ok(Frame::data(Bytes::copy_from_slice(piece))))
                .await
                .unwrap();
        }
    });
    let response = sender.send_request(request).await.unwrap();
    feeder.await.unwrap();
    assert_eq!(response.status(), 200);
    let progress = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&progress).contains("sha256:"),
        "{progress:?}"
    );

    let target = Target::Berth(berth.addr);
    let (status, image) = target
        .json(
            "GET",
            &format!("/v1.41/images/berth-test/imported:{tag}/json"),
            "",
        )
        .await;
    assert_eq!(status, 200, "{image}");
    let (response, _) = target
        .fetch(
            "DELETE",
            &format!("/v1.41/images/berth-test/imported:{tag}"),
            "",
        )
        .await;
    assert_eq!(response.status(), 200);
}

/// SIGTERM while a followed log is streaming: berth stops accepting new
/// connections, lets the stream finish, then exits 0.
#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish() {
    let Some(host) = crate::support::berth_process::engine_host() else {
        return;
    };
    let mut berth = crate::support::berth_process::BerthProcess::start(&[
        ("DOCKER_HOST", &host),
        ("AGENT_SHUTDOWN_TIMEOUT", "60s"),
    ]);
    let target = Target::Berth(berth.addr);
    let id = run_container(
        &target,
        &unique("drain"),
        &["sh", "-c", "echo started; sleep 300"],
    )
    .await;
    let mut body = follow_logs(&target, &id).await;

    let addr = berth.addr;
    let stopper = std::thread::spawn(move || berth.stop_with("TERM", Duration::from_secs(60)));
    // Once berth has stopped accepting, new connections are refused.
    let refused = async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), refused)
        .await
        .expect("berth stops accepting after SIGTERM");

    // Ending the container, through the engine directly, ends the stream.
    let direct = Target::Socket(crate::support::berth_process::engine_socket(&host));
    let (response, _) = direct
        .fetch(
            "POST",
            &format!("/v1.41/containers/{id}/kill?signal=KILL"),
            "",
        )
        .await;
    assert_eq!(response.status(), 204);

    let mut received = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("the stream ends once the container is gone")
    {
        if let Ok(data) = frame.expect("no error mid-stream").into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert!(demultiplex(&received).contains("started"));
    let status = stopper.join().unwrap();
    assert_eq!(status.code(), Some(0));
    remove_container(&direct, &id).await;
}

/// `/host/info` in the reference's shape, from the machine berth runs on,
/// whatever the engine (Podman hosts included).
#[tokio::test]
async fn host_info_reads_this_machine() {
    let Some((_, host)) = berth_for_engine() else {
        return;
    };
    let berth = crate::support::berth_process::BerthProcess::start(&[
        ("DOCKER_HOST", &host),
        ("AGENT_HOST_ROOT", "/"),
    ]);
    let (status, info) = Target::Berth(berth.addr)
        .json("GET", "/host/info", "")
        .await;
    assert_eq!(status, 200, "{info}");
    assert!(info["PCIDevices"].is_array(), "{info}");
    let disks = info["PhysicalDisks"].as_array().expect("PhysicalDisks");
    assert!(!disks.is_empty(), "this machine has a disk: {info}");
    for disk in disks {
        assert!(
            disk["Size"].is_u64() && disk["Vendor"].is_string(),
            "{disk}"
        );
    }
}
