//! The real Kubernetes control plane `scripts/test` starts (etcd and
//! kube-apiserver 1.34 on loopback, `scripts/kube.sh`), the real kubectl,
//! and berth started as a pod of that cluster would start it.
//!
//! Tests share one API server: each works in namespaces and service
//! accounts named for it alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::berth_process::{from_env_or_skip, BerthProcess};
use super::piped::run_with_input;
use super::temp_dir::{temp_dir, TempDir};
use super::unique::unique;

pub struct KubeCluster {
    /// `scripts/kube.sh`'s folder: `ca.crt`, `ca.key`, `kubeconfig`.
    pub dir: PathBuf,
    pub address: SocketAddr,
    kubectl: PathBuf,
}

/// The cluster, or `None` when the suite skips what needs one.
pub fn cluster() -> Option<KubeCluster> {
    let hint = "run scripts/test, which starts one (BERTH_TEST_KUBE, BERTH_TEST_KUBECTL)";
    let dir = from_env_or_skip("BERTH_TEST_KUBE", "a Kubernetes API server", hint)?;
    let kubectl = from_env_or_skip("BERTH_TEST_KUBECTL", "kubectl", hint)?;
    let dir = PathBuf::from(dir);
    let address = std::fs::read_to_string(dir.join("address"))
        .expect("scripts/kube.sh writes the address")
        .trim()
        .parse()
        .expect("an IP and a port");
    Some(KubeCluster {
        dir,
        address,
        kubectl: kubectl.into(),
    })
}

/// A pod's service account folder: `token` and `ca.crt`.
pub struct ServiceAccount {
    pub dir: TempDir,
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("token")).unwrap()
    }
}

impl KubeCluster {
    /// kubectl as the cluster's administrator; panics unless it succeeds.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with_input(args, "")
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> String {
        let output = self.try_kubectl(args, input);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn try_kubectl(&self, args: &[&str], input: &str) -> Output {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(self.dir.join("kubeconfig"));
        command.args(args);
        run_with_input(&mut command, input)
    }

    /// kubectl as the administrator, to be spawned (a port-forward).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(self.dir.join("kubeconfig"));
        command.args(args);
        command
    }

    /// Imports `binary` into the node's containerd as the one-file image
    /// `reference` whose command is `/<file name>` (a statically linked
    /// program: there is nothing else in the image), as
    /// `scripts/image-archive.py` writes images for nodes that cannot pull.
    pub fn import_program_image(&self, binary: &Path, reference: &str) {
        self.require_node();
        let root = temp_dir("image-root");
        let name = binary.file_name().unwrap();
        std::fs::copy(binary, root.join(name)).unwrap();
        let archive_dir = temp_dir("image-archive");
        let archive = archive_dir.join("image.tar");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/image-archive.py");
        let command = format!("/{}", name.to_string_lossy());
        let written = Command::new("python3")
            .args([script, &root.to_string_lossy(), reference])
            .arg(&archive)
            .arg(&command)
            .output()
            .unwrap();
        assert!(written.status.success(), "{written:?}");
        let imported = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("node/containerd.sock"))
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(imported.status.success(), "{imported:?}");
    }

    /// The kubectl program, for a kubeconfig of the test's own.
    pub fn kubectl_program(&self) -> &Path {
        &self.kubectl
    }

    /// Whether a node runs pods (`scripts/kube.sh`'s `node`, as root);
    /// panics, saying why, when a test needs one and there is none.
    pub fn require_node(&self) {
        assert!(
            self.dir.join("netns").exists(),
            "this test needs a Kubernetes node: scripts/test starts one when run as root \
             (scripts/kube.sh's kube_start DIR BIN '' node)"
        );
    }

    /// Starts a pod of one busybox container running `script` with `sh -c`
    /// in `namespace`, and waits until it runs.
    pub fn run_pod(&self, namespace: &str, name: &str, script: &str) {
        self.require_node();
        self.kubectl(&[
            "-n",
            namespace,
            "run",
            name,
            "--image=berth-test/busybox:latest",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            script,
        ]);
        self.kubectl(&[
            "-n",
            namespace,
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=60s",
        ]);
    }

    /// A new namespace, named after `purpose` and unique to this test.
    pub fn namespace(&self, purpose: &str) -> String {
        let name = unique(&format!("{purpose}-"));
        self.kubectl(&["create", "namespace", &name]);
        name
    }

    /// A cluster role that reads everything and changes nothing (the
    /// built-in `view` leaves secrets out).
    pub fn reader_role(&self) -> &'static str {
        const READER: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
            metadata:\n  name: berth-test-reader\nrules:\n- apiGroups: [\"*\"]\n  \
            resources: [\"*\"]\n  verbs: [get, list, watch]\n";
        self.kubectl_with_input(&["apply", "-f", "-"], READER);
        "berth-test-reader"
    }

    /// A server certificate for 127.0.0.1 that the cluster's CA signed:
    /// its PEM file and its key's, in `dir`.
    pub fn server_certificate(&self, dir: &Path) -> (String, String) {
        let ca_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("ca.key")).unwrap())
                .unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            &std::fs::read_to_string(self.dir.join("ca.crt")).unwrap(),
            ca_key,
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server-key.pem"));
        std::fs::write(&cert_path, certificate.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        )
    }

    /// A service account in `namespace` bound to the cluster role `role`
    /// (cluster-wide, or in `scope` only), and a folder that holds its
    /// token and the cluster's CA as a pod's would.
    pub fn service_account(
        &self,
        namespace: &str,
        role: &str,
        scope: Option<&str>,
    ) -> ServiceAccount {
        let name = unique("sa-");
        self.kubectl(&["-n", namespace, "create", "serviceaccount", &name]);
        let subject = format!("--serviceaccount={namespace}:{name}");
        let role_flag = format!("--clusterrole={role}");
        match scope {
            None => self.kubectl(&["create", "clusterrolebinding", &name, &role_flag, &subject]),
            Some(scope) => self.kubectl(&[
                "-n",
                scope,
                "create",
                "rolebinding",
                &name,
                &role_flag,
                &subject,
            ]),
        };
        let token = self.kubectl(&["-n", namespace, "create", "token", &name]);
        let dir = temp_dir("service-account");
        std::fs::write(dir.join("token"), token.trim()).unwrap();
        std::fs::copy(self.dir.join("ca.crt"), dir.join("ca.crt")).unwrap();
        ServiceAccount {
            dir,
            namespace: namespace.to_string(),
            name,
        }
    }

    /// berth as a pod of this cluster starts it: `KUBERNETES_SERVICE_HOST`
    /// and `_PORT` name the API server, `account` is its service account
    /// folder; no Docker engine.
    pub fn berth(&self, account: &Path, env: &[(&str, &str)]) -> BerthProcess {
        let host = self.address.ip().to_string();
        let port = self.address.port().to_string();
        let account = account.display().to_string();
        let mut all = vec![
            ("KUBERNETES_SERVICE_HOST", host.as_str()),
            ("KUBERNETES_SERVICE_PORT", port.as_str()),
            ("KUBERNETES_SERVICE_ACCOUNT_DIR", account.as_str()),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ];
        all.extend_from_slice(env);
        BerthProcess::start(&all)
    }

    /// berth for kubectl, which cannot sign requests: it authenticates to
    /// berth with a client certificate (`AGENT_CLIENT_CERT_AUTH=1`, from
    /// `berth keys client-cert`, signed by the cluster's CA), and berth
    /// calls the API server on `account`. kubectl's default namespace is
    /// `namespace`.
    pub fn kubectl_through_berth(&self, account: &Path, namespace: &str) -> KubectlThroughBerth {
        let pki = temp_dir("kubectl-pki");
        let client = pki.join("client");
        let output = super::berth_process::berth_command()
            .env_clear()
            .args(["keys", "client-cert", "--ca-cert"])
            .arg(self.dir.join("ca.crt"))
            .arg("--ca-key")
            .arg(self.dir.join("ca.key"))
            .arg(&client)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let ca = self.dir.join("ca.crt").display().to_string();
        let (cert, key) = self.server_certificate(&pki);
        let berth = self.berth(
            account,
            &[
                ("SSL_CERT", &cert),
                ("SSL_KEY", &key),
                ("SSL_CACERT", &ca),
                ("AGENT_CLIENT_CERT_AUTH", "1"),
            ],
        );
        let kubeconfig = pki.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    \
                 server: https://{addr}/kubernetes\n    certificate-authority: {ca}\n\
                 users:\n- name: portainer\n  user:\n    client-certificate: {dir}/cert.pem\n    \
                 client-key: {dir}/key.pem\ncontexts:\n- name: berth\n  context: {{cluster: berth, \
                 user: portainer, namespace: {namespace}}}\ncurrent-context: berth\n",
                addr = berth.addr,
                dir = client.display(),
            ),
        )
        .unwrap();
        KubectlThroughBerth {
            berth,
            kubeconfig,
            kubectl: self.kubectl.clone(),
            _pki: pki,
        }
    }
}

/// kubectl whose server is berth's `/kubernetes`.
pub struct KubectlThroughBerth {
    pub berth: BerthProcess,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    _pki: TempDir,
}

impl KubectlThroughBerth {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        command
    }

    /// Runs kubectl with `input`; panics unless it succeeds. Its output.
    pub fn run(&self, args: &[&str], input: &str) -> String {
        let output = run_with_input(&mut self.command(args), input);
        assert!(
            output.status.success(),
            "kubectl {args:?} through berth: {}\nberth: {:?}",
            String::from_utf8_lossy(&output.stderr),
            self.berth.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}
