//! berth agents and HashiCorp's Go serf in one gossip cluster on loopback:
//! two real berth processes (each in front of an engine of the test's own,
//! with its own node name) and Go serf members (`tests/serf-peer`, built
//! from Go modules), each check once with the Go agent's serf 0.8.3 /
//! memberlist 0.1.4 and once with the newest, serf 0.11.0 / memberlist
//! 0.7.0. Membership, tags both ways, failures both ways, graceful leaves
//! both ways, and encrypted gossip.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::berth_process::{free_port, BerthProcess};
use support::client::{plain_get, Target};
use support::own_engine::OwnEngine;
use support::serf_peer::{against_each_serf, SerfPeer};

/// Bounds for liveness, not performance targets: the figures themselves
/// are printed for the closing note.
const SETTLE: Duration = Duration::from_secs(30);
const KEY: &str = "cg8StVXbQJ0gPvMd9o7yrg==";

fn go_tags(name: &str) -> String {
    format!("AgentPort=9001,NodeName={name},DockerNodeRole=manager,DockerEngineStatus=standalone")
}

struct Agent {
    process: BerthProcess,
    gossip_port: u16,
    metrics: SocketAddr,
}

fn start_berth(engine: &OwnEngine, seed_port: u16, extra: &[(&str, &str)]) -> Agent {
    let gossip_port = free_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (gossip, seed, metrics_text) = (
        gossip_port.to_string(),
        format!("127.0.0.1:{seed_port}"),
        metrics.to_string(),
    );
    let host = engine.host();
    let mut env = vec![
        ("DOCKER_HOST", host.as_str()),
        ("AGENT_CLUSTER_PORT", gossip.as_str()),
        ("AGENT_CLUSTER_ADDR", seed.as_str()),
        ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
        ("AGENT_CLUSTER_PROBE_INTERVAL", "200ms"),
        ("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms"),
        ("METRICS_ADDR", metrics_text.as_str()),
    ];
    env.extend_from_slice(extra);
    Agent {
        process: BerthProcess::start(&env),
        gossip_port,
        metrics,
    }
}

impl Agent {
    /// `/agents`: alive members by node name.
    async fn agents(&self) -> BTreeMap<String, Value> {
        let (status, list) = Target::Berth(self.process.addr)
            .json("GET", "/agents", "")
            .await;
        assert_eq!(status, 200, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .map(|a| (a["NodeName"].as_str().unwrap().to_string(), a.clone()))
            .collect()
    }

    /// How many members gossip knows with `status` (Prometheus endpoint).
    async fn count(&self, status: &str) -> usize {
        let text = plain_get(self.metrics, "/metrics").await;
        let prefix = format!("berth_cluster_members{{status=\"{status}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
    }

    /// Waits until `holds` is true of `/agents`; how long it took.
    async fn wait_agents(
        &self,
        what: &str,
        holds: impl Fn(&BTreeMap<String, Value>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let agents = self.agents().await;
            if holds(&agents) {
                return start.elapsed();
            }
            assert!(start.elapsed() < SETTLE, "{what}: berth sees {agents:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_count(&self, status: &str, at_least: usize) -> Duration {
        let start = Instant::now();
        while self.count(status).await < at_least {
            assert!(
                start.elapsed() < SETTLE,
                "berth never counted {at_least} {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        start.elapsed()
    }
}

/// A Go member named `name` with Portainer's tags, joining through `agent`.
fn go_joining(binary: &str, name: &str, agent: &Agent) -> SerfPeer {
    let join = format!("127.0.0.1:{}", agent.gossip_port);
    SerfPeer::start(binary, name, free_port(), &go_tags(name), &["-join", &join])
}

fn berth_member<'a>(members: &'a [Value], node: &str) -> Option<&'a Value> {
    members.iter().find(|m| m["tags"]["NodeName"] == node)
}

fn wait_go(peer: &mut SerfPeer, what: &str, holds: impl Fn(&[Value]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let members = peer.members();
        if holds(&members) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < SETTLE,
            "{what}: {} sees {members:?}",
            peer.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_of(members: &[Value], node: &str) -> Option<String> {
    berth_member(members, node).map(|m| m["status"].as_str().unwrap_or("").to_string())
}

against_each_serf!(
    berth_and_go_serf_form_one_cluster,
    encrypted_gossip_needs_the_same_key
);

async fn berth_and_go_serf_form_one_cluster(binary: String) {
    let engine_a = OwnEngine::start_named("berth-gossip-a");
    let engine_b = OwnEngine::start_named("berth-gossip-b");

    let mut go1 = SerfPeer::start(&binary, "go-1", free_port(), &go_tags("go-1"), &[]);
    let berth_a = start_berth(&engine_a, go1.port, &[]);
    let berth_b = start_berth(&engine_b, go1.port, &[]);
    // A Go member joining through berth: berth answers the join.
    let mut go2 = go_joining(&binary, "go-2", &berth_a);

    // Everyone sees all four, alive, with the tags the other side set.
    let all = ["berth-gossip-a", "berth-gossip-b", "go-1", "go-2"];
    for berth in [&berth_a, &berth_b] {
        berth
            .wait_agents("four alive members", |agents| {
                all.iter().all(|node| agents.contains_key(*node))
            })
            .await;
        let agents = berth.agents().await;
        assert_eq!(agents["go-1"]["Port"], "9001");
        assert_eq!(agents["go-1"]["NodeRole"], "manager");
        assert_eq!(agents["go-2"]["IPAddress"], "127.0.0.1");
    }
    for go in [&mut go1, &mut go2] {
        wait_go(go, "four alive members", |members| {
            members.len() == 4 && members.iter().all(|m| m["status"] == "alive")
        });
        let members = go.members();
        let a = berth_member(&members, "berth-gossip-a").expect("berth a");
        assert_eq!(
            a["tags"]["AgentPort"],
            berth_a.process.addr.port().to_string()
        );
        assert_eq!(a["tags"]["DockerNodeRole"], "manager");
        assert_eq!(a["tags"]["DockerEngineStatus"], "standalone");
        assert_eq!(a["addr"], "127.0.0.1");
        assert_eq!(a["port"], berth_a.gossip_port);
    }

    // A tag set by Go serf reaches berth.
    let edge_tags = format!("{},EdgeKeySet=set", go_tags("go-1"));
    assert_eq!(go1.command(&format!("tags {edge_tags}"))["ok"], true);
    let took = berth_b
        .wait_agents("go-1's EdgeKeySet", |agents| {
            agents["go-1"]["EdgeKeySet"] == true
        })
        .await;
    eprintln!("figure: a Go tag change reached berth in {took:?}");

    // berth's tags follow its engine: a swarm now, and its leader. The
    // facts' safety read is a minute away (the default): the engine's
    // events stream is what tells berth, well within SETTLE.
    engine_a.docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    let took = wait_go(&mut go2, "berth a's swarm tags", |members| {
        berth_member(members, "berth-gossip-a").is_some_and(|a| {
            a["tags"]["DockerEngineStatus"] == "swarm" && a["tags"]["NodeIsLeader"] == "1"
        })
    });
    eprintln!("figure: a berth tag change reached Go serf in {took:?}");

    // A Go member killed: berth finds it failed (and Go serf, for
    // comparison, in the same run).
    go2.kill();
    let killed = Instant::now();
    let by_berth = berth_a.wait_count("failed", 1).await;
    let agents = berth_a.agents().await;
    assert!(!agents.contains_key("go-2"), "{agents:?}");
    wait_go(&mut go1, "go-2 failed", |members| {
        members
            .iter()
            .any(|m| m["name"] == "go-2" && m["status"] == "failed")
    });
    let by_go = killed.elapsed();
    eprintln!("figure: a killed Go member found failed by berth in {by_berth:?}, by Go serf within {by_go:?}");

    // A berth agent killed: Go serf finds it failed (and berth too).
    let mut berth_b = berth_b;
    berth_b.process.stop_with("KILL", Duration::from_secs(10));
    let killed = Instant::now();
    let by_go = wait_go(&mut go1, "berth b failed", |members| {
        status_of(members, "berth-gossip-b").as_deref() == Some("failed")
    });
    berth_a.wait_count("failed", 2).await;
    let by_berth = killed.elapsed();
    eprintln!("figure: a killed berth agent found failed by Go serf in {by_go:?}, by berth within {by_berth:?}");

    // A Go member leaves gracefully: left on both sides.
    let mut go3 = go_joining(&binary, "go-3", &berth_a);
    berth_a
        .wait_agents("go-3 joined", |agents| agents.contains_key("go-3"))
        .await;
    wait_go(&mut go1, "go-3 joined", |members| {
        status_of(members, "go-3").as_deref() == Some("alive")
    });
    let left_before = berth_a.count("left").await;
    assert_eq!(go3.command("leave")["ok"], true);
    berth_a.wait_count("left", left_before + 1).await;
    wait_go(&mut go1, "go-3 left", |members| {
        status_of(members, "go-3").as_deref() == Some("left")
    });

    // A berth agent stopped: it leaves, and Go serf sees it left, as a
    // clean leave: its leave intent came before its "dead" message, so no
    // failure was recorded on the way (serf's order).
    let mut berth_a = berth_a;
    berth_a.process.stop_with("TERM", Duration::from_secs(20));
    wait_go(&mut go1, "berth a left", |members| {
        status_of(members, "berth-gossip-a").as_deref() == Some("left")
    });
    let all_events = go1.command("events");
    let events: Vec<String> = all_events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("berth-gossip-a"))
        })
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        events.last().map(String::as_str),
        Some("member-leave"),
        "{all_events}"
    );
    assert!(
        !events.iter().any(|e| e == "member-failed"),
        "Go serf saw berth's leave as a failure: {events:?}"
    );
}

async fn encrypted_gossip_needs_the_same_key(binary: String) {
    let engine = OwnEngine::start_named("berth-gossip-key");
    let mut go1 = SerfPeer::start(
        &binary,
        "go-key-1",
        free_port(),
        &go_tags("go-key-1"),
        &["-key", KEY],
    );
    let berth = start_berth(&engine, go1.port, &[("AGENT_CLUSTER_KEY", KEY)]);
    berth
        .wait_agents("the keyed Go member", |agents| {
            agents.contains_key("go-key-1")
        })
        .await;
    wait_go(&mut go1, "berth with the key", |members| {
        status_of(members, "berth-gossip-key").as_deref() == Some("alive")
    });

    // A member with another key cannot join through berth, nor be seen.
    let join = format!("127.0.0.1:{}", berth.gossip_port);
    let mut stranger = SerfPeer::start(
        &binary,
        "go-stranger",
        free_port(),
        &go_tags("go-stranger"),
        &["-key", "AAAAAAAAAAAAAAAAAAAAAA=="],
    );
    let answer = stranger.command(&format!("join {join}"));
    assert!(answer["error"].is_string(), "{answer}");
    // And one without a key at all.
    let mut plain = SerfPeer::start(&binary, "go-plain", free_port(), &go_tags("go-plain"), &[]);
    let answer = plain.command(&format!("join {join}"));
    assert!(answer["error"].is_string(), "{answer}");
    let agents = berth.agents().await;
    assert_eq!(
        agents.keys().collect::<Vec<_>>(),
        ["berth-gossip-key", "go-key-1"],
        "{agents:?}"
    );
    for refusal in [
        "no gossip key opens the message",
        "Encryption is configured but remote state is not encrypted",
    ] {
        assert!(
            berth.process.logged_within(refusal, Duration::from_secs(5)),
            "berth did not say {refusal}"
        );
    }
}
