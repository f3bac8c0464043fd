//! The image CI builds, deployed with `deploy/stack.yml` as a global
//! service on a single-node swarm (an engine in its own network namespace,
//! so the published port lives there: requests go in with `nsenter`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::berth_process::swarm_engine_and_image;
use crate::support::fixtures::portainer_identity;

const STACK: &str = "berthtest";

struct Swarm {
    host: String,
    dir: PathBuf,
}

impl Swarm {
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .arg(docker_binary())
            .args(["-H", &self.host])
            .args(args)
            .env("DOCKER_SOCKET", self.dir.join("docker.sock"))
            .env("DOCKER_VOLUMES", self.dir.join("data/volumes"))
            .env("LOG_MODE", "NOCOLOR")
            .output()
            .unwrap()
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// A signed HTTPS request to the agent's published port, made inside
    /// the engine's network namespace.
    fn agent(&self, path: &str) -> Option<serde_json::Value> {
        let pid = std::fs::read_to_string(self.dir.join("dockerd.started-pid")).unwrap();
        let identity = portainer_identity();
        let output = Command::new("timeout")
            .args([
                "20",
                "nsenter",
                "-t",
                pid.trim(),
                "-n",
                "curl",
                "-sk",
                "--fail",
            ])
            .args([
                "-H",
                &format!("X-PortainerAgent-PublicKey: {}", identity.public_key),
            ])
            .args([
                "-H",
                &format!("X-PortainerAgent-Signature: {}", identity.signature),
            ])
            .arg(format!("https://127.0.0.1:9001{path}"))
            .output()
            .unwrap();
        output
            .status
            .success()
            .then(|| serde_json::from_slice(&output.stdout).unwrap())
    }

    fn agent_containers(&self) -> Vec<String> {
        let ids = self.docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={STACK}"),
        ]);
        ids.lines().map(str::to_string).collect()
    }
}

fn docker_binary() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_image_runs_as_a_global_swarm_service() {
    let Some((host, image)) = swarm_engine_and_image() else {
        return;
    };
    let dir = PathBuf::from(host.strip_prefix("unix://").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let swarm = Swarm { host, dir };
    let stack_file = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/stack.yml");
    let output = Command::new("timeout")
        .args([
            "120",
            docker_binary(),
            "-H",
            &swarm.host,
            "stack",
            "deploy",
            "-c",
            stack_file,
            STACK,
        ])
        .env("BERTH_IMAGE", &image)
        .env("DOCKER_SOCKET", swarm.dir.join("docker.sock"))
        .env("DOCKER_VOLUMES", swarm.dir.join("data/volumes"))
        .env("LOG_MODE", "NOCOLOR")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "stack deploy: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let container = wait_until("the agent task runs", Duration::from_secs(90), || {
        swarm.agent_containers().into_iter().next()
    });
    let node_name = swarm.docker_ok(&["info", "--format", "{{.Name}}"]);
    let agents = wait_until("the agent answers /agents", Duration::from_secs(60), || {
        swarm.agent("/agents")
    });
    let members = agents.as_array().unwrap();
    assert_eq!(members.len(), 1, "{agents}");
    assert_eq!(members[0]["NodeName"], node_name.as_str());
    // Its advertise address is its own container's address on the overlay.
    let overlay_ip = swarm.docker_ok(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{STACK}_agent_network\").IPAddress}}}}"),
        &container,
    ]);
    assert_eq!(members[0]["IPAddress"], overlay_ip.as_str());

    let listed = swarm
        .agent("/containers/json")
        .expect("a signed container list");
    let itself = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["Id"] == container.as_str() || c["Id"].as_str().unwrap().starts_with(&container)
        })
        .unwrap_or_else(|| panic!("the agent lists itself: {listed}"));
    assert_eq!(itself["Portainer"]["Agent"]["NodeName"], node_name.as_str());

    wait_until(
        "the health check reports healthy",
        Duration::from_secs(90),
        || {
            (swarm.docker_ok(&[
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &container,
            ]) == "healthy")
                .then_some(())
        },
    );
    // The operator's commands, as the README says to run them.
    let doctor = swarm.docker(&["exec", &container, "/berth", "doctor"]);
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.status.success(),
        "berth doctor in the task:\n{report}"
    );
    for line in ["ok      agent", "ok      engine", "ok      overlay network"] {
        assert!(report.contains(line), "no {line:?} in\n{report}");
    }
    let on_overlay = format!("{overlay_ip} is the task's address on {STACK}_agent_network");
    assert!(
        report.contains(&on_overlay),
        "no {on_overlay:?} in\n{report}"
    );
    let status = swarm.docker_ok(&["exec", &container, "/berth", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["cluster"]["members"][0]["address"],
        overlay_ip.as_str(),
        "{status}"
    );
    assert_eq!(status["api"]["paired"], true, "{status}");

    let memory = swarm.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        &container,
    ]);
    eprintln!("agent container memory: {memory}");

    swarm.docker_ok(&["stack", "rm", STACK]);
    wait_until(
        "removing the stack stops the agent",
        Duration::from_secs(90),
        || swarm.agent_containers().is_empty().then_some(()),
    );
}
