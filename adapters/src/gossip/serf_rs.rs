//! The `Membership` port on the `serf` crate (a Rust port of HashiCorp
//! serf). It does not speak Go serf's wire format, so a cluster on it holds
//! berth agents only; `AGENT_CLUSTER_GOSSIP=serf-rs` chooses it.

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

use super::{resolve_seeds, GossipConfig};

type Transport = TokioNetTransport<SmolStr, TokioSocketAddrResolver, TokioTcp>;
type Serf = TokioTcpSerf<SmolStr, TokioSocketAddrResolver, DefaultDelegate<Transport>>;

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
        if config.keyring.is_some() {
            return Err(MembershipError(
                "gossip encryption needs the memberlist gossip, not serf-rs".into(),
            ));
        }
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
        let Some(addresses) = resolve_seeds(seeds, self.advertise).await? else {
            return Ok(0);
        };
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
