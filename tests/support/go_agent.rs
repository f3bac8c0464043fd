//! The real Go agent (`portainer/agent`) as a member of a cluster beside
//! berth. Its source is not part of berth and CI has none: a test that
//! needs it runs when `BERTH_TEST_GO_AGENT` names a binary the user built
//! from a tree they cloned (`scripts/build-go-agent AGENT_SRC`), and says
//! aloud that it is skipped otherwise.

use super::eventually::wait_until;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Go agent's binary, or `None` (said aloud) without one.
pub fn go_agent_binary() -> Option<PathBuf> {
    match std::env::var_os("BERTH_TEST_GO_AGENT") {
        Some(path) if Path::new(&path).is_file() => Some(PathBuf::from(path)),
        Some(path) => panic!("BERTH_TEST_GO_AGENT={path:?} is not a file"),
        None => {
            eprintln!(
                "skipped: no Go agent to run beside berth (BERTH_TEST_GO_AGENT=<binary>, \
                 built by scripts/build-go-agent AGENT_SRC)"
            );
            None
        }
    }
}

/// The Go agent's API port: it gossips on memberlist's 7946, which it
/// neither lets one choose nor tells a joining member, and it runs in a
/// network namespace of its own, as in its container.
pub const GO_AGENT_PORT: u16 = 9001;

pub struct GoAgent {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl GoAgent {
    /// Starts the Go agent in the network namespace at `netns`, listening
    /// on `ip`, in front of the engine whose socket is `engine_socket`.
    /// It joins `join` (addresses without a port: it gossips to them on
    /// 7946). It proxies to /var/run/docker.sock whatever it is told, so
    /// it runs in a mount namespace of its own where that path is the
    /// engine's socket. Waits until its API accepts connections.
    pub fn start(
        binary: &Path,
        netns: &str,
        ip: IpAddr,
        engine_socket: &str,
        join: &str,
        folder: &Path,
    ) -> GoAgent {
        let log = folder.join("go-agent.log");
        let output = File::create(&log).unwrap();
        let data = folder.join("go-agent-data");
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new("/usr/bin/nsenter")
            .arg(format!("--net={netns}"))
            .args([
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
            ])
            .arg("mount -t tmpfs tmpfs /run && ln -s \"$1\" /run/docker.sock && exec \"$2\"")
            .arg("sh")
            .arg(engine_socket)
            .arg(binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DOCKER_HOST", format!("unix://{engine_socket}"))
            .env("AGENT_HOST", ip.to_string())
            .env("AGENT_PORT", GO_AGENT_PORT.to_string())
            .env("AGENT_CLUSTER_ADDR", join)
            .env("AGENT_CLUSTER_PROBE_INTERVAL", "200ms")
            .env("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms")
            .env("DATA_PATH", &data)
            .env("LOG_LEVEL", "DEBUG")
            .env("LOG_MODE", "NOCOLOR")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("start the Go agent");
        let mut agent = GoAgent {
            child,
            addr: SocketAddr::new(ip, GO_AGENT_PORT),
            log,
        };
        let (addr, log) = (agent.addr, agent.log.clone());
        let logged = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_until(
            "the Go agent listening",
            Duration::from_secs(30),
            || {
                if let Some(status) = agent.child.try_wait().unwrap() {
                    panic!("the Go agent ended ({status}): {}", logged());
                }
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            },
            logged,
        );
        agent
    }

    /// What it has logged.
    pub fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends it by its PID (every process between nsenter and the agent
    /// replaced itself with the next), as an unclean stop: SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GoAgent {
    fn drop(&mut self) {
        self.kill();
    }
}
