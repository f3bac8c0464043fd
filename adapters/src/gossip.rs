//! The `Membership` port on the `serf` crate (a Rust port of HashiCorp
//! serf; it does not speak Go serf's wire format, so a berth cluster holds
//! berth agents only until a Go-compatible adapter replaces this one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_domain::cluster::{AgentTags, Member, MemberStatus, Seed};
use berth_ports::{Membership, MembershipError};
use serf::net::NetTransportOptions;
use serf::tokio::{TokioNetTransport, TokioSocketAddrResolver, TokioTcp, TokioTcpSerf};
use serf::types::{MaybeResolvedAddress, MemberStatus as SerfStatus, Tags};
use serf::{DefaultDelegate, MemberlistOptions, Options};
use smol_str::SmolStr;
use tracing::debug;

type Transport = TokioNetTransport<SmolStr, TokioSocketAddrResolver, TokioTcp>;
type Serf = TokioTcpSerf<SmolStr, TokioSocketAddrResolver, DefaultDelegate<Transport>>;

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
}

#[derive(Clone)]
pub struct SerfMembership {
    serf: Arc<Serf>,
    advertise: SocketAddr,
}

impl SerfMembership {
    /// Binds the gossip port (TCP and UDP) and starts gossiping, alone
    /// until [`Membership::join`].
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(config: GossipConfig) -> Result<Self, MembershipError> {
        let mut transport = NetTransportOptions::new(SmolStr::new(&config.node_id))
            .with_advertise_address(config.advertise);
        transport.add_bind_address(config.bind);
        let memberlist = MemberlistOptions::lan()
            .with_probe_interval(config.probe_interval)
            .with_probe_timeout(config.probe_timeout);
        let options = Options::new()
            .with_tags(config.tags.into_iter())
            .with_memberlist_options(memberlist)
            // The Go agent's settings (reference §7).
            .with_reconnect_interval(Duration::from_secs(10))
            .with_reconnect_timeout(Duration::from_secs(60));
        let serf = Serf::new(transport, options).await.map_err(|error| {
            MembershipError(format!("cannot start gossip on {}: {error}", config.bind))
        })?;
        Ok(SerfMembership {
            serf: Arc::new(serf),
            advertise: config.advertise,
        })
    }
}

fn status(status: &SerfStatus) -> MemberStatus {
    match status {
        SerfStatus::Alive => MemberStatus::Alive,
        SerfStatus::Leaving => MemberStatus::Leaving,
        SerfStatus::Left => MemberStatus::Left,
        _ => MemberStatus::Failed,
    }
}

impl Membership for SerfMembership {
    async fn members(&self) -> Vec<Member> {
        self.serf
            .members()
            .await
            .iter()
            .filter_map(|member| {
                Member::from_tags(
                    member.node().address().ip(),
                    status(member.status()),
                    member.tags().iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
            })
            .collect()
    }

    async fn publish(&self, tags: AgentTags) -> Result<(), MembershipError> {
        let tags: Tags = tags.into_iter().collect();
        self.serf
            .set_tags(tags)
            .await
            .map_err(|error| MembershipError(format!("cannot publish tags: {error}")))
    }

    async fn join(&self, seeds: &[Seed]) -> Result<usize, MembershipError> {
        let mut addresses = Vec::new();
        let mut unresolved = Vec::new();
        for seed in seeds {
            match tokio::net::lookup_host((seed.host.as_str(), seed.port)).await {
                Ok(found) => addresses.extend(found.filter(|a| *a != self.advertise)),
                Err(error) => unresolved.push(format!("{}: {error}", seed.host)),
            }
        }
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            if unresolved.is_empty() {
                // The seeds name only this agent: the first of its cluster.
                // Later agents join it through the same seeds.
                return Ok(0);
            }
            return Err(MembershipError(format!(
                "no peer to join: {}",
                unresolved.join("; ")
            )));
        }
        debug!(?addresses, "joining the cluster");
        // One address at a time: serf's join_many future is not Send.
        let mut joined = 0;
        let mut last_error = String::new();
        for address in addresses {
            match self
                .serf
                .join(MaybeResolvedAddress::resolved(address), false)
                .await
            {
                Ok(_) => joined += 1,
                Err(error) => last_error = format!("{address}: {error}"),
            }
        }
        if joined == 0 {
            return Err(MembershipError(format!("cannot join: {last_error}")));
        }
        Ok(joined)
    }

    async fn leave(&self) {
        if let Err(error) = self.serf.leave().await {
            debug!(%error, "leaving the cluster");
        }
        let _ = self.serf.shutdown().await;
    }
}
