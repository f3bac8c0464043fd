//! A Docker engine of a test's own (`scripts/engine.sh`), so the test may
//! kill it, restart it or turn it into a swarm; stopped by its PID and
//! cleaned up when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// An engine of the test's own, so it can be killed.
pub struct OwnEngine {
    dir: PathBuf,
    /// The node name, when the engine has namespaces of its own.
    node: Option<String>,
    /// The network namespace it runs in, when given one.
    netns: Option<String>,
}

fn engine_script(function: &str, dir: &Path) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/engine.sh");
    Command::new("bash")
        .arg("-c")
        .arg(format!(". {script} && {function}"))
        .arg("engine")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

impl OwnEngine {
    /// An engine with the busybox image, named after the machine.
    pub fn start(name: &str) -> OwnEngine {
        let dir = std::env::temp_dir().join(format!("berth-fault-{name}-{}", std::process::id()));
        assert!(
            engine_script("engine_start \"$1\" && engine_import_busybox \"$1\"", &dir),
            "the test's own engine did not start"
        );
        OwnEngine {
            dir,
            node: None,
            netns: None,
        }
    }

    /// An engine whose node name is `node` (its own UTS and network
    /// namespaces), without images.
    pub fn start_named(node: &str) -> OwnEngine {
        Self::start_in(node, None)
    }

    /// An engine named `node` in the existing network namespace `netns`
    /// (a path such as /run/netns/NAME), which outlives its restarts.
    pub fn start_in(node: &str, netns: Option<&str>) -> OwnEngine {
        let engine = OwnEngine {
            // Two tests of one process may each start a node of this name.
            dir: std::env::temp_dir().join(super::unique::unique(&format!("berth-{node}-"))),
            node: Some(node.to_string()),
            netns: netns.map(str::to_string),
        };
        assert!(
            engine.run_start(),
            "the test's own engine {node} did not start"
        );
        engine
    }

    fn run_start(&self) -> bool {
        let name = self.node.as_deref().unwrap_or("");
        let netns = self.netns.as_deref().unwrap_or("");
        engine_script(
            &format!("ENGINE_NETNS='{netns}' engine_start \"$1\" {name}"),
            &self.dir,
        )
    }

    /// dockerd's PID: with a node name, its network namespace is
    /// `/proc/<pid>/ns/net`.
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("dockerd.started-pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn import_busybox(&self) {
        assert!(
            engine_script("engine_import_busybox \"$1\"", &self.dir),
            "busybox was not imported"
        );
    }

    /// Stops the engine by its PID (its containers first), as a host
    /// shutting down.
    pub fn stop(&self) {
        engine_script("engine_stop \"$1\"", &self.dir);
    }

    pub fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("dockerd.started-pid")).unwrap();
        assert!(Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap()
            .success());
    }

    pub fn restart(&self) {
        // The killed dockerd's pid file stays, and its process may not be
        // reaped yet; dockerd refuses to start over a live-looking pid.
        let _ = std::fs::remove_file(self.dir.join("dockerd.pid"));
        // Its containerd outlives it briefly; a new dockerd would wait on
        // the old one instead of starting its own.
        let containerd_pid = self.dir.join("exec/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(&containerd_pid) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while is_running(pid.trim()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            // An unreaped zombie still answers kill(pid, 0): dockerd would
            // take it for a live containerd.
            let _ = std::fs::remove_file(&containerd_pid);
        }
        assert!(self.run_start(), "the engine did not come back");
    }

    pub fn docker(&self, args: &[&str]) -> String {
        let output = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        engine_script("engine_stop \"$1\"", &self.dir);
        // A killed dockerd leaves mounts behind (its data root, container
        // layers, network namespaces): the deepest first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .filter(|point| Path::new(point).starts_with(&self.dir))
            .collect();
        ours.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in ours {
            let _ = Command::new("umount").arg(point).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a process runs (a zombie does not count).
fn is_running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}
