//! Public keys and signatures as Portainer puts them in headers.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use md5::{Digest as _, Md5};
use spki::der::Decode as _;

use crate::error::AgentError;

/// The key types berth verifies.
#[derive(Debug, Clone)]
pub enum PublicKey {
    /// What Portainer uses.
    P256(P256Key),
    /// For other clients; signs the message itself, not its MD5.
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Why a request's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// One of the two headers is missing or empty.
    Missing,
    /// The public key header is not hex, not DER, or not a key berth knows.
    BadKey(String),
    /// The signature header is not base64 without padding.
    BadSignatureEncoding(String),
    /// A signature of the wrong length, or one that does not verify.
    Invalid,
    /// Default mode: the agent is associated with another key.
    OtherKey,
}

impl SignatureError {
    /// The answer Portainer expects: a 403 with the reference's messages.
    pub fn to_agent_error(&self) -> AgentError {
        const INVALID: &str = "Invalid request signature";
        match self {
            SignatureError::Missing => {
                AgentError::new(403, "Missing request signature headers", "Unauthorized")
            }
            SignatureError::BadKey(details) | SignatureError::BadSignatureEncoding(details) => {
                AgentError::new(403, INVALID, details)
            }
            SignatureError::Invalid => AgentError::new(403, INVALID, "Unauthorized"),
            SignatureError::OtherKey => AgentError::new(
                403,
                INVALID,
                "This agent is associated with another Portainer instance: restart the agent \
                 to pair it again, or set AGENT_SECRET to share it",
            ),
        }
    }
}

const ED25519_OID: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.3.101.112");
const EC_PUBLIC_KEY_OID: spki::ObjectIdentifier =
    spki::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256_OID: spki::ObjectIdentifier = spki::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// Parses `X-PortainerAgent-PublicKey`: hex of a DER SubjectPublicKeyInfo.
/// Returns the key and its DER bytes.
///
/// # Errors
/// [`SignatureError::BadKey`] for bad hex, bad DER, or a key type other
/// than P-256 and Ed25519.
pub fn parse_public_key(hex_text: &str) -> Result<(PublicKey, Vec<u8>), SignatureError> {
    let der = hex::decode(hex_text)
        .map_err(|error| SignatureError::BadKey(format!("encoding/hex: {error}")))?;
    let info = spki::SubjectPublicKeyInfoRef::from_der(&der).map_err(|error| {
        SignatureError::BadKey(format!("x509: failed to parse public key: {error}"))
    })?;
    let algorithm = info.algorithm.oid;
    let key = if algorithm == ED25519_OID {
        ed25519_dalek::VerifyingKey::from_public_key_der(&der)
            .map(PublicKey::Ed25519)
            .map_err(|error| SignatureError::BadKey(format!("invalid Ed25519 key: {error}")))?
    } else if algorithm == EC_PUBLIC_KEY_OID {
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| SignatureError::BadKey("EC key without a named curve".into()))?;
        if curve != P256_OID {
            return Err(SignatureError::BadKey(format!(
                "unsupported elliptic curve {curve}: only P-256 is accepted"
            )));
        }
        P256Key::from_der(&der)
            .map(PublicKey::P256)
            .map_err(|error| SignatureError::BadKey(format!("invalid P-256 key: {error}")))?
    } else {
        return Err(SignatureError::BadKey(format!(
            "unsupported public key type {algorithm}: only ECDSA P-256 and Ed25519 are accepted"
        )));
    };
    Ok((key, der))
}

/// Decodes `X-PortainerAgent-Signature`: base64 (standard alphabet, no
/// padding) of 64 raw bytes.
///
/// # Errors
/// [`SignatureError::BadSignatureEncoding`] for anything that is not
/// unpadded base64; [`SignatureError::Invalid`] for another length.
pub fn decode_signature(text: &str) -> Result<[u8; 64], SignatureError> {
    let bytes = STANDARD_NO_PAD.decode(text).map_err(|error| {
        SignatureError::BadSignatureEncoding(format!("illegal base64 data: {error}"))
    })?;
    bytes.try_into().map_err(|_| SignatureError::Invalid)
}

impl PublicKey {
    /// Whether `signature` signs `message` with this key.
    pub fn verifies(&self, signature: &[u8; 64], message: &[u8]) -> bool {
        match self {
            PublicKey::P256(key) => key.verifies_md5(&Md5::digest(message).into(), signature),
            PublicKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_bytes(signature);
                key.verify_strict(message, &signature).is_ok()
            }
        }
    }
}

/// A P-256 key parsed once for AWS-LC, whose P-256 arithmetic is the
/// optimised one (x86-64 and AArch64 assembly): a fresh signature, which
/// Portainer sends with every request, costs about what Go's `crypto/ecdsa`
/// spends (`cargo bench --bench signature`, `docs/benchmarks.md`).
#[derive(Clone)]
pub struct P256Key(aws_lc_rs::signature::ParsedPublicKey);

impl std::fmt::Debug for P256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P256Key")
    }
}

impl P256Key {
    fn from_der(der: &[u8]) -> Result<P256Key, String> {
        aws_lc_rs::signature::ParsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            der,
        )
        .map(P256Key)
        .map_err(|rejected| rejected.to_string())
    }

    /// Whether `signature` (r and s, 32 bytes each) signs the MD5 digest
    /// `digest`, read as ECDSA's hash value: as Go's `ecdsa.Verify` reads
    /// a 16-byte hash, the integer those bytes make. AWS-LC takes a 32-byte
    /// SHA-256 digest and reads its 256 bits as that integer, so the MD5
    /// digest goes in behind 16 zero bytes: the same integer, the same
    /// check.
    pub fn verifies_md5(&self, digest: &[u8; 16], signature: &[u8; 64]) -> bool {
        let mut widened = [0u8; 32];
        widened[16..].copy_from_slice(digest);
        let Ok(digest) =
            aws_lc_rs::digest::Digest::import_less_safe(&widened, &aws_lc_rs::digest::SHA256)
        else {
            return false;
        };
        self.0.verify_digest_sig(&digest, signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use proptest::prelude::*;

    fn key_pair(secret: [u8; 32]) -> Option<(p256::ecdsa::SigningKey, P256Key)> {
        let signing = p256::ecdsa::SigningKey::from_bytes(&secret.into()).ok()?;
        // AWS-LC takes the bare point as well as a SubjectPublicKeyInfo.
        let point = signing.verifying_key().to_encoded_point(false);
        Some((signing, P256Key::from_der(point.as_bytes()).unwrap()))
    }

    proptest! {
        /// AWS-LC with the widened digest accepts exactly what the p256
        /// crate's prehash verification (the MD5 digest as it is) accepts.
        #[test]
        fn aws_lc_agrees_with_the_p256_crate(
            secret in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..200),
            flip in 0usize..64,
        ) {
            let Some((signing, key)) = key_pair(secret) else { return Ok(()) };
            let digest: [u8; 16] = Md5::digest(&message).into();
            let signature: p256::ecdsa::Signature = signing.sign_prehash(&digest).unwrap();
            let mut bytes: [u8; 64] = signature.to_bytes().into();
            prop_assert!(key.verifies_md5(&digest, &bytes));
            bytes[flip] ^= 1;
            let tampered_p256 = p256::ecdsa::Signature::from_slice(&bytes)
                .is_ok_and(|s| {
                    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
                    signing.verifying_key().verify_prehash(&digest, &s).is_ok()
                });
            prop_assert_eq!(key.verifies_md5(&digest, &bytes), tampered_p256);
            prop_assert!(!tampered_p256);
        }
    }

    #[test]
    fn a_signature_over_another_digest_is_refused() {
        let (signing, key) = key_pair([7; 32]).unwrap();
        let digest: [u8; 16] = Md5::digest(b"GET /containers/json").into();
        let signature: p256::ecdsa::Signature = signing.sign_prehash(&digest).unwrap();
        let bytes: [u8; 64] = signature.to_bytes().into();
        let other: [u8; 16] = Md5::digest(b"GET /containers/json?all=1").into();
        assert!(key.verifies_md5(&digest, &bytes));
        assert!(!key.verifies_md5(&other, &bytes));
        assert!(!key.verifies_md5(&digest, &[0; 64]));
    }
}
