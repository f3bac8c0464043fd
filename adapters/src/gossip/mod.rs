//! The `Membership` port, two ways: [`memberlist`] speaks HashiCorp
//! memberlist and serf on the wire, as the Go Portainer agent does (the
//! default); [`serf_rs`] uses the `serf` crate, which berth agents alone
//! understand.

pub mod memberlist;
pub mod probe;
#[cfg(feature = "serf-rs")]
pub mod serf_rs;

use std::net::SocketAddr;
use std::time::Duration;

use berth_domain::cluster::{AgentTags, Seed};
use berth_domain::gossip::keyring::Keyring;
use berth_ports::{Membership, MembershipError};

/// How this agent takes part in gossip.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Unique in the cluster: the node name and something per process.
    pub node_id: String,
    pub bind: SocketAddr,
    /// What peers use to reach this agent's gossip.
    pub advertise: SocketAddr,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub tags: AgentTags,
    /// serf's gossip encryption key(s); `None` gossips in the clear.
    pub keyring: Option<Keyring>,
}

/// Every address the seeds resolve to, this agent's own left out, sorted
/// and without repeats. `None` when the seeds name only this agent (the
/// first of its cluster: later agents join it through the same seeds).
///
/// # Errors
/// When no seed resolves.
pub async fn resolve_seeds(
    seeds: &[Seed],
    own: SocketAddr,
) -> Result<Option<Vec<SocketAddr>>, MembershipError> {
    let mut addresses = Vec::new();
    let mut unresolved = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host((seed.host.as_str(), seed.port)).await {
            Ok(found) => addresses.extend(found.filter(|a| *a != own)),
            Err(error) => unresolved.push(format!("{}: {error}", seed.host)),
        }
    }
    addresses.sort();
    addresses.dedup();
    if !addresses.is_empty() {
        return Ok(Some(addresses));
    }
    if unresolved.is_empty() {
        return Ok(None);
    }
    Err(MembershipError(format!(
        "no peer to join: {}",
        unresolved.join("; ")
    )))
}

/// The gossip adapter chosen at start (`AGENT_CLUSTER_GOSSIP`).
#[derive(Clone)]
pub enum AnyMembership {
    Memberlist(memberlist::MemberlistMembership),
    #[cfg(feature = "serf-rs")]
    SerfRs(serf_rs::SerfMembership),
}

impl Membership for AnyMembership {
    async fn members(&self) -> Vec<berth_domain::cluster::Member> {
        match self {
            AnyMembership::Memberlist(gossip) => gossip.members().await,
            #[cfg(feature = "serf-rs")]
            AnyMembership::SerfRs(gossip) => gossip.members().await,
        }
    }

    async fn publish(&self, tags: AgentTags) -> Result<(), MembershipError> {
        match self {
            AnyMembership::Memberlist(gossip) => gossip.publish(tags).await,
            #[cfg(feature = "serf-rs")]
            AnyMembership::SerfRs(gossip) => gossip.publish(tags).await,
        }
    }

    async fn join(&self, seeds: &[Seed]) -> Result<usize, MembershipError> {
        match self {
            AnyMembership::Memberlist(gossip) => gossip.join(seeds).await,
            #[cfg(feature = "serf-rs")]
            AnyMembership::SerfRs(gossip) => gossip.join(seeds).await,
        }
    }

    async fn leave(&self) {
        match self {
            AnyMembership::Memberlist(gossip) => gossip.leave().await,
            #[cfg(feature = "serf-rs")]
            AnyMembership::SerfRs(gossip) => gossip.leave().await,
        }
    }
}
