//! The API's TLS identity: PEM files from the user, or a self-signed
//! certificate made at start.

use std::fmt;
use std::io::BufReader;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// A self-signed certificate whose SANs are `localhost`, the host name and
/// the given addresses. Clients (Portainer, peer agents) do not verify it.
///
/// # Errors
/// When the key or certificate cannot be generated.
pub fn self_signed(
    host_name: Option<&str>,
    addresses: &[IpAddr],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut names = vec!["localhost".to_string()];
    names.extend(host_name.filter(|n| !n.is_empty()).map(str::to_string));
    names.extend(
        addresses
            .iter()
            .filter(|a| !a.is_unspecified())
            .map(IpAddr::to_string),
    );
    names.dedup();
    let generated = rcgen::generate_simple_self_signed(names).map_err(|error| {
        TlsError(format!(
            "cannot generate a self-signed certificate: {error}"
        ))
    })?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    server_config(vec![generated.cert.der().clone()], key)
}

/// The certificate chain and key from PEM files.
///
/// # Errors
/// When a file cannot be read or holds no certificate or key.
pub fn from_pem_files(cert_path: &str, key_path: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|error| TlsError(format!("cannot read {path}: {error}")))
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(&cert_pem[..]))
            .collect::<Result<_, _>>()
            .map_err(|error| TlsError(format!("{cert_path} is not a PEM certificate: {error}")))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{cert_path} holds no PEM certificate")));
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(&key_pem[..]))
        .map_err(|error| TlsError(format!("{key_path} is not a PEM private key: {error}")))?
        .ok_or_else(|| TlsError(format!("{key_path} holds no PEM private key")))?;
    server_config(chain, key)
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| TlsError(format!("certificate and key do not fit together: {error}")))?;
    // Upgrades (docker exec/attach) need HTTP/1.1, which every Portainer
    // and docker client speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
