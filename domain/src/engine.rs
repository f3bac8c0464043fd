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

/// Facts about the local engine. They are refreshed periodically, so a node
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
