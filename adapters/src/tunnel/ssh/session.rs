//! An authenticated SSH connection: one task reads packets, one task (the
//! session loop) owns the write side, the channels and key re-exchanges.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use super::channel::{self, Channel, ChannelEvent, ToLocal, LOCAL_MAX_PACKET, LOCAL_WINDOW};
use super::handshake::{
    self, disconnect_reason, our_kexinit, Rekey, MSG_DEBUG, MSG_DISCONNECT, MSG_IGNORE,
    MSG_UNIMPLEMENTED,
};
use super::kex::{KexError, MSG_KEXINIT, MSG_KEX_ECDH_REPLY, MSG_NEWKEYS};
use super::transport::Sealing;
use super::wire::{Decoder, Encoder, Malformed};

const MSG_GLOBAL_REQUEST: u8 = 80;
const MSG_REQUEST_SUCCESS: u8 = 81;
const MSG_REQUEST_FAILURE: u8 = 82;
const MSG_CHANNEL_OPEN: u8 = 90;
const MSG_CHANNEL_OPEN_CONFIRMATION: u8 = 91;
const MSG_CHANNEL_OPEN_FAILURE: u8 = 92;
const MSG_CHANNEL_WINDOW_ADJUST: u8 = 93;
const MSG_CHANNEL_DATA: u8 = 94;
const MSG_CHANNEL_EXTENDED_DATA: u8 = 95;
const MSG_CHANNEL_EOF: u8 = 96;
const MSG_CHANNEL_CLOSE: u8 = 97;
const MSG_CHANNEL_REQUEST: u8 = 98;
const MSG_CHANNEL_FAILURE: u8 = 100;

const OPEN_ADMINISTRATIVELY_PROHIBITED: u32 = 1;
const OPEN_CONNECT_FAILED: u32 = 2;
const OPEN_UNKNOWN_CHANNEL_TYPE: u32 = 3;
const OPEN_RESOURCE_SHORTAGE: u32 = 4;
const DISCONNECT_BY_APPLICATION: u32 = 11;
/// A key exchange the server started must finish within this; keepalives
/// pause meanwhile, so nothing else would notice a server that never does.
const KEX_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum SshError {
    Io(io::Error),
    Kex(KexError),
    Protocol(String),
    AuthRejected,
    Disconnected(String),
    Closed,
}

impl SshError {
    pub fn protocol(what: impl Into<String>) -> Self {
        SshError::Protocol(what.into())
    }
}

impl fmt::Display for SshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SshError::Io(e) => write!(f, "{e}"),
            SshError::Kex(e) => write!(f, "{e}"),
            SshError::Protocol(what) => write!(f, "SSH protocol error: {what}"),
            SshError::AuthRejected => write!(f, "the tunnel server refused the credentials"),
            SshError::Disconnected(why) => write!(f, "{why}"),
            SshError::Closed => write!(f, "the SSH session is closed"),
        }
    }
}

impl std::error::Error for SshError {}

impl From<io::Error> for SshError {
    fn from(e: io::Error) -> Self {
        SshError::Io(e)
    }
}

impl From<KexError> for SshError {
    fn from(e: KexError) -> Self {
        SshError::Kex(e)
    }
}

impl From<Malformed> for SshError {
    fn from(e: Malformed) -> Self {
        SshError::Protocol(e.to_string())
    }
}

#[derive(Clone)]
pub struct ClientConfig {
    /// The identification line sent: chisel's (`CLIENT_VERSION`) for
    /// chisel servers; other SSH servers need one starting `SSH-2.0-`.
    pub identification: String,
    pub user: String,
    /// Wiped when dropped; never in `Debug`.
    pub password: berth_domain::edge::credentials::Zeroizing<String>,
    /// The Edge key's fingerprint of the server's host key.
    pub fingerprint: String,
    /// The only `host:port` the server may ask berth to dial.
    pub allowed_target: String,
    pub dial_timeout: Duration,
    /// How often berth checks that the server still answers; two missed
    /// answers end the session, so a dead path is noticed and reopened.
    pub keepalive: Duration,
    /// Channels open at once; more are refused (resource shortage).
    pub max_channels: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("user", &self.user)
            .field("allowed_target", &self.allowed_target)
            .finish_non_exhaustive()
    }
}

/// A global request's answer: success or failure, each with its payload.
pub type GlobalReply = Result<Vec<u8>, Vec<u8>>;

enum Command {
    Request {
        name: String,
        data: Vec<u8>,
        reply: oneshot::Sender<GlobalReply>,
    },
    Close,
}

enum Pending {
    Caller(oneshot::Sender<GlobalReply>),
    Keepalive,
}

/// What a session has done, read by its owner while the session task runs.
#[derive(Debug)]
struct Counters {
    key_exchanges: AtomicU32,
    pings_answered: AtomicU32,
    /// The server's answers to berth's keepalives.
    keepalives_answered: AtomicU32,
}

/// A live session; dropping it closes the connection.
pub struct SshSession {
    commands: mpsc::Sender<Command>,
    ended: watch::Receiver<Option<String>>,
    counters: Arc<Counters>,
}

impl SshSession {
    pub async fn connect<S>(stream: S, config: ClientConfig) -> Result<SshSession, SshError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(stream);
        let established = handshake::establish(
            read_half,
            write_half,
            &config.identification,
            &config.user,
            config.password.as_str(),
            &config.fingerprint,
        )
        .await?;
        let (packets_tx, packets_rx) = mpsc::channel(64);
        let (keys_tx, keys_rx) = mpsc::channel(1);
        tokio::spawn(read_packets(
            established.reader,
            established.keys.inbound,
            packets_tx,
            keys_rx,
        ));
        let (commands, commands_rx) = mpsc::channel(16);
        let (ended_tx, ended) = watch::channel(None);
        let (events_tx, events_rx) = mpsc::channel(256);
        let counters = Arc::new(Counters {
            key_exchanges: AtomicU32::new(1),
            pings_answered: AtomicU32::new(0),
            keepalives_answered: AtomicU32::new(0),
        });
        let session = Loop {
            counters: Arc::clone(&counters),
            writer: established.writer,
            outbound: established.keys.outbound,
            session_id: established.session_id,
            server_version: established.server_version,
            config,
            channels: HashMap::new(),
            next_id: 0,
            pending: VecDeque::new(),
            rekey: None,
            inbound_next: None,
            keys_tx,
            events_tx,
        };
        tokio::spawn(async move {
            let reason = session.run(packets_rx, commands_rx, events_rx).await;
            let _ = ended_tx.send(Some(reason));
        });
        Ok(SshSession {
            commands,
            ended,
            counters,
        })
    }

    /// Sends a global request and waits for its answer.
    pub async fn request(&self, name: &str, data: Vec<u8>) -> Result<GlobalReply, SshError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                name: name.to_string(),
                data,
                reply,
            })
            .await
            .map_err(|_| SshError::Closed)?;
        answer.await.map_err(|_| SshError::Closed)
    }

    pub fn close(&self) {
        let _ = self.commands.try_send(Command::Close);
    }

    /// Key exchanges so far, the first one included.
    pub fn key_exchanges(&self) -> u32 {
        self.counters.key_exchanges.load(Ordering::Relaxed)
    }

    /// The server's `ping` requests answered so far (its keepalives).
    pub fn pings_answered(&self) -> u32 {
        self.counters.pings_answered.load(Ordering::Relaxed)
    }

    /// Whether the server answered one of berth's keepalives: a sign it
    /// works, which a server cannot give without holding the session for
    /// a keepalive interval. (Opening channels or sending data proves
    /// nothing: a hostile server does both at once.)
    pub fn proven(&self) -> bool {
        self.counters.keepalives_answered.load(Ordering::Relaxed) > 0
    }

    /// Resolves when the session ends, with the reason.
    pub async fn closed(&self) -> String {
        let mut ended = self.ended.clone();
        let reason = match ended.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the SSH session ended".to_string(),
        };
        reason
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        self.close();
    }
}

enum FromReader {
    Packet(Vec<u8>),
    Failed(String),
}

/// Reads packets in order; after passing on a NEWKEYS it waits for the
/// inbound keys that the session loop derived.
async fn read_packets<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    mut inbound: Sealing,
    packets: mpsc::Sender<FromReader>,
    mut keys: mpsc::Receiver<Sealing>,
) {
    loop {
        match inbound.read_packet(&mut reader).await {
            Ok(payload) => {
                let newkeys = payload.first() == Some(&MSG_NEWKEYS);
                if packets.send(FromReader::Packet(payload)).await.is_err() {
                    return;
                }
                if newkeys {
                    match keys.recv().await {
                        Some(next) => inbound = next,
                        None => return,
                    }
                }
            }
            Err(error) => {
                let why = if error.kind() == io::ErrorKind::UnexpectedEof {
                    "the tunnel server closed the connection".to_string()
                } else {
                    format!("reading from the tunnel server failed: {error}")
                };
                let _ = packets.send(FromReader::Failed(why)).await;
                return;
            }
        }
    }
}

struct Loop<S> {
    counters: Arc<Counters>,
    writer: WriteHalf<S>,
    outbound: Sealing,
    session_id: Vec<u8>,
    server_version: String,
    config: ClientConfig,
    channels: HashMap<u32, Channel>,
    next_id: u32,
    pending: VecDeque<Pending>,
    rekey: Option<Rekey>,
    inbound_next: Option<Sealing>,
    keys_tx: mpsc::Sender<Sealing>,
    events_tx: mpsc::Sender<ChannelEvent>,
}

/// Why the loop stops.
struct Stop(String);

impl From<String> for Stop {
    fn from(why: String) -> Self {
        Stop(why)
    }
}

impl From<&str> for Stop {
    fn from(why: &str) -> Self {
        Stop(why.to_string())
    }
}

impl From<Malformed> for Stop {
    fn from(e: Malformed) -> Self {
        Stop(e.to_string())
    }
}

impl<S: AsyncRead + AsyncWrite + Send> Loop<S> {
    async fn run(
        mut self,
        mut packets: mpsc::Receiver<FromReader>,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<ChannelEvent>,
    ) -> String {
        let mut keepalive = tokio::time::interval(self.config.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.tick().await;
        let mut unanswered_keepalives = 0u32;
        let mut heard = false;
        let mut kex_deadline: Option<tokio::time::Instant> = None;
        let result: Result<(), Stop> = loop {
            let in_kex = self.rekey.is_some() || self.inbound_next.is_some();
            if !in_kex {
                kex_deadline = None;
            } else if kex_deadline.is_none() {
                kex_deadline = Some(tokio::time::Instant::now() + KEX_TIMEOUT);
            }
            let step = tokio::select! {
                packet = packets.recv() => match packet {
                    Some(FromReader::Packet(payload)) => {
                        // Messages that carry nothing do not prove the
                        // server alive: one sending only those is not.
                        heard |= !matches!(
                            payload.first(),
                            Some(&(MSG_IGNORE | MSG_DEBUG | MSG_UNIMPLEMENTED))
                        );
                        self.on_packet(&payload).await
                    }
                    Some(FromReader::Failed(why)) => Err(Stop(why)),
                    None => Err(Stop::from("the reader stopped")),
                },
                event = events.recv(), if !in_kex => match event {
                    Some(event) => self.on_event(event).await,
                    None => Ok(()),
                },
                command = commands.recv(), if !in_kex => match command {
                    Some(Command::Request { name, data, reply }) => {
                        self.pending.push_back(Pending::Caller(reply));
                        self.send_global_request(&name, &data).await
                    }
                    Some(Command::Close) | None => {
                        let _ = self.send(&Encoder::message(MSG_DISCONNECT)
                            .u32(DISCONNECT_BY_APPLICATION)
                            .string("closed by the agent")
                            .string("")
                            .finish()).await;
                        break Err(Stop::from("closed by the agent"));
                    }
                },
                () = async {
                    match kex_deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                }, if in_kex => Err(Stop(format!(
                    "the tunnel server did not finish a key exchange within {}s",
                    KEX_TIMEOUT.as_secs()
                ))),
                _ = keepalive.tick(), if !in_kex => {
                    // Anything heard proves the path alive; a busy link
                    // may hold a ping's answer behind a lot of data.
                    if std::mem::take(&mut heard) {
                        unanswered_keepalives = 0;
                    }
                    if unanswered_keepalives >= 2 {
                        Err(Stop::from("the tunnel server stopped answering keepalives"))
                    } else {
                        unanswered_keepalives += 1;
                        self.pending.push_back(Pending::Keepalive);
                        self.send_global_request("ping", &[]).await
                    }
                }
            };
            if let Err(why) = step {
                break Err(why);
            }
        };
        let _ = self.writer.shutdown().await;
        for channel in self.channels.values() {
            channel.remote_window.close();
        }
        result.err().map(|stop| stop.0).unwrap_or_default()
    }

    async fn send(&mut self, payload: &[u8]) -> Result<(), Stop> {
        let packet = self.outbound.seal(payload);
        self.writer
            .write_all(&packet)
            .await
            .map_err(|e| Stop(format!("writing to the tunnel server failed: {e}")))
    }

    async fn send_global_request(&mut self, name: &str, data: &[u8]) -> Result<(), Stop> {
        let message = Encoder::message(MSG_GLOBAL_REQUEST)
            .string(name)
            .boolean(true)
            .raw(data)
            .finish();
        self.send(&message).await?;
        self.writer.flush().await.map_err(|e| Stop(e.to_string()))
    }

    async fn on_packet(&mut self, payload: &[u8]) -> Result<(), Stop> {
        let Some(&kind) = payload.first() else {
            return Err(Stop::from("empty message from the tunnel server"));
        };
        let result = match kind {
            MSG_DISCONNECT => return Err(Stop(disconnect_reason(payload))),
            MSG_IGNORE | MSG_DEBUG | MSG_UNIMPLEMENTED => Ok(()),
            MSG_KEXINIT => self.on_kexinit(payload).await,
            MSG_KEX_ECDH_REPLY => self.on_ecdh_reply(payload).await,
            MSG_NEWKEYS => self.on_newkeys().await,
            MSG_GLOBAL_REQUEST => self.on_global_request(payload).await,
            MSG_REQUEST_SUCCESS | MSG_REQUEST_FAILURE => {
                let rest = payload[1..].to_vec();
                match self.pending.pop_front() {
                    Some(Pending::Caller(reply)) => {
                        let answer = if kind == MSG_REQUEST_SUCCESS {
                            Ok(rest)
                        } else {
                            Err(rest)
                        };
                        let _ = reply.send(answer);
                    }
                    Some(Pending::Keepalive) => {
                        self.counters
                            .keepalives_answered
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
                Ok(())
            }
            MSG_CHANNEL_OPEN => self.on_channel_open(payload).await,
            MSG_CHANNEL_WINDOW_ADJUST => {
                let mut d = Decoder::new(&payload[1..]);
                let (id, bytes) = (d.u32()?, d.u32()?);
                if let Some(channel) = self.channels.get(&id) {
                    let window =
                        channel.remote_window.available_permits() as u64 + u64::from(bytes);
                    if window > u64::from(u32::MAX) {
                        return Err(Stop::from(
                            "the tunnel server grew a channel's window past 2^32 - 1",
                        ));
                    }
                    channel.remote_window.add_permits(bytes as usize);
                }
                Ok(())
            }
            MSG_CHANNEL_DATA | MSG_CHANNEL_EXTENDED_DATA => {
                let mut d = Decoder::new(&payload[1..]);
                let id = d.u32()?;
                if kind == MSG_CHANNEL_EXTENDED_DATA {
                    d.u32()?;
                }
                let data = d.string()?;
                if data.len() > LOCAL_MAX_PACKET as usize {
                    return Err(Stop::from(
                        "the tunnel server sent a packet over the agreed size",
                    ));
                }
                if let Some(channel) = self.channels.get_mut(&id) {
                    // Fits: data.len() is at most LOCAL_MAX_PACKET.
                    let length = data.len() as u32;
                    if length > channel.local_window {
                        return Err(Stop::from(
                            "the tunnel server sent more data than the channel's window allows",
                        ));
                    }
                    channel.local_window -= length;
                }
                match self.channels.get(&id).and_then(|c| c.to_local.as_ref()) {
                    Some(to_local) if kind == MSG_CHANNEL_DATA => {
                        let _ = to_local.send(ToLocal::Data(data.to_vec()));
                    }
                    _ => {
                        // Nobody will consume these bytes: grant them back.
                        let bytes = data.len() as u32;
                        self.on_event(ChannelEvent::Consumed { id, bytes }).await?;
                    }
                }
                Ok(())
            }
            MSG_CHANNEL_EOF => {
                let id = Decoder::new(&payload[1..]).u32()?;
                if let Some(channel) = self.channels.get_mut(&id) {
                    channel.received_eof = true;
                    if let Some(to_local) = &channel.to_local {
                        let _ = to_local.send(ToLocal::Eof);
                    }
                }
                self.close_if_done(id).await
            }
            MSG_CHANNEL_CLOSE => {
                let id = Decoder::new(&payload[1..]).u32()?;
                if let Some(channel) = self.channels.remove(&id) {
                    channel.remote_window.close();
                    if !channel.sent_close {
                        self.send(
                            &Encoder::message(MSG_CHANNEL_CLOSE)
                                .u32(channel.remote_id)
                                .finish(),
                        )
                        .await?;
                    }
                }
                Ok(())
            }
            MSG_CHANNEL_REQUEST => {
                let mut d = Decoder::new(&payload[1..]);
                let id = d.u32()?;
                let _kind = d.string()?;
                if d.boolean()? {
                    if let Some(channel) = self.channels.get(&id) {
                        let remote = channel.remote_id;
                        self.send(&Encoder::message(MSG_CHANNEL_FAILURE).u32(remote).finish())
                            .await?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        result?;
        self.writer.flush().await.map_err(|e| Stop(e.to_string()))
    }

    async fn on_kexinit(&mut self, theirs: &[u8]) -> Result<(), Stop> {
        let ours = our_kexinit();
        self.send(&ours).await?;
        let rekey = Rekey::begin(ours, theirs.to_vec()).map_err(|e| Stop(e.to_string()))?;
        self.send(&rekey.ephemeral.init_message()).await?;
        self.rekey = Some(rekey);
        Ok(())
    }

    async fn on_ecdh_reply(&mut self, reply: &[u8]) -> Result<(), Stop> {
        let rekey = self
            .rekey
            .take()
            .ok_or("the tunnel server sent a key exchange reply unasked")?;
        let (keys, _) = rekey
            .finish(
                reply,
                &self.config.identification,
                &self.server_version,
                Some(&self.session_id),
                &self.config.fingerprint,
            )
            .map_err(|e| Stop(e.to_string()))?;
        self.send(&[MSG_NEWKEYS]).await?;
        self.outbound = keys.outbound;
        self.inbound_next = Some(keys.inbound);
        self.counters.key_exchanges.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn on_newkeys(&mut self) -> Result<(), Stop> {
        let inbound = self
            .inbound_next
            .take()
            .ok_or("the tunnel server sent NEWKEYS out of turn")?;
        self.keys_tx
            .send(inbound)
            .await
            .map_err(|_| Stop::from("the reader stopped"))
    }

    async fn on_global_request(&mut self, payload: &[u8]) -> Result<(), Stop> {
        let mut d = Decoder::new(&payload[1..]);
        let name = d.text()?;
        if !d.boolean()? {
            return Ok(());
        }
        let answer = if name == "ping" {
            self.counters.pings_answered.fetch_add(1, Ordering::Relaxed);
            Encoder::message(MSG_REQUEST_SUCCESS).raw(b"pong").finish()
        } else {
            vec![MSG_REQUEST_FAILURE]
        };
        self.send(&answer).await
    }

    async fn on_channel_open(&mut self, payload: &[u8]) -> Result<(), Stop> {
        let mut d = Decoder::new(&payload[1..]);
        let kind = d.text()?.to_string();
        let remote_id = d.u32()?;
        let window = d.u32()?;
        let max_packet = d.u32()?;
        // chisel puts the target as raw bytes, not as an SSH string.
        let target = String::from_utf8_lossy(d.rest()).to_string();
        let refusal = if kind != "chisel" {
            Some((
                OPEN_UNKNOWN_CHANNEL_TYPE,
                format!("unknown channel type {kind}"),
            ))
        } else if target != self.config.allowed_target {
            Some((
                OPEN_ADMINISTRATIVELY_PROHIBITED,
                format!("the agent only tunnels to its API, not {target}"),
            ))
        } else {
            None
        };
        if let Some((code, text)) = refusal {
            tracing::warn!(%text, "refused a tunnel channel");
            return self.send(&open_failure(remote_id, code, &text)).await;
        }
        if self.channels.len() >= self.config.max_channels {
            tracing::warn!(
                open = self.channels.len(),
                "refused a tunnel channel: too many open"
            );
            return self
                .send(&open_failure(
                    remote_id,
                    OPEN_RESOURCE_SHORTAGE,
                    "too many channels open",
                ))
                .await;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.channels
            .insert(id, Channel::new(remote_id, window, max_packet));
        channel::spawn_dial(id, target, self.config.dial_timeout, self.events_tx.clone());
        Ok(())
    }

    async fn on_event(&mut self, event: ChannelEvent) -> Result<(), Stop> {
        match event {
            ChannelEvent::Dialed { id, result } => {
                let Some(channel) = self.channels.get_mut(&id) else {
                    return Ok(());
                };
                let remote_id = channel.remote_id;
                match result {
                    Ok(stream) => {
                        channel.to_local = Some(channel::spawn_pumps(
                            id,
                            stream,
                            channel,
                            self.events_tx.clone(),
                        ));
                        self.send(
                            &Encoder::message(MSG_CHANNEL_OPEN_CONFIRMATION)
                                .u32(remote_id)
                                .u32(id)
                                .u32(LOCAL_WINDOW)
                                .u32(LOCAL_MAX_PACKET)
                                .finish(),
                        )
                        .await?;
                    }
                    Err(why) => {
                        self.channels.remove(&id);
                        self.send(&open_failure(remote_id, OPEN_CONNECT_FAILED, &why))
                            .await?;
                    }
                }
            }
            ChannelEvent::Data { id, bytes } => {
                if let Some(channel) = self.channels.get(&id).filter(|c| !c.sent_eof) {
                    let message = Encoder::message(MSG_CHANNEL_DATA)
                        .u32(channel.remote_id)
                        .string(&bytes)
                        .finish();
                    self.send(&message).await?;
                }
            }
            ChannelEvent::Eof { id } => {
                if let Some(channel) = self.channels.get_mut(&id).filter(|c| !c.sent_eof) {
                    channel.sent_eof = true;
                    let remote_id = channel.remote_id;
                    self.send(&Encoder::message(MSG_CHANNEL_EOF).u32(remote_id).finish())
                        .await?;
                }
                self.close_if_done(id).await?;
            }
            ChannelEvent::Consumed { id, bytes } => {
                if let Some(channel) = self.channels.get_mut(&id) {
                    channel.unacknowledged += bytes;
                    if channel.unacknowledged >= LOCAL_WINDOW / 2 {
                        let grant = std::mem::take(&mut channel.unacknowledged);
                        channel.local_window = channel.local_window.saturating_add(grant);
                        let remote_id = channel.remote_id;
                        self.send(
                            &Encoder::message(MSG_CHANNEL_WINDOW_ADJUST)
                                .u32(remote_id)
                                .u32(grant)
                                .finish(),
                        )
                        .await?;
                    }
                }
            }
            ChannelEvent::WriteFailed { id } => {
                if let Some(channel) = self.channels.get_mut(&id).filter(|c| !c.sent_close) {
                    channel.sent_close = true;
                    let remote_id = channel.remote_id;
                    self.send(&Encoder::message(MSG_CHANNEL_CLOSE).u32(remote_id).finish())
                        .await?;
                }
            }
        }
        self.writer.flush().await.map_err(|e| Stop(e.to_string()))
    }

    /// Both sides said EOF: the channel is finished.
    async fn close_if_done(&mut self, id: u32) -> Result<(), Stop> {
        if let Some(channel) = self
            .channels
            .get_mut(&id)
            .filter(|c| c.sent_eof && c.received_eof && !c.sent_close)
        {
            channel.sent_close = true;
            let remote_id = channel.remote_id;
            self.send(&Encoder::message(MSG_CHANNEL_CLOSE).u32(remote_id).finish())
                .await?;
        }
        Ok(())
    }
}

fn open_failure(remote_id: u32, code: u32, text: &str) -> Vec<u8> {
    Encoder::message(MSG_CHANNEL_OPEN_FAILURE)
        .u32(remote_id)
        .u32(code)
        .string(text)
        .string("")
        .finish()
}
