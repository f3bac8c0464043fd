//! The cluster as memberlist and serf see it from one node: every node's
//! incarnation and liveness (memberlist's rules for alive, suspect and dead
//! messages, with suspicion timeouts that shorten as others confirm), serf's
//! member status on top (join and leave intents ordered by Lamport time),
//! and the queue of messages to piggyback on gossip. Time is passed in as
//! milliseconds, so every rule is tested without a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cluster::MemberStatus;

use super::messages::{Accusation, Alive, Message, NodeState, PushNode, PushPull};
use super::serf::{Intent, SerfState};

#[derive(Debug, Clone)]
pub struct Settings {
    pub probe_interval_ms: u64,
    /// memberlist's `SuspicionMult` (4 on LANs).
    pub suspicion_mult: u64,
    /// memberlist's `SuspicionMaxTimeoutMult` (6).
    pub suspicion_max_mult: u64,
    /// memberlist's and serf's `RetransmitMult` (4).
    pub retransmit_mult: u32,
    /// How long a failed member stays listed (serf's `ReconnectTimeout`).
    pub failed_kept_ms: u64,
    /// How long a member that left stays listed (serf's tombstone).
    pub left_kept_ms: u64,
}

impl Settings {
    /// memberlist's LAN defaults with the Go agent's changes (reference §7).
    pub fn agent(probe_interval_ms: u64) -> Settings {
        Settings {
            probe_interval_ms,
            suspicion_mult: 4,
            suspicion_max_mult: 6,
            retransmit_mult: 4,
            failed_kept_ms: 60_000,
            left_kept_ms: 24 * 3600 * 1000,
        }
    }
}

/// A suspicion runs from its node's `state_change`.
#[derive(Debug, Clone)]
struct Suspicion {
    /// Who else suspects it; the first accuser is not counted.
    confirmations: BTreeSet<String>,
    first: String,
    /// Confirmations that bring the timeout down to its minimum.
    needed: u64,
    min_ms: u64,
    max_ms: u64,
}

impl Suspicion {
    /// memberlist's formula: from the maximum down to the minimum as the
    /// logarithm of the confirmations approaches that of those needed.
    fn timeout_ms(&self) -> u64 {
        if self.needed == 0 {
            return self.min_ms;
        }
        let fraction =
            ((self.confirmations.len() as f64) + 1.0).ln() / ((self.needed as f64) + 1.0).ln();
        let raw = self.max_ms as f64 - fraction * (self.max_ms - self.min_ms) as f64;
        (raw as u64).max(self.min_ms)
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub alive: Alive,
    pub state: NodeState,
    pub state_change: u64,
    pub status: MemberStatus,
    status_ltime: u64,
    suspicion: Option<Suspicion>,
}

/// A member as [`Gossip::members`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub status: MemberStatus,
    pub meta: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Broadcast {
    /// A newer message about the same node replaces an older one.
    about: Option<String>,
    message: Vec<u8>,
    sent: u32,
}

/// One node's view of the cluster.
#[derive(Debug, Clone)]
pub struct Gossip {
    me: String,
    settings: Settings,
    nodes: BTreeMap<String, Node>,
    /// The probe order: names, walked round-robin.
    order: Vec<String>,
    next_probe: usize,
    clock: u64,
    left: bool,
    /// Intents about nodes not known yet (serf's "recent intents").
    intents: BTreeMap<String, Intent>,
    broadcasts: Vec<Broadcast>,
}

/// Messages waiting for gossip (serf's `MaxQueueDepth`).
const MAX_BROADCASTS: usize = 4096;
/// Intents about nodes not seen yet that are remembered.
const MAX_PENDING_INTENTS: usize = 1024;

fn lg10_scale(n: usize) -> f64 {
    (n.max(1) as f64).log10().max(1.0)
}

impl Gossip {
    /// Starts the view with this node alive in it, and its alive message
    /// and serf join intent queued for gossip.
    pub fn new(me: Alive, settings: Settings, now: u64) -> Gossip {
        let name = me.node.clone();
        let mut gossip = Gossip {
            me: name.clone(),
            settings,
            nodes: BTreeMap::new(),
            order: Vec::new(),
            next_probe: 0,
            clock: 1,
            left: false,
            intents: BTreeMap::new(),
            broadcasts: Vec::new(),
        };
        gossip.on_alive(me, now);
        let join = Intent::Join {
            ltime: gossip.clock,
            node: name,
        };
        gossip.on_intent(&join);
        gossip.queue(None, Message::User(join.encode()).encode());
        gossip
    }

    pub fn me(&self) -> &Alive {
        &self.nodes[&self.me].alive
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(name)
    }

    fn queue(&mut self, about: Option<String>, message: Vec<u8>) {
        if let Some(name) = &about {
            self.broadcasts
                .retain(|b| b.about.as_deref() != Some(name.as_str()));
        }
        if self.broadcasts.len() >= MAX_BROADCASTS {
            // serf's queue depth limit: the most-sent message goes first.
            if let Some(most) = (0..self.broadcasts.len())
                .rev()
                .max_by_key(|&i| self.broadcasts[i].sent)
            {
                self.broadcasts.remove(most);
            }
        }
        self.broadcasts.push(Broadcast {
            about,
            message,
            sent: 0,
        });
    }

    fn witness(&mut self, ltime: u64) {
        if ltime >= self.clock {
            self.clock = ltime + 1;
        }
    }

    /// memberlist's `aliveNode`: a newer incarnation (or a first sighting)
    /// makes the node alive and is passed on; news of this node that it
    /// does not recognise is refuted.
    pub fn on_alive(&mut self, alive: Alive, now: u64) {
        if self.left && alive.node == self.me {
            return;
        }
        let [min, max, ..] = alive.versions;
        if min == 0 || max == 0 || min > max {
            return;
        }
        let is_me = alive.node == self.me;
        let mut reclaimed = false;
        match self.nodes.get(&alive.node) {
            None => {
                self.order.push(alive.node.clone());
            }
            Some(known) => {
                if known.alive.addr != alive.addr || known.alive.port != alive.port {
                    // Another address under a known name: only a node that
                    // left may come back elsewhere (memberlist's conflict).
                    if known.state != NodeState::Left {
                        return;
                    }
                    reclaimed = true;
                }
                if !is_me && !reclaimed && alive.incarnation <= known.alive.incarnation {
                    return;
                }
                if is_me && alive.incarnation < known.alive.incarnation {
                    return;
                }
                if is_me && known.state == NodeState::Alive {
                    if alive.incarnation == known.alive.incarnation
                        && alive.meta == known.alive.meta
                        && alive.versions == known.alive.versions
                    {
                        return;
                    }
                    let accused = alive.incarnation;
                    self.refute(accused);
                    return;
                }
            }
        }
        let was_gone = self
            .nodes
            .get(&alive.node)
            .is_none_or(|n| matches!(n.state, NodeState::Dead | NodeState::Left));
        let name = alive.node.clone();
        self.queue(Some(name.clone()), Message::Alive(alive.clone()).encode());
        let node = self.nodes.entry(name.clone()).or_insert_with(|| Node {
            alive: alive.clone(),
            state: NodeState::Dead,
            state_change: now,
            status: MemberStatus::Failed,
            status_ltime: 0,
            suspicion: None,
        });
        node.alive = alive;
        node.suspicion = None;
        if node.state != NodeState::Alive {
            node.state = NodeState::Alive;
            node.state_change = now;
        }
        if was_gone {
            self.serf_joined(&name);
        }
    }

    /// serf's `handleNodeJoin`: the member is alive, unless an intent
    /// heard before it arrived says it is leaving.
    fn serf_joined(&mut self, name: &str) {
        let intent = self.intents.remove(name);
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        node.status = MemberStatus::Alive;
        match intent {
            Some(Intent::Join { ltime, .. }) => node.status_ltime = node.status_ltime.max(ltime),
            Some(Intent::Leave { ltime, .. }) if ltime > node.status_ltime => {
                node.status_ltime = ltime;
                node.status = MemberStatus::Leaving;
            }
            _ => {}
        }
    }

    fn refute(&mut self, accused: u32) {
        let me = self.me.clone();
        let Some(node) = self.nodes.get_mut(&me) else {
            return;
        };
        node.alive.incarnation = node.alive.incarnation.max(accused) + 1;
        let alive = node.alive.clone();
        self.queue(Some(me), Message::Alive(alive).encode());
    }

    /// Replaces this node's metadata (serf's tags): a new incarnation,
    /// passed on by gossip.
    pub fn set_meta(&mut self, meta: Vec<u8>) {
        let me = self.me.clone();
        let Some(node) = self.nodes.get_mut(&me) else {
            return;
        };
        node.alive.meta = meta;
        node.alive.incarnation += 1;
        let alive = node.alive.clone();
        self.queue(Some(me), Message::Alive(alive).encode());
    }

    /// memberlist's `suspectNode`.
    pub fn on_suspect(&mut self, accusation: Accusation, now: u64) {
        let count = self.nodes.len();
        let interval = self.settings.probe_interval_ms;
        let (mult, max_mult) = (
            self.settings.suspicion_mult,
            self.settings.suspicion_max_mult,
        );
        let Some(node) = self.nodes.get_mut(&accusation.node) else {
            return;
        };
        if accusation.incarnation < node.alive.incarnation {
            return;
        }
        if let Some(suspicion) = &mut node.suspicion {
            if accusation.from != suspicion.first
                && suspicion.confirmations.insert(accusation.from.clone())
            {
                let name = accusation.node.clone();
                self.queue(Some(name), Message::Suspect(accusation).encode());
            }
            return;
        }
        if node.state != NodeState::Alive {
            return;
        }
        if accusation.node == self.me {
            self.refute(accusation.incarnation);
            return;
        }
        let needed = mult.saturating_sub(2);
        let needed = if (count as u64).saturating_sub(2) < needed {
            0
        } else {
            needed
        };
        let min_ms = (mult as f64 * lg10_scale(count) * interval as f64) as u64;
        node.alive.incarnation = accusation.incarnation;
        node.state = NodeState::Suspect;
        node.state_change = now;
        node.suspicion = Some(Suspicion {
            confirmations: BTreeSet::new(),
            first: accusation.from.clone(),
            needed,
            min_ms,
            max_ms: min_ms * max_mult,
        });
        let name = accusation.node.clone();
        self.queue(Some(name), Message::Suspect(accusation).encode());
    }

    /// memberlist's `deadNode`, with serf's `handleNodeLeave` on top.
    pub fn on_dead(&mut self, accusation: Accusation, now: u64) {
        let Some(node) = self.nodes.get_mut(&accusation.node) else {
            return;
        };
        if accusation.incarnation < node.alive.incarnation {
            return;
        }
        node.suspicion = None;
        if matches!(node.state, NodeState::Dead | NodeState::Left) {
            return;
        }
        if accusation.node == self.me && !self.left {
            self.refute(accusation.incarnation);
            return;
        }
        let left = accusation.node == accusation.from;
        node.alive.incarnation = accusation.incarnation;
        node.state = if left {
            NodeState::Left
        } else {
            NodeState::Dead
        };
        node.state_change = now;
        node.status = match node.status {
            MemberStatus::Leaving => MemberStatus::Left,
            _ if left => MemberStatus::Left,
            _ => MemberStatus::Failed,
        };
        let name = accusation.node.clone();
        self.queue(Some(name), Message::Dead(accusation).encode());
    }

    /// serf's join and leave intents. Returns whether the intent was news,
    /// in which case it is passed on.
    pub fn on_intent(&mut self, intent: &Intent) -> bool {
        let (ltime, is_leave) = match intent {
            Intent::Join { ltime, .. } => (*ltime, false),
            Intent::Leave { ltime, .. } => (*ltime, true),
        };
        self.witness(ltime);
        let name = intent.node().to_string();
        let me = self.me.clone();
        let left = self.left;
        let Some(node) = self.nodes.get_mut(&name) else {
            let newer = self.intents.get(&name).is_none_or(|known| match known {
                Intent::Join { ltime: l, .. } | Intent::Leave { ltime: l, .. } => ltime > *l,
            });
            // Intents about strangers are kept for when they arrive, but
            // no more of them than a cluster could hold: anyone can send
            // intents about invented names.
            if newer
                && (self.intents.len() < MAX_PENDING_INTENTS || self.intents.contains_key(&name))
            {
                self.intents.insert(name, intent.clone());
            }
            return newer;
        };
        if ltime <= node.status_ltime {
            return false;
        }
        if is_leave && name == me && !left {
            // Someone says this node is leaving: it is not.
            let join = Intent::Join {
                ltime: self.clock,
                node: me,
            };
            self.queue(None, Message::User(join.encode()).encode());
            return false;
        }
        node.status_ltime = ltime;
        if is_leave {
            node.status = match node.status {
                MemberStatus::Alive => MemberStatus::Leaving,
                MemberStatus::Failed | MemberStatus::Left => MemberStatus::Left,
                MemberStatus::Leaving => MemberStatus::Leaving,
            };
        } else if node.status == MemberStatus::Leaving {
            node.status = MemberStatus::Alive;
        }
        true
    }

    /// A serf intent heard from gossip: applied, and passed on when news.
    pub fn on_serf_intent(&mut self, intent: Intent) {
        if self.on_intent(&intent) {
            self.queue(None, Message::User(intent.encode()).encode());
        }
    }

    /// This node leaves, first step: serf's leave intent. Gossip it out
    /// before [`Gossip::depart`]: a peer that hears "dead" first (the Go
    /// agent's memberlist handles it first when both come in one round)
    /// records a failure and a forced leave instead of a clean leave.
    pub fn announce_leave(&mut self) {
        let leave = Intent::Leave {
            ltime: self.clock,
            node: self.me.clone(),
        };
        self.clock += 1;
        self.left = true;
        self.on_intent(&leave);
        self.queue(None, Message::User(leave.encode()).encode());
    }

    /// This node leaves, second step, once the intent has gone out:
    /// memberlist's dead message about itself (from itself, which means
    /// "left").
    pub fn depart(&mut self, now: u64) {
        let incarnation = self.me().incarnation;
        let me = self.me.clone();
        self.on_dead(
            Accusation {
                incarnation,
                node: me.clone(),
                from: me,
            },
            now,
        );
    }

    /// The node to probe next, round-robin over every other node that is
    /// alive or suspect.
    pub fn next_probe(&mut self) -> Option<Alive> {
        for _ in 0..self.order.len() {
            self.next_probe = (self.next_probe + 1) % self.order.len();
            let name = &self.order[self.next_probe];
            if *name == self.me {
                continue;
            }
            if let Some(node) = self.nodes.get(name) {
                if matches!(node.state, NodeState::Alive | NodeState::Suspect) {
                    return Some(node.alive.clone());
                }
            }
        }
        None
    }

    /// A probe of `name` went unanswered: this node suspects it.
    pub fn probe_failed(&mut self, name: &str, now: u64) {
        let Some(node) = self.nodes.get(name) else {
            return;
        };
        // Already suspect: this node's accusation is a confirmation, which
        // shortens the suspicion everywhere it is heard.
        if matches!(node.state, NodeState::Dead | NodeState::Left) {
            return;
        }
        let accusation = Accusation {
            incarnation: node.alive.incarnation,
            node: name.to_string(),
            from: self.me.clone(),
        };
        self.on_suspect(accusation, now);
    }

    /// Other alive nodes, `pick` choosing among them (a random index below
    /// its argument), at most `count`.
    pub fn others(
        &self,
        count: usize,
        exclude: &str,
        mut pick: impl FnMut(usize) -> usize,
    ) -> Vec<Alive> {
        let mut candidates: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.alive.node != self.me && n.alive.node != exclude)
            .filter(|n| matches!(n.state, NodeState::Alive | NodeState::Suspect))
            .collect();
        let mut chosen = Vec::new();
        while chosen.len() < count && !candidates.is_empty() {
            let index = pick(candidates.len()) % candidates.len();
            chosen.push(candidates.swap_remove(index).alive.clone());
        }
        chosen
    }

    /// Time passes: suspicions that ran out declare their node dead, and
    /// members gone long enough are forgotten.
    pub fn tick(&mut self, now: u64) {
        let expired: Vec<Accusation> = self
            .nodes
            .values()
            .filter_map(|node| {
                let suspicion = node.suspicion.as_ref()?;
                (now.saturating_sub(node.state_change) >= suspicion.timeout_ms()).then(|| {
                    Accusation {
                        incarnation: node.alive.incarnation,
                        node: node.alive.node.clone(),
                        from: self.me.clone(),
                    }
                })
            })
            .collect();
        for accusation in expired {
            self.on_dead(accusation, now);
        }
        let (failed_kept, left_kept) = (self.settings.failed_kept_ms, self.settings.left_kept_ms);
        let me = self.me.clone();
        self.nodes.retain(|name, node| {
            let kept = match node.status {
                MemberStatus::Failed => failed_kept,
                MemberStatus::Left => left_kept,
                _ => return true,
            };
            *name == me
                || !matches!(node.state, NodeState::Dead | NodeState::Left)
                || now.saturating_sub(node.state_change) < kept
        });
        let nodes = &self.nodes;
        self.order.retain(|name| nodes.contains_key(name));
    }

    /// The messages to piggyback on one gossip packet, fewest-sent first,
    /// within `budget` bytes (each part costs 2 more in a compound). Each
    /// message is sent `retransmit_mult * ceil(log10(n + 1))` times.
    pub fn take_broadcasts(&mut self, budget: usize) -> Vec<Vec<u8>> {
        let limit = self.settings.retransmit_mult
            * ((self.nodes.len() as f64) + 1.0).log10().ceil().max(1.0) as u32;
        self.broadcasts.sort_by_key(|b| b.sent);
        let mut used = 0;
        let mut parts = Vec::new();
        for broadcast in &mut self.broadcasts {
            let cost = broadcast.message.len() + 2;
            if used + cost > budget || parts.len() == 255 {
                continue;
            }
            used += cost;
            broadcast.sent += 1;
            parts.push(broadcast.message.clone());
        }
        self.broadcasts.retain(|b| b.sent < limit);
        parts
    }

    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// Merges another node's push-pull state (memberlist's `mergeState`,
    /// then serf's `MergeRemoteState`).
    pub fn merge(&mut self, remote: PushPull, now: u64) {
        for pushed in remote.nodes {
            match pushed.state {
                NodeState::Alive => self.on_alive(pushed.alive, now),
                NodeState::Left => {
                    let name = pushed.alive.node;
                    self.on_dead(
                        Accusation {
                            incarnation: pushed.alive.incarnation,
                            node: name.clone(),
                            from: name,
                        },
                        now,
                    );
                }
                NodeState::Dead | NodeState::Suspect => {
                    let me = self.me.clone();
                    self.on_suspect(
                        Accusation {
                            incarnation: pushed.alive.incarnation,
                            node: pushed.alive.node,
                            from: me,
                        },
                        now,
                    );
                }
            }
        }
        let Ok(state) = SerfState::decode(&remote.user_state) else {
            return;
        };
        if state.ltime > 0 {
            self.witness(state.ltime - 1);
        }
        for name in &state.left_members {
            let ltime = state.status_ltimes.get(name).copied().unwrap_or(0) + 1;
            self.on_intent(&Intent::Leave {
                ltime,
                node: name.clone(),
            });
        }
        for (name, ltime) in state.status_ltimes {
            if !state.left_members.contains(&name) {
                self.on_intent(&Intent::Join { ltime, node: name });
            }
        }
    }

    /// This node's push-pull state.
    pub fn push_pull(&self, join: bool) -> PushPull {
        let nodes = self
            .nodes
            .values()
            .map(|node| PushNode {
                alive: node.alive.clone(),
                state: node.state,
            })
            .collect();
        let serf = SerfState {
            ltime: self.clock,
            status_ltimes: self
                .nodes
                .values()
                .map(|n| (n.alive.node.clone(), n.status_ltime))
                .collect(),
            left_members: self
                .nodes
                .values()
                .filter(|n| n.status == MemberStatus::Left)
                .map(|n| n.alive.node.clone())
                .collect(),
            event_ltime: 0,
            query_ltime: 0,
        };
        PushPull {
            join,
            nodes,
            user_state: serf.encode(),
        }
    }

    /// Each member's name and status, borrowed (no copy of its tags).
    pub fn statuses(&self) -> impl Iterator<Item = (&str, MemberStatus)> {
        self.nodes
            .values()
            .map(|node| (node.alive.node.as_str(), node.status))
    }

    pub fn members(&self) -> Vec<MemberView> {
        self.nodes
            .values()
            .map(|node| MemberView {
                name: node.alive.node.clone(),
                addr: node.alive.addr,
                port: node.alive.port,
                status: node.status,
                meta: node.alive.meta.clone(),
            })
            .collect()
    }
}

/// A member's status changed: `before` is `None` for a member new to this
/// node's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub name: String,
    pub before: Option<MemberStatus>,
    pub now: MemberStatus,
}

/// The changes of `now` against `seen`, which is brought up to date: each
/// join, failure, leave and return once, to be logged once (the Go agent
/// logs them at INFO).
pub fn status_changes<'a>(
    seen: &mut BTreeMap<String, MemberStatus>,
    now: impl Iterator<Item = (&'a str, MemberStatus)>,
) -> Vec<StatusChange> {
    let mut changes = Vec::new();
    for (name, status) in now {
        let before = seen.get(name).copied();
        if before != Some(status) {
            seen.insert(name.to_string(), status);
            changes.push(StatusChange {
                name: name.to_string(),
                before,
                now: status,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::super::messages::{decode_packet, VERSIONS};
    use super::*;

    fn alive(name: &str, incarnation: u32) -> Alive {
        Alive {
            incarnation,
            node: name.into(),
            addr: "127.0.0.1".parse().unwrap(),
            port: 7946,
            meta: Vec::new(),
            versions: VERSIONS,
        }
    }

    fn gossip() -> Gossip {
        Gossip::new(alive("me", 1), Settings::agent(1000), 0)
    }

    fn status(gossip: &Gossip, name: &str) -> Option<MemberStatus> {
        gossip.node(name).map(|n| n.status)
    }

    fn accusation(node: &str, incarnation: u32, from: &str) -> Accusation {
        Accusation {
            incarnation,
            node: node.into(),
            from: from.into(),
        }
    }

    fn queued(gossip: &mut Gossip) -> Vec<Message> {
        gossip
            .take_broadcasts(1 << 20)
            .iter()
            .flat_map(|part| decode_packet(part).0)
            .collect()
    }

    #[test]
    fn a_new_node_is_alive_and_passed_on() {
        let mut g = gossip();
        g.on_alive(alive("b", 1), 0);
        assert_eq!(status(&g, "b"), Some(MemberStatus::Alive));
        assert!(queued(&mut g).contains(&Message::Alive(alive("b", 1))));
    }

    #[test]
    fn old_incarnations_change_nothing() {
        let mut g = gossip();
        g.on_alive(alive("b", 5), 0);
        let mut older = alive("b", 4);
        older.meta = vec![1];
        g.on_alive(older, 0);
        assert!(g.node("b").unwrap().alive.meta.is_empty());
    }

    #[test]
    fn suspicion_without_refutation_ends_in_failure() {
        let mut g = gossip();
        g.on_alive(alive("b", 1), 0);
        g.probe_failed("b", 100);
        assert_eq!(g.node("b").unwrap().state, NodeState::Suspect);
        // Two nodes: suspicion lasts mult * 1 * interval = 4 s.
        g.tick(4099);
        assert_eq!(g.node("b").unwrap().state, NodeState::Suspect);
        g.tick(4100);
        assert_eq!(status(&g, "b"), Some(MemberStatus::Failed));
    }

    #[test]
    fn a_refuting_alive_clears_suspicion() {
        let mut g = gossip();
        g.on_alive(alive("b", 1), 0);
        g.probe_failed("b", 0);
        g.on_alive(alive("b", 2), 10);
        g.tick(60_000);
        assert_eq!(status(&g, "b"), Some(MemberStatus::Alive));
    }

    #[test]
    fn confirmations_shorten_suspicion() {
        let mut g = gossip();
        for name in ["b", "c", "d", "e"] {
            g.on_alive(alive(name, 1), 0);
        }
        g.probe_failed("b", 0);
        // Five nodes: min 4 s, max 24 s, two confirmations needed.
        g.tick(5000);
        assert_eq!(g.node("b").unwrap().state, NodeState::Suspect);
        g.on_suspect(accusation("b", 1, "c"), 5000);
        g.on_suspect(accusation("b", 1, "d"), 5000);
        g.tick(5001);
        assert_eq!(status(&g, "b"), Some(MemberStatus::Failed));
    }

    #[test]
    fn a_failed_probe_of_a_suspect_confirms_the_suspicion() {
        let mut g = gossip();
        for name in ["b", "c", "d", "e"] {
            g.on_alive(alive(name, 1), 0);
        }
        g.on_suspect(accusation("b", 1, "c"), 0);
        queued(&mut g);
        g.probe_failed("b", 10);
        assert!(queued(&mut g).contains(&Message::Suspect(accusation("b", 1, "me"))));
    }

    #[test]
    fn accusations_against_this_node_are_refuted() {
        let mut g = gossip();
        queued(&mut g);
        g.on_suspect(accusation("me", 1, "b"), 0);
        g.on_dead(accusation("me", 3, "b"), 0);
        assert_eq!(g.me().incarnation, 4);
        assert_eq!(status(&g, "me"), Some(MemberStatus::Alive));
        assert!(queued(&mut g).contains(&Message::Alive(alive("me", 4))));
    }

    #[test]
    fn a_leave_intent_then_dead_is_left_and_dead_alone_is_failed() {
        let mut g = gossip();
        g.on_alive(alive("b", 1), 0);
        g.on_alive(alive("c", 1), 0);
        g.on_serf_intent(Intent::Leave {
            ltime: 7,
            node: "b".into(),
        });
        assert_eq!(status(&g, "b"), Some(MemberStatus::Leaving));
        g.on_dead(accusation("b", 1, "b"), 0);
        g.on_dead(accusation("c", 1, "me"), 0);
        assert_eq!(status(&g, "b"), Some(MemberStatus::Left));
        assert_eq!(status(&g, "c"), Some(MemberStatus::Failed));
    }

    #[test]
    fn an_intent_before_the_node_is_applied_on_arrival() {
        let mut g = gossip();
        g.on_serf_intent(Intent::Leave {
            ltime: 3,
            node: "b".into(),
        });
        g.on_alive(alive("b", 1), 0);
        assert_eq!(status(&g, "b"), Some(MemberStatus::Leaving));
        g.on_serf_intent(Intent::Join {
            ltime: 4,
            node: "b".into(),
        });
        assert_eq!(status(&g, "b"), Some(MemberStatus::Alive));
    }

    #[test]
    fn intents_about_strangers_are_bounded() {
        let mut g = gossip();
        for n in 0..5000 {
            g.on_serf_intent(Intent::Join {
                ltime: 1,
                node: format!("ghost-{n}"),
            });
        }
        assert_eq!(g.intents.len(), MAX_PENDING_INTENTS);
        assert_eq!(g.pending_broadcasts(), MAX_BROADCASTS);
    }

    #[test]
    fn this_node_leaving_queues_its_intent_then_its_death() {
        let mut g = gossip();
        queued(&mut g);
        g.announce_leave();
        let messages = queued(&mut g);
        assert!(messages
            .iter()
            .any(|m| matches!(m, Message::User(u) if u[0] == 0)));
        assert!(
            !messages.iter().any(|m| matches!(m, Message::Dead(_))),
            "the intent goes out alone: {messages:?}"
        );
        g.depart(0);
        let messages = queued(&mut g);
        assert!(messages.contains(&Message::Dead(accusation("me", 1, "me"))));
        assert_eq!(status(&g, "me"), Some(MemberStatus::Left));
    }

    #[test]
    fn each_change_of_a_members_status_is_told_once() {
        let mut seen = BTreeMap::new();
        let mut g = gossip();
        g.on_alive(alive("b", 1), 0);
        let changes = status_changes(&mut seen, g.statuses());
        let names: Vec<_> = changes
            .iter()
            .map(|c| (c.name.as_str(), c.before, c.now))
            .collect();
        assert!(
            names.contains(&("b", None, MemberStatus::Alive)),
            "{names:?}"
        );
        assert!(status_changes(&mut seen, g.statuses()).is_empty(), "once");
        g.on_dead(accusation("b", 1, "me"), 0);
        assert_eq!(
            status_changes(&mut seen, g.statuses()),
            [StatusChange {
                name: "b".into(),
                before: Some(MemberStatus::Alive),
                now: MemberStatus::Failed
            }]
        );
        assert!(status_changes(&mut seen, g.statuses()).is_empty());
    }

    #[test]
    fn broadcasts_stop_after_their_retransmit_limit() {
        let mut g = gossip();
        // One node: 4 * ceil(log10(2)) = 4 sends each.
        for _ in 0..4 {
            assert!(!g.take_broadcasts(1400).is_empty());
        }
        assert!(g.take_broadcasts(1400).is_empty());
    }

    #[test]
    fn push_pull_state_merges_into_another_view() {
        let mut a = gossip();
        a.on_alive(alive("b", 2), 0);
        a.on_serf_intent(Intent::Leave {
            ltime: 9,
            node: "b".into(),
        });
        a.on_dead(accusation("b", 2, "b"), 0);
        let mut other = Gossip::new(alive("z", 1), Settings::agent(1000), 0);
        other.merge(a.push_pull(true), 0);
        assert_eq!(status(&other, "me"), Some(MemberStatus::Alive));
        assert_eq!(other.node("b").map(|n| n.state), None);
        assert!(other.clock > 9);
    }

    #[test]
    fn failed_members_are_forgotten_after_the_reconnect_timeout() {
        let mut g = gossip();
        g.on_alive(alive("b", 1), 0);
        g.on_dead(accusation("b", 1, "me"), 0);
        g.tick(59_999);
        assert!(g.node("b").is_some());
        g.tick(60_000);
        assert!(g.node("b").is_none());
        assert!(g.next_probe().is_none());
    }

    #[test]
    fn probes_go_round_robin_over_the_others() {
        let mut g = gossip();
        g.on_alive(alive("b", 1), 0);
        g.on_alive(alive("c", 1), 0);
        let names: BTreeSet<String> = (0..4)
            .filter_map(|_| g.next_probe())
            .map(|a| a.node)
            .collect();
        assert_eq!(names, ["b".to_string(), "c".to_string()].into());
    }
}
