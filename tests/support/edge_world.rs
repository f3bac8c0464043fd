//! What the Edge tests share: a scripted Portainer, the real chisel server
//! and a data folder per test, the Edge key naming them, a berth process in
//! Edge mode, and plain-HTTP requests to its API, key page and metrics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::berth_process::BerthProcess;
use super::chisel::{Chisel, ChiselOptions};
use super::portainer_server::TestPortainer;
use super::temp_dir::{temp_dir, TempDir};

pub const EDGE_ID: &str = "berth-edge-test";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn edge_key(portainer: &TestPortainer, chisel: &Chisel, endpoint: u64) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!(
        "{}|{}|{}|{endpoint}",
        portainer.url(),
        chisel.address,
        chisel.fingerprint
    ))
}

/// What each Edge test starts from: a scripted Portainer, the real chisel
/// server with two tunnels granted, and a data folder. `None` when the
/// suite skips these tests.
pub struct EdgeWorld {
    pub portainer: TestPortainer,
    pub chisel: Chisel,
    pub data: TempDir,
}

impl EdgeWorld {
    /// With the newest pinned chisel, as current Portainer servers embed.
    pub async fn start(name: &str) -> Option<EdgeWorld> {
        let binary = super::chisel::binary(super::chisel::VERSIONS[1])?;
        Some(EdgeWorld::start_with(name, &binary).await)
    }

    pub async fn start_with(name: &str, chisel: &std::path::Path) -> EdgeWorld {
        EdgeWorld {
            portainer: TestPortainer::start().await,
            chisel: Chisel::start(
                chisel,
                EDGE_ID,
                ChiselOptions {
                    tunnels: 2,
                    ..ChiselOptions::default()
                },
            ),
            data: temp_dir(name),
        }
    }
}

/// One plain-HTTP request (the Edge API and the tunnel are plain HTTP).
pub async fn fetch(addr: SocketAddr, request: Request<Full<Bytes>>) -> Option<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

pub async fn fetch_ok(addr: SocketAddr, request: Request<Full<Bytes>>) -> (u16, Bytes) {
    fetch(addr, request).await.expect("an answer")
}

pub fn form(body: &str) -> Request<Full<Bytes>> {
    Request::post("/init")
        .header("host", "agent")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub async fn metric(metrics: SocketAddr, name: &str) -> Option<String> {
    let get = Request::get("/metrics")
        .header("host", "metrics")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, body) = fetch(metrics, get).await?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")).map(str::to_string))
}

pub async fn wait_metric(metrics: SocketAddr, name: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    while metric(metrics, name).await.as_deref() != Some(value) {
        assert!(Instant::now() < deadline, "{name} never became {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn start_edge_berth(
    engine: &str,
    data: &std::path::Path,
    extra: &[(&str, &str)],
) -> BerthProcess {
    let data = data.to_str().unwrap().to_string();
    let mut env = vec![
        ("DOCKER_HOST", engine),
        ("EDGE", "1"),
        ("EDGE_ID", EDGE_ID),
        ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
        ("DATA_PATH", data.as_str()),
    ];
    env.extend_from_slice(extra);
    BerthProcess::start(&env)
}

/// A host root holding busybox as `/bin/sh`, for jobs to run in.
pub fn host_root(name: &str) -> TempDir {
    let root = temp_dir(name);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    root
}

/// A stack as an async `edgeStack` command carries it: with its `ID`, as
/// Business Edition fills it (sync mode fetches CE's payload instead:
/// `portainer_ce::stack_payload`).
pub fn async_stack_payload(id: u64, name: &str, compose: &str) -> serde_json::Value {
    use base64::engine::general_purpose::STANDARD;
    json!({"ID": id, "Name": name, "EntryFileName": "docker-compose.yml", "Version": 1,
           "DirEntries": [{"Name": "docker-compose.yml", "IsFile": true, "Permissions": 0o644,
                           "Content": STANDARD.encode(compose)}],
           "EnvVars": [{"name": "GREETING", "value": "hello-from-portainer"}]})
}

pub const TOOLS_ENV: [(&str, &str); 3] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("ASSETS_PATH", "/nonexistent"),
];

pub fn docker_cli(engine: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .arg("-H")
        .arg(engine)
        .args(args)
        .output()
        .expect("run the docker CLI");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Stack `stack`'s statuses once `until` is among them (two minutes at
/// most: a compose deploy on a busy machine).
pub async fn wait_statuses(
    portainer: &TestPortainer,
    stack: u64,
    until: u64,
) -> Vec<(u64, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let statuses = portainer.stack_statuses(stack);
        if statuses.iter().any(|(code, _)| *code == until) {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "stack {stack} never reached {until}: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn codes(statuses: &[(u64, String)]) -> Vec<u64> {
    statuses.iter().map(|(code, _)| *code).collect()
}
