//! The real chisel server (`github.com/jpillora/chisel`, built from its Go
//! module at the versions pinned in `tests/chisel/<version>/go.mod` by
//! `scripts/build-test-peers`), run the way a Portainer server runs it:
//! reverse tunnels only, an ECDSA host key derived from a seed, and one user
//! per tunnel whose only allowed remote is `^R:0.0.0.0:<its port>$`, plus
//! the placeholder user Portainer adds so that chisel never runs without
//! authentication. Its own log (`-v`) is the record of what it saw.

use super::eventually::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use berth_domain::edge::credentials::{self, TunnelCredentials};

use super::berth_process::{free_port, from_env_or_skip};
use super::output_lines::OutputLines;

/// The versions `scripts/build-test-peers` builds: the Go agent's (v1.10.0)
/// and the newest 1.11 the Go module proxy serves (current Portainer
/// servers embed 1.11).
pub const VERSIONS: [&str; 2] = ["1.10.0", "1.11.3"];

const START: Duration = Duration::from_secs(15);

/// The chisel binary of `version`, or `None` when the suite skips what
/// needs it.
pub fn binary(version: &str) -> Option<PathBuf> {
    let dir = from_env_or_skip(
        "BERTH_TEST_CHISEL_DIR",
        "the real chisel server",
        "run scripts/test, which builds it (BERTH_TEST_CHISEL_DIR)",
    )?;
    let path = Path::new(&dir).join(format!("chisel-{version}"));
    assert!(
        path.is_file(),
        "{} is missing: scripts/build-test-peers builds it",
        path.display()
    );
    Some(path)
}

/// Defines one test per pinned chisel version for each named check, an
/// `async fn(PathBuf)` taking the binary of that version.
#[allow(unused_macros)]
macro_rules! against_each_chisel {
    ($($check:ident),* $(,)?) => {
        mod chisel_1_10_0 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(binary) = crate::support::chisel::binary("1.10.0") {
                        super::$check(binary).await;
                    }
                }
            )*
        }
        mod chisel_1_11_3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(binary) = crate::support::chisel::binary("1.11.3") {
                        super::$check(binary).await;
                    }
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use against_each_chisel;

/// One tunnel Portainer has asked for: its port and the user allowed it.
#[derive(Debug, Clone)]
pub struct TunnelGrant {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// `user:password` sealed under the Edge ID, as Portainer's poll sends it.
    pub credentials: String,
}

#[derive(Debug, Clone)]
pub struct ChiselOptions {
    /// How many tunnel users (each with a port of its own) to create.
    pub tunnels: usize,
    /// chisel's own keepalive (`--keepalive`): it pings the client this often.
    pub keepalive: Duration,
}

impl Default for ChiselOptions {
    fn default() -> Self {
        ChiselOptions {
            tunnels: 1,
            keepalive: Duration::from_secs(25),
        }
    }
}

pub struct Chisel {
    binary: PathBuf,
    child: Child,
    log: OutputLines,
    dir: PathBuf,
    options: ChiselOptions,
    /// `127.0.0.1:<port>`, as the Edge key names the tunnel server.
    pub address: String,
    /// chisel's own fingerprint (SHA-256, base64), checked against OpenSSH's.
    pub fingerprint: String,
    /// The legacy form (MD5, colon-hex), as OpenSSH's ssh-keygen prints it.
    pub md5_fingerprint: String,
    pub tunnels: Vec<TunnelGrant>,
}

fn random_text(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; length];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {}: {e}", program.display());
        });
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The host key's fingerprints in chisel's SHA-256 form and the legacy MD5
/// form, computed by OpenSSH's ssh-keygen from chisel's key file (`ck-`
/// and the base64 of a SEC1 DER key).
fn fingerprints(dir: &Path, chisel_key: &str) -> (String, String) {
    let der = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(chisel_key.trim().strip_prefix("ck-").expect("a chisel key"))
        .unwrap();
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = dir.join("host-key.pem");
    std::fs::write(
        &pem,
        format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pem, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let keygen = Path::new("ssh-keygen");
    let pem = pem.to_str().unwrap();
    let field = |hash: &str, prefix: &str| -> String {
        let line = run(keygen, &["-l", "-E", hash, "-f", pem]);
        line.split_whitespace()
            .nth(1)
            .and_then(|f| f.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("ssh-keygen printed {line:?}"))
            .to_string()
    };
    // OpenSSH leaves the base64 padding off; chisel keeps it.
    (
        format!("{}=", field("sha256", "SHA256:")),
        field("md5", "MD5:"),
    )
}

impl Chisel {
    /// Starts chisel `binary` for `edge_id`'s tunnels and waits until it
    /// listens.
    pub fn start(binary: &Path, edge_id: &str, options: ChiselOptions) -> Chisel {
        let dir = std::env::temp_dir().join(format!(
            "berth-chisel-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // Portainer derives the host key from a seed and keeps it in a file.
        let key_file = dir.join("host-key.ck");
        let seed = random_text(16);
        run(
            binary,
            &[
                "server",
                "--keygen",
                key_file.to_str().unwrap(),
                "--key",
                &seed,
            ],
        );
        let (fingerprint, md5_fingerprint) =
            fingerprints(&dir, &std::fs::read_to_string(&key_file).unwrap());
        let tunnels: Vec<TunnelGrant> = (0..options.tunnels)
            .map(|_| {
                let (user, password) = (random_text(8), random_text(8));
                let sealed = credentials::encrypt(
                    &TunnelCredentials {
                        user: user.clone(),
                        password: password.clone().into(),
                    },
                    edge_id,
                    {
                        let mut nonce = [0u8; 12];
                        getrandom::getrandom(&mut nonce).unwrap();
                        nonce
                    },
                );
                TunnelGrant {
                    port: free_port(),
                    user,
                    password,
                    credentials: sealed,
                }
            })
            .collect();
        let mut users = serde_json::Map::new();
        // Portainer's placeholder, so chisel never accepts anyone at all.
        users.insert(
            format!("{}:{}", random_text(8), random_text(8)),
            serde_json::json!(["127.0.0.1"]),
        );
        for tunnel in &tunnels {
            users.insert(
                format!("{}:{}", tunnel.user, tunnel.password),
                serde_json::json!([format!("^R:0.0.0.0:{}$", tunnel.port)]),
            );
        }
        std::fs::write(
            dir.join("users.json"),
            serde_json::Value::Object(users).to_string(),
        )
        .unwrap();
        let port = free_port();
        let (child, log) = spawn(binary, &dir, port, &options);
        let mut chisel = Chisel {
            binary: binary.to_path_buf(),
            child,
            log,
            dir,
            options,
            address: format!("127.0.0.1:{port}"),
            fingerprint,
            md5_fingerprint,
            tunnels,
        };
        chisel.wait_until_listening();
        let own = chisel.wait_for("server: Fingerprint ", START);
        assert_eq!(
            own, chisel.fingerprint,
            "chisel's fingerprint is OpenSSH's SHA-256 of the same key"
        );
        chisel
    }

    fn wait_until_listening(&mut self) {
        let already = self.count("server: Listening on ");
        let (log, address) = (self.log.clone(), self.address.clone());
        let child = &mut self.child;
        wait_until(
            "chisel listening",
            START,
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("chisel exited with {status}: {:?}", log.all());
                }
                log.count("server: Listening on ") > already
                    && std::net::TcpStream::connect(&address).is_ok()
            },
            || format!("{:?}", log.all()),
        );
    }

    /// chisel's log lines so far (stderr, timestamps included).
    pub fn log(&self) -> Vec<String> {
        self.log.all()
    }

    /// How many log lines contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.log.count(text)
    }

    /// The rest of the first log line after `text`, waiting for it.
    pub fn wait_for(&self, text: &str, limit: Duration) -> String {
        self.wait_for_nth(text, 1, limit)
    }

    /// The rest of the `n`th log line after `text`, waiting for it.
    pub fn wait_for_nth(&self, text: &str, n: usize, limit: Duration) -> String {
        self.log
            .wait_for_nth(&format!("{text:?} in chisel's log"), n, limit, |line| {
                line.split_once(text).map(|(_, rest)| rest.to_string())
            })
    }

    /// The targets chisel has listened for on `port` so far: it logs a
    /// remote in short form (`proxy#R:<port>=><target>: Listening`, default
    /// hosts left out).
    fn listening_on(port: u16) -> impl Fn(&str) -> Option<String> {
        let prefix = format!("proxy#R:{port}=>");
        move |line| {
            let (_, rest) = line.split_once(&prefix)?;
            rest.strip_suffix(": Listening").map(str::to_string)
        }
    }

    pub fn listened(&self, port: u16) -> Vec<String> {
        self.log.picked(Self::listening_on(port))
    }

    /// Waits until chisel has listened on `port` `n` times; the target of
    /// the `n`th.
    pub fn wait_listening(&self, port: u16, n: usize, limit: Duration) -> String {
        self.log.wait_for_nth(
            &format!("listening on {port}"),
            n,
            limit,
            Self::listening_on(port),
        )
    }

    /// Freezes chisel (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Kills chisel (SIGKILL), dropping every session at once, and starts
    /// it again on the same address with the same key and users.
    pub fn restart(&mut self) {
        signal(self.child.id(), "-KILL");
        let _ = self.child.wait();
        let port = self.address.rsplit_once(':').unwrap().1.parse().unwrap();
        let (child, log) = spawn(&self.binary, &self.dir, port, &self.options);
        // The earlier run's lines stay, so counts keep growing.
        log.prepend(self.log());
        self.child = child;
        self.log = log;
        self.wait_until_listening();
    }
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn spawn(binary: &Path, dir: &Path, port: u16, options: &ChiselOptions) -> (Child, OutputLines) {
    let keepalive = format!("{}ms", options.keepalive.as_millis());
    let mut child = Command::new(binary)
        .args(["server", "--reverse", "-v", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--keepalive", &keepalive])
        .arg("--keyfile")
        .arg(dir.join("host-key.ck"))
        .arg("--authfile")
        .arg(dir.join("users.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let log = OutputLines::default();
    log.follow(child.stderr.take().unwrap());
    (child, log)
}

impl Drop for Chisel {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("chisel's log: {:#?}", self.log());
        }
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
