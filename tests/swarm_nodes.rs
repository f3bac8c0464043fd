//! A real three-node swarm on this machine: three engines, each in network
//! and UTS namespaces of its own (node names swarm-manager, swarm-worker-1
//! and swarm-worker-2), joined by veth pairs to a bridge this test creates
//! (addresses 10.231.N.1–3, reachable from nowhere else), and one berth
//! agent per node in its node's namespace, as in a global service. Manager routing from a worker's
//! agent, target routing, lists across nodes, and a worker's agent and
//! engine stopped and started again.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::berth_process::{engine_host, BerthProcess};
use support::client::{request, Target};
use support::own_engine::OwnEngine;

const NODES: [&str; 3] = ["swarm-manager", "swarm-worker-1", "swarm-worker-2"];
/// Docker's swarm gossip has 7946 inside each namespace.
const GOSSIP_PORT: &str = "7947";
const SETTLE: Duration = Duration::from_secs(60);

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

/// The bridge, the subnet and the nodes' network namespaces of this test
/// process.
struct Lab {
    bridge: String,
    subnet: u8,
    namespaces: Vec<String>,
    engines: Vec<OwnEngine>,
}

impl Lab {
    fn address(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, node as u8 + 1)
    }

    fn netns(&self, node: usize) -> String {
        format!("/run/netns/{}", self.namespaces[node])
    }

    fn start() -> Lab {
        let id = std::process::id();
        let mut lab = Lab {
            bridge: format!("bsw{id}"),
            subnet: (id % 200) as u8 + 20,
            namespaces: Vec::new(),
            engines: Vec::new(),
        };
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        let gateway = format!("10.231.{}.254/24", lab.subnet);
        ip(&["addr", "add", &gateway, "dev", &lab.bridge]);
        ip(&["link", "set", &lab.bridge, "up"]);
        for n in 0..NODES.len() {
            lab.wire(n);
        }
        for (n, node) in NODES.iter().enumerate() {
            let engine = OwnEngine::start_in(node, Some(&lab.netns(n)));
            engine.import_busybox();
            lab.engines.push(engine);
        }
        lab
    }

    /// Node `n`'s network namespace, joined to the bridge by a veth pair.
    fn wire(&mut self, n: usize) {
        let id = std::process::id();
        let (namespace, host_end, node_end) = (
            format!("bl{id}{n}"),
            format!("vh{id}{n}"),
            format!("vn{id}{n}"),
        );
        ip(&["netns", "add", &namespace]);
        self.namespaces.push(namespace.clone());
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
        ]);
        ip(&["link", "set", &host_end, "master", &self.bridge, "up"]);
        ip(&["link", "set", &node_end, "netns", &namespace]);
        let address = format!("{}/24", self.address(n));
        ip(&["-n", &namespace, "addr", "add", &address, "dev", &node_end]);
        ip(&["-n", &namespace, "link", "set", &node_end, "up"]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
    }

    fn form_swarm(&self) {
        let manager = self.address(0).to_string();
        self.engines[0].docker(&["swarm", "init", "--advertise-addr", &manager]);
        let token = self.engines[0].docker(&["swarm", "join-token", "-q", "worker"]);
        for n in 1..NODES.len() {
            let own = self.address(n).to_string();
            self.engines[n].docker(&[
                "swarm",
                "join",
                "--token",
                &token,
                "--advertise-addr",
                &own,
                &format!("{manager}:2377"),
            ]);
        }
        let ready = self.engines[0].docker(&["node", "ls", "--format", "{{.Status}}"]);
        assert_eq!(
            ready.lines().filter(|s| *s == "Ready").count(),
            3,
            "{ready}"
        );
    }

    fn agent(&self, n: usize) -> BerthProcess {
        let address = self.address(n);
        let (own, seed, host) = (
            address.to_string(),
            format!("{}:{GOSSIP_PORT}", self.address(0)),
            self.engines[n].host(),
        );
        BerthProcess::start_in_netns(
            &self.netns(n),
            IpAddr::V4(address),
            &[
                ("DOCKER_HOST", &host),
                ("AGENT_ADVERTISE_ADDR", &own),
                ("AGENT_CLUSTER_PORT", GOSSIP_PORT),
                ("AGENT_CLUSTER_ADDR", &seed),
                ("AGENT_CLUSTER_PROBE_INTERVAL", "200ms"),
                ("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms"),
                ("AGENT_FANOUT_TIMEOUT", "3s"),
            ],
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Engines first, then their namespaces (taking the node ends of
        // the veth pairs), then the bridge (taking the other ends).
        self.engines.clear();
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

async fn get(agent: &BerthProcess, path: &str, target: Option<&str>) -> (u16, Value) {
    let mut request = request("GET", path, "");
    if let Some(node) = target {
        request
            .headers_mut()
            .insert("x-portaineragent-target", node.parse().unwrap());
    }
    let (response, body) = Target::Berth(agent.addr).fetch_request(request).await;
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (response.status().as_u16(), json)
}

/// The node of each container a list holds, by container name.
fn nodes_of(list: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let name = c["Names"][0].as_str()?.trim_start_matches('/').to_string();
            let node = c["Portainer"]["Agent"]["NodeName"].as_str()?.to_string();
            name.starts_with("lab-").then_some((name, node))
        })
        .collect();
    found.sort();
    found
}

fn expected(nodes: &[&str]) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|node| (format!("lab-{node}"), node.to_string()))
        .collect()
}

async fn wait_for_list(agent: &BerthProcess, nodes: &[&str]) -> Duration {
    let start = Instant::now();
    loop {
        let (status, list) = get(agent, "/containers/json?all=1", None).await;
        if status == 200 && nodes_of(&list) == expected(nodes) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < SETTLE,
            "the list never held {nodes:?}: {status} {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_per_node_of_a_real_swarm() {
    if engine_host().is_none() {
        return;
    }
    let lab = Lab::start();
    lab.form_swarm();
    for (n, node) in NODES.iter().enumerate() {
        lab.engines[n].docker(&[
            "create",
            "--name",
            &format!("lab-{node}"),
            "--network",
            "none",
            "berth-test/busybox",
            "true",
        ]);
    }
    let manager = lab.agent(0);
    let worker = lab.agent(1);
    let mut second = Some(lab.agent(2));

    // Lists across nodes, from a worker's agent.
    wait_for_list(&worker, &NODES).await;

    // Manager requests from a worker's agent reach the manager.
    let (status, nodes) = get(&worker, "/nodes", None).await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    let (status, info) = get(&worker, "/info", None).await;
    assert_eq!(status, 200);
    assert_eq!(info["Name"], "swarm-manager");
    assert_eq!(info["Swarm"]["ControlAvailable"], true);

    // Target routing from the manager's agent to a worker.
    let (status, list) = get(&manager, "/containers/json?all=1", Some(NODES[2])).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["Names"][0].as_str())
        .collect();
    assert_eq!(names, ["/lab-swarm-worker-2"]);
    // A container only that worker has: found there, not on the manager.
    let inspect = "/containers/lab-swarm-worker-2/json";
    let (status, container) = get(&manager, inspect, Some(NODES[2])).await;
    assert_eq!(status, 200, "{container}");
    assert_eq!(container["Name"], "/lab-swarm-worker-2");
    let (status, _) = get(&manager, inspect, None).await;
    assert_eq!(status, 404);

    // A worker's agent and engine stop: the others answer without it.
    if let Some(mut agent) = second.take() {
        agent.stop_with("TERM", Duration::from_secs(20));
    }
    lab.engines[2].stop();
    let took = wait_for_list(&worker, &NODES[..2]).await;
    eprintln!("figure: the list dropped the stopped worker within {took:?}");
    let (status, _) = get(&worker, "/nodes", None).await;
    assert_eq!(status, 200);

    // Both come back: the engine rejoins the swarm, the agent the cluster.
    lab.engines[2].restart();
    let _again = lab.agent(2);
    let took = wait_for_list(&worker, &NODES).await;
    eprintln!("figure: the restarted worker was listed again within {took:?}");
    let (status, list) = get(&manager, "/containers/json?all=1", Some(NODES[2])).await;
    assert_eq!(status, 200, "{list}");
}
