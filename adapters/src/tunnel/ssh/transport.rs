//! SSH's transport layer (RFC 4253): the identification lines and the
//! binary packets, in clear before the first key exchange and sealed with
//! AES-GCM (RFC 5647 as OpenSSH and Go's x/crypto/ssh do it) after.

use std::io;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// chisel's client identification, which berth sends as the Go agent does;
/// chisel servers send `SSH-chisel-v3-server`.
pub const CLIENT_VERSION: &str = "SSH-chisel-v3-client";

/// Packets larger than this are refused (RFC 4253 asks for 35,000 at least).
const MAX_PACKET: usize = 256 * 1024;
const TAG_LEN: usize = 16;
/// Lines a server may send before its identification (RFC 4253 §4.2).
const MAX_PRELUDE_LINES: usize = 32;

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Sends ours, reads theirs: the first line starting with `SSH-`. Any
/// version text is accepted (chisel's is not `SSH-2.0-…`); it goes into
/// the exchange hash exactly as received.
pub async fn exchange_versions<R, W>(
    reader: &mut BufReader<R>,
    writer: &mut W,
    ours: &str,
) -> io::Result<String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_all(format!("{ours}\r\n").as_bytes()).await?;
    writer.flush().await?;
    for _ in 0..MAX_PRELUDE_LINES {
        let mut line = Vec::new();
        let read = (&mut *reader)
            .take(256)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed before identifying itself",
            ));
        }
        if line.last() != Some(&b'\n') {
            return Err(protocol_error(
                "the server's identification line is too long",
            ));
        }
        if line.starts_with(b"SSH-") {
            // It goes into the exchange hash as sent: RFC 4253 §4.2 makes
            // it printable ASCII, and anything else could not be hashed
            // byte for byte as a String.
            let text = std::str::from_utf8(&line)
                .ok()
                .filter(|text| text.is_ascii())
                .ok_or_else(|| protocol_error("the server's identification is not ASCII"))?;
            return Ok(text.trim_end_matches(['\r', '\n']).to_string());
        }
    }
    Err(protocol_error("the server sent no SSH identification"))
}

#[derive(Clone)]
enum Gcm {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
}

/// One direction's packet protection.
#[derive(Clone)]
pub struct Sealing {
    gcm: Option<(Gcm, [u8; 12])>,
}

/// The AES-GCM variants offered, in order of preference.
pub const CIPHERS: [&str; 2] = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"];

/// Key length in bytes for a cipher of `CIPHERS`.
pub fn key_len(cipher: &str) -> usize {
    if cipher == CIPHERS[1] {
        32
    } else {
        16
    }
}

impl Sealing {
    pub fn clear() -> Self {
        Sealing { gcm: None }
    }

    pub fn gcm(cipher: &str, key: &[u8], iv: &[u8]) -> Self {
        let gcm = if cipher == CIPHERS[1] {
            Gcm::Aes256(Box::new(
                Aes256Gcm::new_from_slice(key).expect("32-byte key"),
            ))
        } else {
            Gcm::Aes128(Box::new(
                Aes128Gcm::new_from_slice(key).expect("16-byte key"),
            ))
        };
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&iv[..12]);
        Sealing {
            gcm: Some((gcm, nonce)),
        }
    }

    /// The nonce for this packet; the last 8 bytes count packets.
    fn next_nonce(nonce: &mut [u8; 12]) -> [u8; 12] {
        let current = *nonce;
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&nonce[4..]);
        let next = u64::from_be_bytes(counter).wrapping_add(1);
        nonce[4..].copy_from_slice(&next.to_be_bytes());
        current
    }

    /// Frames and (after key exchange) seals one payload.
    pub fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        let block = if self.gcm.is_some() { 16 } else { 8 };
        // Length field excluded from alignment with AES-GCM, included in clear.
        let counted = if self.gcm.is_some() { 1 } else { 5 } + payload.len();
        let mut padding = block - counted % block;
        if padding < 4 {
            padding += block;
        }
        let length = 1 + payload.len() + padding;
        let mut body = Vec::with_capacity(length + TAG_LEN);
        body.push(padding as u8);
        body.extend_from_slice(payload);
        body.resize(length, 0);
        let length_field = (length as u32).to_be_bytes();
        let mut packet = length_field.to_vec();
        match &mut self.gcm {
            None => packet.extend_from_slice(&body),
            Some((gcm, nonce)) => {
                let nonce = Self::next_nonce(nonce);
                let sealed = gcm_apply(gcm, &nonce, &length_field, &body, true)
                    .expect("sealing with AES-GCM does not fail");
                packet.extend_from_slice(&sealed);
            }
        }
        packet
    }

    /// Reads one packet and returns its payload.
    pub async fn read_packet<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> io::Result<Vec<u8>> {
        let mut length_field = [0u8; 4];
        reader.read_exact(&mut length_field).await?;
        let length = u32::from_be_bytes(length_field) as usize;
        if !(5..=MAX_PACKET).contains(&length) {
            return Err(protocol_error(format!("bad packet length {length}")));
        }
        let body = match &mut self.gcm {
            None => {
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).await?;
                body
            }
            Some((gcm, nonce)) => {
                if !length.is_multiple_of(16) {
                    return Err(protocol_error("sealed packet not block-aligned"));
                }
                let mut sealed = vec![0u8; length + TAG_LEN];
                reader.read_exact(&mut sealed).await?;
                let nonce = Self::next_nonce(nonce);
                gcm_apply(gcm, &nonce, &length_field, &sealed, false)
                    .ok_or_else(|| protocol_error("packet authentication failed"))?
            }
        };
        let padding = body[0] as usize;
        if padding < 4 || padding + 1 > body.len() {
            return Err(protocol_error("bad packet padding"));
        }
        Ok(body[1..body.len() - padding].to_vec())
    }
}

fn gcm_apply(gcm: &Gcm, nonce: &[u8; 12], aad: &[u8], data: &[u8], seal: bool) -> Option<Vec<u8>> {
    let nonce = &Nonce::from(*nonce);
    let payload = Payload { msg: data, aad };
    let result = match (gcm, seal) {
        (Gcm::Aes128(c), true) => c.encrypt(nonce, payload),
        (Gcm::Aes128(c), false) => c.decrypt(nonce, payload),
        (Gcm::Aes256(c), true) => c.encrypt(nonce, payload),
        (Gcm::Aes256(c), false) => c.decrypt(nonce, payload),
    };
    result.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sealed_packets_open_in_order_and_tampering_is_caught() {
        for cipher in CIPHERS {
            let key = vec![3u8; key_len(cipher)];
            let mut ours = Sealing::gcm(cipher, &key, &[9u8; 12]);
            let mut theirs = Sealing::gcm(cipher, &key, &[9u8; 12]);
            let mut wire = Vec::new();
            for payload in [&b"one"[..], &[7u8; 1000][..], b""] {
                let packet = ours.seal(payload);
                assert_eq!((packet.len() - 4 - TAG_LEN) % 16, 0);
                wire.extend_from_slice(&packet);
            }
            let mut reader = &wire[..];
            assert_eq!(theirs.read_packet(&mut reader).await.unwrap(), b"one");
            assert_eq!(
                theirs.read_packet(&mut reader).await.unwrap(),
                vec![7u8; 1000]
            );
            assert_eq!(theirs.read_packet(&mut reader).await.unwrap(), b"");

            let mut packet = ours.seal(b"tampered");
            packet[8] ^= 1;
            let mut reader = &packet[..];
            assert!(theirs.read_packet(&mut reader).await.is_err());
        }
    }

    #[tokio::test]
    async fn clear_packets_are_aligned_and_read_back() {
        let mut sealing = Sealing::clear();
        let packet = sealing.seal(b"hello");
        assert_eq!(packet.len() % 8, 0);
        let mut reader = &packet[..];
        assert_eq!(sealing.read_packet(&mut reader).await.unwrap(), b"hello");
        let mut huge = &[0xff, 0xff, 0xff, 0xff, 0][..];
        assert!(sealing.read_packet(&mut huge).await.is_err());
    }

    #[tokio::test]
    async fn any_ssh_identification_is_accepted_after_prelude_lines() {
        let server = b"hello there\r\nSSH-chisel-v3-server\r\n";
        let mut reader = BufReader::new(&server[..]);
        let mut sent = Vec::new();
        let version = exchange_versions(&mut reader, &mut sent, CLIENT_VERSION)
            .await
            .unwrap();
        assert_eq!(version, "SSH-chisel-v3-server");
        assert_eq!(sent, b"SSH-chisel-v3-client\r\n");
        let garbled = b"SSH-2.0-\xb2\xb2\r\n";
        let refused = exchange_versions(
            &mut BufReader::new(&garbled[..]),
            &mut Vec::new(),
            CLIENT_VERSION,
        )
        .await;
        assert!(refused.unwrap_err().to_string().contains("not ASCII"));
        let mut silent = BufReader::new(&b""[..]);
        assert!(
            exchange_versions(&mut silent, &mut Vec::new(), CLIENT_VERSION)
                .await
                .is_err()
        );
    }
}
