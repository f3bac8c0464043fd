//! The Edge key: base64 without padding (Go's RawStdEncoding) of
//! `portainer_url|tunnel_addr|fingerprint|endpoint_id`.

use std::fmt;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;

/// A parsed Edge key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeKey {
    pub portainer_url: String,
    /// `host:port` of the chisel server, as Portainer writes it.
    pub tunnel_addr: String,
    /// The chisel server's host key fingerprint: SHA-256 base64 (current
    /// Portainer) or MD5 colon-hex (older versions).
    pub fingerprint: String,
    /// 0 for a global key (auto-onboarding); set once Portainer assigns one.
    pub endpoint_id: u64,
}

/// Why a key was refused; each names what a person pasting it got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeKeyError {
    Empty,
    Padded,
    NotBase64,
    NotText,
    PartCount(usize),
    EmptyPart(&'static str),
    EndpointId(String),
}

impl fmt::Display for EdgeKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeKeyError::Empty => write!(f, "invalid Edge key: the key is empty"),
            EdgeKeyError::Padded => write!(
                f,
                "invalid Edge key: it ends with '=' padding; Edge keys are unpadded base64"
            ),
            EdgeKeyError::NotBase64 => write!(f, "invalid Edge key: it is not base64"),
            EdgeKeyError::NotText => write!(f, "invalid Edge key: it does not decode to text"),
            EdgeKeyError::PartCount(found) => write!(
                f,
                "invalid Edge key: expected 4 '|'-separated parts, found {found}"
            ),
            EdgeKeyError::EmptyPart(part) => write!(f, "invalid Edge key: the {part} is empty"),
            EdgeKeyError::EndpointId(found) => write!(
                f,
                "invalid Edge key: the endpoint ID must be a non-negative integer, found {found:?}"
            ),
        }
    }
}

impl std::error::Error for EdgeKeyError {}

const PART_NAMES: [&str; 4] = [
    "Portainer URL",
    "tunnel server address",
    "tunnel server fingerprint",
    "endpoint ID",
];

/// How an Edge agent proves to a peer that it belongs to the same Edge
/// environment (same `EDGE_ID`) when it asks for the key with `GET /key`:
/// agents cannot make Portainer's signature, and the Go agent asks with
/// nothing at all.
pub fn peer_proof(edge_id: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!(
        "berth edge key peer proof:{edge_id}"
    )))
}

/// Whether `offered` is this environment's proof, compared in constant time.
pub fn is_peer_proof(offered: &str, edge_id: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = peer_proof(edge_id);
    offered.len() == expected.len() && bool::from(offered.as_bytes().ct_eq(expected.as_bytes()))
}

impl EdgeKey {
    /// Parses a key as a person pastes it (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<EdgeKey, EdgeKeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(EdgeKeyError::Empty);
        }
        if text.ends_with('=') {
            return Err(EdgeKeyError::Padded);
        }
        let bytes = STANDARD_NO_PAD
            .decode(text)
            .map_err(|_| EdgeKeyError::NotBase64)?;
        let decoded = String::from_utf8(bytes).map_err(|_| EdgeKeyError::NotText)?;
        let parts: Vec<&str> = decoded.split('|').collect();
        if parts.len() != 4 {
            return Err(EdgeKeyError::PartCount(parts.len()));
        }
        for (part, name) in parts.iter().zip(PART_NAMES) {
            if part.is_empty() {
                return Err(EdgeKeyError::EmptyPart(name));
            }
        }
        let endpoint_id = parts[3]
            .parse::<u64>()
            .map_err(|_| EdgeKeyError::EndpointId(parts[3].to_string()))?;
        Ok(EdgeKey {
            portainer_url: parts[0].to_string(),
            tunnel_addr: parts[1].to_string(),
            fingerprint: parts[2].to_string(),
            endpoint_id,
        })
    }

    /// The key's text form, with the current endpoint ID (as `GET /key`
    /// answers it).
    pub fn encode(&self) -> String {
        STANDARD_NO_PAD.encode(format!(
            "{}|{}|{}|{}",
            self.portainer_url, self.tunnel_addr, self.fingerprint, self.endpoint_id
        ))
    }

    /// A global key waits for Portainer to assign the endpoint ID.
    pub fn is_global(&self) -> bool {
        self.endpoint_id == 0
    }

    /// Whether the URL is plain HTTP (allowed, but worth a warning).
    pub fn is_insecure_url(&self) -> bool {
        !self.portainer_url.starts_with("https://")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(raw: &str) -> String {
        STANDARD_NO_PAD.encode(raw)
    }

    #[test]
    fn a_portainer_key_round_trips() {
        let text = encode("https://portainer.example:9443|portainer.example:8000|pZ1E2mtXiGl+o7Xdh1BRi0HqwbkYxH58DuaFhs6CQVg=|3");
        let key = EdgeKey::parse(&text).unwrap();
        assert_eq!(key.portainer_url, "https://portainer.example:9443");
        assert_eq!(key.tunnel_addr, "portainer.example:8000");
        assert_eq!(key.endpoint_id, 3);
        assert!(!key.is_global());
        assert_eq!(key.encode(), text);
        assert_eq!(EdgeKey::parse(&format!(" {text}\n")).unwrap(), key);
    }

    #[test]
    fn every_malformed_form_is_named() {
        let cases = [
            (String::new(), EdgeKeyError::Empty),
            (format!("{}=", encode("a|b|c|1")), EdgeKeyError::Padded),
            ("not base64!".to_string(), EdgeKeyError::NotBase64),
            (
                STANDARD_NO_PAD.encode([0xff, 0xfe, 0xfd]),
                EdgeKeyError::NotText,
            ),
            (encode("a|b|c"), EdgeKeyError::PartCount(3)),
            (encode("a|b|c|1|e"), EdgeKeyError::PartCount(5)),
            (
                encode("a||c|1"),
                EdgeKeyError::EmptyPart("tunnel server address"),
            ),
            (encode("a|b|c|"), EdgeKeyError::EmptyPart("endpoint ID")),
            (encode("a|b|c|x1"), EdgeKeyError::EndpointId("x1".into())),
            (encode("a|b|c|-1"), EdgeKeyError::EndpointId("-1".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(EdgeKey::parse(&text), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn peer_proofs_are_per_edge_id() {
        let proof = peer_proof("edge-a");
        assert!(is_peer_proof(&proof, "edge-a"));
        assert!(!is_peer_proof(&proof, "edge-b"));
        assert!(!is_peer_proof("", "edge-a"));
    }

    #[test]
    fn global_keys_and_plain_urls_are_recognised() {
        let key = EdgeKey::parse(&encode("http://p:9000|p:8000|aa:bb|0")).unwrap();
        assert!(key.is_global());
        assert!(key.is_insecure_url());
        let assigned = EdgeKey {
            endpoint_id: 12,
            ..key
        };
        assert_eq!(EdgeKey::parse(&assigned.encode()).unwrap().endpoint_id, 12);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = EdgeKey::parse(&text);
        }

        #[test]
        fn arbitrary_bytes_under_base64_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = EdgeKey::parse(&STANDARD_NO_PAD.encode(bytes));
        }

        #[test]
        fn valid_parts_round_trip(
            url in "[a-z:/.0-9]{1,40}",
            addr in "[a-z.0-9:]{1,30}",
            fp in "[A-Za-z0-9+/=:]{1,50}",
            id in any::<u64>(),
        ) {
            let key = EdgeKey { portainer_url: url, tunnel_addr: addr, fingerprint: fp, endpoint_id: id };
            prop_assert_eq!(EdgeKey::parse(&key.encode()).unwrap(), key);
        }
    }
}
