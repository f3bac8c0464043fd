//! The Go chisel-compatible server (`tests/chisel-server`, built by
//! `scripts/test` from Debian's Go packages) as a child process: its
//! stdout events are collected, its stdin takes commands.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ChiselServer {
    child: Child,
    stdin: ChildStdin,
    events: Arc<Mutex<Vec<String>>>,
    pub address: String,
    pub fingerprint: String,
    pub md5_fingerprint: String,
    pub credentials: String,
}

/// The server binary, or `None` when the suite skips what needs it.
pub fn server_binary() -> Option<String> {
    super::berth_process::from_env_or_skip(
        "BERTH_TEST_CHISEL_SERVER",
        "the Go chisel server",
        "run scripts/test, which builds it (BERTH_TEST_CHISEL_SERVER)",
    )
}

impl ChiselServer {
    /// Starts the server for `edge_id` and waits for its address.
    pub fn start(binary: &str, edge_id: &str, extra: &[&str]) -> ChiselServer {
        let mut child = Command::new(binary)
            .args(["-edge-id", edge_id])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the chisel test server");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = ChiselServer {
            child,
            stdin,
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

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// The rest of the first event starting with `prefix`, waiting for it.
    pub fn wait_for(&self, prefix: &str, limit: Duration) -> String {
        self.wait_for_nth(prefix, 1, limit)
    }

    /// The rest of the `n`th event starting with `prefix`.
    pub fn wait_for_nth(&self, prefix: &str, n: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let found: Vec<String> = self
                .events()
                .into_iter()
                .filter_map(|line| line.strip_prefix(prefix).map(str::to_string))
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {n}th {prefix:?} event within {limit:?}: {:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.events()
            .iter()
            .filter(|line| line.starts_with(prefix))
            .count()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        let status = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Closes every SSH session from the server's side.
    pub fn drop_sessions(&mut self) {
        writeln!(self.stdin, "drop").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for ChiselServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
