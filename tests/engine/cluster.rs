//! Three berth agents on loopback, each in front of its own engine (with
//! its own node name), joined by gossip: one API for the whole cluster.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::berth_process::{cluster_engine_hosts, free_port, BerthProcess};
use crate::support::client::{request, Target};
use crate::{unique, IMAGE};

const NODES: [&str; 3] = ["berth-node-a", "berth-node-b", "berth-node-c"];

fn start_agent(engine: &str, gossip_port: u16, peers: &[u16]) -> BerthProcess {
    let seeds: Vec<String> = peers
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let gossip_port = gossip_port.to_string();
    let seeds = seeds.join(",");
    BerthProcess::start(&[
        ("DOCKER_HOST", engine),
        ("AGENT_CLUSTER_PORT", &gossip_port),
        ("AGENT_CLUSTER_ADDR", &seeds),
        ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
        ("AGENT_CLUSTER_PROBE_INTERVAL", "200ms"),
        ("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms"),
        ("AGENT_FANOUT_TIMEOUT", "3s"),
    ])
}

/// A signed request to `node` through some agent.
fn to_node(
    method: &str,
    path: &str,
    body: &str,
    node: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut request = request(method, path, body);
    request
        .headers_mut()
        .insert("x-portaineragent-target", node.parse().unwrap());
    request
}

/// `exec cat` in a container of `node`, through `agent`, over an upgraded
/// connection spliced at both hops: what goes in comes back out.
async fn exec_through(agent: &BerthProcess, node: &str, container: &str, input: &[u8]) -> String {
    let target = Target::Berth(agent.addr);
    let exec = json!({"AttachStdin": true, "AttachStdout": true, "Cmd": ["cat"]}).to_string();
    let (response, body) = target
        .fetch_request(to_node(
            "POST",
            &format!("/v1.41/containers/{container}/exec"),
            &exec,
            node,
        ))
        .await;
    assert_eq!(response.status(), 201, "{}", String::from_utf8_lossy(&body));
    let exec_id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut start = to_node(
        "POST",
        &format!("/v1.41/exec/{exec_id}/start"),
        r#"{"Detach":false,"Tty":false}"#,
        node,
    );
    start
        .headers_mut()
        .insert("connection", "Upgrade".parse().unwrap());
    start
        .headers_mut()
        .insert("upgrade", "tcp".parse().unwrap());
    let response = target.connect().await.send_request(start).await.unwrap();
    assert_eq!(response.status(), 101);
    crate::api::exchange(response, input).await
}

/// A request to `node` through `agent` (a JSON body unless `null`): the
/// status and the answer as JSON (`null` when it has none).
async fn on_node(
    agent: &BerthProcess,
    node: &str,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (response, answer) = Target::Berth(agent.addr)
        .fetch_request(to_node(method, path, &body, node))
        .await;
    let json = serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
    (response.status().as_u16(), json)
}

/// Creates and starts a container on `node` through `agent` from `spec`
/// (the image and no network are added); returns its ID.
async fn run_on(agent: &BerthProcess, node: &str, mut spec: serde_json::Value) -> String {
    spec["Image"] = json!(IMAGE);
    spec["HostConfig"] = json!({"NetworkMode": "none"});
    let path = format!("/v1.41/containers/create?name={}", unique("on-node"));
    let (status, created) = on_node(agent, node, "POST", &path, &spec).await;
    assert_eq!(status, 201, "{created}");
    let id = created["Id"].as_str().unwrap().to_string();
    let (status, _) = on_node(
        agent,
        node,
        "POST",
        &format!("/v1.41/containers/{id}/start"),
        &json!(null),
    )
    .await;
    assert_eq!(status, 204);
    id
}

/// Opens a console through `agent`, types a line, and waits for it back.
async fn type_into_console(agent: &BerthProcess, path: &str, text: &str) {
    let mut console = crate::support::console::open_at(agent.addr, path, None)
        .await
        .unwrap_or_else(|error| panic!("a console at {path}: {error}"));
    futures_util::SinkExt::send(
        &mut console,
        tokio_tungstenite::tungstenite::Message::text(format!("{text}\n")),
    )
    .await
    .unwrap();
    crate::support::console::read_until(&mut console, text).await;
}

/// Polls `/agents` on `agent` until it lists exactly `nodes`.
async fn wait_for_members(agent: &BerthProcess, nodes: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, listed) = Target::Berth(agent.addr).json("GET", "/agents", "").await;
        assert_eq!(status, 200, "{listed}");
        let mut names: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["NodeName"].as_str())
            .collect();
        names.sort();
        if names == nodes {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members are {names:?}, expected {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node each listed container is tagged with, by container ID.
async fn containers_by_node(agent: &BerthProcess) -> (http::Response<()>, Vec<(String, String)>) {
    let (response, body) = Target::Berth(agent.addr)
        .fetch("GET", "/containers/json?all=1", "")
        .await;
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let pairs = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["Id"].as_str().unwrap().to_string(),
                c["Portainer"]["Agent"]["NodeName"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    (response, pairs)
}

#[tokio::test]
async fn three_agents_answer_for_the_whole_cluster() {
    let Some(engines) = cluster_engine_hosts() else {
        return;
    };
    let ports = [free_port(), free_port(), free_port()];
    let a = start_agent(&engines[0], ports[0], &[ports[1], ports[2]]);
    let b = start_agent(&engines[1], ports[1], &[ports[0]]);
    let mut c = start_agent(&engines[2], ports[2], &[ports[0]]);
    wait_for_members(&a, &NODES).await;
    let (_, listed) = Target::Berth(a.addr).json("GET", "/agents", "").await;
    let a_entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["NodeName"] == "berth-node-a")
        .unwrap();
    assert_eq!(a_entry["IPAddress"], "127.0.0.1");
    assert_eq!(a_entry["Port"], a.addr.port().to_string());
    assert_eq!(a_entry["NodeRole"], "manager");

    // A container created on node B through agent A, with the target header.
    let name = unique("on-b");
    let mut create = request(
        "POST",
        &format!("/v1.41/containers/create?name={name}"),
        &json!({"Image": IMAGE, "Cmd": ["true"], "HostConfig": {"NetworkMode": "none"}})
            .to_string(),
    );
    create
        .headers_mut()
        .insert("x-portaineragent-target", "berth-node-b".parse().unwrap());
    let (response, body) = Target::Berth(a.addr).fetch_request(create).await;
    assert_eq!(response.status(), 201, "{}", String::from_utf8_lossy(&body));
    let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();

    // Listed from agent C, tagged with node B.
    let (response, containers) = containers_by_node(&c).await;
    assert_eq!(response.status(), 200);
    assert!(!response
        .headers()
        .contains_key("x-portaineragent-unavailable-nodes"));
    assert!(
        containers.contains(&(id.clone(), "berth-node-b".to_string())),
        "{containers:?}"
    );

    // A console on node B through agent C: the upgrade is spliced at both hops.
    let running = run_on(
        &c,
        "berth-node-b",
        json!({"Cmd": ["sleep", "300"], "OpenStdin": true}),
    )
    .await;
    assert_eq!(
        exec_through(&c, "berth-node-b", &running, b"across two hops\n").await,
        "across two hops\n"
    );
    // And Portainer's websocket console, its node named in the query.
    let exec = json!({"AttachStdin": true, "AttachStdout": true, "Tty": true, "Cmd": ["cat"]});
    let (status, created) = on_node(
        &c,
        "berth-node-b",
        "POST",
        &format!("/v1.41/containers/{running}/exec"),
        &exec,
    )
    .await;
    assert_eq!(status, 201);
    let exec_path = format!(
        "/websocket/exec?id={}&nodeName=berth-node-b",
        created["Id"].as_str().unwrap()
    );
    type_into_console(&c, &exec_path, "typed-on-b").await;
    // An attach console to a terminal container on node B, through agent A.
    let terminal = run_on(
        &a,
        "berth-node-b",
        json!({"Cmd": ["cat"], "Tty": true, "OpenStdin": true}),
    )
    .await;
    type_into_console(
        &a,
        &format!("/websocket/attach?id={terminal}&nodeName=berth-node-b"),
        "attached-on-b",
    )
    .await;
    for container in [terminal, running] {
        let (status, _) = on_node(
            &a,
            "berth-node-b",
            "DELETE",
            &format!("/v1.41/containers/{container}?force=1"),
            &json!(null),
        )
        .await;
        assert_eq!(status, 204);
    }

    // Swarm-manager requests through an agent on a standalone node.
    let (status, services) = Target::Berth(b.addr).json("GET", "/services", "").await;
    assert_eq!(status, 200, "{services}");
    assert!(services.is_array());
    let (status, nodes) = Target::Berth(b.addr).json("GET", "/v1.41/nodes", "").await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes[0]["Description"]["Hostname"], "berth-node-a");

    // Agent C dies: lists from A still come, within the timeout, naming it.
    c.stop_with("KILL", Duration::from_secs(10));
    let started = Instant::now();
    let (response, containers) = containers_by_node(&a).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 200);
    let unavailable = response.headers()["x-portaineragent-unavailable-nodes"]
        .to_str()
        .unwrap();
    assert!(unavailable.starts_with("berth-node-c ("), "{unavailable}");
    assert!(containers.contains(&(id.clone(), "berth-node-b".to_string())));
    assert!(containers.iter().all(|(_, node)| node != "berth-node-c"));

    // It comes back, and so do its containers.
    let c = start_agent(&engines[2], ports[2], &[ports[0]]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (response, _) = containers_by_node(&a).await;
        if !response
            .headers()
            .contains_key("x-portaineragent-unavailable-nodes")
        {
            break;
        }
        assert!(Instant::now() < deadline, "agent C did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_members(&c, &NODES).await;

    let (response, _) = Target::Berth(c.addr)
        .fetch_request(to_node(
            "DELETE",
            &format!("/v1.41/containers/{id}"),
            "",
            "berth-node-b",
        ))
        .await;
    assert_eq!(response.status(), 204);
    drop((a, b));
}
