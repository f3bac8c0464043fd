//! Engine facts through bollard: `GET /info`, and `GET /nodes/<id>` on a
//! manager to learn whether it leads.

use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_ports::EngineError;
use bollard::models::{ContainerInspectResponse, LocalNodeState, Node, SystemInfo};

use super::DockerSocket;

/// API 1.41 (engine 20.10) has every field berth reads, and newer engines
/// still serve it.
const FACTS_API: &str = "/v1.41";

/// Read over the socket's own pooled connections, as every request is:
/// no client of its own, and a socket that appears after start is found.
pub(super) async fn read_facts(socket: &DockerSocket) -> Result<EngineFacts, EngineError> {
    let info: SystemInfo = socket.get_json(&format!("{FACTS_API}/info")).await?;
    let node = match swarm_manager_node_id(&info) {
        Some(node_id) => Some(
            socket
                .get_json::<Node>(&format!("{FACTS_API}/nodes/{node_id}"))
                .await?,
        ),
        None => None,
    };
    Ok(facts_from_info(&info, node.as_ref()))
}

fn swarm_manager_node_id(info: &SystemInfo) -> Option<String> {
    let swarm = info.swarm.as_ref()?;
    let node_id = swarm.node_id.clone().filter(|id| !id.is_empty())?;
    swarm.control_available.unwrap_or(false).then_some(node_id)
}

/// Maps the engine's answers to facts. `node` is the inspected swarm node,
/// present only on a manager.
pub fn facts_from_info(info: &SystemInfo, node: Option<&Node>) -> EngineFacts {
    let swarm = info.swarm.as_ref();
    let node_id = swarm.and_then(|s| s.node_id.clone()).unwrap_or_default();
    let active = swarm
        .and_then(|s| s.local_node_state.as_ref())
        .is_some_and(|state| *state != LocalNodeState::INACTIVE && *state != LocalNodeState::EMPTY);
    let role = if node_id.is_empty() || !active {
        SwarmRole::Standalone
    } else if swarm.and_then(|s| s.control_available).unwrap_or(false) {
        let leader = node
            .and_then(|n| n.manager_status.as_ref())
            .and_then(|status| status.leader)
            .unwrap_or(false);
        SwarmRole::Manager { leader }
    } else {
        SwarmRole::Worker
    };
    EngineFacts {
        node_name: info.name.clone().unwrap_or_default(),
        role,
        node_id,
        engine_version: info.server_version.clone().unwrap_or_default(),
    }
}

/// What inspecting the agent's own container tells (reference §9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnContainer {
    /// The first IPv4 address on a network other than the swarm ingress.
    pub address: Option<std::net::IpAddr>,
    /// The `com.docker.swarm.service.name` label.
    pub service_name: Option<String>,
    /// Each network the container is on, by name, with its IPv4 address
    /// there (`berth doctor` shows them).
    pub networks: Vec<(String, std::net::IpAddr)>,
}

/// Inspects the container named `hostname` (a container's default host
/// name is its ID). `None` when berth does not run in a container.
pub(super) async fn own_container(socket: &DockerSocket, hostname: &str) -> Option<OwnContainer> {
    let container: ContainerInspectResponse = socket
        .get_json(&format!("{FACTS_API}/containers/{hostname}/json"))
        .await
        .ok()?;
    let service_name = container
        .config
        .as_ref()
        .and_then(|config| config.labels.as_ref())
        .and_then(|labels| labels.get("com.docker.swarm.service.name").cloned());
    let mut networks: Vec<(String, bollard::models::EndpointSettings)> = container
        .network_settings
        .and_then(|settings| settings.networks)
        .map(|networks| networks.into_iter().collect())
        .unwrap_or_default();
    // A stable choice: networks by name, the ingress network never.
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    let networks: Vec<(String, std::net::IpAddr)> = networks
        .into_iter()
        .filter_map(|(name, endpoint)| {
            let address = endpoint
                .ip_address
                .filter(|ip| !ip.is_empty())?
                .parse()
                .ok()?;
            Some((name, address))
        })
        .collect();
    let address = networks
        .iter()
        .find(|(name, _)| name != "ingress")
        .map(|(_, address)| *address);
    Some(OwnContainer {
        address,
        service_name,
        networks,
    })
}
