//! berth's memberlist/serf codec against what HashiCorp's Go code put on
//! the wire: `fixtures/gossip/serf-<version>/*.jsonl`, recorded by
//! `scripts/record-gossip <version>` (Go serf members joining, one crashing,
//! one changing a tag and leaving, the first logging every packet and
//! stream it read or wrote), with the Go agent's serf 0.8.3 / memberlist
//! 0.1.4 and with Debian 12's serf 0.9.4 / memberlist 0.2.2.

use std::collections::BTreeSet;

use berth_domain::gossip::keyring::Keyring;
use berth_domain::gossip::messages::{
    decode_packet, decode_stream, Message, NodeState, StreamMessage, ENCRYPT,
};
use berth_domain::gossip::serf::{decode_tags, Intent, SerfMessage, SerfState};

const KEY: &str = "cg8StVXbQJ0gPvMd9o7yrg==";

struct Record {
    kind: String,
    bytes: Vec<u8>,
}

/// The recordings kept: the Go agent's serf, and the one berth was first
/// checked against.
const VERSIONS: [&str; 2] = ["0.8.3", "0.9.4"];

fn records(version: &str, name: &str) -> Vec<Record> {
    let path = format!(
        "{}/fixtures/gossip/serf-{version}/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{path}: {error}"))
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = value["hex"].as_str().unwrap();
            let bytes = (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                .collect();
            Record {
                kind: value["kind"].as_str().unwrap().to_string(),
                bytes,
            }
        })
        .filter(|record| !record.bytes.is_empty())
        .collect()
}

/// What the recording holds, by kind, after every wrapper is undone.
#[derive(Default)]
struct Seen {
    kinds: BTreeSet<&'static str>,
    intents: Vec<Intent>,
    tags: BTreeSet<Vec<(String, String)>>,
    push_pulls: Vec<(usize, SerfState)>,
}

impl Seen {
    fn message(&mut self, message: Message) {
        self.kinds.insert(match &message {
            Message::Ping(_) => "ping",
            Message::IndirectPing(_) => "indirect-ping",
            Message::Ack { .. } => "ack",
            Message::Nack { .. } => "nack",
            Message::Suspect(_) => "suspect",
            Message::Alive(_) => "alive",
            Message::Dead(dead) if dead.node == dead.from => "dead-left",
            // memberlist before 0.2 says nothing of who declares a leaving
            // node dead; serf's leave intent alone makes it left.
            Message::Dead(dead) if dead.from.is_empty() => "dead-unattributed",
            Message::Dead(_) => "dead",
            Message::User(_) => "user",
            Message::Error(_) => "error",
        });
        match message {
            Message::Alive(alive) => {
                self.tags.insert(decode_tags(&alive.meta));
            }
            Message::User(user) => {
                if let Ok(SerfMessage::Intent(intent)) = SerfMessage::decode(&user) {
                    self.intents.push(intent);
                }
            }
            _ => {}
        }
    }

    fn stream(&mut self, plain: &[u8]) {
        let (message, used) = decode_stream(plain).unwrap();
        assert_eq!(used, plain.len(), "the whole stream is one message");
        match message {
            StreamMessage::PushPull(push) => {
                for node in &push.nodes {
                    assert_eq!(node.state, NodeState::Alive);
                    self.tags.insert(decode_tags(&node.alive.meta));
                }
                let state = SerfState::decode(&push.user_state).unwrap();
                self.push_pulls.push((push.nodes.len(), state));
            }
            other => panic!("unexpected stream message {other:?}"),
        }
    }
}

fn read(version: &str, name: &str, keyring: Option<&Keyring>) -> Seen {
    let mut seen = Seen::default();
    for record in records(version, name) {
        match (record.kind.as_str(), keyring) {
            ("packet", None) => {
                let (messages, errors) = decode_packet(&record.bytes);
                assert!(errors.is_empty(), "{errors:?}");
                messages.into_iter().for_each(|m| seen.message(m));
            }
            ("packet", Some(keyring)) => {
                assert_eq!(record.bytes[0], 1, "encryption version 1");
                let plain = keyring.open(&record.bytes, &[]).unwrap();
                let (messages, errors) = decode_packet(&plain);
                assert!(errors.is_empty(), "{errors:?}");
                messages.into_iter().for_each(|m| seen.message(m));
            }
            ("stream", None) => seen.stream(&record.bytes),
            ("stream", Some(keyring)) => {
                assert_eq!(record.bytes[0], ENCRYPT);
                let (header, sealed) = record.bytes.split_at(5);
                let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
                assert_eq!(len, sealed.len());
                let plain = keyring.open(sealed, header).unwrap();
                seen.stream(&plain);
            }
            (other, _) => panic!("unknown record kind {other}"),
        }
    }
    seen
}

fn assert_the_whole_story(version: &str, seen: &Seen) {
    eprintln!("serf {version}: {:?}", seen.kinds);
    let leave = if version == "0.8.3" {
        "dead-unattributed"
    } else {
        "dead-left"
    };
    for kind in [
        "ping",
        "indirect-ping",
        "ack",
        "nack",
        "alive",
        "suspect",
        "dead",
        "user",
        leave,
    ] {
        assert!(
            seen.kinds.contains(kind),
            "serf {version}: no {kind} in {:?}",
            seen.kinds
        );
    }
    assert!(seen
        .intents
        .iter()
        .any(|i| matches!(i, Intent::Join { node, .. } if node == "b")));
    assert!(seen
        .intents
        .iter()
        .any(|i| matches!(i, Intent::Leave { node, .. } if node == "b")));
    let tagged = |key: &str| {
        seen.tags
            .iter()
            .any(|tags| tags.iter().any(|(k, _)| k == key))
    };
    assert!(tagged("AgentPort") && tagged("EdgeKeySet"));
    let (nodes, state) = seen.push_pulls.first().expect("a push-pull exchange");
    assert!(*nodes >= 1);
    assert!(state.ltime > 0);
}

#[test]
fn go_serf_packets_and_streams_decode() {
    for version in VERSIONS {
        assert_the_whole_story(version, &read(version, "plain", None));
    }
}

#[test]
fn go_serf_encrypted_packets_and_streams_open_and_decode() {
    let keyring = Keyring::from_base64(KEY).unwrap();
    let wrong = Keyring::new(vec![vec![0; 16]]).unwrap();
    for version in VERSIONS {
        assert_the_whole_story(version, &read(version, "encrypted", Some(&keyring)));
        let record = records(version, "encrypted")
            .into_iter()
            .find(|r| r.kind == "packet")
            .unwrap();
        assert!(wrong.open(&record.bytes, &[]).is_err());
    }
}
