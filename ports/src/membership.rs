//! Cluster membership: who the other agents are, and what this agent tells
//! them about itself.

use std::fmt;
use std::future::Future;

use berth_domain::cluster::{AgentTags, Member, Seed};

#[derive(Debug, Clone)]
pub struct MembershipError(pub String);

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MembershipError {}

pub trait Membership: Clone + Send + Sync + 'static {
    /// Every member gossip knows, this agent included, with its status.
    fn members(&self) -> impl Future<Output = Vec<Member>> + Send;

    /// Replaces this agent's tags; the cluster sees them within seconds.
    ///
    /// # Errors
    /// When gossip refuses the tags (too large) or has stopped.
    fn publish(&self, tags: AgentTags) -> impl Future<Output = Result<(), MembershipError>> + Send;

    /// Resolves each seed (a DNS name gives every address it has) and joins
    /// the cluster through them. Returns how many peers were reached: 0 when
    /// the seeds name only this agent (the first of its cluster).
    ///
    /// # Errors
    /// When no seed could be resolved or reached.
    fn join(&self, seeds: &[Seed]) -> impl Future<Output = Result<usize, MembershipError>> + Send;

    /// Tells the cluster this agent is leaving, then stops gossiping.
    fn leave(&self) -> impl Future<Output = ()> + Send;
}
