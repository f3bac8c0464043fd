//! Contract tests: the application layer against a fake engine that
//! replays answers recorded from the real engine (Docker 20.10, API 1.41).
//! No socket is involved.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use berth::signature::SignatureGuard;
use berth::Agent;
use berth_adapters::docker::facts_from_info;
use berth_adapters::fs::ConfinedFiles;
use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_domain::signature::overlap::Standing;
use berth_domain::signature::SignaturePolicy;
use berth_ports::{full_body, Body, ConnectionStanding, RequestHandler};
use bollard::models::{Node, SystemInfo};
use http::{Request, Response};
use http_body_util::BodyExt;
use support::fake_cluster::{FakeMembership, FakePeers};
use support::fake_engine::FakeEngine;
use support::fake_host::FakeHostProbe;
use support::files::test_files;
use support::fixtures::{
    load, load_from, portainer_identity, recorded_requests, signature_vector, ENGINES,
};
use tokio::sync::watch;

fn standalone_facts() -> EngineFacts {
    let info: SystemInfo = serde_json::from_slice(&load("info").body).unwrap();
    facts_from_info(&info, None)
}

fn agent(engine: FakeEngine) -> StandaloneAgent {
    agent_with(engine, SignaturePolicy::new(None, [3; 32], 64))
}

type StandaloneAgent = Agent<FakeEngine, FakeMembership, FakePeers, FakeHostProbe, ConfinedFiles>;

fn agent_with(engine: FakeEngine, policy: SignaturePolicy) -> StandaloneAgent {
    // A receiver keeps the last value after its sender is gone.
    let (_, receiver) = watch::channel(Arc::new(standalone_facts()));
    Agent::new(
        engine,
        FakeHostProbe::with_hardware(),
        test_files(),
        receiver,
        SignatureGuard::new(policy),
        None,
    )
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// A request signed with the tests' Portainer identity.
async fn call(
    agent: &StandaloneAgent,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (Response<()>, Vec<u8>) {
    let identity = portainer_identity();
    let mut signed = vec![
        ("x-portaineragent-publickey", identity.public_key.as_str()),
        ("x-portaineragent-signature", identity.signature.as_str()),
    ];
    signed.extend_from_slice(headers);
    call_with(agent, method, uri, &signed).await
}

async fn call_with(
    agent: &StandaloneAgent,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (Response<()>, Vec<u8>) {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request: Request<Body> = builder.body(full_body("")).unwrap();
    let response = agent.handle(request, peer()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, ()), bytes)
}

fn assert_portainer_headers(response: &Response<()>) {
    assert_eq!(response.headers()["portainer-agent"], "2.23.0");
    assert_eq!(response.headers()["portainer-agent-api-version"], "2");
    assert_eq!(response.headers()["portainer-agent-platform"], "1");
}

/// Every recorded engine answer, of each engine, comes back through berth
/// unchanged: status, body and Docker's headers, plus the Portainer headers.
#[tokio::test]
async fn recorded_answers_pass_through_unchanged() {
    for version in ENGINES {
        answers_pass_through_unchanged(version).await;
    }
}

async fn answers_pass_through_unchanged(version: &str) {
    let requests: Vec<_> = recorded_requests()
        .into_iter()
        .filter(|(name, _, _)| !name.starts_with("swarm-"))
        .collect();
    let answers = requests
        .iter()
        .map(|(name, method, path)| ((method.as_str(), path.as_str()), load_from(version, name)))
        .collect();
    let engine = FakeEngine::replaying(answers);
    let agent = agent(engine.clone());
    for (name, method, path) in &requests {
        let recorded = load_from(version, name);
        let (response, body) = call(&agent, method, path, &[]).await;
        assert_eq!(
            response.status().as_u16(),
            recorded.status,
            "{version} {name}"
        );
        assert_eq!(body, recorded.body, "{version} {name}");
        for docker_header in [
            "Api-Version",
            "Content-Type",
            "Docker-Experimental",
            "Ostype",
            "Server",
        ] {
            assert_eq!(
                response
                    .headers()
                    .get(docker_header)
                    .map(|v| v.to_str().unwrap()),
                recorded.header(docker_header),
                "{version} {name}: {docker_header}"
            );
        }
        assert_portainer_headers(&response);
    }
    // The engine saw the paths the client sent, version prefix included.
    let seen: Vec<String> = engine.seen().into_iter().map(|r| r.uri).collect();
    let sent: Vec<String> = requests.iter().map(|(_, _, path)| path.clone()).collect();
    assert_eq!(seen, sent);
}

#[tokio::test]
async fn engine_errors_are_relayed_not_rewritten() {
    for version in ENGINES {
        let engine = FakeEngine::replaying(vec![
            (
                ("GET", "/v1.41/containers/does-not-exist/json"),
                load_from(version, "container-missing"),
            ),
            (("GET", "/v9.99/version"), load_from(version, "api-too-new")),
        ]);
        let agent = agent(engine);
        let (response, body) =
            call(&agent, "GET", "/v1.41/containers/does-not-exist/json", &[]).await;
        assert_eq!(response.status(), 404, "{version}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(json["message"]
            .as_str()
            .unwrap()
            .contains("No such container"));
        let (response, body) = call(&agent, "GET", "/v9.99/version", &[]).await;
        assert_eq!(response.status(), 400, "{version}");
        assert!(
            String::from_utf8_lossy(&body).contains("is too new"),
            "{version}"
        );
    }
}

#[tokio::test]
async fn unreachable_engine_is_a_502_naming_the_socket() {
    let agent = agent(FakeEngine::unreachable());
    let (response, body) = call(&agent, "GET", "/v1.41/version", &[]).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_portainer_headers(&response);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("unix:///fake/docker.sock"),
        "{json}"
    );
    assert_eq!(json["details"], "Connect: no such file or directory");
}

#[tokio::test]
async fn agent_routes_answer_without_the_engine() {
    let engine = FakeEngine::unreachable();
    let agent = agent(engine.clone());
    let (response, body) = call(&agent, "GET", "/ping", &[]).await;
    assert_eq!(response.status(), 204);
    assert!(body.is_empty());
    assert_portainer_headers(&response);

    let (response, body) = call(&agent, "GET", "/v2/agents", &[]).await;
    assert_eq!(response.status(), 503);
    assert_portainer_headers(&response);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["details"], "Agent management is disabled");

    let (response, body) = call(&agent, "GET", "/pingfoo", &[]).await;
    assert_eq!(response.status(), 404);
    assert_eq!(body, b"404 page not found\n");
    assert_portainer_headers(&response);

    let (response, body) = call(&agent, "POST", "/ping", &[]).await;
    assert_eq!(response.status(), 405);
    assert!(body.is_empty());

    let (response, _) = call(&agent, "GET", "/key", &[]).await;
    assert!(
        response.headers().get("portainer-agent").is_none(),
        "/key carries no common headers"
    );
}

#[tokio::test]
async fn malformed_targets_are_a_400() {
    let agent = agent(FakeEngine::unreachable());
    for uri in ["http://other.example/v1.41/version", "*"] {
        let (response, body) = call(&agent, "GET", uri, &[]).await;
        assert_eq!(response.status(), 400, "{uri}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["message"], "Invalid request");
        assert_portainer_headers(&response);
    }
    let (response, _) = call(&agent, "CONNECT", "/", &[]).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let engine = FakeEngine::replaying(vec![(("GET", "/_ping"), load("ping"))]);
    let agent = agent(engine.clone());
    let headers = [
        ("connection", "keep-alive, x-hop"),
        ("x-hop", "1"),
        ("te", "trailers"),
        ("x-portaineragent-target", "ignored-on-standalone"),
        ("x-registry-auth", "e30="),
    ];
    let (response, _) = call(&agent, "GET", "/_ping", &headers).await;
    assert_eq!(response.status(), 200);
    let seen = &engine.seen()[0];
    for gone in ["connection", "x-hop", "te"] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the engine"
        );
    }
    assert_eq!(seen.headers["x-registry-auth"], "e30=");
    // The signature travels on, for the next agent to check.
    assert_eq!(
        seen.headers["x-portaineragent-signature"],
        portainer_identity().signature.as_str()
    );
    assert_eq!(
        seen.headers["x-portaineragent-target"],
        "ignored-on-standalone"
    );
}

#[test]
fn recorded_info_gives_standalone_facts() {
    for (version, server) in ENGINES.into_iter().zip(["20.10.24+dfsg1", "26.1.5+dfsg1"]) {
        let info: SystemInfo = serde_json::from_slice(&load_from(version, "info").body).unwrap();
        let facts = facts_from_info(&info, None);
        let raw: serde_json::Value = load_from(version, "info").json();
        assert_eq!(facts.node_name, raw["Name"].as_str().unwrap());
        assert_eq!(facts.role, SwarmRole::Standalone, "{version}");
        assert!(facts.node_id.is_empty());
        assert_eq!(facts.engine_version, server);
    }
}

#[test]
fn recorded_swarm_info_gives_leader_manager_facts() {
    for version in ENGINES {
        let swarm_info = load_from(version, "swarm-info");
        let info: SystemInfo = serde_json::from_slice(&swarm_info.body).unwrap();
        let node: Node = serde_json::from_slice(&load_from(version, "swarm-node").body).unwrap();
        let facts = facts_from_info(&info, Some(&node));
        assert_eq!(facts.role, SwarmRole::Manager { leader: true }, "{version}");
        assert_eq!(
            facts.node_id,
            swarm_info.json()["Swarm"]["NodeID"].as_str().unwrap()
        );
        // A manager whose node could not be inspected is not taken for the leader.
        assert_eq!(
            facts_from_info(&info, None).role,
            SwarmRole::Manager { leader: false }
        );
    }
}

/// The recorded lists of each engine merge as Portainer expects: every
/// object of every node kept in Docker's shape, tagged with its node.
#[test]
fn recorded_lists_of_each_engine_merge_with_their_nodes_named() {
    use berth_domain::aggregate::{merge, NodeAnswer, NodeResult};
    use berth_domain::routing::ListKind;
    for version in ENGINES {
        for (kind, name) in [
            (ListKind::Containers, "containers-all"),
            (ListKind::Images, "images"),
            (ListKind::Volumes, "volumes"),
            (ListKind::Networks, "networks"),
        ] {
            let recorded = load_from(version, name);
            let results = ["node-a", "node-b"]
                .into_iter()
                .map(|node| NodeResult {
                    node: node.to_string(),
                    answer: NodeAnswer::Answered {
                        status: recorded.status,
                        body: recorded.body.clone(),
                    },
                })
                .collect();
            let merged = merge(kind, results);
            assert!(merged.failures.is_empty(), "{version} {name}: {merged:?}");
            let original = recorded.json();
            let merged_list: serde_json::Value = serde_json::from_slice(&merged.body).unwrap();
            let (items, each) = match kind {
                ListKind::Volumes => (
                    merged_list["Volumes"].as_array().unwrap().clone(),
                    original["Volumes"].as_array().unwrap().len(),
                ),
                _ => (
                    merged_list.as_array().unwrap().clone(),
                    original.as_array().unwrap().len(),
                ),
            };
            assert!(each > 0, "{version} {name} recorded nothing");
            assert_eq!(items.len(), 2 * each, "{version} {name}");
            for (index, item) in items.iter().enumerate() {
                let node = if index < each { "node-a" } else { "node-b" };
                assert_eq!(item["Portainer"]["Agent"]["NodeName"], node);
                let mut untagged = item.clone();
                untagged.as_object_mut().unwrap().remove("Portainer");
                let recorded_item = match kind {
                    ListKind::Volumes => &original["Volumes"][index % each],
                    _ => &original[index % each],
                };
                assert_eq!(
                    &untagged, recorded_item,
                    "{version} {name}: Docker's shape kept"
                );
            }
        }
    }
}

/// A node promoted after start is seen at the next refresh, without a
/// restart; a failed refresh keeps the last known facts.
#[tokio::test(start_paused = true)]
async fn engine_facts_are_refreshed_without_a_restart() {
    use std::time::Duration;
    let engine = FakeEngine::default().with_facts(standalone_facts());
    let mut facts = berth::facts::watch_engine_facts(
        engine.clone(),
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(facts.borrow().role, SwarmRole::Standalone);

    let promoted = EngineFacts {
        role: SwarmRole::Manager { leader: true },
        node_id: "node-id".into(),
        ..standalone_facts()
    };
    engine.set_facts(promoted.clone());
    tokio::time::timeout(Duration::from_secs(31), facts.changed())
        .await
        .expect("a refresh within the interval")
        .unwrap();
    assert_eq!(**facts.borrow_and_update(), promoted);
}

/// With an events stream, a change the engine announces is read at once,
/// long before the safety interval; with the stream open and no event,
/// the engine is not asked again until that interval; a stream that ends
/// (the engine restarted) is a reason to read and to subscribe again.
#[tokio::test(start_paused = true)]
async fn engine_facts_follow_the_engines_events() {
    use std::time::Duration;
    let engine = FakeEngine::default().with_facts(standalone_facts());
    let events = engine.events_stream();
    let mut facts = berth::facts::watch_engine_facts(
        engine.clone(),
        Duration::from_secs(600),
        Duration::from_secs(5),
    )
    .await;
    let subscribed = |engine: &FakeEngine| {
        engine
            .seen()
            .iter()
            .filter(|seen| seen.uri == berth_domain::engine::FACT_EVENTS_PATH)
            .count()
    };
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(subscribed(&engine), 1, "one events stream, held open");
    assert!(!facts.has_changed().unwrap());

    let promoted = EngineFacts {
        role: SwarmRole::Manager { leader: true },
        node_id: "node-id".into(),
        ..standalone_facts()
    };
    announced(&engine, &events, &mut facts, &promoted).await;

    // The stream ends: read at once, and subscribe again a little later
    // (not in a loop, should the engine end every stream at once).
    engine.set_facts(standalone_facts());
    let again = engine.events_stream();
    drop(events);
    tokio::time::timeout(Duration::from_secs(1), facts.changed())
        .await
        .expect("read as the stream ended")
        .unwrap();
    assert_eq!(**facts.borrow_and_update(), standalone_facts());
    assert_eq!(subscribed(&engine), 1);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(subscribed(&engine), 2);
    // The new stream is followed as the first was.
    announced(&engine, &again, &mut facts, &promoted).await;
}

/// `changed` becomes the engine's facts and a node event says so on
/// `events`: berth reads them as the event comes.
async fn announced(
    engine: &FakeEngine,
    events: &tokio::sync::mpsc::UnboundedSender<bytes::Bytes>,
    facts: &mut berth::facts::FactsReceiver,
    changed: &EngineFacts,
) {
    engine.set_facts(changed.clone());
    events
        .send(r#"{"Type":"node","Action":"update"}"#.into())
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), facts.changed())
        .await
        .expect("read as the event came")
        .unwrap();
    assert_eq!(**facts.borrow_and_update(), *changed);
}

#[tokio::test(start_paused = true)]
async fn an_engine_down_at_start_is_retried() {
    use std::time::Duration;
    let engine = FakeEngine::default();
    let mut facts = berth::facts::watch_engine_facts(
        engine.clone(),
        Duration::from_secs(30),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(**facts.borrow(), EngineFacts::unknown());
    engine.set_facts(standalone_facts());
    tokio::time::timeout(Duration::from_secs(31), facts.changed())
        .await
        .expect("a retry within the interval")
        .unwrap();
    assert_eq!(facts.borrow().node_name, standalone_facts().node_name);
}

/// A signature is verified beside the engine's work (the engine asked
/// before the signature is known good) only for reads, on a connection
/// that has shown a good signature and never a bad one, while a core is
/// spare (one request at a time here); a bad signature gets its 403 either
/// way, and the engine's answer to it is dropped.
#[tokio::test]
async fn engine_work_overlaps_verification_only_on_a_proven_connection() {
    let engine = FakeEngine::default();
    let agent = agent(engine.clone());
    let asked = |engine: &FakeEngine| engine.seen().len();
    let send = |standing: &ConnectionStanding, method: &str, vector: &str| {
        let vector = signature_vector(vector);
        let request = Request::builder()
            .method(method)
            .uri("/containers/json")
            .header("x-portaineragent-publickey", vector.public_key)
            .header("x-portaineragent-signature", vector.signature)
            .extension(standing.clone())
            .body(full_body(""))
            .unwrap();
        let agent = agent.clone();
        async move { agent.handle(request, peer()).await.status().as_u16() }
    };

    // A connection that starts with a bad signature: the engine is never
    // asked before a signature verified, not even after a good one.
    let failed = ConnectionStanding::default();
    assert_eq!(send(&failed, "GET", "p256-a-wrong-message").await, 403);
    assert_eq!(asked(&engine), 0);
    assert_ne!(send(&failed, "GET", "p256-a-good").await, 403);
    assert_eq!(asked(&engine), 1);
    assert_eq!(send(&failed, "GET", "p256-a-secret").await, 403);
    assert_eq!(asked(&engine), 1, "{:?}", failed.get());

    // A proven connection: a change with a bad signature never reaches the
    // engine.
    let proven = ConnectionStanding::default();
    assert_ne!(send(&proven, "GET", "p256-a-good").await, 403);
    assert_eq!(proven.get(), Standing::Proven);
    assert_eq!(asked(&engine), 2);
    assert_eq!(send(&proven, "POST", "p256-a-wrong-message").await, 403);
    assert_eq!(asked(&engine), 2);

    // A read with a bad signature on a proven connection went to the engine
    // beside its verification, and was refused; the connection is then
    // trusted no more.
    let overlapped = ConnectionStanding::default();
    assert_ne!(send(&overlapped, "GET", "p256-a-good").await, 403);
    assert_eq!(asked(&engine), 3);
    assert_eq!(send(&overlapped, "GET", "p256-a-secret").await, 403);
    // With one core there is never a spare one to verify on.
    let spare_core = std::thread::available_parallelism().unwrap().get() > 1;
    let overlaps = usize::from(spare_core);
    assert_eq!(
        asked(&engine),
        3 + overlaps,
        "overlapped with the verification"
    );
    assert_eq!(overlapped.get(), Standing::Failed);
    assert_eq!(send(&overlapped, "GET", "p256-a-wrong-message").await, 403);
    assert_eq!(asked(&engine), 3 + overlaps);
}

fn signed_by(name: &str) -> [(&'static str, String); 2] {
    let vector = signature_vector(name);
    [
        ("x-portaineragent-publickey", vector.public_key),
        ("x-portaineragent-signature", vector.signature),
    ]
}

async fn call_signed_by(
    agent: &StandaloneAgent,
    name: &str,
    uri: &str,
) -> (Response<()>, serde_json::Value) {
    let headers = signed_by(name);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (response, body) = call_with(agent, "GET", uri, &headers).await;
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (response, json)
}

/// Portainer recognises an agent from the 403 of an unsigned request: it
/// must carry the Portainer-Agent headers and the reference's body.
#[tokio::test]
async fn unsigned_requests_get_the_reference_403() {
    let engine = FakeEngine::replaying(vec![(("GET", "/_ping"), load("ping"))]);
    let agent = agent(engine.clone());
    for uri in [
        "/_ping",
        "/v1.41/containers/json",
        "/agents",
        "/v2/browse/ls",
        "/pingfoo",
    ] {
        let (response, body) = call_with(&agent, "GET", uri, &[]).await;
        assert_eq!(response.status(), 403, "{uri}");
        assert_portainer_headers(&response);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"message": "Missing request signature headers", "details": "Unauthorized"})
        );
    }
    assert!(
        engine.seen().is_empty(),
        "nothing unsigned reaches the engine"
    );
    let (response, _) = call_with(&agent, "GET", "/ping", &[]).await;
    assert_eq!(response.status(), 204, "/ping stays public");
}

#[tokio::test]
async fn bad_signatures_get_403s_that_say_why() {
    let agent = agent(FakeEngine::default());
    for (name, details) in [
        ("p256-a-wrong-message", "Unauthorized"),
        ("p256-a-padded-base64", "Illegal base64 data"),
        ("rsa-key", "Unsupported public key type"),
        ("garbage-hex", "Encoding/hex"),
    ] {
        let (response, json) = call_signed_by(&agent, name, "/_ping").await;
        assert_eq!(response.status(), 403, "{name}");
        assert_portainer_headers(&response);
        assert_eq!(json["message"], "Invalid request signature", "{name}");
        assert!(
            json["details"].as_str().unwrap().starts_with(details),
            "{name}: {json}"
        );
    }
}

#[tokio::test]
async fn default_mode_pins_the_first_valid_key() {
    let engine = FakeEngine::replaying(vec![(("GET", "/_ping"), load("ping"))]);
    let agent = agent(engine);
    let (response, _) = call_signed_by(&agent, "p256-a-signature-for-b", "/_ping").await;
    assert_eq!(response.status(), 403, "a bad signature does not pin");
    let (response, _) = call_signed_by(&agent, "p256-b-good", "/_ping").await;
    assert_eq!(
        response.status(),
        200,
        "the first valid key is accepted and pinned"
    );
    let (response, json) = call_signed_by(&agent, "p256-a-good", "/_ping").await;
    assert_eq!(response.status(), 403, "another key is refused");
    assert!(json["details"]
        .as_str()
        .unwrap()
        .contains("associated with another Portainer"));
    let (response, _) = call_signed_by(&agent, "p256-b-good", "/_ping").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn secret_mode_accepts_several_keys() {
    let engine = FakeEngine::replaying(vec![(("GET", "/_ping"), load("ping"))]);
    let agent = agent_with(
        engine,
        SignaturePolicy::new(Some("berth-test-secret".into()), [3; 32], 64),
    );
    for name in ["p256-a-secret", "p256-b-secret", "p256-a-secret"] {
        let (response, _) = call_signed_by(&agent, name, "/_ping").await;
        assert_eq!(response.status(), 200, "{name}");
    }
    let (response, _) = call_signed_by(&agent, "p256-a-good", "/_ping").await;
    assert_eq!(
        response.status(),
        403,
        "a signature of the default message is not one of the secret"
    );
}

#[tokio::test]
async fn ed25519_clients_are_accepted() {
    let engine = FakeEngine::replaying(vec![(("GET", "/_ping"), load("ping"))]);
    let agent = agent(engine);
    let (response, _) = call_signed_by(&agent, "ed25519-good", "/_ping").await;
    assert_eq!(response.status(), 200);
}

/// Runs the security shutdown on a manual clock; says whether it fired
/// after `elapsed`.
async fn security_shutdown_fires(guard: SignatureGuard, elapsed: std::time::Duration) -> bool {
    use std::time::Duration;
    let clock = support::manual_clock::ManualClock::default();
    let timer = tokio::spawn(berth::security::unassociated_after(
        clock.clone(),
        Duration::from_secs(72 * 3600),
        guard,
    ));
    while clock.sleepers() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(elapsed);
    // Let the timer task run to completion if it is going to.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let fired = timer.is_finished();
    timer.abort();
    fired
}

#[tokio::test]
async fn security_shutdown_closes_an_agent_nobody_paired_with() {
    use std::time::Duration;
    let unpaired = || SignatureGuard::new(SignaturePolicy::new(None, [3; 32], 8));
    assert!(!security_shutdown_fires(unpaired(), Duration::from_secs(72 * 3600 - 1)).await);
    assert!(security_shutdown_fires(unpaired(), Duration::from_secs(72 * 3600)).await);

    let paired = unpaired();
    let mut headers = http::HeaderMap::new();
    portainer_identity().apply(&mut headers);
    paired.authorize(&headers).unwrap();
    assert!(!security_shutdown_fires(paired, Duration::from_secs(73 * 3600)).await);

    let secret = SignatureGuard::new(SignaturePolicy::new(Some("s".into()), [3; 32], 8));
    assert!(!security_shutdown_fires(secret, Duration::from_secs(73 * 3600)).await);
}

#[tokio::test]
async fn host_info_has_the_reference_shape() {
    let agent = agent(FakeEngine::unreachable());
    for uri in ["/host/info", "/v2/host/info", "/v1/host/info"] {
        let (response, body) = call(&agent, "GET", uri, &[]).await;
        assert_eq!(response.status(), 200, "{uri}");
        assert_portainer_headers(&response);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "PCIDevices": [{"Vendor": "Intel Corporation", "Name": "82540EM Gigabit Ethernet Controller"}],
                "PhysicalDisks": [{"Vendor": "ATA", "Size": 512_110_190_592u64}]
            })
        );
    }
    let (response, _) = call(&agent, "POST", "/host/info", &[]).await;
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn host_info_failure_is_a_500() {
    let (_, receiver) = watch::channel(Arc::new(standalone_facts()));
    let broken: StandaloneAgent = Agent::new(
        FakeEngine::unreachable(),
        FakeHostProbe::default(),
        test_files(),
        receiver,
        SignatureGuard::new(SignaturePolicy::new(None, [3; 32], 64)),
        None,
    );
    let (response, body) = call(&broken, "GET", "/v2/host/info", &[]).await;
    assert_eq!(response.status(), 500);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["message"], "Unable to retrieve host information");
}
