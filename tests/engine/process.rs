//! The berth process itself: option errors, signals, timeouts, and an
//! engine that is not there. These need no engine.

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::berth_process::{berth_command, berth_program, BerthProcess};
use crate::support::client::{plain_get, tls_stream, Target};

fn run_with_env(env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new("timeout");
    command.arg("30").args(berth_program()).env_clear();
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn bad_option_values_stop_berth_with_one_line_and_exit_2() {
    let cases = [
        ("AGENT_PORT", "abc"),
        ("AGENT_SECRET_TIMEOUT", "3 days"),
        ("LOG_LEVEL", "loud"),
        ("DOCKER_HOST", "ftp://x"),
    ];
    for (name, value) in cases {
        let output = run_with_env(&[(name, value)]);
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(name) && stderr.contains(value) && stderr.contains("expected"),
            "{stderr}"
        );
    }
}

#[test]
fn help_lists_the_options() {
    let output = berth_command().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("--docker-host") && help.contains("DOCKER_HOST"));
}

#[test]
fn sigterm_stops_berth_cleanly() {
    let mut berth = BerthProcess::start(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let status = berth.stop_with("TERM", Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    assert!(berth.logged_within("berth stopped", Duration::from_secs(10)));
}

#[tokio::test]
async fn missing_engine_is_a_502_naming_the_socket() {
    let berth = BerthProcess::start(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let target = Target::Berth(berth.addr);
    let (response, body) = target.fetch("GET", "/v1.41/containers/json", "").await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["portainer-agent"], "2.23.0");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("unix:///nonexistent/docker.sock"),
        "{json}"
    );
    assert!(!json["details"].as_str().unwrap().is_empty());
    // /ping needs no engine.
    let (response, _) = target.fetch("GET", "/ping", "").await;
    assert_eq!(response.status(), 204);
}

/// Reads until the peer closes, failing after `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(limit, read).await.is_ok()
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("AGENT_IDLE_TIMEOUT", "1s"),
    ]);
    let mut stream = tls_stream(berth.addr).await;
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nhost: berth\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 204");
    assert!(
        closed_within(&mut stream, Duration::from_secs(20)).await,
        "idle connection left open"
    );
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_header_timeout() {
    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("AGENT_HEADER_TIMEOUT", "1s"),
    ]);
    // A TCP connection that never starts TLS.
    let mut silent = TcpStream::connect(berth.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(20)).await);
    // Half a request's headers, then nothing.
    let mut slow = tls_stream(berth.addr).await;
    slow.write_all(b"GET /ping HTTP/1.1\r\nhost: be")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(20)).await);
}

#[tokio::test]
async fn garbage_instead_of_http_gets_a_400_and_a_close() {
    let berth = BerthProcess::start(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let mut stream = tls_stream(berth.addr).await;
    stream
        .write_all(b"\x00\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    // berth is still serving.
    let (response, _) = Target::Berth(berth.addr).fetch("GET", "/ping", "").await;
    assert_eq!(response.status(), 204);
}

#[tokio::test]
async fn serves_the_certificate_it_is_given() {
    let dir = crate::support::temp_dir::temp_dir("given-certificate");
    let generated = rcgen::generate_simple_self_signed(vec!["berth.test".to_string()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();
    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("SSL_CERT", cert_path.to_str().unwrap()),
        ("SSL_KEY", key_path.to_str().unwrap()),
    ]);
    let stream = tls_stream(berth.addr).await;
    let (_, connection) = stream.get_ref();
    let served = connection.peer_certificates().expect("a certificate")[0].clone();
    assert_eq!(served.as_ref(), generated.cert.der().as_ref());
}

#[test]
fn unreadable_certificate_files_stop_berth_with_a_message() {
    let output = run_with_env(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("AGENT_HOST", "127.0.0.1"),
        ("AGENT_PORT", "0"),
        ("LOG_MODE", "NOCOLOR"),
        ("SSL_CERT", "/nonexistent/cert.pem"),
        ("SSL_KEY", "/nonexistent/key.pem"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/cert.pem"),
        "{stderr}"
    );
}

/// With nobody paired after AGENT_SECRET_TIMEOUT, the API closes but the
/// process stays up (so an orchestrator does not restart it into a fresh
/// pairing window), until SIGTERM.
#[tokio::test]
async fn unpaired_agent_closes_its_api_and_stays_up() {
    let mut berth = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("AGENT_SECRET_TIMEOUT", "1s"),
    ]);
    let refused = async {
        while TcpStream::connect(berth.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), refused)
        .await
        .expect("the API closes after the timeout");
    assert!(berth.is_running(), "the process stays up");
    assert!(berth.logged_within(
        "no client was associated after the timeout",
        Duration::from_secs(10)
    ));
    assert_eq!(
        berth.stop_with("TERM", Duration::from_secs(20)).code(),
        Some(0)
    );
}

/// A CA and a certificate it signed, as PEM files in `dir`.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let certificate = params.self_signed(&key).unwrap();
        TestCa {
            issuer: rcgen::Issuer::new(params, key),
            pem: certificate.pem(),
        }
    }

    /// Writes `<name>.pem` and `<name>-key.pem` for a certificate this CA signs.
    fn issue(&self, dir: &std::path::Path, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_path, certificate.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        )
    }
}

/// GET /ping over a TLS connection made with `connector`; `None` when the
/// handshake or the request fails.
async fn ping_with(
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
) -> Option<u16> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.ok()?;
    tls.write_all(b"GET /ping HTTP/1.1\r\nhost: berth\r\nconnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
}

#[tokio::test]
async fn mutual_tls_requires_a_certificate_from_the_ca() {
    use crate::support::client::tls_connector_with;
    use berth_adapters::http::tls::TlsIdentity;

    let dir = crate::support::temp_dir::temp_dir("mutual-tls");
    let ca = TestCa::new();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let (server_cert, server_key) = ca.issue(&dir, "agent");
    let (client_cert, client_key) = ca.issue(&dir, "portainer");
    let (foreign_cert, foreign_key) = TestCa::new().issue(&dir, "stranger");

    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("SSL_CERT", &server_cert),
        ("SSL_KEY", &server_key),
        ("SSL_CACERT", ca_path.to_str().unwrap()),
    ]);
    let trusted = TlsIdentity::from_pem_files(&client_cert, &client_key).unwrap();
    assert_eq!(
        ping_with(berth.addr, tls_connector_with(Some(&trusted))).await,
        Some(204)
    );
    // Agents present their own certificate to each other.
    let agent = TlsIdentity::from_pem_files(&server_cert, &server_key).unwrap();
    assert_eq!(
        ping_with(berth.addr, tls_connector_with(Some(&agent))).await,
        Some(204)
    );
    assert_eq!(
        ping_with(berth.addr, tls_connector_with(None)).await,
        None,
        "no certificate"
    );
    let foreign = TlsIdentity::from_pem_files(&foreign_cert, &foreign_key).unwrap();
    assert_eq!(
        ping_with(berth.addr, tls_connector_with(Some(&foreign))).await,
        None,
        "foreign CA"
    );
}

/// A request through the real binary signed by the named vector; a 502
/// (no engine behind this berth) means the signature was accepted.
async fn status_signed_by(berth: &BerthProcess, vector: &str) -> u16 {
    let mut request = crate::support::client::unsigned_request("GET", "/v1.41/version", "");
    crate::support::fixtures::signature_vector(vector).apply(request.headers_mut());
    let (response, _) = Target::Berth(berth.addr).fetch_request(request).await;
    response.status().as_u16()
}

#[tokio::test]
async fn default_mode_pins_the_first_valid_key_and_refuses_a_second() {
    let berth = BerthProcess::start(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_eq!(
        status_signed_by(&berth, "p256-a-signature-for-b").await,
        403
    );
    assert_eq!(
        status_signed_by(&berth, "p256-b-good").await,
        502,
        "first valid key"
    );
    assert_eq!(
        status_signed_by(&berth, "p256-a-good").await,
        403,
        "second key"
    );
    assert_eq!(
        status_signed_by(&berth, "p256-b-good").await,
        502,
        "pinned key again"
    );
}

#[tokio::test]
async fn secret_mode_accepts_two_different_keys() {
    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("AGENT_SECRET", "berth-test-secret"),
    ]);
    assert_eq!(status_signed_by(&berth, "p256-a-secret").await, 502);
    assert_eq!(status_signed_by(&berth, "p256-b-secret").await, 502);
    assert_eq!(
        status_signed_by(&berth, "p256-a-good").await,
        403,
        "not a signature of the secret"
    );
}

#[test]
fn healthcheck_reports_whether_the_agent_answers() {
    let berth = BerthProcess::start(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let check = |port: u16| {
        Command::new("timeout")
            .arg("30")
            .args(berth_program())
            .arg("healthcheck")
            .env_clear()
            .env("AGENT_HOST", "127.0.0.1")
            .env("AGENT_PORT", port.to_string())
            .output()
            .unwrap()
    };
    let healthy = check(berth.addr.port());
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let closed = crate::support::berth_process::free_port();
    let unhealthy = check(closed);
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("berth healthcheck:"));
}

#[tokio::test]
async fn metrics_count_requests_on_their_own_unsigned_endpoint() {
    let metrics_port = crate::support::berth_process::free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("METRICS_ADDR", &metrics_addr),
    ]);
    let target = Target::Berth(berth.addr);
    for _ in 0..2 {
        let (response, _) = target.fetch("GET", "/ping", "").await;
        assert_eq!(response.status(), 204);
    }
    let unsigned = crate::support::client::unsigned_request("GET", "/_ping", "");
    assert_eq!(target.fetch_request(unsigned).await.0.status(), 403);

    let answer = plain_get(metrics_addr.as_str(), "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("berth_requests_total{route=\"ping\",status=\"204\"} 2"),
        "{answer}"
    );
    assert!(
        answer.contains("berth_requests_total{route=\"docker_local\",status=\"403\"} 1"),
        "{answer}"
    );
    assert!(
        answer.contains("berth_request_duration_seconds_count{route=\"ping\"} 2"),
        "{answer}"
    );
    assert!(answer.contains("berth_open_connections "), "{answer}");
    // The socket does not exist: the engine alert's metric says so.
    assert!(answer.contains("\nberth_engine_up 0\n"), "{answer}");
}
