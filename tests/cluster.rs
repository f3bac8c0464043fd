//! The cluster use cases with fakes of every port: fan-out over many
//! nodes (one slow, one dead), target and manager forwarding, `/agents`,
//! tags and joining. No socket is involved.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth::cluster::{Cluster, DEFAULT_FANOUT_BUDGET};
use berth::signature::SignatureGuard;
use berth::Agent;
use berth_adapters::fs::ConfinedFiles;
use berth_domain::cluster::{Member, MemberStatus, Seed};
use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_domain::options::{Options, RawOptions};
use berth_domain::signature::SignaturePolicy;
use http::Response;
use support::fake_cluster::{address_of, member, FakeMembership, FakePeer, FakePeers};
use support::fake_engine::FakeEngine;
use support::fake_host::FakeHostProbe;
use support::files::test_files;
use support::fixtures::{load, portainer_identity};
use tokio::sync::watch;

const FANOUT_TIMEOUT: Duration = Duration::from_secs(10);

fn local_facts(name: &str, role: SwarmRole) -> EngineFacts {
    EngineFacts {
        node_name: name.into(),
        role,
        node_id: "id".into(),
        engine_version: "20.10".into(),
    }
}

/// An engine that answers the container list with one container.
fn node_engine(id: &str) -> FakeEngine {
    let mut answer = load("containers-all");
    answer.body = format!(r#"[{{"Id":"{id}","Names":["/{id}"]}}]"#).into_bytes();
    answer
        .headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
    FakeEngine::replaying(vec![
        (("GET", "/v1.41/containers/json?all=1"), answer),
        (("GET", "/v1.41/services"), load("version")),
    ])
}

type TestAgent = Agent<FakeEngine, FakeMembership, FakePeers, FakeHostProbe, ConfinedFiles>;

fn clustered_agent(
    local: EngineFacts,
    engine: FakeEngine,
    members: Vec<Member>,
    peers: HashMap<SocketAddr, FakePeer>,
) -> (TestAgent, FakeMembership) {
    clustered_agent_with_budget(local, engine, members, peers, DEFAULT_FANOUT_BUDGET)
}

fn clustered_agent_with_budget(
    local: EngineFacts,
    engine: FakeEngine,
    members: Vec<Member>,
    peers: HashMap<SocketAddr, FakePeer>,
    list_budget: usize,
) -> (TestAgent, FakeMembership) {
    let membership = FakeMembership::with_members(members);
    let cluster = Cluster::new(membership.clone(), FakePeers::new(peers), FANOUT_TIMEOUT)
        .with_fanout_budget(list_budget);
    let (_, facts) = watch::channel(Arc::new(local));
    let guard = SignatureGuard::new(SignaturePolicy::new(None, [5; 32], 16));
    (
        Agent::new(
            engine,
            FakeHostProbe::with_hardware(),
            test_files(),
            facts,
            guard,
            Some(cluster),
        ),
        membership,
    )
}

async fn get(
    agent: &TestAgent,
    uri: &str,
    headers: &[(&str, &str)],
) -> (Response<()>, serde_json::Value) {
    let (response, bytes) = support::in_process::call(agent, "GET", uri, headers, "", true).await;
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (response, json)
}

/// Node A (this agent, standalone but clustered) and node B, whose engine
/// the test can inspect.
fn two_nodes() -> (TestAgent, FakeEngine) {
    let b = member(1, "node-b", "worker", false, false);
    let b_engine = node_engine("node-b");
    let peers = HashMap::from([(address_of(&b), FakePeer::Answers(b_engine.clone()))]);
    let members = vec![member(0, "node-a", "manager", false, false), b];
    let (agent, _) = clustered_agent(
        local_facts("node-a", SwarmRole::Standalone),
        node_engine("node-a"),
        members,
        peers,
    );
    (agent, b_engine)
}

/// 50 nodes, one slow past the timeout, one dead: the list comes back in
/// the timeout with 48 nodes' containers and names the two others.
#[tokio::test(start_paused = true)]
async fn fan_out_over_fifty_nodes_with_one_slow_and_one_dead() {
    let mut members = vec![member(0, "node-00", "manager", true, true)];
    let mut peers = HashMap::new();
    for n in 1..50u16 {
        let name = format!("node-{n:02}");
        let m = member(n, &name, "worker", true, false);
        let behaviour = match n {
            7 => FakePeer::Slow(Duration::from_secs(60), node_engine(&name)),
            13 => FakePeer::Dead,
            _ => FakePeer::Answers(node_engine(&name)),
        };
        peers.insert(address_of(&m), behaviour);
        members.push(m);
    }
    let local = local_facts("node-00", SwarmRole::Manager { leader: true });
    let (agent, _) = clustered_agent(local, node_engine("node-00"), members, peers);

    let started = tokio::time::Instant::now();
    let (response, json) = get(&agent, "/v1.41/containers/json?all=1", &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(
        elapsed >= FANOUT_TIMEOUT && elapsed < FANOUT_TIMEOUT + Duration::from_secs(1),
        "{elapsed:?}"
    );
    let listed = json.as_array().unwrap();
    assert_eq!(listed.len(), 48);
    for container in listed {
        assert_eq!(container["Portainer"]["Agent"]["NodeName"], container["Id"]);
    }
    let unavailable = response.headers()["x-portaineragent-unavailable-nodes"]
        .to_str()
        .unwrap();
    assert!(
        unavailable.contains("node-07 (no answer within 10s)"),
        "{unavailable}"
    );
    assert!(
        unavailable.contains("node-13 (agent at 10.0.0.13:9001 is unreachable"),
        "{unavailable}"
    );
    assert!(response.headers().contains_key("portainer-agent"));
}

#[test]
fn the_default_budget_is_the_options_default() {
    let options = Options::from_raw(&RawOptions::new()).unwrap();
    assert_eq!(options.fanout_budget, DEFAULT_FANOUT_BUDGET);
}

/// Three nodes whose two peers answer after `delay`, with budget for one
/// three-node list at a time.
fn three_slow_nodes_one_list_at_a_time(delay: Duration) -> TestAgent {
    let mut members = vec![member(0, "node-a", "manager", false, false)];
    let mut peers = HashMap::new();
    for (n, name) in [(1, "node-b"), (2, "node-c")] {
        let m = member(n, name, "worker", false, false);
        peers.insert(address_of(&m), FakePeer::Slow(delay, node_engine(name)));
        members.push(m);
    }
    let local = local_facts("node-a", SwarmRole::Standalone);
    clustered_agent_with_budget(local, node_engine("node-a"), members, peers, 3).0
}

/// Answers a list sent `after` into the test, with the time it came back.
async fn list_at(
    agent: &TestAgent,
    after: Duration,
) -> (Duration, Response<()>, serde_json::Value) {
    let started = tokio::time::Instant::now();
    tokio::time::sleep(after).await;
    let (response, json) = get(agent, "/v1.41/containers/json?all=1", &[]).await;
    (started.elapsed(), response, json)
}

#[tokio::test(start_paused = true)]
async fn lists_past_the_budget_wait_for_the_ones_ahead() {
    let agent = three_slow_nodes_one_list_at_a_time(Duration::from_secs(4));
    let (first, second) = tokio::join!(
        list_at(&agent, Duration::ZERO),
        list_at(&agent, Duration::from_millis(100))
    );
    for (_, response, json) in [&first, &second] {
        assert_eq!(response.status(), 200);
        assert_eq!(json.as_array().unwrap().len(), 3, "{json}");
    }
    let whole = |(elapsed, _, _): &(Duration, _, _)| elapsed.as_secs();
    assert_eq!(whole(&first), 4, "the first list waits for its peers only");
    assert_eq!(
        whole(&second),
        8,
        "the second list starts when the first ends"
    );
}

#[tokio::test(start_paused = true)]
async fn a_list_that_waits_past_the_fanout_timeout_is_refused() {
    // Each list takes the whole fan-out timeout (10 s): the second starts
    // at 10 s, within its wait; the third's wait ends at 12 s, before the
    // second is done.
    let agent = three_slow_nodes_one_list_at_a_time(Duration::from_secs(60));
    let (first, second, third) = tokio::join!(
        list_at(&agent, Duration::ZERO),
        list_at(&agent, Duration::from_secs(1)),
        list_at(&agent, Duration::from_secs(2))
    );
    assert_eq!(first.1.status(), 200);
    assert_eq!(second.1.status(), 200);
    assert_eq!(second.0.as_secs(), 20);
    let (elapsed, response, json) = third;
    assert_eq!(elapsed.as_secs(), 12);
    assert_eq!(response.status(), 503);
    assert_eq!(
        json["message"], "Too many cluster-wide lists at once",
        "{json}"
    );
    assert!(
        json["details"].as_str().unwrap().contains("waited 10s"),
        "{json}"
    );
}

#[tokio::test(start_paused = true)]
async fn members_gossip_marks_failed_are_not_waited_for() {
    let mut failed = member(1, "node-b", "worker", true, false);
    failed.status = MemberStatus::Failed;
    let mut left = member(2, "node-c", "worker", true, false);
    left.status = MemberStatus::Left;
    // Were the failed node asked, it would take a minute.
    let peers = HashMap::from([(
        address_of(&failed),
        FakePeer::Slow(Duration::from_secs(60), node_engine("node-b")),
    )]);
    let members = vec![member(0, "node-a", "manager", true, true), failed, left];
    let (agent, _) = clustered_agent(
        local_facts("node-a", SwarmRole::Worker),
        node_engine("node-a"),
        members,
        peers,
    );
    let started = tokio::time::Instant::now();
    let (response, json) = get(&agent, "/v1.41/containers/json?all=1", &[]).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(
        response.headers()["x-portaineragent-unavailable-nodes"],
        "node-b (gossip reports it failed)"
    );
}

#[tokio::test]
async fn the_target_header_reaches_that_nodes_agent_with_the_hop_marker() {
    let (agent, b_engine) = two_nodes();

    // A list with a target is that node's own, undecorated answer.
    let (response, json) = get(
        &agent,
        "/v1.41/containers/json?all=1",
        &[("x-portaineragent-target", "node-b")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json,
        serde_json::json!([{"Id": "node-b", "Names": ["/node-b"]}])
    );
    let seen = &b_engine.seen()[0];
    assert_eq!(
        seen.uri, "/v1.41/containers/json?all=1",
        "the query string arrives once, unchanged"
    );
    assert_eq!(seen.headers["x-portaineragent-target"], "node-b");
    assert_eq!(seen.headers["x-portaineragent-hop"], "1");
    assert_eq!(
        seen.headers["x-portaineragent-signature"],
        portainer_identity().signature.as_str()
    );

    let (response, json) = get(
        &agent,
        "/v1.41/version",
        &[("x-portaineragent-target", "node-z")],
    )
    .await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        json["message"],
        "The agent was unable to contact any other agent"
    );
    assert_eq!(json["details"], "Unable to find the targeted agent");
}

#[tokio::test]
async fn manager_requests_go_to_the_leader() {
    let manager = member(1, "node-m1", "manager", true, false);
    let leader = member(2, "node-m2", "manager", true, true);
    let leader_engine = node_engine("node-m2");
    let peers = HashMap::from([
        (
            address_of(&manager),
            FakePeer::Answers(node_engine("node-m1")),
        ),
        (
            address_of(&leader),
            FakePeer::Answers(leader_engine.clone()),
        ),
    ]);
    let members = vec![member(0, "node-w", "worker", true, false), manager, leader];
    let (agent, _) = clustered_agent(
        local_facts("node-w", SwarmRole::Worker),
        node_engine("node-w"),
        members,
        peers,
    );
    let (response, _) = get(&agent, "/v1.41/services", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(leader_engine.seen().len(), 1);

    // A worker with no manager agent alive gets the reference's 500.
    let (lonely, _) = clustered_agent(
        local_facts("node-w", SwarmRole::Worker),
        node_engine("node-w"),
        vec![],
        HashMap::new(),
    );
    let (response, json) = get(&lonely, "/v1.41/services", &[]).await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        json["details"],
        "Unable to find an agent on any manager node"
    );
}

#[tokio::test]
async fn agents_lists_alive_members_in_the_reference_shape() {
    let mut gone = member(2, "node-c", "worker", true, false);
    gone.status = MemberStatus::Failed;
    let members = vec![
        member(1, "node-b", "worker", true, false),
        member(0, "node-a", "manager", true, true),
        gone,
    ];
    let (agent, _) = clustered_agent(
        local_facts("node-a", SwarmRole::Worker),
        node_engine("node-a"),
        members,
        HashMap::new(),
    );
    let (response, json) = get(&agent, "/v2/agents", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        json,
        serde_json::json!([
            {"IPAddress": "10.0.0.0", "Port": "9001", "NodeName": "node-a", "NodeRole": "manager", "EdgeKeySet": false},
            {"IPAddress": "10.0.0.1", "Port": "9001", "NodeName": "node-b", "NodeRole": "worker", "EdgeKeySet": false}
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn tags_follow_the_engine_facts() {
    let membership = FakeMembership::default();
    let cluster = Cluster::new(membership.clone(), FakePeers::default(), FANOUT_TIMEOUT);
    let (sender, facts) = watch::channel(Arc::new(local_facts("node-a", SwarmRole::Worker)));
    let publisher = tokio::spawn(cluster.keep_tags_current(9001, facts, None));
    while membership.published().is_empty() {
        tokio::task::yield_now().await;
    }
    sender.send_replace(Arc::new(local_facts(
        "node-a",
        SwarmRole::Manager { leader: true },
    )));
    while membership.published().len() < 2 {
        tokio::task::yield_now().await;
    }
    let latest = membership.published().pop().unwrap();
    assert!(latest.contains(&("DockerNodeRole", "manager".to_string())));
    assert!(latest.contains(&("NodeIsLeader", "1".to_string())));
    drop(sender);
    publisher.await.unwrap();
}

#[derive(Clone, Default)]
struct MemoryKeyStore(Arc<std::sync::Mutex<Option<String>>>);

impl berth_ports::KeyStore for MemoryKeyStore {
    async fn load(&self) -> Result<Option<String>, berth_ports::KeyStoreError> {
        Ok(self.0.lock().unwrap().clone())
    }

    async fn save(&self, key: &str) -> Result<(), berth_ports::KeyStoreError> {
        *self.0.lock().unwrap() = Some(key.to_string());
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn the_edge_key_tag_appears_once_a_key_is_associated() {
    use base64::Engine as _;
    let membership = FakeMembership::default();
    let cluster = Cluster::new(membership.clone(), FakePeers::default(), FANOUT_TIMEOUT);
    let (_sender, facts) = watch::channel(Arc::new(local_facts("node-a", SwarmRole::Standalone)));
    let store = MemoryKeyStore::default();
    let keys = berth::edge::keys::EdgeKeys::new(store.clone());
    let publisher = tokio::spawn(cluster.keep_tags_current(9001, facts, Some(keys.clone())));
    while membership.published().is_empty() {
        tokio::task::yield_now().await;
    }
    let edge_tag = |tags: &Vec<(&str, String)>| tags.iter().any(|(name, _)| *name == "EdgeKeySet");
    assert!(!edge_tag(&membership.published()[0]));
    let key = base64::engine::general_purpose::STANDARD_NO_PAD.encode("https://p|p:8000|fp|3");
    keys.associate(&key).await.unwrap();
    while membership.published().len() < 2 {
        tokio::task::yield_now().await;
    }
    assert!(edge_tag(&membership.published().pop().unwrap()));
    assert_eq!(store.0.lock().unwrap().as_deref(), Some(key.as_str()));
    publisher.abort();
}

#[tokio::test(start_paused = true)]
async fn joining_retries_until_a_peer_answers() {
    let membership = FakeMembership::default().failing_joins(5);
    let cluster = Cluster::new(membership.clone(), FakePeers::default(), FANOUT_TIMEOUT);
    let seeds = vec![Seed {
        host: "tasks.agent".into(),
        port: 7946,
    }];
    tokio::time::timeout(Duration::from_secs(120), cluster.join_until_joined(seeds))
        .await
        .expect("joined once the peers came up");
    assert_eq!(membership.joins(), 6);
}

#[tokio::test]
async fn host_info_for_another_node_is_that_nodes_answer() {
    let (agent, b_engine) = two_nodes();
    get(
        &agent,
        "/v2/host/info",
        &[("x-portaineragent-target", "node-b")],
    )
    .await;
    let seen = &b_engine.seen()[0];
    assert_eq!(seen.uri, "/v2/host/info");
    assert_eq!(seen.headers["x-portaineragent-hop"], "1");
    // Its own node's info is answered here.
    let (response, json) = get(
        &agent,
        "/v2/host/info",
        &[("x-portaineragent-target", "node-a")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(json["PhysicalDisks"][0]["Vendor"], "ATA");
    assert_eq!(b_engine.seen().len(), 1);
}
