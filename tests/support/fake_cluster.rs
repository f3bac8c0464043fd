//! In-memory fakes of the cluster ports: a membership with a fixed member
//! list, and peers that are fake engines, slow ones or dead ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_domain::cluster::{AgentTags, Member, MemberStatus, Seed};
use berth_ports::{Body, DockerEngine, Membership, MembershipError, PeerAgents, PeerError};
use http::{Request, Response};

use super::fake_engine::FakeEngine;

#[derive(Clone, Default)]
pub struct FakeMembership {
    members: Arc<Mutex<Vec<Member>>>,
    published: Arc<Mutex<Vec<AgentTags>>>,
    /// Joins that fail before one succeeds.
    failing_joins: Arc<Mutex<usize>>,
    joins: Arc<Mutex<usize>>,
}

impl FakeMembership {
    pub fn with_members(members: Vec<Member>) -> Self {
        FakeMembership {
            members: Arc::new(Mutex::new(members)),
            ..FakeMembership::default()
        }
    }

    pub fn failing_joins(self, count: usize) -> Self {
        *self.failing_joins.lock().unwrap() = count;
        self
    }

    pub fn published(&self) -> Vec<AgentTags> {
        self.published.lock().unwrap().clone()
    }

    pub fn joins(&self) -> usize {
        *self.joins.lock().unwrap()
    }
}

impl Membership for FakeMembership {
    async fn members(&self) -> Vec<Member> {
        self.members.lock().unwrap().clone()
    }

    async fn publish(&self, tags: AgentTags) -> Result<(), MembershipError> {
        self.published.lock().unwrap().push(tags);
        Ok(())
    }

    async fn join(&self, _seeds: &[Seed]) -> Result<usize, MembershipError> {
        *self.joins.lock().unwrap() += 1;
        let mut failing = self.failing_joins.lock().unwrap();
        if *failing > 0 {
            *failing -= 1;
            return Err(MembershipError("connection refused".into()));
        }
        Ok(1)
    }

    async fn leave(&self) {}
}

/// How a fake peer behaves.
#[derive(Clone)]
pub enum FakePeer {
    Answers(FakeEngine),
    /// Answers after this long.
    Slow(Duration, FakeEngine),
    /// Refuses at once, as a host with nothing on the port.
    Dead,
    /// Never answers, as a host whose packets vanish.
    Silent,
}

#[derive(Clone, Default)]
pub struct FakePeers {
    peers: Arc<HashMap<SocketAddr, FakePeer>>,
}

impl FakePeers {
    pub fn new(peers: HashMap<SocketAddr, FakePeer>) -> Self {
        FakePeers {
            peers: Arc::new(peers),
        }
    }
}

impl PeerAgents for FakePeers {
    async fn forward(
        &self,
        peer: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Body>, PeerError> {
        let unreachable = || PeerError::Unreachable {
            peer,
            cause: "connection refused".into(),
        };
        match self.peers.get(&peer).ok_or_else(unreachable)? {
            FakePeer::Answers(engine) => engine.forward(request).await.map_err(|_| unreachable()),
            FakePeer::Slow(delay, engine) => {
                tokio::time::sleep(*delay).await;
                engine.forward(request).await.map_err(|_| unreachable())
            }
            FakePeer::Dead => Err(unreachable()),
            FakePeer::Silent => std::future::pending().await,
        }
    }
}

/// A member at 10.0.<n/256>.<n%256>:9001 named `name`.
pub fn member(n: u16, name: &str, role: &str, swarm: bool, leader: bool) -> Member {
    Member {
        address: std::net::IpAddr::from([10, 0, (n / 256) as u8, (n % 256) as u8]),
        agent_port: 9001,
        node_name: name.to_string(),
        node_role: role.to_string(),
        swarm,
        leader,
        edge_key_set: false,
        status: MemberStatus::Alive,
        last_contact: None,
    }
}

pub fn address_of(member: &Member) -> SocketAddr {
    SocketAddr::new(member.address, member.agent_port)
}
