//! Public keys and signatures as Portainer puts them in headers.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePublicKey as _;
use md5::{Digest as _, Md5};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use spki::der::Decode as _;

use crate::error::AgentError;

/// The key types berth verifies.
#[derive(Debug, Clone)]
pub enum PublicKey {
    /// What Portainer uses.
    P256(p256::ecdsa::VerifyingKey),
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
        p256::ecdsa::VerifyingKey::from_public_key_der(&der)
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
            PublicKey::P256(key) => {
                let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                let digest = Md5::digest(message);
                key.verify_prehash(&digest, &signature).is_ok()
            }
            PublicKey::Ed25519(key) => {
                let signature = ed25519_dalek::Signature::from_bytes(signature);
                key.verify_strict(message, &signature).is_ok()
            }
        }
    }
}
