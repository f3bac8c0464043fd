//! The chisel client against a chisel-compatible server built on Go's
//! x/crypto/ssh (what chisel and so Portainer use): identification,
//! key exchange with an ECDSA P-256 host key, re-keying, password
//! authentication, the `config` request, `chisel` channels, pings.

mod support;

use std::time::Duration;

use berth_adapters::tunnel::{ChiselClient, TunnelTimeouts};
use berth_domain::edge::credentials;
use berth_ports::{OpenTunnel, TunnelClient, TunnelError, TunnelSpec};
use support::chisel_server::{server_binary, ChiselServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const EDGE_ID: &str = "edge-test-1";
const WAIT: Duration = Duration::from_secs(10);

/// A stand-in for the agent API: echoes each connection's bytes back.
async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    address
}

fn spec(server: &ChiselServer, target: &str, remote_port: u16) -> TunnelSpec {
    let creds = credentials::decrypt(&server.credentials, EDGE_ID).expect("Go-sealed credentials");
    TunnelSpec {
        server: server.address.clone(),
        fingerprint: server.fingerprint.clone(),
        user: creds.user,
        password: creds.password,
        remote_port,
        local_target: target.to_string(),
        proxy: None,
    }
}

fn client() -> ChiselClient {
    ChiselClient::new(TunnelTimeouts {
        keepalive: Duration::from_millis(300),
        ..TunnelTimeouts::default()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tunnel from `server` to a fresh echo server, once the server listens.
async fn open_tunnel(server: &ChiselServer) -> berth_adapters::tunnel::ChiselTunnel {
    let target = echo_server().await;
    let tunnel = client()
        .open(spec(server, &target, free_port()))
        .await
        .unwrap();
    server.wait_for("REMOTE ", WAIT);
    tunnel
}

/// Sends `payload` through the server's forwarded port; returns the echo.
async fn round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut r, mut w) = stream.split();
    let send = async {
        w.write_all(payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let receive = r.read_to_end(&mut echoed);
    let ((), read) = tokio::time::timeout(WAIT, async { tokio::join!(send, receive) })
        .await
        .expect("the echo came back in time");
    read.unwrap();
    echoed
}

#[tokio::test]
async fn bytes_cross_the_tunnel_both_ways_across_key_re_exchanges() {
    let Some(binary) = server_binary() else {
        return;
    };
    let server = ChiselServer::start(
        &binary,
        EDGE_ID,
        &["-rekey-bytes", "65536", "-ping", "100ms"],
    );
    let target = echo_server().await;
    let port = free_port();
    let tunnel = client()
        .open(spec(&server, &target, port))
        .await
        .expect("tunnel opens");

    let session = server.wait_for("SESSION ", WAIT);
    assert!(session.ends_with("SSH-chisel-v3-client"), "{session}");
    let remote = server.wait_for("REMOTE ", WAIT);
    assert_eq!(
        remote,
        format!("127.0.0.1:{port} {target} version=0.0.0-src")
    );

    assert_eq!(
        round_trip(port, b"hello through chisel").await,
        b"hello through chisel"
    );
    // 3 MiB: past the 2 MiB window and across dozens of re-keyings.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let echoed = round_trip(port, &big).await;
    assert_eq!(echoed.len(), big.len());
    assert!(echoed == big, "the echo differs from what was sent");
    assert!(
        tunnel.key_exchanges() > 2,
        "the server re-keyed {} times",
        tunnel.key_exchanges() - 1
    );
    let parallel: Vec<_> = (0..8u8)
        .map(|i| tokio::spawn(async move { round_trip(port, &[i; 10_000]).await == [i; 10_000] }))
        .collect();
    for task in parallel {
        assert!(task.await.unwrap());
    }
    assert_eq!(
        server.wait_for("PONG ", WAIT),
        "true pong",
        "berth answers chisel's ping"
    );

    tunnel.close();
    tokio::time::timeout(WAIT, tunnel.closed())
        .await
        .expect("closes");
    server.wait_for("CLOSED ", WAIT);
}

#[tokio::test]
async fn the_legacy_md5_fingerprint_is_accepted() {
    let Some(binary) = server_binary() else {
        return;
    };
    let server = ChiselServer::start(&binary, EDGE_ID, &[]);
    let target = echo_server().await;
    let mut spec = spec(&server, &target, free_port());
    spec.fingerprint = server.md5_fingerprint.clone();
    let tunnel = client().open(spec).await.expect("MD5 colon-hex matches");
    tunnel.close();
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_before_authenticating() {
    let Some(binary) = server_binary() else {
        return;
    };
    let server = ChiselServer::start(&binary, EDGE_ID, &[]);
    let mut spec = spec(&server, "127.0.0.1:9", free_port());
    spec.fingerprint = "pZ1E2mtXiGl+o7Xdh1BRi0HqwbkYxH58DuaFhs6CQVg=".into();
    let error = client().open(spec).await.err().expect("refused");
    assert!(matches!(error, TunnelError::Fingerprint(_)), "{error}");
    assert_eq!(server.count("SESSION "), 0);
}

#[tokio::test]
async fn wrong_credentials_are_refused() {
    let Some(binary) = server_binary() else {
        return;
    };
    let server = ChiselServer::start(&binary, EDGE_ID, &[]);
    let mut spec = spec(&server, "127.0.0.1:9", free_port());
    spec.password = "not-the-password".into();
    let error = client().open(spec).await.err().expect("refused");
    assert_eq!(error, TunnelError::Credentials);
    server.wait_for("AUTHFAIL ", WAIT);
}

#[tokio::test]
async fn a_dropped_session_is_reported() {
    let Some(binary) = server_binary() else {
        return;
    };
    let mut server = ChiselServer::start(&binary, EDGE_ID, &[]);
    let tunnel = open_tunnel(&server).await;
    server.drop_sessions();
    let reason = tokio::time::timeout(WAIT, tunnel.closed())
        .await
        .expect("the drop is noticed");
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn a_silent_server_is_noticed_by_keepalives() {
    let Some(binary) = server_binary() else {
        return;
    };
    let server = ChiselServer::start(&binary, EDGE_ID, &[]);
    let tunnel = open_tunnel(&server).await;
    server.freeze();
    let reason = tokio::time::timeout(WAIT, tunnel.closed())
        .await
        .expect("a frozen server is noticed");
    assert!(reason.contains("keepalive"), "{reason}");
}

#[tokio::test]
async fn a_server_asking_for_another_target_is_refused() {
    let Some(binary) = server_binary() else {
        return;
    };
    let elsewhere = echo_server().await;
    let server = ChiselServer::start(&binary, EDGE_ID, &["-divert", &elsewhere]);
    let target = echo_server().await;
    let port = free_port();
    let _tunnel = client().open(spec(&server, &target, port)).await.unwrap();
    server.wait_for("REMOTE ", WAIT);
    let mut refused = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, refused.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    let failure = server.wait_for("CHANNELFAIL ", WAIT);
    assert!(failure.contains("only tunnels to its API"), "{failure}");
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    let spec = TunnelSpec {
        server: format!("127.0.0.1:{}", free_port()),
        fingerprint: "x".into(),
        user: "u".into(),
        password: "p".into(),
        remote_port: 1,
        local_target: "127.0.0.1:9".into(),
        proxy: None,
    };
    let error = client().open(spec).await.err().expect("refused");
    assert!(matches!(error, TunnelError::Unreachable(_)), "{error}");
}
