//! Header names and fixed values of the Portainer agent protocol.

use crate::kubernetes::Platform;

/// The agent version berth reports in `Portainer-Agent`. Portainer compares
/// it with its own; berth speaks the 2.23 protocol.
pub const AGENT_VERSION: &str = "2.23.0";
/// The agent API version (`Portainer-Agent-API-Version`).
pub const AGENT_API_VERSION: &str = "2";
/// `Portainer-Agent-Platform` for Docker (and Podman, which reports as Docker).
pub const PLATFORM_DOCKER: &str = "1";
/// `Portainer-Agent-Platform` for Kubernetes.
pub const PLATFORM_KUBERNETES: &str = "2";

pub const RESPONSE_AGENT: &str = "Portainer-Agent";
pub const RESPONSE_API_VERSION: &str = "Portainer-Agent-API-Version";
pub const RESPONSE_PLATFORM: &str = "Portainer-Agent-Platform";

pub const REQUEST_TARGET: &str = "X-PortainerAgent-Target";
pub const REQUEST_MANAGER_OPERATION: &str = "X-PortainerAgent-ManagerOperation";
pub const REQUEST_PUBLIC_KEY: &str = "X-PortainerAgent-PublicKey";
pub const REQUEST_SIGNATURE: &str = "X-PortainerAgent-Signature";

/// The three headers every agent response carries, errors included, so that
/// Portainer recognises an agent even from a refused request.
pub fn common_response_headers(platform: Platform) -> [(&'static str, &'static str); 3] {
    [
        (RESPONSE_AGENT, AGENT_VERSION),
        (RESPONSE_API_VERSION, AGENT_API_VERSION),
        (RESPONSE_PLATFORM, platform.wire_value()),
    ]
}

/// Set on requests one agent forwards to another: the receiver answers them
/// itself and never forwards them again, so agents cannot loop.
pub const REQUEST_HOP: &str = "X-PortainerAgent-Hop";
/// On cluster-wide lists: the nodes missing from the list, and why.
pub const RESPONSE_UNAVAILABLE_NODES: &str = "X-PortainerAgent-Unavailable-Nodes";

/// berth's proof, between Edge agents of one environment, that a `GET /key`
/// comes from a peer (see `edge::key::peer_proof`).
pub const REQUEST_EDGE_KEY_PROOF: &str = "X-BerthAgent-EdgeKeyProof";
