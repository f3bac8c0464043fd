//! serf's layer on memberlist: its messages travel as memberlist user
//! messages (one type byte, then msgpack), its tags as node metadata, and
//! its state in the user part of push-pull exchanges.

use std::collections::BTreeMap;

use super::messages::WireError;
use super::msgpack::Value;

pub const LEAVE: u8 = 0;
pub const JOIN: u8 = 1;
pub const PUSH_PULL: u8 = 2;

/// Metadata starting with this byte holds tags (serf protocol 3 and later).
const TAG_MAGIC: u8 = 0xff;
/// memberlist's limit on node metadata.
pub const META_MAX: usize = 512;

/// A join or leave intent, ordered by the sender's Lamport time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    Join { ltime: u64, node: String },
    Leave { ltime: u64, node: String },
}

/// serf's push-pull state: what berth keeps of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SerfState {
    pub ltime: u64,
    pub status_ltimes: BTreeMap<String, u64>,
    pub left_members: Vec<String>,
    pub event_ltime: u64,
    pub query_ltime: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerfMessage {
    Intent(Intent),
    /// User events, queries and the rest: berth takes no part in them.
    Other(u8),
}

fn ltime(record: &Value, name: &str) -> Result<u64, WireError> {
    match record.field(name) {
        None | Some(Value::Nil) => Ok(0),
        Some(value) => value
            .as_int()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| WireError::new(format!("{name} is not a Lamport time"))),
    }
}

fn text(value: Option<&Value>) -> Result<String, WireError> {
    let bytes = value.and_then(Value::as_bytes).unwrap_or_default();
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::new("a name is not UTF-8"))
}

impl Intent {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, record) = match self {
            Intent::Join { ltime, node } => (
                JOIN,
                Value::record(vec![
                    ("LTime", Value::uint(*ltime)),
                    ("Node", Value::str(node)),
                ]),
            ),
            Intent::Leave { ltime, node } => (
                LEAVE,
                Value::record(vec![
                    ("LTime", Value::uint(*ltime)),
                    ("Node", Value::str(node)),
                    ("Prune", Value::Bool(false)),
                ]),
            ),
        };
        let mut out = vec![kind];
        record.write(&mut out);
        out
    }

    pub fn node(&self) -> &str {
        match self {
            Intent::Join { node, .. } | Intent::Leave { node, .. } => node,
        }
    }
}

impl SerfMessage {
    /// # Errors
    /// An empty message, or an intent that does not decode.
    pub fn decode(message: &[u8]) -> Result<SerfMessage, WireError> {
        let Some((&kind, body)) = message.split_first() else {
            return Err(WireError::new("an empty serf message"));
        };
        if kind != JOIN && kind != LEAVE {
            return Ok(SerfMessage::Other(kind));
        }
        let (record, _) = Value::decode(body)?;
        let ltime = ltime(&record, "LTime")?;
        let node = text(record.field("Node"))?;
        Ok(SerfMessage::Intent(if kind == JOIN {
            Intent::Join { ltime, node }
        } else {
            Intent::Leave { ltime, node }
        }))
    }
}

impl SerfState {
    pub fn encode(&self) -> Vec<u8> {
        let record = Value::record(vec![
            ("LTime", Value::uint(self.ltime)),
            (
                "StatusLTimes",
                Value::Map(
                    self.status_ltimes
                        .iter()
                        .map(|(node, ltime)| (Value::str(node), Value::uint(*ltime)))
                        .collect(),
                ),
            ),
            (
                "LeftMembers",
                Value::Array(self.left_members.iter().map(|n| Value::str(n)).collect()),
            ),
            ("EventLTime", Value::uint(self.event_ltime)),
            ("Events", Value::Array(Vec::new())),
            ("QueryLTime", Value::uint(self.query_ltime)),
        ]);
        let mut out = vec![PUSH_PULL];
        record.write(&mut out);
        out
    }

    /// # Errors
    /// Not serf's push-pull state, or fields of the wrong kind.
    pub fn decode(state: &[u8]) -> Result<SerfState, WireError> {
        match state.split_first() {
            Some((&PUSH_PULL, body)) => {
                let (record, _) = Value::decode(body)?;
                let mut decoded = SerfState {
                    ltime: ltime(&record, "LTime")?,
                    event_ltime: ltime(&record, "EventLTime")?,
                    query_ltime: ltime(&record, "QueryLTime")?,
                    ..SerfState::default()
                };
                if let Some(Value::Map(entries)) = record.field("StatusLTimes") {
                    for (node, time) in entries {
                        let time = time.as_int().and_then(|n| u64::try_from(n).ok());
                        decoded
                            .status_ltimes
                            .insert(text(Some(node))?, time.unwrap_or(0));
                    }
                }
                if let Some(Value::Array(names)) = record.field("LeftMembers") {
                    for name in names {
                        decoded.left_members.push(text(Some(name))?);
                    }
                }
                Ok(decoded)
            }
            _ => Err(WireError::new("not serf's push-pull state")),
        }
    }
}

/// Tags as serf encodes them into node metadata.
///
/// # Errors
/// When they do not fit memberlist's 512 bytes.
pub fn encode_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<u8>, String> {
    let map = Value::Map(
        tags.into_iter()
            .map(|(key, value)| (Value::str(key), Value::str(value)))
            .collect(),
    );
    let mut out = vec![TAG_MAGIC];
    map.write(&mut out);
    if out.len() > META_MAX {
        return Err(format!(
            "the tags take {} bytes; gossip carries at most {META_MAX}",
            out.len()
        ));
    }
    Ok(out)
}

/// Tags from node metadata; metadata of serf protocol 2 (a bare role) or
/// that does not decode gives no tags.
pub fn decode_tags(meta: &[u8]) -> Vec<(String, String)> {
    let Some((&TAG_MAGIC, body)) = meta.split_first() else {
        return Vec::new();
    };
    let Ok((Value::Map(entries), _)) = Value::decode(body) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(key, value)| {
            Some((
                String::from_utf8(key.as_bytes()?.to_vec()).ok()?,
                String::from_utf8(value.as_bytes()?.to_vec()).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_respect_the_limit() {
        let meta = encode_tags([("AgentPort", "9001"), ("NodeName", "n1")]).unwrap();
        assert_eq!(meta[0], 0xff);
        assert_eq!(
            decode_tags(&meta),
            vec![
                ("AgentPort".to_string(), "9001".to_string()),
                ("NodeName".to_string(), "n1".to_string())
            ]
        );
        let long = "x".repeat(600);
        assert!(encode_tags([("k", long.as_str())]).is_err());
        assert!(decode_tags(b"manager").is_empty());
        assert!(decode_tags(&[0xff, 0xc1]).is_empty());
    }

    #[test]
    fn intents_round_trip() {
        for intent in [
            Intent::Join {
                ltime: 5,
                node: "a".into(),
            },
            Intent::Leave {
                ltime: 6,
                node: "b".into(),
            },
        ] {
            assert_eq!(
                SerfMessage::decode(&intent.encode()).unwrap(),
                SerfMessage::Intent(intent)
            );
        }
        assert_eq!(
            SerfMessage::decode(&[3, 0x80]).unwrap(),
            SerfMessage::Other(3)
        );
        assert!(SerfMessage::decode(&[]).is_err());
    }

    #[test]
    fn push_pull_state_round_trips() {
        let state = SerfState {
            ltime: 9,
            status_ltimes: [("a".to_string(), 3), ("b".to_string(), 4)].into(),
            left_members: vec!["b".into()],
            event_ltime: 1,
            query_ltime: 2,
        };
        assert_eq!(SerfState::decode(&state.encode()).unwrap(), state);
        assert!(SerfState::decode(&[1, 0x80]).is_err());
    }
}
