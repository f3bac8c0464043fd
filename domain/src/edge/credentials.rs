//! Tunnel credentials (reference §10.5): Portainer sends `user:password`
//! sealed with AES-256-GCM under the *hex text* of MD5(EDGE_ID) (32 ASCII
//! bytes, hence AES-256), laid out as nonce (12) ‖ ciphertext ‖ tag (16), in
//! unpadded base64.

use std::fmt;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use md5::{Digest, Md5};
/// A secret wiped from memory when dropped; re-exported so the crates
/// that carry the tunnel password use this one.
pub use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct TunnelCredentials {
    pub user: String,
    /// Wiped when dropped; never in `Debug`.
    pub password: Zeroizing<String>,
}

impl fmt::Debug for TunnelCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelCredentials({}:***)", self.user)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    NotBase64,
    TooShort,
    /// Wrong Edge ID, or tampered credentials.
    Undecryptable,
    Malformed,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CredentialsError::NotBase64 => "the tunnel credentials are not base64",
            CredentialsError::TooShort => "the tunnel credentials are too short",
            CredentialsError::Undecryptable => {
                "the tunnel credentials do not decrypt with this EDGE_ID"
            }
            CredentialsError::Malformed => "the tunnel credentials are not user:password",
        })
    }
}

impl std::error::Error for CredentialsError {}

fn nonce_array(bytes: &[u8]) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[..NONCE_LEN]);
    nonce
}

fn cipher_for(edge_id: &str) -> Aes256Gcm {
    let key_text = hex::encode(Md5::digest(edge_id.as_bytes()));
    Aes256Gcm::new_from_slice(key_text.as_bytes()).expect("32 hex digits make a 256-bit key")
}

/// Opens the poll's `credentials` field.
pub fn decrypt(credentials: &str, edge_id: &str) -> Result<TunnelCredentials, CredentialsError> {
    let sealed = STANDARD_NO_PAD
        .decode(credentials.trim().trim_end_matches('='))
        .map_err(|_| CredentialsError::NotBase64)?;
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CredentialsError::TooShort);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let plain = Zeroizing::new(
        cipher_for(edge_id)
            .decrypt(&Nonce::from(nonce_array(nonce)), ciphertext)
            .map_err(|_| CredentialsError::Undecryptable)?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| CredentialsError::Malformed)?;
    let (user, password) = text.split_once(':').ok_or(CredentialsError::Malformed)?;
    Ok(TunnelCredentials {
        user: user.to_string(),
        password: Zeroizing::new(password.to_string()),
    })
}

/// Seals credentials as Portainer does; the test servers use it, and it
/// keeps `decrypt` honest.
pub fn encrypt(credentials: &TunnelCredentials, edge_id: &str, nonce: [u8; NONCE_LEN]) -> String {
    let plain = Zeroizing::new(format!("{}:{}", credentials.user, *credentials.password));
    let sealed = cipher_for(edge_id)
        .encrypt(&Nonce::from(nonce), plain.as_bytes())
        .expect("AES-GCM sealing does not fail for short inputs");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    STANDARD_NO_PAD.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> TunnelCredentials {
        TunnelCredentials {
            user: "abcdEFGH".into(),
            password: Zeroizing::new("12345678".into()),
        }
    }

    #[test]
    fn sealed_credentials_open_with_the_same_edge_id_only() {
        let sealed = encrypt(&creds(), "edge-1", [7; 12]);
        assert_eq!(decrypt(&sealed, "edge-1").unwrap(), creds());
        assert_eq!(
            decrypt(&sealed, "edge-2"),
            Err(CredentialsError::Undecryptable)
        );
    }

    #[test]
    fn bad_forms_are_named() {
        assert_eq!(decrypt("***", "e"), Err(CredentialsError::NotBase64));
        assert_eq!(decrypt("AAAA", "e"), Err(CredentialsError::TooShort));
        let no_colon = TunnelCredentials {
            user: "x".into(),
            password: Zeroizing::new(String::new()),
        };
        let sealed = encrypt(&no_colon, "e", [1; 12]);
        assert!(decrypt(&sealed, "e").is_ok());
        assert!(!format!("{:?}", creds()).contains("12345678"));
    }
}
