//! The operator's commands run as a person runs them, against a real
//! agent: `berth status` through the control socket, and `berth doctor`
//! with each failure made real (a dead engine, a wrong advertise address,
//! a Portainer that refuses, UDP blocked and large datagrams dropped by
//! nftables rules inside a network namespace this test creates).

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use berth_domain::edge::key::EdgeKey;
use serde_json::Value;
use support::berth_process::{berth_program, engine_host, free_port, BerthProcess};
use support::client::Target;
use support::portainer_server::{Mode, TestPortainer};
use support::temp_dir::temp_dir;

fn berth(env: &[(&str, &str)], args: &[&str]) -> Output {
    berth_in(None, env, args)
}

/// Runs the berth binary with only `env`, in the network namespace
/// `netns` when given, bounded in time.
fn berth_in(netns: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new("timeout");
    command.arg("60");
    if let Some(netns) = netns {
        command.args(["/usr/bin/nsenter", &format!("--net={netns}"), "--"]);
    }
    command
        .args(berth_program())
        .args(args)
        .env_clear()
        .envs(env.iter().copied());
    command.output().expect("run berth")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn status_json(data: &Path) -> Value {
    let data = data.to_str().unwrap();
    let output = berth(&[("DATA_PATH", data)], &["status", "--json"]);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("a JSON status")
}

#[tokio::test]
async fn status_shows_the_running_agent_its_cluster_and_its_pairing() {
    let data = temp_dir("status");
    let gossip = free_port().to_string();
    let seed = format!("127.0.0.1:{gossip}");
    // The second agent below has none, so this one needs the engine for a
    // gossip name of its own.
    let Some(real_engine) = engine_host() else {
        return;
    };
    let engine = real_engine;
    let agent = BerthProcess::start(&[
        ("DOCKER_HOST", &engine),
        ("DATA_PATH", data.to_str().unwrap()),
        ("AGENT_CLUSTER_PORT", &gossip),
        ("AGENT_CLUSTER_ADDR", &seed),
        ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
    ]);
    assert!(agent.logged_within("serving berth status", Duration::from_secs(10)));
    let socket = data.join("berth.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only root may read the control socket");

    let doc = status_json(&data);
    assert_eq!(doc["mode"], "standard");
    assert_eq!(doc["engine"]["reachable"], true, "{doc}");
    assert_eq!(doc["pid"], agent.pid());
    assert_eq!(doc["api"]["address"], agent.addr.to_string());
    assert_eq!(doc["api"]["paired"], false);
    assert!(doc["api"]["shutdown_in_seconds"].as_u64().unwrap() > 0);
    let members = doc["cluster"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{doc}");
    assert_eq!(members[0]["status"], "alive");
    assert_eq!(members[0]["address"], "127.0.0.1");
    assert_eq!(members[0]["agent_port"], agent.addr.port());

    // A signed request pairs the agent, and status says so.
    Target::Berth(agent.addr).fetch("GET", "/ping", "").await;
    Target::Berth(agent.addr).fetch("GET", "/agents", "").await;
    let doc = status_json(&data);
    assert_eq!(doc["api"]["paired"], true, "{doc}");
    assert!(doc["api"]["shutdown_in_seconds"].is_null());

    // A second agent joins: listed, and its last contact appears once a
    // probe of it is answered. Its gossip name comes from its engine's node
    // name: without an engine it differs from the first agent's.
    let gossip_b = free_port().to_string();
    let peer_data = temp_dir("status-peer");
    let _peer = BerthProcess::start(&[
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("AGENT_CLUSTER_PORT", &gossip_b),
        ("AGENT_CLUSTER_ADDR", &seed),
        ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
        ("DATA_PATH", peer_data.to_str().unwrap()),
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let contacted = loop {
        let doc = status_json(&data);
        let members = doc["cluster"]["members"].as_array().unwrap().clone();
        let other = members
            .iter()
            .find(|m| m["agent_port"] != agent.addr.port() && m["last_contact"].is_u64());
        if let Some(other) = other {
            break (
                doc["now"].as_u64().unwrap(),
                other["last_contact"].as_u64().unwrap(),
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no contact with the peer: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(contacted.0 - contacted.1 < 30, "{contacted:?}");

    // The doctor beside it names the engine's version.
    let doctor = berth(
        &[
            ("DATA_PATH", data.to_str().unwrap()),
            ("DOCKER_HOST", &engine),
        ],
        &["doctor"],
    );
    let report = stdout(&doctor);
    let engine_line = report
        .lines()
        .find(|l| l.contains("engine"))
        .unwrap_or_default();
    assert!(
        engine_line.starts_with("ok") && engine_line.contains("(API 1."),
        "{report}"
    );
    assert!(report.contains("running here (pid "), "{report}");

    let text = berth(&[("DATA_PATH", data.to_str().unwrap())], &["status"]);
    let text = stdout(&text);
    assert!(text.contains("paired with a Portainer key"), "{text}");
    assert!(text.contains("2 members, 2 alive"), "{text}");
    assert!(
        text.contains("LAST CONTACT") && text.contains("s ago"),
        "{text}"
    );

    drop(agent);
    let gone = berth(&[("DATA_PATH", data.to_str().unwrap())], &["status"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no agent answers"),
        "{gone:?}"
    );
}

#[test]
fn doctor_names_a_dead_engine_a_wrong_advertise_address_and_an_unreachable_portainer() {
    let data = temp_dir("doctor");
    // Two loopback ports that were free a moment ago: nothing listens.
    let (portainer, tunnel) = (free_port(), free_port());
    let key = EdgeKey {
        portainer_url: format!("http://127.0.0.1:{portainer}"),
        tunnel_addr: format!("127.0.0.1:{tunnel}"),
        fingerprint: "SHA256:x".into(),
        endpoint_id: 3,
    }
    .encode();
    let output = berth(
        &[
            ("DATA_PATH", data.to_str().unwrap()),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            // TEST-NET-2: on no machine's interface; doctor sends it nothing.
            ("AGENT_ADVERTISE_ADDR", "198.51.100.77"),
            ("EDGE", "1"),
            ("EDGE_ID", "doctor-test"),
            ("EDGE_KEY", &key),
        ],
        &["doctor"],
    );
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    for line in [
        "FAILED  engine",
        "FAILED  advertise address  198.51.100.77 (set by AGENT_ADVERTISE_ADDR) is not an address of this machine",
        "FAILED  portainer",
        "FAILED  tunnel server",
        "ok      edge key",
        "warning agent",
    ] {
        assert!(report.contains(line), "no {line:?} in\n{report}");
    }
    assert!(
        report.contains(&format!("127.0.0.1:{portainer} unreachable")),
        "{report}"
    );
    assert!(
        report.contains("fix: mount the engine's socket"),
        "{report}"
    );
}

/// With the real chisel server at the key's tunnel address and a scripted
/// Portainer: the poll answered, then refused (403, as for an environment
/// Portainer no longer trusts), and chisel's websocket upgrade made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_polls_portainer_and_opens_chisels_websocket() {
    let Some(binary) = support::chisel::binary("1.10.0") else {
        return;
    };
    let edge_id = "doctor-edge";
    let chisel = support::chisel::Chisel::start(&binary, edge_id, Default::default());
    let portainer = TestPortainer::start().await;
    let key = EdgeKey {
        portainer_url: portainer.url(),
        tunnel_addr: chisel.address.clone(),
        fingerprint: chisel.fingerprint.clone(),
        endpoint_id: 7,
    }
    .encode();
    let data = temp_dir("doctor-edge");
    let doctor = {
        let (data, key) = (data.to_path_buf(), key.clone());
        move || {
            let output = berth(
                &[
                    ("DATA_PATH", data.to_str().unwrap()),
                    ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
                    ("EDGE", "1"),
                    ("EDGE_ID", edge_id),
                    ("EDGE_KEY", &key),
                ],
                &["doctor"],
            );
            stdout(&output)
        }
    };
    let report = tokio::task::spawn_blocking(doctor.clone()).await.unwrap();
    assert!(report.contains("ok      portainer"), "{report}");
    assert!(report.contains("answers this agent's poll"), "{report}");
    assert!(
        report.contains("upgrades to chisel's websocket"),
        "{report}"
    );
    let polled = portainer.seen();
    let poll = polled
        .iter()
        .find(|seen| seen.path == "/api/endpoints/7/edge/status")
        .expect("the doctor polled");
    assert_eq!(poll.headers["X-PortainerAgent-EdgeID"], edge_id);

    portainer.set_mode(Mode::Forbidden);
    let report = tokio::task::spawn_blocking(doctor).await.unwrap();
    assert!(report.contains("FAILED  portainer"), "{report}");
    assert!(report.contains("refuses the poll"), "{report}");
    assert!(
        report.contains("Permission denied to access environment"),
        "{report}"
    );
}

/// Two network namespaces joined by a veth pair, removed (with the
/// nftables rules inside them) when dropped.
struct Pair {
    names: [String; 2],
}

impl Pair {
    fn new() -> Pair {
        let id = std::process::id();
        let pair = Pair {
            names: [format!("bda{id}"), format!("bdb{id}")],
        };
        let (a, b) = (&pair.names[0], &pair.names[1]);
        let subnet = id % 200 + 20;
        for args in [
            vec!["netns", "add", a],
            vec!["netns", "add", b],
            vec![
                "link", "add", "vda", "netns", a, "type", "veth", "peer", "name", "vdb", "netns", b,
            ],
        ] {
            ip(&args);
        }
        for (n, name, link) in [(1, a, "vda"), (2, b, "vdb")] {
            let address = format!("10.233.{subnet}.{n}/24");
            ip(&["-n", name, "addr", "add", &address, "dev", link]);
            ip(&["-n", name, "link", "set", link, "up"]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn address(&self, n: u8) -> std::net::IpAddr {
        let subnet = (std::process::id() % 200 + 20) as u8;
        std::net::Ipv4Addr::new(10, 233, subnet, n).into()
    }

    fn netns(&self, n: usize) -> String {
        format!("/run/netns/{}", self.names[n])
    }

    /// Replaces the first namespace's input filter with `rule`.
    fn filter(&self, rule: &str) {
        let script = format!(
            "flush ruleset\ntable inet doctor {{\n chain input {{ type filter hook input priority 0; {rule} }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.names[0], "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run nft");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft {rule}");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

#[test]
fn doctor_tells_a_udp_block_and_dropped_large_datagrams_from_a_healthy_path() {
    if std::env::var("BERTH_SKIP_ENGINE_TESTS").is_ok_and(|v| v == "1") {
        eprintln!(
            "BERTH_SKIP_ENGINE_TESTS=1: skipping a test that needs network namespaces and nftables"
        );
        return;
    }
    assert!(
        Path::new("/usr/sbin/nft").exists(),
        "this test needs nftables (scripts/test installs it)"
    );
    let pair = Pair::new();
    let peer = pair.address(1);
    let seed = format!("{peer}:7946");
    let _agent = BerthProcess::start_in_netns(
        &pair.netns(0),
        peer,
        &[
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            ("AGENT_CLUSTER_ADDR", &seed),
            ("AGENT_ADVERTISE_ADDR", &peer.to_string()),
        ],
    );
    let doctor = || {
        let output = berth_in(
            Some(&pair.netns(1)),
            &[
                ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
                ("AGENT_CLUSTER_ADDR", &seed),
            ],
            &["doctor"],
        );
        let report = stdout(&output);
        report
            .lines()
            .find(|line| line.contains(&format!("peer {seed}")))
            .unwrap_or_else(|| panic!("no peer line in\n{report}"))
            .to_string()
    };
    let healthy = doctor();
    assert!(
        healthy.starts_with("ok") && healthy.contains("large packets too"),
        "{healthy}"
    );

    pair.filter("udp dport 7946 drop;");
    let blocked = doctor();
    assert!(blocked.contains("UDP is blocked"), "{blocked}");

    // What an overlay with a smaller MTU does to memberlist's 1400-byte
    // packets, made with a length rule since a local MTU would fragment.
    pair.filter("udp dport 7946 meta length > 1200 drop;");
    let large = doctor();
    assert!(large.contains("large ones (1400 bytes) are not"), "{large}");
}
