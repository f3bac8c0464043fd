//! `AGENT_CLIENT_CERT_AUTH=1`: docker's own tools, which cannot add
//! signature headers to every request (docker-py's `attach_socket` sends
//! none), authorised by a client certificate from `berth keys client-cert`.
//! The real docker CLI with `--tlsverify`, and the real docker-py.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::berth_process::{berth_command, engine_host, BerthProcess};
use crate::support::client::Target;
use crate::support::temp_dir::temp_dir;
use crate::IMAGE;

/// A CA and a server certificate for 127.0.0.1 it issued, as PEM files.
fn pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "berth test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), ca_key.serialize_pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), server_key.serialize_pem()).unwrap();
}

fn client_certificate(pki: &Path) -> PathBuf {
    let dir = pki.join("client");
    let output = berth_command()
        .env_clear()
        .args(["keys", "client-cert", "--ca-cert"])
        .arg(pki.join("ca.pem"))
        .arg("--ca-key")
        .arg(pki.join("ca-key.pem"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    for file in ["cert.pem", "key.pem", "ca.pem"] {
        assert!(dir.join(file).exists(), "{file}");
    }
    dir
}

fn docker(
    cert_path: &Path,
    berth: &BerthProcess,
    verify: &str,
    args: &[&str],
) -> std::process::Output {
    Command::new("timeout")
        .arg("60")
        .arg("docker")
        .args(["-H", &format!("tcp://{}", berth.addr), verify])
        .args(args)
        .env("DOCKER_CERT_PATH", cert_path)
        // An empty config: no signature headers come from it.
        .env("DOCKER_CONFIG", cert_path.join("no-config"))
        .output()
        .unwrap()
}

/// Attaches to `cat` with docker-py's `attach_socket` (no signature
/// headers) and prints what came back.
const ATTACH: &str = r#"
import sys, time, docker
address, certs, image = sys.argv[1], sys.argv[2], sys.argv[3]
tls = docker.tls.TLSConfig(client_cert=(certs + "/cert.pem", certs + "/key.pem"),
                           ca_cert=certs + "/ca.pem", verify=True)
api = docker.APIClient(base_url="https://" + address, tls=tls, version="1.41")
container = api.create_container(image, "cat", stdin_open=True)
try:
    api.start(container)
    sock = api.attach_socket(container, params={"stdin": 1, "stdout": 1, "stream": 1})
    raw = getattr(sock, "_sock", sock)
    raw.settimeout(20)
    raw.sendall(b"through a client certificate\n")
    seen = b""
    while b"through a client certificate" not in seen:
        chunk = raw.recv(4096)
        if not chunk:
            break
        seen += chunk
    print("attached:", seen.decode(errors="replace"))
finally:
    api.remove_container(container, force=True)
"#;

#[tokio::test]
async fn a_client_certificate_stands_in_for_signatures_and_nothing_else_does() {
    let Some(host) = engine_host() else {
        return;
    };
    let dir = temp_dir("client-certs");
    pki(&dir);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let berth = BerthProcess::start(&[
        ("DOCKER_HOST", &host),
        ("SSL_CERT", &path("server.pem")),
        ("SSL_KEY", &path("server-key.pem")),
        ("SSL_CACERT", &path("ca.pem")),
        ("AGENT_CLIENT_CERT_AUTH", "1"),
    ]);
    let certs = client_certificate(&dir);

    // The docker CLI, verifying the agent against the same CA.
    let listed = docker(&certs, &berth, "--tlsverify", &["ps", "-a"]);
    assert!(listed.status.success(), "{listed:?}");
    let ran = docker(
        &certs,
        &berth,
        "--tlsverify",
        &["run", "--rm", IMAGE, "echo", "certified"],
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "certified",
        "{ran:?}"
    );

    // docker-py's attach, which sends no signature headers.
    let python =
        std::env::var("BERTH_TEST_DOCKER_PY").unwrap_or_else(|_| "/usr/bin/python3".into());
    let attached = Command::new("timeout")
        // requests lets REQUESTS_CA_BUNDLE override docker-py's CA.
        .env_clear()
        .args(["60", &python, "-c", ATTACH, &berth.addr.to_string()])
        .arg(&certs)
        .arg(IMAGE)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&attached.stdout);
    assert!(
        attached.status.success()
            && said.contains("attached:")
            && said.contains("through a client certificate"),
        "{attached:?}"
    );

    // Without a certificate a client must sign, as before: Portainer's way
    // works, and an unsigned request is refused.
    let signed = Target::Berth(berth.addr).fetch("GET", "/_ping", "").await;
    assert_eq!(signed.0.status(), 200);
    let no_cert = temp_dir("no-client-cert");
    std::fs::copy(certs.join("ca.pem"), no_cert.join("ca.pem")).unwrap();
    let refused = docker(&no_cert, &berth, "--tls", &["ps"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("Missing request signature headers"), "{said}");
}
