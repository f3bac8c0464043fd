//! Portainer CE 2.23.0's own answers, recorded from the real server by
//! `scripts/record-portainer` (`fixtures/portainer-ce-2.23.0/README.md`
//! says how). The Edge tests' imitations of Portainer answer with these
//! shapes rather than with shapes of their own: an imitation that filled
//! the stack payload's `ID` hid that CE never does, and berth looped.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

const FOLDER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/portainer-ce-2.23.0");

/// The body of a recorded answer, `name` being its file in the folder.
pub fn answer(name: &str) -> Value {
    let path = format!("{FOLDER}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The payload of `GET /api/endpoints/{id}/edge/stacks/{stackId}` as CE
/// serves it (`"ID":0`, `"Version":0`, no environment variables), for a
/// stack named `name` whose entry file is `compose`.
pub fn stack_payload(name: &str, compose: &str) -> Value {
    let mut payload = answer("edge-stack-payload.json");
    payload["Name"] = Value::from(name);
    let entry = payload["EntryFileName"].clone();
    let entries = payload["DirEntries"]
        .as_array_mut()
        .expect("the recorded payload lists DirEntries");
    let file = entries
        .iter_mut()
        .find(|e| e["Name"] == entry)
        .expect("the recorded payload holds its entry file");
    file["Content"] = Value::from(STANDARD.encode(compose));
    payload
}

/// A poll answer (`GET /api/endpoints/{id}/edge/status`) as CE gives it
/// with the tunnel idle (no port, no credentials) and no jobs, listing
/// `stacks` as `(ID, Version)` and asking for a poll every `checkin`
/// seconds (CE's are whole seconds; the tests poll faster).
pub fn poll_answer(stacks: &[(u64, u64)], checkin: f64) -> Value {
    let mut answer = answer("edge-status.json");
    answer["status"] = Value::from("IDLE");
    answer["port"] = Value::from(0);
    answer["credentials"] = Value::from("");
    answer["schedules"] = Value::Array(Vec::new());
    answer["stacks"] = stacks
        .iter()
        .map(|(id, version)| serde_json::json!({"ID": id, "Version": version}))
        .collect();
    answer["checkin"] = Value::from(checkin);
    answer
}
