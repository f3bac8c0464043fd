//! The scripted async Portainer (`tests/async-portainer/server.py`, run
//! with the Python that `scripts/test` gives the `jsonpatch` package) as a
//! child process, driven through its `/_test/` endpoints.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};

use super::berth_process::from_env_or_skip;
use super::edge_world::fetch;

pub struct AsyncPortainer {
    child: Child,
    pub addr: SocketAddr,
}

/// The Python with `jsonpatch`, or `None` when the suite skips what needs it.
pub fn python() -> Option<String> {
    from_env_or_skip(
        "BERTH_TEST_PYTHON",
        "a Python with jsonpatch",
        "run scripts/test, which makes one under target/ (BERTH_TEST_PYTHON)",
    )
}

/// A command as Portainer sends one; `n` orders the timestamps (nanoseconds
/// kept, as Go writes them).
pub fn command(n: u64, kind: &str, op: &str, value: Value) -> Value {
    json!({"id": n, "type": kind, "endpointID": 1, "op": op, "path": "",
           "timestamp": format!("2026-12-01T10:00:00.{n:09}Z"), "value": value})
}

impl AsyncPortainer {
    pub fn start(python: &str) -> AsyncPortainer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/async-portainer/server.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the scripted async Portainer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTEN ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the scripted Portainer said {line:?}"));
        AsyncPortainer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn post(&self, path: &str, value: Value) {
        let request = Request::post(path)
            .header("host", "portainer")
            .body(Full::new(Bytes::from(value.to_string())))
            .unwrap();
        let (status, _) = fetch(self.addr, request).await.expect("an answer");
        assert_eq!(status, 200);
    }

    /// The intervals the next answers carry, in milliseconds.
    pub async fn set_intervals(&self, ping: u64, snapshot: u64, command: u64) {
        let ns = |ms: u64| ms * 1_000_000;
        self.post(
            "/_test/intervals",
            json!({"ping": ns(ping), "snapshot": ns(snapshot), "command": ns(command)}),
        )
        .await;
    }

    pub async fn add_commands(&self, commands: Vec<Value>) {
        self.post("/_test/commands", Value::Array(commands)).await;
    }

    /// The next answers have these statuses instead of 200.
    pub async fn refuse(&self, statuses: &[u16]) {
        self.post("/_test/refuse", json!(statuses)).await;
    }

    /// The next snapshot's answer asks for the whole snapshot.
    pub async fn ask_for_full_snapshot(&self) {
        self.post("/_test/need_full", json!(null)).await;
    }

    pub async fn state(&self) -> Value {
        let request = Request::get("/_test/state")
            .header("host", "portainer")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (_, body) = fetch(self.addr, request).await.expect("an answer");
        serde_json::from_slice(&body).unwrap()
    }

    /// Waits until `holds` is true of the state; the state then.
    pub async fn wait(&self, what: &str, limit: Duration, holds: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let state = self.state().await;
            if holds(&state) {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {limit:?}; requests: {}",
                state["requests"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for AsyncPortainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
