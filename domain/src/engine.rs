//! What berth knows about its own Docker engine.

/// The engine's place in a swarm, from `GET /info` (and `GET /nodes/<id>`
/// for leadership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwarmRole {
    Standalone,
    Worker,
    Manager { leader: bool },
}

impl SwarmRole {
    /// The `DockerNodeRole` tag value; empty on a standalone engine.
    pub fn tag(&self) -> &'static str {
        match self {
            SwarmRole::Standalone => "",
            SwarmRole::Worker => "worker",
            SwarmRole::Manager { .. } => "manager",
        }
    }
}

/// Facts about the local engine. They follow the engine's events, so a node
/// that is promoted, demoted or renamed is seen without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFacts {
    /// The engine's `Name`, which is the swarm node name Portainer targets.
    pub node_name: String,
    pub role: SwarmRole,
    /// The swarm node ID; empty on a standalone engine.
    pub node_id: String,
    pub engine_version: String,
}

impl EngineFacts {
    /// Facts before the engine has answered once.
    pub fn unknown() -> Self {
        EngineFacts {
            node_name: String::new(),
            role: SwarmRole::Standalone,
            node_id: String::new(),
            engine_version: String::new(),
        }
    }

    pub fn is_swarm_node(&self) -> bool {
        self.role != SwarmRole::Standalone
    }
}

/// The engine's events stream, filtered to the events after which its facts
/// may differ: a swarm node made, updated (promoted, demoted, a new leader)
/// or removed, the daemon's configuration reloaded, and a network made or
/// destroyed (joining a swarm makes its `ingress` network). Containers
/// starting and stopping are left out, so a busy engine does not make berth
/// read its facts at each. The filter, percent-encoded, is
/// `{"type":["node","daemon","network"],"event":["create","update","remove","destroy","reload"]}`
/// (Docker ANDs the two keys and ORs the values within each).
pub const FACT_EVENTS_PATH: &str = "/v1.41/events?filters=%7B%22type%22%3A%5B%22node%22%2C%22daemon%22%2C%22network%22%5D%2C%22event%22%3A%5B%22create%22%2C%22update%22%2C%22remove%22%2C%22destroy%22%2C%22reload%22%5D%7D";

#[cfg(test)]
mod tests {
    use super::FACT_EVENTS_PATH;

    fn percent_decoded(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'%' {
                let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                at += 3;
            } else {
                out.push(bytes[at]);
                at += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_fact_events_filter_names_what_changes_facts_and_nothing_busier() {
        let (path, query) = FACT_EVENTS_PATH.split_once('?').unwrap();
        assert_eq!(path, "/v1.41/events");
        let filters: serde_json::Value =
            serde_json::from_str(&percent_decoded(query.strip_prefix("filters=").unwrap()))
                .unwrap();
        assert_eq!(
            filters,
            serde_json::json!({
                "type": ["node", "daemon", "network"],
                "event": ["create", "update", "remove", "destroy", "reload"],
            })
        );
        let events = filters["event"].as_array().unwrap();
        for busy in ["start", "die", "connect", "disconnect"] {
            assert!(!events.iter().any(|event| event == busy), "{busy}");
        }
    }
}
