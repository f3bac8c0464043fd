//! memberlist's messages (protocol 2, as HashiCorp memberlist 0.1–0.2
//! speaks it): one type byte, then the message as a msgpack map. Packets
//! (UDP) may wrap messages in a CRC, an LZW compression or a compound of
//! several; streams (TCP) carry push-pull exchanges, pings and user
//! messages.

use std::fmt;
use std::net::IpAddr;

use super::msgpack::{DecodeError, Value};

pub const PING: u8 = 0;
pub const INDIRECT_PING: u8 = 1;
pub const ACK: u8 = 2;
pub const SUSPECT: u8 = 3;
pub const ALIVE: u8 = 4;
pub const DEAD: u8 = 5;
pub const PUSH_PULL: u8 = 6;
pub const COMPOUND: u8 = 7;
pub const USER: u8 = 8;
pub const COMPRESS: u8 = 9;
pub const ENCRYPT: u8 = 10;
pub const NACK: u8 = 11;
pub const HAS_CRC: u8 = 12;
pub const ERR: u8 = 13;

/// Compression and compound wrappers nest no deeper than this.
const MAX_WRAPPING: usize = 4;
/// What a compressed payload may expand to (memberlist's state limit).
pub const MAX_EXPANDED: usize = 20 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub message: String,
    /// More input could complete the message (streams only).
    pub truncated: bool,
}

impl WireError {
    pub fn new(message: impl Into<String>) -> Self {
        WireError {
            message: message.into(),
            truncated: false,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

impl From<DecodeError> for WireError {
    fn from(error: DecodeError) -> Self {
        WireError {
            message: error.to_string(),
            truncated: error.truncated,
        }
    }
}

/// The six version bytes every node announces: memberlist's min, max and
/// current protocol, then the delegate's (serf's). berth announces what Go
/// serf 0.8–0.9 with its default protocol 4 announces.
pub const VERSIONS: [u8; 6] = [1, 5, 2, 2, 5, 4];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub seq: u32,
    /// The node the sender means to reach; empty means any.
    pub node: String,
    pub source: Option<(IpAddr, u16, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectPing {
    pub seq: u32,
    pub target: IpAddr,
    pub port: u16,
    pub node: String,
    pub nack: bool,
    pub source: Option<(IpAddr, u16, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    pub incarnation: u32,
    pub node: String,
    pub addr: IpAddr,
    pub port: u16,
    pub meta: Vec<u8>,
    pub versions: [u8; 6],
}

/// `suspect` and `dead` have the same fields; `from == node` on a `dead`
/// means the node left on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accusation {
    pub incarnation: u32,
    pub node: String,
    pub from: String,
}

/// A node as a push-pull exchange carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNode {
    pub alive: Alive,
    pub state: NodeState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl NodeState {
    fn code(self) -> u8 {
        match self {
            NodeState::Alive => 0,
            NodeState::Suspect => 1,
            NodeState::Dead => 2,
            NodeState::Left => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping(Ping),
    IndirectPing(IndirectPing),
    Ack {
        seq: u32,
        payload: Vec<u8>,
    },
    Nack {
        seq: u32,
    },
    Suspect(Accusation),
    Alive(Alive),
    Dead(Accusation),
    /// The delegate's (serf's) message.
    User(Vec<u8>),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPull {
    pub join: bool,
    pub nodes: Vec<PushNode>,
    /// The delegate's (serf's) state.
    pub user_state: Vec<u8>,
}

/// What a stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    PushPull(PushPull),
    Ping(Ping),
    Ack { seq: u32 },
    User(Vec<u8>),
    Error(String),
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn ip_from(bytes: &[u8]) -> Result<IpAddr, WireError> {
    match bytes.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default())),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default());
            Ok(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        n => Err(WireError::new(format!("an address of {n} bytes"))),
    }
}

fn int<T: TryFrom<i128>>(record: &Value, name: &str) -> Result<T, WireError> {
    match record.field(name) {
        None | Some(Value::Nil) => T::try_from(0).map_err(|_| WireError::new("zero")),
        Some(value) => value
            .as_int()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| WireError::new(format!("{name} is not a fitting integer"))),
    }
}

fn bytes(record: &Value, name: &str) -> Result<Vec<u8>, WireError> {
    match record.field(name) {
        None => Ok(Vec::new()),
        Some(value) => value
            .as_bytes()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| WireError::new(format!("{name} is not a string"))),
    }
}

fn text(record: &Value, name: &str) -> Result<String, WireError> {
    String::from_utf8(bytes(record, name)?)
        .map_err(|_| WireError::new(format!("{name} is not UTF-8")))
}

fn flag(record: &Value, name: &str) -> bool {
    matches!(record.field(name), Some(Value::Bool(true)))
}

fn source(record: &Value) -> Result<Option<(IpAddr, u16, String)>, WireError> {
    let addr = bytes(record, "SourceAddr")?;
    let port: u16 = int(record, "SourcePort")?;
    if addr.is_empty() || port == 0 {
        return Ok(None);
    }
    Ok(Some((ip_from(&addr)?, port, text(record, "SourceNode")?)))
}

fn source_fields(source: &Option<(IpAddr, u16, String)>, fields: &mut Vec<(&str, Value)>) {
    if let Some((addr, port, node)) = source {
        fields.push(("SourceAddr", Value::Raw(ip_bytes(*addr))));
        fields.push(("SourcePort", Value::uint(*port)));
        fields.push(("SourceNode", Value::str(node)));
    }
}

fn framed(kind: u8, value: &Value) -> Vec<u8> {
    let mut out = vec![kind];
    value.write(&mut out);
    out
}

impl Alive {
    fn to_value(&self, state: Option<NodeState>) -> Value {
        let mut fields = vec![
            ("Incarnation", Value::uint(self.incarnation)),
            (
                if state.is_some() { "Name" } else { "Node" },
                Value::str(&self.node),
            ),
            ("Addr", Value::Raw(ip_bytes(self.addr))),
            ("Port", Value::uint(self.port)),
            ("Meta", Value::Raw(self.meta.clone())),
        ];
        if let Some(state) = state {
            fields.push(("State", Value::uint(state.code())));
        }
        fields.push(("Vsn", Value::Raw(self.versions.to_vec())));
        Value::record(fields)
    }

    fn from_value(record: &Value, name_field: &str) -> Result<Self, WireError> {
        let versions = bytes(record, "Vsn")?;
        let versions = if versions.is_empty() {
            // Protocol 1 nodes sent none; memberlist assumes its own.
            VERSIONS
        } else {
            <[u8; 6]>::try_from(versions.as_slice())
                .map_err(|_| WireError::new("Vsn is not six bytes"))?
        };
        Ok(Alive {
            incarnation: int(record, "Incarnation")?,
            node: text(record, name_field)?,
            addr: ip_from(&bytes(record, "Addr")?)?,
            port: int(record, "Port")?,
            meta: bytes(record, "Meta")?,
            versions,
        })
    }
}

impl Accusation {
    fn to_value(&self) -> Value {
        Value::record(vec![
            ("Incarnation", Value::uint(self.incarnation)),
            ("Node", Value::str(&self.node)),
            ("From", Value::str(&self.from)),
        ])
    }

    fn from_value(record: &Value) -> Result<Self, WireError> {
        Ok(Accusation {
            incarnation: int(record, "Incarnation")?,
            node: text(record, "Node")?,
            from: text(record, "From")?,
        })
    }
}

impl Ping {
    fn to_value(&self) -> Value {
        let mut fields = vec![
            ("SeqNo", Value::uint(self.seq)),
            ("Node", Value::str(&self.node)),
        ];
        source_fields(&self.source, &mut fields);
        Value::record(fields)
    }

    fn from_value(record: &Value) -> Result<Self, WireError> {
        Ok(Ping {
            seq: int(record, "SeqNo")?,
            node: text(record, "Node")?,
            source: source(record)?,
        })
    }
}

/// A ping to whichever node listens (`berth doctor`), padded with a field
/// memberlist does not know and skips, so the packet is `size` bytes long
/// (or as short as a ping can be): a large one that gets no ack while a
/// small one does reveals a path that drops big datagrams (an MTU problem).
pub fn probe_ping(seq: u32, size: usize) -> Vec<u8> {
    let plain = Message::Ping(Ping {
        seq,
        node: String::new(),
        source: None,
    })
    .encode();
    // The padding field costs its name and a bin32 header: 12 bytes.
    let pad = size.saturating_sub(plain.len() + 12);
    if pad == 0 {
        return plain;
    }
    framed(
        PING,
        &Value::record(vec![
            ("SeqNo", Value::uint(seq)),
            ("Node", Value::str("")),
            ("Pad", Value::Raw(vec![0; pad])),
        ]),
    )
}

impl Message {
    /// The message with its type byte, ready for a packet or a compound.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Ping(ping) => framed(PING, &ping.to_value()),
            Message::IndirectPing(ind) => {
                let mut fields = vec![
                    ("SeqNo", Value::uint(ind.seq)),
                    ("Target", Value::Raw(ip_bytes(ind.target))),
                    ("Port", Value::uint(ind.port)),
                    ("Node", Value::str(&ind.node)),
                    ("Nack", Value::Bool(ind.nack)),
                ];
                source_fields(&ind.source, &mut fields);
                framed(INDIRECT_PING, &Value::record(fields))
            }
            Message::Ack { seq, payload } => framed(
                ACK,
                &Value::record(vec![
                    ("SeqNo", Value::uint(*seq)),
                    ("Payload", Value::Raw(payload.clone())),
                ]),
            ),
            Message::Nack { seq } => {
                framed(NACK, &Value::record(vec![("SeqNo", Value::uint(*seq))]))
            }
            Message::Suspect(accusation) => framed(SUSPECT, &accusation.to_value()),
            Message::Dead(accusation) => framed(DEAD, &accusation.to_value()),
            Message::Alive(alive) => framed(ALIVE, &alive.to_value(None)),
            Message::User(payload) => {
                let mut out = Vec::with_capacity(payload.len() + 1);
                out.push(USER);
                out.extend_from_slice(payload);
                out
            }
            Message::Error(text) => framed(ERR, &Value::record(vec![("Error", Value::str(text))])),
        }
    }

    fn decode_one(kind: u8, body: &[u8]) -> Result<Message, WireError> {
        if kind == USER {
            return Ok(Message::User(body.to_vec()));
        }
        let (record, _) = Value::decode(body)?;
        Ok(match kind {
            PING => Message::Ping(Ping::from_value(&record)?),
            INDIRECT_PING => Message::IndirectPing(IndirectPing {
                seq: int(&record, "SeqNo")?,
                target: ip_from(&bytes(&record, "Target")?)?,
                port: int(&record, "Port")?,
                node: text(&record, "Node")?,
                nack: flag(&record, "Nack"),
                source: source(&record)?,
            }),
            ACK => Message::Ack {
                seq: int(&record, "SeqNo")?,
                payload: bytes(&record, "Payload")?,
            },
            NACK => Message::Nack {
                seq: int(&record, "SeqNo")?,
            },
            SUSPECT => Message::Suspect(Accusation::from_value(&record)?),
            DEAD => Message::Dead(Accusation::from_value(&record)?),
            ALIVE => Message::Alive(Alive::from_value(&record, "Node")?),
            ERR => Message::Error(text(&record, "Error")?),
            other => return Err(WireError::new(format!("message type {other} in a packet"))),
        })
    }
}

/// Several messages in one packet, as memberlist's gossip sends them.
/// At most 255 parts of at most 64 KiB each.
pub fn compound(parts: &[Vec<u8>]) -> Vec<u8> {
    let parts = &parts[..parts.len().min(255)];
    let mut out = vec![COMPOUND, parts.len() as u8];
    for part in parts {
        out.extend_from_slice(&(part.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    }
    for part in parts {
        out.extend_from_slice(&part[..part.len().min(usize::from(u16::MAX))]);
    }
    out
}

/// Every message of a (decrypted) packet, with its CRC checked and its
/// compression and compounds unwrapped. A part that does not decode is
/// reported in the errors and the others are kept, as memberlist does.
pub fn decode_packet(packet: &[u8]) -> (Vec<Message>, Vec<WireError>) {
    let mut messages = Vec::new();
    let mut errors = Vec::new();
    unwrap_packet(packet, 0, &mut messages, &mut errors);
    (messages, errors)
}

fn unwrap_packet(
    packet: &[u8],
    depth: usize,
    messages: &mut Vec<Message>,
    errors: &mut Vec<WireError>,
) {
    if depth > MAX_WRAPPING {
        errors.push(WireError::new("wrapped too deeply"));
        return;
    }
    let Some((&kind, body)) = packet.split_first() else {
        errors.push(WireError::new("an empty packet"));
        return;
    };
    match kind {
        HAS_CRC => {
            if body.len() < 4 {
                errors.push(WireError::new("a CRC packet without its CRC"));
                return;
            }
            let (crc, rest) = body.split_at(4);
            if crc32fast::hash(rest).to_be_bytes() != crc {
                errors.push(WireError::new("the packet's CRC does not match"));
                return;
            }
            unwrap_packet(rest, depth + 1, messages, errors);
        }
        COMPRESS => match decompress(body) {
            Ok(plain) => unwrap_packet(&plain, depth + 1, messages, errors),
            Err(error) => errors.push(error),
        },
        COMPOUND => match split_compound(body) {
            Ok((parts, truncated)) => {
                for part in parts {
                    unwrap_packet(part, depth + 1, messages, errors);
                }
                if truncated > 0 {
                    errors.push(WireError::new(format!(
                        "{truncated} parts of a compound were cut off"
                    )));
                }
            }
            Err(error) => errors.push(error),
        },
        _ => match Message::decode_one(kind, body) {
            Ok(message) => messages.push(message),
            Err(error) => errors.push(error),
        },
    }
}

fn split_compound(body: &[u8]) -> Result<(Vec<&[u8]>, usize), WireError> {
    let Some((&count, rest)) = body.split_first() else {
        return Err(WireError::new("a compound without its count"));
    };
    let count = usize::from(count);
    if rest.len() < count * 2 {
        return Err(WireError::new("a compound's lengths are cut off"));
    }
    let (lengths, mut rest) = rest.split_at(count * 2);
    let mut parts = Vec::with_capacity(count);
    for (index, pair) in lengths.chunks_exact(2).enumerate() {
        let len = usize::from(u16::from_be_bytes([pair[0], pair[1]]));
        if rest.len() < len {
            return Ok((parts, count - index));
        }
        let (part, after) = rest.split_at(len);
        parts.push(part);
        rest = after;
    }
    Ok((parts, 0))
}

/// Undoes memberlist's `compress` wrapper: a map of `Algo` (0, LZW) and
/// `Buf`, compressed as Go's `compress/lzw` writes it (LSB first, 8-bit
/// literals, which is GIF's variant).
fn decompress(body: &[u8]) -> Result<Vec<u8>, WireError> {
    let (record, _) = Value::decode(body)?;
    decompress_record(&record)
}

fn decompress_record(record: &Value) -> Result<Vec<u8>, WireError> {
    let algo: u8 = int(record, "Algo")?;
    if algo != 0 {
        return Err(WireError::new(format!("unknown compression {algo}")));
    }
    let compressed = bytes(record, "Buf")?;
    let mut decoder = weezl::decode::Decoder::new(weezl::BitOrder::Lsb, 8);
    let mut plain = Vec::new();
    let result = decoder.into_vec(&mut plain).decode(&compressed).status;
    result.map_err(|error| WireError::new(format!("LZW: {error}")))?;
    if plain.len() > MAX_EXPANDED {
        return Err(WireError::new("a compressed payload expands too far"));
    }
    Ok(plain)
}

impl PushPull {
    /// The whole stream message, type byte first.
    pub fn encode(&self) -> Vec<u8> {
        let header = Value::record(vec![
            ("Nodes", Value::uint(self.nodes.len() as u64)),
            ("UserStateLen", Value::uint(self.user_state.len() as u64)),
            ("Join", Value::Bool(self.join)),
        ]);
        let mut out = framed(PUSH_PULL, &header);
        for node in &self.nodes {
            node.alive.to_value(Some(node.state)).write(&mut out);
        }
        out.extend_from_slice(&self.user_state);
        out
    }
}

/// Encodes a ping or ack for a stream (TCP) exchange.
pub fn encode_stream_ack(seq: u32) -> Vec<u8> {
    Message::Ack {
        seq,
        payload: Vec::new(),
    }
    .encode()
}

/// Decodes one stream message from the front of `input` (decrypted
/// already). `Err` with `truncated` means: read more and try again.
pub fn decode_stream(input: &[u8]) -> Result<(StreamMessage, usize), WireError> {
    let Some((&kind, body)) = input.split_first() else {
        return Err(WireError {
            message: "nothing read".into(),
            truncated: true,
        });
    };
    if kind == COMPRESS {
        let (record, rest) = Value::decode(body)?;
        let plain = decompress_record(&record)?;
        let (message, _) = decode_stream(&plain).map_err(|mut error| {
            // The compressed payload is whole: nothing more can complete it.
            error.truncated = false;
            error
        })?;
        return Ok((message, input.len() - rest.len()));
    }
    let (header, mut rest) = Value::decode(body)?;
    let message = match kind {
        PUSH_PULL => {
            let count: u32 = int(&header, "Nodes")?;
            let user_len: u32 = int(&header, "UserStateLen")?;
            let mut nodes = Vec::new();
            for _ in 0..count {
                let (record, after) = Value::decode(rest)?;
                rest = after;
                let state = match int::<u8>(&record, "State")? {
                    0 => NodeState::Alive,
                    1 => NodeState::Suspect,
                    2 => NodeState::Dead,
                    // Left, and states of later versions, as left: the
                    // node is gone either way.
                    _ => NodeState::Left,
                };
                nodes.push(PushNode {
                    alive: Alive::from_value(&record, "Name")?,
                    state,
                });
            }
            let user_len = user_len as usize;
            if rest.len() < user_len {
                return Err(WireError {
                    message: "the user state is cut off".into(),
                    truncated: true,
                });
            }
            let (user_state, after) = rest.split_at(user_len);
            rest = after;
            StreamMessage::PushPull(PushPull {
                join: flag(&header, "Join"),
                nodes,
                user_state: user_state.to_vec(),
            })
        }
        PING => StreamMessage::Ping(Ping::from_value(&header)?),
        ACK => StreamMessage::Ack {
            seq: int(&header, "SeqNo")?,
        },
        USER => {
            let len: u32 = int(&header, "UserMsgLen")?;
            let len = len as usize;
            if rest.len() < len {
                return Err(WireError {
                    message: "the user message is cut off".into(),
                    truncated: true,
                });
            }
            let (payload, after) = rest.split_at(len);
            rest = after;
            StreamMessage::User(payload.to_vec())
        }
        ERR => StreamMessage::Error(text(&header, "Error")?),
        other => return Err(WireError::new(format!("message type {other} on a stream"))),
    };
    Ok((message, input.len() - rest.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive() -> Alive {
        Alive {
            incarnation: 3,
            node: "node-1".into(),
            addr: "127.0.0.2".parse().unwrap(),
            port: 7946,
            meta: vec![0xff, 0x80],
            versions: VERSIONS,
        }
    }

    #[test]
    fn packet_messages_round_trip() {
        let messages = vec![
            Message::Ping(Ping {
                seq: 9,
                node: "b".into(),
                source: Some(("127.0.0.1".parse().unwrap(), 7946, "a".into())),
            }),
            Message::IndirectPing(IndirectPing {
                seq: 10,
                target: "127.0.0.3".parse().unwrap(),
                port: 7000,
                node: "c".into(),
                nack: true,
                source: None,
            }),
            Message::Ack {
                seq: 9,
                payload: vec![1, 2],
            },
            Message::Nack { seq: 10 },
            Message::Alive(alive()),
            Message::Suspect(Accusation {
                incarnation: 1,
                node: "b".into(),
                from: "a".into(),
            }),
            Message::Dead(Accusation {
                incarnation: 1,
                node: "b".into(),
                from: "b".into(),
            }),
            Message::User(vec![1, 2, 3]),
        ];
        for message in &messages {
            let (decoded, errors) = decode_packet(&message.encode());
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(decoded, vec![message.clone()]);
        }
        let parts: Vec<_> = messages.iter().map(Message::encode).collect();
        let (decoded, errors) = decode_packet(&compound(&parts));
        assert!(errors.is_empty());
        assert_eq!(decoded, messages);
    }

    #[test]
    fn a_padded_probe_is_the_size_asked_and_still_a_ping() {
        for size in [0, 1200, 1400] {
            let packet = probe_ping(9, size);
            if size > 0 {
                assert!(
                    packet.len().abs_diff(size) <= 8,
                    "{} for {size}",
                    packet.len()
                );
            }
            let (messages, errors) = decode_packet(&packet);
            assert!(errors.is_empty(), "{errors:?}");
            assert!(matches!(
                &messages[..],
                [Message::Ping(Ping { seq: 9, .. })]
            ));
        }
    }

    #[test]
    fn a_bad_crc_is_refused_and_a_good_one_unwrapped() {
        let inner = Message::Nack { seq: 1 }.encode();
        let mut packet = vec![HAS_CRC];
        packet.extend_from_slice(&crc32fast::hash(&inner).to_be_bytes());
        packet.extend_from_slice(&inner);
        assert_eq!(decode_packet(&packet).0, vec![Message::Nack { seq: 1 }]);
        *packet.last_mut().unwrap() ^= 1;
        let (messages, errors) = decode_packet(&packet);
        assert!(messages.is_empty());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn a_cut_compound_keeps_its_whole_parts() {
        let parts = vec![
            Message::Nack { seq: 1 }.encode(),
            Message::Nack { seq: 2 }.encode(),
        ];
        let mut packet = compound(&parts);
        packet.truncate(packet.len() - 1);
        let (messages, errors) = decode_packet(&packet);
        assert_eq!(messages, vec![Message::Nack { seq: 1 }]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn push_pull_round_trips_and_reports_truncation() {
        let push = PushPull {
            join: true,
            nodes: vec![PushNode {
                alive: alive(),
                state: NodeState::Suspect,
            }],
            user_state: vec![2, 0x80],
        };
        let bytes = push.encode();
        let (decoded, used) = decode_stream(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(decoded, StreamMessage::PushPull(push));
        for cut in 0..bytes.len() {
            let error = decode_stream(&bytes[..cut]).unwrap_err();
            assert!(error.truncated, "cut at {cut}: {error}");
        }
    }

    #[test]
    fn hostile_packets_give_errors_not_panics() {
        for packet in [
            &[][..],
            &[COMPOUND],
            &[COMPOUND, 3, 0],
            &[HAS_CRC, 1],
            &[COMPRESS, 0x80],
            &[ALIVE, 0x81, 0xa3, b'V', b's', b'n', 0xa1, 1],
            &[99, 0x80],
        ] {
            let (messages, errors) = decode_packet(packet);
            assert!(messages.is_empty());
            assert!(!errors.is_empty(), "{packet:?}");
        }
    }
}
