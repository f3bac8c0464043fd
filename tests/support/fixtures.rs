//! Recorded engine answers (`fixtures/engine-<version>/*.http`, written by
//! `scripts/record-fixtures <version>` for each request of
//! `fixtures/engine-requests`).

use std::path::PathBuf;

/// One recorded answer.
#[derive(Debug, Clone)]
pub struct RecordedAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the recorded body is JSON")
    }
}

/// The engines whose answers are recorded: Debian 12's docker.io and
/// Debian 13's.
pub const ENGINES: [&str; 2] = ["20.10", "26.1"];

pub fn fixture_dir(engine: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/engine-{engine}"))
}

/// Loads the 20.10 engine's `<name>.http`.
pub fn load(name: &str) -> RecordedAnswer {
    load_from(ENGINES[0], name)
}

/// Loads `engine`'s `<name>.http`: a status line, headers, a blank line,
/// the body.
pub fn load_from(engine: &str, name: &str) -> RecordedAnswer {
    let path = fixture_dir(engine).join(format!("{name}.http"));
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let split = text
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("{} has no blank line after the headers", path.display()));
    let head = std::str::from_utf8(&text[..split]).expect("headers are text");
    let body = text[split + 2..].to_vec();
    let mut lines = head.lines();
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    RecordedAnswer {
        status,
        headers,
        body,
    }
}

/// The `(name, method, path)` lines of `fixtures/engine-requests`.
pub fn recorded_requests() -> Vec<(String, String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/engine-requests");
    let text = std::fs::read_to_string(path).expect("the requests list");
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut parts = line.split_whitespace();
            let mut next = || parts.next().expect("name method path").to_string();
            (next(), next(), next())
        })
        .collect()
}

/// A signature test vector (`fixtures/signatures/vectors.tsv`, made by openssl).
#[derive(Debug, Clone)]
pub struct SignatureVector {
    pub public_key: String,
    pub signature: String,
    pub message: String,
}

impl SignatureVector {
    /// Sets the two signature headers as Portainer sends them.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        headers.insert(
            "x-portaineragent-publickey",
            self.public_key.parse().unwrap(),
        );
        headers.insert(
            "x-portaineragent-signature",
            self.signature.parse().unwrap(),
        );
    }
}

pub fn signature_vector(name: &str) -> SignatureVector {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/signatures/vectors.tsv");
    let text = std::fs::read_to_string(path).expect("the signature vectors");
    let line = text
        .lines()
        .find(|line| line.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("no signature vector {name}"));
    let fields: Vec<&str> = line.split('\t').collect();
    SignatureVector {
        public_key: fields[1].to_string(),
        signature: fields[2].to_string(),
        message: fields[3].to_string(),
    }
}

/// The identity the tests sign with, as Portainer would.
pub fn portainer_identity() -> SignatureVector {
    signature_vector("p256-a-good")
}
