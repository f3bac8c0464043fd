//! A real registry, Debian's `docker-registry` (the CNCF distribution
//! registry), on a loopback port of the test's own with htpasswd
//! authentication and its storage in a temporary folder. Engines reach a
//! loopback registry without TLS. Stopped by its PID when dropped.

use super::eventually::wait_until;
use super::piped::run_with_input;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::berth_process::{free_port, from_env_or_skip};
use super::output_lines::OutputLines;

pub const USER: &str = "berth-test";
pub const PASSWORD: &str = "registry-secret";
/// `htpasswd -nbB -C 5 berth-test registry-secret` (Debian's apache2-utils):
/// the registry reads bcrypt entries only.
const HTPASSWD: &str = "berth-test:$2y$05$0hf/I6AGXuQ3afKGHQDQvOnAbK8cni2AwI57G.53W0qXlyEBO8Qge\n";

pub struct Registry {
    child: Child,
    log: OutputLines,
    dir: std::path::PathBuf,
    /// `127.0.0.1:<port>`, as image references and credentials name it.
    pub address: String,
}

/// The registry binary, or `None` when the suite skips what needs it.
pub fn binary() -> Option<String> {
    from_env_or_skip(
        "BERTH_TEST_REGISTRY",
        "docker-registry",
        "run scripts/test, which installs Debian's docker-registry (BERTH_TEST_REGISTRY)",
    )
}

impl Registry {
    pub fn start(binary: &str) -> Registry {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("berth-registry-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        std::fs::write(dir.join("htpasswd"), HTPASSWD).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    \
             realm: berth-test\n    path: {htpasswd}\n",
            storage = dir.join("storage").display(),
            htpasswd = dir.join("htpasswd").display(),
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry");
        let log = OutputLines::default();
        log.follow(child.stdout.take().unwrap());
        log.follow(child.stderr.take().unwrap());
        let registry = Registry {
            child,
            log,
            dir,
            address: format!("127.0.0.1:{port}"),
        };
        wait_until(
            "the registry listening",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(&registry.address).is_ok(),
            || format!("{:?}", registry.log.all()),
        );
        registry
    }

    /// Pushes `image` (present in `engine`) as `<registry>/<name>`, logged
    /// in with a docker configuration of its own, and removes the pushed
    /// tag from the engine again, so the image must come from the
    /// registry. Returns the reference pushed.
    pub fn push(&self, engine: &str, image: &str, name: &str) -> String {
        let reference = format!("{}/{name}", self.address);
        self.login(engine);
        self.docker(engine, &["tag", image, &reference]);
        self.docker(engine, &["push", &reference]);
        self.docker(engine, &["rmi", &reference]);
        reference
    }

    /// Pulls `reference` from this registry into `engine`, logged in.
    pub fn pull(&self, engine: &str, reference: &str) {
        self.login(engine);
        self.docker(engine, &["pull", reference]);
    }

    fn login(&self, engine: &str) {
        self.docker_with_input(
            engine,
            &["login", "-u", USER, "--password-stdin", &self.address],
            PASSWORD,
        );
    }

    /// The docker CLI against `engine`, with this registry's docker
    /// configuration: its output.
    pub fn docker(&self, engine: &str, args: &[&str]) -> String {
        self.docker_with_input(engine, args, "")
    }

    fn docker_with_input(&self, engine: &str, args: &[&str], input: &str) -> String {
        let config = self.dir.join("docker-config");
        std::fs::create_dir_all(&config).unwrap();
        let mut command = Command::new("docker");
        command
            .env("DOCKER_CONFIG", &config)
            .arg("-H")
            .arg(engine)
            .args(args);
        let output = run_with_input(&mut command, input);
        assert!(
            output.status.success(),
            "docker {args:?}: {}\nregistry: {:?}",
            String::from_utf8_lossy(&output.stderr),
            self.log.all()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `GET path` on the registry's API, logged in, accepting `accept`:
    /// the status, the content type and the body.
    pub async fn get(&self, path: &str, accept: &str) -> (u16, String, bytes::Bytes) {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(&self.address).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let credentials = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{USER}:{PASSWORD}"),
        );
        let request = http::Request::get(path)
            .header("host", &self.address)
            .header("accept", accept)
            .header("authorization", format!("Basic {credentials}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, kind, body)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.all()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the registry's log: {:#?}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
