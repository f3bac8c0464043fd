//! The API's TLS: the agent's identity (PEM files from the user, or a
//! self-signed certificate made at start), the server configuration with
//! optional client-certificate checks (mutual TLS), and the client
//! configuration agents use to call each other.

use std::fmt;
use std::io::BufReader;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use super::revocation::{Revocation, RevocationVerifier};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// A self-signed certificate whose SANs are `localhost`, the host name
    /// and the given addresses. Portainer and peer agents do not verify it.
    ///
    /// # Errors
    /// When the key or certificate cannot be generated.
    pub fn self_signed(host_name: Option<&str>, addresses: &[IpAddr]) -> Result<Self, TlsError> {
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
        Ok(TlsIdentity {
            chain: vec![generated.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                generated.signing_key.serialize_der(),
            )),
        })
    }

    /// The certificate chain and key from PEM files.
    ///
    /// # Errors
    /// When a file cannot be read or holds no certificate or key.
    pub fn from_pem_files(cert_path: &str, key_path: &str) -> Result<Self, TlsError> {
        let chain = read_certificates(cert_path)?;
        let key_pem = read(key_path)?;
        let key = rustls_pemfile::private_key(&mut BufReader::new(&key_pem[..]))
            .map_err(|error| TlsError(format!("{key_path} is not a PEM private key: {error}")))?
            .ok_or_else(|| TlsError(format!("{key_path} holds no PEM private key")))?;
        Ok(TlsIdentity { chain, key })
    }
}

/// What `berth doctor` shows of a certificate: its names (SANs, else the
/// common name) and validity, in seconds since the epoch.
#[derive(Debug, Clone)]
pub struct CertificateFacts {
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
}

/// The first certificate of a PEM file, read for [`CertificateFacts`].
///
/// # Errors
/// An unreadable file, no certificate in it, or one that does not parse.
pub fn certificate_facts(path: &str) -> Result<CertificateFacts, TlsError> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let chain = read_certificates(path)?;
    let (_, certificate) = X509Certificate::from_der(chain[0].as_ref())
        .map_err(|error| TlsError(format!("{path}: not an X.509 certificate: {error}")))?;
    let mut names: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_string()),
                    GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .ok()
                            .map(|b| IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(|b| IpAddr::from(b).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            certificate
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string)),
        );
    }
    Ok(CertificateFacts {
        names,
        not_before: certificate.validity().not_before.timestamp(),
        not_after: certificate.validity().not_after.timestamp(),
    })
}

/// A client certificate and its key, issued by a CA, in PEM.
pub struct IssuedClientCertificate {
    pub certificate_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Issues a client certificate (extended key usage clientAuth, common name
/// `name`) from the CA at `ca_cert_path` with its PKCS#8 key at
/// `ca_key_path`, valid from now for a year.
///
/// # Errors
/// Unreadable files, a certificate or key that does not parse, or a key
/// that is not the certificate's.
pub fn issue_client_certificate(
    ca_cert_path: &str,
    ca_key_path: &str,
    name: &str,
) -> Result<IssuedClientCertificate, TlsError> {
    let text = |path: &str| {
        String::from_utf8(read(path)?).map_err(|_| TlsError(format!("{path} is not PEM text")))
    };
    let (ca_pem, ca_key_pem) = (text(ca_cert_path)?, text(ca_key_path)?);
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem).map_err(|error| {
        TlsError(format!(
            "{ca_key_path} is not a PKCS#8 PEM private key: {error}"
        ))
    })?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|error| {
        TlsError(format!(
            "{ca_cert_path} is not a usable CA certificate: {error}"
        ))
    })?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|error| TlsError(error.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.not_before = time::OffsetDateTime::now_utc();
    params.not_after = params.not_before + time::Duration::days(365);
    let key = rcgen::KeyPair::generate().map_err(|error| TlsError(error.to_string()))?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|error| TlsError(format!("cannot sign with {ca_key_path}: {error}")))?;
    // The issued certificate must verify against the CA: a key that is not
    // the CA certificate's signs one nobody accepts.
    let roots = {
        let mut roots = RootCertStore::empty();
        for ca in read_certificates(ca_cert_path)? {
            roots
                .add(ca)
                .map_err(|error| TlsError(format!("{ca_cert_path}: {error}")))?;
        }
        Arc::new(roots)
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|error| TlsError(error.to_string()))?;
    verifier
        .verify_client_cert(certificate.der(), &[], UnixTime::now())
        .map_err(|error| {
            TlsError(format!(
                "{ca_key_path} does not belong to {ca_cert_path}: the certificate it signs does not verify ({error})"
            ))
        })?;
    Ok(IssuedClientCertificate {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        ca_pem,
    })
}

/// A throwaway self-signed certificate in PEM: the docker CLI's `--tls`
/// wants a `ca.pem` in its certificate folder even though it verifies
/// nothing with it.
///
/// # Errors
/// When the certificate cannot be generated.
pub fn placeholder_ca_pem() -> Result<String, TlsError> {
    rcgen::generate_simple_self_signed(vec!["berth-placeholder".to_string()])
        .map(|generated| generated.cert.pem())
        .map_err(|error| TlsError(format!("cannot generate a certificate: {error}")))
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError(format!("cannot read {path}: {error}")))
}

fn read_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certificates: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
            .collect::<Result<_, _>>()
            .map_err(|error| TlsError(format!("{path} is not a PEM certificate: {error}")))?;
    if certificates.is_empty() {
        return Err(TlsError(format!("{path} holds no PEM certificate")));
    }
    Ok(certificates)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(default_provider())
}

/// The API server's configuration: TLS 1.2 or 1.3, HTTP/1.1, and with
/// `client_ca_path` a client certificate signed by that CA required.
///
/// # Errors
/// When the identity does not fit together or the CA file is unusable.
pub fn server_config(
    identity: &TlsIdentity,
    client_ca_path: Option<&str>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(identity, client_ca_path, false)
}

/// [`server_config`]; with `certificate_optional`, clients without a
/// certificate may connect too (`AGENT_CLIENT_CERT_AUTH`: they must then
/// sign), while a certificate presented must still chain to the CA.
///
/// # Errors
/// As [`server_config`].
pub fn server_config_with(
    identity: &TlsIdentity,
    client_ca_path: Option<&str>,
    certificate_optional: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError(error.to_string()))?;
    let builder = match client_ca_path {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(path)? {
                roots.add(certificate).map_err(|error| {
                    TlsError(format!("{path} holds an unusable CA certificate: {error}"))
                })?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if certificate_optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|error| {
                TlsError(format!(
                    "cannot check client certificates against {path}: {error}"
                ))
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|error| TlsError(format!("certificate and key do not fit together: {error}")))?;
    // Upgrades (docker exec/attach) need HTTP/1.1, which every Portainer
    // and docker client speaks.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How an agent calls another agent: it does not verify the peer's
/// certificate (agents' certificates are self-signed, as in the Go agent),
/// and presents `identity` when given, for peers that require mutual TLS.
///
/// # Errors
/// When the identity's key is unusable.
pub fn peer_client_config(identity: Option<&TlsIdentity>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|error| TlsError(format!("unusable client certificate: {error}")))?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How an Edge agent calls Portainer: with `insecure` (EDGE_INSECURE_POLL)
/// no verification and no client certificate; otherwise the server chains
/// to `ca` (MTLS_SSL_CA) or the system's roots, and with `cert` and `key`
/// (MTLS_SSL_CERT, MTLS_SSL_KEY) the agent presents that certificate.
/// Built per connection by the caller, so rotated files are picked up.
///
/// # Errors
/// When a file is unreadable or unusable.
///
/// With a client certificate and `revocation`, the server's chain is also
/// checked against its CRLs (reference §10.10).
pub fn portainer_client_config(
    insecure: bool,
    ca: Option<&str>,
    client: Option<(&str, &str)>,
    system_roots: &RootCertStore,
    revocation: Option<&Arc<Revocation>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    if insecure {
        return peer_client_config(None);
    }
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            // As Go's AppendCertsFromPEM: a bundle's unusable certificates
            // are skipped, and only a bundle with none usable fails.
            let (added, _skipped) = roots.add_parsable_certificates(read_certificates(path)?);
            if added == 0 {
                return Err(TlsError(format!("{path} holds no usable CA certificate")));
            }
        }
        None => roots = system_roots.clone(),
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| TlsError(error.to_string()))?;
    let builder = match (client, revocation) {
        (Some(_), Some(revocation)) => {
            let verifier = RevocationVerifier::new(roots, provider(), Arc::clone(revocation))
                .map_err(TlsError)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
        _ => builder.with_root_certificates(roots),
    };
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let identity = TlsIdentity::from_pem_files(cert, key)?;
            builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|error| TlsError(format!("unusable client certificate: {error}")))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Does, on the calling thread, the one-time work that the first
/// connections would otherwise wait for: AWS-LC's random generator seeded
/// (from the kernel: .cargo/config.toml builds it without CPU-jitter
/// entropy, whose 25 ms health test the first TLS handshake used to wait
/// for), then the system's CA certificates read. `main` runs it on a
/// thread of its own as berth starts.
pub fn warm_up() {
    let _ = default_provider().secure_random.fill(&mut [0u8; 16]);
    system_roots();
}

/// The system's CA certificates (for `https://` Portainer, Docker Hub and
/// `wss://` tunnel servers): read once, on first use, and shared by every
/// client. Reading them takes tens of milliseconds (hundreds of files):
/// `warm_up` reads them off the accept loop and off any request's path.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        for certificate in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(certificate);
        }
        Arc::new(roots)
    }))
}

/// Accepts any server certificate but still checks the handshake
/// signatures, so the connection is encrypted to whoever holds the key.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str, pem: &str) -> String {
        let path = std::env::temp_dir().join(format!("berth-ca-{name}-{}.pem", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn a_ca_bundle_is_read_as_go_reads_it_skipping_unusable_certificates() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).unwrap();
        // A CERTIFICATE block whose contents are not a certificate.
        let junk = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
        let mixed = bundle("mixed", &format!("{junk}{}", ca.cert.pem()));
        let roots = RootCertStore::empty();
        assert!(portainer_client_config(false, Some(&mixed), None, &roots, None).is_ok());
        let only_junk = bundle("junk", junk);
        let error = portainer_client_config(false, Some(&only_junk), None, &roots, None)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no usable CA certificate"), "{error}");
        for path in [mixed, only_junk] {
            std::fs::remove_file(path).unwrap();
        }
    }
}
