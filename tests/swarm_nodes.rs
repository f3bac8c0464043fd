//! A real three-node swarm on this machine: three engines, each in network
//! and UTS namespaces of its own (node names swarm-manager, swarm-worker-1
//! and swarm-worker-2), joined by veth pairs to a bridge this test creates
//! (addresses 10.231.N.1–3, reachable from nowhere else), and one berth
//! agent per node in its node's namespace, as in a global service. Manager routing from a worker's
//! agent, target routing, lists across nodes, and a worker's agent and
//! engine stopped and started again. Then the same swarm with the real Go
//! agent in front of one worker instead of berth, when the machine has one
//! (`BERTH_TEST_GO_AGENT`): a mixed cluster, both ways.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use futures_util::SinkExt;
use serde_json::Value;
use support::berth_process::{engine_host, engine_socket, BerthProcess};
use support::client::{request, Target};
use support::console::{open_at, read_until};
use support::go_agent::{go_agent_binary, GoAgent};
use support::own_engine::OwnEngine;
use support::temp_dir::temp_dir;
use tokio_tungstenite::tungstenite::Message;

const NODES: [&str; 3] = ["swarm-manager", "swarm-worker-1", "swarm-worker-2"];
/// Docker's swarm gossip has 7946 inside each namespace.
const GOSSIP_PORT: &str = "7947";
const SETTLE: Duration = Duration::from_secs(60);

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

/// The bridge, the subnet and the nodes' network namespaces of one test
/// (`tag` tells two labs of one process apart).
struct Lab {
    tag: u32,
    bridge: String,
    subnet: u8,
    namespaces: Vec<String>,
    engines: Vec<OwnEngine>,
}

impl Lab {
    /// Namespace `n`'s address: the nodes' first, then any further
    /// namespaces `wire` made.
    fn address(&self, n: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, n as u8 + 1)
    }

    fn netns(&self, n: usize) -> String {
        format!("/run/netns/{}", self.namespaces[n])
    }

    fn start(tag: u32) -> Lab {
        let id = std::process::id();
        let mut lab = Lab {
            tag,
            bridge: format!("bsw{id}{tag}"),
            subnet: ((id * 2 + tag) % 200) as u8 + 20,
            namespaces: Vec::new(),
            engines: Vec::new(),
        };
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        let gateway = format!("10.231.{}.254/24", lab.subnet);
        ip(&["addr", "add", &gateway, "dev", &lab.bridge]);
        ip(&["link", "set", &lab.bridge, "up"]);
        for _ in NODES {
            lab.wire();
        }
        for (n, node) in NODES.iter().enumerate() {
            let engine = OwnEngine::start_in(node, Some(&lab.netns(n)));
            engine.import_busybox();
            lab.engines.push(engine);
        }
        lab
    }

    /// A further network namespace, joined to the bridge by a veth pair;
    /// its index for `address` and `netns`.
    fn wire(&mut self) -> usize {
        let (id, tag, n) = (std::process::id(), self.tag, self.namespaces.len());
        let (namespace, host_end, node_end) = (
            format!("bl{id}{tag}{n}"),
            format!("vh{id}{tag}{n}"),
            format!("vn{id}{tag}{n}"),
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
        n
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
        let seed = format!("{}:{GOSSIP_PORT}", self.address(0));
        self.berth_in(n, n, GOSSIP_PORT, &seed)
    }

    /// berth in namespace `ns` in front of node `node`'s engine, gossiping
    /// on `port` and joining `seed`.
    fn berth_in(&self, ns: usize, node: usize, port: &str, seed: &str) -> BerthProcess {
        let address = self.address(ns);
        let (own, host) = (address.to_string(), self.engines[node].host());
        BerthProcess::start_in_netns(
            &self.netns(ns),
            IpAddr::V4(address),
            &[
                ("DOCKER_HOST", &host),
                ("AGENT_ADVERTISE_ADDR", &own),
                ("AGENT_CLUSTER_PORT", port),
                ("AGENT_CLUSTER_ADDR", seed),
                ("AGENT_CLUSTER_PROBE_INTERVAL", "200ms"),
                ("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms"),
                ("AGENT_FANOUT_TIMEOUT", "3s"),
            ],
        )
    }

    /// A stopped container named after its node on each node, which lists
    /// show with the node they come from.
    fn create_containers(&self) {
        for (n, node) in NODES.iter().enumerate() {
            self.engines[n].docker(&[
                "create",
                "--name",
                &format!("lab-{node}"),
                "--network",
                "none",
                "berth-test/busybox",
                "true",
            ]);
        }
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

async fn get(agent: SocketAddr, path: &str, target: Option<&str>) -> (u16, Value) {
    call(agent, "GET", path, "", target).await
}

async fn call(
    agent: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    target: Option<&str>,
) -> (u16, Value) {
    let mut request = request(method, path, body);
    if let Some(node) = target {
        request
            .headers_mut()
            .insert("x-portaineragent-target", node.parse().unwrap());
    }
    let (response, body) = Target::Berth(agent).fetch_request(request).await;
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

async fn wait_for_list(agent: SocketAddr, nodes: &[&str]) -> Duration {
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
    let lab = Lab::start(0);
    lab.form_swarm();
    lab.create_containers();
    let manager = lab.agent(0);
    let worker = lab.agent(1);
    let mut second = Some(lab.agent(2));

    // Lists across nodes, from a worker's agent.
    wait_for_list(worker.addr, &NODES).await;

    // Manager requests from a worker's agent reach the manager.
    let (status, nodes) = get(worker.addr, "/nodes", None).await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    let (status, info) = get(worker.addr, "/info", None).await;
    assert_eq!(status, 200);
    assert_eq!(info["Name"], "swarm-manager");
    assert_eq!(info["Swarm"]["ControlAvailable"], true);

    // Target routing from the manager's agent to a worker.
    let (status, list) = get(manager.addr, "/containers/json?all=1", Some(NODES[2])).await;
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
    let (status, container) = get(manager.addr, inspect, Some(NODES[2])).await;
    assert_eq!(status, 200, "{container}");
    assert_eq!(container["Name"], "/lab-swarm-worker-2");
    let (status, _) = get(manager.addr, inspect, None).await;
    assert_eq!(status, 404);

    // A worker's agent and engine stop: the others answer without it.
    if let Some(mut agent) = second.take() {
        agent.stop_with("TERM", Duration::from_secs(20));
    }
    lab.engines[2].stop();
    let took = wait_for_list(worker.addr, &NODES[..2]).await;
    eprintln!("figure: the list dropped the stopped worker within {took:?}");
    let (status, _) = get(worker.addr, "/nodes", None).await;
    assert_eq!(status, 200);

    // Both come back: the engine rejoins the swarm, the agent the cluster.
    lab.engines[2].restart();
    let _again = lab.agent(2);
    let took = wait_for_list(worker.addr, &NODES).await;
    eprintln!("figure: the restarted worker was listed again within {took:?}");
    let (status, list) = get(manager.addr, "/containers/json?all=1", Some(NODES[2])).await;
    assert_eq!(status, 200, "{list}");
}

/// Polls `/agents` on `agent` until it lists exactly `nodes`.
async fn wait_for_members(agent: SocketAddr, nodes: &[&str]) {
    let start = Instant::now();
    loop {
        let (status, listed) = get(agent, "/agents", None).await;
        let mut names: Vec<&str> = listed
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter_map(|m| m["NodeName"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if status == 200 && names == nodes {
            return;
        }
        assert!(
            start.elapsed() < SETTLE,
            "members are {status} {listed}, expected {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The container only `node` has, inspected through the agent at `agent`
/// with `node` as the target.
async fn found_through(agent: SocketAddr, node: &str) {
    let name = format!("lab-{node}");
    let path = format!("/containers/{name}/json");
    let (status, found) = get(agent, &path, Some(node)).await;
    assert_eq!(status, 200, "{path} through {agent}: {found}");
    assert_eq!(found["Name"], format!("/{name}"));
}

/// An exec console in the running container `console-<node>` through
/// the agent at `agent`: created for that node, opened, typed into.
async fn type_on(agent: SocketAddr, node: &str) {
    let exec = r#"{"AttachStdin":true,"AttachStdout":true,"Tty":true,"Cmd":["cat"]}"#;
    let path = format!("/containers/console-{node}/exec");
    let (status, created) = call(agent, "POST", &path, exec, Some(node)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["Id"].as_str().unwrap();
    // As Portainer opens it: the node in the query and in the target
    // header (the Go agent routes by the header alone).
    let path = format!("/websocket/exec?id={id}&nodeName={node}");
    let mut console = open_at(agent, &path, Some(node))
        .await
        .unwrap_or_else(|error| panic!("a console at {path} through {agent}: {error}"));
    let text = format!("typed-on-{node}");
    console
        .send(Message::text(format!("{text}\n")))
        .await
        .unwrap();
    read_until(&mut console, &text).await;
}

/// The real Go agent fronts the last worker, berth the manager and the
/// first worker: lists, members, manager and target routing and consoles
/// work from either kind of agent to the other, and each notices the
/// other going: the Go agent killed (no leave) and started again, berth
/// stopped (a leave, which the Go agent must see as a leave, not a
/// failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_agent_and_berth_in_one_swarm() {
    if engine_host().is_none() {
        return;
    }
    let Some(binary) = go_agent_binary() else {
        return;
    };
    let mut lab = Lab::start(1);
    lab.form_swarm();
    lab.create_containers();
    for node in &NODES[1..] {
        let n = NODES.iter().position(|n| n == node).unwrap();
        lab.engines[n].docker(&[
            "run",
            "-d",
            "--name",
            &format!("console-{node}"),
            "--network",
            "none",
            "berth-test/busybox",
            "sleep",
            "600",
        ]);
    }
    // The Go agent gossips on 7946, which Docker's swarm gossip holds in
    // each node's namespace, and joins addresses on 7946 only: it and the
    // manager's berth run in namespaces of their own on the bridge (as
    // agents do in their containers), both on 7946.
    let (berth_ns, go_ns) = (lab.wire(), lab.wire());
    let (berth_ip, go_ip) = (lab.address(berth_ns), lab.address(go_ns));
    let folder = temp_dir("go-agent");
    let start_go = |lab: &Lab| {
        GoAgent::start(
            &binary,
            &lab.netns(go_ns),
            IpAddr::V4(go_ip),
            &engine_socket(&lab.engines[2].host()),
            &berth_ip.to_string(),
            &folder.0,
        )
    };
    let mut go = start_go(&lab);
    let manager = lab.berth_in(berth_ns, 0, "7946", &format!("{go_ip}:7946"));
    let mut worker = lab.berth_in(1, 1, GOSSIP_PORT, &format!("{berth_ip}:7946"));

    // Lists across the three nodes and the members, from either kind.
    for agent in [worker.addr, go.addr] {
        wait_for_list(agent, &NODES).await;
        wait_for_members(agent, &NODES).await;
    }
    // Manager requests from the Go agent's worker reach berth's manager.
    let (status, info) = get(go.addr, "/info", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["Name"], "swarm-manager");
    let (status, nodes) = get(go.addr, "/nodes", None).await;
    assert_eq!(status, 200, "{nodes}");
    // Targets, both ways.
    found_through(manager.addr, NODES[2]).await;
    found_through(go.addr, NODES[1]).await;
    // Consoles, both ways.
    type_on(manager.addr, NODES[2]).await;
    type_on(go.addr, NODES[1]).await;

    // The Go agent killed: berth's lists drop its node; started again, it
    // rejoins through berth and is listed again.
    go.kill();
    let took = wait_for_list(worker.addr, &NODES[..2]).await;
    eprintln!("figure: berth's list dropped the killed Go agent's node within {took:?}");
    // The list skips an agent it cannot reach; the gossip's failure
    // detection is what takes it out of the members.
    let start = Instant::now();
    wait_for_members(worker.addr, &NODES[..2]).await;
    eprintln!(
        "figure: berth's gossip found the killed Go agent failed within {:?}",
        start.elapsed() + took
    );
    let go = start_go(&lab);
    for agent in [worker.addr, go.addr] {
        wait_for_list(agent, &NODES).await;
        wait_for_members(agent, &NODES).await;
    }

    // berth stopped: the Go agent drops its node, having seen it leave.
    worker.stop_with("TERM", Duration::from_secs(20));
    wait_for_list(go.addr, &[NODES[0], NODES[2]]).await;
    wait_for_members(go.addr, &[NODES[0], NODES[2]]).await;
    let worker_ip = lab.address(1).to_string();
    let seen: Vec<String> = go
        .logged()
        .lines()
        .filter(|line| line.contains(&worker_ip) && line.contains("EventMember"))
        .map(str::to_string)
        .collect();
    assert!(
        seen.iter().any(|line| line.contains("EventMemberLeave")),
        "the Go agent never saw berth leave: {seen:?}"
    );
    assert!(
        !seen.iter().any(|line| line.contains("EventMemberFailed")),
        "the Go agent saw berth's leave as a failure: {seen:?}"
    );
}
