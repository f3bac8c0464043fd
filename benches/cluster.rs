//! Cluster-wide list time against one node's, in the same run.
//!
//! - Always: 50 fake nodes (each answering after 1 ms, one dead) against a
//!   single fake node, through the real application code.
//! - With `BENCH_AGENT` (an agent's address) and `BENCH_NODES` (the node
//!   names it can reach), as `scripts/bench-cluster` sets them: real agents
//!   and engines, the list from every node against the slowest node's own
//!   list (each asked through the same agent, by target).
//!
//!     cargo bench --bench cluster

#[path = "../tests/support/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/support/fake_cluster.rs"]
#[allow(dead_code)]
mod fake_cluster;
#[path = "../tests/support/fake_engine.rs"]
#[allow(dead_code)]
mod fake_engine;
#[path = "../tests/support/fake_host.rs"]
#[allow(dead_code)]
mod fake_host;
#[path = "../tests/support/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::cluster::Cluster;
use berth::signature::SignatureGuard;
use berth::Agent;
use berth_adapters::fs::ConfinedFiles;
use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_domain::signature::SignaturePolicy;
use berth_ports::{full_body, RequestHandler};
use fake_cluster::{address_of, member, FakeMembership, FakePeer, FakePeers};
use fake_engine::FakeEngine;
use fake_host::FakeHostProbe;

fn test_files() -> ConfinedFiles {
    ConfinedFiles::new("/nonexistent/volumes", "/nonexistent/host")
}
use http_body_util::BodyExt;

const ROUNDS: usize = 50;
const LIST: &str = "/v1.41/containers/json?all=1";

fn node_engine() -> FakeEngine {
    FakeEngine::replaying(vec![(("GET", LIST), fixtures::load("containers-all"))])
}

/// Who is unwell among the nodes.
#[derive(Clone, Copy)]
struct Unwell {
    /// One node answers after this long instead of 1 ms.
    slow: Option<Duration>,
    /// One node refuses; `silent` makes it never answer instead.
    dead: bool,
    silent: bool,
}

const HEALTHY: Unwell = Unwell {
    slow: None,
    dead: false,
    silent: false,
};

fn agent(
    nodes: u16,
    unwell: Unwell,
    fanout: Duration,
) -> Agent<FakeEngine, FakeMembership, FakePeers, FakeHostProbe, ConfinedFiles> {
    // Every node is a peer answering after 1 ms; the agent asked is an
    // observer with no containers of its own, so one node alone costs the
    // same round trip as each of the others.
    let mut members = Vec::new();
    let mut peers = HashMap::new();
    for n in 0..nodes {
        let m = member(n, &format!("node-{n:03}"), "worker", true, false);
        let peer = match n {
            0 if unwell.slow.is_some() => {
                FakePeer::Slow(unwell.slow.unwrap_or_default(), node_engine())
            }
            1 if unwell.silent => FakePeer::Silent,
            1 if unwell.dead => FakePeer::Dead,
            _ => FakePeer::Slow(Duration::from_millis(1), node_engine()),
        };
        peers.insert(address_of(&m), peer);
        members.push(m);
    }
    let facts = EngineFacts {
        node_name: "observer".into(),
        role: SwarmRole::Manager { leader: true },
        node_id: "id".into(),
        engine_version: "20.10".into(),
    };
    let cluster = Cluster::new(
        FakeMembership::with_members(members),
        FakePeers::new(peers),
        fanout,
    );
    let (_, facts) = tokio::sync::watch::channel(Arc::new(facts));
    let guard = SignatureGuard::new(SignaturePolicy::new(None, [1; 32], 16));
    Agent::new(
        node_engine(),
        FakeHostProbe::with_hardware(),
        test_files(),
        facts,
        guard,
        Some(cluster),
    )
}

async fn median_of(mut run: impl AsyncFnMut()) -> Duration {
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        run().await;
        times.push(started.elapsed());
    }
    times.sort();
    times[ROUNDS / 2]
}

async fn fake_list(
    agent: &Agent<FakeEngine, FakeMembership, FakePeers, FakeHostProbe, ConfinedFiles>,
) {
    let mut request = http::Request::get(LIST).body(full_body("")).unwrap();
    fixtures::portainer_identity().apply(request.headers_mut());
    let response = agent.handle(request, "127.0.0.1:1".parse().unwrap()).await;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

async fn real_list(agent: &client::Target, target: Option<&str>) {
    let mut request = client::request("GET", LIST, "");
    if let Some(node) = target {
        request
            .headers_mut()
            .insert("x-portaineragent-target", node.parse().unwrap());
    }
    let (response, _) = agent.fetch_request(request).await;
    assert_eq!(response.status(), 200);
}

async fn direct_list(engine: &client::Target) {
    let (response, _) = engine
        .fetch_request(client::unsigned_request("GET", LIST, ""))
        .await;
    assert_eq!(response.status(), 200);
}

fn row(what: &str, many: Duration, one: Duration) {
    println!(
        "| {what} | {:.3} | {:.3} | {:.2} |",
        many.as_secs_f64() * 1000.0,
        one.as_secs_f64() * 1000.0,
        many.as_secs_f64() / one.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    println!("| list | every node, median ms | one node alone, median ms | ratio |");
    println!("|---|---|---|---|");
    let fanout = Duration::from_secs(10);
    let one_dead = Unwell {
        dead: true,
        ..HEALTHY
    };
    let fifty = agent(50, one_dead, fanout);
    let one = agent(1, HEALTHY, fanout);
    let many = median_of(async || fake_list(&fifty).await).await;
    let alone = median_of(async || fake_list(&one).await).await;
    row("50 fake nodes (1 ms each, one dead) vs 1", many, alone);

    // Issue 9's case: the list against its slowest node alone.
    let slow = Duration::from_millis(20);
    let slow_and_dead = Unwell {
        slow: Some(slow),
        dead: true,
        ..HEALTHY
    };
    let thirty_two = agent(32, slow_and_dead, fanout);
    let slowest = agent(
        1,
        Unwell {
            slow: Some(slow),
            ..HEALTHY
        },
        fanout,
    );
    let many = median_of(async || fake_list(&thirty_two).await).await;
    let alone = median_of(async || fake_list(&slowest).await).await;
    row(
        "32 fake nodes (1 ms each, one 20 ms, one refusing) vs the 20 ms node alone",
        many,
        alone,
    );

    // A node that never answers costs the per-node timeout, no more.
    let timeout = Duration::from_millis(200);
    let silent = agent(
        32,
        Unwell {
            silent: true,
            ..HEALTHY
        },
        timeout,
    );
    let many = median_of(async || fake_list(&silent).await).await;
    row(
        "32 fake nodes (1 ms each, one silent) vs the 200 ms fan-out timeout",
        many,
        timeout,
    );

    if let (Ok(address), Ok(nodes)) = (std::env::var("BENCH_AGENT"), std::env::var("BENCH_NODES")) {
        let target = client::Target::Berth(address.parse().expect("BENCH_AGENT is host:port"));
        let label = std::env::var("BENCH_LABEL").unwrap_or_else(|_| "real engines".into());
        let many = median_of(async || real_list(&target, None).await).await;
        // Each node's own list, through the same agent; the slowest counts.
        let mut slowest = Duration::ZERO;
        for node in nodes.split(',') {
            let alone = median_of(async || real_list(&target, Some(node)).await).await;
            slowest = slowest.max(alone);
        }
        row(&label, many, slowest);
    }
    // The machine's own limit, as a baseline: the engines asked directly,
    // all at once, against the slowest alone.
    if let Ok(sockets) = std::env::var("BENCH_ENGINE_SOCKETS") {
        let engines: Vec<client::Target> = sockets
            .split(',')
            .map(|path| client::Target::Socket(path.to_string()))
            .collect();
        let all = median_of(async || {
            futures_util::future::join_all(engines.iter().map(direct_list)).await;
        })
        .await;
        let mut slowest = Duration::ZERO;
        for engine in &engines {
            slowest = slowest.max(median_of(async || direct_list(engine).await).await);
        }
        row(
            &format!(
                "{} engines asked directly at once vs the slowest alone (baseline)",
                engines.len()
            ),
            all,
            slowest,
        );
    }
}
