//! The Go serf member (`tests/serf-peer`, built by `scripts/build-test-peers`
//! from Go modules, once per serf version its go.mod files pin) as a child
//! process: commands go to its stdin, each answered by one JSON line on its
//! stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The serf versions the mixed-cluster tests run against: the Go agent's
/// (serf 0.8.3, memberlist 0.1.4) and the newest (serf 0.11.0, memberlist
/// 0.7.0).
pub const VERSIONS: [&str; 2] = ["0.8.3", "0.11.0"];

/// The peer built against serf `version`, or `None` when the suite skips
/// what needs it.
pub fn binary(version: &str) -> Option<String> {
    let dir = super::berth_process::from_env_or_skip(
        "BERTH_TEST_SERF_DIR",
        "the Go serf peer",
        "run scripts/test, which builds it (BERTH_TEST_SERF_DIR)",
    )?;
    let path = std::path::Path::new(&dir).join(format!("serf-peer-{version}"));
    assert!(
        path.is_file(),
        "{} is missing: scripts/build-test-peers builds it",
        path.display()
    );
    Some(path.to_string_lossy().into_owned())
}

/// Defines one test per serf version of `VERSIONS` for each named check,
/// an `async fn(String)` taking the peer binary of that version.
#[allow(unused_macros)]
macro_rules! against_each_serf {
    ($($check:ident),* $(,)?) => {
        mod serf_0_8_3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(binary) = crate::support::serf_peer::binary("0.8.3") {
                        super::$check(binary).await;
                    }
                }
            )*
        }
        mod serf_0_11_0 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(binary) = crate::support::serf_peer::binary("0.11.0") {
                        super::$check(binary).await;
                    }
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use against_each_serf;

pub struct SerfPeer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pub name: String,
    pub port: u16,
}

impl SerfPeer {
    /// Starts a member named `name` gossiping on 127.0.0.1:`port` with
    /// `tags` (`k=v,k=v`), and waits until it says it is ready.
    pub fn start(binary: &str, name: &str, port: u16, tags: &str, extra: &[&str]) -> SerfPeer {
        let mut child = Command::new(binary)
            .args(["-name", name, "-bind", &format!("127.0.0.1:{port}")])
            .args(["-tags", tags])
            .args(["-probe-interval", "200ms", "-probe-timeout", "100ms"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Go serf peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines.recv_timeout(Duration::from_secs(20));
        assert_eq!(
            ready.as_deref(),
            Ok("READY"),
            "the Go serf peer {name} did not start"
        );
        SerfPeer {
            child,
            stdin,
            lines,
            name: name.to_string(),
            port,
        }
    }

    /// One command and its answer.
    pub fn command(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").expect("the Go serf peer takes commands");
        let answer = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{} did not answer {line}", self.name));
        serde_json::from_str(&answer).unwrap()
    }

    /// Every member this peer knows, by name: status and tags.
    pub fn members(&mut self) -> Vec<Value> {
        self.command("members")["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The member named `name` as soon as `holds` is true of it, and how
    /// long that took; `None` after `limit`.
    pub fn wait_for_member(
        &mut self,
        name: &str,
        limit: Duration,
        holds: impl Fn(&Value) -> bool,
    ) -> Option<(Value, Duration)> {
        let start = Instant::now();
        loop {
            let found = self
                .members()
                .into_iter()
                .find(|m| m["name"] == name && holds(m));
            if let Some(member) = found {
                return Some((member, start.elapsed()));
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, by PID: no leave, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SerfPeer {
    fn drop(&mut self) {
        self.kill();
    }
}
