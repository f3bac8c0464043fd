//! The cluster use cases: forwarding a request to another node's agent or
//! to a manager's, gathering a list from every node, listing the agents,
//! and keeping this agent's tags and membership current.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_domain::aggregate::{self, NodeAnswer, NodeResult};
use berth_domain::cluster::{self, ManagerChoice, Member, MemberStatus, Seed};
use berth_domain::engine::EngineFacts;
use berth_domain::error::AgentError;
use berth_domain::headers::{REQUEST_HOP, REQUEST_TARGET, RESPONSE_UNAVAILABLE_NODES};
use berth_domain::routing::ListKind;
use berth_ports::{Body, DockerEngine, Membership, PeerAgents, PeerError};
use futures_util::future::join_all;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::edge::keys::EdgeKeys;
use crate::facts::FactsReceiver;
use crate::metrics::Metrics;
use crate::{proxy, responses};

/// The most one node's list may weigh before it counts as a failure.
const MAX_LIST_BYTES: usize = 256 * 1024 * 1024;

/// `AGENT_FANOUT_BUDGET`'s default: the node answers that cluster-wide
/// lists may wait on at once, all lists together. Each answer in flight
/// holds a peer connection and a node's list (some 50 KiB with 10
/// containers, `scripts/bench-fanout-memory`): unbounded, 32 lists at once
/// over 32 nodes held 1,000 of them and 54 MiB. A list over N nodes takes
/// N of these (all of them past this size), so a single node's lists are
/// as good as unbounded and a large cluster's are queued a few at a time.
pub const DEFAULT_FANOUT_BUDGET: usize = 128;

/// The gossip membership and the way to reach peers.
#[derive(Clone)]
pub struct Cluster<M, P> {
    membership: M,
    peers: P,
    fanout_timeout: Duration,
    metrics: Metrics,
    list_budget: ListBudget,
    /// The nodes the last list missed, so that an outage is warned of
    /// when it starts and changes, not on every list while it lasts.
    missing: Arc<Mutex<BTreeSet<String>>>,
}

/// Node answers in flight, shared by every list.
#[derive(Clone)]
struct ListBudget {
    permits: Arc<Semaphore>,
    /// All the permits; a list takes at most this many.
    size: u32,
}

impl ListBudget {
    fn new(size: usize) -> Self {
        let size = u32::try_from(size).unwrap_or(u32::MAX).max(1);
        ListBudget {
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }
}

impl<M: Membership, P: PeerAgents> Cluster<M, P> {
    pub fn new(membership: M, peers: P, fanout_timeout: Duration) -> Self {
        Cluster {
            membership,
            peers,
            fanout_timeout,
            metrics: Metrics::default(),
            list_budget: ListBudget::new(DEFAULT_FANOUT_BUDGET),
            missing: Arc::default(),
        }
    }

    /// Bounds the node answers cluster-wide lists wait on at once.
    pub fn with_fanout_budget(mut self, node_answers: usize) -> Self {
        self.list_budget = ListBudget::new(node_answers);
        self
    }

    /// Counts the nodes missing from lists in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn membership(&self) -> &M {
        &self.membership
    }

    /// `GET /agents`: alive members in the reference's shape (§6.1).
    pub async fn agents(&self) -> Response<Body> {
        let mut members: Vec<Member> = self
            .membership
            .members()
            .await
            .into_iter()
            .filter(Member::is_alive)
            .collect();
        members.sort_by(|a, b| a.node_name.cmp(&b.node_name));
        let list: Vec<serde_json::Value> = members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "IPAddress": m.address.to_string(),
                    "Port": m.agent_port.to_string(),
                    "NodeName": m.node_name,
                    "NodeRole": m.node_role,
                    "EdgeKeySet": m.edge_key_set,
                })
            })
            .collect();
        responses::json(&serde_json::Value::Array(list))
    }

    /// A request with `X-PortainerAgent-Target` naming another node.
    pub async fn forward_to_node(
        &self,
        node: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, AgentError> {
        let members = self.membership.members().await;
        let member =
            cluster::member_for_node(&members, node).ok_or_else(AgentError::unknown_target)?;
        self.forward_to(member, request).await
    }

    /// A swarm-manager request on an agent that is not on a manager.
    pub async fn forward_to_manager<E: DockerEngine>(
        &self,
        engine: &E,
        local: &EngineFacts,
        request: Request<Body>,
    ) -> Result<Response<Body>, AgentError> {
        let members = self.membership.members().await;
        match cluster::manager_for(&members, local) {
            ManagerChoice::Local => proxy::forward_to_engine(engine, request).await,
            ManagerChoice::Peer(member) => self.forward_to(member, request).await,
            ManagerChoice::NoneAlive => Err(AgentError::no_manager_agent()),
        }
    }

    /// Through the proxy core, streamed both ways, upgrades spliced. The
    /// signature headers travel on; the hop marker stops any further hop.
    async fn forward_to(
        &self,
        member: &Member,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, AgentError> {
        mark_hop(&mut request, &member.node_name)?;
        let peer = SocketAddr::new(member.address, member.agent_port);
        let node = member.node_name.clone();
        proxy::forward(request, |request| async move {
            self.peers
                .forward(peer, request)
                .await
                .map_err(|error| AgentError::peer_unreachable(&node, &error.to_string()))
        })
        .await
    }

    /// A cluster-wide list: every alive member at once, each with its own
    /// copy of the request, each bounded by the fan-out timeout. Lists wait
    /// their turn for the list budget, as long as the fan-out timeout.
    pub async fn aggregate<E: DockerEngine>(
        &self,
        engine: &E,
        local: &EngineFacts,
        kind: ListKind,
        request: Request<Body>,
    ) -> Result<Response<Body>, AgentError> {
        let (template, _) = request.into_parts();
        let mut members = self.membership.members().await;
        members.sort_by(|a, b| a.node_name.cmp(&b.node_name));
        let asked = members.iter().filter(|m| m.is_alive()).count();
        let _turn = self.wait_for_turn(asked).await?;
        let queries = members
            .iter()
            .filter(|m| m.status != MemberStatus::Left)
            .map(|member| {
                let template = &template;
                async move {
                    if member.status != MemberStatus::Alive {
                        return NodeResult {
                            node: member.node_name.clone(),
                            answer: NodeAnswer::Failed(
                                format!("gossip reports it {:?}", member.status).to_lowercase(),
                            ),
                        };
                    }
                    let answer = match tokio::time::timeout(
                        self.fanout_timeout,
                        self.list_from(engine, local, member, template),
                    )
                    .await
                    {
                        Ok(answer) => answer,
                        Err(_) => NodeAnswer::Failed(format!(
                            "no answer within {}s",
                            self.fanout_timeout.as_secs_f64()
                        )),
                    };
                    NodeResult {
                        node: member.node_name.clone(),
                        answer,
                    }
                }
            });
        let results = join_all(queries).await;
        let merged = aggregate::merge(kind, results);
        for (node, _) in &merged.failures {
            self.metrics.record_fanout_failure(node);
        }
        let summary = merged.failure_summary();
        let missing: BTreeSet<String> = merged.failures.iter().map(|(n, _)| n.clone()).collect();
        let changed = {
            let mut last = self.missing.lock().unwrap_or_else(|p| p.into_inner());
            let changed = *last != missing;
            *last = missing;
            changed
        };
        match &summary {
            Some(summary) if changed => {
                warn!(path = %template.uri.path(), unavailable = %summary, "unable to retrieve node resources for aggregation");
            }
            Some(summary) => {
                debug!(path = %template.uri.path(), unavailable = %summary, "unable to retrieve node resources for aggregation");
            }
            None if changed => info!("every node answers cluster-wide lists again"),
            None => {}
        }
        Ok(json_response(merged.body, summary.as_deref()))
    }

    /// Budget for `asked` node answers, or a 503 once the fan-out timeout
    /// has passed without it (the lists ahead hold it).
    async fn wait_for_turn(&self, asked: usize) -> Result<OwnedSemaphorePermit, AgentError> {
        let ListBudget { permits, size } = self.list_budget.clone();
        let wanted = u32::try_from(asked).map_or(size, |asked| asked.clamp(1, size));
        match tokio::time::timeout(self.fanout_timeout, permits.acquire_many_owned(wanted)).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a closed one admits nothing.
            Ok(Err(_)) | Err(_) => Err(AgentError::new(
                503,
                "Too many cluster-wide lists at once",
                format!(
                    "this list waited {}s for the lists ahead of it to finish; try again",
                    self.fanout_timeout.as_secs_f64()
                ),
            )),
        }
    }

    async fn list_from<E: DockerEngine>(
        &self,
        engine: &E,
        local: &EngineFacts,
        member: &Member,
        template: &http::request::Parts,
    ) -> NodeAnswer {
        let mut request = Request::new(berth_ports::empty_body());
        *request.method_mut() = template.method.clone();
        *request.uri_mut() = template.uri.clone();
        *request.headers_mut() = template.headers.clone();
        let sent = if member.node_name == local.node_name {
            engine
                .forward(request)
                .await
                .map_err(|error| error.to_string())
        } else {
            if let Err(error) = mark_hop(&mut request, &member.node_name) {
                return NodeAnswer::Failed(error.details().to_string());
            }
            let peer = SocketAddr::new(member.address, member.agent_port);
            self.peers
                .forward(peer, request)
                .await
                .map_err(|error: PeerError| error.to_string())
        };
        let response = match sent {
            Ok(response) => response,
            Err(why) => return NodeAnswer::Failed(why),
        };
        let status = response.status().as_u16();
        match berth_ports::read_bounded(response.into_body(), MAX_LIST_BYTES).await {
            Ok(body) => NodeAnswer::Answered { status, body },
            Err(why) => NodeAnswer::Failed(why),
        }
    }

    /// Publishes this agent's tags, again whenever the engine's facts
    /// change (a promoted node is seen as a manager within seconds).
    pub async fn keep_tags_current(
        self,
        agent_port: u16,
        mut facts: FactsReceiver,
        edge_keys: Option<EdgeKeys>,
    ) {
        let mut key = edge_keys.as_ref().map(EdgeKeys::subscribe);
        loop {
            let key_set = key
                .as_mut()
                .is_some_and(|k| k.borrow_and_update().is_some());
            let tags = cluster::agent_tags(agent_port, &facts.borrow_and_update(), key_set);
            if let Err(error) = self.membership.publish(tags).await {
                warn!(%error, "cannot publish this agent's tags");
            }
            let key_changed = async {
                match key.as_mut() {
                    Some(key) => key.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = facts.changed() => if changed.is_err() { return },
                changed = key_changed => if !changed { return },
            }
        }
    }

    pub fn peers(&self) -> &P {
        &self.peers
    }

    /// Joins through `seeds`, retrying with backoff until a peer answers,
    /// so an agent that starts before its peers still finds them.
    pub async fn join_until_joined(self, seeds: Vec<Seed>) {
        let mut backoff = Duration::from_millis(500);
        let mut last_error = String::new();
        loop {
            match self.membership.join(&seeds).await {
                Ok(0) => {
                    info!("the first agent of its cluster: the others will join it");
                    return;
                }
                Ok(peers) => {
                    info!(peers, "joined the agent cluster");
                    return;
                }
                Err(error) => {
                    let error = error.to_string();
                    // Logged once per change, not once per try.
                    if error != last_error {
                        warn!(%error, "cannot join the agent cluster yet; retrying");
                        last_error = error;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

fn mark_hop(request: &mut Request<Body>, node: &str) -> Result<(), AgentError> {
    let target = HeaderValue::from_str(node).map_err(|_| AgentError::unknown_target())?;
    let headers = request.headers_mut();
    headers.insert(header_name(REQUEST_TARGET), target);
    headers.insert(header_name(REQUEST_HOP), HeaderValue::from_static("1"));
    Ok(())
}

fn header_name(name: &'static str) -> HeaderName {
    HeaderName::from_bytes(name.as_bytes()).expect("the protocol's header names are valid")
}

fn json_response(body: Vec<u8>, unavailable: Option<&str>) -> Response<Body> {
    let mut response = responses::json_text(body);
    if let Some(value) = unavailable.and_then(|v| HeaderValue::from_str(v).ok()) {
        response
            .headers_mut()
            .insert(header_name(RESPONSE_UNAVAILABLE_NODES), value);
    }
    response
}
