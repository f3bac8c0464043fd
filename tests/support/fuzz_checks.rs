//! The properties the fuzz targets (`fuzz/`) check, shared with
//! `tests/fuzz_regressions.rs`, which replays every input a fuzz run ever
//! found (`fixtures/fuzz/<target>/`). Each function panics only when a
//! property fails.

use std::sync::OnceLock;

use berth_domain::browse::{check_volume_id, confine, confine_host_path, parse_range};
use berth_domain::edge::key::EdgeKey;
use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_domain::routing::{self, BrowseOp, LocalView, RequestHead};
use berth_domain::signature::{Check, Credentials, SignaturePolicy};

/// Splits fuzz input into `n` text fields at NUL bytes.
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let mut parts: Vec<String> = data
        .splitn(n, |b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.resize(n, String::new());
    parts
}

/// Routing never panics, and stripping the version keeps the rest.
pub fn routing(data: &[u8]) {
    let parts = fields(data, 4);
    let flags = data.first().copied().unwrap_or(0);
    let facts = EngineFacts {
        node_name: parts[3].clone(),
        role: match flags % 4 {
            0 => SwarmRole::Standalone,
            1 => SwarmRole::Worker,
            2 => SwarmRole::Manager { leader: false },
            _ => SwarmRole::Manager { leader: true },
        },
        node_id: String::new(),
        engine_version: String::new(),
    };
    let head = RequestHead {
        method: &parts[0],
        path: &parts[1],
        target: Some(parts[2].as_str()).filter(|t| !t.is_empty()),
        manager_operation: flags & 4 != 0,
        forwarded: flags & 8 != 0,
    };
    let _ = routing::route(
        &head,
        LocalView {
            facts: &facts,
            clustered: flags & 16 != 0,
        },
    );
    // The bare version (`/v1.41`) routes as the root; anything else keeps
    // the rest of the path as it was.
    let stripped = routing::strip_version_prefix(&parts[1]);
    assert!(
        stripped == "/" || parts[1].ends_with(stripped),
        "{stripped:?}"
    );
}

/// A key that parses encodes back to one that parses to the same key.
pub fn edge_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = EdgeKey::parse(&text) {
        assert_eq!(EdgeKey::parse(&key.encode()), Ok(key));
    }
}

/// Arbitrary signature headers never panic and never pass without the
/// expensive verification.
pub fn signature_headers(data: &[u8]) {
    let parts = fields(data, 2);
    let policy = SignaturePolicy::new(None, [7; 32], 16);
    let credentials = Credentials {
        public_key: Some(parts[0].as_str()).filter(|p| !p.is_empty()),
        signature: Some(parts[1].as_str()).filter(|s| !s.is_empty()),
    };
    match policy.check(credentials) {
        Check::Accepted => panic!("unverified headers were accepted"),
        Check::Rejected(_) => {}
        Check::Verify(pending) => {
            let _ = pending.verify();
        }
    }
}

/// Confined paths hold only plain components; ranges stay in the file.
pub fn browse_paths(data: &[u8]) {
    let parts = fields(data, 3);
    for confined in [confine(&parts[0]), confine_host_path(&parts[0])]
        .into_iter()
        .flatten()
    {
        for component in confined.components() {
            assert!(!component.is_empty() && component != "." && component != "..");
            assert!(!component.contains(['/', '\\', '\0']), "{component:?}");
        }
    }
    let _ = check_volume_id(&parts[1]);
    let size = u64::from(data.len() as u32);
    if let Ok(Some(range)) = parse_range(Some(&parts[2]), size) {
        assert!(range.first <= range.last && range.last < size, "{range:?}");
    }
}

/// A multipart upload body, whatever its bytes, ends in an answer.
pub fn multipart_upload(data: &[u8]) {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    });
    let request = http::Request::post("/browse/put?volumeID=data")
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(berth_ports::full_body(data.to_vec()))
        .unwrap();
    let answer = runtime.block_on(berth::browse::browse(
        &SinkFiles,
        BrowseOp::Put,
        None,
        request,
    ));
    if let Err(error) = answer {
        assert!((400..600).contains(&error.status()), "{error:?}");
    }
}

/// A `Files` port that takes uploads and forgets them.
#[derive(Clone)]
struct SinkFiles;

impl berth_ports::Files for SinkFiles {
    async fn list(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
    ) -> Result<Vec<berth_domain::browse::FileEntry>, berth_ports::FilesError> {
        Err(berth_ports::FilesError::NotFound(String::new()))
    }

    async fn read(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
        _: Option<berth_domain::browse::ByteRange>,
    ) -> Result<berth_ports::FileRead, berth_ports::FilesError> {
        Err(berth_ports::FilesError::NotFound(String::new()))
    }

    async fn size(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
    ) -> Result<u64, berth_ports::FilesError> {
        Err(berth_ports::FilesError::NotFound(String::new()))
    }

    async fn delete(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
    ) -> Result<(), berth_ports::FilesError> {
        Err(berth_ports::FilesError::NotFound(String::new()))
    }

    async fn write(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
        name: &str,
        body: berth_ports::Body,
    ) -> Result<u64, berth_ports::FilesError> {
        use http_body_util::BodyExt;
        assert!(
            !name.contains('/') && name != ".." && !name.is_empty(),
            "{name:?}"
        );
        let bytes = body
            .collect()
            .await
            .map_err(|e| berth_ports::FilesError::Other(e.to_string()))?
            .to_bytes();
        Ok(bytes.len() as u64)
    }

    async fn rename(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
        _: &berth_domain::browse::ConfinedPath,
    ) -> Result<(), berth_ports::FilesError> {
        Err(berth_ports::FilesError::NotFound(String::new()))
    }

    async fn place(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
        _: &berth_domain::browse::ConfinedPath,
        _: &str,
    ) -> Result<(), berth_ports::FilesError> {
        Ok(())
    }

    async fn make_folders(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
    ) -> Result<(), berth_ports::FilesError> {
        Ok(())
    }

    async fn set_mode(
        &self,
        _: &berth_domain::browse::BrowseRoot,
        _: &berth_domain::browse::ConfinedPath,
        _: u32,
    ) -> Result<(), berth_ports::FilesError> {
        Ok(())
    }
}

/// Whatever arrives on the gossip port: decoding never panics, what
/// decodes re-encodes to the same message, and the membership view takes
/// every message without panicking.
pub fn gossip_wire(data: &[u8]) {
    use berth_domain::gossip::keyring::Keyring;
    use berth_domain::gossip::messages::{
        decode_packet, decode_stream, Alive, Message, StreamMessage, VERSIONS,
    };
    use berth_domain::gossip::serf::{decode_tags, SerfMessage, SerfState};
    use berth_domain::gossip::state::{Gossip, Settings};

    let me = Alive {
        incarnation: 1,
        node: "me".into(),
        addr: std::net::IpAddr::from([127, 0, 0, 1]),
        port: 7946,
        meta: Vec::new(),
        versions: VERSIONS,
    };
    let mut view = Gossip::new(me, Settings::agent(1000), 0);
    let (messages, _) = decode_packet(data);
    for (at, message) in messages.into_iter().enumerate() {
        let (again, errors) = decode_packet(&message.encode());
        assert!(
            errors.is_empty(),
            "{message:?} re-encoded badly: {errors:?}"
        );
        assert_eq!(again, vec![message.clone()]);
        let now = at as u64 * 700;
        match message {
            Message::Alive(alive) => view.on_alive(alive, now),
            Message::Suspect(accusation) => view.on_suspect(accusation, now),
            Message::Dead(accusation) => view.on_dead(accusation, now),
            Message::User(user) => {
                if let Ok(SerfMessage::Intent(intent)) = SerfMessage::decode(&user) {
                    view.on_serf_intent(intent);
                }
            }
            _ => {}
        }
        view.tick(now);
        let _ = view.next_probe();
        let _ = view.take_broadcasts(1400);
    }
    if let Ok((message, used)) = decode_stream(data) {
        assert!(used <= data.len());
        if let StreamMessage::PushPull(push) = message {
            view.merge(push, 1);
            let _ = view.push_pull(false).encode();
        }
    }
    let _ = SerfState::decode(data);
    let _ = decode_tags(data);
    let keyring = Keyring::new(vec![vec![7; 16]]).expect("a 16-byte key");
    assert!(keyring.open(data, &[]).is_err() || data.len() >= 29);
}
