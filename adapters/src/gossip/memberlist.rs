//! The `Membership` port speaking HashiCorp memberlist and serf on the
//! wire, so berth agents and Go Portainer agents form one cluster. This
//! adapter moves bytes (UDP packets, TCP streams) and keeps time (probes,
//! gossip rounds, push-pull); what the bytes mean and what follows from
//! them is `berth_domain::gossip`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_domain::cluster::{AgentTags, Member, MemberStatus, Seed};
use berth_domain::gossip::keyring::{sealed_len, stream_header, Keyring};
use berth_domain::gossip::messages::{
    compound, decode_packet, decode_stream, encode_stream_ack, Alive, IndirectPing, Message, Ping,
    StreamMessage, WireError, ENCRYPT, MAX_EXPANDED, VERSIONS,
};
use berth_domain::gossip::serf::{decode_tags, encode_tags, SerfMessage};
use berth_domain::gossip::state::{status_changes, Gossip, Settings};
use berth_ports::{Membership, MembershipError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

use super::{resolve_seeds, GossipConfig};

/// memberlist's LAN settings (reference §7).
const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
const GOSSIP_NODES: usize = 3;
const INDIRECT_CHECKS: usize = 3;
const PUSH_PULL_INTERVAL: Duration = Duration::from_secs(30);
const RECONNECT_INTERVAL: Duration = Duration::from_secs(10);
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a leave waits for its messages to be gossiped.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// memberlist's packet size; a compound's header costs a few bytes more.
const PACKET_BUDGET: usize = 1400 - 40;
const MAX_STREAM: usize = MAX_EXPANDED;

/// Who is waiting for the ack of a ping: a probe of this agent's own, or
/// a peer that asked this agent to ping for it.
type AckWaiter = oneshot::Sender<()>;

struct Inner {
    /// This node's gossip name (fixed for its life).
    name: String,
    state: Mutex<Gossip>,
    udp: UdpSocket,
    keyring: Option<Keyring>,
    advertise: SocketAddr,
    probe_interval: Duration,
    probe_timeout: Duration,
    acks: Mutex<HashMap<u32, AckWaiter>>,
    /// When each node last answered a probe, in seconds since the epoch.
    contacts: Mutex<HashMap<String, u64>>,
    seq: AtomicU32,
    started: Instant,
    stop: watch::Sender<bool>,
    /// Each member's status as last logged.
    logged: Mutex<BTreeMap<String, MemberStatus>>,
}

/// A member of a HashiCorp-compatible gossip cluster.
#[derive(Clone)]
pub struct MemberlistMembership {
    inner: Arc<Inner>,
}

/// A fresh nonce for each sealed message.
fn nonce() -> [u8; 12] {
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut nonce).expect("the OS has randomness");
    nonce
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    getrandom::getrandom(&mut bytes).expect("the OS has randomness");
    u32::from_be_bytes(bytes)
}

fn tag_pairs(tags: &AgentTags) -> Vec<(&str, &str)> {
    tags.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

impl MemberlistMembership {
    /// Binds the gossip port (UDP and TCP) and starts gossiping, alone
    /// until [`Membership::join`].
    ///
    /// # Errors
    /// When the port cannot be bound or the tags are too large.
    pub async fn start(config: GossipConfig) -> Result<Self, MembershipError> {
        let bind_error = |error: std::io::Error| {
            MembershipError(format!("cannot start gossip on {}: {error}", config.bind))
        };
        let udp = UdpSocket::bind(config.bind).await.map_err(bind_error)?;
        let tcp = TcpListener::bind(config.bind).await.map_err(bind_error)?;
        let meta = encode_tags(tag_pairs(&config.tags)).map_err(MembershipError)?;
        let me = Alive {
            incarnation: 1,
            node: config.node_id.clone(),
            addr: config.advertise.ip(),
            port: config.advertise.port(),
            meta,
            versions: VERSIONS,
        };
        let interval_ms = config.probe_interval.as_millis() as u64;
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            name: config.node_id.clone(),
            state: Mutex::new(Gossip::new(me, Settings::agent(interval_ms), 0)),
            udp,
            keyring: config.keyring,
            advertise: config.advertise,
            probe_interval: config.probe_interval,
            probe_timeout: config.probe_timeout,
            acks: Mutex::new(HashMap::new()),
            contacts: Mutex::new(HashMap::new()),
            seq: AtomicU32::new(random_u32()),
            started: Instant::now(),
            logged: Mutex::new(BTreeMap::new()),
            stop,
        });
        let tasks: [std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>; 5] = [
            Box::pin(inner.clone().receive_packets()),
            Box::pin(inner.clone().accept_streams(tcp)),
            Box::pin(inner.clone().probe_loop()),
            Box::pin(inner.clone().gossip_loop()),
            Box::pin(inner.clone().push_pull_loop()),
        ];
        for task in tasks {
            let mut stop = inner.stop.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    () = task => {}
                    _ = stop.wait_for(|stopped| *stopped) => {}
                }
            });
        }
        info!(node = %config.node_id, bind = %config.bind, encrypted = inner.keyring.is_some(), "gossiping (memberlist protocol)");
        Ok(MemberlistMembership { inner })
    }

    /// Until every queued broadcast has gone out (or no peer is left to
    /// take it), within the leave timeout.
    async fn wait_gossiped(&self) {
        let deadline = Instant::now() + LEAVE_TIMEOUT;
        while self.inner.state().pending_broadcasts() > 0 && Instant::now() < deadline {
            let alone = self.inner.state().others(1, "", |_| 0).is_empty();
            if alone {
                break;
            }
            tokio::time::sleep(GOSSIP_INTERVAL).await;
        }
    }
}

impl Inner {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Gossip> {
        // A panic while holding the lock leaves a usable view: every
        // change to it is one whole call.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn expect_ack(&self, seq: u32) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        self.acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(seq, sender);
        receiver
    }

    fn forget_ack(&self, seq: u32) {
        self.acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&seq);
    }

    fn seal_packet(&self, packet: Vec<u8>) -> Vec<u8> {
        match &self.keyring {
            Some(keyring) => keyring.seal(&packet, &[], nonce()),
            None => packet,
        }
    }

    async fn send(&self, to: SocketAddr, packet: Vec<u8>) {
        let packet = self.seal_packet(packet);
        if let Err(error) = self.udp.send_to(&packet, to).await {
            debug!(%to, %error, "gossip packet not sent");
        }
    }

    fn own_source(&self) -> Option<(std::net::IpAddr, u16, String)> {
        Some((
            self.advertise.ip(),
            self.advertise.port(),
            self.name.clone(),
        ))
    }

    async fn receive_packets(self: Arc<Self>) {
        let mut buffer = vec![0u8; 65_536];
        loop {
            let (len, from) = match self.udp.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(error) => {
                    debug!(%error, "gossip receive");
                    continue;
                }
            };
            let plain = match &self.keyring {
                Some(keyring) => match keyring.open(&buffer[..len], &[]) {
                    Ok(plain) => plain,
                    Err(error) => {
                        warn!(%from, %error, "gossip packet refused");
                        continue;
                    }
                },
                None => buffer[..len].to_vec(),
            };
            let (messages, errors) = decode_packet(&plain);
            for error in errors {
                debug!(%from, %error, "gossip packet part dropped");
            }
            for message in messages {
                self.handle(message, from).await;
            }
        }
    }

    async fn handle(self: &Arc<Self>, message: Message, from: SocketAddr) {
        let now = self.now();
        match message {
            Message::Ping(ping) => {
                if !ping.node.is_empty() && ping.node != self.name {
                    debug!(%from, node = %ping.node, "ping for another node");
                    return;
                }
                let reply_to = ping
                    .source
                    .map_or(from, |(addr, port, _)| SocketAddr::new(addr, port));
                let ack = Message::Ack {
                    seq: ping.seq,
                    payload: Vec::new(),
                };
                self.send(reply_to, ack.encode()).await;
            }
            Message::IndirectPing(request) => {
                tokio::spawn(self.clone().ping_for(request, from));
            }
            Message::Ack { seq, .. } => {
                let waiter = self
                    .acks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&seq);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(());
                }
            }
            // A nack only says the helper heard no ack either.
            Message::Nack { .. } => {}
            Message::Alive(alive) => self.state().on_alive(alive, now),
            Message::Suspect(accusation) => self.state().on_suspect(accusation, now),
            Message::Dead(accusation) => self.state().on_dead(accusation, now),
            Message::User(payload) => self.handle_serf(&payload),
            Message::Error(error) => debug!(%from, %error, "a peer reported an error"),
        }
    }

    fn handle_serf(&self, payload: &[u8]) {
        match SerfMessage::decode(payload) {
            Ok(SerfMessage::Intent(intent)) => self.state().on_serf_intent(intent),
            // Events and queries: berth takes no part.
            Ok(SerfMessage::Other(_)) => {}
            Err(error) => debug!(%error, "serf message dropped"),
        }
    }

    /// Pings `request.target` for the peer that asked, relays the ack, or a
    /// nack when none comes within the probe timeout and one was asked for.
    async fn ping_for(self: Arc<Self>, request: IndirectPing, from: SocketAddr) {
        let seq = self.next_seq();
        let acked = self.expect_ack(seq);
        let ping = Message::Ping(Ping {
            seq,
            node: request.node.clone(),
            source: self.own_source(),
        });
        self.send(SocketAddr::new(request.target, request.port), ping.encode())
            .await;
        let requester = request
            .source
            .as_ref()
            .map_or(from, |(addr, port, _)| SocketAddr::new(*addr, *port));
        match tokio::time::timeout(self.probe_timeout, acked).await {
            Ok(Ok(())) => {
                let ack = Message::Ack {
                    seq: request.seq,
                    payload: Vec::new(),
                };
                self.send(requester, ack.encode()).await;
            }
            _ => {
                self.forget_ack(seq);
                if request.nack {
                    self.send(requester, Message::Nack { seq: request.seq }.encode())
                        .await;
                }
            }
        }
    }

    async fn probe_loop(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.probe_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = self.now();
            let target = {
                let mut state = self.state();
                state.tick(now);
                state.next_probe()
            };
            if let Some(target) = target {
                self.probe(target).await;
            }
        }
    }

    /// memberlist's probe: a direct ping, then (after the probe timeout)
    /// indirect pings through other nodes, and suspicion when the probe
    /// interval ends without an ack.
    async fn probe(&self, target: Alive) {
        let seq = self.next_seq();
        let mut acked = self.expect_ack(seq);
        let to = SocketAddr::new(target.addr, target.port);
        let ping = Message::Ping(Ping {
            seq,
            node: target.node.clone(),
            source: self.own_source(),
        });
        self.send(to, ping.encode()).await;
        if tokio::time::timeout(self.probe_timeout, &mut acked)
            .await
            .is_ok()
        {
            self.contacted(&target.node);
            return;
        }
        let helpers = self
            .state()
            .others(INDIRECT_CHECKS, &target.node, |n| random_u32() as usize % n);
        for helper in helpers {
            let request = Message::IndirectPing(IndirectPing {
                seq,
                target: target.addr,
                port: target.port,
                node: target.node.clone(),
                // Nacks came with memberlist protocol 4.
                nack: helper.versions[1] >= 4,
                source: self.own_source(),
            });
            self.send(SocketAddr::new(helper.addr, helper.port), request.encode())
                .await;
        }
        let rest = self.probe_interval.saturating_sub(self.probe_timeout);
        if tokio::time::timeout(rest, &mut acked).await.is_ok() {
            self.contacted(&target.node);
            return;
        }
        self.forget_ack(seq);
        debug!(node = %target.node, "no ack: suspecting");
        let now = self.now();
        self.state().probe_failed(&target.node, now);
    }

    /// A probe of `node` was answered (for `berth status`'s last contact).
    fn contacted(&self, node: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut contacts = self
            .contacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        contacts.insert(node.to_string(), now);
    }

    fn last_contact(&self, node: &str) -> Option<u64> {
        self.contacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(node)
            .copied()
    }

    async fn gossip_loop(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(GOSSIP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.gossip_once().await;
            self.log_status_changes();
        }
    }

    /// Joins, failures, leaves and returns, each logged once at INFO, as
    /// the Go agent's serf logs them.
    fn log_status_changes(&self) {
        let changes = {
            let state = self.state();
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            status_changes(&mut logged, state.statuses())
        };
        for change in changes {
            if change.name == self.name {
                continue;
            }
            match (change.before, change.now) {
                (None | Some(MemberStatus::Left), MemberStatus::Alive) => {
                    info!(member = %change.name, "member joined the agent cluster");
                }
                (Some(MemberStatus::Failed), MemberStatus::Alive) => {
                    info!(member = %change.name, "member is back");
                }
                (_, MemberStatus::Failed) => {
                    warn!(member = %change.name, "member failed: it no longer answers");
                }
                (_, MemberStatus::Left) => {
                    info!(member = %change.name, "member left the agent cluster")
                }
                (_, MemberStatus::Leaving) => info!(member = %change.name, "member is leaving"),
                (Some(_), MemberStatus::Alive) => {}
            }
        }
    }

    /// One gossip round: queued messages to a few random nodes, each
    /// packet filled anew (the queue counts what each message was sent).
    async fn gossip_once(&self) {
        let targets = self
            .state()
            .others(GOSSIP_NODES, "", |n| random_u32() as usize % n);
        for target in targets {
            let parts = self.state().take_broadcasts(PACKET_BUDGET);
            let packet = match parts.len() {
                0 => return,
                1 => parts.into_iter().next().unwrap_or_default(),
                _ => compound(&parts),
            };
            self.send(SocketAddr::new(target.addr, target.port), packet)
                .await;
        }
    }

    async fn push_pull_loop(self: Arc<Self>) {
        let mut push_pull = tokio::time::interval(PUSH_PULL_INTERVAL);
        let mut reconnect = tokio::time::interval(RECONNECT_INTERVAL);
        for ticks in [&mut push_pull, &mut reconnect] {
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
        }
        loop {
            let failed = tokio::select! {
                _ = push_pull.tick() => false,
                _ = reconnect.tick() => true,
            };
            let peer = {
                let state = self.state();
                if failed {
                    // serf's reconnect: try one failed member again, chosen
                    // at random so that every failed member gets its turn.
                    let failed: Vec<SocketAddr> = state
                        .members()
                        .into_iter()
                        .filter(|m| m.status == MemberStatus::Failed)
                        .map(|m| SocketAddr::new(m.addr, m.port))
                        .collect();
                    (!failed.is_empty()).then(|| failed[random_u32() as usize % failed.len()])
                } else {
                    state
                        .others(1, "", |n| random_u32() as usize % n)
                        .first()
                        .map(|a| SocketAddr::new(a.addr, a.port))
                }
            };
            if let Some(peer) = peer {
                if let Err(error) = self.push_pull(peer, false).await {
                    debug!(%peer, %error, "push-pull");
                }
            }
        }
    }

    /// A push-pull exchange over TCP: this node's state out, the peer's in
    /// and merged.
    async fn push_pull(&self, peer: SocketAddr, join: bool) -> Result<(), String> {
        let exchange = async {
            let mut stream = crate::dial::tcp(peer).await.map_err(|e| e.to_string())?;
            let local = self.state().push_pull(join);
            self.write_stream(&mut stream, local.encode())
                .await
                .map_err(|e| e.to_string())?;
            match self
                .read_stream(&mut stream)
                .await
                .map_err(|e| e.to_string())?
            {
                StreamMessage::PushPull(remote) => {
                    let now = self.now();
                    self.state().merge(remote, now);
                    Ok(())
                }
                StreamMessage::Error(error) => Err(format!("the peer refused: {error}")),
                other => Err(format!("the peer answered {other:?}")),
            }
        };
        tokio::time::timeout(TCP_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }

    async fn accept_streams(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let inner = self.clone();
                    tokio::spawn(async move {
                        let served = tokio::time::timeout(TCP_TIMEOUT, inner.serve_stream(stream));
                        match served.await {
                            Ok(Err(error)) => debug!(%from, %error, "gossip stream"),
                            Err(_) => debug!(%from, "gossip stream timed out"),
                            Ok(Ok(())) => {}
                        }
                    });
                }
                Err(error) => {
                    debug!(%error, "gossip accept");
                    // The listener fails only when out of descriptors;
                    // give them a moment to come back.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_stream(&self, mut stream: TcpStream) -> Result<(), WireError> {
        let message = match self.read_stream(&mut stream).await {
            Ok(message) => message,
            Err(error) => {
                let reply = Message::Error(error.message.clone()).encode();
                let _ = self.write_stream(&mut stream, reply).await;
                return Err(error);
            }
        };
        match message {
            StreamMessage::PushPull(remote) => {
                let local = self.state().push_pull(remote.join);
                self.write_stream(&mut stream, local.encode()).await?;
                let now = self.now();
                self.state().merge(remote, now);
            }
            StreamMessage::Ping(ping) => {
                if ping.node.is_empty() || ping.node == self.name {
                    self.write_stream(&mut stream, encode_stream_ack(ping.seq))
                        .await?;
                }
            }
            StreamMessage::User(payload) => self.handle_serf(&payload),
            StreamMessage::Ack { .. } => {}
            StreamMessage::Error(error) => debug!(%error, "a peer reported an error"),
        }
        Ok(())
    }

    async fn write_stream(&self, stream: &mut TcpStream, plain: Vec<u8>) -> Result<(), WireError> {
        let bytes = match &self.keyring {
            Some(keyring) => {
                let header = stream_header(sealed_len(plain.len()));
                let mut frame = header.to_vec();
                frame.extend_from_slice(&keyring.seal(&plain, &header, nonce()));
                frame
            }
            None => plain,
        };
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| WireError::new(e.to_string()))
    }

    /// Reads one stream message: a sealed frame when gossip is encrypted,
    /// else as many bytes as the message turns out to need.
    async fn read_stream(&self, stream: &mut TcpStream) -> Result<StreamMessage, WireError> {
        let io = |e: std::io::Error| WireError::new(e.to_string());
        let first = stream.read_u8().await.map_err(io)?;
        if first == ENCRYPT {
            let Some(keyring) = &self.keyring else {
                return Err(WireError::new(
                    "Remote state is encrypted and encryption is not configured",
                ));
            };
            let len = stream.read_u32().await.map_err(io)? as usize;
            if len > MAX_STREAM {
                return Err(WireError::new(format!(
                    "a stream of {len} bytes is too large"
                )));
            }
            let mut sealed = vec![0u8; len];
            stream.read_exact(&mut sealed).await.map_err(io)?;
            let plain = keyring.open(&sealed, &stream_header(len))?;
            return decode_stream(&plain).map(|(message, _)| message);
        }
        if self.keyring.is_some() {
            return Err(WireError::new(
                "Encryption is configured but remote state is not encrypted",
            ));
        }
        read_plain(stream, first).await
    }
}

async fn read_plain(
    stream: &mut (impl AsyncRead + Unpin),
    first: u8,
) -> Result<StreamMessage, WireError> {
    let mut buffer = vec![first];
    let mut chunk = [0u8; 8192];
    loop {
        match decode_stream(&buffer) {
            Ok((message, _)) => return Ok(message),
            Err(error) if !error.truncated => return Err(error),
            Err(_) => {}
        }
        if buffer.len() > MAX_STREAM {
            return Err(WireError::new("a stream message is too large"));
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| WireError::new(e.to_string()))?;
        if read == 0 {
            return Err(WireError::new("the stream ended inside a message"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

impl Membership for MemberlistMembership {
    async fn members(&self) -> Vec<Member> {
        self.inner
            .state()
            .members()
            .into_iter()
            .filter_map(|member| {
                let tags = decode_tags(&member.meta);
                let mut found = Member::from_tags(
                    member.addr,
                    member.status,
                    tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )?;
                found.last_contact = self.inner.last_contact(&member.name);
                Some(found)
            })
            .collect()
    }

    async fn publish(&self, tags: AgentTags) -> Result<(), MembershipError> {
        let meta = encode_tags(tag_pairs(&tags)).map_err(MembershipError)?;
        self.inner.state().set_meta(meta);
        Ok(())
    }

    async fn join(&self, seeds: &[Seed]) -> Result<usize, MembershipError> {
        let Some(addresses) = resolve_seeds(seeds, self.inner.advertise).await? else {
            return Ok(0);
        };
        debug!(?addresses, "joining the cluster");
        let mut joined = 0;
        let mut last_error = String::new();
        for address in addresses {
            match self.inner.push_pull(address, true).await {
                Ok(()) => joined += 1,
                Err(error) => last_error = format!("{address}: {error}"),
            }
        }
        if joined == 0 {
            return Err(MembershipError(format!("cannot join: {last_error}")));
        }
        Ok(joined)
    }

    async fn leave(&self) {
        // As serf leaves: its leave intent gossiped out first, then
        // memberlist's own "dead" message, each waited for in turn within
        // the broadcast timeout, so that peers record a clean leave.
        self.inner.state().announce_leave();
        self.wait_gossiped().await;
        let now = self.inner.now();
        self.inner.state().depart(now);
        self.wait_gossiped().await;
        let _ = self.inner.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_domain::gossip::messages::PushPull;

    #[tokio::test]
    async fn a_plain_stream_is_read_however_it_is_split() {
        let push = PushPull {
            join: true,
            nodes: Vec::new(),
            user_state: vec![1, 2, 3],
        };
        let bytes = push.encode();
        let (mut client, mut server) = tokio::io::duplex(4);
        let writer = tokio::spawn(async move {
            for byte in bytes {
                client.write_all(&[byte]).await.unwrap();
            }
            client
        });
        let first = server.read_u8().await.unwrap();
        let message = read_plain(&mut server, first).await.unwrap();
        assert_eq!(message, StreamMessage::PushPull(push));
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_is_an_error() {
        let bytes = PushPull {
            join: false,
            nodes: Vec::new(),
            user_state: vec![9; 10],
        }
        .encode();
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&bytes[..bytes.len() - 2]).await.unwrap();
        drop(client);
        let first = server.read_u8().await.unwrap();
        assert!(read_plain(&mut server, first).await.is_err());
    }
}
