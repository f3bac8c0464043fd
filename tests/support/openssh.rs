//! OpenSSH's `sshd` (Debian 12's, 9.2p1), a second SSH implementation for
//! the tunnel client's transport besides chisel's Go x/crypto/ssh. It runs
//! on a loopback port with the test's own configuration file and host
//! keys, in a mount namespace of its own where `/etc/passwd` and
//! `/etc/shadow` are the test's (one login with a known password, and the
//! `sshd` privilege-separation account) and `/run` is empty, so nothing on
//! the machine changes. `scripts/test` unpacks the package's `sshd` under
//! `target/` without installing it (an installed one would start a service).
//! Its log (`-e`, `LogLevel DEBUG`) is collected.

use super::eventually::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use berth_adapters::tunnel::ssh::ClientConfig;

use super::berth_process::{free_port, from_env_or_skip};
use super::output_lines::OutputLines;

pub const USER: &str = "tunnel";
pub const PASSWORD: &str = "correct horse";
/// OpenSSH refuses identifications that are not `SSH-2.0-…` (chisel's
/// `SSH-chisel-v3-client` among them), so the client names itself so here.
pub const IDENTIFICATION: &str = "SSH-2.0-berth_test";

pub struct Sshd {
    child: Child,
    log: OutputLines,
    dir: PathBuf,
    pub address: String,
    /// SHA-256 of each host key blob, as an Edge key names it, by type.
    pub fingerprints: Vec<(String, String)>,
}

/// The `sshd` binary, or `None` when the suite skips what needs it.
pub fn binary() -> Option<String> {
    from_env_or_skip(
        "BERTH_TEST_SSHD",
        "OpenSSH's sshd",
        "run scripts/test, which unpacks Debian's openssh-server under target/ (BERTH_TEST_SSHD)",
    )
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Makes a host key of `kind` (`ed25519`, `ecdsa`) in `dir`; returns its
/// type name and the SHA-256 fingerprint berth compares, checked against
/// what `ssh-keygen -l` prints for it.
fn host_key(dir: &Path, kind: &str) -> (String, String) {
    let path = dir.join(format!("host_{kind}"));
    run(
        "ssh-keygen",
        &["-q", "-t", kind, "-N", "", "-f", path.to_str().unwrap()],
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let mut fields = public.split_whitespace();
    let (key_type, blob) = (fields.next().unwrap(), fields.next().unwrap());
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .unwrap();
    let fingerprint = berth_domain::edge::fingerprint::sha256_fingerprint(&blob);
    let listed = run(
        "ssh-keygen",
        &["-l", "-E", "sha256", "-f", path.to_str().unwrap()],
    );
    assert!(
        listed.contains(&format!("SHA256:{}", fingerprint.trim_end_matches('='))),
        "ssh-keygen lists {listed}, berth computes {fingerprint}"
    );
    (key_type.to_string(), fingerprint)
}

impl Sshd {
    /// Starts sshd with host keys of `kinds` (`ecdsa`, `ed25519`), password
    /// logins for `USER`, and `extra` configuration lines; waits until it
    /// listens.
    pub fn start(binary: &str, kinds: &[&str], extra: &[&str]) -> Sshd {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("berth-sshd-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fingerprints: Vec<_> = kinds.iter().map(|kind| host_key(&dir, kind)).collect();
        let hash = run("openssl", &["passwd", "-6", PASSWORD]);
        std::fs::write(
            dir.join("passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n\
                 {USER}:x:4242:4242::/nonexistent:/bin/sh\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("shadow"),
            format!(
                "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n\
                 {USER}:{}:19000:0:99999:7:::\n",
                hash.trim()
            ),
        )
        .unwrap();
        let mut config = format!(
            "ListenAddress 127.0.0.1:{port}\nPidFile none\nUsePAM no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication no\nAuthorizedKeysFile none\nLogLevel DEBUG\n"
        );
        for kind in kinds {
            config.push_str(&format!(
                "HostKey {}\n",
                dir.join(format!("host_{kind}")).display()
            ));
        }
        for line in extra {
            config.push_str(line);
            config.push('\n');
        }
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        // unshare and sh exec into sshd, so the child's PID is its own.
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"mount --bind "$0/passwd" /etc/passwd && mount --bind "$0/shadow" /etc/shadow &&
                   mount -t tmpfs berth-sshd /run && mkdir -m 755 /run/sshd &&
                   exec "$1" -D -e -f "$0/sshd_config""#,
            )
            .arg(&dir)
            .arg(binary)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let log = OutputLines::default();
        log.follow(child.stdout.take().unwrap());
        log.follow(child.stderr.take().unwrap());
        let sshd = Sshd {
            child,
            log,
            dir,
            address: format!("127.0.0.1:{port}"),
            fingerprints,
        };
        wait_until(
            "sshd listening",
            Duration::from_secs(10),
            || sshd.log.count("Server listening on") > 0,
            || format!("{:#?}", sshd.log()),
        );
        sshd
    }

    /// The client's configuration for this server, trusting its first host
    /// key (what the Edge key would name).
    pub fn client_config(&self, password: &str) -> ClientConfig {
        let fingerprint = self.fingerprints[0].1.clone();
        ClientConfig {
            identification: IDENTIFICATION.into(),
            user: USER.into(),
            password: String::from(password).into(),
            fingerprint,
            allowed_target: "127.0.0.1:9".into(),
            dial_timeout: Duration::from_secs(1),
            keepalive: Duration::from_millis(300),
            max_channels: 4,
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.all()
    }

    /// Waits for a log line containing `text`; returns it.
    pub fn wait_log(&self, text: &str, limit: Duration) -> String {
        self.wait_nth_log(text, 1, limit)
    }

    /// Waits for the `n`th log line containing `text`; returns it.
    pub fn wait_nth_log(&self, text: &str, n: usize, limit: Duration) -> String {
        self.log.wait_for_nth(text, n, limit, |line| {
            line.contains(text).then(|| line.to_string())
        })
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("sshd's log: {:#?}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
