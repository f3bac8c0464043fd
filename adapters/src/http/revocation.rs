//! Revocation checks for the Edge poll client with a client certificate
//! (reference §10.10): the server's chain is checked against the CRLs its
//! certificates name in their CRL distribution points (LDAP ones aside),
//! each CRL's signature against its issuer in the chain, and each CRL kept
//! until its `NextUpdate`.
//!
//! A handshake cannot wait for a download, so a handshake that needs a
//! CRL not in the cache fails, naming it; the caller fetches it and shakes
//! hands once more ([`Revocation::missing`], [`Revocation::store`]). As
//! the Go agent, a CRL that cannot be fetched or read fails the poll.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// A CRL without a `NextUpdate` is fetched again after this long.
const WITHOUT_NEXT_UPDATE: Duration = Duration::from_secs(300);
/// A CRL just fetched is used for the handshake that asked for it even
/// when its `NextUpdate` has passed (a CA late to publish), rather than
/// asking for it again in a loop.
const JUST_FETCHED: Duration = Duration::from_secs(60);
/// What a revoked certificate's failure says.
pub const REVOKED: &str = "certificate has been revoked";

struct Cached {
    crl: CertificateRevocationListDer<'static>,
    fetched: SystemTime,
    until: SystemTime,
}

/// The CRLs fetched so far and those the last handshake lacked; shared by
/// every connection of one Portainer client.
#[derive(Default)]
pub struct Revocation {
    cache: Mutex<HashMap<String, Cached>>,
    missing: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Revocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revocation")
    }
}

impl Revocation {
    /// The CRL addresses the last failed handshake lacked (taken).
    pub fn missing(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.missing))
            .into_iter()
            .collect()
    }

    /// Keeps the CRL fetched from `url`.
    ///
    /// # Errors
    /// When `der` is not a CRL.
    pub fn store(&self, url: &str, der: Vec<u8>, now: SystemTime) -> Result<(), String> {
        let until = crl_valid_until(&der)
            .map_err(|e| format!("the revocation list at {url} is unreadable: {e}"))?
            .unwrap_or(now + WITHOUT_NEXT_UPDATE);
        lock(&self.cache).insert(
            url.to_string(),
            Cached {
                crl: CertificateRevocationListDer::from(der),
                fetched: now,
                until,
            },
        );
        Ok(())
    }

    /// The CRLs for `urls` that can be used at `now`, or the addresses to
    /// fetch first.
    fn usable(
        &self,
        urls: &BTreeSet<String>,
        now: SystemTime,
    ) -> Result<Vec<CertificateRevocationListDer<'static>>, Vec<String>> {
        let cache = lock(&self.cache);
        let mut crls = Vec::new();
        let mut missing = Vec::new();
        for url in urls {
            match cache.get(url) {
                Some(c) if now < c.until || now < c.fetched + JUST_FETCHED => {
                    crls.push(c.crl.clone());
                }
                _ => missing.push(url.clone()),
            }
        }
        if missing.is_empty() {
            Ok(crls)
        } else {
            Err(missing)
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The CRL's `NextUpdate`, if it has one.
fn crl_valid_until(der: &[u8]) -> Result<Option<SystemTime>, String> {
    let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| e.to_string())?;
    Ok(crl.next_update().map(|t| {
        let seconds = t.timestamp();
        if seconds >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH
        }
    }))
}

/// The http(s) CRL distribution points a certificate names.
pub fn distribution_points(der: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for extension in certificate.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = extension.parsed_extension() else {
            continue;
        };
        for point in points.iter() {
            if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                for name in names {
                    if let GeneralName::URI(uri) = name {
                        let lower = uri.to_ascii_lowercase();
                        if lower.starts_with("http://") || lower.starts_with("https://") {
                            urls.push((*uri).to_string());
                        }
                    }
                }
            }
        }
    }
    urls
}

/// The Web PKI's checks (chain, names, validity dates of every certificate
/// in the chain), then the chain against its CRLs.
#[derive(Debug)]
pub struct RevocationVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    plain: Arc<WebPkiServerVerifier>,
    revocation: Arc<Revocation>,
}

impl RevocationVerifier {
    /// # Errors
    /// When `roots` is empty.
    pub fn new(
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
        revocation: Arc<Revocation>,
    ) -> Result<Self, String> {
        let roots = Arc::new(roots);
        let plain =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| e.to_string())?;
        Ok(RevocationVerifier {
            roots,
            provider,
            plain,
            revocation,
        })
    }
}

impl ServerCertVerifier for RevocationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // The chain first: no CRL is fetched for a certificate that would
        // be refused anyway.
        self.plain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let urls: BTreeSet<String> = std::iter::once(end_entity)
            .chain(intermediates)
            .flat_map(|c| distribution_points(c))
            .collect();
        if urls.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let crls = match self.revocation.usable(&urls, at) {
            Ok(crls) => crls,
            Err(missing) => {
                let message = format!("revocation lists to fetch: {}", missing.join(", "));
                lock(&self.revocation.missing).extend(missing);
                return Err(Error::General(message));
            }
        };
        let checking = WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&self.roots),
            Arc::clone(&self.provider),
        )
        .with_crls(crls)
        // A certificate that names no CRL has nothing to check.
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| Error::General(e.to_string()))?;
        match checking.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(Error::InvalidCertificate(CertificateError::Revoked)) => {
                Err(Error::General(REVOKED.to_string()))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.plain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.plain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.plain.supported_verify_schemes()
    }
}
