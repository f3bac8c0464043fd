//! A real HTTP proxy, Debian's tinyproxy, for the Edge agent's outbound
//! calls: basic authentication required, `CONNECT` allowed only to the
//! ports given (tinyproxy's `ConnectPort`; Debian's default allows 443 and
//! 563 only, as many proxies do), and host names of the test's own that
//! resolve to 127.0.0.1 for the proxy alone (a private `/etc/hosts` in a
//! mount namespace of its own), so the agent has a non-loopback name to
//! send through the proxy while all traffic stays on loopback. Its log
//! (`LogLevel Connect`) records every request line it was sent.

use super::eventually::wait_until;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::berth_process::{free_port, from_env_or_skip};
use super::output_lines::OutputLines;

pub const USER: &str = "agent";
pub const PASSWORD: &str = "s3cret";

pub struct Tinyproxy {
    child: Child,
    log: OutputLines,
    dir: PathBuf,
    pub address: SocketAddr,
}

/// The tinyproxy binary, or `None` when the suite skips what needs it.
pub fn binary() -> Option<String> {
    from_env_or_skip(
        "BERTH_TEST_TINYPROXY",
        "tinyproxy",
        "run scripts/test, which installs Debian's tinyproxy (BERTH_TEST_TINYPROXY)",
    )
}

impl Tinyproxy {
    /// Starts tinyproxy on a loopback port, resolving `names` to 127.0.0.1
    /// and allowing `CONNECT` to `connect_ports` only.
    pub fn start(binary: &str, names: &[&str], connect_ports: &[u16]) -> Tinyproxy {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("berth-tinyproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nLogLevel Connect\n\
             BasicAuth {USER} {PASSWORD}\n"
        );
        for connect_port in connect_ports {
            config.push_str(&format!("ConnectPort {connect_port}\n"));
        }
        std::fs::write(dir.join("tinyproxy.conf"), config).unwrap();
        let hosts: String = names
            .iter()
            .map(|name| format!("127.0.0.1 {name}\n"))
            .collect();
        std::fs::write(dir.join("hosts"), format!("127.0.0.1 localhost\n{hosts}")).unwrap();
        // unshare and sh exec into tinyproxy, so the child's PID is its own.
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$1" -d -c "$2""#)
            .arg(dir.join("hosts"))
            .arg(binary)
            .arg(dir.join("tinyproxy.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tinyproxy");
        let log = OutputLines::default();
        log.follow(child.stdout.take().unwrap());
        log.follow(child.stderr.take().unwrap());
        let proxy = Tinyproxy {
            child,
            log,
            dir,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_until(
            "tinyproxy listening",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(proxy.address).is_ok(),
            || format!("{:?}", proxy.log()),
        );
        proxy
    }

    /// The proxy URL with its credentials, as an operator sets `HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{USER}:{PASSWORD}@{}", self.address)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.all()
    }

    /// A request line the proxy was sent (`GET http://… HTTP/1.1`,
    /// `CONNECT host:port HTTP/1.1`).
    fn request_line(line: &str) -> Option<String> {
        let (_, rest) = line.split_once("): ")?;
        (rest.ends_with(" HTTP/1.1") || rest.ends_with(" HTTP/1.0")).then(|| rest.to_string())
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.picked(Self::request_line)
    }

    /// Waits for a request line starting with `start`.
    pub fn wait_request(&self, start: &str, limit: Duration) -> String {
        self.log
            .wait_for_nth(&format!("{start:?} request"), 1, limit, |line| {
                Self::request_line(line).filter(|request| request.starts_with(start))
            })
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("tinyproxy's log: {:#?}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
