//! The Edge poll client with a client certificate checks Portainer's
//! certificate against the CRL its CA publishes (reference §10.10): a CA,
//! server and client certificates and a CRL made with the openssl CLI, a
//! TLS server that requires the client certificate, and the CRL served
//! over HTTP, all on loopback.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_adapters::http::revocation::REVOKED;
use berth_adapters::http::tls::{server_config, TlsIdentity};
use berth_adapters::portainer::{PortainerHttp, PortainerTls};
use berth_domain::edge::proxy::ProxySettings;
use berth_ports::{EdgeCall, PortainerApi, PortainerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Runs openssl in `dir` with `args`, split at spaces (no argument here
/// holds one).
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(&args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A new P-256 key, unencrypted, for `openssl req`.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

const CA_CONFIG: &str = "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\n\
crlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 1\n\
certificate = ca.pem\nprivate_key = ca.key\n";

/// A CA (with the database `openssl ca` keeps), and what it signs.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "berth-crl-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("openssl.cnf"), CA_CONFIG).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("crlnumber"), "01\n").unwrap();
        openssl(
            &dir,
            &format!(
                "req -x509 {NEW_KEY} -keyout ca.key -out ca.pem -days 2 -subj /CN=berth-test-CA \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign"
            ),
        );
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// `name.pem` and `name.key`, signed by the CA, with `extensions`.
    fn sign(&self, name: &str, serial: &str, extensions: &str) {
        std::fs::write(self.dir.join(format!("{name}.ext")), extensions).unwrap();
        openssl(
            &self.dir,
            &format!("req {NEW_KEY} -keyout {name}.key -out {name}.csr -subj /CN={name}"),
        );
        openssl(
            &self.dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -set_serial {serial} \
                 -days 1 -extfile {name}.ext -out {name}.pem"
            ),
        );
    }

    fn server(&self, name: &str, serial: &str, crl_url: &str) {
        self.sign(
            name,
            serial,
            &format!(
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
                 crlDistributionPoints=URI:{crl_url}\n"
            ),
        );
    }

    fn revoke(&self, name: &str) {
        openssl(
            &self.dir,
            &format!("ca -config openssl.cnf -revoke {name}.pem"),
        );
    }

    /// The CRL in DER, as CAs publish it.
    fn crl(&self) -> Vec<u8> {
        openssl(&self.dir, "ca -config openssl.cnf -gencrl -out ca.crl");
        openssl(&self.dir, "crl -in ca.crl -outform DER -out ca.crl.der");
        std::fs::read(self.dir.join("ca.crl.der")).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Serves `body` to every request on `listener`; counts the requests.
fn serve_crl(listener: TcpListener, body: Vec<u8>) -> Arc<AtomicUsize> {
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let _ = read_head(&mut stream).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    served
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(())
}

/// A TLS "Portainer" with `name`'s certificate that requires a client
/// certificate from the CA and answers `{}`.
async fn portainer(pki: &Pki, name: &str) -> SocketAddr {
    let identity = TlsIdentity::from_pem_files(
        &pki.path(&format!("{name}.pem")),
        &pki.path(&format!("{name}.key")),
    )
    .unwrap();
    let config = server_config(&identity, Some(&pki.path("ca.pem"))).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = read_head(&mut tls).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

fn client(pki: &Pki, address: SocketAddr) -> PortainerHttp {
    PortainerHttp::new(
        &format!("https://{address}"),
        PortainerTls {
            insecure: false,
            ca: Some(pki.path("ca.pem")),
            cert: Some(pki.path("client.pem")),
            key: Some(pki.path("client.key")),
        },
        ProxySettings::default(),
    )
    .unwrap()
}

async fn poll(client: &PortainerHttp) -> Result<u16, PortainerError> {
    client
        .call(EdgeCall {
            method: http::Method::GET,
            path: "/api/endpoints/1/edge/status".into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(20),
        })
        .await
        .map(|answer| answer.status)
}

fn client_certificate(pki: &Pki) {
    pki.sign("client", "3001", "extendedKeyUsage=clientAuth\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_portainer_certificate_fails_the_poll_and_a_good_one_passes() {
    let pki = Pki::new();
    let crl_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crl_url = format!("http://{}/ca.crl", crl_listener.local_addr().unwrap());
    pki.server("good", "1001", &crl_url);
    pki.server("revoked", "1002", &crl_url);
    client_certificate(&pki);
    pki.revoke("revoked");
    let fetches = serve_crl(crl_listener, pki.crl());

    let good = client(&pki, portainer(&pki, "good").await);
    assert_eq!(poll(&good).await.unwrap(), 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the CRL fetched once");
    assert_eq!(poll(&good).await.unwrap(), 200);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "kept until its NextUpdate, a day away"
    );

    let revoked = client(&pki, portainer(&pki, "revoked").await);
    let error = poll(&revoked).await.unwrap_err().to_string();
    assert!(error.contains(REVOKED), "{error}");
    assert!(error.contains("TLS with 127.0.0.1:"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_that_cannot_be_fetched_fails_the_poll() {
    let pki = Pki::new();
    // A port nothing listens on: bound, then let go.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let crl_url = format!("http://{}/ca.crl", gone.local_addr().unwrap());
    drop(gone);
    pki.server("unchecked", "1003", &crl_url);
    client_certificate(&pki);
    let error = poll(&client(&pki, portainer(&pki, "unchecked").await))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!(
            "the revocation list at {crl_url} could not be fetched"
        )),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn something_that_is_not_a_crl_fails_the_poll() {
    let pki = Pki::new();
    let crl_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let crl_url = format!("http://{}/ca.crl", crl_listener.local_addr().unwrap());
    pki.server("good", "1004", &crl_url);
    client_certificate(&pki);
    serve_crl(crl_listener, b"<html>captive portal</html>".to_vec());
    let error = poll(&client(&pki, portainer(&pki, "good").await))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("is unreadable"), "{error}");
}
