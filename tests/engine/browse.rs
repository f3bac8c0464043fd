//! Browsing a real volume of the real engine through berth, and a 1 GiB
//! upload with the agent's peak memory watched.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;

use crate::support::berth_process::{engine_host, engine_volumes_root, BerthProcess};
use crate::support::client::{berth_sender, sign, Target};
use crate::{unique, IMAGE};

const GIB: u64 = 1024 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// The agent's peak resident memory so far, from /proc (kB).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_real_volume_is_browsed_and_takes_a_1_gib_upload() {
    let Some(host) = engine_host() else { return };
    let volumes_root = engine_volumes_root(&host);
    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", &host),
        ("AGENT_VOLUMES_ROOT", volumes_root.to_str().unwrap()),
    ]);
    let target = Target::Berth(berth.addr);
    let volume = unique("browse-vol");
    crate::api::create_volume(&target, &volume).await;

    // A container writes a file into the volume.
    let create = json!({
        "Image": IMAGE,
        "Cmd": ["sh", "-c", "echo hello > /data/greeting.txt"],
        "HostConfig": {"Binds": [format!("{volume}:/data")], "NetworkMode": "none"}
    });
    let (status, created) = target
        .json("POST", "/v1.41/containers/create", &create.to_string())
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["Id"].as_str().unwrap();
    assert_eq!(
        target
            .fetch("POST", &format!("/v1.41/containers/{id}/start"), "")
            .await
            .0
            .status(),
        204
    );
    let (status, _) = target
        .json("POST", &format!("/v1.41/containers/{id}/wait"), "")
        .await;
    assert_eq!(status, 200);
    target
        .fetch("DELETE", &format!("/v1.41/containers/{id}"), "")
        .await;

    let (status, listed) = target
        .json(
            "GET",
            &format!("/v2/browse/ls?volumeID={volume}&path=/"),
            "",
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed[0]["Name"], "greeting.txt");
    assert_eq!(listed[0]["Size"], 6);
    let (response, body) = target
        .fetch(
            "GET",
            &format!("/v2/browse/get?volumeID={volume}&path=/greeting.txt"),
            "",
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(&body[..], b"hello\n");

    // 1 GiB, generated as it is sent, through TLS and multipart to disk.
    let before = peak_rss_kib(berth.pid());
    let head = "--B\r\nContent-Disposition: form-data; name=\"Path\"\r\n\r\n/\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    let chunks = (GIB as usize) / CHUNK;
    let parts = std::iter::once(Bytes::from_static(head.as_bytes()))
        .chain((0..chunks).map(|n| Bytes::from(vec![(n % 251) as u8; CHUNK])))
        .chain(std::iter::once(Bytes::from_static(b"\r\n--B--\r\n")))
        .map(|bytes| Ok::<_, std::io::Error>(Frame::data(bytes)));
    let body = StreamBody::new(futures_util::stream::iter(parts));
    let mut request = Request::post(format!("/v2/browse/put?volumeID={volume}"))
        .header("host", "berth")
        .header("content-type", "multipart/form-data; boundary=B")
        .body(body)
        .unwrap();
    sign(request.headers_mut());
    let response = berth_sender(berth.addr)
        .await
        .send_request(request)
        .await
        .unwrap();
    let status = response.status();
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&answer));
    let after = peak_rss_kib(berth.pid());
    let written = std::fs::metadata(volumes_root.join(&volume).join("_data/big.bin"))
        .unwrap()
        .len();
    assert_eq!(written, GIB);
    eprintln!("1 GiB upload: berth peak RSS {before} kB before, {after} kB after");
    // Streamed, not gathered: far below the file's size.
    assert!(after < 256 * 1024, "peak RSS {after} kB");

    let (response, _) = target
        .fetch(
            "DELETE",
            &format!("/v2/browse/delete?volumeID={volume}&path=/big.bin"),
            "",
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        target
            .fetch("DELETE", &format!("/v1.41/volumes/{volume}"), "")
            .await
            .0
            .status(),
        204
    );
}
