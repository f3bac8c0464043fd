//! `berth status`: reads the running agent's control socket and prints it
//! for people, or as it came with `--json`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt as _;

/// How long the agent may take to answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A document larger than this is not a status document.
const MAX_DOCUMENT: u64 = 4 << 20;

/// The agent's status document.
///
/// # Errors
/// No agent listening at `path`, no answer in time, or not JSON.
pub async fn read(path: &Path) -> Result<Value, String> {
    let read = async {
        let stream = tokio::net::UnixStream::connect(path).await.map_err(|error| {
            format!(
                "no agent answers on {}: {error} (is berth running with the same DATA_PATH, and are you root?)",
                path.display()
            )
        })?;
        let mut bytes = Vec::new();
        stream
            .take(MAX_DOCUMENT)
            .read_to_end(&mut bytes)
            .await
            .map_err(|error| format!("reading {}: {error}", path.display()))?;
        serde_json::from_slice(&bytes).map_err(|error| {
            format!(
                "{} did not answer a status document: {error}",
                path.display()
            )
        })
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| format!("{} did not answer within {READ_TIMEOUT:?}", path.display()))?
}

/// `1h02m`, `3m04s`, `12s`.
pub fn duration_text(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// The document as lines for a terminal.
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node      {} ({} mode, agent {}, berth {}, pid {})",
        text(&doc["node"]),
        text(&doc["mode"]),
        text(&doc["version"]),
        text(&doc["berth_version"]),
        doc["pid"]
    );
    let _ = writeln!(
        out,
        "uptime    {}",
        duration_text(doc["uptime_seconds"].as_u64().unwrap_or(0))
    );
    let engine = &doc["engine"];
    let _ = writeln!(
        out,
        "engine    {}",
        if engine["reachable"].as_bool() == Some(true) {
            match text(&engine["swarm_role"]) {
                "" => "reachable, standalone".to_string(),
                role => format!("reachable, swarm {role}"),
            }
        } else {
            "UNREACHABLE (berth doctor says why)".to_string()
        }
    );
    let api = &doc["api"];
    let pairing = if api["secret_mode"].as_bool() == Some(true) {
        "secret mode".to_string()
    } else if api["paired"].as_bool() == Some(true) {
        "paired with a Portainer key".to_string()
    } else {
        match api["shutdown_in_seconds"].as_u64() {
            Some(0) => "NOT PAIRED: the API has closed (security shutdown); restart to pair".into(),
            Some(left) => format!(
                "not paired yet: the API closes in {} unless Portainer connects",
                duration_text(left)
            ),
            None => "not paired".into(),
        }
    };
    let _ = writeln!(
        out,
        "api       {}, {} open connections, {pairing}",
        text(&api["address"]),
        api["open_connections"]
    );
    match doc["cluster"]["members"].as_array() {
        None => {
            let _ = writeln!(out, "cluster   none (standalone)");
        }
        Some(members) => {
            let alive = members.iter().filter(|m| m["status"] == "alive").count();
            let plural = if members.len() == 1 { "" } else { "s" };
            let _ = writeln!(
                out,
                "cluster   {} member{plural}, {alive} alive",
                members.len()
            );
            let _ = writeln!(
                out,
                "  {:<24} {:<8} {:<8} {:<16} {:<6} LAST CONTACT",
                "NODE", "ROLE", "STATUS", "ADDRESS", "PORT"
            );
            for member in members {
                let role = if member["leader"].as_bool() == Some(true) {
                    format!("{}*", text(&member["role"]))
                } else {
                    text(&member["role"]).to_string()
                };
                let contact = match (doc["now"].as_u64(), member["last_contact"].as_u64()) {
                    (Some(now), Some(at)) => {
                        format!("{} ago", duration_text(now.saturating_sub(at)))
                    }
                    _ => "-".to_string(),
                };
                let _ = writeln!(
                    out,
                    "  {:<24} {:<8} {:<8} {:<16} {:<6} {contact}",
                    text(&member["node"]),
                    role,
                    text(&member["status"]),
                    text(&member["address"]),
                    member["agent_port"].to_string()
                );
            }
        }
    }
    let edge = &doc["edge"];
    if edge.is_object() {
        let tunnel = match &edge["tunnel"] {
            Value::String(state) => format!("tunnel {state}"),
            _ => "no tunnel".into(),
        };
        let poll = match edge["last_poll"].as_object() {
            None => "no poll yet".to_string(),
            Some(poll) => {
                let ago = doc["now"]
                    .as_u64()
                    .zip(poll["at"].as_u64())
                    .map(|(now, at)| duration_text(now.saturating_sub(at)))
                    .unwrap_or_default();
                match poll["error"].as_str() {
                    None => format!("last poll {ago} ago: ok"),
                    Some(error) => format!("last poll {ago} ago: FAILED: {error}"),
                }
            }
        };
        let _ = writeln!(out, "edge      {tunnel}; {poll}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration_text(12), "12s");
        assert_eq!(duration_text(184), "3m04s");
        assert_eq!(duration_text(3720), "1h02m");
    }

    #[test]
    fn a_document_reads_as_lines_with_its_problems_in_capitals() {
        let doc = json!({
            "node": "n1", "mode": "edge", "version": "2.23.0", "berth_version": "0.1.0",
            "pid": 7, "now": 1000, "uptime_seconds": 65,
            "engine": {"reachable": true, "swarm_role": "manager"},
            "api": {"address": "0.0.0.0:9001", "open_connections": 2, "secret_mode": false,
                    "paired": false, "shutdown_in_seconds": 0},
            "cluster": {"members": [
                {"node": "n1", "role": "manager", "leader": true, "status": "alive", "address": "10.0.0.1", "agent_port": 9001},
                {"node": "n2", "role": "worker", "leader": false, "status": "failed", "address": "10.0.0.2", "agent_port": 9001, "last_contact": 940}
            ]},
            "edge": {"tunnel": "retrying", "last_poll": {"at": 990, "ok": false, "error": "connection refused"}}
        });
        let text = render(&doc);
        assert!(text.contains("uptime    1m05s"), "{text}");
        assert!(text.contains("reachable, swarm manager"), "{text}");
        assert!(text.contains("security shutdown"), "{text}");
        assert!(text.contains("2 members, 1 alive"), "{text}");
        assert!(text.contains("manager*"), "{text}");
        assert!(text.contains("1m00s ago"), "{text}");
        assert!(
            text.contains("tunnel retrying; last poll 10s ago: FAILED: connection refused"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn no_agent_on_the_socket_is_a_clear_error() {
        let error = read(Path::new("/nonexistent/berth.sock"))
            .await
            .unwrap_err();
        assert!(error.contains("no agent answers"), "{error}");
    }
}
