//! The real docker CLI pointed at berth: `-H tcp://…:port --tls`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use crate::support::berth_process::{berth_command, BerthProcess};
use crate::support::fixtures::portainer_identity;
use crate::support::temp_dir::{temp_dir, TempDir};
use crate::{berth_for_engine, unique, IMAGE};

/// A docker CLI configured for one berth: its own config folder and a
/// `ca.pem`, which the CLI wants in its cert path even when it does not verify.
#[derive(Clone)]
struct Cli {
    host: String,
    config: PathBuf,
    /// Holds `config`; removed with the last clone of the CLI.
    _folder: Arc<TempDir>,
}

impl Cli {
    /// A CLI whose `config.json` carries the signature headers, as
    /// Portainer writes it for stack deployments.
    fn new(berth: &BerthProcess) -> Cli {
        let identity = portainer_identity();
        Cli::with_config(
            berth,
            serde_json::json!({"HttpHeaders": {
                "X-PortainerAgent-PublicKey": identity.public_key,
                "X-PortainerAgent-Signature": identity.signature,
            }}),
        )
    }

    fn with_config(berth: &BerthProcess, config_json: serde_json::Value) -> Cli {
        let folder = temp_dir("cli-config");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(folder.join("ca.pem"), cert.cert.pem()).unwrap();
        std::fs::write(folder.join("config.json"), config_json.to_string()).unwrap();
        Cli {
            host: format!("tcp://{}", berth.addr),
            config: folder.to_path_buf(),
            _folder: Arc::new(folder),
        }
    }

    fn docker_binary() -> &'static str {
        if std::path::Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        }
    }

    /// The docker command line, as a shell string for `script`.
    fn line(&self, args: &str) -> String {
        format!(
            "DOCKER_CONFIG={config} DOCKER_CERT_PATH={config} {docker} -H {host} --tls {args}",
            config = self.config.display(),
            docker = Self::docker_binary(),
            host = self.host
        )
    }

    /// Runs `docker <args>` with a bound on its time, feeding `stdin`.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("timeout");
        command
            .arg("60")
            .arg(Self::docker_binary())
            .args(["-H", &self.host, "--tls"])
            .args(args)
            .env("DOCKER_CONFIG", &self.config)
            .env("DOCKER_CERT_PATH", &self.config)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run docker");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
            // Dropping the pipe is the end of input the engine must see.
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a command in a pseudo-terminal (`script`), for `-it`.
    fn in_terminal(&self, args: &str, keys: &str) -> String {
        let mut child = Command::new("timeout")
            .args(["60", "script", "-qec", &self.line(args), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(keys.as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

#[test]
fn ps_run_logs_and_exec_through_berth() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let cli = Cli::new(&berth);

    let listed = cli.ok(&["ps", "-a", "--format", "{{.ID}}"], None);
    assert!(listed.lines().all(|line| line.len() == 12), "{listed}");

    let said = cli.ok(&["run", "--rm", IMAGE, "echo", "hello-from-run"], None);
    assert_eq!(said.trim(), "hello-from-run");

    let name = unique("cli");
    cli.ok(
        &[
            "run",
            "-d",
            "--name",
            &name,
            IMAGE,
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick $i; done; sleep 300",
        ],
        None,
    );
    let ps = cli.ok(
        &[
            "ps",
            "--filter",
            &format!("name={name}"),
            "--format",
            "{{.Names}}",
        ],
        None,
    );
    assert_eq!(ps.trim(), name);

    // logs -f follows until the container dies; kill it from another call.
    let follower = {
        let (cli, name) = (cli.clone(), name.clone());
        std::thread::spawn(move || cli.run(&["logs", "-f", &name], None))
    };
    let piped = cli.ok(&["exec", "-i", &name, "cat"], Some("piped-through-exec\n"));
    assert_eq!(
        piped, "piped-through-exec\n",
        "stdin's end must reach the engine"
    );
    cli.ok(&["kill", &name], None);
    let logs = follower.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "tick 1\ntick 2\ntick 3\n",
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    cli.ok(&["rm", "-f", &name], None);
    std::fs::remove_dir_all(&cli.config).unwrap();
}

#[test]
fn interactive_terminal_sessions_through_berth() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let cli = Cli::new(&berth);
    let name = unique("tty");
    cli.ok(&["run", "-d", "--name", &name, IMAGE, "sleep", "300"], None);

    let screen = cli.in_terminal(
        &format!("exec -it {name} sh -c 'tty; echo exec-it-done'"),
        "",
    );
    assert!(screen.contains("/dev/pts/"), "{screen}");
    assert!(screen.contains("exec-it-done"), "{screen}");

    let screen = cli.in_terminal(
        &format!("run -it --rm {IMAGE} sh"),
        "echo typed-$((6*7))\nexit\n",
    );
    assert!(screen.contains("typed-42"), "{screen}");

    cli.ok(&["rm", "-f", &name], None);
    std::fs::remove_dir_all(&cli.config).unwrap();
}

#[test]
fn the_cli_without_signature_headers_is_refused() {
    let Some((berth, _)) = berth_for_engine() else {
        return;
    };
    let cli = Cli::with_config(&berth, serde_json::json!({}));
    let output = cli.run(&["ps"], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Missing request signature headers"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&cli.config).unwrap();
}

/// `berth keys new` writes what the docker CLI needs: with the agent's
/// `AGENT_SECRET`, `docker ps` goes through; a key signed over another
/// message is refused with Portainer's 403.
#[test]
fn keys_from_berth_keys_new_let_the_docker_cli_in() {
    let Some(host) = crate::support::berth_process::engine_host() else {
        return;
    };
    let berth = BerthProcess::start(&[("DOCKER_HOST", &host), ("AGENT_SECRET", "cli-secret")]);
    let make = |args: &[&str], secret: Option<&str>| {
        let folder = temp_dir("cli-keys");
        let dir = folder.join("keys");
        let mut command = berth_command();
        command
            .env_clear()
            .arg("keys")
            .arg("new")
            .args(args)
            .arg(&dir);
        if let Some(secret) = secret {
            command.env("AGENT_SECRET", secret);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(said.contains("pairs with the first key"), "{said}");
        Cli {
            host: format!("tcp://{}", berth.addr),
            config: dir,
            _folder: Arc::new(folder),
        }
    };
    let paired = make(&[], Some("cli-secret"));
    assert!(paired.ok(&["ps", "-a"], None).contains("CONTAINER ID"));
    let ed25519 = make(&["--ed25519"], Some("cli-secret"));
    assert!(ed25519
        .ok(&["version", "--format", "{{.Server.APIVersion}}"], None)
        .trim()
        .starts_with('1'));
    let other = make(&[], None);
    let refused = other.run(&["ps"], None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("Invalid request signature"), "{said}");
}
