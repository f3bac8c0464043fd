//! Signing as Portainer signs, for clients that are not Portainer (`berth
//! keys new`): the signature never depends on the request, so one pair of
//! headers serves every request a client makes.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use md5::{Digest as _, Md5};
use zeroize::Zeroizing;

/// The key types a client can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// What Portainer uses: ECDSA over MD5 of the message.
    P256,
    /// berth only: Ed25519 over the message itself.
    Ed25519,
}

/// A key pair and the two header values it signs with.
pub struct SignedKey {
    /// `X-PortainerAgent-PublicKey`: hex of the DER SubjectPublicKeyInfo.
    pub public_key_hex: String,
    /// `X-PortainerAgent-Signature`: unpadded base64 of `r‖s` (64 bytes).
    pub signature: String,
    /// The private key as PKCS#8 PEM, wiped from memory when dropped.
    pub private_key_pem: Zeroizing<String>,
}

/// Signs `message` with the key whose secret is `secret`.
///
/// # Errors
/// For P-256, a `secret` that is zero or not below the curve's order; the
/// caller draws again (the odds are about 2⁻³²).
pub fn sign(
    kind: KeyKind,
    secret: &Zeroizing<[u8; 32]>,
    message: &[u8],
) -> Result<SignedKey, String> {
    match kind {
        KeyKind::P256 => sign_p256(secret, message),
        KeyKind::Ed25519 => sign_ed25519(secret, message),
    }
}

fn sign_p256(secret: &Zeroizing<[u8; 32]>, message: &[u8]) -> Result<SignedKey, String> {
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
    let key = p256::ecdsa::SigningKey::from_slice(secret.as_slice())
        .map_err(|_| "not a P-256 secret scalar".to_string())?;
    // Go's hashToInt reads a digest shorter than the curve as a number, as
    // the ecdsa crate's left padding does.
    let signature: p256::ecdsa::Signature = key
        .sign_prehash(&Md5::digest(message))
        .map_err(|error| format!("cannot sign: {error}"))?;
    let public = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|error| format!("cannot encode the public key: {error}"))?;
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| format!("cannot encode the private key: {error}"))?;
    Ok(SignedKey {
        public_key_hex: hex::encode(public.as_bytes()),
        signature: STANDARD_NO_PAD.encode(signature.to_bytes()),
        private_key_pem: Zeroizing::new(private.to_string()),
    })
}

fn sign_ed25519(secret: &Zeroizing<[u8; 32]>, message: &[u8]) -> Result<SignedKey, String> {
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(secret);
    let signature = key.sign(message);
    let public = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|error| format!("cannot encode the public key: {error}"))?;
    let private = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|error| format!("cannot encode the private key: {error}"))?;
    Ok(SignedKey {
        public_key_hex: hex::encode(public.as_bytes()),
        signature: STANDARD_NO_PAD.encode(signature.to_bytes()),
        private_key_pem: Zeroizing::new(private.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{decode_signature, parse_public_key, DEFAULT_MESSAGE};

    fn secret(byte: u8) -> Zeroizing<[u8; 32]> {
        Zeroizing::new([byte; 32])
    }

    #[test]
    fn headers_made_here_are_accepted_by_the_verifier() {
        for kind in [KeyKind::P256, KeyKind::Ed25519] {
            for message in [DEFAULT_MESSAGE.as_bytes(), b"a shared AGENT_SECRET"] {
                let signed = sign(kind, &secret(7), message).unwrap();
                let (key, _) = parse_public_key(&signed.public_key_hex).unwrap();
                let signature = decode_signature(&signed.signature).unwrap();
                assert!(key.verifies(&signature, message), "{kind:?}");
                assert!(!key.verifies(&signature, b"another message"), "{kind:?}");
                assert!(signed
                    .private_key_pem
                    .starts_with("-----BEGIN PRIVATE KEY-----"));
            }
        }
    }

    #[test]
    fn a_p256_secret_outside_the_curve_order_is_refused() {
        assert!(sign(KeyKind::P256, &secret(0), b"m").is_err());
        assert!(sign(KeyKind::P256, &secret(0xff), b"m").is_err());
    }

    #[test]
    fn different_secrets_make_different_keys() {
        let one = sign(KeyKind::P256, &secret(1), b"m").unwrap();
        let two = sign(KeyKind::P256, &secret(2), b"m").unwrap();
        assert_ne!(one.public_key_hex, two.public_key_hex);
    }
}
