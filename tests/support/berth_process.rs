//! Runs the real berth binary for a test and stops it, by its PID, when the
//! test ends.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The engine the test suite runs against (`scripts/test` sets it).
/// `None` means the engine tests are skipped on purpose.
pub fn engine_host() -> Option<String> {
    from_env_or_skip(
        "BERTH_TEST_DOCKER_HOST",
        "a Docker engine",
        "run scripts/test, which starts one, or set \
         BERTH_TEST_DOCKER_HOST=unix:///path/docker.sock",
    )
}

/// Whether the test engine is Podman (`scripts/test` sets
/// `BERTH_TEST_PODMAN=1` for its Podman passes): every berth a test starts
/// is then told so (`PODMAN=1`).
pub fn engine_is_podman() -> bool {
    std::env::var("BERTH_TEST_PODMAN").is_ok_and(|v| v == "1")
}

/// Where the test engine keeps its volumes: `BERTH_TEST_VOLUMES_ROOT`, else
/// the `data/volumes` folder beside its socket (`scripts/engine.sh`'s
/// layout).
pub fn engine_volumes_root(host: &str) -> std::path::PathBuf {
    match std::env::var("BERTH_TEST_VOLUMES_ROOT") {
        Ok(root) => root.into(),
        Err(_) => std::path::Path::new(&engine_socket(host))
            .parent()
            .unwrap()
            .join("data/volumes"),
    }
}

/// The value of `variable`, which `scripts/test` sets; `None`, said
/// aloud, when `BERTH_SKIP_ENGINE_TESTS=1` skips what needs `what`.
pub fn from_env_or_skip(variable: &str, what: &str, hint: &str) -> Option<String> {
    if let Ok(value) = std::env::var(variable) {
        return Some(value);
    }
    if std::env::var("BERTH_SKIP_ENGINE_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("BERTH_SKIP_ENGINE_TESTS=1: skipping a test that needs {what}");
        return None;
    }
    panic!("these tests need {what}: {hint} (BERTH_SKIP_ENGINE_TESTS=1 skips them)");
}

/// The socket path of `engine_host()`.
pub fn engine_socket(host: &str) -> String {
    host.strip_prefix("unix://")
        .expect("a unix:// engine")
        .to_string()
}

/// The berth program the tests run: this build's binary or, with
/// `BERTH_TEST_BERTH` (words separated by spaces, such as
/// `qemu-aarch64-static /path/berth-linux-arm64`), another build of it run
/// the way that says: `scripts/test` runs a set of tests again with the
/// arm64 release binary under emulation.
pub fn berth_program() -> Vec<String> {
    match std::env::var("BERTH_TEST_BERTH") {
        Ok(words) if !words.trim().is_empty() => {
            words.split_whitespace().map(str::to_string).collect()
        }
        _ => vec![env!("CARGO_BIN_EXE_berth").to_string()],
    }
}

/// A command that runs `berth_program()`.
pub fn berth_command() -> Command {
    let program = berth_program();
    let mut command = Command::new(&program[0]);
    command.args(&program[1..]);
    command
}

pub struct BerthProcess {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl BerthProcess {
    /// Starts berth on an ephemeral loopback port and waits until it says it
    /// listens (not a fixed sleep).
    pub fn start(env: &[(&str, &str)]) -> BerthProcess {
        Self::spawn(berth_command(), [127, 0, 0, 1].into(), env)
    }

    /// Starts berth inside the network namespace at `netns` (a path such
    /// as /run/netns/NAME), listening on `ip` there.
    pub fn start_in_netns(netns: &str, ip: IpAddr, env: &[(&str, &str)]) -> BerthProcess {
        let mut command = Command::new("/usr/bin/nsenter");
        command
            .arg(format!("--net={netns}"))
            .arg("--")
            .args(berth_program());
        let host = ip.to_string();
        let mut env = env.to_vec();
        env.push(("AGENT_HOST", &host));
        Self::spawn(command, ip, &env)
    }

    fn spawn(mut command: Command, ip: IpAddr, env: &[(&str, &str)]) -> BerthProcess {
        command
            .env_clear()
            .env("AGENT_HOST", "127.0.0.1")
            .env("AGENT_PORT", "0")
            .env("LOG_MODE", "JSON")
            .env("LOG_LEVEL", "DEBUG")
            // Tests run side by side: each lookup on a port of its own.
            .env("AGENT_CREDENTIALS_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if engine_is_podman() {
            command.env("PODMAN", "1");
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start berth");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_sender, port) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("starting Agent API server") {
                    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let _ =
                        port_sender.send(value["fields"]["server_port"].as_u64().unwrap() as u16);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let port = match port.recv_timeout(Duration::from_secs(30)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("berth did not start listening: {:?}", log.lock().unwrap());
            }
        };
        BerthProcess {
            child,
            addr: SocketAddr::new(ip, port),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether a log line containing `text` arrives within `limit` (the
    /// log is read by another thread, so a line may trail the event).
    pub fn logged_within(&self, text: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.log().iter().any(|line| line.contains(text)) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to this process (by its PID) and waits for it to exit.
    pub fn stop_with(&mut self, signal: &str, within: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "berth did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The three cluster engines (`scripts/test` starts them: `berth-node-a`, a
/// single-node swarm manager, and the standalone `berth-node-b` and
/// `berth-node-c`). `None` means the engine tests are skipped on purpose.
pub fn cluster_engine_hosts() -> Option<Vec<String>> {
    if let Ok(hosts) = std::env::var("BERTH_TEST_CLUSTER_HOSTS") {
        let hosts: Vec<String> = hosts.split(',').map(str::to_string).collect();
        assert_eq!(
            hosts.len(),
            3,
            "BERTH_TEST_CLUSTER_HOSTS names three engines"
        );
        return Some(hosts);
    }
    engine_host()?;
    panic!("no cluster engines for the tests: run scripts/test, which starts them, or set BERTH_TEST_CLUSTER_HOSTS");
}

/// A port free on loopback for both TCP and UDP (gossip uses both), for a
/// server the test starts later (chisel, serf, berth itself).
///
/// Taken at random below the kernel's ephemeral range rather than by
/// binding port 0: a port from that range, once let go, can be the source
/// port the kernel gives another test's outgoing connection before the
/// server binds it ("cannot listen"). Below the range only listeners take
/// ports, and the bind check skips those already taken.
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10000u16.min(ephemeral_start / 2);
    let span = u64::from(ephemeral_start - low).max(1);
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0..10_000u32 {
        let port = low + (seed.hash_one((std::process::id(), attempt)) % span) as u16;
        let Ok(_tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for TCP and UDP below {ephemeral_start} on 127.0.0.1");
}

/// The swarm engine and the image `scripts/test` built for the image test:
/// `(engine host, image tag)`. `None` means engine tests are skipped.
pub fn swarm_engine_and_image() -> Option<(String, String)> {
    if let (Ok(host), Ok(image)) = (
        std::env::var("BERTH_TEST_SWARM_HOST"),
        std::env::var("BERTH_TEST_IMAGE"),
    ) {
        return Some((host, image));
    }
    engine_host()?;
    panic!("no swarm engine and image for the tests: run scripts/test, or set BERTH_TEST_SWARM_HOST and BERTH_TEST_IMAGE");
}
