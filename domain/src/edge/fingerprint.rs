//! Checking the chisel server's host key against the key's fingerprint.
//! Current Portainer writes SHA-256 base64 (with padding, 44 characters) of
//! the SSH wire encoding of the host key; older versions wrote MD5 as
//! colon-separated hex, which chisel matches by prefix.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::Md5;
use sha2::{Digest, Sha256};

/// SHA-256 base64 of a host key blob, as chisel prints it.
pub fn sha256_fingerprint(host_key_blob: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(host_key_blob))
}

/// MD5 colon-hex of a host key blob (the legacy form).
pub fn md5_fingerprint(host_key_blob: &[u8]) -> String {
    Md5::digest(host_key_blob)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether the server's host key is the one the Edge key names.
pub fn matches(expected: &str, host_key_blob: &[u8]) -> bool {
    let expected = expected.trim();
    if expected.is_empty() {
        return false;
    }
    if expected.contains(':') {
        md5_fingerprint(host_key_blob).starts_with(&expected.to_ascii_lowercase())
    } else {
        sha256_fingerprint(host_key_blob) == expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOB: &[u8] = b"\x00\x00\x00\x13ecdsa-sha2-nistp256 fake blob";

    #[test]
    fn both_forms_match_their_key_only() {
        assert!(matches(&sha256_fingerprint(BLOB), BLOB));
        assert!(!matches(&sha256_fingerprint(b"other"), BLOB));
        let legacy = md5_fingerprint(BLOB);
        assert_eq!(legacy.len(), 47);
        assert!(matches(&legacy, BLOB));
        assert!(matches(&legacy[..20].to_uppercase(), BLOB));
        assert!(!matches(&md5_fingerprint(b"other"), BLOB));
        assert!(!matches("", BLOB));
    }
}
