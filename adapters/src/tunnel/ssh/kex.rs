//! Key exchange (RFC 4253 §7–8, RFC 8731): curve25519-sha256, the server's
//! host key (ECDSA P-256 as chisel generates it, or Ed25519) checked against
//! the Edge key's fingerprint, and the session keys derived for AES-GCM.

use std::fmt;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use curve25519_dalek::montgomery::MontgomeryPoint;
use sha2::{Digest, Sha256};

use super::transport::{key_len, CIPHERS};
use super::wire::{Decoder, Encoder, Malformed};

pub const MSG_KEXINIT: u8 = 20;
pub const MSG_NEWKEYS: u8 = 21;
pub const MSG_KEX_ECDH_INIT: u8 = 30;
pub const MSG_KEX_ECDH_REPLY: u8 = 31;

const KEX: [&str; 2] = ["curve25519-sha256", "curve25519-sha256@libssh.org"];
const HOST_KEYS: [&str; 2] = ["ecdsa-sha2-nistp256", "ssh-ed25519"];
/// Not used with AES-GCM, but a name-list cannot be empty for every peer.
const MACS: [&str; 1] = ["hmac-sha2-256"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KexError {
    Malformed(Malformed),
    NoCommon(&'static str, String),
    BadHostKey(String),
    BadSignature,
    WrongFingerprint(String),
}

impl fmt::Display for KexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KexError::Malformed(m) => write!(f, "{m}"),
            KexError::NoCommon(what, theirs) => {
                write!(f, "no common {what} algorithm (the server offers {theirs})")
            }
            KexError::BadHostKey(why) => write!(f, "unusable host key: {why}"),
            KexError::BadSignature => write!(f, "the server's key exchange signature is invalid"),
            KexError::WrongFingerprint(got) => write!(
                f,
                "the tunnel server's host key fingerprint {got} is not the one in the Edge key"
            ),
        }
    }
}

impl std::error::Error for KexError {}

impl From<Malformed> for KexError {
    fn from(m: Malformed) -> Self {
        KexError::Malformed(m)
    }
}

/// What both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub host_key: &'static str,
    pub cipher_out: &'static str,
    pub cipher_in: &'static str,
}

pub fn client_kexinit(cookie: [u8; 16]) -> Vec<u8> {
    kexinit(
        cookie,
        &KEX.join(","),
        &HOST_KEYS.join(","),
        &CIPHERS.join(","),
        &MACS.join(","),
    )
}

/// A KEXINIT with the same lists both ways and no compression.
fn kexinit(cookie: [u8; 16], kex: &str, host_keys: &str, ciphers: &str, macs: &str) -> Vec<u8> {
    Encoder::message(MSG_KEXINIT)
        .raw(&cookie)
        .string(kex)
        .string(host_keys)
        .string(ciphers)
        .string(ciphers)
        .string(macs)
        .string(macs)
        .string("none")
        .string("none")
        .string("")
        .string("")
        .boolean(false)
        .u32(0)
        .finish()
}

fn first_common(
    ours: &[&'static str],
    theirs: &[&str],
    what: &'static str,
) -> Result<&'static str, KexError> {
    ours.iter()
        .find(|name| theirs.contains(name))
        .copied()
        .ok_or_else(|| KexError::NoCommon(what, theirs.join(",")))
}

pub fn negotiate(server_kexinit: &[u8]) -> Result<Agreed, KexError> {
    let mut d = Decoder::new(server_kexinit);
    if d.byte()? != MSG_KEXINIT {
        return Err(Malformed("expected KEXINIT").into());
    }
    d.skip(16)?;
    let kex = d.name_list()?;
    let host_keys = d.name_list()?;
    let ciphers_out = d.name_list()?;
    let ciphers_in = d.name_list()?;
    let _macs_out = d.name_list()?;
    let _macs_in = d.name_list()?;
    let compression_out = d.name_list()?;
    let compression_in = d.name_list()?;
    first_common(&KEX, &kex, "key exchange")?;
    first_common(&["none"], &compression_out, "compression")?;
    first_common(&["none"], &compression_in, "compression")?;
    Ok(Agreed {
        host_key: first_common(&HOST_KEYS, &host_keys, "host key")?,
        cipher_out: first_common(&CIPHERS, &ciphers_out, "cipher")?,
        cipher_in: first_common(&CIPHERS, &ciphers_in, "cipher")?,
    })
}

/// The client's ephemeral X25519 key.
pub struct Ephemeral {
    secret: [u8; 32],
    pub public: [u8; 32],
}

impl Ephemeral {
    pub fn new(secret: [u8; 32]) -> Self {
        Ephemeral {
            secret,
            public: MontgomeryPoint::mul_base_clamped(secret).to_bytes(),
        }
    }

    pub fn init_message(&self) -> Vec<u8> {
        Encoder::message(MSG_KEX_ECDH_INIT)
            .string(self.public)
            .finish()
    }
}

/// Everything the exchange hash covers besides the ECDH reply.
pub struct Transcript<'a> {
    pub client_version: &'a str,
    pub server_version: &'a str,
    pub client_kexinit: &'a [u8],
    pub server_kexinit: &'a [u8],
}

/// A finished exchange: the shared secret (as an mpint) and the hash.
pub struct Exchanged {
    shared_mpint: Vec<u8>,
    pub hash: Vec<u8>,
}

/// Checks the server's reply: its host key against `fingerprint_ok`, its
/// signature over the exchange hash.
pub fn finish(
    reply: &[u8],
    ephemeral: &Ephemeral,
    transcript: &Transcript<'_>,
    host_key_kind: &str,
    fingerprint_ok: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<Exchanged, KexError> {
    let mut d = Decoder::new(reply);
    if d.byte()? != MSG_KEX_ECDH_REPLY {
        return Err(Malformed("expected KEX_ECDH_REPLY").into());
    }
    let host_key = d.string()?;
    let server_public = d.string()?;
    let signature = d.string()?;
    fingerprint_ok(host_key).map_err(KexError::WrongFingerprint)?;
    let server_public: [u8; 32] = server_public
        .try_into()
        .map_err(|_| Malformed("X25519 public key is not 32 bytes"))?;
    let shared = MontgomeryPoint(server_public)
        .mul_clamped(ephemeral.secret)
        .to_bytes();
    if shared == [0u8; 32] {
        return Err(KexError::BadHostKey("degenerate X25519 share".into()));
    }
    let shared_mpint = Encoder::default().mpint(&shared).finish();
    let hash = exchange_hash(
        transcript,
        host_key,
        &ephemeral.public,
        &server_public,
        &shared_mpint,
    );
    verify_host_signature(host_key_kind, host_key, signature, &hash)?;
    Ok(Exchanged { shared_mpint, hash })
}

/// RFC 4253 §8 / RFC 8731: the hash both sides sign and derive keys from.
fn exchange_hash(
    transcript: &Transcript<'_>,
    host_key: &[u8],
    client_public: &[u8; 32],
    server_public: &[u8; 32],
    shared_mpint: &[u8],
) -> Vec<u8> {
    Sha256::digest(
        Encoder::default()
            .string(transcript.client_version)
            .string(transcript.server_version)
            .string(transcript.client_kexinit)
            .string(transcript.server_kexinit)
            .string(host_key)
            .string(client_public)
            .string(server_public)
            .raw(shared_mpint)
            .finish(),
    )
    .to_vec()
}

fn verify_host_signature(
    kind: &str,
    host_key: &[u8],
    signature: &[u8],
    hash: &[u8],
) -> Result<(), KexError> {
    let mut key = Decoder::new(host_key);
    let key_kind = key.text()?;
    let mut sig = Decoder::new(signature);
    let sig_kind = sig.text()?;
    if key_kind != kind || sig_kind != kind {
        return Err(KexError::BadHostKey(format!(
            "negotiated {kind}, got a {key_kind} key signing with {sig_kind}"
        )));
    }
    let blob = sig.string()?;
    match kind {
        "ecdsa-sha2-nistp256" => {
            if key.text()? != "nistp256" {
                return Err(KexError::BadHostKey("not a P-256 key".into()));
            }
            // SSH sends the point uncompressed (RFC 5656 §3.1); AWS-LC
            // checks that it is on the curve as it verifies.
            let point = key.string()?;
            if point.len() != 65 || point[0] != 4 {
                return Err(KexError::BadHostKey(
                    "not an uncompressed P-256 point".into(),
                ));
            }
            let mut scalars = Decoder::new(blob);
            let mut fixed = [0u8; 64];
            fixed[..32].copy_from_slice(&fixed_scalar(scalars.string()?)?);
            fixed[32..].copy_from_slice(&fixed_scalar(scalars.string()?)?);
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(hash, &fixed)
                .map_err(|_| KexError::BadSignature)
        }
        "ssh-ed25519" => {
            let public: [u8; 32] = key
                .string()?
                .try_into()
                .map_err(|_| KexError::BadHostKey("Ed25519 key is not 32 bytes".into()))?;
            let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public)
                .map_err(|e| KexError::BadHostKey(e.to_string()))?;
            let signature =
                ed25519_dalek::Signature::from_slice(blob).map_err(|_| KexError::BadSignature)?;
            verifying
                .verify_strict(hash, &signature)
                .map_err(|_| KexError::BadSignature)
        }
        other => Err(KexError::BadHostKey(format!("unsupported kind {other}"))),
    }
}

/// An mpint scalar as 32 big-endian bytes.
fn fixed_scalar(mpint: &[u8]) -> Result<[u8; 32], KexError> {
    let trimmed = match mpint.iter().position(|&b| b != 0) {
        Some(start) => &mpint[start..],
        None => &[][..],
    };
    if trimmed.len() > 32 {
        return Err(KexError::BadSignature);
    }
    let mut out = [0u8; 32];
    out[32 - trimmed.len()..].copy_from_slice(trimmed);
    Ok(out)
}

/// A server's side of the exchange, for a scripted server (the session
/// fuzz target and tests): a KEXINIT offering only Ed25519 host keys, and
/// the KEX_ECDH_REPLY to a client's KEX_ECDH_INIT, signed with the host
/// key whose seed is `host_seed`. berth itself never serves SSH.
pub mod server {
    use super::*;
    use ed25519_dalek::Signer as _;

    pub fn kexinit(cookie: [u8; 16]) -> Vec<u8> {
        super::kexinit(
            cookie,
            KEX[0],
            "ssh-ed25519",
            &CIPHERS.join(","),
            &MACS.join(","),
        )
    }

    /// The host key blob, whose fingerprint a client must be given.
    pub fn host_key_blob(host_seed: [u8; 32]) -> Vec<u8> {
        let key = ed25519_dalek::SigningKey::from_bytes(&host_seed);
        Encoder::default()
            .string("ssh-ed25519")
            .string(key.verifying_key().to_bytes())
            .finish()
    }

    /// The reply to `client_init` and the exchange both sides derive keys
    /// from (the client's `keys` are the server's, in and out swapped).
    ///
    /// # Errors
    /// A `client_init` that is not a KEX_ECDH_INIT with a 32-byte share.
    pub fn reply(
        client_init: &[u8],
        ephemeral: &Ephemeral,
        transcript: &Transcript<'_>,
        host_seed: [u8; 32],
    ) -> Result<(Vec<u8>, Exchanged), KexError> {
        let mut d = Decoder::new(client_init);
        if d.byte()? != MSG_KEX_ECDH_INIT {
            return Err(Malformed("expected KEX_ECDH_INIT").into());
        }
        let client_public: [u8; 32] = d
            .string()?
            .try_into()
            .map_err(|_| Malformed("X25519 public key is not 32 bytes"))?;
        let shared = MontgomeryPoint(client_public)
            .mul_clamped(ephemeral.secret)
            .to_bytes();
        let shared_mpint = Encoder::default().mpint(&shared).finish();
        let host_key = host_key_blob(host_seed);
        let hash = exchange_hash(
            transcript,
            &host_key,
            &client_public,
            &ephemeral.public,
            &shared_mpint,
        );
        let signature = ed25519_dalek::SigningKey::from_bytes(&host_seed).sign(&hash);
        let reply = Encoder::message(MSG_KEX_ECDH_REPLY)
            .string(&host_key)
            .string(ephemeral.public)
            .string(
                Encoder::default()
                    .string("ssh-ed25519")
                    .string(signature.to_bytes())
                    .finish(),
            )
            .finish();
        Ok((reply, Exchanged { shared_mpint, hash }))
    }
}

/// The keys of one exchange, both directions.
pub struct SessionKeys {
    pub iv_out: Vec<u8>,
    pub iv_in: Vec<u8>,
    pub key_out: Vec<u8>,
    pub key_in: Vec<u8>,
}

impl Exchanged {
    /// RFC 4253 §7.2: HASH(K || H || letter || session_id), extended with
    /// HASH(K || H || so far) until long enough.
    fn derive(&self, session_id: &[u8], letter: u8, length: usize) -> Vec<u8> {
        let mut out = Sha256::new()
            .chain_update(&self.shared_mpint)
            .chain_update(&self.hash)
            .chain_update([letter])
            .chain_update(session_id)
            .finalize()
            .to_vec();
        while out.len() < length {
            let more = Sha256::new()
                .chain_update(&self.shared_mpint)
                .chain_update(&self.hash)
                .chain_update(&out)
                .finalize();
            out.extend_from_slice(&more);
        }
        out.truncate(length);
        out
    }

    pub fn keys(&self, session_id: &[u8], agreed: &Agreed) -> SessionKeys {
        SessionKeys {
            iv_out: self.derive(session_id, b'A', 12),
            iv_in: self.derive(session_id, b'B', 12),
            key_out: self.derive(session_id, b'C', key_len(agreed.cipher_out)),
            key_in: self.derive(session_id, b'D', key_len(agreed.cipher_in)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_kexinit(host_keys: &str, ciphers: &str) -> Vec<u8> {
        kexinit(
            [0; 16],
            "curve25519-sha256@libssh.org,ecdh-sha2-nistp256",
            host_keys,
            ciphers,
            "hmac-sha2-256-etm@openssh.com",
        )
    }

    #[test]
    fn negotiation_picks_our_first_choice_that_the_server_has() {
        let agreed = negotiate(&server_kexinit(
            "rsa-sha2-256,ssh-ed25519,ecdsa-sha2-nistp256",
            "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com",
        ))
        .unwrap();
        assert_eq!(agreed.host_key, "ecdsa-sha2-nistp256");
        assert_eq!(agreed.cipher_out, "aes256-gcm@openssh.com");
        let refused = negotiate(&server_kexinit("ssh-rsa", "aes128-ctr"));
        assert!(matches!(refused, Err(KexError::NoCommon("host key", _))));
        assert!(
            negotiate(&client_kexinit([1; 16])).is_ok(),
            "we agree with ourselves"
        );
    }

    #[test]
    fn x25519_shares_agree() {
        let a = Ephemeral::new([1; 32]);
        let b = Ephemeral::new([2; 32]);
        let ab = MontgomeryPoint(b.public).mul_clamped(a.secret);
        let ba = MontgomeryPoint(a.public).mul_clamped(b.secret);
        assert_eq!(ab, ba);
    }

    #[test]
    fn the_scripted_servers_reply_passes_the_clients_checks() {
        let client = Ephemeral::new([3; 32]);
        let server_side = Ephemeral::new([4; 32]);
        let (ours, theirs) = (client_kexinit([1; 16]), server::kexinit([2; 16]));
        let transcript = Transcript {
            client_version: "SSH-chisel-v3-client",
            server_version: "SSH-2.0-scripted",
            client_kexinit: &ours,
            server_kexinit: &theirs,
        };
        let (reply, at_server) =
            server::reply(&client.init_message(), &server_side, &transcript, [5; 32]).unwrap();
        let agreed = negotiate(&theirs).unwrap();
        assert_eq!(agreed.host_key, "ssh-ed25519");
        let at_client = finish(&reply, &client, &transcript, agreed.host_key, |_| Ok(())).unwrap();
        assert_eq!(at_client.hash, at_server.hash);
        let (c, s) = (
            at_client.keys(&at_client.hash, &agreed),
            at_server.keys(&at_server.hash, &agreed),
        );
        assert_eq!((c.key_out, c.iv_in), (s.key_out, s.iv_in));
    }

    #[test]
    fn scalars_are_left_padded() {
        assert_eq!(fixed_scalar(&[0, 0x80]).unwrap()[31], 0x80);
        assert!(fixed_scalar(&[1; 33]).is_err());
    }
}
