//! The chisel client against the real chisel server, both pinned versions
//! (`support::chisel`, run as Portainer runs it): the handshake and host
//! key check in both fingerprint forms, the password login, the reverse
//! remote, bytes both ways, chisel's keepalive, a drop and a new tunnel,
//! a silent server, and what chisel refuses (a wrong fingerprint, wrong
//! credentials, a port the user may not have).
//!
//! Two checks use the hand-written imitation (`support::imitation_chisel`)
//! because the real chisel cannot be made to do them: re-keying after a
//! set number of bytes, and a hostile server asking for another target.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use berth_adapters::tunnel::{ChiselClient, ChiselTunnel, TunnelTimeouts};
use berth_domain::edge::credentials;
use berth_ports::{OpenTunnel, TunnelClient, TunnelError, TunnelSpec};
use support::chisel::{against_each_chisel, Chisel, ChiselOptions, TunnelGrant};
use support::imitation_chisel::{server_binary, ChiselServer};
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

fn client() -> ChiselClient {
    ChiselClient::new(TunnelTimeouts {
        keepalive: Duration::from_millis(300),
        ..TunnelTimeouts::default()
    })
}

fn free_port() -> u16 {
    support::berth_process::free_port()
}

/// Sends `payload` through the server's forwarded port; returns the echo.
/// The write side stays open until the echo is back: chisel closes both
/// directions of a connection as soon as one ends (it does not pass on a
/// half-close), as the agent's HTTP through the tunnel never needs.
async fn round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut r, mut w) = stream.split();
    let send = async { w.write_all(payload).await.unwrap() };
    let mut echoed = vec![0u8; payload.len()];
    let receive = r.read_exact(&mut echoed);
    let ((), read) = tokio::time::timeout(WAIT, async { tokio::join!(send, receive) })
        .await
        .expect("the echo came back in time");
    if read.is_err() {
        return Vec::new();
    }
    echoed
}

/// What the poll would hand the tunnel for `grant` on `chisel`.
fn grant_spec(chisel: &Chisel, grant: &TunnelGrant, target: &str) -> TunnelSpec {
    let creds = credentials::decrypt(&grant.credentials, EDGE_ID).expect("sealed credentials");
    TunnelSpec {
        server: chisel.address.clone(),
        fingerprint: chisel.fingerprint.clone(),
        user: creds.user,
        password: creds.password,
        remote_port: grant.port,
        local_target: target.to_string(),
        proxy: None,
    }
}

/// Opens the first grant's tunnel to a fresh echo server and waits until
/// chisel listens on its port.
async fn open_first(chisel: &Chisel) -> ChiselTunnel {
    let target = echo_server().await;
    let grant = &chisel.tunnels[0];
    let before = chisel.listened(grant.port).len();
    // The grant's port was free when chisel started; another test may hold
    // it for a moment, and chisel then refuses the remote. The agent's
    // driver retries as this does.
    let mut tries = 0;
    let tunnel = loop {
        match client().open(grant_spec(chisel, grant, &target)).await {
            Ok(tunnel) => break tunnel,
            Err(error) if tries < 10 && format!("{error:?}").contains("cannot listen") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("the tunnel opens: {error:?}"),
        }
    };
    chisel.wait_listening(grant.port, before + 1, WAIT);
    tunnel
}

against_each_chisel!(
    bytes_cross_the_tunnel_both_ways_and_chisel_keepalives_are_answered,
    the_legacy_md5_fingerprint_is_accepted,
    a_wrong_fingerprint_is_refused_before_logging_in,
    wrong_credentials_are_refused_by_chisel,
    a_port_the_user_may_not_have_is_refused_by_chisel,
    a_killed_server_is_noticed_and_a_new_tunnel_opens_when_it_is_back,
    a_silent_server_is_noticed_by_keepalives,
);

async fn bytes_cross_the_tunnel_both_ways_and_chisel_keepalives_are_answered(binary: PathBuf) {
    let chisel = Chisel::start(
        &binary,
        EDGE_ID,
        ChiselOptions {
            keepalive: Duration::from_millis(100),
            ..ChiselOptions::default()
        },
    );
    let target = echo_server().await;
    let grant = chisel.tunnels[0].clone();
    let tunnel = client()
        .open(grant_spec(&chisel, &grant, &target))
        .await
        .expect("the tunnel opens");
    chisel.wait_for("Verifying configuration", WAIT);
    let remote = chisel.wait_listening(grant.port, 1, WAIT);
    assert_eq!(
        remote,
        target.trim_start_matches("127.0.0.1:"),
        "chisel forwards to the agent's address"
    );

    assert_eq!(
        round_trip(grant.port, b"hello through chisel").await,
        b"hello through chisel"
    );
    // 3 MiB: past the 2 MiB window, so flow control works both ways.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let echoed = round_trip(grant.port, &big).await;
    assert_eq!(echoed.len(), big.len());
    assert!(echoed == big, "the echo differs from what was sent");
    let port = grant.port;
    let parallel: Vec<_> = (0..8u8)
        .map(|i| tokio::spawn(async move { round_trip(port, &[i; 10_000]).await == [i; 10_000] }))
        .collect();
    for task in parallel {
        assert!(task.await.unwrap());
    }

    // chisel closes a session whose pings go unanswered or come back
    // strange; a few answered and the session still serving shows berth
    // answers as chisel expects.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tunnel.pings_answered() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "chisel's pings");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(round_trip(grant.port, b"still here").await, b"still here");
    assert_eq!(chisel.count("strange ping response"), 0);
    assert_eq!(chisel.count("Closed connection"), 0);

    tunnel.close();
    tokio::time::timeout(WAIT, tunnel.closed())
        .await
        .expect("closes");
    chisel.wait_for("Closed connection", WAIT);
}

async fn the_legacy_md5_fingerprint_is_accepted(binary: PathBuf) {
    let chisel = Chisel::start(&binary, EDGE_ID, ChiselOptions::default());
    let target = echo_server().await;
    let grant = &chisel.tunnels[0];
    let mut spec = grant_spec(&chisel, grant, &target);
    spec.fingerprint = chisel.md5_fingerprint.clone();
    let tunnel = client().open(spec).await.expect("MD5 colon-hex matches");
    chisel.wait_listening(grant.port, 1, WAIT);
    assert_eq!(round_trip(grant.port, b"md5").await, b"md5");
    tunnel.close();
}

async fn a_wrong_fingerprint_is_refused_before_logging_in(binary: PathBuf) {
    let chisel = Chisel::start(&binary, EDGE_ID, ChiselOptions::default());
    let mut spec = grant_spec(&chisel, &chisel.tunnels[0], "127.0.0.1:9");
    spec.fingerprint = "pZ1E2mtXiGl+o7Xdh1BRi0HqwbkYxH58DuaFhs6CQVg=".into();
    let error = client().open(spec).await.err().expect("refused");
    assert!(matches!(error, TunnelError::Fingerprint(_)), "{error}");
    chisel.wait_for("Handshaking with", WAIT);
    assert_eq!(chisel.count("Login failed"), 0, "no password was sent");
    assert_eq!(chisel.count("Verifying configuration"), 0);
}

async fn wrong_credentials_are_refused_by_chisel(binary: PathBuf) {
    let chisel = Chisel::start(&binary, EDGE_ID, ChiselOptions::default());
    let mut spec = grant_spec(&chisel, &chisel.tunnels[0], "127.0.0.1:9");
    spec.password = String::from("not-the-password").into();
    let error = client().open(spec).await.err().expect("refused");
    assert_eq!(error, TunnelError::Credentials);
    let refused = chisel.wait_for("Login failed for user: ", WAIT);
    assert_eq!(refused, chisel.tunnels[0].user);
}

async fn a_port_the_user_may_not_have_is_refused_by_chisel(binary: PathBuf) {
    let chisel = Chisel::start(
        &binary,
        EDGE_ID,
        ChiselOptions {
            tunnels: 2,
            ..ChiselOptions::default()
        },
    );
    // The first user asks for the second user's port, as a stolen or stale
    // credential would.
    let mut spec = grant_spec(&chisel, &chisel.tunnels[0], "127.0.0.1:9");
    let other = chisel.tunnels[1].port;
    spec.remote_port = other;
    let error = client().open(spec).await.err().expect("refused");
    let TunnelError::Protocol(why) = &error else {
        panic!("{error}");
    };
    assert!(
        why.contains(&format!("access to 'R:0.0.0.0:{other}' denied")),
        "chisel's own words reach the log: {why}"
    );
    assert!(chisel.listened(other).is_empty());
    assert!(TcpStream::connect(("127.0.0.1", other)).await.is_err());
}

async fn a_killed_server_is_noticed_and_a_new_tunnel_opens_when_it_is_back(binary: PathBuf) {
    let mut chisel = Chisel::start(&binary, EDGE_ID, ChiselOptions::default());
    let tunnel = open_first(&chisel).await;
    chisel.restart();
    let reason = tokio::time::timeout(WAIT, tunnel.closed())
        .await
        .expect("the drop is noticed");
    assert!(!reason.is_empty());
    let again = open_first(&chisel).await;
    assert_eq!(
        round_trip(chisel.tunnels[0].port, b"back").await,
        b"back",
        "the new tunnel carries bytes"
    );
    again.close();
}

async fn a_silent_server_is_noticed_by_keepalives(binary: PathBuf) {
    let chisel = Chisel::start(&binary, EDGE_ID, ChiselOptions::default());
    let tunnel = open_first(&chisel).await;
    chisel.freeze();
    let reason = tokio::time::timeout(WAIT, tunnel.closed())
        .await
        .expect("a frozen server is noticed");
    assert!(reason.contains("keepalive"), "{reason}");
}

// The imitation, for what chisel cannot be made to do.

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

/// chisel re-keys only after x/crypto/ssh's default of about 1 GiB; the
/// imitation re-keys every 64 KiB, so 3 MiB crosses dozens of exchanges.
#[tokio::test]
async fn bytes_cross_the_tunnel_across_key_re_exchanges() {
    let Some(binary) = server_binary() else {
        return;
    };
    let server = ChiselServer::start(&binary, EDGE_ID, &["-rekey-bytes", "65536"]);
    let target = echo_server().await;
    let port = free_port();
    let tunnel = client()
        .open(spec(&server, &target, port))
        .await
        .expect("tunnel opens");
    server.wait_for("REMOTE ", WAIT);
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let echoed = round_trip(port, &big).await;
    assert!(echoed == big, "the echo differs from what was sent");
    assert!(
        tunnel.key_exchanges() > 2,
        "the server re-keyed {} times",
        tunnel.key_exchanges() - 1
    );
    tunnel.close();
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
        password: String::from("p").into(),
        remote_port: 1,
        local_target: "127.0.0.1:9".into(),
        proxy: None,
    };
    let error = client().open(spec).await.err().expect("refused");
    assert!(matches!(error, TunnelError::Unreachable(_)), "{error}");
}
