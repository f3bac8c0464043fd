//! memberlist's gossip encryption, as Go serf's `-encrypt` key sets it up:
//! AES-GCM (the key's length picks AES-128, -192 or -256), a version byte,
//! a random 12-byte nonce, then the sealed message. Version 1 (memberlist
//! protocol 2 and later) is sent; version 0 (PKCS#7-padded) is still read.
//! Streams seal with their 5-byte frame header as additional data.

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::Engine;

use super::messages::WireError;

type Aes192Gcm = AesGcm<Aes192, U12>;

const NONCE: usize = 12;
const TAG: usize = 16;

/// How long `plain` is once sealed: version, nonce, text, tag.
pub const fn sealed_len(plain: usize) -> usize {
    1 + NONCE + plain + TAG
}

/// The frame header of a sealed stream message (`encryptMsg` and the
/// sealed length), which is also its additional data.
pub fn stream_header(sealed_len: usize) -> [u8; 5] {
    let [a, b, c, d] = u32::try_from(sealed_len).unwrap_or(u32::MAX).to_be_bytes();
    [super::messages::ENCRYPT, a, b, c, d]
}

#[derive(Clone)]
pub struct Keyring {
    /// The first key seals; every key is tried to open.
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// Parses a key as serf's `-encrypt` takes it: standard base64 of 16,
    /// 24 or 32 bytes.
    ///
    /// # Errors
    /// Not base64, or the wrong length.
    pub fn from_base64(text: &str) -> Result<Keyring, String> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "the gossip key is not base64".to_string())?;
        Keyring::new(vec![key])
    }

    /// # Errors
    /// No key, or a key that is not 16, 24 or 32 bytes long.
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Keyring, String> {
        if keys.is_empty() {
            return Err("a keyring needs a key".into());
        }
        if let Some(key) = keys.iter().find(|key| ![16, 24, 32].contains(&key.len())) {
            return Err(format!(
                "the gossip key is {} bytes; it must be 16, 24 or 32",
                key.len()
            ));
        }
        Ok(Keyring { keys })
    }

    /// Seals `plain` (version 1) under the first key with `nonce`, which
    /// the caller draws at random for every message.
    pub fn seal(&self, plain: &[u8], aad: &[u8], nonce: [u8; NONCE]) -> Vec<u8> {
        let mut out = Vec::with_capacity(sealed_len(plain.len()));
        out.push(1);
        out.extend_from_slice(&nonce);
        let payload = Payload { msg: plain, aad };
        let sealed = with_cipher(&self.keys[0], |cipher| cipher.seal(&nonce, payload));
        out.extend_from_slice(&sealed);
        out
    }

    /// # Errors
    /// Too short, an unknown version, or no key opens it.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, WireError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(WireError::new("an empty encrypted message"));
        };
        if version > 1 {
            return Err(WireError::new(format!("encryption version {version}")));
        }
        if rest.len() < NONCE + TAG {
            return Err(WireError::new("an encrypted message too short to open"));
        }
        let (nonce, body) = rest.split_at(NONCE);
        for key in &self.keys {
            let payload = Payload { msg: body, aad };
            if let Some(mut plain) = with_cipher(key, |cipher| cipher.open(nonce, payload)) {
                if version == 0 {
                    let pad = usize::from(plain.last().copied().unwrap_or(0));
                    if pad == 0 || pad > 16 || pad > plain.len() {
                        return Err(WireError::new("bad padding"));
                    }
                    plain.truncate(plain.len() - pad);
                }
                return Ok(plain);
            }
        }
        Err(WireError::new("no gossip key opens the message"))
    }
}

/// What the seal and open calls need of a cipher, whatever its key size.
trait Sealer {
    fn seal(&self, nonce: &[u8], payload: Payload<'_, '_>) -> Vec<u8>;
    fn open(&self, nonce: &[u8], payload: Payload<'_, '_>) -> Option<Vec<u8>>;
}

impl<C: Aead> Sealer for C
where
    C: aes_gcm::AeadCore<NonceSize = U12>,
{
    fn seal(&self, nonce: &[u8], payload: Payload<'_, '_>) -> Vec<u8> {
        // Sealing into a Vec fails only past GCM's 64 GiB message limit.
        self.encrypt(&nonce_of(nonce), payload).unwrap_or_default()
    }

    fn open(&self, nonce: &[u8], payload: Payload<'_, '_>) -> Option<Vec<u8>> {
        self.decrypt(&nonce_of(nonce), payload).ok()
    }
}

fn nonce_of(bytes: &[u8]) -> Nonce<U12> {
    let mut nonce = [0u8; NONCE];
    nonce.copy_from_slice(&bytes[..NONCE]);
    Nonce::from(nonce)
}

fn with_cipher<T>(key: &[u8], use_it: impl FnOnce(&dyn Sealer) -> T) -> T {
    // Keyring::new admits only these three lengths.
    match key.len() {
        16 => use_it(&Aes128Gcm::new_from_slice(key).expect("16-byte key")),
        24 => use_it(&Aes192Gcm::new_from_slice(key).expect("24-byte key")),
        _ => use_it(&Aes256Gcm::new_from_slice(key).expect("32-byte key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_open_with_the_same_key_only() {
        for len in [16, 24, 32] {
            let ring = Keyring::new(vec![vec![7; len]]).unwrap();
            let sealed = ring.seal(b"hello", b"hdr", [1; 12]);
            assert_eq!(sealed.len(), 1 + 12 + 5 + 16);
            assert_eq!(sealed.len(), sealed_len(5));
            assert_eq!(ring.open(&sealed, b"hdr").unwrap(), b"hello");
            assert!(ring.open(&sealed, b"other").is_err());
            let other = Keyring::new(vec![vec![8; len]]).unwrap();
            assert!(other.open(&sealed, b"hdr").is_err());
        }
    }

    #[test]
    fn any_key_of_the_ring_opens() {
        let old = Keyring::new(vec![vec![1; 16]]).unwrap();
        let ring = Keyring::new(vec![vec![2; 16], vec![1; 16]]).unwrap();
        assert_eq!(ring.open(&old.seal(b"x", b"", [0; 12]), b"").unwrap(), b"x");
    }

    #[test]
    fn keys_are_checked_as_serf_checks_them() {
        assert!(Keyring::from_base64("cg8StVXbQJ0gPvMd9o7yrg==").is_ok());
        assert!(Keyring::from_base64("not base64!").is_err());
        assert!(Keyring::from_base64("AAAA").is_err());
    }

    #[test]
    fn short_and_unknown_messages_are_refused() {
        let ring = Keyring::new(vec![vec![1; 16]]).unwrap();
        assert!(ring.open(&[], b"").is_err());
        assert!(ring.open(&[2; 40], b"").is_err());
        assert!(ring.open(&[1; 20], b"").is_err());
    }
}
