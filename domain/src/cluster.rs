//! The agent cluster as the domain sees it: members and their tags
//! (reference §7), seed addresses, and who answers for a node or for the
//! swarm managers.

use std::net::IpAddr;

use crate::engine::{EngineFacts, SwarmRole};

/// Tag keys, exactly as the Go agent publishes them.
pub const TAG_AGENT_PORT: &str = "AgentPort";
pub const TAG_NODE_NAME: &str = "NodeName";
pub const TAG_NODE_ROLE: &str = "DockerNodeRole";
pub const TAG_ENGINE_STATUS: &str = "DockerEngineStatus";
pub const TAG_LEADER: &str = "NodeIsLeader";
pub const TAG_EDGE_KEY_SET: &str = "EdgeKeySet";

/// A member's state in gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Alive,
    Leaving,
    Left,
    Failed,
}

impl MemberStatus {
    pub const ALL: [MemberStatus; 4] = [
        MemberStatus::Alive,
        MemberStatus::Leaving,
        MemberStatus::Left,
        MemberStatus::Failed,
    ];

    /// As metrics and `berth status` name it.
    pub fn label(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// One agent of the cluster, as gossip reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub address: IpAddr,
    pub agent_port: u16,
    pub node_name: String,
    /// `manager` or `worker` (`manager` on standalone engines, as in Go).
    pub node_role: String,
    /// Whether the member's engine is a swarm node.
    pub swarm: bool,
    pub leader: bool,
    pub edge_key_set: bool,
    pub status: MemberStatus,
    /// When this agent last had an answer from it (seconds since the
    /// epoch); `None` for itself, or before the first probe answered.
    pub last_contact: Option<u64>,
}

impl Member {
    pub fn is_alive(&self) -> bool {
        self.status == MemberStatus::Alive
    }

    fn is_swarm_manager(&self) -> bool {
        self.swarm && self.node_role == "manager"
    }

    /// Builds a member from its gossip address, status and tags. Tags that
    /// are missing or malformed give `None`: such a member is not an agent
    /// berth can talk to.
    pub fn from_tags<'a>(
        address: IpAddr,
        status: MemberStatus,
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<Member> {
        let mut member = Member {
            address,
            agent_port: 0,
            node_name: String::new(),
            node_role: String::new(),
            swarm: false,
            leader: false,
            edge_key_set: false,
            status,
            last_contact: None,
        };
        for (key, value) in tags {
            match key {
                TAG_AGENT_PORT => member.agent_port = value.parse().ok()?,
                TAG_NODE_NAME => member.node_name = value.to_string(),
                TAG_NODE_ROLE => member.node_role = value.to_string(),
                TAG_ENGINE_STATUS => member.swarm = value == "swarm",
                TAG_LEADER => member.leader = value == "1",
                TAG_EDGE_KEY_SET => member.edge_key_set = true,
                _ => {}
            }
        }
        (member.agent_port != 0).then_some(member)
    }
}

/// Tags as published: key and value.
pub type AgentTags = Vec<(&'static str, String)>;

/// The tags this agent publishes, derived from its engine's facts.
pub fn agent_tags(agent_port: u16, facts: &EngineFacts, edge_key_set: bool) -> AgentTags {
    let role = match facts.role {
        SwarmRole::Worker => "worker",
        SwarmRole::Manager { .. } | SwarmRole::Standalone => "manager",
    };
    let mut tags = vec![
        (TAG_AGENT_PORT, agent_port.to_string()),
        (TAG_NODE_NAME, facts.node_name.clone()),
        (TAG_NODE_ROLE, role.to_string()),
        (
            TAG_ENGINE_STATUS,
            if facts.is_swarm_node() {
                "swarm"
            } else {
                "standalone"
            }
            .to_string(),
        ),
    ];
    if facts.role == (SwarmRole::Manager { leader: true }) {
        tags.push((TAG_LEADER, "1".to_string()));
    }
    if edge_key_set {
        tags.push((TAG_EDGE_KEY_SET, "set".to_string()));
    }
    tags
}

/// The alive member whose `NodeName` is `name` (reference §7, lookups).
pub fn member_for_node<'a>(members: &'a [Member], name: &str) -> Option<&'a Member> {
    members.iter().find(|m| m.is_alive() && m.node_name == name)
}

/// Where a swarm-manager request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagerChoice<'a> {
    /// This node is a manager, or a standalone engine with no swarm manager
    /// in its cluster: its own engine answers.
    Local,
    Peer(&'a Member),
    /// A swarm worker with no alive manager agent.
    NoneAlive,
}

/// Picks the agent for a manager operation, preferring the leader.
pub fn manager_for<'a>(members: &'a [Member], local: &EngineFacts) -> ManagerChoice<'a> {
    if matches!(local.role, SwarmRole::Manager { .. }) {
        return ManagerChoice::Local;
    }
    let mut managers = members
        .iter()
        .filter(|m| m.is_alive() && m.is_swarm_manager());
    let first = managers.clone().next();
    match managers.find(|m| m.leader).or(first) {
        Some(manager) => ManagerChoice::Peer(manager),
        None if local.role == SwarmRole::Standalone => ManagerChoice::Local,
        None => ManagerChoice::NoneAlive,
    }
}

/// A seed to join: a host (name or IP) and a gossip port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub host: String,
    pub port: u16,
}

/// Parses `AGENT_CLUSTER_ADDR`: comma-separated DNS names, IPs or
/// `host:port` (IPv6 as `[addr]:port`), `default_port` where none is given.
/// `None` for an empty entry or a bad port.
pub fn parse_seeds(text: &str, default_port: u16) -> Option<Vec<Seed>> {
    text.split(',')
        .map(str::trim)
        .map(|entry| {
            if entry.is_empty() {
                return None;
            }
            if let Ok(ip) = entry.parse::<IpAddr>() {
                return Some(Seed {
                    host: ip.to_string(),
                    port: default_port,
                });
            }
            if let Some(rest) = entry.strip_prefix('[') {
                let (host, after) = rest.split_once(']')?;
                let port = match after.strip_prefix(':') {
                    Some(port) => port.parse().ok().filter(|p| *p != 0)?,
                    None if after.is_empty() => default_port,
                    None => return None,
                };
                return Some(Seed {
                    host: host.to_string(),
                    port,
                });
            }
            match entry.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() => Some(Seed {
                    host: host.to_string(),
                    port: port.parse().ok().filter(|p| *p != 0)?,
                }),
                Some(_) => None,
                None => Some(Seed {
                    host: entry.to_string(),
                    port: default_port,
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: &str, swarm: bool, leader: bool, status: MemberStatus) -> Member {
        Member {
            address: "10.0.0.1".parse().unwrap(),
            agent_port: 9001,
            node_name: name.into(),
            node_role: role.into(),
            swarm,
            leader,
            edge_key_set: false,
            status,
            last_contact: None,
        }
    }

    fn facts(role: SwarmRole) -> EngineFacts {
        EngineFacts {
            node_name: "local".into(),
            role,
            node_id: String::new(),
            engine_version: String::new(),
        }
    }

    #[test]
    fn tags_round_trip() {
        let local = facts(SwarmRole::Manager { leader: true });
        let tags = agent_tags(9001, &local, true);
        let member = Member::from_tags(
            "10.0.0.9".parse().unwrap(),
            MemberStatus::Alive,
            tags.iter().map(|(k, v)| (*k, v.as_str())),
        )
        .unwrap();
        assert_eq!(member.agent_port, 9001);
        assert_eq!(member.node_name, "local");
        assert_eq!(member.node_role, "manager");
        assert!(member.swarm && member.leader && member.edge_key_set);
        let standalone = agent_tags(9001, &facts(SwarmRole::Standalone), false);
        assert!(standalone.contains(&(TAG_NODE_ROLE, "manager".into())));
        assert!(standalone.contains(&(TAG_ENGINE_STATUS, "standalone".into())));
        assert!(!standalone
            .iter()
            .any(|(k, _)| *k == TAG_LEADER || *k == TAG_EDGE_KEY_SET));
        let worker = agent_tags(9001, &facts(SwarmRole::Worker), false);
        assert!(worker.contains(&(TAG_NODE_ROLE, "worker".into())));
    }

    #[test]
    fn members_without_a_usable_port_are_not_agents() {
        let ip = "10.0.0.9".parse().unwrap();
        assert!(Member::from_tags(ip, MemberStatus::Alive, [("NodeName", "x")]).is_none());
        assert!(Member::from_tags(ip, MemberStatus::Alive, [("AgentPort", "x")]).is_none());
    }

    #[test]
    fn node_lookup_uses_alive_members_only() {
        let members = vec![
            member("a", "worker", true, false, MemberStatus::Failed),
            member("b", "worker", true, false, MemberStatus::Alive),
        ];
        assert!(member_for_node(&members, "a").is_none());
        assert_eq!(member_for_node(&members, "b").unwrap().node_name, "b");
        assert!(member_for_node(&members, "c").is_none());
    }

    #[test]
    fn manager_choice() {
        let members = vec![
            member("m1", "manager", true, false, MemberStatus::Alive),
            member("m2", "manager", true, true, MemberStatus::Alive),
            member("s", "manager", false, false, MemberStatus::Alive),
        ];
        let worker = facts(SwarmRole::Worker);
        assert_eq!(
            manager_for(&members, &worker),
            ManagerChoice::Peer(&members[1]),
            "the leader first"
        );
        let no_leader = &members[..1];
        assert_eq!(
            manager_for(no_leader, &worker),
            ManagerChoice::Peer(&members[0])
        );
        assert_eq!(
            manager_for(&members, &facts(SwarmRole::Manager { leader: false })),
            ManagerChoice::Local
        );
        let standalone_only = &members[2..];
        assert_eq!(
            manager_for(standalone_only, &worker),
            ManagerChoice::NoneAlive
        );
        assert_eq!(
            manager_for(standalone_only, &facts(SwarmRole::Standalone)),
            ManagerChoice::Local
        );
        assert_eq!(
            manager_for(&members, &facts(SwarmRole::Standalone)),
            ManagerChoice::Peer(&members[1])
        );
        let failed = vec![member("m", "manager", true, true, MemberStatus::Failed)];
        assert_eq!(manager_for(&failed, &worker), ManagerChoice::NoneAlive);
    }

    #[test]
    fn seeds() {
        let seed = |host: &str, port| Seed {
            host: host.into(),
            port,
        };
        assert_eq!(
            parse_seeds("tasks.agent", 7946),
            Some(vec![seed("tasks.agent", 7946)])
        );
        assert_eq!(
            parse_seeds("10.0.0.1, 10.0.0.2:8000,[::1]:7000,[fe80::1],::2", 7946),
            Some(vec![
                seed("10.0.0.1", 7946),
                seed("10.0.0.2", 8000),
                seed("::1", 7000),
                seed("fe80::1", 7946),
                seed("::2", 7946)
            ])
        );
        for bad in ["", "a,,b", "host:abc", ":7946", "host:0", "[::1]x"] {
            assert_eq!(parse_seeds(bad, 7946), None, "{bad}");
        }
    }
}
