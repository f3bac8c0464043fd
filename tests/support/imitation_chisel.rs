//! The hand-written imitation of chisel's server (`tests/chisel-server`,
//! built by `scripts/build-test-peers` on Go's x/crypto/ssh) as a child
//! process whose stdout events are collected.
//! Only for what the real chisel (`support::chisel`) cannot be made to do:
//! re-key after a set number of bytes, and ask the client for a target
//! other than the one it named (a hostile server).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::output_lines::OutputLines;

pub struct ChiselServer {
    child: Child,
    events: OutputLines,
    pub address: String,
    pub fingerprint: String,
    pub md5_fingerprint: String,
    pub credentials: String,
}

/// The server binary, or `None` when the suite skips what needs it.
pub fn server_binary() -> Option<String> {
    super::berth_process::from_env_or_skip(
        "BERTH_TEST_CHISEL_SERVER",
        "the imitation chisel server",
        "run scripts/test, which builds it (BERTH_TEST_CHISEL_SERVER)",
    )
}

impl ChiselServer {
    /// Starts the server for `edge_id` and waits for its address.
    pub fn start(binary: &str, edge_id: &str, extra: &[&str]) -> ChiselServer {
        let mut child = Command::new(binary)
            .args(["-edge-id", edge_id])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the chisel test server");
        let events = OutputLines::default();
        events.follow(child.stdout.take().unwrap());
        let mut server = ChiselServer {
            child,
            events,
            address: String::new(),
            fingerprint: String::new(),
            md5_fingerprint: String::new(),
            credentials: String::new(),
        };
        server.address = server.wait_for("LISTEN ", Duration::from_secs(10));
        server.fingerprint = server.wait_for("FINGERPRINT ", Duration::from_secs(1));
        server.md5_fingerprint = server.wait_for("MD5 ", Duration::from_secs(1));
        server.credentials = server.wait_for("CREDENTIALS ", Duration::from_secs(1));
        server
    }

    /// The rest of the first event starting with `prefix`, waiting for it.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> String {
        self.events
            .wait_for_nth(&format!("{prefix:?} event"), 1, limit, |line| {
                line.strip_prefix(prefix).map(str::to_string)
            })
    }
}

impl Drop for ChiselServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
