//! Contract tests: berth's domain reads the answers a real Portainer CE
//! 2.23.0 gave (recorded by `scripts/record-portainer`, kept in
//! `fixtures/portainer-ce-2.23.0`). The Edge tests' imitation of Portainer
//! answers from the same recordings; these tests pin what berth takes from
//! each of them.

#[path = "support/portainer_ce.rs"]
mod portainer_ce;

use berth_domain::edge::key::EdgeKey;
use berth_domain::edge::schedule::parse_schedules;
use berth_domain::edge::stack::{parse_listed_payload, parse_stack_refs, StackRef};
use berth_domain::edge::status::{parse_poll_answer, refusal_text, TunnelStatus};
use portainer_ce::answer;

fn recorded(name: &str) -> Vec<u8> {
    answer(name).to_string().into_bytes()
}

#[test]
fn the_poll_answers_give_the_tunnel_its_port_and_credentials() {
    for name in [
        "edge-status-first.json",
        "edge-status.json",
        "edge-status-tunnel.json",
    ] {
        let poll = parse_poll_answer(&recorded(name)).unwrap();
        // CE opens the tunnel on an environment's first poll, to snapshot it.
        assert_eq!(poll.tunnel, TunnelStatus::Required, "{name}");
        assert!(poll.port.is_some_and(|p| p > 0), "{name}");
        assert!(
            poll.credentials.as_deref().is_some_and(|c| !c.is_empty()),
            "{name}"
        );
        assert_eq!(poll.checkin.map(|c| c.as_secs()), Some(1), "{name}");
    }
}

#[test]
fn the_poll_lists_stacks_by_id_and_version_and_jobs_with_unpadded_scripts() {
    let poll = answer("edge-status.json");
    let stacks = parse_stack_refs(&poll).unwrap();
    assert_eq!(
        stacks,
        [StackRef {
            id: 1,
            version: 1,
            re_pull: false
        }]
    );
    let (schedules, bad) = parse_schedules(&poll).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(schedules.len(), 1);
    assert_eq!(
        schedules[0].script, b"echo recorded",
        "base64 without padding"
    );
    assert_eq!(
        schedules[0].cron, "0 * * * * *",
        "every minute, at second 0"
    );
    let first = answer("edge-status-first.json");
    assert_eq!(parse_stack_refs(&first).unwrap(), [], "an empty list");
}

/// CE serves `"ID":0` and `"Version":0` in every stack payload: the poll's
/// listing names the stack.
#[test]
fn the_stack_payload_is_the_listed_stack_whatever_id_it_carries() {
    let body = recorded("edge-stack-payload.json");
    assert_eq!(answer("edge-stack-payload.json")["ID"], 0);
    let listed = parse_stack_refs(&answer("edge-status.json")).unwrap()[0].clone();
    let payload = parse_listed_payload(&listed, &body).unwrap();
    assert_eq!(payload.id, 1);
    assert_eq!(payload.project(), "edge_berthrecord");
    assert_eq!(payload.files.len(), 1);
    assert_eq!(payload.files[0].mode, 0o600, "CE's files are 0600");
    assert!(String::from_utf8_lossy(&payload.files[0].content).contains("berth-test/busybox"));
    assert!(payload.env.is_empty(), "CE sends no EnvVars");
    assert!(!payload.pull && !payload.retry_deploy);
}

#[test]
fn the_edge_key_names_portainer_the_tunnel_and_the_endpoint() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/portainer-ce-2.23.0/edge-key.txt"
    ))
    .unwrap();
    let key = EdgeKey::parse(&text).unwrap();
    assert_eq!(key.portainer_url, "http://127.0.0.1:9000");
    assert_eq!(key.tunnel_addr, "127.0.0.1:8000");
    assert_eq!(key.endpoint_id, 1);
    assert_eq!(
        key.encode(),
        text.trim(),
        "berth's /key gives it back as it came"
    );
}

#[test]
fn refusals_are_told_in_portainers_own_words() {
    let missing = refusal_text(404, &recorded("edge-stack-missing.json"));
    assert!(
        missing.contains("Unable to find an edge stack"),
        "{missing}"
    );
    let wrong_id = refusal_text(403, &recorded("edge-status-wrong-edge-id.json"));
    assert!(wrong_id.contains("not been trusted yet"), "{wrong_id}");
    let wordless = refusal_text(400, &recorded("edge-stack-status-error-without-words.json"));
    assert!(
        wordless.contains("error message is mandatory"),
        "{wordless}"
    );
    // A status for a stack Portainer does not know is taken without a word.
    assert_eq!(
        answer("edge-stack-status-unknown-stack.json"),
        serde_json::Value::Null
    );
}
